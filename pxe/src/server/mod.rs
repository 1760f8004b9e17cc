//! The only module that owns sockets: it receives datagrams, hands them to the pure cores in
//! [`crate::tftp`] (and `crate::dhcp`), and sends what they return.
//!
//! Every server takes an already-bound socket and a [`CancellationToken`]
//! (mini-redis's `server::run(listener, shutdown)`), so tests bind port 0 and shut down cleanly,
//! and `parc serve` decides addresses and privileges. [`bind_udp`] binds with a message that says
//! what to do when a privileged port is refused.
//!
//! [`serve`] runs both on one interface from a [`PxeConfig`], which is what `parc serve` calls:
//!
//! ```no_run
//! # async fn example() -> Result<(), parc_pxe::server::ServeError> {
//! use parc_pxe::server::{serve, PxeConfig, PxeMode};
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! let config = PxeConfig {
//!     interface: "enp3s0".into(),
//!     mode: PxeMode::Proxy,
//!     tftp_root: "/usr/lib/ipxe".into(),
//!     netboot_dir: Some("/var/lib/parc/netboot".into()),
//!     // The web server's boot decisions, for GRUB (see `parc_pxe::grub`).
//!     grub_scripts: None,
//!     http_base: "http://10.77.0.1:8080".into(),
//!     uefi_loader: parc_pxe::boot::UefiLoader::Shim,
//!     lease_file: "/var/lib/parc/leases.json".into(),
//!     tftp: Default::default(),
//!     tftp_port: 69,
//!     relay_networks: parc_pxe::dhcp::PRIVATE_NETWORKS.to_vec(),
//!     // Shared with the web server, which reads who was seen booting.
//!     sightings: Default::default(),
//! };
//! serve(config, shutdown.clone()).await
//! # }
//! ```
//!
//! [`CancellationToken`]: tokio_util::sync::CancellationToken

pub mod dhcp;
pub mod tftp;

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use crate::boot::UefiLoader;
use crate::sightings::Sightings;

/// Binding a server socket failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BindError {
    /// Ports below 1024 (DHCP 67, TFTP 69) are privileged.
    #[error(
        "cannot bind {addr}: permission denied; ports below 1024 need root or the \
         CAP_NET_BIND_SERVICE capability (e.g. `setcap cap_net_bind_service,cap_net_raw+ep parc`)"
    )]
    Privileged {
        /// The address asked for.
        addr: SocketAddr,
    },
    /// `SO_BINDTODEVICE` named an interface that does not exist.
    #[error("network interface {interface:?} does not exist; check --pxe-interface (`ip link` lists them)")]
    NoInterface {
        /// The name given.
        interface: String,
    },
    /// Any other failure (address in use, not an address of this host, ...).
    #[error("cannot bind {addr}: {source}; is another TFTP/DHCP server (dnsmasq, tftpd-hpa) running?")]
    Other {
        /// The address asked for.
        addr: SocketAddr,
        /// The underlying error.
        source: io::Error,
    },
}

/// Binds a UDP socket for one of the servers.
pub async fn bind_udp(addr: SocketAddr) -> Result<UdpSocket, BindError> {
    UdpSocket::bind(addr).await.map_err(|source| match source.kind() {
        io::ErrorKind::PermissionDenied => BindError::Privileged { addr },
        _ => BindError::Other { addr, source },
    })
}

/// Receive buffer asked for on the listening sockets: when a ward's PCs power on together,
/// hundreds of requests arrive at once, and Linux's default (208 KiB) drops the tail of such a
/// burst. The requests are retransmitted, but seconds later.
pub const LISTEN_RECV_BUFFER: usize = 4 << 20;

/// Raises a listening socket's receive buffer to [`LISTEN_RECV_BUFFER`], beyond `rmem_max` when
/// privileged (`SO_RCVBUFFORCE`); best effort.
pub(crate) fn enlarge_recv_buffer(socket: &UdpSocket) {
    use std::os::fd::AsRawFd;
    let size = LISTEN_RECV_BUFFER as libc::c_int;
    for opt in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
        // SAFETY: a live socket fd and a c_int option value of the size given.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            return;
        }
    }
    tracing::debug!(error = %io::Error::last_os_error(), "cannot enlarge the receive buffer");
}

/// An interface's IPv4 address and netmask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InterfaceAddr {
    /// The address.
    pub ip: Ipv4Addr,
    /// Its netmask.
    pub netmask: Ipv4Addr,
}

/// The first IPv4 address of network interface `name` (the PXE interface's address is the
/// DHCP server identifier, `siaddr` and the TFTP server), or `None` if it has none.
pub fn interface_ipv4(name: &str) -> io::Result<Option<InterfaceAddr>> {
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list` with a linked list that we free below.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut found = None;
    let mut cur = list;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_name.is_null() || ifa.ifa_netmask.is_null() {
            continue;
        }
        // SAFETY: ifa_name is a NUL-terminated string owned by the list.
        let ifname = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) };
        // SAFETY: ifa_addr points to a sockaddr of at least sa_family's size.
        let family = unsafe { (*ifa.ifa_addr).sa_family };
        if ifname.to_bytes() == name.as_bytes() && i32::from(family) == libc::AF_INET {
            // SAFETY: for AF_INET, address and netmask are sockaddr_in.
            let (addr, mask) = unsafe {
                (&*(ifa.ifa_addr as *const libc::sockaddr_in), &*(ifa.ifa_netmask as *const libc::sockaddr_in))
            };
            found = Some(InterfaceAddr {
                ip: Ipv4Addr::from(u32::from_be(addr.sin_addr.s_addr)),
                netmask: Ipv4Addr::from(u32::from_be(mask.sin_addr.s_addr)),
            });
            break;
        }
    }
    // SAFETY: `list` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(list) };
    Ok(found)
}

/// How `parc serve` runs network boot (`--pxe-mode`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PxeMode {
    /// ProxyDHCP: boot information only, the site's DHCP server gives addresses (the default).
    Proxy,
    /// Full DHCP for an isolated imaging network: addresses `first..=last` (`--dhcp-range`).
    Dhcp {
        /// First address handed out.
        first: Ipv4Addr,
        /// Last address handed out.
        last: Ipv4Addr,
    },
}

/// `--dhcp-range FIRST-LAST` does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an address range; write FIRST-LAST, e.g. 10.77.0.100-10.77.0.199")]
pub struct BadRange(pub String);

/// Parses `FIRST-LAST`.
pub fn parse_range(s: &str) -> Result<(Ipv4Addr, Ipv4Addr), BadRange> {
    let bad = || BadRange(s.to_owned());
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let (a, b): (Ipv4Addr, Ipv4Addr) = (a.trim().parse().map_err(|_| bad())?, b.trim().parse().map_err(|_| bad())?);
    if u32::from(a) > u32::from(b) {
        return Err(bad());
    }
    Ok((a, b))
}

/// Everything needed to run network boot on one interface: what `parc serve` fills from its
/// flags and `parc.toml`.
#[derive(Debug, Clone)]
pub struct PxeConfig {
    /// The PXE interface (`--pxe-interface`); its IPv4 address is the server address.
    pub interface: String,
    /// Proxy or full DHCP.
    pub mode: PxeMode,
    /// Directory served over TFTP (`--tftp-root`), holding Debian's iPXE binaries.
    pub tftp_root: PathBuf,
    /// `<data>/netboot`, served over TFTP as `netboot/…` (the Secure Boot chain's loaders,
    /// the agent's kernel and initrd): see [`tftp::NETBOOT_FILES`].
    pub netboot_dir: Option<PathBuf>,
    /// Each machine's GRUB script, from the web server's boot decision.
    pub grub_scripts: Option<Arc<dyn tftp::MachineScripts>>,
    /// Base URL of parc's HTTP server (`http://10.77.0.1:8080`); iPXE fetches `/boot.ipxe`.
    pub http_base: String,
    /// UEFI loader.
    pub uefi_loader: UefiLoader,
    /// Lease file of DHCP mode (`<data>/leases.json`).
    pub lease_file: PathBuf,
    /// TFTP limits and timing.
    pub tftp: tftp::TftpConfig,
    /// TFTP port (69; tests use others).
    pub tftp_port: u16,
    /// Where DHCP exchanges and TFTP fetches of network-booting machines are recorded (the web
    /// server of the same `parc serve` reads them before issuing boot credentials).
    pub sightings: Arc<Sightings>,
    /// Networks whose routers may relay DHCP to parc (`[pxe] relay_networks`; default
    /// [`crate::dhcp::PRIVATE_NETWORKS`]): see [`crate::dhcp::Config::relay_networks`].
    pub relay_networks: Vec<crate::dhcp::Ipv4Net>,
}

/// Network boot could not start or stopped on an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The interface has no IPv4 address to serve from.
    #[error("PXE interface {interface:?} has no IPv4 address; configure one (parc serves from it)")]
    NoAddress {
        /// The interface.
        interface: String,
    },
    /// The DHCP range is not inside the interface's network or contains parc's own address.
    #[error(
        "DHCP range {first}-{last} must lie inside {ip}/{netmask} (the network of {interface}) \
         and not contain {ip}; choose a range of that network"
    )]
    RangeOutsideNetwork {
        /// First address.
        first: Ipv4Addr,
        /// Last address.
        last: Ipv4Addr,
        /// The interface.
        interface: String,
        /// Its address.
        ip: Ipv4Addr,
        /// Its netmask.
        netmask: Ipv4Addr,
    },
    /// Reading the interface list failed.
    #[error("cannot list network interfaces: {0}")]
    Interfaces(io::Error),
    /// A socket could not be bound.
    #[error(transparent)]
    Bind(#[from] BindError),
    /// The DHCP server failed.
    #[error(transparent)]
    Dhcp(#[from] dhcp::DhcpServerError),
    /// The TFTP server failed.
    #[error("TFTP server failed: {0}")]
    Tftp(io::Error),
}

/// Runs DHCP (ports 67 and 4011, bound to the interface) and TFTP (on the interface's address)
/// until `shutdown` is cancelled or one of them fails, which stops the other.
pub async fn serve(config: PxeConfig, shutdown: CancellationToken) -> Result<(), ServeError> {
    let iface = interface_ipv4(&config.interface)
        .map_err(ServeError::Interfaces)?
        .ok_or_else(|| ServeError::NoAddress { interface: config.interface.clone() })?;
    let mode = match config.mode {
        PxeMode::Proxy => crate::dhcp::Mode::Proxy,
        PxeMode::Dhcp { first, last } => {
            let net = |ip: Ipv4Addr| u32::from(ip) & u32::from(iface.netmask);
            let inside = net(first) == net(iface.ip) && net(last) == net(iface.ip);
            let own = (u32::from(first)..=u32::from(last)).contains(&u32::from(iface.ip));
            if !inside || own {
                return Err(ServeError::RangeOutsideNetwork {
                    first,
                    last,
                    interface: config.interface.clone(),
                    ip: iface.ip,
                    netmask: iface.netmask,
                });
            }
            crate::dhcp::Mode::Dhcp(crate::dhcp::Pool::new(first, last, iface.netmask))
        }
    };
    let dhcp_config = crate::dhcp::Config {
        server_ip: iface.ip,
        network: crate::dhcp::Ipv4Net::of(iface.ip, iface.netmask),
        relay_networks: config.relay_networks.clone(),
        mode,
        boot: crate::boot::Config { http_base: config.http_base.clone(), uefi_loader: config.uefi_loader },
        menu_prompt: "parc".into(),
    };
    let lease_file = matches!(config.mode, PxeMode::Dhcp { .. }).then(|| config.lease_file.clone());
    let tftp_socket = bind_udp(SocketAddr::from((iface.ip, config.tftp_port))).await?;
    let sockets = dhcp::DhcpSockets {
        dhcp: UdpSocket::from_std(dhcp::bind_dhcp(&config.interface, crate::dhcp::SERVER_PORT)?)
            .map_err(|e| ServeError::Dhcp(e.into()))?,
        pxe_boot: Some(
            UdpSocket::from_std(dhcp::bind_dhcp(&config.interface, crate::dhcp::PXE_BOOT_PORT)?)
                .map_err(|e| ServeError::Dhcp(e.into()))?,
        ),
    };
    let stop = shutdown.child_token();
    let tftp_run = async {
        let r = tftp::run(
            tftp_socket,
            tftp::Files {
                root: config.tftp_root.clone(),
                netboot: config.netboot_dir.clone(),
                scripts: config.grub_scripts.clone(),
            },
            config.tftp.clone(),
            Some(config.sightings.clone()),
            stop.clone(),
        )
        .await;
        stop.cancel();
        r.map_err(ServeError::Tftp)
    };
    let dhcp_run = async {
        let r = dhcp::run(sockets, dhcp_config, lease_file, &config.sightings, stop.clone()).await;
        stop.cancel();
        r.map_err(ServeError::from)
    };
    let (t, d) = tokio::join!(tftp_run, dhcp_run);
    t.and(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_has_its_address() {
        let lo = interface_ipv4("lo").unwrap().unwrap();
        assert_eq!((lo.ip, lo.netmask), (Ipv4Addr::LOCALHOST, Ipv4Addr::new(255, 0, 0, 0)));
        assert_eq!(interface_ipv4("parc-no-such-if0").unwrap(), None);
    }

    #[tokio::test]
    async fn receive_buffer_is_enlarged() {
        let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let before = socket2::SockRef::from(&s).recv_buffer_size().unwrap();
        enlarge_recv_buffer(&s);
        let after = socket2::SockRef::from(&s).recv_buffer_size().unwrap();
        assert!(after >= before);
    }

    #[test]
    fn ranges() {
        let a = Ipv4Addr::new(10, 0, 0, 100);
        let b = Ipv4Addr::new(10, 0, 0, 199);
        assert_eq!(parse_range("10.0.0.100-10.0.0.199"), Ok((a, b)));
        assert_eq!(parse_range(" 10.0.0.100 - 10.0.0.199 "), Ok((a, b)));
        for bad in ["", "10.0.0.100", "10.0.0.199-10.0.0.100", "a-b", "10.0.0.1-10.0.0.256"] {
            assert!(parse_range(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn privileged_port_error_says_what_to_do() {
        let e = BindError::Privileged { addr: "0.0.0.0:69".parse().unwrap() };
        assert!(e.to_string().contains("CAP_NET_BIND_SERVICE"));
        assert!(bind_udp("127.0.0.1:0".parse().unwrap()).await.is_ok());
    }
}

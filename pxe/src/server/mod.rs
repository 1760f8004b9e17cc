//! The only module that owns sockets: it receives datagrams, hands them to the pure cores in
//! [`crate::tftp`] (and `crate::dhcp`), and sends what they return.
//!
//! Every server takes an already-bound socket and a [`CancellationToken`]
//! (mini-redis's `server::run(listener, shutdown)`), so tests bind port 0 and shut down cleanly,
//! and `parc serve` decides addresses and privileges. [`bind_udp`] binds with a message that says
//! what to do when a privileged port is refused.
//!
//! [`CancellationToken`]: tokio_util::sync::CancellationToken

pub mod dhcp;
pub mod tftp;

use std::io;
use std::net::SocketAddr;

use tokio::net::UdpSocket;

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

/// The first IPv4 address of network interface `name` (the PXE interface's address is the
/// DHCP server identifier, `siaddr` and the TFTP server), or `None` if it has none.
pub fn interface_ipv4(name: &str) -> io::Result<Option<std::net::Ipv4Addr>> {
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
        if ifa.ifa_addr.is_null() || ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: ifa_name is a NUL-terminated string owned by the list.
        let ifname = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) };
        // SAFETY: ifa_addr points to a sockaddr of at least sa_family's size.
        let family = unsafe { (*ifa.ifa_addr).sa_family };
        if ifname.to_bytes() == name.as_bytes() && i32::from(family) == libc::AF_INET {
            // SAFETY: an AF_INET address is a sockaddr_in.
            let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
            found = Some(std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)));
            break;
        }
    }
    // SAFETY: `list` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(list) };
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_has_its_address() {
        assert_eq!(interface_ipv4("lo").unwrap(), Some(std::net::Ipv4Addr::LOCALHOST));
        assert_eq!(interface_ipv4("parc-no-such-if0").unwrap(), None);
    }

    #[tokio::test]
    async fn privileged_port_error_says_what_to_do() {
        let e = BindError::Privileged { addr: "0.0.0.0:69".parse().unwrap() };
        assert!(e.to_string().contains("CAP_NET_BIND_SERVICE"));
        assert!(bind_udp("127.0.0.1:0".parse().unwrap()).await.is_ok());
    }
}

//! The DHCP server: receives on port 67 (and 4011 for PXE boot server requests), asks
//! [`crate::dhcp::handle`], records leases, answers.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::BindError;
use crate::dhcp::lease::{BadLeaseFile, Leases};

use crate::dhcp::{self, wire, Port, Refusal, Request};
use crate::sightings::Sightings;

/// The DHCP server's sockets, from [`bind_dhcp`].
#[derive(Debug)]
pub struct DhcpSockets {
    /// Port 67.
    pub dhcp: UdpSocket,
    /// Port 4011, where PXE firmware sends its boot server REQUEST (OVMF does; needed in proxy
    /// mode, harmless in DHCP mode).
    pub pxe_boot: Option<UdpSocket>,
}

/// The DHCP server could not start or stopped on an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DhcpServerError {
    /// The lease file exists but cannot be read.
    #[error("cannot read lease file {path}: {source}; fix or move it away (parc then starts with no leases)")]
    LeaseFileRead {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The lease file does not parse.
    #[error("lease file {path} is corrupt: {source}; fix or move it away (parc then starts with no leases)")]
    LeaseFileCorrupt {
        /// The file.
        path: PathBuf,
        /// The error.
        source: BadLeaseFile,
    },
    /// A socket failed.
    #[error("DHCP socket error: {0}")]
    Io(#[from] io::Error),
}

/// Opens a DHCP socket on `interface`: bound to `0.0.0.0:port` to receive broadcasts, tied to
/// the interface with `SO_BINDTODEVICE` so that no other network is ever answered, allowed to
/// broadcast. Returns a non-blocking std socket: turn it into a tokio one with
/// [`UdpSocket::from_std`] inside the runtime (tests create it inside a network namespace).
///
/// Needs root or `CAP_NET_BIND_SERVICE` (port 67) and `CAP_NET_RAW` (`SO_BINDTODEVICE`).
pub fn bind_dhcp(interface: &str, port: u16) -> Result<std::net::UdpSocket, BindError> {
    let addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
    let classify = |source: io::Error| match source.raw_os_error() {
        Some(libc::EACCES) | Some(libc::EPERM) => BindError::Privileged { addr },
        _ => BindError::Other { addr, source },
    };
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).map_err(classify)?;
    socket.set_reuse_address(true).map_err(classify)?;
    socket.set_broadcast(true).map_err(classify)?;
    socket.bind_device(Some(interface.as_bytes())).map_err(|source| match source.raw_os_error() {
        Some(libc::EACCES) | Some(libc::EPERM) => BindError::Privileged { addr },
        Some(libc::ENODEV) => BindError::NoInterface { interface: interface.to_owned() },
        _ => BindError::Other { addr, source },
    })?;
    socket.bind(&addr.into()).map_err(classify)?;
    socket.set_nonblocking(true).map_err(classify)?;
    Ok(socket.into())
}

/// Reads the lease file; a missing one is an empty table.
pub fn load_leases(path: &Path) -> Result<Leases, DhcpServerError> {
    match std::fs::read_to_string(path) {
        Ok(s) => {
            Leases::from_json(&s).map_err(|source| DhcpServerError::LeaseFileCorrupt { path: path.to_owned(), source })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Leases::default()),
        Err(source) => Err(DhcpServerError::LeaseFileRead { path: path.to_owned(), source }),
    }
}

/// Writes the lease file atomically (temporary file, fsync, rename).
pub fn save_leases(path: &Path, leases: &Leases) -> io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(leases.to_json().as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Serves DHCP until `shutdown` is cancelled. In DHCP mode, `lease_file` is read at start and
/// rewritten after every change, so leases survive restarts.
pub async fn run(
    sockets: DhcpSockets,
    config: dhcp::Config,
    lease_file: Option<PathBuf>,
    sightings: &Sightings,
    shutdown: CancellationToken,
) -> Result<(), DhcpServerError> {
    super::enlarge_recv_buffer(&sockets.dhcp);
    let mut leases = match &lease_file {
        Some(p) => load_leases(p)?,
        None => Leases::default(),
    };
    info!(
        server = %config.server_ip,
        network = %config.network,
        relay_networks = ?config.relay_networks.iter().map(ToString::to_string).collect::<Vec<_>>(),
        mode = match config.mode { dhcp::Mode::Proxy => "proxy", dhcp::Mode::Dhcp(_) => "dhcp" },
        leases = leases.len(),
        "DHCP server listening"
    );
    let mut buf = vec![0u8; 4096];
    let mut buf_pxe = vec![0u8; 4096];
    loop {
        let (port, received) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = sockets.dhcp.recv_from(&mut buf) => (Port::Dhcp, r),
            r = recv_opt(sockets.pxe_boot.as_ref(), &mut buf_pxe) => (Port::PxeBoot, r),
        };
        let (n, source) = match received {
            Ok((n, SocketAddr::V4(source))) => (n, source),
            Ok(_) => continue,
            Err(e) => {
                debug!(error = %e, "DHCP receive error");
                continue;
            }
        };
        let data = match port {
            Port::Dhcp => &buf[..n],
            Port::PxeBoot => &buf_pxe[..n],
        };
        let message = match wire::decode(data) {
            Ok(m) => m,
            Err(e) => {
                debug!(%source, error = %e, "not a DHCP message");
                continue;
            }
        };
        sightings.record_dhcp(&message, *source.ip());
        let request = Request { message, source, port };
        let Some(reply) = dhcp::handle(&config, &leases, &request, SystemTime::now()) else {
            debug!(%source, xid = request.message.xid(), "DHCP request not for parc");
            continue;
        };
        if let Some(refusal) = reply.refused {
            let (mac, xid) = (mac_of(&request.message), request.message.xid());
            // A relay outside the allowed networks may be a router of this site that the
            // technician has to list; the other refusals are forged or broken packets, and a
            // flood of them must not flood the log.
            if matches!(refusal, Refusal::RelayNotAllowed { .. } | Refusal::SourceNotAllowed { .. }) {
                warn!(%source, %mac, xid, reason = %refusal, "DHCP reply not sent");
            } else {
                debug!(%source, %mac, xid, reason = %refusal, "DHCP reply not sent");
            }
            continue;
        }
        if let Some(lease) = reply.lease {
            info!(ip = %lease.ip, mac = %lease.mac, state = ?lease.state, "lease");
            // Offers are held for a minute and harmless to forget: only bindings, declines and
            // releases are written (and fsynced), so a DISCOVER flood does not hammer the disk.
            let durable = lease.state != crate::dhcp::lease::LeaseState::Offered;
            leases.apply(lease);
            if let Some(path) = lease_file.as_ref().filter(|_| durable) {
                if let Err(e) = save_leases(path, &leases) {
                    warn!(path = %path.display(), error = %e, "cannot write lease file; leases will not survive a restart");
                }
            }
        }
        if let Some(out) = reply.send {
            let socket = match (port, &sockets.pxe_boot) {
                (Port::PxeBoot, Some(s)) => s,
                _ => &sockets.dhcp,
            };
            let bytes = match wire::encode(&out.message) {
                Ok(b) => b,
                Err(e) => {
                    warn!(error = %e, "cannot encode DHCP reply");
                    continue;
                }
            };
            info!(
                mac = %mac_of(&request.message),
                kind = ?out.message.opts().msg_type(),
                yiaddr = %out.message.yiaddr(),
                boot = reply.boot.as_ref().map(|b| b.file()).unwrap_or(""),
                to = %out.to,
                "DHCP reply"
            );
            if crate::sightings::is_netboot_client(&request.message) {
                sightings.record_offer(crate::sightings::mac_of(&request.message), out.message.yiaddr());
            }
            if let Err(e) = socket.send_to(&bytes, SocketAddr::V4(out.to)).await {
                warn!(
                    to = %out.to,
                    mac = %mac_of(&request.message),
                    xid = request.message.xid(),
                    kind = ?out.message.opts().msg_type(),
                    error = %e,
                    "cannot send DHCP reply; the client will retry"
                );
            }
        }
    }
    info!("DHCP server stopped");
    Ok(())
}

async fn recv_opt(socket: Option<&UdpSocket>, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
    match socket {
        Some(s) => s.recv_from(buf).await,
        None => std::future::pending().await,
    }
}

fn mac_of(m: &dhcproto::v4::Message) -> crate::dhcp::lease::Mac {
    let mut mac = [0u8; 6];
    for (d, s) in mac.iter_mut().zip(m.chaddr()) {
        *d = *s;
    }
    crate::dhcp::lease::Mac(mac)
}

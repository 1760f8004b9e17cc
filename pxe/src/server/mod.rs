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
    #[error(
        "cannot bind {addr}: {source}; is another TFTP/DHCP server (dnsmasq, tftpd-hpa) running?"
    )]
    Other {
        /// The address asked for.
        addr: SocketAddr,
        /// The underlying error.
        source: io::Error,
    },
}

/// Binds a UDP socket for one of the servers.
pub async fn bind_udp(addr: SocketAddr) -> Result<UdpSocket, BindError> {
    UdpSocket::bind(addr)
        .await
        .map_err(|source| match source.kind() {
            io::ErrorKind::PermissionDenied => BindError::Privileged { addr },
            _ => BindError::Other { addr, source },
        })
}

//! parc-pxe: network boot for parc.
//!
//! - [`tftp`]: TFTP as pure code (packets, options, path resolution, one transfer as a state
//!   machine).
//! - [`server`]: the only module that owns sockets: the tokio TFTP server (and the DHCP one).

pub mod server;
pub mod tftp;

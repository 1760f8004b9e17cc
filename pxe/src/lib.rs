//! parc-pxe: network boot for parc.
//!
//! - [`boot`]: who is asking → what to boot (pure, table-driven).
//! - [`ipxe`]: the per-machine iPXE script behind `GET /boot.ipxe` (pure).
//! - [`grub`]: the Secure Boot chain's GRUB scripts, served over TFTP (pure).
//! - [`dhcp`]: DHCP and ProxyDHCP as pure code (`handle(&config, &leases, request, now)`).
//! - [`tftp`]: TFTP as pure code (packets, options, path resolution, one transfer as a state
//!   machine).
//! - [`server`]: the only module that owns sockets: the tokio TFTP and DHCP servers.
//! - [`sightings`]: which MACs and addresses were seen network-booting (the web server's
//!   evidence before it issues a boot credential).

pub mod boot;
pub mod dhcp;
pub mod grub;
pub mod ipxe;
pub mod server;
pub mod sightings;
pub mod tftp;
pub mod wol;

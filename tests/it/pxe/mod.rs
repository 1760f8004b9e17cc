//! End-to-end tests of parc-pxe against real clients: tftp-hpa, atftp and curl over loopback
//! (`tftp`), udhcpc in network namespaces the tests create (`dhcp`).

mod dhcp;
mod lab;
mod tftp;

// The prerequisite checks are shared with the other test modules.
pub use crate::support::{have, installed, prerequisite_missing};

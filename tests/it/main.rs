//! The integration tests: one binary (link time on 2 cores), one module per area.

mod agent;
mod api;
mod console;
mod directory;
mod e2e;
mod grow;
mod imaging;
mod lab;
mod lifecycle;
mod pxe;
mod security;
mod serve;
mod store;
mod support;
mod used_disks;
mod windows;

//! The integration tests: one binary (link time on 2 cores), one module per area.

mod imaging;
mod pxe;
mod serve;
mod support;

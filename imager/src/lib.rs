//! parc-imager: the image format, the chunk store, capture and deploy.
//!
//! An image is a manifest (partition table, and for each partition the byte ranges in use
//! cut into content-addressed chunks) plus the chunks themselves, stored zstd-compressed
//! and named by the sha256 of their uncompressed bytes. See `FORMAT.md`.

pub mod digest;
pub mod format;
pub mod fs;
pub mod inspect;
pub mod io;
pub mod preflight;

pub use digest::Digest;
pub mod blockdev;
pub mod capture;
pub mod deploy;
pub mod error;
pub mod progress;
pub mod store;

pub use error::Error;

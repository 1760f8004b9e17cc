//! The image format, as pure code: the manifest and its canonical encoding, partition tables,
//! and how used ranges are cut into chunks. No file or network I/O here.

pub mod chunking;
pub mod manifest;
pub mod table;

pub use manifest::{Chunk, DiskInfo, Manifest, ManifestError, Partition, Region, FORMAT_NAME, FORMAT_VERSION};

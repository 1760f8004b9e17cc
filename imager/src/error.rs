//! The imager's error type: what went wrong, on which image, chunk or device, in words a
//! technician can act on.

use std::path::PathBuf;

use crate::digest::Digest;
use crate::format::table::TableError;
use crate::format::ManifestError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Table(#[from] TableError),
    #[error("capture refused before anything was stored:\n{0}")]
    Preflight(crate::preflight::Findings),
    #[error("cannot read the source {path}: {source}")]
    Source { path: PathBuf, source: std::io::Error },
    #[error("cannot use the target {path}: {source}")]
    Target { path: PathBuf, source: std::io::Error },
    #[error(
        "chunk {digest} of image {image} (disk offset {offset}) is corrupt: {reason}; nothing after it was \
         written. Run `parc image verify {image}` and recapture or restore the store"
    )]
    ChunkCorrupt { image: String, digest: Digest, offset: u64, reason: String },
    #[error(
        "target {path} ({}) is smaller than image {image} needs ({}){why}; choose a larger disk",
        human(*target_size), human(*needed)
    )]
    TargetTooSmall { path: PathBuf, image: String, target_size: u64, needed: u64, why: String },
    #[error("the image's GPT cannot be moved to a {target_size}-byte disk: {reason}")]
    Relocate { target_size: u64, reason: String },
    #[error(
        "writing {path} at byte {offset} failed: {source}; the disk may be failing (check the kernel log, \
         replace the disk); it was left unbootable"
    )]
    Write { path: PathBuf, offset: u64, source: std::io::Error },
    #[error("reading {path} at byte {offset} failed: {source}; the disk may be failing (check the kernel log)")]
    Read { path: PathBuf, offset: u64, source: std::io::Error },
    #[error("the deploy to {path} was cancelled; the disk was left unbootable")]
    Cancelled { path: PathBuf },
    #[error("verification after writing failed: {mismatches} chunk(s) on {path} differ from image {image}, first at disk offset {first_offset}")]
    VerifyFailed { path: PathBuf, image: String, mismatches: u64, first_offset: u64 },
}

/// Bytes for people: "8.0 GiB".
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

//! Where chunks and manifests live. Deploy reads through [`ChunkSource`], so a directory on
//! this machine and (later) an HTTP server serve the same images the same way.

pub mod dir;
pub mod http;
pub mod pins;

use std::path::PathBuf;

use crate::digest::Digest;

pub use dir::DirStore;
pub use http::HttpStore;
pub use pins::{Pin, PinFile};

/// Read access to an image store.
pub trait ChunkSource: Send + Sync {
    /// The stored (zstd-compressed) bytes of a chunk. Callers verify them.
    fn read_chunk(&self, digest: &Digest) -> Result<Vec<u8>, StoreError>;
    /// The canonical manifest bytes. Callers verify them against the digest.
    fn read_manifest(&self, digest: &Digest) -> Result<Vec<u8>, StoreError>;
    /// `name`, `name@N` or a digest (or a unique prefix of at least 8 hex digits).
    fn resolve(&self, reference: &str) -> Result<Digest, StoreError>;
    /// For messages: where the store is.
    fn location(&self) -> String;
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a parc image store (no chunks/ or manifests/ directory); capture an image into it first")]
    NotAStore { path: PathBuf },
    #[error("chunk {digest} is missing from the store at {store}")]
    ChunkMissing { store: String, digest: Digest },
    #[error("manifest {digest} is missing from the store at {store}")]
    ManifestMissing { store: String, digest: Digest },
    #[error("no image called {reference:?} in the store at {store} (see `parc image ls`)")]
    UnknownImage { store: String, reference: String },
    #[error("{reference:?} matches several images: {candidates}; give more digits")]
    Ambiguous { reference: String, candidates: String },
    #[error("invalid image name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },
    #[error("fetching {url}: {reason}")]
    Http { url: String, reason: String },
    #[error("the store at {store} is in use by a capture or deploy; run gc again when it has finished")]
    Busy { store: String },
    #[error(
        "pin file {path} cannot be read ({reason}), so nothing can be removed safely; restart `parc serve` \
         (it rewrites its pins at start) or, if no server uses this store, delete the file"
    )]
    BadPinFile { path: PathBuf, reason: String },
    #[error(
        "not removing {reference}: {needed_by}. Wait until that is no longer so (change the department's \
         image, let the task finish or cancel it), or pass --force to remove the name anyway (what is \
         pinned stays in the store until nothing pins it)"
    )]
    Pinned { reference: String, needed_by: String },
}

/// Image names: what technicians type, so kept to a safe, path-free alphabet.
pub fn validate_name(name: &str) -> Result<(), StoreError> {
    let bad = |reason| Err(StoreError::InvalidName { name: name.to_string(), reason });
    if name.is_empty() || name.len() > 64 {
        return bad("must be 1 to 64 characters");
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) {
        return bad("only letters, digits, '.', '_' and '-' are allowed");
    }
    if name.starts_with('.') || name.starts_with('-') {
        return bad("must not start with '.' or '-'");
    }
    if name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
        return bad("must not look like a digest");
    }
    Ok(())
}

/// Splits `name@N` into the name and the version.
pub fn split_reference(reference: &str) -> (&str, Option<u32>) {
    match reference.rsplit_once('@') {
        Some((name, v)) => match v.parse() {
            Ok(v) => (name, Some(v)),
            Err(_) => (reference, None),
        },
        None => (reference, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(validate_name("debian12-base").is_ok());
        assert!(validate_name("../etc").is_err());
        assert!(validate_name("a/b").is_err());
        assert!(validate_name("").is_err());
        assert!(validate_name(".hidden").is_err());
        assert_eq!(split_reference("debian12-base@2"), ("debian12-base", Some(2)));
        assert_eq!(split_reference("debian12-base"), ("debian12-base", None));
    }
}

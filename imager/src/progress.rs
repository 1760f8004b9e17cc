//! Progress travels from the library to whoever shows it (a terminal bar, the console, the
//! agent's reports) through this trait; the library never prints.

use std::sync::atomic::{AtomicU64, Ordering};

pub trait Progress: Sync {
    /// A new phase begins, with the number of bytes it will process (0 if unknown).
    fn phase(&self, name: &str, total_bytes: u64);
    /// `bytes` more bytes of the current phase are done.
    fn advance(&self, bytes: u64);
}

/// Discards progress.
#[derive(Debug, Default)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn phase(&self, _: &str, _: u64) {}
    fn advance(&self, _: u64) {}
}

/// Counts bytes; handy in tests.
#[derive(Debug, Default)]
pub struct CountingProgress {
    pub bytes: AtomicU64,
}

impl Progress for CountingProgress {
    fn phase(&self, _: &str, _: u64) {}
    fn advance(&self, bytes: u64) {
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }
}

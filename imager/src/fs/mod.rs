//! Used-block maps: which byte ranges of a partition hold data worth storing.
//!
//! Each parser reads only the file system's own allocation structures (ext block group
//! bitmaps, the FAT) and never trusts them blindly: a structure that points outside the
//! partition is an error, and the caller falls back to storing every non-zero block.

pub mod ext;
pub mod fat;
pub mod nonzero;
pub mod ntfs;
pub mod swap;

use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::io::ReadAt;

/// What a partition holds, as recorded in the manifest.
///
/// New kinds are added as variants; readers of an older build see an unknown string and
/// refuse the manifest with a clear error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum FsKind {
    Ext2,
    Ext3,
    Ext4,
    Fat12,
    Fat16,
    Fat32,
    Swap,
    /// Allocation from `$Bitmap`; stored as non-zero blocks when its structures are not
    /// trusted (the capture says why).
    Ntfs,
    /// Nothing recognised.
    Unknown,
}

/// How the used ranges were found, so a reader of the manifest knows what "unused" means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum MapMethod {
    /// The file system's allocation structures: unused ranges are free space.
    Allocation,
    /// Only the header is kept (swap): the rest is scratch space.
    Header,
    /// Every block that is not all zeros: unused ranges were zero in the source.
    Nonzero,
}

/// Used byte ranges of one partition, relative to its start: sorted, non-overlapping,
/// merged, each inside `[0, partition length)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsedMap {
    pub fs: FsKind,
    pub method: MapMethod,
    /// Allocation unit in bytes (ext block size, FAT cluster size, 4096 for non-zero scans).
    pub block_size: u64,
    pub ranges: Vec<Range<u64>>,
    /// Ranges outside `ranges` that the image defines as zeros (the head of NTFS scratch files);
    /// the rest of the free space is "don't care".
    pub zeros: Vec<Range<u64>>,
    /// Files whose clusters are not stored although allocated (NTFS scratch files).
    pub skipped: Vec<Skipped>,
    /// What the parser could not do with certainty and did the safe way (stored the bytes).
    pub notes: Vec<String>,
}

/// An allocated file whose content is not stored: Windows rewrites it at boot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skipped {
    pub name: String,
    /// Allocated bytes left out of the image.
    pub bytes: u64,
    /// Bytes of its head the image defines as zeros.
    pub zeroed: u64,
}

impl UsedMap {
    pub fn new(fs: FsKind, method: MapMethod, block_size: u64, ranges: Vec<Range<u64>>) -> UsedMap {
        UsedMap { fs, method, block_size, ranges, zeros: Vec::new(), skipped: Vec::new(), notes: Vec::new() }
    }

    pub fn used_bytes(&self) -> u64 {
        self.ranges.iter().map(|r| r.end - r.start).sum()
    }
}

/// Errors of the file-system parsers. A parser error never fails a capture: the capture
/// logs it and falls back to [`nonzero::map`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FsError {
    #[error("reading {what} at byte {offset}: {source}")]
    Io { what: &'static str, offset: u64, source: std::io::Error },
    #[error("{fs:?} structure is inconsistent: {reason}")]
    Corrupt { fs: FsKind, reason: String },
}

/// Finds what the partition holds and which ranges are in use.
///
/// Order matters: swap and ext are recognised by magic numbers at fixed offsets, FAT by a
/// boot sector whose fields must all be plausible, and anything else is scanned for non-zero
/// blocks. A recognised file system whose structures are inconsistent falls back to the scan
/// too (the fallback is logged by the caller through the returned `fallback` reason).
pub fn used_map(dev: &dyn ReadAt, len: u64) -> (UsedMap, Option<FsError>) {
    let parsed = if swap::detect(dev, len) {
        Some((FsKind::Unknown, swap::map(dev, len)))
    } else if ext::detect(dev, len) {
        Some((FsKind::Unknown, ext::map(dev, len)))
    } else if fat::detect(dev, len) {
        Some((FsKind::Unknown, fat::map(dev, len)))
    } else if ntfs::detect(dev, len) {
        // A damaged NTFS is still NTFS: the manifest says so, its blocks stored as non-zero.
        Some((FsKind::Ntfs, ntfs::map(dev, len)))
    } else {
        None
    };
    match parsed {
        Some((_, Ok(map))) => (map, None),
        Some((kind, Err(e))) => (nonzero_or_empty(dev, len, kind), Some(e)),
        None => {
            let kind = if is_ntfs(dev) { FsKind::Ntfs } else { FsKind::Unknown };
            (nonzero_or_empty(dev, len, kind), None)
        }
    }
}

fn nonzero_or_empty(dev: &dyn ReadAt, len: u64, fs: FsKind) -> UsedMap {
    let mut map =
        nonzero::map(dev, len).unwrap_or_else(|_| UsedMap::new(fs, MapMethod::Nonzero, nonzero::BLOCK, vec![0..len]));
    map.fs = fs;
    map
}

/// NTFS boot sectors carry the OEM id "NTFS    " at byte 3.
fn is_ntfs(dev: &dyn ReadAt) -> bool {
    let mut oem = [0u8; 8];
    dev.read_exact_at(&mut oem, 3).is_ok() && &oem == b"NTFS    "
}

/// Sorts and merges touching or overlapping ranges, dropping empty ones.
pub fn normalize(mut ranges: Vec<Range<u64>>) -> Vec<Range<u64>> {
    ranges.retain(|r| r.start < r.end);
    ranges.sort_by_key(|r| r.start);
    let mut out: Vec<Range<u64>> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match out.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => out.push(r),
        }
    }
    out
}

/// The sorted, merged `ranges` minus the sorted, merged `gone`.
pub fn subtract(ranges: &[Range<u64>], gone: &[Range<u64>]) -> Vec<Range<u64>> {
    ranges.iter().flat_map(|r| complement(gone, r.clone())).collect()
}

/// The parts of `within` that the sorted, merged `used` ranges do not cover.
pub fn complement(used: &[Range<u64>], within: Range<u64>) -> Vec<Range<u64>> {
    let mut out = Vec::new();
    let mut at = within.start;
    for r in used {
        if r.end <= at {
            continue;
        }
        if r.start >= within.end {
            break;
        }
        if r.start > at {
            out.push(at..r.start);
        }
        at = at.max(r.end);
    }
    if at < within.end {
        out.push(at..within.end);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_merges_and_sorts() {
        let r = normalize(vec![10..20, 0..5, 5..7, 15..30, 40..40]);
        assert_eq!(r, vec![0..7, 10..30]);
    }

    #[test]
    fn complement_within_a_window() {
        let used = vec![0..10, 20..30, 40..50];
        assert_eq!(complement(&used, 0..60), vec![10..20, 30..40, 50..60]);
        assert_eq!(complement(&used, 5..45), vec![10..20, 30..40]);
        assert_eq!(complement(&used, 22..28), vec![]);
        assert_eq!(complement(&[], 3..9), vec![3..9]);
    }

    #[test]
    fn subtract_cuts_holes() {
        assert_eq!(subtract(&[0..100, 200..300], &[50..60, 90..210, 290..400]), vec![0..50, 60..90, 210..290]);
        assert_eq!(subtract(&[0..10], &[]), vec![0..10]);
    }
}

//! The fallback map: every block that is not entirely zero.

use super::{normalize, FsError, FsKind, MapMethod, UsedMap};
use crate::io::ReadAt;

/// Scan granularity: the page and file-system block size nearly every disk uses.
pub const BLOCK: u64 = 4096;
/// Read size for the scan; large reads keep the scan at disk speed.
const READ: u64 = 4 << 20;

pub fn map(dev: &dyn ReadAt, len: u64) -> Result<UsedMap, FsError> {
    let mut ranges = Vec::new();
    let mut buf = vec![0u8; READ as usize];
    let mut off = 0u64;
    while off < len {
        let n = READ.min(len - off) as usize;
        dev.read_exact_at(&mut buf[..n], off).map_err(|source| FsError::Io {
            what: "partition data",
            offset: off,
            source,
        })?;
        for (i, block) in buf[..n].chunks(BLOCK as usize).enumerate() {
            if !is_zero(block) {
                let start = off + i as u64 * BLOCK;
                ranges.push(start..start + block.len() as u64);
            }
        }
        off += n as u64;
    }
    Ok(UsedMap::new(FsKind::Unknown, MapMethod::Nonzero, BLOCK, normalize(ranges)))
}

/// True when every byte is zero. Word-sized compares: this runs over whole disks.
pub fn is_zero(buf: &[u8]) -> bool {
    let mut words = buf.chunks_exact(8);
    words.by_ref().all(|c| u64::from_ne_bytes(c.try_into().expect("8 bytes")) == 0)
        && words.remainder().iter().all(|&b| b == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_nonzero_blocks() {
        let mut disk = vec![0u8; 64 * 1024];
        disk[5000] = 1; // block 1
        disk[4096 * 3] = 7; // block 3
        disk[4096 * 4 + 4095] = 9; // block 4
        let m = map(&disk, disk.len() as u64).unwrap();
        assert_eq!(m.ranges, vec![4096..8192, 12288..20480]);
    }

    #[test]
    fn partial_last_block() {
        let mut disk = vec![0u8; 4096 + 100];
        disk[4096 + 99] = 1;
        let m = map(&disk, disk.len() as u64).unwrap();
        assert_eq!(m.ranges, vec![4096..4196]);
    }
}

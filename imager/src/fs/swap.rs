//! Linux swap: only the header page is worth keeping.

use super::{FsError, FsKind, MapMethod, UsedMap};
use crate::io::ReadAt;

/// `mkswap` writes its signature in the last 10 bytes of the first page.
const PAGE: u64 = 4096;
const MAGICS: [&[u8; 10]; 2] = [b"SWAPSPACE2", b"SWAP-SPACE"];

pub fn detect(dev: &dyn ReadAt, len: u64) -> bool {
    let mut sig = [0u8; 10];
    len >= PAGE && dev.read_exact_at(&mut sig, PAGE - 10).is_ok() && MAGICS.iter().any(|m| **m == sig)
}

pub fn map(_dev: &dyn ReadAt, len: u64) -> Result<UsedMap, FsError> {
    Ok(UsedMap::new(FsKind::Swap, MapMethod::Header, PAGE, vec![0..PAGE.min(len)]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_swap_header() {
        let mut disk = vec![0u8; 1 << 20];
        disk[4086..4096].copy_from_slice(b"SWAPSPACE2");
        assert!(detect(&disk, disk.len() as u64));
        assert_eq!(map(&disk, disk.len() as u64).unwrap().ranges, vec![0..4096]);
        assert!(!detect(&vec![0u8; 8192], 8192));
    }
}

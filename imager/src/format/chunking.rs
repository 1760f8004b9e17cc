//! Cutting used ranges into chunks on a fixed grid aligned to the start of the disk.
//!
//! A chunk is all the used bytes of one grid cell, gathered. Aligning cells to the disk
//! (not to the start of each extent) means an unchanged cell of a new image version gets the
//! same digest as before even when the extents around it grew or shrank: that is what makes
//! the delta between versions small. Why fixed cells rather than content-defined boundaries
//! is measured in FORMAT.md.

use std::ops::Range;

/// Default grid: see FORMAT.md for the measurement behind it.
pub const DEFAULT_CHUNK_SIZE: u64 = 1 << 20;

/// Groups sorted, non-overlapping ranges into chunks: each returned item is the list of
/// `[offset, length]` pieces of one chunk, in disk order.
pub fn cut(ranges: &[Range<u64>], chunk_size: u64) -> Vec<Vec<[u64; 2]>> {
    debug_assert!(chunk_size.is_power_of_two());
    let mut out: Vec<Vec<[u64; 2]>> = Vec::new();
    let mut cell_of_last = u64::MAX;
    for r in ranges {
        let mut off = r.start;
        while off < r.end {
            let cell = off / chunk_size;
            let cell_end = (cell + 1) * chunk_size;
            let end = r.end.min(cell_end);
            if cell != cell_of_last || out.is_empty() {
                out.push(Vec::new());
                cell_of_last = cell;
            }
            out.last_mut().expect("pushed above").push([off, end - off]);
            off = end;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gathers_pieces_of_a_cell_and_splits_at_cell_edges() {
        let cs = 1 << 20;
        let ranges = [0..4096, 8192..12288, (cs - 4096)..(cs + 8192), (3 * cs)..(3 * cs + 10)];
        let chunks = cut(&ranges, cs);
        assert_eq!(
            chunks,
            vec![vec![[0, 4096], [8192, 4096], [cs - 4096, 4096]], vec![[cs, 8192]], vec![[3 * cs, 10]],]
        );
    }

    #[test]
    fn long_range_makes_full_cells() {
        let cs = 65536;
        let chunks = cut(&[100..(3 * cs + 5)], cs);
        assert_eq!(chunks.len(), 4);
        assert_eq!(chunks[0], vec![[100, cs - 100]]);
        assert_eq!(chunks[3], vec![[3 * cs, 5]]);
        let total: u64 = chunks.iter().flatten().map(|p| p[1]).sum();
        assert_eq!(total, 3 * cs + 5 - 100);
    }
}

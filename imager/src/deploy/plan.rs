//! The plan (pure): from a manifest and the target's geometry, what each phase must do.
//!
//! - the **disarm** ranges, zeroed before anything else so that neither the old system nor a
//!   half-written new one can boot: the boot area (everything before the first partition:
//!   MBR, GPT header and entries, the boot loader gap) and the last sectors (a stale GPT
//!   backup must not let firmware rebuild the old table);
//! - the **held** chunks, written last: those of the boot area and the GPT backup (and on a
//!   disk without a partition table, those over the first MiB, where a boot sector lives);
//! - the **body**: every other chunk, and the zero ranges the image defines outside the
//!   disarm ranges;
//! - chunks with the same content share one fetch;
//! - on a larger disk, when asked, the **growth** of the last partition to the end of the disk;
//!   on a smaller one, when every block its file system uses still fits, its **shrinking**
//!   (the caller resizes the file system between the body and the boot area).

use std::collections::HashMap;
use std::ops::Range;

use crate::digest::Digest;
use crate::format::table::TableKind;
use crate::format::{Chunk, Manifest, Partition};
use crate::fs::{complement, normalize, FsKind, MapMethod};

/// Windows' recovery partition (GPT type): it stays as the image has it.
const WINDOWS_RECOVERY: &str = "de94bba4-06d1-4d40-a16a-bfd50179d6ac";
/// MBR type of a hidden NTFS recovery partition.
const MBR_RECOVERY: &str = "0x27";
/// A grown partition ends on this boundary (what partitioning tools align to).
const GROW_ALIGN: u64 = 1 << 20;
/// Free space a shrunk NTFS volume keeps beyond what it holds (and 1 % more).
const NTFS_SPARE: u64 = 4 << 20;

/// On a disk without a partition table, the bytes held back at its start.
const WHOLE_DISK_HEAD: u64 = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    #[error("target is {target_size} bytes, the image needs {needed}{}", why.as_ref().map(|w| format!(" ({w})")).unwrap_or_default())]
    TooSmall { target_size: u64, needed: u64, why: Option<String> },
    #[error("the image has {image}-byte sectors, the target {target}-byte sectors")]
    SectorSize { image: u32, target: u32 },
}

#[derive(Debug, Clone)]
pub struct Item<'m> {
    pub chunk: &'m Chunk,
    /// Written last (boot area, GPT backup).
    pub held: bool,
    /// A GPT backup chunk, replaced by a regenerated backup on a target of another size.
    pub replaced: bool,
    /// Index of the first item with the same content: that one is fetched, this one copied.
    pub same_as: Option<usize>,
}

#[derive(Debug, Clone)]
pub struct Plan<'m> {
    pub items: Vec<Item<'m>>,
    /// `items[..boot_items]` are the boot area's chunks.
    pub boot_items: usize,
    /// Zeroed first, in this order.
    pub disarm: Vec<Range<u64>>,
    /// Zero ranges the body phase makes zero (defined zeros outside `disarm`).
    pub body_zeros: Vec<Range<u64>>,
    /// Zero ranges inside `disarm`: already zero, checked after the boot area is written.
    pub held_zeros: Vec<Range<u64>>,
    /// The image's GPT moves to the end of a target of another size.
    pub relocate: bool,
    /// The last partition grows to the end of the target, or shrinks onto a smaller one.
    pub resize: Option<Resize>,
    /// Why growth was asked for but not planned.
    pub grow_skipped: Option<String>,
}

/// The last partition of the image, resized: the table says `length`, its file system still
/// `image_length` until the caller resizes it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Resize {
    pub number: u32,
    pub fs: FsKind,
    pub start: u64,
    pub image_length: u64,
    pub length: u64,
}

impl Resize {
    pub fn shrinks(&self) -> bool {
        self.length < self.image_length
    }
}

/// How a deploy may change the last partition's size to fit the target.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fit {
    /// Grow it to the end of a larger target.
    pub grow: bool,
    /// Shrink it onto a smaller target when every block its file system uses fits.
    pub shrink: bool,
}

/// What follows the last partition on the target: the GPT backup (or the sectors the disarm
/// zeroes on an MBR disk, which a file system may cover).
fn tail(manifest: &Manifest) -> u64 {
    match manifest.table {
        TableKind::Gpt => {
            let ss = u64::from(manifest.disk.logical_sector_size);
            manifest.backup_area.as_ref().map_or(0, |b| b.length).max(33 * ss)
        }
        _ => 0,
    }
}

fn last_partition(manifest: &Manifest) -> Option<&Partition> {
    manifest.partitions.iter().max_by_key(|p| p.start + p.length)
}

/// Whether parc can resize this file system (ext2/3/4 with e2fsprogs, NTFS with ntfsresize).
fn resizable(fs: FsKind) -> bool {
    matches!(fs, FsKind::Ext2 | FsKind::Ext3 | FsKind::Ext4 | FsKind::Ntfs)
}

/// The last partition, when the table lets its end move: a GPT or primary MBR partition that
/// no data of the image follows.
fn movable_last(manifest: &Manifest) -> Result<&Partition, String> {
    let last = last_partition(manifest).ok_or("the image has no partition")?;
    match manifest.table {
        TableKind::None => return Err("the image has no partition table".into()),
        TableKind::Mbr if last.number > 4 => {
            return Err(format!("partition {} is a logical MBR partition", last.number))
        }
        _ => {}
    }
    let end = last.start + last.length;
    if manifest.gaps.iter().flat_map(|g| g.chunks.iter()).any(|c| c.offset() >= end) {
        return Err("the image holds data after its last partition".into());
    }
    Ok(last)
}

/// `last` ending at `new_end` on the target.
fn resized(last: &Partition, new_end: u64) -> Resize {
    Resize {
        number: last.number,
        fs: last.fs,
        start: last.start,
        image_length: last.length,
        length: new_end - last.start,
    }
}

/// Where the last partition's used blocks end (rounded up to the alignment), if it may shrink.
fn shrink_floor(manifest: &Manifest) -> Result<u64, String> {
    let last = movable_last(manifest)?;
    let n = last.number;
    if !resizable(last.fs) {
        return Err(format!(
            "its last partition ({n}, {:?}) cannot be shrunk by parc, which shrinks ext2/3/4 and NTFS only",
            last.fs
        ));
    }
    if last.map != MapMethod::Allocation {
        return Err(format!(
            "partition {n}'s used blocks were found by a scan for non-zero data, not read from its file system"
        ));
    }
    let used_end = last
        .chunks
        .iter()
        .filter(|c| !recreated_by_resize(last, c))
        .flat_map(|c| c.ranges())
        .map(|r| r.end)
        .max()
        .unwrap_or(last.start);
    let mut floor = used_end.div_ceil(GROW_ALIGN) * GROW_ALIGN;
    if last.fs == FsKind::Ntfs {
        // ntfsresize moves the scratch files' clusters (their content does not matter) below
        // the new end: room for them, for what is stored, and some to spare.
        let stored: u64 = last.chunks.iter().flat_map(|c| c.ranges()).map(|r| r.end - r.start).sum();
        let need = stored + last.scratch_bytes;
        let room = last.start + need + need / 100 + NTFS_SPARE;
        floor = floor.max(room.div_ceil(GROW_ALIGN) * GROW_ALIGN);
    }
    Ok(floor)
}

/// NTFS's last sectors, past its last whole cluster (the backup boot sector): a chunk of only
/// those is written again by ntfsresize at the volume's new end, so it does not hold the
/// partition at its size. A chunk that also holds a used cluster does.
fn recreated_by_resize(p: &Partition, c: &Chunk) -> bool {
    let end = p.start + p.length;
    p.fs == FsKind::Ntfs && matches!(c.at.as_slice(), [[o, l]] if o + l == end && *l <= p.block_size)
}

/// The smallest target the image deploys to when its last partition may shrink.
pub fn smallest_target(manifest: &Manifest) -> u64 {
    let needed = manifest.min_target_size();
    match shrink_floor(manifest) {
        Ok(floor) => needed.min(floor + tail(manifest)),
        Err(_) => needed,
    }
}

fn plan_shrink(manifest: &Manifest, target_size: u64) -> Result<Resize, String> {
    let floor = shrink_floor(manifest)?;
    let last = movable_last(manifest)?;
    let new_end = target_size.saturating_sub(tail(manifest)) / GROW_ALIGN * GROW_ALIGN;
    if new_end < floor {
        return Err(format!(
            "partition {} must end at byte {floor} or later to keep what it holds: a disk of at least {} bytes is needed",
            last.number,
            floor + tail(manifest)
        ));
    }
    Ok(resized(last, new_end))
}

/// Where the last partition of `manifest` may end on a target of `target_size` bytes, or why
/// it keeps its size. `None` when there is nothing to say (same size, smaller target).
fn plan_grow(manifest: &Manifest, target_size: u64) -> Option<Result<Resize, String>> {
    if target_size <= manifest.disk.size {
        return None;
    }
    let last = match movable_last(manifest) {
        Ok(last) => last,
        Err(why) => return Some(Err(format!("the last partition keeps its size: {why}"))),
    };
    let end = last.start + last.length;
    let ss = u64::from(manifest.disk.logical_sector_size);
    let limit = match manifest.table {
        // The 32-bit sector count of an MBR entry.
        TableKind::Mbr => target_size.min(last.start + u64::from(u32::MAX) * ss),
        _ => target_size - tail(manifest),
    };
    let new_end = limit / GROW_ALIGN * GROW_ALIGN;
    let keeps = |why: String| Some(Err(format!("partition {} keeps its size: {why}", last.number)));
    if !resizable(last.fs) {
        return keeps(format!("parc grows ext2/3/4 and NTFS, not {:?}", last.fs));
    }
    if last.type_id == WINDOWS_RECOVERY || last.type_id == MBR_RECOVERY {
        return keeps("it is Windows' recovery partition, which must stay after the system partition".into());
    }
    if new_end < end + GROW_ALIGN {
        return None;
    }
    Some(Ok(resized(last, new_end)))
}

impl<'m> Plan<'m> {
    /// `fit`: whether the last partition may take the rest of a larger target, or shrink onto a
    /// smaller one.
    pub fn new(
        manifest: &'m Manifest,
        target_size: u64,
        target_sector_size: u32,
        fit: Fit,
    ) -> Result<Plan<'m>, PlanError> {
        let needed = manifest.min_target_size();
        let shrink = if target_size >= needed {
            None
        } else if !fit.shrink {
            return Err(PlanError::TooSmall { target_size, needed, why: None });
        } else {
            match plan_shrink(manifest, target_size) {
                Ok(r) => Some(r),
                Err(why) => {
                    return Err(PlanError::TooSmall { target_size, needed: smallest_target(manifest), why: Some(why) })
                }
            }
        };
        let ss = manifest.disk.logical_sector_size;
        if manifest.table != TableKind::None && target_sector_size != ss {
            return Err(PlanError::SectorSize { image: ss, target: target_sector_size });
        }
        let relocate = manifest.table == TableKind::Gpt && target_size != manifest.disk.size;
        let tail_len = manifest.backup_area.as_ref().map_or(0, |b| b.length).max(33 * u64::from(ss)).min(target_size);
        let head_end = match manifest.table {
            TableKind::None => WHOLE_DISK_HEAD,
            _ => manifest.boot_area.start + manifest.boot_area.length,
        }
        .min(target_size);
        let disarm = normalize(vec![0..head_end, target_size - tail_len..target_size]);

        let mut items = Vec::new();
        for c in &manifest.boot_area.chunks {
            items.push(Item { chunk: c, held: true, replaced: false, same_as: None });
        }
        let boot_items = items.len();
        let body = manifest
            .partitions
            .iter()
            .flat_map(|p| p.chunks.iter())
            .chain(manifest.gaps.iter().flat_map(|g| g.chunks.iter()));
        // A shrink leaves out what it lets ntfsresize write again (see `recreated_by_resize`).
        let shrunk_end = shrink.as_ref().map(|r| r.start + r.length);
        let body = body.filter(|c| shrunk_end.is_none_or(|e| c.ranges().all(|r| r.end <= e)));
        for c in body {
            // Only a table-less disk has chunks under the disarmed head; under the tail, a
            // body chunk is written after the tail is zeroed, so it need not wait.
            let held = manifest.table == TableKind::None && c.offset() < head_end;
            items.push(Item { chunk: c, held, replaced: false, same_as: None });
        }
        for c in manifest.backup_area.iter().flat_map(|b| b.chunks.iter()) {
            items.push(Item { chunk: c, held: true, replaced: relocate, same_as: None });
        }
        let mut first: HashMap<Digest, usize> = HashMap::new();
        for (i, item) in items.iter_mut().enumerate() {
            if item.replaced {
                continue;
            }
            let f = *first.entry(item.chunk.sha256).or_insert(i);
            if f != i {
                item.same_as = Some(f);
            }
        }

        // Zeros past a shrunk partition's end mean nothing on this disk (where the GPT backup
        // may now be).
        let zero_end = shrunk_end.unwrap_or(target_size).min(target_size);
        let zeros: Vec<Range<u64>> = manifest
            .defined_zeros()
            .into_iter()
            .filter_map(|r| (r.start < zero_end).then(|| r.start..r.end.min(zero_end)))
            .collect();
        let body_zeros = intersect(&zeros, &complement(&disarm, 0..target_size));
        let held_zeros = intersect(&zeros, &disarm);
        let grow = if shrink.is_some() || !fit.grow { None } else { plan_grow(manifest, target_size) };
        let (resize, grow_skipped) = match grow {
            Some(Ok(g)) => (Some(g), None),
            Some(Err(why)) => (None, Some(why)),
            None => (shrink, None),
        };
        Ok(Plan { items, boot_items, disarm, body_zeros, held_zeros, relocate, resize, grow_skipped })
    }

    /// The boot area is rebuilt rather than written as the image has it.
    pub fn rewrites_table(&self) -> bool {
        self.relocate || self.resize.is_some()
    }

    pub fn is_boot(&self, i: usize) -> bool {
        i < self.boot_items
    }

    pub fn zero_bytes(&self) -> u64 {
        self.body_zeros.iter().chain(&self.held_zeros).map(|r| r.end - r.start).sum()
    }
}

/// `a ∩ b` for two sorted, merged lists of ranges.
pub fn intersect(a: &[Range<u64>], b: &[Range<u64>]) -> Vec<Range<u64>> {
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < a.len() && j < b.len() {
        let s = a[i].start.max(b[j].start);
        let e = a[i].end.min(b[j].end);
        if s < e {
            out.push(s..e);
        }
        if a[i].end < b[j].end {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

/// Zero ranges are read back (scan, verification) in pieces of this size, spread over the workers.
pub const CHECK_PIECE: u64 = 4 << 20;

/// Cuts ranges into pieces of at most `max` bytes, for work spread over threads.
pub fn split(ranges: &[Range<u64>], max: u64) -> Vec<Range<u64>> {
    let mut out = Vec::new();
    for r in ranges {
        let mut at = r.start;
        while at < r.end {
            let end = r.end.min((at / max + 1) * max);
            out.push(at..end);
            at = end;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::manifest::tests::sample;

    const GROW: Fit = Fit { grow: true, shrink: true };

    #[test]
    fn disarm_boot_area_and_tail_hold_boot_and_backup_chunks() {
        let m = sample();
        let p = Plan::new(&m, m.disk.size, 512, GROW).unwrap();
        assert_eq!(p.disarm, vec![0..1 << 20, (8 << 20) - 16896..8 << 20]);
        assert!(!p.relocate);
        let held: Vec<bool> = p.items.iter().map(|i| i.held).collect();
        assert_eq!(held, [true, false, false, false], "boot chunk held, partition and gap chunks not");
        assert!(p.is_boot(0) && !p.is_boot(1));
        // The boot area's zeros are inside the disarmed head; the gap's are body work.
        assert_eq!(p.held_zeros, vec![4096..1 << 20]);
        assert_eq!(p.body_zeros, vec![(7 << 20) + 4096..(7 << 20) + 12288]);
    }

    #[test]
    fn refuses_small_targets_and_other_sector_sizes_and_relocates_gpt() {
        let m = sample();
        assert!(matches!(Plan::new(&m, 4 << 20, 512, GROW), Err(PlanError::TooSmall { .. })));
        assert!(matches!(Plan::new(&m, m.disk.size, 4096, GROW), Err(PlanError::SectorSize { .. })));
        let big = Plan::new(&m, 64 << 20, 512, Fit::default()).unwrap();
        assert!(big.relocate);
        assert_eq!(big.disarm.last().unwrap(), &((64 << 20) - 16896..64 << 20));
    }

    #[test]
    fn identical_chunks_are_fetched_once() {
        let mut m = sample();
        let dup = m.partitions[0].chunks[1].sha256;
        m.gaps[0].chunks[0].sha256 = dup;
        let p = Plan::new(&m, m.disk.size, 512, GROW).unwrap();
        assert_eq!(p.items[3].same_as, Some(2));
        assert_eq!(p.items.iter().filter(|i| i.same_as.is_some()).count(), 1);
    }

    #[test]
    fn intersect_and_split() {
        assert_eq!(intersect(&[0..10, 20..30], &[5..25]), vec![5..10, 20..25]);
        assert_eq!(intersect(&[0..10], &[10..20]), vec![]);
        assert_eq!(split(&[3..10, 12..13], 4), vec![3..4, 4..8, 8..10, 12..13]);
    }

    #[test]
    fn the_last_partition_grows_to_the_end_of_a_larger_disk_unless_it_cannot() {
        let mut m = sample();
        // The sample's gap holds data after the partition.
        let p = Plan::new(&m, 64 << 20, 512, GROW).unwrap();
        assert!(p.resize.is_none() && p.grow_skipped.as_deref().unwrap().contains("data after it"), "{p:?}");
        m.gaps[0].chunks.clear();
        let p = Plan::new(&m, 64 << 20, 512, GROW).unwrap();
        let g = p.resize.clone().unwrap();
        // Up to the last MiB boundary before the GPT backup.
        assert_eq!((g.number, g.start, g.image_length, g.length), (1, 1 << 20, 6 << 20, 62 << 20));
        assert!(p.rewrites_table());
        assert!(Plan::new(&m, 64 << 20, 512, Fit::default()).unwrap().resize.is_none(), "not asked");
        assert!(Plan::new(&m, m.disk.size, 512, GROW).unwrap().resize.is_none(), "same size");
        // Less than a MiB more: nothing to gain, nothing said.
        let p = Plan::new(&m, (8 << 20) + 4096, 512, GROW).unwrap();
        assert!(p.resize.is_none() && p.grow_skipped.is_none());
        let mut vfat = m.clone();
        vfat.partitions[0].fs = FsKind::Fat32;
        let why = Plan::new(&vfat, 64 << 20, 512, GROW).unwrap().grow_skipped.unwrap();
        assert!(why.contains("not Fat32"), "{why}");
        let mut winre = m.clone();
        winre.partitions[0].fs = FsKind::Ntfs;
        winre.partitions[0].type_id = WINDOWS_RECOVERY.into();
        let why = Plan::new(&winre, 64 << 20, 512, GROW).unwrap().grow_skipped.unwrap();
        assert!(why.contains("recovery"), "{why}");
        let mut mbr = m.clone();
        mbr.table = TableKind::Mbr;
        mbr.backup_area = None;
        assert_eq!(Plan::new(&mbr, 64 << 20, 512, GROW).unwrap().resize.unwrap().length, 63 << 20);
        mbr.partitions[0].number = 5;
        assert!(Plan::new(&mbr, 64 << 20, 512, GROW).unwrap().grow_skipped.unwrap().contains("logical"));
    }

    #[test]
    fn the_last_ext_partition_shrinks_onto_a_smaller_disk_when_its_used_blocks_fit() {
        let mut m = sample();
        m.gaps[0].chunks.clear();
        // The sample's root (1..7 MiB) uses blocks up to 2 MiB + 4 KiB: a 3 MiB end, plus the backup.
        assert_eq!(smallest_target(&m), (3 << 20) + 16896);
        let p = Plan::new(&m, 5 << 20, 512, GROW).unwrap();
        let r = p.resize.clone().unwrap();
        assert!(r.shrinks() && p.rewrites_table());
        assert_eq!((r.number, r.start, r.image_length, r.length), (1, 1 << 20, 6 << 20, 3 << 20));
        // Too small even so: the error names the size needed and why.
        match Plan::new(&m, 3 << 20, 512, GROW) {
            Err(PlanError::TooSmall { needed, why: Some(why), .. }) => {
                assert_eq!(needed, (3 << 20) + 16896);
                assert!(why.contains("at least 3162624 bytes"), "{why}");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            Plan::new(&m, 5 << 20, 512, Fit { grow: true, shrink: false }),
            Err(PlanError::TooSmall { why: None, .. })
        ));
        let mut fat = m.clone();
        fat.partitions[0].fs = FsKind::Fat32;
        assert_eq!(smallest_target(&fat), fat.min_target_size());
        let err = Plan::new(&fat, 5 << 20, 512, GROW).unwrap_err().to_string();
        assert!(err.contains("ext2/3/4 and NTFS only") && err.contains("needs 7356928"), "{err}");
        // NTFS: a chunk of only its last sectors (the backup boot sector) does not hold the
        // partition at its size, and is left out of a shrunk deploy; one that also holds a
        // cluster does.
        let mut ntfs = m.clone();
        ntfs.partitions[0].fs = FsKind::Ntfs;
        let tail = Chunk { sha256: Digest::of(b"backup boot"), at: vec![[(7 << 20) - 4096, 4096]] };
        ntfs.partitions[0].chunks.push(tail.clone());
        // Stored bytes, scratch files and 4 MiB to spare: 6 MiB, more than the used blocks' end.
        ntfs.partitions[0].scratch_bytes = 100 << 10;
        assert_eq!(smallest_target(&ntfs), (6 << 20) + 16896);
        let p = Plan::new(&ntfs, 7 << 20, 512, GROW).unwrap();
        assert_eq!(p.resize.as_ref().unwrap().length, 5 << 20);
        assert!(p.items.iter().all(|i| i.chunk.sha256 != tail.sha256), "the tail chunk is not written");
        assert!(Plan::new(&ntfs, 64 << 20, 512, GROW).unwrap().items.iter().any(|i| i.chunk.sha256 == tail.sha256));
        ntfs.partitions[0].chunks.last_mut().unwrap().at = vec![[(7 << 20) - 8192, 8192]];
        assert_eq!(smallest_target(&ntfs), ntfs.min_target_size());
        let mut scanned = m.clone();
        scanned.partitions[0].map = MapMethod::Nonzero;
        assert!(Plan::new(&scanned, 5 << 20, 512, GROW).unwrap_err().to_string().contains("non-zero"));
    }
}

//! ext2, ext3 and ext4: the used blocks are the set bits of the block-group bitmaps.
//!
//! Layout as in the kernel's `Documentation/filesystems/ext4/` (superblock, group descriptors,
//! bitmaps) and `fs/ext4/balloc.c` (what a group whose bitmap was never written holds). Every
//! block number read from disk is checked against the file system's size before it is used,
//! so a damaged superblock or descriptor becomes [`FsError::Corrupt`] and the caller falls back
//! to the non-zero scan.

use std::ops::Range;

use super::{normalize, FsError, FsKind, MapMethod, UsedMap};
use crate::io::{le, ReadAt};

/// The primary superblock always starts 1024 bytes into the partition, whatever the block size.
const SB_OFFSET: u64 = 1024;
const SB_LEN: usize = 1024;
const MAGIC: u16 = 0xEF53;

// Superblock fields (byte offsets inside the superblock).
const S_INODES_COUNT: usize = 0x00;
const S_BLOCKS_COUNT_LO: usize = 0x04;
const S_FIRST_DATA_BLOCK: usize = 0x14;
const S_LOG_BLOCK_SIZE: usize = 0x18;
const S_LOG_CLUSTER_SIZE: usize = 0x1C;
const S_BLOCKS_PER_GROUP: usize = 0x20;
const S_CLUSTERS_PER_GROUP: usize = 0x24;
const S_INODES_PER_GROUP: usize = 0x28;
const S_MAGIC: usize = 0x38;
const S_STATE: usize = 0x3A;
const S_REV_LEVEL: usize = 0x4C;
const S_INODE_SIZE: usize = 0x58;
const S_FEATURE_COMPAT: usize = 0x5C;
const S_FEATURE_INCOMPAT: usize = 0x60;
const S_FEATURE_RO_COMPAT: usize = 0x64;
const S_RESERVED_GDT_BLOCKS: usize = 0xCE;
const S_DESC_SIZE: usize = 0xFE;
const S_FIRST_META_BG: usize = 0x104;
const S_BLOCKS_COUNT_HI: usize = 0x150;
const S_MMP_BLOCK: usize = 0x168;
const S_BACKUP_BGS: usize = 0x24C;

// s_state bits.
const STATE_VALID: u64 = 0x1;
const STATE_ERROR: u64 = 0x2;

// Feature bits.
const COMPAT_HAS_JOURNAL: u64 = 0x4;
const COMPAT_SPARSE_SUPER2: u64 = 0x200;
const INCOMPAT_COMPRESSION: u64 = 0x1;
const INCOMPAT_FILETYPE: u64 = 0x2;
const INCOMPAT_RECOVER: u64 = 0x4;
const INCOMPAT_JOURNAL_DEV: u64 = 0x8;
const INCOMPAT_META_BG: u64 = 0x10;
const INCOMPAT_EXTENTS: u64 = 0x40;
const INCOMPAT_64BIT: u64 = 0x80;
const INCOMPAT_MMP: u64 = 0x100;
const INCOMPAT_FLEX_BG: u64 = 0x200;
const INCOMPAT_EA_INODE: u64 = 0x400;
const INCOMPAT_DIRDATA: u64 = 0x1000;
const INCOMPAT_CSUM_SEED: u64 = 0x2000;
const INCOMPAT_LARGEDIR: u64 = 0x4000;
const INCOMPAT_INLINE_DATA: u64 = 0x8000;
const INCOMPAT_ENCRYPT: u64 = 0x10000;
const INCOMPAT_CASEFOLD: u64 = 0x20000;
/// Incompatible features that do not change where blocks are or how allocation is recorded.
const INCOMPAT_UNDERSTOOD: u64 = INCOMPAT_FILETYPE
    | INCOMPAT_META_BG
    | INCOMPAT_EXTENTS
    | INCOMPAT_64BIT
    | INCOMPAT_MMP
    | INCOMPAT_FLEX_BG
    | INCOMPAT_EA_INODE
    | INCOMPAT_DIRDATA
    | INCOMPAT_CSUM_SEED
    | INCOMPAT_LARGEDIR
    | INCOMPAT_INLINE_DATA
    | INCOMPAT_ENCRYPT
    | INCOMPAT_CASEFOLD;
const RO_COMPAT_SPARSE_SUPER: u64 = 0x1;
const RO_COMPAT_LARGE_FILE: u64 = 0x2;
const RO_COMPAT_BTREE_DIR: u64 = 0x4;
const RO_COMPAT_GDT_CSUM: u64 = 0x10;
const RO_COMPAT_BIGALLOC: u64 = 0x200;
const RO_COMPAT_METADATA_CSUM: u64 = 0x400;
/// What ext3 understood; anything beyond makes the file system ext4 (libblkid's rule).
const EXT3_RO_COMPAT: u64 = RO_COMPAT_SPARSE_SUPER | RO_COMPAT_LARGE_FILE | RO_COMPAT_BTREE_DIR;
const EXT3_INCOMPAT: u64 = INCOMPAT_FILETYPE | INCOMPAT_RECOVER | INCOMPAT_META_BG;

// Group descriptor fields.
const BG_BLOCK_BITMAP_LO: usize = 0x00;
const BG_INODE_BITMAP_LO: usize = 0x04;
const BG_INODE_TABLE_LO: usize = 0x08;
const BG_FLAGS: usize = 0x12;
const BG_BLOCK_BITMAP_HI: usize = 0x20;
const BG_INODE_BITMAP_HI: usize = 0x24;
const BG_INODE_TABLE_HI: usize = 0x28;
/// The group's block bitmap was never written; its content is implied (see [`Geometry::base_meta`]).
const BG_BLOCK_UNINIT: u64 = 0x2;
const DESC_SIZE_32: u64 = 32;
const DESC_SIZE_64_MIN: u64 = 64;
const MAX_DESC_SIZE: u64 = 1024;

/// Largest block size the kernel mounts: 64 KiB (`s_log_block_size` 6).
const MAX_LOG_BLOCK: u64 = 6;
/// Largest cluster size: 1 GiB (`s_log_cluster_size` 20).
const MAX_LOG_CLUSTER: u64 = 20;
/// Upper bound of one read of descriptor or bitmap blocks: keeps memory flat on large disks
/// while a flex group's adjacent bitmaps still come in one request.
const READ_MAX: u64 = 4 << 20;

pub fn detect(dev: &dyn ReadAt, len: u64) -> bool {
    let mut magic = [0u8; 2];
    len >= SB_OFFSET + SB_LEN as u64
        && dev.read_exact_at(&mut magic, SB_OFFSET + S_MAGIC as u64).is_ok()
        && u16::from_le_bytes(magic) == MAGIC
}

pub fn map(dev: &dyn ReadAt, len: u64) -> Result<UsedMap, FsError> {
    let mut sb = [0u8; SB_LEN];
    dev.read_exact_at(&mut sb, SB_OFFSET).map_err(|source| FsError::Io {
        what: "ext superblock",
        offset: SB_OFFSET,
        source,
    })?;
    let geo = Geometry::parse(&sb, len)?;
    let mut used = Ranges::default();

    // Boot block, primary superblock, descriptors and the blocks reserved for their growth,
    // always kept (with 1 KiB blocks, block 0 is in no group and so in no bitmap).
    used.push(0..geo.bytes(geo.primary_meta_end));
    if let Some(mmp) = geo.mmp_block {
        used.push(geo.blocks(mmp, 1));
    }

    let mut bitmaps = BitmapReader::new(&geo);
    let per_block = geo.descs_per_block;
    let mut nr = 0;
    while nr < geo.gdt_blocks {
        // A run of descriptor blocks that are adjacent on disk: one read (all of them
        // without META_BG, one per meta group with it).
        let first = geo.desc_block(nr)?;
        let mut count = 1;
        while nr + count < geo.gdt_blocks
            && count * geo.block_size < READ_MAX
            && geo.desc_block(nr + count)? == first + count
        {
            count += 1;
        }
        let mut buf = vec![0u8; (count * geo.block_size) as usize];
        let offset = geo.bytes(first);
        dev.read_exact_at(&mut buf, offset).map_err(|source| FsError::Io {
            what: "ext group descriptors",
            offset,
            source,
        })?;
        used.push(geo.blocks(first, count));

        let first_group = nr * per_block;
        let groups = (count * per_block).min(geo.groups - first_group);
        for (i, desc) in buf.chunks_exact(geo.desc_size as usize).take(groups as usize).enumerate() {
            let group = first_group + i as u64;
            let d = geo.descriptor(group, desc)?;
            used.push(geo.blocks(d.block_bitmap, 1));
            used.push(geo.blocks(d.inode_bitmap, 1));
            used.push(geo.blocks(d.inode_table, geo.inode_table_blocks));
            if geo.honours_uninit && d.flags & BG_BLOCK_UNINIT != 0 {
                used.push(geo.base_meta(group));
            } else {
                bitmaps.add(dev, &geo, group, d.block_bitmap, &mut used)?;
            }
        }
        nr += count;
    }
    bitmaps.flush(dev, &geo, &mut used)?;

    Ok(UsedMap::new(geo.kind, MapMethod::Allocation, geo.block_size, normalize(used.0)))
}

/// What the superblock says, checked for plausibility and against the partition size.
#[derive(Debug)]
struct Geometry {
    kind: FsKind,
    block_size: u64,
    /// Bytes per bitmap bit: the block size, or the cluster size with BIGALLOC.
    cluster_size: u64,
    blocks_count: u64,
    first_data_block: u64,
    /// The block holding byte 1024: 1 for 1 KiB blocks, else 0.
    sb_block: u64,
    blocks_per_group: u64,
    clusters_per_group: u64,
    groups: u64,
    desc_size: u64,
    descs_per_block: u64,
    /// Blocks holding the descriptors of all groups.
    gdt_blocks: u64,
    reserved_gdt_blocks: u64,
    inode_table_blocks: u64,
    /// `s_first_meta_bg` when META_BG is set: descriptor blocks from this one on live in
    /// their own meta group.
    first_meta_bg: Option<u64>,
    has_64bit: bool,
    /// BLOCK_UNINIT is only meaningful when descriptors carry checksums (as in the kernel).
    honours_uninit: bool,
    backups: Backups,
    mmp_block: Option<u64>,
    /// End (exclusive, in blocks) of the primary superblock + descriptor + reserved region.
    primary_meta_end: u64,
}

/// Which groups carry a superblock backup.
#[derive(Debug)]
enum Backups {
    All,
    /// Groups 0, 1 and powers of 3, 5 and 7.
    Sparse,
    /// SPARSE_SUPER2: group 0 and the (up to) two groups named in `s_backup_bgs`.
    Two([u64; 2]),
}

#[derive(Debug)]
struct Descriptor {
    block_bitmap: u64,
    inode_bitmap: u64,
    inode_table: u64,
    flags: u64,
}

impl Geometry {
    fn parse(sb: &[u8; SB_LEN], len: u64) -> Result<Geometry, FsError> {
        let compat = le(sb, S_FEATURE_COMPAT, 4);
        let incompat = le(sb, S_FEATURE_INCOMPAT, 4);
        let ro_compat = le(sb, S_FEATURE_RO_COMPAT, 4);
        let kind = if ro_compat & !EXT3_RO_COMPAT != 0 || incompat & !EXT3_INCOMPAT != 0 {
            FsKind::Ext4
        } else if compat & COMPAT_HAS_JOURNAL != 0 {
            FsKind::Ext3
        } else {
            FsKind::Ext2
        };
        let bad = |reason: String| FsError::Corrupt { fs: kind, reason };

        let magic = le(sb, S_MAGIC, 2);
        if magic != u64::from(MAGIC) {
            return Err(bad(format!("superblock magic is {magic:#06x}, not {MAGIC:#06x}: not an ext file system")));
        }
        if incompat & INCOMPAT_JOURNAL_DEV != 0 {
            return Err(bad("this is an external journal device, not a file system".into()));
        }
        if incompat & INCOMPAT_RECOVER != 0 {
            return Err(bad("the journal needs recovery (the file system was not unmounted cleanly); \
                 run e2fsck on it, then capture again"
                .into()));
        }
        if incompat & INCOMPAT_COMPRESSION != 0 {
            return Err(bad("the old ext2 compression feature is set; its allocation cannot be read".into()));
        }
        let unknown = incompat & !INCOMPAT_UNDERSTOOD;
        if unknown != 0 {
            return Err(bad(format!(
                "unknown incompatible features {unknown:#x}: this build cannot tell which blocks are in use"
            )));
        }
        let state = le(sb, S_STATE, 2);
        if state & STATE_ERROR != 0 || state & STATE_VALID == 0 {
            return Err(bad(format!(
                "s_state is {state:#x}: the file system is marked as having errors or as not cleanly \
                 unmounted, so its bitmaps may be stale; run e2fsck on it, then capture again"
            )));
        }

        let log_block = le(sb, S_LOG_BLOCK_SIZE, 4);
        if log_block > MAX_LOG_BLOCK {
            return Err(bad(format!("s_log_block_size is {log_block}: block sizes stop at 64 KiB (6)")));
        }
        let block_size = 1024u64 << log_block;
        let bigalloc = ro_compat & RO_COMPAT_BIGALLOC != 0;
        let blocks_per_group = le(sb, S_BLOCKS_PER_GROUP, 4);
        if blocks_per_group == 0 {
            return Err(bad("s_blocks_per_group is 0".into()));
        }
        let (cluster_size, clusters_per_group) = if bigalloc {
            let log_cluster = le(sb, S_LOG_CLUSTER_SIZE, 4);
            if !(log_block..=MAX_LOG_CLUSTER).contains(&log_cluster) {
                return Err(bad(format!(
                    "s_log_cluster_size is {log_cluster} with s_log_block_size {log_block}: \
                     clusters must be at least one block and at most 1 GiB"
                )));
            }
            let cluster_size = 1024u64 << log_cluster;
            let clusters_per_group = le(sb, S_CLUSTERS_PER_GROUP, 4);
            let ratio = cluster_size / block_size;
            if clusters_per_group == 0 || clusters_per_group.checked_mul(ratio) != Some(blocks_per_group) {
                return Err(bad(format!(
                    "s_clusters_per_group is {clusters_per_group} but s_blocks_per_group is \
                     {blocks_per_group} with {ratio} blocks per cluster"
                )));
            }
            (cluster_size, clusters_per_group)
        } else {
            (block_size, blocks_per_group)
        };
        if clusters_per_group > 8 * block_size {
            return Err(bad(format!(
                "{clusters_per_group} clusters per group do not fit a {block_size}-byte bitmap block"
            )));
        }
        if clusters_per_group % 8 != 0 {
            // mke2fs refuses such groups; a bitmap is whole bytes.
            return Err(bad(format!("{clusters_per_group} blocks (clusters) per group is not a multiple of 8")));
        }

        let has_64bit = incompat & INCOMPAT_64BIT != 0;
        let mut blocks_count = le(sb, S_BLOCKS_COUNT_LO, 4);
        if has_64bit {
            blocks_count |= le(sb, S_BLOCKS_COUNT_HI, 4) << 32;
        }
        if blocks_count.checked_mul(block_size).is_none_or(|bytes| bytes > len) {
            return Err(bad(format!(
                "the superblock claims {blocks_count} blocks of {block_size} bytes but the partition \
                 is only {len} bytes; the partition was shrunk or the superblock is damaged"
            )));
        }
        let sb_block = if block_size == 1024 { 1 } else { 0 };
        let first_data_block = le(sb, S_FIRST_DATA_BLOCK, 4);
        let expected_first = if bigalloc { 0 } else { sb_block };
        if first_data_block != expected_first || first_data_block >= blocks_count {
            return Err(bad(format!(
                "s_first_data_block is {first_data_block} with {block_size}-byte blocks and \
                 {blocks_count} blocks (expected {expected_first})"
            )));
        }
        let groups = (blocks_count - first_data_block).div_ceil(blocks_per_group);

        let inodes_per_group = le(sb, S_INODES_PER_GROUP, 4);
        if inodes_per_group == 0 || inodes_per_group > 8 * block_size {
            return Err(bad(format!(
                "s_inodes_per_group is {inodes_per_group}; it must be between 1 and {}",
                8 * block_size
            )));
        }
        let inodes_count = le(sb, S_INODES_COUNT, 4);
        if groups.checked_mul(inodes_per_group) != Some(inodes_count) {
            return Err(bad(format!(
                "s_inodes_count is {inodes_count} but {groups} groups of {inodes_per_group} inodes \
                 make {}",
                groups.saturating_mul(inodes_per_group)
            )));
        }
        let inode_size = if le(sb, S_REV_LEVEL, 4) == 0 { 128 } else { le(sb, S_INODE_SIZE, 2) };
        if inode_size < 128 || inode_size > block_size || !inode_size.is_power_of_two() {
            return Err(bad(format!(
                "s_inode_size is {inode_size}; it must be a power of two from 128 to the block size"
            )));
        }
        // Both factors are bounded (8 × 64 Ki inodes, 64 KiB each): no overflow.
        let inode_table_blocks = (inodes_per_group * inode_size).div_ceil(block_size);

        let desc_size = if has_64bit {
            let size = le(sb, S_DESC_SIZE, 2);
            if !(DESC_SIZE_64_MIN..=MAX_DESC_SIZE).contains(&size) || !size.is_power_of_two() {
                return Err(bad(format!(
                    "s_desc_size is {size} with the 64bit feature; it must be a power of two from 64 to 1024"
                )));
            }
            size
        } else {
            DESC_SIZE_32
        };
        let descs_per_block = block_size / desc_size;
        let gdt_blocks = groups.div_ceil(descs_per_block);
        let first_meta_bg = if incompat & INCOMPAT_META_BG != 0 {
            let first = le(sb, S_FIRST_META_BG, 4);
            if first > gdt_blocks {
                return Err(bad(format!(
                    "s_first_meta_bg is {first} but the file system has only {gdt_blocks} descriptor blocks"
                )));
            }
            Some(first)
        } else {
            None
        };
        let reserved_gdt_blocks = le(sb, S_RESERVED_GDT_BLOCKS, 2);
        if reserved_gdt_blocks > block_size / 4 {
            return Err(bad(format!(
                "s_reserved_gdt_blocks is {reserved_gdt_blocks}; at most {} fit the resize inode",
                block_size / 4
            )));
        }
        let primary_gdt = first_meta_bg.unwrap_or(gdt_blocks);
        let primary_meta_end = sb_block + 1 + primary_gdt + reserved_gdt_blocks;
        if primary_meta_end > blocks_count {
            return Err(bad(format!(
                "the primary superblock and group descriptors end at block {primary_meta_end}, \
                 past the last block {blocks_count}"
            )));
        }

        let backups = if compat & COMPAT_SPARSE_SUPER2 != 0 {
            Backups::Two([le(sb, S_BACKUP_BGS, 4), le(sb, S_BACKUP_BGS + 4, 4)])
        } else if ro_compat & RO_COMPAT_SPARSE_SUPER != 0 {
            Backups::Sparse
        } else {
            Backups::All
        };
        let mmp_block = if incompat & INCOMPAT_MMP != 0 {
            let block = le(sb, S_MMP_BLOCK, 8);
            if block <= sb_block || block >= blocks_count {
                return Err(bad(format!(
                    "s_mmp_block is {block}, outside the file system's blocks {}..{blocks_count}",
                    sb_block + 1
                )));
            }
            Some(block)
        } else {
            None
        };

        Ok(Geometry {
            kind,
            block_size,
            cluster_size,
            blocks_count,
            first_data_block,
            sb_block,
            blocks_per_group,
            clusters_per_group,
            groups,
            desc_size,
            descs_per_block,
            gdt_blocks,
            reserved_gdt_blocks,
            inode_table_blocks,
            first_meta_bg,
            has_64bit,
            honours_uninit: ro_compat & (RO_COMPAT_GDT_CSUM | RO_COMPAT_METADATA_CSUM) != 0,
            backups,
            mmp_block,
            primary_meta_end,
        })
    }

    fn corrupt(&self, reason: String) -> FsError {
        FsError::Corrupt { fs: self.kind, reason }
    }

    /// Byte offset of a block already known to lie inside the file system (so below `len`).
    fn bytes(&self, block: u64) -> u64 {
        block * self.block_size
    }

    /// Byte range of `count` blocks from `first`, both already checked against the size.
    fn blocks(&self, first: u64, count: u64) -> Range<u64> {
        self.bytes(first)..self.bytes(first + count)
    }

    fn group_first_block(&self, group: u64) -> u64 {
        self.first_data_block + group * self.blocks_per_group
    }

    /// Where descriptor block `nr` (of `gdt_blocks`) lives.
    fn desc_block(&self, nr: u64) -> Result<u64, FsError> {
        let block = match self.first_meta_bg {
            Some(first_meta_bg) if nr >= first_meta_bg => {
                // META_BG: in the first group of its meta group, after any superblock backup
                // (and after block 1's superblock in the 1 KiB, block-0-based layout).
                let group = nr * self.descs_per_block;
                let quirk = u64::from(nr == 0 && self.sb_block == 1 && self.first_data_block == 0);
                self.group_first_block(group) + u64::from(self.has_super(group)) + quirk
            }
            _ => self.sb_block + 1 + nr,
        };
        if block >= self.blocks_count {
            return Err(self.corrupt(format!(
                "group descriptor block {nr} would be at block {block}, past the last block {}",
                self.blocks_count
            )));
        }
        Ok(block)
    }

    fn has_super(&self, group: u64) -> bool {
        match self.backups {
            _ if group == 0 => true,
            Backups::All => true,
            Backups::Sparse => group == 1 || (group % 2 == 1 && [3, 5, 7].iter().any(|&b| is_power_of(group, b))),
            Backups::Two(groups) => groups.contains(&group),
        }
    }

    /// Superblock backup, descriptor blocks and reserved descriptor blocks at the start of a
    /// group: what an uninitialised block bitmap implies (the kernel's
    /// `ext4_num_base_meta_blocks`).
    fn base_meta(&self, group: u64) -> Range<u64> {
        let has_super = u64::from(self.has_super(group));
        let count = match self.first_meta_bg {
            Some(first_meta_bg) if group >= first_meta_bg.saturating_mul(self.descs_per_block) => {
                let meta_first = group / self.descs_per_block * self.descs_per_block;
                let meta_last = meta_first + self.descs_per_block - 1;
                has_super + u64::from(group == meta_first || group == meta_first + 1 || group == meta_last)
            }
            _ if has_super == 1 => 1 + self.first_meta_bg.unwrap_or(self.gdt_blocks) + self.reserved_gdt_blocks,
            _ => 0,
        };
        let first = self.group_first_block(group);
        let end = (first + count).min(self.blocks_count);
        self.bytes(first)..self.bytes(end)
    }

    fn descriptor(&self, group: u64, d: &[u8]) -> Result<Descriptor, FsError> {
        let wide = self.has_64bit && self.desc_size >= DESC_SIZE_64_MIN;
        let field = |lo: usize, hi: usize| le(d, lo, 4) | if wide { le(d, hi, 4) << 32 } else { 0 };
        let desc = Descriptor {
            block_bitmap: field(BG_BLOCK_BITMAP_LO, BG_BLOCK_BITMAP_HI),
            inode_bitmap: field(BG_INODE_BITMAP_LO, BG_INODE_BITMAP_HI),
            inode_table: field(BG_INODE_TABLE_LO, BG_INODE_TABLE_HI),
            flags: le(d, BG_FLAGS, 2),
        };
        for (what, first, count) in [
            ("block bitmap", desc.block_bitmap, 1),
            ("inode bitmap", desc.inode_bitmap, 1),
            ("inode table", desc.inode_table, self.inode_table_blocks),
        ] {
            if first <= self.sb_block || first.checked_add(count).is_none_or(|end| end > self.blocks_count) {
                return Err(self.corrupt(format!(
                    "group {group}: {what} at block {first} ({count} blocks) lies outside the \
                     file system's blocks {}..{}",
                    self.sb_block + 1,
                    self.blocks_count
                )));
            }
        }
        Ok(desc)
    }

    /// Bitmap bits that stand for clusters of this group (the last group is usually short).
    fn group_clusters(&self, group: u64) -> u64 {
        let left = self.blocks_count - self.group_first_block(group);
        let ratio = self.cluster_size / self.block_size;
        left.div_ceil(ratio).min(self.clusters_per_group)
    }
}

/// Gathers block bitmaps that sit in consecutive blocks for consecutive groups (FLEX_BG puts
/// a whole flex group's bitmaps side by side) and reads each run in one request.
#[derive(Debug)]
struct BitmapReader {
    first_group: u64,
    first_block: u64,
    count: u64,
    max: u64,
}

impl BitmapReader {
    fn new(geo: &Geometry) -> Self {
        BitmapReader { first_group: 0, first_block: 0, count: 0, max: (READ_MAX / geo.block_size).max(1) }
    }

    fn add(
        &mut self,
        dev: &dyn ReadAt,
        geo: &Geometry,
        group: u64,
        block: u64,
        used: &mut Ranges,
    ) -> Result<(), FsError> {
        let extends = self.count > 0
            && self.count < self.max
            && group == self.first_group + self.count
            && block == self.first_block + self.count;
        if extends {
            self.count += 1;
        } else {
            self.flush(dev, geo, used)?;
            *self = BitmapReader { first_group: group, first_block: block, count: 1, max: self.max };
        }
        Ok(())
    }

    fn flush(&mut self, dev: &dyn ReadAt, geo: &Geometry, used: &mut Ranges) -> Result<(), FsError> {
        if self.count == 0 {
            return Ok(());
        }
        let offset = geo.bytes(self.first_block);
        let mut buf = vec![0u8; (self.count * geo.block_size) as usize];
        dev.read_exact_at(&mut buf, offset).map_err(|source| FsError::Io {
            what: "ext block bitmap",
            offset,
            source,
        })?;
        let fs_end = geo.bytes(geo.blocks_count);
        for (i, bitmap) in buf.chunks_exact(geo.block_size as usize).enumerate() {
            let group = self.first_group + i as u64;
            let base = geo.bytes(geo.group_first_block(group));
            set_runs(bitmap, geo.group_clusters(group), |run| {
                let start = base + run.start * geo.cluster_size;
                let end = (base + run.end * geo.cluster_size).min(fs_end);
                used.push(start..end);
            });
        }
        self.count = 0;
        Ok(())
    }
}

/// Ranges in the order they are found, merging each with the previous one when they touch:
/// metadata and bitmap runs mostly arrive in disk order, so the list stays short.
#[derive(Debug, Default)]
struct Ranges(Vec<Range<u64>>);

impl Ranges {
    fn push(&mut self, r: Range<u64>) {
        if let Some(last) = self.0.last_mut() {
            if r.start >= last.start && r.start <= last.end {
                last.end = last.end.max(r.end);
                return;
            }
        }
        self.0.push(r);
    }
}

/// Calls `emit` with every maximal run of set bits among the first `nbits` bits of a
/// little-endian bitmap (bit 0 is the low bit of byte 0). Works a 64-bit word at a time:
/// empty and full words cost one compare each.
fn set_runs(bitmap: &[u8], nbits: u64, mut emit: impl FnMut(Range<u64>)) {
    let mut run: Option<u64> = None;
    let mut pos = 0u64;
    for chunk in bitmap.chunks(8) {
        if pos >= nbits {
            break;
        }
        let mut bytes = [0u8; 8];
        bytes[..chunk.len()].copy_from_slice(chunk);
        let mut word = u64::from_le_bytes(bytes);
        let valid = nbits - pos;
        if valid < 64 {
            word &= (1u64 << valid) - 1;
        }
        if word == 0 {
            if let Some(start) = run.take() {
                emit(start..pos);
            }
        } else if word == u64::MAX {
            run.get_or_insert(pos);
        } else {
            let mut bit = 0u32;
            while bit < 64 {
                let rest = word >> bit;
                match run {
                    Some(start) => {
                        bit += rest.trailing_ones();
                        if bit < 64 {
                            emit(start..pos + u64::from(bit));
                            run = None;
                        }
                    }
                    None if rest == 0 => break,
                    None => {
                        bit += rest.trailing_zeros();
                        run = Some(pos + u64::from(bit));
                    }
                }
            }
        }
        pos += 64;
    }
    if let Some(start) = run {
        emit(start..pos.min(nbits));
    }
}

fn is_power_of(n: u64, base: u64) -> bool {
    let mut p = 1u64;
    while p < n {
        match p.checked_mul(base) {
            Some(next) => p = next,
            None => return false,
        }
    }
    p == n
}

/// Helpers for the tests of the file-system parsers: real file systems made by the Debian
/// tools in a temporary directory, and the copy-only-the-used-ranges check.
#[cfg(test)]
pub(super) mod fixture {
    use std::fs::File;
    use std::os::unix::fs::FileExt;
    use std::path::{Path, PathBuf};
    use std::process::Command;

    use super::super::UsedMap;

    /// Maps an image file with a parser's `map`, panicking with the path on error.
    pub fn map_image(
        img: &Path,
        map: fn(&dyn crate::io::ReadAt, u64) -> Result<UsedMap, super::super::FsError>,
    ) -> (UsedMap, u64) {
        let f = File::open(img).expect("open image");
        let len = f.metadata().expect("stat").len();
        (map(&f, len).unwrap_or_else(|e| panic!("mapping {}: {e}", img.display())), len)
    }

    /// A tool on PATH or in the sbin directories (which a user's PATH lacks on Debian).
    pub fn tool(name: &str) -> Option<PathBuf> {
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    }

    /// True when every tool is installed. A missing one skips the test with a loud message,
    /// or fails it when `CI=true`.
    pub fn have(names: &[&str]) -> bool {
        let missing: Vec<&str> = names.iter().copied().filter(|n| tool(n).is_none()).collect();
        if missing.is_empty() {
            return true;
        }
        let msg = format!("missing tools {missing:?} (apt-get install e2fsprogs dosfstools mtools)");
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{msg}");
        eprintln!("SKIPPED: {msg}");
        false
    }

    pub fn cmd(name: &str) -> Command {
        let mut c = Command::new(tool(name).unwrap_or_else(|| PathBuf::from(name)));
        c.env("MTOOLS_SKIP_CHECK", "1");
        c
    }

    /// Runs a command that must succeed; returns stdout and stderr together.
    pub fn run(c: &mut Command) -> String {
        let out = c.output().unwrap_or_else(|e| panic!("running {c:?}: {e}"));
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "{c:?} failed ({}):\n{text}", out.status);
        text
    }

    /// Deterministic noise (xorshift64*), so a failure reproduces.
    pub fn noise(seed: u64, len: usize) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
        }
        out.truncate(len);
        out
    }

    /// Files of awkward sizes in nested directories: (path relative to the root, content).
    pub fn tree() -> Vec<(String, Vec<u8>)> {
        vec![
            ("hello.txt".into(), b"hello from parc\n".to_vec()),
            ("empty.txt".into(), Vec::new()),
            ("docs/one.bin".into(), noise(1, 1)),
            ("docs/page.bin".into(), noise(2, 4095)),
            ("docs/pageplus.bin".into(), noise(3, 4097)),
            ("data/mid.bin".into(), noise(4, 70_000)),
            ("data/big.bin".into(), noise(5, 3 << 20)),
            ("data/zeros.bin".into(), vec![0u8; 256 << 10]),
            ("a/b/c/deep.txt".into(), b"three levels down\n".to_vec()),
        ]
    }

    pub fn write_tree(root: &Path, files: &[(String, Vec<u8>)]) {
        for (rel, data) in files {
            let path = root.join(rel);
            std::fs::create_dir_all(path.parent().expect("has a parent")).expect("mkdir");
            std::fs::write(&path, data).expect("write file");
        }
    }

    pub fn sparse_file(path: &Path, len: u64) {
        File::create(path).and_then(|f| f.set_len(len)).expect("create image file");
    }

    /// Copies only the mapped ranges of `src` into a fresh zero-filled file of the same size.
    pub fn copy_used(src: &Path, map: &UsedMap, dst: &Path) {
        let from = File::open(src).expect("open image");
        let len = from.metadata().expect("stat image").len();
        let to = File::create(dst).expect("create copy");
        to.set_len(len).expect("size copy");
        let mut buf = vec![0u8; 1 << 20];
        for r in &map.ranges {
            let mut off = r.start;
            while off < r.end {
                let n = (r.end - off).min(buf.len() as u64) as usize;
                from.read_exact_at(&mut buf[..n], off).expect("read image");
                to.write_all_at(&buf[..n], off).expect("write copy");
                off += n as u64;
            }
        }
    }

    /// The map's promises: sorted, disjoint, not touching, inside the partition.
    pub fn assert_well_formed(map: &UsedMap, len: u64) {
        for r in &map.ranges {
            assert!(r.start < r.end && r.end <= len, "range {r:?} outside [0, {len})");
        }
        for w in map.ranges.windows(2) {
            assert!(w[0].end < w[1].start, "ranges {:?} and {:?} not normalized", w[0], w[1]);
        }
    }

    /// True when `[start, end)` lies entirely inside one of the ranges.
    pub fn covered(map: &UsedMap, start: u64, end: u64) -> bool {
        let i = map.ranges.partition_point(|r| r.end <= start);
        map.ranges.get(i).is_some_and(|r| r.start <= start && end <= r.end)
    }

    /// True when any byte of `[start, end)` is in a range.
    pub fn touched(map: &UsedMap, start: u64, end: u64) -> bool {
        let i = map.ranges.partition_point(|r| r.end <= start);
        map.ranges.get(i).is_some_and(|r| r.start < end)
    }

    /// The number after `key` on its line of a tool's report (`Free blocks:   1234`).
    pub fn number_after(text: &str, key: &str) -> u64 {
        let at = text.find(key).unwrap_or_else(|| panic!("no {key:?} in:\n{text}")) + key.len();
        let digits: String = text[at..]
            .trim_start()
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == ' ')
            .filter(|c| *c != ' ')
            .collect();
        digits.parse().unwrap_or_else(|_| panic!("no number after {key:?} in:\n{text}"))
    }
}

#[cfg(test)]
mod tests {
    use std::fs::File;
    use std::path::{Path, PathBuf};

    use super::fixture::*;
    use super::*;
    use crate::fs::nonzero;

    /// Makes an image with `mkfs` (mkfs.ext2/3/4) holding `files`; returns its path.
    fn make(dir: &Path, mkfs: &str, args: &[&str], size_mib: u64, files: &[(String, Vec<u8>)]) -> PathBuf {
        let src = dir.join("src");
        write_tree(&src, files);
        let img = dir.join("fs.img");
        run(cmd(mkfs).args(["-q", "-F"]).args(args).arg("-d").arg(&src).arg(&img).arg(format!("{size_mib}M")));
        img
    }

    fn map_file(img: &Path) -> (UsedMap, u64) {
        map_image(img, map)
    }

    /// The two proofs: used bytes equal what dumpe2fs counts as allocated, and a copy holding
    /// only the used ranges passes e2fsck and gives back every file byte for byte.
    fn check(img: &Path, files: &[(String, Vec<u8>)], kind: FsKind) -> UsedMap {
        run(cmd("e2fsck").arg("-fn").arg(img));
        let (m, len) = map_file(img);
        assert_well_formed(&m, len);
        assert_eq!(m.fs, kind);
        assert_eq!(m.method, MapMethod::Allocation);

        let info = run(cmd("dumpe2fs").arg("-h").arg(img));
        let block_size = number_after(&info, "Block size:");
        let blocks = number_after(&info, "Block count:");
        let free = number_after(&info, "Free blocks:");
        let allocated = (blocks - free) * block_size;
        eprintln!(
            "{}: {kind:?}, {} groups, used map {} bytes in {} ranges, dumpe2fs (blocks - free) × size = {allocated}, image {len}",
            img.display(),
            (blocks - number_after(&info, "First block:")).div_ceil(number_after(&info, "Blocks per group:")),
            m.used_bytes(),
            m.ranges.len()
        );
        assert_eq!(m.block_size, block_size);
        assert_eq!(m.used_bytes(), allocated, "used map disagrees with dumpe2fs:\n{info}");

        let copy = img.with_extension("copy");
        copy_used(img, &m, &copy);
        run(cmd("e2fsck").arg("-fn").arg(&copy));
        let out = img.with_extension("out");
        std::fs::create_dir_all(&out).expect("mkdir");
        let script: String = files
            .iter()
            .enumerate()
            .map(|(i, (rel, _))| format!("dump /{rel} {}\n", out.join(i.to_string()).display()))
            .collect();
        let script_path = img.with_extension("cmds");
        std::fs::write(&script_path, script).expect("write debugfs script");
        run(cmd("debugfs").arg("-f").arg(&script_path).arg(&copy));
        for (i, (rel, data)) in files.iter().enumerate() {
            let back = std::fs::read(out.join(i.to_string())).unwrap_or_else(|e| panic!("{rel} not dumped: {e}"));
            assert!(back == *data, "{rel} differs after copying only the used ranges");
        }
        m
    }

    fn roundtrip(mkfs: &str, args: &[&str], size_mib: u64, kind: FsKind) -> Option<UsedMap> {
        if !have(&[mkfs, "e2fsck", "dumpe2fs", "debugfs"]) {
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let files = tree();
        let img = make(dir.path(), mkfs, args, size_mib, &files);
        Some(check(&img, &files, kind))
    }

    #[test]
    fn ext4_4k_blocks() {
        roundtrip("mkfs.ext4", &["-b", "4096"], 600, FsKind::Ext4);
    }

    #[test]
    fn ext4_1k_blocks() {
        roundtrip("mkfs.ext4", &["-b", "1024"], 64, FsKind::Ext4);
    }

    #[test]
    fn ext4_without_journal() {
        roundtrip("mkfs.ext4", &["-O", "^has_journal"], 64, FsKind::Ext4);
    }

    #[test]
    fn ext4_64bit_descriptors() {
        roundtrip("mkfs.ext4", &["-O", "64bit", "-b", "4096"], 300, FsKind::Ext4);
    }

    #[test]
    fn ext4_32bit_descriptors_no_flex_bg() {
        roundtrip("mkfs.ext4", &["-O", "^64bit,^flex_bg"], 64, FsKind::Ext4);
    }

    #[test]
    fn ext4_many_groups() {
        // 256 MiB of 1 KiB blocks, 256 blocks per group: 1024 groups, most BLOCK_UNINIT, so
        // the superblock backups (groups 1, 3, 5, 7, 9, 25, 27, …) come from the rule alone.
        let m = roundtrip("mkfs.ext4", &["-b", "1024", "-g", "256"], 256, FsKind::Ext4);
        if let Some(m) = m {
            assert!(m.used_bytes() < 40 << 20, "{} bytes used", m.used_bytes());
        }
    }

    #[test]
    fn ext4_meta_bg() {
        // 128 groups of 1 KiB blocks, 16 descriptors per block: 8 meta groups, whose descriptor
        // blocks sit in their first, second and last groups (the last one BLOCK_UNINIT).
        roundtrip("mkfs.ext4", &["-b", "1024", "-g", "1024", "-O", "meta_bg,^resize_inode"], 128, FsKind::Ext4);
    }

    #[test]
    fn ext4_sparse_super2() {
        roundtrip("mkfs.ext4", &["-b", "1024", "-O", "sparse_super2"], 128, FsKind::Ext4);
    }

    #[test]
    fn ext4_bigalloc() {
        roundtrip("mkfs.ext4", &["-b", "1024", "-O", "bigalloc", "-C", "16384"], 128, FsKind::Ext4);
    }

    #[test]
    fn ext3() {
        roundtrip("mkfs.ext3", &[], 64, FsKind::Ext3);
    }

    #[test]
    fn ext2() {
        roundtrip("mkfs.ext2", &[], 64, FsKind::Ext2);
    }

    #[test]
    fn ext2_4k_blocks() {
        roundtrip("mkfs.ext2", &["-b", "4096"], 300, FsKind::Ext2);
    }

    /// A deleted file's blocks still hold its bytes; the map must leave them out.
    #[test]
    fn deleted_file_is_not_used() {
        if !have(&["mkfs.ext4", "e2fsck", "dumpe2fs", "debugfs"]) {
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let mut files = tree();
        files.push(("junk.bin".into(), noise(99, 8 << 20)));
        let img = make(dir.path(), "mkfs.ext4", &["-b", "4096"], 128, &files);
        let listed = run(cmd("debugfs").arg("-R").arg("blocks /junk.bin").arg(&img));
        let junk: Vec<u64> = listed.split_whitespace().filter_map(|w| w.parse().ok()).collect();
        assert_eq!(junk.len(), 2048, "junk.bin blocks: {listed}");
        run(cmd("debugfs").arg("-w").arg("-R").arg("rm /junk.bin").arg(&img));
        files.pop();

        let m = check(&img, &files, FsKind::Ext4);
        let f = File::open(&img).expect("open");
        let dirty = nonzero::map(&f, f.metadata().expect("stat").len()).expect("scan");
        for &b in &junk {
            let (start, end) = (b * 4096, (b + 1) * 4096);
            assert!(!touched(&m, start, end), "freed block {b} is in the used map");
            assert!(covered(&dirty, start, end), "freed block {b} was zero: the test proves nothing");
        }
    }

    #[test]
    fn dispatch_through_used_map() {
        if !have(&["mkfs.ext4"]) {
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let img = make(dir.path(), "mkfs.ext4", &[], 16, &tree());
        let f = File::open(&img).expect("open");
        let len = f.metadata().expect("stat").len();
        assert!(detect(&f, len));
        let (m, err) = crate::fs::used_map(&f, len);
        assert!(err.is_none(), "{err:?}");
        assert_eq!((m.fs, m.method), (FsKind::Ext4, MapMethod::Allocation));
    }

    #[test]
    fn bitmap_runs() {
        let mut runs = Vec::new();
        set_runs(&[0b1011_0001, 0xFF, 0xFF, 0x01], 32, |r| runs.push(r));
        assert_eq!(runs, vec![0..1, 4..6, 7..25]);

        let mut bitmap = vec![0xFFu8; 1024];
        bitmap[100] = 0;
        runs.clear();
        set_runs(&bitmap, 8192, |r| runs.push(r));
        assert_eq!(runs, vec![0..800, 808..8192]);

        runs.clear();
        set_runs(&bitmap, 803, |r| runs.push(r));
        assert_eq!(runs, vec![0..800], "bits past nbits are ignored");

        runs.clear();
        set_runs(&[0x80, 0, 0, 0, 0, 0, 0, 0x80, 0x01], 72, |r| runs.push(r));
        assert_eq!(runs, vec![7..8, 63..65]);

        // Against the obvious per-bit loop on noise.
        let data = noise(7, 4096);
        for nbits in [0, 1, 63, 64, 65, 1000, 32768] {
            runs.clear();
            set_runs(&data, nbits, |r| runs.push(r));
            let bits: Vec<u64> = runs.iter().flat_map(|r| r.clone()).collect();
            let want: Vec<u64> = (0..nbits).filter(|&i| data[(i / 8) as usize] >> (i % 8) & 1 == 1).collect();
            assert_eq!(bits, want, "nbits {nbits}");
            assert!(runs.windows(2).all(|w| w[0].end < w[1].start), "runs are maximal");
        }
    }

    #[test]
    fn sparse_super_groups() {
        let backups: Vec<u64> = (0..400)
            .filter(|&g| g == 0 || g == 1 || (g % 2 == 1 && [3, 5, 7].iter().any(|&b| is_power_of(g, b))))
            .collect();
        assert_eq!(backups, vec![0, 1, 3, 5, 7, 9, 25, 27, 49, 81, 125, 243, 343]);
    }

    /// A small real image to damage: 2 MiB of 1 KiB blocks in 8 groups.
    fn small_image() -> Option<Vec<u8>> {
        if !have(&["mkfs.ext4"]) {
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let img = make(dir.path(), "mkfs.ext4", &["-b", "1024", "-g", "256", "-N", "64"], 2, &tree()[..4]);
        let disk = std::fs::read(img).expect("read image");
        assert!(map(&disk, disk.len() as u64).is_ok());
        Some(disk)
    }

    fn put(disk: &mut [u8], off: usize, value: u64, len: usize) {
        disk[off..off + len].copy_from_slice(&value.to_le_bytes()[..len]);
    }

    fn reason(disk: &dyn ReadAt, len: u64) -> String {
        match map(disk, len) {
            Err(FsError::Corrupt { reason, .. }) => reason,
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }

    const SB: usize = SB_OFFSET as usize;
    /// Group descriptors of the small image: block 2 of 1 KiB.
    const GDT: usize = 2048;

    #[test]
    fn truncated_superblock_is_an_error() {
        let Some(disk) = small_image() else { return };
        let cut = disk[..1500].to_vec();
        assert!(!detect(&cut, cut.len() as u64));
        assert!(matches!(map(&cut, cut.len() as u64), Err(FsError::Io { .. })));
        // Superblock complete but the partition shorter than the file system.
        let r = reason(&disk[..64 << 10].to_vec(), 64 << 10);
        assert!(r.contains("partition is only 65536 bytes"), "{r}");
    }

    #[test]
    fn zero_blocks_per_group_is_corrupt() {
        let Some(mut disk) = small_image() else {
            return;
        };
        put(&mut disk, SB + S_BLOCKS_PER_GROUP, 0, 4);
        let r = reason(&disk, disk.len() as u64);
        assert!(r.contains("s_blocks_per_group is 0"), "{r}");
    }

    #[test]
    fn bitmap_past_the_end_is_corrupt() {
        let Some(mut disk) = small_image() else {
            return;
        };
        let desc_size = le(&disk, SB + S_DESC_SIZE, 2) as usize;
        // Group 5's block bitmap, far past the 2048 blocks.
        put(&mut disk, GDT + 5 * desc_size + BG_BLOCK_BITMAP_LO, 0xFFFF_FF00, 4);
        let r = reason(&disk, disk.len() as u64);
        assert!(r.contains("group 5: block bitmap at block 4294967040"), "{r}");
        // And the high half of a 64-bit pointer.
        let Some(mut disk) = small_image() else {
            return;
        };
        put(&mut disk, GDT + BG_INODE_TABLE_HI, 1, 4);
        let r = reason(&disk, disk.len() as u64);
        assert!(r.contains("group 0: inode table at block 4294967"), "{r}");
    }

    #[test]
    fn implausible_superblocks_are_corrupt() {
        let Some(clean) = small_image() else { return };
        let cases: &[(&str, usize, u64, usize, &str)] = &[
            ("huge block size", S_LOG_BLOCK_SIZE, 40, 4, "s_log_block_size is 40"),
            ("blocks count", S_BLOCKS_COUNT_LO, u64::from(u32::MAX), 4, "claims 4294967295 blocks"),
            ("blocks count hi", S_BLOCKS_COUNT_HI, u64::from(u32::MAX), 4, "claims"),
            ("inode size", S_INODE_SIZE, 0, 2, "s_inode_size is 0"),
            ("descriptor size", S_DESC_SIZE, 48, 2, "s_desc_size is 48"),
            ("inodes per group", S_INODES_PER_GROUP, 0, 4, "s_inodes_per_group is 0"),
            ("inode count", S_INODES_COUNT, 7, 4, "s_inodes_count is 7"),
            ("first data block", S_FIRST_DATA_BLOCK, 9, 4, "s_first_data_block is 9"),
            ("bitmap too small", S_BLOCKS_PER_GROUP, 65536, 4, "do not fit"),
            ("ragged groups", S_BLOCKS_PER_GROUP, 257, 4, "not a multiple of 8"),
            ("reserved gdt", S_RESERVED_GDT_BLOCKS, 5000, 2, "s_reserved_gdt_blocks is 5000"),
            (
                "needs recovery",
                S_FEATURE_INCOMPAT,
                INCOMPAT_RECOVER | INCOMPAT_64BIT | INCOMPAT_EXTENTS,
                4,
                "needs recovery",
            ),
            ("journal device", S_FEATURE_INCOMPAT, INCOMPAT_JOURNAL_DEV, 4, "external journal"),
            (
                "unknown feature",
                S_FEATURE_INCOMPAT,
                0x8000_0000 | INCOMPAT_64BIT,
                4,
                "unknown incompatible features 0x80000000",
            ),
            ("errors", S_STATE, STATE_VALID | STATE_ERROR, 2, "s_state is 0x3"),
            ("not clean", S_STATE, 0, 2, "s_state is 0x0"),
        ];
        for &(name, off, value, len, want) in cases {
            let mut disk = clean.clone();
            put(&mut disk, SB + off, value, len);
            let r = reason(&disk, disk.len() as u64);
            assert!(r.contains(want), "{name}: {r}");
        }
        let mut disk = clean.clone();
        put(&mut disk, SB + S_MAGIC, 0x1234, 2);
        assert!(!detect(&disk, disk.len() as u64));
        assert!(reason(&disk, disk.len() as u64).contains("magic is 0x1234"));
    }

    /// Random damage to the superblock, descriptors and bitmaps: errors, never a panic, and
    /// every range the parser does return stays inside the partition.
    #[test]
    fn random_damage_never_panics() {
        let Some(mut disk) = small_image() else {
            return;
        };
        let len = disk.len() as u64;
        let fields = [
            S_INODES_COUNT,
            S_BLOCKS_COUNT_LO,
            S_FIRST_DATA_BLOCK,
            S_LOG_BLOCK_SIZE,
            S_LOG_CLUSTER_SIZE,
            S_BLOCKS_PER_GROUP,
            S_CLUSTERS_PER_GROUP,
            S_INODES_PER_GROUP,
            S_REV_LEVEL,
            S_INODE_SIZE,
            S_FEATURE_COMPAT,
            S_FEATURE_INCOMPAT,
            S_FEATURE_RO_COMPAT,
            S_RESERVED_GDT_BLOCKS,
            S_DESC_SIZE,
            S_FIRST_META_BG,
            S_BLOCKS_COUNT_HI,
            S_MMP_BLOCK,
            S_BACKUP_BGS,
        ];
        let dice = noise(42, 3000 * 32);
        let mut ok = 0;
        for (i, roll) in dice.chunks_exact(32).enumerate() {
            let r = |k: usize| u64::from_le_bytes(roll[k * 8..k * 8 + 8].try_into().expect("8 bytes"));
            let mut undo = Vec::new();
            for k in 0..(1 + r(0) % 3) as usize {
                let off = if k == 0 && i % 2 == 0 {
                    // A superblock field, set to a small, boundary or random value.
                    SB + fields[(r(1) % fields.len() as u64) as usize]
                } else {
                    // Any byte of the first 8 KiB: superblock, descriptors, bitmaps.
                    ((r(2) >> (k * 13)) % 8192) as usize
                };
                let value = [0, 1, 0xFF, (r(3) >> (k * 8)) as u8][(r(3) % 4) as usize];
                for b in 0..4 {
                    undo.push((off + b, disk[off + b]));
                    disk[off + b] = if b == 0 || r(3) & (1 << b) != 0 { value } else { disk[off + b] };
                }
            }
            if let Ok(m) = map(&disk, len) {
                assert_well_formed(&m, len);
                ok += 1;
            }
            for (off, old) in undo.into_iter().rev() {
                disk[off] = old;
            }
        }
        eprintln!("random damage: {ok} of 3000 still parsed");
    }
}

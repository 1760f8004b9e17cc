//! FAT12, FAT16 and FAT32: the used clusters are those whose FAT entry is not zero.
//!
//! Field names and the type rule follow Microsoft's "FAT: General Overview of On-Disk Format"
//! (the BPB fields `BPB_BytsPerSec` … and "the FAT type is determined solely by the count of
//! clusters"). Everything before the first data sector (boot sector, reserved sectors, the
//! FATs and the FAT12/16 root directory) is kept whole. Clusters marked bad hold no data and
//! may not even be readable, so they are left out like free ones.

use super::{normalize, FsError, FsKind, MapMethod, UsedMap};
use crate::io::{le, ReadAt};

const BOOT_LEN: usize = 512;

// Boot sector (BPB) fields.
const BS_JMP_BOOT: usize = 0;
const BPB_BYTS_PER_SEC: usize = 11;
const BPB_SEC_PER_CLUS: usize = 13;
const BPB_RSVD_SEC_CNT: usize = 14;
const BPB_NUM_FATS: usize = 16;
const BPB_ROOT_ENT_CNT: usize = 17;
const BPB_TOT_SEC16: usize = 19;
const BPB_MEDIA: usize = 21;
const BPB_FAT_SZ16: usize = 22;
const BPB_TOT_SEC32: usize = 32;
const BPB_FAT_SZ32: usize = 36;
const BPB_EXT_FLAGS: usize = 40;
const BPB_ROOT_CLUS: usize = 44;
const SIGNATURE: usize = 510;

const JMP_SHORT: u8 = 0xEB;
const JMP_NEAR: u8 = 0xE9;
const SIGNATURE_BYTES: [u8; 2] = [0x55, 0xAA];
const DIR_ENTRY_LEN: u64 = 32;
/// FAT32 `BPB_ExtFlags`: bit 7 set means only the FAT numbered in bits 0-3 is active.
const EXT_FLAGS_NO_MIRROR: u64 = 0x80;
const EXT_FLAGS_ACTIVE_FAT: u64 = 0x0F;
/// Cluster-count limits from the specification: below the first is FAT12, below the second FAT16.
const FAT12_MAX_CLUSTERS: u64 = 4084;
const FAT16_MAX_CLUSTERS: u64 = 65524;
/// The first data cluster is number 2; entries 0 and 1 are reserved.
const FIRST_CLUSTER: u64 = 2;
/// FAT32 entries are 28 bits; the top four are reserved.
const FAT32_MASK: u32 = 0x0FFF_FFFF;
/// Read size for the FAT: a multiple of 3 and 4 so 12-, 16- and 32-bit entries never straddle
/// two reads.
const READ: u64 = 3 << 20;

pub fn detect(dev: &dyn ReadAt, len: u64) -> bool {
    let mut boot = [0u8; BOOT_LEN];
    len >= BOOT_LEN as u64 && dev.read_exact_at(&mut boot, 0).is_ok() && Bpb::parse(&boot).is_ok()
}

pub fn map(dev: &dyn ReadAt, len: u64) -> Result<UsedMap, FsError> {
    let mut boot = [0u8; BOOT_LEN];
    dev.read_exact_at(&mut boot, 0).map_err(|source| FsError::Io { what: "FAT boot sector", offset: 0, source })?;
    // The FAT type is not known until the clusters are counted: the reason says "FAT".
    let bpb = Bpb::parse(&boot)
        .map_err(|reason| FsError::Corrupt { fs: FsKind::Unknown, reason: format!("FAT boot sector: {reason}") })?;
    let geo = Geometry::new(&bpb, len)?;

    // Boot sector, reserved sectors, FATs and the FAT12/16 root directory.
    let mut ranges = Vec::new();
    ranges.push(0..geo.first_data_byte);
    let mut run: Option<u64> = None;
    let mut end_run = |run: &mut Option<u64>, end: u64| {
        if let Some(start) = run.take() {
            ranges.push(geo.cluster_bytes(start)..geo.cluster_bytes(end));
        }
    };
    scan_fat(dev, &geo, |cluster, entry| {
        if entry != 0 && entry != geo.bad_cluster {
            run.get_or_insert(cluster);
        } else {
            end_run(&mut run, cluster);
        }
    })?;
    end_run(&mut run, FIRST_CLUSTER + geo.clusters);

    Ok(UsedMap::new(geo.kind, MapMethod::Allocation, geo.cluster_size, normalize(ranges)))
}

/// The boot sector's fields, each plausible on its own.
#[derive(Debug)]
struct Bpb {
    bytes_per_sector: u64,
    sectors_per_cluster: u64,
    reserved_sectors: u64,
    fats: u64,
    root_entries: u64,
    total_sectors: u64,
    fat_size16: u64,
    fat_size32: u64,
    ext_flags: u64,
    root_cluster: u64,
}

impl Bpb {
    /// Accepts only boot sectors a FAT formatter could have written; the reason names the
    /// first field that is not.
    fn parse(b: &[u8; BOOT_LEN]) -> Result<Bpb, String> {
        let signature = [b[SIGNATURE], b[SIGNATURE + 1]];
        if signature != SIGNATURE_BYTES {
            return Err(format!("boot sector signature is {:02X}{:02X}, not 55AA", signature[0], signature[1]));
        }
        let jmp = b[BS_JMP_BOOT];
        if jmp != JMP_SHORT && jmp != JMP_NEAR {
            return Err(format!("boot sector starts with {jmp:#04x}, not a jump instruction (0xEB or 0xE9)"));
        }
        let bytes_per_sector = le(b, BPB_BYTS_PER_SEC, 2);
        if !matches!(bytes_per_sector, 512 | 1024 | 2048 | 4096) {
            return Err(format!("BPB_BytsPerSec is {bytes_per_sector}; it must be 512, 1024, 2048 or 4096"));
        }
        let sectors_per_cluster = le(b, BPB_SEC_PER_CLUS, 1);
        if !sectors_per_cluster.is_power_of_two() {
            return Err(format!("BPB_SecPerClus is {sectors_per_cluster}; it must be a power of two"));
        }
        let reserved_sectors = le(b, BPB_RSVD_SEC_CNT, 2);
        if reserved_sectors == 0 {
            return Err("BPB_RsvdSecCnt is 0; the boot sector itself is reserved".into());
        }
        let fats = le(b, BPB_NUM_FATS, 1);
        if !(1..=2).contains(&fats) {
            return Err(format!("BPB_NumFATs is {fats}; it must be 1 or 2"));
        }
        let media = b[BPB_MEDIA];
        if media != 0xF0 && media < 0xF8 {
            return Err(format!("BPB_Media is {media:#04x}; it must be 0xF0 or 0xF8 to 0xFF"));
        }
        let total_sectors = match le(b, BPB_TOT_SEC16, 2) {
            0 => le(b, BPB_TOT_SEC32, 4),
            n => n,
        };
        if total_sectors == 0 {
            return Err("both BPB_TotSec16 and BPB_TotSec32 are 0".into());
        }
        let fat_size16 = le(b, BPB_FAT_SZ16, 2);
        let fat_size32 = if fat_size16 == 0 { le(b, BPB_FAT_SZ32, 4) } else { 0 };
        if fat_size16 == 0 && fat_size32 == 0 {
            return Err("both BPB_FATSz16 and BPB_FATSz32 are 0".into());
        }
        Ok(Bpb {
            bytes_per_sector,
            sectors_per_cluster,
            reserved_sectors,
            fats,
            root_entries: le(b, BPB_ROOT_ENT_CNT, 2),
            total_sectors,
            fat_size16,
            fat_size32,
            ext_flags: if fat_size16 == 0 { le(b, BPB_EXT_FLAGS, 2) } else { 0 },
            root_cluster: if fat_size16 == 0 { le(b, BPB_ROOT_CLUS, 4) } else { 0 },
        })
    }
}

/// Where the FAT and the clusters are, checked against the partition.
#[derive(Debug)]
struct Geometry {
    kind: FsKind,
    cluster_size: u64,
    first_data_byte: u64,
    /// Data clusters, numbered from [`FIRST_CLUSTER`].
    clusters: u64,
    /// Byte offset of the FAT that is read (the active one when mirroring is off).
    fat_offset: u64,
    entry_bits: u64,
    bad_cluster: u32,
}

impl Geometry {
    fn new(bpb: &Bpb, len: u64) -> Result<Geometry, FsError> {
        // Every BPB field is at most 32 bits wide, so the sums and products below fit in u64.
        let bps = bpb.bytes_per_sector;
        let fat_sectors = bpb.fat_size16.max(bpb.fat_size32);
        let root_dir_sectors = (bpb.root_entries * DIR_ENTRY_LEN).div_ceil(bps);
        let first_data_sector = bpb.reserved_sectors + bpb.fats * fat_sectors + root_dir_sectors;
        let early =
            |reason: String| FsError::Corrupt { fs: FsKind::Unknown, reason: format!("FAT boot sector: {reason}") };
        if bpb.total_sectors * bps > len {
            return Err(early(format!(
                "the boot sector claims {} sectors of {bps} bytes but the partition is only {len} \
                 bytes; the partition was shrunk or the boot sector is damaged",
                bpb.total_sectors
            )));
        }
        if first_data_sector >= bpb.total_sectors {
            return Err(early(format!(
                "reserved sectors ({}), {} FATs of {fat_sectors} sectors and {root_dir_sectors} root \
                 directory sectors leave no room for data in {} sectors",
                bpb.reserved_sectors, bpb.fats, bpb.total_sectors
            )));
        }
        let clusters = (bpb.total_sectors - first_data_sector) / bpb.sectors_per_cluster;
        let (kind, entry_bits, bad_cluster) = if clusters <= FAT12_MAX_CLUSTERS {
            (FsKind::Fat12, 12, 0xFF7)
        } else if clusters <= FAT16_MAX_CLUSTERS {
            (FsKind::Fat16, 16, 0xFFF7)
        } else {
            (FsKind::Fat32, 32, 0x0FFF_FFF7)
        };
        let bad = |reason: String| FsError::Corrupt { fs: kind, reason };
        if clusters == 0 {
            return Err(bad(format!(
                "{} data sectors make no cluster of {} sectors",
                bpb.total_sectors - first_data_sector,
                bpb.sectors_per_cluster
            )));
        }
        if (kind == FsKind::Fat32) != (bpb.fat_size16 == 0) {
            return Err(bad(format!(
                "{clusters} clusters make this {kind:?} by Microsoft's rule, but BPB_FATSz16 is {}, \
                 the layout of {}; refusing to guess which one the driver uses",
                bpb.fat_size16,
                if bpb.fat_size16 == 0 { "FAT32" } else { "FAT12/16" }
            )));
        }
        if (kind == FsKind::Fat32) != (bpb.root_entries == 0) {
            return Err(bad(format!("BPB_RootEntCnt is {} in a {kind:?} file system", bpb.root_entries)));
        }
        if kind == FsKind::Fat32 && !(FIRST_CLUSTER..FIRST_CLUSTER + clusters).contains(&bpb.root_cluster) {
            return Err(bad(format!(
                "BPB_RootClus is {}, outside the data clusters {FIRST_CLUSTER}..{}",
                bpb.root_cluster,
                FIRST_CLUSTER + clusters
            )));
        }
        let fat_bytes = ((FIRST_CLUSTER + clusters) * entry_bits).div_ceil(8);
        if fat_bytes > fat_sectors * bps {
            return Err(bad(format!(
                "{clusters} clusters need {fat_bytes} bytes of FAT but each FAT has {fat_sectors} \
                 sectors of {bps} bytes"
            )));
        }
        let active = if bpb.ext_flags & EXT_FLAGS_NO_MIRROR != 0 { bpb.ext_flags & EXT_FLAGS_ACTIVE_FAT } else { 0 };
        if active >= bpb.fats {
            return Err(bad(format!("BPB_ExtFlags makes FAT {active} active but there are {} FATs", bpb.fats)));
        }
        Ok(Geometry {
            kind,
            cluster_size: bpb.sectors_per_cluster * bps,
            first_data_byte: first_data_sector * bps,
            clusters,
            fat_offset: (bpb.reserved_sectors + active * fat_sectors) * bps,
            entry_bits,
            bad_cluster,
        })
    }

    /// Byte offset of data cluster `n` (from [`FIRST_CLUSTER`] to one past the last).
    fn cluster_bytes(&self, n: u64) -> u64 {
        self.first_data_byte + (n - FIRST_CLUSTER) * self.cluster_size
    }
}

/// Calls `entry(cluster, value)` for every data cluster in order, reading the FAT in large
/// pieces.
fn scan_fat(dev: &dyn ReadAt, geo: &Geometry, mut entry: impl FnMut(u64, u32)) -> Result<(), FsError> {
    let end = FIRST_CLUSTER + geo.clusters;
    let per_read = READ * 8 / geo.entry_bits;
    let mut buf = vec![0u8; READ as usize];
    let mut first = 0u64;
    while first < end {
        let count = per_read.min(end - first);
        let offset = geo.fat_offset + first * geo.entry_bits / 8;
        let n = (count * geo.entry_bits).div_ceil(8) as usize;
        let buf = &mut buf[..n];
        dev.read_exact_at(buf, offset).map_err(|source| FsError::Io { what: "FAT", offset, source })?;
        for i in FIRST_CLUSTER.saturating_sub(first)..count {
            let value = match geo.entry_bits {
                12 => {
                    let at = (i + i / 2) as usize;
                    let pair = le(buf, at, 2) as u32;
                    if i % 2 == 1 {
                        pair >> 4
                    } else {
                        pair & 0xFFF
                    }
                }
                16 => le(buf, 2 * i as usize, 2) as u32,
                _ => le(buf, 4 * i as usize, 4) as u32 & FAT32_MASK,
            };
            entry(first + i, value);
        }
        first += count;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::fs::File;
    use std::path::{Path, PathBuf};

    use super::*;
    use crate::fs::ext::fixture::*;
    use crate::fs::{nonzero, UsedMap};

    /// Formats a sparse image with `mkfs.vfat` and copies `files` in with mtools.
    fn make(dir: &Path, args: &[&str], size_mib: u64, files: &[(String, Vec<u8>)]) -> PathBuf {
        let src = dir.join("src");
        write_tree(&src, files);
        let img = dir.join("fs.img");
        sparse_file(&img, size_mib << 20);
        run(cmd("mkfs.vfat").args(args).arg(&img));
        let mut tops: Vec<PathBuf> =
            std::fs::read_dir(&src).expect("list src").map(|e| e.expect("entry").path()).collect();
        tops.sort();
        run(cmd("mcopy").arg("-s").arg("-i").arg(&img).args(&tops).arg("::/"));
        img
    }

    fn map_file(img: &Path) -> (UsedMap, u64) {
        map_image(img, map)
    }

    /// The two proofs: used bytes are the area before the data plus the clusters fsck.fat and
    /// mdir count as taken, and a copy holding only the used ranges passes fsck.fat and gives
    /// back every file byte for byte.
    fn check(img: &Path, files: &[(String, Vec<u8>)], kind: FsKind) -> UsedMap {
        let report = run(cmd("fsck.fat").arg("-n").arg("-v").arg(img));
        let (m, len) = map_file(img);
        assert_well_formed(&m, len);
        assert_eq!((m.fs, m.method), (kind, MapMethod::Allocation));

        let cluster_line = report.lines().find(|l| l.ends_with("bytes per cluster")).expect("cluster size line");
        let cluster: u64 = cluster_line.split_whitespace().next().and_then(|n| n.parse().ok()).expect("cluster size");
        let data_start = number_after(&report, "Data area starts at byte");
        let counts = report.lines().find(|l| l.ends_with(" clusters")).expect("summary line");
        let (taken, total) = counts
            .rsplit(", ")
            .next()
            .and_then(|c| c.trim_end_matches(" clusters").split_once('/'))
            .map(|(a, b)| (a.parse::<u64>().expect("used"), b.parse::<u64>().expect("total")))
            .expect("used/total clusters");
        let listing = run(cmd("mdir").arg("-i").arg(img).arg("::/"));
        let free_line = listing.lines().find(|l| l.ends_with("bytes free")).expect("bytes free");
        let free: u64 = free_line.chars().filter(char::is_ascii_digit).collect::<String>().parse().expect("free");
        eprintln!(
            "{}: {kind:?}, {total} clusters of {cluster} bytes, data from byte {data_start}; used map {} bytes in {} \
             ranges; fsck.fat: {taken} clusters taken, mdir: {free} bytes free; image {len}",
            img.display(),
            m.used_bytes(),
            m.ranges.len()
        );
        assert_eq!(m.block_size, cluster);
        assert_eq!(m.used_bytes(), data_start + taken * cluster, "used map disagrees with fsck.fat:\n{report}");
        assert_eq!(free, (total - taken) * cluster, "fsck.fat and mdir disagree");

        let copy = img.with_extension("copy");
        copy_used(img, &m, &copy);
        run(cmd("fsck.fat").arg("-n").arg(&copy));
        let out = img.with_extension("out");
        std::fs::create_dir_all(&out).expect("mkdir");
        for (i, (rel, data)) in files.iter().enumerate() {
            let back_path = out.join(i.to_string());
            run(cmd("mcopy").arg("-n").arg("-i").arg(&copy).arg(format!("::/{rel}")).arg(&back_path));
            let back = std::fs::read(&back_path).unwrap_or_else(|e| panic!("{rel} not copied out: {e}"));
            assert!(back == *data, "{rel} differs after copying only the used ranges");
        }
        m
    }

    fn roundtrip(args: &[&str], size_mib: u64, kind: FsKind) -> Option<UsedMap> {
        if !have(&["mkfs.vfat", "fsck.fat", "mcopy", "mdir"]) {
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let files = tree();
        let img = make(dir.path(), args, size_mib, &files);
        Some(check(&img, &files, kind))
    }

    #[test]
    fn fat12() {
        roundtrip(&["-F", "12"], 8, FsKind::Fat12);
    }

    #[test]
    fn fat16() {
        roundtrip(&["-F", "16"], 32, FsKind::Fat16);
    }

    #[test]
    fn fat16_single_fat_big_clusters() {
        roundtrip(&["-F", "16", "-f", "1", "-s", "64"], 128, FsKind::Fat16);
    }

    #[test]
    fn fat32() {
        roundtrip(&["-F", "32"], 64, FsKind::Fat32);
    }

    #[test]
    fn fat32_4k_sectors() {
        roundtrip(&["-F", "32", "-S", "4096", "-s", "1"], 300, FsKind::Fat32);
    }

    /// A deleted file's clusters still hold its bytes; the map must leave them out.
    #[test]
    fn deleted_file_is_not_used() {
        if !have(&["mkfs.vfat", "fsck.fat", "mcopy", "mdir", "mdel"]) {
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let mut files = tree();
        files.push(("junk.bin".into(), noise(99, 5 << 20)));
        let img = make(dir.path(), &["-F", "32"], 64, &files);
        let (before, len) = map_file(&img);
        run(cmd("mdel").arg("-i").arg(&img).arg("::/junk.bin"));
        files.pop();

        let after = check(&img, &files, FsKind::Fat32);
        let f = File::open(&img).expect("open");
        let dirty = nonzero::map(&f, len).expect("scan");
        // What the deletion freed: ranges of `before` not in `after`, walked a cluster at a time.
        let cluster = after.block_size;
        let mut freed = 0u64;
        for r in &before.ranges {
            for start in (r.start..r.end).step_by(cluster as usize) {
                if !touched(&after, start, start + cluster) {
                    assert!(covered(&dirty, start, start + cluster), "freed cluster at {start} was zero");
                    freed += cluster;
                }
            }
        }
        assert_eq!(freed, (5u64 << 20).div_ceil(cluster) * cluster, "freed bytes");
        assert_eq!(before.used_bytes() - after.used_bytes(), freed);
    }

    #[test]
    fn dispatch_through_used_map() {
        if !have(&["mkfs.vfat", "mcopy"]) {
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let img = make(dir.path(), &["-F", "16"], 32, &tree());
        let f = File::open(&img).expect("open");
        let len = f.metadata().expect("stat").len();
        let (m, err) = crate::fs::used_map(&f, len);
        assert!(err.is_none(), "{err:?}");
        assert_eq!((m.fs, m.method), (FsKind::Fat16, MapMethod::Allocation));
    }

    /// A FAT16 boot sector written by hand: 32 MiB, 2 KiB clusters, 512 root entries.
    fn fat16_disk() -> Vec<u8> {
        let mut disk = vec![0u8; 32 << 20];
        disk[..3].copy_from_slice(&[0xEB, 0x3C, 0x90]);
        put(&mut disk, BPB_BYTS_PER_SEC, 512, 2);
        put(&mut disk, BPB_SEC_PER_CLUS, 4, 1);
        put(&mut disk, BPB_RSVD_SEC_CNT, 4, 2);
        put(&mut disk, BPB_NUM_FATS, 2, 1);
        put(&mut disk, BPB_ROOT_ENT_CNT, 512, 2);
        put(&mut disk, BPB_MEDIA, 0xF8, 1);
        put(&mut disk, BPB_FAT_SZ16, 64, 2);
        put(&mut disk, BPB_TOT_SEC32, 65536, 4);
        disk[SIGNATURE..SIGNATURE + 2].copy_from_slice(&SIGNATURE_BYTES);
        disk
    }

    fn put(disk: &mut [u8], off: usize, value: u64, len: usize) {
        disk[off..off + len].copy_from_slice(&value.to_le_bytes()[..len]);
    }

    fn reason(disk: &[u8]) -> String {
        let disk = disk.to_vec();
        match map(&disk, disk.len() as u64) {
            Err(FsError::Corrupt { reason, .. }) => reason,
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }

    #[test]
    fn fat16_entries_by_hand() {
        let mut disk = fat16_disk();
        let fat = 4 * 512;
        // Clusters 2-4 a chain, 5 free, 6 end of chain, 7 bad, 8 end of chain.
        for (cluster, value) in [(2, 3), (3, 4), (4, 0xFFFF), (6, 0xFFF8), (7, 0xFFF7), (8, 0xFFFF)] {
            put(&mut disk, fat + 2 * cluster, value, 2);
        }
        let m = map(&disk, disk.len() as u64).expect("map");
        // Data starts after 4 reserved + 2 × 64 FAT + 32 root directory sectors.
        let data = (4 + 128 + 32) * 512;
        let cl = 2048;
        assert_eq!(m.fs, FsKind::Fat16);
        assert_eq!(m.block_size, cl);
        assert_eq!(m.ranges, vec![0..data + 3 * cl, data + 4 * cl..data + 5 * cl, data + 6 * cl..data + 7 * cl]);
    }

    #[test]
    fn fat12_packed_entries_by_hand() {
        // 4 MiB, 1 KiB clusters: 4072 clusters, FAT12.
        let mut disk = vec![0u8; 4 << 20];
        disk[..3].copy_from_slice(&[0xEB, 0x3C, 0x90]);
        put(&mut disk, BPB_BYTS_PER_SEC, 512, 2);
        put(&mut disk, BPB_SEC_PER_CLUS, 2, 1);
        put(&mut disk, BPB_RSVD_SEC_CNT, 1, 2);
        put(&mut disk, BPB_NUM_FATS, 2, 1);
        put(&mut disk, BPB_ROOT_ENT_CNT, 224, 2);
        put(&mut disk, BPB_TOT_SEC16, 8192, 2);
        put(&mut disk, BPB_MEDIA, 0xF0, 1);
        put(&mut disk, BPB_FAT_SZ16, 12, 2);
        disk[SIGNATURE..SIGNATURE + 2].copy_from_slice(&SIGNATURE_BYTES);
        // Entries 2 (even: low 12 bits of bytes 3-4) and 5 (odd: high 12 bits of bytes 7-8),
        // and the last cluster, 4073.
        let fat = 512;
        let set = |disk: &mut [u8], n: usize, v: u16| {
            let at = fat + n + n / 2;
            let old = u16::from_le_bytes([disk[at], disk[at + 1]]);
            let new = if n % 2 == 1 { (old & 0x000F) | (v << 4) } else { (old & 0xF000) | v };
            disk[at..at + 2].copy_from_slice(&new.to_le_bytes());
        };
        set(&mut disk, 2, 0xFFF);
        set(&mut disk, 5, 0x001);
        set(&mut disk, 4073, 0xFF8);
        set(&mut disk, 3, 0xFF7); // bad: left out
        let m = map(&disk, disk.len() as u64).expect("map");
        assert_eq!(m.fs, FsKind::Fat12);
        let data = (1 + 2 * 12 + 14) * 512;
        let cl = 1024;
        let at = |n: u64| data + (n - 2) * cl;
        assert_eq!(m.ranges, vec![0..at(3), at(5)..at(6), at(4073)..at(4074)]);
        assert!(at(4074) <= disk.len() as u64);
    }

    #[test]
    fn absurd_boot_sectors_are_errors() {
        let clean = fat16_disk();
        assert!(detect(&clean, clean.len() as u64));
        let cases: &[(&str, usize, u64, usize, &str)] = &[
            ("sector count past the end", BPB_TOT_SEC32, u64::from(u32::MAX), 4, "partition is only 33554432 bytes"),
            ("FAT fills the disk", BPB_FAT_SZ16, 0xFFFF, 2, "leave no room for data"),
            ("reserved fills the disk", BPB_RSVD_SEC_CNT, 0xFFFF, 2, "leave no room for data"),
            ("FAT too small", BPB_FAT_SZ16, 1, 2, "16374 clusters need 32752 bytes of FAT"),
            ("no FAT size", BPB_FAT_SZ16, 0, 2, "BPB_FATSz16 and BPB_FATSz32 are 0"),
            ("no root directory", BPB_ROOT_ENT_CNT, 0, 2, "BPB_RootEntCnt is 0"),
            ("cluster size", BPB_SEC_PER_CLUS, 3, 1, "BPB_SecPerClus is 3"),
            ("zero cluster size", BPB_SEC_PER_CLUS, 0, 1, "BPB_SecPerClus is 0"),
            ("sector size", BPB_BYTS_PER_SEC, 513, 2, "BPB_BytsPerSec is 513"),
            ("no reserved", BPB_RSVD_SEC_CNT, 0, 2, "BPB_RsvdSecCnt is 0"),
            ("no FATs", BPB_NUM_FATS, 0, 1, "BPB_NumFATs is 0"),
            ("nine FATs", BPB_NUM_FATS, 9, 1, "BPB_NumFATs is 9"),
            ("media", BPB_MEDIA, 0x12, 1, "BPB_Media is 0x12"),
            ("no sectors", BPB_TOT_SEC32, 0, 4, "BPB_TotSec32 are 0"),
            ("jump", BS_JMP_BOOT, 0x00, 1, "not a jump instruction"),
            ("signature", SIGNATURE, 0x00, 1, "signature is 00AA"),
        ];
        for &(name, off, value, len, want) in cases {
            let mut disk = clean.clone();
            put(&mut disk, off, value, len);
            let r = reason(&disk);
            assert!(r.contains(want), "{name}: {r}");
        }
        // Sector-level problems are not plausible boot sectors at all: detect says no.
        let mut disk = clean.clone();
        put(&mut disk, BPB_BYTS_PER_SEC, 513, 2);
        assert!(!detect(&disk, disk.len() as u64));
        // A FAT32-style BPB (FATSz16 = 0) over too few clusters for FAT32.
        let mut disk = clean.clone();
        put(&mut disk, BPB_FAT_SZ16, 0, 2);
        put(&mut disk, BPB_FAT_SZ32, 64, 4);
        put(&mut disk, BPB_ROOT_ENT_CNT, 0, 2);
        let r = reason(&disk);
        assert!(r.contains("refusing to guess"), "{r}");
        // Truncated: the boot sector itself is cut.
        assert!(!detect(&clean[..300].to_vec(), 300));
        assert!(matches!(map(&clean[..300].to_vec(), 300), Err(FsError::Io { .. })));
    }

    #[test]
    fn fat32_fields_are_checked() {
        if !have(&["mkfs.vfat"]) {
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let img = dir.path().join("fs.img");
        sparse_file(&img, 64 << 20);
        run(cmd("mkfs.vfat").args(["-F", "32"]).arg(&img));
        let clean = std::fs::read(&img).expect("read");
        assert!(map(&clean, clean.len() as u64).is_ok());
        for (name, off, value, len, want) in [
            ("root cluster", BPB_ROOT_CLUS, 0, 4, "BPB_RootClus is 0"),
            ("root cluster past the end", BPB_ROOT_CLUS, 0x0FFF_FFF0, 4, "outside the data clusters"),
            ("active FAT", BPB_EXT_FLAGS, 0x83, 2, "makes FAT 3 active"),
            ("FAT16 root entries", BPB_ROOT_ENT_CNT, 512, 2, "BPB_RootEntCnt is 512 in a Fat32"),
        ] {
            let mut disk = clean.clone();
            put(&mut disk, off, value, len);
            let r = reason(&disk);
            assert!(r.contains(want), "{name}: {r}");
        }
        // Mirroring off with FAT 1 active: the second FAT is the one read.
        let mut disk = clean.clone();
        put(&mut disk, BPB_EXT_FLAGS, 0x81, 2);
        let first_fat = le(&disk, BPB_RSVD_SEC_CNT, 2) as usize * 512;
        put(&mut disk, first_fat + 4 * 100, 0x0FFF_FFFF, 4); // only in FAT 0: ignored
        assert_eq!(
            map(&disk, disk.len() as u64).expect("map").ranges,
            map(&clean, clean.len() as u64).expect("map").ranges
        );
    }

    /// Random damage to the boot sector and the FAT: errors, never a panic, and every range
    /// returned stays inside the partition.
    #[test]
    fn random_damage_never_panics() {
        let mut disk = fat16_disk();
        let len = disk.len() as u64;
        let fields = [
            BPB_BYTS_PER_SEC,
            BPB_SEC_PER_CLUS,
            BPB_RSVD_SEC_CNT,
            BPB_NUM_FATS,
            BPB_ROOT_ENT_CNT,
            BPB_TOT_SEC16,
            BPB_FAT_SZ16,
            BPB_TOT_SEC32,
            BPB_FAT_SZ32,
            BPB_EXT_FLAGS,
            BPB_ROOT_CLUS,
        ];
        let dice = noise(43, 3000 * 32);
        let mut ok = 0;
        for roll in dice.chunks_exact(32) {
            let r = |k: usize| u64::from_le_bytes(roll[k * 8..k * 8 + 8].try_into().expect("8 bytes"));
            let mut undo = Vec::new();
            for k in 0..(1 + r(0) % 3) as usize {
                let off = if k == 0 {
                    fields[(r(1) % fields.len() as u64) as usize]
                } else {
                    ((r(2) >> (k * 13)) % 4096) as usize
                };
                let value = [0, 1, 0xFF, (r(3) >> (k * 8)) as u8][(r(3) % 4) as usize];
                for b in 0..2 {
                    undo.push((off + b, disk[off + b]));
                    disk[off + b] = if b == 0 || r(3) & 0x10 != 0 { value } else { disk[off + b] };
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

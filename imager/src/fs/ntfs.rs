//! NTFS: the used clusters are the set bits of `$Bitmap` (MFT record 6), reached from the boot
//! sector through `$MFT`'s own data runs, plus the tail after the last whole cluster, where the
//! backup boot sector lives.
//!
//! Layouts follow ntfs-3g's `layout.h` (boot sector, MFT record header, attribute records),
//! its update-sequence fixups (`mst.c`: 512-byte strides whatever the sector size) and runlist
//! decoding (`runlist.c`: signed LCN deltas, a zero-width delta is a sparse run). See
//! `imager/WINDOWS-RESEARCH.md` §1. Nothing here trusts the volume: every offset, length and
//! run is checked against the record or the partition, and any doubt is an error (the capture
//! then stores every non-zero block instead).

use std::ops::Range;

use super::{normalize, FsError, FsKind, MapMethod, UsedMap};
use crate::io::{le, ReadAt};

const BOOT_LEN: usize = 512;
const OEM: &[u8; 8] = b"NTFS    ";
/// Fixup strides: `NTFS_BLOCK_SIZE`.
const STRIDE: usize = 512;
const MFT_RECORD_BITMAP: u64 = 6;
const ATTR_END: u32 = 0xFFFF_FFFF;
const ATTR_LIST: u32 = 0x20;
const ATTR_DATA: u32 = 0x80;
/// Windows 10 1709 and later format clusters up to 2 MiB.
const MAX_CLUSTER: u64 = 2 << 20;
/// The bitmap is read and scanned this much at a time.
const READ: u64 = 1 << 20;

fn corrupt(reason: impl Into<String>) -> FsError {
    FsError::Corrupt { fs: FsKind::Ntfs, reason: reason.into() }
}

/// The boot sector's geometry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Boot {
    pub bytes_per_sector: u64,
    pub cluster_size: u64,
    /// Sectors of the volume, the backup boot sector excluded.
    pub sectors: u64,
    pub clusters: u64,
    pub mft_lcn: u64,
    pub record_size: u64,
}

impl Boot {
    /// Parses and checks the boot sector against the partition length.
    pub fn parse(b: &[u8], len: u64) -> Result<Boot, String> {
        if b.len() < BOOT_LEN || &b[3..11] != OEM {
            return Err("no NTFS boot sector".into());
        }
        let bps = le(b, 0x0B, 2);
        if !(256..=4096).contains(&bps) || !bps.is_power_of_two() {
            return Err(format!("bytes per sector {bps}"));
        }
        let spc_code = b[0x0D] as u64;
        let spc = if spc_code <= 0x80 { spc_code } else { 1u64.checked_shl(256 - spc_code as u32).unwrap_or(0) };
        if spc == 0 || !spc.is_power_of_two() {
            return Err(format!("sectors per cluster code {spc_code:#x}"));
        }
        let cluster_size = bps * spc;
        if cluster_size > MAX_CLUSTER {
            return Err(format!("cluster size {cluster_size}"));
        }
        let sectors = le(b, 0x28, 8);
        let clusters = sectors / spc;
        if clusters == 0 || clusters.checked_mul(cluster_size).is_none_or(|end| end > len) {
            return Err(format!("{sectors} sectors of {bps} bytes do not fit in a {len}-byte partition"));
        }
        let mft_lcn = le(b, 0x30, 8);
        if mft_lcn == 0 || mft_lcn >= clusters {
            return Err(format!("$MFT at cluster {mft_lcn} of {clusters}"));
        }
        let code = b[0x40] as i8;
        let record_size =
            if code > 0 { code as u64 * cluster_size } else { 1u64.checked_shl((-(code as i32)) as u32).unwrap_or(0) };
        if !(STRIDE as u64..=64 * 1024).contains(&record_size) || !record_size.is_power_of_two() {
            return Err(format!("MFT record size code {code}"));
        }
        Ok(Boot { bytes_per_sector: bps, cluster_size, sectors, clusters, mft_lcn, record_size })
    }
}

pub fn detect(dev: &dyn ReadAt, len: u64) -> bool {
    let mut boot = [0u8; BOOT_LEN];
    len >= BOOT_LEN as u64 && dev.read_exact_at(&mut boot, 0).is_ok() && Boot::parse(&boot, len).is_ok()
}

/// A volume opened as far as its MFT: the boot sector and `$MFT`'s own data runs.
struct Volume<'a> {
    dev: &'a dyn ReadAt,
    boot: Boot,
    mft_runs: Vec<Run>,
}

impl<'a> Volume<'a> {
    fn open(dev: &'a dyn ReadAt, len: u64) -> Result<Volume<'a>, FsError> {
        let mut b = [0u8; BOOT_LEN];
        dev.read_exact_at(&mut b, 0).map_err(|source| FsError::Io { what: "NTFS boot sector", offset: 0, source })?;
        let boot = Boot::parse(&b, len).map_err(|r| corrupt(format!("boot sector: {r}")))?;
        // $MFT's record 0 maps the whole MFT.
        let mut rec0 = vec![0u8; boot.record_size as usize];
        let at = boot.mft_lcn * boot.cluster_size;
        dev.read_exact_at(&mut rec0, at).map_err(|source| FsError::Io { what: "$MFT record 0", offset: at, source })?;
        apply_fixups(&mut rec0).map_err(|r| corrupt(format!("$MFT record 0: {r}")))?;
        let (mft_runs, _) = unnamed_data(&rec0, boot.clusters).map_err(|r| corrupt(format!("$MFT record 0: {r}")))?;
        Ok(Volume { dev, boot, mft_runs })
    }

    /// MFT record `n`, fixups applied.
    fn record(&self, n: u64, what: &'static str) -> Result<Vec<u8>, FsError> {
        let size = self.boot.record_size;
        let mut rec = read_mapped(self.dev, &self.mft_runs, self.boot.cluster_size, n * size, size, what)?;
        apply_fixups(&mut rec).map_err(|r| corrupt(format!("{what}: {r}")))?;
        Ok(rec)
    }
}

/// `$Volume`'s `VOLUME_INFORMATION` flags (MFT record 3).
pub const VOLUME_IS_DIRTY: u16 = 0x0001;
pub const VOLUME_CHKDSK_UNDERWAY: u16 = 0x4000;

/// The volume's flags, from `$Volume` (MFT record 3, resident attribute 0x70).
pub fn volume_flags(dev: &dyn ReadAt, len: u64) -> Result<u16, FsError> {
    let vol = Volume::open(dev, len)?;
    let rec = vol.record(3, "$MFT record 3 ($Volume)")?;
    let info = resident_value(&rec, ATTR_VOLUME_INFORMATION).map_err(|r| corrupt(format!("$Volume: {r}")))?;
    if info.len() < 12 {
        return Err(corrupt(format!("$Volume information of {} bytes", info.len())));
    }
    Ok(le(info, 10, 2) as u16)
}

const ATTR_VOLUME_INFORMATION: u32 = 0x70;

/// The value of the record's first resident attribute of type `kind`.
fn resident_value(rec: &[u8], kind: u32) -> Result<&[u8], String> {
    let attr = attributes(rec)?
        .into_iter()
        .find(|(k, _)| *k == kind)
        .map(|(_, a)| a)
        .ok_or_else(|| format!("no attribute {kind:#x}"))?;
    if attr[8] != 0 || attr.len() < 24 {
        return Err(format!("attribute {kind:#x} is not resident"));
    }
    let (vlen, voff) = (le(attr, 16, 4) as usize, le(attr, 20, 2) as usize);
    attr.get(voff..voff + vlen).ok_or_else(|| format!("attribute {kind:#x} value outside it"))
}

/// The record's attributes, in order, each as (type, its whole record), every length checked
/// against the bytes in use.
fn attributes(rec: &[u8]) -> Result<Vec<(u32, &[u8])>, String> {
    let in_use = (le(rec, 24, 4) as usize).min(rec.len());
    let mut at = le(rec, 20, 2) as usize;
    let mut out = Vec::new();
    while at + 8 <= in_use {
        let kind = le(rec, at, 4) as u32;
        if kind == ATTR_END {
            break;
        }
        let alen = le(rec, at + 4, 4) as usize;
        if alen < 16 || !alen.is_multiple_of(8) || at + alen > in_use {
            return Err(format!("attribute at {at} of length {alen}"));
        }
        out.push((kind, &rec[at..at + alen]));
        at += alen;
    }
    Ok(out)
}

pub fn map(dev: &dyn ReadAt, len: u64) -> Result<UsedMap, FsError> {
    let vol = Volume::open(dev, len)?;
    let boot = vol.boot.clone();
    let cs = boot.cluster_size;
    let rec6 = vol.record(MFT_RECORD_BITMAP, "$MFT record 6 ($Bitmap)")?;
    let (bitmap_runs, bitmap_size) =
        unnamed_data(&rec6, boot.clusters).map_err(|r| corrupt(format!("$Bitmap: {r}")))?;
    let needed = boot.clusters.div_ceil(8);
    if bitmap_size < needed {
        return Err(corrupt(format!(
            "$Bitmap holds {bitmap_size} bytes, {needed} needed for {} clusters",
            boot.clusters
        )));
    }

    let mut ranges = Vec::new();
    let mut run: Option<u64> = None;
    let mut byte = 0u64;
    while byte < needed {
        let n = READ.min(needed - byte);
        let bits = read_mapped(dev, &bitmap_runs, cs, byte, n, "$Bitmap")?;
        for (i, &v) in bits.iter().enumerate() {
            let first = (byte + i as u64) * 8;
            match v {
                0xFF => {
                    run.get_or_insert(first);
                }
                0x00 => {
                    if let Some(s) = run.take() {
                        ranges.push(s..first);
                    }
                }
                _ => {
                    for bit in 0..8 {
                        let c = first + bit;
                        if v >> bit & 1 == 1 {
                            run.get_or_insert(c);
                        } else if let Some(s) = run.take() {
                            ranges.push(s..c);
                        }
                    }
                }
            }
        }
        byte += n;
    }
    if let Some(s) = run {
        ranges.push(s..needed * 8);
    }
    // Bits past the last cluster are set by mkntfs and mean nothing.
    let mut bytes: Vec<Range<u64>> = ranges
        .into_iter()
        .filter(|r| r.start < boot.clusters)
        .map(|r| r.start * cs..r.end.min(boot.clusters) * cs)
        .collect();
    bytes.push(0..cs);
    bytes.extend(tail(&boot, len));
    Ok(UsedMap { fs: FsKind::Ntfs, method: MapMethod::Allocation, block_size: cs, ranges: normalize(bytes) })
}

/// Beyond the last whole cluster: the sectors that do not fill one and the backup boot sector
/// (at sector `sectors`, normally the partition's last). Kept whole when it is the usual
/// partial cluster; otherwise only the backup's sector and the partition's last sector.
fn tail(boot: &Boot, len: u64) -> Vec<Range<u64>> {
    let end = boot.clusters * boot.cluster_size;
    if len <= end {
        return Vec::new();
    }
    if len - end <= boot.cluster_size + 4096 {
        return vec![end..len];
    }
    let backup = boot.sectors * boot.bytes_per_sector;
    let mut out = vec![len - boot.bytes_per_sector.min(len)..len];
    if backup + boot.bytes_per_sector <= len {
        out.push(backup..backup + boot.bytes_per_sector);
    }
    out
}

/// Undoes the update sequence array of a multi-sector record (MFT `FILE`, `INDX`): the last
/// two bytes of each 512-byte stride must hold the sequence number and get their saved value
/// back. A mismatch is a torn write.
pub fn apply_fixups(rec: &mut [u8]) -> Result<(), String> {
    if rec.len() < STRIDE || !rec.len().is_multiple_of(STRIDE) {
        return Err(format!("record of {} bytes", rec.len()));
    }
    if &rec[0..4] != b"FILE" {
        return Err(format!("signature {:?}, not FILE", String::from_utf8_lossy(&rec[0..4])));
    }
    let usa_ofs = le(rec, 4, 2) as usize;
    let usa_count = le(rec, 6, 2) as usize;
    let strides = rec.len() / STRIDE;
    if !usa_ofs.is_multiple_of(2) || usa_count != strides + 1 || usa_ofs + 2 * usa_count > STRIDE - 2 {
        return Err(format!("update sequence array at {usa_ofs}, {usa_count} entries"));
    }
    let usn = [rec[usa_ofs], rec[usa_ofs + 1]];
    for i in 0..strides {
        let end = (i + 1) * STRIDE - 2;
        if rec[end..end + 2] != usn {
            return Err(format!("torn write: stride {i} does not end with the update sequence number"));
        }
        let saved = usa_ofs + 2 * (i + 1);
        let v = [rec[saved], rec[saved + 1]];
        rec[end..end + 2].copy_from_slice(&v);
    }
    Ok(())
}

/// A run of virtual clusters: where they are (`None`: sparse, reading as zeros).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    pub vcn: u64,
    pub len: u64,
    pub lcn: Option<u64>,
}

/// The runs and data size of the record's unnamed non-resident `$DATA`. An attribute list
/// (extents in other records) is refused rather than half-read.
pub fn unnamed_data(rec: &[u8], clusters: u64) -> Result<(Vec<Run>, u64), String> {
    for (kind, attr) in attributes(rec)? {
        let alen = attr.len();
        if kind == ATTR_LIST {
            return Err("an attribute list (the data runs span several records) is not read yet".into());
        }
        if kind == ATTR_DATA && attr[9] == 0 {
            if attr[8] == 0 {
                return Err("$DATA is resident".into());
            }
            if alen < 64 {
                return Err(format!("non-resident $DATA of {alen} bytes"));
            }
            let lowest = le(attr, 16, 8);
            let highest = le(attr, 24, 8);
            let pairs = le(attr, 32, 2) as usize;
            let data_size = le(attr, 48, 8);
            if lowest != 0 || pairs >= alen {
                return Err(format!("$DATA extent from VCN {lowest}, mapping pairs at {pairs}"));
            }
            let runs = decode_runs(&attr[pairs..], clusters)?;
            let vcns: u64 = runs.iter().map(|r| r.len).sum();
            if vcns != highest.wrapping_add(1) {
                return Err(format!("runs cover {vcns} clusters, the attribute says {}", highest.wrapping_add(1)));
            }
            return Ok((runs, data_size));
        }
    }
    Err("no unnamed $DATA attribute".into())
}

/// Decodes mapping pairs: a header byte (low nibble: bytes of the run length; high nibble:
/// bytes of the signed LCN delta, 0 for a sparse run), ended by a zero header.
pub fn decode_runs(mut p: &[u8], clusters: u64) -> Result<Vec<Run>, String> {
    let mut runs = Vec::new();
    let (mut vcn, mut lcn) = (0u64, 0i64);
    loop {
        let Some(&h) = p.first() else { return Err("mapping pairs end without a terminator".into()) };
        if h == 0 {
            return Ok(runs);
        }
        let (ln, dn) = ((h & 0x0F) as usize, (h >> 4) as usize);
        if ln == 0 || ln > 8 || dn > 8 || p.len() < 1 + ln + dn {
            return Err(format!("run header {h:#04x}"));
        }
        let len = signed(&p[1..1 + ln]);
        if len <= 0 {
            return Err(format!("run of {len} clusters"));
        }
        let len = len as u64;
        let at = if dn == 0 {
            None
        } else {
            lcn = lcn.checked_add(signed(&p[1 + ln..1 + ln + dn])).ok_or("LCN overflow")?;
            if lcn < 0 || (lcn as u64).checked_add(len).is_none_or(|end| end > clusters) {
                return Err(format!("run of {len} clusters at LCN {lcn} outside the {clusters} clusters"));
            }
            Some(lcn as u64)
        };
        runs.push(Run { vcn, len, lcn: at });
        vcn = vcn.checked_add(len).ok_or("VCN overflow")?;
        p = &p[1 + ln + dn..];
    }
}

/// A little-endian integer of 1 to 8 bytes, sign-extended from its top byte.
fn signed(b: &[u8]) -> i64 {
    let v = le(b, 0, b.len());
    let shift = 64 - 8 * b.len() as u32;
    if shift == 64 {
        0
    } else {
        ((v << shift) as i64) >> shift
    }
}

/// `len` bytes at byte `offset` of an attribute's data, through its runs; a sparse or unmapped
/// range is an error (metadata is never sparse).
fn read_mapped(
    dev: &dyn ReadAt,
    runs: &[Run],
    cs: u64,
    offset: u64,
    len: u64,
    what: &'static str,
) -> Result<Vec<u8>, FsError> {
    let mut out = vec![0u8; len as usize];
    let mut done = 0u64;
    while done < len {
        let pos = offset + done;
        let vcn = pos / cs;
        let run = runs
            .iter()
            .find(|r| r.vcn <= vcn && vcn < r.vcn + r.len)
            .ok_or_else(|| corrupt(format!("{what}: byte {pos} is beyond its data runs")))?;
        let lcn = run.lcn.ok_or_else(|| corrupt(format!("{what}: byte {pos} is in a sparse run")))?;
        let within = pos - run.vcn * cs;
        let n = (run.len * cs - within).min(len - done);
        let at = lcn * cs + within;
        dev.read_exact_at(&mut out[done as usize..(done + n) as usize], at).map_err(|source| FsError::Io {
            what,
            offset: at,
            source,
        })?;
        done += n;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boot(bps: u16, spc: u8, sectors: u64, mft_lcn: u64, rec_code: i8) -> Vec<u8> {
        let mut b = vec![0u8; BOOT_LEN];
        b[3..11].copy_from_slice(OEM);
        b[0x0B..0x0D].copy_from_slice(&bps.to_le_bytes());
        b[0x0D] = spc;
        b[0x28..0x30].copy_from_slice(&sectors.to_le_bytes());
        b[0x30..0x38].copy_from_slice(&mft_lcn.to_le_bytes());
        b[0x40] = rec_code as u8;
        b[510] = 0x55;
        b[511] = 0xAA;
        b
    }

    #[test]
    fn boot_geometry_including_large_cluster_codes() {
        let b = Boot::parse(&boot(512, 8, 2047, 4, -10), 1 << 20).unwrap();
        assert_eq!((b.cluster_size, b.clusters, b.record_size), (4096, 255, 1024));
        // 128 KiB clusters: 256 sectors, written as the negative exponent 0xF8.
        let b = Boot::parse(&boot(512, 0xF8, (64 << 20) / 512 - 1, 4, -10), 64 << 20).unwrap();
        assert_eq!((b.cluster_size, b.clusters), (128 << 10, 511));
        assert!(Boot::parse(&boot(512, 3, 2047, 4, -10), 1 << 20).is_err(), "3 sectors per cluster");
        assert!(Boot::parse(&boot(512, 8, 4096, 4, -10), 1 << 20).is_err(), "larger than the partition");
        assert!(Boot::parse(&boot(512, 8, 2047, 0, -10), 1 << 20).is_err(), "$MFT at cluster 0");
        assert!(Boot::parse(&boot(500, 8, 2047, 4, -10), 1 << 20).is_err());
        assert!(Boot::parse(&boot(512, 8, 2047, 4, -40), 1 << 20).is_err());
        assert!(Boot::parse(&[0u8; 512], 1 << 20).is_err());
    }

    #[test]
    fn runs_with_signed_deltas_and_holes() {
        // 0x21: 1 length byte, 2 delta bytes. 16 clusters at 0x1000; hole of 8; 4 clusters 0x100
        // *before* (negative delta -0xF00).
        let p = [0x21, 0x10, 0x00, 0x10, 0x01, 0x08, 0x21, 0x04, 0x00, 0xF1, 0x00];
        let runs = decode_runs(&p, 1 << 20).unwrap();
        assert_eq!(
            runs,
            [
                Run { vcn: 0, len: 16, lcn: Some(0x1000) },
                Run { vcn: 16, len: 8, lcn: None },
                Run { vcn: 24, len: 4, lcn: Some(0x100) }
            ]
        );
        assert!(decode_runs(&[0x21, 0x10, 0x00, 0x10], 1 << 20).is_err(), "no terminator");
        assert!(decode_runs(&[0x21, 0x10, 0x00, 0x10, 0x00], 0x1008).is_err(), "outside the volume");
        assert!(decode_runs(&[0x11, 0x10, 0xF0, 0x00], 1 << 20).is_err(), "negative LCN");
        assert!(decode_runs(&[0x01, 0x00, 0x00], 1 << 20).is_err(), "empty run");
        assert!(decode_runs(&[0x9F, 0x00], 1 << 20).is_err());
    }

    fn record(size: usize) -> Vec<u8> {
        let mut r = vec![0u8; size];
        r[0..4].copy_from_slice(b"FILE");
        r[4..6].copy_from_slice(&48u16.to_le_bytes());
        r[6..8].copy_from_slice(&((size / STRIDE + 1) as u16).to_le_bytes());
        r[48..50].copy_from_slice(&[0x07, 0x00]);
        for i in 0..size / STRIDE {
            let end = (i + 1) * STRIDE - 2;
            r[50 + 2 * i..52 + 2 * i].copy_from_slice(&[0xA0 + i as u8, 0xB0]);
            r[end..end + 2].copy_from_slice(&[0x07, 0x00]);
        }
        r
    }

    #[test]
    fn fixups_restore_each_stride_and_catch_torn_writes() {
        let mut r = record(1024);
        apply_fixups(&mut r).unwrap();
        assert_eq!(&r[510..512], &[0xA0, 0xB0]);
        assert_eq!(&r[1022..1024], &[0xA1, 0xB0]);
        let mut torn = record(1024);
        torn[1022] = 0x08;
        assert!(apply_fixups(&mut torn).unwrap_err().contains("torn"));
        let mut bad = record(1024);
        bad[0..4].copy_from_slice(b"BAAD");
        assert!(apply_fixups(&mut bad).is_err());
    }

    fn with_data(runs: &[u8], highest: u64, data_size: u64) -> Vec<u8> {
        let mut r = vec![0u8; 1024];
        r[20..22].copy_from_slice(&56u16.to_le_bytes());
        let alen = (64 + runs.len()).div_ceil(8) * 8;
        let a = &mut r[56..56 + alen];
        a[0..4].copy_from_slice(&ATTR_DATA.to_le_bytes());
        a[4..8].copy_from_slice(&(alen as u32).to_le_bytes());
        a[8] = 1;
        a[24..32].copy_from_slice(&highest.to_le_bytes());
        a[32..34].copy_from_slice(&64u16.to_le_bytes());
        a[48..56].copy_from_slice(&data_size.to_le_bytes());
        a[64..64 + runs.len()].copy_from_slice(runs);
        r[56 + alen..60 + alen].copy_from_slice(&ATTR_END.to_le_bytes());
        let in_use = (56 + alen + 8) as u32;
        r[24..28].copy_from_slice(&in_use.to_le_bytes());
        r
    }

    #[test]
    fn the_unnamed_data_attribute_and_its_checks() {
        let r = with_data(&[0x11, 0x04, 0x20, 0x00], 3, 4096 * 4);
        let (runs, size) = unnamed_data(&r, 1000).unwrap();
        assert_eq!((runs, size), (vec![Run { vcn: 0, len: 4, lcn: Some(0x20) }], 16384));
        let wrong = with_data(&[0x11, 0x04, 0x20, 0x00], 9, 4096 * 4);
        assert!(unnamed_data(&wrong, 1000).unwrap_err().contains("runs cover"));
        let mut list = with_data(&[0x11, 0x04, 0x20, 0x00], 3, 4096 * 4);
        list[56..60].copy_from_slice(&ATTR_LIST.to_le_bytes());
        assert!(unnamed_data(&list, 1000).unwrap_err().contains("attribute list"));
        let mut overlong = with_data(&[0x11, 0x04, 0x20, 0x00], 3, 4096 * 4);
        overlong[60..64].copy_from_slice(&4000u32.to_le_bytes());
        assert!(unnamed_data(&overlong, 1000).is_err());
    }

    #[test]
    fn the_backup_boot_sector_is_kept() {
        let b = Boot::parse(&boot(512, 8, 2047, 4, -10), 1 << 20).unwrap();
        // 255 clusters of 4 KiB end at 1,044,480; the 4 KiB after hold 7 sectors and the backup.
        assert_eq!(tail(&b, 1 << 20), vec![1_044_480..1 << 20]);
        // A volume much smaller than its partition: only the two places a backup may be.
        let far = tail(&b, 64 << 20);
        assert_eq!(far, vec![(64 << 20) - 512..64 << 20, 2047 * 512..2048 * 512]);
    }
}

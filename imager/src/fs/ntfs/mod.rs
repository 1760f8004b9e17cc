//! NTFS: the used clusters are the set bits of `$Bitmap` (MFT record 6), reached from the boot
//! sector through `$MFT`'s own data runs, plus the tail after the last whole cluster, where the
//! backup boot sector lives, minus the scratch files Windows rewrites at boot (`pagefile.sys`,
//! `hiberfil.sys`, `swapfile.sys`): their clusters are "don't care" except the first 64 KiB,
//! which the image defines as zeros so that a stale hibernation header left on a used disk can
//! never make Windows resume someone else's session.
//!
//! Layouts follow ntfs-3g's `layout.h` (boot sector, MFT record header, attribute records,
//! attribute lists, indexes), its update-sequence fixups (`mst.c`: 512-byte strides whatever the
//! sector size) and runlist decoding (`runlist.c`: signed LCN deltas, a zero-width delta is a
//! sparse run). See `imager/WINDOWS-RESEARCH.md` §1. Nothing here trusts the volume: every offset,
//! length and run is checked against the record or the partition, and any doubt is an error (the
//! capture then stores every non-zero block instead).

mod index;
mod record;
pub mod state;

use std::ops::Range;

use super::{normalize, subtract, FsError, FsKind, MapMethod, Skipped, UsedMap};
use crate::io::{le, ReadAt};
pub use record::Run;
use record::{
    apply_fixups, attribute_list, find, join_extents, read_mapped, read_runs, Extent, ATTR_DATA, ATTR_LIST,
    ATTR_VOLUME_INFORMATION, RECORD_IN_USE, STRIDE,
};

const BOOT_LEN: usize = 512;
const OEM: &[u8; 8] = b"NTFS    ";
const MFT_RECORD_BITMAP: u64 = 6;
/// The root directory: record 5, sequence number 5 (fixed by mkntfs and Windows' format).
const ROOT: u64 = 5 | 5 << 48;
const REFERENCE_RECORD: u64 = 0xFFFF_FFFF_FFFF;
/// Windows 10 1709 and later format clusters up to 2 MiB.
const MAX_CLUSTER: u64 = 2 << 20;
/// The bitmap is read and scanned this much at a time.
const READ: u64 = 1 << 20;
/// Files whose content Windows recreates at boot; their clusters are not captured.
pub const SCRATCH_FILES: [&str; 3] = ["pagefile.sys", "hiberfil.sys", "swapfile.sys"];
/// The head of a scratch file the image defines as zeros (a hibernation header is the first
/// page; 64 KiB covers every page size and ntfs-3g's own 4 KiB check).
pub const SCRATCH_HEAD: u64 = 64 << 10;
/// `$DATA` flags whose clusters do not hold the data as it reads.
const ATTR_COMPRESSED: u16 = 0x0001;
const ATTR_ENCRYPTED: u16 = 0x4000;

pub(super) fn corrupt(reason: impl Into<String>) -> FsError {
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
pub(crate) struct Volume<'a> {
    dev: &'a dyn ReadAt,
    boot: Boot,
    mft_runs: Vec<Run>,
}

/// An attribute's content: in the record, or on clusters.
pub(crate) enum Data {
    Resident(Vec<u8>),
    NonResident(Extent),
}

impl<'a> Volume<'a> {
    pub(crate) fn open(dev: &'a dyn ReadAt, len: u64) -> Result<Volume<'a>, FsError> {
        let mut b = [0u8; BOOT_LEN];
        dev.read_exact_at(&mut b, 0).map_err(|source| FsError::Io { what: "NTFS boot sector", offset: 0, source })?;
        let boot = Boot::parse(&b, len).map_err(|r| corrupt(format!("boot sector: {r}")))?;
        // $MFT's record 0 maps the MFT; on a large or fragmented volume the rest of its runs are
        // in extension records, which the first extent reaches.
        let mut rec0 = vec![0u8; boot.record_size as usize];
        let at = boot.mft_lcn * boot.cluster_size;
        dev.read_exact_at(&mut rec0, at).map_err(|source| FsError::Io { what: "$MFT record 0", offset: at, source })?;
        apply_fixups(&mut rec0, &[b"FILE"]).map_err(|r| corrupt(format!("$MFT record 0: {r}")))?;
        let first = find(&rec0, ATTR_DATA, "")
            .and_then(|a| a.ok_or_else(|| "no unnamed $DATA".to_string()))
            .and_then(|a| a.extent(boot.clusters))
            .map_err(|r| corrupt(format!("$MFT record 0: {r}")))?;
        let mut vol = Volume { dev, boot, mft_runs: first.runs };
        let Data::NonResident(all) = vol.data(&rec0, 0, "$MFT")? else {
            return Err(corrupt("$MFT's data is resident"));
        };
        vol.mft_runs = all.runs;
        Ok(vol)
    }

    /// MFT record `n`, fixups applied.
    fn record(&self, n: u64, what: &'static str) -> Result<Vec<u8>, FsError> {
        let size = self.boot.record_size;
        let mut rec = read_mapped(self.dev, &self.mft_runs, self.boot.cluster_size, n * size, size, what)?;
        apply_fixups(&mut rec, &[b"FILE"]).map_err(|r| corrupt(format!("{what}: {r}")))?;
        Ok(rec)
    }

    /// The base record a directory entry refers to: in use, and of the sequence number the
    /// reference carries (else the entry is stale and the volume inconsistent).
    pub(crate) fn file(&self, reference: u64, what: &'static str) -> Result<Vec<u8>, FsError> {
        let rec = self.record(reference & REFERENCE_RECORD, what)?;
        let seq = (reference >> 48) as u16;
        if le(&rec, 22, 2) as u16 & RECORD_IN_USE == 0 {
            return Err(corrupt(format!("{what}: record {} is not in use", reference & REFERENCE_RECORD)));
        }
        if seq != 0 && le(&rec, 16, 2) as u16 != seq {
            return Err(corrupt(format!(
                "{what}: record {} has sequence {}, the directory says {seq}",
                reference & REFERENCE_RECORD,
                le(&rec, 16, 2)
            )));
        }
        Ok(rec)
    }

    /// The attribute `kind`/`name` of the file whose base record is `rec` (number `n`), its
    /// extents gathered through the attribute list when it has one.
    pub(crate) fn attribute(
        &self,
        rec: &[u8],
        n: u64,
        kind: u32,
        name: &str,
        what: &'static str,
    ) -> Result<Option<Data>, FsError> {
        let bad = |r: String| corrupt(format!("{what}: {r}"));
        let Some(list) = self.attribute_list(rec, what)? else {
            return match find(rec, kind, name).map_err(bad)? {
                None => Ok(None),
                Some(a) if a.resident() => Ok(Some(Data::Resident(a.value().map_err(bad)?.to_vec()))),
                Some(a) => {
                    let e = a.extent(self.boot.clusters).map_err(bad)?;
                    Ok(Some(Data::NonResident(join_extents(vec![e], self.boot.cluster_size).map_err(bad)?)))
                }
            };
        };
        let mut extents = Vec::new();
        for entry in list.iter().filter(|e| e.kind == kind && e.name == name) {
            let at = entry.record & REFERENCE_RECORD;
            let other;
            let holder: &[u8] = if at == n {
                rec
            } else {
                other = self.record(at, what)?;
                &other
            };
            let a = record::attributes(holder)
                .map_err(bad)?
                .into_iter()
                .find(|a| {
                    a.kind == kind
                        && a.name().is_ok_and(|x| x == name)
                        && (a.resident() || le(a.raw, 16, 8) == entry.lowest)
                })
                .ok_or_else(|| bad(format!("the attribute list points to record {at}, which lacks the extent")))?;
            if a.resident() {
                return Ok(Some(Data::Resident(a.value().map_err(bad)?.to_vec())));
            }
            extents.push(a.extent(self.boot.clusters).map_err(bad)?);
        }
        if extents.is_empty() {
            return Ok(None);
        }
        Ok(Some(Data::NonResident(join_extents(extents, self.boot.cluster_size).map_err(bad)?)))
    }

    /// The unnamed `$DATA` of a file.
    pub(crate) fn data(&self, rec: &[u8], n: u64, what: &'static str) -> Result<Data, FsError> {
        self.attribute(rec, n, ATTR_DATA, "", what)?.ok_or_else(|| corrupt(format!("{what}: no unnamed $DATA")))
    }

    fn attribute_list(&self, rec: &[u8], what: &'static str) -> Result<Option<Vec<record::ListEntry>>, FsError> {
        let bad = |r: String| corrupt(format!("{what}: attribute list: {r}"));
        let Some(a) = find(rec, ATTR_LIST, "").map_err(bad)? else { return Ok(None) };
        let value = if a.resident() {
            a.value().map_err(bad)?.to_vec()
        } else {
            let e = a.extent(self.boot.clusters).map_err(bad)?;
            read_mapped(self.dev, &e.runs, self.boot.cluster_size, 0, e.data_size, what)?
        };
        attribute_list(&value).map(Some).map_err(bad)
    }

    /// The first `max` bytes of a file's data: sparse runs and bytes past the initialized size
    /// read as zeros, as Windows reads them.
    pub(crate) fn read(&self, data: &Data, max: u64, what: &'static str) -> Result<Vec<u8>, FsError> {
        match data {
            Data::Resident(v) => Ok(v[..v.len().min(max as usize)].to_vec()),
            Data::NonResident(e) => {
                if e.flags & (ATTR_COMPRESSED | ATTR_ENCRYPTED) != 0 {
                    return Err(corrupt(format!("{what} is compressed or encrypted")));
                }
                let n = e.data_size.min(max);
                let mut out = read_runs(self.dev, &e.runs, self.boot.cluster_size, 0, n, what, true)?;
                if e.initialized < n {
                    out[e.initialized as usize..].fill(0);
                }
                Ok(out)
            }
        }
    }

    /// A file by its path from the root (`["Windows", "Setup", "State", "State.ini"]`),
    /// names compared as Windows does, case-insensitively.
    pub(crate) fn lookup(&self, path: &[&str]) -> Result<Option<(u64, Vec<u8>)>, FsError> {
        let mut at = ROOT;
        let mut rec = self.file(ROOT, "the root directory")?;
        for name in path {
            match index::find(self, &rec, at & REFERENCE_RECORD, name)? {
                None => return Ok(None),
                Some(r) => {
                    at = r;
                    rec = self.file(r, "a directory entry")?;
                }
            }
        }
        Ok(Some((at & REFERENCE_RECORD, rec)))
    }
}

/// Whether the volume holds `path` (names compared as Windows does).
pub fn exists(dev: &dyn ReadAt, len: u64, path: &[&str]) -> Result<bool, FsError> {
    Ok(Volume::open(dev, len)?.lookup(path)?.is_some())
}

/// `$Volume`'s `VOLUME_INFORMATION` flags (MFT record 3).
pub const VOLUME_IS_DIRTY: u16 = 0x0001;
pub const VOLUME_CHKDSK_UNDERWAY: u16 = 0x4000;

/// The volume's flags, from `$Volume` (MFT record 3, resident attribute 0x70).
pub fn volume_flags(dev: &dyn ReadAt, len: u64) -> Result<u16, FsError> {
    let vol = Volume::open(dev, len)?;
    let rec = vol.record(3, "$MFT record 3 ($Volume)")?;
    let info = match vol.attribute(&rec, 3, ATTR_VOLUME_INFORMATION, "", "$Volume")? {
        Some(Data::Resident(v)) => v,
        _ => return Err(corrupt("$Volume: no resident volume information")),
    };
    if info.len() < 12 {
        return Err(corrupt(format!("$Volume information of {} bytes", info.len())));
    }
    Ok(le(&info, 10, 2) as u16)
}

pub fn map(dev: &dyn ReadAt, len: u64) -> Result<UsedMap, FsError> {
    let vol = Volume::open(dev, len)?;
    let boot = vol.boot.clone();
    let cs = boot.cluster_size;
    let rec6 = vol.record(MFT_RECORD_BITMAP, "$MFT record 6 ($Bitmap)")?;
    let Data::NonResident(bitmap) = vol.data(&rec6, MFT_RECORD_BITMAP, "$Bitmap")? else {
        return Err(corrupt("$Bitmap is resident"));
    };
    let needed = boot.clusters.div_ceil(8);
    if bitmap.data_size < needed {
        return Err(corrupt(format!(
            "$Bitmap holds {} bytes, {needed} needed for {} clusters",
            bitmap.data_size, boot.clusters
        )));
    }

    let mut ranges = Vec::new();
    let mut run: Option<u64> = None;
    let mut byte = 0u64;
    while byte < needed {
        let n = READ.min(needed - byte);
        let bits = read_mapped(dev, &bitmap.runs, cs, byte, n, "$Bitmap")?;
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
    let mut map = UsedMap::new(FsKind::Ntfs, MapMethod::Allocation, cs, normalize(bytes));
    leave_out_scratch(&vol, &mut map);
    Ok(map)
}

/// Takes the scratch files' clusters out of the map: their head becomes zeros, the rest is not
/// stored. A file whose clusters cannot be read with certainty is stored whole, and the map
/// says why.
fn leave_out_scratch(vol: &Volume, map: &mut UsedMap) {
    let cs = vol.boot.cluster_size;
    let head = SCRATCH_HEAD.div_ceil(cs);
    let (mut zeros, mut skip) = (Vec::new(), Vec::new());
    for name in SCRATCH_FILES {
        let runs = match scratch_runs(vol, name) {
            Ok(Some(runs)) => runs,
            Ok(None) => continue,
            Err(e) => {
                map.notes.push(format!("{name} stored whole: {e}"));
                continue;
            }
        };
        let (mut z, mut s) = (Vec::new(), Vec::new());
        for r in &runs {
            let Some(lcn) = r.lcn else { continue };
            let split = head.clamp(r.vcn, r.vcn + r.len);
            z.push(lcn * cs..(lcn + split - r.vcn) * cs);
            s.push((lcn + split - r.vcn) * cs..(lcn + r.len) * cs);
        }
        let (z, s) = (normalize(z), normalize(s));
        let bytes = |v: &[Range<u64>]| v.iter().map(|r| r.end - r.start).sum::<u64>();
        map.skipped.push(Skipped { name: name.to_string(), bytes: bytes(&s), zeroed: bytes(&z) });
        zeros.extend(z);
        skip.extend(s);
    }
    let (zeros, skip) = (normalize(zeros), normalize(skip));
    let gone = normalize(zeros.iter().chain(&skip).cloned().collect());
    map.ranges = subtract(&map.ranges, &gone);
    map.zeros = zeros;
}

/// The runs of a scratch file in the root directory, `None` when there is none or its data
/// lives in its MFT record.
fn scratch_runs(vol: &Volume, name: &str) -> Result<Option<Vec<Run>>, FsError> {
    let Some((n, rec)) = vol.lookup(&[name])? else { return Ok(None) };
    if le(&rec, 22, 2) as u16 & record::RECORD_IS_DIRECTORY != 0 {
        return Err(corrupt(format!("{name} is a directory")));
    }
    match vol.data(&rec, n, "a scratch file")? {
        Data::Resident(_) => Ok(None),
        Data::NonResident(e) if e.flags & (ATTR_COMPRESSED | ATTR_ENCRYPTED) != 0 => {
            Err(corrupt(format!("{name} is compressed or encrypted")))
        }
        Data::NonResident(e) => Ok(Some(e.runs)),
    }
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
    fn the_backup_boot_sector_is_kept() {
        let b = Boot::parse(&boot(512, 8, 2047, 4, -10), 1 << 20).unwrap();
        // 255 clusters of 4 KiB end at 1,044,480; the 4 KiB after hold 7 sectors and the backup.
        assert_eq!(tail(&b, 1 << 20), vec![1_044_480..1 << 20]);
        // A volume much smaller than its partition: only the two places a backup may be.
        let far = tail(&b, 64 << 20);
        assert_eq!(far, vec![(64 << 20) - 512..64 << 20, 2047 * 512..2048 * 512]);
    }
}

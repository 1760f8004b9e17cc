//! The manifest: what an image holds and where every chunk goes. Its canonical encoding is
//! compact JSON with fields in the order declared here; the sha256 of those bytes is the
//! image's identity. `FORMAT.md` is the reference for humans.

use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::format::table::TableKind;
use crate::fs::{FsKind, MapMethod};

pub const FORMAT_NAME: &str = "parc-image";
pub const FORMAT_VERSION: u32 = 2;
/// Version 1 lacked explicit zero ranges and gaps; its zeros are derived (see
/// [`Manifest::defined_zeros`]), so a version 1 image still deploys truthfully.
pub const OLDEST_READABLE_VERSION: u32 = 1;
/// Manifests larger than this are refused before parsing: 60 GB of used data in 1 MiB
/// chunks is about 7 MB of JSON; 256 MiB leaves a wide margin without letting a hostile
/// server exhaust an agent's memory.
pub const MAX_MANIFEST_BYTES: u64 = 256 << 20;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: String,
    pub version: u32,
    /// Chunks are cut on a grid of this many bytes, aligned to the start of the disk.
    pub chunk_size: u64,
    pub disk: DiskInfo,
    pub table: TableKind,
    /// Bytes before the first partition: MBR, GPT header and entries, boot loader gap.
    pub boot_area: Region,
    /// GPT only: the backup entries and header at the end of the disk.
    pub backup_area: Option<Region>,
    pub partitions: Vec<Partition>,
    /// Bytes between partitions (MBR extended/logical areas, alignment gaps): defined
    /// content, scanned as non-zero blocks plus zero ranges. Version 2 and later.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gaps: Vec<Region>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskInfo {
    pub size: u64,
    pub logical_sector_size: u32,
}

/// A byte range of the disk that is not a partition (boot area, GPT backup).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Region {
    pub start: u64,
    pub length: u64,
    pub chunks: Vec<Chunk>,
    /// Ranges the image defines as zeros (`[offset, length]`, absolute, sorted, merged).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub zeros: Vec<[u64; 2]>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Partition {
    /// 1-based number as the partition table gives it (0 for a disk without a table).
    pub number: u32,
    pub start: u64,
    pub length: u64,
    /// GPT type GUID (lowercase, dashed) or MBR type byte (`0x83`).
    pub type_id: String,
    /// GPT partition GUID, empty for MBR.
    pub uuid: String,
    /// GPT partition name, empty for MBR.
    pub name: String,
    pub fs: FsKind,
    pub map: MapMethod,
    /// The file system's allocation unit, in bytes.
    pub block_size: u64,
    pub chunks: Vec<Chunk>,
    /// Ranges the image defines as zeros; empty for an allocation map, whose free space is
    /// "don't care".
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub zeros: Vec<[u64; 2]>,
    /// Bytes the file system allocates to files the image leaves out (NTFS pagefile.sys,
    /// hiberfil.sys, swapfile.sys): they need room on a smaller disk although no chunk holds
    /// them.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub scratch_bytes: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A chunk: the concatenation of the used byte ranges `at` (absolute disk offsets, in order),
/// all inside one cell of the chunk grid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Chunk {
    pub sha256: Digest,
    pub at: Vec<[u64; 2]>,
}

impl Chunk {
    pub fn len(&self) -> u64 {
        self.at.iter().map(|[_, l]| l).sum()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Disk offset of the first byte, used to name the chunk in messages.
    pub fn offset(&self) -> u64 {
        self.at.first().map_or(0, |[o, _]| *o)
    }
    pub fn ranges(&self) -> impl Iterator<Item = Range<u64>> + '_ {
        self.at.iter().map(|&[o, l]| o..o + l)
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    #[error("manifest is {size} bytes, more than the {max} bytes a manifest may have")]
    TooLarge { size: u64, max: u64 },
    #[error("manifest is not valid (truncated or garbled?): {reason}")]
    Malformed { reason: String },
    #[error("not a parc image manifest (format is {found:?}, expected {FORMAT_NAME:?})")]
    WrongFormat { found: String },
    #[error(
        "manifest has format version {found}; this parc reads versions {OLDEST_READABLE_VERSION} to {FORMAT_VERSION}: \
         upgrade parc"
    )]
    UnknownVersion { found: u32 },
    #[error("manifest is inconsistent: {reason}")]
    Invalid { reason: String },
    #[error("manifest bytes are not in canonical form; it was not written by parc or was altered")]
    NotCanonical,
    #[error(
        "manifest content has sha256 {actual}, but it was asked for as {expected}: the stored manifest is corrupt"
    )]
    DigestMismatch { expected: Digest, actual: Digest },
}

/// Just enough to tell the version before parsing the rest, so an image from a newer parc
/// gets "upgrade parc" instead of a confusing field error.
#[derive(Deserialize)]
struct Header {
    format: Option<String>,
    version: Option<u32>,
}

impl Manifest {
    /// The canonical bytes.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("manifest serialization cannot fail")
    }

    pub fn digest(&self) -> Digest {
        Digest::of(&self.encode())
    }

    /// Parses and validates. When `expected` is given the bytes must hash to it.
    pub fn decode(bytes: &[u8], expected: Option<Digest>) -> Result<Manifest, ManifestError> {
        if bytes.len() as u64 > MAX_MANIFEST_BYTES {
            return Err(ManifestError::TooLarge { size: bytes.len() as u64, max: MAX_MANIFEST_BYTES });
        }
        if let Some(expected) = expected {
            let actual = Digest::of(bytes);
            if actual != expected {
                return Err(ManifestError::DigestMismatch { expected, actual });
            }
        }
        let header: Header =
            serde_json::from_slice(bytes).map_err(|e| ManifestError::Malformed { reason: e.to_string() })?;
        match header.format.as_deref() {
            Some(FORMAT_NAME) => {}
            other => return Err(ManifestError::WrongFormat { found: other.unwrap_or("").to_string() }),
        }
        match header.version {
            Some(v) if (OLDEST_READABLE_VERSION..=FORMAT_VERSION).contains(&v) => {}
            Some(found) => return Err(ManifestError::UnknownVersion { found }),
            None => return Err(ManifestError::Malformed { reason: "missing field `version`".into() }),
        }
        let m: Manifest =
            serde_json::from_slice(bytes).map_err(|e| ManifestError::Malformed { reason: e.to_string() })?;
        if m.encode() != bytes {
            return Err(ManifestError::NotCanonical);
        }
        m.validate()?;
        Ok(m)
    }

    /// Every region and partition in order: boot area, partitions, gaps, backup area.
    pub fn all_chunks(&self) -> impl Iterator<Item = &Chunk> {
        self.boot_area
            .chunks
            .iter()
            .chain(self.partitions.iter().flat_map(|p| p.chunks.iter()))
            .chain(self.gaps.iter().flat_map(|g| g.chunks.iter()))
            .chain(self.backup_area.iter().flat_map(|r| r.chunks.iter()))
    }

    /// Every byte range the image defines as zeros, sorted and merged. Version 2 lists them;
    /// version 1 meant them without listing: the boot area and `nonzero`-mapped partitions
    /// minus their chunks (v1 recorded nothing between partitions).
    pub fn defined_zeros(&self) -> Vec<Range<u64>> {
        let listed = |z: &[[u64; 2]]| z.iter().map(|&[o, l]| o..o + l).collect::<Vec<_>>();
        let mut out = Vec::new();
        if self.version >= 2 {
            out.extend(listed(&self.boot_area.zeros));
            for p in &self.partitions {
                out.extend(listed(&p.zeros));
            }
            for g in &self.gaps {
                out.extend(listed(&g.zeros));
            }
            if let Some(b) = &self.backup_area {
                out.extend(listed(&b.zeros));
            }
        } else {
            let b = &self.boot_area;
            out.extend(uncovered(b.start..b.start + b.length, &b.chunks));
            for p in self.partitions.iter().filter(|p| p.map == MapMethod::Nonzero) {
                out.extend(uncovered(p.start..p.start + p.length, &p.chunks));
            }
        }
        crate::fs::normalize(out)
    }

    /// Bytes of data the image holds (sum of chunk lengths).
    pub fn used_bytes(&self) -> u64 {
        self.all_chunks().map(Chunk::len).sum()
    }

    /// The smallest disk this image fits on: every partition must fit, and a GPT needs room
    /// for its backup after the last partition.
    pub fn min_target_size(&self) -> u64 {
        let part_end = self.partitions.iter().map(|p| p.start + p.length).max().unwrap_or(0);
        let data_end = self
            .boot_area
            .chunks
            .iter()
            .chain(self.partitions.iter().flat_map(|p| p.chunks.iter()))
            .chain(self.gaps.iter().flat_map(|g| g.chunks.iter()))
            .flat_map(|c| c.ranges())
            .map(|r| r.end)
            .max()
            .unwrap_or(0);
        let backup = self.backup_area.as_ref().map_or(0, |b| b.length);
        part_end.max(data_end) + backup
    }

    /// Structural checks a hostile or damaged manifest must not get past: everything inside
    /// the disk and its region, chunks non-empty and within one grid cell, no two chunks
    /// writing the same byte.
    pub fn validate(&self) -> Result<(), ManifestError> {
        let bad = |reason: String| Err(ManifestError::Invalid { reason });
        if self.format != FORMAT_NAME {
            return Err(ManifestError::WrongFormat { found: self.format.clone() });
        }
        if !self.chunk_size.is_power_of_two() || !(4096..=(64 << 20)).contains(&self.chunk_size) {
            return bad(format!("chunk_size {} is not a power of two between 4 KiB and 64 MiB", self.chunk_size));
        }
        let ss = self.disk.logical_sector_size;
        if !matches!(ss, 512 | 1024 | 2048 | 4096) {
            return bad(format!("logical sector size {ss} is not 512, 1024, 2048 or 4096"));
        }
        let size = self.disk.size;
        let mut all: Vec<(u64, u64)> = Vec::new();
        if self.version < 2
            && (!self.gaps.is_empty()
                || !self.boot_area.zeros.is_empty()
                || self.partitions.iter().any(|p| !p.zeros.is_empty())
                || self.backup_area.as_ref().is_some_and(|b| !b.zeros.is_empty()))
        {
            return bad(format!("version {} manifest lists zero ranges or gaps, which version 2 added", self.version));
        }
        let mut check_region =
            |what: &str, start: u64, length: u64, chunks: &[Chunk], zeros: &[[u64; 2]]| -> Result<(), ManifestError> {
                let end = start.checked_add(length).filter(|&e| e <= size).ok_or_else(|| ManifestError::Invalid {
                    reason: format!("{what} [{start}, +{length}) extends past the end of the {size}-byte disk"),
                })?;
                for c in chunks {
                    if c.at.is_empty() {
                        return bad(format!("{what}: chunk {} has no ranges", c.sha256.short()));
                    }
                    let cell = c.at[0][0] / self.chunk_size;
                    for &[o, l] in &c.at {
                        let e = o.saturating_add(l);
                        if l == 0 || o < start || e > end {
                            return bad(format!(
                                "{what}: chunk {} range [{o}, +{l}) is empty or outside [{start}, {end})",
                                c.sha256.short()
                            ));
                        }
                        if o / self.chunk_size != cell || (e - 1) / self.chunk_size != cell {
                            return bad(format!("{what}: chunk {} spans more than one grid cell", c.sha256.short()));
                        }
                        all.push((o, e));
                    }
                }
                for &[o, l] in zeros {
                    let e = o.saturating_add(l);
                    if l == 0 || o < start || e > end {
                        return bad(format!("{what}: zero range [{o}, +{l}) is empty or outside [{start}, {end})"));
                    }
                    all.push((o, e));
                }
                Ok(())
            };
        let b = &self.boot_area;
        check_region("boot area", b.start, b.length, &b.chunks, &b.zeros)?;
        if let Some(b) = &self.backup_area {
            check_region("backup area", b.start, b.length, &b.chunks, &b.zeros)?;
        }
        for p in &self.partitions {
            check_region(&format!("partition {}", p.number), p.start, p.length, &p.chunks, &p.zeros)?;
        }
        let mut regions: Vec<(u64, u64)> = self.partitions.iter().map(|p| (p.start, p.start + p.length)).collect();
        regions.push((b.start, b.start + b.length));
        regions.extend(self.backup_area.iter().map(|b| (b.start, b.start + b.length)));
        for (i, g) in self.gaps.iter().enumerate() {
            check_region(&format!("gap {}", i + 1), g.start, g.length, &g.chunks, &g.zeros)?;
            if let Some(&(s, e)) = regions.iter().find(|&&(s, e)| s < g.start + g.length && g.start < e) {
                return bad(format!("gap [{}, +{}) overlaps the region [{s}, {e})", g.start, g.length));
            }
        }
        all.sort_unstable();
        if let Some(w) = all.windows(2).find(|w| w[1].0 < w[0].1) {
            return bad(format!("two chunks or zero ranges both define bytes [{}, {})", w[1].0, w[0].1.min(w[1].1)));
        }
        Ok(())
    }
}

/// The parts of `region` no chunk covers.
fn uncovered(region: Range<u64>, chunks: &[Chunk]) -> Vec<Range<u64>> {
    crate::fs::complement(&crate::fs::normalize(chunks.iter().flat_map(|c| c.ranges()).collect()), region)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn sample() -> Manifest {
        let c = |data: &[u8], at: Vec<[u64; 2]>| Chunk { sha256: Digest::of(data), at };
        Manifest {
            format: FORMAT_NAME.into(),
            version: FORMAT_VERSION,
            chunk_size: 1 << 20,
            disk: DiskInfo { size: 8 << 20, logical_sector_size: 512 },
            table: TableKind::Gpt,
            boot_area: Region {
                start: 0,
                length: 1 << 20,
                chunks: vec![c(b"mbr", vec![[0, 4096]])],
                zeros: vec![[4096, (1 << 20) - 4096]],
            },
            backup_area: Some(Region { start: (8 << 20) - 16896, length: 16896, chunks: vec![], zeros: vec![] }),
            partitions: vec![Partition {
                number: 1,
                start: 1 << 20,
                length: 6 << 20,
                type_id: "0fc63daf-8483-4772-8e79-3d69d8477de4".into(),
                uuid: String::new(),
                name: "root".into(),
                fs: FsKind::Ext4,
                map: MapMethod::Allocation,
                block_size: 4096,
                chunks: vec![c(b"a", vec![[1 << 20, 8192], [(1 << 20) + 16384, 4096]]), c(b"b", vec![[2 << 20, 4096]])],
                zeros: vec![],
                scratch_bytes: 0,
            }],
            gaps: vec![Region {
                start: 7 << 20,
                length: (1 << 20) - 16896,
                chunks: vec![c(b"gap", vec![[7 << 20, 4096]])],
                zeros: vec![[(7 << 20) + 4096, 8192]],
            }],
        }
    }

    #[test]
    fn zeros_are_listed_in_v2_and_derived_in_v1() {
        let m = sample();
        let bytes = m.encode();
        let back = Manifest::decode(&bytes, None).unwrap();
        assert_eq!(back.defined_zeros(), vec![4096..1 << 20, (7 << 20) + 4096..(7 << 20) + 12288]);
        // A version 1 manifest as an older parc wrote it: no zeros, no gaps fields; the boot
        // area and nonzero-mapped partitions mean zeros wherever no chunk is.
        let mut v1 = sample();
        v1.version = 1;
        v1.gaps.clear();
        v1.boot_area.zeros.clear();
        v1.partitions[0].map = MapMethod::Nonzero;
        let text = String::from_utf8(v1.encode()).unwrap();
        assert!(!text.contains("zeros") && !text.contains("gaps"), "{text}");
        let v1 = Manifest::decode(text.as_bytes(), None).unwrap();
        let z = v1.defined_zeros();
        assert_eq!(z[0], 4096..1 << 20, "boot area");
        assert_eq!(z[1], (1 << 20) + 8192..(1 << 20) + 16384, "between the pieces of a chunk");
        assert_eq!(z.last().unwrap(), &((2 << 20) + 4096..7 << 20));
        // v1 with v2 fields is not something any parc wrote.
        let mut bad = sample();
        bad.version = 1;
        assert!(bad.validate().unwrap_err().to_string().contains("version 2 added"));
    }

    #[test]
    fn refuses_zero_ranges_over_chunks_or_outside_their_region() {
        let mut m = sample();
        m.boot_area.zeros = vec![[0, 8192]];
        assert!(m.validate().unwrap_err().to_string().contains("both define"), "zero over the MBR chunk");
        let mut m = sample();
        m.gaps[0].zeros = vec![[(7 << 20) - 4096, 8192]];
        assert!(m.validate().unwrap_err().to_string().contains("outside"));
        let mut m = sample();
        m.gaps[0].start = 6 << 20;
        assert!(m.validate().is_err(), "gap over a partition");
    }

    #[test]
    fn round_trip_is_canonical() {
        let m = sample();
        let bytes = m.encode();
        let back = Manifest::decode(&bytes, Some(Digest::of(&bytes))).unwrap();
        assert_eq!(back, m);
        assert_eq!(back.encode(), bytes);
        assert_eq!(m.used_bytes(), 4096 + 12288 + 4096 + 4096);
    }

    #[test]
    fn refuses_truncated_garbled_and_foreign() {
        let bytes = sample().encode();
        for cut in [0, 1, bytes.len() / 2, bytes.len() - 1] {
            assert!(matches!(Manifest::decode(&bytes[..cut], None), Err(ManifestError::Malformed { .. })), "cut {cut}");
        }
        let mut pretty = serde_json::to_vec_pretty(&sample()).unwrap();
        assert!(matches!(Manifest::decode(&pretty, None), Err(ManifestError::NotCanonical)));
        pretty.truncate(0);
        let v3 = String::from_utf8(bytes.clone()).unwrap().replace("\"version\":2", "\"version\":3");
        assert!(matches!(Manifest::decode(v3.as_bytes(), None), Err(ManifestError::UnknownVersion { found: 3 })));
        assert!(matches!(Manifest::decode(br#"{"format":"casync"}"#, None), Err(ManifestError::WrongFormat { .. })));
        let other = Digest::of(b"x");
        assert!(matches!(Manifest::decode(&bytes, Some(other)), Err(ManifestError::DigestMismatch { .. })));
    }

    #[test]
    fn refuses_chunks_outside_disk_or_overlapping() {
        let mut m = sample();
        m.partitions[0].chunks[1].at = vec![[7 << 20, 4096]];
        assert!(matches!(m.validate(), Err(ManifestError::Invalid { .. })));
        let mut m = sample();
        m.partitions[0].chunks[1].at = vec![[(1 << 20) + 4096, 4096]];
        let err = m.validate().unwrap_err().to_string();
        assert!(err.contains("two chunks"), "{err}");
        let mut m = sample();
        m.partitions[0].chunks[1].at = vec![[(2 << 20) - 4096, 8192]];
        assert!(m.validate().unwrap_err().to_string().contains("grid cell"));
        let mut m = sample();
        m.partitions[0].length = u64::MAX;
        assert!(m.validate().is_err());
    }
}

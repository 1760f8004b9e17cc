//! MFT records and what they hold: update-sequence fixups, the attribute walk, runlists, and
//! reading an attribute's bytes through its runs. Pure over `ReadAt`; every offset and length
//! is checked against the record or the volume (`imager/WINDOWS-RESEARCH.md` §1.2–1.4).

use super::{corrupt, FsError};
use crate::io::{le, ReadAt};

/// Fixup strides: `NTFS_BLOCK_SIZE`, whatever the sector size.
pub(super) const STRIDE: usize = 512;
pub(super) const ATTR_LIST: u32 = 0x20;
pub(super) const ATTR_VOLUME_INFORMATION: u32 = 0x70;
pub(super) const ATTR_DATA: u32 = 0x80;
pub(super) const ATTR_INDEX_ROOT: u32 = 0x90;
pub(super) const ATTR_INDEX_ALLOCATION: u32 = 0xA0;
pub(super) const ATTR_BITMAP: u32 = 0xB0;
const ATTR_END: u32 = 0xFFFF_FFFF;
/// `MFT_RECORD` flags.
pub(super) const RECORD_IN_USE: u16 = 0x0001;
pub(super) const RECORD_IS_DIRECTORY: u16 = 0x0002;

/// Undoes the update sequence array of a multi-sector structure (MFT `FILE`, index `INDX`, log
/// `RSTR`): the last two bytes of each 512-byte stride must hold the sequence number and get
/// their saved value back. A mismatch is a torn write.
pub fn apply_fixups(rec: &mut [u8], magic: &[&[u8; 4]]) -> Result<(), String> {
    if rec.len() < STRIDE || !rec.len().is_multiple_of(STRIDE) {
        return Err(format!("record of {} bytes", rec.len()));
    }
    if !magic.iter().any(|m| rec[0..4] == m[..]) {
        let wanted: Vec<_> = magic.iter().map(|m| String::from_utf8_lossy(&m[..]).into_owned()).collect();
        return Err(format!("signature {:?}, not {}", String::from_utf8_lossy(&rec[0..4]), wanted.join(" or ")));
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

/// One attribute record inside an MFT record.
#[derive(Debug, Clone, Copy)]
pub struct Attr<'a> {
    pub kind: u32,
    /// The whole attribute record, its length checked.
    pub raw: &'a [u8],
}

impl<'a> Attr<'a> {
    pub fn resident(&self) -> bool {
        self.raw[8] == 0
    }

    /// The attribute's name (`$I30` for directory indexes; empty for the unnamed `$DATA`).
    pub fn name(&self) -> Result<String, String> {
        let n = self.raw[9] as usize;
        let at = le(self.raw, 10, 2) as usize;
        let bytes = self.raw.get(at..at + 2 * n).ok_or("attribute name outside the attribute")?;
        Ok(utf16(bytes))
    }

    /// The value of a resident attribute.
    pub fn value(&self) -> Result<&'a [u8], String> {
        if !self.resident() || self.raw.len() < 24 {
            return Err(format!("attribute {:#x} is not resident", self.kind));
        }
        let (vlen, voff) = (le(self.raw, 16, 4) as usize, le(self.raw, 20, 2) as usize);
        self.raw.get(voff..voff + vlen).ok_or_else(|| format!("attribute {:#x} value outside it", self.kind))
    }

    /// The header and runs of one extent of a non-resident attribute.
    pub fn extent(&self, clusters: u64) -> Result<Extent, String> {
        let a = self.raw;
        if self.resident() {
            return Err(format!("attribute {:#x} is resident", self.kind));
        }
        if a.len() < 64 {
            return Err(format!("non-resident attribute {:#x} of {} bytes", self.kind, a.len()));
        }
        let lowest = le(a, 16, 8);
        let highest = le(a, 24, 8);
        let pairs = le(a, 32, 2) as usize;
        if pairs >= a.len() {
            return Err(format!("mapping pairs at {pairs} of a {}-byte attribute", a.len()));
        }
        let runs = decode_runs(&a[pairs..], lowest, clusters)?;
        let vcns: u64 = runs.iter().map(|r| r.len).sum();
        // An extent may map nothing (highest = lowest - 1), as mkntfs writes for empty files.
        if vcns != highest.wrapping_add(1).wrapping_sub(lowest) {
            return Err(format!(
                "runs cover {vcns} clusters, the attribute says {}",
                highest.wrapping_add(1).wrapping_sub(lowest)
            ));
        }
        Ok(Extent {
            lowest,
            runs,
            flags: le(a, 12, 2) as u16,
            allocated: le(a, 40, 8),
            data_size: le(a, 48, 8),
            initialized: le(a, 56, 8),
        })
    }
}

/// A non-resident attribute's extent. Sizes are meaningful only in the extent at VCN 0.
#[derive(Debug, Clone)]
pub struct Extent {
    pub lowest: u64,
    pub runs: Vec<Run>,
    pub flags: u16,
    pub allocated: u64,
    pub data_size: u64,
    pub initialized: u64,
}

/// The record's attributes, in order, every length checked against the bytes in use.
pub fn attributes(rec: &[u8]) -> Result<Vec<Attr<'_>>, String> {
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
        out.push(Attr { kind, raw: &rec[at..at + alen] });
        at += alen;
    }
    Ok(out)
}

/// The first attribute of `kind` named `name` in this record.
pub fn find<'a>(rec: &'a [u8], kind: u32, name: &str) -> Result<Option<Attr<'a>>, String> {
    for a in attributes(rec)? {
        if a.kind == kind && a.name()? == name {
            return Ok(Some(a));
        }
    }
    Ok(None)
}

/// Where an attribute list entry says an extent of an attribute lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListEntry {
    pub kind: u32,
    pub name: String,
    pub lowest: u64,
    pub record: u64,
}

/// Decodes an `$ATTRIBUTE_LIST` value: entries of type, length, name, lowest VCN and the MFT
/// reference of the record holding that extent.
pub fn attribute_list(v: &[u8]) -> Result<Vec<ListEntry>, String> {
    let mut out = Vec::new();
    let mut at = 0usize;
    while at + 26 <= v.len() {
        let kind = le(v, at, 4) as u32;
        let len = le(v, at + 4, 2) as usize;
        if len < 26 || at + len > v.len() {
            return Err(format!("attribute list entry at {at} of length {len}"));
        }
        let (nlen, noff) = (v[at + 6] as usize, v[at + 7] as usize);
        let name = v
            .get(at + noff..at + noff + 2 * nlen)
            .filter(|_| noff + 2 * nlen <= len)
            .ok_or_else(|| format!("attribute list entry at {at}: name outside the entry"))?;
        out.push(ListEntry { kind, name: utf16(name), lowest: le(v, at + 8, 8), record: le(v, at + 16, 8) });
        at += len;
    }
    Ok(out)
}

/// A run of virtual clusters: where they are (`None`: sparse, reading as zeros).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    pub vcn: u64,
    pub len: u64,
    pub lcn: Option<u64>,
}

/// Decodes mapping pairs starting at `vcn`: a header byte (low nibble: bytes of the run length;
/// high nibble: bytes of the signed LCN delta, 0 for a sparse run), ended by a zero header.
/// Deltas start from LCN 0 in every extent.
pub fn decode_runs(mut p: &[u8], mut vcn: u64, clusters: u64) -> Result<Vec<Run>, String> {
    let mut runs = Vec::new();
    let mut lcn = 0i64;
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

/// Joins extents (in any order) into one runlist, checking they follow each other from VCN 0
/// and cover the allocation the first extent states.
pub fn join_extents(mut extents: Vec<Extent>, cs: u64) -> Result<Extent, String> {
    extents.sort_by_key(|e| e.lowest);
    let mut it = extents.into_iter();
    let mut all = it.next().ok_or("no extent")?;
    if all.lowest != 0 {
        return Err(format!("the first extent starts at VCN {}", all.lowest));
    }
    for e in it {
        let end = all.runs.last().map_or(0, |r| r.vcn + r.len);
        if e.lowest != end {
            return Err(format!("an extent starts at VCN {} where the previous ends at {end}", e.lowest));
        }
        all.runs.extend(e.runs);
    }
    let vcns = all.runs.last().map_or(0, |r| r.vcn + r.len);
    if vcns * cs != all.allocated {
        return Err(format!("runs cover {vcns} clusters of {cs} bytes, the allocation is {} bytes", all.allocated));
    }
    if all.data_size > all.allocated || all.initialized > all.data_size {
        return Err(format!(
            "sizes: {} allocated, {} data, {} initialized",
            all.allocated, all.data_size, all.initialized
        ));
    }
    Ok(all)
}

/// `len` bytes at byte `offset` of an attribute's data, through its runs; a sparse or unmapped
/// range is an error (metadata is never sparse).
pub fn read_mapped(
    dev: &dyn ReadAt,
    runs: &[Run],
    cs: u64,
    offset: u64,
    len: u64,
    what: &'static str,
) -> Result<Vec<u8>, FsError> {
    read_runs(dev, runs, cs, offset, len, what, false)
}

/// Like [`read_mapped`]; with `holes`, sparse runs read as zeros (file contents).
pub fn read_runs(
    dev: &dyn ReadAt,
    runs: &[Run],
    cs: u64,
    offset: u64,
    len: u64,
    what: &'static str,
    holes: bool,
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
        let within = pos - run.vcn * cs;
        let n = (run.len * cs - within).min(len - done);
        match run.lcn {
            Some(lcn) => {
                let at = lcn * cs + within;
                dev.read_exact_at(&mut out[done as usize..(done + n) as usize], at).map_err(|source| FsError::Io {
                    what,
                    offset: at,
                    source,
                })?;
            }
            None if holes => {}
            None => return Err(corrupt(format!("{what}: byte {pos} is in a sparse run"))),
        }
        done += n;
    }
    Ok(out)
}

/// UTF-16LE as a `String`, unpaired surrogates replaced.
pub fn utf16(b: &[u8]) -> String {
    let units: Vec<u16> = b.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
    String::from_utf16_lossy(&units)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    #[test]
    fn runs_with_signed_deltas_and_holes() {
        // 0x21: 1 length byte, 2 delta bytes. 16 clusters at 0x1000; hole of 8; 4 clusters 0x100
        // *before* (negative delta -0xF00).
        let p = [0x21, 0x10, 0x00, 0x10, 0x01, 0x08, 0x21, 0x04, 0x00, 0xF1, 0x00];
        let runs = decode_runs(&p, 0, 1 << 20).unwrap();
        assert_eq!(
            runs,
            [
                Run { vcn: 0, len: 16, lcn: Some(0x1000) },
                Run { vcn: 16, len: 8, lcn: None },
                Run { vcn: 24, len: 4, lcn: Some(0x100) }
            ]
        );
        assert_eq!(decode_runs(&p, 100, 1 << 20).unwrap()[2].vcn, 124, "an extent's runs start at its lowest VCN");
        assert!(decode_runs(&[0x21, 0x10, 0x00, 0x10], 0, 1 << 20).is_err(), "no terminator");
        assert!(decode_runs(&[0x21, 0x10, 0x00, 0x10, 0x00], 0, 0x1008).is_err(), "outside the volume");
        assert!(decode_runs(&[0x11, 0x10, 0xF0, 0x00], 0, 1 << 20).is_err(), "negative LCN");
        assert!(decode_runs(&[0x01, 0x00, 0x00], 0, 1 << 20).is_err(), "empty run");
        assert!(decode_runs(&[0x9F, 0x00], 0, 1 << 20).is_err());
    }

    pub fn record(size: usize) -> Vec<u8> {
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
        apply_fixups(&mut r, &[b"FILE"]).unwrap();
        assert_eq!(&r[510..512], &[0xA0, 0xB0]);
        assert_eq!(&r[1022..1024], &[0xA1, 0xB0]);
        let mut torn = record(1024);
        torn[1022] = 0x08;
        assert!(apply_fixups(&mut torn, &[b"FILE"]).unwrap_err().contains("torn"));
        let mut bad = record(1024);
        bad[0..4].copy_from_slice(b"BAAD");
        assert!(apply_fixups(&mut bad, &[b"FILE"]).is_err());
        let mut indx = record(1024);
        indx[0..4].copy_from_slice(b"INDX");
        assert!(apply_fixups(&mut indx, &[b"FILE"]).is_err());
        apply_fixups(&mut indx, &[b"INDX"]).unwrap();
    }

    /// A 1 KiB record holding one non-resident unnamed `$DATA` with these mapping pairs.
    pub fn with_data(runs: &[u8], highest: u64, data_size: u64, cs: u64) -> Vec<u8> {
        let mut r = vec![0u8; 1024];
        r[20..22].copy_from_slice(&56u16.to_le_bytes());
        let alen = (64 + runs.len()).div_ceil(8) * 8;
        let a = &mut r[56..56 + alen];
        a[0..4].copy_from_slice(&ATTR_DATA.to_le_bytes());
        a[4..8].copy_from_slice(&(alen as u32).to_le_bytes());
        a[8] = 1;
        a[24..32].copy_from_slice(&highest.to_le_bytes());
        a[32..34].copy_from_slice(&64u16.to_le_bytes());
        a[40..48].copy_from_slice(&((highest + 1) * cs).to_le_bytes());
        a[48..56].copy_from_slice(&data_size.to_le_bytes());
        a[56..64].copy_from_slice(&data_size.to_le_bytes());
        a[64..64 + runs.len()].copy_from_slice(runs);
        r[56 + alen..60 + alen].copy_from_slice(&ATTR_END.to_le_bytes());
        let in_use = (56 + alen + 8) as u32;
        r[24..28].copy_from_slice(&in_use.to_le_bytes());
        r
    }

    #[test]
    fn a_data_extent_and_its_checks() {
        let r = with_data(&[0x11, 0x04, 0x20, 0x00], 3, 4096 * 4, 4096);
        let a = find(&r, ATTR_DATA, "").unwrap().unwrap();
        let e = a.extent(1000).unwrap();
        assert_eq!((e.runs.clone(), e.data_size), (vec![Run { vcn: 0, len: 4, lcn: Some(0x20) }], 16384));
        let joined = join_extents(vec![e], 4096).unwrap();
        assert_eq!(joined.allocated, 16384);
        let wrong = with_data(&[0x11, 0x04, 0x20, 0x00], 9, 4096 * 4, 4096);
        assert!(find(&wrong, ATTR_DATA, "").unwrap().unwrap().extent(1000).unwrap_err().contains("runs cover"));
        let mut overlong = with_data(&[0x11, 0x04, 0x20, 0x00], 3, 4096 * 4, 4096);
        overlong[60..64].copy_from_slice(&4000u32.to_le_bytes());
        assert!(attributes(&overlong).is_err());
    }

    #[test]
    fn extents_must_follow_each_other() {
        let e = |lowest: u64, len: u64, lcn: u64| Extent {
            lowest,
            runs: vec![Run { vcn: lowest, len, lcn: Some(lcn) }],
            flags: 0,
            allocated: 12 * 4096,
            data_size: 12 * 4096,
            initialized: 12 * 4096,
        };
        let j = join_extents(vec![e(8, 4, 100), e(0, 8, 10)], 4096).unwrap();
        assert_eq!(j.runs.len(), 2);
        assert!(join_extents(vec![e(0, 8, 10), e(9, 3, 100)], 4096).unwrap_err().contains("previous ends"));
        assert!(join_extents(vec![e(0, 8, 10)], 4096).unwrap_err().contains("allocation"));
    }

    #[test]
    fn attribute_list_entries() {
        let mut v = vec![0u8; 64];
        for (i, (kind, rec)) in [(0x10u32, 5u64), (0x80, 77)].iter().enumerate() {
            let at = i * 32;
            v[at..at + 4].copy_from_slice(&kind.to_le_bytes());
            v[at + 4..at + 6].copy_from_slice(&32u16.to_le_bytes());
            v[at + 7] = 26;
            v[at + 8..at + 16].copy_from_slice(&(i as u64 * 40).to_le_bytes());
            v[at + 16..at + 24].copy_from_slice(&rec.to_le_bytes());
        }
        let l = attribute_list(&v).unwrap();
        assert_eq!(l[1], ListEntry { kind: 0x80, name: String::new(), lowest: 40, record: 77 });
        v[36] = 200;
        assert!(attribute_list(&v).is_err());
    }
}

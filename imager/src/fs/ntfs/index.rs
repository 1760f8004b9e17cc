//! Directory lookup by name through a directory's `$I30` index: the entries of `$INDEX_ROOT`
//! and of every `INDX` block `$BITMAP` marks in use in `$INDEX_ALLOCATION`. Blocks are visited
//! in order rather than walked as a B-tree, so no collation table (`$UpCase`) is needed; only
//! live blocks are read, so a deleted entry left in a free block is never found
//! (`imager/WINDOWS-RESEARCH.md` §1.7).

use super::record::{apply_fixups, read_mapped, utf16, ATTR_BITMAP, ATTR_INDEX_ALLOCATION, ATTR_INDEX_ROOT};
use super::{corrupt, Data, Volume};
use crate::fs::FsError;
use crate::io::le;

const I30: &str = "$I30";
const INDEX_ENTRY_END: u64 = 0x02;
const LARGE_INDEX: u64 = 0x01;
/// FILE_NAME namespaces: the DOS 8.3 alias is skipped (its Win32 twin carries the name).
const NAMESPACE_DOS: u8 = 2;
/// A directory of more blocks than this is refused rather than read for ever.
const MAX_BLOCKS: u64 = 1 << 16;

/// The MFT reference of `name` in the directory whose base record is `dir` (number `n`).
pub(super) fn find(vol: &Volume, dir: &[u8], n: u64, name: &str) -> Result<Option<u64>, FsError> {
    let bad = |r: String| corrupt(format!("directory record {n}: {r}"));
    let root = match vol.attribute(dir, n, ATTR_INDEX_ROOT, I30, "$INDEX_ROOT")? {
        Some(Data::Resident(v)) => v,
        Some(Data::NonResident(_)) => return Err(bad("$INDEX_ROOT is not resident".into())),
        None => return Err(bad("not a directory (no $I30 index)".into())),
    };
    if root.len() < 32 {
        return Err(bad(format!("$INDEX_ROOT of {} bytes", root.len())));
    }
    if let Some(r) = entries(&root[16..], name).map_err(|r| bad(format!("$INDEX_ROOT: {r}")))? {
        return Ok(Some(r));
    }
    if le(&root, 16 + 12, 1) & LARGE_INDEX == 0 {
        return Ok(None);
    }
    let block = le(&root, 8, 4);
    if !(512..=64 * 1024).contains(&block) || !block.is_power_of_two() {
        return Err(bad(format!("index block size {block}")));
    }
    let Some(Data::NonResident(alloc)) = vol.attribute(dir, n, ATTR_INDEX_ALLOCATION, I30, "$INDEX_ALLOCATION")? else {
        return Err(bad("a large index without a non-resident $INDEX_ALLOCATION".into()));
    };
    let bitmap = match vol.attribute(dir, n, ATTR_BITMAP, I30, "an index $BITMAP")? {
        Some(Data::Resident(v)) => v,
        Some(d @ Data::NonResident(_)) => vol.read(&d, 1 << 20, "an index $BITMAP")?,
        None => return Err(bad("a large index without $BITMAP".into())),
    };
    let blocks = alloc.data_size / block;
    if blocks > MAX_BLOCKS {
        return Err(bad(format!("an index of {blocks} blocks")));
    }
    for i in 0..blocks {
        if bitmap.get((i / 8) as usize).is_none_or(|b| b >> (i % 8) & 1 == 0) {
            continue;
        }
        let mut b = read_mapped(vol.dev, &alloc.runs, vol.boot.cluster_size, i * block, block, "an index block")?;
        apply_fixups(&mut b, &[b"INDX"]).map_err(|r| bad(format!("index block {i}: {r}")))?;
        if let Some(r) = entries(&b[0x18..], name).map_err(|r| bad(format!("index block {i}: {r}")))? {
            return Ok(Some(r));
        }
    }
    Ok(None)
}

/// Scans the entries after an `INDEX_HEADER` (`h` starts at the header) for `name`.
fn entries(h: &[u8], name: &str) -> Result<Option<u64>, String> {
    let (first, end) = (le(h, 0, 4) as usize, le(h, 4, 4) as usize);
    if end > h.len() || first < 16 || first > end {
        return Err(format!("entries from {first} to {end} in {} bytes", h.len()));
    }
    let mut at = first;
    while at + 16 <= end {
        let elen = le(h, at + 8, 2) as usize;
        let klen = le(h, at + 10, 2) as usize;
        let flags = le(h, at + 12, 2);
        if flags & INDEX_ENTRY_END != 0 {
            return Ok(None);
        }
        if elen < 16 || !elen.is_multiple_of(8) || at + elen > end || 16 + klen > elen || klen < 0x42 {
            return Err(format!("index entry at {at} of length {elen}, key {klen}"));
        }
        let key = &h[at + 16..at + 16 + klen];
        let (nlen, ns) = (key[0x40] as usize, key[0x41]);
        let raw = key.get(0x42..0x42 + 2 * nlen).ok_or_else(|| format!("index entry at {at}: name outside its key"))?;
        if ns != NAMESPACE_DOS && same_name(&utf16(raw), name) {
            return Ok(Some(le(h, at, 8)));
        }
        at += elen;
    }
    Err("index entries end without an end entry".into())
}

/// Windows compares names through the volume's upper-case table; `char::to_uppercase` agrees
/// with it for every name parc looks up (ASCII).
fn same_name(a: &str, b: &str) -> bool {
    a.chars().flat_map(char::to_uppercase).eq(b.chars().flat_map(char::to_uppercase))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An INDEX_HEADER followed by entries for `names` (Win32 namespace, references 100, 101…),
    /// and the end entry.
    fn header(names: &[(&str, u8)]) -> Vec<u8> {
        let mut h = vec![0u8; 16];
        for (i, (name, ns)) in names.iter().enumerate() {
            let units: Vec<u8> = name.encode_utf16().flat_map(|u| u.to_le_bytes()).collect();
            let klen = 0x42 + units.len();
            let elen = (16 + klen).div_ceil(8) * 8;
            let mut e = vec![0u8; elen];
            e[0..8].copy_from_slice(&(100 + i as u64).to_le_bytes());
            e[8..10].copy_from_slice(&(elen as u16).to_le_bytes());
            e[10..12].copy_from_slice(&(klen as u16).to_le_bytes());
            e[16 + 0x40] = name.encode_utf16().count() as u8;
            e[16 + 0x41] = *ns;
            e[16 + 0x42..16 + klen].copy_from_slice(&units);
            h.extend(e);
        }
        let mut end = vec![0u8; 16];
        end[8..10].copy_from_slice(&16u16.to_le_bytes());
        end[12] = INDEX_ENTRY_END as u8;
        h.extend(end);
        let total = h.len() as u32;
        h[0..4].copy_from_slice(&16u32.to_le_bytes());
        h[4..8].copy_from_slice(&total.to_le_bytes());
        h
    }

    #[test]
    fn names_match_case_insensitively_and_dos_aliases_are_skipped() {
        let h = header(&[("$MFT", 3), ("PAGEFI~1.SYS", NAMESPACE_DOS), ("pagefile.sys", 1), ("Windows", 1)]);
        assert_eq!(entries(&h, "PageFile.SYS").unwrap(), Some(102));
        assert_eq!(entries(&h, "windows").unwrap(), Some(103));
        assert_eq!(entries(&h, "PAGEFI~1.SYS").unwrap(), None, "a DOS alias is not a name");
        assert_eq!(entries(&h, "hiberfil.sys").unwrap(), None);
    }

    #[test]
    fn damaged_entries_are_errors() {
        let mut h = header(&[("pagefile.sys", 1)]);
        h[16 + 8] = 7;
        assert!(entries(&h, "x").is_err(), "entry length not a multiple of 8");
        let mut h = header(&[("pagefile.sys", 1)]);
        h[4..8].copy_from_slice(&4000u32.to_le_bytes());
        assert!(entries(&h, "x").is_err(), "entries beyond the block");
        let mut h = header(&[("pagefile.sys", 1)]);
        h[16 + 16 + 0x40] = 200;
        assert!(entries(&h, "x").is_err(), "name longer than its key");
        let h = header(&[("pagefile.sys", 1)]);
        let cut = h.len() - 16;
        let mut h = h[..cut].to_vec();
        let len = h.len() as u32;
        h[4..8].copy_from_slice(&len.to_le_bytes());
        assert!(entries(&h, "x").is_err(), "no end entry");
    }
}

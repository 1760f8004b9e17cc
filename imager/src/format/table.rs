//! Partition tables: MBR and GPT parsing, and moving a GPT's backup to the end of a disk of
//! another size. Pure: bytes in, values out.

use serde::{Deserialize, Serialize};

use crate::io::{le, ReadAt};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TableKind {
    Gpt,
    Mbr,
    /// No partition table: the whole disk is one file system (or unknown data).
    None,
}

const MBR_SIGNATURE: [u8; 2] = [0x55, 0xAA];
const MBR_ENTRIES_AT: usize = 446;
const MBR_TYPE_EMPTY: u8 = 0x00;
const MBR_TYPE_GPT_PROTECTIVE: u8 = 0xEE;
const GPT_SIGNATURE: &[u8; 8] = b"EFI PART";
const GPT_HEADER_MIN: u32 = 92;
/// At most this many entry bytes: 128 entries of 128 bytes is the norm; 1 MiB is generous.
const GPT_ENTRIES_MAX_BYTES: u64 = 1 << 20;

/// One partition as the table describes it, in bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartEntry {
    pub number: u32,
    pub start: u64,
    pub length: u64,
    pub type_id: String,
    pub uuid: String,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub kind: TableKind,
    pub partitions: Vec<PartEntry>,
    /// GPT: the backup entries + header at the end of the disk, `[start, end)` in bytes.
    pub backup: Option<(u64, u64)>,
}

impl Table {
    /// The boot area: everything before the first partition (at most the whole disk).
    pub fn boot_area_len(&self, disk_size: u64) -> u64 {
        match self.kind {
            TableKind::None => 0,
            _ => self.partitions.iter().map(|p| p.start).min().unwrap_or(disk_size.min(1 << 20)),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TableError {
    #[error("reading the partition table at byte {offset}: {source}")]
    Io { offset: u64, source: std::io::Error },
    #[error("partition table is corrupt: {reason}")]
    Corrupt { reason: String },
    #[error("partition table not supported: {reason}")]
    Unsupported { reason: String },
}

fn corrupt<T>(reason: impl Into<String>) -> Result<T, TableError> {
    Err(TableError::Corrupt { reason: reason.into() })
}

fn read(dev: &dyn ReadAt, offset: u64, len: usize) -> Result<Vec<u8>, TableError> {
    let mut buf = vec![0u8; len];
    dev.read_exact_at(&mut buf, offset).map_err(|source| TableError::Io { offset, source })?;
    Ok(buf)
}

fn le16(b: &[u8], at: usize) -> u16 {
    le(b, at, 2) as u16
}
fn le32(b: &[u8], at: usize) -> u32 {
    le(b, at, 4) as u32
}
fn le64(b: &[u8], at: usize) -> u64 {
    le(b, at, 8)
}

/// Reads the partition table of a disk of `disk_size` bytes with the given sector size.
pub fn parse(dev: &dyn ReadAt, disk_size: u64, sector_size: u32) -> Result<Table, TableError> {
    let ss = u64::from(sector_size);
    if disk_size < 512 {
        return Ok(Table { kind: TableKind::None, partitions: vec![], backup: None });
    }
    let mbr = read(dev, 0, 512)?;
    if mbr[510..512] != MBR_SIGNATURE {
        return Ok(Table { kind: TableKind::None, partitions: vec![], backup: None });
    }
    let entries: Vec<&[u8]> = (0..4).map(|i| &mbr[MBR_ENTRIES_AT + i * 16..MBR_ENTRIES_AT + (i + 1) * 16]).collect();
    // A boot sector of a file system on a whole disk also ends in 55 AA: only call it an MBR
    // when the entries are plausible.
    let plausible = entries.iter().all(|e| (e[0] == 0 || e[0] == 0x80) && (e[4] == MBR_TYPE_EMPTY || le32(e, 12) > 0));
    if !plausible || entries.iter().all(|e| e[4] == MBR_TYPE_EMPTY) {
        return Ok(Table { kind: TableKind::None, partitions: vec![], backup: None });
    }
    if entries.iter().any(|e| e[4] == MBR_TYPE_GPT_PROTECTIVE) {
        return parse_gpt(dev, disk_size, ss);
    }
    let mut partitions = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let ptype = e[4];
        if ptype == MBR_TYPE_EMPTY {
            continue;
        }
        let start = u64::from(le32(e, 8)) * ss;
        let length = u64::from(le32(e, 12)) * ss;
        if start == 0 || start.checked_add(length).is_none_or(|end| end > disk_size) {
            return corrupt(format!(
                "MBR partition {} [{start}, +{length}) does not fit on the {disk_size}-byte disk",
                i + 1
            ));
        }
        partitions.push(PartEntry {
            number: i as u32 + 1,
            start,
            length,
            type_id: format!("0x{ptype:02x}"),
            uuid: String::new(),
            name: String::new(),
        });
    }
    check_overlaps(&partitions)?;
    Ok(Table { kind: TableKind::Mbr, partitions, backup: None })
}

fn check_overlaps(parts: &[PartEntry]) -> Result<(), TableError> {
    let mut sorted: Vec<&PartEntry> = parts.iter().collect();
    sorted.sort_by_key(|p| p.start);
    for w in sorted.windows(2) {
        if w[1].start < w[0].start + w[0].length {
            return corrupt(format!("partitions {} and {} overlap", w[0].number, w[1].number));
        }
    }
    Ok(())
}

/// The fields of a GPT header parc uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GptHeader {
    pub header_size: u32,
    pub my_lba: u64,
    pub alternate_lba: u64,
    pub first_usable: u64,
    pub last_usable: u64,
    pub entries_lba: u64,
    pub num_entries: u32,
    pub entry_size: u32,
}

impl GptHeader {
    pub fn entries_bytes(&self) -> u64 {
        u64::from(self.num_entries) * u64::from(self.entry_size)
    }
}

/// Parses and checks a GPT header sector (CRC included).
pub fn parse_gpt_header(sector: &[u8]) -> Result<GptHeader, TableError> {
    if sector.len() < 512 || &sector[0..8] != GPT_SIGNATURE {
        return corrupt("no GPT header signature \"EFI PART\" at LBA 1");
    }
    let header_size = le32(sector, 12);
    if header_size < GPT_HEADER_MIN || header_size as usize > sector.len() {
        return corrupt(format!("GPT header size {header_size} is out of range"));
    }
    let mut copy = sector[..header_size as usize].to_vec();
    copy[16..20].fill(0);
    if crc32fast::hash(&copy) != le32(sector, 16) {
        return corrupt("GPT header CRC does not match");
    }
    let h = GptHeader {
        header_size,
        my_lba: le64(sector, 24),
        alternate_lba: le64(sector, 32),
        first_usable: le64(sector, 40),
        last_usable: le64(sector, 48),
        entries_lba: le64(sector, 72),
        num_entries: le32(sector, 80),
        entry_size: le32(sector, 84),
    };
    if h.entry_size < 128 || !h.entry_size.is_power_of_two() || h.entries_bytes() > GPT_ENTRIES_MAX_BYTES {
        return corrupt(format!("GPT has {} entries of {} bytes", h.num_entries, h.entry_size));
    }
    Ok(h)
}

fn guid_to_string(b: &[u8]) -> String {
    format!(
        "{:08x}-{:04x}-{:04x}-{:02x}{:02x}-{}",
        le32(b, 0),
        le16(b, 4),
        le16(b, 6),
        b[8],
        b[9],
        hex::encode(&b[10..16])
    )
}

fn parse_gpt(dev: &dyn ReadAt, disk_size: u64, ss: u64) -> Result<Table, TableError> {
    let header = parse_gpt_header(&read(dev, ss, ss as usize)?)?;
    let disk_lbas = disk_size / ss;
    if header.my_lba != 1 || header.alternate_lba >= disk_lbas || header.last_usable >= header.alternate_lba {
        return corrupt(format!(
            "GPT header places the backup at LBA {} (last usable {}) on a disk of {disk_lbas} sectors",
            header.alternate_lba, header.last_usable
        ));
    }
    let entries = read(dev, header.entries_lba * ss, header.entries_bytes() as usize)?;
    let mut partitions = Vec::new();
    for i in 0..header.num_entries as usize {
        let e = &entries[i * header.entry_size as usize..(i + 1) * header.entry_size as usize];
        if e[0..16].iter().all(|&b| b == 0) {
            continue;
        }
        let (first, last) = (le64(e, 32), le64(e, 40));
        if first < header.first_usable || last > header.last_usable || last < first {
            return corrupt(format!(
                "GPT partition {} spans LBA {first}..={last}, outside the usable LBA {}..={}",
                i + 1,
                header.first_usable,
                header.last_usable
            ));
        }
        let name_units: Vec<u16> =
            e[56..128].chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).take_while(|&u| u != 0).collect();
        partitions.push(PartEntry {
            number: i as u32 + 1,
            start: first * ss,
            length: (last - first + 1) * ss,
            type_id: guid_to_string(&e[0..16]),
            uuid: guid_to_string(&e[16..32]),
            name: String::from_utf16_lossy(&name_units),
        });
    }
    check_overlaps(&partitions)?;
    // The backup: entries right after the last usable LBA, header in the last sector the
    // primary points at; parc keeps everything from there to the end of the disk.
    let backup_start = (header.last_usable + 1) * ss;
    Ok(Table { kind: TableKind::Gpt, partitions, backup: Some((backup_start, disk_size)) })
}

/// Rewrites a GPT for a disk of `new_size` bytes: updates the primary header in `boot_area`
/// (which starts at disk byte 0 and holds the header and the entries) and the protective MBR,
/// and returns the new backup area `(start offset, bytes)` to write at the end of the disk.
pub fn relocate_gpt(boot_area: &mut [u8], sector_size: u32, new_size: u64) -> Result<(u64, Vec<u8>), TableError> {
    let ss = u64::from(sector_size);
    let hdr_at = ss as usize;
    if boot_area.len() < hdr_at * 2 {
        return Err(TableError::Unsupported { reason: "boot area too small to hold the GPT header".into() });
    }
    let h = parse_gpt_header(&boot_area[hdr_at..hdr_at * 2])?;
    let entries_at = (h.entries_lba * ss) as usize;
    let entries_len = h.entries_bytes() as usize;
    if entries_at + entries_len > boot_area.len() {
        return Err(TableError::Unsupported { reason: "GPT entries lie outside the boot area".into() });
    }
    let entries = boot_area[entries_at..entries_at + entries_len].to_vec();
    let entry_sectors = (h.entries_bytes()).div_ceil(ss);
    let last_lba = new_size / ss - 1;
    let backup_entries_lba = last_lba - entry_sectors;
    let last_usable = backup_entries_lba - 1;
    // Every partition must still fit below the new last usable LBA.
    for (i, e) in entries.chunks_exact(h.entry_size as usize).enumerate() {
        if e[0..16].iter().any(|&b| b != 0) && le64(e, 40) > last_usable {
            return corrupt(format!(
                "partition {} ends at LBA {} past the target's last usable LBA {last_usable}",
                i + 1,
                le64(e, 40)
            ));
        }
    }
    let write_header = |sector: &mut [u8], my: u64, alt: u64, ent: u64| {
        sector[24..32].copy_from_slice(&my.to_le_bytes());
        sector[32..40].copy_from_slice(&alt.to_le_bytes());
        sector[48..56].copy_from_slice(&last_usable.to_le_bytes());
        sector[72..80].copy_from_slice(&ent.to_le_bytes());
        sector[16..20].fill(0);
        let crc = crc32fast::hash(&sector[..h.header_size as usize]);
        sector[16..20].copy_from_slice(&crc.to_le_bytes());
    };
    let primary = &mut boot_area[hdr_at..hdr_at * 2];
    let template = primary.to_vec();
    write_header(primary, 1, last_lba, h.entries_lba);
    // Protective MBR: size of the 0xEE entry follows the disk (capped at 32 bits).
    for i in 0..4 {
        let e = MBR_ENTRIES_AT + i * 16;
        if boot_area[e + 4] == MBR_TYPE_GPT_PROTECTIVE {
            let sectors = (last_lba).min(u64::from(u32::MAX)) as u32;
            boot_area[e + 12..e + 16].copy_from_slice(&sectors.to_le_bytes());
        }
    }
    let mut backup = vec![0u8; ((entry_sectors + 1) * ss) as usize];
    backup[..entries_len].copy_from_slice(&entries);
    let hdr = (entry_sectors * ss) as usize;
    backup[hdr..hdr + ss as usize].copy_from_slice(&template);
    write_header(&mut backup[hdr..hdr + ss as usize], last_lba, 1, backup_entries_lba);
    Ok((backup_entries_lba * ss, backup))
}

/// Moves the end of partition `number` to byte `end` (exclusive) in a boot area that starts at
/// disk byte 0: the GPT entry's last LBA (entries and header CRCs updated; the backup follows
/// from [`relocate_gpt`]), or a primary MBR entry's sector count. The new end must lie within
/// the partition's own disk: the caller places the backup GPT after it.
pub fn set_partition_end(
    boot_area: &mut [u8],
    sector_size: u32,
    kind: TableKind,
    number: u32,
    end: u64,
) -> Result<(), TableError> {
    let ss = u64::from(sector_size);
    let unsupported = |reason: String| Err(TableError::Unsupported { reason });
    if !end.is_multiple_of(ss) {
        return unsupported(format!("partition {number} cannot end at byte {end}: not a multiple of {ss}"));
    }
    match kind {
        TableKind::Gpt => {
            let hdr_at = ss as usize;
            if boot_area.len() < hdr_at * 2 {
                return unsupported("boot area too small to hold the GPT header".into());
            }
            let h = parse_gpt_header(&boot_area[hdr_at..hdr_at * 2])?;
            let entries_at = (h.entries_lba * ss) as usize;
            let entries_len = h.entries_bytes() as usize;
            if entries_at + entries_len > boot_area.len() {
                return unsupported("GPT entries lie outside the boot area".into());
            }
            if number == 0 || number > h.num_entries {
                return unsupported(format!("GPT has no entry {number}"));
            }
            let e = entries_at + (number as usize - 1) * h.entry_size as usize;
            let entry = &mut boot_area[e..e + h.entry_size as usize];
            if entry[0..16].iter().all(|&b| b == 0) || end / ss <= le64(entry, 32) {
                return unsupported(format!("GPT entry {number} is empty or would end before it starts"));
            }
            entry[40..48].copy_from_slice(&(end / ss - 1).to_le_bytes());
            let crc = crc32fast::hash(&boot_area[entries_at..entries_at + entries_len]);
            let header = &mut boot_area[hdr_at..hdr_at * 2];
            header[88..92].copy_from_slice(&crc.to_le_bytes());
            header[16..20].fill(0);
            let crc = crc32fast::hash(&header[..h.header_size as usize]);
            header[16..20].copy_from_slice(&crc.to_le_bytes());
            Ok(())
        }
        TableKind::Mbr => {
            if !(1..=4).contains(&number) || boot_area.len() < 512 {
                return unsupported(format!("MBR partition {number} is not a primary partition"));
            }
            let e = MBR_ENTRIES_AT + (number as usize - 1) * 16;
            let start = u64::from(le32(boot_area, e + 8));
            let sectors = (end / ss).checked_sub(start).filter(|&n| n > 0 && n <= u64::from(u32::MAX));
            match sectors {
                Some(n) if boot_area[e + 4] != MBR_TYPE_EMPTY => {
                    boot_area[e + 12..e + 16].copy_from_slice(&(n as u32).to_le_bytes());
                    Ok(())
                }
                _ => unsupported(format!("MBR partition {number} cannot end at sector {}", end / ss)),
            }
        }
        TableKind::None => unsupported("a disk without a partition table has no partition to grow".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal but valid GPT disk image of `size` bytes with two partitions, built by hand
    /// the way sgdisk lays it out (1 MiB alignment, 128 entries of 128 bytes).
    pub fn gpt_disk(size: u64) -> Vec<u8> {
        let mut d = vec![0u8; size as usize];
        let ss = 512u64;
        let last = size / ss - 1;
        d[446 + 4] = MBR_TYPE_GPT_PROTECTIVE;
        d[446 + 8..446 + 12].copy_from_slice(&1u32.to_le_bytes());
        d[446 + 12..446 + 16].copy_from_slice(&((last) as u32).to_le_bytes());
        d[510] = 0x55;
        d[511] = 0xAA;
        let mut entries = vec![0u8; 128 * 128];
        for (i, (first, end)) in [(2048u64, 4095u64), (4096, last - 34)].iter().enumerate() {
            let e = &mut entries[i * 128..(i + 1) * 128];
            e[0] = 0xAF; // type GUID, any non-zero
            e[16] = i as u8 + 1;
            e[32..40].copy_from_slice(&first.to_le_bytes());
            e[40..48].copy_from_slice(&end.to_le_bytes());
            e[56] = b'p';
        }
        d[1024..1024 + entries.len()].copy_from_slice(&entries);
        let mut h = vec![0u8; 512];
        h[0..8].copy_from_slice(GPT_SIGNATURE);
        h[8..12].copy_from_slice(&0x10000u32.to_le_bytes());
        h[12..16].copy_from_slice(&92u32.to_le_bytes());
        h[24..32].copy_from_slice(&1u64.to_le_bytes());
        h[32..40].copy_from_slice(&last.to_le_bytes());
        h[40..48].copy_from_slice(&34u64.to_le_bytes());
        h[48..56].copy_from_slice(&(last - 33).to_le_bytes());
        h[72..80].copy_from_slice(&2u64.to_le_bytes());
        h[80..84].copy_from_slice(&128u32.to_le_bytes());
        h[84..88].copy_from_slice(&128u32.to_le_bytes());
        h[88..92].copy_from_slice(&crc32fast::hash(&entries).to_le_bytes());
        let crc = crc32fast::hash(&h[..92]);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        d[512..1024].copy_from_slice(&h);
        d
    }

    #[test]
    fn parses_gpt() {
        let d = gpt_disk(8 << 20);
        let t = parse(&d, d.len() as u64, 512).unwrap();
        assert_eq!(t.kind, TableKind::Gpt);
        assert_eq!(t.partitions.len(), 2);
        assert_eq!(t.partitions[0].start, 1 << 20);
        assert_eq!(t.partitions[0].length, 1 << 20);
        assert_eq!(t.partitions[1].name, "p");
        assert_eq!(t.backup, Some(((8 << 20) - 33 * 512, 8 << 20)));
        assert_eq!(t.boot_area_len(8 << 20), 1 << 20);
    }

    #[test]
    fn relocated_gpt_parses_on_larger_disk() {
        let d = gpt_disk(8 << 20);
        let mut boot = d[..1 << 20].to_vec();
        let new_size = 16u64 << 20;
        let (at, backup) = relocate_gpt(&mut boot, 512, new_size).unwrap();
        let mut big = vec![0u8; new_size as usize];
        big[..boot.len()].copy_from_slice(&boot);
        big[at as usize..at as usize + backup.len()].copy_from_slice(&backup);
        assert_eq!(at as usize + backup.len(), new_size as usize);
        let t = parse(&big, new_size, 512).unwrap();
        assert_eq!(t.partitions.len(), 2);
        let bh = parse_gpt_header(&big[(new_size - 512) as usize..]).unwrap();
        assert_eq!(bh.my_lba, new_size / 512 - 1);
        assert_eq!(bh.alternate_lba, 1);
        assert_eq!(bh.entries_lba, new_size / 512 - 33);
    }

    #[test]
    fn relocation_refuses_disk_too_small_for_partitions() {
        let d = gpt_disk(8 << 20);
        let mut boot = d[..1 << 20].to_vec();
        assert!(relocate_gpt(&mut boot, 512, 4 << 20).is_err());
    }

    #[test]
    fn garbage_is_no_table_and_bad_gpt_is_an_error() {
        let d = vec![0u8; 1 << 20];
        assert_eq!(parse(&d, d.len() as u64, 512).unwrap().kind, TableKind::None);
        let mut d = gpt_disk(8 << 20);
        d[512 + 40] ^= 1; // breaks the header CRC
        assert!(matches!(parse(&d, d.len() as u64, 512), Err(TableError::Corrupt { .. })));
        let d = gpt_disk(8 << 20);
        // A truncated disk (the header claims more sectors than exist).
        let short = d[..4 << 20].to_vec();
        assert!(parse(&short, 4 << 20, 512).is_err());
    }

    #[test]
    fn a_grown_gpt_partition_parses_with_valid_crcs_after_relocation() {
        let d = gpt_disk(8 << 20);
        let mut boot = d[..1 << 20].to_vec();
        let new_size = 32u64 << 20;
        set_partition_end(&mut boot, 512, TableKind::Gpt, 2, 31 << 20).unwrap();
        let (at, backup) = relocate_gpt(&mut boot, 512, new_size).unwrap();
        let mut big = vec![0u8; new_size as usize];
        big[..boot.len()].copy_from_slice(&boot);
        big[at as usize..at as usize + backup.len()].copy_from_slice(&backup);
        let t = parse(&big, new_size, 512).unwrap();
        assert_eq!((t.partitions[1].start, t.partitions[1].length), (2 << 20, 29 << 20));
        assert_eq!(t.partitions[0].length, 1 << 20, "the other partition is unchanged");
        // The backup's entries carry the new end and the CRC the primary header states.
        let bh = &big[(new_size - 512) as usize..];
        assert_eq!(bh[88..92], boot[512 + 88..512 + 92]);
        assert_eq!(crc32fast::hash(&backup[..128 * 128]).to_le_bytes(), bh[88..92]);
        // Past the new last usable LBA, relocation refuses.
        let mut boot = d[..1 << 20].to_vec();
        set_partition_end(&mut boot, 512, TableKind::Gpt, 2, new_size).unwrap();
        assert!(relocate_gpt(&mut boot, 512, new_size).is_err());
        let mut boot = d[..1 << 20].to_vec();
        assert!(set_partition_end(&mut boot, 512, TableKind::Gpt, 3, 31 << 20).is_err(), "empty entry");
        assert!(set_partition_end(&mut boot, 512, TableKind::Gpt, 2, 1 << 20).is_err(), "before its start");
    }

    #[test]
    fn a_grown_mbr_partition_parses() {
        let mut d = vec![0u8; 16 << 20];
        d[446 + 4] = 0x83;
        d[446 + 8..446 + 12].copy_from_slice(&2048u32.to_le_bytes());
        d[446 + 12..446 + 16].copy_from_slice(&2048u32.to_le_bytes());
        d[510] = 0x55;
        d[511] = 0xAA;
        set_partition_end(&mut d, 512, TableKind::Mbr, 1, 15 << 20).unwrap();
        let t = parse(&d, 16 << 20, 512).unwrap();
        assert_eq!((t.partitions[0].start, t.partitions[0].length), (1 << 20, 14 << 20));
        assert!(set_partition_end(&mut d, 512, TableKind::Mbr, 5, 15 << 20).is_err(), "logical");
        assert!(set_partition_end(&mut d, 512, TableKind::Mbr, 2, 15 << 20).is_err(), "empty");
    }
}

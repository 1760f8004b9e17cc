//! Phase 7: the held chunks (boot area, GPT backup), last.

use std::sync::atomic::Ordering;

use super::Deployment;
use crate::error::Error;
use crate::format::table;

/// What was written besides the held chunks themselves, for the verification.
#[derive(Debug)]
pub(super) struct Written {
    /// The rewritten boot area (GPT moved), written at offset 0.
    pub boot_buf: Option<Vec<u8>>,
    /// The regenerated GPT backup: (offset, bytes).
    pub new_backup: Option<(u64, Vec<u8>)>,
}

impl Deployment<'_> {
    /// Phase 7: everything held is fetched and verified first; then the backup area and any
    /// held partition bytes, a flush, and the boot area's first sectors last.
    pub fn write_boot_area(&mut self) -> Result<(), Error> {
        self.check_cancel()?;
        self.req.progress.phase("writing boot area", 0);
        let disk = self.req.disk;
        let items = &self.plan.items;
        let mut held: Vec<(usize, Vec<u8>)> = Vec::new();
        for i in (0..items.len()).filter(|&i| items[i].held && !items[i].replaced) {
            let data = match self.kept.remove(&i) {
                Some(d) => d,
                None => self.obtain(i)?,
            };
            held.push((i, data));
        }
        let ss = self.req.manifest.disk.logical_sector_size;
        let boot_len = self.req.manifest.boot_area.length.min(disk.size);
        let mut written = Written { boot_buf: None, new_backup: None };
        if self.plan.rewrites_table() {
            let mut buf = vec![0u8; boot_len as usize];
            for (i, data) in held.iter().filter(|(i, _)| self.plan.is_boot(*i)) {
                copy_into(&mut buf, &items[*i].chunk.at, data);
            }
            let relocate_err = |e: table::TableError| Error::Relocate { target_size: disk.size, reason: e.to_string() };
            if let Some(g) = &self.plan.resize {
                table::set_partition_end(&mut buf, ss, self.req.manifest.table, g.number, g.start + g.length)
                    .map_err(relocate_err)?;
            }
            if self.plan.relocate {
                let (at, bytes) = table::relocate_gpt(&mut buf, ss, disk.size).map_err(relocate_err)?;
                written.new_backup = Some((at, bytes));
            }
            written.boot_buf = Some(buf);
        }
        // Everything but the boot area, then the backup, a flush, then the boot area.
        let count = |n: usize| {
            self.counters.written.fetch_add(n as u64, Ordering::Relaxed);
        };
        for (i, data) in held.iter().filter(|(i, _)| !self.plan.is_boot(*i)) {
            disk.write_pieces(&items[*i].chunk.at, data).map_err(|e| self.write_err(e))?;
            count(data.len());
        }
        if let Some((at, bytes)) = &written.new_backup {
            disk.write_all_at(bytes, *at).map_err(|e| self.write_err((*at, e)))?;
            count(bytes.len());
        }
        disk.sync().map_err(self.terr())?;
        self.check_cancel()?;
        // The boot area with its first sector zero, a flush, then the first sector: a power cut
        // in the middle leaves no MBR (nothing boots) rather than a torn table.
        let boot_pieces: Vec<(Vec<[u64; 2]>, &[u8])> = match &written.boot_buf {
            Some(buf) => vec![(vec![[0, buf.len() as u64]], buf.as_slice())],
            None => held
                .iter()
                .filter(|(i, _)| self.plan.is_boot(*i))
                .map(|(i, d)| (items[*i].chunk.at.clone(), d.as_slice()))
                .collect(),
        };
        let first_sector = u64::from(ss);
        let mut sector0: Option<Vec<u8>> = None;
        for (at, data) in &boot_pieces {
            let mut pos = 0usize;
            for &[o, l] in at {
                let piece = &data[pos..pos + l as usize];
                pos += l as usize;
                let (o, piece) = if o < first_sector {
                    let cut = ((first_sector - o) as usize).min(piece.len());
                    let s0 = sector0.get_or_insert_with(|| vec![0u8; first_sector as usize]);
                    s0[o as usize..o as usize + cut].copy_from_slice(&piece[..cut]);
                    (o + cut as u64, &piece[cut..])
                } else {
                    (o, piece)
                };
                if !piece.is_empty() {
                    disk.write_all_at(piece, o).map_err(|e| self.write_err((o, e)))?;
                    count(piece.len());
                }
            }
        }
        if let Some(s0) = sector0 {
            disk.sync().map_err(self.terr())?;
            disk.write_all_at(&s0, 0).map_err(|e| self.write_err((0, e)))?;
            count(s0.len());
        }
        disk.sync().map_err(self.terr())?;
        disk.reread_partitions().map_err(self.terr())?;
        self.boot = Some(written);
        Ok(())
    }
}

fn copy_into(buf: &mut [u8], at: &[[u64; 2]], data: &[u8]) {
    let mut pos = 0usize;
    for &[o, l] in at {
        let (o, l) = (o as usize, l as usize);
        if o + l <= buf.len() {
            buf[o..o + l].copy_from_slice(&data[pos..pos + l]);
        }
        pos += l;
    }
}

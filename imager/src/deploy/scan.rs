//! Phases 1 to 3: disarm, scan, seed.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use tracing::warn;

use super::plan::{split, CHECK_PIECE};
use super::{overlaps, Deployment, How};
use crate::digest::Digest;
use crate::error::Error;
use crate::fs::nonzero::is_zero;
use crate::fs::normalize;
use crate::io::{read_pieces, ReadAt};

impl Deployment<'_> {
    /// Phase 1: keep the held chunks that are already right, then zero the disarm ranges.
    pub fn disarm(&mut self) -> Result<(), Error> {
        self.check_cancel()?;
        let disk = self.req.disk;
        for (i, item) in self.plan.items.iter().enumerate() {
            if !item.held || item.replaced {
                continue;
            }
            // An unreadable place is simply not in place: it is rewritten.
            if let Ok(data) = read_pieces(disk, &item.chunk.at) {
                if Digest::of(&data) == item.chunk.sha256 {
                    self.kept.insert(i, data);
                }
            }
        }
        for r in &self.plan.disarm {
            disk.zero_range(r.start, r.end - r.start).map_err(|e| self.write_err((r.start, e)))?;
        }
        disk.sync().map_err(self.terr())?;
        Ok(())
    }

    /// Phase 2: which body chunks are in place, which zero ranges are already zero.
    pub fn scan(&mut self) -> Result<(), Error> {
        self.check_cancel()?;
        let disk = self.req.disk;
        let items = &self.plan.items;
        let body: Vec<usize> = (0..items.len()).filter(|&i| !items[i].held && !items[i].replaced).collect();
        let zero_pieces = split(&self.plan.body_zeros, CHECK_PIECE);
        let total = body.iter().map(|&i| items[i].chunk.len()).sum::<u64>()
            + zero_pieces.iter().map(|r| r.end - r.start).sum::<u64>();
        self.req.progress.phase("checking target", total);
        let in_place: Vec<AtomicBool> = items.iter().map(|_| AtomicBool::new(false)).collect();
        let unreadable: Mutex<Vec<(u64, std::io::Error)>> = Mutex::default();
        self.parallel(body.len(), |k| {
            let c = items[body[k]].chunk;
            match read_pieces(disk, &c.at) {
                Ok(data) => {
                    if Digest::of(&data) == c.sha256 {
                        in_place[body[k]].store(true, Ordering::Relaxed);
                    }
                }
                Err(e) => unreadable.lock().expect("lock poisoned").push((c.offset(), e)),
            }
            self.req.progress.advance(c.len());
            Ok(())
        })?;
        let dirty: Mutex<Vec<Range<u64>>> = Mutex::default();
        self.parallel(zero_pieces.len(), |k| {
            let r = &zero_pieces[k];
            let mut buf = vec![0u8; (r.end - r.start) as usize];
            // Unreadable counts as not zero: zeroing rewrites the sectors.
            if disk.read_exact_at(&mut buf, r.start).is_err() || !is_zero(&buf) {
                dirty.lock().expect("lock poisoned").push(r.clone());
            }
            self.req.progress.advance(r.end - r.start);
            Ok(())
        })?;
        self.dirty_zeros = normalize(dirty.into_inner().expect("lock poisoned"));
        let unreadable = unreadable.into_inner().expect("lock poisoned");
        for (offset, e) in &unreadable {
            warn!(target = %self.req.target.display(), offset, error = %e, "chunk place unreadable; rewriting it");
        }
        self.report.chunks_unreadable = unreadable.len() as u64;

        let mut zero_digests: HashMap<u64, Digest> = HashMap::new();
        for i in 0..items.len() {
            let in_place = if items[i].held { self.kept.contains_key(&i) } else { in_place[i].load(Ordering::Relaxed) };
            if items[i].replaced {
                continue;
            }
            let len = items[i].chunk.len();
            self.how[i] = if in_place {
                self.report.chunks_skipped += 1;
                self.report.bytes_skipped += len;
                How::Skip
            } else if *zero_digests.entry(len).or_insert_with(|| Digest::of(&vec![0u8; len as usize]))
                == items[i].chunk.sha256
            {
                How::Zero
            } else {
                How::Fetch
            };
        }
        // A chunk identical to one already in place is copied from there, verified.
        for i in 0..items.len() {
            if let Some(l) = items[i].same_as {
                if self.how[i] == How::Fetch && self.how[l] == How::Skip {
                    self.how[i] = How::Local(items[l].chunk.at.clone());
                }
            }
        }
        Ok(())
    }

    /// Phase 3: chunks the previous image (the seed) had somewhere on this disk.
    pub fn seed(&mut self) -> Result<(), Error> {
        let Some(seed) = self.opts.seed.as_ref() else { return Ok(()) };
        self.check_cancel()?;
        let disk = self.req.disk;
        let size = disk.size;
        let mut at: HashMap<Digest, &Vec<[u64; 2]>> = HashMap::new();
        for c in seed.all_chunks() {
            if c.ranges().all(|r| r.end <= size) {
                at.entry(c.sha256).or_insert(&c.at);
            }
        }
        let items = &self.plan.items;
        for (i, item) in items.iter().enumerate() {
            if self.how[i] == How::Fetch {
                if let Some(src) = at.get(&item.chunk.sha256) {
                    self.how[i] = How::Local((*src).clone());
                }
            }
        }
        // Everything this deploy will write; a seed source inside it must be read first.
        let mut writes: Vec<Range<u64>> = self.plan.disarm.clone();
        writes.extend(self.dirty_zeros.iter().cloned());
        for (i, item) in items.iter().enumerate() {
            if self.how[i] != How::Skip {
                writes.extend(item.chunk.ranges());
            }
        }
        let writes = normalize(writes);
        let endangered: Vec<usize> = (0..items.len())
            .filter(|&i| match &self.how[i] {
                How::Local(src) => src.iter().any(|&[o, l]| overlaps(&writes, &(o..o + l))),
                _ => false,
            })
            .collect();
        let total: u64 = endangered.iter().map(|&i| items[i].chunk.len()).sum();
        self.req.progress.phase("saving chunks that move", total);
        let stash = self.stash.get_mut().expect("lock poisoned");
        for i in endangered {
            let How::Local(src) = &self.how[i] else { unreachable!("filtered above") };
            let data = read_pieces(disk, src).ok();
            self.req.progress.advance(items[i].chunk.len());
            match data {
                Some(d) if Digest::of(&d) == items[i].chunk.sha256 => {
                    stash.insert(i, d);
                }
                _ => {
                    warn!(chunk = %items[i].chunk.sha256, "seed chunk not found where the seed image says; fetching it");
                    self.how[i] = How::Fetch;
                }
            }
        }
        Ok(())
    }
}

//! Phase 4: zero what must be zero, write every body chunk, flush.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use tracing::warn;

use super::plan::split;
use super::{Counters, Deployment, How};
use crate::digest::{Digest, Hasher};
use crate::error::Error;
use crate::format::Chunk;
use crate::fs::normalize;
use crate::io::read_pieces;
use crate::store::ChunkSource;

/// Zeroing is issued in pieces of this size so a cancel is seen within seconds.
const ZERO_PIECE: u64 = 64 << 20;

impl Deployment<'_> {
    /// Phase 4.
    pub fn write_body(&mut self) -> Result<(), Error> {
        self.check_cancel()?;
        let disk = self.req.disk;
        let zero_pieces = split(&self.dirty_zeros, ZERO_PIECE);
        let zero_total: u64 = zero_pieces.iter().map(|r| r.end - r.start).sum();
        self.req.progress.phase("zeroing", zero_total);
        self.parallel(zero_pieces.len(), |k| {
            let r = &zero_pieces[k];
            disk.zero_range(r.start, r.end - r.start).map_err(|e| self.write_err((r.start, e)))?;
            self.counters.zeroed.fetch_add(r.end - r.start, Ordering::Relaxed);
            self.req.progress.advance(r.end - r.start);
            Ok(())
        })?;

        // Units: an item whose bytes are obtained once, and every identical item written with it.
        let items = &self.plan.items;
        let todo = |i: usize| !items[i].held && !items[i].replaced && self.how[i] != How::Skip;
        let mut followers: HashMap<usize, Vec<usize>> = HashMap::new();
        let mut units: Vec<usize> = Vec::new();
        for i in (0..items.len()).filter(|&i| todo(i)) {
            match items[i].same_as {
                Some(l) if todo(l) && self.how[i] == How::Fetch => followers.entry(l).or_default().push(i),
                _ => units.push(i),
            }
        }
        let total: u64 = (0..items.len()).filter(|&i| todo(i)).map(|i| items[i].chunk.len()).sum();
        self.req.progress.phase("writing", total);
        self.parallel(units.len(), |k| {
            let i = units[k];
            let data = self.obtain(i)?;
            for j in std::iter::once(i).chain(followers.get(&i).into_iter().flatten().copied()) {
                disk.write_pieces(&items[j].chunk.at, &data).map_err(|e| self.write_err(e))?;
                self.counters.written.fetch_add(data.len() as u64, Ordering::Relaxed);
                self.req.progress.advance(data.len() as u64);
            }
            Ok(())
        })?;
        if self.opts.wipe {
            self.req.progress.phase("wiping unused space", 0);
            let mut defined: Vec<std::ops::Range<u64>> =
                self.req.manifest.all_chunks().flat_map(|c| c.ranges()).collect();
            defined.extend(self.req.manifest.defined_zeros());
            defined.extend(self.plan.disarm.iter().cloned());
            for gap in crate::fs::complement(&normalize(defined), 0..disk.size) {
                self.check_cancel()?;
                disk.discard_range(gap.start, gap.end - gap.start).map_err(|e| self.write_err((gap.start, e)))?;
            }
        }
        self.req.progress.phase("flushing", 0);
        disk.sync().map_err(self.terr())?;
        Ok(())
    }

    /// A chunk's verified bytes: zeros, the seed's place on the disk, or the store.
    pub(super) fn obtain(&self, index: usize) -> Result<Vec<u8>, Error> {
        let c = self.plan.items[index].chunk;
        let len = c.len() as usize;
        match &self.how[index] {
            How::Zero => Ok(vec![0u8; len]),
            How::Local(src) => {
                let stashed = self.stash.lock().expect("lock poisoned").remove(&index);
                let data = match stashed {
                    Some(d) => Some(d),
                    None => read_pieces(self.req.disk, src).ok(),
                };
                if let Some(data) = data.filter(|d| Digest::of(d) == c.sha256) {
                    self.counters.local.fetch_add(len as u64, Ordering::Relaxed);
                    self.counters.chunks_local.fetch_add(1, Ordering::Relaxed);
                    return Ok(data);
                }
                warn!(chunk = %c.sha256, "local copy of the chunk changed or is unreadable; fetching it");
                fetch(self.req.source, self.req.image, c, &self.counters)
            }
            How::Fetch | How::Skip => fetch(self.req.source, self.req.image, c, &self.counters),
        }
    }
}

fn fetch(source: &dyn ChunkSource, image: &str, c: &Chunk, counters: &Counters) -> Result<Vec<u8>, Error> {
    let corrupt =
        |reason: String| Error::ChunkCorrupt { image: image.into(), digest: c.sha256, offset: c.offset(), reason };
    let z = source.read_chunk(&c.sha256)?;
    let len = c.len() as usize;
    let data = zstd::bulk::Decompressor::new()
        .and_then(|mut d| d.decompress(&z, len))
        .map_err(|e| corrupt(format!("it does not decompress: {e}")))?;
    if data.len() != len {
        return Err(corrupt(format!("it holds {} bytes, the manifest says {len}", data.len())));
    }
    let mut h = Hasher::new();
    h.update(&data);
    let got = h.finish();
    if got != c.sha256 {
        return Err(corrupt(format!("its content hashes to {}", got.short())));
    }
    counters.fetched.fetch_add(z.len() as u64, Ordering::Relaxed);
    counters.fetched_raw.fetch_add(len as u64, Ordering::Relaxed);
    counters.chunks_fetched.fetch_add(1, Ordering::Relaxed);
    Ok(data)
}

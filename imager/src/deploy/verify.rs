//! Phases 5 and 8: re-read from the device (not the page cache) and compare.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};

use super::plan::{split, CHECK_PIECE};
use super::Deployment;
use crate::blockdev::UncachedReader;
use crate::digest::Digest;
use crate::error::Error;
use crate::fs::nonzero::is_zero;
use crate::io::{read_pieces, ReadAt};

/// Mismatch count and the first offset at fault.
struct Tally {
    bad: AtomicU64,
    first: AtomicU64,
}

impl Tally {
    fn new() -> Tally {
        Tally { bad: AtomicU64::new(0), first: AtomicU64::new(u64::MAX) }
    }
    fn miss(&self, offset: u64) {
        self.bad.fetch_add(1, Ordering::Relaxed);
        self.first.fetch_min(offset, Ordering::Relaxed);
    }
}

impl Deployment<'_> {
    /// Phase 5: every body chunk and body zero range.
    pub fn verify_body(&mut self) -> Result<(), Error> {
        self.check_cancel()?;
        let reader = self.req.disk.uncached_reader(self.req.target).map_err(self.terr())?;
        let items = &self.plan.items;
        let body: Vec<usize> = (0..items.len()).filter(|&i| !items[i].held && !items[i].replaced).collect();
        let tally = Tally::new();
        self.check(&reader, &body, &self.plan.body_zeros, "verifying", &tally)?;
        self.report.verified_by = Some(reader.path());
        self.conclude(tally)?;
        self.body_verified = true;
        Ok(())
    }

    /// Phase 8: the held chunks, the zeros under them, and the rewritten GPT.
    pub fn verify_boot_area(&mut self) -> Result<(), Error> {
        let reader = self.req.disk.uncached_reader(self.req.target).map_err(self.terr())?;
        let items = &self.plan.items;
        let written = self.boot.as_ref().expect("verify_boot_area runs after write_boot_area");
        let relocated_boot = written.boot_buf.is_some();
        let held: Vec<usize> = (0..items.len())
            .filter(|&i| items[i].held && !items[i].replaced && !(relocated_boot && self.plan.is_boot(i)))
            .collect();
        let tally = Tally::new();
        // The rewritten boot area is compared whole, zeros included.
        let zeros: Vec<Range<u64>> = match &written.boot_buf {
            Some(buf) => super::plan::intersect(&self.plan.held_zeros, &[buf.len() as u64..u64::MAX]),
            None => self.plan.held_zeros.clone(),
        };
        self.check(&reader, &held, &zeros, "verifying boot area", &tally)?;
        for (off, want) in
            written.boot_buf.iter().map(|b| (0u64, b)).chain(written.new_backup.iter().map(|(o, b)| (*o, b)))
        {
            let mut got = vec![0u8; want.len()];
            reader.read_exact_at(&mut got, off).map_err(|source| Error::Read {
                path: self.req.target.to_path_buf(),
                offset: off,
                source,
            })?;
            if &got != want {
                tally.miss(off);
            }
        }
        self.report.verified_by = Some(reader.path());
        self.conclude(tally)?;
        // True only when the body was verified too.
        self.report.verified_after_write = self.body_verified;
        Ok(())
    }

    fn check(
        &self,
        reader: &UncachedReader<'_>,
        chunks: &[usize],
        zeros: &[Range<u64>],
        phase: &str,
        tally: &Tally,
    ) -> Result<(), Error> {
        let items = &self.plan.items;
        let zero_pieces = split(zeros, CHECK_PIECE);
        let total = chunks.iter().map(|&i| items[i].chunk.len()).sum::<u64>()
            + zero_pieces.iter().map(|r| r.end - r.start).sum::<u64>();
        self.req.progress.phase(phase, total);
        let read_err = |offset: u64, source| Error::Read { path: self.req.target.to_path_buf(), offset, source };
        self.parallel(chunks.len(), |k| {
            let c = items[chunks[k]].chunk;
            let data = read_pieces(reader, &c.at).map_err(|e| read_err(c.offset(), e))?;
            if Digest::of(&data) != c.sha256 {
                tally.miss(c.offset());
            }
            self.req.progress.advance(c.len());
            Ok(())
        })?;
        self.parallel(zero_pieces.len(), |k| {
            let r = &zero_pieces[k];
            let mut buf = vec![0u8; (r.end - r.start) as usize];
            reader.read_exact_at(&mut buf, r.start).map_err(|e| read_err(r.start, e))?;
            if !is_zero(&buf) {
                let at = buf.iter().position(|&b| b != 0).unwrap_or(0) as u64;
                tally.miss(r.start + at);
            }
            self.req.progress.advance(r.end - r.start);
            Ok(())
        })
    }

    fn conclude(&self, tally: Tally) -> Result<(), Error> {
        let bad = tally.bad.into_inner();
        if bad > 0 {
            return Err(Error::VerifyFailed {
                path: self.req.target.to_path_buf(),
                image: self.req.image.into(),
                mismatches: bad,
                first_offset: tally.first.into_inner(),
            });
        }
        Ok(())
    }
}

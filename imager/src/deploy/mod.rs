//! Deploy: write an image to a disk so that it boots only once every byte it defines is there.
//!
//! Named phases over a [`Plan`], in this order, each a method of [`Deployment`]:
//! 1. **disarm** ([`Deployment::disarm`]): read the held chunks' places (a rerun keeps what is
//!    already right), then zero the boot area and the last sectors: from here on neither the
//!    old system nor a half-written new one can boot.
//! 2. **scan**: read the target at every chunk's place (chunks in place are skipped: a rerun
//!    or a disk holding an older version only fetches what differs; an unreadable place is
//!    rewritten) and over every zero range the image defines (only those not already zero
//!    are zeroed).
//! 3. **seed** (optional): chunks a previous image had somewhere on the disk are copied from
//!    there, verified; sources this deploy overwrites are read first.
//! 4. **write body**: zero the dirty zero ranges, fetch, verify and write every chunk that is
//!    not held (identical chunks fetched once), on all cores; flush.
//! 5. **verify body**: re-read every chunk and zero range from the device, not the page cache.
//! 6. (the caller's step: the agent shrinks the last file system when the plan shrinks its
//!    partition, applies the department profile, then grows the last file system when the plan
//!    grows its partition, see [`Deployment::resize`])
//! 7. **boot area**: the held chunks, all fetched and verified before the first is written;
//!    the last partition's end moved when it grows, the GPT moved to the end of a target of
//!    another size; flush; partition table re-read.
//! 8. **verify boot area**, from the device.
//!
//! A failure or a cancel anywhere before 7 leaves the disk unbootable.

mod boot;
pub mod plan;
mod scan;
mod verify;
mod write;

use std::collections::HashMap;
use std::ops::Range;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Serialize;
use tracing::info;

use crate::blockdev::{Disk, ReadPath};
use crate::error::Error;
use crate::format::Manifest;
use crate::progress::Progress;
use crate::store::ChunkSource;

pub use plan::{smallest_target, Fit, Plan, PlanError, Resize};

#[derive(Debug, Default, Clone)]
pub struct DeployOptions {
    /// Re-read everything written, from the device, and compare it with the manifest.
    pub verify: bool,
    /// The image the target held before, to reuse its chunks in place.
    pub seed: Option<Manifest>,
    /// Zero (or discard, on a device) every range the image does not define.
    pub wipe: bool,
    /// Fetch-and-write workers; 0 means one per core.
    pub threads: usize,
    /// Set by someone else (the agent, when the appliance cancels the task): the deploy stops
    /// at its next chunk with [`Error::Cancelled`].
    pub cancel: Option<Arc<AtomicBool>>,
    /// Let the last partition take the rest of a larger target, or shrink onto a smaller one
    /// when its used blocks fit. The table says so; resizing the file system is the caller's
    /// step (see [`Deployment::resize`]).
    pub fit: Fit,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct DeployReport {
    pub image: String,
    pub digest: String,
    pub target: String,
    pub target_size: u64,
    pub image_bytes: u64,
    /// Bytes the image defines as zeros (outside chunks).
    pub zero_bytes: u64,
    /// Compressed bytes read from the store.
    pub bytes_fetched: u64,
    /// Uncompressed bytes of the chunks fetched.
    pub bytes_fetched_raw: u64,
    /// Bytes taken from the seed image's places on the target (verified).
    pub bytes_copied_local: u64,
    /// Bytes already in place on the target (verified).
    pub bytes_skipped: u64,
    /// Bytes written to the target (chunks, zero chunks, boot area).
    pub bytes_written: u64,
    /// Bytes of defined zero ranges that were not zero on the target and were zeroed.
    pub bytes_zeroed: u64,
    pub chunks: u64,
    pub chunks_fetched: u64,
    pub chunks_local: u64,
    pub chunks_skipped: u64,
    /// Chunks whose place could not be read during the scan (bad sectors): rewritten.
    pub chunks_unreadable: u64,
    pub gpt_relocated: bool,
    /// The last partition as it was grown to the end of the target or shrunk onto it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resized: Option<Resize>,
    /// Why the last partition kept the image's size although growth was asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grow_skipped: Option<String>,
    /// True when every chunk and zero range was re-read from the device and matched.
    pub verified_after_write: bool,
    /// How the re-read got its bytes (`direct`: O_DIRECT; `cache-dropped`: after dropping the
    /// page cache, on file systems without O_DIRECT).
    pub verified_by: Option<ReadPath>,
    pub seconds: f64,
}

/// What a deploy works on.
#[derive(Clone, Copy)]
pub struct Request<'a> {
    pub source: &'a dyn ChunkSource,
    /// How the image is named in messages.
    pub image: &'a str,
    pub manifest: &'a Manifest,
    pub disk: &'a Disk,
    pub target: &'a Path,
    pub progress: &'a dyn Progress,
}

impl std::fmt::Debug for Request<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request").field("image", &self.image).field("target", &self.target).finish()
    }
}

/// Where a chunk's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum How {
    Skip,
    Zero,
    Local(Vec<[u64; 2]>),
    Fetch,
}

#[derive(Debug, Default)]
struct Counters {
    fetched: AtomicU64,
    fetched_raw: AtomicU64,
    local: AtomicU64,
    written: AtomicU64,
    zeroed: AtomicU64,
    chunks_fetched: AtomicU64,
    chunks_local: AtomicU64,
}

/// One deploy in progress; call the phases in order, or [`deploy`] for all of them.
pub struct Deployment<'a> {
    req: Request<'a>,
    opts: DeployOptions,
    plan: Plan<'a>,
    how: Vec<How>,
    /// Held chunks found in place before the disarm zeroed them.
    kept: HashMap<usize, Vec<u8>>,
    /// Seed chunks read before this deploy overwrites their source.
    stash: Mutex<HashMap<usize, Vec<u8>>>,
    /// Body zero ranges the scan found not zero (or unreadable).
    dirty_zeros: Vec<Range<u64>>,
    counters: Counters,
    /// What the boot-area phase wrote, for its verification.
    boot: Option<boot::Written>,
    body_verified: bool,
    report: DeployReport,
    started: Instant,
    workers: usize,
}

impl std::fmt::Debug for Deployment<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deployment").field("req", &self.req).field("report", &self.report).finish()
    }
}

/// Resolves `reference` in `source`: its manifest, checked, and the file or device at `target`
/// opened for writing (a missing file is created at the image's size).
pub fn open_target(source: &dyn ChunkSource, reference: &str, target: &Path) -> Result<(Manifest, Disk), Error> {
    let digest = source.resolve(reference)?;
    let manifest = Manifest::decode(&source.read_manifest(&digest)?, Some(digest))?;
    let disk = Disk::open_write(target, manifest.disk.size)
        .map_err(|source| Error::Target { path: target.to_path_buf(), source })?;
    Ok((manifest, disk))
}

/// Every phase in order, nothing between the body and the boot area.
pub fn deploy(req: Request<'_>, opts: DeployOptions) -> Result<DeployReport, Error> {
    let verify = opts.verify;
    let mut d = Deployment::new(req, opts)?;
    d.write_and_verify_body()?;
    d.write_boot_area()?;
    if verify {
        d.verify_boot_area()?;
    }
    Ok(d.finish())
}

impl<'a> Deployment<'a> {
    pub fn new(req: Request<'a>, opts: DeployOptions) -> Result<Deployment<'a>, Error> {
        let plan =
            Plan::new(req.manifest, req.disk.size, req.disk.logical_sector_size, opts.fit).map_err(|e| match e {
                PlanError::TooSmall { target_size, needed, why } => Error::TargetTooSmall {
                    path: req.target.to_path_buf(),
                    image: req.image.into(),
                    target_size,
                    needed,
                    why: why.map(|w| format!(": {w}")).unwrap_or_default(),
                },
                e @ PlanError::SectorSize { .. } => {
                    Error::Relocate { target_size: req.disk.size, reason: e.to_string() }
                }
            })?;
        let report = DeployReport {
            image: req.image.to_string(),
            digest: req.manifest.digest().to_hex(),
            target: req.target.display().to_string(),
            target_size: req.disk.size,
            image_bytes: req.manifest.used_bytes(),
            zero_bytes: plan.zero_bytes(),
            chunks: plan.items.len() as u64,
            gpt_relocated: plan.relocate,
            resized: plan.resize.clone(),
            grow_skipped: plan.grow_skipped.clone(),
            ..Default::default()
        };
        let how = vec![How::Fetch; plan.items.len()];
        Ok(Deployment {
            req,
            workers: crate::capture::worker_count(opts.threads),
            opts,
            plan,
            how,
            kept: HashMap::new(),
            stash: Mutex::default(),
            dirty_zeros: Vec::new(),
            counters: Counters::default(),
            boot: None,
            body_verified: false,
            report,
            started: Instant::now(),
        })
    }

    /// Phases 1 to 5: after this the disk holds every chunk and zero range of the body,
    /// verified from the device when asked, and still cannot boot.
    pub fn write_and_verify_body(&mut self) -> Result<(), Error> {
        self.disarm()?;
        self.scan()?;
        self.seed()?;
        self.write_body()?;
        if self.opts.verify {
            self.verify_body()?;
        }
        Ok(())
    }

    pub fn finish(mut self) -> DeployReport {
        let c = &self.counters;
        let r = &mut self.report;
        r.bytes_fetched = c.fetched.load(Ordering::Relaxed);
        r.bytes_fetched_raw = c.fetched_raw.load(Ordering::Relaxed);
        r.bytes_copied_local = c.local.load(Ordering::Relaxed);
        r.bytes_written = c.written.load(Ordering::Relaxed);
        r.bytes_zeroed = c.zeroed.load(Ordering::Relaxed);
        r.chunks_fetched = c.chunks_fetched.load(Ordering::Relaxed);
        r.chunks_local = c.chunks_local.load(Ordering::Relaxed);
        r.seconds = self.started.elapsed().as_secs_f64();
        info!(image = %r.image, target = %r.target, fetched = r.bytes_fetched, written = r.bytes_written,
              zeroed = r.bytes_zeroed, verified = r.verified_after_write, "image deployed");
        self.report
    }

    /// The partition the boot area will end elsewhere than the image does, if any: its file
    /// system must be resized to `start..start + length` before [`Deployment::write_boot_area`]
    /// (a shrink before anything mounts it: its superblock still claims the image's size).
    pub fn resize(&self) -> Option<&Resize> {
        self.plan.resize.as_ref()
    }

    /// The report so far (counters as of now).
    pub fn report(&self) -> &DeployReport {
        &self.report
    }

    fn check_cancel(&self) -> Result<(), Error> {
        match &self.opts.cancel {
            Some(c) if c.load(Ordering::Relaxed) => Err(Error::Cancelled { path: self.req.target.to_path_buf() }),
            _ => Ok(()),
        }
    }

    fn terr(&self) -> impl Fn(std::io::Error) -> Error + '_ {
        |source| Error::Target { path: self.req.target.to_path_buf(), source }
    }

    fn write_err(&self, (offset, source): (u64, std::io::Error)) -> Error {
        Error::Write { path: self.req.target.to_path_buf(), offset, source }
    }

    /// Runs `f(0..n)` on the deploy's workers, stopping at the first error or a cancel.
    fn parallel<F>(&self, n: usize, f: F) -> Result<(), Error>
    where
        F: Fn(usize) -> Result<(), Error> + Sync,
    {
        let cancel = self.opts.cancel.as_deref();
        let target = self.req.target;
        parallel(self.workers, n, |i| {
            if cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
                return Err(Error::Cancelled { path: target.to_path_buf() });
            }
            f(i)
        })
    }
}

/// Runs `f(0..n)` on `workers` threads, stopping at the first error.
fn parallel<F>(workers: usize, n: usize, f: F) -> Result<(), Error>
where
    F: Fn(usize) -> Result<(), Error> + Sync,
{
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let first_err: Mutex<Option<(usize, Error)>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..workers.max(1) {
            s.spawn(|| loop {
                if failed.load(Ordering::Relaxed) {
                    return;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return;
                }
                if let Err(e) = f(i) {
                    failed.store(true, Ordering::Relaxed);
                    let mut slot = first_err.lock().expect("lock poisoned");
                    // Report the earliest failing item, whichever thread saw it first.
                    if slot.as_ref().is_none_or(|(j, _)| i < *j) {
                        *slot = Some((i, e));
                    }
                    return;
                }
            });
        }
    });
    match first_err.into_inner().expect("lock poisoned") {
        Some((_, e)) => Err(e),
        None => Ok(()),
    }
}

/// True when `r` overlaps any of the sorted, merged `ranges`.
fn overlaps(ranges: &[Range<u64>], r: &Range<u64>) -> bool {
    let i = ranges.partition_point(|x| x.end <= r.start);
    ranges.get(i).is_some_and(|x| x.start < r.end)
}

#[cfg(test)]
mod tests;

//! Deploy: write an image to a disk so that it boots only once every byte is verified.
//!
//! 1. Check the target is large enough and read it at every chunk's place: chunks already
//!    there are skipped (a rerun after an interruption, or a disk holding an older version,
//!    only fetches what differs).
//! 2. With a seed image (what the disk held before), chunks the old image had anywhere on
//!    the disk are read from there and verified instead of fetched. A source that this
//!    deploy will overwrite is read first and kept in memory, so chunks may swap places.
//! 3. Zero the first MiB and the last sectors (so neither the old nor a half-written new
//!    system can boot, and firmware cannot recover a stale GPT from its backup), then fetch,
//!    verify and write every other chunk on all cores, and flush.
//! 4. Last, write the chunks of the boot area and the GPT backup (moved to the end of a
//!    target of another size), flush, and ask the kernel to re-read the partition table.

use std::collections::HashMap;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use serde::Serialize;
use tracing::{info, warn};

use crate::blockdev::Disk;
use crate::digest::{Digest, Hasher};
use crate::error::Error;
use crate::format::table::{self, TableKind};
use crate::format::{Chunk, Manifest};
use crate::io::{read_pieces, write_pieces};
use crate::progress::Progress;
use crate::store::ChunkSource;

/// The area zeroed first and written last at the start of the disk.
const HEAD: u64 = 1 << 20;

#[derive(Debug, Default, Clone)]
pub struct DeployOptions {
    /// Re-read everything written and compare it with the manifest.
    pub verify: bool,
    /// The image the target held before, to reuse its chunks in place.
    pub seed: Option<Manifest>,
    /// Zero (or discard, on a device) every range the image does not use.
    pub wipe: bool,
    /// Fetch-and-write workers; 0 means one per core.
    pub threads: usize,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct DeployReport {
    pub image: String,
    pub digest: String,
    pub target: String,
    pub target_size: u64,
    pub image_bytes: u64,
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
    pub chunks: u64,
    pub chunks_fetched: u64,
    pub chunks_local: u64,
    pub chunks_skipped: u64,
    pub gpt_relocated: bool,
    /// True when every written byte was re-read and matched (`--verify`).
    pub verified_after_write: bool,
    pub seconds: f64,
}

#[derive(Debug, Clone)]
enum Plan {
    Skip,
    Zero,
    Local(Vec<[u64; 2]>),
    Fetch,
}

struct Item<'m> {
    chunk: &'m Chunk,
    plan: Plan,
    /// Written last (boot area, end of disk).
    held: bool,
    /// GPT backup chunk replaced by a regenerated backup on a target of another size.
    replaced: bool,
}

#[derive(Default)]
struct Counters {
    fetched: AtomicU64,
    fetched_raw: AtomicU64,
    local: AtomicU64,
    written: AtomicU64,
    chunks_fetched: AtomicU64,
    chunks_local: AtomicU64,
}

/// Resolves `reference` in `source` and deploys it to the file or device at `target`.
pub fn deploy_path(
    source: &dyn ChunkSource,
    reference: &str,
    target: &Path,
    opts: &DeployOptions,
    progress: &dyn Progress,
) -> Result<DeployReport, Error> {
    let digest = source.resolve(reference)?;
    let manifest = Manifest::decode(&source.read_manifest(&digest)?, Some(digest))?;
    let disk = Disk::open_write(target, manifest.disk.size)
        .map_err(|source| Error::Target { path: target.to_path_buf(), source })?;
    deploy(source, reference, &manifest, &disk, target, opts, progress)
}

pub fn deploy(
    source: &dyn ChunkSource,
    image: &str,
    manifest: &Manifest,
    disk: &Disk,
    target: &Path,
    opts: &DeployOptions,
    progress: &dyn Progress,
) -> Result<DeployReport, Error> {
    let started = Instant::now();
    let digest = manifest.digest();
    let terr = |source: std::io::Error| Error::Target { path: target.to_path_buf(), source };
    let needed = manifest.min_target_size();
    if disk.size < needed {
        return Err(Error::TargetTooSmall {
            path: target.to_path_buf(),
            image: image.into(),
            target_size: disk.size,
            needed,
        });
    }
    let ss = manifest.disk.logical_sector_size;
    if manifest.table != TableKind::None && disk.logical_sector_size != ss {
        return Err(Error::Relocate {
            target_size: disk.size,
            reason: format!("the image has {ss}-byte sectors, the target {}-byte sectors", disk.logical_sector_size),
        });
    }
    let relocate = manifest.table == TableKind::Gpt && disk.size != manifest.disk.size;
    let tail_len = manifest.backup_area.as_ref().map_or(0, |b| b.length).max(33 * u64::from(ss)).min(disk.size);
    let zero_ranges = vec![0..HEAD.min(disk.size), disk.size - tail_len..disk.size];

    let mut items: Vec<Item> = Vec::new();
    let boot = &manifest.boot_area.chunks;
    let backup: &[Chunk] = manifest.backup_area.as_ref().map_or(&[], |b| &b.chunks);
    for c in boot.iter() {
        items.push(Item { chunk: c, plan: Plan::Fetch, held: true, replaced: false });
    }
    for c in manifest.partitions.iter().flat_map(|p| p.chunks.iter()) {
        let held = c.ranges().any(|r| overlaps(&zero_ranges, &r));
        items.push(Item { chunk: c, plan: Plan::Fetch, held, replaced: false });
    }
    for c in backup {
        items.push(Item { chunk: c, plan: Plan::Fetch, held: true, replaced: relocate });
    }
    let mut report = DeployReport {
        image: image.to_string(),
        digest: digest.to_hex(),
        target: target.display().to_string(),
        target_size: disk.size,
        image_bytes: manifest.used_bytes(),
        chunks: items.len() as u64,
        gpt_relocated: relocate,
        ..Default::default()
    };
    let workers = crate::capture::worker_count(opts.threads);

    // 1. What is already in place. Held chunks found in place keep their bytes: the head
    //    and tail are zeroed before they are written back.
    let scan_total: u64 = items.iter().filter(|i| !i.replaced).map(|i| i.chunk.len()).sum();
    progress.phase("checking target", scan_total);
    let kept: Mutex<HashMap<usize, Vec<u8>>> = Mutex::default();
    let in_place: Vec<AtomicBool> = items.iter().map(|_| AtomicBool::new(false)).collect();
    parallel(workers, items.len(), |i| {
        let item = &items[i];
        if item.replaced {
            return Ok(());
        }
        let data = read_pieces(&disk.file, &item.chunk.at).map_err(terr)?;
        progress.advance(data.len() as u64);
        if Digest::of(&data) == item.chunk.sha256 {
            in_place[i].store(true, Ordering::Relaxed);
            if item.held {
                kept.lock().expect("lock poisoned").insert(i, data);
            }
        }
        Ok(())
    })?;
    let mut kept = kept.into_inner().expect("lock poisoned");
    let mut zero_digests: HashMap<u64, Digest> = HashMap::new();
    for (i, item) in items.iter_mut().enumerate() {
        if in_place[i].load(Ordering::Relaxed) {
            item.plan = Plan::Skip;
            report.chunks_skipped += 1;
            report.bytes_skipped += item.chunk.len();
        } else {
            let len = item.chunk.len();
            let zd = *zero_digests.entry(len).or_insert_with(|| Digest::of(&vec![0u8; len as usize]));
            if item.chunk.sha256 == zd {
                item.plan = Plan::Zero;
            }
        }
    }

    // 2. Seed: chunks the previous image had somewhere on this disk.
    let mut stash: HashMap<usize, Vec<u8>> = HashMap::new();
    if let Some(seed) = &opts.seed {
        let mut at: HashMap<Digest, &Vec<[u64; 2]>> = HashMap::new();
        for c in seed.all_chunks() {
            if c.ranges().all(|r| r.end <= disk.size) {
                at.entry(c.sha256).or_insert(&c.at);
            }
        }
        for item in items.iter_mut() {
            if matches!(item.plan, Plan::Fetch) {
                if let Some(src) = at.get(&item.chunk.sha256) {
                    item.plan = Plan::Local((*src).clone());
                }
            }
        }
        // Everything this deploy will write; a seed source inside it must be read first.
        let mut writes: Vec<Range<u64>> = zero_ranges.clone();
        for item in items.iter().filter(|i| !matches!(i.plan, Plan::Skip)) {
            writes.extend(item.chunk.ranges());
        }
        if relocate {
            writes.push(disk.size - tail_len..disk.size);
        }
        let writes = crate::fs::normalize(writes);
        let endangered: Vec<usize> = items
            .iter()
            .enumerate()
            .filter(|(_, it)| match &it.plan {
                Plan::Local(src) => src.iter().any(|&[o, l]| overlaps(&writes, &(o..o + l))),
                _ => false,
            })
            .map(|(i, _)| i)
            .collect();
        let total: u64 = endangered.iter().map(|&i| items[i].chunk.len()).sum();
        progress.phase("saving chunks that move", total);
        for i in endangered {
            let Plan::Local(src) = &items[i].plan else { unreachable!() };
            let data = read_pieces(&disk.file, src).map_err(terr)?;
            progress.advance(data.len() as u64);
            if Digest::of(&data) == items[i].chunk.sha256 {
                stash.insert(i, data);
            } else {
                warn!(chunk = %items[i].chunk.sha256, "seed chunk not found where the seed image says; fetching it");
                items[i].plan = Plan::Fetch;
            }
        }
    }

    // 3. Zero head and tail, then every chunk that is not held back.
    for r in &zero_ranges {
        disk.zero_range(r.start, r.end - r.start).map_err(terr)?;
    }
    let counters = Counters::default();
    let stash = Mutex::new(stash);
    let todo: Vec<usize> =
        (0..items.len()).filter(|&i| !items[i].held && !matches!(items[i].plan, Plan::Skip)).collect();
    let total: u64 = todo.iter().map(|&i| items[i].chunk.len()).sum();
    progress.phase("writing", total);
    parallel(workers, todo.len(), |k| {
        let i = todo[k];
        let data = obtain(source, image, &items[i], i, &stash, disk, &counters, &terr)?;
        write_pieces(&disk.file, &items[i].chunk.at, &data).map_err(terr)?;
        counters.written.fetch_add(data.len() as u64, Ordering::Relaxed);
        progress.advance(data.len() as u64);
        Ok(())
    })?;
    if opts.wipe {
        progress.phase("wiping unused space", 0);
        let mut used: Vec<Range<u64>> = manifest.all_chunks().flat_map(|c| c.ranges()).collect();
        used.extend(zero_ranges.iter().cloned());
        for gap in complement(&crate::fs::normalize(used), disk.size) {
            disk.discard_range(gap.start, gap.end - gap.start).map_err(terr)?;
        }
    }
    progress.phase("flushing", 0);
    disk.sync().map_err(terr)?;

    // 4. Held chunks: all fetched and verified before the first of them is written.
    progress.phase("writing boot area", 0);
    let mut held: Vec<(usize, Vec<u8>)> = Vec::new();
    for (i, item) in items.iter().enumerate().filter(|(_, it)| it.held) {
        let data = match kept.remove(&i) {
            Some(d) => d,
            None => obtain(source, image, item, i, &stash, disk, &counters, &terr)?,
        };
        held.push((i, data));
    }
    let boot_len = manifest.boot_area.length.min(disk.size);
    let mut boot_buf: Option<Vec<u8>> = None;
    let mut new_backup: Option<(u64, Vec<u8>)> = None;
    if relocate {
        let mut buf = vec![0u8; boot_len as usize];
        for (i, data) in &held {
            copy_into(&mut buf, &items[*i].chunk.at, data);
        }
        let (at, bytes) = table::relocate_gpt(&mut buf, ss, disk.size)
            .map_err(|e| Error::Relocate { target_size: disk.size, reason: e.to_string() })?;
        boot_buf = Some(buf);
        new_backup = Some((at, bytes));
    }
    // Everything but the first sectors, then the backup, then the head, with flushes between.
    let is_boot = |i: usize| i < boot.len();
    for (i, data) in held.iter().filter(|(i, _)| !is_boot(*i) && !items[*i].replaced) {
        write_pieces(&disk.file, &items[*i].chunk.at, data).map_err(terr)?;
        counters.written.fetch_add(data.len() as u64, Ordering::Relaxed);
    }
    if let Some((at, bytes)) = &new_backup {
        disk.file.write_all_at(bytes, *at).map_err(terr)?;
        counters.written.fetch_add(bytes.len() as u64, Ordering::Relaxed);
    }
    disk.sync().map_err(terr)?;
    match &boot_buf {
        Some(buf) => {
            disk.file.write_all_at(buf, 0).map_err(terr)?;
            counters.written.fetch_add(buf.len() as u64, Ordering::Relaxed);
        }
        None => {
            for (i, data) in held.iter().filter(|(i, _)| is_boot(*i)) {
                write_pieces(&disk.file, &items[*i].chunk.at, data).map_err(terr)?;
                counters.written.fetch_add(data.len() as u64, Ordering::Relaxed);
            }
        }
    }
    disk.sync().map_err(terr)?;
    disk.reread_partitions().map_err(terr)?;

    report.bytes_fetched = counters.fetched.load(Ordering::Relaxed);
    report.bytes_fetched_raw = counters.fetched_raw.load(Ordering::Relaxed);
    report.bytes_copied_local = counters.local.load(Ordering::Relaxed);
    report.bytes_written = counters.written.load(Ordering::Relaxed);
    report.chunks_fetched = counters.chunks_fetched.load(Ordering::Relaxed);
    report.chunks_local = counters.chunks_local.load(Ordering::Relaxed);

    // 5. Optional re-read of everything.
    if opts.verify {
        let total: u64 = items.iter().map(|i| i.chunk.len()).sum();
        progress.phase("verifying", total);
        let mismatches = AtomicU64::new(0);
        let first = AtomicU64::new(u64::MAX);
        parallel(workers, items.len(), |i| {
            let item = &items[i];
            if item.replaced || (relocate && is_boot(i)) {
                return Ok(());
            }
            let data = read_pieces(&disk.file, &item.chunk.at).map_err(terr)?;
            progress.advance(data.len() as u64);
            if Digest::of(&data) != item.chunk.sha256 {
                mismatches.fetch_add(1, Ordering::Relaxed);
                first.fetch_min(item.chunk.offset(), Ordering::Relaxed);
            }
            Ok(())
        })?;
        let mut bad = mismatches.into_inner();
        let mut first_offset = first.into_inner();
        if let (Some(buf), Some((at, bytes))) = (&boot_buf, &new_backup) {
            for (off, want) in [(0u64, buf), (*at, bytes)] {
                let mut got = vec![0u8; want.len()];
                disk.file.read_exact_at(&mut got, off).map_err(terr)?;
                if &got != want {
                    bad += 1;
                    first_offset = first_offset.min(off);
                }
            }
        }
        if bad > 0 {
            return Err(Error::VerifyFailed {
                path: target.to_path_buf(),
                image: image.into(),
                mismatches: bad,
                first_offset,
            });
        }
        report.verified_after_write = true;
    }
    report.seconds = started.elapsed().as_secs_f64();
    info!(image, target = %target.display(), fetched = report.bytes_fetched, written = report.bytes_written, "image deployed");
    Ok(report)
}

/// Gets a chunk's verified bytes: zeros, the seed's place on the disk, or the store.
#[allow(clippy::too_many_arguments)]
fn obtain(
    source: &dyn ChunkSource,
    image: &str,
    item: &Item,
    index: usize,
    stash: &Mutex<HashMap<usize, Vec<u8>>>,
    disk: &Disk,
    counters: &Counters,
    terr: &dyn Fn(std::io::Error) -> Error,
) -> Result<Vec<u8>, Error> {
    let c = item.chunk;
    let len = c.len() as usize;
    match &item.plan {
        Plan::Zero => Ok(vec![0u8; len]),
        Plan::Local(src) => {
            let stashed = stash.lock().expect("lock poisoned").remove(&index);
            let data = match stashed {
                Some(d) => d,
                None => read_pieces(&disk.file, src).map_err(terr)?,
            };
            if Digest::of(&data) == c.sha256 {
                counters.local.fetch_add(len as u64, Ordering::Relaxed);
                counters.chunks_local.fetch_add(1, Ordering::Relaxed);
                return Ok(data);
            }
            warn!(chunk = %c.sha256, "seed chunk changed on disk; fetching it");
            fetch(source, image, c, counters)
        }
        Plan::Fetch | Plan::Skip => fetch(source, image, c, counters),
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

/// True when `r` overlaps any of the sorted, merged `ranges`.
fn overlaps(ranges: &[Range<u64>], r: &Range<u64>) -> bool {
    let i = ranges.partition_point(|x| x.end <= r.start);
    ranges.get(i).is_some_and(|x| x.start < r.end)
}

fn complement(used: &[Range<u64>], size: u64) -> Vec<Range<u64>> {
    let mut out = Vec::new();
    let mut at = 0;
    for r in used {
        if r.start > at {
            out.push(at..r.start.min(size));
        }
        at = at.max(r.end);
    }
    if at < size {
        out.push(at..size);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlap_and_complement() {
        let r = vec![0..10, 20..30];
        assert!(overlaps(&r, &(5..6)));
        assert!(overlaps(&r, &(9..21)));
        assert!(!overlaps(&r, &(10..20)));
        assert!(!overlaps(&r, &(30..40)));
        assert_eq!(complement(&r, 50), vec![10..20, 30..50]);
        assert_eq!(complement(&[], 5), vec![0..5]);
    }
}

//! Capture: read a disk's partition table and used blocks, cut them into chunks, hash and
//! compress them on every core, store the new ones, then publish the manifest and the name.
//!
//! Pipeline: one reader thread gathers each chunk's pieces from the source; worker threads
//! hash, look the digest up in the store, compress and store what is new; the caller's
//! thread collects results in order. Nothing is published until every chunk is durable, so
//! a capture that fails or is killed leaves only orphan chunks for `gc`.

use std::ops::Range;
use std::path::Path;
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Serialize;
use tracing::{info, warn};

use crate::blockdev::Disk;
use crate::digest::{Digest, Hasher};
use crate::error::Error;
use crate::format::chunking::{self, DEFAULT_CHUNK_SIZE};
use crate::format::table::{self, TableKind};
use crate::format::{Chunk, DiskInfo, Manifest, Partition, Region, FORMAT_NAME, FORMAT_VERSION};
use crate::fs::{self, nonzero, FsKind, MapMethod};
use crate::io::{read_pieces, ReadAt, Slice};
use crate::progress::Progress;
use crate::store::DirStore;

/// zstd level: 6 is the lowest level whose output is no larger than partclone piped to
/// `zstd -3` on the reference disks (per-chunk frames lose cross-chunk matches that a single
/// stream keeps); it doubles compression CPU over level 3 for 0.6% less data, and capture
/// still runs faster than partclone. Decompression speed does not depend on the level.
pub const DEFAULT_LEVEL: i32 = 6;

#[derive(Debug, Clone)]
pub struct CaptureOptions {
    pub chunk_size: u64,
    pub zstd_level: i32,
    /// Hash-and-compress workers; 0 means one per core.
    pub threads: usize,
    /// Capture a Windows system sysprep did not generalize (a warning instead of a refusal).
    pub allow_not_generalized: bool,
}

impl Default for CaptureOptions {
    fn default() -> Self {
        CaptureOptions {
            chunk_size: DEFAULT_CHUNK_SIZE,
            zstd_level: DEFAULT_LEVEL,
            threads: 0,
            allow_not_generalized: false,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct CaptureReport {
    pub name: String,
    pub version: u32,
    pub digest: Digest,
    pub source: String,
    pub disk_size: u64,
    pub table: TableKind,
    pub partitions: Vec<PartitionSummary>,
    /// What the pre-flight gate reported and let through (warnings).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub findings: Vec<crate::preflight::Finding>,
    pub used_bytes: u64,
    pub chunks: u64,
    pub new_chunks: u64,
    /// Compressed bytes added to the store by this capture.
    pub stored_bytes: u64,
    /// Compressed size of the whole image (new and already stored chunks).
    pub compressed_bytes: u64,
    pub seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct PartitionSummary {
    pub number: u32,
    pub fs: FsKind,
    pub map: MapMethod,
    pub length: u64,
    pub used_bytes: u64,
    /// Why the file system's own map could not be used, when it fell back to a scan.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
    /// Allocated files not stored (Windows' pagefile, hibernation and swap files).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<crate::fs::Skipped>,
    /// What the map did the safe way (stored bytes it could have left out), and why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// Captures the disk or image file at `path` into `store` as `name`.
pub fn capture_path(
    path: &Path,
    store: &DirStore,
    name: &str,
    opts: &CaptureOptions,
    progress: &dyn Progress,
) -> Result<CaptureReport, Error> {
    crate::store::validate_name(name)?;
    let src_err = |source| Error::Source { path: path.to_path_buf(), source };
    let disk = Disk::open_read(path).map_err(src_err)?;
    capture(&disk.file, disk.size, disk.logical_sector_size, &path.display().to_string(), store, name, opts, progress)
}

/// The partitions to map: the table's, or the whole disk as one.
fn entries(t: &table::Table, size: u64) -> Vec<table::PartEntry> {
    match t.kind {
        TableKind::None => vec![table::PartEntry {
            number: 0,
            start: 0,
            length: size,
            type_id: String::new(),
            uuid: String::new(),
            name: String::new(),
        }],
        _ => t.partitions.clone(),
    }
}

/// The pre-flight gate alone, as the capture runs it first (metadata only, seconds): its
/// warnings, or [`Error::Preflight`] with every finding when it refuses.
pub fn gate_path(path: &Path, allow_not_generalized: bool) -> Result<Vec<crate::preflight::Finding>, Error> {
    let src_err = |source| Error::Source { path: path.to_path_buf(), source };
    let disk = Disk::open_read(path).map_err(src_err)?;
    let t = table::parse(&disk.file, disk.size, disk.logical_sector_size)?;
    let mut findings = Vec::new();
    for e in entries(&t, disk.size) {
        let part = Slice::new(&disk.file, e.start, e.length);
        let (map, _) = fs::used_map(&part, e.length);
        findings.extend(crate::preflight::check(&part, e.length, e.number, map.fs, allow_not_generalized));
    }
    if findings.iter().any(|f| f.severity == crate::preflight::Severity::Refuse) {
        return Err(Error::Preflight(crate::preflight::Findings(findings)));
    }
    Ok(findings)
}

/// One chunk to produce: where its bytes come from.
struct Job {
    index: usize,
    pieces: Vec<[u64; 2]>,
}

struct Done {
    index: usize,
    digest: Digest,
    stored_len: u64,
    new: bool,
}

/// Captures from any positional reader (a file, a device, a buffer in tests).
#[allow(clippy::too_many_arguments)]
pub fn capture(
    src: &dyn ReadAt,
    size: u64,
    sector_size: u32,
    source_desc: &str,
    store: &DirStore,
    name: &str,
    opts: &CaptureOptions,
    progress: &dyn Progress,
) -> Result<CaptureReport, Error> {
    let started = Instant::now();
    crate::store::validate_name(name)?;
    let _lock = store.lock_shared()?;
    let src_err = |source| Error::Source { path: source_desc.into(), source };
    let cs = opts.chunk_size;

    // 1. Layout: partition table, then a used map per partition.
    progress.phase("scanning", 0);
    let table = table::parse(src, size, sector_size)?;
    let boot_len = table.boot_area_len(size);
    let boot_ranges = nonzero_ranges(src, 0, boot_len).map_err(src_err)?;
    let mut parts = Vec::new();
    let mut summaries = Vec::new();
    let mut findings = Vec::new();
    let entries = entries(&table, size);
    for e in &entries {
        let (map, err) = fs::used_map(&Slice::new(src, e.start, e.length), e.length);
        if let Some(err) = &err {
            warn!(partition = e.number, error = %err, "file system map unusable, storing non-zero blocks");
        }
        info!(partition = e.number, fs = ?map.fs, used = map.used_bytes(), "partition mapped");
        summaries.push(PartitionSummary {
            number: e.number,
            fs: map.fs,
            map: map.method,
            length: e.length,
            used_bytes: map.used_bytes(),
            fallback: err.map(|e| e.to_string()),
            skipped: map.skipped.clone(),
            notes: map.notes.clone(),
        });
        let part = Slice::new(src, e.start, e.length);
        findings.extend(crate::preflight::check(&part, e.length, e.number, map.fs, opts.allow_not_generalized));
        let scratch: u64 = map.skipped.iter().map(|k| k.bytes).sum();
        parts.push((
            e.clone(),
            map.fs,
            map.method,
            map.block_size,
            abs(map.ranges, e.start),
            abs(map.zeros, e.start),
            scratch,
        ));
    }
    // The gate: nothing is stored from a disk that cannot be captured truthfully.
    if findings.iter().any(|f| f.severity == crate::preflight::Severity::Refuse) {
        for f in &findings {
            warn!(partition = f.partition, check = f.check, "{}", f.message);
        }
        return Err(Error::Preflight(crate::preflight::Findings(findings)));
    }
    // Between partitions (alignment gaps, MBR extended areas): defined bytes like the boot area.
    let mut gaps = Vec::new();
    for g in gaps_between(&entries, boot_len) {
        let ranges = nonzero_ranges(src, g.start, g.end - g.start).map_err(src_err)?;
        gaps.push((g, ranges));
    }
    let backup = table.backup.map(|(s, e)| (s, e - s, vec![s..e]));

    // 2. Jobs, in disk order per region: boot area, partitions, backup area.
    let mut region_chunks: Vec<Vec<Vec<[u64; 2]>>> = Vec::new();
    region_chunks.push(chunking::cut(&boot_ranges, cs));
    for p in &parts {
        region_chunks.push(chunking::cut(&p.4, cs));
    }
    for (_, ranges) in &gaps {
        region_chunks.push(chunking::cut(ranges, cs));
    }
    if let Some((_, _, r)) = &backup {
        region_chunks.push(chunking::cut(r, cs));
    }
    let mut jobs = Vec::new();
    for pieces in region_chunks.iter().flatten() {
        jobs.push(Job { index: jobs.len(), pieces: pieces.clone() });
    }
    let total: u64 = jobs.iter().flat_map(|j| j.pieces.iter()).map(|p| p[1]).sum();
    progress.phase("capturing", total);

    // 3. Pipeline.
    let results = run_pipeline(src, source_desc, store, opts, jobs, progress).inspect_err(|_| store.abort_chunks())?;

    // 4. Assemble the manifest in the same order the jobs were made.
    let mut it = results.iter();
    let mut take = |pieces: &Vec<Vec<[u64; 2]>>| -> Vec<Chunk> {
        pieces
            .iter()
            .map(|at| Chunk { sha256: it.next().expect("one result per job").digest, at: at.clone() })
            .collect()
    };
    let boot_area = Region {
        start: 0,
        length: boot_len,
        chunks: take(&region_chunks[0]),
        zeros: pieces(fs::complement(&boot_ranges, 0..boot_len)),
    };
    let mut partitions = Vec::new();
    for (i, (e, fs, method, bs, used, defined, scratch)) in parts.iter().enumerate() {
        // A non-zero scan defines every other byte as zero; an allocation map leaves free
        // space as "don't care", except what the map itself defines as zeros.
        let zeros = match method {
            MapMethod::Nonzero => pieces(fs::complement(used, e.start..e.start + e.length)),
            _ => pieces(defined.clone()),
        };
        partitions.push(Partition {
            number: e.number,
            start: e.start,
            length: e.length,
            type_id: e.type_id.clone(),
            uuid: e.uuid.clone(),
            name: e.name.clone(),
            fs: *fs,
            map: *method,
            block_size: *bs,
            chunks: take(&region_chunks[i + 1]),
            zeros,
            scratch_bytes: *scratch,
        });
    }
    let gaps: Vec<Region> = gaps
        .iter()
        .enumerate()
        .map(|(i, (g, ranges))| Region {
            start: g.start,
            length: g.end - g.start,
            chunks: take(&region_chunks[1 + parts.len() + i]),
            zeros: pieces(fs::complement(ranges, g.clone())),
        })
        .collect();
    let backup_area = backup.map(|(start, length, _)| Region {
        start,
        length,
        chunks: take(region_chunks.last().expect("backup region")),
        zeros: Vec::new(),
    });
    let manifest = Manifest {
        format: FORMAT_NAME.into(),
        version: FORMAT_VERSION,
        chunk_size: cs,
        disk: DiskInfo { size, logical_sector_size: sector_size },
        table: table.kind,
        boot_area,
        backup_area,
        partitions,
        gaps,
    };
    manifest.validate()?;

    // 5. Publish: chunks durable first, then the manifest, then the name.
    progress.phase("publishing", 0);
    store.commit_chunks()?;
    let digest = store.put_manifest(&manifest)?;
    let version = store.add_name(name, digest, source_desc)?;
    let report = CaptureReport {
        name: name.to_string(),
        version,
        digest,
        source: source_desc.to_string(),
        disk_size: size,
        table: table.kind,
        partitions: summaries,
        findings,
        used_bytes: manifest.used_bytes(),
        chunks: results.len() as u64,
        new_chunks: results.iter().filter(|r| r.new).count() as u64,
        stored_bytes: results.iter().filter(|r| r.new).map(|r| r.stored_len).sum(),
        compressed_bytes: results.iter().map(|r| r.stored_len).sum(),
        seconds: started.elapsed().as_secs_f64(),
    };
    info!(name, version, digest = %digest, used = report.used_bytes, stored = report.stored_bytes, "image captured");
    Ok(report)
}

/// Non-zero 4 KiB blocks of `[start, start + len)` of the source, as absolute ranges.
fn nonzero_ranges(src: &dyn ReadAt, start: u64, len: u64) -> std::io::Result<Vec<Range<u64>>> {
    let map = nonzero::map(&Slice::new(src, start, len), len).map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(abs(map.ranges, start))
}

/// The bytes after the boot area that no partition holds, up to the end of the last partition
/// (what follows the last partition is not part of the image).
fn gaps_between(entries: &[table::PartEntry], boot_len: u64) -> Vec<Range<u64>> {
    let held = fs::normalize(entries.iter().map(|e| e.start..e.start + e.length).collect());
    let Some(end) = held.last().map(|r| r.end) else { return Vec::new() };
    fs::complement(&held, boot_len.min(end)..end)
}

fn pieces(ranges: Vec<Range<u64>>) -> Vec<[u64; 2]> {
    ranges.into_iter().map(|r| [r.start, r.end - r.start]).collect()
}

fn abs(ranges: Vec<Range<u64>>, base: u64) -> Vec<Range<u64>> {
    ranges.into_iter().map(|r| r.start + base..r.end + base).collect()
}

pub(crate) fn worker_count(requested: usize) -> usize {
    if requested > 0 {
        requested
    } else {
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)
    }
}

fn run_pipeline(
    src: &dyn ReadAt,
    source_desc: &str,
    store: &DirStore,
    opts: &CaptureOptions,
    jobs: Vec<Job>,
    progress: &dyn Progress,
) -> Result<Vec<Done>, Error> {
    let n_jobs = jobs.len();
    let workers = worker_count(opts.threads);
    let (job_tx, job_rx) = mpsc::sync_channel::<(usize, Vec<u8>)>(workers * 2);
    let job_rx = Arc::new(Mutex::new(job_rx));
    let (done_tx, done_rx) = mpsc::channel::<Result<Done, Error>>();
    std::thread::scope(|s| {
        // Reader: gathers each chunk's pieces. Stops when the workers hang up.
        let reader_done = done_tx.clone();
        s.spawn(move || {
            for job in jobs {
                let buf = match read_pieces(src, &job.pieces) {
                    Ok(buf) => buf,
                    Err(source) => {
                        let _ = reader_done.send(Err(Error::Source { path: source_desc.into(), source }));
                        return;
                    }
                };
                if job_tx.send((job.index, buf)).is_err() {
                    return;
                }
            }
        });
        for _ in 0..workers {
            let rx = Arc::clone(&job_rx);
            let tx = done_tx.clone();
            let level = opts.zstd_level;
            s.spawn(move || worker(rx, tx, store, level, progress));
        }
        // Only the workers may keep the queue alive: when they stop (on an error), the reader's
        // next send fails and it stops too.
        drop(job_rx);
        drop(done_tx);
        let mut results: Vec<Option<Done>> = (0..n_jobs).map(|_| None).collect();
        let mut got = 0;
        while got < n_jobs {
            match done_rx.recv() {
                Ok(Ok(d)) => {
                    let i = d.index;
                    results[i] = Some(d);
                    got += 1;
                }
                Ok(Err(e)) => {
                    // Dropping the receivers stops reader and workers at their next send.
                    drop(done_rx);
                    return Err(e);
                }
                Err(_) => break,
            }
        }
        let out: Option<Vec<Done>> = results.into_iter().collect();
        out.ok_or_else(|| Error::Source {
            path: source_desc.into(),
            source: std::io::Error::other("capture pipeline stopped before every chunk was processed"),
        })
    })
}

/// Chunks read from the source, shared by the workers: (job index, bytes).
type JobQueue = Arc<Mutex<Receiver<(usize, Vec<u8>)>>>;

fn worker(rx: JobQueue, tx: mpsc::Sender<Result<Done, Error>>, store: &DirStore, level: i32, progress: &dyn Progress) {
    let mut compressor = match zstd::bulk::Compressor::new(level) {
        Ok(c) => c,
        Err(e) => {
            let _ = tx.send(Err(Error::Store(crate::store::StoreError::Io { path: store.root().into(), source: e })));
            return;
        }
    };
    loop {
        let next = rx.lock().expect("lock poisoned").recv();
        let Ok((index, data)) = next else { return };
        let mut h = Hasher::new();
        h.update(&data);
        let digest = h.finish();
        let res = match store.chunk_stored_size(&digest) {
            Some(len) => Ok(Done { index, digest, stored_len: len, new: false }),
            None => compressor
                .compress(&data)
                .map_err(|source| Error::Store(crate::store::StoreError::Io { path: store.root().into(), source }))
                .and_then(|z| {
                    let new = store.put_chunk(&digest, &z)?;
                    Ok(Done { index, digest, stored_len: z.len() as u64, new })
                }),
        };
        progress.advance(data.len() as u64);
        if tx.send(res).is_err() {
            return;
        }
    }
}

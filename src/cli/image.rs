//! `parc image …`: capture, deploy, ls, show, verify, rm, gc, diff.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use parc_imager::capture::{self, CaptureOptions};
use parc_imager::deploy::{self, DeployOptions};
use parc_imager::error::human;
use parc_imager::format::Manifest;
use parc_imager::inspect;
use parc_imager::progress::Progress;
use parc_imager::store::{ChunkSource, DirStore, HttpStore};
use serde::Serialize;

use super::progress::CliProgress;

#[derive(Debug, Args)]
pub struct StoreArg {
    /// Image store: a directory, or for deploy the URL of `parc serve` (http://host:8080).
    #[arg(long, env = "PARC_STORE", default_value = "parc-data/store")]
    store: String,
}

#[derive(Debug, Args)]
pub struct JsonArg {
    /// Machine-readable output on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
pub enum ImageCmd {
    /// Capture a disk or raw disk image file into the store.
    Capture(CaptureArgs),
    /// Write an image to a disk or file, verifying every chunk.
    Deploy(DeployArgs),
    /// List images (names, versions, digests).
    Ls(LsArgs),
    /// Show an image's partitions and sizes.
    Show(RefArgs),
    /// Recompute every chunk digest; report bad or missing chunks (`--repair`: quarantine the bad ones).
    Verify(VerifyArgs),
    /// Remove an image name (`name@N` one version, `name` all versions); refused while a
    /// department names it or an active task deploys it, unless `--force`.
    Rm(RmArgs),
    /// Delete chunks no image refers to (pinned images of a running server count).
    Gc(GcArgs),
    /// Bytes shared and unique between two images.
    Diff(DiffArgs),
}

#[derive(Debug, Args)]
pub struct CaptureArgs {
    /// Raw disk image file or block device.
    source: PathBuf,
    /// Image name; each capture under the same name is a new version (`name@N`).
    #[arg(long)]
    name: String,
    #[command(flatten)]
    store: StoreArg,
    /// Chunk grid in bytes (power of two, 4 KiB to 64 MiB).
    #[arg(long, default_value_t = parc_imager::format::chunking::DEFAULT_CHUNK_SIZE, hide = true)]
    chunk_size: u64,
    /// zstd level (1-19; higher is smaller and slower to capture, deploy speed is the same).
    #[arg(long, default_value_t = parc_imager::capture::DEFAULT_LEVEL, value_parser = clap::value_parser!(i32).range(1..=19))]
    level: i32,
    /// Capture a Windows system that sysprep did not generalize (a backup of one machine, not
    /// an image for others): its refusal becomes a warning.
    #[arg(long)]
    allow_not_generalized: bool,
    #[command(flatten)]
    out: JsonArg,
}

#[derive(Debug, Args)]
pub struct DeployArgs {
    /// Image: `name`, `name@N` or a digest.
    image: String,
    /// Target disk (block device) or file (created if missing).
    #[arg(long)]
    to: PathBuf,
    #[command(flatten)]
    store: StoreArg,
    /// Re-read everything written and compare it with the image.
    #[arg(long)]
    verify: bool,
    /// The image the target holds now: its chunks are reused from the disk instead of fetched.
    #[arg(long)]
    seed_image: Option<String>,
    /// Zero (or discard) every range of the target the image does not use.
    #[arg(long)]
    wipe: bool,
    /// On a larger target, grow the last partition and its file system (ext2/3/4 with
    /// e2fsck and resize2fs, NTFS with ntfsresize) to the end of the target. A smaller target
    /// is always taken when everything the last partition (ext2/3/4 or NTFS) stores fits.
    #[arg(long)]
    grow: bool,
    #[command(flatten)]
    out: JsonArg,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    #[command(flatten)]
    store: StoreArg,
    #[command(flatten)]
    out: JsonArg,
}

#[derive(Debug, Args)]
pub struct RefArgs {
    image: String,
    #[command(flatten)]
    store: StoreArg,
    #[command(flatten)]
    out: JsonArg,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    image: String,
    /// Remove the name even though a department names it or an active task deploys it (what
    /// they pin stays in the store until nothing pins it).
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    store: StoreArg,
    #[command(flatten)]
    out: JsonArg,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Images to verify (default: every chunk in the store).
    images: Vec<String>,
    /// Move bad chunk files into <store>/quarantine/ (kept as evidence) so that the store
    /// reports them missing and a new capture of the image stores them again.
    #[arg(long)]
    repair: bool,
    #[command(flatten)]
    store: StoreArg,
    #[command(flatten)]
    out: JsonArg,
}

#[derive(Debug, Args)]
pub struct GcArgs {
    /// Report what would be deleted without deleting.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    store: StoreArg,
    #[command(flatten)]
    out: JsonArg,
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    a: String,
    b: String,
    #[command(flatten)]
    store: StoreArg,
    #[command(flatten)]
    out: JsonArg,
}

impl ImageCmd {
    pub fn json(&self) -> bool {
        match self {
            ImageCmd::Capture(a) => a.out.json,
            ImageCmd::Deploy(a) => a.out.json,
            ImageCmd::Ls(a) => a.out.json,
            ImageCmd::Show(a) => a.out.json,
            ImageCmd::Rm(a) => a.out.json,
            ImageCmd::Verify(a) => a.out.json,
            ImageCmd::Gc(a) => a.out.json,
            ImageCmd::Diff(a) => a.out.json,
        }
    }
}

/// How long a deploy keeps retrying a request while the server is unreachable (restart,
/// network blip) before it fails.
const HTTP_RETRY_FOR: Duration = Duration::from_secs(120);

fn is_url(s: &str) -> bool {
    s.starts_with("http://") || s.starts_with("https://")
}

fn open_store(s: &StoreArg) -> Result<DirStore> {
    if is_url(&s.store) {
        bail!(
            "{} is an HTTP store: only `parc image deploy` reads over HTTP; other commands need the store directory",
            s.store
        );
    }
    Ok(DirStore::open(&s.store)?)
}

fn emit<T: Serialize>(json: bool, value: &T, human: impl FnOnce(&T)) {
    if json {
        println!("{}", serde_json::to_string_pretty(value).expect("serializable"));
    } else {
        human(value);
    }
}

pub fn run(cmd: ImageCmd) -> Result<ExitCode> {
    match cmd {
        ImageCmd::Capture(a) => {
            let store = DirStore::create(&a.store.store)
                .with_context(|| format!("opening or creating the store {}", a.store.store))?;
            let opts = CaptureOptions {
                chunk_size: a.chunk_size,
                zstd_level: a.level,
                threads: 0,
                allow_not_generalized: a.allow_not_generalized,
            };
            if !a.chunk_size.is_power_of_two() || !(4096..=64 << 20).contains(&a.chunk_size) {
                bail!("--chunk-size {} must be a power of two between 4096 and 67108864", a.chunk_size);
            }
            let progress = CliProgress::new("capture", a.out.json);
            let r = match capture::capture_path(&a.source, &store, &a.name, &opts, &progress) {
                Err(parc_imager::Error::Preflight(f)) => {
                    progress.finish();
                    // The gate's verdicts are the answer, not a crash: a table, or JSON to script on.
                    if a.out.json {
                        println!("{}", serde_json::json!({ "ok": false, "error": "capture refused", "findings": f.0 }));
                    }
                    eprintln!(
                        "error: capturing {} as {}: refused before anything was stored:\n{f}",
                        a.source.display(),
                        a.name
                    );
                    return Ok(ExitCode::from(2));
                }
                r => r.with_context(|| format!("capturing {} as {}", a.source.display(), a.name))?,
            };
            progress.finish();
            emit(a.out.json, &r, |r| {
                println!("captured {}@{} = {}", r.name, r.version, r.digest);
                for p in &r.partitions {
                    println!(
                        "  partition {:>2}: {:<7} {:>10} used of {:>10} ({:?}){}",
                        p.number,
                        format!("{:?}", p.fs).to_lowercase(),
                        human(p.used_bytes),
                        human(p.length),
                        p.map,
                        p.fallback.as_ref().map(|f| format!(" fallback: {f}")).unwrap_or_default()
                    );
                }
                for p in &r.partitions {
                    for k in &p.skipped {
                        println!(
                            "  partition {:>2}: {} not stored ({}; Windows rewrites it, its first {} written as zeros)",
                            p.number,
                            k.name,
                            human(k.bytes),
                            human(k.zeroed)
                        );
                    }
                    for n in &p.notes {
                        println!("  partition {:>2}: {n}", p.number);
                    }
                }
                if !r.findings.is_empty() {
                    println!("  pre-flight warnings:\n{}", parc_imager::preflight::Findings(r.findings.clone()));
                }
                println!(
                    "  {} used, {} compressed, {} new in the store ({} of {} chunks), {:.1} s",
                    human(r.used_bytes),
                    human(r.compressed_bytes),
                    human(r.stored_bytes),
                    r.new_chunks,
                    r.chunks,
                    r.seconds
                );
            });
        }
        ImageCmd::Deploy(a) => {
            // A directory store is locked against gc for the whole deploy; an HTTP store is
            // the server's to protect. Network fetches want more requests in flight than cores.
            let (source, _lock, threads): (Box<dyn ChunkSource>, _, usize) = if is_url(&a.store.store) {
                (
                    Box::new(HttpStore::new(&a.store.store, HTTP_RETRY_FOR).with_token(super::client::saved_token()?)),
                    None,
                    8,
                )
            } else {
                let store = open_store(&a.store)?;
                let lock = store.lock_shared()?;
                (Box::new(store), Some(lock), 0)
            };
            let seed = match &a.seed_image {
                Some(s) => {
                    let d = source.resolve(s).with_context(|| format!("seed image {s}"))?;
                    let bytes = source.read_manifest(&d).with_context(|| format!("seed image {s}"))?;
                    Some(Manifest::decode(&bytes, Some(d)).with_context(|| format!("seed image {s}"))?)
                }
                None => None,
            };
            let fit = deploy::Fit { grow: a.grow, shrink: true };
            let opts = DeployOptions { verify: a.verify, seed, wipe: a.wipe, threads, fit, ..Default::default() };
            let progress = CliProgress::new("deploy", a.out.json);
            let context = || format!("deploying {} to {}", a.image, a.to.display());
            let r = deploy_fitting(source.as_ref(), &a.image, &a.to, opts, &progress).with_context(context)?;
            progress.finish();
            emit(a.out.json, &r, |r| {
                println!("deployed {} ({}) to {}", r.image, &r.digest[..12], r.target);
                println!(
                    "  {} fetched ({} compressed), {} copied on disk, {} already in place, {} written{}, {:.1} s",
                    human(r.bytes_fetched_raw),
                    human(r.bytes_fetched),
                    human(r.bytes_copied_local),
                    human(r.bytes_skipped),
                    human(r.bytes_written),
                    if r.verified_after_write { ", re-read and verified" } else { "" },
                    r.seconds
                );
                if let Some(g) = &r.resized {
                    println!("  partition {} resized from {} to {}", g.number, human(g.image_length), human(g.length));
                }
                if let Some(why) = &r.grow_skipped {
                    println!("  {why}");
                }
            });
        }
        ImageCmd::Ls(a) => {
            let store = open_store(&a.store)?;
            let names = store.names()?;
            #[derive(Serialize)]
            struct Row {
                name: String,
                version: u32,
                digest: String,
                created: u64,
                source: String,
                used_bytes: u64,
            }
            let mut rows = Vec::new();
            for n in names {
                let used = store.manifest(&n.record.digest).map(|m| m.used_bytes()).unwrap_or(0);
                rows.push(Row {
                    name: n.name,
                    version: n.version,
                    digest: n.record.digest.to_hex(),
                    created: n.record.created,
                    source: n.record.source,
                    used_bytes: used,
                });
            }
            emit(a.out.json, &rows, |rows| {
                println!("{:<28} {:<14} {:>10}  {:<20} SOURCE", "IMAGE", "DIGEST", "USED", "CREATED (UTC)");
                for r in rows {
                    println!(
                        "{:<28} {:<14} {:>10}  {:<20} {}",
                        format!("{}@{}", r.name, r.version),
                        &r.digest[..12],
                        human(r.used_bytes),
                        utc(r.created),
                        r.source
                    );
                }
            });
        }
        ImageCmd::Show(a) => {
            let store = open_store(&a.store)?;
            let d = store.resolve(&a.image)?;
            let m = store.manifest(&d)?;
            let compressed: u64 = unique_compressed(&store, &m);
            #[derive(Serialize)]
            struct Show<'a> {
                digest: String,
                used_bytes: u64,
                compressed_bytes: u64,
                manifest: &'a Manifest,
            }
            let s = Show { digest: d.to_hex(), used_bytes: m.used_bytes(), compressed_bytes: compressed, manifest: &m };
            emit(a.out.json, &s, |s| {
                let m = s.manifest;
                println!("image {} = {}", a.image, s.digest);
                println!(
                    "  disk {} ({}-byte sectors), table {:?}, chunk grid {}",
                    human(m.disk.size),
                    m.disk.logical_sector_size,
                    m.table,
                    human(m.chunk_size)
                );
                println!("  {} used, {} compressed in the store", human(s.used_bytes), human(s.compressed_bytes));
                for p in &m.partitions {
                    let used: u64 = p.chunks.iter().map(|c| c.len()).sum();
                    println!(
                        "  partition {:>2}: start {:>12} size {:>10} {:<6} used {:>10} ({} chunks) type {} {}",
                        p.number,
                        p.start,
                        human(p.length),
                        format!("{:?}", p.fs).to_lowercase(),
                        human(used),
                        p.chunks.len(),
                        p.type_id,
                        p.name
                    );
                }
            });
        }
        ImageCmd::Verify(a) => {
            let store = open_store(&a.store)?;
            let progress = CliProgress::new("verify", a.out.json);
            let r = inspect::verify(&store, &a.images, &progress)?;
            progress.finish();
            let ok = r.ok();
            let repair = if a.repair { Some(inspect::repair(&store, &r)?) } else { None };
            #[derive(Serialize)]
            struct Verified {
                #[serde(flatten)]
                report: inspect::VerifyReport,
                #[serde(skip_serializing_if = "Option::is_none")]
                repair: Option<inspect::RepairReport>,
            }
            emit(a.out.json, &Verified { report: r, repair }, |v| {
                let r = &v.report;
                println!("checked {} chunks ({})", r.chunks_checked, human(r.bytes_checked));
                for b in &r.bad {
                    println!("  BAD     {} {}: {}", b.digest, b.path, b.reason);
                }
                for m in &r.missing {
                    println!("  MISSING {} (needed by {})", m.digest, m.image);
                }
                for m in &r.bad_manifests {
                    println!("  BAD MANIFEST {m}");
                }
                println!("{}", if r.ok() { "store is intact" } else { "store has problems" });
                if let Some(rep) = &v.repair {
                    for q in &rep.quarantined {
                        println!("  QUARANTINED {} -> {}", q.from, q.to);
                    }
                    for n in &rep.needs {
                        println!("  {} misses {} chunk(s): {}", n.image, n.missing_chunks, n.fix);
                    }
                    if !r.ok() && rep.needs.is_empty() && r.bad_manifests.is_empty() {
                        println!("no image needs the quarantined files: the store is intact again");
                    }
                }
            });
            if !ok {
                return Ok(ExitCode::FAILURE);
            }
        }
        ImageCmd::Rm(a) => {
            let store = open_store(&a.store)?;
            let r = store.remove(&a.image, a.force)?;
            emit(a.out.json, &r, |r| {
                for x in &r.overridden {
                    println!("--force: {x}");
                }
                for x in &r.removed {
                    println!("removed {x}");
                }
                for x in &r.kept {
                    println!("kept manifest {x}");
                }
                println!("chunks stay until `parc image gc`");
            });
        }
        ImageCmd::Gc(a) => {
            let store = open_store(&a.store)?;
            let r = store.gc(a.dry_run)?;
            emit(a.out.json, &r, |r| {
                println!(
                    "{} {} unreferenced chunks ({}), kept {}, {} temp files, {} unnamed manifests; {} kept for pins",
                    if a.dry_run { "would delete" } else { "deleted" },
                    r.chunks_removed,
                    human(r.bytes_freed),
                    r.chunks_kept,
                    r.temp_files_removed,
                    r.manifests_removed,
                    r.manifests_pinned
                );
            });
        }
        ImageCmd::Diff(a) => {
            let store = open_store(&a.store)?;
            let (da, db) = (store.resolve(&a.a)?, store.resolve(&a.b)?);
            let (ma, mb) = (store.manifest(&da)?, store.manifest(&db)?);
            let r = inspect::diff(&store, &a.a, &ma, &a.b, &mb);
            emit(a.out.json, &r, |r| {
                println!("{} → {}", r.a, r.b);
                println!("  shared: {}", human(r.shared_bytes));
                println!(
                    "  only in {}: {} in {} chunks ({} compressed): what a machine holding {} fetches",
                    r.b,
                    human(r.b_only_bytes),
                    r.b_only_chunks,
                    human(r.b_only_compressed),
                    r.a
                );
                println!("  only in {}: {}", r.a, human(r.a_only_bytes));
            });
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn unique_compressed(store: &DirStore, m: &Manifest) -> u64 {
    let mut seen = std::collections::HashSet::new();
    m.all_chunks().filter(|c| seen.insert(c.sha256)).map(|c| store.chunk_stored_size(&c.sha256).unwrap_or(0)).sum()
}

/// `YYYY-MM-DD HH:MM:SS` from Unix seconds (UTC), without a date library.
fn utc(secs: u64) -> String {
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// The deploy's phases, with the last file system resized between the body and the boot area
/// as the agent does (a shrink before anything else touches it, a growth last).
fn deploy_fitting(
    source: &dyn ChunkSource,
    reference: &str,
    target: &Path,
    opts: DeployOptions,
    progress: &CliProgress,
) -> Result<deploy::DeployReport> {
    let (manifest, disk) = deploy::open_target(source, reference, target)?;
    let verify = opts.verify;
    let req = deploy::Request { source, image: reference, manifest: &manifest, disk: &disk, target, progress };
    let mut d = deploy::Deployment::new(req, opts)?;
    d.write_and_verify_body()?;
    if let Some(r) = d.resize().cloned() {
        progress.phase(if r.shrinks() { "shrinking file system" } else { "growing file system" }, 0);
        let work = std::env::temp_dir().join(format!("parc-deploy-{}", std::process::id()));
        let done = parc_agent::resize::resize_file_system(target, &r, &work);
        let _ = std::fs::remove_dir_all(&work);
        let done = done?;
        tracing::info!("{done}");
    }
    d.write_boot_area()?;
    if verify {
        d.verify_boot_area()?;
    }
    Ok(d.finish())
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_formats_known_dates() {
        assert_eq!(super::utc(0), "1970-01-01 00:00:00");
        assert_eq!(super::utc(1_795_000_000), "2026-11-18 11:06:40");
        assert_eq!(super::utc(951_782_400), "2000-02-29 00:00:00");
    }
}

//! Read-only questions about a store: are the chunks intact, what do two images share.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use serde::Serialize;

use crate::digest::Digest;
use crate::error::Error;
use crate::format::Manifest;
use crate::progress::Progress;
use crate::store::dir::check_stored_chunk;
use crate::store::{ChunkSource, DirStore, StoreError};

#[derive(Debug, Default, Clone, Serialize)]
pub struct VerifyReport {
    pub images: Vec<String>,
    pub chunks_checked: u64,
    pub bytes_checked: u64,
    /// Chunk files whose content is not what their name says.
    pub bad: Vec<BadChunk>,
    /// Chunks a manifest needs that are not in the store.
    pub missing: Vec<MissingChunk>,
    /// Manifests that are unreadable or corrupt.
    pub bad_manifests: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BadChunk {
    pub digest: String,
    pub path: String,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct MissingChunk {
    pub digest: Digest,
    pub image: String,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.bad.is_empty() && self.missing.is_empty() && self.bad_manifests.is_empty()
    }
}

/// Recomputes the digest of every chunk of the given images (every image and every chunk
/// file when `references` is empty).
pub fn verify(store: &DirStore, references: &[String], progress: &dyn Progress) -> Result<VerifyReport, Error> {
    let mut report = VerifyReport::default();
    let mut wanted: HashMap<Digest, String> = HashMap::new();
    let manifests: Vec<(String, Digest)> = if references.is_empty() {
        store.manifests()?.into_iter().map(|d| (d.short(), d)).collect()
    } else {
        references.iter().map(|r| Ok((r.clone(), store.resolve(r)?))).collect::<Result<_, StoreError>>()?
    };
    let mut lengths: HashMap<Digest, u64> = HashMap::new();
    for (label, d) in &manifests {
        report.images.push(label.clone());
        match store.manifest(d) {
            Ok(m) => {
                for c in m.all_chunks() {
                    wanted.entry(c.sha256).or_insert_with(|| label.clone());
                    lengths.insert(c.sha256, c.len());
                }
            }
            Err(e) => report.bad_manifests.push(format!("{label}: {e}")),
        }
    }
    let files = store.chunk_files()?;
    let present: HashSet<Digest> = files.iter().filter_map(|(d, _)| *d).collect();
    for (d, image) in &wanted {
        if !present.contains(d) {
            report.missing.push(MissingChunk { digest: *d, image: image.clone() });
        }
    }
    report.missing.sort_by_key(|m| m.digest);
    let to_check: Vec<_> = files
        .into_iter()
        .filter(|(d, _)| references.is_empty() || d.is_some_and(|d| wanted.contains_key(&d)))
        .collect();
    progress
        .phase("verifying", to_check.iter().map(|(d, _)| d.and_then(|d| lengths.get(&d).copied()).unwrap_or(0)).sum());
    let bad = Mutex::new(Vec::new());
    let checked = std::sync::atomic::AtomicU64::new(0);
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..crate::capture::worker_count(0) {
            s.spawn(|| {
                let mut dec = zstd::bulk::Decompressor::new().expect("zstd context");
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some((d, path)) = to_check.get(i) else { return };
                    let reason = match d {
                        None => Some("file name is not a chunk digest".to_string()),
                        Some(d) => check_chunk(store, &mut dec, d, lengths.get(d).copied(), progress, &checked),
                    };
                    if let Some(reason) = reason {
                        bad.lock().expect("lock poisoned").push(BadChunk {
                            digest: d.map(|d| d.to_hex()).unwrap_or_default(),
                            path: path.display().to_string(),
                            reason,
                        });
                    }
                }
            });
        }
    });
    report.bad = bad.into_inner().expect("lock poisoned");
    report.bad.sort_by(|a, b| a.path.cmp(&b.path));
    report.chunks_checked = to_check.len() as u64;
    report.bytes_checked = checked.into_inner();
    Ok(report)
}

fn check_chunk(
    store: &DirStore,
    dec: &mut zstd::bulk::Decompressor,
    d: &Digest,
    expected_len: Option<u64>,
    progress: &dyn Progress,
    checked: &std::sync::atomic::AtomicU64,
) -> Option<String> {
    let z = match store.read_chunk(d) {
        Ok(z) => z,
        Err(e) => return Some(e.to_string()),
    };
    match check_stored_chunk(dec, d, &z, expected_len) {
        Ok(n) => {
            progress.advance(n);
            checked.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
            None
        }
        Err(reason) => Some(reason),
    }
}

/// What `repair` did, and what the store still lacks.
#[derive(Debug, Default, Clone, Serialize)]
pub struct RepairReport {
    /// Bad chunk files moved into `quarantine/`: (file it was, where it is now).
    pub quarantined: Vec<Quarantined>,
    /// Images that miss chunks now (the quarantined ones and those missing before), and how to
    /// restore them.
    pub needs: Vec<ImageNeed>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Quarantined {
    pub digest: String,
    pub from: String,
    pub to: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ImageNeed {
    /// `name@version`, or the digest of a manifest without a name.
    pub image: String,
    pub missing_chunks: u64,
    /// What to run to store them again (the capture it came from), when known.
    pub fix: String,
}

/// Moves every bad chunk file of `report` into `quarantine/` (the store then reports those
/// chunks missing, and the next capture that produces them stores them again), and says which
/// images miss which chunks and how to restore them.
pub fn repair(store: &DirStore, report: &VerifyReport) -> Result<RepairReport, Error> {
    let mut out = RepairReport::default();
    for b in &report.bad {
        let moved = match b.digest.parse::<Digest>() {
            Ok(d) if store.chunk_path(&d).display().to_string() == b.path => store.quarantine_chunk(&d)?,
            _ => store.quarantine_file(std::path::Path::new(&b.path))?,
        };
        if let Some(to) = moved {
            out.quarantined.push(Quarantined {
                digest: b.digest.clone(),
                from: b.path.clone(),
                to: to.display().to_string(),
            });
        }
    }
    let absent: HashSet<Digest> = report
        .missing
        .iter()
        .map(|m| m.digest)
        .chain(out.quarantined.iter().filter_map(|q| q.digest.parse().ok()))
        .collect();
    if absent.is_empty() {
        return Ok(out);
    }
    let names = store.names()?;
    let mut named: HashSet<Digest> = HashSet::new();
    let mut needs = |image: String, m: &Manifest, fix: String| {
        let mut seen = HashSet::new();
        let n = m.all_chunks().filter(|c| absent.contains(&c.sha256) && seen.insert(c.sha256)).count() as u64;
        if n > 0 {
            out.needs.push(ImageNeed { image, missing_chunks: n, fix });
        }
    };
    for e in &names {
        named.insert(e.record.digest);
        if let Ok(m) = store.manifest(&e.record.digest) {
            let fix = format!(
                "capture {} again (`parc image capture {} --name {}`), or remove {}@{} if it is no longer needed",
                e.record.source, e.record.source, e.name, e.name, e.version
            );
            needs(format!("{}@{}", e.name, e.version), &m, fix);
        }
    }
    for d in store.manifests()?.into_iter().filter(|d| !named.contains(d)) {
        if let Ok(m) = store.manifest(&d) {
            needs(d.to_hex(), &m, "no name points at it: `parc image gc` removes it once nothing pins it".into());
        }
    }
    Ok(out)
}

#[derive(Debug, Clone, Serialize)]
pub struct DiffReport {
    pub a: String,
    pub b: String,
    pub a_bytes: u64,
    pub b_bytes: u64,
    /// Bytes of `b` whose chunks `a` also has (anywhere).
    pub shared_bytes: u64,
    /// Bytes of `b` in chunks `a` does not have: what a machine holding `a` must fetch.
    pub b_only_bytes: u64,
    pub b_only_chunks: u64,
    /// Compressed size of those chunks in the store.
    pub b_only_compressed: u64,
    pub a_only_bytes: u64,
}

/// Bytes shared and unique between two images, by chunk digest.
pub fn diff(store: &DirStore, a_ref: &str, a: &Manifest, b_ref: &str, b: &Manifest) -> DiffReport {
    let a_set: HashSet<Digest> = a.all_chunks().map(|c| c.sha256).collect();
    let b_set: HashSet<Digest> = b.all_chunks().map(|c| c.sha256).collect();
    let mut r = DiffReport {
        a: a_ref.into(),
        b: b_ref.into(),
        a_bytes: a.used_bytes(),
        b_bytes: b.used_bytes(),
        shared_bytes: 0,
        b_only_bytes: 0,
        b_only_chunks: 0,
        b_only_compressed: 0,
        a_only_bytes: 0,
    };
    let mut counted: HashSet<Digest> = HashSet::new();
    for c in b.all_chunks() {
        if a_set.contains(&c.sha256) {
            r.shared_bytes += c.len();
        } else {
            r.b_only_bytes += c.len();
            if counted.insert(c.sha256) {
                r.b_only_chunks += 1;
                r.b_only_compressed += store.chunk_stored_size(&c.sha256).unwrap_or(0);
            }
        }
    }
    r.a_only_bytes = a.all_chunks().filter(|c| !b_set.contains(&c.sha256)).map(|c| c.len()).sum();
    r
}

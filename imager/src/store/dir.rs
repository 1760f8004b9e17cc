//! The directory store: `chunks/ab/<sha256>.zst`, `manifests/<sha256>.json`,
//! `names/<name>/<version>.json`, `pins/` (what a running server needs, see [`super::pins`])
//! and `quarantine/` (bad chunk files, kept as evidence). Every file appears atomically
//! (temp file, fsync, rename or link), so a killed process leaves at worst an orphan in
//! `tmp/`, never a torn file.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::{split_reference, validate_name, ChunkSource, StoreError};
use crate::digest::Digest;
use crate::format::Manifest;

#[derive(Debug)]
pub struct DirStore {
    root: PathBuf,
    /// Chunks written to `tmp/` and not yet renamed into `chunks/`.
    pending: Mutex<HashMap<Digest, PathBuf>>,
    tmp_counter: AtomicU64,
}

/// What `names/<name>/<version>.json` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameRecord {
    pub digest: Digest,
    /// Seconds since the Unix epoch.
    pub created: u64,
    /// What was captured (path of the disk or file), for the technician's memory.
    pub source: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NameEntry {
    pub name: String,
    pub version: u32,
    #[serde(flatten)]
    pub record: NameRecord,
}

/// Held while capturing or deploying (shared) or collecting garbage (exclusive).
#[derive(Debug)]
pub struct StoreLock {
    _file: File,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct GcReport {
    pub chunks_kept: u64,
    pub chunks_removed: u64,
    pub bytes_freed: u64,
    pub temp_files_removed: u64,
    /// Manifests no name points at and nothing pins (left by `rm --force` past a pin that has
    /// since gone, or by a capture killed between publishing and naming).
    pub manifests_removed: u64,
    /// Manifests kept only because a pin needs them (a running task's image after `rm --force`).
    pub manifests_pinned: u64,
}

/// What [`DirStore::remove`] did.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Removal {
    /// `name@version` entries removed, and the digests of manifests deleted with them.
    pub removed: Vec<String>,
    /// Manifests that lost their last name but stay because a pin needs them (`gc` removes them
    /// once nothing does), with what pins them.
    pub kept: Vec<String>,
    /// What `--force` went past.
    pub overridden: Vec<String>,
}

pub(super) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io { path: path.to_path_buf(), source }
}

impl DirStore {
    /// Opens an existing store.
    pub fn open(root: impl Into<PathBuf>) -> Result<DirStore, StoreError> {
        let root = root.into();
        if !root.join("chunks").is_dir() || !root.join("manifests").is_dir() {
            return Err(StoreError::NotAStore { path: root });
        }
        Ok(DirStore { root, pending: Mutex::default(), tmp_counter: AtomicU64::new(0) })
    }

    /// Opens a store, creating its directories if needed.
    pub fn create(root: impl Into<PathBuf>) -> Result<DirStore, StoreError> {
        let root = root.into();
        for d in ["chunks", "manifests", "names", "tmp"] {
            let p = root.join(d);
            fs::create_dir_all(&p).map_err(io(&p))?;
        }
        DirStore::open(root)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn chunk_path(&self, d: &Digest) -> PathBuf {
        let hex = d.to_hex();
        self.root.join("chunks").join(&hex[..2]).join(format!("{hex}.zst"))
    }

    fn manifest_path(&self, d: &Digest) -> PathBuf {
        self.root.join("manifests").join(format!("{d}.json"))
    }

    pub fn has_chunk(&self, d: &Digest) -> bool {
        self.chunk_path(d).exists()
    }

    /// Stored size of a chunk, if present. An empty file is never a zstd frame (a file system
    /// that lost the data of a renamed file after a crash leaves one): it counts as missing,
    /// so a capture that produces the chunk stores it again. Deeper damage is for
    /// `parc image verify --repair`, which moves bad files into `quarantine/`.
    pub fn chunk_stored_size(&self, d: &Digest) -> Option<u64> {
        fs::metadata(self.chunk_path(d)).ok().map(|m| m.len()).filter(|&n| n > 0)
    }

    /// Writes `data` to a fresh temp file and fsyncs it.
    fn temp_file(&self, data: &[u8], sync: bool) -> Result<PathBuf, StoreError> {
        let dir = self.root.join("tmp");
        fs::create_dir_all(&dir).map_err(io(&dir))?;
        let n = self.tmp_counter.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!("{}-{}-{n}.tmp", std::process::id(), nanos()));
        let mut f = OpenOptions::new().write(true).create_new(true).open(&path).map_err(io(&path))?;
        let res = f.write_all(data).and_then(|_| if sync { f.sync_data() } else { Ok(()) });
        if let Err(e) = res {
            let _ = fs::remove_file(&path);
            return Err(io(&path)(e));
        }
        Ok(path)
    }

    /// Stages a chunk's compressed bytes under its digest; [`DirStore::commit_chunks`]
    /// makes staged chunks durable and visible. Returns false when the chunk is already
    /// stored or staged. The caller has verified that `compressed` decompresses to `digest`.
    ///
    /// Staging in `tmp/` and renaming only after one `syncfs` costs one flush per capture
    /// instead of one per chunk, and never lets a chunk name exist before its bytes are on
    /// disk (a later capture trusts an existing name and skips the chunk).
    pub fn put_chunk(&self, digest: &Digest, compressed: &[u8]) -> Result<bool, StoreError> {
        if self.chunk_stored_size(digest).is_some() || self.pending.lock().expect("lock poisoned").contains_key(digest)
        {
            return Ok(false);
        }
        let tmp = self.temp_file(compressed, false)?;
        let mut pending = self.pending.lock().expect("lock poisoned");
        if pending.contains_key(digest) {
            let _ = fs::remove_file(&tmp);
            return Ok(false);
        }
        pending.insert(*digest, tmp);
        Ok(true)
    }

    /// Flushes staged chunks to disk, then moves them into `chunks/` and flushes again.
    pub fn commit_chunks(&self) -> Result<(), StoreError> {
        let pending: Vec<(Digest, PathBuf)> = self.pending.lock().expect("lock poisoned").drain().collect();
        if pending.is_empty() {
            return Ok(());
        }
        syncfs(&self.root)?;
        for (digest, tmp) in &pending {
            let dest = self.chunk_path(digest);
            let dir = dest.parent().expect("chunk path has a parent");
            fs::create_dir_all(dir).map_err(io(dir))?;
            fs::rename(tmp, &dest).map_err(io(&dest))?;
        }
        syncfs(&self.root)
    }

    /// Drops staged chunks (a failed capture).
    pub fn abort_chunks(&self) {
        for (_, tmp) in self.pending.lock().expect("lock poisoned").drain() {
            let _ = fs::remove_file(tmp);
        }
    }

    /// Stores a chunk durably right away (one chunk at a time, e.g. a repair).
    pub fn put_chunk_now(&self, digest: &Digest, compressed: &[u8]) -> Result<bool, StoreError> {
        let new = self.put_chunk(digest, compressed)?;
        self.commit_chunks()?;
        Ok(new)
    }

    /// Publishes a manifest (after its chunks are durable). Returns its digest.
    pub fn put_manifest(&self, m: &Manifest) -> Result<Digest, StoreError> {
        let bytes = m.encode();
        let digest = Digest::of(&bytes);
        let dest = self.manifest_path(&digest);
        if !dest.exists() {
            let tmp = self.temp_file(&bytes, true)?;
            fs::rename(&tmp, &dest).map_err(io(&dest))?;
            fsync_dir(&self.root.join("manifests"))?;
        }
        Ok(digest)
    }

    /// Gives `digest` the next version of `name`; returns the version. Safe when several
    /// captures publish the same name at once: each gets its own version.
    pub fn add_name(&self, name: &str, digest: Digest, source: &str) -> Result<u32, StoreError> {
        validate_name(name)?;
        let dir = self.root.join("names").join(name);
        fs::create_dir_all(&dir).map_err(io(&dir))?;
        let record = NameRecord { digest, created: now_secs(), source: source.to_string() };
        let tmp = self.temp_file(&serde_json::to_vec(&record).expect("serializable"), true)?;
        let mut version = self.versions(name)?.last().copied().unwrap_or(0) + 1;
        loop {
            let dest = dir.join(format!("{version}.json"));
            match fs::hard_link(&tmp, &dest) {
                Ok(()) => break,
                Err(e) if e.kind() == ErrorKind::AlreadyExists => version += 1,
                Err(e) => {
                    let _ = fs::remove_file(&tmp);
                    return Err(io(&dest)(e));
                }
            }
        }
        let _ = fs::remove_file(&tmp);
        fsync_dir(&dir)?;
        Ok(version)
    }

    fn versions(&self, name: &str) -> Result<Vec<u32>, StoreError> {
        let dir = self.root.join("names").join(name);
        let mut out = Vec::new();
        match fs::read_dir(&dir) {
            Ok(rd) => {
                for e in rd {
                    let e = e.map_err(io(&dir))?;
                    if let Some(v) =
                        e.file_name().to_str().and_then(|s| s.strip_suffix(".json")).and_then(|s| s.parse().ok())
                    {
                        out.push(v);
                    }
                }
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(io(&dir)(e)),
        }
        out.sort_unstable();
        Ok(out)
    }

    fn record(&self, name: &str, version: u32) -> Result<NameRecord, StoreError> {
        let p = self.root.join("names").join(name).join(format!("{version}.json"));
        let bytes = fs::read(&p).map_err(io(&p))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| StoreError::Io { path: p, source: std::io::Error::new(ErrorKind::InvalidData, e) })
    }

    /// Every name and version, sorted by name then version.
    pub fn names(&self) -> Result<Vec<NameEntry>, StoreError> {
        let dir = self.root.join("names");
        let mut names = Vec::new();
        for e in fs::read_dir(&dir).map_err(io(&dir))? {
            let e = e.map_err(io(&dir))?;
            if let Some(n) = e.file_name().to_str() {
                if validate_name(n).is_ok() {
                    names.push(n.to_string());
                }
            }
        }
        names.sort();
        let mut out = Vec::new();
        for name in names {
            for version in self.versions(&name)? {
                out.push(NameEntry { name: name.clone(), version, record: self.record(&name, version)? });
            }
        }
        Ok(out)
    }

    /// Digests of every stored manifest.
    pub fn manifests(&self) -> Result<Vec<Digest>, StoreError> {
        let dir = self.root.join("manifests");
        let mut out = Vec::new();
        for e in fs::read_dir(&dir).map_err(io(&dir))? {
            let e = e.map_err(io(&dir))?;
            if let Some(d) = e.file_name().to_str().and_then(|s| s.strip_suffix(".json")).and_then(|s| s.parse().ok()) {
                out.push(d);
            }
        }
        out.sort();
        Ok(out)
    }

    /// Loads and checks a manifest by digest.
    pub fn manifest(&self, d: &Digest) -> Result<Manifest, crate::Error> {
        let bytes = self.read_manifest(d)?;
        Ok(Manifest::decode(&bytes, Some(*d))?)
    }

    /// Removes `name@N`, every version of `name`, or every name of a digest; the manifest
    /// goes too once no name points at it and no pin needs it. Chunks stay until `gc`.
    ///
    /// Refused ([`StoreError::Pinned`], naming who) when a pin stands in the way: a department
    /// whose image reference would then resolve to something else or nothing, or an active task
    /// deploying a digest whose name would go. `force` removes the names anyway; pinned
    /// manifests stay in the store until nothing pins them.
    pub fn remove(&self, reference: &str, force: bool) -> Result<Removal, StoreError> {
        let digest = self.resolve(reference)?;
        let (name, version) = split_reference(reference);
        let entries = self.names()?;
        let by_digest = validate_name(name).is_err() || !entries.iter().any(|e| e.name == name);
        let (gone, rest): (Vec<NameEntry>, Vec<NameEntry>) = entries.into_iter().partition(|e| {
            if by_digest {
                e.record.digest == digest
            } else {
                e.name == name && version.is_none_or(|v| v == e.version)
            }
        });
        let pins = self.pins()?;
        let pinned: HashSet<Digest> = pins.iter().filter_map(|p| p.digest).collect();
        let still_named: HashSet<Digest> = rest.iter().map(|e| e.record.digest).collect();
        let orphaned: BTreeSet<Digest> =
            gone.iter().map(|e| e.record.digest).chain([digest]).filter(|d| !still_named.contains(d)).collect();
        let deleted: BTreeSet<Digest> = orphaned.iter().filter(|d| !pinned.contains(d)).copied().collect();
        let manifests: HashSet<Digest> = self.manifests()?.into_iter().filter(|d| !deleted.contains(d)).collect();
        let mut needed_by = Vec::new();
        for p in &pins {
            if let (true, Some(d)) = (p.task, p.digest) {
                for e in gone.iter().filter(|e| e.record.digest == d) {
                    needed_by.push(format!("{} deploys {}@{} ({})", p.by, e.name, e.version, d.short()));
                }
            }
            if let Some(r) = &p.reference {
                let before = self.resolve(r).ok();
                let after = resolve_in(&rest, &manifests, r);
                if before.is_some() && before != after {
                    needed_by.push(format!(
                        "{} names {r:?}, which would {}",
                        p.by,
                        match after {
                            Some(a) => format!("become {}", a.short()),
                            None => "no longer exist".to_string(),
                        }
                    ));
                }
            }
        }
        needed_by.dedup();
        if !needed_by.is_empty() && !force {
            return Err(StoreError::Pinned { reference: reference.to_string(), needed_by: needed_by.join("; ") });
        }
        let mut out = Removal { overridden: needed_by, ..Removal::default() };
        for e in &gone {
            let p = self.root.join("names").join(&e.name).join(format!("{}.json", e.version));
            fs::remove_file(&p).map_err(io(&p))?;
            out.removed.push(format!("{}@{}", e.name, e.version));
            let _ = fs::remove_dir(self.root.join("names").join(&e.name)); // only if empty
        }
        for d in &orphaned {
            if !deleted.contains(d) {
                let by: Vec<&str> = pins.iter().filter(|p| p.digest == Some(*d)).map(|p| p.by.as_str()).collect();
                out.kept.push(format!("{d} (pinned by {})", by.join(", ")));
                continue;
            }
            let p = self.manifest_path(d);
            match fs::remove_file(&p) {
                Ok(()) => out.removed.push(d.to_hex()),
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(io(&p)(e)),
            }
        }
        Ok(out)
    }

    fn lock_file(&self) -> Result<File, StoreError> {
        let p = self.root.join("lock");
        OpenOptions::new().create(true).truncate(false).write(true).open(&p).map_err(io(&p))
    }

    /// Shared lock: captures and deploys hold it so `gc` never deletes a chunk they use.
    pub fn lock_shared(&self) -> Result<StoreLock, StoreError> {
        let f = self.lock_file()?;
        flock(&f, libc::LOCK_SH).map_err(io(&self.root))?;
        Ok(StoreLock { _file: f })
    }

    /// Exclusive lock for `gc`, refused while anything holds the shared lock.
    pub fn try_lock_exclusive(&self) -> Result<StoreLock, StoreError> {
        let f = self.lock_file()?;
        match flock(&f, libc::LOCK_EX | libc::LOCK_NB) {
            Ok(()) => Ok(StoreLock { _file: f }),
            Err(e) if e.kind() == ErrorKind::WouldBlock => Err(StoreError::Busy { store: self.location() }),
            Err(e) => Err(io(&self.root)(e)),
        }
    }

    /// Deletes manifests that no name points at and no pin needs, chunks that no remaining
    /// manifest refers to, and leftover temp files. Refuses to run while a capture or deploy
    /// holds the store (their chunks may not be in a manifest yet), and while a pin file
    /// cannot be read (it may name what a running deployment fetches).
    pub fn gc(&self, dry_run: bool) -> Result<GcReport, crate::Error> {
        let _lock = self.try_lock_exclusive()?;
        let pinned: HashSet<Digest> = self.pins()?.into_iter().filter_map(|p| p.digest).collect();
        let named: HashSet<Digest> = self.names()?.into_iter().map(|e| e.record.digest).collect();
        let mut report = GcReport::default();
        let mut referenced: HashSet<Digest> = HashSet::new();
        for d in self.manifests()? {
            if !named.contains(&d) && !pinned.contains(&d) {
                report.manifests_removed += 1;
                if !dry_run {
                    let p = self.manifest_path(&d);
                    fs::remove_file(&p).map_err(io(&p))?;
                }
                continue;
            }
            report.manifests_pinned += u64::from(!named.contains(&d));
            referenced.extend(self.manifest(&d)?.all_chunks().map(|c| c.sha256));
        }
        for (digest, path) in self.chunk_files()? {
            match digest {
                Some(d) if referenced.contains(&d) => report.chunks_kept += 1,
                _ => {
                    report.chunks_removed += 1;
                    report.bytes_freed += fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                    if !dry_run {
                        fs::remove_file(&path).map_err(io(&path))?;
                    }
                }
            }
        }
        let tmp = self.root.join("tmp");
        if let Ok(rd) = fs::read_dir(&tmp) {
            for f in rd.flatten() {
                report.temp_files_removed += 1;
                if !dry_run {
                    let _ = fs::remove_file(f.path());
                }
            }
        }
        Ok(report)
    }

    /// Every chunk file present, by digest (files with other names are reported as bad).
    pub fn chunk_files(&self) -> Result<Vec<(Option<Digest>, PathBuf)>, StoreError> {
        let chunks = self.root.join("chunks");
        let mut out = Vec::new();
        for sub in fs::read_dir(&chunks).map_err(io(&chunks))? {
            let sub = sub.map_err(io(&chunks))?.path();
            if !sub.is_dir() {
                continue;
            }
            for f in fs::read_dir(&sub).map_err(io(&sub))? {
                let f = f.map_err(io(&sub))?;
                let d = f.file_name().to_str().and_then(|s| s.strip_suffix(".zst")).and_then(|s| s.parse().ok());
                out.push((d, f.path()));
            }
        }
        out.sort();
        Ok(out)
    }
}

impl DirStore {
    /// Re-reads a stored chunk and checks it: `Ok(None)` when it decompresses to bytes whose
    /// sha256 is its name, `Ok(Some(reason))` when its file is bad, `ChunkMissing` when there
    /// is no file.
    pub fn check_chunk(&self, d: &Digest) -> Result<Option<String>, StoreError> {
        let z = self.read_chunk(d)?;
        let mut dec = zstd::bulk::Decompressor::new().map_err(io(&self.root))?;
        Ok(check_stored_chunk(&mut dec, d, &z, None).err())
    }

    /// Moves a chunk file into `quarantine/` (evidence: parc never deletes it), so that the
    /// store reports the chunk missing and the next capture that produces it stores it again.
    /// Returns where the file went, `None` when there was no file.
    pub fn quarantine_chunk(&self, d: &Digest) -> Result<Option<PathBuf>, StoreError> {
        self.quarantine_file(&self.chunk_path(d))
    }

    /// Moves any file of `chunks/` into `quarantine/` (a chunk file or a file whose name is not
    /// a digest). `None` when it was already gone.
    pub fn quarantine_file(&self, path: &Path) -> Result<Option<PathBuf>, StoreError> {
        let dir = self.root.join("quarantine");
        fs::create_dir_all(&dir).map_err(io(&dir))?;
        let base = path.file_name().and_then(|n| n.to_str()).unwrap_or("chunk");
        let dest = dir.join(format!("{}.{base}", nanos()));
        match fs::rename(path, &dest) {
            Ok(()) => {
                fsync_dir(&dir)?;
                if let Some(parent) = path.parent() {
                    fsync_dir(parent)?;
                }
                Ok(Some(dest))
            }
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(path)(e)),
        }
    }
}

/// Checks a stored (compressed) chunk against its digest, and its length when a manifest
/// gives one. Returns the uncompressed length, or why the chunk is bad.
pub fn check_stored_chunk(
    dec: &mut zstd::bulk::Decompressor,
    d: &Digest,
    stored: &[u8],
    expected_len: Option<u64>,
) -> Result<u64, String> {
    // Unreferenced chunks have no known length: bound by the largest grid cell allowed.
    let cap = expected_len.unwrap_or(64 << 20) as usize;
    let data = dec.decompress(stored, cap).map_err(|e| format!("does not decompress: {e}"))?;
    let got = Digest::of(&data);
    if got != *d {
        return Err(format!("content hashes to {got}"));
    }
    match expected_len {
        Some(l) if l != data.len() as u64 => Err(format!("holds {} bytes, a manifest says {l}", data.len())),
        _ => Ok(data.len() as u64),
    }
}

/// What `reference` resolves to among `entries` and `manifests` (as [`ChunkSource::resolve`]
/// does over the store): what a removal would leave.
fn resolve_in(entries: &[NameEntry], manifests: &HashSet<Digest>, reference: &str) -> Option<Digest> {
    if let Ok(d) = reference.parse::<Digest>() {
        return manifests.contains(&d).then_some(d);
    }
    let (name, version) = split_reference(reference);
    let mut of_name = entries.iter().filter(|e| e.name == name);
    let hit = match version {
        Some(v) => of_name.find(|e| e.version == v),
        None => of_name.max_by_key(|e| e.version),
    };
    if let Some(e) = hit {
        return Some(e.record.digest);
    }
    if reference.len() >= 8 && reference.bytes().all(|b| b.is_ascii_hexdigit()) {
        let lower = reference.to_ascii_lowercase();
        let mut hits = manifests.iter().filter(|d| d.to_hex().starts_with(&lower));
        return match (hits.next(), hits.next()) {
            (Some(d), None) => Some(*d),
            _ => None,
        };
    }
    None
}

impl ChunkSource for DirStore {
    fn read_chunk(&self, digest: &Digest) -> Result<Vec<u8>, StoreError> {
        let p = self.chunk_path(digest);
        fs::read(&p).map_err(|e| match e.kind() {
            ErrorKind::NotFound => StoreError::ChunkMissing { store: self.location(), digest: *digest },
            _ => io(&p)(e),
        })
    }

    fn read_manifest(&self, digest: &Digest) -> Result<Vec<u8>, StoreError> {
        let p = self.manifest_path(digest);
        fs::read(&p).map_err(|e| match e.kind() {
            ErrorKind::NotFound => StoreError::ManifestMissing { store: self.location(), digest: *digest },
            _ => io(&p)(e),
        })
    }

    fn resolve(&self, reference: &str) -> Result<Digest, StoreError> {
        let unknown = || StoreError::UnknownImage { store: self.location(), reference: reference.to_string() };
        if let Ok(d) = reference.parse::<Digest>() {
            return if self.manifest_path(&d).exists() { Ok(d) } else { Err(unknown()) };
        }
        let (name, version) = split_reference(reference);
        if validate_name(name).is_ok() {
            let versions = self.versions(name)?;
            let v = match version {
                Some(v) if versions.contains(&v) => Some(v),
                Some(_) => None,
                None => versions.last().copied(),
            };
            if let Some(v) = v {
                return Ok(self.record(name, v)?.digest);
            }
        }
        if reference.len() >= 8 && reference.bytes().all(|b| b.is_ascii_hexdigit()) {
            let lower = reference.to_ascii_lowercase();
            let hits: Vec<Digest> = self.manifests()?.into_iter().filter(|d| d.to_hex().starts_with(&lower)).collect();
            return match hits.len() {
                0 => Err(unknown()),
                1 => Ok(hits[0]),
                _ => Err(StoreError::Ambiguous {
                    reference: reference.to_string(),
                    candidates: hits.iter().map(Digest::short).collect::<Vec<_>>().join(", "),
                }),
            };
        }
        Err(unknown())
    }

    fn location(&self) -> String {
        self.root.display().to_string()
    }
}

fn flock(f: &File, op: libc::c_int) -> std::io::Result<()> {
    // SAFETY: flock on a file descriptor we own; no memory is passed.
    let r = unsafe { libc::flock(f.as_raw_fd(), op) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn syncfs(d: &Path) -> Result<(), StoreError> {
    let f = File::open(d).map_err(io(d))?;
    // SAFETY: syncfs on a descriptor we own.
    if unsafe { libc::syncfs(f.as_raw_fd()) } != 0 {
        return Err(io(d)(std::io::Error::last_os_error()));
    }
    Ok(())
}

pub(super) fn fsync_dir(d: &Path) -> Result<(), StoreError> {
    File::open(d).and_then(|f| f.sync_all()).map_err(io(d))
}

fn nanos() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
}

pub fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::manifest::tests::sample;

    #[test]
    fn names_versions_resolve_remove() {
        let dir = tempfile::tempdir().unwrap();
        let s = DirStore::create(dir.path()).unwrap();
        let m1 = sample();
        let mut m2 = sample();
        m2.disk.size += 512;
        let d1 = s.put_manifest(&m1).unwrap();
        let d2 = s.put_manifest(&m2).unwrap();
        assert_eq!(s.add_name("base", d1, "disk").unwrap(), 1);
        assert_eq!(s.add_name("base", d2, "disk").unwrap(), 2);
        assert_eq!(s.resolve("base").unwrap(), d2);
        assert_eq!(s.resolve("base@1").unwrap(), d1);
        assert_eq!(s.resolve(&d1.to_hex()[..10]).unwrap(), d1);
        assert!(matches!(s.resolve("base@3"), Err(StoreError::UnknownImage { .. })));
        assert!(matches!(s.resolve("nope"), Err(StoreError::UnknownImage { .. })));
        assert_eq!(s.manifest(&d1).unwrap(), m1);
        let removed = s.remove("base@1", false).unwrap();
        assert_eq!(removed.removed, vec!["base@1".to_string(), d1.to_hex()]);
        assert_eq!(s.resolve("base").unwrap(), d2);
        assert!(s.manifests().unwrap() == vec![d2]);
    }

    #[test]
    fn gc_removes_unreferenced_and_respects_lock() {
        let dir = tempfile::tempdir().unwrap();
        let s = DirStore::create(dir.path()).unwrap();
        let m = sample();
        let kept = m.partitions[0].chunks[0].sha256;
        s.put_chunk_now(&kept, b"x").unwrap();
        let orphan = Digest::of(b"orphan");
        s.put_chunk_now(&orphan, b"y").unwrap();
        let d = s.put_manifest(&m).unwrap();
        s.add_name("base", d, "disk").unwrap();
        {
            let _held = s.lock_shared().unwrap();
            assert!(matches!(s.gc(false), Err(crate::Error::Store(StoreError::Busy { .. }))));
        }
        let r = s.gc(false).unwrap();
        assert_eq!((r.chunks_kept, r.chunks_removed), (1, 1));
        assert!(s.has_chunk(&kept) && !s.has_chunk(&orphan));
    }

    use crate::store::{Pin, PinFile};

    fn task_pin(d: Digest) -> PinFile {
        PinFile::new(
            "test",
            vec![Pin { by: "task #7 (install of RAD-0007)".into(), reference: None, digest: Some(d), task: true }],
        )
    }

    fn department_pin(reference: &str) -> PinFile {
        let pin =
            Pin { by: "department radiologie".into(), reference: Some(reference.into()), digest: None, task: false };
        PinFile::new("test", vec![pin])
    }

    /// Two versions of `base` whose chunks differ: (store dir, store, digest @1, digest @2).
    fn two_versions() -> (tempfile::TempDir, DirStore, Digest, Digest) {
        let dir = tempfile::tempdir().unwrap();
        let s = DirStore::create(dir.path()).unwrap();
        let m1 = sample();
        let mut m2 = sample();
        m2.partitions[0].chunks[1].sha256 = Digest::of(b"c");
        for m in [&m1, &m2] {
            for c in m.all_chunks() {
                s.put_chunk_now(&c.sha256, b"z").unwrap();
            }
        }
        let (d1, d2) = (s.put_manifest(&m1).unwrap(), s.put_manifest(&m2).unwrap());
        s.add_name("base", d1, "disk1").unwrap();
        s.add_name("base", d2, "disk2").unwrap();
        (dir, s, d1, d2)
    }

    #[test]
    fn rm_refuses_what_a_department_names_unless_forced() {
        let (_dir, s, d1, _) = two_versions();
        s.write_pins("departments", &department_pin("base")).unwrap();
        // The department names the latest version: removing it or the name is refused, an
        // older version may go.
        for r in ["base", "base@2"] {
            let e = s.remove(r, false).unwrap_err().to_string();
            assert!(e.contains("department radiologie names \"base\"") && e.contains("--force"), "{e}");
        }
        assert_eq!(s.remove("base@1", false).unwrap().removed, vec!["base@1".to_string(), d1.to_hex()]);
        s.write_pins("departments", &department_pin("base@2")).unwrap();
        let e = s.remove("base", false).unwrap_err().to_string();
        assert!(e.contains("would no longer exist"), "{e}");
        let r = s.remove("base", true).unwrap();
        assert_eq!(r.overridden.len(), 1);
        assert!(s.names().unwrap().is_empty());
    }

    #[test]
    fn rm_refuses_what_a_task_deploys_and_gc_keeps_it_until_the_pin_goes() {
        let (_dir, s, d1, d2) = two_versions();
        s.write_pins("task-7", &task_pin(d1)).unwrap();
        let e = s.remove("base@1", false).unwrap_err().to_string();
        assert!(e.contains("task #7 (install of RAD-0007) deploys base@1"), "{e}");
        // Forced: the name goes, the manifest stays for the task, and gc keeps its chunks.
        let r = s.remove("base@1", true).unwrap();
        assert_eq!(r.removed, vec!["base@1".to_string()]);
        assert!(r.kept[0].starts_with(&d1.to_hex()) && r.kept[0].contains("task #7"), "{r:?}");
        let only_d1 = sample().partitions[0].chunks[1].sha256;
        let g = s.gc(false).unwrap();
        assert_eq!((g.manifests_pinned, g.manifests_removed, g.chunks_removed), (1, 0, 0), "{g:?}");
        assert!(s.manifest(&d1).is_ok() && s.has_chunk(&only_d1));
        // The task ended: the next gc removes the manifest and the chunks only it needed.
        s.remove_pins("task-7").unwrap();
        let g = s.gc(false).unwrap();
        assert_eq!((g.manifests_pinned, g.manifests_removed, g.chunks_removed), (0, 1, 1), "{g:?}");
        assert!(!s.has_chunk(&only_d1) && s.manifests().unwrap() == vec![d2]);
        // A damaged pin file stops gc rather than let it guess.
        std::fs::write(s.root().join("pins/task-8.json"), b"{").unwrap();
        assert!(matches!(s.gc(false), Err(crate::Error::Store(StoreError::BadPinFile { .. }))));
    }

    #[test]
    fn an_empty_chunk_file_counts_as_missing_and_is_stored_again() {
        let dir = tempfile::tempdir().unwrap();
        let s = DirStore::create(dir.path()).unwrap();
        let d = Digest::of(b"data");
        let z = zstd::bulk::compress(b"data", 3).unwrap();
        assert!(s.put_chunk_now(&d, &z).unwrap());
        assert!(!s.put_chunk_now(&d, &z).unwrap(), "an intact chunk is not stored twice");
        std::fs::write(s.chunk_path(&d), b"").unwrap();
        assert_eq!(s.chunk_stored_size(&d), None);
        assert!(s.put_chunk_now(&d, &z).unwrap());
        assert_eq!(s.check_chunk(&d).unwrap(), None);
    }

    #[test]
    fn a_quarantined_chunk_is_kept_aside_and_reported_missing() {
        let dir = tempfile::tempdir().unwrap();
        let s = DirStore::create(dir.path()).unwrap();
        let d = Digest::of(b"data");
        let mut z = zstd::bulk::compress(b"data", 3).unwrap();
        let n = z.len();
        z[n - 1] ^= 1;
        s.put_chunk_now(&d, &z).unwrap();
        assert!(s.check_chunk(&d).unwrap().is_some());
        let to = s.quarantine_chunk(&d).unwrap().unwrap();
        assert_eq!(std::fs::read(&to).unwrap(), z, "the evidence is kept as it was");
        assert!(matches!(s.check_chunk(&d), Err(StoreError::ChunkMissing { .. })));
        assert_eq!(s.quarantine_chunk(&d).unwrap(), None);
        assert!(s.put_chunk_now(&d, &zstd::bulk::compress(b"data", 3).unwrap()).unwrap());
        assert_eq!(s.check_chunk(&d).unwrap(), None);
    }
}

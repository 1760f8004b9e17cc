//! Pins: what a running `parc serve` needs from the store, written into the store itself so
//! that `parc image rm` and `parc image gc`, run by hand in another process, respect it
//! without asking the server.
//!
//! `<store>/pins/<key>.json` holds one [`PinFile`]: the server keeps `task-<id>.json` for each
//! active task (the manifest digest the task deploys) and `departments.json` (the image each
//! department names). Each file appears by rename of a fully written temp file in `pins/`
//! itself (never in `tmp/`, which `gc` empties), so a reader sees the old file or the new
//! one, never half of one. A file that cannot be read stops `gc`: guessing would delete what
//! a deployment needs.

use std::fs::{self, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::dir::{fsync_dir, io, now_secs};
use super::{DirStore, StoreError};
use crate::digest::Digest;

/// One pin file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PinFile {
    /// Who wrote it, for messages: "parc serve (/srv/parc)".
    pub holder: String,
    /// Seconds since the Unix epoch.
    pub written: u64,
    pub pins: Vec<Pin>,
}

/// Something that must stay in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pin {
    /// What needs it, in words: "task #12 (install of RAD-0012)", "department radiologie
    /// (departments/radiologie.toml line 4)".
    pub by: String,
    /// The image reference as it was named (`name`, `name@N`): `rm` refuses to remove what it
    /// resolves to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// The manifest needed: `gc` keeps it and its chunks even once no name points at it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<Digest>,
    /// Pins of tasks: `rm` refuses to remove a name of this digest.
    #[serde(default)]
    pub task: bool,
}

fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 64
        && !key.starts_with('.')
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

impl DirStore {
    fn pins_dir(&self) -> PathBuf {
        self.root().join("pins")
    }

    /// Replaces `pins/<key>.json` with `file` (atomically: temp file, fsync, rename, fsync of
    /// the directory). An empty pin list removes the file.
    pub fn write_pins(&self, key: &str, file: &PinFile) -> Result<(), StoreError> {
        assert!(valid_key(key), "pin key {key:?}");
        if file.pins.is_empty() {
            return self.remove_pins(key);
        }
        let dir = self.pins_dir();
        fs::create_dir_all(&dir).map_err(io(&dir))?;
        let dest = dir.join(format!("{key}.json"));
        let tmp = dir.join(format!(".{key}.{}.tmp", std::process::id()));
        let bytes = serde_json::to_vec_pretty(file).expect("serializable");
        let res = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .and_then(|mut f| f.write_all(&bytes).and_then(|_| f.sync_data()));
        if let Err(e) = res.and_then(|_| fs::rename(&tmp, &dest)) {
            let _ = fs::remove_file(&tmp);
            return Err(io(&dest)(e));
        }
        fsync_dir(&dir)
    }

    /// Removes `pins/<key>.json` if it exists.
    pub fn remove_pins(&self, key: &str) -> Result<(), StoreError> {
        assert!(valid_key(key), "pin key {key:?}");
        let dir = self.pins_dir();
        let p = dir.join(format!("{key}.json"));
        match fs::remove_file(&p) {
            Ok(()) => fsync_dir(&dir),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(&p)(e)),
        }
    }

    /// Keys of every pin file, sorted (leftover temp files of a killed writer are not pins).
    pub fn pin_keys(&self) -> Result<Vec<String>, StoreError> {
        let dir = self.pins_dir();
        let rd = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(&dir)(e)),
        };
        let mut out = Vec::new();
        for e in rd {
            let e = e.map_err(io(&dir))?;
            if let Some(key) = e.file_name().to_str().and_then(|n| n.strip_suffix(".json")).filter(|k| valid_key(k)) {
                out.push(key.to_string());
            }
        }
        out.sort();
        Ok(out)
    }

    /// `pins/<key>.json`, `None` if there is none. A file that cannot be parsed is an error
    /// naming it.
    pub fn read_pins(&self, key: &str) -> Result<Option<PinFile>, StoreError> {
        let path = self.pins_dir().join(format!("{key}.json"));
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(&path)(e)),
        };
        serde_json::from_slice(&bytes).map(Some).map_err(|e| StoreError::BadPinFile { path, reason: e.to_string() })
    }

    /// Every pin file, by key, sorted.
    pub fn pin_files(&self) -> Result<Vec<(String, PinFile)>, StoreError> {
        let mut out = Vec::new();
        for key in self.pin_keys()? {
            // None: removed since it was listed (its task ended).
            if let Some(f) = self.read_pins(&key)? {
                out.push((key, f));
            }
        }
        Ok(out)
    }

    /// Every pin, flattened.
    pub fn pins(&self) -> Result<Vec<Pin>, StoreError> {
        Ok(self.pin_files()?.into_iter().flat_map(|(_, f)| f.pins).collect())
    }

    /// Removes temp files a killed pin writer left in `pins/`.
    pub fn clean_pin_temp_files(&self) {
        if let Ok(rd) = fs::read_dir(self.pins_dir()) {
            for e in rd.flatten() {
                if e.file_name().to_str().is_some_and(|n| n.starts_with('.') && n.ends_with(".tmp")) {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
    }
}

impl PinFile {
    pub fn new(holder: impl Into<String>, pins: Vec<Pin>) -> PinFile {
        PinFile { holder: holder.into(), written: now_secs(), pins }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_read_replace_remove() {
        let dir = tempfile::tempdir().unwrap();
        let s = DirStore::create(dir.path()).unwrap();
        assert!(s.pins().unwrap().is_empty());
        let d = Digest::of(b"m");
        let pin = Pin { by: "task #1".into(), reference: None, digest: Some(d), task: true };
        s.write_pins("task-1", &PinFile::new("test", vec![pin.clone()])).unwrap();
        s.write_pins("departments", &PinFile::new("test", vec![])).unwrap();
        // A killed writer's temp file is not a pin.
        std::fs::write(dir.path().join("pins/.task-2.99.tmp"), b"{").unwrap();
        assert_eq!(s.pins().unwrap(), vec![pin.clone()]);
        s.clean_pin_temp_files();
        assert!(!dir.path().join("pins/.task-2.99.tmp").exists());
        s.remove_pins("task-1").unwrap();
        s.remove_pins("task-1").unwrap();
        assert!(s.pins().unwrap().is_empty());
        std::fs::write(dir.path().join("pins/task-3.json"), b"{\"holder\":").unwrap();
        let e = s.pins().unwrap_err().to_string();
        assert!(e.contains("task-3.json") && e.contains("parc serve"), "{e}");
    }
}

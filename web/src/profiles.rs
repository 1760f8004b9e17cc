//! The server's view of the profiles repository: the last good snapshot (departments and
//! inventory parsed from HEAD), reloads when HEAD moves (a technician committed by hand, a pull
//! from the remote), and inventory edits committed as the technician who made them.

use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

use parc_profiles::{Author, Inventory, Problem, Repo, RepoError, Snapshot, SyncOutcome};

use crate::AppError;

/// Where the repository pulls from, if anywhere.
#[derive(Debug, Clone)]
pub struct Remote {
    pub url: String,
    pub branch: String,
}

#[derive(Debug)]
pub struct Profiles {
    repo: Mutex<Repo>,
    snapshot: RwLock<Arc<Snapshot>>,
    remote: Option<Remote>,
    last_sync: Mutex<Option<Result<String, String>>>,
    at_commit: Mutex<Vec<Arc<Snapshot>>>,
}

impl Profiles {
    /// Opens `<data>/profiles`, creating it with example departments on first start.
    pub fn open(path: &Path, remote: Option<Remote>) -> Result<(Profiles, bool), RepoError> {
        let (repo, created) = Repo::open_or_init(path)?;
        let snap = repo.load(None)?;
        for p in &snap.problems {
            tracing::warn!(problem = %p, "profiles repository");
        }
        Ok((
            Profiles {
                repo: Mutex::new(repo),
                snapshot: RwLock::new(Arc::new(snap)),
                remote,
                last_sync: Mutex::new(None),
                at_commit: Mutex::new(Vec::new()),
            },
            created,
        ))
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The snapshot at `commit` (HEAD's is reused; others are parsed, and the last few kept:
    /// the agents of one campaign share their commit).
    pub fn snapshot_at(&self, commit: &str) -> Result<Arc<Snapshot>, RepoError> {
        let head = self.snapshot();
        if head.commit == commit {
            return Ok(head);
        }
        let mut cache = self.at_commit.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = cache.iter().find(|s| s.commit == commit) {
            return Ok(s.clone());
        }
        let snap = Arc::new(self.repo().load_at(commit)?);
        if cache.len() == 8 {
            cache.remove(0);
        }
        cache.push(snap.clone());
        Ok(snap)
    }

    fn repo(&self) -> std::sync::MutexGuard<'_, Repo> {
        self.repo.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Re-reads HEAD if it moved. Returns the current snapshot and whether it changed.
    pub fn reload(&self) -> Result<(Arc<Snapshot>, bool), RepoError> {
        let repo = self.repo();
        self.reload_locked(&repo)
    }

    fn reload_locked(&self, repo: &Repo) -> Result<(Arc<Snapshot>, bool), RepoError> {
        let current = self.snapshot();
        if repo.head()? == current.commit {
            return Ok((current, false));
        }
        let next = Arc::new(repo.load(Some(&current))?);
        for p in next.problems.iter().filter(|p| !current.problems.contains(p)) {
            tracing::warn!(problem = %p, commit = %next.commit, "profiles repository");
        }
        tracing::info!(commit = %next.commit, departments = next.departments.len(), machines = next.inventory.len(), "profiles reloaded");
        *self.snapshot.write().unwrap_or_else(|p| p.into_inner()) = next.clone();
        Ok((next, true))
    }

    /// Pulls from the configured remote (and pushes local commits to it when it is a local
    /// repository), then reloads. Nothing to do without a remote.
    pub fn sync(&self) -> Result<Option<SyncOutcome>, RepoError> {
        let Some(remote) = &self.remote else { return Ok(None) };
        let repo = self.repo();
        let outcome = repo.sync(&remote.url, &remote.branch);
        *self.last_sync.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(outcome.as_ref().map(|o| format!("{o:?}")).map_err(|e| e.to_string()));
        let outcome = outcome?;
        self.reload_locked(&repo)?;
        Ok(Some(outcome))
    }

    /// Hands a commit made through the API to the central repository right away, so that a
    /// technician pulling from it sees it. Failure is logged and retried by the next sync: the
    /// commit is safe in the appliance's repository either way.
    fn push_best_effort(&self, repo: &Repo) {
        let Some(remote) = &self.remote else { return };
        let outcome = repo.sync(&remote.url, &remote.branch);
        if let Err(e) = &outcome {
            tracing::warn!(error = %e, remote = %remote.url, "profiles: pushing to the remote failed; will retry");
        }
        *self.last_sync.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(outcome.as_ref().map(|o| format!("{o:?}")).map_err(|e| e.to_string()));
    }

    pub fn remote(&self) -> Option<&Remote> {
        self.remote.as_ref()
    }

    pub fn last_sync(&self) -> Option<Result<String, String>> {
        self.last_sync.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Applies `edit` (which may read the repository it is given, never through `with_repo`:
    /// the lock is held) to the inventory at HEAD and commits the result as `author`. If HEAD
    /// moves between reading and committing (a technician pushed), the edit is replayed on the
    /// new HEAD. Refused while the inventory at HEAD does not validate: rewriting it from the
    /// last good version would silently drop the commit that broke it.
    pub fn edit_inventory<T>(
        &self,
        author: &Author,
        mut edit: impl FnMut(&Repo, &Snapshot, &mut Inventory) -> Result<(T, Option<String>), AppError>,
    ) -> Result<(T, Option<String>), AppError> {
        let repo = self.repo();
        for _ in 0..3 {
            let (snap, _) = self.reload_locked(&repo).map_err(repo_error)?;
            if !snap.inventory_valid_at_head {
                let why: Vec<String> =
                    snap.problems.iter().filter(|p| p.file == "inventory.csv").map(|p| p.to_string()).collect();
                return Err(AppError::Conflict(format!(
                    "inventory.csv at commit {} does not validate, so it cannot be edited until it is fixed: {}",
                    short(&snap.commit),
                    why.join("; ")
                )));
            }
            let mut inv = snap.inventory.clone();
            // `edit` returns its value and the commit message, or no message when it changed nothing.
            let (value, message) = edit(&repo, &snap, &mut inv)?;
            let text = inv.to_text();
            let Some(message) = message.filter(|_| text != snap.inventory.to_text()) else { return Ok((value, None)) };
            let text = text.into_bytes();
            match repo.commit(Some(&snap.commit), &[("inventory.csv", Some(text))], author, &message) {
                Ok(commit) => {
                    self.reload_locked(&repo).map_err(repo_error)?;
                    self.push_best_effort(&repo);
                    return Ok((value, Some(commit)));
                }
                Err(RepoError::HeadMoved { .. }) => continue,
                Err(e) => return Err(repo_error(e)),
            }
        }
        Err(AppError::Conflict("the profiles repository kept changing while committing; try again".into()))
    }

    /// Problems at HEAD, plus departments whose image is not in the store.
    pub fn problems(&self, image_exists: impl Fn(&str) -> bool) -> Vec<Problem> {
        let snap = self.snapshot();
        let mut out = snap.problems.clone();
        for d in snap.departments.values() {
            if !image_exists(&d.image) {
                out.push(Problem {
                    file: d.file.clone(),
                    line: Some(d.image_line),
                    reason: format!(
                        "image {:?} is not in the store; capture it (`parc image capture DISK --name NAME`) or name an existing image",
                        d.image
                    ),
                });
            }
        }
        out
    }

    pub fn with_repo<T>(&self, f: impl FnOnce(&Repo) -> T) -> T {
        f(&self.repo())
    }
}

pub fn short(commit: &str) -> &str {
    &commit[..commit.len().min(10)]
}

pub fn repo_error(e: RepoError) -> AppError {
    match e {
        RepoError::HeadMoved { .. } => AppError::Conflict(e.to_string()),
        other => AppError::Internal(other.to_string()),
    }
}

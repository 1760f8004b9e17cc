//! The profiles repository: a git repository with a working tree, branch `main`. The only module
//! that does I/O. Everything is read from the commit at the tip of `main` through libgit2, never
//! from the working tree, so a technician's half-finished edit is never served.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use git2::{ErrorCode, FileMode, ObjectType, Oid, Repository, Signature, Sort, Tree, TreeWalkMode, TreeWalkResult};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::error::{Problem, RepoError};
use crate::examples::{self, INITIAL_MESSAGE, PARC_EMAIL, PARC_NAME};
use crate::inventory::{row_text, Inventory, INVENTORY_FILE};
use crate::model::{Department, EntryKind, Mac};
use crate::validate::{normalize_repo_path, parse_department};

/// The branch parc reads and commits to.
pub const BRANCH: &str = "main";
const MAIN_REF: &str = "refs/heads/main";
const DEPARTMENTS_DIR: &str = "departments";
/// Where `sync` keeps the fetched remote branch (out of `refs/remotes`, which technicians own).
const SYNC_REF_PREFIX: &str = "refs/parc-sync/";

const MODE_BLOB: i32 = 0o100644;
const MODE_EXECUTABLE: i32 = 0o100755;

/// Who made a change through the server: the author of its commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Author {
    pub name: String,
    pub email: String,
}

/// Everything parsed at the tip of `main`, with last-good versions of what fails there.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The commit read (hex).
    pub commit: String,
    /// By id; includes the last good version (`stale`) of department files that now fail.
    pub departments: BTreeMap<String, Department>,
    /// The last good inventory if the file at HEAD fails.
    pub inventory: Inventory,
    /// Everything wrong at HEAD.
    pub problems: Vec<Problem>,
    /// False when `inventory.csv` at HEAD fails: the server must then refuse inventory edits, which
    /// would replace the technician's commit with an edit of the older inventory.
    pub inventory_valid_at_head: bool,
}

/// What `sync` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum SyncOutcome {
    UpToDate,
    FastForwarded {
        from: String,
        to: String,
    },
    Pushed {
        commits: usize,
    },
    /// Both sides have commits the other lacks: nothing was changed; merge by hand.
    Diverged {
        local: String,
        remote: String,
    },
}

/// One commit, for history views.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CommitInfo {
    pub id: String,
    pub author_name: String,
    pub author_email: String,
    /// Author time, Unix seconds.
    pub time: i64,
    pub summary: String,
    pub message: String,
}

/// A regular file of the repository, for the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RepoFile {
    /// Relative to the directory listed.
    pub path: String,
    /// Unix mode from git: 0o100644 or 0o100755.
    pub mode: u32,
    pub size: u64,
}

/// The profiles repository. `Send` (not `Sync`): the server keeps it behind a mutex.
pub struct Repo {
    git: Repository,
    path: PathBuf,
}

impl fmt::Debug for Repo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Repo").field("path", &self.path).finish_non_exhaustive()
    }
}

impl Repo {
    /// Opens the repository at `path`, or creates it with the example departments when `path` is
    /// missing or an empty directory. Returns whether it was created.
    pub fn open_or_init(path: &Path) -> Result<(Repo, bool), RepoError> {
        let io = |op, source| RepoError::Io { op, path: path.to_path_buf(), source };
        let empty = match fs::read_dir(path) {
            Ok(mut entries) => entries.next().is_none(),
            Err(e) if e.kind() == ErrorKind::NotFound => true,
            Err(e) => return Err(io("reading", e)),
        };
        if !empty {
            let git = Repository::open(path).map_err(|e| match e.code() {
                ErrorCode::NotFound => RepoError::NotARepository { path: path.to_path_buf() },
                _ => RepoError::Git { op: "open", source: e },
            })?;
            let repo = Repo { git, path: path.to_path_buf() };
            repo.main_tip()?;
            return Ok((repo, false));
        }

        fs::create_dir_all(path).map_err(|e| io("creating", e))?;
        let mut options = git2::RepositoryInitOptions::new();
        options.initial_head(BRANCH);
        let git = Repository::init_opts(path, &options).map_err(RepoError::git("init"))?;
        for file in examples::FILES {
            let full = path.join(file.path);
            let io = |op, source| RepoError::Io { op, path: full.clone(), source };
            fs::create_dir_all(full.parent().expect("example files are in the repository"))
                .map_err(|e| io("creating", e))?;
            fs::write(&full, file.content).map_err(|e| io("writing", e))?;
            let mode = if file.executable { 0o755 } else { 0o644 };
            fs::set_permissions(&full, fs::Permissions::from_mode(mode)).map_err(|e| io("setting the mode of", e))?;
        }
        let tree_id = {
            let mut index = git.index().map_err(RepoError::git("open the index"))?;
            for file in examples::FILES {
                index.add_path(Path::new(file.path)).map_err(RepoError::git("add to the index"))?;
            }
            index.write().map_err(RepoError::git("write the index"))?;
            index.write_tree().map_err(RepoError::git("write a tree"))?
        };
        {
            let tree = git.find_tree(tree_id).map_err(RepoError::git("find the tree"))?;
            let parc = parc_signature()?;
            git.commit(Some("HEAD"), &parc, &parc, INITIAL_MESSAGE, &tree, &[]).map_err(RepoError::git("commit"))?;
        }
        info!(path = %path.display(), "created the profiles repository with example departments");
        Ok((Repo { git, path: path.to_path_buf() }, true))
    }

    /// The commit at the tip of `main` (hex).
    pub fn head(&self) -> Result<String, RepoError> {
        Ok(self.main_tip()?.to_string())
    }

    fn main_tip(&self) -> Result<Oid, RepoError> {
        self.git.refname_to_id(MAIN_REF).map_err(|e| match e.code() {
            ErrorCode::NotFound => RepoError::NoCommits { path: self.path.clone() },
            _ => RepoError::Git { op: "read branch main", source: e },
        })
    }

    /// Parses everything at the tip of `main`. `previous` supplies last-good versions: a
    /// department file that fails now keeps its previous parse (`stale`); a failing inventory
    /// keeps the previous one (`inventory_valid_at_head` false). `problems` lists what is wrong at
    /// HEAD, including inventory rows naming an unknown department (those rows are still loaded).
    pub fn load(&self, previous: Option<&Snapshot>) -> Result<Snapshot, RepoError> {
        self.load_commit(self.main_tip()?, previous)
    }

    /// Parses everything at `commit` (a task's commit: its agent gets the departments as they
    /// were when the task was queued, not as HEAD says now).
    pub fn load_at(&self, commit: &str) -> Result<Snapshot, RepoError> {
        let oid = Oid::from_str(commit).map_err(RepoError::git("parse a commit id"))?;
        self.load_commit(oid, None)
    }

    fn load_commit(&self, commit: Oid, previous: Option<&Snapshot>) -> Result<Snapshot, RepoError> {
        let tree = self.commit_tree(commit)?;
        let tree_has = |path: &str, kind: EntryKind| match tree.get_path(Path::new(path)) {
            Ok(entry) => match kind {
                EntryKind::File => is_regular_file(entry.filemode()),
                EntryKind::Dir => entry.kind() == Some(ObjectType::Tree),
            },
            Err(_) => false,
        };
        let mut problems = Vec::new();

        let mut departments = BTreeMap::new();
        for (name, id) in self.subtree_blobs(&tree, DEPARTMENTS_DIR)? {
            let Some(stem) = name.strip_suffix(".toml") else { continue };
            let file = format!("{DEPARTMENTS_DIR}/{name}");
            let parsed = match String::from_utf8(self.blob(id)?) {
                Ok(text) => parse_department(stem, &file, &text, tree_has),
                Err(_) => Err(vec![Problem::new(&file, None, "not UTF-8 text; save the file as UTF-8")]),
            };
            match parsed {
                Ok(department) => {
                    departments.insert(stem.to_string(), department);
                }
                Err(found) => {
                    problems.extend(found);
                    if let Some(last_good) = previous.and_then(|p| p.departments.get(stem)) {
                        departments.insert(stem.to_string(), Department { stale: true, ..last_good.clone() });
                    }
                }
            }
        }

        let text = match tree.get_path(Path::new(INVENTORY_FILE)) {
            Ok(entry) if entry.kind() == Some(ObjectType::Blob) => Some(self.blob(entry.id())?),
            _ => None,
        };
        let parsed = match text.map(String::from_utf8) {
            None => Ok(Inventory::empty()),
            Some(Ok(text)) => Inventory::parse(&text),
            Some(Err(_)) => Err(vec![Problem::new(INVENTORY_FILE, None, "not UTF-8 text; save the file as UTF-8")]),
        };
        let (inventory, inventory_valid_at_head) = match parsed {
            Ok(inventory) => {
                for m in inventory.machines().filter(|m| !departments.contains_key(&m.department)) {
                    problems.push(Problem::new(
                        INVENTORY_FILE,
                        Some(m.line),
                        format!(
                            "department '{}' does not exist (no {DEPARTMENTS_DIR}/{}.toml); \
                             fix the department or add the file",
                            m.department, m.department
                        ),
                    ));
                }
                (inventory, true)
            }
            Err(found) => {
                problems.extend(found);
                (previous.map_or_else(Inventory::empty, |p| p.inventory.clone()), false)
            }
        };
        Ok(Snapshot { commit: commit.to_string(), departments, inventory, problems, inventory_valid_at_head })
    }

    /// Commits file changes on top of `expected_head` (`None`: whatever `main` is at). If `main`
    /// has moved from `expected_head`, nothing is written and the result is
    /// [`RepoError::HeadMoved`]. `changes`: `(path, Some(bytes))` writes, `(path, None)` deletes.
    /// The author is the technician, the committer parc. A new file starting with `#!` is
    /// executable; a replaced file keeps its mode. Then the working tree and index follow for the
    /// changed paths, but only where they still hold the old content: a technician's uncommitted
    /// edit is kept (and logged). Returns the new commit (or the current one if nothing changed).
    pub fn commit(
        &self,
        expected_head: Option<&str>,
        changes: &[(&str, Option<Vec<u8>>)],
        author: &Author,
        message: &str,
    ) -> Result<String, RepoError> {
        let head = self.main_tip()?;
        if let Some(expected) = expected_head {
            if !expected.eq_ignore_ascii_case(&head.to_string()) {
                return Err(RepoError::HeadMoved { expected: expected.to_string(), actual: head.to_string() });
            }
        }
        let old_tree = self.commit_tree(head)?;
        let mut update = git2::build::TreeUpdateBuilder::new();
        let mut paths = Vec::with_capacity(changes.len());
        for (path, content) in changes {
            let path = commit_path(path)?;
            let old = old_tree.get_path(Path::new(&path)).ok();
            if old.as_ref().is_some_and(|e| e.kind() == Some(ObjectType::Tree)) {
                return Err(RepoError::InvalidPath { path, reason: "is a directory" });
            }
            match content {
                Some(bytes) => {
                    let blob = self.git.blob(bytes).map_err(RepoError::git("write a blob"))?;
                    let executable = match &old {
                        Some(entry) => entry.filemode() == MODE_EXECUTABLE,
                        None => bytes.starts_with(b"#!"),
                    };
                    update.upsert(&path, blob, if executable { FileMode::BlobExecutable } else { FileMode::Blob });
                }
                None if old.is_none() => return Err(RepoError::NotFound { commit: head.to_string(), path }),
                None => {
                    update.remove(&path);
                }
            }
            paths.push(path);
        }
        let new_tree_id = update.create_updated(&self.git, &old_tree).map_err(RepoError::git("build a tree"))?;
        if new_tree_id == old_tree.id() {
            return Ok(head.to_string());
        }
        let new_tree = self.git.find_tree(new_tree_id).map_err(RepoError::git("find the tree"))?;
        let author_signature =
            Signature::now(&author.name, &author.email).map_err(RepoError::git("make the author signature"))?;
        let parent = self.git.find_commit(head).map_err(RepoError::git("find the commit"))?;
        let new = self
            .git
            .commit(None, &author_signature, &parc_signature()?, message, &new_tree, &[&parent])
            .map_err(RepoError::git("commit"))?;
        self.move_main(head, new, &format!("parc: {}", message.lines().next().unwrap_or("")))?;
        info!(commit = %new, author = %author.name, files = paths.len(), "committed profile changes");
        self.update_worktree(&old_tree, &new_tree, &paths)?;
        Ok(new.to_string())
    }

    /// Moves `main` from `from` to `to`, atomically: if someone moved it meanwhile, HeadMoved.
    fn move_main(&self, from: Oid, to: Oid, reflog: &str) -> Result<(), RepoError> {
        match self.git.reference_matching(MAIN_REF, to, true, from, reflog) {
            Ok(_) => Ok(()),
            Err(e) => match self.main_tip()? {
                actual if actual != from => {
                    Err(RepoError::HeadMoved { expected: from.to_string(), actual: actual.to_string() })
                }
                _ => Err(RepoError::Git { op: "update branch main", source: e }),
            },
        }
    }

    /// Brings the working tree and index from `old` to `new` for `paths`, where they still hold
    /// `old`'s content; elsewhere the technician's uncommitted change is kept and a warning logged.
    /// Left alone when the working tree is on another branch than `main`.
    fn update_worktree(&self, old: &Tree<'_>, new: &Tree<'_>, paths: &[String]) -> Result<(), RepoError> {
        let Some(workdir) = self.git.workdir() else { return Ok(()) };
        let on_main =
            self.git.find_reference("HEAD").ok().is_some_and(|h| h.symbolic_target().ok().flatten() == Some(MAIN_REF));
        if !on_main {
            warn!(repo = %self.path.display(), "the working tree is not on branch main; left as it is");
            return Ok(());
        }
        let mut index = self.git.index().map_err(RepoError::git("open the index"))?;
        // libgit2 caches the index: reread it in case a technician's git changed it on disk.
        index.read(false).map_err(RepoError::git("read the index"))?;
        for path in paths {
            let old_blob = blob_entry(old, path);
            let new_blob = blob_entry(new, path);
            let full = workdir.join(path);
            let io = |op, source| RepoError::Io { op, path: full.clone(), source };
            let on_disk = match fs::symlink_metadata(&full) {
                Ok(meta) if meta.is_file() => {
                    let bytes = fs::read(&full).map_err(|e| io("reading", e))?;
                    Some(Oid::hash_object(ObjectType::Blob, &bytes).map_err(RepoError::git("hash a file"))?)
                }
                Ok(_) => Some(Oid::ZERO_SHA1),
                Err(e) if e.kind() == ErrorKind::NotFound => None,
                Err(e) => return Err(io("reading", e)),
            };
            let file_clean = on_disk == old_blob.map(|(id, _)| id) || on_disk == new_blob.map(|(id, _)| id);
            if file_clean {
                match new_blob {
                    Some((id, mode)) => {
                        if on_disk != Some(id) {
                            let content = self.blob(id)?;
                            fs::create_dir_all(full.parent().expect("a path in the repository"))
                                .map_err(|e| io("creating the directory of", e))?;
                            fs::write(&full, content).map_err(|e| io("writing", e))?;
                        }
                        let mode = if mode == MODE_EXECUTABLE { 0o755 } else { 0o644 };
                        fs::set_permissions(&full, fs::Permissions::from_mode(mode))
                            .map_err(|e| io("setting the mode of", e))?;
                    }
                    None if on_disk.is_some() => {
                        fs::remove_file(&full).map_err(|e| io("removing", e))?;
                        remove_empty_parents(workdir, &full);
                    }
                    None => {}
                }
            } else {
                warn!(file = %path, repo = %self.path.display(),
                    "uncommitted edit in the profiles working tree kept; parc committed a new version of this file: \
                     compare with git diff, then commit or discard the edit");
            }

            let indexed = index.get_path(Path::new(path), 0).map(|e| e.id);
            if indexed != old_blob.map(|(id, _)| id) && indexed != new_blob.map(|(id, _)| id) {
                warn!(file = %path, repo = %self.path.display(), "staged change in the profiles index kept");
                continue;
            }
            let result = match new_blob {
                Some(_) if file_clean => index.add_path(Path::new(path)),
                Some((id, mode)) => index.add(&unstat_entry(path, id, mode)),
                None if indexed.is_some() => index.remove_path(Path::new(path)),
                None => Ok(()),
            };
            result.map_err(RepoError::git("update the index"))?;
        }
        index.write().map_err(RepoError::git("write the index"))
    }

    /// Fetches `branch` from `url` (a local path, `file://` or `git://`; no TLS) and fast-forwards
    /// `main` to it when possible (working tree updated as for [`Repo::commit`]). When `main` has
    /// commits the remote lacks, they are pushed (fast-forward) if the remote is a local path or
    /// `file://`. When both sides have new commits nothing changes: [`SyncOutcome::Diverged`].
    pub fn sync(&self, url: &str, branch: &str) -> Result<SyncOutcome, RepoError> {
        let remote_ref = format!("refs/heads/{branch}");
        if !git2::Reference::is_valid_name(&remote_ref) {
            return Err(RepoError::InvalidPath { path: branch.to_string(), reason: "is not a valid branch name" });
        }
        let local = self.main_tip()?;
        let tracking = format!("{SYNC_REF_PREFIX}{branch}");
        if let Ok(mut stale) = self.git.find_reference(&tracking) {
            stale.delete().map_err(RepoError::git("delete the last fetched branch"))?;
        }
        let mut remote = self.git.remote_anonymous(url).map_err(RepoError::git("open the remote"))?;
        remote.fetch(&[format!("+{remote_ref}:{tracking}")], None, None).map_err(RepoError::git("fetch"))?;
        let pushable = url.starts_with("file://") || Path::new(url).is_absolute();
        let remote_tip = match self.git.refname_to_id(&tracking) {
            Ok(id) => id,
            Err(e) if e.code() == ErrorCode::NotFound => {
                if !pushable {
                    return Err(RepoError::RemoteBranchMissing { url: url.to_string(), branch: branch.to_string() });
                }
                let commits = self.count_commits(local, None)?;
                self.push(&mut remote, url, &remote_ref)?;
                return Ok(SyncOutcome::Pushed { commits });
            }
            Err(e) => return Err(RepoError::Git { op: "read the fetched branch", source: e }),
        };
        let descends = |a, b| self.git.graph_descendant_of(a, b).map_err(RepoError::git("compare histories"));
        if remote_tip == local {
            Ok(SyncOutcome::UpToDate)
        } else if descends(remote_tip, local)? {
            let old_tree = self.commit_tree(local)?;
            let new_tree = self.commit_tree(remote_tip)?;
            self.move_main(local, remote_tip, &format!("parc: sync fast-forward from {url}"))?;
            let diff = self
                .git
                .diff_tree_to_tree(Some(&old_tree), Some(&new_tree), None)
                .map_err(RepoError::git("compare trees"))?;
            let paths: Vec<String> = diff
                .deltas()
                .filter_map(|d| d.new_file().path().or(d.old_file().path()).and_then(Path::to_str).map(String::from))
                .collect();
            self.update_worktree(&old_tree, &new_tree, &paths)?;
            info!(from = %local, to = %remote_tip, url, "profiles fast-forwarded");
            Ok(SyncOutcome::FastForwarded { from: local.to_string(), to: remote_tip.to_string() })
        } else if descends(local, remote_tip)? {
            let commits = self.count_commits(local, Some(remote_tip))?;
            if !pushable {
                return Err(RepoError::CannotPush { url: url.to_string(), commits });
            }
            self.push(&mut remote, url, &remote_ref)?;
            info!(commits, url, "profiles pushed");
            Ok(SyncOutcome::Pushed { commits })
        } else {
            warn!(local = %local, remote = %remote_tip, url, "profiles diverged from the remote; nothing changed");
            Ok(SyncOutcome::Diverged { local: local.to_string(), remote: remote_tip.to_string() })
        }
    }

    fn push(&self, remote: &mut git2::Remote<'_>, url: &str, remote_ref: &str) -> Result<(), RepoError> {
        let rejected = RefCell::new(None);
        let mut callbacks = git2::RemoteCallbacks::new();
        callbacks.push_update_reference(|_, status| {
            if let Some(status) = status {
                *rejected.borrow_mut() = Some(status.to_string());
            }
            Ok(())
        });
        let mut options = git2::PushOptions::new();
        options.remote_callbacks(callbacks);
        remote.push(&[format!("{MAIN_REF}:{remote_ref}")], Some(&mut options)).map_err(RepoError::git("push"))?;
        drop(options);
        match rejected.into_inner() {
            Some(reason) => Err(RepoError::PushRejected { url: url.to_string(), reason }),
            None => Ok(()),
        }
    }

    fn count_commits(&self, from: Oid, hide: Option<Oid>) -> Result<usize, RepoError> {
        let mut walk = self.git.revwalk().map_err(RepoError::git("walk history"))?;
        walk.push(from).map_err(RepoError::git("walk history"))?;
        if let Some(hide) = hide {
            walk.hide(hide).map_err(RepoError::git("walk history"))?;
        }
        Ok(walk.count())
    }

    /// Commits of `main` (newest first, at most `limit`) in which `path` (a file or directory) changed.
    pub fn log_path(&self, path: &str, limit: usize) -> Result<Vec<CommitInfo>, RepoError> {
        let path =
            normalize_repo_path(path).map_err(|reason| RepoError::InvalidPath { path: path.to_string(), reason })?;
        let entry_id = |tree: &Tree<'_>| tree.get_path(Path::new(&path)).ok().map(|e| e.id());
        self.history(usize::MAX, limit, |commit| {
            let parent = commit.parents().next().map(|p| p.tree()).transpose()?;
            Ok(entry_id(&commit.tree()?) != parent.as_ref().and_then(entry_id))
        })
    }

    /// Commits of `main` (newest first) in which the inventory row of `mac` changed, looking at the
    /// `scan` newest commits: the row's text in each commit is compared with its first parent's.
    pub fn machine_history(&self, mac: &Mac, scan: usize) -> Result<Vec<CommitInfo>, RepoError> {
        let rows: RefCell<HashMap<Oid, Option<String>>> = RefCell::default();
        let row = |tree: Option<&Tree<'_>>| -> Result<Option<String>, git2::Error> {
            let Some(entry) = tree.and_then(|t| t.get_path(Path::new(INVENTORY_FILE)).ok()) else { return Ok(None) };
            if let Some(row) = rows.borrow().get(&entry.id()) {
                return Ok(row.clone());
            }
            let blob = self.git.find_blob(entry.id())?;
            let row = row_text(&String::from_utf8_lossy(blob.content()), mac);
            rows.borrow_mut().insert(entry.id(), row.clone());
            Ok(row)
        };
        let inventory_id =
            |tree: Option<&Tree<'_>>| tree.and_then(|t| t.get_path(Path::new(INVENTORY_FILE)).ok()).map(|e| e.id());
        self.history(scan, usize::MAX, |commit| {
            let tree = commit.tree()?;
            let parent = commit.parents().next().map(|p| p.tree()).transpose()?;
            if inventory_id(Some(&tree)) == inventory_id(parent.as_ref()) {
                return Ok(false);
            }
            Ok(row(Some(&tree))? != row(parent.as_ref())?)
        })
    }

    /// Walks `main` newest first over at most `scan` commits, keeping at most `limit` for which
    /// `keep` says yes.
    fn history(
        &self,
        scan: usize,
        limit: usize,
        mut keep: impl FnMut(&git2::Commit<'_>) -> Result<bool, git2::Error>,
    ) -> Result<Vec<CommitInfo>, RepoError> {
        let mut walk = self.git.revwalk().map_err(RepoError::git("walk history"))?;
        walk.push(self.main_tip()?).map_err(RepoError::git("walk history"))?;
        walk.set_sorting(Sort::TOPOLOGICAL | Sort::TIME).map_err(RepoError::git("walk history"))?;
        let mut found = Vec::new();
        for id in walk.take(scan) {
            if found.len() >= limit {
                break;
            }
            let commit = id.and_then(|id| self.git.find_commit(id)).map_err(RepoError::git("walk history"))?;
            if keep(&commit).map_err(RepoError::git("read history"))? {
                found.push(commit_info(&commit));
            }
        }
        Ok(found)
    }

    /// Every regular file under `dir` (recursively) at `commit`, with paths relative to `dir`.
    /// Symbolic links and submodules are left out. `dir` may be "" for the whole repository.
    pub fn list_files(&self, commit: &str, dir: &str) -> Result<Vec<RepoFile>, RepoError> {
        let tree = self.commit_tree(self.find_commit(commit)?)?;
        let tree = match dir.trim_matches('/') {
            "" | "." => tree,
            _ => {
                let path =
                    normalize_repo_path(dir).map_err(|reason| RepoError::InvalidPath { path: dir.into(), reason })?;
                let not_found = || RepoError::NotFound { commit: commit.to_string(), path: dir.to_string() };
                let entry = tree.get_path(Path::new(&path)).map_err(|_| not_found())?;
                if entry.kind() != Some(ObjectType::Tree) {
                    return Err(not_found());
                }
                self.git.find_tree(entry.id()).map_err(RepoError::git("find a tree"))?
            }
        };
        let odb = self.git.odb().map_err(RepoError::git("open the object database"))?;
        let mut files = Vec::new();
        let mut failure = None;
        tree.walk(TreeWalkMode::PreOrder, |parent, entry| {
            let (Ok(name), true) = (entry.name(), is_regular_file(entry.filemode())) else {
                return TreeWalkResult::Ok;
            };
            match odb.read_header(entry.id()) {
                Ok((size, _)) => {
                    let mode = entry.filemode() as u32;
                    files.push(RepoFile { path: format!("{parent}{name}"), mode, size: size as u64 });
                    TreeWalkResult::Ok
                }
                Err(e) => {
                    failure = Some(e);
                    TreeWalkResult::Abort
                }
            }
        })
        .map_err(RepoError::git("list files"))?;
        match failure {
            Some(e) => Err(RepoError::Git { op: "read a file's size", source: e }),
            None => Ok(files),
        }
    }

    /// The content of the file `path` at `commit`.
    pub fn read_file(&self, commit: &str, path: &str) -> Result<Vec<u8>, RepoError> {
        let tree = self.commit_tree(self.find_commit(commit)?)?;
        let normal =
            normalize_repo_path(path).map_err(|reason| RepoError::InvalidPath { path: path.into(), reason })?;
        match tree.get_path(Path::new(&normal)) {
            Ok(entry) if entry.kind() == Some(ObjectType::Blob) => self.blob(entry.id()),
            _ => Err(RepoError::NotFound { commit: commit.to_string(), path: path.to_string() }),
        }
    }

    fn find_commit(&self, commit: &str) -> Result<Oid, RepoError> {
        let unknown = || RepoError::UnknownCommit { commit: commit.to_string() };
        let id = Oid::from_str(commit).ok().filter(|_| commit.len() == 40).ok_or_else(unknown)?;
        self.git.find_commit(id).map(|c| c.id()).map_err(|_| unknown())
    }

    fn commit_tree(&self, commit: Oid) -> Result<Tree<'_>, RepoError> {
        self.git.find_commit(commit).and_then(|c| c.tree()).map_err(RepoError::git("read a commit's tree"))
    }

    fn blob(&self, id: Oid) -> Result<Vec<u8>, RepoError> {
        self.git.find_blob(id).map(|b| b.content().to_vec()).map_err(RepoError::git("read a file"))
    }

    /// (name, blob id) of the blobs directly in directory `dir` of `tree` (none if it is missing).
    fn subtree_blobs(&self, tree: &Tree<'_>, dir: &str) -> Result<Vec<(String, Oid)>, RepoError> {
        let Ok(entry) = tree.get_path(Path::new(dir)) else { return Ok(Vec::new()) };
        if entry.kind() != Some(ObjectType::Tree) {
            return Ok(Vec::new());
        }
        let subtree = self.git.find_tree(entry.id()).map_err(RepoError::git("read a directory"))?;
        Ok(subtree
            .iter()
            .filter(|e| e.kind() == Some(ObjectType::Blob))
            .filter_map(|e| Some((e.name().ok()?.to_string(), e.id())))
            .collect())
    }
}

fn parc_signature() -> Result<Signature<'static>, RepoError> {
    Signature::now(PARC_NAME, PARC_EMAIL).map_err(RepoError::git("make parc's signature"))
}

fn is_regular_file(mode: i32) -> bool {
    mode == MODE_BLOB || mode == MODE_EXECUTABLE
}

/// A path the server may commit: relative, normalised, outside `.git`.
fn commit_path(path: &str) -> Result<String, RepoError> {
    let invalid = |reason| RepoError::InvalidPath { path: path.to_string(), reason };
    let normal = normalize_repo_path(path).map_err(invalid)?;
    if normal.split('/').any(|part| part.eq_ignore_ascii_case(".git")) {
        return Err(invalid("must not be inside .git"));
    }
    Ok(normal)
}

/// (blob id, mode) of the regular file at `path` in `tree`.
fn blob_entry(tree: &Tree<'_>, path: &str) -> Option<(Oid, i32)> {
    let entry = tree.get_path(Path::new(path)).ok()?;
    is_regular_file(entry.filemode()).then(|| (entry.id(), entry.filemode()))
}

/// An index entry without file-system stat data: git re-reads the file to compare it.
fn unstat_entry(path: &str, id: Oid, mode: i32) -> git2::IndexEntry {
    let zero = git2::IndexTime::new(0, 0);
    git2::IndexEntry {
        ctime: zero,
        mtime: zero,
        dev: 0,
        ino: 0,
        mode: mode as u32,
        uid: 0,
        gid: 0,
        file_size: 0,
        id,
        flags: 0,
        flags_extended: 0,
        path: path.as_bytes().to_vec(),
    }
}

/// Removes the directories between `file` and `root` that became empty, as git does.
fn remove_empty_parents(root: &Path, file: &Path) {
    let mut dir = file.parent();
    while let Some(d) = dir.filter(|d| *d != root && d.starts_with(root)) {
        if fs::remove_dir(d).is_err() {
            break;
        }
        dir = d.parent();
    }
}

fn commit_info(commit: &git2::Commit<'_>) -> CommitInfo {
    let author = commit.author();
    CommitInfo {
        id: commit.id().to_string(),
        author_name: String::from_utf8_lossy(author.name_bytes()).into_owned(),
        author_email: String::from_utf8_lossy(author.email_bytes()).into_owned(),
        time: author.when().seconds(),
        summary: String::from_utf8_lossy(commit.summary_bytes().unwrap_or_default()).into_owned(),
        message: String::from_utf8_lossy(commit.message_bytes()).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;
    use crate::model::{Machine, MachineStatus};

    fn tech() -> Author {
        Author { name: "Claire Martin".into(), email: "claire.martin@chu.example".into() }
    }

    /// Runs the git CLI as a technician would; returns its trimmed stdout.
    fn git(dir: &Path, args: &[&str]) -> String {
        let out = Command::new("git")
            .args(["-c", "user.name=Technicien", "-c", "user.email=tech@chu.example", "-c", "init.defaultBranch=main"])
            .args(args)
            .current_dir(dir)
            .output()
            .expect("git is installed");
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    /// A technician edits `path` in the working tree and commits it by hand.
    fn hand_commit(dir: &Path, path: &str, content: &str) -> String {
        fs::write(dir.join(path), content).unwrap();
        git(dir, &["add", path]);
        git(dir, &["commit", "-q", "-m", &format!("edit {path} by hand")]);
        git(dir, &["rev-parse", "HEAD"])
    }

    fn init() -> (tempfile::TempDir, PathBuf, Repo) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("profiles");
        let (repo, created) = Repo::open_or_init(&dir).unwrap();
        assert!(created);
        (tmp, dir, repo)
    }

    fn mac(last: u8) -> Mac {
        Mac([0x52, 0x54, 0, 0, 0, last])
    }

    /// Upserts machines into the inventory at HEAD and commits it through the API.
    fn commit_machines(repo: &Repo, machines: &[Machine], message: &str) -> String {
        let mut inventory = repo.load(None).unwrap().inventory;
        for m in machines {
            inventory.upsert(m.clone()).unwrap();
        }
        let changes = [(INVENTORY_FILE, Some(inventory.to_text().into_bytes()))];
        repo.commit(None, &changes, &tech(), message).unwrap()
    }

    #[test]
    fn repo_is_send() {
        fn send<T: Send>() {}
        send::<Repo>();
    }

    #[test]
    fn open_or_init_creates_examples_then_opens() {
        let (_tmp, dir, repo) = init();
        let snapshot = repo.load(None).unwrap();
        assert_eq!(snapshot.problems, []);
        assert!(snapshot.inventory_valid_at_head && snapshot.inventory.is_empty());
        let summary: Vec<_> = snapshot
            .departments
            .values()
            .map(|d| (d.id.as_str(), d.name.as_str(), d.image.as_str(), d.hostname.as_str()))
            .collect();
        assert_eq!(
            summary,
            [
                ("administration", "Administration", "debian-poste", "ADM-{serial:8}"),
                ("pharmacie", "Pharmacie", "debian-poste", "PHA-{counter:4}"),
                ("radiologie", "Radiologie", "debian-poste", "RAD-{counter:4}"),
                ("urgences", "Urgences", "debian-poste", "URG-{counter:4}"),
            ]
        );
        for d in snapshot.departments.values() {
            assert_eq!(d.payloads, [format!("payloads/{}", d.id)]);
            assert_eq!(d.first_boot, Some(format!("scripts/{}-firstboot.sh", d.id)));
            assert!(!d.stale);
        }
        assert_eq!(snapshot.commit, repo.head().unwrap());

        let git2 = Repository::open(&dir).unwrap();
        let head = git2.head().unwrap();
        assert_eq!(head.name().ok(), Some(MAIN_REF));
        let commit = head.peel_to_commit().unwrap();
        assert_eq!((commit.author().name().ok(), commit.author().email().ok()), (Some(PARC_NAME), Some(PARC_EMAIL)));
        assert_eq!(commit.message().ok(), Some(INITIAL_MESSAGE));
        assert_eq!(git(&dir, &["status", "--porcelain"]), "", "working tree and index match the commit");

        drop(repo);
        let (again, created) = Repo::open_or_init(&dir).unwrap();
        assert!(!created);
        assert_eq!(again.head().unwrap(), snapshot.commit);
    }

    #[test]
    fn open_or_init_refuses_a_directory_that_is_not_a_repository() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join("notes.txt"), "x").unwrap();
        let err = Repo::open_or_init(tmp.path()).unwrap_err();
        assert!(matches!(err, RepoError::NotARepository { .. }), "{err}");
    }

    #[test]
    fn commit_is_authored_by_the_technician() {
        let (_tmp, dir, repo) = init();
        let head = repo.head().unwrap();
        let mut inventory = Inventory::empty();
        inventory.upsert(Machine::new(mac(1), "RAD-0001", "radiologie")).unwrap();
        let changes = [(INVENTORY_FILE, Some(inventory.to_text().into_bytes()))];
        let new = repo.commit(Some(&head), &changes, &tech(), "Add RAD-0001").unwrap();
        assert_eq!(repo.head().unwrap(), new);

        let git2 = Repository::open(&dir).unwrap();
        let commit = git2.find_commit(Oid::from_str(&new).unwrap()).unwrap();
        assert_eq!(commit.author().name().ok(), Some("Claire Martin"));
        assert_eq!(commit.author().email().ok(), Some("claire.martin@chu.example"));
        assert_eq!(commit.committer().name().ok(), Some(PARC_NAME));
        assert_eq!(commit.parent_id(0).unwrap().to_string(), head);
        assert_eq!(
            git(&dir, &["log", "-1", "--format=%an <%ae>|%s"]),
            "Claire Martin <claire.martin@chu.example>|Add RAD-0001"
        );

        assert_eq!(fs::read_to_string(dir.join(INVENTORY_FILE)).unwrap(), inventory.to_text());
        assert_eq!(git(&dir, &["status", "--porcelain"]), "", "working tree and index follow the commit");
        let snapshot = repo.load(None).unwrap();
        assert_eq!(snapshot.inventory.by_hostname("RAD-0001").unwrap().mac, mac(1));

        // Nothing changed: no new commit.
        assert_eq!(repo.commit(None, &changes, &tech(), "again").unwrap(), new);
    }

    #[test]
    fn commit_adds_and_deletes_files() {
        let (_tmp, dir, repo) = init();
        let script = b"#!/bin/sh\necho hi\n".to_vec();
        let changes = [
            ("scripts/hello.sh", Some(script.clone())),
            ("payloads/pharmacie/etc/parc/department", None),
            ("departments/pharmacie.toml", None),
        ];
        let new = repo.commit(None, &changes, &tech(), "Remove pharmacie").unwrap();
        let files = repo.list_files(&new, "scripts").unwrap();
        assert!(files.contains(&RepoFile { path: "hello.sh".into(), mode: 0o100755, size: script.len() as u64 }));
        assert!(matches!(repo.read_file(&new, "departments/pharmacie.toml"), Err(RepoError::NotFound { .. })));
        assert!(!dir.join("payloads/pharmacie").exists(), "emptied directories are removed");
        assert_eq!(fs::metadata(dir.join("scripts/hello.sh")).unwrap().permissions().mode() & 0o777, 0o755);
        assert_eq!(git(&dir, &["status", "--porcelain"]), "");
        assert!(!repo.load(None).unwrap().departments.contains_key("pharmacie"));

        for bad in ["/etc/passwd", "../x", ".git/config", ""] {
            let err = repo.commit(None, &[(bad, Some(vec![]))], &tech(), "bad").unwrap_err();
            assert!(matches!(err, RepoError::InvalidPath { .. }), "{bad}: {err}");
        }
        let err = repo.commit(None, &[("nothing.txt", None)], &tech(), "bad").unwrap_err();
        assert!(matches!(err, RepoError::NotFound { .. }), "{err}");
        assert_eq!(repo.head().unwrap(), new);
    }

    #[test]
    fn commit_refuses_when_a_technician_committed_meanwhile() {
        let (_tmp, dir, repo) = init();
        let seen = repo.head().unwrap();
        let by_hand = hand_commit(&dir, "README.md", "edited by hand\n");
        let changes = [("README.md", Some(b"edited by parc\n".to_vec()))];
        match repo.commit(Some(&seen), &changes, &tech(), "parc edit") {
            Err(RepoError::HeadMoved { expected, actual }) => assert_eq!((expected, actual), (seen, by_hand.clone())),
            other => panic!("{other:?}"),
        }
        assert_eq!(repo.head().unwrap(), by_hand);
        assert_eq!(fs::read_to_string(dir.join("README.md")).unwrap(), "edited by hand\n");
    }

    #[test]
    fn uncommitted_edits_are_not_clobbered() {
        let (_tmp, dir, repo) = init();
        let edit = "# technician's work in progress\n";
        fs::write(dir.join("departments/urgences.toml"), edit).unwrap();
        let changes = [
            ("departments/urgences.toml", Some(b"name = \"Urgences\"\n".to_vec())),
            ("departments/pharmacie.toml", Some(b"name = \"Pharmacie\"\n".to_vec())),
        ];
        repo.commit(None, &changes, &tech(), "Two edits").unwrap();
        assert_eq!(fs::read_to_string(dir.join("departments/urgences.toml")).unwrap(), edit);
        assert_eq!(fs::read_to_string(dir.join("departments/pharmacie.toml")).unwrap(), "name = \"Pharmacie\"\n");
        // The index follows the commit (nothing staged), the edit stays an unstaged change.
        assert_eq!(git(&dir, &["status", "--porcelain"]), "M departments/urgences.toml");
        assert_eq!(git(&dir, &["diff", "--cached", "--name-only"]), "");
    }

    #[test]
    fn broken_department_keeps_its_last_good_version() {
        let (_tmp, dir, repo) = init();
        let good = repo.load(None).unwrap();
        let text = fs::read_to_string(dir.join("departments/radiologie.toml")).unwrap();
        let broken = text.replace("RAD-{counter:4}", "RADIOLOGIE-{counter:6}");
        let by_hand = hand_commit(&dir, "departments/radiologie.toml", &broken);

        let snapshot = repo.load(Some(&good)).unwrap();
        assert_eq!(snapshot.commit, by_hand);
        assert_eq!(snapshot.problems.len(), 1, "{:?}", snapshot.problems);
        let problem = &snapshot.problems[0];
        assert_eq!((problem.file.as_str(), problem.line), ("departments/radiologie.toml", Some(5)));
        assert!(problem.reason.contains("17 characters"), "{problem}");
        let radiologie = &snapshot.departments["radiologie"];
        assert!(radiologie.stale);
        assert_eq!(radiologie.hostname.as_str(), "RAD-{counter:4}");
        assert!(!snapshot.departments["urgences"].stale);

        // Without a previous snapshot the broken department is simply missing.
        assert!(!repo.load(None).unwrap().departments.contains_key("radiologie"));
        // A stale department stays stale across reloads until fixed.
        let again = repo.load(Some(&snapshot)).unwrap();
        assert!(again.departments["radiologie"].stale);
        hand_commit(&dir, "departments/radiologie.toml", &text);
        assert!(!repo.load(Some(&again)).unwrap().departments["radiologie"].stale);
    }

    #[test]
    fn broken_inventory_keeps_the_previous_one() {
        let (_tmp, dir, repo) = init();
        commit_machines(&repo, &[Machine::new(mac(1), "RAD-0001", "radiologie")], "Add RAD-0001");
        let good = repo.load(None).unwrap();
        let text = fs::read_to_string(dir.join(INVENTORY_FILE)).unwrap();
        hand_commit(&dir, INVENTORY_FILE, &format!("{text}52:54:00:00:00:01,RAD-0002,radiologie,,,,,\n"));

        let snapshot = repo.load(Some(&good)).unwrap();
        assert!(!snapshot.inventory_valid_at_head);
        assert_eq!(snapshot.inventory.len(), 1);
        assert_eq!(snapshot.inventory.get(&mac(1)).unwrap().hostname, "RAD-0001");
        assert_eq!(snapshot.problems.len(), 1);
        assert_eq!(snapshot.problems[0].line, Some(6));
        assert!(snapshot.problems[0].reason.contains("already on line 5"), "{}", snapshot.problems[0]);

        let no_previous = repo.load(None).unwrap();
        assert!(!no_previous.inventory_valid_at_head && no_previous.inventory.is_empty());
    }

    #[test]
    fn inventory_rows_naming_unknown_departments_are_problems() {
        let (_tmp, _dir, repo) = init();
        let machines = [Machine::new(mac(1), "RAD-0001", "radiologie"), Machine::new(mac(2), "", "cardiologie")];
        commit_machines(&repo, &machines, "Add two machines");
        let snapshot = repo.load(None).unwrap();
        assert!(snapshot.inventory_valid_at_head);
        assert_eq!(snapshot.inventory.len(), 2);
        assert_eq!(snapshot.problems.len(), 1);
        assert_eq!(
            snapshot.problems[0].to_string(),
            "inventory.csv line 6: department 'cardiologie' does not exist (no departments/cardiologie.toml); \
             fix the department or add the file"
        );
    }

    /// A bare remote cloned from `dir`, and a technician's clone of it.
    fn remote(tmp: &Path, dir: &Path) -> (PathBuf, PathBuf) {
        let bare = tmp.join("remote.git");
        git(tmp, &["clone", "-q", "--bare", dir.to_str().unwrap(), bare.to_str().unwrap()]);
        let clone = tmp.join("clone");
        git(tmp, &["clone", "-q", bare.to_str().unwrap(), clone.to_str().unwrap()]);
        (bare, clone)
    }

    #[test]
    fn sync_fast_forwards_from_a_remote() {
        let (tmp, dir, repo) = init();
        let (bare, clone) = remote(tmp.path(), &dir);
        let url = bare.to_str().unwrap();
        assert_eq!(repo.sync(url, BRANCH).unwrap(), SyncOutcome::UpToDate);

        let from = repo.head().unwrap();
        let to = hand_commit(&clone, "README.md", "from the remote\n");
        git(&clone, &["push", "-q", "origin", "main"]);
        let file_url = format!("file://{url}");
        let outcome = repo.sync(&file_url, BRANCH).unwrap();
        assert_eq!(outcome, SyncOutcome::FastForwarded { from, to: to.clone() });
        assert_eq!(repo.head().unwrap(), to);
        assert_eq!(fs::read_to_string(dir.join("README.md")).unwrap(), "from the remote\n");
        assert_eq!(git(&dir, &["status", "--porcelain"]), "");
        assert_eq!(repo.sync(&file_url, BRANCH).unwrap(), SyncOutcome::UpToDate);
    }

    #[test]
    fn sync_pushes_local_commits() {
        let (tmp, dir, repo) = init();
        let (bare, _clone) = remote(tmp.path(), &dir);
        commit_machines(&repo, &[Machine::new(mac(1), "RAD-0001", "radiologie")], "one");
        let head = commit_machines(&repo, &[Machine::new(mac(2), "RAD-0002", "radiologie")], "two");
        assert_eq!(repo.sync(bare.to_str().unwrap(), BRANCH).unwrap(), SyncOutcome::Pushed { commits: 2 });
        assert_eq!(git(&bare, &["rev-parse", "main"]), head);

        // A new, empty remote gets the whole history.
        let empty = tmp.path().join("empty.git");
        git(tmp.path(), &["init", "-q", "--bare", empty.to_str().unwrap()]);
        assert_eq!(repo.sync(empty.to_str().unwrap(), "profiles").unwrap(), SyncOutcome::Pushed { commits: 3 });
        assert_eq!(git(&empty, &["rev-parse", "profiles"]), head);
    }

    #[test]
    fn sync_reports_divergence_and_changes_nothing() {
        let (tmp, dir, repo) = init();
        let (bare, clone) = remote(tmp.path(), &dir);
        let theirs = hand_commit(&clone, "README.md", "remote edit\n");
        git(&clone, &["push", "-q", "origin", "main"]);
        let ours = commit_machines(&repo, &[Machine::new(mac(1), "RAD-0001", "radiologie")], "local edit");
        let outcome = repo.sync(bare.to_str().unwrap(), BRANCH).unwrap();
        assert_eq!(outcome, SyncOutcome::Diverged { local: ours.clone(), remote: theirs.clone() });
        assert_eq!(repo.head().unwrap(), ours);
        assert_eq!(git(&bare, &["rev-parse", "main"]), theirs);
        assert!(matches!(repo.sync(bare.to_str().unwrap(), "nope"), Ok(SyncOutcome::Pushed { .. })));
        assert!(repo.sync(bare.to_str().unwrap(), "bad..name").is_err());
    }

    #[test]
    fn machine_history_finds_the_commits_that_changed_its_row() {
        let (_tmp, dir, repo) = init();
        let a = Machine::new(mac(0xa), "RAD-0001", "radiologie");
        let b = Machine::new(mac(0xb), "URG-0001", "urgences");
        let c1 = commit_machines(&repo, &[a.clone(), b.clone()], "Add A and B");
        let c2 = commit_machines(&repo, &[Machine { location: "Box 2".into(), ..b.clone() }], "Move B");
        let c3 = commit_machines(&repo, &[Machine { status: MachineStatus::Retired, ..a.clone() }], "Retire A");
        let c4 = hand_commit(&dir, "README.md", "unrelated\n");
        let text = fs::read_to_string(dir.join(INVENTORY_FILE)).unwrap();
        let c5 = hand_commit(&dir, INVENTORY_FILE, &format!("{text}# a comment added by hand\n"));

        let ids = |mac: Mac, scan| -> Vec<String> {
            repo.machine_history(&mac, scan).unwrap().into_iter().map(|c| c.id).collect()
        };
        assert_eq!(ids(mac(0xa), 100), [c3.clone(), c1.clone()]);
        assert_eq!(ids(mac(0xb), 100), [c2.clone(), c1.clone()]);
        assert_eq!(ids(mac(0xc), 100), Vec::<String>::new());
        assert_eq!(ids(mac(0xa), 3), vec![c3.clone()], "only the 3 newest commits are scanned");

        let history = repo.machine_history(&mac(0xa), 100).unwrap();
        assert_eq!((history[0].author_name.as_str(), history[0].summary.as_str()), ("Claire Martin", "Retire A"));
        assert!(history[0].time > 0);

        let log: Vec<String> = repo.log_path(INVENTORY_FILE, 10).unwrap().into_iter().map(|c| c.id).collect();
        let initial = git(&dir, &["rev-list", "--max-parents=0", "HEAD"]);
        assert_eq!(log, [c5.clone(), c3.clone(), c2.clone(), c1.clone(), initial]);
        assert_eq!(repo.log_path(INVENTORY_FILE, 2).unwrap().len(), 2);
        assert_eq!(repo.log_path("README.md", 1).unwrap()[0].id, c4);
        assert_eq!(repo.log_path("payloads", 10).unwrap().len(), 1);
    }

    #[test]
    fn list_and_read_payload_files() {
        let (_tmp, _dir, repo) = init();
        let head = repo.head().unwrap();
        let files = repo.list_files(&head, "payloads/radiologie").unwrap();
        assert_eq!(files, [RepoFile { path: "etc/parc/department".into(), mode: 0o100644, size: 11 }]);
        assert_eq!(repo.read_file(&head, "payloads/radiologie/etc/parc/department").unwrap(), b"radiologie\n");
        let scripts = repo.list_files(&head, "scripts/").unwrap();
        assert_eq!(scripts.len(), 4);
        assert!(scripts.iter().all(|f| f.mode == 0o100755 && f.path.ends_with("-firstboot.sh")), "{scripts:?}");
        assert!(repo.list_files(&head, "").unwrap().len() > 10);

        assert!(matches!(repo.list_files(&head, "payloads/cardiologie"), Err(RepoError::NotFound { .. })));
        assert!(matches!(repo.list_files(&head, "README.md"), Err(RepoError::NotFound { .. })));
        assert!(matches!(repo.read_file(&head, "payloads/radiologie"), Err(RepoError::NotFound { .. })));
        assert!(matches!(repo.read_file(&head, "../etc/passwd"), Err(RepoError::InvalidPath { .. })));
        let missing = "0".repeat(40);
        assert!(matches!(repo.read_file(&missing, "README.md"), Err(RepoError::UnknownCommit { .. })));
        assert!(matches!(repo.list_files("main", "scripts"), Err(RepoError::UnknownCommit { .. })));
    }
}

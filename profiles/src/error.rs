//! What can go wrong: problems in the technicians' files, and failures of the repository itself.

use std::fmt;
use std::path::PathBuf;

/// Something wrong in one file of the profiles repository, shown to technicians as
/// `departments/urgences.toml line 3: reason` (or `inventory.csv: reason` when no line applies).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    /// Path relative to the repository root.
    pub file: String,
    /// 1-based line, when the problem has one.
    pub line: Option<u32>,
    pub reason: String,
}

impl Problem {
    pub fn new(file: &str, line: Option<u32>, reason: impl Into<String>) -> Problem {
        Problem { file: file.to_string(), line, reason: reason.into() }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{} line {}: {}", self.file, line, self.reason),
            None => write!(f, "{}: {}", self.file, self.reason),
        }
    }
}

/// A hostname pattern that cannot be used, or a machine it cannot be rendered for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PatternError {
    #[error("hostname pattern '{pattern}': {reason}")]
    Invalid { pattern: String, reason: String },
    #[error("hostname pattern '{pattern}': unknown placeholder '{name}' (use counter, serial or mac)")]
    UnknownPlaceholder { pattern: String, name: String },
    #[error(
        "hostname pattern '{pattern}' needs the machine's serial number, which is unknown; \
         enter it in the inventory or use a pattern without {{serial}}"
    )]
    SerialMissing { pattern: String },
    #[error(
        "hostname pattern '{pattern}' needs {need} letters or digits of the serial number, but '{serial}' has fewer; \
         use a smaller width or another pattern"
    )]
    SerialTooShort { pattern: String, serial: String, need: u8 },
    #[error(
        "hostname pattern '{pattern}': counter {counter} does not fit in {width} digits; \
         widen the {{counter}} placeholder"
    )]
    CounterOverflow { pattern: String, counter: u64, width: u8 },
}

/// A failure of the profiles repository (git or the file system), not of a technician's file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RepoError {
    #[error("profiles repository: git {op} failed: {source}")]
    Git {
        op: &'static str,
        #[source]
        source: git2::Error,
    },
    #[error("profiles repository: {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the profiles changed meanwhile (expected commit {expected}, main is now at {actual}); \
         reload and make the change again"
    )]
    HeadMoved { expected: String, actual: String },
    #[error("{path} does not exist at commit {commit}")]
    NotFound { commit: String, path: String },
    #[error("commit {commit} is not in the profiles repository")]
    UnknownCommit { commit: String },
    #[error("invalid path '{path}': {reason}")]
    InvalidPath { path: String, reason: &'static str },
    #[error(
        "{path} exists but is not a git repository; move it away so parc can create the profiles repository there"
    )]
    NotARepository { path: PathBuf },
    #[error(
        "the profiles repository at {path} has no commit on branch main; \
         commit the profiles there, or move the directory away so parc creates the examples"
    )]
    NoCommits { path: PathBuf },
    #[error("branch {branch} does not exist at {url}; push it there first")]
    RemoteBranchMissing { url: String, branch: String },
    #[error("{url} refused the push of main: {reason}; sync again")]
    PushRejected { url: String, reason: String },
    #[error(
        "main has {commits} commit(s) that {url} lacks, and parc pushes only to local paths \
         and file:// remotes; push them by hand"
    )]
    CannotPush { url: String, commits: usize },
}

impl RepoError {
    /// `map_err` helper: `.map_err(RepoError::git("fetch"))`.
    pub(crate) fn git(op: &'static str) -> impl FnOnce(git2::Error) -> RepoError {
        move |source| RepoError::Git { op, source }
    }
}

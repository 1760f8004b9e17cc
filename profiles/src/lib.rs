//! parc-profiles: department profiles and the machine inventory, kept as files in a git repository.
//!
//! The repository (`<data>/profiles`, branch `main`) holds `departments/<id>.toml`, `inventory.csv`,
//! and the payloads and scripts departments refer to. Technicians edit and commit there by hand or
//! pull from a remote; the server commits the changes made through its API. Everything is read from
//! the commit at the tip of `main`, never from the working tree.
//!
//! - [`validate`]: department files (pure), [`hostname`]: hostname patterns (pure),
//!   [`inventory`]: `inventory.csv` (pure), [`model`]: the typed values;
//! - [`repo`]: the git repository, the only module doing I/O;
//! - [`examples`]: what a new repository starts with.

pub mod error;
pub mod examples;
pub mod hostname;
pub mod inventory;
pub mod model;
pub mod repo;
pub mod validate;

pub use error::{PatternError, Problem, RepoError};
pub use hostname::{valid_hostname, HostnamePattern};
pub use inventory::{Inventory, INVENTORY_FILE};
pub use model::{
    Bus, Choose, Department, DiskRule, EntryKind, Mac, Machine, MachineStatus, Os, WindowsSettings, DEFAULT_TIME_ZONE,
};
pub use repo::{Author, CommitInfo, Repo, RepoFile, Snapshot, SyncOutcome};
pub use validate::{parse_department, parse_size};

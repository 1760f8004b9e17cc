//! Placeholder: being written (see fs/mod.rs for the contract).

use super::{FsError, UsedMap};
use crate::io::ReadAt;

pub fn detect(_dev: &dyn ReadAt, _len: u64) -> bool {
    false
}

pub fn map(_dev: &dyn ReadAt, _len: u64) -> Result<UsedMap, FsError> {
    unimplemented!("ext used-block map")
}

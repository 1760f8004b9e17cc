//! parc-profiles: department profiles and the machine inventory, kept as files in git.
//!
//! Not built yet: the server issue fills this crate (typed model, validation, git repository).

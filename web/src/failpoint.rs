//! Test-only crash injection. `PARC_FAILPOINTS=ops.after_commit` (comma-separated names) makes
//! the process abort, as a power cut or SIGKILL would stop it, when it reaches that point, so
//! an integration test can check what a restart finds. Unset (always, in production) it costs
//! one read of an already-parsed list. Points:
//!
//! - `ops.before_commit`: an inventory operation is planned and written to the database as
//!   in flight, the git commit is not made;
//! - `ops.after_commit`: the inventory is committed, its tasks and journal entries are not
//!   written;
//! - `ops.after_apply`: tasks and journal entries are written, the reply is not sent.

use std::sync::OnceLock;

pub const ENV: &str = "PARC_FAILPOINTS";

fn armed() -> &'static [String] {
    static POINTS: OnceLock<Vec<String>> = OnceLock::new();
    POINTS.get_or_init(|| {
        let points: Vec<String> = std::env::var(ENV)
            .unwrap_or_default()
            .split(',')
            .map(|p| p.trim().to_string())
            .filter(|p| !p.is_empty())
            .collect();
        if !points.is_empty() {
            tracing::warn!(points = ?points, "{ENV} is set: this process will abort at these points (a test hook)");
        }
        points
    })
}

/// Warns once at start when failpoints are armed (an operator must not run with them).
pub fn announce() {
    let _ = armed();
}

/// Aborts the process here when `name` is armed.
pub fn hit(name: &str) {
    if armed().iter().any(|p| p == name) {
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "parc: failpoint {name} reached: aborting ({ENV})");
        std::process::abort();
    }
}

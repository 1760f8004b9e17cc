//! End-to-end tests of parc-pxe against real clients: tftp-hpa, atftp and curl over loopback
//! (`tftp`), udhcpc in network namespaces the tests create (`dhcp`).

mod dhcp;
mod lab;
mod tftp;

use std::process::Command;

/// True when `program` can be run; otherwise prints a loud SKIP (or panics under `CI=true`,
/// where a missing prerequisite must fail the run).
pub fn have(program: &str, package: &str) -> bool {
    let found = installed(program);
    if !found {
        prerequisite_missing(&format!("`{program}` not installed (apt-get install {package})"));
    }
    found
}

/// True when `program` is on the PATH (no message either way).
pub fn installed(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Prints a loud SKIP, or panics under `CI=true`.
pub fn prerequisite_missing(what: &str) {
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("CI=true and a test prerequisite is missing: {what}");
    }
    // Straight to the stderr handle: libtest captures `eprintln!` of passing tests, which would
    // hide the skip.
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "\n*** SKIP: {what} ***\n");
}

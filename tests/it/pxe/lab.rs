//! Network namespaces for tests: created by the test, deleted on drop (also on failure); no
//! traffic ever leaves them.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::Command;

use super::{have, prerequisite_missing};

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

pub fn run_ok(args: &[&str]) {
    let o = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(o.status.success(), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
}

/// Two namespaces joined by a veth pair: `srv` (veth0, 10.99.0.1/24) and `cli` (veth1).
/// Deleted on drop, also when the test fails.
pub struct Lab {
    /// The server's namespace (veth0, 10.99.0.1/24).
    pub srv: String,
    /// The client's namespace (veth1, no address).
    pub cli: String,
}

impl Lab {
    pub fn new(tag: &str) -> Option<Lab> {
        if !is_root() {
            prerequisite_missing("network namespace tests need root");
            return None;
        }
        if !have("ip", "iproute2") {
            return None;
        }
        let id = format!("{}-{tag}", std::process::id());
        let lab = Lab { srv: format!("parc-srv-{id}"), cli: format!("parc-cli-{id}") };
        run_ok(&["ip", "netns", "add", &lab.srv]);
        run_ok(&["ip", "netns", "add", &lab.cli]);
        run_ok(&[
            "ip", "-n", &lab.srv, "link", "add", "veth0", "type", "veth", "peer", "name", "veth1", "netns", &lab.cli,
        ]);
        for (ns, dev) in [(&lab.srv, "veth0"), (&lab.cli, "veth1")] {
            run_ok(&["ip", "-n", ns, "link", "set", "lo", "up"]);
            run_ok(&["ip", "-n", ns, "link", "set", dev, "up"]);
        }
        run_ok(&["ip", "-n", &lab.srv, "addr", "add", "10.99.0.1/24", "dev", "veth0"]);
        Some(lab)
    }

    /// Runs `f` on a thread inside namespace `ns` (sockets it creates stay there).
    pub fn inside<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
        std::thread::scope(|s| {
            s.spawn(|| {
                let file = File::open(format!("/var/run/netns/{ns}")).unwrap();
                // SAFETY: a valid namespace fd; setns only changes this thread's namespace.
                let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
                f()
            })
            .join()
            .unwrap()
        })
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in [&self.cli, &self.srv] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

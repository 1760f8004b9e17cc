//! Runs Samba's `net` for [`super`]: the join account's password in `PASSWD` (never on the
//! command line, where `ps` would show it), no stdin (a prompt would wait for ever), and a
//! time limit (an unreachable DNS server makes `net` hang for minutes).

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Instant;

use super::DomainConfig;

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("cannot run {net}: {source} (install Debian's samba-common-bin, or set [domain] net in parc.toml)")]
    Spawn { net: String, source: std::io::Error },
    #[error("{net} did not answer within {seconds} s (is the domain's DNS reachable from the appliance?)")]
    Timeout { net: String, seconds: u64 },
    #[error("{0}")]
    Failed(String),
}

/// Output of one `net` call: (success, stdout, stderr).
pub fn run(c: &DomainConfig, args: &[std::ffi::OsString]) -> Result<(bool, String, String), NetError> {
    let net = c.net.display().to_string();
    std::fs::create_dir_all(c.state_dir.join("ncalrpc"))
        .map_err(|source| NetError::Spawn { net: net.clone(), source })?;
    let mut child = Command::new(&c.net)
        .args(args)
        .env("PASSWD", &c.join_password)
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| NetError::Spawn { net: net.clone(), source })?;
    // Readers on their own threads: a chatty `net` must not block on a full pipe.
    let mut out = child.stdout.take().expect("piped");
    let mut err = child.stderr.take().expect("piped");
    let o = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let e = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().map_err(|source| NetError::Spawn { net: net.clone(), source })? {
            break s;
        }
        if started.elapsed() > c.timeout {
            let _ = child.kill();
            let _ = child.wait();
            return Err(NetError::Timeout { net, seconds: c.timeout.as_secs() });
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    Ok((status.success(), o.join().unwrap_or_default(), e.join().unwrap_or_default()))
}

/// The distinguished names of accounts named `name`.
pub fn search(c: &DomainConfig, name: &str) -> Result<Vec<String>, NetError> {
    let (ok, out, err) = run(c, &super::search_args(c, name))?;
    if !ok {
        return Err(NetError::Failed(format!("looking up {name} in {}: {}{}", c.realm, out.trim(), err.trim())));
    }
    Ok(super::parse_search(&out))
}

/// Provisions `name` in `ou` and answers its blob.
pub fn provision(c: &DomainConfig, name: &str, ou: &str, reuse: bool) -> Result<String, NetError> {
    let (ok, out, err) = run(c, &super::provision_args(c, name, ou, reuse))?;
    match super::parse_provision(&out, name) {
        Ok(blob) if ok => Ok(blob),
        Ok(_) => Err(NetError::Failed(format!("net printed a blob for {name} but failed: {}", err.trim()))),
        Err(why) => Err(NetError::Failed(format!("{why} {}", err.trim()).trim().to_string())),
    }
}

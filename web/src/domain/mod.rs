//! Offline domain join: the appliance provisions each Windows machine's computer account in
//! Active Directory with Samba's `net offlinejoin provision` and hands the resulting blob to
//! that machine's running task alone, which writes it into the answer file
//! (`Microsoft-Windows-UnattendedJoin/Identification/Provisioning/AccountData`). No Windows
//! server or WinPE is in the loop; the join account needs only "create computer objects" on the
//! departments' OUs (plus reset password for accounts it did not create).
//!
//! This module is pure: the settings, the arguments given to `net`, and the reading of its
//! answers. `net.rs` runs it. Facts in `imager/WINDOWS-RESEARCH.md` §4 and the lab notes it cites:
//! `net` prints the blob on the line after "Successfully provisioned computer"; its exit code
//! is a truncated WERROR (only zero means anything); provisioning a name that already exists
//! silently resets that computer's password, so parc looks the name up first and only reuses
//! accounts it provisioned for the same machine (or the machine it replaces).

pub mod net;

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

/// `[domain]` of parc.toml, resolved.
#[derive(Clone)]
pub struct DomainConfig {
    /// The AD domain's DNS name (`CHU.LOCAL`).
    pub realm: String,
    /// Its NetBIOS name (`CHU`).
    pub workgroup: String,
    pub join_user: String,
    pub join_password: String,
    /// Samba's `net` (Debian's `samba-common-bin`).
    pub net: PathBuf,
    /// Where `net` keeps its caches and locks (under the data directory, never /var/lib/samba).
    pub state_dir: PathBuf,
    pub timeout: Duration,
}

impl std::fmt::Debug for DomainConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DomainConfig")
            .field("realm", &self.realm)
            .field("workgroup", &self.workgroup)
            .field("join_user", &self.join_user)
            .field("net", &self.net)
            .finish_non_exhaustive()
    }
}

/// The computer account's name for a hostname: NetBIOS rules, upper case as Windows shows it.
pub fn machine_name(hostname: &str) -> Result<String, String> {
    let name = hostname.to_ascii_uppercase();
    if name.is_empty() || name.len() > 15 || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(format!("hostname {hostname:?} cannot name a computer account (1 to 15 letters, digits or '-')"));
    }
    Ok(name)
}

/// Options every call shares: the domain, and state kept under the data directory.
fn common(c: &DomainConfig) -> Vec<OsString> {
    let dir = c.state_dir.display();
    let mut v: Vec<OsString> = vec!["-s".into(), "/dev/null".into()];
    for o in [
        format!("workgroup={}", c.workgroup),
        format!("realm={}", c.realm),
        "security=ads".into(),
        format!("private dir={dir}"),
        format!("state directory={dir}"),
        format!("cache directory={dir}"),
        format!("lock directory={dir}"),
        format!("pid directory={dir}"),
        format!("ncalrpc dir={dir}/ncalrpc"),
    ] {
        v.push(format!("--option={o}").into());
    }
    v
}

/// `net ads search` for the account named `name` (its password travels in `PASSWD`).
pub fn search_args(c: &DomainConfig, name: &str) -> Vec<OsString> {
    let mut v = common(c);
    v.extend(["ads".into(), "search".into(), "-U".into(), c.join_user.clone().into()]);
    v.push(format!("(sAMAccountName={name}$)").into());
    v.push("distinguishedName".into());
    v
}

/// `net offlinejoin provision` of `name` in `ou`; `reuse` resets an existing account.
pub fn provision_args(c: &DomainConfig, name: &str, ou: &str, reuse: bool) -> Vec<OsString> {
    let mut v = common(c);
    v.extend(["offlinejoin".into(), "provision".into()]);
    v.push(format!("domain={}", c.realm).into());
    v.push(format!("machine_name={name}").into());
    v.push(format!("machine_account_ou={ou}").into());
    if reuse {
        v.push("reuse".into());
    }
    v.push("printblob".into());
    v.extend(["-U".into(), c.join_user.clone().into()]);
    v
}

/// The distinguished names a search answered.
pub fn parse_search(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .filter_map(|l| l.trim().strip_prefix("distinguishedName:"))
        .map(|dn| dn.trim().to_string())
        .filter(|dn| !dn.is_empty())
        .collect()
}

/// The base64 blob after "Successfully provisioned computer 'NAME'", checked: base64 of an
/// NDR type-serialisation header (`01 10 08 00 cc cc cc cc`) and at least a few hundred bytes.
pub fn parse_provision(stdout: &str, name: &str) -> Result<String, String> {
    let mut lines = stdout.lines().map(str::trim);
    let said = format!("Successfully provisioned computer '{name}'");
    if !lines.by_ref().any(|l| l.starts_with(&said)) {
        let why = stdout.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("no answer");
        return Err(format!("net did not provision {name}: {why}"));
    }
    let blob = lines.find(|l| !l.is_empty()).ok_or_else(|| format!("net provisioned {name} but printed no blob"))?;
    let bytes = decode_base64(blob).ok_or_else(|| format!("the blob net printed for {name} is not base64"))?;
    if bytes.len() < 256 || bytes[..8] != [0x01, 0x10, 0x08, 0x00, 0xcc, 0xcc, 0xcc, 0xcc] {
        return Err(format!("the blob net printed for {name} is not an offline-join provisioning blob"));
    }
    Ok(blob.to_string())
}

/// Standard base64 with its padding: whole quads, `=` only at the end.
fn decode_base64(s: &str) -> Option<Vec<u8>> {
    let body = s.trim_end_matches('=');
    if s.is_empty() || !s.len().is_multiple_of(4) || s.len() - body.len() > 2 {
        return None;
    }
    crate::auth::base64_decode(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> DomainConfig {
        DomainConfig {
            realm: "CHU.LOCAL".into(),
            workgroup: "CHU".into(),
            join_user: "parc-join".into(),
            join_password: "secret".into(),
            net: "net".into(),
            state_dir: "/var/lib/parc/samba".into(),
            timeout: Duration::from_secs(60),
        }
    }

    #[test]
    fn names_follow_netbios_rules() {
        assert_eq!(machine_name("blc-0001").unwrap(), "BLC-0001");
        assert!(machine_name("RADIOLOGIE-POSTE-1").is_err());
        assert!(machine_name("a b").is_err());
        assert!(machine_name("").is_err());
    }

    #[test]
    fn arguments_never_carry_the_password() {
        let a: Vec<String> = provision_args(&cfg(), "BLC-0001", "OU=Bloc,DC=chu,DC=local", true)
            .into_iter()
            .map(|s| s.into_string().unwrap())
            .collect();
        assert!(
            a.contains(&"machine_name=BLC-0001".into())
                && a.contains(&"reuse".into())
                && a.contains(&"printblob".into())
        );
        assert!(a.contains(&"machine_account_ou=OU=Bloc,DC=chu,DC=local".into()));
        assert!(a.contains(&"--option=state directory=/var/lib/parc/samba".into()));
        assert!(!a.iter().any(|x| x.contains("secret")));
        let s: Vec<String> = search_args(&cfg(), "BLC-0001").into_iter().map(|s| s.into_string().unwrap()).collect();
        assert!(s.contains(&"(sAMAccountName=BLC-0001$)".into()));
        assert!(!provision_args(&cfg(), "X", "OU=a,DC=b", false).iter().any(|x| x == "reuse"));
    }

    #[test]
    fn provision_answers() {
        let mut blob = vec![0x01, 0x10, 0x08, 0x00, 0xcc, 0xcc, 0xcc, 0xcc];
        blob.resize(2064, 7);
        let b64 = encode(&blob);
        let out = format!("Successfully provisioned computer 'BLC-0001' in domain 'CHU.LOCAL'\n{b64}\n");
        assert_eq!(parse_provision(&out, "BLC-0001").unwrap(), b64);
        assert_eq!(decode_base64(&b64).unwrap(), blob);
        assert!(parse_provision(&out, "BLC-0002").is_err(), "another machine's answer");
        let failed = "Failed to provision computer account: The attempted logon is invalid.\n";
        assert!(parse_provision(failed, "BLC-0001").unwrap_err().contains("attempted logon is invalid"));
        let short =
            format!("Successfully provisioned computer 'BLC-0001' in domain 'CHU.LOCAL'\n{}\n", encode(&blob[..100]));
        assert!(parse_provision(&short, "BLC-0001").is_err());
        let garbage = "Successfully provisioned computer 'BLC-0001' in domain 'CHU.LOCAL'\nnot*base64\n";
        assert!(parse_provision(garbage, "BLC-0001").is_err());
        assert!(
            decode_base64("QQ==").unwrap() == b"A" && decode_base64("QQ=A").is_none() && decode_base64("QQ").is_none()
        );
    }

    #[test]
    fn search_answers() {
        let out = "Got 1 replies\n\ndistinguishedName: CN=BLC-0001,OU=Bloc,DC=chu,DC=local\n\n";
        assert_eq!(parse_search(out), ["CN=BLC-0001,OU=Bloc,DC=chu,DC=local"]);
        assert!(parse_search("Got 0 replies\n").is_empty());
    }

    fn encode(b: &[u8]) -> String {
        const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut s = String::new();
        for c in b.chunks(3) {
            let n = (c[0] as u32) << 16 | (*c.get(1).unwrap_or(&0) as u32) << 8 | *c.get(2).unwrap_or(&0) as u32;
            for i in 0..4 {
                if i <= c.len() {
                    s.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
                } else {
                    s.push('=');
                }
            }
        }
        s
    }
}

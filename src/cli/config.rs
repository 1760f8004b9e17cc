//! `<data>/parc.toml`: the appliance's settings, written with commented defaults on first
//! start. Command-line flags override the file; the file overrides built-in defaults.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Deserialize;

pub const FILE_NAME: &str = "parc.toml";

/// Written on first start: every setting, commented, with its default.
pub const DEFAULT_TOML: &str = r#"# parc appliance settings. Flags given to `parc serve` override what is set here.

[http]
# Address and port of the HTTP server (image chunks, boot scripts, agent files). Over plain
# HTTP other hosts reach only what firmware and agents fetch; the console and the API are on
# HTTPS.
# listen = "0.0.0.0:8080"
# Address and port of the HTTPS server (console and API); "off" serves everything over HTTP.
# https_listen = "0.0.0.0:8443"
# Connections at once, per client address and in all; more are closed at once. Raise the first
# for a remote site whose HTTP cache fetches chunks for hundreds of PCs from one address.
# max_connections_per_address = 64
# max_connections = 8192

[tls]
# The hospital's certificate chain (server certificate first) and its key, PEM. Without them
# parc makes its own CA in <data>/tls/ at first start and prints its fingerprint.
# cert = "/etc/parc/tls/fullchain.pem"
# key = "/etc/parc/tls/key.pem"
# Names the appliance's own certificate is for, besides its host name and addresses.
# names = ["parc.hopital.local"]

[directory]
# Technicians log in with their accounts of the hospital's directory (Active Directory or
# LDAP); parc's local accounts (admin) keep working when it is unreachable. Off unless url is
# set. Passwords never travel in clear: ldaps://, or ldap:// with starttls = true.
# url = "ldaps://ad.hopital.local"
# starttls = false
# CA certificates (PEM) that signed the directory's certificate; the system's otherwise.
# ca_file = "/etc/parc/ad-ca.pem"
# The service account that looks users up, its password alone in a file (chmod 600); without
# them the search is anonymous.
# bind_dn = "CN=svc-parc,OU=Comptes de service,DC=hopital,DC=local"
# bind_password_file = "/etc/parc/ad-bind-password"
# user_base = "DC=hopital,DC=local"
# {login} is the login typed (escaped). OpenLDAP: "(uid={login})".
# user_filter = "(&(objectClass=user)(sAMAccountName={login}))"
# Groups: by default the user entry's memberOf. With group_base, the groups found there by
# group_filter ({dn}: the user's DN); Active Directory's nested groups:
# "(member:1.2.840.113556.1.4.1941:={dn})".
# group_base = "OU=Groupes,DC=hopital,DC=local"
# group_filter = "(member={dn})"
# Groups giving each role (the highest wins); an account in none of them cannot log in.
# admin_groups = ["CN=GG-Parc-Admins,OU=Groupes,DC=hopital,DC=local"]
# technician_groups = ["CN=GG-Parc-Techniciens,OU=Groupes,DC=hopital,DC=local"]
# readonly_groups = []
# timeout_secs = 5

[pxe]
# Network boot is off unless an interface is given: the interface of the imaging network.
# interface = "enp3s0"
# "proxy" (default) answers PXE clients only and leaves addresses to the site's DHCP server;
# "dhcp" is a full DHCP server, only for an isolated imaging network.
# mode = "proxy"
# Addresses handed out in "dhcp" mode, inside the interface's network.
# dhcp_range = "10.77.0.100-10.77.0.199"
# Directory served over TFTP: Debian's iPXE binaries (package ipxe).
# tftp_root = "/usr/lib/ipxe"
# Loader for UEFI PXE clients: "shim" (Debian's signed shim, GRUB and kernel: boots with
# Secure Boot on or off), or iPXE with Secure Boot off: "snponly" or "ipxe" (its own NIC drivers).
# uefi_loader = "shim"
# Networks whose routers may relay DHCP to parc (their address is the request's giaddr), and
# whose clients may ask the boot server directly. Requests relayed from anywhere else get no
# answer. The default, the private ranges, keeps relayed ProxyDHCP across a site's routers
# working; a site with public internal addresses lists its own networks. [] allows no relays.
# relay_networks = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]

[profiles]
# Departments and the inventory live in the git repository <data>/profiles. To manage them
# in a central repository instead, name it here: parc pulls from it (fast-forward only) and
# pushes the changes made through the API back when it is a path or file:// URL.
# remote = "/srv/git/parc-profiles.git"
# branch = "main"
# pull_interval_secs = 60

[tasks]
# A running task whose agent has not reported for this many seconds fails ("agent silent
# since …"), which frees the machine for a new task. Agents report every few seconds.
# agent_silence_secs = 600
"#;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub http: HttpSection,
    #[serde(default)]
    pub tls: TlsSection,
    #[serde(default)]
    pub pxe: PxeSection,
    #[serde(default)]
    pub profiles: ProfilesSection,
    #[serde(default)]
    pub tasks: TasksSection,
    #[serde(default)]
    pub directory: DirectorySection,
    #[serde(default)]
    pub domain: DomainSection,
}

/// A password kept in its own file, which must not be readable by others; trailing newlines
/// are not part of it.
fn secret_file(what: &str, path: &std::path::Path) -> Result<String> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).with_context(|| format!("{what} {}", path.display()))?;
    if meta.mode() & 0o077 != 0 {
        anyhow::bail!("{what} {} is readable by others: chmod 600 it", path.display());
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("{what} {}", path.display()))?;
    Ok(text.trim_end_matches(['\r', '\n']).to_string())
}

/// `[domain]`: the Active Directory domain Windows departments join offline (Samba's `net`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DomainSection {
    pub realm: Option<String>,
    pub workgroup: Option<String>,
    pub join_user: Option<String>,
    pub join_password_file: Option<PathBuf>,
    pub net: Option<PathBuf>,
    pub timeout_secs: Option<u64>,
}

impl DomainSection {
    /// The domain's settings, `None` when no realm is set; `net` keeps its state under `data`.
    pub fn resolve(&self, data: &std::path::Path) -> Result<Option<parc_web::domain::DomainConfig>> {
        let Some(realm) = self.realm.clone() else { return Ok(None) };
        let need = |v: &Option<String>, key: &str, what: &str| {
            v.clone().filter(|s| !s.trim().is_empty()).with_context(|| format!("[domain] {key} is required: {what}"))
        };
        let workgroup = need(&self.workgroup, "workgroup", "the domain's NetBIOS name, e.g. CHU")?;
        let join_user = need(&self.join_user, "join_user", "the account allowed to create computer objects")?;
        let file = self.join_password_file.as_ref().context("[domain] join_password_file is required")?;
        Ok(Some(parc_web::domain::DomainConfig {
            realm: realm.to_ascii_uppercase(),
            workgroup: workgroup.to_ascii_uppercase(),
            join_user,
            join_password: secret_file("[domain] join_password_file", file)?,
            net: self.net.clone().unwrap_or_else(|| "net".into()),
            state_dir: data.join("samba"),
            timeout: std::time::Duration::from_secs(self.timeout_secs.unwrap_or(60).clamp(5, 600)),
        }))
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectorySection {
    pub url: Option<String>,
    #[serde(default)]
    pub starttls: bool,
    pub ca_file: Option<PathBuf>,
    pub bind_dn: Option<String>,
    pub bind_password_file: Option<PathBuf>,
    pub user_base: Option<String>,
    pub user_filter: Option<String>,
    pub group_base: Option<String>,
    pub group_filter: Option<String>,
    #[serde(default)]
    pub admin_groups: Vec<String>,
    #[serde(default)]
    pub technician_groups: Vec<String>,
    #[serde(default)]
    pub readonly_groups: Vec<String>,
    pub timeout_secs: Option<u64>,
}

impl DirectorySection {
    /// The directory's settings, `None` when no url is set; the service account's password is
    /// read from its file, which must not be readable by others.
    pub fn resolve(&self) -> Result<Option<parc_web::directory::DirectoryConfig>> {
        let Some(url) = self.url.clone() else { return Ok(None) };
        let user_base =
            self.user_base.clone().context("[directory] user_base is required: where user accounts are searched")?;
        let bind_password = match &self.bind_password_file {
            None => None,
            Some(path) => Some(secret_file("[directory] bind_password_file", path)?),
        };
        Ok(Some(parc_web::directory::DirectoryConfig {
            url,
            starttls: self.starttls,
            ca_file: self.ca_file.clone(),
            bind_dn: self.bind_dn.clone(),
            bind_password,
            user_base,
            user_filter: self.user_filter.clone().unwrap_or_else(|| parc_web::directory::AD_USER_FILTER.into()),
            group_base: self.group_base.clone(),
            group_filter: self.group_filter.clone().unwrap_or_else(|| parc_web::directory::DEFAULT_GROUP_FILTER.into()),
            admin_groups: self.admin_groups.clone(),
            technician_groups: self.technician_groups.clone(),
            readonly_groups: self.readonly_groups.clone(),
            timeout: std::time::Duration::from_secs(self.timeout_secs.unwrap_or(5).clamp(1, 60)),
        }))
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TasksSection {
    pub agent_silence_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfilesSection {
    pub remote: Option<String>,
    pub branch: Option<String>,
    pub pull_interval_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSection {
    pub listen: Option<SocketAddr>,
    pub https_listen: Option<String>,
    pub max_connections_per_address: Option<usize>,
    pub max_connections: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub names: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PxeSection {
    pub interface: Option<String>,
    pub mode: Option<PxeModeName>,
    pub dhcp_range: Option<String>,
    pub tftp_root: Option<PathBuf>,
    pub uefi_loader: Option<LoaderName>,
    /// Checked as they are read: a bad entry is named with its line.
    pub relay_networks: Option<Vec<parc_pxe::dhcp::Ipv4Net>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum PxeModeName {
    Proxy,
    Dhcp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LoaderName {
    Shim,
    Snponly,
    Ipxe,
}

/// Reads `<data>/parc.toml`, creating it with commented defaults when missing.
pub fn load_or_create(data: &Path) -> Result<FileConfig> {
    let path = data.join(FILE_NAME);
    if !path.exists() {
        std::fs::write(&path, DEFAULT_TOML).with_context(|| format!("writing {}", path.display()))?;
    }
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    parse(&text).with_context(|| format!("{} is not valid", path.display()))
}

pub fn parse(text: &str) -> Result<FileConfig> {
    Ok(toml::from_str(text)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_parse_to_nothing_set() {
        let c = parse(DEFAULT_TOML).unwrap();
        assert!(c.http.listen.is_none() && c.pxe.interface.is_none() && c.tasks.agent_silence_secs.is_none());
    }

    #[test]
    fn values_and_errors_with_line_numbers() {
        let c = parse("[pxe]\ninterface = \"eth1\"\nmode = \"dhcp\"\ndhcp_range = \"10.0.0.10-10.0.0.20\"\n").unwrap();
        assert_eq!(c.pxe.mode, Some(PxeModeName::Dhcp));
        let e = format!("{:#}", parse("[pxe]\nmode = \"multicast\"\n").unwrap_err());
        assert!(e.contains("line 2") && e.contains("multicast"), "{e}");
        let e = format!("{:#}", parse("[pxe]\ninterfce = \"eth0\"\n").unwrap_err());
        assert!(e.contains("interfce"), "{e}");
        assert_eq!(parse("[tasks]\nagent_silence_secs = 120\n").unwrap().tasks.agent_silence_secs, Some(120));
    }

    #[test]
    fn relay_networks_are_checked() {
        let c = parse("[pxe]\nrelay_networks = [\"10.0.0.0/8\", \"198.51.100.0/24\"]\n").unwrap();
        let nets: Vec<String> = c.pxe.relay_networks.unwrap().iter().map(ToString::to_string).collect();
        assert_eq!(nets, ["10.0.0.0/8", "198.51.100.0/24"]);
        assert_eq!(parse("[pxe]\nrelay_networks = []\n").unwrap().pxe.relay_networks, Some(vec![]));
        let e = format!("{:#}", parse("[pxe]\nrelay_networks = [\"10.0.0.0/8\", \"10.20.0.1/16\"]\n").unwrap_err());
        assert!(e.contains("line 2") && e.contains("10.20.0.1/16") && e.contains("10.20.0.0/16"), "{e}");
        let e = format!("{:#}", parse("[pxe]\nrelay_networks = [\"hospital\"]\n").unwrap_err());
        assert!(e.contains("\"hospital\" is not an IPv4 network"), "{e}");
    }
}

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
# Loader for UEFI PXE clients: "snponly" (starts ~4 s faster) or "ipxe" (its own NIC drivers).
# uefi_loader = "snponly"
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

//! The iPXE script a machine gets from `GET /boot.ipxe?mac=…`: pure rendering of the boot
//! decision. Firmware and iPXE may ask several times during one boot, so the script is a pure,
//! idempotent function of the request and the server's state.

use std::fmt;
use std::str::FromStr;

/// A MAC address as iPXE writes `${net0/mac}` (`52:54:00:12:34:56`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Mac(pub [u8; 6]);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a MAC address (expected six hex pairs separated by ':' or '-')")]
pub struct BadMac(pub String);

impl FromStr for Mac {
    type Err = BadMac;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadMac(s.chars().take(40).collect());
        let parts: Vec<&str> = s.split([':', '-']).collect();
        if parts.len() != 6 {
            return Err(bad());
        }
        let mut mac = [0u8; 6];
        for (i, p) in parts.iter().enumerate() {
            if p.len() != 2 {
                return Err(bad());
            }
            mac[i] = u8::from_str_radix(p, 16).map_err(|_| bad())?;
        }
        Ok(Mac(mac))
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5])
    }
}

/// What the server knows when a machine asks how to boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootState {
    /// `http://host:port` as the machine reached the server.
    pub http_base: String,
    /// The agent's kernel and initrd are available (`<data>/netboot/`).
    pub agent_available: bool,
    /// The machine has a queued or running task.
    pub has_task: bool,
    /// The machine is in the inventory and has nothing to do: it boots its disk.
    pub known_and_idle: bool,
    /// The machine's last deployment failed or was cancelled after its agent started (and none
    /// succeeded since): its disk is unbootable or half written, never to be booted.
    pub last_deploy_failed: bool,
    /// parc saw this machine network-booting from the address asking (see
    /// `crate::sightings`): only then does the agent get a boot credential.
    pub seen_booting: bool,
}

/// The decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Boot the parc agent with these kernel arguments; the caller puts the boot credential it
    /// issued in `token` before rendering.
    Agent { mode: &'static str, token: Option<String> },
    /// Leave network boot: the firmware goes on to the local disk.
    LocalDisk { reason: &'static str },
    /// The agent would need a credential that parc will not issue now: say why, ask again later.
    Refused { reason: String },
}

/// Why a machine not seen booting gets no credential (shown on its screen).
pub const NOT_SEEN_BOOTING: &str = "this appliance did not see this machine boot from the network at this address \
(no DHCP/ProxyDHCP exchange or TFTP loader fetch in the last minutes), so it issues no credential; \
if the site's DHCP sends PCs straight to this URL, a technician can allow it: parc machine netboot-grant";

impl Decision {
    /// The decision without its secret, for logs.
    pub fn redacted(self) -> Decision {
        match self {
            Decision::Agent { mode, token } => Decision::Agent { mode, token: token.map(|_| "…".into()) },
            d => d,
        }
    }
}

pub fn decide(state: &BootState) -> Decision {
    if !state.agent_available {
        return Decision::LocalDisk { reason: "the agent is not installed on this appliance" };
    }
    let mode = match (state.has_task, state.last_deploy_failed, state.known_and_idle) {
        (true, _, _) => "task",
        // The agent shows why on screen and waits for a technician's new task.
        (false, true, _) => "failed",
        (false, false, true) => return Decision::LocalDisk { reason: "no pending task" },
        (false, false, false) => "register",
    };
    if !state.seen_booting {
        return Decision::Refused { reason: NOT_SEEN_BOOTING.into() };
    }
    Decision::Agent { mode, token: None }
}

/// Renders the script. Kernel arguments carry the server URL, the MAC and the boot credential.
pub fn render(state: &BootState, mac: Mac, decision: &Decision) -> String {
    let base = &state.http_base;
    match decision {
        Decision::Agent { mode, token } => format!(
            "#!ipxe\necho {}\n\
             kernel {base}/netboot/vmlinuz initrd=initrd {}\n\
             initrd --name initrd {base}/netboot/initrd\nboot\n",
            agent_banner(mac, mode),
            agent_arguments(base, mac, mode, token.as_deref())
        ),
        // UEFI: a boot option that returns success sends the firmware to its boot manager menu
        // (UEFI spec 3.1.1; OVMF does), one that fails makes it try the next option, the disk.
        // BIOS: iPXE boots the first hard disk itself.
        Decision::LocalDisk { reason } => format!(
            "#!ipxe\necho parc: {mac}: {reason}; booting the local disk\n\
             iseq ${{platform}} efi && exit 1 ||\nsanboot --no-describe --drive 0x80 || exit 1\n"
        ),
        // The disk may be half written: never boot it; ask again in 30 s.
        Decision::Refused { reason } => format!(
            "#!ipxe\necho parc: {mac}: {reason}\necho parc: asking again in 30 seconds\nsleep 30\n\
             chain --replace {base}/boot.ipxe?mac={mac}\n"
        ),
    }
}

/// What the machine's screen says as the agent boots (iPXE and GRUB alike).
pub(crate) fn agent_banner(mac: Mac, mode: &str) -> String {
    let why = match mode {
        "failed" => ": its last deployment did not finish, so its disk is not booted",
        _ => "",
    };
    format!("parc: booting the agent ({mode}) for {mac}{why}")
}

/// The agent's kernel arguments: the server, the machine, the mode and the boot credential.
pub(crate) fn agent_arguments(base: &str, mac: Mac, mode: &str, token: Option<&str>) -> String {
    let token = token.map(|t| format!(" parc.token={t}")).unwrap_or_default();
    format!("parc.server={base} parc.mac={mac} parc.mode={mode}{token} console=tty0 console=ttyS0,115200 quiet")
}

/// The script for a request without `mac`: the DHCP boot file is a plain URL, so iPXE is asked
/// to come back with its MAC filled in (iPXE expands `${net0/mac}` in scripts).
pub fn render_ask_mac(http_base: &str) -> String {
    format!("#!ipxe\nchain {http_base}/boot.ipxe?mac=${{net0/mac}}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(agent: bool, task: bool, known: bool) -> BootState {
        BootState {
            http_base: "http://10.77.0.1:8080".into(),
            agent_available: agent,
            has_task: task,
            known_and_idle: known,
            last_deploy_failed: false,
            seen_booting: true,
        }
    }

    fn failed(s: BootState) -> BootState {
        BootState { last_deploy_failed: true, ..s }
    }

    fn unseen(s: BootState) -> BootState {
        BootState { seen_booting: false, ..s }
    }

    #[test]
    fn decisions() {
        let agent = |mode| Decision::Agent { mode, token: None };
        let refused = Decision::Refused { reason: NOT_SEEN_BOOTING.into() };
        let no_agent = Decision::LocalDisk { reason: "the agent is not installed on this appliance" };
        let cases = [
            ("no agent built", state(false, true, false), no_agent.clone()),
            ("pending task", state(true, true, true), agent("task")),
            ("known and idle", state(true, false, true), Decision::LocalDisk { reason: "no pending task" }),
            ("unknown machine registers", state(true, false, false), agent("register")),
            ("known, last deployment failed or cancelled", failed(state(true, false, true)), agent("failed")),
            ("retired or unknown, last deployment failed", failed(state(true, false, false)), agent("failed")),
            ("a new task after a failure", failed(state(true, true, true)), agent("task")),
            ("failed, but no agent to boot", failed(state(false, false, true)), no_agent),
            // Naming a MAC is not enough: whoever asks must be the machine parc saw booting.
            ("a task, asked from elsewhere", unseen(state(true, true, true)), refused.clone()),
            ("register, asked from elsewhere", unseen(state(true, false, false)), refused.clone()),
            ("failed, asked from elsewhere", unseen(failed(state(true, false, true))), refused),
            // No credential is involved in booting the disk.
            (
                "idle, asked from elsewhere",
                unseen(state(true, false, true)),
                Decision::LocalDisk { reason: "no pending task" },
            ),
        ];
        for (name, s, want) in cases {
            assert_eq!(decide(&s), want, "{name}");
        }
    }

    #[test]
    fn scripts() {
        let mac: Mac = "52:54:00:AB:cd:01".parse().unwrap();
        let s = state(true, true, false);
        let script = render(&s, mac, &Decision::Agent { mode: "task", token: Some("tok".into()) });
        assert!(script.starts_with("#!ipxe\n"));
        assert!(script.contains("kernel http://10.77.0.1:8080/netboot/vmlinuz initrd=initrd parc.server=http://10.77.0.1:8080 parc.mac=52:54:00:ab:cd:01 parc.mode=task parc.token=tok"));
        assert!(script.contains("initrd --name initrd http://10.77.0.1:8080/netboot/initrd"));
        assert_eq!(render_ask_mac("http://h:1"), "#!ipxe\nchain http://h:1/boot.ipxe?mac=${net0/mac}\n");
        let local = render(&s, mac, &Decision::LocalDisk { reason: "no pending task" });
        assert!(local.contains("sanboot --no-describe --drive 0x80"));
        // UEFI firmware goes on to the disk only when the network boot option fails.
        assert!(local.contains("iseq ${platform} efi && exit 1 ||"), "{local}");
        let f = failed(state(true, false, true));
        let script = render(&f, mac, &decide(&f));
        assert!(script.contains(" parc.mode=failed console=") && !script.contains("parc.token"), "{script}");
        assert!(script.contains("its disk is not booted"), "{script}");
        let refused = render(&s, mac, &decide(&unseen(s.clone())));
        assert!(!refused.contains("kernel") && !refused.contains("sanboot"), "{refused}");
        assert!(
            refused.contains("netboot-grant")
                && refused.contains("chain --replace http://10.77.0.1:8080/boot.ipxe?mac=52:54:00:ab:cd:01"),
            "{refused}"
        );
    }

    #[test]
    fn macs() {
        assert_eq!("52-54-00-00-00-01".parse::<Mac>().unwrap().to_string(), "52:54:00:00:00:01");
        for bad in ["", "52:54:00:00:00", "52:54:00:00:00:0g", "52:54:00:00:00:001", "x;reboot"] {
            assert!(bad.parse::<Mac>().is_err(), "{bad}");
        }
    }
}

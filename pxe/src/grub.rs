//! The GRUB side of a UEFI network boot (pure rendering): the chain a PC with Secure Boot on
//! accepts is Microsoft-signed shim → Debian-signed GRUB → Debian-signed kernel, and Debian's
//! signed network GRUB (`grubnetx64.efi`) can neither load modules under Secure Boot nor speak
//! HTTP. So everything after shim goes over parc's TFTP:
//!
//! 1. GRUB's built-in configuration reads [`BOOTSTRAP`] (its prefix is `/grub` on the server of
//!    the firmware's DHCP acknowledgement: `siaddr`, else option 66), which parc generates.
//! 2. That script asks for [`machine_script_path`]`(MAC)`, the machine's own script, made by the
//!    web server from the same decision as `/boot.ipxe` (`crate::ipxe::decide`).
//! 3. The agent's kernel and initrd come from `netboot/` over TFTP; the kernel is verified by
//!    shim, the initrd is not (Debian's GRUB does not), the agent checks what it writes.

use crate::ipxe::{agent_arguments, agent_banner, BootState, Decision, Mac};

/// The file GRUB's embedded configuration sources (`$prefix/grub.cfg`, prefix `/grub`).
pub const BOOTSTRAP: &str = "grub/grub.cfg";

/// Where a machine's own script is asked for: `grub/parc/<mac>`.
pub const MACHINE_DIR: &str = "grub/parc/";

/// The text of [`BOOTSTRAP`]: the same for every machine; GRUB fills in the MAC of the
/// interface it booted from.
pub fn bootstrap() -> String {
    format!(
        "# parc: each machine asks for its own boot script by its MAC address.\n\
         set timeout=0\n\
         echo 'parc: asking the appliance how to boot'\n\
         source /{MACHINE_DIR}${{net_default_mac}}\n"
    )
}

/// The TFTP name of `mac`'s script.
pub fn machine_script_path(mac: Mac) -> String {
    format!("{MACHINE_DIR}{mac}")
}

/// The MAC a requested TFTP name asks the script of, if it is one (cleaned name, no leading
/// `/`): `grub/parc/52:54:00:12:34:56`.
pub fn machine_script_mac(name: &str) -> Option<Mac> {
    name.strip_prefix(MACHINE_DIR)?.parse().ok()
}

/// EFI loaders of an installed system, tried in this order when the machine boots its disk:
/// Windows' boot manager, Debian's shim, the removable-media path every UEFI system has.
pub const DISK_LOADERS: [&str; 3] =
    ["/EFI/Microsoft/Boot/bootmgfw.efi", "/EFI/debian/shimx64.efi", "/EFI/BOOT/BOOTX64.EFI"];

/// A GRUB single-quoted word: nothing inside is expanded; a `'` closes, is escaped, reopens.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Renders `mac`'s script for `decision` (the same decision and credential as the iPXE script).
pub fn render(state: &BootState, mac: Mac, decision: &Decision) -> String {
    let base = &state.http_base;
    match decision {
        Decision::Agent { mode, token } => format!(
            "echo {}\nlinux /netboot/vmlinuz {}\ninitrd /netboot/initrd\nboot\n",
            quote(&agent_banner(mac, mode)),
            agent_arguments(base, mac, mode, token.as_deref())
        ),
        // GRUB's `exit` returns success to the firmware, which then stops at its boot manager
        // menu instead of trying the disk (UEFI spec 3.1.1; OVMF does): GRUB starts the disk's
        // loader itself. Under Secure Boot the firmware checks that loader's signature.
        Decision::LocalDisk { reason } => {
            let mut s = format!("echo {}\n", quote(&format!("parc: {mac}: {reason}; booting the local disk")));
            s.push_str(&format!("for loader in {}; do\n", DISK_LOADERS.join(" ")));
            s.push_str(
                "  if search --no-floppy --file --set=disk $loader; then\n    set root=$disk\n    \
                 chainloader $loader\n    boot\n  fi\ndone\n",
            );
            s.push_str(&format!(
                "echo {}\nsleep 30\nconfigfile /{}\n",
                quote("parc: no disk holds a UEFI boot loader; asking again in 30 seconds"),
                BOOTSTRAP
            ));
            s
        }
        Decision::Refused { reason } => format!(
            "echo {}\necho {}\nsleep 30\nconfigfile /{BOOTSTRAP}\n",
            quote(&format!("parc: {mac}: {reason}")),
            quote("parc: asking again in 30 seconds")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipxe::NOT_SEEN_BOOTING;

    fn state() -> BootState {
        BootState {
            http_base: "http://10.77.0.1:8080".into(),
            agent_available: true,
            has_task: true,
            known_and_idle: false,
            last_deploy_failed: false,
            seen_booting: true,
        }
    }

    #[test]
    fn bootstrap_asks_for_the_machine_script() {
        let b = bootstrap();
        assert!(b.contains("source /grub/parc/${net_default_mac}\n"), "{b}");
        let mac: Mac = "52:54:00:AB:cd:01".parse().unwrap();
        assert_eq!(machine_script_path(mac), "grub/parc/52:54:00:ab:cd:01");
        // GRUB writes the MAC in lower case; either case and '-' are accepted.
        assert_eq!(machine_script_mac("grub/parc/52:54:00:ab:cd:01"), Some(mac));
        assert_eq!(machine_script_mac("grub/parc/52-54-00-AB-CD-01"), Some(mac));
        for other in ["grub/grub.cfg", "grub/parc/", "grub/parc/52:54:00:ab:cd", "grub/parc/x;reboot", "netboot/initrd"]
        {
            assert_eq!(machine_script_mac(other), None, "{other}");
        }
    }

    #[test]
    fn agent_script_loads_kernel_and_initrd_over_tftp() {
        let mac: Mac = "52:54:00:ab:cd:01".parse().unwrap();
        let s = render(&state(), mac, &Decision::Agent { mode: "task", token: Some("pb_tok".into()) });
        assert!(
            s.contains(
                "linux /netboot/vmlinuz parc.server=http://10.77.0.1:8080 parc.mac=52:54:00:ab:cd:01 \
                 parc.mode=task parc.token=pb_tok console=tty0"
            ),
            "{s}"
        );
        assert!(s.contains("\ninitrd /netboot/initrd\nboot\n"), "{s}");
        // Nothing over HTTP: Debian's signed GRUB has no HTTP.
        assert!(!s.contains("(http"), "{s}");
        let f = render(&state(), mac, &Decision::Agent { mode: "failed", token: None });
        assert!(f.contains("parc.mode=failed console=") && !f.contains("parc.token"), "{f}");
    }

    #[test]
    fn local_disk_chainloads_the_installed_loader() {
        let mac: Mac = "52:54:00:ab:cd:01".parse().unwrap();
        let s = render(&state(), mac, &Decision::LocalDisk { reason: "no pending task" });
        assert!(
            s.contains(
                "for loader in /EFI/Microsoft/Boot/bootmgfw.efi /EFI/debian/shimx64.efi /EFI/BOOT/BOOTX64.EFI; do"
            ),
            "{s}"
        );
        assert!(s.contains("search --no-floppy --file --set=disk $loader") && s.contains("chainloader $loader"), "{s}");
        // Never `exit`: the firmware would stop at its menu.
        assert!(!s.lines().any(|l| l.trim() == "exit"), "{s}");
    }

    #[test]
    fn refusals_are_quoted_and_ask_again() {
        let mac: Mac = "52:54:00:ab:cd:01".parse().unwrap();
        let s = render(&state(), mac, &Decision::Refused { reason: NOT_SEEN_BOOTING.into() });
        assert!(!s.contains("linux ") && !s.contains("chainloader"), "{s}");
        assert!(s.contains("netboot-grant") && s.ends_with("sleep 30\nconfigfile /grub/grub.cfg\n"), "{s}");
        // A quote in a reason cannot end the word early.
        let q = render(&state(), mac, &Decision::Refused { reason: "it's $(x); reboot".into() });
        assert!(q.contains(r"echo 'parc: 52:54:00:ab:cd:01: it'\''s $(x); reboot'"), "{q}");
    }
}

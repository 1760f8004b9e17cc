//! The network-boot lab: QEMU clients PXE-booting through `parc serve`, all inside network
//! namespaces this test creates and removes (a "switch" namespace with a bridge and one tap per
//! VM, a server namespace joined to it by a veth). Nothing touches a real interface.
//!
//! The client boots a Debian kernel with a one-file initramfs whose /init prints a marker and
//! the kernel command line (which carries what parc's boot script decided) on the serial port.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

pub(crate) const SERVER_IP: &str = "10.77.0.1";
const MARKER: &str = "PARC-LAB-INIT-OK";

pub(crate) struct Lab {
    pub sw: String,
    pub srv: String,
    extra_ns: Vec<String>,
    children: Vec<Child>,
}

impl Lab {
    pub fn new(tag: &str) -> Lab {
        let id = format!("{tag}{}", std::process::id() % 100_000);
        let lab = Lab { sw: format!("psw{id}"), srv: format!("psv{id}"), extra_ns: Vec::new(), children: Vec::new() };
        let (sw, srv) = (&lab.sw, &lab.srv);
        sh(&format!(
            "ip netns add {sw}; ip netns add {srv}
             for n in {sw} {srv}; do ip netns exec $n sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1; ip -n $n link set lo up; done
             ip -n {sw} link add br0 type bridge stp_state 0 forward_delay 0
             ip -n {sw} link set br0 up
             ip link add {sw}v type veth peer name {srv}v
             ip link set {sw}v netns {sw}; ip link set {srv}v netns {srv}
             ip -n {sw} link set {sw}v master br0 up
             ip -n {srv} link set {srv}v name eth0
             ip -n {srv} addr add {SERVER_IP}/24 dev eth0
             ip -n {srv} link set eth0 up"
        ));
        lab
    }

    /// The hospital's own DHCP server: dnsmasq handing out addresses only, no boot options,
    /// in a third namespace on the same bridge.
    pub fn hospital_dhcp(&mut self) {
        let (sw, hosp) = (&self.sw, format!("{}h", self.srv));
        sh(&format!(
            "ip netns add {hosp}
             ip netns exec {hosp} sysctl -qw net.ipv6.conf.all.disable_ipv6=1
             ip -n {hosp} link set lo up
             ip link add {sw}h type veth peer name {hosp}v
             ip link set {sw}h netns {sw}; ip link set {hosp}v netns {hosp}
             ip -n {sw} link set {sw}h master br0 up
             ip -n {hosp} link set {hosp}v name eth0
             ip -n {hosp} addr add 10.77.0.2/24 dev eth0
             ip -n {hosp} link set eth0 up"
        ));
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &hosp,
                "dnsmasq",
                "--no-daemon",
                "--conf-file=/dev/null",
                "--port=0",
                "--interface=eth0",
                "--bind-interfaces",
                "--dhcp-range=10.77.0.100,10.77.0.150,255.255.255.0,1h",
                // What README asks of a hospital's DHCP server for UEFI PCs with Secure Boot
                // in ProxyDHCP mode: Debian's GRUB reads its TFTP server from the site's
                // acknowledgement (`siaddr`, else option 66), never from ProxyDHCP; dnsmasq
                // sets `siaddr` to itself unless told the next server (no boot file here).
                "--dhcp-boot=,,10.77.0.1",
                "--no-ping",
                "--dhcp-leasefile=/dev/null",
                "--log-dhcp",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.children.push(child);
        self.extra_ns.push(hosp);
    }

    pub fn tap(&self, name: &str) {
        sh(&format!(
            "ip -n {sw} tuntap add dev {name} mode tap && ip -n {sw} link set {name} master br0 up",
            sw = self.sw
        ));
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("ip").args(["netns", "del", &self.sw]).status();
        let _ = Command::new("ip").args(["netns", "del", &self.srv]).status();
        for ns in &self.extra_ns {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// A Debian kernel and a marker initramfs, downloaded and built once and kept in
/// `target/lab-cache` (never installed on the host). Tests run in parallel threads: the first
/// builds, the others wait for it.
fn netboot_files() -> PathBuf {
    static FILES: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    FILES.get_or_init(build_netboot_files).clone()
}

fn build_netboot_files() -> PathBuf {
    let cache = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/lab-cache");
    if ["initrd", "vmlinuz", "shimx64.efi", "grubx64.efi"].iter().all(|f| cache.join(f).exists()) {
        return cache;
    }
    // Built in a private directory and moved into place, so an interrupted build never
    // leaves a half-made cache behind.
    let build = cache.join(format!("build-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&build);
    std::fs::create_dir_all(&build).unwrap();
    // The same packages iso/build-netboot uses, from the same cache (target/netboot-cache):
    // the signed kernel, shim and GRUB. The init says what the kernel was given and whether it
    // runs locked down (what Secure Boot makes Debian's kernel do).
    sh(&format!(
        r#"cd {b}
        mkdir -p x root/bin root/proc root/sys
        for deb in $({top}/iso/fetch-deb {top}/target/netboot-cache kernel busybox-static shim-signed grub-efi-amd64-signed); do dpkg-deb -x "$deb" x; done
        cp x/boot/vmlinuz-* vmlinuz
        cp x/usr/lib/shim/shimx64.efi.signed shimx64.efi
        cp x/usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed grubx64.efi
        cp x/bin/busybox root/bin/busybox
        printf '#!/bin/busybox sh\n/bin/busybox mount -t proc proc /proc\n/bin/busybox mount -t sysfs sysfs /sys\n/bin/busybox mount -t securityfs securityfs /sys/kernel/security\n/bin/busybox echo {MARKER} $(/bin/busybox cat /proc/cmdline) lockdown=$(/bin/busybox cat /sys/kernel/security/lockdown)\n/bin/busybox poweroff -f\n' > root/init
        chmod +x root/init
        (cd root && find . | cpio -o -H newc --quiet) | gzip -1 > initrd
        mv initrd vmlinuz shimx64.efi grubx64.efi {c}/"#,
        b = build.display(),
        c = cache.display(),
        top = env!("CARGO_MANIFEST_DIR"),
    ));
    std::fs::remove_dir_all(&build).unwrap();
    cache
}

#[derive(Clone, Copy, Debug)]
pub(crate) enum Firmware {
    Bios,
    Uefi,
    /// OVMF's Secure Boot build with Microsoft's keys enrolled and Secure Boot on, as Windows 11
    /// PCs ship (q35 with SMM, which that build needs).
    UefiSecureBoot,
}

impl Firmware {
    fn uefi(self) -> bool {
        !matches!(self, Firmware::Bios)
    }
}

/// Boots one QEMU client on `tap` and returns its serial log once the marker appears.
fn boot_client(lab: &Lab, tap: &str, mac: &str, fw: Firmware, work: &Path) -> String {
    let done = |text: &str| text.find(MARKER).is_some_and(|at| text[at..].contains('\n'));
    let vm = Vm::new(tap, mac, fw, 512, work);
    run_client(lab, &vm, "boot", &[], Duration::from_secs(240), done).log
}

/// The disk controllers of the PCs hospitals buy that QEMU emulates.
#[derive(Clone, Copy, Debug)]
pub(crate) enum DiskBus {
    Virtio,
    /// An NVMe SSD (the `nvme` driver).
    Nvme,
    /// A SATA disk behind an AHCI controller (`ahci`).
    Ahci,
}

/// One QEMU client of the lab.
pub(crate) struct Vm {
    pub tap: String,
    pub mac: String,
    pub fw: Firmware,
    pub mem_mib: u32,
    pub cpus: u32,
    /// A raw disk file, booted after the network like a PC whose firmware tries PXE first.
    pub disk: Option<PathBuf>,
    /// How the disk is attached.
    pub disk_bus: DiskBus,
    /// The NIC of a BIOS PC: QEMU's device model, with QEMU's iPXE ROM for it (UEFI PCs keep
    /// virtio-net with the firmware's own PXE client).
    pub bios_nic: &'static str,
    /// Where its serial logs and UEFI variables live.
    pub dir: PathBuf,
}

impl Vm {
    pub fn new(tap: &str, mac: &str, fw: Firmware, mem_mib: u32, dir: &Path) -> Vm {
        Vm {
            tap: tap.into(),
            mac: mac.into(),
            fw,
            mem_mib,
            cpus: 1,
            disk: None,
            disk_bus: DiskBus::Virtio,
            bios_nic: "virtio-net-pci",
            dir: dir.to_path_buf(),
        }
    }

    /// QEMU's human monitor of the running VM (a unix socket in its directory).
    pub fn monitor(&self) -> PathBuf {
        self.dir.join(format!("{}.monitor", self.tap))
    }

    /// Sends one monitor command to the running VM and returns what QEMU answered.
    pub fn hmp(&self, command: &str) -> String {
        use std::io::{Read, Write};
        let mut s = std::os::unix::net::UnixStream::connect(self.monitor()).expect("connect to the QEMU monitor");
        s.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        writeln!(s, "{command}").unwrap();
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// What a client's serial console showed, and when.
pub(crate) struct ClientRun {
    pub log: String,
    /// For each watched text, the time from QEMU's start to its first appearance.
    pub seen: Vec<Option<Duration>>,
    /// From QEMU's start to `done` (or to QEMU's exit).
    pub elapsed: Duration,
}

/// Boots `vm` until `done(serial log)` holds, then stops it (QEMU runs with -no-reboot: a
/// reboot ends the run, and `done` is checked once more). Records when each `watch` text first
/// appears. The serial console goes to `<dir>/<tap>.<phase>.serial.log`. Panics with the serial
/// log when QEMU exits and `done` does not hold, or after `timeout`.
pub(crate) fn run_client(
    lab: &Lab,
    vm: &Vm,
    phase: &str,
    watch: &[&str],
    timeout: Duration,
    mut done: impl FnMut(&str) -> bool,
) -> ClientRun {
    let (tap, mac, work) = (&vm.tap, &vm.mac, &vm.dir);
    let log = work.join(format!("{tap}.{phase}.serial.log"));
    let _ = std::fs::remove_file(&log);
    let mut args: Vec<String> = vec![
        "netns".into(),
        "exec".into(),
        lab.sw.clone(),
        "qemu-system-x86_64".into(),
        "-accel".into(),
        "tcg".into(),
        "-m".into(),
        vm.mem_mib.to_string(),
        "-smp".into(),
        vm.cpus.to_string(),
        "-display".into(),
        "none".into(),
        "-serial".into(),
        format!("file:{}", log.display()),
        "-no-reboot".into(),
        "-monitor".into(),
        format!("unix:{},server=on,wait=off", vm.monitor().display()),
        "-netdev".into(),
        format!("tap,id=n0,ifname={tap},script=no,downscript=no"),
    ];
    if let Some(disk) = &vm.disk {
        let boot = if vm.fw.uefi() { ",bootindex=2" } else { "" };
        args.extend(["-drive".into(), format!("file={},format=raw,if=none,id=d0,cache=unsafe", disk.display())]);
        let device = match vm.disk_bus {
            DiskBus::Virtio => format!("virtio-blk-pci,drive=d0{boot}"),
            DiskBus::Nvme => format!("nvme,drive=d0,serial=PARC-NVME-{}{boot}", vm.tap),
            DiskBus::Ahci => {
                args.extend(["-device".into(), "ahci,id=ahci0".into()]);
                format!("ide-hd,drive=d0,bus=ahci0.0{boot}")
            }
        };
        args.extend(["-device".into(), device]);
    }
    match vm.fw {
        Firmware::Bios => {
            args.extend(["-device".into(), format!("{},netdev=n0,mac={mac}", vm.bios_nic), "-boot".into(), "n".into()]);
        }
        Firmware::Uefi | Firmware::UefiSecureBoot => {
            let (code, vars_template) = match vm.fw {
                Firmware::UefiSecureBoot => {
                    args.extend([
                        "-machine".into(),
                        "q35,smm=on".into(),
                        "-global".into(),
                        "driver=cfi.pflash01,property=secure,value=on".into(),
                        "-global".into(),
                        "ICH9-LPC.disable_s3=1".into(),
                    ]);
                    ("OVMF_CODE_4M.secboot.fd", "OVMF_VARS_4M.ms.fd")
                }
                _ => ("OVMF_CODE_4M.fd", "OVMF_VARS_4M.fd"),
            };
            // Kept across the power-ons of one machine, like a PC's NVRAM.
            let vars = work.join(format!("{tap}.vars.fd"));
            if !vars.exists() {
                std::fs::copy(format!("/usr/share/OVMF/{vars_template}"), &vars).unwrap();
            }
            args.extend([
                "-drive".into(),
                format!("if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/{code}"),
                "-drive".into(),
                format!("if=pflash,format=raw,unit=1,file={}", vars.display()),
                // Network boot over IPv4 only, as a hospital's PCs are set up: otherwise, once
                // the boot script sends it on (`exit 1`), OVMF tries PXE and HTTP boot over
                // IPv6 before the disk, minutes under TCG.
                "-fw_cfg".into(),
                "name=opt/org.tianocore/IPv6Support,string=no".into(),
                // The firmware's own PXE client, not an iPXE option ROM: the path real PCs take.
                "-device".into(),
                format!("virtio-net-pci,netdev=n0,mac={mac},romfile=,bootindex=1"),
            ]);
        }
    }
    let start = Instant::now();
    let mut child = Command::new("ip").args(&args).stdout(Stdio::null()).stderr(Stdio::inherit()).spawn().unwrap();
    let mut seen = vec![None; watch.len()];
    loop {
        // The console may deliver a line in pieces: match on the accumulated stream.
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        for (w, at) in watch.iter().zip(seen.iter_mut()) {
            if at.is_none() && text.contains(w) {
                *at = Some(start.elapsed());
            }
        }
        if done(&text) {
            let elapsed = start.elapsed();
            let _ = child.kill();
            let _ = child.wait();
            return ClientRun { log: text, seen, elapsed };
        }
        if let Ok(Some(status)) = child.try_wait() {
            let elapsed = start.elapsed();
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if done(&text) {
                return ClientRun { log: text, seen, elapsed };
            }
            panic!("QEMU exited ({status}) before the client was done; serial log:\n{text}");
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            panic!("client not done within {} s; serial log:\n{text}", timeout.as_secs());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Starts `parc serve` in the server namespace; returns the rest of its stdout (the first
/// start's admin password follows the "serving" line).
pub(crate) fn start_parc(lab: &mut Lab, data: &Path, mode: &[&str]) -> BufReader<ChildStdout> {
    let (child, stdout) = spawn_parc(lab, data, mode, None);
    lab.children.push(child);
    stdout
}

/// Starts `parc serve` in the server namespace, its warnings on the test's stderr or, given a
/// log file, its info logs there; returns it and the rest of its stdout, once it serves.
pub(crate) fn spawn_parc(
    lab: &Lab,
    data: &Path,
    mode: &[&str],
    log: Option<std::fs::File>,
) -> (Child, BufReader<ChildStdout>) {
    let mut args = vec![
        "netns".to_string(),
        "exec".into(),
        lab.srv.clone(),
        env!("CARGO_BIN_EXE_parc").into(),
        "serve".into(),
        "--data".into(),
        data.display().to_string(),
        "--http".into(),
        format!("{SERVER_IP}:8080"),
        "--pxe-interface".into(),
        "eth0".into(),
    ];
    args.extend(mode.iter().map(|s| s.to_string()));
    let mut cmd = Command::new("ip");
    cmd.args(&args).stdout(Stdio::piped());
    match log {
        Some(file) => cmd.env("PARC_LOG", "info").stderr(file),
        None => cmd.stderr(Stdio::inherit()),
    };
    let mut child = cmd.spawn().unwrap();
    let mut line = String::new();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    stdout.read_line(&mut line).unwrap();
    assert!(line.contains("parc serving"), "parc serve did not start: {line:?}");
    (child, stdout)
}

pub(crate) fn lab_prereqs(test: &str) -> bool {
    root_or_skip(test) && have("qemu-system-x86_64", "qemu-system-x86") && have("cpio", "cpio")
}

fn data_with_agent(work: &Path) -> PathBuf {
    data_with_netboot(work, &netboot_files())
}

/// `<work>/data` for `parc serve`, with `files`' vmlinuz and initrd as what it network-boots.
pub(crate) fn data_with_netboot(work: &Path, files: &Path) -> PathBuf {
    let data = work.join("data");
    std::fs::create_dir_all(data.join("netboot")).unwrap();
    for f in ["vmlinuz", "initrd", "shimx64.efi", "grubx64.efi"] {
        std::fs::copy(files.join(f), data.join("netboot").join(f)).unwrap();
    }
    data
}

pub(crate) const DHCP_MODE: &[&str] = &["--pxe-mode", "dhcp", "--dhcp-range", "10.77.0.100-10.77.0.150"];

/// Boots one client in a fresh lab and returns the marker line (the kernel command line parc's
/// boot script chose) and the data directory.
fn boot_once(
    test: &str,
    mac: &str,
    fw: Firmware,
    parc_mode: &[&str],
    hospital_dhcp: bool,
) -> Option<(String, tempfile::TempDir)> {
    boot_once_on(test, mac, fw, parc_mode, hospital_dhcp, |_| {})
}

/// [`boot_once`], with `network` run on the lab before the client boots (firewall rules).
fn boot_once_on(
    test: &str,
    mac: &str,
    fw: Firmware,
    parc_mode: &[&str],
    hospital_dhcp: bool,
    network: impl FnOnce(&Lab),
) -> Option<(String, tempfile::TempDir)> {
    if !lab_prereqs(test) {
        return None;
    }
    let work = tempfile::tempdir().unwrap();
    let data = data_with_agent(work.path());
    // Two letters of the test's name tell its namespaces from those of the tests running beside it.
    let mut lab = Lab::new(&test[..2]);
    lab.tap("tap0");
    if hospital_dhcp {
        lab.hospital_dhcp();
    }
    network(&lab);
    // Kept open: parc serve prints its first-start lines after "serving".
    let _stdout = start_parc(&mut lab, &data, parc_mode);
    let log = boot_client(&lab, "tap0", mac, fw, work.path());
    let line = log.lines().find(|l| l.contains(MARKER)).unwrap().to_string();
    assert!(line.contains(&format!("parc.mac={mac}")), "{line}");
    assert!(line.contains(&format!("parc.server=http://{SERVER_IP}:8080")), "{line}");
    Some((line, work))
}

/// SeaBIOS with QEMU's iPXE ROM, parc as the only DHCP server of an isolated network.
#[test]
fn bios_ipxe_boots_through_parc_in_dhcp_mode() {
    let Some((line, _)) = boot_once("bios_dhcp", "52:54:00:77:00:10", Firmware::Bios, DHCP_MODE, false) else { return };
    assert!(line.contains("parc.mode=register"), "unknown machines register: {line}");
}

/// OVMF's own UEFI PXE client with `uefi_loader = "snponly"`: DHCP, snponly.efi over parc's
/// TFTP, then iPXE fetches boot.ipxe over HTTP.
#[test]
fn uefi_pxe_boots_ipxe_through_parc_tftp_and_http() {
    let mode = [DHCP_MODE, &["--uefi-loader", "snponly"]].concat();
    let Some((line, _)) = boot_once("uefi_dhcp", "52:54:00:77:00:20", Firmware::Uefi, &mode, false) else { return };
    assert!(line.contains("parc.mode=register"), "{line}");
    assert!(line.contains("initrd=initrd"), "not booted by iPXE: {line}");
}

/// UEFI HTTP boot, where a firewall drops TFTP between the PCs and parc: OVMF's PXE attempt
/// gets no loader, its HTTP boot attempt (DHCP with `HTTPClient`, architecture 16) is offered
/// `http://parc/ipxe/snponly.efi`, which iPXE continues over HTTP to the boot script.
#[test]
fn uefi_http_boot_reaches_the_boot_script_with_tftp_blocked() {
    if !have("nft", "nftables") {
        return;
    }
    let drop_tftp = |lab: &Lab| {
        sh(&format!(
            "ip netns exec {} nft add table inet parc_lab \\; add chain inet parc_lab input '{{ type filter hook input priority 0; }}' \\; add rule inet parc_lab input udp dport 69 drop",
            lab.srv
        ));
    };
    let fw = Firmware::Uefi;
    let Some((line, work)) = boot_once_on("hb_http_boot", "52:54:00:77:00:60", fw, DHCP_MODE, false, drop_tftp) else {
        return;
    };
    assert!(line.contains("parc.mode=register") && line.contains("initrd=initrd"), "not booted by iPXE: {line}");
    let serial = std::fs::read_to_string(work.path().join("tap0.boot.serial.log")).unwrap_or_default();
    assert!(serial.contains("HTTP Boot"), "not through HTTP boot:\n{serial}");
}

/// A PC with Secure Boot on (OVMF's Secure Boot build, Microsoft's keys enrolled), parc the
/// only DHCP server: shim, then GRUB, then the kernel, all signed, the kernel locked down as
/// Secure Boot makes it (the agent's own report of it is checked in the end-to-end runs).
#[test]
fn uefi_secure_boot_boots_through_shim_and_grub_in_dhcp_mode() {
    let fw = Firmware::UefiSecureBoot;
    let Some((line, _)) = boot_once("sd_secure_dhcp", "52:54:00:77:00:40", fw, DHCP_MODE, false) else { return };
    assert!(line.contains("parc.mode=register") && !line.contains("initrd=initrd"), "{line}");
    assert!(line.contains("lockdown=none [integrity]"), "the kernel is not locked down by Secure Boot: {line}");
}

/// The same PC beside the hospital's DHCP server, parc in ProxyDHCP mode: shim follows
/// ProxyDHCP, Debian's GRUB only the site's acknowledgement, so the site's DHCP names parc as
/// the next server (`siaddr`, as README says); the boot decision stays parc's.
#[test]
fn uefi_secure_boot_boots_through_proxydhcp_beside_hospital_dhcp() {
    let proxy: &[&str] = &["--pxe-mode", "proxy"];
    let fw = Firmware::UefiSecureBoot;
    let Some((line, _)) = boot_once("sp_secure_proxy", "52:54:00:77:00:50", fw, proxy, true) else { return };
    assert!(line.contains("parc.mode=register") && !line.contains("initrd=initrd"), "{line}");
    assert!(line.contains("lockdown=none [integrity]"), "the kernel is not locked down by Secure Boot: {line}");
}

/// ProxyDHCP beside the hospital's DHCP server (dnsmasq, addresses only): parc answers the
/// PXE client with boot information and no address.
#[test]
fn bios_ipxe_boots_through_parc_proxydhcp_beside_hospital_dhcp() {
    let proxy: &[&str] = &["--pxe-mode", "proxy"];
    let Some((_, work)) = boot_once("proxy_bios", "52:54:00:77:00:30", Firmware::Bios, proxy, true) else { return };
    // The address came from the hospital's server: parc in proxy mode keeps no leases.
    let leases = work.path().join("data/leases.json");
    assert!(!leases.exists() || !std::fs::read_to_string(&leases).unwrap().contains("52:54:00:77:00:30"));
}

/// The agent's netboot environment from `iso/build-netboot` in `target/netboot` (scripts/test
/// builds it before `cargo test`; here it is then only checked, in a few seconds).
pub(crate) fn agent_environment() -> PathBuf {
    // Once per test process: tests running in parallel must not build it twice at once.
    static OUT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    OUT.get_or_init(build_agent_environment).clone()
}

fn build_agent_environment() -> PathBuf {
    let top = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = top.join("target/netboot");
    let mut cmd = Command::new(top.join("iso/build-netboot"));
    cmd.arg("--out").arg(&out);
    // This test process carries cargo's variables for the `parc` package: keep them out of the
    // nested cargo build (some build scripts rebuild when their environment changes).
    for (k, _) in std::env::vars() {
        if k.starts_with("CARGO_") && k != "CARGO_HOME" && k != "CARGO_TARGET_DIR" {
            cmd.env_remove(k);
        }
    }
    let started = Instant::now();
    let status = cmd.status().expect("run iso/build-netboot");
    assert!(status.success(), "iso/build-netboot failed ({status})");
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "iso/build-netboot: {:.1} s", started.elapsed().as_secs_f64());
    out
}

/// The one-time admin password `parc serve` prints after "serving" on a first start.
pub(crate) fn admin_password(stdout: &mut BufReader<ChildStdout>) -> String {
    (0..5)
        .find_map(|_| {
            let mut line = String::new();
            stdout.read_line(&mut line).unwrap();
            line.split("password ").nth(1).map(|p| p.trim().to_string())
        })
        .expect("parc serve printed no admin password")
}

/// An API token for the admin: its one-time password changed first (to the tests' one).
pub(crate) fn lab_token(lab: &Lab, password: &str) -> String {
    let api = format!("http://{SERVER_IP}:8080/api/v1");
    let body = format!(r#"{{"new_password":"{}"}}"#, crate::support::ADMIN_PASSWORD);
    let changed = lab_curl(
        lab,
        &[
            "-u",
            &format!("admin:{password}"),
            "-H",
            "Content-Type: application/json",
            "-d",
            &body,
            &format!("{api}/password"),
        ],
    );
    assert!(changed.contains("\"ok\":true"), "POST /api/v1/password: {changed}");
    let password = crate::support::ADMIN_PASSWORD;
    let reply = lab_curl(
        lab,
        &[
            "-u",
            &format!("admin:{password}"),
            "-H",
            "Content-Type: application/json",
            "-d",
            r#"{"name":"lab"}"#,
            &format!("{api}/tokens"),
        ],
    );
    let token: serde_json::Value = serde_json::from_str(&reply).expect("POST /api/v1/tokens answers JSON");
    token["token"].as_str().expect("a token").to_string()
}

/// `curl` in the server's namespace (the API listens on the lab network only).
pub(crate) fn lab_curl(lab: &Lab, args: &[&str]) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", &lab.srv, "curl", "-sS", "--max-time", "5"])
        .args(args)
        .output()
        .expect("run curl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The real agent environment (Debian kernel, busybox, workstation modules, the static parc)
/// booted by SeaBIOS + iPXE through `parc serve` in DHCP mode: the banner, virtio_net, a lease
/// on the lab network, then the agent in register mode making the unknown machine "discovered".
#[test]
fn netboot_environment_boots_to_the_agent() {
    let test = "netboot_environment_boots_to_the_agent";
    if !lab_prereqs(test) || !have("zstd", "zstd") || !have("depmod", "kmod") || !have("curl", "curl") {
        return;
    }
    // `parc agent` is written in parallel with this environment. Until the binary has the
    // subcommand, /init must say so and give a rescue shell (never a kernel panic); once it
    // has it, the machine must register. Decided from `parc --help`, the same source the
    // static binary in the initrd is built from.
    let help = String::from_utf8(parc().arg("--help").output().unwrap().stdout).unwrap();
    let has_agent = help.lines().any(|l| l.split_whitespace().next() == Some("agent"));

    let work = tempfile::tempdir().unwrap();
    let data = data_with_netboot(work.path(), &agent_environment());
    let mut lab = Lab::new("n");
    lab.tap("tap0");
    let mut stdout = start_parc(&mut lab, &data, DHCP_MODE);
    let auth = format!("Authorization: Bearer {}", lab_token(&lab, &admin_password(&mut stdout)));
    let api = format!("http://{SERVER_IP}:8080/api/v1");

    let mac = "52:54:00:77:00:40";
    const BANNER: &str = "parc agent environment";
    const LEASE: &str = "eth0: DHCP lease 10.77.0.";
    const GAVE_UP: [&str; 3] = ["agent missing", "the parc agent exited", "(parc rescue)"];
    let mut status = String::new();
    let (started, mut registered) = (Instant::now(), None);
    let run = run_client(
        &lab,
        &Vm::new("tap0", mac, Firmware::Bios, 1024, work.path()),
        "agent",
        &[BANNER, LEASE],
        Duration::from_secs(300),
        |log| {
            if has_agent {
                if log.contains(LEASE) {
                    let m = lab_curl(&lab, &["-H", &auth, &format!("{api}/machines/{mac}")]);
                    status = serde_json::from_str::<serde_json::Value>(&m)
                        .ok()
                        .and_then(|m| m["status"].as_str().map(str::to_string))
                        .unwrap_or_default();
                    if status == "discovered" {
                        registered = Some(started.elapsed());
                    }
                }
                status == "discovered" || GAVE_UP.iter().any(|g| log.contains(g))
            } else {
                log.find("agent missing").is_some_and(|at| log[at..].contains("(parc rescue)"))
            }
        },
    );
    let log = &run.log;
    let secs = |d: Option<Duration>| d.map(|d| format!("{:.1} s", d.as_secs_f64())).unwrap_or("never".into());
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "netboot environment (TCG): QEMU start to banner {}, to DHCP lease {}, to registered {}",
        secs(run.seen[0]),
        secs(run.seen[1]),
        secs(registered)
    );
    assert!(log.contains(BANNER), "no banner; serial log:\n{log}");
    let modules = log.lines().find(|l| l.contains("parc: modules loaded:")).unwrap_or_default();
    assert!(modules.split_whitespace().any(|m| m == "virtio_net"), "virtio_net not loaded; serial log:\n{log}");
    assert!(log.contains(LEASE), "no DHCP lease on the lab network; serial log:\n{log}");
    if has_agent {
        assert_eq!(status, "discovered", "the agent did not register {mac}; serial log:\n{log}");
    } else {
        assert!(log.contains("agent missing"), "serial log:\n{log}");
    }
}

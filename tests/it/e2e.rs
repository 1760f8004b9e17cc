//! End to end, as a hospital's technicians live it: PCs boot from the network through
//! `parc serve`, the agent writes their department's image and profile, they reboot into the
//! installed Debian, whose first boot reports them ready. Everything is real: QEMU machines
//! (SeaBIOS with QEMU's iPXE ROM, OVMF with its own PXE client) under software emulation, the
//! agent environment from `iso/build-netboot`, a bootable Debian made by
//! `tests/images/build-debian` and captured by `parc image capture`, the inventory in git, the
//! CLI for every technician action; all on a lab network inside namespaces this test creates.
//!
//! Each VM's serial console is kept in the test's work directory and printed when a step
//! fails; the timings of each phase are printed on stderr (`--nocapture` shows them).

use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::lab::*;
use crate::support::*;

const IMAGE: &str = "debian-poste";
const BANNER: &str = "parc agent environment";
const TASK: &str = "task #";
const WRITTEN: &str = "image written and verified";
const PROFILED: &str = "profile applied";
const SYSTEM_UP: &str = "PARC-INSTALLED-SYSTEM-UP hostname=";
/// Under TCG an agent boot, deploy and profile take a few minutes; far more means stuck.
const AGENT_TIMEOUT: Duration = Duration::from_secs(900);
const BOOT_TIMEOUT: Duration = Duration::from_secs(600);

/// The Debian test image (`target/e2e-image`, cached between runs), and what its build wrote
/// about it (`debian.env`).
fn debian_image() -> (PathBuf, Vec<(String, String)>) {
    static IMG: OnceLock<(PathBuf, Vec<(String, String)>)> = OnceLock::new();
    IMG.get_or_init(|| {
        let top = Path::new(env!("CARGO_MANIFEST_DIR"));
        let started = Instant::now();
        let status = Command::new(top.join("tests/images/build-debian")).status().expect("run build-debian");
        assert!(status.success(), "tests/images/build-debian failed ({status})");
        let _ = writeln!(std::io::stderr(), "tests/images/build-debian: {:.1} s", started.elapsed().as_secs_f64());
        let out = top.join("target/e2e-image");
        let env = std::fs::read_to_string(out.join("debian.env")).unwrap();
        let vars = env.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.into(), v.into())).collect();
        (out.join("debian.img"), vars)
    })
    .clone()
}

fn image_var(name: &str) -> String {
    debian_image().1.into_iter().find(|(k, _)| k == name).map(|(_, v)| v).unwrap()
}

/// `parc serve` on the lab network with the agent environment and the captured Debian image.
struct Appliance {
    lab: Lab,
    work: tempfile::TempDir,
    data: PathBuf,
    mode: &'static [&'static str],
    /// The running server; a mutex so a test can kill and restart it while a VM runs.
    serve: Mutex<Option<(Child, BufReader<ChildStdout>)>>,
    token: String,
    image_digest: String,
    compressed_bytes: u64,
}

impl Appliance {
    fn new(tag: &str, hospital_dhcp: bool) -> Appliance {
        let (image, _) = debian_image();
        let work = tempfile::tempdir().unwrap();
        let data = data_with_netboot(work.path(), &agent_environment());
        let started = Instant::now();
        let c = crate::api::capture_into(&data, IMAGE, &image);
        let _ = writeln!(
            std::io::stderr(),
            "captured {IMAGE}: {} MiB compressed in {:.1} s",
            c["compressed_bytes"].as_u64().unwrap() >> 20,
            started.elapsed().as_secs_f64()
        );
        let mut lab = Lab::new(tag);
        let mode: &'static [&'static str] = if hospital_dhcp {
            lab.hospital_dhcp();
            &["--pxe-mode", "proxy"]
        } else {
            DHCP_MODE
        };
        let mut a = Appliance {
            lab,
            work,
            data,
            mode,
            serve: Mutex::new(None),
            token: String::new(),
            image_digest: c["digest"].as_str().unwrap().into(),
            compressed_bytes: c["compressed_bytes"].as_u64().unwrap(),
        };
        a.start_server();
        let password = admin_password(&mut a.serve.lock().unwrap().as_mut().unwrap().1);
        a.token = lab_token(&a.lab, &password);
        a
    }

    fn serve_log(&self) -> PathBuf {
        self.work.path().join("serve.log")
    }

    fn start_server(&self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.serve_log()).unwrap();
        *self.serve.lock().unwrap() = Some(spawn_parc(&self.lab, &self.data, self.mode, Some(log)));
    }

    /// SIGKILL: no drain, no goodbye, as when the appliance loses power.
    fn kill_server(&self) {
        if let Some((mut child, _)) = self.serve.lock().unwrap().take() {
            // `ip netns exec` execs parc: the child is the server itself.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, as systemd stops the appliance: it must exit cleanly with network boot on.
    fn stop_server(&self) -> std::process::ExitStatus {
        let (mut child, _) = self.serve.lock().unwrap().take().expect("the server runs");
        sh(&format!("kill -TERM {}", child.id()));
        child.wait().unwrap()
    }

    /// The technician's CLI, in the server's namespace (the API listens on the lab network).
    fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.lab.srv, env!("CARGO_BIN_EXE_parc")])
            .args(args)
            .env("PARC_SERVER", format!("http://{SERVER_IP}:8080"))
            .env("PARC_TOKEN", &self.token)
            .env("PARC_CONFIG", self.work.path().join("no-cli.toml"))
            .output()
            .unwrap();
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "parc {args:?} failed ({}):\n{stdout}{stderr}", out.status);
        stdout.into_owned()
    }

    fn get(&self, path: &str) -> Value {
        let auth = format!("Authorization: Bearer {}", self.token);
        let body = lab_curl(&self.lab, &["-H", &auth, &format!("http://{SERVER_IP}:8080/api/v1{path}")]);
        serde_json::from_str(&body).unwrap_or(Value::Null)
    }

    fn machine(&self, mac: &str) -> Value {
        self.get(&format!("/machines/{mac}"))
    }

    /// The appliance rereads its profiles repository now (after a commit made by the test).
    fn reload_profiles(&self) {
        let auth = format!("Authorization: Bearer {}", self.token);
        let url = format!("http://{SERVER_IP}:8080/api/v1/profiles/reload");
        let body =
            lab_curl(&self.lab, &["-X", "POST", "-H", &auth, "-H", "Content-Type: application/json", "-d", "{}", &url]);
        let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        assert!(v["problems"].as_array().is_some_and(|p| p.is_empty()), "profiles reload: {body}");
    }

    /// The machine's latest task.
    fn last_task(&self, mac: &str) -> Value {
        self.get(&format!("/tasks?machine={mac}&limit=1"))[0].clone()
    }

    /// Whether the server logged handing `mac` its boot script after byte `from_byte` of its log.
    fn boot_script_served(&self, mac: &str, from_byte: usize) -> bool {
        let log = std::fs::read(self.serve_log()).unwrap_or_default();
        let text = String::from_utf8_lossy(log.get(from_byte..).unwrap_or_default());
        text.lines().any(|l| l.contains("boot script") && l.contains(mac))
    }

    fn serve_log_len(&self) -> usize {
        std::fs::metadata(self.serve_log()).map(|m| m.len() as usize).unwrap_or(0)
    }

    /// A PC on the lab network: its tap on the bridge, an empty 20 GiB disk (sparse; the example
    /// departments want 16 GiB), 2 CPUs and 1 GiB
    /// (the agent holds chunks in flight; Debian boots in less).
    fn pc(&self, tap: &str, mac: &str, fw: Firmware) -> Vm {
        self.lab.tap(tap);
        let dir = self.work.path();
        let mut vm = Vm::new(tap, mac, fw, 1024, dir);
        vm.cpus = 2;
        let disk = dir.join(format!("{tap}.disk.img"));
        std::fs::File::create(&disk).unwrap().set_len(20 << 30).unwrap();
        vm.disk = Some(disk);
        vm
    }

    /// Network-boots `vm` into the agent for its queued task and waits for the agent to
    /// reboot it (the VM runs with -no-reboot: the reboot ends the run) or to report a failure.
    /// `during` sees the serial log at every poll (fault injection).
    fn agent_run(&self, vm: &Vm, phase: &str, mut during: impl FnMut(&str)) -> Phases {
        let from = self.serve_log_len();
        let start = Instant::now();
        let mut pxe = None;
        let run = run_client(&self.lab, vm, phase, &[BANNER, TASK, WRITTEN, PROFILED], AGENT_TIMEOUT, |log| {
            if pxe.is_none() && self.boot_script_served(&vm.mac, from) {
                pxe = Some(start.elapsed());
            }
            during(log);
            log.lines().any(|l| l.trim() == "rebooting") || log.contains("FAILED")
        });
        Phases { pxe, run }
    }

    /// Network-boots `vm` and pulls its power plug (SIGKILL to QEMU) the moment `cut` says so.
    fn power_cut(&self, vm: &Vm, phase: &str, mut cut: impl FnMut(&str) -> bool) -> ClientRun {
        let run = run_client(&self.lab, vm, phase, &[BANNER, TASK, WRITTEN], AGENT_TIMEOUT, |log| {
            assert!(
                !log.contains("FAILED") && !log.contains("rebooting"),
                "{phase}: the agent ended before the cut:\n{log}"
            );
            cut(log)
        });
        say(&format!("{phase}: power cut {:.1} s after power-on", run.elapsed.as_secs_f64()));
        run
    }

    /// Boots `vm` (network first: the boot script sends a machine with nothing to do to its
    /// disk) until its installed system is up as `hostname` and the appliance says `ready`.
    fn boot_installed(&self, vm: &Vm, phase: &str, hostname: &str) -> ClientRun {
        let up = format!("{SYSTEM_UP}{hostname}");
        let mut last_poll = Instant::now() - Duration::from_secs(10);
        let mut status = String::new();
        let run = run_client(&self.lab, vm, phase, &[&up], BOOT_TIMEOUT, |log| {
            if log.contains(&up) && last_poll.elapsed() > Duration::from_secs(2) {
                last_poll = Instant::now();
                status = self.machine(&vm.mac)["status"].as_str().unwrap_or_default().to_string();
            }
            status == "ready"
        });
        assert!(run.log.contains(&up), "{} never came up as {hostname}; serial log:\n{}", vm.mac, run.log);
        run
    }

    /// What the agent wrote, checked from outside the VM: a valid GPT whose root partition
    /// keeps the image's PARTUUID (the boot loaders find it by that), the ESP byte for byte
    /// the image's, the profile's files, and every chunk of the image in place but the few the
    /// profile changed. Returns the bytes that differ from the image.
    fn check_installed_disk(&self, disk: &Path, hostname: &str, department: &str) -> u64 {
        let d = disk.display();
        let verify = sh(&format!("sgdisk -v {d} 2>&1 || true"));
        assert!(verify.contains("No problems found"), "sgdisk -v on {d}:\n{verify}");
        let info = sh(&format!("sgdisk -i 2 {d}"));
        assert!(info.to_lowercase().contains(&image_var("ROOT_PARTUUID")), "root PARTUUID changed:\n{info}");
        let (image, _) = debian_image();
        let esp: u64 = image_var("ESP_OFFSET").parse().unwrap();
        let root_offset: u64 = image_var("ROOT_OFFSET").parse().unwrap();
        assert_eq!(
            sha256_range(disk, esp, root_offset - esp),
            sha256_range(&image, esp, root_offset - esp),
            "the ESP differs from the image's"
        );
        let work = self.work.path();
        // The root, the last partition, grew to the end of the 20 GiB disk (the department's
        // default), and its file system with it.
        let root_bytes: u64 = image_var("ROOT_BYTES").parse().unwrap();
        let (at, grown) = gpt_partition(disk, 2);
        let disk_len = std::fs::metadata(disk).unwrap().len();
        assert!(at == root_offset && grown > root_bytes, "root partition at {at}, {grown} bytes: not grown");
        assert!(
            disk_len - (at + grown) <= 2 << 20,
            "root partition ends {} bytes before the end",
            disk_len - at - grown
        );
        let root = ReadOnlyLoop::new(disk, at, grown);
        sh(&format!("e2fsck -fn {} >/dev/null", root.0));
        let (fs_bytes, block) = ext_size(&root.0);
        assert!(grown - fs_bytes < block, "ext4 of {fs_bytes} bytes does not fill its partition of {grown}");
        let file = |path: &str| sh(&format!("debugfs -R 'cat {path}' {} 2>/dev/null", root.0));
        assert_eq!(file("/etc/hostname"), format!("{hostname}\n"));
        let payload =
            std::fs::read_to_string(self.data.join(format!("profiles/payloads/{department}/etc/parc/department")))
                .unwrap();
        assert_eq!(file("/etc/parc/department"), payload);
        // The installed system holds its single-use first-boot credential, never the agent's
        // session (which ended with the task).
        let env = file("/etc/parc/agent.env");
        assert!(env.contains("PARC_TOKEN=pf_") && !env.contains("pa_") && !env.contains("pb_"), "{env}");
        drop(root);
        // Deploying the image again over a copy fetches exactly the chunks that differ.
        let copy = work.join("disk.check.img");
        sh(&format!("cp --sparse=always {d} {}", copy.display()));
        let r = parc_json(&[
            "image",
            "deploy",
            IMAGE,
            "--to",
            copy.to_str().unwrap(),
            "--store",
            self.data.join("store").to_str().unwrap(),
        ]);
        std::fs::remove_file(&copy).unwrap();
        r["bytes_fetched"].as_u64().expect("deploy report has bytes_fetched")
    }
}

impl Drop for Appliance {
    fn drop(&mut self) {
        self.kill_server();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.serve_log()).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            eprintln!("--- parc serve log (last 60 lines) ---\n{}", tail.join("\n"));
        }
    }
}

/// One agent boot and when things happened, from QEMU's start.
struct Phases {
    /// The server handed out the machine's boot script (firmware, DHCP, TFTP, iPXE done).
    pxe: Option<Duration>,
    run: ClientRun,
}

impl Phases {
    fn at(&self, i: usize) -> f64 {
        self.run.seen[i].map(|d| d.as_secs_f64()).unwrap_or(f64::NAN)
    }

    fn assert_succeeded(&self, what: &str) {
        let log = &self.run.log;
        assert!(
            !log.contains("FAILED") && log.contains(WRITTEN) && log.contains(PROFILED),
            "{what}: the agent did not finish; serial log:\n{log}"
        );
    }

    /// "firmware+PXE a s, agent boot b s, deploy c s, profile d s, done+reboot e s".
    fn split(&self) -> String {
        let pxe = self.pxe.map(|d| d.as_secs_f64()).unwrap_or(f64::NAN);
        format!(
            "firmware+PXE {pxe:.1} s, agent boot {:.1} s (kernel+initrd download, modules, DHCP, hello), deploy {:.1} s, \
             profile {:.1} s, report+reboot {:.1} s",
            self.at(1) - pxe,
            self.at(2) - self.at(1),
            self.at(3) - self.at(2),
            self.run.elapsed.as_secs_f64() - self.at(3),
        )
    }
}

/// The disk cannot boot: its boot area (MBR, GPT, boot loader gap) is all zeros.
fn assert_unbootable(disk: &Path, when: &str) {
    let f = std::fs::File::open(disk).unwrap();
    let mut head = vec![0u8; 1 << 20];
    std::os::unix::fs::FileExt::read_exact_at(&f, &mut head, 0).unwrap();
    assert!(head.iter().all(|&b| b == 0), "{when}: the disk's boot area is not zero: a half-written system could boot");
}

/// Compressed bytes of the image's distinct chunks, as stored: what one full deploy fetches.
fn unique_compressed(data: &Path, digest: &str) -> u64 {
    let m: Value =
        serde_json::from_slice(&std::fs::read(data.join(format!("store/manifests/{digest}.json"))).unwrap()).unwrap();
    let mut seen = std::collections::HashSet::new();
    let regions = std::iter::once(&m["boot_area"])
        .chain(m["partitions"].as_array().unwrap())
        .chain(m["gaps"].as_array().into_iter().flatten())
        .chain(std::iter::once(&m["backup_area"]));
    let mut total = 0;
    for c in regions.flat_map(|r| r["chunks"].as_array().into_iter().flatten()) {
        let d = c["sha256"].as_str().unwrap().to_string();
        if seen.insert(d.clone()) {
            total += std::fs::metadata(data.join(format!("store/chunks/{}/{d}.zst", &d[..2]))).unwrap().len();
        }
    }
    total
}

/// "N MiB already in place" from the agent's "image written and verified" line.
fn in_place_mib(log: &str) -> u64 {
    let line = log.lines().find(|l| l.contains(WRITTEN)).unwrap_or_else(|| panic!("no '{WRITTEN}' in:\n{log}"));
    let before = line.split(" MiB already in place").next().unwrap();
    before.rsplit(' ').next().unwrap().parse().unwrap_or_else(|_| panic!("no in-place figure in {line:?}"))
}

fn fetched_bytes(task: &Value) -> u64 {
    task["message"]
        .as_str()
        .unwrap_or_default()
        .split(", ")
        .find_map(|p| p.strip_suffix(" bytes fetched"))
        .unwrap_or_else(|| panic!("no 'bytes fetched' in {task}"))
        .parse()
        .unwrap()
}

fn e2e_prereqs(test: &str) -> bool {
    lab_prereqs(test)
        && have("debootstrap", "debootstrap")
        && have("syslinux", "syslinux")
        && have("mcopy", "mtools")
        && have("sgdisk", "gdisk")
        && have("debugfs", "e2fsprogs")
        && have("dnsmasq", "dnsmasq-base")
}

fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Install (SeaBIOS + iPXE), move, then replace by a UEFI PC (OVMF's own PXE client), which is
/// also the UEFI scenario: a UEFI machine installed and booted into its system. The appliance
/// runs in ProxyDHCP mode beside the hospital's own DHCP server (dnsmasq, addresses only), as
/// it would in a hospital.
#[test]
fn pcs_are_installed_moved_and_replaced_end_to_end() {
    let test = "pcs_are_installed_moved_and_replaced_end_to_end";
    if !e2e_prereqs(test) {
        return;
    }
    let a = Appliance::new("e", true);
    let (mac1, mac2) = ("52:54:00:e2:00:01", "52:54:00:e2:00:02");

    // 1. Install: the PC is declared in Radiologie with an install queued, powered on.
    a.cli(&["machine", "add", mac1, "--department", "radiologie", "--install", "-m", "new PC, room 12"]);
    let pc1 = a.pc("tap1", mac1, Firmware::Bios);
    let install = a.agent_run(&pc1, "install", |_| {});
    install.assert_succeeded("install");
    let m = a.machine(mac1);
    assert_eq!(m["status"], "installed", "{m}");
    assert_eq!(m["image_digest"], a.image_digest.as_str(), "{m}");
    // The agent said how the PC booted: SeaBIOS, no UEFI.
    assert_eq!(m["firmware"], serde_json::json!({ "uefi": false, "secure_boot": null }), "{m}");
    let hostname = m["hostname"].as_str().unwrap().to_string();
    assert_eq!(hostname, "RAD-0001");
    let install_fetched = fetched_bytes(&a.last_task(mac1));
    let differ = a.check_installed_disk(pc1.disk.as_ref().unwrap(), &hostname, "radiologie");
    say(&format!(
        "disk after install: every chunk of the image in place but {} KiB (the profile's changes)",
        differ >> 10
    ));
    assert!(differ * 20 < a.compressed_bytes, "{differ} bytes differ from the image");
    // Reboot: the boot script sends it to its disk; Debian boots, its first-boot unit reports.
    let first = a.boot_installed(&pc1, "first-boot", &hostname);
    // Only the first-boot unit's report (with the task's token) makes a machine ready.
    let m = a.machine(mac1);
    assert_eq!(m["status"], "ready", "{m}");
    let total = install.run.elapsed + first.elapsed;
    say(&format!(
        "install (SeaBIOS+iPXE, TCG): power-on to ready {:.1} s = {}; reboot to ready {:.1} s (firmware, PXE, Debian, \
         first-boot report); {} MiB fetched of a {} MiB compressed image",
        total.as_secs_f64(),
        install.split(),
        first.elapsed.as_secs_f64(),
        install_fetched >> 20,
        a.compressed_bytes >> 20
    ));

    // 3. Move to Urgences: the PC reboots into the agent; only what differs travels.
    a.cli(&["machine", "move", mac1, "--to", "urgences", "-m", "moved to the emergency ward"]);
    let moved = a.agent_run(&pc1, "move", |_| {});
    moved.assert_succeeded("move");
    let t = a.last_task(mac1);
    assert_eq!((t["kind"].as_str(), t["state"].as_str()), (Some("move"), Some("done")), "{t}");
    let move_fetched = fetched_bytes(&t);
    assert!(
        move_fetched * 10 < a.compressed_bytes,
        "the move fetched {move_fetched} bytes of a {}-byte image",
        a.compressed_bytes
    );
    let hostname = a.machine(mac1)["hostname"].as_str().unwrap().to_string();
    assert_eq!(hostname, "URG-0001");
    a.check_installed_disk(pc1.disk.as_ref().unwrap(), &hostname, "urgences");
    a.boot_installed(&pc1, "moved-boot", &hostname);
    say(&format!(
        "move (TCG): {:.1} s to reboot ({}); {} KiB fetched vs {} MiB for the install",
        moved.run.elapsed.as_secs_f64(),
        moved.split(),
        move_fetched >> 10,
        install_fetched >> 20
    ));

    // 4. Replace: PC 1 broke; a UEFI PC takes its name and department, PC 1 is retired.
    a.cli(&["machine", "replace", mac1, "--with", mac2, "-m", "screen broken"]);
    let pc2 = a.pc("tap2", mac2, Firmware::Uefi);
    let replace = a.agent_run(&pc2, "replace", |_| {});
    replace.assert_succeeded("replace (UEFI)");
    let m2 = a.machine(mac2);
    assert_eq!((m2["hostname"].as_str(), m2["department"].as_str()), (Some("URG-0001"), Some("urgences")), "{m2}");
    // OVMF without its Secure Boot build: UEFI, Secure Boot off (read from efivarfs).
    assert_eq!(m2["firmware"], serde_json::json!({ "uefi": true, "secure_boot": false }), "{m2}");
    say(&format!("UEFI PC's firmware as its agent reported it: {}", m2["firmware"]));
    assert_eq!(a.machine(mac1)["status"], "retired");
    a.check_installed_disk(pc2.disk.as_ref().unwrap(), "URG-0001", "urgences");
    let up = a.boot_installed(&pc2, "first-boot", "URG-0001");
    assert_eq!(a.machine(mac2)["status"], "ready");
    say(&format!(
        "replace by a UEFI PC (OVMF, TCG): power-on to ready {:.1} s = {}; reboot to ready {:.1} s",
        (replace.run.elapsed + up.elapsed).as_secs_f64(),
        replace.split(),
        up.elapsed.as_secs_f64()
    ));
    // Every step is in the inventory's history, authored by the technician's account.
    let history = a.get(&format!("/machines/{mac2}"));
    assert!(history.to_string().contains("screen broken"), "{history}");

    // 5. The UEFI PC moves to the Bloc, a Windows department: the agent writes the Windows image
    //    over the Debian one and customises it with the ntfs-3g of its netboot environment.
    //    Windows itself cannot boot here (no licence, and no time under TCG): the disk is
    //    checked from outside.
    let d = a.work.path();
    let (win, start, len) = crate::windows::windows_layout_disk(d, "win11");
    let before = crate::windows::ntfs_sums(&d.join("win11.ntfs"), &d.join("win11.before.mnt"));
    crate::api::capture_into(&a.data, "win11-poste", &win);
    crate::windows::commit_windows_department(&a.data.join("profiles"), "");
    a.reload_profiles();
    a.cli(&["machine", "move", mac2, "--to", "bloc", "-m", "moved to the operating theatre"]);
    let windows = a.agent_run(&pc2, "windows", |_| {});
    windows.assert_succeeded("move to a Windows department (UEFI)");
    assert_eq!(a.machine(mac2)["hostname"], "BLC-0001");
    assert_eq!(a.last_task(mac2)["state"], "done");
    crate::windows::check_windows_disk(d, pc2.disk.as_ref().unwrap(), (start, len), "BLC-0001", &before);
    // The system partition, last on the image's disk, grew to the end of the 20 GiB disk.
    let (_, grown) = gpt_partition(pc2.disk.as_ref().unwrap(), 3);
    assert!(grown > 19 << 30, "the Windows partition was not grown: {grown} bytes");
    say(&format!(
        "move to a Windows department (UEFI, TCG): {:.1} s to reboot ({})",
        windows.run.elapsed.as_secs_f64(),
        windows.split()
    ));

    // 6. A new PC as Windows 11 PCs ship: UEFI with Secure Boot on (OVMF's Secure Boot build,
    //    Microsoft's keys enrolled), an NVMe SSD, unknown to parc. Beside the hospital's DHCP
    //    (which names parc as next server, see README) it boots shim, GRUB and the agent, all
    //    signed, registers, and installs the task a technician then queues, without a reboot.
    //    (The test image's systemd-boot is not signed: that PC cannot boot it with Secure Boot
    //    on, so its installed system is checked from outside.)
    let mac6 = "52:54:00:e2:00:06";
    let mut pc6 = a.pc("tap6", mac6, Firmware::UefiSecureBoot);
    pc6.disk_bus = DiskBus::Nvme;
    let mut queued = false;
    let registered = "registered as a new machine";
    let run = run_client(&a.lab, &pc6, "secure-boot", &[BANNER, registered, TASK, WRITTEN], AGENT_TIMEOUT, |log| {
        if !queued && log.contains(registered) {
            a.cli(&["machine", "add", mac6, "--department", "pharmacie", "--install", "-m", "new PC, Secure Boot on"]);
            queued = true;
        }
        log.lines().any(|l| l.trim() == "rebooting") || log.contains("FAILED")
    });
    assert!(queued && !run.log.contains("FAILED"), "Secure Boot PC:\n{}", run.log);
    let m6 = a.machine(mac6);
    assert_eq!(m6["firmware"], serde_json::json!({ "uefi": true, "secure_boot": true }), "{m6}");
    assert_eq!(a.last_task(mac6)["state"], "done");
    let host6 = m6["hostname"].as_str().unwrap().to_string();
    a.check_installed_disk(pc6.disk.as_ref().unwrap(), &host6, "pharmacie");
    let at = |i: usize| run.seen[i].map_or(f64::NAN, |d| d.as_secs_f64());
    say(&format!(
        "UEFI PC with Secure Boot on, NVMe (OVMF secboot, TCG): agent banner at {:.1} s, registered at {:.1} s, \
         installed and rebooting at {:.1} s after power-on; firmware as reported: {}",
        at(0),
        at(1),
        run.elapsed.as_secs_f64(),
        m6["firmware"]
    ));
}

/// Faults: `parc serve` killed (SIGKILL) and restarted in the middle of a deploy: the agent
/// retries, completes, and fetches no chunk twice; power cuts of a PC while it writes chunks
/// and during its profile step; then a chunk corrupted in the store: the
/// agent refuses it, the machine is failed with the chunk named, never ready. Appliance in DHCP
/// mode (the only DHCP server of the lab network).
#[test]
fn deploys_survive_a_server_restart_and_refuse_a_corrupt_chunk() {
    let test = "deploys_survive_a_server_restart_and_refuse_a_corrupt_chunk";
    if !e2e_prereqs(test) {
        return;
    }
    let a = Appliance::new("f", false);
    let (mac3, mac4) = ("52:54:00:e2:00:03", "52:54:00:e2:00:04");

    a.cli(&["machine", "add", mac3, "--department", "pharmacie", "--install"]);
    // A business desktop's hardware: an Intel NIC (e1000e, with QEMU's iPXE ROM for it) and a
    // SATA disk behind AHCI; the agent's environment must find both.
    let mut pc3 = a.pc("tap3", mac3, Firmware::Bios);
    pc3.bios_nic = "e1000e";
    pc3.disk_bus = DiskBus::Ahci;
    let (mut killed_at, mut last_poll) = (None::<(u64, u64)>, Instant::now());
    let run = a.agent_run(&pc3, "restart", |log| {
        // Once a quarter of the image is written, pull the plug on the appliance.
        if killed_at.is_some() || !log.contains("disk: ") || last_poll.elapsed() < Duration::from_secs(1) {
            return;
        }
        last_poll = Instant::now();
        let t = a.last_task(mac3);
        let (done, total) = (t["bytes_done"].as_u64().unwrap_or(0), t["bytes_total"].as_u64().unwrap_or(0));
        if t["phase"] == "writing" && total > 0 && done * 4 > total {
            a.kill_server();
            killed_at = Some((done, total));
            std::thread::sleep(Duration::from_secs(5));
            a.start_server();
        }
    });
    run.assert_succeeded("deploy across a server restart");
    let (done, total) = killed_at.expect("the server was never killed mid-deploy");
    assert!(done < total, "killed after the write had finished");
    let t = a.last_task(mac3);
    assert_eq!(t["state"], "done", "{t}");
    // Every chunk byte the agent received, retried requests included: the image's distinct
    // chunks once, plus at most the requests in flight when the server died (one per worker).
    let fetched = fetched_bytes(&t);
    let unique = unique_compressed(&a.data, &a.image_digest);
    assert!(
        fetched <= unique + 2 * (1 << 20),
        "received {fetched} chunk bytes for an image of {unique} distinct compressed bytes: chunks were fetched twice"
    );
    let m = a.machine(mac3);
    assert_eq!((m["status"].as_str(), m["hostname"].as_str()), (Some("installed"), Some("PHA-0001")), "{m}");
    a.check_installed_disk(pc3.disk.as_ref().unwrap(), "PHA-0001", "pharmacie");
    say(&format!(
        "server killed at {} of {} MiB written and restarted 5 s later: agent completed, {} MiB fetched for a {} MiB \
         image",
        done >> 20,
        total >> 20,
        fetched >> 20,
        a.compressed_bytes >> 20
    ));

    // Power cuts: a PC loses power while chunks are written, then while its profile is being
    // applied (the appliance is down: the agent waits in the profile step), then while it
    // writes the boot area. Each time the disk cannot boot, the next power-on network-boots
    // into the agent, which resumes with what is already on the disk; the fourth power-on
    // completes and boots into the installed system.
    let mac5 = "52:54:00:e2:00:05";
    a.cli(&["machine", "add", mac5, "--department", "pharmacie", "--install"]);
    let pc5 = a.pc("tap5", mac5, Firmware::Bios);
    let disk5 = pc5.disk.clone().unwrap();
    let mut last_poll = Instant::now();
    a.power_cut(&pc5, "cut-writing", |log| {
        if !log.contains("disk: ") || last_poll.elapsed() < Duration::from_secs(1) {
            return false;
        }
        last_poll = Instant::now();
        let t = a.last_task(mac5);
        let (done, total) = (t["bytes_done"].as_u64().unwrap_or(0), t["bytes_total"].as_u64().unwrap_or(0));
        t["phase"] == "writing" && total > 0 && done * 3 > total
    });
    assert_unbootable(&disk5, "power cut while writing chunks");
    assert_eq!(a.last_task(mac5)["state"], "running");
    let mut server_down = None::<Instant>;
    let cut = a.power_cut(&pc5, "cut-profile", |log| {
        if log.contains(WRITTEN) && server_down.is_none() {
            a.kill_server();
            server_down = Some(Instant::now());
        }
        server_down.is_some_and(|t| t.elapsed() > Duration::from_secs(4))
    });
    let resumed = in_place_mib(&cut.log);
    assert!(resumed > 0, "the second power-on found nothing in place: it did not resume\n{}", cut.log);
    assert!(!cut.log.contains(PROFILED), "the profile step ended before the cut");
    assert_unbootable(&disk5, "power cut during the profile step");
    a.start_server();
    // Third power-on: once the body is verified, the disk is slowed to 8 KiB/s (QEMU's write
    // throttle) so that the profile step, the file system's growth and the boot-area write take
    // minutes, and the plug is pulled while the agent reports it is writing the boot area.
    // (Throttling only once the agent says the file system is grown loses the race: the boot
    // area, a few KiB before its first sector, is written within the serial log's poll.)
    let (mut throttled, mut last_poll) = (false, Instant::now());
    let cut = a.power_cut(&pc5, "cut-boot-area", |log| {
        if !throttled && log.contains(WRITTEN) {
            let answer = pc5.hmp("block_set_io_throttle d0 0 0 8192 0 0 0");
            assert!(!answer.contains("rror"), "QEMU refused the throttle: {answer}");
            throttled = true;
        }
        if !throttled || last_poll.elapsed() < Duration::from_millis(500) {
            return false;
        }
        last_poll = Instant::now();
        a.last_task(mac5)["phase"] == "writing boot area"
    });
    let head = std::fs::read(&disk5).map(|d| d[..512].to_vec()).unwrap();
    assert!(
        head.iter().all(|&b| b == 0),
        "power cut during the boot-area write: sector 0 (the MBR) was written before the rest"
    );
    assert!(!cut.log.contains("is installed and verified"), "the deploy ended before the cut");
    let done = a.agent_run(&pc5, "after-cuts", |_| {});
    done.assert_succeeded("install after two power cuts");
    let fetched_last = fetched_bytes(&a.last_task(mac5));
    assert!(fetched_last * 10 < unique, "the last power-on fetched {fetched_last} bytes: it did not resume");
    let host5 = a.machine(mac5)["hostname"].as_str().unwrap().to_string();
    a.check_installed_disk(&disk5, &host5, "pharmacie");
    a.boot_installed(&pc5, "after-cuts-boot", &host5);
    say(&format!(
        "power cuts while writing, during the profile and during the boot-area write: resumed with {resumed} MiB in \
         place, then {} KiB fetched by the last power-on; no MBR on the disk after each cut",
        fetched_last >> 10
    ));

    // Cancel: a technician cancels an install while chunks are written; the agent stops
    // within seconds and says so on screen, the disk stays unbootable, the task is cancelled.
    a.cli(&["machine", "add", mac4, "--department", "pharmacie", "--install"]);
    let pc4 = a.pc("tap4", mac4, Firmware::Bios);
    let (mut cancelled_at, mut last_poll) = (None::<Instant>, Instant::now());
    let auth = format!("Authorization: Bearer {}", a.token);
    let run = run_client(&a.lab, &pc4, "cancel", &[BANNER, TASK], AGENT_TIMEOUT, |log| {
        if cancelled_at.is_none() && log.contains("disk: ") && last_poll.elapsed() > Duration::from_secs(1) {
            last_poll = Instant::now();
            let t = a.last_task(mac4);
            let (done, total) = (t["bytes_done"].as_u64().unwrap_or(0), t["bytes_total"].as_u64().unwrap_or(0));
            if t["phase"] == "writing" && total > 0 && done * 4 > total {
                let url = format!("http://{SERVER_IP}:8080/api/v1/tasks/{}/cancel", t["id"]);
                let body = r#"{"reason":"wrong department"}"#;
                lab_curl(
                    &a.lab,
                    &["-X", "POST", "-H", &auth, "-H", "Content-Type: application/json", "-d", body, &url],
                );
                cancelled_at = Some(Instant::now());
            }
        }
        assert!(!log.contains(PROFILED), "the cancelled agent went on to apply the profile:\n{log}");
        log.contains("CANCELLED")
    });
    let stopped_in = cancelled_at.expect("the task was never cancelled mid-deploy").elapsed();
    assert!(!run.log.contains(PROFILED), "the profile was applied after the cancel:\n{}", run.log);
    assert_unbootable(pc4.disk.as_ref().unwrap(), "cancelled deploy");
    assert_eq!(a.last_task(mac4)["state"], "cancelled");
    say(&format!("cancel during writing: the agent stopped and said so {:.1} s later", stopped_in.as_secs_f64()));

    // A chunk corrupted on the appliance's disk, deployed to a new disk in that PC (the
    // cancelled deploy left most chunks in place on the old one).
    let chunk = corrupt_root_chunk(&a.data.join("store"), IMAGE);
    std::fs::File::create(pc4.disk.as_ref().unwrap()).unwrap().set_len(20 << 30).unwrap();
    a.cli(&["machine", "reimage", mac4, "-m", "after the cancel"]);
    let run = a.agent_run(&pc4, "corrupt", |_| {});
    assert!(run.run.log.contains("FAILED") && run.run.log.contains(&chunk), "serial log:\n{}", run.run.log);
    let m = a.machine(mac4);
    assert_eq!(m["status"], "failed", "{m}");
    assert!(m["task"]["message"].as_str().unwrap_or_default().contains(&chunk), "{m}");
    assert!(m["image_digest"].is_null(), "{m}");
    let ev = a.get(&format!("/events?machine={mac4}&kind=task.fail"));
    assert_eq!(ev[0]["data"]["chunk"], chunk.as_str(), "{ev}");
    let status = a.stop_server();
    assert!(status.success(), "parc serve exited with {status} on SIGTERM");
}

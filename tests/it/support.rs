//! Shared helpers for the integration tests: the `parc` binary, root checks, test disks.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Output, Stdio};

use sha2::{Digest, Sha256};

/// The admin password of test appliances, once the one-time one is changed.
pub const ADMIN_PASSWORD: &str = "admin-password-of-the-tests";

pub fn parc() -> Command {
    Command::new(env!("CARGO_BIN_EXE_parc"))
}

/// Runs `parc args…`, returning the output (success not checked).
pub fn parc_run(args: &[&str]) -> Output {
    run_parc(parc(), args)
}

/// `parc` presenting an API token (`PARC_TOKEN`), as a technician's shell would.
pub fn parc_as(token: &str) -> Command {
    let mut c = parc();
    c.env("PARC_TOKEN", token).env("PARC_CONFIG", "/nonexistent/parc-cli.toml");
    c
}

/// `parc_run` with an API token.
pub fn parc_run_as(token: &str, args: &[&str]) -> Output {
    run_parc(parc_as(token), args)
}

/// `parc_json` with an API token.
pub fn parc_json_as(token: &str, args: &[&str]) -> serde_json::Value {
    let mut a = args.to_vec();
    a.push("--json");
    let out = parc_run_as(token, &a);
    assert!(out.status.success(), "parc {a:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn run_parc(mut cmd: Command, args: &[&str]) -> Output {
    let out = cmd.args(args).output().expect("run parc");
    if !out.status.success() {
        eprintln!("parc {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    }
    out
}

/// Runs `parc args… --json` and parses stdout; panics with stderr on failure.
pub fn parc_json(args: &[&str]) -> serde_json::Value {
    let mut a = args.to_vec();
    a.push("--json");
    let out = parc_run(&a);
    assert!(out.status.success(), "parc {a:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("parc {a:?} printed invalid JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

/// Runs a shell command, panicking with its output when it fails.
pub fn sh(cmd: &str) -> String {
    let out = Command::new("bash").args(["-euo", "pipefail", "-c", cmd]).output().expect("run bash");
    assert!(
        out.status.success(),
        "`{cmd}` failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// True when running as root. Otherwise prints a loud SKIP, or panics under `CI=true`
/// (CI must run every test).
pub fn root_or_skip(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        prerequisite_missing(&format!("{test} needs root (loop devices, mounts, network namespaces)"));
    }
    root
}

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

/// Deterministic pseudo-random bytes (xorshift), so test data is incompressible but
/// reproducible without a dependency.
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

pub fn sha256_file(p: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(p).expect("read file")))
}

pub fn sha256_range(p: &Path, offset: u64, len: u64) -> String {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(p).expect("open");
    let mut buf = vec![0u8; len as usize];
    f.read_exact_at(&mut buf, offset).expect("read range");
    hex::encode(Sha256::digest(&buf))
}

pub const MIB: u64 = 1 << 20;

/// A workstation-like test disk: GPT, FAT32 ESP, ext4 root with files and dirty free space
/// (a deleted random file), a swap partition. Built without root: each file system is made
/// in its own file and copied into place.
pub struct TestDisk {
    pub path: PathBuf,
    pub esp_offset: u64,
    pub root_offset: u64,
    pub root_len: u64,
    /// Files written into the root file system: (path inside, content sha256).
    pub root_files: Vec<(String, String)>,
    pub esp_files: Vec<(String, String)>,
}

pub const ESP_START: u64 = MIB;
pub const ESP_LEN: u64 = 40 * MIB;
pub const ROOT_START: u64 = ESP_START + ESP_LEN;
pub const ROOT_LEN: u64 = 72 * MIB;
pub const SWAP_LEN: u64 = 8 * MIB;
pub const DISK_LEN: u64 = ROOT_START + ROOT_LEN + SWAP_LEN + MIB;

pub fn build_disk(dir: &Path, name: &str, seed: u64) -> TestDisk {
    let work = dir.join(format!("{name}.build"));
    std::fs::create_dir_all(work.join("root/etc")).unwrap();
    std::fs::create_dir_all(work.join("root/home/user")).unwrap();
    std::fs::create_dir_all(work.join("esp/EFI/BOOT")).unwrap();
    let mut root_files = Vec::new();
    let files: [(&str, usize); 5] = [
        ("etc/hostname", 0),
        ("home/user/data.bin", 6 << 20),
        ("usr-lib.bin", 3 << 20),
        ("etc/config", 0),
        ("etc/os-release", 0),
    ];
    for (i, (rel, len)) in files.iter().enumerate() {
        let data =
            if *len == 0 { format!("test-{name}-{i}\n").into_bytes() } else { random_bytes(seed + i as u64, *len) };
        // Half of each big file compresses (text-like), half does not.
        let data = if *len > 0 { [data[..len / 2].to_vec(), vec![b'a'; len / 2]].concat() } else { data };
        std::fs::write(work.join("root").join(rel), &data).unwrap();
        root_files.push((format!("/{rel}"), hex::encode(Sha256::digest(&data))));
    }
    let esp_data = random_bytes(seed + 100, 2 << 20);
    std::fs::write(work.join("esp/EFI/BOOT/BOOTX64.EFI"), &esp_data).unwrap();
    let esp_files = vec![("/EFI/BOOT/BOOTX64.EFI".to_string(), hex::encode(Sha256::digest(&esp_data)))];
    let w = work.display();
    // Dirty free space: a random file written then deleted in the ext4 image.
    std::fs::write(work.join("garbage.bin"), random_bytes(seed + 200, 20 << 20)).unwrap();
    sh(&format!(
        "cd {w}
         mkfs.ext4 -q -F -L root -d root -E lazy_itable_init=0,lazy_journal_init=0,nodiscard root.img {}k
         debugfs -w -R 'write garbage.bin garbage.bin' root.img >/dev/null 2>&1
         debugfs -w -R 'rm garbage.bin' root.img >/dev/null 2>&1
         truncate -s {} esp.img && mkfs.vfat -F 32 -n ESP esp.img >/dev/null
         MTOOLS_SKIP_CHECK=1 mcopy -s -Q -i esp.img esp/EFI ::/
         truncate -s {} swap.img && mkswap swap.img >/dev/null",
        ROOT_LEN / 1024,
        ESP_LEN,
        SWAP_LEN
    ));
    let path = dir.join(format!("{name}.raw"));
    let p = path.display();
    sh(&format!(
        "truncate -s {DISK_LEN} {p}
         sgdisk -Z -n1:{}:+{}K -t1:ef00 -c1:ESP -n2:0:+{}K -t2:8300 -c2:root -n3:0:+{}K -t3:8200 -c3:swap {p} >/dev/null
         dd if={w}/esp.img of={p} bs=1M seek={} conv=notrunc,sparse status=none
         dd if={w}/root.img of={p} bs=1M seek={} conv=notrunc,sparse status=none
         dd if={w}/swap.img of={p} bs=1M seek={} conv=notrunc,sparse status=none",
        ESP_START / 512,
        ESP_LEN / 1024,
        ROOT_LEN / 1024,
        SWAP_LEN / 1024,
        ESP_START / MIB,
        ROOT_START / MIB,
        (ROOT_START + ROOT_LEN) / MIB
    ));
    std::fs::remove_dir_all(&work).unwrap();
    TestDisk { path, esp_offset: ESP_START, root_offset: ROOT_START, root_len: ROOT_LEN, root_files, esp_files }
}

/// Checks that `disk` holds a consistent GPT and the test disk's file systems with their
/// files intact (fsck clean, every file's content as written).
pub fn check_disk(disk: &Path, expect: &TestDisk) {
    let d = disk.display();
    let verify = sh(&format!("sgdisk -v {d} 2>&1 || true"));
    assert!(verify.contains("No problems found"), "sgdisk -v on {d}:\n{verify}");
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root.img");
    sh(&format!(
        "dd if={d} of={} bs=1M skip={} count={} status=none && e2fsck -fn {} >/dev/null",
        root.display(),
        expect.root_offset / MIB,
        expect.root_len / MIB,
        root.display()
    ));
    for (path, sum) in &expect.root_files {
        let out = work.path().join("f");
        sh(&format!("debugfs -R 'dump {path} {}' {} 2>/dev/null", out.display(), root.display()));
        assert_eq!(&sha256_file(&out), sum, "{path} differs after deploy");
    }
    for (path, sum) in &expect.esp_files {
        let out = work.path().join("e");
        sh(&format!("MTOOLS_SKIP_CHECK=1 mcopy -n -i {d}@@{} ::{path} {}", expect.esp_offset, out.display()));
        assert_eq!(&sha256_file(&out), sum, "ESP {path} differs after deploy");
    }
    sh(&format!("MTOOLS_SKIP_CHECK=1 mdir -i {d}@@{} ::/ >/dev/null", expect.esp_offset));
}

/// A running `parc serve`, killed when dropped.
pub struct Server {
    pub child: Child,
    pub url: String,
    /// `https://127.0.0.1:port` of the console and API (unless started with `--https off`).
    pub https_url: Option<String>,
    /// The fingerprint of the appliance's CA, as printed.
    pub fingerprint: Option<String>,
    /// The rest of its stdout (first-start lines: the admin password).
    pub stdout: BufReader<ChildStdout>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// The one-time admin password a first start prints.
    pub fn admin_password(&mut self) -> String {
        for _ in 0..5 {
            let mut line = String::new();
            self.stdout.read_line(&mut line).unwrap();
            if let Some(p) = line.split("password ").nth(1) {
                return p.trim().to_string();
            }
        }
        panic!("parc serve printed no admin password");
    }

    /// An admin API token: the first start's one-time password changed to [`ADMIN_PASSWORD`]
    /// (a one-time password creates no token), then a token made with it.
    pub fn admin_token(&mut self) -> String {
        let password = self.admin_password();
        let anon = crate::api::Api::new(&self.url, None);
        let (s, r) = anon.post_with(
            "/api/v1/password",
            serde_json::json!({ "new_password": ADMIN_PASSWORD }),
            &[("Authorization", &crate::api::basic("admin", &password))],
        );
        assert_eq!(s, 200, "{r}");
        let (s, tok) = anon.post_with(
            "/api/v1/tokens",
            serde_json::json!({ "name": "tests" }),
            &[("Authorization", &crate::api::basic("admin", ADMIN_PASSWORD))],
        );
        assert_eq!(s, 201, "{tok}");
        tok["token"].as_str().unwrap().to_string()
    }

    /// SIGTERM, and wait for a clean exit.
    pub fn stop(mut self) -> std::process::ExitStatus {
        nix_kill(self.child.id(), libc::SIGTERM);
        self.child.wait().unwrap()
    }
}

fn nix_kill(pid: u32, sig: i32) {
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(pid as i32, sig) };
}

/// Starts `parc serve` on `addr` (port 0 for any) and waits for its "serving" line.
pub fn start(data: &Path, addr: &str) -> Server {
    start_with(data, addr, &[])
}

pub fn start_with(data: &Path, addr: &str, extra: &[&str]) -> Server {
    start_env(data, addr, extra, &[])
}

/// `start_with` and environment variables for the server (`PARC_FAILPOINTS`).
pub fn start_env(data: &Path, addr: &str, extra: &[&str], env: &[(&str, &str)]) -> Server {
    // HTTPS on a port of its own too, unless the test chooses.
    let https: &[&str] = if extra.contains(&"--https") { &[] } else { &["--https", "127.0.0.1:0"] };
    let mut child = parc()
        .args(["serve", "--data", data.to_str().unwrap(), "--http", addr])
        .args(https)
        .args(extra)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let url = line.trim().rsplit(' ').next().unwrap().to_string();
    assert!(url.starts_with("http://127.0.0.1:"), "unexpected serve output {line:?}");
    let (mut https_url, mut fingerprint) = (None, None);
    if !extra.windows(2).any(|w| w == ["--https", "off"]) {
        line.clear();
        stdout.read_line(&mut line).unwrap();
        https_url = line.split_whitespace().find(|w| w.starts_with("https://")).map(str::to_string);
        fingerprint = line.split("fingerprint ").nth(1).map(|f| f.trim().trim_end_matches(')').to_string());
        assert!(https_url.is_some() && fingerprint.is_some(), "no HTTPS line from parc serve: {line:?}");
    }
    Server { child, url, https_url, fingerprint, stdout }
}

/// A helper process (nginx, slapd…) killed when the test ends, even by a panic.
pub struct Killed(pub std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Flips one bit in a large (> 100 kB stored) chunk of the root partition (partition 2 of the
/// test disk) of `image` in `store`; returns its digest.
pub fn corrupt_root_chunk(store: &Path, image: &str) -> String {
    let show = parc_json(&["image", "show", image, "--store", store.to_str().unwrap()]);
    let path = |d: &str| store.join("chunks").join(&d[..2]).join(format!("{d}.zst"));
    let chunk = show["manifest"]["partitions"][1]["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["sha256"].as_str().unwrap().to_string())
        .find(|d| std::fs::metadata(path(d)).unwrap().len() > 100_000)
        .expect("a large chunk in the root partition");
    let mut b = std::fs::read(path(&chunk)).unwrap();
    let n = b.len();
    b[n - 1000] ^= 1;
    std::fs::write(path(&chunk), b).unwrap();
    chunk
}

/// A read-only loop device over `[offset, offset + len)` of a file, detached when dropped.
pub struct ReadOnlyLoop(pub String);

impl ReadOnlyLoop {
    pub fn new(file: &Path, offset: u64, len: u64) -> ReadOnlyLoop {
        ReadOnlyLoop(
            sh(&format!("losetup -r -f --show -o {offset} --sizelimit {len} {}", file.display())).trim().to_string(),
        )
    }
}

impl Drop for ReadOnlyLoop {
    fn drop(&mut self) {
        let _ = std::process::Command::new("losetup").args(["-d", &self.0]).status();
    }
}

/// A disk of `mib` MiB holding what an older system left: every byte 0xA5.
pub fn used_disk(path: &Path, mib: u64) {
    sh(&format!("head -c {}M /dev/zero | tr '\\000' '\\245' > {}", mib, path.display()));
}

/// `(first byte, length)` of partition `n` as the disk's GPT says.
pub fn gpt_partition(disk: &Path, n: u32) -> (u64, u64) {
    let info = sh(&format!("sgdisk -i {n} {}", disk.display()));
    let sector = |label: &str| -> u64 {
        let line = info.lines().find(|l| l.starts_with(label)).unwrap_or_else(|| panic!("{label} in {info}"));
        line.split_whitespace().nth(2).unwrap().parse().unwrap()
    };
    let (first, last) = (sector("First sector:"), sector("Last sector:"));
    (first * 512, (last - first + 1) * 512)
}

/// An ext2/3/4 file system's size and block size in bytes, from its superblock (`dumpe2fs -h`).
pub fn ext_size(dev: &str) -> (u64, u64) {
    let head = sh(&format!("dumpe2fs -h {dev} 2>/dev/null"));
    let field = |name: &str| -> u64 {
        let l = head.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("{name}: {head}"));
        l.rsplit(' ').next().unwrap().parse().unwrap()
    };
    (field("Block count:") * field("Block size:"), field("Block size:"))
}

//! The agent against a real `parc serve`, writing a real block device (a loop device): task
//! token from the boot script, hello, disk, deploy with verification, department profile on
//! the installed system, done; first boot; a move that fetches only what changed; a corrupt
//! chunk refused and reported. The same agent boots in QEMU in the end-to-end tests.

use std::path::Path;
use std::process::Command;

use serde_json::json;

use crate::api::{appliance, boot_token, install_netboot, Api, Appliance};
use crate::support::*;

pub struct Loop(pub String);

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

pub fn loop_device(file: &Path, size: u64) -> Loop {
    sh(&format!("truncate -s {size} {}", file.display()));
    Loop(sh(&format!("losetup -f --show {}", file.display())).trim().to_string())
}

/// Runs `parc agent` as the initramfs would, with the boot arguments in a file.
pub fn agent(a: &Appliance, mac: &str, disk: &str) -> (bool, String) {
    let cmdline = a.dir.path().join(format!("cmdline-{mac}"));
    std::fs::write(
        &cmdline,
        format!("parc.server={} parc.mac={mac} parc.mode=task parc.token={}\n", a.srv.url, boot_token(&a.admin, mac)),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_parc"))
        .args(["agent", "--cmdline-file", cmdline.to_str().unwrap(), "--disk", disk, "--no-reboot"])
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// A file of the installed root file system (partition 2 of the test disk), read with debugfs.
fn root_file(disk: &str, path: &str) -> String {
    sh(&format!(
        "dd if={disk} bs=1M skip={} count={} status=none > /tmp/parc-agent-root-$$.img && debugfs -R 'cat {path}' /tmp/parc-agent-root-$$.img 2>/dev/null; rm -f /tmp/parc-agent-root-$$.img",
        ROOT_START / MIB,
        ROOT_LEN / MIB
    ))
}

/// An appliance whose departments' image `debian-poste` is a real GPT disk (ESP, ext4 root
/// with os-release, swap), with agent files in place so boot scripts carry task tokens.
fn appliance_with_disk_image(seed: u64) -> (Appliance, serde_json::Value) {
    let a = appliance("127.0.0.1:0");
    install_netboot(&a);
    let disk = build_disk(a.dir.path(), "poste", seed);
    let store = a.data.join("store");
    let c = parc_json(&[
        "image",
        "capture",
        disk.path.to_str().unwrap(),
        "--store",
        store.to_str().unwrap(),
        "--name",
        "debian-poste",
    ]);
    (a, c)
}

#[test]
fn agent_installs_applies_the_profile_moves_and_refuses_a_corrupt_chunk() {
    if !root_or_skip("agent_installs_applies_the_profile_moves_and_refuses_a_corrupt_chunk") {
        return;
    }
    let (a, c) = appliance_with_disk_image(41);
    let digest = c["digest"].as_str().unwrap().to_string();

    let mac = "52:54:00:a9:00:01";
    let (s, r) = a.admin.post("/api/v1/machines", json!({ "mac": mac, "department": "radiologie", "install": true }));
    assert_eq!(s, 201, "{r}");
    let target = loop_device(&a.dir.path().join("target.raw"), DISK_LEN + 64 * MIB);
    let (ok, log) = agent(&a, mac, &target.0);
    assert!(ok, "agent failed:\n{log}");
    assert!(log.contains("image written and verified") && log.contains("profile applied on partition 2"), "{log}");
    assert!(!log.contains("progress report failed"), "the appliance refused a progress report:\n{log}");
    let (_, m) = a.admin.get(&format!("/api/v1/machines/{mac}"));
    assert_eq!(m["status"], "installed", "{m}");
    assert_eq!(m["image_digest"], digest.as_str());
    assert_eq!(m["task"]["state"], "done");
    let installed_fetch = m["task"]["message"].as_str().unwrap().to_string();
    // What the profile put on the installed system.
    assert_eq!(root_file(&target.0, "/etc/hostname"), "RAD-0001\n");
    assert!(root_file(&target.0, "/etc/hosts").contains("127.0.1.1\tRAD-0001"));
    let payload = std::fs::read_to_string(a.data.join("profiles/payloads/radiologie/etc/parc/department")).unwrap();
    assert_eq!(root_file(&target.0, "/etc/parc/department"), payload);
    let unit = root_file(&target.0, "/etc/systemd/system/parc-first-boot.service");
    assert!(
        unit.contains("ExecStart=/usr/local/lib/parc/first-boot.sh") && unit.contains("report-first-boot"),
        "{unit}"
    );
    let env = root_file(&target.0, "/etc/parc/agent.env");
    assert!(env.contains(&format!("PARC_SERVER={}", a.srv.url)), "{env}");
    // The installed system's first boot runs the report script with that file: ready.
    let script = root_file(&target.0, "/usr/local/lib/parc/report-first-boot");
    let env_file = a.dir.path().join("agent.env");
    std::fs::write(&env_file, env).unwrap();
    let fb = Command::new("bash")
        .arg("-c")
        .arg(script.replace("/etc/parc/agent.env", env_file.to_str().unwrap()))
        .output()
        .unwrap();
    assert!(fb.status.success(), "{}{}", String::from_utf8_lossy(&fb.stdout), String::from_utf8_lossy(&fb.stderr));
    let (_, m) = a.admin.get(&format!("/api/v1/machines/{mac}"));
    assert_eq!(m["status"], "ready");
    // Everything else on the disk is the image, checked file by file.
    let fsck = sh(&format!("sgdisk -v {} 2>&1 || true", target.0));
    assert!(fsck.contains("No problems found"), "{fsck}");

    // Move to Urgences: only the chunks the profile changed travel again.
    let (s, r) = a.admin.post(&format!("/api/v1/machines/{mac}/move"), json!({ "department": "urgences" }));
    assert_eq!(s, 200, "{r}");
    let (ok, log) = agent(&a, mac, &target.0);
    assert!(ok, "{log}");
    assert_eq!(root_file(&target.0, "/etc/hostname"), "URG-0001\n");
    let (_, t) = a.admin.get(&format!("/api/v1/tasks?machine={mac}&limit=1"));
    let moved = &t[0];
    assert_eq!((moved["kind"].as_str(), moved["state"].as_str()), (Some("move"), Some("done")), "{moved}");
    let fetched: u64 = moved["message"]
        .as_str()
        .unwrap()
        .split(", ")
        .find_map(|p| p.strip_suffix(" bytes fetched"))
        .unwrap()
        .parse()
        .unwrap();
    let image_bytes = c["compressed_bytes"].as_u64().unwrap();
    assert!(
        fetched * 4 < image_bytes,
        "move fetched {fetched} bytes of a {image_bytes}-byte image ({installed_fetch})"
    );

    // A corrupt chunk: refused, the task failed with the chunk named, never installed.
    let chunk = corrupt_root_chunk(&a.data.join("store"), "debian-poste");
    let mac2 = "52:54:00:a9:00:02";
    let (s, _) = a.admin.post("/api/v1/machines", json!({ "mac": mac2, "department": "pharmacie", "install": true }));
    assert_eq!(s, 201);
    let target2 = loop_device(&a.dir.path().join("target2.raw"), DISK_LEN);
    let (ok, log) = agent(&a, mac2, &target2.0);
    assert!(!ok, "{log}");
    assert!(log.contains("FAILED") && log.contains(&chunk), "{log}");
    let (_, m) = a.admin.get(&format!("/api/v1/machines/{mac2}"));
    assert_eq!(m["status"], "failed");
    assert!(m["task"]["message"].as_str().unwrap().contains(&chunk), "{m}");
    assert!(m["image_digest"].is_null());
    let (_, ev) = a.admin.get(&format!("/api/v1/events?machine={mac2}&kind=task.fail"));
    assert_eq!(ev[0]["data"]["chunk"], chunk.as_str());
    let head = std::fs::read(&target2.0).unwrap();
    assert!(head[..MIB as usize].iter().all(|&x| x == 0), "a failed deploy leaves the boot area zeroed");
    drop(Api::new(&a.srv.url, None));
}

/// A machine nobody declared boots the agent in register mode, shows up as discovered, and
/// picks up the install a technician then queues for it, without a reboot.
#[test]
fn registered_machine_picks_up_the_task_queued_for_it() {
    if !root_or_skip("registered_machine_picks_up_the_task_queued_for_it") {
        return;
    }
    let (a, _) = appliance_with_disk_image(43);
    let mac = "52:54:00:a9:00:07";
    let target = loop_device(&a.dir.path().join("target.raw"), DISK_LEN);
    let cmdline = a.dir.path().join("cmdline");
    // An unknown machine's boot script: register mode, with a boot credential.
    let token = boot_token(&a.admin, mac);
    std::fs::write(
        &cmdline,
        format!("parc.server={} parc.mac={mac} parc.mode=register parc.token={token}\n", a.srv.url),
    )
    .unwrap();
    // `timeout`: an agent that never sees its task must fail the test, not hang it.
    let child = Command::new("timeout")
        .args([
            "120",
            env!("CARGO_BIN_EXE_parc"),
            "agent",
            "--cmdline-file",
            cmdline.to_str().unwrap(),
            "--disk",
            &target.0,
            "--no-reboot",
            "--poll-secs",
            "2",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut status = String::new();
    for _ in 0..50 {
        let (_, m) = a.admin.get(&format!("/api/v1/machines/{mac}"));
        status = m["status"].as_str().unwrap_or("").to_string();
        if status == "discovered" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert_eq!(status, "discovered");
    let (s, r) = a.admin.post(&format!("/api/v1/machines/{mac}/install"), json!({ "department": "pharmacie" }));
    assert_eq!(s, 200, "{r}");
    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("registered as a new machine") && log.contains("task #"), "{log}");
    let (_, m) = a.admin.get(&format!("/api/v1/machines/{mac}"));
    assert_eq!(m["status"], "installed");
    assert_eq!(m["hostname"], "PHA-0001");
    assert_eq!(root_file(&target.0, "/etc/hostname"), "PHA-0001\n");
}

//! `parc image …` end to end on real file systems, files and loop devices.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn capture(disk: &Path, store: &Path, name: &str) -> serde_json::Value {
    parc_json(&["image", "capture", s(disk), "--store", s(store), "--name", name])
}

fn deploy(image: &str, store: &Path, to: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["image", "deploy", image, "--store", s(store), "--to", s(to)];
    args.extend_from_slice(extra);
    parc_json(&args)
}

fn head_is_zero(p: &Path) -> bool {
    let data = std::fs::read(p).unwrap();
    data[..MIB as usize].iter().all(|&b| b == 0)
}

#[test]
fn capture_and_deploy_round_trip_with_fs_aware_maps() {
    let dir = tempfile::tempdir().unwrap();
    let disk = build_disk(dir.path(), "v1", 1);
    let store = dir.path().join("store");
    let c = capture(&disk.path, &store, "base");
    assert_eq!(c["version"], 1);
    let parts = c["partitions"].as_array().unwrap();
    let fs: Vec<&str> = parts.iter().map(|p| p["fs"].as_str().unwrap()).collect();
    assert_eq!(fs, ["fat32", "ext4", "swap"], "{c:#}");
    assert!(parts.iter().all(|p| p["fallback"].is_null()), "{c:#}");
    // Only the used blocks: the 20 MiB deleted file in the root file system is not stored.
    let root_used = parts[1]["used_bytes"].as_u64().unwrap();
    assert!(root_used < 20 * MIB, "root used {root_used}: dirty free space was captured");
    assert!(root_used > 9 * MIB, "root used {root_used}: files missing");
    assert_eq!(parts[2]["used_bytes"], 4096, "swap keeps only its header");

    let target = dir.path().join("out.raw");
    let d = deploy("base", &store, &target, &["--verify"]);
    assert_eq!(d["verified_after_write"], true);
    assert_eq!(std::fs::metadata(&target).unwrap().len(), DISK_LEN);
    check_disk(&target, &disk);
    // The swap header survives (mkswap signature).
    let swap_sig = sh(&format!("dd if={} bs=1 skip={} count=10 status=none", s(&target), ROOT_START + ROOT_LEN + 4086));
    assert_eq!(swap_sig, "SWAPSPACE2");

    // ls / show / verify speak JSON.
    let ls = parc_json(&["image", "ls", "--store", s(&store)]);
    assert_eq!(ls[0]["name"], "base");
    assert_eq!(ls[0]["digest"], c["digest"]);
    let show = parc_json(&["image", "show", "base@1", "--store", s(&store)]);
    assert_eq!(show["manifest"]["table"], "gpt");
    let v = parc_json(&["image", "verify", "--store", s(&store)]);
    assert!(v["bad"].as_array().unwrap().is_empty() && v["missing"].as_array().unwrap().is_empty(), "{v:#}");

    // A second deploy onto the same target finds everything in place.
    let again = deploy("base", &store, &target, &[]);
    assert_eq!(again["bytes_fetched"], 0, "{again:#}");
    check_disk(&target, &disk);
}

#[test]
fn gpt_moves_to_the_end_of_a_larger_disk_and_small_targets_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let disk = build_disk(dir.path(), "v1", 2);
    let store = dir.path().join("store");
    capture(&disk.path, &store, "base");

    let big = dir.path().join("big.raw");
    sh(&format!("truncate -s {} {}", DISK_LEN + 64 * MIB, s(&big)));
    let d = deploy("base", &store, &big, &["--verify"]);
    assert_eq!(d["gpt_relocated"], true);
    check_disk(&big, &disk);
    let info = sh(&format!("sgdisk -p {}", s(&big)));
    assert!(info.contains(&format!("last usable sector is {}", (DISK_LEN + 64 * MIB) / 512 - 34)), "{info}");

    // Too small: refused before anything is written.
    let small = dir.path().join("small.raw");
    std::fs::write(&small, random_bytes(9, (ROOT_START + 4 * MIB) as usize)).unwrap();
    let before = sha256_file(&small);
    let out = parc_run(&["image", "deploy", "base", "--store", s(&store), "--to", s(&small)]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("smaller than image base needs"), "{err}");
    assert_eq!(sha256_file(&small), before, "a refused deploy must not write");
}

#[test]
fn delta_fetches_only_changed_chunks_and_versions_share_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let disk = build_disk(dir.path(), "v1", 3);
    let store = dir.path().join("store");
    capture(&disk.path, &store, "base");
    // v2: a "hotfix" adds a 2 MiB file to the root file system.
    let v2 = dir.path().join("v2.raw");
    sh(&format!("cp --sparse=always {} {}", s(&disk.path), s(&v2)));
    let root = dir.path().join("root.img");
    let patch = dir.path().join("patch.bin");
    std::fs::write(&patch, random_bytes(77, 2 << 20)).unwrap();
    sh(&format!(
        "dd if={v2} of={r} bs=1M skip={o} count={l} status=none
         debugfs -w -R 'write {p} hotfix.bin' {r} >/dev/null 2>&1
         dd if={r} of={v2} bs=1M seek={o} conv=notrunc status=none",
        v2 = s(&v2),
        r = s(&root),
        p = s(&patch),
        o = ROOT_START / MIB,
        l = ROOT_LEN / MIB
    ));
    let c2 = capture(&v2, &store, "base");
    assert_eq!(c2["version"], 2);
    assert!(c2["stored_bytes"].as_u64().unwrap() < 4 * MIB, "v2 stored {c2:#}");

    let target = dir.path().join("out.raw");
    let first = deploy("base@1", &store, &target, &[]);
    let used = first["image_bytes"].as_u64().unwrap();
    let d = deploy("base@2", &store, &target, &["--verify"]);
    let fetched = d["bytes_fetched_raw"].as_u64().unwrap();
    assert!((2 * MIB..6 * MIB).contains(&fetched), "delta fetched {fetched} of {used}: {d:#}");
    assert!(d["bytes_skipped"].as_u64().unwrap() > used / 2);
    let diff = parc_json(&["image", "diff", "base@1", "base@2", "--store", s(&store)]);
    assert!(diff["b_only_bytes"].as_u64().unwrap() >= 2 * MIB);
    let out = dir.path().join("hotfix.out");
    sh(&format!(
        "dd if={} of={} bs=1M skip={} count={} status=none && debugfs -R 'dump /hotfix.bin {}' {} 2>/dev/null",
        s(&target),
        s(&root),
        ROOT_START / MIB,
        ROOT_LEN / MIB,
        s(&out),
        s(&root)
    ));
    assert_eq!(sha256_file(&out), sha256_file(&patch));
}

/// A disk whose single partition holds unknown data: version 2 swaps two 1 MiB regions and
/// the seeded deploy must take both from the disk itself, reading each before overwriting it.
#[test]
fn seeded_deploy_reuses_chunks_that_swap_places() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let template = dir.path().join("template.raw");
    sh(&format!("truncate -s {} {t} && sgdisk -Z -n1:2048:+16M -t1:8300 {t} >/dev/null", 20 * MIB, t = s(&template)));
    let make = |name: &str, swap: bool| {
        let p = dir.path().join(name);
        sh(&format!("cp --sparse=always {} {}", s(&template), s(&p)));
        let mut data: Vec<Vec<u8>> = (0..8).map(|i| random_bytes(500 + i, MIB as usize)).collect();
        if swap {
            data.swap(1, 6);
        }
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
        for (i, d) in data.iter().enumerate() {
            f.write_all_at(d, MIB + i as u64 * MIB).unwrap();
        }
        p
    };
    let v1 = make("v1.raw", false);
    let v2 = make("v2.raw", true);
    capture(&v1, &store, "data");
    capture(&v2, &store, "data");
    let target = dir.path().join("t.raw");
    deploy("data@1", &store, &target, &[]);
    let d = deploy("data@2", &store, &target, &["--seed-image", "data@1", "--verify"]);
    assert_eq!(d["bytes_fetched"], 0, "{d:#}");
    assert_eq!(d["chunks_local"], 2, "{d:#}");
    assert_eq!(sha256_range(&target, MIB, 16 * MIB), sha256_range(&v2, MIB, 16 * MIB));
    // Without the seed the same change is fetched.
    deploy("data@1", &store, &target, &[]);
    let d = deploy("data@2", &store, &target, &[]);
    assert_eq!(d["bytes_fetched_raw"], 2 * MIB, "{d:#}");
}

#[test]
fn corrupt_or_missing_chunk_stops_the_deploy_and_leaves_an_unbootable_disk() {
    let dir = tempfile::tempdir().unwrap();
    let disk = build_disk(dir.path(), "v1", 4);
    let store = dir.path().join("store");
    capture(&disk.path, &store, "base");
    let show = parc_json(&["image", "show", "base", "--store", s(&store)]);
    // Corrupt a chunk of the root partition that holds data (zero chunks are never fetched).
    let chunks = show["manifest"]["partitions"][1]["chunks"].as_array().unwrap();
    let chunk = chunks
        .iter()
        .find(|c| {
            let len: u64 = c["at"].as_array().unwrap().iter().map(|p| p[1].as_u64().unwrap()).sum();
            c["sha256"].as_str().unwrap()
                != hex::encode(<sha2::Sha256 as sha2::Digest>::digest(vec![0u8; len as usize]))
        })
        .unwrap()["sha256"]
        .as_str()
        .unwrap()
        .to_string();
    let path = store.join("chunks").join(&chunk[..2]).join(format!("{chunk}.zst"));
    let mut bytes = std::fs::read(&path).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0x55;
    std::fs::write(&path, &bytes).unwrap();

    let target = dir.path().join("out.raw");
    let out = parc_run(&["image", "deploy", "base", "--store", s(&store), "--to", s(&target), "--json"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&chunk) && err.contains("corrupt") && err.contains("base"), "{err}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["ok"], false);
    assert!(head_is_zero(&target), "a failed deploy must leave the boot area zeroed");
    let v = parc_run(&["image", "verify", "--store", s(&store)]);
    assert!(!v.status.success());
    assert!(String::from_utf8_lossy(&v.stdout).contains(&format!("BAD     {chunk}")));

    std::fs::remove_file(&path).unwrap();
    let out = parc_run(&["image", "deploy", "base", "--store", s(&store), "--to", s(&target)]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&chunk) && err.contains("missing"), "{err}");
    let v = parc_run(&["image", "verify", "base", "--store", s(&store)]);
    assert!(String::from_utf8_lossy(&v.stdout).contains(&format!("MISSING {chunk}")));
    assert!(!v.status.success());
}

#[test]
fn damaged_manifests_and_bad_sources_get_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let disk = build_disk(dir.path(), "v1", 5);
    let store = dir.path().join("store");
    let c = capture(&disk.path, &store, "base");
    let digest = c["digest"].as_str().unwrap().to_string();
    let mpath = store.join("manifests").join(format!("{digest}.json"));
    let good = std::fs::read(&mpath).unwrap();
    let target = dir.path().join("out.raw");
    let deploy_err = || {
        let out = parc_run(&["image", "deploy", "base", "--store", s(&store), "--to", s(&target)]);
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    std::fs::write(&mpath, &good[..good.len() / 2]).unwrap();
    assert!(deploy_err().contains("stored manifest is corrupt"));
    // A manifest from a future parc: consistent digest, version 3.
    let v2 = String::from_utf8(good.clone()).unwrap().replace("\"version\":2", "\"version\":3");
    let d2 = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(v2.as_bytes()));
    std::fs::write(store.join("manifests").join(format!("{d2}.json")), &v2).unwrap();
    let out = parc_run(&["image", "deploy", &d2, "--store", s(&store), "--to", s(&target)]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("version 3; this parc reads versions 1 to 2: upgrade parc"));
    std::fs::write(&mpath, &good).unwrap();

    let err = parc_run(&["image", "deploy", "nope", "--store", s(&store), "--to", s(&target)]);
    assert!(String::from_utf8_lossy(&err.stderr).contains("no image called \"nope\""));
    let err = parc_run(&["image", "capture", "/nonexistent/disk", "--store", s(&store), "--name", "x"]);
    assert!(!err.status.success());
    assert!(String::from_utf8_lossy(&err.stderr).contains("cannot read the source /nonexistent/disk"));
    let err = parc_run(&["image", "capture", s(dir.path()), "--store", s(&store), "--name", "x"]);
    assert!(String::from_utf8_lossy(&err.stderr).contains("not a regular file or a block device"));
    let err = parc_run(&["image", "capture", s(&disk.path), "--store", s(&store), "--name", "../evil"]);
    assert!(String::from_utf8_lossy(&err.stderr).contains("invalid image name"));
    assert!(!store.join("../evil").exists());
}

#[test]
fn rm_and_gc_keep_what_other_images_use() {
    let dir = tempfile::tempdir().unwrap();
    let a = build_disk(dir.path(), "a", 6);
    let b = build_disk(dir.path(), "b", 7);
    let store = dir.path().join("store");
    capture(&a.path, &store, "a");
    capture(&b.path, &store, "b");
    parc_json(&["image", "rm", "a", "--store", s(&store)]);
    let gc = parc_json(&["image", "gc", "--store", s(&store)]);
    assert!(gc["chunks_removed"].as_u64().unwrap() > 0, "{gc:#}");
    let v = parc_json(&["image", "verify", "--store", s(&store)]);
    assert!(v["bad"].as_array().unwrap().is_empty() && v["missing"].as_array().unwrap().is_empty());
    let target = dir.path().join("out.raw");
    deploy("b", &store, &target, &["--verify"]);
    check_disk(&target, &b);
}

/// Starts `parc args`, waits until its progress output shows it is busy, and kills it -9.
fn kill_midway(args: &[&str], marker: &str) {
    let mut child = parc().args(args).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let wanted = marker.to_string();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains(&wanted) {
                let _ = tx.send(());
            }
        }
    });
    let got = rx.recv_timeout(Duration::from_secs(120)).is_ok();
    let _ = child.kill();
    let status = child.wait().unwrap();
    assert!(got, "parc never reached `{marker}`");
    assert!(!status.success(), "parc finished before it could be killed; make the test disk larger");
}

/// A large disk of incompressible data (slow enough to kill midway).
fn big_raw_disk(dir: &Path, seed: u64) -> std::path::PathBuf {
    let p = dir.join("big.raw");
    sh(&format!("truncate -s {} {} && sgdisk -Z -n1:2048:0 -t1:8300 {} >/dev/null", 600 * MIB, s(&p), s(&p)));
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
    for i in 0..560u64 {
        f.write_all_at(&random_bytes(seed + i, MIB as usize), MIB + i * MIB).unwrap();
    }
    p
}

#[test]
fn killed_capture_and_deploy_are_completed_by_a_rerun() {
    let dir = tempfile::tempdir().unwrap();
    let disk = big_raw_disk(dir.path(), 1000);
    let store = dir.path().join("store");
    // The capture is killed once it is writing chunks: nothing is published.
    kill_midway(
        &["image", "capture", s(&disk), "--store", s(&store), "--name", "big", "--level", "19"],
        "capture: capturing",
    );
    let ls = parc_json(&["image", "ls", "--store", s(&store)]);
    assert_eq!(ls.as_array().unwrap().len(), 0, "a killed capture published {ls:#}");
    let v = parc_json(&["image", "verify", "--store", s(&store)]);
    assert!(v["bad"].as_array().unwrap().is_empty());
    capture(&disk, &store, "big");

    // The deploy is killed while writing; the rerun completes and skips what was written.
    let target = dir.path().join("t.raw");
    let started = Instant::now();
    kill_midway(&["image", "deploy", "big", "--store", s(&store), "--to", s(&target)], "deploy: writing");
    eprintln!("deploy killed after {:?}", started.elapsed());
    assert!(head_is_zero(&target), "an interrupted deploy must not leave a bootable disk");
    let d = deploy("big", &store, &target, &["--verify"]);
    assert_eq!(d["verified_after_write"], true);
    assert_eq!(sha256_range(&target, MIB, 560 * MIB), sha256_range(&disk, MIB, 560 * MIB));
    assert_eq!(sha256_range(&target, 0, MIB), sha256_range(&disk, 0, MIB));
    let gc = parc_json(&["image", "gc", "--store", s(&store)]);
    assert_eq!(gc["chunks_removed"], 0, "every chunk of the killed capture was reused: {gc:#}");
}

#[test]
fn full_disk_during_capture_publishes_nothing_and_keeps_the_store_consistent() {
    if !root_or_skip("full_disk_during_capture") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let disk = build_disk(dir.path(), "v1", 8);
    let store = dir.path().join("store");
    std::fs::create_dir_all(&store).unwrap();
    sh(&format!("mount -t tmpfs -o size=6m parc-test-full {}", s(&store)));
    let out = parc_run(&["image", "capture", s(&disk.path), "--store", s(&store), "--name", "base"]);
    let ls = parc_run(&["image", "ls", "--store", s(&store), "--json"]);
    let verify = parc_run(&["image", "verify", "--store", s(&store), "--json"]);
    let gc = parc_run(&["image", "gc", "--store", s(&store), "--json"]);
    let used_after_gc = sh(&format!("du -sk {} | cut -f1", s(&store)));
    sh(&format!("umount {}", s(&store)));
    assert!(!out.status.success(), "capture into a 6 MiB store should fail");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("No space left on device"), "{err}");
    let ls: serde_json::Value = serde_json::from_slice(&ls.stdout).unwrap();
    assert_eq!(ls.as_array().unwrap().len(), 0);
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stdout));
    assert!(gc.status.success());
    assert!(used_after_gc.trim().parse::<u64>().unwrap() < 64, "gc left {used_after_gc} KiB");
}

/// Loop devices: capture from one, deploy to another (BLKGETSIZE64, BLKZEROOUT, BLKRRPART).
#[test]
fn loop_devices_capture_and_deploy() {
    if !root_or_skip("loop_devices_capture_and_deploy") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let disk = build_disk(dir.path(), "v1", 9);
    let store = dir.path().join("store");
    let target_file = dir.path().join("target.img");
    sh(&format!("truncate -s {} {}", DISK_LEN + 32 * MIB, s(&target_file)));
    std::fs::write(dir.path().join("junk"), random_bytes(3, MIB as usize)).unwrap();
    // Old content at the head of the target must not survive.
    sh(&format!("dd if={}/junk of={} conv=notrunc status=none", s(dir.path()), s(&target_file)));
    let src = sh(&format!("losetup -f --show -r {}", s(&disk.path))).trim().to_string();
    let dst = sh(&format!("losetup -f --show -P {}", s(&target_file))).trim().to_string();
    let result = std::panic::catch_unwind(|| {
        let c = capture(Path::new(&src), &store, "base");
        assert_eq!(c["disk_size"], DISK_LEN);
        let d = deploy("base", &store, Path::new(&dst), &["--verify", "--wipe"]);
        assert_eq!(d["target_size"], DISK_LEN + 32 * MIB);
        assert_eq!(d["gpt_relocated"], true);
        sh(&format!("blockdev --flushbufs {dst}"));
    });
    sh(&format!("losetup -d {src}; losetup -d {dst}"));
    result.unwrap();
    check_disk(&target_file, &disk);
}

/// Two captures under one name at once each get their own version.
#[test]
fn concurrent_captures_get_distinct_versions() {
    let dir = tempfile::tempdir().unwrap();
    let disk = build_disk(dir.path(), "v1", 10);
    let store = dir.path().join("store");
    let spawn = || {
        parc()
            .args(["image", "capture", s(&disk.path), "--store", s(&store), "--name", "same", "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert!(a.status.success() && b.status.success());
    let va: serde_json::Value = serde_json::from_slice(&a.stdout).unwrap();
    let vb: serde_json::Value = serde_json::from_slice(&b.stdout).unwrap();
    let mut versions = [va["version"].as_u64().unwrap(), vb["version"].as_u64().unwrap()];
    versions.sort();
    assert_eq!(versions, [1, 2]);
    assert_eq!(va["digest"], vb["digest"], "same disk, same manifest");
    let v = parc_json(&["image", "verify", "--store", s(&store)]);
    assert!(v["bad"].as_array().unwrap().is_empty());
    let _ = Command::new("true").status();
}

/// NTFS volumes made by mkntfs and filled through ntfs-3g, from 512-byte to 128 KiB clusters
/// (the negative sectors-per-cluster code): parc's used map is `$Bitmap`, so it must hold
/// exactly ntfsclone's in-use clusters plus the tail with the backup boot sector; deployed
/// over a disk full of other bytes, the volume is clean and every file comes back identical.
#[test]
fn ntfs_used_clusters_match_ntfsclone_and_files_come_back_over_a_used_disk() {
    if !have("mkntfs", "ntfs-3g") || !have("ntfs-3g", "ntfs-3g") || !root_or_skip("ntfs") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for cs in [512u64, 4096, 65536, 131072] {
        let vol = d.join(format!("vol-{cs}.img"));
        sh(&format!(
            "truncate -s 48M {v} && mkntfs -F -Q -c {cs} -s 512 -p 2048 -H 255 -S 63 -L parc {v} >/dev/null",
            v = s(&vol)
        ));
        let mnt = d.join(format!("mnt-{cs}"));
        std::fs::create_dir_all(&mnt).unwrap();
        // Files written, one deleted between others (fragmenting the next), a sparse file, a
        // Windows-like tree.
        sh(&format!(
            "ntfs-3g {v} {m} && head -c 5000000 /dev/urandom > {m}/a.bin && head -c 3000001 /dev/urandom > {m}/b.bin \
             && rm {m}/a.bin && head -c 7000000 /dev/urandom > {m}/c.bin && truncate -s 20M {m}/sparse.bin \
             && dd if=/dev/urandom of={m}/sparse.bin bs=1M seek=10 count=1 conv=notrunc status=none \
             && mkdir -p {m}/Windows/System32 {m}/Windows/Setup/State && for i in $(seq 1 200); do echo $i > {m}/Windows/System32/f$i.txt; done \
             && printf '[State]\r\nImageState=IMAGE_STATE_GENERALIZE_RESEAL_TO_OOBE\r\n' > {m}/Windows/Setup/State/State.ini \
             && cd {m} && find . -type f | sort | xargs sha256sum > {d}/sums-{cs} && cd / && umount {m}",
            v = s(&vol),
            m = s(&mnt),
            d = s(d)
        ));
        let inuse = sh(&format!(
            "(ntfsclone --save-image -o - {} 2>/dev/null || true) | head -c 46 | od -An -t u8 -j 38 -N 8",
            s(&vol)
        ));
        let inuse: u64 = inuse.trim().parse().unwrap();
        let disk = d.join(format!("disk-{cs}.img"));
        sh(&format!(
            "truncate -s 52M {k} && sgdisk -n 1:2048:+48M -t 1:0700 {k} >/dev/null && dd if={v} of={k} bs=1M seek=1 conv=notrunc status=none",
            k = s(&disk),
            v = s(&vol)
        ));
        let store = d.join("store");
        let c = capture(&disk, &store, &format!("win-{cs}"));
        let p = &c["partitions"][0];
        assert_eq!((p["fs"].as_str(), p["map"].as_str()), (Some("ntfs"), Some("allocation")), "{c:#}");
        // The volume is 98,303 sectors: the clusters end at or before its last sector, the rest of
        // the partition (the backup boot sector's cluster) is kept too.
        let clusters = 98_303 * 512 / cs;
        let tail = (48 << 20) - clusters * cs;
        assert_eq!(p["used_bytes"].as_u64().unwrap(), inuse * cs + tail, "{cs}-byte clusters: {c:#}");

        let target = d.join(format!("target-{cs}.img"));
        std::fs::write(&target, random_bytes(cs, 52 << 20)).unwrap();
        deploy(&format!("win-{cs}"), &store, &target, &["--verify"]);
        let out = d.join(format!("out-{cs}.img"));
        sh(&format!("dd if={} of={} bs=1M skip=1 count=48 status=none", s(&target), s(&out)));
        let fix = Command::new("ntfsfix").args(["-n", s(&out)]).output().unwrap();
        assert!(fix.status.success(), "{cs}: ntfsfix -n: {}", String::from_utf8_lossy(&fix.stdout));
        sh(&format!(
            "ntfs-3g -o ro {o} {m} && cd {m} && find . -type f | sort | xargs sha256sum > {d}/back-{cs}; cd /; umount {m}",
            o = s(&out),
            m = s(&mnt),
            d = s(d)
        ));
        let (before, after) = (
            std::fs::read_to_string(d.join(format!("sums-{cs}"))).unwrap(),
            std::fs::read_to_string(d.join(format!("back-{cs}"))).unwrap(),
        );
        assert!(before.lines().count() > 200);
        assert_eq!(before, after, "{cs}-byte clusters: files differ after deploy over a used disk");
    }

    // Damaged metadata never fails a capture nor yields a map outside the partition: a torn
    // $Bitmap record falls back to storing non-zero blocks, saying why; random damage to the
    // boot sector and the first MFT records is survived the same way.
    let disk = d.join("disk-4096.img");
    let bytes = std::fs::read(&disk).unwrap();
    let part = 1usize << 20;
    let mft = u64::from_le_bytes(bytes[part + 0x30..part + 0x38].try_into().unwrap()) as usize * 4096;
    let mut torn = bytes.clone();
    torn[part + mft + 6 * 1024 + 510] ^= 0xFF;
    let torn_disk = d.join("torn.img");
    std::fs::write(&torn_disk, &torn).unwrap();
    let c = capture(&torn_disk, &d.join("store-torn"), "torn");
    let p = &c["partitions"][0];
    assert_eq!((p["fs"].as_str(), p["map"].as_str()), (Some("ntfs"), Some("nonzero")), "{c:#}");
    assert!(p["fallback"].as_str().unwrap_or_default().contains("torn"), "{c:#}");
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    for round in 0..25 {
        let mut m = bytes.clone();
        for _ in 0..64 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let at = if seed.is_multiple_of(4) {
                part + (seed >> 8) as usize % 512
            } else {
                part + mft + (seed >> 8) as usize % (16 * 1024)
            };
            m[at] = (seed >> 32) as u8;
        }
        let f = d.join("mutated.img");
        std::fs::write(&f, &m).unwrap();
        let c = capture(&f, &d.join("store-mutated"), &format!("m{round}"));
        let p = &c["partitions"][0];
        assert!(p["used_bytes"].as_u64().unwrap() <= 48 << 20, "round {round}: {c:#}");
    }

    // The pre-flight gate: a volume Windows left dirty, or one BitLocker encrypted, is refused
    // before anything is stored, saying what to do.
    let mut dirty = bytes.clone();
    let rec = part + mft + 3 * 1024;
    let mut at = rec + u16::from_le_bytes([dirty[rec + 20], dirty[rec + 21]]) as usize;
    loop {
        let kind = u32::from_le_bytes(dirty[at..at + 4].try_into().unwrap());
        assert_ne!(kind, 0xFFFF_FFFF, "no $VOLUME_INFORMATION in record 3");
        if kind == 0x70 {
            let value = at + u16::from_le_bytes([dirty[at + 20], dirty[at + 21]]) as usize;
            dirty[value + 10] |= 0x01;
            break;
        }
        at += u32::from_le_bytes(dirty[at + 4..at + 8].try_into().unwrap()) as usize;
    }
    let mut locked = bytes.clone();
    locked[part + 3..part + 11].copy_from_slice(b"-FVE-FS-");
    let gated = d.join("store-gated");
    for (label, image, says) in [("dirty", dirty, "chkdsk C: /f"), ("bitlocker", locked, "manage-bde -off")] {
        let f = d.join(format!("{label}.img"));
        std::fs::write(&f, &image).unwrap();
        let out = parc_run(&["image", "capture", s(&f), "--store", s(&gated), "--name", label]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{label}: captured");
        assert!(err.contains("refused before anything was stored") && err.contains(says), "{label}: {err}");
        let ls = parc_run(&["image", "ls", "--store", s(&gated)]);
        assert!(!String::from_utf8_lossy(&ls.stdout).contains(label), "{label}: an image was stored");
    }
}

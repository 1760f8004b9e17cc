//! Disks of other sizes: on a larger disk the last partition and its file system grow to the
//! end (ext4 through e2fsck and resize2fs, NTFS through ntfsresize), over disks that held
//! something else; a last partition parc cannot grow keeps its size and the report says why;
//! a failed growth fails the deploy and leaves the disk unbootable. On a smaller disk the last
//! ext4 partition shrinks when every block it uses fits, down to exactly the size the refusal
//! names; anything else is refused before a byte is written.

use std::path::Path;

use crate::support::*;

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn deploy(image: &str, store: &Path, target: &Path, extra: &[&str], path_first: Option<&Path>) -> (bool, String) {
    let mut cmd = parc();
    cmd.args(["image", "deploy", image, "--to", s(target), "--store", s(store), "--verify", "--json"]).args(extra);
    if let Some(dir) = path_first {
        cmd.env("PATH", format!("{}:{}", s(dir), std::env::var("PATH").unwrap()));
    }
    let out = cmd.output().unwrap();
    // The report is stdout's one JSON document; an error goes to stderr.
    let text = if out.status.success() { out.stdout } else { [out.stdout, out.stderr].concat() };
    (out.status.success(), String::from_utf8_lossy(&text).into_owned())
}

/// Captures `disk` as `name`, deploys it with `--grow` to a used disk of `mib` MiB at `target`;
/// the deploy report, once the target's GPT checks clean.
fn capture_and_grow(
    disk: &Path,
    store: &Path,
    name: &str,
    target: &Path,
    mib: u64,
    extra: &[&str],
) -> serde_json::Value {
    let out = parc_run(&["image", "capture", s(disk), "--name", name, "--store", s(store)]);
    assert!(out.status.success(), "capture {name}: {}", String::from_utf8_lossy(&out.stderr));
    used_disk(target, mib);
    let (ok, out) = deploy(name, store, target, extra, None);
    assert!(ok, "{out}");
    let verify = sh(&format!("sgdisk -v {} 2>&1 || true", s(target)));
    assert!(verify.contains("No problems found"), "{verify}");
    serde_json::from_str(&out).unwrap()
}

#[test]
fn last_partitions_grow_with_their_file_systems_over_larger_used_disks() {
    if !root_or_skip("last_partitions_grow_with_their_file_systems_over_larger_used_disks")
        || !have("resize2fs", "e2fsprogs")
        || !have("ntfsresize", "ntfs-3g")
        || !have("sgdisk", "gdisk")
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let store = d.join("store");

    // 1. ext4 last: an 8 MiB ESP, then a 64 MiB root with files, on a 74 MiB disk.
    let root = d.join("root");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(root.join("etc/os-release"), "ID=debian\n").unwrap();
    std::fs::write(root.join("data.bin"), random_bytes(7, 5 << 20)).unwrap();
    std::fs::write(root.join("notes.txt"), "compte rendu\n".repeat(1000)).unwrap();
    let linux = d.join("linux.img");
    sh(&format!(
        "cd {d} && mkfs.ext4 -q -F -L root -d root root.ext4 64M && truncate -s 74M {l} \
         && sgdisk -n1:2048:+8M -t1:ef00 -n2:0:+64M -t2:8300 -c2:root {l} >/dev/null \
         && dd if=root.ext4 of={l} bs=1M seek=9 conv=notrunc status=none",
        d = s(d),
        l = s(&linux)
    ));
    let sums = |dev: &str| {
        ["/etc/os-release", "/data.bin", "/notes.txt"]
            .iter()
            .map(|f| sh(&format!("debugfs -R 'cat {f}' {dev} 2>/dev/null | sha256sum")))
            .collect::<Vec<_>>()
    };
    let before = sums(&format!("{}/root.ext4", s(d)));
    let before_linux = before.clone();
    let target = d.join("pc1.img");
    let r = capture_and_grow(&linux, &store, "linux", &target, 300, &["--grow"]);
    // Up to the last MiB boundary before the backup GPT of a 300 MiB disk.
    assert_eq!(r["resized"]["number"], 2, "{r}");
    assert_eq!(r["resized"]["length"].as_u64(), Some(290 << 20), "{r}");
    assert_eq!(gpt_partition(&target, 2), (9 << 20, 290 << 20));
    assert_eq!(gpt_partition(&target, 1), (1 << 20, 8 << 20), "the ESP is untouched");
    let check_ext4 = |what: &str| {
        let dev = ReadOnlyLoop::new(&target, 9 << 20, 290 << 20);
        sh(&format!("e2fsck -fn {} >/dev/null", dev.0));
        assert_eq!(ext_size(&dev.0).0, 290 << 20, "{what}: the file system fills the partition");
        assert_eq!(sums(&dev.0), before, "{what}: files changed");
    };
    check_ext4("first deploy");
    // Deployed again (a move): the image's chunks the growth changed are put back, then grown again.
    let (ok, out) = deploy("linux", &store, &target, &["--grow"], None);
    assert!(ok, "{out}");
    check_ext4("second deploy");

    // 2. A growth that fails fails the deploy, names the partition and what to do, and
    //    leaves the disk unbootable.
    let fake = d.join("fakebin");
    std::fs::create_dir_all(&fake).unwrap();
    std::fs::write(fake.join("resize2fs"), "#!/bin/sh\necho 'resize2fs: No space left on device' >&2\nexit 1\n")
        .unwrap();
    sh(&format!("chmod +x {}/resize2fs", s(&fake)));
    let (ok, out) = deploy("linux", &store, &target, &["--grow"], Some(&fake));
    assert!(!ok, "a failed resize2fs must fail the deploy: {out}");
    assert!(
        out.contains("growing partition 2") && out.contains("grow = false") && out.contains("No space left"),
        "{out}"
    );
    let mut head = vec![0u8; 1 << 20];
    std::os::unix::fs::FileExt::read_exact_at(&std::fs::File::open(&target).unwrap(), &mut head, 0).unwrap();
    assert!(head.iter().all(|&b| b == 0), "the disk's boot area must stay zero after a failed growth");

    // 3. NTFS last (a Windows layout: ESP, MSR, system partition): grows with ntfsresize.
    let (win, start, len) = crate::windows::windows_layout_disk(d, "win");
    let before = {
        let dev = ReadOnlyLoop::new(&win, start, len);
        crate::windows::ntfs_sums(Path::new(&dev.0), &d.join("before.mnt"))
    };
    let target = d.join("pc2.img");
    let r = capture_and_grow(&win, &store, "win", &target, 600, &["--grow"]);
    assert_eq!((r["resized"]["number"].as_u64(), r["resized"]["length"].as_u64()), (Some(3), Some(518 << 20)), "{r}");
    assert_eq!(gpt_partition(&target, 3), (start, 518 << 20));
    let dev = ReadOnlyLoop::new(&target, start, 518 << 20);
    let fix = std::process::Command::new("ntfsfix").args(["-n", &dev.0]).output().unwrap();
    assert!(fix.status.success(), "ntfsfix -n: {}", String::from_utf8_lossy(&fix.stdout));
    // The volume (boot sector: total sectors) fills the partition but its last cluster, where
    // the backup boot sector goes.
    let boot = sh(&format!("dd if={} bs=512 count=1 status=none | od -An -tu8 -j40 -N8", dev.0));
    let volume = boot.trim().parse::<u64>().unwrap() * 512;
    assert!(volume < 518 << 20 && volume > (518 << 20) - 8192, "NTFS volume of {volume} bytes");
    let after = crate::windows::ntfs_sums(Path::new(&dev.0), &d.join("after.mnt"));
    let no_pagefile = |t: &str| t.lines().filter(|l| !l.ends_with("./pagefile.sys")).collect::<Vec<_>>().join("\n");
    assert!(before.lines().count() > 40);
    assert_eq!(no_pagefile(&before), no_pagefile(&after), "files changed");
    drop(dev);

    // 4. A last partition parc cannot grow (swap) keeps its size; the report says why.
    let t = build_disk(d, "swaplast", 3);
    let target = d.join("pc3.img");
    let r = capture_and_grow(&t.path, &store, "swaplast", &target, 256, &["--grow"]);
    assert!(r["resized"].is_null(), "{r}");
    assert!(r["grow_skipped"].as_str().unwrap().contains("partition 3 keeps its size"), "{r}");
    assert_eq!(gpt_partition(&target, 3).1, SWAP_LEN);
    check_disk(&target, &t);

    // 5. Smaller disks. Too small for the image even shrunk: refused before anything is
    //    written, naming the size needed; a disk of exactly that size takes it, shrunk.
    let shrink_to_minimum = |image: &str, disk: &Path| -> (serde_json::Value, u64) {
        used_disk(disk, 20);
        let (ok, out) = deploy(image, &store, disk, &[], None);
        assert!(!ok && out.contains("choose a larger disk"), "{out}");
        assert!(std::fs::read(disk).unwrap().iter().all(|&b| b == 0xA5), "a refused deploy wrote to the disk");
        let at_least = out.split("a disk of at least ").nth(1).unwrap_or_else(|| panic!("{out}"));
        let needed: u64 = at_least.split(' ').next().unwrap().parse().unwrap();
        sh(&format!("head -c {needed} /dev/zero | tr '\\000' '\\245' > {}", s(disk)));
        let (ok, out) = deploy(image, &store, disk, &[], None);
        assert!(ok, "{out}");
        let verify = sh(&format!("sgdisk -v {} 2>&1 || true", s(disk)));
        assert!(verify.contains("No problems found"), "{verify}");
        (serde_json::from_str(&out).unwrap(), needed)
    };
    let small = d.join("pc4.img");
    let (r, ext_needed) = shrink_to_minimum("linux", &small);
    let length = r["resized"]["length"].as_u64().unwrap_or_else(|| panic!("{r}"));
    assert!(length < 64 << 20 && ext_needed < 74 << 20, "{r}");
    assert_eq!(gpt_partition(&small, 2), (9 << 20, length));
    let dev = ReadOnlyLoop::new(&small, 9 << 20, length);
    sh(&format!("e2fsck -fn {} >/dev/null", dev.0));
    assert_eq!(ext_size(&dev.0).0, length, "the shrunk file system fills its partition");
    assert_eq!(sums(&dev.0), before_linux, "files changed by the shrink");
    drop(dev);
    // NTFS: ntfsresize, shown the volume's full size through parc's FUSE window. The reference
    // PC is the 600 MiB one above (its 518 MiB volume holds what the 200 MiB one did), once
    // Windows has run the check ntfsresize scheduled (here: its flag cleared).
    let reference = d.join("ref.img");
    sh(&format!(
        "cp --sparse=always {} {r} && L=$(losetup -f --show -o {start} --sizelimit {} {r}) && ntfsfix -d $L >/dev/null; \
         s=$?; losetup -d $L; exit $s",
        s(&d.join("pc2.img")),
        518 << 20,
        r = s(&reference)
    ));
    let out = parc_run(&["image", "capture", s(&reference), "--name", "win-big", "--store", s(&store)]);
    assert!(out.status.success(), "capture win-big: {}", String::from_utf8_lossy(&out.stderr));
    let small_win = d.join("pc5.img");
    let (r, needed) = shrink_to_minimum("win-big", &small_win);
    let length = r["resized"]["length"].as_u64().unwrap_or_else(|| panic!("{r}"));
    assert!(length < 300 << 20 && needed < 400 << 20, "a 518 MiB volume holding 200 MiB's worth: {r}");
    eprintln!(
        "shrink: ext4 of 64 MiB onto {ext_needed} bytes; NTFS of 518 MiB (64 MiB pagefile) onto {needed} bytes, \
         its partition {} MiB",
        length >> 20
    );
    assert_eq!(gpt_partition(&small_win, 3), (start, length));
    let dev = ReadOnlyLoop::new(&small_win, start, length);
    let fix = std::process::Command::new("ntfsfix").args(["-n", &dev.0]).output().unwrap();
    assert!(fix.status.success(), "ntfsfix -n: {}", String::from_utf8_lossy(&fix.stdout));
    let after = crate::windows::ntfs_sums(Path::new(&dev.0), &d.join("shrunk.mnt"));
    assert_eq!(no_pagefile(&before), no_pagefile(&after), "files changed by the shrink");
    drop(dev);
    // A last partition parc does not shrink (swap): refused, the disk untouched.
    let held = sha256_file(&small);
    let (ok, out) = deploy("swaplast", &store, &small, &[], None);
    assert!(!ok && out.contains("ext2/3/4 and NTFS only") && out.contains("choose a larger disk"), "{out}");
    assert_eq!(sha256_file(&small), held, "a refused deploy wrote to the disk");
}

//! Deploys over disks that held something else: every byte the image defines comes back.
//!
//! Two workstation-like disks made by the file systems' own tools: an MBR disk (NTFS from
//! `mkntfs` holding files with zero blocks inside, a partition of an unknown type with random
//! and zero blocks, an extended partition with a FAT16 logical drive, data in the post-MBR and
//! inter-partition gaps) and a GPT disk (FAT32 ESP, ext4 with a deleted file, swap, an unknown
//! GUID, data between partitions). Each is deployed over a target full of 0xAA, of random
//! bytes, holding the other image, and holding itself; then compared byte for byte over every
//! range the manifest defines (chunks and zero ranges), file by file (ntfscat, debugfs,
//! mtools) and checked by `ntfsfix -n`, `e2fsck -fn`, `fsck.fat -n`.

use std::path::{Path, PathBuf};

use crate::support::*;

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// A file of `blocks` 4 KiB blocks: random, except the listed blocks, which are zeros.
fn file_with_zero_blocks(seed: u64, blocks: usize, zeros: &[usize]) -> Vec<u8> {
    let mut d = random_bytes(seed, blocks * 4096);
    for &z in zeros {
        d[z * 4096..(z + 1) * 4096].fill(0);
    }
    d
}

/// (partition offset, partition length, kind, files: (path, sha256)).
type Part = (u64, u64, &'static str, Vec<(String, String)>);

struct Disk {
    path: PathBuf,
    parts: Vec<Part>,
}

fn sha(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

fn put(dir: &Path, rel: &str, data: &[u8]) -> (String, String) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, data).unwrap();
    (format!("/{rel}"), sha(data))
}

/// NTFS made by mkntfs, filled through ntfs-3g (FUSE): files whose blocks 2–3 are zeros.
fn ntfs(work: &Path, len: u64, seed: u64) -> (PathBuf, Vec<(String, String)>) {
    let img = work.join("ntfs.img");
    let mnt = work.join("ntfs.mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    sh(&format!("truncate -s {len} {0} && mkntfs -q -F -Q -L DATA {0} >/dev/null 2>&1", s(&img)));
    sh(&format!("ntfs-3g {} {}", s(&img), s(&mnt)));
    let src = work.join("ntfs.src");
    let files = vec![
        put(&src, "Users/Public/dossier.bin", &file_with_zero_blocks(seed, 16, &[2, 3])),
        put(&src, "Windows/System32/config.dat", &file_with_zero_blocks(seed + 1, 300, &[0, 7, 8, 9, 299])),
        put(&src, "note.txt", b"compte rendu\r\n"),
        // A Windows tree is a system sysprep generalized, or the capture refuses it.
        put(&src, "Windows/Setup/State/State.ini", b"[State]\r\nImageState=IMAGE_STATE_GENERALIZE_RESEAL_TO_OOBE\r\n"),
    ];
    let copied = std::process::Command::new("cp").args(["-r", &format!("{}/.", s(&src)), s(&mnt)]).status();
    sh(&format!("umount {}", s(&mnt)));
    assert!(copied.unwrap().success(), "copying into NTFS");
    (img, files)
}

fn fat(work: &Path, name: &str, len: u64, bits: u32, seed: u64) -> (PathBuf, Vec<(String, String)>) {
    let img = work.join(format!("{name}.img"));
    let src = work.join(format!("{name}.src"));
    let files = vec![
        put(&src, "EFI/BOOT/BOOTX64.EFI", &file_with_zero_blocks(seed, 40, &[5, 6])),
        put(&src, "readme.txt", b"parc\r\n"),
    ];
    sh(&format!(
        "truncate -s {len} {0} && mkfs.vfat -F {bits} {0} >/dev/null && MTOOLS_SKIP_CHECK=1 mcopy -s -Q -i {0} {1}/* ::/",
        s(&img),
        s(&src)
    ));
    (img, files)
}

fn ext4(work: &Path, len: u64, seed: u64) -> (PathBuf, Vec<(String, String)>) {
    let img = work.join("ext4.img");
    let src = work.join("ext4.src");
    let files = vec![
        put(&src, "etc/os-release", b"ID=debian\n"),
        put(&src, "var/lib/dossier.bin", &file_with_zero_blocks(seed, 64, &[2, 3, 40])),
    ];
    std::fs::write(work.join("deleted.bin"), random_bytes(seed + 9, 4 << 20)).unwrap();
    sh(&format!(
        "mkfs.ext4 -q -F -d {1} -E lazy_itable_init=0,lazy_journal_init=0,nodiscard {0} {2}k
         debugfs -w -R 'write {3} deleted.bin' {0} >/dev/null 2>&1
         debugfs -w -R 'rm deleted.bin' {0} >/dev/null 2>&1",
        s(&img),
        s(&src),
        len / 1024,
        s(&work.join("deleted.bin"))
    ));
    (img, files)
}

/// Random 4 KiB blocks with zero blocks between them, for a partition type nobody maps.
fn unknown(work: &Path, len: u64, seed: u64) -> PathBuf {
    let img = work.join(format!("unknown{seed}.img"));
    let mut d = vec![0u8; len as usize];
    for b in (0..len as usize / 4096).filter(|b| b % 3 != 1) {
        d[b * 4096..(b + 1) * 4096].copy_from_slice(&random_bytes(seed * 1000 + b as u64, 4096));
    }
    std::fs::write(&img, d).unwrap();
    img
}

fn place(disk: &Path, img: &Path, at: u64) {
    sh(&format!("dd if={} of={} bs=64K seek={} oflag=seek_bytes conv=notrunc status=none", s(img), s(disk), at));
}

fn scribble(disk: &Path, at: u64, len: usize, seed: u64) {
    let f = std::fs::OpenOptions::new().write(true).open(disk).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &random_bytes(seed, len), at).unwrap();
}

fn mbr_disk(dir: &Path) -> Disk {
    let work = dir.join("mbr.build");
    std::fs::create_dir_all(&work).unwrap();
    let path = dir.join("mbr.raw");
    let (p1, l1) = (MIB, 24 * MIB);
    let (p2, l2) = (26 * MIB, 8 * MIB); // a 1 MiB gap before it
    let (p3, l3) = (34 * MIB, 12 * MIB); // extended
    let (p5, l5) = (35 * MIB, 10 * MIB); // logical, its EBR at 34 MiB
    let table = format!(
        "label: dos\nstart={}, size={}, type=7\nstart={}, size={}, type=da\nstart={}, size={}, type=5\nstart={}, size={}, type=6\n",
        p1 / 512, l1 / 512, p2 / 512, l2 / 512, p3 / 512, l3 / 512, p5 / 512, l5 / 512
    );
    sh(&format!("truncate -s {} {d} && printf '{table}' | sfdisk -q {d}", 48 * MIB, d = s(&path)));
    let (n, nfiles) = ntfs(&work, l1, 11);
    place(&path, &n, p1);
    place(&path, &unknown(&work, l2, 12), p2);
    let (f, ffiles) = fat(&work, "fat16", l5, 16, 13);
    place(&path, &f, p5);
    // A boot loader in the post-MBR gap, and something in the gap between partitions.
    scribble(&path, 32 * 1024, 20000, 14);
    scribble(&path, 25 * MIB + 4096, 8192, 15);
    std::fs::remove_dir_all(&work).unwrap();
    Disk { path, parts: vec![(p1, l1, "ntfs", nfiles), (p2, l2, "unknown", vec![]), (p5, l5, "fat", ffiles)] }
}

fn gpt_disk(dir: &Path) -> Disk {
    let work = dir.join("gpt.build");
    std::fs::create_dir_all(&work).unwrap();
    let path = dir.join("gpt.raw");
    let k = |b: u64| b / 1024;
    sh(&format!(
        "truncate -s {size} {d} && sgdisk -Z -n1:2048:+{esp}K -t1:ef00 -n2:{root_at}:+{root}K -t2:8300 \
         -n3:0:+{swap}K -t3:8200 -n4:0:+{other}K -t4:ffeeddcc-0000-4000-8000-000000000001 {d} >/dev/null",
        size = 80 * MIB,
        d = s(&path),
        esp = k(40 * MIB),
        root_at = (42 * MIB) / 512, // a 1 MiB gap after the ESP
        root = k(20 * MIB),
        swap = k(4 * MIB),
        other = k(6 * MIB),
    ));
    let (esp, efiles) = fat(&work, "esp", 40 * MIB, 32, 21);
    place(&path, &esp, MIB);
    let (root, rfiles) = ext4(&work, 20 * MIB, 22);
    place(&path, &root, 42 * MIB);
    sh(&format!("truncate -s {0} {1} && mkswap {1} >/dev/null", 4 * MIB, s(&work.join("swap.img"))));
    place(&path, &work.join("swap.img"), 62 * MIB);
    place(&path, &unknown(&work, 6 * MIB, 23), 66 * MIB);
    scribble(&path, 41 * MIB + 512, 3000, 24);
    std::fs::remove_dir_all(&work).unwrap();
    Disk {
        path,
        parts: vec![
            (MIB, 40 * MIB, "fat", efiles),
            (42 * MIB, 20 * MIB, "ext4", rfiles),
            (66 * MIB, 6 * MIB, "unknown", vec![]),
        ],
    }
}

/// Every `[offset, length]` the manifest defines: chunk pieces and zero ranges.
fn defined_ranges(manifest: &serde_json::Value) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut region = |r: &serde_json::Value| {
        for c in r["chunks"].as_array().into_iter().flatten() {
            for p in c["at"].as_array().unwrap() {
                out.push((p[0].as_u64().unwrap(), p[1].as_u64().unwrap()));
            }
        }
        for z in r["zeros"].as_array().into_iter().flatten() {
            out.push((z[0].as_u64().unwrap(), z[1].as_u64().unwrap()));
        }
    };
    region(&manifest["boot_area"]);
    if !manifest["backup_area"].is_null() {
        region(&manifest["backup_area"]);
    }
    for p in manifest["partitions"].as_array().unwrap() {
        region(p);
    }
    for g in manifest["gaps"].as_array().into_iter().flatten() {
        region(g);
    }
    out.sort_unstable();
    out
}

fn check_files(target: &Path, disk: &Disk, work: &Path) {
    for (off, len, kind, files) in &disk.parts {
        let part = work.join("part.img");
        sh(&format!(
            "dd if={} of={} bs=1M skip={} count={} iflag=skip_bytes,count_bytes status=none",
            s(target),
            s(&part),
            off,
            len
        ));
        let out = work.join("file");
        match *kind {
            "ntfs" => {
                sh(&format!("ntfsfix -n {} >/dev/null", s(&part)));
                for (p, sum) in files {
                    sh(&format!("ntfscat {} {p} > {}", s(&part), s(&out)));
                    assert_eq!(&sha256_file(&out), sum, "NTFS {p} differs after deploy");
                }
            }
            "ext4" => {
                sh(&format!("e2fsck -fn {} >/dev/null", s(&part)));
                for (p, sum) in files {
                    sh(&format!("debugfs -R 'dump {p} {}' {} 2>/dev/null", s(&out), s(&part)));
                    assert_eq!(&sha256_file(&out), sum, "ext4 {p} differs after deploy");
                }
            }
            "fat" => {
                sh(&format!("fsck.fat -n {} >/dev/null", s(&part)));
                for (p, sum) in files {
                    sh(&format!("MTOOLS_SKIP_CHECK=1 mcopy -n -i {} ::{p} {}", s(&part), s(&out)));
                    assert_eq!(&sha256_file(&out), sum, "FAT {p} differs after deploy");
                }
            }
            _ => {}
        }
    }
}

#[test]
fn deploys_over_used_disks_bring_back_every_defined_byte() {
    if !(have("mkntfs", "ntfs-3g") && have("sfdisk", "fdisk") && have("sgdisk", "gdisk") && root_or_skip("used disks"))
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let disks = [mbr_disk(dir.path()), gpt_disk(dir.path())];
    for (i, d) in disks.iter().enumerate() {
        let c = parc_json(&["image", "capture", s(&d.path), "--store", s(&store), "--name", &format!("d{i}")]);
        let fs: Vec<&str> = c["partitions"].as_array().unwrap().iter().map(|p| p["fs"].as_str().unwrap()).collect();
        let want: &[&str] =
            if i == 0 { &["ntfs", "unknown", "unknown"] } else { &["fat32", "ext4", "swap", "unknown"] };
        assert_eq!(fs, want, "{c:#}");
    }
    for (i, d) in disks.iter().enumerate() {
        let show = parc_json(&["image", "show", &format!("d{i}"), "--store", s(&store)]);
        let manifest = &show["manifest"];
        assert_eq!(manifest["version"], 2);
        assert!(!manifest["gaps"].as_array().unwrap().is_empty(), "the gap between partitions is in the image");
        let ranges = defined_ranges(manifest);
        let source = std::fs::read(&d.path).unwrap();
        let size = source.len();
        let other = std::fs::read(&disks[1 - i].path).unwrap();
        let mut other_sized = other.clone();
        other_sized.resize(size, 0);
        for (label, before) in [
            ("0xAA", vec![0xAAu8; size]),
            ("random", random_bytes(40 + i as u64, size)),
            ("the other image", other_sized),
            ("the same image", source.clone()),
        ] {
            let target = dir.path().join(format!("t{i}.raw"));
            std::fs::write(&target, &before).unwrap();
            let r =
                parc_json(&["image", "deploy", &format!("d{i}"), "--store", s(&store), "--to", s(&target), "--verify"]);
            assert_eq!(r["verified_after_write"], true, "{label}: {r:#}");
            assert!(r["verified_by"] == "direct" || r["verified_by"] == "cache-dropped", "{label}: {r:#}");
            let after = std::fs::read(&target).unwrap();
            for &(o, l) in &ranges {
                let (o, l) = (o as usize, l as usize);
                if after[o..o + l] != source[o..o + l] {
                    let at = (o..o + l).find(|&k| after[k] != source[k]).unwrap();
                    panic!(
                        "disk {i} over {label}: byte {at} (in defined range [{o}, +{l})) is {:#x}, the image has {:#x}",
                        after[at], source[at]
                    );
                }
            }
            check_files(&target, d, dir.path());
            if label == "the same image" {
                assert_eq!(r["bytes_fetched"], 0, "{r:#}");
                assert_eq!(r["bytes_zeroed"], 0, "{r:#}");
            }
        }
    }
}

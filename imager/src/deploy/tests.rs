//! Each phase over synthetic disks whose every byte is defined (MBR, unknown partition
//! types, data in the gaps), deployed over targets that held something else.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use super::*;
use crate::capture::{capture, CaptureOptions};
use crate::digest::Digest;
use crate::io::read_pieces;
use crate::progress::NoProgress;
use crate::store::{DirStore, StoreError};

const MIB: u64 = 1 << 20;
const SIZE: u64 = 8 * MIB;
/// Partition 1: [1 MiB, 4 MiB) type 0xda; gap [4 MiB, 4.5 MiB); partition 2: [4.5 MiB, 7 MiB)
/// "NTFS" (stored by non-zero blocks); the last MiB is outside every partition.
const P1: (u64, u64) = (MIB, 3 * MIB);
const P2: (u64, u64) = (4 * MIB + MIB / 2, 5 * MIB / 2);
const DEFINED_END: u64 = P2.0 + P2.1;

fn rand_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A disk where every byte up to `DEFINED_END` is defined content: random 4 KiB blocks,
/// zero blocks between them, two identical 1 MiB cells, data in the post-MBR and
/// inter-partition gaps.
fn source_disk(seed: u64) -> Vec<u8> {
    let mut d = vec![0u8; SIZE as usize];
    for (n, (start, len), ty) in [(0usize, P1, 0xdau8), (1, P2, 0x07)] {
        let e = 446 + n * 16;
        d[e + 4] = ty;
        d[e + 8..e + 12].copy_from_slice(&((start / 512) as u32).to_le_bytes());
        d[e + 12..e + 16].copy_from_slice(&((len / 512) as u32).to_le_bytes());
    }
    d[510] = 0x55;
    d[511] = 0xAA;
    // Boot loader in the post-MBR gap, with a zero block in the middle of it.
    d[32768..40960].copy_from_slice(&rand_bytes(seed, 8192));
    d[45056..49152].copy_from_slice(&rand_bytes(seed + 1, 4096));
    // Partition 1: every other 4 KiB block random.
    for b in (P1.0..P1.0 + 2 * MIB).step_by(8192) {
        d[b as usize..b as usize + 4096].copy_from_slice(&rand_bytes(seed + b, 4096));
    }
    // Its third MiB repeats the second: same chunk content at two places.
    let (a, b) = ((P1.0 + MIB) as usize, (P1.0 + 2 * MIB) as usize);
    let copy = d[a..b].to_vec();
    d[b..b + MIB as usize].copy_from_slice(&copy);
    // The gap between partitions.
    d[(4 * MIB + 8192) as usize..(4 * MIB + 12288) as usize].copy_from_slice(&rand_bytes(seed + 7, 4096));
    // Partition 2: an "NTFS" boot sector, then files with zero blocks inside them.
    d[P2.0 as usize + 3..P2.0 as usize + 11].copy_from_slice(b"NTFS    ");
    for b in (P2.0 + 4096..P2.0 + P2.1).step_by(3 * 4096) {
        d[b as usize..b as usize + 4096].copy_from_slice(&rand_bytes(seed + 3 * b, 4096));
    }
    // Past the last partition: not part of the image.
    d[(7 * MIB) as usize..(7 * MIB + 4096) as usize].fill(0x55);
    d
}

struct Fixture {
    _dir: tempfile::TempDir,
    store: DirStore,
    work: PathBuf,
    manifest: Manifest,
    source: Vec<u8>,
}

fn fixture(seed: u64) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = DirStore::create(dir.path().join("store")).unwrap();
    let source = source_disk(seed);
    let r = capture(&source, SIZE, 512, "test", &store, "img", &CaptureOptions::default(), &NoProgress).unwrap();
    let manifest = store.manifest(&r.digest).unwrap();
    Fixture { work: dir.path().to_path_buf(), _dir: dir, store, manifest, source }
}

/// Counts chunk reads, so "fetched once" can fail.
struct Counting<'a> {
    inner: &'a DirStore,
    reads: AtomicU64,
}

impl ChunkSource for Counting<'_> {
    fn read_chunk(&self, d: &Digest) -> Result<Vec<u8>, StoreError> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        self.inner.read_chunk(d)
    }
    fn read_manifest(&self, d: &Digest) -> Result<Vec<u8>, StoreError> {
        self.inner.read_manifest(d)
    }
    fn resolve(&self, r: &str) -> Result<Digest, StoreError> {
        self.inner.resolve(r)
    }
    fn location(&self) -> String {
        self.inner.location()
    }
}

fn target(f: &Fixture, name: &str, content: &[u8]) -> PathBuf {
    let p = f.work.join(name);
    std::fs::write(&p, content).unwrap();
    p
}

fn request<'a>(f: &'a Fixture, source: &'a dyn ChunkSource, path: &'a Path, disk: &'a Disk) -> Request<'a> {
    Request { source, image: "img", manifest: &f.manifest, disk, target: path, progress: &NoProgress }
}

fn run(
    f: &Fixture,
    source: &dyn ChunkSource,
    path: &Path,
    disk: &Disk,
    opts: DeployOptions,
) -> Result<DeployReport, Error> {
    deploy(request(f, source, path, disk), opts)
}

fn verify_opts() -> DeployOptions {
    DeployOptions { verify: true, ..Default::default() }
}

#[test]
fn every_defined_byte_comes_back_over_any_previous_content() {
    let f = fixture(1);
    assert_eq!(f.manifest.partitions[1].fs, crate::fs::FsKind::Ntfs);
    assert!(!f.manifest.gaps.is_empty(), "the gap between partitions is recorded");
    let other = source_disk(99);
    for (name, before) in [
        ("aa", vec![0xAAu8; SIZE as usize]),
        ("random", rand_bytes(5, SIZE as usize)),
        ("other-image", other),
        ("same-image", f.source.clone()),
    ] {
        let p = target(&f, name, &before);
        let disk = Disk::open_write(&p, SIZE).unwrap();
        let r = run(&f, &f.store, &p, &disk, verify_opts()).unwrap();
        assert!(r.verified_after_write, "{name}");
        // O_DIRECT on most file systems; tmpfs (a developer's /tmp) gets the cache-dropping path.
        assert!(r.verified_by.is_some(), "{name}: {r:?}");
        let after = std::fs::read(&p).unwrap();
        let bad = (0..DEFINED_END as usize).find(|&i| after[i] != f.source[i]);
        assert_eq!(bad, None, "{name}: first differing byte");
        // What follows the last partition is not part of the image and keeps its old bytes.
        assert_eq!(
            after[7 * MIB as usize..SIZE as usize - 33 * 512],
            before[7 * MIB as usize..SIZE as usize - 33 * 512]
        );
        if name == "same-image" {
            assert_eq!(r.bytes_fetched, 0, "{r:?}");
            assert_eq!(r.bytes_zeroed, 0, "zero ranges already zero are not rewritten");
        } else if name != "other-image" {
            assert!(r.bytes_zeroed > 0, "{name}: {r:?}");
        }
    }
}

#[test]
fn identical_chunks_are_fetched_once() {
    let f = fixture(2);
    let counting = Counting { inner: &f.store, reads: AtomicU64::new(0) };
    let p = target(&f, "t", &vec![0xAA; SIZE as usize]);
    let disk = Disk::open_write(&p, SIZE).unwrap();
    let r = run(&f, &counting, &p, &disk, verify_opts()).unwrap();
    let distinct: std::collections::HashSet<Digest> = f.manifest.all_chunks().map(|c| c.sha256).collect();
    assert!(distinct.len() < f.manifest.all_chunks().count(), "the fixture has a repeated chunk");
    assert_eq!(counting.reads.load(Ordering::Relaxed), distinct.len() as u64, "{r:?}");
    assert_eq!(r.chunks_fetched, distinct.len() as u64);
}

#[test]
fn verify_body_rereads_what_the_deploy_wrote() {
    let f = fixture(3);
    let p = target(&f, "t", &vec![0xAA; SIZE as usize]);
    let disk = Disk::open_write(&p, SIZE).unwrap();
    let req = request(&f, &f.store, &p, &disk);
    let mut d = Deployment::new(req, DeployOptions::default()).unwrap();
    d.write_and_verify_body().unwrap();
    // Damage a defined zero range behind the deploy's back.
    let zero = f.manifest.defined_zeros().into_iter().find(|r| r.start >= P2.0).unwrap();
    std::os::unix::fs::FileExt::write_all_at(
        &std::fs::OpenOptions::new().write(true).open(&p).unwrap(),
        b"x",
        zero.start,
    )
    .unwrap();
    let err = d.verify_body().unwrap_err();
    assert!(matches!(err, Error::VerifyFailed { first_offset, .. } if first_offset == zero.start), "{err}");
}

#[test]
fn a_cancel_stops_the_deploy_and_leaves_the_disk_unbootable() {
    let f = fixture(4);
    let p = target(&f, "t", &f.source.clone());
    let disk = Disk::open_write(&p, SIZE).unwrap();
    let cancel = Arc::new(AtomicBool::new(false));
    let req = request(&f, &f.store, &p, &disk);
    let mut d = Deployment::new(req, DeployOptions { cancel: Some(cancel.clone()), ..verify_opts() }).unwrap();
    d.disarm().unwrap();
    d.scan().unwrap();
    cancel.store(true, Ordering::Relaxed);
    assert!(matches!(d.write_body(), Err(Error::Cancelled { .. })));
    let after = std::fs::read(&p).unwrap();
    assert!(after[..MIB as usize].iter().all(|&b| b == 0), "boot area zero: the old system cannot boot");
}

#[test]
fn unreadable_places_are_rewritten_and_write_errors_name_the_offset() {
    let f = fixture(5);
    let p = target(&f, "t", &f.source.clone());
    let mut disk = Disk::open_write(&p, SIZE).unwrap();
    // A bad sector under a chunk that is otherwise in place, and one under a zero range.
    let chunk = f.manifest.partitions[0].chunks[0].offset();
    let zero = f.manifest.defined_zeros().into_iter().find(|r| r.start > P1.0).unwrap().start;
    disk.faults.read = vec![chunk + 512..chunk + 1024, zero..zero + 512].into();
    let r = run(&f, &f.store, &p, &disk, verify_opts()).unwrap();
    assert_eq!(r.chunks_unreadable, 1, "{r:?}");
    assert_eq!(r.chunks_fetched, 1, "only the unreadable chunk is fetched: {r:?}");
    assert!(r.verified_after_write && r.bytes_zeroed > 0);
    assert_eq!(std::fs::read(&p).unwrap()[..DEFINED_END as usize], f.source[..DEFINED_END as usize]);

    // A sector that cannot be written: the task fails naming the disk and the offset.
    let p = target(&f, "w", &vec![0xAA; SIZE as usize]);
    let mut disk = Disk::open_write(&p, SIZE).unwrap();
    let at = f.manifest.partitions[1].chunks[1].offset();
    disk.faults.write = vec![at..at + 4096].into();
    let err = run(&f, &f.store, &p, &disk, verify_opts()).unwrap_err();
    assert!(matches!(&err, Error::Write { offset, .. } if *offset == at), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains(&p.display().to_string()) && msg.contains(&at.to_string()) && msg.contains("Input/output error"),
        "{msg}"
    );
    assert!(std::fs::read(&p).unwrap()[..MIB as usize].iter().all(|&b| b == 0), "left unbootable");
}

/// Root (a loop device); under CI it must run.
fn root_or_skip(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{test} needs root and CI=true: it must run");
    eprintln!("SKIPPED {test}: needs root (loop devices)");
    false
}

/// A loop device's page cache is its own: a change to its backing file behind its back is
/// invisible to a buffered re-read (which would "verify" the cached bytes the deploy wrote)
/// and visible to a read from the device.
#[test]
fn the_body_is_verified_from_the_device_not_from_the_page_cache() {
    if !root_or_skip("the_body_is_verified_from_the_device_not_from_the_page_cache") {
        return;
    }
    let f = fixture(6);
    let backing = target(&f, "backing", &vec![0xAA; SIZE as usize]);
    let out = std::process::Command::new("losetup").args(["-f", "--show"]).arg(&backing).output().unwrap();
    assert!(out.status.success(), "losetup: {}", String::from_utf8_lossy(&out.stderr));
    let dev = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    struct Detach(PathBuf);
    impl Drop for Detach {
        fn drop(&mut self) {
            let _ = std::process::Command::new("losetup").arg("-d").arg(&self.0).status();
        }
    }
    let _detach = Detach(dev.clone());
    let disk = Disk::open_write(&dev, SIZE).unwrap();
    assert!(disk.is_block_device);
    let mut d = Deployment::new(request(&f, &f.store, &dev, &disk), DeployOptions::default()).unwrap();
    d.write_and_verify_body().unwrap();
    // Fill the device's page cache with what was written, as a buffered verification would.
    let c = f.manifest.partitions[1].chunks[1].clone();
    let cached = read_pieces(&disk, &c.at).unwrap();
    assert_eq!(Digest::of(&cached), c.sha256);
    // The medium changes under the cache: a bit flips in the backing file.
    let flip = c.offset() + 100;
    let file = std::fs::OpenOptions::new().read(true).write(true).open(&backing).unwrap();
    let mut byte = [0u8];
    std::os::unix::fs::FileExt::read_exact_at(&file, &mut byte, flip).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, &[byte[0] ^ 1], flip).unwrap();
    file.sync_all().unwrap();
    assert_eq!(Digest::of(&read_pieces(&disk, &c.at).unwrap()), c.sha256, "the buffered read still sees the cache");
    let err = d.verify_body().unwrap_err();
    assert!(matches!(err, Error::VerifyFailed { first_offset, .. } if first_offset == c.offset()), "{err}");
}

/// A power cut during the boot-area write, as a write that never reaches sector 0: the rest of
/// the boot area is on the disk, flushed, but without its first sector nothing boots it.
#[test]
fn the_first_sector_is_written_last() {
    let f = fixture(7);
    let p = target(&f, "t", &vec![0xAA; SIZE as usize]);
    let disk = Disk::open_write(&p, SIZE).unwrap();
    let mut d = Deployment::new(request(&f, &f.store, &p, &disk), verify_opts()).unwrap();
    d.write_and_verify_body().unwrap();
    *disk.faults.write.lock().unwrap() = vec![0..512];
    let err = d.write_boot_area().unwrap_err();
    assert!(matches!(err, Error::Write { offset: 0, .. }), "{err}");
    let after = std::fs::read(&p).unwrap();
    assert!(after[..512].iter().all(|&b| b == 0), "sector 0 (MBR, boot signature) still zero");
    assert_eq!(
        after[512..MIB as usize],
        f.source[512..MIB as usize],
        "the rest of the boot area was written before it"
    );
}

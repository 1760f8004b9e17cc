#![no_main]
//! A real NTFS volume (`seeds/ntfs.img.zst`, made by `make-seeds.sh`) with the input's edits
//! applied: 5-byte records, a little-endian offset (modulo the volume) and the byte to put
//! there. Whatever the damage, mapping, the pre-flight gate and lookups never panic, and a map
//! stays inside the partition with its zeros apart from its used ranges.

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use parc_imager::fs::{self, ntfs, FsKind};

fn base() -> &'static [u8] {
    static B: OnceLock<Vec<u8>> = OnceLock::new();
    B.get_or_init(|| zstd::decode_all(&include_bytes!("../seeds/ntfs.img.zst")[..]).expect("seed"))
}

fn check(ranges: &[std::ops::Range<u64>], len: u64) {
    for w in ranges.windows(2) {
        assert!(w[0].end < w[1].start, "ranges not sorted and merged: {w:?}");
    }
    assert!(ranges.iter().all(|r| r.start < r.end && r.end <= len), "a range outside the volume");
}

fuzz_target!(|data: &[u8]| {
    let mut vol = base().to_vec();
    let len = vol.len() as u64;
    for e in data.chunks_exact(5) {
        let at = u32::from_le_bytes([e[0], e[1], e[2], e[3]]) as usize % vol.len();
        vol[at] = e[4];
    }
    let (map, _) = fs::used_map(&vol, len);
    check(&map.ranges, len);
    check(&map.zeros, len);
    assert!(fs::subtract(&map.zeros, &map.ranges) == map.zeros, "zeros overlap used ranges");
    let _ = parc_imager::preflight::check(&vol, len, 1, FsKind::Ntfs, false);
    let _ = ntfs::exists(&vol, len, &["Windows", "Setup", "State", "State.ini"]);
});

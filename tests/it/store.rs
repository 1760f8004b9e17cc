//! The image store: `parc image verify --repair` followed by a recapture.

use std::path::Path;

use serde_json::Value;

use crate::support::*;

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn chunk_path(store: &Path, d: &str) -> std::path::PathBuf {
    store.join("chunks").join(&d[..2]).join(format!("{d}.zst"))
}

#[test]
fn verify_repair_quarantines_bad_chunks_and_a_recapture_restores_the_image() {
    let dir = tempfile::tempdir().unwrap();
    let disk = build_disk(dir.path(), "v1", 21);
    let store = dir.path().join("store");
    parc_json(&["image", "capture", s(&disk.path), "--store", s(&store), "--name", "base"]);
    let bad = corrupt_root_chunk(&store, "base");
    // Repair moves the damaged file aside (a capture would trust it: it skips digests already stored).
    let out = parc_run(&["image", "verify", "--repair", "--store", s(&store), "--json"]);
    assert!(!out.status.success(), "a store that had bad chunks is reported as such");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let q = &v["repair"]["quarantined"];
    assert_eq!(q.as_array().unwrap().len(), 1, "{v:#}");
    assert_eq!(q[0]["digest"], bad.as_str(), "{v:#}");
    assert_eq!(std::fs::read_dir(store.join("quarantine")).unwrap().count(), 1, "the bad file is kept as evidence");
    let need = &v["repair"]["needs"][0];
    assert_eq!((need["image"].as_str(), need["missing_chunks"].as_u64()), (Some("base@1"), Some(1)), "{v:#}");
    let fix = need["fix"].as_str().unwrap();
    assert!(fix.contains(&format!("parc image capture {} --name base", disk.path.display())), "{fix}");
    assert!(!chunk_path(&store, &bad).exists());
    let v = parc_run(&["image", "verify", "base", "--store", s(&store)]);
    assert!(String::from_utf8_lossy(&v.stdout).contains(&format!("MISSING {bad}")));
    // Another chunk file lost its bytes (an empty file, as a crash can leave): the capture
    // stores it again by itself.
    let show = parc_json(&["image", "show", "base", "--store", s(&store)]);
    let emptied = show["manifest"]["partitions"][0]["chunks"][0]["sha256"].as_str().unwrap().to_string();
    assert_ne!(emptied, bad);
    std::fs::write(chunk_path(&store, &emptied), b"").unwrap();

    let c = parc_json(&["image", "capture", s(&disk.path), "--store", s(&store), "--name", "base"]);
    assert_eq!(c["new_chunks"], 2, "{c}");
    let v = parc_json(&["image", "verify", "--store", s(&store)]);
    assert!(v["bad"].as_array().unwrap().is_empty() && v["missing"].as_array().unwrap().is_empty(), "{v:#}");
    let target = dir.path().join("out.raw");
    parc_json(&["image", "deploy", "base", "--store", s(&store), "--to", s(&target), "--verify"]);
    check_disk(&target, &disk);
}

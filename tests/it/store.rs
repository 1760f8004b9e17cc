//! The image store under a running `parc serve`: pins that `parc image rm|gc` (another
//! process, on the same directory) respect, quarantine of a chunk an agent reports corrupt,
//! and `parc image verify --repair` followed by a recapture.

use std::path::Path;

use serde_json::{json, Value};

use crate::api::{agent_hello, appliance, capture_into, capture_small_image, install_netboot, Api};
use crate::support::*;

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// `parc image ARGS --store STORE`, expected to fail: its stderr.
fn refused(store: &Path, args: &[&str]) -> String {
    let mut a = vec!["image"];
    a.extend_from_slice(args);
    a.extend_from_slice(&["--store", s(store)]);
    let out = parc().args(&a).output().unwrap();
    assert!(!out.status.success(), "parc {a:?} should have been refused: {}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn pin_file(store: &Path, task: i64) -> std::path::PathBuf {
    store.join("pins").join(format!("task-{task}.json"))
}

/// Waits (at most 15 s: the server reconciles pins every 5 s) until `cond` holds.
fn eventually(what: &str, cond: impl Fn() -> bool) {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while !cond() {
        assert!(std::time::Instant::now() < until, "timed out waiting until {what}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

#[test]
fn rm_refuses_what_departments_name_and_tasks_deploy_and_gc_keeps_what_a_task_fetches() {
    let a = appliance("127.0.0.1:0");
    let store = a.data.join("store");
    // Every example department names debian-poste.
    let err = refused(&store, &["rm", "debian-poste"]);
    assert!(err.contains("department radiologie") && err.contains("names \"debian-poste\""), "{err}");
    assert!(err.contains("--force"), "the refusal says how to override it: {err}");

    // A task queued now deploys debian-poste@1; then @2 is captured, so the departments move on
    // to it while the task still needs @1.
    let mac = "52:54:00:5e:00:01";
    let (st, r) = a.admin.post("/api/v1/machines", json!({ "mac": mac, "department": "radiologie", "install": true }));
    assert_eq!(st, 201, "{r}");
    let task = r["task"]["id"].as_i64().unwrap();
    let pin = std::fs::read_to_string(pin_file(&store, task)).expect("the queued task is pinned in the store");
    assert!(pin.contains(&a.image_digest), "{pin}");
    capture_small_image(a.dir.path(), &a.data, "debian-poste", 2);
    let err = refused(&store, &["rm", "debian-poste@1"]);
    assert!(err.contains(&format!("task #{task} (install of RAD-0001) deploys debian-poste@1")), "{err}");

    // A crash (SIGKILL) that lost the pin, or left one of a task long gone: the next start
    // rebuilds them from the database.
    let crate::api::Appliance { dir, data, srv, admin, image_digest } = a;
    drop(srv);
    std::fs::remove_file(pin_file(&store, task)).unwrap();
    std::fs::write(pin_file(&store, 999), std::fs::read(store.join("pins/departments.json")).unwrap()).unwrap();
    let srv = start(&data, "127.0.0.1:0");
    let admin = Api::new(&srv.url, admin.token.as_deref());
    assert!(pin_file(&store, task).exists() && !pin_file(&store, 999).exists());

    // --force removes the name; the manifest stays for the task and gc keeps its chunks.
    let r = parc_json(&["image", "rm", "debian-poste@1", "--force", "--store", s(&store)]);
    assert_eq!(r["removed"], json!(["debian-poste@1"]), "{r}");
    assert!(r["kept"][0].as_str().unwrap().starts_with(&image_digest), "{r}");
    assert!(r["overridden"][0].as_str().unwrap().contains(&format!("task #{task}")), "{r}");
    let gc = parc_json(&["image", "gc", "--store", s(&store)]);
    assert_eq!((gc["manifests_pinned"].as_u64(), gc["chunks_removed"].as_u64()), (Some(1), Some(0)), "{gc}");
    // What the task's agent does: fetch the manifest and every chunk of its digest over HTTP.
    let target = data.join("deployed.raw");
    let d = parc_json_as(
        admin.token.as_deref().unwrap(),
        &["image", "deploy", &image_digest, "--store", &srv.url, "--to", s(&target)],
    );
    assert_eq!(d["digest"], image_digest.as_str(), "{d}");
    assert_eq!(sha256_file(&target), sha256_file(&dir.path().join("debian-poste-1.raw")));

    // The task ends: its pin goes at once, and gc may now take the manifest and its chunks.
    let (st, r) = admin.post(&format!("/api/v1/tasks/{task}/cancel"), json!({}));
    assert_eq!(st, 200, "{r}");
    assert!(!pin_file(&store, task).exists());
    let gc = parc_json(&["image", "gc", "--store", s(&store)]);
    assert_eq!(gc["manifests_removed"], 1, "{gc}");
    assert!(gc["chunks_removed"].as_u64().unwrap() > 0, "{gc}");
    assert!(!store.join("manifests").join(format!("{image_digest}.json")).exists());
}

#[test]
fn a_task_that_ends_without_the_server_noticing_loses_its_pin_by_reconcile() {
    let a = appliance("127.0.0.1:0");
    let store = a.data.join("store");
    install_netboot(&a);
    let mac = "52:54:00:5e:00:02";
    let (st, r) = a.admin.post("/api/v1/machines", json!({ "mac": mac, "department": "urgences", "install": true }));
    assert_eq!(st, 201, "{r}");
    let task = r["task"]["id"].as_i64().unwrap();
    let (agent, _) = agent_hello(&a.admin, mac, json!({ "mac": mac }));
    assert!(pin_file(&store, task).exists());
    let (st, r) = agent.post("/api/v1/agent/done", json!({ "verified": true, "image_digest": a.image_digest }));
    assert_eq!(st, 200, "{r}");
    eventually("the done task's pin is gone", || !pin_file(&store, task).exists());

    // Through the API: the same refusal, journaled with who asked; `force` overrides it.
    let (st, e) = a.admin.post("/api/v1/images/debian-poste/remove", json!({ "reason": "obsolete" }));
    assert_eq!(st, 409, "{e}");
    assert!(e["error"].as_str().unwrap().contains("department urgences") && e.to_string().contains("force"), "{e}");
    let (st, r) = a.admin.post("/api/v1/images/debian-poste/remove", json!({ "force": true, "reason": "obsolete" }));
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["removed"], json!(["debian-poste@1"]), "{r}");
    assert!(r["kept"][0].as_str().unwrap().contains("department urgences"), "until the pins follow: {r}");
    let ev = events(&a.admin, "image.rm");
    assert_eq!(ev[0]["actor"], "admin", "{ev:?}");
    let msg = ev[0]["message"].as_str().unwrap();
    assert!(msg.contains("removed by admin (obsolete)") && msg.contains("forced past: department"), "{msg}");
    assert_eq!(events(&a.admin, "image.rm.refused").len(), 1);
    // The departments' pins follow within a reconcile (their image no longer exists): gc may
    // then take the manifest.
    eventually("gc may remove the unnamed manifest", || {
        parc_json(&["image", "gc", "--dry-run", "--store", s(&store)])["manifests_removed"] == 1
    });
}

/// Digests of the chunk files in `store`, sorted.
fn chunk_files(store: &Path) -> Vec<String> {
    let mut out: Vec<String> = walk(&store.join("chunks"))
        .iter()
        .filter_map(|p| p.file_name()?.to_str()?.strip_suffix(".zst").map(str::to_string))
        .collect();
    out.sort();
    out
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.path().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

fn chunk_path(store: &Path, d: &str) -> std::path::PathBuf {
    store.join("chunks").join(&d[..2]).join(format!("{d}.zst"))
}

fn events(api: &Api, kind: &str) -> Vec<Value> {
    let (st, ev) = api.get(&format!("/api/v1/events?kind={kind}"));
    assert_eq!(st, 200, "{ev}");
    ev.as_array().unwrap().clone()
}

#[test]
fn a_chunk_an_agent_reports_corrupt_is_rehashed_and_quarantined_then_a_recapture_restores_it() {
    let a = appliance("127.0.0.1:0");
    let store = a.data.join("store");
    install_netboot(&a);
    let mac = "52:54:00:5e:00:03";
    let (st, r) = a.admin.post("/api/v1/machines", json!({ "mac": mac, "department": "pharmacie", "install": true }));
    assert_eq!(st, 201, "{r}");
    let chunks = chunk_files(&store);
    assert!(chunks.len() >= 2, "{chunks:?}");

    // An agent blames a chunk that is intact in the store: journaled, nothing moved.
    let (agent, _) = agent_hello(&a.admin, mac, json!({ "mac": mac }));
    let reason = format!("chunk {} is corrupt: content hashes to 00…", chunks[0]);
    let (st, r) = agent.post("/api/v1/agent/failed", json!({ "reason": reason, "chunk": chunks[0] }));
    assert_eq!(st, 200, "{r}");
    let ev = events(&a.admin, "chunk.checked");
    assert!(ev[0]["message"].as_str().unwrap().contains("intact"), "{ev:?}");
    assert!(chunk_path(&store, &chunks[0]).exists());

    // Now one really is damaged in the store: the server re-hashes it and moves it aside.
    let bad = &chunks[1];
    let mut bytes = std::fs::read(chunk_path(&store, bad)).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0x40;
    std::fs::write(chunk_path(&store, bad), &bytes).unwrap();
    let (st, r) = a.admin.post(&format!("/api/v1/machines/{mac}/reimage"), json!({}));
    assert_eq!(st, 200, "{r}");
    let (_, m) = a.admin.get(&format!("/api/v1/machines/{mac}"));
    let task = m["task"]["id"].as_i64().unwrap();
    let (agent, _) = agent_hello(&a.admin, mac, json!({ "mac": mac }));
    let (st, r) = agent.post("/api/v1/agent/failed", json!({ "reason": "chunk corrupt", "chunk": bad }));
    assert_eq!(st, 200, "{r}");
    let ev = events(&a.admin, "chunk.quarantined");
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(ev[0]["task_id"], task, "{ev:?}");
    assert_eq!(ev[0]["data"]["image_digest"], a.image_digest.as_str(), "{ev:?}");
    assert!(ev[0]["message"].as_str().unwrap().contains(bad), "{ev:?}");
    assert!(!chunk_path(&store, bad).exists());
    let evidence = walk(&store.join("quarantine"));
    assert_eq!(evidence.len(), 1, "{evidence:?}");
    assert_eq!(std::fs::read(&evidence[0]).unwrap(), bytes, "the damaged file is kept as it was");
    let v = parc_run(&["image", "verify", "--store", s(&store)]);
    assert!(String::from_utf8_lossy(&v.stdout).contains(&format!("MISSING {bad}")), "{v:?}");

    // Capturing the same disk again stores the chunk again.
    let c = capture_into(&a.data, "debian-poste", &a.dir.path().join("debian-poste-1.raw"));
    assert_eq!(c["digest"], a.image_digest.as_str());
    assert_eq!(c["new_chunks"], 1, "{c}");
    let v = parc_json(&["image", "verify", "--store", s(&store)]);
    assert!(v["bad"].as_array().unwrap().is_empty() && v["missing"].as_array().unwrap().is_empty(), "{v}");
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

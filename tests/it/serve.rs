//! `parc serve` and deploys over HTTP: cache headers, ranges, a server restarted mid-deploy,
//! a corrupt chunk served.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use crate::support::*;

#[test]
fn deploy_over_http_with_cacheable_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let disk = build_disk(dir.path(), "v1", 21);
    let data = dir.path().join("data");
    let c = parc_json(&[
        "image",
        "capture",
        disk.path.to_str().unwrap(),
        "--store",
        data.join("store").to_str().unwrap(),
        "--name",
        "base",
    ]);
    let mut srv = start(&data, "127.0.0.1:0");
    let token = srv.admin_token();
    let target = dir.path().join("out.raw");
    // Without a token the image is not readable over HTTP; with one it deploys.
    let out = parc_run(&["image", "deploy", "base", "--store", &srv.url, "--to", target.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"), "{}", String::from_utf8_lossy(&out.stderr));
    let d = parc_json_as(
        &token,
        &["image", "deploy", "base", "--store", &srv.url, "--to", target.to_str().unwrap(), "--verify"],
    );
    assert_eq!(d["digest"], c["digest"]);
    assert!(d["bytes_fetched"].as_u64().unwrap() > 0);
    check_disk(&target, &disk);

    // What an HTTP cache in front of a remote site sees, with curl.
    let show = parc_json(&["image", "show", "base", "--store", data.join("store").to_str().unwrap()]);
    let chunk = show["manifest"]["partitions"][1]["chunks"][0]["sha256"].as_str().unwrap().to_string();
    let head = sh(&format!("curl -sS -I {}/chunks/{chunk}", srv.url)).to_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains(&format!("etag: \"{chunk}\"")), "{head}");
    assert!(head.contains("cache-control: public, max-age=31536000, immutable"), "{head}");
    assert!(head.contains("accept-ranges: bytes"), "{head}");
    let full = sh(&format!("curl -sS {}/chunks/{chunk} | sha256sum", srv.url));
    let file = sha256_file(&data.join("store/chunks").join(&chunk[..2]).join(format!("{chunk}.zst")));
    assert!(full.starts_with(&file));
    let part =
        sh(&format!("curl -sS -o /dev/null -w '%{{http_code}} %{{size_download}}' -r 0-99 {}/chunks/{chunk}", srv.url));
    assert_eq!(part, "206 100");
    let cond = sh(&format!(
        "curl -sS -o /dev/null -w '%{{http_code}}' -H 'If-None-Match: \"{chunk}\"' {}/chunks/{chunk}",
        srv.url
    ));
    assert_eq!(cond, "304");
    let missing = sh(&format!("curl -sS -o /dev/null -w '%{{http_code}}' {}/chunks/{}", srv.url, "0".repeat(64)));
    assert_eq!(missing, "404");
    let bad = sh(&format!("curl -sS -o /dev/null -w '%{{http_code}}' {}/chunks/..%2f..%2fetc%2fpasswd", srv.url));
    assert_eq!(bad, "400");
}

/// The server is killed while a deploy fetches and comes back on the same port: the deploy
/// retries, completes and verifies, and does not fetch again what it had written.
#[test]
fn deploy_survives_a_server_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let disk = dir.path().join("big.raw");
    sh(&format!("truncate -s {} {d} && sgdisk -Z -n1:2048:0 -t1:8300 {d} >/dev/null", 420 * MIB, d = disk.display()));
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().write(true).open(&disk).unwrap();
        for i in 0..400u64 {
            f.write_all_at(&random_bytes(3000 + i, MIB as usize), MIB + i * MIB).unwrap();
        }
    }
    parc_json(&[
        "image",
        "capture",
        disk.to_str().unwrap(),
        "--store",
        data.join("store").to_str().unwrap(),
        "--name",
        "big",
        "--level",
        "1",
    ]);
    let addr = format!("127.0.0.1:{}", free_port());
    let mut srv = start(&data, &addr);
    let token = srv.admin_token();
    let target = dir.path().join("t.raw");
    let mut deploy = parc_as(&token)
        .args(["image", "deploy", "big", "--store", &srv.url, "--to", target.to_str().unwrap(), "--verify", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the write phase, then kill the server hard and restart it a second later.
    let stderr = deploy.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    loop {
        let line = rx.recv_timeout(Duration::from_secs(60)).expect("deploy never started writing");
        if line.contains("deploy: writing") {
            break;
        }
    }
    drop(srv);
    std::thread::sleep(Duration::from_millis(1500));
    let _srv2 = start(&data, &addr);
    let out = deploy.wait_with_output().unwrap();
    let log: Vec<String> = rx.try_iter().collect();
    assert!(out.status.success(), "deploy failed after the restart: {}", log.join("\n"));
    assert!(log.iter().any(|l| l.contains("retrying")), "the deploy never saw the server go away: {log:?}");
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["verified_after_write"], true);
    assert_eq!(sha256_range(&target, MIB, 400 * MIB), sha256_range(&disk, MIB, 400 * MIB));
    // A rerun finds everything in place: nothing is fetched twice.
    let again =
        parc_json_as(&token, &["image", "deploy", "big", "--store", &_srv2.url, "--to", target.to_str().unwrap()]);
    assert_eq!(again["bytes_fetched"], 0);
}

#[test]
fn corrupt_chunk_served_over_http_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let disk = build_disk(dir.path(), "v1", 22);
    let data = dir.path().join("data");
    let store = data.join("store");
    parc_json(&["image", "capture", disk.path.to_str().unwrap(), "--store", store.to_str().unwrap(), "--name", "base"]);
    let chunk = corrupt_root_chunk(&store, "base");
    let mut srv = start(&data, "127.0.0.1:0");
    let token = srv.admin_token();
    let target = dir.path().join("out.raw");
    let out = parc_run_as(&token, &["image", "deploy", "base", "--store", &srv.url, "--to", target.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&chunk) && err.contains("corrupt"), "{err}");
    let head = std::fs::read(&target).unwrap();
    assert!(head[..MIB as usize].iter().all(|&b| b == 0), "a failed deploy must leave the boot area zeroed");
}

/// First start writes parc.toml with commented defaults; a bad setting stops the server with
/// the file, line and reason; a privileged port without the right says what to do.
#[test]
fn first_start_writes_settings_and_bad_settings_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let srv = start(&data, "127.0.0.1:0");
    drop(srv);
    let toml = std::fs::read_to_string(data.join("parc.toml")).unwrap();
    assert!(toml.contains("# mode = \"proxy\"") && toml.contains("# listen = \"0.0.0.0:8080\""), "{toml}");
    assert!(data.join("store/chunks").is_dir() && data.join("netboot").is_dir());
    std::fs::write(data.join("parc.toml"), "[pxe]\nmode = \"multicast\"\n").unwrap();
    let out = parc_run(&["serve", "--data", data.to_str().unwrap(), "--http", "127.0.0.1:0"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("parc.toml is not valid") && err.contains("line 2") && err.contains("multicast"), "{err}");
    std::fs::write(data.join("parc.toml"), "[pxe]\ninterface = \"eth0\"\nmode = \"dhcp\"\n").unwrap();
    let out = parc_run(&["serve", "--data", data.to_str().unwrap(), "--http", "127.0.0.1:0", "--pxe-interface", "lo"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--pxe-mode dhcp needs --dhcp-range"));
}

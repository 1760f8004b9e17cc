//! The attacks of issue #12 replayed against a real `parc serve` on loopback, each asserted to
//! fail, beside the legitimate path they must leave working. Loopback only: 127.0.0.1 is the
//! machine (a technician's netboot-grant names it), 127.0.0.2 is someone else on the network.

use serde_json::{json, Value};

use crate::api::{agent_hello, appliance, boot_script, grant, install_netboot, token_of, Api, Appliance};
use crate::support::*;

fn events(a: &Appliance, kind: &str) -> Vec<Value> {
    let (s, e) = a.admin.get(&format!("/api/v1/events?kind={kind}"));
    assert_eq!(s, 200, "{e}");
    e.as_array().unwrap().clone()
}

/// `curl` from another loopback address: status and body.
fn curl_from(source: &str, args: &str) -> (u16, String) {
    let out = sh(&format!("curl -sS --interface {source} -w '\\n%{{http_code}}' {args}"));
    let (body, status) = out.rsplit_once('\n').unwrap();
    (status.trim().parse().unwrap(), body.to_string())
}

fn queue_install(a: &Appliance, mac: &str) -> i64 {
    let (s, r) = a.admin.post("/api/v1/machines", json!({ "mac": mac, "department": "radiologie", "install": true }));
    assert_eq!(s, 201, "{r}");
    r["task"]["id"].as_i64().unwrap()
}

/// Attack 1: naming a MAC gave a task token. Now the boot script carries a credential only for
/// a machine parc saw booting from the asking address; the credential works once, from that
/// address, only at hello; a later boot script never cuts off the running agent.
#[test]
fn naming_a_mac_gets_no_credential_and_a_running_agent_is_never_cut_off() {
    let a = appliance("127.0.0.1:0");
    install_netboot(&a);
    let mac = "52:54:00:5c:00:01";
    let task = queue_install(&a, mac);

    // Nobody saw this machine boot: no credential, and the refusal is journaled (once a minute).
    for _ in 0..5 {
        let script = boot_script(&a.srv.url, mac);
        assert!(!script.contains("parc.token") && !script.contains("kernel"), "{script}");
        assert!(script.contains("did not see this machine boot"), "{script}");
    }
    let refused = events(&a, "boot.refused");
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(refused[0]["message"].as_str().unwrap().contains("127.0.0.1"), "{refused:?}");

    // The technician allows the machine to boot from its address; someone else asking for the
    // same MAC from another address still gets nothing.
    grant(&a.admin, mac);
    let (s, script) = curl_from("127.0.0.2", &format!("'{}/boot.ipxe?mac={mac}'", a.srv.url));
    assert_eq!(s, 200);
    assert!(!script.contains("parc.token"), "{script}");
    let credential = token_of(&boot_script(&a.srv.url, mac));
    assert!(credential.starts_with("pb_"), "{credential}");
    let issued = events(&a, "boot.credential");
    assert_eq!(issued.len(), 1, "{issued:?}");
    assert_eq!(issued[0]["data"]["evidence"], "network boot allowed by a technician", "{issued:?}");

    // The boot credential is no agent session: done and files refuse it.
    let with_credential = Api::new(&a.srv.url, Some(&credential));
    let done = json!({ "verified": true, "image_digest": a.image_digest });
    assert_eq!(with_credential.post("/api/v1/agent/done", done.clone()).0, 401);
    assert_eq!(with_credential.get("/api/v1/agent/files").0, 401);
    // Presented from another address: refused (and used up: it was single use).
    let hello_body = format!("-H 'Authorization: Bearer {credential}' -H 'Content-Type: application/json' -d '{{\"mac\":\"{mac}\"}}' {}/api/v1/agent/hello", a.srv.url);
    let (s, e) = curl_from("127.0.0.2", &hello_body);
    assert_eq!(s, 401, "{e}");
    let (s, _) = with_credential.post("/api/v1/agent/hello", json!({ "mac": mac }));
    assert_eq!(s, 401, "a boot credential works once");

    // The real agent boots again, says hello, and works.
    let (agent, hello) = agent_hello(&a.admin, mac, json!({ "mac": mac }));
    assert_eq!(hello["task"]["id"].as_i64(), Some(task), "{hello}");
    assert!(hello["session_token"].as_str().unwrap().starts_with("pa_"), "{hello}");
    let progress = json!({ "phase": "write", "bytes_done": 1 << 20, "bytes_total": 6 << 20 });
    assert_eq!(agent.post("/api/v1/agent/progress", progress.clone()).0, 200);
    // Someone fetches the machine's boot script again (even with the grant still good): the
    // running agent's session goes on working.
    let again = token_of(&boot_script(&a.srv.url, mac));
    assert_ne!(again, credential);
    let (s, p) = agent.post("/api/v1/agent/progress", progress);
    assert_eq!((s, p["continue"].clone()), (200, json!(true)), "{p}");
    // A hello with the new credential from the right address would start a new session: that
    // is a machine parc saw booting, which supersedes the old agent (a power cut and reboot).
    let (s, _) = agent.post("/api/v1/agent/done", done);
    assert_eq!(s, 200);
    // The task is over: its session ends with it.
    assert_eq!(agent.get("/api/v1/agent/files").0, 409);
    assert_eq!(agent.get("/api/v1/agent/task").0, 409);
}

/// Attack 1 (rate): a machine that keeps asking gets at most 10 credentials in 10 minutes.
#[test]
fn boot_credentials_are_rate_limited_per_machine() {
    let a = appliance("127.0.0.1:0");
    install_netboot(&a);
    let mac = "52:54:00:5c:00:02";
    queue_install(&a, mac);
    grant(&a.admin, mac);
    let scripts: Vec<String> = (0..12).map(|_| boot_script(&a.srv.url, mac)).collect();
    let with_token = scripts.iter().filter(|s| s.contains("parc.token=")).count();
    assert_eq!(with_token, 10, "{:?}", scripts.last());
    assert!(scripts[11].contains("too many boot credentials"), "{}", scripts[11]);
    assert_eq!(events(&a, "boot.credential").len(), 10);
}

/// Attack 2: images were readable by anyone. Listing, names and manifests need a token; an
/// agent's session reaches its own image only; chunks stay open to the cache path.
#[test]
fn images_and_manifests_need_a_credential_and_chunks_stay_cacheable() {
    let a = appliance("127.0.0.1:0");
    install_netboot(&a);
    let other = crate::api::capture_small_image(a.dir.path(), &a.data, "secret-image", 7);
    let anon = Api::new(&a.srv.url, None);
    for path in
        ["/api/v1/images".to_string(), "/api/v1/images/debian-poste".into(), format!("/manifests/{}", a.image_digest)]
    {
        let (s, e) = anon.get(&path);
        assert_eq!(s, 401, "{path}: {e}");
    }
    let (s, _) = anon.post("/api/v1/chunks", json!({ "digests": ["0".repeat(64)] }));
    assert_eq!(s, 401);
    // A technician's token reads everything.
    assert_eq!(a.admin.get("/api/v1/images").0, 200);
    let (s, m) = a.admin.get(&format!("/manifests/{other}"));
    assert_eq!(s, 200, "{m}");
    let chunk = m["partitions"][0]["chunks"][0]["sha256"]
        .as_str()
        .or_else(|| m["regions"][0]["chunks"][0]["sha256"].as_str())
        .map(str::to_string);
    // The manifest may be kept by the browser, never by a shared cache.
    let head = sh(&format!(
        "curl -sS -I -H 'Authorization: Bearer {}' {}/manifests/{}",
        a.admin.token.as_deref().unwrap(),
        a.srv.url,
        a.image_digest
    ))
    .to_lowercase();
    assert!(head.contains("cache-control: private"), "{head}");

    // An agent's session: its own image, nothing else.
    let mac = "52:54:00:5c:00:03";
    queue_install(&a, mac);
    let (agent, _) = agent_hello(&a.admin, mac, json!({ "mac": mac }));
    assert_eq!(agent.get(&format!("/manifests/{}", a.image_digest)).0, 200);
    assert_eq!(agent.get("/api/v1/images/debian-poste").0, 200);
    assert_eq!(agent.get(&format!("/manifests/{other}")).0, 403);
    assert_eq!(agent.get("/api/v1/images/secret-image").0, 403);
    assert_eq!(agent.get("/api/v1/images").0, 401);
    // Chunks: no credential, as a site's HTTP cache asks.
    if let Some(chunk) = chunk {
        let code = sh(&format!("curl -sS -o /dev/null -w '%{{http_code}}' {}/chunks/{chunk}", a.srv.url));
        assert_eq!(code, "200");
    }
}

/// Attack 3: the task token outlived its task and first-boot could be replayed.
#[test]
fn the_first_boot_credential_works_once_and_only_after_success() {
    let a = appliance("127.0.0.1:0");
    install_netboot(&a);
    let mac = "52:54:00:5c:00:04";
    queue_install(&a, mac);
    let (agent, hello) = agent_hello(&a.admin, mac, json!({ "mac": mac }));
    let first_boot = Api::new(&a.srv.url, hello["first_boot_token"].as_str());
    // Before the deployment is done it makes nothing ready (and is used up).
    assert_eq!(first_boot.post("/api/v1/agent/first-boot", json!({})).0, 409);
    let (_, m) = a.admin.get(&format!("/api/v1/machines/{mac}"));
    assert_ne!(m["status"], "ready");
    assert_eq!(first_boot.post("/api/v1/agent/first-boot", json!({})).0, 401);
    // The agent's session is not a first-boot credential either.
    assert_eq!(agent.post("/api/v1/agent/first-boot", json!({})).0, 401);
}

/// Attack 6: an unauthenticated hello overwrote a listed machine's hardware, told its hostname
/// and department, and took megabyte fields.
#[test]
fn a_hello_without_credential_changes_and_tells_nothing_and_fields_are_bounded() {
    let a = appliance("127.0.0.1:0");
    install_netboot(&a);
    let mac = "52:54:00:5c:00:05";
    queue_install(&a, mac);
    let (_, hello) =
        agent_hello(&a.admin, mac, json!({ "mac": mac, "model": "HP EliteDesk 800 G6", "serial": "CZC1" }));
    assert!(hello["hostname"].is_string() && hello["department"] == "radiologie", "{hello}");
    let anon = Api::new(&a.srv.url, None);
    let (s, h) = anon.post("/api/v1/agent/hello", json!({ "mac": mac, "model": "forged", "serial": "X" }));
    assert_eq!(s, 200, "{h}");
    assert_eq!((&h["known"], &h["hostname"], &h["department"]), (&json!(false), &Value::Null, &Value::Null), "{h}");
    let (_, m) = a.admin.get(&format!("/api/v1/machines/{mac}"));
    assert_eq!((m["model"].as_str(), m["serial"].as_str()), (Some("HP EliteDesk 800 G6"), Some("CZC1")), "{m}");
    // Bounds: a long field is a 400 naming it, a large body a 413.
    let (s, e) = anon.post("/api/v1/agent/hello", json!({ "mac": "52:54:00:5c:00:06", "model": "x".repeat(300) }));
    assert_eq!(s, 400, "{e}");
    assert!(e["error"].as_str().unwrap().contains("model"), "{e}");
    let disks: Vec<Value> = (0..4000).map(|i| json!({ "name": format!("sd{i}"), "size_bytes": 1 })).collect();
    let (s, _) = anon.post("/api/v1/agent/hello", json!({ "mac": "52:54:00:5c:00:06", "disks": disks }));
    assert_eq!(s, 413);
    // A flood from one address is cut off; the journal and the database stay small.
    let codes: Vec<u16> = (0..40)
        .map(|i| anon.post("/api/v1/agent/hello", json!({ "mac": format!("52:54:00:5d:00:{i:02x}") })).0)
        .collect();
    assert!(codes.contains(&429), "{codes:?}");
    assert!(codes.iter().filter(|c| **c == 200).count() <= 30, "{codes:?}");
}

/// Attack 10: a newline in a reason forged a line (a trailer) in the commit message.
#[test]
fn a_reason_stays_one_line_in_the_commit_message() {
    let a = appliance("127.0.0.1:0");
    let reason = "routine\nParc-Intent: forged\n\nBy: someone else";
    let (s, r) = a
        .admin
        .post("/api/v1/machines", json!({ "mac": "52:54:00:5c:00:07", "department": "radiologie", "reason": reason }));
    assert_eq!(s, 201, "{r}");
    let msg = sh(&format!("git -C {} log -1 --format=%B main", a.data.join("profiles").display()));
    assert!(msg.contains("Reason: routine Parc-Intent: forged By: someone else\n"), "{msg}");
    assert_eq!(msg.lines().filter(|l| l.starts_with("Parc-Intent:")).count(), 1, "{msg}");
}

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
    // (curl: the server answers before the body is all sent and closes; curl still reads it.)
    let disks: Vec<Value> = (0..4000).map(|i| json!({ "name": format!("sd{i}"), "size_bytes": 1 })).collect();
    let big = a.dir.path().join("big-hello.json");
    std::fs::write(&big, json!({ "mac": "52:54:00:5c:00:06", "disks": disks }).to_string()).unwrap();
    let out = std::process::Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "-H", "Content-Type: application/json"])
        .arg("--data-binary")
        .arg(format!("@{}", big.display()))
        .arg(format!("{}/api/v1/agent/hello", a.srv.url))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "413", "{}", String::from_utf8_lossy(&out.stderr));
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

/// Attack 4: 1,100 idle connections under a 1,024-file limit made every request time out.
/// Now 10,000 idle connections from one address are mostly closed at once, and a boot script,
/// a chunk and a console page still come from another address; a client that never finishes
/// its request headers is cut off.
#[test]
fn ten_thousand_idle_connections_from_one_address_stop_nothing() {
    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpStream};
    raise_own_file_limit(30_000);
    let a = appliance("127.0.0.1:0");
    install_netboot(&a);
    let server: SocketAddr = a.srv.url.trim_start_matches("http://").parse().unwrap();
    let connect_from = |source: [u8; 4]| {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        s.bind(&SocketAddr::from((source, 0)).into()).unwrap();
        s.connect_timeout(&server.into(), std::time::Duration::from_secs(5)).map(|_| TcpStream::from(s))
    };
    // Headers never finished: closed by the server after its header timeout.
    let mut slow = connect_from([127, 0, 0, 3]).unwrap();
    slow.write_all(b"GET /boot.ipxe HTTP/1.1\r\nHost: x\r\n").unwrap();
    let held: Vec<TcpStream> = (0..10_000).filter_map(|_| connect_from([127, 0, 0, 2]).ok()).collect();
    assert!(held.len() >= 9_000, "only {} connections could be opened", held.len());

    // Everyone else is served meanwhile (curl's own bound is a failure bound, not a measure).
    let (shown, _) = curl_from("127.0.0.1", &format!("--max-time 20 '{}/boot.ipxe?mac=52:54:00:5c:00:09'", a.srv.url));
    assert_eq!(shown, 200);
    let (s, m) = a.admin.get(&format!("/manifests/{}", a.image_digest));
    assert_eq!(s, 200, "{m}");
    let chunk = m["regions"][0]["chunks"][0]["sha256"]
        .as_str()
        .or_else(|| m["partitions"][0]["chunks"][0]["sha256"].as_str())
        .unwrap()
        .to_string();
    let (s, _) = curl_from("127.0.0.1", &format!("--max-time 20 -o /dev/null {}/chunks/{chunk}", a.srv.url));
    assert_eq!(s, 200);
    let (s, _) = curl_from("127.0.0.1", &format!("--max-time 20 -o /dev/null {}/login", a.srv.url));
    assert_eq!(s, 200);

    // The server closed what it did not admit: reading gives end of file at once.
    let mut closed = 0;
    for mut c in held {
        c.set_read_timeout(Some(std::time::Duration::from_millis(1))).unwrap();
        if matches!(c.read(&mut [0u8; 1]), Ok(0)) {
            closed += 1;
        }
    }
    assert!(closed >= 9_000 - 64, "only {closed} of the idle connections were closed");
    slow.set_read_timeout(Some(std::time::Duration::from_secs(30))).unwrap();
    let mut rest = Vec::new();
    assert!(slow.read_to_end(&mut rest).is_ok(), "a request without the end of its headers was kept open for 30 s");
    assert!(!String::from_utf8_lossy(&rest).contains("200 OK"), "{}", String::from_utf8_lossy(&rest));
}

/// Raises this process's open-file limit to `n` (the hard limit too, as root; `parc serve`
/// started afterwards inherits it), or as far as allowed.
fn raise_own_file_limit(n: u64) {
    let mut l = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit with a valid rlimit struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut l);
        let wanted = libc::rlimit { rlim_cur: n.max(l.rlim_cur), rlim_max: n.max(l.rlim_max) };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) != 0 {
            l.rlim_cur = l.rlim_max.min(n.max(l.rlim_cur));
            libc::setrlimit(libc::RLIMIT_NOFILE, &l);
        }
    }
}

/// `curl` a JSON POST with Basic credentials from `source`, over HTTPS (verified against the
/// appliance's own CA): status and body.
fn basic_post(a: &Appliance, source: &str, path: &str, login: &str, password: &str, body: &Value) -> (u16, String) {
    curl_from(
        source,
        &format!(
            "--cacert {} -u '{login}:{password}' -H 'Content-Type: application/json' -d '{body}' {}{path}",
            a.data.join("tls/ca.pem").display(),
            a.srv.https_url.as_deref().unwrap()
        ),
    )
}

/// Attacks 5 and 8: Basic worked everywhere, unthrottled; a third party locked users out; a
/// token made tokens; accounts and tokens could not be ended.
#[test]
fn logins_tokens_and_accounts() {
    let a = appliance("127.0.0.1:0");
    let (s, u) =
        a.admin.post("/api/v1/users", json!({ "login": "tech1", "name": "Technicien Un", "role": "technician" }));
    assert_eq!(s, 201, "{u}");
    let one_time = u["password"].as_str().unwrap().to_string();
    // Basic is no API credential.
    let (s, e) = curl_from("127.0.0.1", &format!("-u 'tech1:{one_time}' {}/api/v1/machines", a.srv.url));
    assert_eq!(s, 401, "{e}");
    // A one-time password makes no token; `parc login` changes it, then saves a token.
    let (s, e) = basic_post(&a, "127.0.0.1", "/api/v1/tokens", "tech1", &one_time, &json!({ "name": "x" }));
    assert_eq!(s, 403, "{e}");
    let config = a.dir.path().join("cli.toml");
    let out = parc()
        .args(["login", "--server", &a.srv.url, "--user", "tech1"])
        .env("PARC_PASSWORD", &one_time)
        .env("PARC_NEW_PASSWORD", "tech1-chosen-password")
        .env("PARC_CONFIG", &config)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let saved = std::fs::read_to_string(&config).unwrap();
    let token = saved.split("token = \"").nth(1).unwrap().split('"').next().unwrap().to_string();
    let tech = Api::new(&a.srv.url, Some(&token));
    assert_eq!(tech.get("/api/v1/machines").0, 200);
    // A token cannot make tokens (the password is needed).
    assert_eq!(tech.post("/api/v1/tokens", json!({ "name": "more" })).0, 401);

    // Someone guesses tech1's password from 127.0.0.2: they are slowed down, tech1 is not.
    let guesses: Vec<u16> = (0..30)
        .map(|i| {
            basic_post(&a, "127.0.0.2", "/api/v1/tokens", "tech1", &format!("guess-{i}"), &json!({ "name": "g" })).0
        })
        .collect();
    assert!(guesses.iter().all(|s| *s == 401 || *s == 429), "{guesses:?}");
    assert!(guesses.contains(&429), "the guesser was never throttled: {guesses:?}");
    let (s, _) =
        basic_post(&a, "127.0.0.2", "/api/v1/tokens", "tech1", "tech1-chosen-password", &json!({ "name": "g" }));
    assert_eq!(s, 429, "the right password from the guessing address while throttled");
    let (s, t) =
        basic_post(&a, "127.0.0.1", "/api/v1/tokens", "tech1", "tech1-chosen-password", &json!({ "name": "desk" }));
    assert_eq!(s, 201, "tech1 at their own desk was locked out: {t}");
    let throttled = a.admin.get("/api/v1/events?kind=login.throttled").1;
    assert!(!throttled.as_array().unwrap().is_empty(), "{throttled}");

    // Tokens: listed without secrets, revoked, ended by a reset; expiry is bounded.
    let (s, list) = tech.get("/api/v1/tokens");
    assert_eq!(s, 200, "{list}");
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2, "{list:?}");
    assert!(list.iter().all(|t| t.get("token").is_none() && t["expires_at"].is_i64()), "{list:?}");
    let desk: Value = serde_json::from_str(&t).unwrap();
    let (s, r) = tech.post(&format!("/api/v1/tokens/{}/revoke", desk["id"]), json!({}));
    assert_eq!(s, 200, "{r}");
    assert_eq!(Api::new(&a.srv.url, desk["token"].as_str()).get("/api/v1/machines").0, 401);
    let (s, e) = basic_post(
        &a,
        "127.0.0.1",
        "/api/v1/tokens",
        "tech1",
        "tech1-chosen-password",
        &json!({ "name": "x", "expires_in_days": 4000 }),
    );
    assert_eq!(s, 400, "{e}");
    // An admin demotes, disables and re-enables; disabling ends the tokens.
    let (s, u) = a.admin.patch_json("/api/v1/users/tech1", json!({ "role": "readonly" }));
    assert_eq!((s, u["role"].as_str()), (200, Some("readonly")), "{u}");
    assert_eq!(tech.post("/api/v1/machines", json!({ "mac": "52:54:00:5c:00:10", "department": "radiologie" })).0, 403);
    let (s, _) = a.admin.patch_json("/api/v1/users/tech1", json!({ "disabled": true, "reason": "left the hospital" }));
    assert_eq!(s, 200);
    assert_eq!(tech.get("/api/v1/machines").0, 401);
    let (s, _) =
        basic_post(&a, "127.0.0.1", "/api/v1/tokens", "tech1", "tech1-chosen-password", &json!({ "name": "x" }));
    assert_eq!(s, 401, "a disabled account logs in");
    assert_eq!(
        a.admin.patch_json("/api/v1/users/admin", json!({ "disabled": true })).0,
        409,
        "the last admin disabled itself"
    );
    let (s, _) = a.admin.patch_json("/api/v1/users/tech1", json!({ "disabled": false }));
    assert_eq!(s, 200);
    let (s, r) = a.admin.post("/api/v1/users/tech1/reset-password", json!({}));
    assert_eq!(s, 200, "{r}");
    let (s, _) = basic_post(
        &a,
        "127.0.0.1",
        "/api/v1/tokens",
        "tech1",
        r["password"].as_str().unwrap(),
        &json!({ "name": "x" }),
    );
    assert_eq!(s, 403, "a reset password must be changed first");
    let journal: Vec<String> = a
        .admin
        .get("/api/v1/events?kind=user.")
        .1
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_string())
        .collect();
    for k in ["user.create", "user.password", "user.update", "user.reset"] {
        assert!(journal.iter().any(|j| j == k), "{k} not journaled: {journal:?}");
    }
    assert!(!a.admin.get("/api/v1/events?kind=token.revoke").1.as_array().unwrap().is_empty());

    // The same from the CLI.
    let (token, url) = (a.admin.token.as_deref().unwrap(), a.srv.url.as_str());
    let users = parc_json_as(token, &["user", "ls", "--server", url]);
    assert!(users.as_array().unwrap().iter().any(|u| u["login"] == "tech1"), "{users}");
    let r = parc_json_as(token, &["user", "disable", "tech1", "-m", "contract ended", "--server", url]);
    assert_eq!(r["disabled"], true, "{r}");
    let r = parc_json_as(token, &["user", "role", "tech1", "technician", "--server", url]);
    assert_eq!(r["role"], "technician", "{r}");
    let tokens = parc_json_as(token, &["token", "ls", "--all", "--server", url]);
    assert!(tokens.as_array().unwrap().len() >= 3, "{tokens}");
    let g = parc_json_as(
        token,
        &["machine", "netboot-grant", "52:54:00:5c:00:11", "--from", "10.20.0.57", "--server", url],
    );
    assert_eq!((g["address"].as_str(), g["minutes"].as_u64()), (Some("10.20.0.57"), Some(15)), "{g}");
}

/// Attack 9: the data directory was world-readable and the first password only in the log.
#[test]
fn the_data_directory_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut srv = start(&data, "127.0.0.1:0");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700);
    for f in ["parc.db", "parc.toml", "first-admin-password"] {
        assert_eq!(mode(&data.join(f)), 0o600, "{f}");
    }
    let password = std::fs::read_to_string(data.join("first-admin-password")).unwrap();
    assert_eq!(password.trim(), srv.admin_password());
    // What parc creates is its own (git's checkout sets 0644 on files, which the 0700 directory
    // above keeps from other users).
    for d in ["store", "store/chunks", "netboot", "profiles"] {
        assert_eq!(mode(&data.join(d)) & 0o077, 0, "{d} open to others");
    }
    // Once changed, the one-time password's file is gone.
    let (s, r) = Api::new(&srv.url, None).post_with(
        "/api/v1/password",
        json!({ "new_password": ADMIN_PASSWORD }),
        &[("Authorization", &crate::api::basic("admin", password.trim()))],
    );
    assert_eq!(s, 200, "{r}");
    assert!(!data.join("first-admin-password").exists());
}

/// Attack 7: passwords, tokens and cookies crossed the network in clear. The console and the
/// API are on HTTPS (the appliance's own CA, pinned by its fingerprint); plain HTTP serves
/// other hosts only what firmware and agents fetch.
#[test]
fn the_console_and_api_are_on_https_and_plain_http_serves_only_firmware() {
    let a = appliance("127.0.0.1:0");
    install_netboot(&a);
    let https = a.srv.https_url.clone().unwrap();
    let https_port = https.rsplit(':').next().unwrap().to_string();
    let ca = a.data.join("tls/ca.pem");
    let token = a.admin.token.clone().unwrap();
    // From another host over plain HTTP: the API refused, the console sent to HTTPS, what
    // firmware and agents fetch served.
    let (s, e) = curl_from("127.0.0.2", &format!("-H 'Authorization: Bearer {token}' {}/api/v1/machines", a.srv.url));
    assert_eq!(s, 403, "{e}");
    assert!(e.contains("HTTPS only"), "{e}");
    let (s, _) = curl_from("127.0.0.2", &format!("-u admin:{ADMIN_PASSWORD} -d '{{}}' {}/api/v1/tokens", a.srv.url));
    assert_eq!(s, 403, "a password sent in clear was accepted");
    let head = sh(&format!("curl -sS -I --interface 127.0.0.2 {}/login", a.srv.url)).to_lowercase();
    assert!(head.starts_with("http/1.1 308"), "{head}");
    assert!(head.contains(&format!("location: https://127.0.0.1:{https_port}/login")), "{head}");
    let (s, script) = curl_from("127.0.0.2", &format!("'{}/boot.ipxe?mac=52:54:00:5c:00:20'", a.srv.url));
    assert_eq!(s, 200, "{script}");
    assert_eq!(curl_from("127.0.0.2", &format!("-o /dev/null {}/netboot/vmlinuz", a.srv.url)).0, 200);

    // Over HTTPS, verified against the appliance's CA: everything, with HSTS and Secure cookies.
    let (s, m) = curl_from(
        "127.0.0.2",
        &format!("--cacert {} -H 'Authorization: Bearer {token}' {https}/api/v1/machines", ca.display()),
    );
    assert_eq!(s, 200, "{m}");
    let head = sh(&format!("curl -sS -I --cacert {} {https}/login", ca.display())).to_lowercase();
    assert!(head.contains("strict-transport-security: max-age="), "{head}");
    assert!(head.lines().filter(|l| l.starts_with("set-cookie:")).all(|l| l.contains("secure")), "{head}");
    // Without the CA, curl refuses the certificate (exit 60): nobody is told to click through.
    let out = std::process::Command::new("curl")
        .args(["-sS", "-o", "/dev/null", &format!("{https}/login")])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(60), "{}", String::from_utf8_lossy(&out.stderr));
    let (s, pem) = curl_from("127.0.0.2", &format!("{}/tls/ca.pem", a.srv.url));
    assert_eq!((s, pem.trim()), (200, std::fs::read_to_string(&ca).unwrap().trim()));

    // The CLI pins the CA by the fingerprint `parc serve` printed, then works over HTTPS.
    let fingerprint = a.srv.fingerprint.clone().unwrap();
    let config = a.dir.path().join("tls-cli/cli.toml");
    let login = |fp: &str| {
        parc()
            .args(["login", "--server", &https, "--user", "admin", "--fingerprint", fp])
            .env("PARC_PASSWORD", ADMIN_PASSWORD)
            .env("PARC_CONFIG", &config)
            .env_remove("PARC_TOKEN")
            .output()
            .unwrap()
    };
    let wrong = format!("00{}", &fingerprint[2..]);
    let out = login(&wrong);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("presents a CA with fingerprint"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!config.exists(), "a wrong fingerprint saved something");
    let out = login(&fingerprint);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out =
        parc().args(["machine", "ls", "--json"]).env("PARC_CONFIG", &config).env_remove("PARC_TOKEN").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// The per-address limit is a setting (a remote site's cache fetches for hundreds of PCs).
#[test]
fn connection_limits_come_from_parc_toml() {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("parc.toml"), "[http]\nmax_connections_per_address = 3\n").unwrap();
    let srv = start(&data, "127.0.0.1:0");
    let server: std::net::SocketAddr = srv.url.trim_start_matches("http://").parse().unwrap();
    let conns: Vec<std::net::TcpStream> = (0..5)
        .map(|_| {
            let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            s.bind(&std::net::SocketAddr::from(([127, 0, 0, 4], 0)).into()).unwrap();
            s.connect(&server.into()).unwrap();
            std::net::TcpStream::from(s)
        })
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let closed = conns
        .into_iter()
        .filter(|c| {
            c.set_read_timeout(Some(std::time::Duration::from_millis(100))).unwrap();
            matches!((&*c).read(&mut [0u8; 1]), Ok(0))
        })
        .count();
    assert_eq!(closed, 2, "3 of 5 idle connections from one address are kept");
}

/// A PATCH with `hostname: null` was accepted and cleared the serial: null is refused, naming
/// the field, and nothing changes.
#[test]
fn a_null_field_in_an_edit_is_refused_and_changes_nothing() {
    let a = appliance("127.0.0.1:0");
    let mac = "52:54:00:5c:00:30";
    let (s, r) =
        a.admin.post("/api/v1/machines", json!({ "mac": mac, "department": "radiologie", "serial": "CZC0042" }));
    assert_eq!(s, 201, "{r}");
    let (s, m) = a.admin.get(&format!("/api/v1/machines/{mac}"));
    assert_eq!(s, 200);
    let before = (m["hostname"].clone(), m["serial"].clone());
    for field in ["hostname", "serial", "location"] {
        let (s, e) = a.admin.patch_json(&format!("/api/v1/machines/{mac}"), json!({ field: null }));
        assert_eq!(s, 400, "{field}: {e}");
        assert!(e["error"].as_str().unwrap_or_default().contains(field), "{e}");
    }
    let (_, m) = a.admin.get(&format!("/api/v1/machines/{mac}"));
    assert_eq!((m["hostname"].clone(), m["serial"].clone()), before, "{m}");
}

/// A remote site's HTTP cache in front of parc (nginx `proxy_cache`, caching everything it is
/// allowed to): the second deploy's chunks all come from the cache, byte-exact; manifests are
/// never kept by it (they need a credential: `Cache-Control: private`).
#[test]
fn a_remote_site_cache_serves_the_second_deploy_and_never_keeps_a_manifest() {
    if !have("nginx", "nginx-light") {
        return;
    }
    let a = appliance("127.0.0.1:0");
    let dir = a.dir.path();
    let d = dir.display();
    let port = free_port();
    let upstream = a.srv.url.trim_start_matches("http://");
    let conf = dir.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "daemon off; master_process off; worker_processes 1; pid {d}/nginx.pid; error_log {d}/nginx-error.log;\n\
             events {{ worker_connections 256; }}\n\
             http {{\n\
               log_format cache '$request_method $uri $upstream_cache_status $status';\n\
               access_log {d}/nginx-access.log cache;\n\
               client_body_temp_path {d}/nginx-body; proxy_temp_path {d}/nginx-proxy;\n\
               fastcgi_temp_path {d}/nginx-fcgi; uwsgi_temp_path {d}/nginx-uwsgi; scgi_temp_path {d}/nginx-scgi;\n\
               proxy_cache_path {d}/nginx-cache levels=1:2 keys_zone=site:4m max_size=1g inactive=1d use_temp_path=off;\n\
               server {{\n\
                 listen 127.0.0.1:{port};\n\
                 location / {{ proxy_pass http://{upstream}; proxy_cache site; proxy_cache_valid 200 1d; proxy_cache_lock on; }}\n\
               }}\n\
             }}\n"
        ),
    )
    .unwrap();
    let _nginx = Killed(
        std::process::Command::new("nginx")
            .args(["-e", &format!("{d}/nginx-error.log"), "-p", &format!("{d}/"), "-c", conf.to_str().unwrap()])
            .spawn()
            .expect("nginx"),
    );
    let start = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(start.elapsed() < std::time::Duration::from_secs(10), "nginx did not start");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let site = format!("http://127.0.0.1:{port}");
    let token = a.admin.token.clone().unwrap();
    let source = sha256_file(&dir.join("debian-poste-1.raw"));
    let deploy = |to: &str| {
        let out = dir.join(to);
        let r =
            parc_json_as(&token, &["image", "deploy", "debian-poste", "--store", &site, "--to", out.to_str().unwrap()]);
        assert_eq!(sha256_file(&out), source, "{to}: {r}");
    };
    let chunk_lines = |status: &str| {
        std::fs::read_to_string(dir.join("nginx-access.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with("GET /chunks/") && l.contains(&format!(" {status} ")))
            .count()
    };
    deploy("site-pc-1.raw");
    let fetched = chunk_lines("MISS");
    assert!(fetched > 0, "the first deploy fetched no chunk through the cache");
    deploy("site-pc-2.raw");
    assert_eq!(chunk_lines("MISS"), fetched, "the second deploy went back to parc for chunks");
    assert_eq!(chunk_lines("HIT"), fetched, "the second deploy's chunks did not come from the cache");
    // A manifest fetched through the cache with a token is not served to someone without one.
    let path = format!("/manifests/{}", a.image_digest);
    let with =
        sh(&format!("curl -sS -o /dev/null -w '%{{http_code}}' -H 'Authorization: Bearer {token}' {site}{path}"));
    assert_eq!(with, "200");
    let without = sh(&format!("curl -sS -o /dev/null -w '%{{http_code}}' {site}{path}"));
    assert_eq!(without, "401", "the site's cache handed out a manifest without a credential");
}

/// Per-machine secrets travel only with the machine's task: set by an admin (from a file, not
/// the command line), listed by name, never in git, an image, the journal or a machine's
/// record; filled into the profile file that names them only when served to that machine's
/// running task; a missing one fails the file, naming it.
#[test]
fn a_machine_secret_travels_only_with_its_task() {
    let a = appliance("127.0.0.1:0");
    install_netboot(&a);
    let repo = a.data.join("profiles");
    let conf = "payloads/radiologie/etc/parc/join.conf";
    std::fs::create_dir_all(repo.join("payloads/radiologie/etc/parc")).unwrap();
    std::fs::write(repo.join(conf), "realm=HOPITAL.LOCAL\notp=@@parc-secret:join-otp@@\n").unwrap();
    sh(&format!(
        "git -C {r} -c user.name=Ingé -c user.email=inge@example.org add -A && git -C {r} -c user.name=Ingé -c user.email=inge@example.org commit -qm join",
        r = repo.display()
    ));
    assert_eq!(a.admin.post("/api/v1/profiles/reload", json!({})).0, 200);
    let (mac, other) = ("52:54:00:5e:c0:01", "52:54:00:5e:c0:02");
    for m in [mac, other] {
        let (s, r) = a.admin.post("/api/v1/machines", json!({ "mac": m, "department": "radiologie" }));
        assert_eq!(s, 201, "{r}");
    }
    let secret = "Otp-7f3c-Very-Secret";
    let file = a.dir.path().join("otp.txt");
    std::fs::write(&file, format!("{secret}\n")).unwrap();
    let token = a.admin.token.clone().unwrap();
    let out = parc_run_as(
        &token,
        &["machine", "secret", "set", mac, "join-otp", "--file", file.to_str().unwrap(), "--server", &a.srv.url],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let ls = parc_json_as(&token, &["machine", "secret", "ls", mac, "--server", &a.srv.url]);
    assert_eq!(ls[0]["name"], "join-otp");
    assert_eq!(ls[0]["bytes"], secret.len());
    assert!(!ls.to_string().contains(secret), "a listing shows the value: {ls}");
    // Technicians neither read nor set them.
    let (s, r) = a.admin.post(
        "/api/v1/users",
        json!({ "login": "tech2", "name": "T", "role": "technician", "password": "tech2-password-long" }),
    );
    assert_eq!(s, 201, "{r}");
    let (_, t) = Api::new(&a.srv.url, None).post_with(
        "/api/v1/tokens",
        json!({ "name": "t" }),
        &[("Authorization", &crate::api::basic("tech2", "tech2-password-long"))],
    );
    let tech = Api::new(&a.srv.url, t["token"].as_str());
    assert_eq!(tech.get(&format!("/api/v1/machines/{mac}/secrets")).0, 403);
    assert_eq!(tech.post(&format!("/api/v1/machines/{mac}/secrets"), json!({ "name": "x", "value": "y" })).0, 403);

    // The machine's running task gets the file with its secret; another machine's task gets
    // the marker's name in a refusal, not someone else's secret.
    for m in [mac, other] {
        let (s, r) = a.admin.post(&format!("/api/v1/machines/{m}/install"), json!({}));
        assert_eq!(s, 200, "{r}");
    }
    let (agent, _) = agent_hello(&a.admin, mac, json!({ "mac": mac }));
    let source = "payloads/radiologie/etc/parc/join.conf";
    let (s, body) = agent.get(&format!("/api/v1/agent/file?path={source}"));
    assert_eq!((s, body.as_str()), (200, Some(format!("realm=HOPITAL.LOCAL\notp={secret}\n").as_str())));
    let (agent2, _) = agent_hello(&a.admin, other, json!({ "mac": other }));
    let (s, e) = agent2.get(&format!("/api/v1/agent/file?path={source}"));
    assert_eq!(s, 409, "{e}");
    assert!(e["error"].as_str().unwrap().contains("join-otp"), "{e}");
    // Once the task is over, nothing more.
    assert_eq!(agent.post("/api/v1/agent/failed", json!({ "reason": "test ends the task" })).0, 200);
    let (s, e) = agent.get(&format!("/api/v1/agent/file?path={source}"));
    assert!(s == 409 && !e.to_string().contains(secret), "{s} {e}");

    // Nowhere else: git, the journal, the machine's record, the store.
    let history = sh(&format!("git -C {} log -p --all", repo.display()));
    assert!(!history.contains(secret), "the secret is in git");
    let (_, events) = a.admin.get("/api/v1/events?limit=1000");
    assert!(!events.to_string().contains(secret), "the secret is in the journal");
    assert!(events.to_string().contains("join-otp"), "the delivery is not journaled");
    let (_, m) = a.admin.get(&format!("/api/v1/machines/{mac}"));
    assert!(!m.to_string().contains(secret));
    let grep = std::process::Command::new("grep").args(["-rqF", secret]).arg(a.data.join("store")).status().unwrap();
    assert!(!grep.success(), "the secret is in the store");
    let out = parc_run_as(&token, &["machine", "secret", "rm", mac, "join-otp", "--server", &a.srv.url]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(a.admin.get(&format!("/api/v1/machines/{mac}/secrets")).1, json!([]));
}

//! The appliance API against a real `parc serve` on loopback, with its real SQLite file and
//! its real git repository: first start, access, install/move/replace from the CLI (one and
//! many), the agent's reports across a server restart, bad department files, concurrent
//! technicians, chunk requests.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

use crate::support::*;

/// A minimal API client for the tests.
pub struct Api {
    pub base: String,
    pub token: Option<String>,
    agent: ureq::Agent,
}

impl Api {
    pub fn new(base: &str, token: Option<&str>) -> Api {
        let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
        Api { base: base.to_string(), token: token.map(str::to_string), agent }
    }

    fn finish(r: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> (u16, Value) {
        let mut r = r.expect("request");
        let status = r.status().as_u16();
        let text = r.body_mut().read_to_string().unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    fn auth<B>(&self, r: ureq::RequestBuilder<B>, headers: &[(&str, &str)]) -> ureq::RequestBuilder<B> {
        let mut r = r;
        if let Some(t) = &self.token {
            r = r.header("Authorization", &format!("Bearer {t}"));
        }
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        r
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        Self::finish(self.auth(self.agent.get(&format!("{}{path}", self.base)), &[]).call())
    }

    pub fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.post_with(path, body, &[])
    }

    pub fn post_with(&self, path: &str, body: Value, headers: &[(&str, &str)]) -> (u16, Value) {
        let r = self
            .auth(self.agent.post(&format!("{}{path}", self.base)), headers)
            .header("Content-Type", "application/json");
        Self::finish(r.send(&serde_json::to_vec(&body).unwrap()[..]))
    }

    /// PATCH without If-Match (accounts).
    pub fn patch_json(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .auth(self.agent.patch(&format!("{}{path}", self.base)), &[])
            .header("Content-Type", "application/json");
        Self::finish(r.send(&serde_json::to_vec(&body).unwrap()[..]))
    }

    pub fn patch(&self, path: &str, body: Value, if_match: &str) -> (u16, Value) {
        let r = self
            .auth(self.agent.patch(&format!("{}{path}", self.base)), &[("If-Match", if_match)])
            .header("Content-Type", "application/json");
        Self::finish(r.send(&serde_json::to_vec(&body).unwrap()[..]))
    }
}

pub fn basic(login: &str, password: &str) -> String {
    let out = sh(&format!("printf '%s' '{login}:{password}' | base64 -w0"));
    format!("Basic {out}")
}

/// A first start: server, admin token, and an image named as the example departments want.
pub struct Appliance {
    pub dir: tempfile::TempDir,
    pub data: PathBuf,
    pub srv: Server,
    pub admin: Api,
    pub image_digest: String,
}

pub fn appliance(addr: &str) -> Appliance {
    appliance_with(addr, &[])
}

/// `appliance` with more `parc serve` flags.
pub fn appliance_with(addr: &str, extra: &[&str]) -> Appliance {
    appliance_configured(addr, extra, None)
}

/// `appliance_with`, its data directory's parc.toml written first.
pub fn appliance_configured(addr: &str, extra: &[&str], toml: Option<&str>) -> Appliance {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    if let Some(t) = toml {
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(data.join("parc.toml"), t).unwrap();
    }
    let mut srv = start_with(&data, addr, extra);
    let token = srv.admin_token();
    let admin = Api::new(&srv.url, Some(&token));
    let image_digest = capture_small_image(dir.path(), &data, "debian-poste", 1);
    Appliance { dir, data, srv, admin, image_digest }
}

/// Captures a 6 MiB raw "disk" of random bytes into the appliance's store under `name`.
pub fn capture_small_image(dir: &Path, data: &Path, name: &str, seed: u64) -> String {
    let raw = dir.join(format!("{name}-{seed}.raw"));
    std::fs::write(&raw, random_bytes(seed, 6 << 20)).unwrap();
    capture_into(data, name, &raw)["digest"].as_str().unwrap().to_string()
}

/// `parc image capture` of `source` into the appliance's store under `name`: its JSON report.
pub fn capture_into(data: &Path, name: &str, source: &Path) -> Value {
    parc_json(&[
        "image",
        "capture",
        source.to_str().unwrap(),
        "--store",
        data.join("store").to_str().unwrap(),
        "--name",
        name,
    ])
}

/// Stand-in agent files, so that boot scripts send machines to the agent with a task token.
pub fn install_netboot(a: &Appliance) {
    std::fs::write(a.data.join("netboot/vmlinuz"), b"kernel").unwrap();
    std::fs::write(a.data.join("netboot/initrd"), b"initrd").unwrap();
}

/// The boot script the server hands `mac` now.
pub fn boot_script(url: &str, mac: &str) -> String {
    sh(&format!("curl -sS '{url}/boot.ipxe?mac={mac}'"))
}

/// The task token a boot script carries.
pub fn token_of(script: &str) -> String {
    script
        .split("parc.token=")
        .nth(1)
        .unwrap_or_else(|| panic!("no task token in the boot script:\n{script}"))
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// No PXE server runs beside these appliances, so nothing saw the machine boot: a technician
/// allows `mac` to boot from the tests' loopback address, as on a site whose DHCP sends PCs
/// straight to the boot script URL.
pub fn grant(admin: &Api, mac: &str) {
    let (s, r) = admin.post(&format!("/api/v1/machines/{mac}/netboot-grant"), json!({ "address": "127.0.0.1" }));
    assert_eq!(s, 200, "netboot-grant {mac}: {r}");
}

/// The boot credential of the boot script the server hands `mac` now (granted first).
pub fn boot_token(admin: &Api, mac: &str) -> String {
    grant(admin, mac);
    token_of(&boot_script(&admin.base, mac))
}

/// What the real agent does first: boot script, then hello with its boot credential. Returns
/// the agent's client with the session the hello gave, and the hello's answer.
pub fn agent_hello(admin: &Api, mac: &str, hw: Value) -> (Api, Value) {
    let boot = Api::new(&admin.base, Some(&boot_token(admin, mac)));
    let (s, hello) = boot.post("/api/v1/agent/hello", hw);
    assert_eq!(s, 200, "hello of {mac}: {hello}");
    let session = hello["session_token"].as_str().unwrap_or_else(|| panic!("no session in {hello}"));
    (Api::new(&admin.base, Some(session)), hello)
}

/// `parc` CLI against the appliance with `api`'s token.
fn cli(a: &Appliance, api: &Api, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_parc"))
        .args(args)
        .env("PARC_SERVER", &a.srv.url)
        .env("PARC_TOKEN", api.token.as_deref().unwrap_or(""))
        .env("PARC_CONFIG", a.dir.path().join("no-cli.toml"))
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

pub fn git(repo: &Path, args: &str) -> String {
    sh(&format!("git -C {} -c user.name=Technicien -c user.email=tech@example.org {args}", repo.display()))
}

pub fn user(a: &Appliance, login: &str, name: &str, role: &str) -> Api {
    let (s, u) = a.admin.post("/api/v1/users", json!({ "login": login, "name": name, "role": role }));
    assert_eq!(s, 201, "{u}");
    let pw = u["password"].as_str().unwrap();
    let anon = Api::new(&a.srv.url, None);
    // A one-time password makes no token: it is changed first.
    let (s, e) = anon.post_with("/api/v1/tokens", json!({ "name": login }), &[("Authorization", &basic(login, pw))]);
    assert_eq!(s, 403, "{e}");
    let new = format!("{login}-own-password");
    let (s, r) =
        anon.post_with("/api/v1/password", json!({ "new_password": new }), &[("Authorization", &basic(login, pw))]);
    assert_eq!(s, 200, "{r}");
    let (s, t) = anon.post_with("/api/v1/tokens", json!({ "name": login }), &[("Authorization", &basic(login, &new))]);
    assert_eq!(s, 201, "{t}");
    Api::new(&a.srv.url, t["token"].as_str())
}

#[test]
fn first_start_creates_everything_and_access_is_checked() {
    let a = appliance("127.0.0.1:0");
    for p in ["parc.toml", "parc.db", "store/chunks", "profiles/.git", "profiles/inventory.csv", "netboot"] {
        assert!(a.data.join(p).exists(), "{p} missing after first start");
    }
    let (s, deps) = a.admin.get("/api/v1/departments");
    assert_eq!(s, 200);
    let names: Vec<&str> = deps.as_array().unwrap().iter().map(|d| d["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["Administration", "Pharmacie", "Radiologie", "Urgences"]);
    assert!(deps.as_array().unwrap().iter().all(|d| d["image_digest"] == a.image_digest.as_str()));

    let anon = Api::new(&a.srv.url, None);
    assert_eq!(anon.get("/api/v1/machines").0, 401);
    assert_eq!(Api::new(&a.srv.url, Some("parc_0000")).get("/api/v1/machines").0, 401);
    let (s, e) = anon.post_with(
        "/api/v1/tokens",
        json!({ "name": "x" }),
        &[("Authorization", &basic("admin", "wrong-password"))],
    );
    assert_eq!(s, 401, "{e}");
    // A read-only account reads but cannot act.
    let viewer = user(&a, "chef.radio", "Chef Radiologie", "readonly");
    assert_eq!(viewer.get("/api/v1/machines").0, 200);
    let (s, e) = viewer.post("/api/v1/machines", json!({ "mac": "52:54:00:00:00:99", "department": "radiologie" }));
    assert_eq!(s, 403, "{e}");
    assert!(e["error"].as_str().unwrap().contains("readonly"), "{e}");
    assert_eq!(viewer.post("/api/v1/users", json!({ "login": "x", "name": "x", "role": "admin" })).0, 403);

    // The OpenAPI document is served and lists the agent and machine routes.
    let (s, doc) = anon.get("/api/v1/openapi.json");
    assert_eq!(s, 200);
    assert_eq!(doc["openapi"], "3.1.0");
    for p in ["/api/v1/machines/{id}/{action}", "/api/v1/agent/hello", "/api/v1/batch", "/api/v1/chunks"] {
        assert!(doc["paths"].get(p).is_some(), "{p} not in openapi.json");
    }
    // Restarting keeps the account: no second password.
    let Appliance { dir: _dir, data, srv, admin, .. } = a;
    assert!(srv.stop().success(), "SIGTERM must exit cleanly");
    let srv = start(&data, "127.0.0.1:0");
    let admin = Api::new(&srv.url, admin.token.as_deref());
    assert_eq!(admin.get("/api/v1/machines").0, 200);
}

#[test]
fn install_move_replace_from_the_cli_are_git_commits_by_the_technician() {
    let a = appliance("127.0.0.1:0");
    let alice = user(&a, "alice", "Alice Martin", "technician");
    let repo = a.data.join("profiles");
    let (rc, out, err) = cli(
        &a,
        &alice,
        &[
            "machine",
            "add",
            "52:54:00:aa:00:01",
            "-d",
            "radiologie",
            "--location",
            "Bât A, 2e étage",
            "--install",
            "-m",
            "nouveau poste salle 3",
        ],
    );
    assert_eq!(rc, 0, "{out}{err}");
    assert!(out.contains("RAD-0001"), "{out}");
    let log = git(&repo, "log -1 --format='%an <%ae>%n%B'");
    assert!(log.starts_with("Alice Martin <alice@parc.local>"), "{log}");
    assert!(log.contains("RAD-0001") && log.contains("Reason: nouveau poste salle 3"), "{log}");
    let inv = std::fs::read_to_string(repo.join("inventory.csv")).unwrap();
    assert!(inv.contains("52:54:00:aa:00:01,RAD-0001,radiologie,,,\"Bât A, 2e étage\",active"), "{inv}");

    let (rc, out, _) = cli(&a, &alice, &["task", "ls", "--json"]);
    assert_eq!(rc, 0);
    let tasks: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(tasks[0]["kind"], "install");
    assert_eq!(tasks[0]["state"], "queued");
    assert_eq!(tasks[0]["image_digest"], a.image_digest.as_str());
    assert_eq!(tasks[0]["created_by"], "alice");

    // Moving needs the install task out of the way first: a conflict that says so.
    let (rc, _, err) = cli(&a, &alice, &["machine", "move", "RAD-0001", "--to", "urgences"]);
    assert_eq!(rc, 2, "{err}");
    assert!(err.contains("already has task") && err.contains("alice"), "{err}");
    let (s, _) = alice.post(&format!("/api/v1/tasks/{}/cancel", tasks[0]["id"]), json!({}));
    assert_eq!(s, 200);
    let (rc, out, err) = cli(&a, &alice, &["machine", "move", "RAD-0001", "--to", "urgences", "-m", "réorganisation"]);
    assert_eq!(rc, 0, "{out}{err}");
    assert!(out.contains("URG-0001"), "{out}");
    let (_, m) = alice.get("/api/v1/machines/URG-0001");
    assert_eq!(m["department"], "urgences");
    assert_eq!(m["status"], "queued");
    assert_eq!(m["task"]["kind"], "move");

    // Replace: one command; hostname, department and location go to the new MAC.
    let (s, _) = alice.post(&format!("/api/v1/tasks/{}/cancel", m["task"]["id"]), json!({}));
    assert_eq!(s, 200);
    let (rc, out, err) = cli(
        &a,
        &alice,
        &[
            "machine",
            "replace",
            "URG-0001",
            "--with",
            "52:54:00:bb:00:02",
            "--asset-tag",
            "INV-7781",
            "-m",
            "carte mère HS",
        ],
    );
    assert_eq!(rc, 0, "{out}{err}");
    let (_, new) = alice.get("/api/v1/machines/URG-0001");
    assert_eq!(new["mac"], "52:54:00:bb:00:02");
    assert_eq!(new["department"], "urgences");
    assert_eq!(new["location"], "Bât A, 2e étage");
    assert_eq!(new["asset_tag"], "INV-7781");
    assert_eq!(new["task"]["kind"], "replace");
    assert_eq!(new["task"]["replaces"], "52:54:00:aa:00:01");
    let (_, old) = alice.get("/api/v1/machines/52:54:00:aa:00:01");
    assert_eq!(old["status"], "retired");
    assert!(old["notes"].as_str().unwrap().contains("replaced by 52:54:00:bb:00:02"), "{old}");
    // The machine's git history is its audit trail: add, move, replace, each by Alice.
    let hist: Vec<String> = old["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| format!("{} | {}", h["author_name"].as_str().unwrap(), h["summary"].as_str().unwrap()))
        .collect();
    assert_eq!(hist.len(), 3, "{hist:?}");
    assert!(hist.iter().all(|h| h.starts_with("Alice Martin | ")), "{hist:?}");
    assert!(hist[0].contains("replace") && hist[1].contains("move") && hist[2].contains("add"), "{hist:?}");
    // Three technician commits after the initial one; the journal has every action.
    assert_eq!(git(&repo, "rev-list --count HEAD").trim(), "4");
    let (_, ev) = alice.get("/api/v1/events?actor=alice&limit=50");
    let kinds: Vec<&str> = ev.as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    for k in ["machine.add", "task.cancel", "machine.move", "machine.move.refused", "machine.replace"] {
        assert!(kinds.contains(&k), "{k} missing from the journal: {kinds:?}");
    }
}

#[test]
fn bulk_operations_from_csv_report_per_machine_in_one_commit() {
    let a = appliance("127.0.0.1:0");
    let repo = a.data.join("profiles");
    let csv = a.dir.path().join("install.csv");
    let mut text = String::from("mac,department\n");
    for i in 0..60 {
        text.push_str(&format!("52:54:00:10:00:{i:02x},pharmacie\n"));
    }
    text.push_str("52:54:00:10:01:00,cardiologie\n");
    text.push_str("not-a-mac,pharmacie\n");
    std::fs::write(&csv, text).unwrap();
    let commits_before = git(&repo, "rev-list --count HEAD");
    let (rc, out, err) = cli(&a, &a.admin, &["machine", "install", "--from-csv", csv.to_str().unwrap()]);
    assert_eq!(rc, 3, "some lines fail, so the exit code says so: {out}{err}");
    assert!(out.contains("60 ok, 2 failed"), "{out}");
    assert!(out.contains("FAIL  52:54:00:10:01:00") && out.contains("unknown department \"cardiologie\""), "{out}");
    assert!(out.contains("not-a-mac"), "{out}");
    assert_eq!(
        git(&repo, "rev-list --count HEAD").trim().parse::<u32>().unwrap(),
        commits_before.trim().parse::<u32>().unwrap() + 1
    );
    let (_, list) = a.admin.get("/api/v1/machines?department=pharmacie&status=queued&limit=1000");
    assert_eq!(list["total"], 60);
    let names: std::collections::BTreeSet<&str> =
        list["machines"].as_array().unwrap().iter().map(|m| m["hostname"].as_str().unwrap()).collect();
    assert_eq!(names.len(), 60, "hostnames are unique");
    assert!(names.contains("PHA-0001") && names.contains("PHA-0060"), "{names:?}");

    // Move many with a CSV: machine,department.
    let mv = a.dir.path().join("move.csv");
    std::fs::write(&mv, "machine,department\nPHA-0001,urgences\nPHA-0002,urgences\nPHA-0404,urgences\n").unwrap();
    for id in ["PHA-0001", "PHA-0002"] {
        let (_, m) = a.admin.get(&format!("/api/v1/machines/{id}"));
        a.admin.post(&format!("/api/v1/tasks/{}/cancel", m["task"]["id"]), json!({}));
    }
    let (rc, out, _) = cli(&a, &a.admin, &["machine", "move", "--from-csv", mv.to_str().unwrap(), "--json"]);
    assert_eq!(rc, 3);
    let r: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["succeeded"], 2);
    assert_eq!(r["results"][2]["status"], 404);
    let bad = a.dir.path().join("bad.csv");
    std::fs::write(&bad, "machine\nPHA-0003\n").unwrap();
    let (rc, _, err) = cli(&a, &a.admin, &["machine", "move", "--from-csv", bad.to_str().unwrap()]);
    assert_ne!(rc, 0);
    assert!(err.contains("bad.csv: the header row has no column \"department\""), "{err}");
    std::fs::write(&bad, "machine,department,colour\nPHA-0003,urgences,blue\n").unwrap();
    let (rc, _, err) = cli(&a, &a.admin, &["machine", "move", "--from-csv", bad.to_str().unwrap()]);
    assert_ne!(rc, 0);
    assert!(err.contains("unknown column \"colour\""), "{err}");
}

/// What the agent does, driven by hand: boot script with a token, hello, progress, the
/// server killed and restarted between two reports, refused unverified success, done, first
/// boot.
#[test]
fn agent_reports_survive_a_server_restart_and_success_needs_verification() {
    let addr = format!("127.0.0.1:{}", free_port());
    let a = appliance(&addr);
    install_netboot(&a);
    let mac = "52:54:00:cc:00:01";
    let (s, r) = a.admin.post("/api/v1/machines", json!({ "mac": mac, "department": "radiologie", "install": true }));
    assert_eq!(s, 201, "{r}");
    let task_id = r["task"]["id"].as_i64().unwrap();
    grant(&a.admin, mac);
    let script = boot_script(&a.srv.url, mac);
    let token = token_of(&script);
    assert!(script.contains("parc.mode=task"), "{script}");
    let hw = json!({ "mac": mac, "serial": "CZC1234XYZ", "uuid": "4c4c4544-0042", "model": "HP EliteDesk 800 G6", "memory_bytes": 8u64 << 30,
                     "disks": [{ "name": "nvme0n1", "size_bytes": 256_060_514_304u64, "bus": "nvme", "removable": false, "serial": "S4EWNX0R",
                                 // An NVMe namespace without EUI-64/NGUID: Linux spells its wwid out in hex.
                                 "wwn": "nvme.144d-5334455758305230303030303030202020202020-53414d53554e47204d5a564c42323536484148512d303030303020202020202020-00000001" }],
                     "firmware": { "uefi": true, "secure_boot": true } });
    let (s, hello) = Api::new(&a.srv.url, Some(&token)).post("/api/v1/agent/hello", hw.clone());
    assert_eq!(s, 200, "{hello}");
    let agent = Api::new(&a.srv.url, Some(hello["session_token"].as_str().unwrap()));
    assert_eq!(hello["task"]["id"], task_id);
    assert_eq!(hello["task"]["image"]["digest"], a.image_digest.as_str());
    assert_eq!(hello["task"]["hostname"], "RAD-0001");
    let progress = json!({ "phase": "deploy", "bytes_done": 1u64 << 20, "bytes_total": 6u64 << 20, "bytes_fetched": 1u64 << 20, "rate_bps": 1u64 << 20 });
    let (s, p) = agent.post("/api/v1/agent/progress", progress);
    assert_eq!((s, p["continue"].clone()), (200, json!(true)), "{p}");

    // Kill the server hard between two reports; state lives in SQLite.
    let Appliance { dir, data, srv, admin, image_digest } = a;
    drop(srv);
    let srv = start(&data, &addr);
    let (_, t) = admin.get(&format!("/api/v1/tasks/{task_id}"));
    assert_eq!(t["state"], "running");
    assert_eq!(t["bytes_done"], 1u64 << 20);
    let (s, _) = agent.post(
        "/api/v1/agent/progress",
        json!({ "phase": "deploy", "bytes_done": 6u64 << 20, "bytes_total": 6u64 << 20 }),
    );
    assert_eq!(s, 200);
    // A wrong digest or an unverified write is never success: the task fails, saying why.
    let (s, e) = agent.post("/api/v1/agent/done", json!({ "verified": false, "image_digest": image_digest }));
    assert_eq!(s, 409, "{e}");
    let (_, t) = admin.get(&format!("/api/v1/tasks/{task_id}"));
    assert_eq!(t["state"], "failed");
    assert!(t["message"].as_str().unwrap().contains("not verified"), "{t}");
    let (_, m) = admin.get(&format!("/api/v1/machines/{mac}"));
    assert_eq!(m["status"], "failed");
    assert_eq!(m["model"], "HP EliteDesk 800 G6");
    assert_eq!(m["firmware"], json!({ "uefi": true, "secure_boot": true }), "{m}");

    // Reimage: a new task and a new token; the old token no longer works for it.
    let (s, r) = admin.post(&format!("/api/v1/machines/{mac}/reimage"), json!({ "reason": "retry after failure" }));
    assert_eq!(s, 200, "{r}");
    assert_eq!(agent.get("/api/v1/agent/task").0, 409, "the old session belongs to the finished task");
    let (agent, _) = agent_hello(&admin, mac, hw.clone());
    let (s, e) = agent.post("/api/v1/agent/done", json!({ "verified": true, "image_digest": "0".repeat(64) }));
    assert_eq!(s, 409, "{e}");
    let (s, _) = admin.post(&format!("/api/v1/machines/{mac}/reimage"), json!({}));
    assert_eq!(s, 200);
    let (agent, hello) = agent_hello(&admin, mac, hw);
    let (s, done) = agent.post(
        "/api/v1/agent/done",
        json!({ "verified": true, "image_digest": image_digest, "bytes_fetched": 123, "disk": "/dev/nvme0n1" }),
    );
    assert_eq!(s, 200, "{done}");
    assert_eq!(done["state"], "done");
    let (_, m) = admin.get(&format!("/api/v1/machines/{mac}"));
    assert_eq!(m["status"], "installed");
    assert_eq!(m["image_digest"], image_digest.as_str());
    // The task's session cannot report the first boot; its single-use credential can, once.
    assert_eq!(agent.post("/api/v1/agent/first-boot", json!({})).0, 401);
    let first_boot = Api::new(&srv.url, Some(hello["first_boot_token"].as_str().unwrap()));
    let (s, _) = first_boot.post("/api/v1/agent/first-boot", json!({}));
    assert_eq!(s, 200);
    assert_eq!(first_boot.post("/api/v1/agent/first-boot", json!({})).0, 401, "replayed");
    let (_, m) = admin.get(&format!("/api/v1/machines/{mac}"));
    assert_eq!(m["status"], "ready");
    // A machine with nothing to do boots its disk; an unknown one registers, with a credential
    // once parc has reason to believe it is booting from where it asks.
    let script = sh(&format!("curl -sS '{}/boot.ipxe?mac={mac}'", srv.url));
    assert!(script.contains("booting the local disk"), "{script}");
    let script = sh(&format!("curl -sS '{}/boot.ipxe?mac=52:54:00:ff:ff:ff'", srv.url));
    assert!(!script.contains("kernel") && script.contains("did not see this machine boot"), "{script}");
    grant(&admin, "52:54:00:ff:ff:ff");
    let script = sh(&format!("curl -sS '{}/boot.ipxe?mac=52:54:00:ff:ff:ff'", srv.url));
    assert!(script.contains("parc.mode=register") && script.contains("parc.token=pb_"), "{script}");
    let (s, h) = Api::new(&srv.url, None)
        .post("/api/v1/agent/hello", json!({ "mac": "52:54:00:ff:ff:ff", "model": "<script>x</script>" }));
    assert_eq!(s, 200, "{h}");
    assert_eq!(h["task"], Value::Null);
    let (_, m) = admin.get("/api/v1/machines/52:54:00:ff:ff:ff");
    assert_eq!(m["status"], "discovered");
    drop(dir);
}

#[test]
fn bad_department_files_are_reported_and_the_last_good_version_keeps_serving() {
    let a = appliance("127.0.0.1:0");
    let repo = a.data.join("profiles");
    let (s, _) = a.admin.post("/api/v1/machines", json!({ "mac": "52:54:00:dd:00:01", "department": "urgences" }));
    assert_eq!(s, 201);
    // A technician commits a broken file by hand (unknown key on line 5) and a department
    // whose image does not exist.
    let path = repo.join("departments/urgences.toml");
    let good = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = good.lines().collect();
    let broken = format!("{}\nimagee = \"typo\"\n{}\n", lines[..4].join("\n"), lines[4..].join("\n"));
    std::fs::write(&path, broken).unwrap();
    std::fs::write(
        repo.join("departments/bloc.toml"),
        "name = \"Bloc opératoire\"\nimage = \"bloc-2026\"\nhostname = \"BLC-{counter:3}\"\n",
    )
    .unwrap();
    git(&repo, "add -A");
    git(&repo, "commit -q -m 'urgences: typo; bloc: new department'");
    let (s, st) = a.admin.post("/api/v1/profiles/reload", json!({}));
    assert_eq!(s, 200, "{st}");
    let problems: Vec<String> = st["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| format!("{} {} {}", p["file"].as_str().unwrap(), p["line"], p["reason"].as_str().unwrap()))
        .collect();
    assert!(
        problems.iter().any(|p| p.starts_with("departments/urgences.toml 5 ") && p.contains("imagee")),
        "{problems:?}"
    );
    assert!(
        problems.iter().any(|p| p.starts_with("departments/bloc.toml 2 ") && p.contains("bloc-2026")),
        "{problems:?}"
    );
    // Urgences keeps serving its last good version, flagged, and deploying it is refused
    // until the file is fixed; bloc is refused because its image is missing.
    let (_, d) = a.admin.get("/api/v1/departments/urgences");
    assert_eq!(d["stale"], true);
    assert_eq!(d["image"], "debian-poste");
    let (s, e) = a.admin.post("/api/v1/machines/52:54:00:dd:00:01/install", json!({}));
    assert_eq!(s, 409, "{e}");
    assert!(e["error"].as_str().unwrap().contains("urgences.toml"), "{e}");
    let (s, e) =
        a.admin.post("/api/v1/machines", json!({ "mac": "52:54:00:dd:00:02", "department": "bloc", "install": true }));
    assert_eq!(s, 409, "{e}");
    let (_, d) = a.admin.get("/api/v1/departments/radiologie");
    assert_eq!(d["stale"], false);
    // Validation before committing, offline (CLI) and online (API).
    let (rc, out, _) = cli(&a, &a.admin, &["department", "validate", path.to_str().unwrap()]);
    assert_eq!(rc, 2);
    assert!(out.contains("departments/urgences.toml line 5") && out.contains("imagee"), "{out}");
    let (s, v) = a.admin.post("/api/v1/departments/validate", json!({ "file": "departments/bloc.toml", "text": std::fs::read_to_string(repo.join("departments/bloc.toml")).unwrap() }));
    assert_eq!(s, 200);
    assert_eq!(v["ok"], false);
    assert_eq!(v["problems"][0]["line"], 2);

    // A broken inventory: edits through the API are refused (they would drop that commit).
    std::fs::write(&path, good).unwrap();
    let inv = std::fs::read_to_string(repo.join("inventory.csv")).unwrap();
    std::fs::write(repo.join("inventory.csv"), format!("{inv}zz:zz,BAD,urgences,,,,active,\n")).unwrap();
    git(&repo, "commit -qam 'fix urgences; typo in inventory'");
    a.admin.post("/api/v1/profiles/reload", json!({}));
    let (_, d) = a.admin.get("/api/v1/departments/urgences");
    assert_eq!(d["stale"], false);
    let (s, e) = a.admin.post("/api/v1/machines", json!({ "mac": "52:54:00:dd:00:03", "department": "urgences" }));
    assert_eq!(s, 409, "{e}");
    assert!(e["error"].as_str().unwrap().contains("inventory.csv"), "{e}");
    let (_, st) = a.admin.get("/api/v1/profiles");
    assert_eq!(st["inventory_valid_at_head"], false);
    assert_eq!(st["machines"], 1, "the last good inventory keeps serving");
}

#[test]
fn two_technicians_editing_the_same_machine() {
    let a = appliance("127.0.0.1:0");
    let alice = user(&a, "alice", "Alice Martin", "technician");
    let bob = user(&a, "bob", "Bob Durand", "technician");
    let (s, _) = alice.post(
        "/api/v1/machines",
        json!({ "mac": "52:54:00:ee:00:01", "department": "pharmacie", "location": "Pharmacie centrale" }),
    );
    assert_eq!(s, 201);
    let (_, m) = alice.get("/api/v1/machines/PHA-0001");
    let etag = m["etag"].as_str().unwrap().to_string();
    let (s, e) = alice.patch("/api/v1/machines/PHA-0001", json!({ "locaton": "Réserve" }), &format!("\"{etag}\""));
    assert_eq!((s, e["field"].as_str()), (400, Some("locaton")), "{e}");
    let (s, r) = alice.patch("/api/v1/machines/PHA-0001", json!({ "location": "Réserve" }), &format!("\"{etag}\""));
    assert_eq!(s, 200, "{r}");
    let (s, e) = bob.patch("/api/v1/machines/PHA-0001", json!({ "location": "Guichet" }), &format!("\"{etag}\""));
    assert_eq!(s, 409, "{e}");
    assert!(e["error"].as_str().unwrap().contains("Alice Martin"), "{e}");
    let (_, m) = bob.get("/api/v1/machines/PHA-0001");
    assert_eq!(m["location"], "Réserve");

    // Both move it at the same moment: exactly one wins, the other is told who.
    let go = std::sync::Arc::new(std::sync::Barrier::new(2));
    let handles: Vec<_> = [(alice, "urgences"), (bob, "radiologie")]
        .into_iter()
        .map(|(api, to)| {
            let go = go.clone();
            std::thread::spawn(move || {
                go.wait();
                api.post("/api/v1/machines/52:54:00:ee:00:01/move", json!({ "department": to }))
            })
        })
        .collect();
    let results: Vec<(u16, Value)> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let codes: Vec<u16> = results.iter().map(|r| r.0).collect();
    assert!(codes.contains(&200) && codes.contains(&409), "{results:?}");
    let (_, tasks) = a.admin.get("/api/v1/tasks?machine=52:54:00:ee:00:01&active=true");
    assert_eq!(tasks.as_array().unwrap().len(), 1);
}

#[test]
fn chunk_requests_bad_digests_and_the_streaming_endpoint() {
    let a = appliance("127.0.0.1:0");
    let auth = format!("-H 'Authorization: Bearer {}'", a.admin.token.as_deref().unwrap());
    let show = parc_json(&["image", "show", "debian-poste", "--store", a.data.join("store").to_str().unwrap()]);
    let digests: Vec<String> = show["manifest"]["regions"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(show["manifest"]["partitions"].as_array().into_iter().flatten())
        .flat_map(|r| r["chunks"].as_array().cloned().unwrap_or_default())
        .map(|c| c["sha256"].as_str().unwrap().to_string())
        .collect();
    assert!(digests.len() >= 6, "{show}");
    for (path, want) in [
        (format!("/chunks/{}", "0".repeat(64)), "404"),
        ("/chunks/..%2F..%2Fparc.db".to_string(), "400"),
        ("/chunks/abc".to_string(), "400"),
        (format!("/chunks/{}", "A".repeat(64)), "400"),
        (format!("/manifests/{}", "f".repeat(63)), "400"),
    ] {
        let code = sh(&format!("curl -sS -o /dev/null -w '%{{http_code}}' {auth} '{}{path}'", a.srv.url));
        assert_eq!(code, want, "{path}");
    }
    // Many chunks in one response, byte-identical to the stored files.
    let out = a.dir.path().join("frames.bin");
    let body = json!({ "digests": digests }).to_string();
    let code = sh(&format!(
        "curl -sS -o {} -w '%{{http_code}}' {auth} -H 'content-type: application/json' -d '{body}' {}/api/v1/chunks",
        out.display(),
        a.srv.url
    ));
    assert_eq!(code, "200");
    let bytes = std::fs::read(&out).unwrap();
    let mut at = 0;
    for d in &digests {
        assert_eq!(hex::encode(&bytes[at..at + 32]), *d);
        let len = u32::from_be_bytes(bytes[at + 32..at + 36].try_into().unwrap()) as usize;
        let stored = std::fs::read(a.data.join("store/chunks").join(&d[..2]).join(format!("{d}.zst"))).unwrap();
        assert_eq!(&bytes[at + 36..at + 36 + len], &stored[..]);
        at += 36 + len;
    }
    assert_eq!(at, bytes.len());
    let missing = json!({ "digests": [digests[0], "1".repeat(64)] }).to_string();
    let r = sh(&format!(
        "curl -sS -w ' %{{http_code}}' {auth} -H 'content-type: application/json' -d '{missing}' {}/api/v1/chunks",
        a.srv.url
    ));
    assert!(r.ends_with(" 404") && r.contains(&"1".repeat(64)), "{r}");
    let r = sh(&format!("curl -sS -w ' %{{http_code}}' {auth} -H 'content-type: application/json' -d '{{\"digests\":[\"../x\"]}}' {}/api/v1/chunks", a.srv.url));
    assert!(r.ends_with(" 400"), "{r}");
}

/// With a central repository configured, the appliance pushes its history there, picks up
/// what technicians push, and hands the commits made through the API back.
#[test]
fn profiles_follow_a_central_repository() {
    let dir = tempfile::tempdir().unwrap();
    let central = dir.path().join("central.git");
    sh(&format!("git init -q --bare -b main {}", central.display()));
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(
        data.join("parc.toml"),
        format!("[profiles]\nremote = \"{}\"\npull_interval_secs = 5\n", central.display()),
    )
    .unwrap();
    let mut srv = start(&data, "127.0.0.1:0");
    let token = srv.admin_token();
    let admin = Api::new(&srv.url, Some(&token));
    let (s, st) = admin.post("/api/v1/profiles/reload", json!({}));
    assert_eq!(s, 200, "{st}");
    assert!(st["last_sync_error"].is_null(), "{st}");
    assert_eq!(git(&central, "log --format=%s main").trim(), "Initial example departments");

    // A technician clones the central repository, edits a department and pushes.
    let work = dir.path().join("work");
    sh(&format!("git clone -q {} {}", central.display(), work.display()));
    let f = work.join("departments/pharmacie.toml");
    let text = std::fs::read_to_string(&f)
        .unwrap()
        .replace("hostname = \"PHA-{counter:4}\"", "hostname = \"PHARMA-{counter:3}\"");
    std::fs::write(&f, text).unwrap();
    git(&work, "commit -qam 'pharmacie: nouveau nommage'");
    git(&work, "push -q origin main");
    let (s, _) = admin.post("/api/v1/profiles/reload", json!({}));
    assert_eq!(s, 200);
    let (_, d) = admin.get("/api/v1/departments/pharmacie");
    assert_eq!(d["hostname_pattern"], "PHARMA-{counter:3}");

    // A change through the API reaches the central repository, authored by the caller.
    let (s, r) = admin.post("/api/v1/machines", json!({ "mac": "52:54:00:ab:cd:01", "department": "pharmacie" }));
    assert_eq!(s, 201, "{r}");
    assert_eq!(r["hostname"], "PHARMA-001");
    let top = git(&central, "log -1 --format='%an|%s' main");
    assert!(top.starts_with("Administrateur parc|add PHARMA-001"), "{top}");
    git(&work, "pull -q origin main");
    assert!(std::fs::read_to_string(work.join("inventory.csv"))
        .unwrap()
        .contains("52:54:00:ab:cd:01,PHARMA-001,pharmacie"));
}

/// `parc task watch` follows tasks to their end (exit 0 only if all succeeded) and the live
/// stream carries progress and journal entries as they happen.
#[test]
fn task_watch_and_the_live_stream_follow_an_agent() {
    let a = appliance("127.0.0.1:0");
    install_netboot(&a);
    let (s, r) = a
        .admin
        .post("/api/v1/machines", json!({ "mac": "52:54:00:f0:00:01", "department": "urgences", "install": true }));
    assert_eq!(s, 201, "{r}");
    let id = r["task"]["id"].as_i64().unwrap().to_string();
    let stream = std::process::Command::new("curl")
        .args([
            "-sSN",
            "--max-time",
            "8",
            "-H",
            &format!("Authorization: Bearer {}", a.admin.token.as_deref().unwrap()),
            &format!("{}/api/v1/events/stream", a.srv.url),
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let watch = std::process::Command::new(env!("CARGO_BIN_EXE_parc"))
        .args(["task", "watch", &id, "--json", "--timeout", "60"])
        .env("PARC_SERVER", &a.srv.url)
        .env("PARC_TOKEN", a.admin.token.as_deref().unwrap())
        .env("PARC_CONFIG", a.dir.path().join("none.toml"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let (agent, _) = agent_hello(&a.admin, "52:54:00:f0:00:01", json!({ "mac": "52:54:00:f0:00:01" }));
    for i in 1..=3u64 {
        let (s, _) = agent.post(
            "/api/v1/agent/progress",
            json!({ "phase": "deploy", "bytes_done": i << 20, "bytes_total": 3u64 << 20 }),
        );
        assert_eq!(s, 200);
        std::thread::sleep(std::time::Duration::from_millis(1200));
    }
    let (s, _) = agent.post("/api/v1/agent/done", json!({ "verified": true, "image_digest": a.image_digest }));
    assert_eq!(s, 200);
    let out = watch.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["ok"], true);
    assert_eq!(r["tasks"][0]["state"], "done");
    let live = String::from_utf8(stream.wait_with_output().unwrap().stdout).unwrap();
    assert!(live.contains("event: progress") && live.contains("\"bytes_done\":3145728"), "{live}");
    assert!(live.contains("event: event") && live.contains("\"kind\":\"task.done\""), "{live}");
}

/// Wake-on-LAN from the CLI and the API: the magic packet leaves for the configured address (a
/// UDP socket of this test on loopback stands for the imaging network's broadcast address), the
/// journal names who woke which machine and why; read-only users cannot, unknown machines are
/// named.
#[test]
fn wake_on_lan_sends_the_magic_packet_and_is_journaled() {
    let wol = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    wol.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    let target = wol.local_addr().unwrap().to_string();
    let a = appliance_with("127.0.0.1:0", &["--wol-target", &target]);
    let mac = "52:54:00:77:aa:01";
    let (s, r) = a.admin.post("/api/v1/machines", json!({ "mac": mac, "department": "radiologie" }));
    assert_eq!(s, 201, "{r}");

    let (code, out, err) = cli(&a, &a.admin, &["machine", "wake", "RAD-0001", "-m", "patch night"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("ok") && out.contains("RAD-0001") && out.contains("Wake-on-LAN"), "{out}");
    let mut buf = [0u8; 512];
    let (n, _) = wol.recv_from(&mut buf).expect("no Wake-on-LAN packet arrived");
    let mut expected = vec![0xffu8; 6];
    for _ in 0..16 {
        expected.extend_from_slice(&[0x52, 0x54, 0x00, 0x77, 0xaa, 0x01]);
    }
    assert_eq!(&buf[..n], &expected[..], "not the magic packet for {mac}");

    let (_, ev) = a.admin.get(&format!("/api/v1/events?machine={mac}&kind=machine.wake"));
    assert_eq!(ev[0]["actor"], "admin", "{ev}");
    assert!(ev[0]["message"].as_str().unwrap().contains("patch night"), "{ev}");

    let reader = user(&a, "lecteur", "Lecteur", "readonly");
    let (s, r) = reader.post(&format!("/api/v1/machines/{mac}/wake"), json!({}));
    assert_eq!(s, 403, "{r}");
    let (s, r) = a.admin.post("/api/v1/machines/52:54:00:77:aa:99/wake", json!({}));
    assert_eq!(s, 404, "{r}");
    assert!(r.to_string().contains("52:54:00:77:aa:99"), "{r}");
    // Nothing was sent for the refused requests.
    wol.set_read_timeout(Some(std::time::Duration::from_millis(300))).unwrap();
    assert!(wol.recv_from(&mut buf).is_err(), "a refused wake sent a packet");
}

/// Where `scripts/test` installs the contract fuzzer (a pinned schemathesis in a virtualenv).
fn schemathesis() -> Option<PathBuf> {
    let st = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/schemathesis/bin/schemathesis");
    if st.exists() {
        return Some(st);
    }
    prerequisite_missing(&format!("{} is missing (scripts/test installs it)", st.display()));
    None
}

/// The OpenAPI document is the API's contract: schemathesis generates requests from it, valid
/// and invalid, for every operation of a real `parc serve`, and checks that no answer is a
/// server error, and that every status code, content type and body is the documented one, and
/// that invalid requests are refused. Bounded: 20 examples per operation and phase, about
/// 30 s on 2 cores.
///
/// The fixture gives the fuzzer something to reach: the admin's token, a second user's
/// password for `/password` (changing the admin's would end the token the run uses), a token
/// to revoke and a user to reset (by fixed parameters: revoking the run's own token or
/// resetting the admin would end the run's access), machines and a queued task to act on,
/// and two agent sessions: one reporting (`done` and `failed` end its task), one whose task
/// stays running for `/agent/task` and the profile files. Excluded: `/events/stream`, which
/// never ends while the server runs.
#[test]
fn openapi_contract_holds_under_schemathesis() {
    let Some(st) = schemathesis() else { return };
    let wol = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let wol_target = wol.local_addr().unwrap().to_string();
    let a = appliance_with("127.0.0.1:0", &["--wol-target", &wol_target]);
    install_netboot(&a);
    let admin = &a.admin;
    let (s, r) = admin.post(
        "/api/v1/users",
        json!({ "login": "fuzz-pw", "name": "Fuzz", "role": "readonly", "password": "fuzz-password-1" }),
    );
    assert_eq!(s, 201, "{r}");
    let (s, r) = admin.post("/api/v1/users", json!({ "login": "fuzz-target", "name": "Target", "role": "readonly" }));
    assert_eq!(s, 201, "{r}");
    let anon = Api::new(&a.srv.url, None);
    let (s, spare) = anon.post_with(
        "/api/v1/tokens",
        json!({ "name": "to revoke" }),
        &[("Authorization", &basic("admin", ADMIN_PASSWORD))],
    );
    assert_eq!(s, 201, "{spare}");
    let machine = |mac: &str, install: bool| {
        let (s, r) =
            admin.post("/api/v1/machines", json!({ "mac": mac, "department": "radiologie", "install": install }));
        assert_eq!(s, 201, "{r}");
        r
    };
    machine("52:54:00:f0:00:01", true);
    machine("52:54:00:f0:00:02", true);
    machine("52:54:00:f0:00:03", false);
    let queued = machine("52:54:00:f0:00:04", true)["task"]["id"].as_i64().unwrap();
    let (running, _) = agent_hello(admin, "52:54:00:f0:00:01", json!({ "mac": "52:54:00:f0:00:01" }));
    let (reporting, _) = agent_hello(admin, "52:54:00:f0:00:02", json!({ "mac": "52:54:00:f0:00:02" }));

    let dir = tempfile::tempdir().unwrap();
    let config = |agent: &Api| {
        format!(
            r#"
[auth.openapi.token]
bearer = "{token}"
[auth.openapi.password]
username = "admin"
password = "{admin_password}"
[auth.openapi.agentToken]
bearer = "{agent}"

[checks.negative_data_rejection]
# 413: an invalid body large enough is refused for its size first.
expected-statuses = [400, 401, 403, 404, 409, 413, 429]

[[operations]]
include-path = "/api/v1/password"
auth = {{ basic = {{ username = "fuzz-pw", password = "fuzz-password-1" }} }}

[[operations]]
include-path = "/api/v1/tokens/{{id}}/revoke"
parameters = {{ id = {spare} }}

[[operations]]
include-path-regex = "^/api/v1/users/[{{]login[}}]"
parameters = {{ login = "fuzz-target" }}

[[operations]]
include-path-regex = "^/api/v1/tasks/[{{]id[}}]"
parameters = {{ id = {queued} }}

[[operations]]
include-path-regex = "^/api/v1/machines/[{{]id[}}]"
parameters = {{ id = "52:54:00:f0:00:03" }}
"#,
            token = admin.token.as_deref().unwrap(),
            admin_password = ADMIN_PASSWORD,
            agent = agent.token.as_deref().unwrap(),
            spare = spare["id"],
        )
    };
    let seed = std::env::var("PARC_FUZZ_SEED").unwrap_or_else(|_| "1".into());
    let run = |name: &str, agent: &Api, filter: &[&str]| {
        let file = dir.path().join(format!("{name}.toml"));
        std::fs::write(&file, config(agent)).unwrap();
        let started = std::time::Instant::now();
        let out = Command::new("timeout")
            .arg("300")
            .arg(&st)
            .arg("--config-file")
            .arg(&file)
            .arg("run")
            .arg(format!("{}/api/v1/openapi.json", a.srv.url))
            .args(["--max-examples", "20", "--workers", "2", "--seed", &seed, "--request-timeout", "20"])
            .args(filter)
            .args([
                "--checks",
                "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,\
                 negative_data_rejection",
            ])
            .current_dir(dir.path())
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "schemathesis ({name}) found mismatches ({:?}):\n{report}", out.status);
        // Only the first-boot report has no credential here (each is single-use, for a done task).
        let refused: Vec<&str> = report
            .lines()
            .skip_while(|l| !l.starts_with("401 Unauthorized ("))
            .skip(1)
            .take_while(|l| !l.trim().is_empty())
            .collect();
        assert!(
            refused.iter().all(|l| l.contains("/agent/first-boot")),
            "schemathesis ({name}) lost its credentials:\n{report}"
        );
        eprintln!("schemathesis ({name}): no mismatch in {:.0?}", started.elapsed());
    };
    // `done` and `failed` end their agent's task: they report with the other session.
    let reports = ["--include-path", "/api/v1/agent/done", "--include-path", "/api/v1/agent/failed"];
    run(
        "api",
        &running,
        &[
            "--exclude-path",
            "/api/v1/events/stream",
            "--exclude-path",
            "/api/v1/agent/done",
            "--exclude-path",
            "/api/v1/agent/failed",
        ],
    );
    run("reports", &reporting, &reports);
    // The run kept its access: its token and the admin's password still work.
    let (s, r) = admin.get("/api/v1/users");
    assert_eq!(s, 200, "{r}");
}

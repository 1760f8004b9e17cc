//! The web console in a real browser: Debian's chromium, headless, driven through chromedriver
//! by a minimal WebDriver client (JSON over HTTP with ureq), against a real `parc serve` with
//! 10,000 machines. Screenshots of every page go to `target/console-screenshots/`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::api::{agent_hello, appliance, install_netboot, Appliance};
use crate::support::*;

/// The W3C name of an element reference in WebDriver answers.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// chromedriver and one browser session; both end when dropped.
struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: ureq::Agent,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.http.delete(&format!("{}/session/{}", self.base, self.session)).call();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn http() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

fn answer(r: Result<ureq::http::Response<ureq::Body>, ureq::Error>, what: &str) -> Value {
    let mut r = r.unwrap_or_else(|e| panic!("webdriver {what}: {e}"));
    let status = r.status().as_u16();
    let text = r.body_mut().read_to_string().unwrap_or_default();
    let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    assert!(status == 200, "webdriver {what}: HTTP {status}: {text}");
    v["value"].clone()
}

impl Browser {
    /// Starts chromedriver and a headless chromium with a fresh profile, French first.
    fn start() -> Browser {
        let port = free_port();
        // A time zone other than the server's UTC, to see the pages show local times.
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .env("TZ", "Europe/Paris")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let base = format!("http://127.0.0.1:{port}");
        let http = http();
        let t0 = Instant::now();
        while http.get(&format!("{base}/status")).call().is_err() {
            assert!(t0.elapsed() < Duration::from_secs(20), "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        let profile = tempfile::tempdir().unwrap();
        // Without the background-networking switches chromium waits on services this closed
        // network does not have.
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1400,900",
            &format!("--user-data-dir={}", profile.path().display()),
        ];
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": "/usr/bin/chromium", "args": args, "prefs": { "intl.accept_languages": "fr-FR,fr" } }
        } } });
        let r = http
            .post(&format!("{base}/session"))
            .header("Content-Type", "application/json")
            .send(&serde_json::to_vec(&caps).unwrap()[..]);
        let v = answer(r, "new session");
        let session = v["sessionId"].as_str().expect("a session id").to_string();
        Browser { driver, base, session, http, _profile: profile }
    }

    fn post(&self, path: &str, body: Value) -> Value {
        let r = self
            .http
            .post(&format!("{}/session/{}{path}", self.base, self.session))
            .header("Content-Type", "application/json")
            .send(&serde_json::to_vec(&body).unwrap()[..]);
        answer(r, path)
    }

    fn get(&self, path: &str) -> Value {
        answer(self.http.get(&format!("{}/session/{}{path}", self.base, self.session)).call(), path)
    }

    fn goto(&self, url: &str) {
        self.post("/url", json!({ "url": url }));
    }

    fn find(&self, css: &str) -> String {
        let v = self.post("/element", json!({ "using": "css selector", "value": css }));
        v[ELEMENT].as_str().unwrap_or_else(|| panic!("no element {css}: {v}")).to_string()
    }

    fn count(&self, css: &str) -> usize {
        self.post("/elements", json!({ "using": "css selector", "value": css })).as_array().map_or(0, Vec::len)
    }

    fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css);
        self.post(&format!("/element/{e}/clear"), json!({}));
        self.post(&format!("/element/{e}/value"), json!({ "text": text }));
    }

    fn click(&self, css: &str) {
        let e = self.find(css);
        self.post(&format!("/element/{e}/click"), json!({}));
    }

    fn text(&self, css: &str) -> String {
        let e = self.find(css);
        self.get(&format!("/element/{e}/text")).as_str().unwrap_or("").to_string()
    }

    /// The element's exact `textContent` (WebDriver's text turns no-break spaces into spaces).
    fn content(&self, css: &str) -> String {
        let css = serde_json::to_string(css).unwrap();
        self.js(&format!("return document.querySelector({css}).textContent;")).as_str().unwrap_or("").to_string()
    }

    fn js(&self, script: &str) -> Value {
        self.post("/execute/sync", json!({ "script": script, "args": [] }))
    }

    fn url(&self) -> String {
        self.get("/url").as_str().unwrap_or("").to_string()
    }

    fn source(&self) -> String {
        self.get("/source").as_str().unwrap_or("").to_string()
    }

    fn cookie(&self, name: &str) -> String {
        self.get(&format!("/cookie/{name}"))["value"].as_str().expect("cookie").to_string()
    }

    /// Polls `check` until it holds (10 s at most).
    fn wait_for(&self, what: &str, check: impl Fn(&Browser) -> bool) {
        let t0 = Instant::now();
        while !check(self) {
            assert!(t0.elapsed() < Duration::from_secs(10), "timed out waiting for {what}; page: {}", self.source());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A screenshot of the whole page (the window is stretched to the page's height first).
    fn screenshot(&self, name: &str) {
        let h = self.js("return document.documentElement.scrollHeight;").as_u64().unwrap_or(900).clamp(600, 6000);
        self.post("/window/rect", json!({ "width": 1400, "height": h + 100 }));
        let png = base64_decode(self.get("/screenshot").as_str().expect("base64 PNG"));
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
        self.post("/window/rect", json!({ "width": 1400, "height": 900 }));
    }

    fn login(&self, server: &str, login: &str, password: &str) {
        self.goto(&format!("{server}/login"));
        self.type_into("#login", login);
        self.type_into("#password", password);
        self.click("#login-submit");
        self.wait_for("the dashboard after login", |b| b.url() == format!("{server}/"));
    }
}

fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("console-screenshots")
}

fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => (c - b'A') as u32,
            b'a'..=b'z' => (c - b'a' + 26) as u32,
            b'0'..=b'9' => (c - b'0' + 52) as u32,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c}"),
        }
    };
    let s: Vec<u8> = s.bytes().filter(|c| !c.is_ascii_whitespace() && *c != b'=').collect();
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    for chunk in s.chunks(4) {
        let mut acc = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            acc |= val(c) << (18 - 6 * i);
        }
        out.extend_from_slice(&acc.to_be_bytes()[1..chunk.len()]);
    }
    out
}

/// A plain HTTP client acting with a browser's session cookie (to time pages and to forge
/// requests a page would never send).
struct Cookie {
    http: ureq::Agent,
    base: String,
    cookie: String,
}

impl Cookie {
    fn get(&self, path: &str) -> (u16, String) {
        let r = self.http.get(&format!("{}{path}", self.base)).header("Cookie", &self.cookie).call();
        let mut r = r.expect("request");
        (r.status().as_u16(), r.body_mut().read_to_string().unwrap_or_default())
    }
    fn post_form(&self, path: &str, form: &str) -> (u16, String) {
        let r = self
            .http
            .post(&format!("{}{path}", self.base))
            .header("Cookie", &self.cookie)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .send(form.as_bytes());
        let mut r = r.expect("request");
        (r.status().as_u16(), r.body_mut().read_to_string().unwrap_or_default())
    }
}

fn browser_or_skip() -> bool {
    have("chromium", "chromium") && have("chromedriver", "chromium-driver")
}

const DEPARTMENTS: [(&str, &str); 4] =
    [("radiologie", "RAD"), ("urgences", "URG"), ("pharmacie", "PHA"), ("administration", "ADM")];

fn mac(i: usize) -> String {
    format!("52:54:00:{:02x}:{:02x}:{:02x}", i >> 16, (i >> 8) & 0xff, i & 0xff)
}

/// 10,000 machines in one batch (one commit), spread over the example departments.
fn add_fleet(a: &Appliance) {
    let ops: Vec<Value> = (0..10_000)
        .map(|i| {
            let (dep, prefix) = DEPARTMENTS[i % 4];
            json!({ "op": "add", "mac": mac(i), "department": dep, "hostname": format!("{prefix}-{:04}", i / 4 + 1),
                    "location": format!("Bât {}, salle {}", ["A", "B", "C"][i % 3], i % 40), "asset_tag": format!("INV-{i:05}") })
        })
        .collect();
    let t0 = Instant::now();
    let (s, r) = a.admin.post("/api/v1/batch", json!({ "operations": ops, "reason": "parc de test" }));
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["succeeded"], 10_000, "{}", r["results"][0]);
    eprintln!("console: 10,000 machines added in one batch in {:.1} s", t0.elapsed().as_secs_f64());
}

fn create_user(a: &Appliance, login: &str, name: &str, role: &str, password: &str) {
    let (s, u) = a.admin.post(
        "/api/v1/users",
        json!({ "login": login, "name": name, "role": role, "password": password, "email": format!("{login}@hopital.example") }),
    );
    assert_eq!(s, 201, "{u}");
}

/// Median of `n` timed GETs.
fn median_ms(c: &Cookie, path: &str, n: usize) -> f64 {
    let mut t: Vec<f64> = (0..n)
        .map(|_| {
            let t0 = Instant::now();
            let (s, _) = c.get(path);
            assert_eq!(s, 200, "{path}");
            t0.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[n / 2]
}

#[test]
fn a_technician_moves_a_machine_among_10000_and_watches_it_live() {
    if !browser_or_skip() {
        return;
    }
    let a = appliance("127.0.0.1:0");
    install_netboot(&a);
    add_fleet(&a);
    create_user(&a, "alice", "Alice Martin", "technician", "alice-password-1");
    create_user(&a, "chef", "Chef de service", "readonly", "chef-password-12");
    let srv = a.srv.url.clone();
    let b = Browser::start();

    b.goto(&format!("{srv}/login"));
    b.wait_for("the login form", |b| b.count("#login") == 1);
    assert!(b.source().contains("<html lang=\"fr\">"), "French by default");
    b.screenshot("login");
    // A wrong password is refused with a message, and journaled.
    b.type_into("#login", "alice");
    b.type_into("#password", "not-her-password");
    b.click("#login-submit");
    b.wait_for("the refusal", |b| b.count("#login-error") == 1);
    assert!(b.text("#login-error").contains("incorrect"), "{}", b.text("#login-error"));
    b.login(&srv, "alice", "alice-password-1");
    b.screenshot("dashboard-empty");

    // Find one machine among 10,000 with the search box.
    b.click("a[href='/machines']");
    b.wait_for("the machine list", |b| b.count("table.machines tbody tr") == 50);
    assert!(b.text("h1").contains("10\u{202f}000"), "{}", b.text("h1"));
    b.screenshot("machines");
    b.type_into("#q", "INV-07778");
    b.click("#filter-submit");
    b.wait_for("one result", |b| b.count("table.machines tbody tr") == 1);
    let target = mac(7778);
    assert_eq!(b.text("table.machines tbody td.mono"), target);
    let old_name = b.text("table.machines tbody td a");
    assert_eq!(old_name, "PHA-1945");

    // Timings of the list with 10,000 machines, with the browser's own session.
    let c = Cookie { http: http(), base: srv.clone(), cookie: format!("parc_session={}", b.cookie("parc_session")) };
    let full = median_ms(&c, "/machines", 7);
    let search = median_ms(&c, "/machines?q=INV-07778", 7);
    let last_page = median_ms(&c, "/machines?offset=9950&department=", 7);
    eprintln!("console: /machines with 10,000 machines, median of 7: first page {full:.1} ms, search {search:.1} ms, last page {last_page:.1} ms");
    assert!(full < 2000.0, "the machine list must stay fast with 10,000 machines ({full:.0} ms)");

    // Its page, and a move to Radiologie.
    b.click("table.machines tbody td a");
    b.wait_for("the machine page", |b| b.count("#form-move") == 1);
    b.js("document.querySelector('#move-department').value = 'radiologie';");
    b.type_into("#move-reason", "réorganisation <b>du service</b>");
    b.click("#move-submit");
    b.wait_for("the queued move", |b| b.count("#active-task") == 1);
    let flash = b.text(".flash");
    assert!(flash.contains("move PHA-1945") && flash.contains("to radiologie"), "{flash}");
    let new_name = b.text("h1");
    assert!(new_name.starts_with("RAD-"), "{new_name}");
    assert_eq!(b.content("#active-task .pct"), "0\u{a0}%");

    // A simulated agent boots, reports a model with HTML in it, and progresses: the open page
    // follows without being reloaded.
    let evil = "<img src=x onerror=alert(1)>EliteDesk";
    let (agent, _) =
        agent_hello(&a.admin, &target, json!({ "mac": target, "model": evil, "memory_bytes": 8u64 << 30 }));
    b.js("window.__notReloaded = true;");
    for (done, total) in [(25u64, 100u64), (75, 100)] {
        let p =
            json!({ "phase": "deploy", "bytes_done": done << 20, "bytes_total": total << 20, "rate_bps": 40u64 << 20 });
        assert_eq!(agent.post("/api/v1/agent/progress", p).0, 200);
        let want = format!("{done}\u{a0}%");
        b.wait_for("the progress bar to move", |b| b.content("#active-task .pct") == want);
        assert_eq!(b.js("return window.__notReloaded === true;"), json!(true), "updated live, not by a reload");
        assert_eq!(
            b.js("return document.querySelector('#active-task .bar span').style.width;"),
            json!(format!("{done}%"))
        );
    }
    assert!(b.text("#active-task [data-field=rate]").contains("Mio/s"), "{}", b.text("#active-task"));
    assert_eq!(b.text("#machine-status"), "installation", "the machine's status follows its running task");
    b.screenshot("machine-deploying");
    let (s, _) = agent.post("/api/v1/agent/done", json!({ "verified": true, "image_digest": a.image_digest }));
    assert_eq!(s, 200);
    // The end of the task re-reads the page: installed, with the reported model shown as text.
    b.wait_for("the finished task", |b| b.count("#active-task") == 0 && b.count("#machine-model") == 1);
    assert_eq!(b.text("#machine-model"), evil, "the model is shown as text");
    assert_eq!(b.js("return document.querySelectorAll('#machine-model img, img[src=x]').length;"), json!(0));
    assert!(b.text("#machine-status").contains("installée"), "{}", b.text("#machine-status"));
    b.screenshot("machine");

    // The journal shows the move by Alice, and exports it.
    b.click("a[href='/journal']");
    b.type_into("#j-kind", "machine.move");
    b.click("#journal-filter");
    b.wait_for("the filtered journal", |b| b.url().contains("kind=machine.move"));
    let rows = b.text("table tbody");
    assert!(
        rows.contains("alice") && rows.contains(&format!("move PHA-1945 ({target}) from pharmacie to radiologie")),
        "{rows}"
    );
    b.goto(&format!("{srv}/journal"));
    // Times are written in UTC by the server and shown in the browser's zone.
    let ms = b.js("return document.querySelector('time[data-ms]').dataset.ms;");
    let secs = ms.as_str().unwrap().parse::<i64>().unwrap() / 1000;
    let paris = sh(&format!("TZ=Europe/Paris date -d @{secs} '+%d/%m/%Y %H:%M'"));
    assert_eq!(b.content("time[data-ms]"), paris.trim());
    assert!(b.text("#tz").contains("Europe/Paris"), "{}", b.text("#tz"));
    b.screenshot("journal");
    let (s, csv) = c.get("/journal.csv?kind=machine.move");
    assert_eq!(s, 200);
    assert!(
        csv.starts_with("id,time_utc,actor,kind,mac,task,message\n") && csv.contains(",alice,machine.move,"),
        "{csv}"
    );

    // A form posted without its CSRF token is refused, in the browser and by hand.
    b.goto(&format!("{srv}/machines/{target}"));
    b.wait_for("the machine page", |b| b.count("#form-retire") == 1);
    b.js("document.querySelector('#form-retire input[name=_csrf]').remove(); document.querySelector('#form-retire').submit();");
    b.wait_for("the refusal page", |b| b.count("#error-message") == 1);
    assert!(b.text("#error-message").contains("jeton de sécurité"), "{}", b.text("#error-message"));
    b.screenshot("csrf-refused");
    let (s, _) = c.post_form(&format!("/machines/{target}/retire"), "reason=x");
    assert_eq!(s, 403);
    let (_, m) = a.admin.get(&format!("/api/v1/machines/{target}"));
    assert_ne!(m["status"], "retired", "nothing was done");

    // The other pages, with a broken department file committed by hand and a bulk preview.
    let repo = a.data.join("profiles");
    std::fs::write(repo.join("departments/bloc.toml"), "name = \"Bloc opératoire\"\nimage = 42\n").unwrap();
    sh(&format!(
        "git -C {} -c user.name=Ingé -c user.email=inge@example.org add -A && git -C {} -c user.name=Ingé -c user.email=inge@example.org commit -qm 'bloc'",
        repo.display(),
        repo.display()
    ));
    assert_eq!(a.admin.post("/api/v1/profiles/reload", json!({})).0, 200);
    b.click("a[href='/departments']");
    b.wait_for("the departments", |b| b.count("#problems") == 1);
    let problems = b.text("#problems");
    assert!(problems.contains("departments/bloc.toml") && problems.contains('2'), "{problems}");
    b.screenshot("departments");
    b.click("a[href='/images']");
    b.wait_for("the images", |b| b.count("#debian-poste") == 1);
    b.screenshot("images");
    b.click("a[href='/tasks']");
    b.wait_for("the tasks", |b| b.count("#bulk-csv") == 1);
    b.js("document.querySelector('#bulk-op').value = 'move';");
    b.type_into("#bulk-csv", "machine,department\nURG-0001,pharmacie\nURG-0002,cardiologie\nURG-9999,pharmacie\n");
    b.click("#bulk-preview");
    b.wait_for("the preview", |b| b.count("#bulk-report") == 1);
    assert_eq!((b.text("#bulk-ok"), b.text("#bulk-failed")), ("1".to_string(), "2".to_string()));
    let (_, m) = a.admin.get("/api/v1/machines/URG-0001");
    assert_eq!(m["department"], "urgences", "a preview changes nothing");
    b.screenshot("tasks-preview");
    b.click("#bulk-confirm");
    b.wait_for("the result", |b| b.count("#bulk-confirm") == 0 && b.count("#bulk-report") == 1);
    let (_, m) = a.admin.get(&format!("/api/v1/machines/{}", mac(1)));
    assert_eq!((m["department"].as_str(), m["status"].as_str()), (Some("pharmacie"), Some("queued")), "{m}");
    b.screenshot("tasks");
    // The campaign that bulk operation made, with its machines.
    b.click("#campaigns tbody a");
    b.wait_for("the campaign", |b| b.url().contains("batch="));
    assert!(b.text("#campaigns tbody").contains("alice"), "{}", b.text("#campaigns"));
    assert_eq!(b.count("[data-task-row]"), 1);
    b.screenshot("campaign");
    b.click("a[href='/']");
    b.wait_for("the dashboard", |b| b.count(".counters") == 1);
    assert_eq!(b.text("#count-moved"), "1");
    b.screenshot("dashboard");
    // A task queued elsewhere (here through the API) shows up on the open dashboard.
    let (s, r) = a.admin.post("/api/v1/machines/ADM-0001/reimage", json!({ "reason": "poste lent" }));
    assert_eq!(s, 200, "{r}");
    b.wait_for("the new task on the dashboard", |b| b.source().contains(">ADM-0001<"));
    b.click("a[hreflang=en]");
    b.wait_for("English", |b| b.source().contains("<html lang=\"en\">"));
    assert!(b.text("h1").contains("Dashboard"));
    b.screenshot("dashboard-en");
    b.click("a[hreflang=fr]");

    // A read-only user: no action forms, and a forged POST with a valid token is refused.
    b.click("form[action='/logout'] button");
    b.wait_for("the login page", |b| b.url().contains("/login"));
    b.login(&srv, "chef", "chef-password-12");
    b.goto(&format!("{srv}/machines/{target}"));
    b.wait_for("the machine page", |b| b.count("#readonly-note") == 1);
    assert_eq!(b.count("form.action, #cancel-task, #bulk"), 0);
    b.screenshot("machine-readonly");
    let chef = Cookie { http: http(), base: srv.clone(), cookie: format!("parc_session={}", b.cookie("parc_session")) };
    let csrf = b.js("return document.querySelector('input[name=_csrf]').value;");
    let (s, body) = chef.post_form(&format!("/machines/{target}/retire"), &format!("_csrf={}", csrf.as_str().unwrap()));
    assert_eq!(s, 403, "{body}");
    assert!(body.contains("readonly"), "{body}");
    let (s, _) = chef.post_form(
        "/tasks/bulk",
        &format!("_csrf={}&step=confirm&op=install&csv=machine%0AURG-0003%0A", csrf.as_str().unwrap()),
    );
    assert_eq!(s, 403);

    // An admin's accounts page.
    create_user(&a, "root", "Responsable technique", "admin", "root-password-12");
    b.click("form[action='/logout'] button");
    b.wait_for("the login page", |b| b.url().contains("/login"));
    b.login(&srv, "root", "root-password-12");
    b.click("a[href='/users']");
    b.type_into("#user-login", "nina");
    b.type_into("input[name=name]", "Nina <Technicienne>");
    b.click("#user-submit");
    b.wait_for("the new account", |b| b.count("#one-time-password") == 1);
    assert!(b.text("table").contains("Nina <Technicienne>"), "{}", b.text("table"));
    b.screenshot("users");
}

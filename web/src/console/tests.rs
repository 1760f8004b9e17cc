//! The console in-process (`app(state).oneshot`): sessions, CSRF, roles, throttling, escaping,
//! every page rendering. The browser tests (`tests/it/console.rs`) drive the same pages in
//! chromium against a real server.

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use tower::ServiceExt;

use crate::auth::{hash_password, Caller};
use crate::db::{EventQuery, Hardware, Role};
use crate::ops::{self, NewMachine, Op};
use crate::AppState;

struct Resp {
    status: StatusCode,
    cookies: Vec<String>,
    /// Whole `Set-Cookie` values, attributes included.
    raw_cookies: Vec<String>,
    location: Option<String>,
    body: String,
    csp: String,
}

async fn send(st: &AppState, method: &str, uri: &str, cookie: &str, form: Option<&str>) -> Resp {
    send_with(st, method, uri, cookie, form, &[]).await
}

async fn send_with(
    st: &AppState,
    method: &str,
    uri: &str,
    cookie: &str,
    form: Option<&str>,
    headers: &[(&str, &str)],
) -> Resp {
    let mut r = Request::builder().method(method).uri(uri).header(header::ACCEPT_LANGUAGE, "fr-FR");
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    if !cookie.is_empty() {
        r = r.header(header::COOKIE, cookie);
    }
    let r = match form {
        Some(f) => r.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded").body(Body::from(f.to_string())),
        None => r.body(Body::empty()),
    }
    .unwrap();
    let resp = crate::app(st.clone()).oneshot(r).await.unwrap();
    let status = resp.status();
    let cookies = resp
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_string())
        .collect();
    let raw_cookies: Vec<String> =
        resp.headers().get_all(header::SET_COOKIE).iter().map(|v| v.to_str().unwrap().to_string()).collect();
    let csp =
        resp.headers().get("content-security-policy").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    let location = resp.headers().get(header::LOCATION).map(|v| v.to_str().unwrap().to_string());
    let body = String::from_utf8(axum::body::to_bytes(resp.into_body(), 10 << 20).await.unwrap().to_vec()).unwrap();
    Resp { status, cookies, raw_cookies, location, body, csp }
}

fn hidden(body: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    body.split(&marker)
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap_or_else(|| panic!("no {name} in {body}"))
        .to_string()
}

/// Logs in through the form; returns the session cookie.
async fn login(st: &AppState, user: &str, password: &str) -> Resp {
    let page = send(st, "GET", "/login", "", None).await;
    let csrf_cookie = page.cookies.iter().find(|c| c.starts_with("parc_login_csrf=")).unwrap().clone();
    let token = hidden(&page.body, "_csrf");
    let form = format!("_csrf={token}&login={user}&password={password}&next=%2Fmachines");
    send(st, "POST", "/login", &csrf_cookie, Some(&form)).await
}

fn session_cookie(r: &Resp) -> String {
    r.cookies
        .iter()
        .find(|c| c.starts_with("parc_session="))
        .unwrap_or_else(|| panic!("no session: {}", r.body))
        .clone()
}

fn state() -> (tempfile::TempDir, AppState) {
    let tmp = tempfile::tempdir().unwrap();
    let (st, _) = AppState::open(tmp.path(), None).unwrap();
    st.db
        .create_user(
            "alice",
            "Alice Martin",
            "alice@example.org",
            Role::Technician,
            Some(&hash_password("alice-password-1")),
            false,
        )
        .unwrap();
    st.db
        .create_user(
            "chef",
            "Chef <b>Radio</b>",
            "chef@example.org",
            Role::Readonly,
            Some(&hash_password("chef-password-12")),
            false,
        )
        .unwrap();
    (tmp, st)
}

#[tokio::test]
async fn login_sessions_csrf_roles_and_escaping() {
    let (_tmp, st) = state();
    // Pages need a session.
    let r = send(&st, "GET", "/machines?q=x", "", None).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(r.location.as_deref(), Some("/login?next=%2Fmachines%3Fq%3Dx"));
    // A login form posted without its token is refused.
    let r = send(&st, "POST", "/login", "", Some("login=alice&password=alice-password-1")).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.body.contains("jeton de sécurité"), "{}", r.body);

    let r = login(&st, "alice", "alice-password-1").await;
    assert_eq!((r.status, r.location.as_deref()), (StatusCode::SEE_OTHER, Some("/machines")));
    let alice = session_cookie(&r);
    let page = send(&st, "GET", "/machines", &alice, None).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("Alice Martin") && page.body.contains("technicien"), "{}", page.body);
    let csrf = hidden(&page.body, "_csrf");

    // A machine whose agent reported HTML as its model.
    let caller = Caller(st.db.user_by_login("alice").unwrap().unwrap());
    let add =
        Op::Add(NewMachine { mac: "52:54:00:00:00:01".into(), department: "urgences".into(), ..Default::default() });
    let report = ops::run(&st, &caller, &[add], None).unwrap();
    assert_eq!(report.succeeded, 1, "{report:?}");
    st.db
        .record_hello(
            &Hardware {
                mac: "52:54:00:00:00:01".into(),
                serial: None,
                uuid: None,
                model: Some("<script>alert(1)</script>".into()),
                memory_bytes: 0,
                disks: vec![],
                firmware: Some(crate::db::Firmware { uefi: true, secure_boot: Some(true) }),
            },
            None,
        )
        .unwrap();
    let page = send(&st, "GET", "/machines/52:54:00:00:00:01", &alice, None).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("UEFI, Secure Boot"), "the firmware line: {}", page.body);
    assert!(!page.body.contains("<script>alert(1)"), "model not escaped");
    assert!(
        page.body.contains("&#60;script&#62;alert(1)&#60;/script&#62;") || page.body.contains("&lt;script&gt;alert(1)"),
        "{}",
        page.body
    );
    assert!(page.body.contains("id=\"form-move\""));
    assert!(page.csp.contains("script-src 'self'") && page.csp.contains("frame-ancestors 'none'"), "{}", page.csp);

    // An action without the CSRF token is refused and changes nothing.
    let r = send(&st, "POST", "/machines/52:54:00:00:00:01/retire", &alice, Some("reason=test")).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = send(&st, "POST", "/machines/52:54:00:00:00:01/retire", &alice, Some("_csrf=wrong&reason=test")).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(st.profiles.snapshot().inventory.machines().all(|m| m.status == parc_profiles::MachineStatus::Active));

    // A read-only user sees no action form, and a forged POST with its own valid token is refused.
    let chef = session_cookie(&login(&st, "chef", "chef-password-12").await);
    let page = send(&st, "GET", "/machines/52:54:00:00:00:01", &chef, None).await;
    assert!(!page.body.contains("id=\"form-move\"") && page.body.contains("id=\"readonly-note\""));
    assert!(
        page.body.contains("Chef &#60;b&#62;Radio&#60;/b&#62;") || page.body.contains("Chef &lt;b&gt;"),
        "user name escaped"
    );
    let chef_csrf = hidden(&page.body, "_csrf");
    let r = send(&st, "POST", "/machines/52:54:00:00:00:01/retire", &chef, Some(&format!("_csrf={chef_csrf}"))).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.body.contains("readonly"), "{}", r.body);
    // Both kinds of refusal are in the journal, with who tried.
    let refused = st.db.events(&EventQuery { limit: 20, ..Default::default() }).unwrap();
    assert!(refused.iter().any(|e| e.kind == "access.refused" && e.actor == "chef"), "{refused:?}");
    assert!(refused.iter().any(|e| e.kind == "csrf.refused" && e.actor == "alice" && e.message.contains("/retire")));

    // A refused action shows its reason next to the form (the department is unknown).
    let r = send(
        &st,
        "POST",
        "/machines/52:54:00:00:00:01/move",
        &alice,
        Some(&format!("_csrf={csrf}&department=cardiologie")),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.body.contains("field-error") && r.body.contains("unknown department"), "{}", r.body);
    // Editing with a stale etag is a conflict shown next to the form; with the current one it
    // is a commit.
    let page = send(&st, "GET", "/machines/52:54:00:00:00:01", &alice, None).await;
    let etag = hidden(&page.body, "etag");
    let edit = |etag: &str, location: &str| {
        format!("_csrf={csrf}&etag={etag}&hostname=URG-0001&serial=&asset_tag=&location={location}&notes=&reason=")
    };
    let r = send(&st, "POST", "/machines/52:54:00:00:00:01/edit", &alice, Some(&edit("0000", "Box+3"))).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert!(r.body.contains("id=\"edit-error\"") && r.body.contains("reload"), "{}", r.body);
    let r = send(&st, "POST", "/machines/52:54:00:00:00:01/edit", &alice, Some(&edit(&etag, "Box+3"))).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let m = st.profiles.snapshot().inventory.get(&"52:54:00:00:00:01".parse().unwrap()).cloned().unwrap();
    assert_eq!((m.location.as_str(), m.hostname.as_str()), ("Box 3", "URG-0001"));

    // Wake-on-LAN from the page: the magic packet leaves (for a loopback socket standing for
    // the imaging network's broadcast address) and the journal names Alice.
    let wol = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    wol.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
    let mut waking = st.clone();
    waking.wake.target = wol.local_addr().unwrap();
    let r = send(&waking, "POST", "/machines/52:54:00:00:00:01/wake", &alice, Some(&format!("_csrf={csrf}"))).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let mut buf = [0u8; 200];
    let (n, _) = wol.recv_from(&mut buf).expect("no Wake-on-LAN packet");
    assert_eq!((n, &buf[..12]), (102, &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x52, 0x54, 0, 0, 0, 1][..]));
    let ev = st.db.events(&EventQuery { kind: Some("machine.wake".into()), limit: 5, ..Default::default() }).unwrap();
    assert_eq!(ev[0].actor, "alice");

    // The technician retires it: a commit by Alice, a journal entry, a flash message.
    let r =
        send(&st, "POST", "/machines/52:54:00:00:00:01/retire", &alice, Some(&format!("_csrf={csrf}&reason=broken")))
            .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let ev = st.db.events(&EventQuery { kind: Some("machine.retire".into()), limit: 5, ..Default::default() }).unwrap();
    assert_eq!(ev[0].actor, "alice");
    let history = st.profiles.with_repo(|r| r.machine_history(&"52:54:00:00:00:01".parse().unwrap(), 10)).unwrap();
    assert_eq!(history[0].author_name, "Alice Martin");

    // Adding a machine from the list page: a bad MAC is shown next to its field, with what
    // was typed kept; a good one lands on the new machine's page.
    let r = send(
        &st,
        "POST",
        "/machines",
        &alice,
        Some(&format!("_csrf={csrf}&mac=52-54-zz&department=pharmacie&location=Salle+2")),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.body.contains("id=\"add-mac-error\"") && r.body.contains("value=\"Salle 2\""), "{}", r.body);
    let r = send(
        &st,
        "POST",
        "/machines",
        &alice,
        Some(&format!("_csrf={csrf}&mac=52:54:00:00:00:02&department=pharmacie&location=Salle+2")),
    )
    .await;
    assert_eq!(
        (r.status, r.location.as_deref()),
        (StatusCode::SEE_OTHER, Some("/machines/52:54:00:00:00:02")),
        "{}",
        r.body
    );

    // Accounts are an admin's page: a technician gets 403; an admin creates one and sees its
    // one-time password once.
    assert_eq!(send(&st, "GET", "/users", &alice, None).await.status, StatusCode::FORBIDDEN);
    st.db
        .create_user("root", "Admin", "root@example.org", Role::Admin, Some(&hash_password("root-password-12")), false)
        .unwrap();
    let root = session_cookie(&login(&st, "root", "root-password-12").await);
    let page = send(&st, "GET", "/users", &root, None).await;
    assert_eq!(page.status, StatusCode::OK);
    let root_csrf = hidden(&page.body, "_csrf");
    let r =
        send(&st, "POST", "/users", &root, Some(&format!("_csrf={root_csrf}&login=bad+login&name=X&role=technician")))
            .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.body.contains("id=\"user-login-error\""), "{}", r.body);
    let r = send(
        &st,
        "POST",
        "/users",
        &root,
        Some(&format!("_csrf={root_csrf}&login=dora&name=Dora+Petit&role=readonly")),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let pw = r.body.split("id=\"one-time-password\">").nth(1).unwrap().split('<').next().unwrap().to_string();
    assert_eq!(login(&st, "dora", &pw).await.location.as_deref(), Some("/password"), "must change it first");
    // The admin changes dora's role, disables her (her sessions end), re-enables her and resets
    // her password (shown once, on the page); a technician can do none of it.
    let dora = session_cookie(&login(&st, "dora", &pw).await);
    let r = send(&st, "POST", "/users/dora/update", &root, Some(&format!("_csrf={root_csrf}&role=technician"))).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert_eq!(st.db.user_by_login("dora").unwrap().unwrap().role, Role::Technician);
    let r = send(&st, "POST", "/users/dora/update", &root, Some(&format!("_csrf={root_csrf}&disabled=1"))).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert!(st.db.user_by_login("dora").unwrap().unwrap().disabled);
    assert_ne!(
        send(&st, "GET", "/password", &dora, None).await.status,
        StatusCode::OK,
        "a disabled user's session lives on"
    );
    let r = send(&st, "POST", "/users/root/update", &root, Some(&format!("_csrf={root_csrf}&disabled=1"))).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "an admin disabled itself");
    let r = send(&st, "POST", "/users/dora/update", &root, Some(&format!("_csrf={root_csrf}&disabled=0"))).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let r = send(&st, "POST", "/users/dora/reset", &root, Some(&format!("_csrf={root_csrf}"))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let reset = r.body.split("id=\"reset-password\">").nth(1).unwrap().split('<').next().unwrap().to_string();
    assert_ne!(reset, pw);
    assert_eq!(login(&st, "dora", &reset).await.location.as_deref(), Some("/password"));
    let r = send(&st, "POST", "/users/dora/reset", &alice, Some(&format!("_csrf={root_csrf}"))).await;
    assert_ne!(r.status, StatusCode::OK, "a technician reset a password");
    let kinds: Vec<String> = st
        .db
        .events(&crate::db::EventQuery { limit: 50, ..Default::default() })
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert!(kinds.iter().any(|k| k == "user.update") && kinds.iter().any(|k| k == "user.reset"), "{kinds:?}");
    // Tokens: listed on the page and revoked from it.
    let tid =
        st.db.create_token(st.db.user_by_login("dora").unwrap().unwrap().id, "laptop", "h-dora", i64::MAX).unwrap();
    let page = send(&st, "GET", "/users", &root, None).await;
    assert!(page.body.contains(&format!("id=\"token-{tid}\"")) && page.body.contains("laptop"), "{}", page.body);
    let r = send(&st, "POST", &format!("/tokens/{tid}/revoke"), &root, Some(&format!("_csrf={root_csrf}"))).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert!(st.db.token(tid).unwrap().unwrap().revoked_at.is_some());

    // Every page renders for both languages.
    for path in [
        "/",
        "/machines",
        "/machines?status=retired&q=52%3A54",
        "/departments",
        "/images",
        "/tasks",
        "/journal",
        "/journal?kind=login.",
        "/password",
    ] {
        for lang in ["fr", "en"] {
            let r = send(&st, "GET", path, &format!("{alice}; parc_lang={lang}"), None).await;
            assert_eq!(r.status, StatusCode::OK, "{path} {lang}: {}", r.body);
            assert!(r.body.contains(&format!("<html lang=\"{lang}\">")), "{path}");
        }
    }
    // Each department says which system it installs.
    let r = send(&st, "GET", "/departments", &alice, None).await;
    assert!(r.body.contains("Système") && r.body.contains("Linux"), "{}", r.body);
    // Date filters: a day long ago has nothing; a malformed date is said next to its field.
    let r = send(&st, "GET", "/journal?from=2000-01-01&to=2000-01-01", &alice, None).await;
    assert!(r.body.contains("Aucune entrée."), "{}", r.body);
    let r = send(&st, "GET", "/journal?from=28%2F11", &alice, None).await;
    assert!(r.body.contains("Date attendue"), "{}", r.body);
    let today = crate::console::i18n::iso8601(crate::db::now_ms())[..10].to_string();
    let r = send(&st, "GET", &format!("/journal.csv?from={today}&to={today}&kind=machine.retire"), &alice, None).await;
    assert_eq!(r.body.lines().count(), 2, "{}", r.body);
    let csv = send(&st, "GET", "/journal.csv?actor=alice", &alice, None).await;
    assert!(
        csv.body.starts_with("id,time_utc,actor,kind,mac,task,message\n") && csv.body.contains("machine.retire"),
        "{}",
        csv.body
    );

    // Behind an HTTPS proxy the session cookie is Secure; over plain HTTP it cannot be.
    let plain = login(&st, "alice", "alice-password-1").await;
    let c = plain.raw_cookies.iter().find(|c| c.starts_with("parc_session=")).unwrap();
    assert!(c.contains("HttpOnly") && c.contains("SameSite=Lax") && !c.contains("Secure"), "{c}");
    let page = send(&st, "GET", "/login", "", None).await;
    let csrf_cookie = page.cookies.iter().find(|c| c.starts_with("parc_login_csrf=")).unwrap().clone();
    let form = format!("_csrf={}&login=alice&password=alice-password-1", hidden(&page.body, "_csrf"));
    let tls = send_with(&st, "POST", "/login", &csrf_cookie, Some(&form), &[("x-forwarded-proto", "https")]).await;
    let c = tls.raw_cookies.iter().find(|c| c.starts_with("parc_session=")).unwrap();
    assert!(c.contains("; Secure"), "{c}");

    // Logging out ends the session.
    let r = send(&st, "POST", "/logout", &alice, Some(&format!("_csrf={csrf}"))).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(send(&st, "GET", "/", &alice, None).await.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn throttling_forced_password_change_and_bulk_preview() {
    let (_tmp, st) = state();
    for _ in 0..5 {
        assert_eq!(login(&st, "alice", "wrong").await.status, StatusCode::UNAUTHORIZED);
    }
    // Now even the right password waits, and the journal says why.
    let r = login(&st, "alice", "alice-password-1").await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(
        r.body.contains("Trop d&#39;échecs") || r.body.contains("Trop d'échecs") || r.body.contains("Trop d&#x27;"),
        "{}",
        r.body
    );
    let ev = st.db.events(&EventQuery { kind: Some("login.".into()), limit: 10, ..Default::default() }).unwrap();
    assert!(ev.iter().any(|e| e.kind == "login.throttled"), "{ev:?}");

    // The address is throttled too: another login from it waits as well.
    st.db
        .create_user("bob", "Bob", "bob@example.org", Role::Technician, Some(&hash_password("one-time-pass-1")), true)
        .unwrap();
    assert_eq!(login(&st, "bob", "one-time-pass-1").await.status, StatusCode::TOO_MANY_REQUESTS);
    // (The wait is over.)
    st.db.login_succeeded("ip:unknown").unwrap();

    // An account with a one-time password must change it before anything else.
    let r = login(&st, "bob", "one-time-pass-1").await;
    assert_eq!(r.location.as_deref(), Some("/password"));
    let bob = session_cookie(&r);
    assert_eq!(send(&st, "GET", "/machines", &bob, None).await.location.as_deref(), Some("/password"));
    let page = send(&st, "GET", "/password", &bob, None).await;
    let csrf = hidden(&page.body, "_csrf");
    let r = send(
        &st,
        "POST",
        "/password",
        &bob,
        Some(&format!("_csrf={csrf}&current=one-time-pass-1&new=short&confirm=short")),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.body.contains("12 caractères au moins."));
    let r = send(
        &st,
        "POST",
        "/password",
        &bob,
        Some(&format!("_csrf={csrf}&current=one-time-pass-1&new=a-long-new-password&confirm=a-long-new-password")),
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert_eq!(send(&st, "GET", "/machines", &bob, None).await.status, StatusCode::OK);

    // Bulk: the preview commits nothing; confirming runs the same operations.
    let raw = _tmp.path().join("disk.raw");
    std::fs::write(&raw, vec![7u8; 3 << 20]).unwrap();
    let opts = parc_imager::capture::CaptureOptions::default();
    parc_imager::capture::capture_path(&raw, &st.store, "debian-poste", &opts, &parc_imager::progress::NoProgress)
        .unwrap();
    let head = st.profiles.snapshot().commit.clone();
    let csv = "machine,department\n52:54:00:00:01:01,pharmacie\n52:54:00:00:01:02,cardiologie\n";
    let body =
        format!("_csrf={csrf}&step=preview&op=install&reason=test&csv={}", crate::console::session::url_encode(csv));
    let r = send(&st, "POST", "/tasks/bulk", &bob, Some(&body)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(r.body.contains("id=\"bulk-confirm\"") && r.body.contains("unknown department"), "{}", r.body);
    assert_eq!(st.profiles.snapshot().commit, head, "a preview must not commit");
    assert!(r.body.contains("<strong id=\"bulk-ok\">1</strong>"), "{}", r.body);
    let confirm =
        format!("_csrf={csrf}&step=confirm&op=install&reason=test&csv={}", crate::console::session::url_encode(csv));
    let r = send(&st, "POST", "/tasks/bulk", &bob, Some(&confirm)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(r.body.contains("id=\"bulk-ok\">1<") && !r.body.contains("id=\"bulk-confirm\""), "{}", r.body);
    assert_ne!(st.profiles.snapshot().commit, head, "confirming commits");
    let task = st.db.active_task("52:54:00:00:01:01").unwrap().unwrap();
    assert_eq!(task.created_by, "bob");
    // The campaign has its page: one machine queued, by bob.
    let batch = task.batch.clone().expect("a bulk operation is a campaign");
    let r = send(&st, "GET", &format!("/tasks?batch={batch}"), &bob, None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(r.body.contains(&format!("data-task-row=\"{}\"", task.id)) && r.body.contains(">bob<"), "{}", r.body);
    assert_eq!(send(&st, "GET", "/tasks?batch=nope", &bob, None).await.status, StatusCode::NOT_FOUND);
    // The machine list shows the queued task's progress bar on its row (console.js moves it).
    let r = send(&st, "GET", "/machines?q=52%3A54%3A00%3A00%3A01%3A01", &bob, None).await;
    assert!(
        r.body.contains(&format!("data-task-row=\"{}\"", task.id)) && r.body.contains("class=\"progress\""),
        "{}",
        r.body
    );
    // Verifying the image from its page: intact, then with a chunk file damaged.
    let r = send(&st, "POST", "/images/verify", &bob, Some(&format!("_csrf={csrf}&image=debian-poste@1"))).await;
    assert_eq!((r.status, r.location.as_deref()), (StatusCode::SEE_OTHER, Some("/images")), "{}", r.body);
    let chunk = std::fs::read_dir(st.store.root().join("chunks")).unwrap().next().unwrap().unwrap().path();
    let file = std::fs::read_dir(&chunk).unwrap().next().unwrap().unwrap().path();
    let mut bytes = std::fs::read(&file).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&file, bytes).unwrap();
    let r = send(&st, "POST", "/images/verify", &bob, Some(&format!("_csrf={csrf}&image=debian-poste@1"))).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let ev = st.db.events(&EventQuery { kind: Some("image.verify".into()), limit: 5, ..Default::default() }).unwrap();
    assert_eq!(
        ev.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(),
        ["image.verify.failed", "image.verify"],
        "{ev:?}"
    );
    assert!(ev[0].message.contains("1 chunks corrupt") && ev[1].message.contains("intact"), "{ev:?}");

    // A CSV with a wrong header says so next to the field.
    let bad = format!("_csrf={csrf}&step=preview&op=move&csv=machine%0AA%0A");
    let r = send(&st, "POST", "/tasks/bulk", &bob, Some(&bad)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.body.contains("id=\"bulk-error\"") && r.body.contains("no column"), "{}", r.body);
}

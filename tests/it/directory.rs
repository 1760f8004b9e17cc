//! Technicians' logins through a real directory: Debian's `slapd`, started by the test on
//! loopback over LDAPS with its own CA, a service account that alone may read the tree, groups
//! mapped to roles, and the password-policy overlay refusing a locked account. Then the
//! directory dies: its users cannot log in, the local admin still can.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::api::{basic, Api};
use crate::support::*;

const SUFFIX: &str = "dc=hopital,dc=test";
const ROOT_PW: &str = "root-secret-pw";
const SVC_PW: &str = "svc-parc-pw-1234";

/// A `slapd` of our own: config and database in a temporary directory, LDAPS on loopback.
struct Slapd {
    dir: PathBuf,
    port: u16,
    /// Plain LDAP, for StartTLS.
    plain_port: u16,
    child: Option<Child>,
}

impl Slapd {
    fn url(&self) -> String {
        format!("ldaps://127.0.0.1:{}", self.port)
    }

    fn start(dir: &Path) -> Slapd {
        std::fs::create_dir_all(dir.join("db")).unwrap();
        std::fs::create_dir_all(dir.join("slapd.d")).unwrap();
        write_certificates(dir);
        let d = dir.display();
        let config = format!(
            "dn: cn=config\nobjectClass: olcGlobal\ncn: config\nolcPidFile: {d}/slapd.pid\n\
             olcAllows: bind_anon_dn\n\
             olcTLSCertificateFile: {d}/server.pem\nolcTLSCertificateKeyFile: {d}/server.key\n\n\
             dn: cn=module{{0}},cn=config\nobjectClass: olcModuleList\ncn: module{{0}}\n\
             olcModulePath: /usr/lib/ldap\nolcModuleLoad: back_mdb\nolcModuleLoad: ppolicy\nolcModuleLoad: memberof\n\n\
             dn: cn=schema,cn=config\nobjectClass: olcSchemaConfig\ncn: schema\n\n\
             include: file:///etc/ldap/schema/core.ldif\n\n\
             include: file:///etc/ldap/schema/cosine.ldif\n\n\
             include: file:///etc/ldap/schema/inetorgperson.ldif\n\n\
             dn: olcDatabase={{-1}}frontend,cn=config\nobjectClass: olcDatabaseConfig\nobjectClass: olcFrontendConfig\n\
             olcDatabase: {{-1}}frontend\n\n\
             dn: olcDatabase={{0}}config,cn=config\nobjectClass: olcDatabaseConfig\nolcDatabase: {{0}}config\n\
             olcAccess: {{0}}to * by * none\n\n\
             dn: olcDatabase={{1}}mdb,cn=config\nobjectClass: olcDatabaseConfig\nobjectClass: olcMdbConfig\n\
             olcDatabase: {{1}}mdb\nolcSuffix: {SUFFIX}\nolcRootDN: cn=admin,{SUFFIX}\nolcRootPW: {ROOT_PW}\n\
             olcDbDirectory: {d}/db\nolcDbMaxSize: 16777216\n\
             olcAccess: {{0}}to attrs=userPassword by anonymous auth by * none\n\
             olcAccess: {{1}}to * by dn.exact=\"cn=svc-parc,ou=services,{SUFFIX}\" read by self read by * none\n\n\
             dn: olcOverlay={{0}}memberof,olcDatabase={{1}}mdb,cn=config\nobjectClass: olcOverlayConfig\n\
             objectClass: olcMemberOf\nolcOverlay: {{0}}memberof\nolcMemberOfRefInt: TRUE\n\n\
             dn: olcOverlay={{1}}ppolicy,olcDatabase={{1}}mdb,cn=config\nobjectClass: olcOverlayConfig\n\
             objectClass: olcPPolicyConfig\nolcOverlay: {{1}}ppolicy\n\
             olcPPolicyDefault: cn=default,ou=policies,{SUFFIX}\nolcPPolicyUseLockout: TRUE\n"
        );
        let group = |cn: &str, members: &[&str]| {
            let mut g = format!("dn: cn={cn},ou=groups,{SUFFIX}\nobjectClass: groupOfNames\ncn: {cn}\n");
            for m in members {
                g.push_str(&format!("member: uid={m},ou=people,{SUFFIX}\n"));
            }
            g + "\n"
        };
        let person = |uid: &str, name: &str, groups: &[&str], extra: &str| {
            let mut p = format!(
                "dn: uid={uid},ou=people,{SUFFIX}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {name}\nsn: {name}\n\
                 displayName: {name}\nmail: {uid}@hopital.test\nuserPassword: {uid}-pass-2026\n{extra}"
            );
            // slapadd does not run overlays: memberOf is written as the overlay would keep it.
            for g in groups {
                p.push_str(&format!("memberOf: cn={g},ou=groups,{SUFFIX}\n"));
            }
            p + "\n"
        };
        let mut data =
            format!("dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\no: Hopital\ndc: hopital\n\n");
        for ou in ["people", "groups", "services", "policies"] {
            data.push_str(&format!("dn: ou={ou},{SUFFIX}\nobjectClass: organizationalUnit\nou: {ou}\n\n"));
        }
        data.push_str(&format!(
            "dn: cn=default,ou=policies,{SUFFIX}\nobjectClass: device\nobjectClass: pwdPolicy\ncn: default\n\
             pwdAttribute: userPassword\npwdLockout: TRUE\npwdMaxFailure: 3\npwdLockoutDuration: 0\n\n\
             dn: cn=svc-parc,ou=services,{SUFFIX}\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\n\
             cn: svc-parc\nuserPassword: {SVC_PW}\n\n"
        ));
        data.push_str(&person("mmartin", "Marie Martin", &["parc-techniciens"], ""));
        data.push_str(&person("jdupont", "Jean Dupont", &["parc-admins"], ""));
        data.push_str(&person("lpetit", "Lucie Petit", &["compta"], ""));
        // Locked for good by the password policy: the directory's way of disabling an account.
        data.push_str(&person(
            "cbernard",
            "Claire Bernard",
            &["parc-techniciens"],
            "pwdAccountLockedTime: 000001010000Z\n",
        ));
        data.push_str(&group("parc-techniciens", &["mmartin", "cbernard"]));
        data.push_str(&group("parc-admins", &["jdupont"]));
        data.push_str(&group("compta", &["lpetit"]));
        std::fs::write(dir.join("config.ldif"), config).unwrap();
        std::fs::write(dir.join("data.ldif"), data).unwrap();
        let conf = dir.join("slapd.d");
        slapadd(&["-n0", "-F", conf.to_str().unwrap(), "-l", dir.join("config.ldif").to_str().unwrap()]);
        slapadd(&["-n1", "-F", conf.to_str().unwrap(), "-l", dir.join("data.ldif").to_str().unwrap()]);
        // Like Active Directory, the server takes a DN with an empty password as an anonymous
        // bind that succeeds (RFC 4513 §5.1.2): parc must not take that for a right password.
        let mut s = Slapd { dir: dir.to_path_buf(), port: free_port(), plain_port: free_port(), child: None };
        s.run();
        s
    }

    fn run(&mut self) {
        let url = format!("{}/ ldap://127.0.0.1:{}/", self.url(), self.plain_port);
        let child = Command::new("/usr/sbin/slapd")
            .args(["-d", "0", "-h", &url, "-F", self.dir.join("slapd.d").to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("slapd (package slapd)");
        self.child = Some(child);
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(start.elapsed() < Duration::from_secs(20), "slapd did not listen on {url}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// `ldapmodify` as the directory's administrator.
    fn modify(&self, ldif: &str) {
        let mut c = Command::new("ldapmodify")
            .args(["-H", &self.url(), "-x", "-D", &format!("cn=admin,{SUFFIX}"), "-w", ROOT_PW])
            .env("LDAPTLS_CACERT", self.dir.join("ca.pem"))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("ldapmodify (package ldap-utils)");
        c.stdin.take().unwrap().write_all(ldif.as_bytes()).unwrap();
        assert!(c.wait().unwrap().success(), "ldapmodify failed:\n{ldif}");
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        self.stop();
    }
}

fn slapadd(args: &[&str]) {
    let out = Command::new("/usr/sbin/slapadd").args(args).output().expect("slapadd (package slapd)");
    assert!(out.status.success(), "slapadd {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A CA of the test's own and a certificate it signs for 127.0.0.1.
fn write_certificates(dir: &Path) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name.push(rcgen::DnType::CommonName, "CA annuaire de test");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut leaf = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    leaf.subject_alt_names.push(rcgen::SanType::IpAddress([127, 0, 0, 1].into()));
    let cert = leaf.signed_by(&key, &ca_cert, &ca_key).unwrap();
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
    std::fs::write(dir.join("server.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("server.key"), key.serialize_pem()).unwrap();
}

/// parc.toml's `[directory]` for this slapd; `by_group_search`: groups found under
/// ou=groups by member, else the user entry's memberOf (Active Directory's way), over
/// ldap:// and StartTLS.
fn directory_toml(slapd: &Slapd, work: &Path, by_group_search: bool) -> String {
    let pw = work.join("bind-password");
    std::fs::write(&pw, format!("{SVC_PW}\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (groups, url) = if by_group_search {
        (format!("group_base = \"ou=groups,{SUFFIX}\"\n"), slapd.url())
    } else {
        ("starttls = true\n".to_string(), format!("ldap://127.0.0.1:{}", slapd.plain_port))
    };
    format!(
        "[directory]\nurl = \"{}\"\nca_file = \"{}\"\nbind_dn = \"cn=svc-parc,ou=services,{SUFFIX}\"\n\
         bind_password_file = \"{}\"\nuser_base = \"ou=people,{SUFFIX}\"\nuser_filter = \"(uid={{login}})\"\n{groups}\
         admin_groups = [\"cn=parc-admins,ou=groups,{SUFFIX}\"]\n\
         technician_groups = [\"CN=Parc-Techniciens, OU=Groups, {SUFFIX}\"]\ntimeout_secs = 2\n",
        url,
        slapd.dir.join("ca.pem").display(),
        pw.display()
    )
}

/// `POST /api/v1/tokens` with a login and password: the one way the API takes passwords.
fn token_for(srv: &Server, login: &str, password: &str) -> (u16, Value) {
    Api::new(&srv.url, None).post_with(
        "/api/v1/tokens",
        json!({ "name": "poste" }),
        &[("Authorization", &basic(login, password))],
    )
}

fn events(admin: &Api, kind: &str) -> Vec<String> {
    let (s, e) = admin.get(&format!("/api/v1/events?kind={kind}"));
    assert_eq!(s, 200, "{e}");
    e.as_array().unwrap().iter().map(|e| e["message"].as_str().unwrap_or_default().to_string()).collect()
}

/// A console login through the login form (CSRF double submit), over plain HTTP from the
/// machine itself: the HTTP status of the form's answer.
fn console_login(srv: &Server, work: &Path, login: &str, password: &str) -> u16 {
    let jar = work.join(format!("jar-{login}"));
    let page = sh(&format!("curl -sS -c {} {}/login", jar.display(), srv.url));
    let csrf = page.split("name=\"_csrf\" value=\"").nth(1).and_then(|r| r.split('"').next()).unwrap().to_string();
    let out = sh(&format!(
        "curl -sS -o /dev/null -w '%{{http_code}}' -b {jar} -c {jar} --data-urlencode _csrf={csrf} \
         --data-urlencode login={login} --data-urlencode password={password} {}/login",
        srv.url,
        jar = jar.display()
    ));
    out.trim().parse().unwrap()
}

#[test]
fn technicians_log_in_with_directory_accounts_and_the_local_admin_survives_its_outage() {
    if !have("slapd", "slapd") || !have("ldapmodify", "ldap-utils") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let mut slapd = Slapd::start(&work.path().join("slapd"));
    let data = work.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("parc.toml"), directory_toml(&slapd, work.path(), true)).unwrap();
    let mut srv = start(&data, "127.0.0.1:0");
    let admin_token = srv.admin_token();
    let admin = Api::new(&srv.url, Some(&admin_token));

    // A technician's directory account: the role comes from its group (spelled differently in
    // parc.toml), the account is recorded, its token lasts at most 7 days.
    let (s, t) = token_for(&srv, "MMartin", "mmartin-pass-2026");
    assert_eq!(s, 201, "{t}");
    assert_eq!((t["user"].as_str(), t["role"].as_str()), (Some("mmartin"), Some("technician")), "{t}");
    let days = (t["expires_at"].as_i64().unwrap() - now_ms()) as f64 / 86_400_000.0;
    assert!(days <= 7.01, "a directory account's token lasts {days} days");
    let tech = Api::new(&srv.url, t["token"].as_str());
    assert_eq!(tech.get("/api/v1/machines").0, 200);
    let (_, users) = admin.get("/api/v1/users");
    let mm = users.as_array().unwrap().iter().find(|u| u["login"] == "mmartin").unwrap().clone();
    assert_eq!(mm["directory_dn"], format!("uid=mmartin,ou=people,{SUFFIX}"), "{mm}");
    assert_eq!(mm["name"], "Marie Martin");
    assert!(events(&admin, "user.create").iter().any(|m| m.contains("mmartin") && m.contains("technician")));
    let (s, e) = Api::new(&srv.url, None).post_with(
        "/api/v1/tokens",
        json!({ "name": "long", "expires_in_days": 30 }),
        &[("Authorization", &basic("mmartin", "mmartin-pass-2026"))],
    );
    assert_eq!((s, e["field"].as_str()), (400, Some("expires_in_days")), "{e}");

    // A wrong password, a locked account (right password), a filter in the login, an empty
    // password (an anonymous bind succeeds): all refused, the reason in the journal only.
    let (s, e) = token_for(&srv, "mmartin", "wrong-password");
    assert_eq!(s, 401, "{e}");
    let (s, e) = token_for(&srv, "cbernard", "cbernard-pass-2026");
    assert_eq!(s, 401, "a locked account logged in: {e}");
    assert_eq!(token_for(&srv, "mm*", "mmartin-pass-2026").0, 401, "a wildcard login matched mmartin");
    assert_eq!(token_for(&srv, "mmartin", "").0, 401, "an empty password logged in");
    let failed = events(&admin, "login.failed");
    assert!(failed.iter().any(|m| m.contains("\"cbernard\"") && m.contains("invalid credentials")), "{failed:?}");
    assert!(failed.iter().any(|m| m.contains("\"mm*\"") && m.contains("no entry")), "{failed:?}");

    // Right password, no parc group: told so, journaled.
    let (s, e) = token_for(&srv, "lpetit", "lpetit-pass-2026");
    assert_eq!(s, 403, "{e}");
    assert!(e["error"].as_str().unwrap().contains("no group"), "{e}");
    assert!(events(&admin, "login.no_role").iter().any(|m| m.contains("uid=lpetit")));

    // An admin by its group, on the console too.
    assert_eq!(token_for(&srv, "jdupont", "jdupont-pass-2026").1["role"], "admin");
    assert_eq!(console_login(&srv, work.path(), "jdupont", "jdupont-pass-2026"), 303);
    assert_eq!(console_login(&srv, work.path(), "jdupont", "not-the-password"), 401);

    // What the directory decides is not changed in parc.
    let (s, e) = admin.patch_json("/api/v1/users/mmartin", json!({ "role": "admin" }));
    assert_eq!(s, 409, "{e}");
    let (s, e) = admin.post("/api/v1/users/mmartin/reset-password", json!({}));
    assert_eq!(s, 409, "{e}");
    // Disabling it in parc is parc's to decide.
    assert_eq!(admin.patch_json("/api/v1/users/mmartin", json!({ "disabled": true })).0, 200);
    assert_eq!(token_for(&srv, "mmartin", "mmartin-pass-2026").0, 401);
    assert_eq!(admin.patch_json("/api/v1/users/mmartin", json!({ "disabled": false })).0, 200);
    let (s, t) = token_for(&srv, "mmartin", "mmartin-pass-2026");
    assert_eq!(s, 201, "{t}");
    let tech = Api::new(&srv.url, t["token"].as_str());

    // Out of the group in the directory: the next login is refused and what the account held
    // ends with it.
    slapd.modify(&format!(
        "dn: cn=parc-techniciens,ou=groups,{SUFFIX}\nchangetype: modify\ndelete: member\nmember: uid=mmartin,ou=people,{SUFFIX}\n"
    ));
    assert_eq!(token_for(&srv, "mmartin", "mmartin-pass-2026").0, 403);
    assert_eq!(tech.get("/api/v1/machines").0, 401, "a token outlived its account's group");

    // Active Directory's way: the groups are the user entry's memberOf; StartTLS.
    srv.stop();
    std::fs::write(data.join("parc.toml"), directory_toml(&slapd, work.path(), false)).unwrap();
    let srv = start(&data, "127.0.0.1:0");
    let admin_token = {
        let (s, t) = token_for(&srv, "admin", ADMIN_PASSWORD);
        assert_eq!(s, 201, "{t}");
        t["token"].as_str().unwrap().to_string()
    };
    let admin = Api::new(&srv.url, Some(&admin_token));
    assert_eq!(token_for(&srv, "jdupont", "jdupont-pass-2026").1["role"], "admin");
    assert_eq!(token_for(&srv, "lpetit", "lpetit-pass-2026").0, 403);

    // The directory dies: its users are told, quickly, and the local admin still logs in.
    slapd.stop();
    let asked = Instant::now();
    let (s, e) = token_for(&srv, "jdupont", "jdupont-pass-2026");
    assert_eq!(s, 503, "{e}");
    assert!(e["error"].as_str().unwrap().contains("directory"), "{e}");
    for _ in 0..3 {
        assert_eq!(token_for(&srv, "jdupont", "jdupont-pass-2026").0, 503);
    }
    assert!(asked.elapsed() < Duration::from_secs(10), "logins waited {:?} for a dead directory", asked.elapsed());
    assert_eq!(events(&admin, "directory.unreachable").len(), 1, "one journal line per outage period");
    assert_eq!(token_for(&srv, "admin", ADMIN_PASSWORD).0, 201, "the local admin is locked out with the directory");
    assert_eq!(console_login(&srv, work.path(), "admin", ADMIN_PASSWORD), 303);
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

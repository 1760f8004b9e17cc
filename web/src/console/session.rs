//! Who is using the console: a session cookie (a random secret; SQLite keeps its sha256) made
//! at login with the local account's argon2id password, a per-session CSRF token, login
//! throttling per login and per client address, logout and password change.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header::{COOKIE, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Redirect, Response};

use super::i18n::Lang;
use crate::auth::{new_secret, token_hash, Caller};
use crate::db::{now_ms, NewEvent, User};
use crate::{blocking, AppError, AppState};

pub const SESSION_COOKIE: &str = "parc_session";
/// Before login there is no session to hold a CSRF token: the login form carries a random value
/// that must match this cookie (double submit).
pub const LOGIN_CSRF_COOKIE: &str = "parc_login_csrf";
pub const FLASH_COOKIE: &str = "parc_flash";
/// Idle time after which a session ends (sliding): a workday's shift.
pub const SESSION_TTL_MS: i64 = 10 * 3600 * 1000;
/// Failures allowed before a login or an address has to wait.
pub const FREE_FAILURES: i64 = 5;
const MAX_DELAY_MS: i64 = 15 * 60 * 1000;

/// The value of a cookie of the request.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get_all(COOKIE).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';')).find_map(|c| {
        let (k, v) = c.trim().split_once('=')?;
        (k == name).then(|| v.to_string())
    })
}

/// The request came over HTTPS (directly or through a proxy that says so): cookies get
/// `Secure`.
pub fn is_https(parts: &Parts) -> bool {
    parts.extensions.get::<crate::listener::OverTls>().is_some()
        || parts.uri.scheme_str() == Some("https")
        || parts
            .headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

/// A `Set-Cookie` value: HttpOnly and SameSite=Lax always, Secure over HTTPS. `max_age` 0
/// deletes the cookie.
pub fn set_cookie(name: &str, value: &str, max_age_s: i64, secure: bool) -> HeaderValue {
    let v = format!(
        "{name}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age_s}{}",
        if secure { "; Secure" } else { "" }
    );
    HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static("parc_invalid=1"))
}

pub fn client_ip(parts: &Parts) -> String {
    parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip().to_string()).unwrap_or_else(|| "unknown".into())
}

/// A logged-in console user.
#[derive(Debug, Clone)]
pub struct Session {
    pub user: User,
    pub csrf: String,
    pub token_hash: String,
    pub lang: Lang,
    pub secure: bool,
    /// A message left by the previous request (after a redirect).
    pub flash: Option<String>,
    pub path: String,
}

impl Session {
    pub fn caller(&self) -> Caller {
        Caller(self.user.clone())
    }
}

impl FromRequestParts<AppState> for Session {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Self, Self::Rejection> {
        let path = parts.uri.path_and_query().map(|p| p.as_str().to_string()).unwrap_or_else(|| "/".into());
        let to_login = || {
            let next = if parts.method == axum::http::Method::GET { path.clone() } else { "/".into() };
            Redirect::to(&format!("/login?next={}", url_encode(&next))).into_response()
        };
        let Some(secret) = cookie(&parts.headers, SESSION_COOKIE) else { return Err(to_login()) };
        let hash = token_hash(&secret);
        let db = st.db.clone();
        let h = hash.clone();
        let row = blocking(move || Ok(db.session(&h, SESSION_TTL_MS)?)).await.map_err(|e| e.into_response())?;
        let Some(row) = row else { return Err(to_login()) };
        let p = parts.uri.path();
        if row.user.must_change_password && p != "/password" && p != "/logout" && !p.starts_with("/static/") {
            return Err(Redirect::to("/password").into_response());
        }
        let flash = cookie(&parts.headers, FLASH_COOKIE)
            .and_then(|v| hex::decode(v).ok())
            .and_then(|b| String::from_utf8(b).ok());
        Ok(Session {
            user: row.user,
            csrf: row.csrf,
            token_hash: hash,
            lang: Lang::from_headers(&parts.headers),
            secure: is_https(parts),
            flash,
            path,
        })
    }
}

pub use crate::url_encode;

/// Only local paths are followed after login: `next=https://elsewhere` would make the login
/// page an open redirect.
/// Browsers drop tabs, newlines and other controls from URLs (`/\t/evil.example` becomes
/// `//evil.example`), so any control character or whitespace is refused too.
pub fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && !n.contains('\\')
                && !n.chars().any(|c| c.is_control() || c.is_whitespace()) =>
        {
            n.to_string()
        }
        _ => "/".to_string(),
    }
}

/// A response that also sets a flash message for the next page.
pub fn redirect_with_flash(to: &str, message: &str, secure: bool) -> Response {
    let mut r = Redirect::to(to).into_response();
    r.headers_mut().append(SET_COOKIE, set_cookie(FLASH_COOKIE, &hex::encode(message), 60, secure));
    r
}

/// Why a login was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum LoginRefused {
    Wrong,
    /// Too many failures for this login or address: wait this long.
    Throttled {
        wait_ms: i64,
    },
    /// The directory accepted the password but no group of the account gives a parc role.
    NoRole,
    /// The directory could not be asked (local accounts still work).
    DirectoryUnavailable,
}

/// How long a key must wait after `failures` failures, the last at `last`: nothing for the
/// first few, then 1 s doubling up to 15 min, so a person who mistyped waits seconds and a
/// password guesser gets a few hundred tries a day.
pub fn wait_ms(failures: i64, last: i64, now: i64) -> i64 {
    if failures < FREE_FAILURES {
        return 0;
    }
    let delay = 1000i64.saturating_mul(1 << (failures - FREE_FAILURES).min(20)).min(MAX_DELAY_MS);
    (last + delay - now).max(0)
}

/// What checking one login and password found, before throttling and journaling.
enum Verdict {
    Accepted(User),
    /// Counts as a failure; `detail` (the directory's reason) goes to the journal only.
    Wrong(Option<String>),
    NoRole(String),
    Unavailable {
        why: String,
        asked: bool,
    },
}

/// Checks a login and password with throttling; journals failures and lockouts. A local
/// account is checked against its argon2 hash; any other login, when a directory is set, by
/// the directory. Blocking (it may wait for the directory).
pub fn check_login(
    st: &AppState,
    login: &str,
    password: &str,
    ip: &str,
    through: &str,
) -> Result<Result<User, LoginRefused>, AppError> {
    // Per login *at this address*, and per address: someone guessing from elsewhere slows
    // themselves down, never the user at their own desk.
    let keys = [format!("login:{}@{ip}", login.to_lowercase()), format!("ip:{ip}")];
    let now = now_ms();
    for k in &keys {
        if let Some((n, last)) = st.db.login_failures(k)? {
            let wait = wait_ms(n, last, now);
            if wait > 0 {
                return Ok(Err(LoginRefused::Throttled { wait_ms: wait }));
            }
        }
    }
    let user = st.db.user_by_login(login)?;
    let verdict = match (user, &st.directory) {
        (Some(u), _) if u.directory_dn.is_none() => {
            if crate::auth::verify_password(password, u.password_hash.as_deref().unwrap_or_else(|| decoy()))
                && !u.disabled
            {
                Verdict::Accepted(u)
            } else {
                Verdict::Wrong(None)
            }
        }
        (_, Some(dir)) => ask_directory(st, dir, login, password)?,
        (_, None) => {
            // An unknown login costs one argon2 verification too: the answer's timing must not
            // tell which logins exist.
            crate::auth::verify_password(password, decoy());
            Verdict::Wrong(None)
        }
    };
    let journal = |kind: &str, msg: &str| {
        st.event(&NewEvent {
            actor: "parc",
            kind,
            mac: None,
            task_id: None,
            message: &crate::ops::one_line(msg),
            data: None,
        })
    };
    match verdict {
        Verdict::Accepted(u) => {
            st.db.login_succeeded(&keys[0])?;
            st.db.login_succeeded(&keys[1])?;
            Ok(Ok(u))
        }
        Verdict::NoRole(dn) => {
            journal(
                "login.no_role",
                &format!(
                    "{through} login refused for {login:?} from {ip}: the directory accepted the password but {dn} \
                     is in no group mapped to a parc role ([directory] *_groups in parc.toml)"
                ),
            )?;
            Ok(Err(LoginRefused::NoRole))
        }
        Verdict::Unavailable { why, asked } => {
            tracing::warn!(login, ip, why, "directory unreachable");
            // Asked at most once per retry period: the journal gets one line per outage
            // period, not one per attempt.
            if asked {
                journal(
                    "directory.unreachable",
                    &format!("the directory could not be asked ({why}); local accounts still work"),
                )?;
            }
            Ok(Err(LoginRefused::DirectoryUnavailable))
        }
        Verdict::Wrong(detail) => {
            let n = keys.iter().map(|k| st.db.login_failed(k)).collect::<Result<Vec<_>, _>>()?;
            let worst = n.into_iter().max().unwrap_or(0);
            let why = if worst >= FREE_FAILURES {
                format!("{worst} failures, now throttled")
            } else {
                "wrong login or password".to_string()
            };
            let detail = detail.map(|d| format!(" (directory: {d})")).unwrap_or_default();
            tracing::warn!(login, ip, through, failures = worst, "login refused");
            journal(
                if worst >= FREE_FAILURES { "login.throttled" } else { "login.failed" },
                &format!("{through} login refused for {login:?} from {ip}: {why}{detail}"),
            )?;
            Ok(Err(LoginRefused::Wrong))
        }
    }
}

fn decoy() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| crate::auth::hash_password(&new_secret("")))
}

/// The directory's verdict, with the account recorded or refreshed in parc (role, name, mail
/// from the directory) when it is accepted.
fn ask_directory(
    st: &AppState,
    dir: &crate::directory::Directory,
    login: &str,
    password: &str,
) -> Result<Verdict, AppError> {
    use crate::directory::Outcome;
    let outcome = tokio::runtime::Handle::current().block_on(dir.authenticate(login, password));
    Ok(match outcome {
        Outcome::Accepted(du) => {
            let before = st.db.user_by_login(&du.login)?;
            match st.db.upsert_directory_user(&du.login, &du.name, &du.email, du.role, &du.dn)? {
                None => {
                    Verdict::Wrong(Some(format!("{:?} is a local account; the directory does not log it in", du.login)))
                }
                Some(u) if u.disabled => Verdict::Wrong(Some(format!("{} is disabled in parc", u.login))),
                Some(u) => {
                    let was = before.as_ref().map(|b| b.role);
                    if was != Some(u.role) {
                        st.event(&NewEvent {
                            actor: "parc",
                            kind: if was.is_none() { "user.create" } else { "user.role" },
                            mac: None,
                            task_id: None,
                            message: &crate::ops::one_line(&format!(
                                "{} ({}) is {} from its directory groups{}",
                                u.login,
                                du.dn,
                                u.role.as_str(),
                                was.map(|r| format!(", was {}", r.as_str())).unwrap_or_default()
                            )),
                            data: None,
                        })?;
                    }
                    Verdict::Accepted(u)
                }
            }
        }
        Outcome::Refused { detail } => Verdict::Wrong(Some(detail)),
        Outcome::NoRole { dn } => {
            // Out of every parc group now: what it held before ends too.
            if let Some(u) = st.db.user_by_login(&login.to_lowercase())?.filter(|u| u.directory_dn.is_some()) {
                st.db.revoke_tokens_of(u.id)?;
                st.db.delete_sessions_of(u.id, None)?;
            }
            Verdict::NoRole(dn)
        }
        Outcome::Unreachable { why, asked } => Verdict::Unavailable { why, asked },
    })
}

/// Opens a session for `user`; returns the cookie secret.
pub fn open_session(st: &AppState, user: &User, ip: &str) -> Result<String, AppError> {
    let secret = new_secret("ps_");
    let csrf = new_secret("");
    st.db.create_session(&token_hash(&secret), user.id, &csrf, SESSION_TTL_MS)?;
    st.event(&NewEvent {
        actor: &user.login,
        kind: "login.ok",
        mac: None,
        task_id: None,
        message: &format!("{} logged in to the console from {ip}", user.login),
        data: None,
    })?;
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_grows_and_is_capped() {
        assert_eq!(wait_ms(4, 0, 0), 0);
        assert_eq!(wait_ms(5, 0, 0), 1000);
        assert_eq!(wait_ms(8, 0, 0), 8000);
        assert_eq!(wait_ms(8, 0, 10_000), 0, "the wait is over");
        assert_eq!(wait_ms(60, 0, 0), MAX_DELAY_MS);
    }

    #[test]
    fn next_is_local_only() {
        assert_eq!(safe_next(Some("/machines?q=a")), "/machines?q=a");
        assert_eq!(safe_next(Some("//evil.example/")), "/");
        assert_eq!(safe_next(Some("https://evil.example/")), "/");
        for sneaky in ["/\t/evil.example", "/\n/evil.example", "/ /evil.example", "/\u{0}x"] {
            assert_eq!(safe_next(Some(sneaky)), "/", "{sneaky:?}");
        }
        assert_eq!(safe_next(None), "/");
        assert_eq!(url_encode("/a b?c=d&e"), "%2Fa%20b%3Fc%3Dd%26e");
    }

    #[test]
    fn cookies_are_found_among_others() {
        let mut h = HeaderMap::new();
        h.append(COOKIE, "a=1; parc_session=ps_x".parse().unwrap());
        assert_eq!(cookie(&h, SESSION_COOKIE).as_deref(), Some("ps_x"));
        assert_eq!(cookie(&h, "b"), None);
        let c = set_cookie("n", "v", 60, true);
        assert_eq!(c.to_str().unwrap(), "n=v; Path=/; HttpOnly; SameSite=Lax; Max-Age=60; Secure");
    }
}

//! Who is calling: API clients present a token (`Authorization: Bearer`); a login and password
//! (`Basic`) only create tokens and change the password ([`PasswordCaller`]). Agents present
//! credentials of their own (see `api::agent`). Secrets are stored as digests: sha256 for
//! random tokens, argon2id for passwords.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use sha2::{Digest as _, Sha256};

use crate::db::{Role, User};
use crate::{AppError, AppState};

/// A random secret: 32 bytes from the OS, hex, with a prefix that says what it is (so a token
/// pasted in the wrong place is recognisable, and secret scanners can find leaked ones).
pub fn new_secret(prefix: &str) -> String {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).expect("the OS random source works");
    format!("{prefix}{}", hex::encode(b))
}

pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A password a human can type once: 4 groups of 5 letters and digits without look-alikes.
pub fn new_password() -> String {
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";
    let mut b = [0u8; 20];
    getrandom::fill(&mut b).expect("the OS random source works");
    let chars: Vec<char> = b.iter().map(|x| ALPHABET[*x as usize % ALPHABET.len()] as char).collect();
    chars.chunks(5).map(|c| c.iter().collect::<String>()).collect::<Vec<_>>().join("-")
}

pub fn hash_password(password: &str) -> String {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).expect("the OS random source works");
    let salt = SaltString::encode_b64(&salt).expect("16 bytes is a valid salt");
    argon2::Argon2::default().hash_password(password.as_bytes(), &salt).expect("argon2id with defaults").to_string()
}

pub fn verify_password(password: &str, hash: &str) -> bool {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    PasswordHash::new(hash).is_ok_and(|h| argon2::Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
}

/// The authenticated user behind a request.
#[derive(Debug, Clone)]
pub struct Caller(pub User);

impl Caller {
    pub fn require(&self, role: Role) -> Result<&User, AppError> {
        if self.0.role >= role {
            Ok(&self.0)
        } else {
            Err(AppError::Forbidden(format!(
                "user {} has role {}; this action needs {}",
                self.0.login,
                self.0.role.as_str(),
                role.as_str()
            )))
        }
    }
    /// Git author for changes this user makes.
    pub fn author(&self) -> parc_profiles::Author {
        parc_profiles::Author { name: self.0.name.clone(), email: self.0.email.clone() }
    }
    pub fn login(&self) -> &str {
        &self.0.login
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .ok_or_else(|| AppError::Unauthorized("an API token is required (Authorization: Bearer …)".into()))?
            .to_string();
        let Some(token) = header.strip_prefix("Bearer ").map(|t| t.trim().to_string()) else {
            return Err(AppError::Unauthorized(if header.starts_with("Basic ") {
                "a login and password only create tokens (POST /api/v1/tokens) or change the password \
                 (POST /api/v1/password); present a token (Authorization: Bearer …)"
                    .into()
            } else {
                "unsupported Authorization scheme (use Bearer)".into()
            }));
        };
        let db = st.db.clone();
        let user = crate::blocking(move || Ok(db.user_by_token(&token_hash(&token))?))
            .await?
            .ok_or_else(|| AppError::Unauthorized("unknown, revoked or expired API token".into()))?;
        if user.must_change_password {
            return Err(AppError::Forbidden(format!(
                "user {} must change its password first (the console, or `parc login`)",
                user.login
            )));
        }
        Ok(Caller(user))
    }
}

/// A caller who presented a login and password (`Basic`): throttled per login and address
/// (a third party guessing from elsewhere locks nobody out), an unknown login costs the same
/// hashing time as a known one, and hashing waits for one of a few permits. A pending password
/// change is the caller's to check.
#[derive(Debug, Clone)]
pub struct PasswordCaller(pub User);

impl FromRequestParts<AppState> for PasswordCaller {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Self, Self::Rejection> {
        let (login, password) = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.strip_prefix("Basic "))
            .and_then(|b| decode_basic(b.trim()))
            .ok_or_else(|| {
                AppError::Unauthorized("a login and password are required (Authorization: Basic …)".into())
            })?;
        let ip = parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|c| c.0.ip().to_string())
            .unwrap_or_else(|| "unknown".into());
        let _permit = hashing_permit().await?;
        let st = st.clone();
        crate::blocking(move || match crate::console::session::check_login(&st, &login, &password, &ip, "API")? {
            Ok(u) => Ok(PasswordCaller(u)),
            Err(crate::console::session::LoginRefused::Throttled { wait_ms }) => Err(AppError::TooMany(format!(
                "too many failed logins for {login:?} from this address: wait {} s",
                (wait_ms + 999) / 1000
            ))),
            Err(crate::console::session::LoginRefused::Wrong) => {
                Err(AppError::Unauthorized("wrong login or password".into()))
            }
            Err(crate::console::session::LoginRefused::NoRole) => Err(AppError::Forbidden(
                "the directory accepted the password, but the account is in no group that gives a parc role: ask an administrator"
                    .into(),
            )),
            Err(crate::console::session::LoginRefused::DirectoryUnavailable) => Err(AppError::Unavailable(
                "the hospital's directory does not answer: try again in a moment (local accounts still work)".into(),
            )),
        })
        .await
    }
}

/// Password hashing (argon2id, ~19 MiB and tens of milliseconds each) runs at most this many
/// at once, whatever the number of guesses arriving: memory stays flat under a flood.
const HASHING_AT_ONCE: usize = 2;
/// Guesses waiting beyond this many are refused with 429 rather than queued.
const HASHING_QUEUE: usize = 64;

static HASHING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(HASHING_AT_ONCE);
static HASHING_WAITING: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A permit to hash one password; 429 when too many logins are already waiting.
pub async fn hashing_permit() -> Result<tokio::sync::SemaphorePermit<'static>, AppError> {
    use std::sync::atomic::Ordering;
    if HASHING_WAITING.fetch_add(1, Ordering::SeqCst) >= HASHING_QUEUE {
        HASHING_WAITING.fetch_sub(1, Ordering::SeqCst);
        return Err(AppError::TooMany("too many logins at once; try again in a few seconds".into()));
    }
    let permit = HASHING.acquire().await;
    HASHING_WAITING.fetch_sub(1, Ordering::SeqCst);
    permit.map_err(|_| AppError::Internal("password hashing permits closed".into()))
}

fn decode_basic(b64: &str) -> Option<(String, String)> {
    let bytes = base64_decode(b64)?;
    let s = String::from_utf8(bytes).ok()?;
    let (l, p) = s.split_once(':')?;
    Some((l.to_string(), p.to_string()))
}

/// Standard base64 (RFC 4648) decoding (Basic credentials, offline-join blobs).
pub(crate) fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let s = s.trim_end_matches('=').as_bytes();
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    for chunk in s.chunks(4) {
        let mut acc = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            acc |= val(c)? << (18 - 6 * i);
        }
        let n = match chunk.len() {
            4 => 3,
            3 => 2,
            2 => 1,
            _ => return None,
        };
        out.extend_from_slice(&acc.to_be_bytes()[1..1 + n]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_decode() {
        assert_eq!(decode_basic("YWRtaW46czNjcjN0Og=="), Some(("admin".into(), "s3cr3t:".into())));
        assert_eq!(base64_decode("YQ"), Some(b"a".to_vec()));
        assert_eq!(decode_basic("!!!"), None);
    }

    #[test]
    fn passwords_and_tokens() {
        let p = new_password();
        assert_eq!(p.len(), 23);
        let h = hash_password(&p);
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password(&p, &h) && !verify_password("wrong", &h));
        let t = new_secret("parc_");
        assert_eq!(t.len(), 5 + 64);
        assert_ne!(t, new_secret("parc_"));
        assert_eq!(token_hash(&t).len(), 64);
    }
}

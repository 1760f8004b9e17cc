//! Who is calling: API clients present a token created by an admin (`Authorization: Bearer`);
//! an admin may also present its login and password (`Basic`) to create tokens. Agents present
//! the per-task token from their boot script (see `api::agent`). Secrets are stored as
//! digests: sha256 for random tokens, argon2id for passwords.

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
        let db = st.db.clone();
        crate::blocking(move || {
            if let Some(token) = header.strip_prefix("Bearer ") {
                let user = db.user_by_token(&token_hash(token.trim()))?;
                return user.map(Caller).ok_or_else(|| AppError::Unauthorized("unknown or revoked API token".into()));
            }
            if let Some(b64) = header.strip_prefix("Basic ") {
                let (login, password) = decode_basic(b64.trim())
                    .ok_or_else(|| AppError::Unauthorized("malformed Basic credentials".into()))?;
                let user = db.user_by_login(&login)?;
                return match user {
                    Some(u)
                        if !u.disabled && u.password_hash.as_deref().is_some_and(|h| verify_password(&password, h)) =>
                    {
                        Ok(Caller(u))
                    }
                    _ => Err(AppError::Unauthorized("wrong login or password".into())),
                };
            }
            Err(AppError::Unauthorized("unsupported Authorization scheme (use Bearer)".into()))
        })
        .await
    }
}

fn decode_basic(b64: &str) -> Option<(String, String)> {
    let bytes = base64_decode(b64)?;
    let s = String::from_utf8(bytes).ok()?;
    let (l, p) = s.split_once(':')?;
    Some((l.to_string(), p.to_string()))
}

/// Standard base64 (RFC 4648) decoding, for Basic credentials only.
fn base64_decode(s: &str) -> Option<Vec<u8>> {
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

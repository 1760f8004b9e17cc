//! Every console form carries the session's CSRF token in a hidden `_csrf` field; a POST
//! without it, or with another session's, is refused with 403 before any handler runs.

use std::collections::HashMap;

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::response::{IntoResponse, Response};

use super::session::Session;
use super::ConsoleError;
use crate::AppState;

pub const FIELD: &str = "_csrf";

/// Byte comparison whose time does not depend on where the first difference is.
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A form posted by a logged-in user, with a valid CSRF token.
#[derive(Debug)]
pub struct CsrfForm {
    pub session: Session,
    pub fields: HashMap<String, String>,
}

impl CsrfForm {
    /// A trimmed field, `None` when absent or blank.
    pub fn get(&self, name: &str) -> Option<String> {
        field(&self.fields, name)
    }
}

pub fn field(fields: &HashMap<String, String>, name: &str) -> Option<String> {
    fields.get(name).map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
}

/// Reads a urlencoded body into a map (a repeated field keeps its last value).
pub async fn read_form(req: Request, st: &AppState) -> Result<HashMap<String, String>, Response> {
    match axum::extract::Form::<Vec<(String, String)>>::from_request(req, st).await {
        Ok(axum::extract::Form(pairs)) => Ok(pairs.into_iter().collect()),
        Err(e) => Err(e.into_response()),
    }
}

impl FromRequest<AppState> for CsrfForm {
    type Rejection = Response;

    async fn from_request(req: Request, st: &AppState) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = req.into_parts();
        let session = Session::from_request_parts(&mut parts, st).await?;
        let fields = read_form(Request::from_parts(parts, body), st).await?;
        if !fields.get(FIELD).is_some_and(|t| same(t, &session.csrf)) {
            tracing::warn!(user = %session.user.login, path = %session.path, "console: POST without a valid CSRF token refused");
            let msg = format!("POST {} without a valid CSRF token refused", session.path);
            super::journal_refusal(st, &session, "csrf.refused", &msg).await;
            let lang = session.lang;
            return Err(ConsoleError::forbidden(lang, lang.t("error.csrf").to_string(), Some(&session)).into_response());
        }
        Ok(CsrfForm { session, fields })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn comparison() {
        assert!(super::same("abc", "abc"));
        assert!(!super::same("abc", "abd") && !super::same("abc", "ab") && !super::same("", "a"));
    }
}

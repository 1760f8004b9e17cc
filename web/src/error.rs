//! One error type for every handler: real status codes for bad input, a generic message for
//! internal faults (details go to the log, never to the client).

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use parc_imager::store::StoreError;

use crate::db::DbError;

#[derive(Debug)]
pub enum AppError {
    BadRequest(String),
    /// A field of the request is wrong: 400 naming the field.
    Invalid {
        field: String,
        reason: String,
    },
    Unauthorized(String),
    Forbidden(String),
    NotFound(String),
    Conflict(String),
    /// The body is larger than the route accepts: 413.
    TooLarge(String),
    /// A rate limit: 429.
    TooMany(String),
    /// The server could not answer in time: 503.
    Unavailable(String),
    Internal(String),
}

impl AppError {
    pub fn invalid(field: &str, reason: impl Into<String>) -> AppError {
        AppError::Invalid { field: field.to_string(), reason: reason.into() }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            AppError::BadRequest(_) | AppError::Invalid { .. } => StatusCode::BAD_REQUEST,
            AppError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            AppError::Forbidden(_) => StatusCode::FORBIDDEN,
            AppError::NotFound(_) => StatusCode::NOT_FOUND,
            AppError::Conflict(_) => StatusCode::CONFLICT,
            AppError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            AppError::TooMany(_) => StatusCode::TOO_MANY_REQUESTS,
            AppError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            AppError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The message a client may see (internal details stay in the log).
    pub fn public_message(&self) -> String {
        match self {
            AppError::BadRequest(m)
            | AppError::Unauthorized(m)
            | AppError::Forbidden(m)
            | AppError::NotFound(m)
            | AppError::Conflict(m)
            | AppError::TooLarge(m)
            | AppError::TooMany(m)
            | AppError::Unavailable(m) => m.clone(),
            AppError::Invalid { field, reason } => format!("{field}: {reason}"),
            AppError::Internal(_) => "internal error; see the appliance log".to_string(),
        }
    }
}

impl std::fmt::Display for AppError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AppError::Internal(m) => f.write_str(m),
            other => f.write_str(&other.public_message()),
        }
    }
}

impl From<StoreError> for AppError {
    fn from(e: StoreError) -> Self {
        // The store's own messages name its path on the appliance: clients get the digest or
        // name only (the path stays in the log).
        match e {
            StoreError::ChunkMissing { digest, .. } => {
                AppError::NotFound(format!("chunk {digest} is not on this appliance"))
            }
            StoreError::ManifestMissing { digest, .. } => {
                AppError::NotFound(format!("manifest {digest} is not on this appliance"))
            }
            StoreError::UnknownImage { reference, .. } => {
                AppError::NotFound(format!("no image called {reference:?} on this appliance (see `parc image ls`)"))
            }
            StoreError::Ambiguous { .. } | StoreError::InvalidName { .. } => AppError::BadRequest(e.to_string()),
            other => AppError::Internal(other.to_string()),
        }
    }
}

impl From<DbError> for AppError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::Conflict(m) => AppError::Conflict(m),
            other => AppError::Internal(other.to_string()),
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = self.status();
        let msg = self.public_message();
        let mut body = serde_json::json!({ "error": msg });
        match &self {
            AppError::Internal(m) => tracing::error!(error = %m, "internal error"),
            AppError::Invalid { field, reason } => {
                body["field"] = field.clone().into();
                body["reason"] = reason.clone().into();
            }
            _ => {}
        }
        let mut resp = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer realm=\"parc\""));
        }
        resp
    }
}

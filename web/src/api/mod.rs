//! `/api/v1`: JSON for technicians' tools (the `parc` CLI, scripts) and for agents.
//! Every route is listed once in `ROUTES`, which also produces `/api/v1/openapi.json`; a test
//! checks that each listed route is served.

pub(crate) mod admin;
mod agent;
mod capture;
pub(crate) mod departments;
mod domain_join;
pub(crate) mod machines;
mod openapi;
mod secrets;
pub(crate) mod tasks;

use axum::extract::FromRequest;
use axum::routing::{get, post};
use axum::Router;

use crate::{chunks, AppError, AppState};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/openapi.json", get(openapi::document))
        .route("/images", get(chunks::images_list))
        .route("/images/{reference}", get(chunks::image_resolve))
        .route("/images/{reference}/remove", post(crate::store::image_remove))
        .route("/images/{reference}/capture", post(capture::image_capture))
        .route("/chunks", post(chunks::chunks_stream))
        .route("/machines", get(machines::machines_list).post(machines::machine_add))
        .route("/machines/{id}", get(machines::machine_show).patch(machines::machine_edit))
        .route("/machines/{id}/{action}", post(machines::machine_action))
        .route("/machines/{id}/secrets", get(secrets::secrets_list).post(secrets::secret_set))
        .route("/machines/{id}/secrets/{name}/remove", post(secrets::secret_remove))
        .route("/batch", post(machines::batch))
        .route("/tasks", get(tasks::tasks_list))
        .route("/tasks/{id}", get(tasks::task_show))
        .route("/tasks/{id}/cancel", post(tasks::task_cancel))
        .route("/departments", get(departments::departments_list))
        .route("/departments/validate", post(departments::department_validate))
        .route("/departments/{id}", get(departments::department_show))
        .route("/profiles", get(departments::profiles_status))
        .route("/profiles/reload", post(departments::profiles_reload))
        .route("/events", get(admin::events_list))
        .route("/events/stream", get(admin::events_stream))
        .route("/tokens", get(admin::tokens_list).post(admin::token_create))
        .route("/tokens/{id}/revoke", post(admin::token_revoke))
        .route("/password", post(admin::password_change))
        .route("/users", get(admin::users_list).post(admin::user_create))
        .route("/users/{login}", axum::routing::patch(admin::user_update))
        .route("/users/{login}/reset-password", post(admin::user_reset_password))
        .route("/agent/hello", post(agent::hello).layer(axum::extract::DefaultBodyLimit::max(agent::HELLO_BODY_LIMIT)))
        .route("/agent/task", get(agent::task))
        .route("/agent/progress", post(agent::progress))
        .route("/agent/done", post(agent::done))
        .route("/agent/failed", post(agent::failed))
        .route("/agent/domain-join", post(domain_join::domain_join))
        .route("/agent/first-boot", post(agent::first_boot))
        .route("/agent/files", get(agent::files))
        .route("/agent/file", get(agent::file))
}

/// A number the request may give, refused (400 naming it) outside `lo..=hi` rather than
/// clamped: the document's ranges are the ones the server enforces.
pub(crate) fn in_range<T: PartialOrd + std::fmt::Display + Copy>(
    field: &str,
    v: Option<T>,
    lo: T,
    hi: T,
) -> Result<(), AppError> {
    match v {
        Some(v) if v < lo || v > hi => Err(AppError::invalid(field, format!("{v} is not in {lo} to {hi}"))),
        _ => Ok(()),
    }
}

/// `Json` whose rejections are `AppError`s: a malformed body is a 400 that says which field
/// is wrong, in the same shape as every other error. The body must be a JSON object (serde
/// would also take a struct from an array of its fields in order).
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        if !json_content_type(req.headers()) {
            return Err(AppError::BadRequest("request body: expected Content-Type: application/json".into()));
        }
        let bytes =
            axum::body::Bytes::from_request(req, state).await.map_err(|e| body_error(e.status(), e.body_text()))?;
        object(&bytes).map(Json)
    }
}

/// `application/json` or `application/…+json`, with any parameters.
fn json_content_type(headers: &axum::http::HeaderMap) -> bool {
    let Some(ct) = headers.get(axum::http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    essence.strip_prefix("application/").is_some_and(|sub| sub == "json" || sub.ends_with("+json"))
}

/// A request body that must be a JSON object, deserialized (errors name the field's path).
fn object<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, AppError> {
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(AppError::BadRequest("request body: a JSON object is expected".into()));
    }
    axum::Json::<T>::from_bytes(bytes).map(|axum::Json(v)| v).map_err(|e| body_error(e.status(), e.body_text()))
}

/// A body refused for its size is a 413 (the client must send less), anything else a 400
/// (a wrong or missing content type too: axum's 415 and 422 never reach the client). An
/// unknown field is named in `field`, as every other invalid field is.
fn body_error(status: axum::http::StatusCode, text: String) -> AppError {
    if status == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        return AppError::TooLarge(format!("request body too large: {text}"));
    }
    match unknown_field(&text) {
        Some(field) => AppError::invalid(&field, format!("unknown field ({text})")),
        None => AppError::BadRequest(format!("request body: {text}")),
    }
}

/// The field serde's `deny_unknown_fields` refused, from its message ("unknown field `x`, …").
fn unknown_field(serde_message: &str) -> Option<String> {
    let rest = serde_message.split("unknown field `").nth(1)?;
    Some(rest[..rest.find("`, ")?].to_string())
}

impl<T: serde::Serialize> axum::response::IntoResponse for Json<T> {
    fn into_response(self) -> axum::response::Response {
        axum::Json(self.0).into_response()
    }
}

/// An axum extractor of the request's parts whose rejection is a 400 in the API's error
/// shape (axum's own are plain text), its message prefixed with what was wrong.
macro_rules! parts_extractor {
    ($(#[$doc:meta])* $name:ident, $axum:path, $what:literal, $($bound:tt)+) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, Default)]
        pub struct $name<T>(pub T);

        impl<T, S> axum::extract::FromRequestParts<S> for $name<T>
        where
            T: $($bound)+,
            S: Send + Sync,
        {
            type Rejection = AppError;

            async fn from_request_parts(
                parts: &mut axum::http::request::Parts,
                state: &S,
            ) -> Result<Self, Self::Rejection> {
                use $axum as Axum;
                match Axum::<T>::from_request_parts(parts, state).await {
                    Ok(Axum(v)) => Ok($name(v)),
                    Err(e) => Err(AppError::BadRequest(format!(concat!($what, ": {}"), e.body_text()))),
                }
            }
        }
    };
}

parts_extractor!(
    /// `Query` with the API's error shape.
    Query, axum::extract::Query, "query string", serde::de::DeserializeOwned
);
parts_extractor!(
    /// `Path` with the API's error shape.
    Path, axum::extract::Path, "path", serde::de::DeserializeOwned + Send
);

/// A JSON body that may be absent (actions whose fields are all optional): an empty body is
/// `T::default()`.
#[derive(Debug, Clone, Default)]
pub struct OptionalJson<T>(pub T);

impl<T, S> FromRequest<S> for OptionalJson<T>
where
    T: serde::de::DeserializeOwned + Default,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes =
            axum::body::Bytes::from_request(req, state).await.map_err(|e| body_error(e.status(), e.body_text()))?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJson(T::default()));
        }
        object(&bytes).map(OptionalJson)
    }
}

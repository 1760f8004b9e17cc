//! `/api/v1`: JSON for technicians' tools (the `parc` CLI, scripts) and for agents.
//! Every route is listed once in `ROUTES`, which also produces `/api/v1/openapi.json`; a test
//! checks that each listed route is served.

pub(crate) mod admin;
mod agent;
pub(crate) mod departments;
pub(crate) mod machines;
mod openapi;
pub(crate) mod tasks;

use axum::extract::rejection::JsonRejection;
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
        .route("/chunks", post(chunks::chunks_stream))
        .route("/machines", get(machines::machines_list).post(machines::machine_add))
        .route("/machines/{id}", get(machines::machine_show).patch(machines::machine_edit))
        .route("/machines/{id}/{action}", post(machines::machine_action))
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
        .route("/agent/first-boot", post(agent::first_boot))
        .route("/agent/files", get(agent::files))
        .route("/agent/file", get(agent::file))
}

/// `Json` whose rejections are `AppError`s: a malformed body is a 400 that says which field
/// is wrong, in the same shape as every other error.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    axum::Json<T>: FromRequest<S, Rejection = JsonRejection>,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Json(v)),
            Err(e) => Err(body_error(e.status(), e.body_text())),
        }
    }
}

/// A body refused for its size is a 413 (the client must send less), anything else a 400.
fn body_error(status: axum::http::StatusCode, text: String) -> AppError {
    if status == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        AppError::TooLarge(format!("request body too large: {text}"))
    } else {
        AppError::BadRequest(format!("request body: {text}"))
    }
}

impl<T: serde::Serialize> axum::response::IntoResponse for Json<T> {
    fn into_response(self) -> axum::response::Response {
        axum::Json(self.0).into_response()
    }
}

/// `Query` with the same error shape.
#[derive(Debug, Clone, Copy, Default)]
pub struct Query<T>(pub T);

impl<T, S> axum::extract::FromRequestParts<S> for Query<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(Query(v)),
            Err(e) => Err(AppError::BadRequest(format!("query string: {}", e.body_text()))),
        }
    }
}

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
        serde_json::from_slice(&bytes).map(OptionalJson).map_err(|e| AppError::BadRequest(format!("request body: {e}")))
    }
}

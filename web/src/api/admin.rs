//! The journal (listing and a live stream), API tokens and users.

use std::convert::Infallible;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream};
use serde::{Deserialize, Serialize};

use super::{Json, Query};
use crate::auth::{self, Caller};
use crate::db::{Event, EventQuery, NewEvent, Role, User};
use crate::{blocking, AppError, AppState};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Events with an id above this one.
    after: Option<i64>,
    machine: Option<String>,
    task: Option<i64>,
    actor: Option<String>,
    /// Prefix of the event kind (`machine.`, `task.`, `agent.`).
    kind: Option<String>,
    limit: Option<i64>,
}

pub async fn events_list(
    State(st): State<AppState>,
    caller: Caller,
    Query(q): Query<EventsQuery>,
) -> Result<Json<Vec<Event>>, AppError> {
    caller.require(Role::Readonly)?;
    blocking(move || {
        let mac = q.machine.map(|m| crate::ops::journal_mac(&st.profiles.snapshot().inventory, &m));
        let query = EventQuery {
            after: q.after,
            before: None,
            since: None,
            until: None,
            mac,
            task_id: q.task,
            actor: q.actor,
            kind: q.kind,
            limit: q.limit.unwrap_or(100),
        };
        Ok(Json(st.db.events(&query)?))
    })
    .await
}

/// Server-sent events: every journal entry and every progress report, as they happen.
pub async fn events_stream(
    State(st): State<AppState>,
    caller: Caller,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, AppError> {
    caller.require(Role::Readonly)?;
    Ok(live_stream(&st))
}

/// The live stream for one reader (API clients and the console's pages).
pub(crate) fn live_stream(st: &AppState) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let rx = st.live.subscribe();
    let s = stream::unfold(rx, |mut rx| async move {
        let ev = match rx.recv().await {
            Ok(live) => {
                let name = match &live {
                    crate::Live::Event(_) => "event",
                    crate::Live::Progress(_) => "progress",
                };
                SseEvent::default().event(name).data(serde_json::to_string(&live).expect("serialisable"))
            }
            // A slow reader missed some: tell it to reload rather than pretend.
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                SseEvent::default().event("lagged").data(n.to_string())
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
        };
        Some((Ok(ev), rx))
    });
    Sse::new(s).keep_alive(KeepAlive::default())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenBody {
    /// What the token is for ("laptop of alice", "nightly script").
    name: String,
}

#[derive(Debug, Serialize)]
pub struct NewToken {
    pub token: String,
    pub user: String,
    pub role: Role,
    pub name: String,
}

/// Creates an API token for the calling user (authenticate with login and password, Basic).
pub async fn token_create(
    State(st): State<AppState>,
    caller: Caller,
    Json(b): Json<TokenBody>,
) -> Result<Response, AppError> {
    caller.require(Role::Readonly)?;
    if b.name.trim().is_empty() || b.name.len() > 100 {
        return Err(AppError::invalid("name", "1 to 100 characters"));
    }
    blocking(move || {
        let token = auth::new_secret("parc_");
        st.db.create_token(caller.0.id, b.name.trim(), &auth::token_hash(&token))?;
        let msg = format!("API token {:?} created for {}", b.name.trim(), caller.login());
        st.event(&NewEvent {
            actor: caller.login(),
            kind: "token.create",
            mac: None,
            task_id: None,
            message: &msg,
            data: None,
        })?;
        let body = NewToken { token, user: caller.0.login.clone(), role: caller.0.role, name: b.name };
        Ok((StatusCode::CREATED, axum::Json(body)).into_response())
    })
    .await
}

pub async fn users_list(State(st): State<AppState>, caller: Caller) -> Result<Json<Vec<User>>, AppError> {
    caller.require(Role::Admin)?;
    blocking(move || Ok(Json(st.db.users()?))).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserBody {
    pub login: String,
    pub name: String,
    #[serde(default)]
    pub email: Option<String>,
    pub role: Role,
    /// Omitted: a password is generated and returned once.
    #[serde(default)]
    pub password: Option<String>,
}

pub async fn user_create(
    State(st): State<AppState>,
    caller: Caller,
    Json(b): Json<UserBody>,
) -> Result<Response, AppError> {
    caller.require(Role::Admin)?;
    blocking(move || {
        let (user, generated) = create_user(&st, &caller, &b)?;
        let mut body = serde_json::to_value(&user).map_err(|e| AppError::Internal(e.to_string()))?;
        if let Some(p) = generated {
            body["password"] = p.into();
        }
        Ok((StatusCode::CREATED, axum::Json(body)).into_response())
    })
    .await
}

/// Checks and creates an account, journaled; returns it and the one-time password generated
/// when none was given (the user must change it at first login). Blocking.
pub(crate) fn create_user(st: &AppState, caller: &Caller, b: &UserBody) -> Result<(User, Option<String>), AppError> {
    caller.require(Role::Admin)?;
    if b.login.is_empty()
        || b.login.len() > 64
        || !b.login.bytes().all(|c| c.is_ascii_alphanumeric() || b"._-".contains(&c))
    {
        return Err(AppError::invalid("login", "1 to 64 letters, digits, '.', '_' or '-'"));
    }
    if b.name.trim().is_empty() {
        return Err(AppError::invalid("name", "required (it is the author name of the git commits this user makes)"));
    }
    if b.password.as_deref().is_some_and(|p| p.chars().count() < 12) {
        return Err(AppError::invalid("password", "at least 12 characters"));
    }
    let generated = b.password.is_none().then(auth::new_password);
    let password = b.password.as_deref().or(generated.as_deref()).unwrap_or_default();
    let email = b.email.clone().unwrap_or_else(|| format!("{}@parc.local", b.login));
    let user = st.db.create_user(
        &b.login,
        b.name.trim(),
        &email,
        b.role,
        Some(&auth::hash_password(password)),
        generated.is_some(),
    )?;
    let msg = format!("user {} ({}) created with role {}", user.login, user.name, user.role.as_str());
    st.event(&NewEvent {
        actor: caller.login(),
        kind: "user.create",
        mac: None,
        task_id: None,
        message: &msg,
        data: None,
    })?;
    Ok((user, generated))
}

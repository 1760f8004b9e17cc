//! The journal (listing and a live stream), API tokens and users.

use std::convert::Infallible;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream};
use serde::{Deserialize, Serialize};

use super::{Json, Path, Query};
use crate::auth::{self, Caller, PasswordCaller};
use crate::db::{Event, EventQuery, NewEvent, Role, TokenRow, User};
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
    super::in_range("limit", q.limit, 1, 10_000)?;
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
    /// Days until it stops working: 1 to 365, default 90.
    #[serde(default)]
    expires_in_days: Option<i64>,
}

#[derive(Debug, Serialize)]
pub struct NewToken {
    pub id: i64,
    pub token: String,
    pub user: String,
    pub role: Role,
    pub name: String,
    pub expires_at: i64,
}

const DAY_MS: i64 = 86_400_000;
/// The longest a directory account's token lasts.
pub const DIRECTORY_TOKEN_DAYS: i64 = 7;

/// Refuses to change locally what the hospital's directory decides for its accounts.
pub(crate) fn not_from_directory(u: &User, what: &str) -> Result<(), AppError> {
    match &u.directory_dn {
        Some(dn) => Err(AppError::Conflict(format!(
            "the {what} of {} comes from the hospital's directory ({dn}): change it there",
            u.login
        ))),
        None => Ok(()),
    }
}

/// Creates an API token for the calling user, who must present its password (Basic): a
/// stolen token cannot make more.
pub async fn token_create(
    State(st): State<AppState>,
    PasswordCaller(user): PasswordCaller,
    Json(b): Json<TokenBody>,
) -> Result<Response, AppError> {
    if user.must_change_password {
        return Err(AppError::Forbidden(format!(
            "user {} must change its password first (POST /api/v1/password, the console, or `parc login`)",
            user.login
        )));
    }
    let name = crate::ops::one_line(&b.name);
    if name.is_empty() || b.name.chars().count() > 100 {
        return Err(AppError::invalid("name", "1 to 100 characters, not all blank"));
    }
    // A directory account is checked against the directory at each login only: its tokens
    // must end soon after the directory disables it or takes it out of parc's groups.
    let max_days = if user.directory_dn.is_some() { DIRECTORY_TOKEN_DAYS } else { 365 };
    let days = b.expires_in_days.unwrap_or(90.min(max_days));
    if !(1..=max_days).contains(&days) {
        return Err(AppError::invalid(
            "expires_in_days",
            if user.directory_dn.is_some() {
                format!("1 to {max_days} for a directory account (its groups are checked at each login)")
            } else {
                format!("1 to {max_days}")
            },
        ));
    }
    blocking(move || {
        let token = auth::new_secret("parc_");
        let expires_at = crate::db::now_ms() + days * DAY_MS;
        let id = st.db.create_token(user.id, &name, &auth::token_hash(&token), expires_at)?;
        let msg = format!("API token #{id} {name:?} created for {}, valid {days} days", user.login);
        st.event(&NewEvent {
            actor: &user.login,
            kind: "token.create",
            mac: None,
            task_id: None,
            message: &msg,
            data: None,
        })?;
        let body = NewToken { id, token, user: user.login.clone(), role: user.role, name, expires_at };
        Ok((StatusCode::CREATED, axum::Json(body)).into_response())
    })
    .await
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokensQuery {
    /// Admins: every user's tokens (`all=true`).
    #[serde(default)]
    all: bool,
}

/// The caller's tokens (an admin may ask for everyone's): never their secrets.
pub async fn tokens_list(
    State(st): State<AppState>,
    caller: Caller,
    Query(q): Query<TokensQuery>,
) -> Result<Json<Vec<TokenRow>>, AppError> {
    if q.all {
        caller.require(Role::Admin)?;
    }
    blocking(move || Ok(Json(st.db.tokens((!q.all).then_some(caller.0.id))?))).await
}

/// Revokes a token: the caller's own, or anyone's for an admin. Journaled.
pub async fn token_revoke(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
) -> Result<Json<TokenRow>, AppError> {
    blocking(move || revoke_token(&st, &caller, id).map(Json)).await
}

/// [`token_revoke`]'s work (the console's too). Blocking.
pub(crate) fn revoke_token(st: &AppState, caller: &Caller, id: i64) -> Result<TokenRow, AppError> {
    let t = st.db.token(id)?.ok_or_else(|| AppError::NotFound(format!("no token #{id}")))?;
    if t.user_id != caller.0.id {
        caller.require(Role::Admin)?;
    }
    if !st.db.revoke_token(id)? {
        return Err(AppError::Conflict(format!("token #{id} is already revoked")));
    }
    let msg = format!("API token #{id} {:?} of {} revoked", t.name, t.user);
    st.event(&NewEvent {
        actor: caller.login(),
        kind: "token.revoke",
        mac: None,
        task_id: None,
        message: &msg,
        data: None,
    })?;
    Ok(st.db.token(id)?.expect("exists"))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasswordBody {
    new_password: String,
}

/// Changes the caller's own password (Basic with the current one). Every token and console
/// session of the user ends: whoever had them must log in again.
pub async fn password_change(
    State(st): State<AppState>,
    PasswordCaller(user): PasswordCaller,
    Json(b): Json<PasswordBody>,
) -> Result<Json<serde_json::Value>, AppError> {
    not_from_directory(&user, "password")?;
    check_new_password(&b.new_password)?;
    let _permit = auth::hashing_permit().await?;
    blocking(move || {
        st.db.set_password(user.id, &auth::hash_password(&b.new_password))?;
        let revoked = st.db.revoke_tokens_of(user.id)?;
        st.db.delete_sessions_of(user.id, None)?;
        if user.must_change_password {
            // The one-time password of the first start is no longer good for anything.
            let _ = std::fs::remove_file(st.data_dir.join(crate::FIRST_PASSWORD_FILE));
        }
        let msg = format!("{} changed its password ({revoked} token(s) revoked, console sessions closed)", user.login);
        st.event(&NewEvent {
            actor: &user.login,
            kind: "user.password",
            mac: None,
            task_id: None,
            message: &msg,
            data: None,
        })?;
        Ok(Json(serde_json::json!({ "ok": true, "tokens_revoked": revoked })))
    })
    .await
}

pub(crate) fn check_new_password(p: &str) -> Result<(), AppError> {
    if p.chars().count() < 12 || p.chars().count() > 200 {
        return Err(AppError::invalid("new_password", "12 to 200 characters"));
    }
    Ok(())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserPatch {
    #[serde(default)]
    role: Option<Role>,
    #[serde(default)]
    disabled: Option<bool>,
    #[serde(default)]
    reason: Option<String>,
}

/// An admin changes a user's role or disables/enables the account. Disabling ends its tokens
/// and sessions at once. An admin cannot disable or demote itself (someone must stay admin).
pub async fn user_update(
    State(st): State<AppState>,
    caller: Caller,
    Path(login): Path<String>,
    Json(b): Json<UserPatch>,
) -> Result<Json<User>, AppError> {
    blocking(move || update_user(&st, &caller, &login, b.role, b.disabled, b.reason.as_deref()).map(Json)).await
}

/// [`user_update`]'s work (the console's too). Blocking.
pub(crate) fn update_user(
    st: &AppState,
    caller: &Caller,
    login: &str,
    role: Option<Role>,
    disabled: Option<bool>,
    reason: Option<&str>,
) -> Result<User, AppError> {
    caller.require(Role::Admin)?;
    if role.is_none() && disabled.is_none() {
        return Err(AppError::invalid("role", "give role and/or disabled"));
    }
    let u = st.db.user_by_login(login)?.ok_or_else(|| AppError::NotFound(format!("no user {login:?}")))?;
    if role.is_some_and(|r| r != u.role) {
        not_from_directory(&u, "role")?;
    }
    if u.id == caller.0.id && (disabled == Some(true) || role.is_some_and(|r| r != Role::Admin)) {
        return Err(AppError::Conflict("an admin cannot disable or demote itself; ask another admin".into()));
    }
    st.db.update_user(u.id, role, disabled)?;
    let mut changes = Vec::new();
    if let Some(r) = role {
        changes.push(format!("role {} → {}", u.role.as_str(), r.as_str()));
    }
    if let Some(d) = disabled {
        changes.push(if d { "disabled".to_string() } else { "enabled".to_string() });
        if d {
            st.db.revoke_tokens_of(u.id)?;
            st.db.delete_sessions_of(u.id, None)?;
        }
    }
    let mut msg = format!("user {}: {}", u.login, changes.join(", "));
    if let Some(r) = reason.map(crate::ops::one_line).filter(|r| !r.is_empty()) {
        msg.push_str(&format!(": {r}"));
    }
    st.event(&NewEvent {
        actor: caller.login(),
        kind: "user.update",
        mac: None,
        task_id: None,
        message: &msg,
        data: None,
    })?;
    Ok(st.db.user_by_login(login)?.expect("exists"))
}

/// An admin resets a user's password: a one-time password, returned once, to be changed at
/// next login; the user's tokens and sessions end.
pub async fn user_reset_password(
    State(st): State<AppState>,
    caller: Caller,
    Path(login): Path<String>,
) -> Result<Json<serde_json::Value>, AppError> {
    let _permit = auth::hashing_permit().await?;
    blocking(move || {
        let (password, revoked) = reset_password(&st, &caller, &login)?;
        Ok(Json(serde_json::json!({ "login": login, "password": password, "tokens_revoked": revoked })))
    })
    .await
}

/// [`user_reset_password`]'s work: the one-time password and how many tokens ended. Blocking.
pub(crate) fn reset_password(st: &AppState, caller: &Caller, login: &str) -> Result<(String, usize), AppError> {
    caller.require(Role::Admin)?;
    let u = st.db.user_by_login(login)?.ok_or_else(|| AppError::NotFound(format!("no user {login:?}")))?;
    not_from_directory(&u, "password")?;
    let password = auth::new_password();
    st.db.reset_password(u.id, &auth::hash_password(&password))?;
    let revoked = st.db.revoke_tokens_of(u.id)?;
    st.db.delete_sessions_of(u.id, None)?;
    let msg = format!("password of {} reset ({revoked} token(s) revoked); to be changed at next login", u.login);
    st.event(&NewEvent {
        actor: caller.login(),
        kind: "user.reset",
        mac: None,
        task_id: None,
        message: &msg,
        data: None,
    })?;
    Ok((password, revoked))
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
    if b.name.trim().is_empty() || b.name.chars().count() > 100 || b.name.chars().any(char::is_control) {
        return Err(AppError::invalid(
            "name",
            "1 to 100 characters, no control characters (it is the author name of the git commits this user makes)",
        ));
    }
    if b.email
        .as_deref()
        .is_some_and(|e| e.chars().count() > 200 || e.chars().any(|c| c.is_control() || c == '<' || c == '>'))
    {
        return Err(AppError::invalid("email", "at most 200 characters, no control characters or angle brackets"));
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

//! Tasks: listing, one task, cancelling.

use axum::extract::State;
use serde::Deserialize;

use super::{Json, OptionalJson, Path, Query};
use crate::auth::Caller;
use crate::db::{NewEvent, Role, Task, TaskQuery, TaskState};
use crate::{blocking, AppError, AppState};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TasksQuery {
    state: Option<String>,
    /// Queued and running only.
    #[serde(default)]
    active: bool,
    /// MAC address or hostname.
    machine: Option<String>,
    batch: Option<String>,
    /// Tasks with an id below this one (paging backwards).
    before: Option<i64>,
    limit: Option<i64>,
}

pub async fn tasks_list(
    State(st): State<AppState>,
    caller: Caller,
    Query(q): Query<TasksQuery>,
) -> Result<Json<Vec<Task>>, AppError> {
    caller.require(Role::Readonly)?;
    super::in_range("limit", q.limit, 1, 10_000)?;
    let state = match q.state.as_deref() {
        None => None,
        Some(s) => Some(TaskState::parse(s).ok_or_else(|| {
            AppError::invalid("state", format!("{s:?} is not one of queued, running, done, failed, cancelled"))
        })?),
    };
    blocking(move || {
        let mac = match q.machine {
            None => None,
            Some(m) => Some(match crate::ops::find(&st.profiles.snapshot().inventory, &m) {
                Some(found) => found.mac.to_string(),
                None => m
                    .parse::<parc_profiles::Mac>()
                    .map(|m| m.to_string())
                    .map_err(|_| AppError::NotFound(format!("no machine {m:?}")))?,
            }),
        };
        let query =
            TaskQuery { state, active: q.active, mac, batch: q.batch, before: q.before, limit: q.limit.unwrap_or(100) };
        Ok(Json(st.db.tasks(&query)?))
    })
    .await
}

fn task_id(id: &str) -> Result<i64, AppError> {
    id.trim_start_matches('#').parse().map_err(|_| AppError::invalid("id", format!("{id:?} is not a task number")))
}

pub async fn task_show(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Task>, AppError> {
    caller.require(Role::Readonly)?;
    let id = task_id(&id)?;
    blocking(move || st.db.task(id)?.map(Json).ok_or_else(|| AppError::NotFound(format!("no task #{id}")))).await
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CancelBody {
    #[serde(default)]
    reason: Option<String>,
}

pub async fn task_cancel(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    OptionalJson(body): OptionalJson<CancelBody>,
) -> Result<Json<Task>, AppError> {
    caller.require(Role::Technician)?;
    let id = task_id(&id)?;
    blocking(move || Ok(Json(cancel(&st, &caller, id, body.reason.as_deref())?))).await
}

/// Cancels a queued or running task and journals who did it. Blocking.
pub(crate) fn cancel(st: &AppState, caller: &Caller, id: i64, reason: Option<&str>) -> Result<Task, AppError> {
    let t = st.db.task(id)?.ok_or_else(|| AppError::NotFound(format!("no task #{id}")))?;
    let msg = format!(
        "task #{id} ({} of {}) cancelled by {}{}",
        t.kind.as_str(),
        t.mac,
        caller.login(),
        reason.map(|r| format!(": {r}")).unwrap_or_default()
    );
    if !st.db.finish_task(id, TaskState::Cancelled, &msg, None)? {
        return Err(AppError::Conflict(format!("task #{id} is already {}", t.state.as_str())));
    }
    crate::store::task_ended(st, id);
    st.event(&NewEvent {
        actor: caller.login(),
        kind: "task.cancel",
        mac: Some(&t.mac),
        task_id: Some(id),
        message: &msg,
        data: None,
    })?;
    st.db.task(id)?.ok_or_else(|| AppError::NotFound(format!("no task #{id}")))
}

//! Tasks: running and queued, recently finished, cancelling, and the bulk form (a CSV of
//! install, move or replace) whose preview runs the batch path of `POST /api/v1/batch` without
//! committing, then the same path for real on confirmation.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;

use super::TaskRow;
use crate::bulk::{self, BulkOp};
use crate::console::csrf::CsrfForm;
use crate::console::session::{self, Session};
use crate::console::{render, require_role, ConsoleError, OrPage, PageCtx};
use crate::db::{BatchSummary, Role, TaskQuery};
use crate::ops::{self, RunReport};
use crate::{blocking, AppError, AppState};

/// Rows a bulk request may hold (the API's batch limit).
const BULK_MAX: usize = 20_000;

#[derive(Debug, Default)]
pub struct BulkForm {
    pub op: String,
    pub csv: String,
    pub reason: String,
    pub error: Option<String>,
}

#[derive(Template)]
#[template(path = "tasks.html")]
pub struct TasksPage {
    ctx: PageCtx,
    /// Recent campaigns, or the one asked for.
    batches: Vec<BatchSummary>,
    /// Set when one campaign is shown: its tasks replace the lists below.
    campaign: Option<Vec<TaskRow>>,
    active: Vec<TaskRow>,
    finished: Vec<TaskRow>,
    bulk: BulkForm,
    /// A preview (nothing done yet) or the result of a confirmed run.
    report: Option<RunReport>,
    confirmed: bool,
}

impl TasksPage {
    /// How long a finished campaign took, from queuing to its last result.
    pub fn took(&self, b: &BatchSummary) -> String {
        b.finished_at.map(|f| self.ctx.duration(((f - b.created_at).max(0) / 1000) as u64)).unwrap_or_default()
    }
}

#[derive(Debug, Default, serde::Deserialize)]
pub struct TasksFilter {
    batch: Option<String>,
}

fn page(
    st: &AppState,
    ctx: PageCtx,
    bulk: BulkForm,
    report: Option<RunReport>,
    confirmed: bool,
) -> Result<TasksPage, AppError> {
    campaign_page(st, ctx, bulk, report, confirmed, None)
}

fn campaign_page(
    st: &AppState,
    ctx: PageCtx,
    bulk: BulkForm,
    report: Option<RunReport>,
    confirmed: bool,
    batch: Option<&str>,
) -> Result<TasksPage, AppError> {
    let batches = st.db.batches(batch, 20)?;
    if let Some(b) = batch {
        if batches.is_empty() {
            return Err(AppError::NotFound(format!("no campaign {b:?}")));
        }
    }
    let campaign = match batch {
        Some(b) => Some(
            st.db
                .tasks(&TaskQuery { batch: Some(b.to_string()), limit: 10_000, ..Default::default() })?
                .into_iter()
                .map(TaskRow::new)
                .collect(),
        ),
        None => None,
    };
    let active = st.db.tasks(&TaskQuery { active: true, limit: 1000, ..Default::default() })?;
    let finished = st
        .db
        .tasks(&TaskQuery { limit: 200, ..Default::default() })?
        .into_iter()
        .filter(|t| !t.state.is_active())
        .take(100);
    Ok(TasksPage {
        ctx,
        batches,
        campaign,
        active: active.into_iter().map(TaskRow::new).collect(),
        finished: finished.map(TaskRow::new).collect(),
        bulk,
        report,
        confirmed,
    })
}

pub async fn tasks_list(
    State(st): State<AppState>,
    s: Session,
    Query(f): Query<TasksFilter>,
) -> Result<Response, ConsoleError> {
    let ctx = PageCtx::new(&s, "tasks");
    let bulk = BulkForm { op: "install".into(), ..Default::default() };
    let p = blocking(move || campaign_page(&st, ctx, bulk, None, false, f.batch.as_deref())).await.or_page(&s)?;
    Ok(render(&p, &p.ctx, StatusCode::OK))
}

/// `step=preview` shows what would happen; `step=confirm` does it.
pub async fn tasks_bulk(State(st): State<AppState>, form: CsrfForm) -> Result<Response, ConsoleError> {
    let s = form.session.clone();
    let caller = require_role(&st, &s, Role::Technician).await?;
    let mut bulk = BulkForm {
        op: form.get("op").unwrap_or_default(),
        csv: form.fields.get("csv").cloned().unwrap_or_default(),
        reason: form.get("reason").unwrap_or_default(),
        error: None,
    };
    let confirm = form.get("step").as_deref() == Some("confirm");
    let ctx = PageCtx::new(&s, "tasks");
    let parsed = match BulkOp::parse(&bulk.op) {
        None => Err(format!("{:?}: choose install, move or replace", bulk.op)),
        Some(op) => bulk::parse_ops(&bulk.csv, op).map_err(|e| e.to_string()).and_then(|ops| {
            if ops.len() > BULK_MAX {
                Err(format!("{} lines: at most {BULK_MAX} per operation", ops.len()))
            } else {
                Ok(ops)
            }
        }),
    };
    let ops = match parsed {
        Ok(ops) => ops,
        Err(e) => {
            bulk.error = Some(e);
            let p = blocking(move || page(&st, ctx, bulk, None, false)).await.or_page(&s)?;
            return Ok(render(&p, &p.ctx, StatusCode::BAD_REQUEST));
        }
    };
    let reason = Some(bulk.reason.clone()).filter(|r| !r.is_empty());
    let p = blocking(move || {
        let report = if confirm {
            ops::run(&st, &caller, &ops, reason.as_deref())?
        } else {
            ops::preview(&st, &caller, &ops, reason.as_deref())?
        };
        page(&st, ctx, bulk, Some(report), confirm)
    })
    .await
    .or_page(&s)?;
    Ok(render(&p, &p.ctx, StatusCode::OK))
}

pub async fn task_cancel(
    State(st): State<AppState>,
    Path(id): Path<i64>,
    form: CsrfForm,
) -> Result<Response, ConsoleError> {
    let s = form.session.clone();
    let caller = require_role(&st, &s, Role::Technician).await?;
    let back = session::safe_next(form.get("back").as_deref());
    let reason = form.get("reason");
    let task = blocking(move || crate::api::tasks::cancel(&st, &caller, id, reason.as_deref())).await.or_page(&s)?;
    Ok(session::redirect_with_flash(&back, task.message.as_deref().unwrap_or(""), s.secure))
}

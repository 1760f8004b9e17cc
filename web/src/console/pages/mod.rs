//! One module per console page.

pub mod dashboard;
pub mod departments;
pub mod images;
pub mod journal;
pub mod machines;
pub mod tasks;
pub mod users;

use axum::extract::State;
use axum::response::{IntoResponse, Response};

use super::session::Session;
use crate::db::Task;
use crate::AppState;

/// The live stream for the console's script (the API's stream wants a token; pages have a
/// session cookie).
pub async fn live(State(st): State<AppState>, _s: Session) -> Response {
    crate::api::admin::live_stream(&st).into_response()
}

/// A task's progress as the pages show it.
#[derive(Debug, Clone)]
pub struct TaskRow {
    pub task: Task,
    pub percent: u64,
    /// Seconds left at the current rate.
    pub eta_s: Option<u64>,
}

impl TaskRow {
    pub fn new(task: Task) -> TaskRow {
        let percent = (task.bytes_done.saturating_mul(100)).checked_div(task.bytes_total).unwrap_or(0).min(100);
        let eta_s = (task.rate_bps > 0 && task.bytes_total > task.bytes_done)
            .then(|| (task.bytes_total - task.bytes_done) / task.rate_bps);
        TaskRow { task, percent, eta_s }
    }
    pub fn eta_text(&self, ctx: &crate::console::PageCtx) -> String {
        self.eta_s.map(|s| ctx.duration(s)).unwrap_or_default()
    }
    pub fn name(&self) -> &str {
        self.task.hostname.as_deref().filter(|h| !h.is_empty()).unwrap_or(&self.task.mac)
    }
}

//! The dashboard: what runs now, what was done today, failures first, and the fleet by
//! department and by image version.

use std::collections::{BTreeMap, HashMap};

use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use parc_profiles::MachineStatus;

use super::TaskRow;
use crate::console::session::Session;
use crate::console::{render, ConsoleError, OrPage, PageCtx};
use crate::db::{now_ms, TaskKind, TaskQuery, TaskState};
use crate::{blocking, AppError, AppState};

#[derive(Debug, Default)]
pub struct Today {
    pub installed: u64,
    pub moved: u64,
    pub replaced: u64,
    pub failed: u64,
}

#[derive(Debug)]
pub struct DepartmentCount {
    pub id: String,
    pub name: String,
    pub machines: usize,
}

#[derive(Debug)]
pub struct ImageCount {
    /// `name@version`, or the digest's start when the store does not know it.
    pub label: String,
    pub digest: String,
    pub machines: usize,
    /// Some newer version of the same name exists.
    pub old: bool,
    pub known: bool,
}

#[derive(Template)]
#[template(path = "dashboard.html")]
pub struct DashboardPage {
    ctx: PageCtx,
    running: Vec<TaskRow>,
    today: Today,
    failures: Vec<TaskRow>,
    departments: Vec<DepartmentCount>,
    images: Vec<ImageCount>,
    not_installed: usize,
}

/// Midnight (UTC) today, in unix ms.
fn start_of_day(now: i64) -> i64 {
    now - now.rem_euclid(86_400_000)
}

pub async fn dashboard(State(st): State<AppState>, s: Session) -> Result<Response, ConsoleError> {
    let ctx = PageCtx::new(&s, "dashboard");
    let page = blocking(move || build(&st, ctx)).await.or_page(&s)?;
    Ok(render(&page, &page.ctx, StatusCode::OK))
}

fn build(st: &AppState, ctx: PageCtx) -> Result<DashboardPage, AppError> {
    let since = start_of_day(now_ms());
    let running = st.db.tasks(&TaskQuery { active: true, limit: 500, ..Default::default() })?;
    // Running first, then queued; each newest first.
    let mut running: Vec<TaskRow> = running.into_iter().map(TaskRow::new).collect();
    running.sort_by_key(|r| (r.task.state != TaskState::Running, -r.task.id));
    let mut today = Today::default();
    for (kind, state, n) in st.db.finished_counts(since)? {
        match (kind, state) {
            (_, TaskState::Failed) => today.failed += n,
            (TaskKind::Install | TaskKind::Reimage, TaskState::Done) => today.installed += n,
            (TaskKind::Move, TaskState::Done) => today.moved += n,
            (TaskKind::Replace, TaskState::Done) => today.replaced += n,
            _ => {}
        }
    }
    let failures = st
        .db
        .tasks(&TaskQuery { state: Some(TaskState::Failed), limit: 50, ..Default::default() })?
        .into_iter()
        .filter(|t| t.finished_at.is_some_and(|f| f >= since))
        .map(TaskRow::new)
        .collect();
    let snap = st.profiles.snapshot();
    let mut by_dep: BTreeMap<&str, usize> = BTreeMap::new();
    let mut active = std::collections::HashSet::new();
    for m in snap.inventory.machines().filter(|m| m.status == MachineStatus::Active) {
        *by_dep.entry(m.department.as_str()).or_default() += 1;
        active.insert(m.mac.to_string());
    }
    let departments = by_dep
        .into_iter()
        .map(|(id, machines)| DepartmentCount {
            id: id.to_string(),
            name: snap.departments.get(id).map(|d| d.name.clone()).unwrap_or_else(|| id.to_string()),
            machines,
        })
        .collect();
    // Which name and version each digest is, and the newest version of each name.
    let names = st.store.names()?;
    let mut latest: HashMap<&str, u32> = HashMap::new();
    for n in &names {
        let v = latest.entry(n.name.as_str()).or_default();
        *v = (*v).max(n.version);
    }
    let mut by_digest: HashMap<String, (String, bool)> = HashMap::new();
    for n in &names {
        let old = latest.get(n.name.as_str()).is_some_and(|l| *l > n.version);
        by_digest.entry(n.record.digest.to_string()).or_insert((format!("{}@{}", n.name, n.version), old));
    }
    let mut counts: HashMap<String, usize> = HashMap::new();
    let mut not_installed = active.len();
    for m in st.db.machine_states()? {
        if let (Some(d), true) = (m.image_digest, active.contains(&m.mac)) {
            *counts.entry(d).or_default() += 1;
            not_installed -= 1;
        }
    }
    let mut images: Vec<ImageCount> = counts
        .into_iter()
        .map(|(digest, machines)| {
            let known = by_digest.get(&digest);
            ImageCount {
                label: known.map(|k| k.0.clone()).unwrap_or_else(|| crate::profiles::short(&digest).to_string()),
                old: known.is_some_and(|k| k.1),
                known: known.is_some(),
                digest,
                machines,
            }
        })
        .collect();
    images.sort_by(|a, b| b.machines.cmp(&a.machines).then(a.label.cmp(&b.label)));
    Ok(DashboardPage { ctx, running, today, failures, departments, images, not_installed })
}

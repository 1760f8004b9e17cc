//! Departments as parsed from the profiles repository, their problems (file, line, reason),
//! validation of a department file before committing it, and the repository's status.

use axum::extract::State;
use parc_profiles::{Department, EntryKind, Problem};
use serde::{Deserialize, Serialize};

use super::{Json, Path};
use crate::auth::Caller;
use crate::db::{NewEvent, Role};
use crate::{blocking, AppError, AppState};
use parc_imager::store::ChunkSource as _;

#[derive(Debug, Serialize)]
pub struct DepartmentView {
    pub id: String,
    pub name: String,
    pub description: String,
    pub file: String,
    pub image: String,
    /// The manifest the image resolves to now; `null` when it is not in the store.
    pub image_digest: Option<String>,
    pub hostname_pattern: String,
    pub tags: Vec<String>,
    pub disk: parc_profiles::DiskRule,
    pub payloads: Vec<String>,
    pub first_boot: Option<String>,
    pub os: parc_profiles::Os,
    pub windows: Option<parc_profiles::WindowsSettings>,
    /// The file at HEAD does not validate: this is its last good version.
    pub stale: bool,
    pub machines: usize,
    pub problems: Vec<Problem>,
}

pub(crate) fn department_view(st: &AppState, d: &Department, problems: &[Problem]) -> DepartmentView {
    let snap = st.profiles.snapshot();
    DepartmentView {
        id: d.id.clone(),
        name: d.name.clone(),
        description: d.description.clone(),
        file: d.file.clone(),
        image: d.image.clone(),
        image_digest: st.store.resolve(&d.image).ok().map(|x| x.to_string()),
        hostname_pattern: d.hostname.as_str().to_string(),
        tags: d.tags.clone(),
        disk: d.disk.clone(),
        payloads: d.payloads.clone(),
        first_boot: d.first_boot.clone(),
        os: d.os,
        windows: d.windows.clone(),
        stale: d.stale,
        machines: snap
            .inventory
            .machines()
            .filter(|m| m.department == d.id && m.status == parc_profiles::MachineStatus::Active)
            .count(),
        problems: problems.iter().filter(|p| p.file == d.file).cloned().collect(),
    }
}

pub(crate) fn all_problems(st: &AppState) -> Vec<Problem> {
    st.profiles.problems(|image| st.store.resolve(image).is_ok())
}

pub async fn departments_list(
    State(st): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<DepartmentView>>, AppError> {
    caller.require(Role::Readonly)?;
    blocking(move || {
        let problems = all_problems(&st);
        let snap = st.profiles.snapshot();
        Ok(Json(snap.departments.values().map(|d| department_view(&st, d, &problems)).collect()))
    })
    .await
}

pub async fn department_show(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<DepartmentView>, AppError> {
    caller.require(Role::Readonly)?;
    blocking(move || {
        let problems = all_problems(&st);
        let snap = st.profiles.snapshot();
        let d = snap.departments.get(&id).ok_or_else(|| AppError::NotFound(format!("no department {id:?}")))?;
        Ok(Json(department_view(&st, d, &problems)))
    })
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidateBody {
    /// Path in the repository, `departments/<id>.toml`.
    file: String,
    text: String,
}

#[derive(Debug, Serialize)]
pub struct Validation {
    pub ok: bool,
    pub problems: Vec<Problem>,
}

/// Checks a department file against HEAD (payload paths must exist there) and the store
/// (its image must exist), without committing anything.
pub async fn department_validate(
    State(st): State<AppState>,
    caller: Caller,
    Json(b): Json<ValidateBody>,
) -> Result<Json<Validation>, AppError> {
    caller.require(Role::Readonly)?;
    let id = b
        .file
        .strip_prefix("departments/")
        .and_then(|f| f.strip_suffix(".toml"))
        .ok_or_else(|| AppError::invalid("file", "must be departments/<id>.toml"))?
        .to_string();
    blocking(move || {
        let commit = st.profiles.snapshot().commit.clone();
        let result = st.profiles.with_repo(|repo| {
            parc_profiles::parse_department(&id, &b.file, &b.text, |path, kind| match kind {
                EntryKind::File => repo.read_file(&commit, path).is_ok(),
                EntryKind::Dir => repo.list_files(&commit, path).is_ok_and(|f| !f.is_empty()),
            })
        });
        let problems = match result {
            Ok(d) if st.store.resolve(&d.image).is_err() => vec![Problem {
                file: b.file.clone(),
                line: Some(d.image_line),
                reason: format!("image {:?} is not in the store", d.image),
            }],
            Ok(_) => Vec::new(),
            Err(p) => p,
        };
        Ok(Json(Validation { ok: problems.is_empty(), problems }))
    })
    .await
}

#[derive(Debug, Serialize)]
pub struct ProfilesStatus {
    pub commit: String,
    pub departments: usize,
    pub machines: usize,
    pub inventory_valid_at_head: bool,
    pub problems: Vec<Problem>,
    pub remote: Option<String>,
    pub last_sync: Option<String>,
    pub last_sync_error: Option<String>,
}

fn status(st: &AppState) -> ProfilesStatus {
    let snap = st.profiles.snapshot();
    let sync = st.profiles.last_sync();
    ProfilesStatus {
        commit: snap.commit.clone(),
        departments: snap.departments.len(),
        machines: snap.inventory.len(),
        inventory_valid_at_head: snap.inventory_valid_at_head,
        problems: all_problems(st),
        remote: st.profiles.remote().map(|r| format!("{} {}", r.url, r.branch)),
        last_sync: sync.clone().and_then(Result::ok),
        last_sync_error: sync.and_then(Result::err),
    }
}

pub async fn profiles_status(State(st): State<AppState>, caller: Caller) -> Result<Json<ProfilesStatus>, AppError> {
    caller.require(Role::Readonly)?;
    blocking(move || Ok(Json(status(&st)))).await
}

/// Pulls from the remote (if configured) and re-reads HEAD now, instead of at the next poll.
pub async fn profiles_reload(State(st): State<AppState>, caller: Caller) -> Result<Json<ProfilesStatus>, AppError> {
    caller.require(Role::Technician)?;
    blocking(move || {
        let before = st.profiles.snapshot().commit.clone();
        if let Err(e) = st.profiles.sync() {
            tracing::warn!(error = %e, "profiles: pull from the remote failed");
        }
        st.profiles.reload().map_err(crate::profiles::repo_error)?;
        let s = status(&st);
        let msg = if s.commit == before {
            format!("profiles reloaded: still at {}", crate::profiles::short(&s.commit))
        } else {
            format!("profiles reloaded: {} → {}", crate::profiles::short(&before), crate::profiles::short(&s.commit))
        };
        st.event(&NewEvent {
            actor: caller.login(),
            kind: "profiles.reload",
            mac: None,
            task_id: None,
            message: &msg,
            data: None,
        })?;
        Ok(Json(s))
    })
    .await
}

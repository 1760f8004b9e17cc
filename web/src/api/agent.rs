//! What the agent on a netbooted machine calls. It authenticates with the task token its
//! boot script carried (`parc.token=` on the kernel command line); a machine without a task
//! may still say hello, which registers its hardware.

use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};

use super::Json;
use crate::auth::token_hash;
use crate::db::{Hardware, NewEvent, Progress, Task, TaskKind, TaskState};
use crate::{blocking, AppError, AppState, Live};
use parc_imager::store::ChunkSource as _;

const AGENT: &str = "agent";

/// The task behind the request's agent token.
#[derive(Debug, Clone)]
pub struct AgentTask(pub Task);

fn bearer(headers: &HeaderMap) -> Option<String> {
    headers.get(AUTHORIZATION)?.to_str().ok()?.strip_prefix("Bearer ").map(|t| t.trim().to_string())
}

impl FromRequestParts<AppState> for AgentTask {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Self, Self::Rejection> {
        let token = bearer(&parts.headers).ok_or_else(|| {
            AppError::Unauthorized("the agent's task token is required (Authorization: Bearer …)".into())
        })?;
        let db = st.db.clone();
        blocking(move || {
            db.task_by_token(&token_hash(&token))?.map(AgentTask).ok_or_else(|| {
                AppError::Unauthorized("unknown or superseded task token: reboot the machine to get a fresh one".into())
            })
        })
        .await
    }
}

/// What an agent needs to do its task.
#[derive(Debug, Serialize)]
pub struct AgentWork {
    pub id: i64,
    pub kind: TaskKind,
    pub mac: String,
    pub hostname: Option<String>,
    pub department: Option<serde_json::Value>,
    pub image: Option<ImageRef>,
    pub replaces: Option<String>,
    /// Commit of the profiles repository the department was read from.
    pub profiles_commit: String,
    /// The inventory knows the serial of the disk to write (a replacement keeps it empty).
    pub disk_serial: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct ImageRef {
    pub reference: String,
    pub digest: Option<String>,
}

fn work(st: &AppState, t: &Task) -> AgentWork {
    let snap = st.profiles.snapshot();
    let department = t.department.as_ref().and_then(|id| snap.departments.get(id)).map(|d| {
        serde_json::json!({
            "id": d.id, "name": d.name, "image": d.image, "hostname_pattern": d.hostname.as_str(),
            "disk": d.disk, "payloads": d.payloads, "first_boot": d.first_boot, "tags": d.tags,
        })
    });
    AgentWork {
        id: t.id,
        kind: t.kind,
        mac: t.mac.clone(),
        hostname: t.hostname.clone(),
        department,
        image: t.image_ref.as_ref().map(|r| ImageRef { reference: r.clone(), digest: t.image_digest.clone() }),
        replaces: t.replaces.clone(),
        profiles_commit: snap.commit.clone(),
        disk_serial: None,
    }
}

#[derive(Debug, Serialize)]
pub struct HelloReply {
    /// The machine is in the inventory.
    pub known: bool,
    pub hostname: Option<String>,
    pub department: Option<String>,
    /// The task to do now; `null` in register mode.
    pub task: Option<AgentWork>,
    /// The machine has a task, but this agent booted without (or with an old) token: reboot.
    pub pending_task: bool,
    /// The machine's last deployment failed or was cancelled after it started, so its disk
    /// is not bootable: the agent shows why and waits for a new task. `null` otherwise.
    pub last_task: Option<LastTask>,
}

#[derive(Debug, Serialize)]
pub struct LastTask {
    pub id: i64,
    pub kind: TaskKind,
    /// `failed` or `cancelled`.
    pub state: TaskState,
    pub reason: String,
    pub finished_at: i64,
}

pub async fn hello(
    State(st): State<AppState>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    Json(hw): Json<Hardware>,
) -> Result<Json<HelloReply>, AppError> {
    let mac: parc_profiles::Mac =
        hw.mac.parse::<parc_profiles::Mac>().map_err(|e| AppError::invalid("mac", e.to_string()))?;
    let hw = Hardware { mac: mac.to_string(), ..hw };
    if hw.disks.len() > 64 || hw.model.as_deref().is_some_and(|m| m.len() > 200) {
        return Err(AppError::invalid("disks", "at most 64 disks, model at most 200 characters"));
    }
    let token = bearer(&headers);
    blocking(move || {
        let task = match &token {
            Some(t) => Some(st.db.task_by_token(&token_hash(t))?.filter(|t| t.mac == hw.mac).ok_or_else(|| {
                AppError::Unauthorized(
                    "unknown or superseded task token for this machine: reboot it to get a fresh one".into(),
                )
            })?),
            None => None,
        };
        if let Some(t) = &task {
            crate::lifecycle::refuse_late(&st, t.id, "hello", serde_json::to_value(&hw).unwrap_or_default())?;
        }
        st.db.record_hello(&hw, Some(&peer.ip().to_string()))?;
        let snap = st.profiles.snapshot();
        let inv = snap.inventory.get(&mac).cloned();
        let mut hostname = inv.as_ref().map(|m| m.hostname.clone()).filter(|h| !h.is_empty());
        let mut reply_task = None;
        if let Some(t) = task.filter(|t| t.state.is_active()) {
            if hostname.is_none() {
                hostname = assign_hostname_from_serial(&st, &mac, hw.serial.as_deref())?;
            }
            st.db.start_task(t.id, hostname.as_deref())?;
            let t = st.db.task(t.id)?.expect("exists");
            let msg = format!(
                "agent started task #{} ({}) on {}",
                t.id,
                t.kind.as_str(),
                hostname.as_deref().unwrap_or(&t.mac)
            );
            st.event(&NewEvent {
                actor: AGENT,
                kind: "task.start",
                mac: Some(&t.mac),
                task_id: Some(t.id),
                message: &msg,
                data: None,
            })?;
            reply_task = Some(work(&st, &t));
        }
        let pending_task = reply_task.is_none() && st.db.active_task(&hw.mac)?.is_some();
        let mut last_task = None;
        if reply_task.is_none() {
            let model = hw.model.as_deref().unwrap_or("unknown model");
            let mut msg =
                format!("{} registered: {model}, serial {}", hw.mac, hw.serial.as_deref().unwrap_or("unknown"));
            let failed = if pending_task { None } else { crate::lifecycle::last_deploy_failed(&st, &hw.mac)? };
            if let Some(t) = failed {
                let reason = t.message.clone().unwrap_or_else(|| format!("task {}", t.state.as_str()));
                msg.push_str(&format!(
                    "; its last task #{} ({}) {}: {reason}; its disk is not booted until a new task succeeds",
                    t.id,
                    t.kind.as_str(),
                    t.state.as_str()
                ));
                last_task = Some(LastTask {
                    id: t.id,
                    kind: t.kind,
                    state: t.state,
                    reason,
                    finished_at: t.finished_at.unwrap_or(t.created_at),
                });
            }
            st.event(&NewEvent {
                actor: AGENT,
                kind: "agent.hello",
                mac: Some(&hw.mac),
                task_id: last_task.as_ref().map(|t| t.id),
                message: &msg,
                data: None,
            })?;
        }
        Ok(Json(HelloReply {
            known: inv.is_some(),
            hostname,
            department: inv.map(|m| m.department),
            task: reply_task,
            pending_task,
            last_task,
        }))
    })
    .await
}

/// Hostname patterns with `{serial}` wait for the agent to report the serial.
fn assign_hostname_from_serial(
    st: &AppState,
    mac: &parc_profiles::Mac,
    serial: Option<&str>,
) -> Result<Option<String>, AppError> {
    let Some(serial) = serial.filter(|s| !s.trim().is_empty()) else { return Ok(None) };
    let author = parc_profiles::Author { name: "parc agent".into(), email: "agent@parc.local".into() };
    let _serial_ops = st.ops_lock.lock().unwrap_or_else(|p| p.into_inner());
    let (name, _) = st.profiles.edit_inventory(&author, |_, snap, inv| {
        let Some(mut m) = inv.get(mac).cloned() else { return Ok((None, None)) };
        let Some(d) = snap.departments.get(&m.department) else { return Ok((None, None)) };
        if !m.hostname.is_empty() {
            return Ok((Some(m.hostname), None));
        }
        let counter = d.hostname.next_counter(inv.machines().map(|x| x.hostname.as_str()));
        let name = d.hostname.render(counter, Some(serial), mac).map_err(|e| AppError::Conflict(e.to_string()))?;
        m.hostname = name.clone();
        if m.serial.is_empty() {
            m.serial = serial.to_string();
        }
        inv.upsert(m).map_err(|p| AppError::Conflict(p.reason))?;
        let msg = format!("name {mac} {name} from its serial {serial} (reported by its agent)\n\nBy: parc agent\n");
        Ok((Some(name), Some(msg)))
    })?;
    Ok(name)
}

pub async fn task(State(st): State<AppState>, AgentTask(t): AgentTask) -> Result<Json<AgentWork>, AppError> {
    if !t.state.is_active() {
        return Err(AppError::Conflict(format!("task #{} is {}; nothing to do", t.id, t.state.as_str())));
    }
    blocking(move || Ok(Json(work(&st, &t)))).await
}

#[derive(Debug, Serialize)]
pub struct ProgressReply {
    /// False when the task was cancelled or has ended: the agent stops.
    #[serde(rename = "continue")]
    pub go_on: bool,
}

pub async fn progress(
    State(st): State<AppState>,
    AgentTask(t): AgentTask,
    Json(p): Json<Progress>,
) -> Result<Json<ProgressReply>, AppError> {
    if p.phase.is_empty() || p.phase.len() > 64 {
        return Err(AppError::invalid("phase", "1 to 64 characters"));
    }
    blocking(move || {
        let go_on = st.db.task_progress(t.id, &p)?;
        if !go_on {
            crate::lifecycle::refuse_late(&st, t.id, "progress report", serde_json::to_value(&p).unwrap_or_default())?;
        }
        if let Some(t) = st.db.task(t.id)? {
            let _ = st.live.send(Live::Progress(Box::new(t)));
        }
        Ok(Json(ProgressReply { go_on }))
    })
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DoneBody {
    /// Every written chunk was read back and matched its sha256.
    pub verified: bool,
    /// The manifest the machine now holds (deploy) or produced (capture).
    pub image_digest: String,
    #[serde(default)]
    pub bytes_fetched: Option<u64>,
    #[serde(default)]
    pub disk: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
}

/// The end of a task. A deployment is only `done` with a verified image whose digest is the
/// one the task named; anything else fails the task (health-data rule: never report success
/// on unverified data).
pub async fn done(
    State(st): State<AppState>,
    AgentTask(t): AgentTask,
    Json(b): Json<DoneBody>,
) -> Result<Json<Task>, AppError> {
    blocking(move || {
        let sent = serde_json::json!({ "verified": b.verified, "image_digest": b.image_digest, "disk": b.disk, "message": b.message });
        crate::lifecycle::refuse_late(&st, t.id, "success report", sent)?;
        if !t.state.is_active() {
            return Err(AppError::Conflict(format!("task #{} is already {}", t.id, t.state.as_str())));
        }
        let refusal = if !b.verified {
            Some("the agent reported the image written but not verified".to_string())
        } else if t.kind != TaskKind::Capture && t.image_digest.as_deref() != Some(b.image_digest.as_str()) {
            Some(format!(
                "the agent wrote image {} but the task was for {}",
                b.image_digest,
                t.image_digest.as_deref().unwrap_or("none")
            ))
        } else if t.kind == TaskKind::Capture && st.store.resolve(&b.image_digest).is_err() {
            Some(format!("captured image {} is not in the store", b.image_digest))
        } else {
            None
        };
        let host = t.hostname.clone().unwrap_or_else(|| t.mac.clone());
        if let Some(why) = refusal {
            st.db.finish_task(t.id, TaskState::Failed, &why, None)?;
            let msg = format!("task #{} ({}) on {host} failed: {why}", t.id, t.kind.as_str());
            st.event(&NewEvent { actor: AGENT, kind: "task.fail", mac: Some(&t.mac), task_id: Some(t.id), message: &msg, data: None })?;
            return Err(AppError::Conflict(why));
        }
        let installed = (t.kind != TaskKind::Capture).then_some(b.image_digest.as_str());
        let summary = format!(
            "{} verified{}{}",
            if t.kind == TaskKind::Capture { "image captured" } else { "image written and" },
            b.disk.as_deref().map(|d| format!(" on {d}")).unwrap_or_default(),
            b.bytes_fetched.map(|n| format!(", {n} bytes fetched")).unwrap_or_default()
        );
        if !st.db.finish_task(t.id, TaskState::Done, &summary, installed)? {
            // Ended meanwhile: cancelled by a technician, or failed by the silence sweep.
            crate::lifecycle::refuse_late(&st, t.id, "success report", serde_json::json!({ "image_digest": b.image_digest }))?;
            let now = st.db.task(t.id)?.map(|t| t.state.as_str()).unwrap_or("gone");
            return Err(AppError::Conflict(format!("task #{} is already {now}", t.id)));
        }
        let msg = format!("task #{} ({}) on {host} done: {summary}", t.id, t.kind.as_str());
        let data = serde_json::json!({ "image_digest": b.image_digest, "bytes_fetched": b.bytes_fetched, "disk": b.disk, "message": b.message });
        st.event(&NewEvent { actor: AGENT, kind: "task.done", mac: Some(&t.mac), task_id: Some(t.id), message: &msg, data: Some(data) })?;
        Ok(Json(st.db.task(t.id)?.expect("exists")))
    })
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailedBody {
    pub reason: String,
    /// The chunk that could not be fetched or verified, when that was the cause.
    #[serde(default)]
    pub chunk: Option<String>,
}

pub async fn failed(
    State(st): State<AppState>,
    AgentTask(t): AgentTask,
    Json(b): Json<FailedBody>,
) -> Result<Json<Task>, AppError> {
    if b.reason.trim().is_empty() {
        return Err(AppError::invalid("reason", "required"));
    }
    blocking(move || {
        let reason: String = b.reason.chars().take(2000).collect();
        if !st.db.finish_task(t.id, TaskState::Failed, &reason, None)? {
            crate::lifecycle::refuse_late(
                &st,
                t.id,
                "failure report",
                serde_json::json!({ "reason": reason, "chunk": b.chunk }),
            )?;
            return Err(AppError::Conflict(format!("task #{} is already {}", t.id, t.state.as_str())));
        }
        let host = t.hostname.clone().unwrap_or_else(|| t.mac.clone());
        let msg = format!("task #{} ({}) on {host} failed: {reason}", t.id, t.kind.as_str());
        let data = serde_json::json!({ "chunk": b.chunk });
        st.event(&NewEvent {
            actor: AGENT,
            kind: "task.fail",
            mac: Some(&t.mac),
            task_id: Some(t.id),
            message: &msg,
            data: Some(data),
        })?;
        crate::store::task_ended(&st, t.id);
        if let Some(chunk) = &b.chunk {
            crate::store::chunk_reported(&st, &t, chunk);
        }
        Ok(Json(st.db.task(t.id)?.expect("exists")))
    })
    .await
}

#[derive(Debug, Serialize)]
pub struct ProfileFile {
    /// Where it goes on the installed system (`.parc-first-boot` for the first-boot script).
    pub dest: String,
    /// Path in the profiles repository.
    pub source: String,
    pub mode: u32,
    pub size: u64,
}

/// The department's payload files and first-boot script, at the current commit.
fn profile_files(st: &AppState, t: &Task) -> Result<(String, Vec<ProfileFile>), AppError> {
    let snap = st.profiles.snapshot();
    let Some(d) = t.department.as_ref().and_then(|id| snap.departments.get(id)) else {
        return Ok((snap.commit.clone(), Vec::new()));
    };
    let mut out = Vec::new();
    st.profiles.with_repo(|repo| -> Result<(), AppError> {
        for dir in &d.payloads {
            for f in repo.list_files(&snap.commit, dir).map_err(crate::profiles::repo_error)? {
                out.push(ProfileFile {
                    source: format!("{}/{}", dir.trim_end_matches('/'), f.path),
                    dest: f.path,
                    mode: f.mode & 0o777,
                    size: f.size,
                });
            }
        }
        if let Some(script) = &d.first_boot {
            let bytes = repo.read_file(&snap.commit, script).map_err(crate::profiles::repo_error)?;
            out.push(ProfileFile {
                dest: ".parc-first-boot".into(),
                source: script.clone(),
                mode: 0o755,
                size: bytes.len() as u64,
            });
        }
        Ok(())
    })?;
    Ok((snap.commit.clone(), out))
}

pub async fn files(State(st): State<AppState>, AgentTask(t): AgentTask) -> Result<Json<Vec<ProfileFile>>, AppError> {
    blocking(move || Ok(Json(profile_files(&st, &t)?.1))).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileQuery {
    path: String,
}

/// One profile file; only files of the task's own department are served.
pub async fn file(
    State(st): State<AppState>,
    AgentTask(t): AgentTask,
    super::Query(q): super::Query<FileQuery>,
) -> Result<axum::response::Response, AppError> {
    use axum::response::IntoResponse;
    blocking(move || {
        let (commit, files) = profile_files(&st, &t)?;
        if !files.iter().any(|f| f.source == q.path) {
            return Err(AppError::NotFound(format!("{:?} is not a file of this task's department profile", q.path)));
        }
        let bytes = st.profiles.with_repo(|r| r.read_file(&commit, &q.path)).map_err(crate::profiles::repo_error)?;
        Ok(([(axum::http::header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
    })
    .await
}

/// The installed system's first boot reports in: the machine is `ready`.
pub async fn first_boot(
    State(st): State<AppState>,
    AgentTask(t): AgentTask,
) -> Result<Json<serde_json::Value>, AppError> {
    if t.state != TaskState::Done || t.kind == TaskKind::Capture {
        return Err(AppError::Conflict(format!(
            "task #{} is {}; first boot is reported after a deployment",
            t.id,
            t.state.as_str()
        )));
    }
    blocking(move || {
        st.db.record_first_boot(&t.mac)?;
        let host = t.hostname.clone().unwrap_or_else(|| t.mac.clone());
        let msg = format!("{host} booted its new system for the first time: ready");
        st.event(&NewEvent {
            actor: AGENT,
            kind: "machine.ready",
            mac: Some(&t.mac),
            task_id: Some(t.id),
            message: &msg,
            data: None,
        })?;
        Ok(Json(serde_json::json!({ "ok": true, "status": "ready" })))
    })
    .await
}

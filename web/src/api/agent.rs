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
use crate::db::{CredentialKind, Hardware, NewEvent, Progress, Task, TaskKind, TaskState};
use crate::{blocking, AppError, AppState, Live};
use parc_imager::store::ChunkSource as _;

pub(super) const AGENT: &str = "agent";

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

/// The profiles as they were when the task was queued (HEAD for tasks queued before parc
/// recorded commits).
pub(super) fn task_snapshot(st: &AppState, t: &Task) -> Result<std::sync::Arc<parc_profiles::Snapshot>, AppError> {
    match &t.commit_id {
        Some(c) => st.profiles.snapshot_at(c).map_err(crate::profiles::repo_error),
        None => Ok(st.profiles.snapshot()),
    }
}

fn work(st: &AppState, t: &Task) -> Result<AgentWork, AppError> {
    let snap = task_snapshot(st, t)?;
    let department = t.department.as_ref().and_then(|id| snap.departments.get(id)).map(|d| {
        serde_json::json!({
            "id": d.id, "name": d.name, "image": d.image, "hostname_pattern": d.hostname.as_str(),
            "disk": d.disk, "payloads": d.payloads, "first_boot": d.first_boot, "tags": d.tags,
            "os": d.os, "windows": d.windows,
        })
    });
    Ok(AgentWork {
        id: t.id,
        kind: t.kind,
        mac: t.mac.clone(),
        hostname: t.hostname.clone(),
        department,
        image: t.image_ref.as_ref().map(|r| ImageRef { reference: r.clone(), digest: t.image_digest.clone() }),
        replaces: t.replaces.clone(),
        profiles_commit: snap.commit.clone(),
        disk_serial: None,
    })
}

/// The routes of a running task's agent refuse a task that has ended: its session ends with it.
pub(super) fn require_active(t: &Task) -> Result<(), AppError> {
    if t.state.is_active() {
        Ok(())
    } else {
        Err(AppError::Conflict(format!("task #{} is {}; its agent session has ended", t.id, t.state.as_str())))
    }
}

#[derive(Debug, Serialize)]
pub struct HelloReply {
    /// The machine is in the inventory (`false` to a hello without credential).
    pub known: bool,
    pub hostname: Option<String>,
    pub department: Option<String>,
    /// The task to do now; `null` in register mode.
    pub task: Option<AgentWork>,
    /// The agent's session from now on (`Authorization: Bearer`): the task's session when a
    /// task starts, else a standby session to say hello with until one does. `null`: keep the
    /// one presented.
    pub session_token: Option<String>,
    /// The installed system's single-use credential for its first-boot report (deployments).
    pub first_boot_token: Option<String>,
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

/// A standby session lasts a working day; then the waiting machine must boot again.
const STANDBY_TTL_MS: i64 = 24 * 3_600_000;
/// The first-boot report may come days later (a PC installed on Friday, started on Monday).
const FIRST_BOOT_TTL_MS: i64 = 30 * 24 * 3_600_000;
/// The largest hello body: a PC with 64 disks and long model strings fits in a few KiB.
pub const HELLO_BODY_LIMIT: usize = 64 * 1024;

/// Every field of a hello has a bound: it is written to the database and shown on pages.
fn check_hardware(hw: &Hardware) -> Result<(), AppError> {
    let text = |field: &str, v: &Option<String>, max: usize| match v {
        Some(v) if v.chars().count() > max || v.chars().any(char::is_control) => {
            Err(AppError::invalid(field, format!("at most {max} characters, no control characters")))
        }
        _ => Ok(()),
    };
    text("serial", &hw.serial, 128)?;
    text("uuid", &hw.uuid, 64)?;
    text("model", &hw.model, 200)?;
    if hw.disks.len() > 64 {
        return Err(AppError::invalid("disks", "at most 64 disks"));
    }
    for d in &hw.disks {
        if d.name.is_empty()
            || d.name.len() > 64
            || !d.name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err(AppError::invalid("disks.name", "1 to 64 letters, digits, '-', '_' or '.'"));
        }
        text("disks.bus", &d.bus, 32)?;
        text("disks.serial", &d.serial, 128)?;
        // Linux's `wwid` of an NVMe namespace without EUI-64 or NGUID spells out the vendor,
        // serial and model in hex: over 100 characters on real drives (and QEMU's).
        text("disks.wwn", &d.wwn, 256)?;
        text("disks.model", &d.model, 200)?;
    }
    Ok(())
}

/// An agent says hello with the boot credential its boot script carried (or its standby
/// session): the credential must be unexpired, for this MAC, presented from the address it was
/// issued to. A hello without one registers an unknown machine's hardware and learns nothing.
pub async fn hello(
    State(st): State<AppState>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    Json(hw): Json<Hardware>,
) -> Result<Json<HelloReply>, AppError> {
    let mac: parc_profiles::Mac =
        hw.mac.parse::<parc_profiles::Mac>().map_err(|e| AppError::invalid("mac", e.to_string()))?;
    let hw = Hardware { mac: mac.to_string(), ..hw };
    check_hardware(&hw)?;
    if !st.limits.hellos.allow(&peer.ip(), crate::db::now_ms()) {
        return Err(AppError::TooMany("too many hellos from this address; wait a minute".into()));
    }
    let token = bearer(&headers);
    let address = crate::boot::canonical_address(peer.ip());
    blocking(move || {
        let Some(token) = token else { return anonymous_hello(&st, &hw, &address) };
        let hash = token_hash(&token);
        let Some(credential) = st.db.take_credential(&hash, &[CredentialKind::Boot, CredentialKind::Standby])? else {
            // A task's session is no boot credential; from a task failed as lost, it is a late
            // report, refused and journaled like the others.
            if let Some(t) = st.db.task_by_token(&hash)?.filter(|t| t.mac == hw.mac) {
                crate::lifecycle::refuse_late(&st, t.id, "hello", serde_json::to_value(&hw).unwrap_or_default())?;
            }
            return Err(AppError::Unauthorized(
                "unknown, used or expired boot credential: boot the machine from the network again".into(),
            ));
        };
        if credential.mac != hw.mac {
            return Err(AppError::Unauthorized(format!("this credential is not for {}", hw.mac)));
        }
        if credential.address.as_deref() != Some(address.as_str()) {
            return Err(AppError::Unauthorized(format!(
                "this credential was issued to another address than {address}: boot the machine from the network again"
            )));
        }
        st.db.record_hello(&hw, Some(&address))?;
        let snap = st.profiles.snapshot();
        let inv = snap.inventory.get(&mac).cloned();
        let mut hostname = inv.as_ref().map(|m| m.hostname.clone()).filter(|h| !h.is_empty());
        let mut reply = HelloReply {
            known: inv.is_some(),
            hostname: None,
            department: inv.as_ref().map(|m| m.department.clone()),
            task: None,
            session_token: None,
            first_boot_token: None,
            last_task: None,
        };
        if let Some(t) = st.db.active_task(&hw.mac)? {
            if hostname.is_none() {
                hostname = assign_hostname_from_serial(&st, &mac, hw.serial.as_deref())?;
            }
            st.db.start_task(t.id, hostname.as_deref())?;
            let t = st.db.task(t.id)?.expect("exists");
            // The task's own session: it ends with the task, and a later boot script never
            // replaces it (only a later hello, from a machine parc saw booting again, does).
            let session = crate::auth::new_secret("pa_");
            st.db.set_task_token(t.id, &token_hash(&session))?;
            st.db.drop_credentials(&hw.mac, CredentialKind::Standby)?;
            if t.kind != TaskKind::Capture {
                let first_boot = crate::auth::new_secret("pf_");
                st.db.issue_credential(
                    CredentialKind::FirstBoot,
                    &token_hash(&first_boot),
                    &hw.mac,
                    Some(t.id),
                    None,
                    FIRST_BOOT_TTL_MS,
                )?;
                reply.first_boot_token = Some(first_boot);
            }
            let msg = format!(
                "agent started task #{} ({}) on {} from {address}",
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
            reply.task = Some(work(&st, &t)?);
            reply.session_token = Some(session);
            reply.hostname = hostname;
            return Ok(Json(reply));
        }
        reply.hostname = hostname;
        if credential.kind == CredentialKind::Boot {
            let standby = crate::auth::new_secret("ps_");
            st.db.issue_credential(
                CredentialKind::Standby,
                &token_hash(&standby),
                &hw.mac,
                None,
                Some(&address),
                STANDBY_TTL_MS,
            )?;
            reply.session_token = Some(standby);
        }
        let model = hw.model.as_deref().unwrap_or("unknown model");
        let mut msg = format!("{} registered: {model}, serial {}", hw.mac, hw.serial.as_deref().unwrap_or("unknown"));
        if let Some(t) = crate::lifecycle::last_deploy_failed(&st, &hw.mac)? {
            let reason = t.message.clone().unwrap_or_else(|| format!("task {}", t.state.as_str()));
            msg.push_str(&format!(
                "; its last task #{} ({}) {}: {reason}; its disk is not booted until a new task succeeds",
                t.id,
                t.kind.as_str(),
                t.state.as_str()
            ));
            reply.last_task = Some(LastTask {
                id: t.id,
                kind: t.kind,
                state: t.state,
                reason,
                finished_at: t.finished_at.unwrap_or(t.created_at),
            });
        }
        // A waiting agent says hello every few seconds: only its first hello is journaled.
        if credential.kind == CredentialKind::Boot {
            st.event(&NewEvent {
                actor: AGENT,
                kind: "agent.hello",
                mac: Some(&hw.mac),
                task_id: reply.last_task.as_ref().map(|t| t.id),
                message: &msg,
                data: None,
            })?;
        }
        Ok(Json(reply))
    })
    .await
}

/// A hello without credential: the hardware of a machine parc has never heard of is recorded
/// (a technician can then assign it); a known machine is left as it is. The answer is the same
/// either way, so it tells nothing about the inventory.
fn anonymous_hello(st: &AppState, hw: &Hardware, address: &str) -> Result<Json<HelloReply>, AppError> {
    let mac: parc_profiles::Mac = hw.mac.parse().map_err(|_| AppError::invalid("mac", "not a MAC address"))?;
    let known = st.profiles.snapshot().inventory.get(&mac).is_some() || st.db.machine_state(&hw.mac)?.is_some();
    if !known {
        st.db.record_hello(hw, Some(address))?;
        let model = hw.model.as_deref().unwrap_or("unknown model");
        let msg = format!(
            "{} registered without a boot credential from {address}: {model}, serial {}",
            hw.mac,
            hw.serial.as_deref().unwrap_or("unknown")
        );
        st.event(&NewEvent {
            actor: AGENT,
            kind: "agent.hello",
            mac: Some(&hw.mac),
            task_id: None,
            message: &msg,
            data: None,
        })?;
    }
    Ok(Json(HelloReply {
        known: false,
        hostname: None,
        department: None,
        task: None,
        session_token: None,
        first_boot_token: None,
        last_task: None,
    }))
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
    require_active(&t)?;
    blocking(move || Ok(Json(work(&st, &t)?))).await
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
    if p.phase.is_empty() || p.phase.chars().count() > 64 {
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

/// The department's payload files and first-boot script, at the task's commit, while it runs.
fn profile_files(st: &AppState, t: &Task) -> Result<(String, Vec<ProfileFile>), AppError> {
    require_active(t)?;
    let snap = task_snapshot(st, t)?;
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
        let bytes = with_secrets(&st, &t, &q.path, bytes)?;
        Ok(([(axum::http::header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
    })
    .await
}

/// A profile file with the machine's secrets in place of the markers that name them
/// (`crate::secrets`); a secret the machine lacks fails the file, naming it, before anything
/// is written with a hole in it. Deliveries are journaled by name.
fn with_secrets(st: &AppState, t: &Task, path: &str, bytes: Vec<u8>) -> Result<Vec<u8>, AppError> {
    let names = crate::secrets::wanted(&bytes);
    if names.is_empty() {
        return Ok(bytes);
    }
    let mut failure = None;
    let filled = crate::secrets::fill(&bytes, |name| match st.db.secret_value(&t.mac, name) {
        Ok(v) => v,
        Err(e) => {
            failure = Some(AppError::from(e));
            None
        }
    });
    if let Some(e) = failure {
        return Err(e);
    }
    let filled = filled.map_err(|name| {
        AppError::Conflict(format!(
            "profile file {path} asks for the secret {name:?}, which machine {} does not have: an admin sets it \
             (parc machine secret set {} {name}) and the machine is reimaged",
            t.mac, t.mac
        ))
    })?;
    st.event(&NewEvent {
        actor: "parc",
        kind: "agent.secret",
        mac: Some(&t.mac),
        task_id: Some(t.id),
        message: &format!("secret(s) {} delivered to task #{} in {path}", names.join(", "), t.id),
        data: None,
    })?;
    Ok(filled)
}

/// The installed system's first boot reports in with its single-use credential (written by
/// the agent, removed by the report script once answered): the machine is `ready`.
pub async fn first_boot(State(st): State<AppState>, headers: HeaderMap) -> Result<Json<serde_json::Value>, AppError> {
    let token = bearer(&headers).ok_or_else(|| {
        AppError::Unauthorized("the first-boot credential is required (Authorization: Bearer …)".into())
    })?;
    blocking(move || {
        let refused = || AppError::Unauthorized("unknown, used or expired first-boot credential".into());
        let c = st.db.take_credential(&token_hash(&token), &[CredentialKind::FirstBoot])?.ok_or_else(refused)?;
        let t = c.task_id.and_then(|id| st.db.task(id).transpose()).transpose()?.ok_or_else(refused)?;
        if t.state != TaskState::Done {
            // Used up: a task that did not finish never makes its machine ready.
            return Err(AppError::Conflict(format!(
                "task #{} is {}; first boot is reported after a deployment",
                t.id,
                t.state.as_str()
            )));
        }
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

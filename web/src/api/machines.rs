//! Machines: the inventory (git) joined with what agents reported and task state (SQLite).

use std::collections::HashMap;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use parc_profiles::{Machine, MachineStatus};
use serde::{Deserialize, Serialize};

use super::{Json, OptionalJson, Path, Query};
use crate::auth::Caller;
use crate::db::{EventQuery, MachineState, Role, Task, TaskKind, TaskQuery, TaskState};
use crate::ops::{self, machine_etag, MachineEdit, NewMachine, Op};
use crate::{blocking, AppError, AppState};

/// A machine as technicians see it.
#[derive(Debug, Clone, Serialize)]
pub struct MachineView {
    pub mac: String,
    pub hostname: String,
    pub department: String,
    pub serial: String,
    pub asset_tag: String,
    pub location: String,
    pub notes: String,
    /// new, discovered, queued, installing, capturing, installed (waiting for first boot),
    /// ready, failed, retired.
    pub status: &'static str,
    pub in_inventory: bool,
    pub etag: Option<String>,
    pub model: Option<String>,
    pub memory_bytes: Option<u64>,
    /// How it booted the agent last: UEFI or BIOS, Secure Boot on or off.
    pub firmware: Option<crate::db::Firmware>,
    pub ip: Option<String>,
    pub last_seen: Option<i64>,
    pub image_digest: Option<String>,
    pub installed_at: Option<i64>,
    pub first_boot_at: Option<i64>,
    pub task: Option<Task>,
}

/// Every value [`status`] can take.
pub const STATUSES: &[&str] =
    &["new", "discovered", "queued", "installing", "capturing", "installed", "ready", "failed", "retired"];

pub fn status(inv: Option<&Machine>, hw: Option<&MachineState>, last: Option<&Task>) -> &'static str {
    if inv.is_some_and(|m| m.status == MachineStatus::Retired) {
        return "retired";
    }
    match last {
        Some(t) if t.state == TaskState::Queued => return "queued",
        Some(t) if t.state == TaskState::Running && t.kind == TaskKind::Capture => return "capturing",
        Some(t) if t.state == TaskState::Running => return "installing",
        Some(t) if t.state == TaskState::Failed => return "failed",
        // Cancelled while its agent was writing: the disk is unbootable, whatever it held before.
        Some(t) if t.state == TaskState::Cancelled && t.started_at.is_some() && t.kind != TaskKind::Capture => {
            return "failed"
        }
        _ => {}
    }
    if inv.is_none() {
        return "discovered";
    }
    match hw {
        Some(h) if h.image_digest.is_some() && h.first_boot_at.is_some() => "ready",
        Some(h) if h.image_digest.is_some() => "installed",
        _ => "new",
    }
}

pub fn view(inv: Option<&Machine>, hw: Option<&MachineState>, last: Option<&Task>) -> MachineView {
    let s = |f: fn(&Machine) -> &String| inv.map(|m| f(m).clone()).unwrap_or_default();
    MachineView {
        mac: inv.map(|m| m.mac.to_string()).or_else(|| hw.map(|h| h.mac.clone())).unwrap_or_default(),
        hostname: s(|m| &m.hostname),
        department: s(|m| &m.department),
        serial: inv
            .map(|m| m.serial.clone())
            .filter(|s| !s.is_empty())
            .or_else(|| hw.and_then(|h| h.serial.clone()))
            .unwrap_or_default(),
        asset_tag: s(|m| &m.asset_tag),
        location: s(|m| &m.location),
        notes: s(|m| &m.notes),
        status: status(inv, hw, last),
        in_inventory: inv.is_some(),
        etag: inv.map(machine_etag),
        model: hw.and_then(|h| h.model.clone()),
        memory_bytes: hw.and_then(|h| h.memory_bytes),
        firmware: hw.and_then(|h| h.firmware),
        ip: hw.and_then(|h| h.ip.clone()),
        last_seen: hw.and_then(|h| h.last_seen),
        image_digest: hw.and_then(|h| h.image_digest.clone()),
        installed_at: hw.and_then(|h| h.installed_at),
        first_boot_at: hw.and_then(|h| h.first_boot_at),
        task: last.cloned(),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Free text: MAC, hostname, serial, asset tag, location, model (case-insensitive).
    pub q: Option<String>,
    pub department: Option<String>,
    pub status: Option<String>,
    pub image: Option<String>,
    pub model: Option<String>,
    pub location: Option<String>,
    #[serde(default)]
    pub offset: usize,
    pub limit: Option<usize>,
}

#[derive(Debug, Serialize)]
pub struct MachineList {
    pub total: usize,
    pub offset: usize,
    pub limit: usize,
    pub machines: Vec<MachineView>,
}

/// One row of the fleet before it becomes a `MachineView`: references only, so filtering
/// 10,000 machines allocates nothing per machine but the page that is returned.
struct Row<'a> {
    mac: String,
    inv: Option<&'a Machine>,
    hw: Option<&'a MachineState>,
    task: Option<&'a Task>,
    status: &'static str,
}

impl Row<'_> {
    fn hostname(&self) -> &str {
        self.inv.map(|m| m.hostname.as_str()).unwrap_or("")
    }
}

pub async fn machines_list(
    State(st): State<AppState>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> Result<Json<MachineList>, AppError> {
    caller.require(Role::Readonly)?;
    super::in_range("limit", q.limit, 1, 1000)?;
    if let Some(s) = q.status.as_deref().filter(|s| !STATUSES.contains(s)) {
        return Err(AppError::invalid("status", format!("{s:?} is not one of {}", STATUSES.join(", "))));
    }
    blocking(move || Ok(Json(list(&st, &q)?))).await
}

/// The fleet filtered, sorted by hostname and paged (the API's listing and the console's).
/// Blocking.
pub(crate) fn list(st: &AppState, q: &ListQuery) -> Result<MachineList, AppError> {
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let needle = q.q.as_deref().map(str::to_lowercase).filter(|s| !s.is_empty());
    let snap = st.profiles.snapshot();
    let hw: HashMap<String, MachineState> = st.db.machine_states()?.into_iter().map(|m| (m.mac.clone(), m)).collect();
    let tasks: HashMap<String, Task> = st.db.latest_tasks()?.into_iter().map(|t| (t.mac.clone(), t)).collect();
    let mut rows: Vec<Row<'_>> = Vec::with_capacity(snap.inventory.len() + 16);
    for m in snap.inventory.machines() {
        let key = m.mac.to_string();
        let (h, t) = (hw.get(&key), tasks.get(&key));
        rows.push(Row { inv: Some(m), hw: h, task: t, status: status(Some(m), h, t), mac: key });
    }
    for (mac, h) in &hw {
        if mac.parse().ok().and_then(|m| snap.inventory.get(&m)).is_none() {
            let t = tasks.get(mac);
            rows.push(Row { inv: None, hw: Some(h), task: t, status: status(None, Some(h), t), mac: mac.clone() });
        }
    }
    let eq = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w.eq_ignore_ascii_case(have));
    let contains = |hay: &str, n: &str| hay.to_lowercase().contains(n);
    rows.retain(|r| {
        let inv = |f: fn(&Machine) -> &str| r.inv.map(f).unwrap_or("");
        let model = r.hw.and_then(|h| h.model.as_deref()).unwrap_or("");
        eq(&q.department, inv(|m| &m.department))
            && eq(&q.status, r.status)
            && q.image
                .as_deref()
                .is_none_or(|i| r.hw.and_then(|h| h.image_digest.as_deref()).is_some_and(|d| d.starts_with(i)))
            && eq(&q.model, model)
            && q.location.as_deref().is_none_or(|l| contains(inv(|m| &m.location), &l.to_lowercase()))
            && needle.as_deref().is_none_or(|n| {
                contains(&r.mac, n)
                    || [inv(|m| &m.hostname), inv(|m| &m.serial), inv(|m| &m.asset_tag), inv(|m| &m.location), model]
                        .iter()
                        .any(|f| contains(f, n))
                    || r.hw.and_then(|h| h.serial.as_deref()).is_some_and(|s| contains(s, n))
            })
    });
    rows.sort_by(|a, b| {
        (a.hostname().is_empty(), a.hostname(), &a.mac).cmp(&(b.hostname().is_empty(), b.hostname(), &b.mac))
    });
    let total = rows.len();
    let machines = rows.iter().skip(q.offset).take(limit).map(|r| view(r.inv, r.hw, r.task)).collect();
    Ok(MachineList { total, offset: q.offset, limit, machines })
}

#[derive(Debug, Serialize)]
pub struct MachineDetail {
    #[serde(flatten)]
    pub machine: MachineView,
    pub disks: Vec<crate::db::DiskInfo>,
    pub tasks: Vec<Task>,
    pub events: Vec<crate::db::Event>,
    /// Commits that changed this machine's inventory line, newest first.
    pub history: Vec<parc_profiles::CommitInfo>,
}

pub async fn machine_show(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    caller.require(Role::Readonly)?;
    blocking(move || {
        let detail = detail(&st, &id)?;
        let etag = detail.machine.etag.clone();
        let mut resp = Json(detail).into_response();
        if let Some(e) = etag {
            resp.headers_mut().insert(header::ETAG, format!("\"{e}\"").parse().expect("hex"));
        }
        Ok(resp)
    })
    .await
}

/// One machine by MAC or hostname with its hardware, tasks, journal and git history. Blocking.
pub(crate) fn detail(st: &AppState, id: &str) -> Result<MachineDetail, AppError> {
    let snap = st.profiles.snapshot();
    let inv = ops::find(&snap.inventory, id).cloned();
    let mac = match &inv {
        Some(m) => m.mac.to_string(),
        None => match id.parse::<parc_profiles::Mac>() {
            Ok(m) => m.to_string(),
            Err(_) => return Err(AppError::NotFound(format!("no machine {id:?}"))),
        },
    };
    let hw = st.db.machine_state(&mac)?;
    if inv.is_none() && hw.is_none() {
        return Err(AppError::NotFound(format!("no machine {id:?} in the inventory, and no agent has reported it")));
    }
    let tasks = st.db.tasks(&TaskQuery { mac: Some(mac.clone()), limit: 50, ..Default::default() })?;
    let events = st.db.events(&EventQuery { mac: Some(mac.clone()), limit: 100, ..Default::default() })?;
    let history = match &inv {
        Some(m) => st.profiles.with_repo(|r| r.machine_history(&m.mac, 500)).unwrap_or_default(),
        None => Vec::new(),
    };
    let machine = view(inv.as_ref(), hw.as_ref(), tasks.first());
    Ok(MachineDetail { machine, disks: hw.map(|h| h.disks).unwrap_or_default(), tasks, events, history })
}

/// Request fields nobody asked for: a typo ("locaton") must not be silently dropped.
type Unknown = std::collections::BTreeMap<String, serde_json::Value>;

fn refuse_unknown(u: &Unknown) -> Result<(), AppError> {
    match u.keys().next() {
        Some(k) => Err(AppError::invalid(k, "unknown field")),
        None => Ok(()),
    }
}

#[derive(Debug, Deserialize)]
pub struct AddBody {
    #[serde(flatten)]
    machine: NewMachine,
    #[serde(default)]
    reason: Option<String>,
    #[serde(flatten)]
    unknown: Unknown,
}

/// Runs one operation and answers with its own status.
async fn one(
    st: AppState,
    caller: Caller,
    op: Op,
    reason: Option<String>,
    created: bool,
) -> Result<Response, AppError> {
    caller.require(Role::Technician)?;
    let report = blocking(move || ops::run(&st, &caller, std::slice::from_ref(&op), reason.as_deref())).await?;
    let o = report.results.into_iter().next().expect("one operation, one outcome");
    let status = StatusCode::from_u16(o.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if !o.ok {
        let mut body = serde_json::json!({ "error": o.error, "op": o.op, "machine": o.machine });
        if let Some(f) = &o.field {
            body["field"] = f.clone().into();
        }
        return Ok((status, axum::Json(body)).into_response());
    }
    let mut body = serde_json::to_value(&o).map_err(|e| AppError::Internal(e.to_string()))?;
    body["commit"] = report.commit.into();
    Ok((if created { StatusCode::CREATED } else { StatusCode::OK }, axum::Json(body)).into_response())
}

pub async fn machine_add(
    State(st): State<AppState>,
    caller: Caller,
    Json(b): Json<AddBody>,
) -> Result<Response, AppError> {
    refuse_unknown(&b.unknown)?;
    one(st, caller, Op::Add(b.machine), b.reason, true).await
}

#[derive(Debug, Deserialize)]
pub struct EditBody {
    #[serde(flatten)]
    changes: MachineEdit,
    #[serde(default)]
    reason: Option<String>,
    #[serde(flatten)]
    unknown: Unknown,
}

pub async fn machine_edit(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    Json(b): Json<EditBody>,
) -> Result<Response, AppError> {
    refuse_unknown(&b.unknown)?;
    let if_match = headers.get(header::IF_MATCH).and_then(|v| v.to_str().ok()).map(str::to_string);
    one(st, caller, Op::Edit { machine: id, if_match, changes: b.changes }, b.reason, false).await
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionBody {
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub department: Option<String>,
    #[serde(default)]
    pub with: Option<String>,
    #[serde(default)]
    pub asset_tag: Option<String>,
    #[serde(default)]
    pub image: Option<String>,
    /// `netboot-grant`: the address the machine will fetch its boot script from.
    #[serde(default)]
    pub address: Option<String>,
    /// `netboot-grant`: for how long (1 to 120 minutes, default 15).
    #[serde(default)]
    pub minutes: Option<u64>,
}

pub async fn machine_action(
    State(st): State<AppState>,
    caller: Caller,
    Path((id, action)): Path<(String, String)>,
    OptionalJson(b): OptionalJson<ActionBody>,
) -> Result<Response, AppError> {
    crate::grant::window(&b)?;
    if action == "wake" {
        let woken = blocking(move || crate::wake::wake(&st, &caller, &id, b.reason.as_deref())).await?;
        return Ok(Json(woken).into_response());
    }
    if action == "netboot-grant" {
        let granted = blocking(move || crate::grant::grant(&st, &caller, &id, &b)).await?;
        return Ok(Json(granted).into_response());
    }
    let reason = b.reason.clone();
    let op = action_op(id, &action, b)?;
    one(st, caller, op, reason, false).await
}

/// The operation `POST /machines/{id}/{action}` (or the console's action form) asks for.
pub(crate) fn action_op(id: String, action: &str, b: ActionBody) -> Result<Op, AppError> {
    let need =
        |v: Option<String>, field: &str| v.ok_or_else(|| AppError::invalid(field, format!("required for {action}")));
    Ok(match action {
        "install" => Op::Install { machine: id, department: b.department },
        "reimage" => Op::Reimage { machine: id },
        "move" => Op::Move { machine: id, department: need(b.department, "department")? },
        "replace" => Op::Replace { machine: id, with: need(b.with, "with")?, asset_tag: b.asset_tag },
        "retire" => Op::Retire { machine: id },
        "capture" => Op::Capture { machine: id, image: need(b.image, "image")? },
        other => {
            return Err(AppError::NotFound(format!(
                "no action {other:?} (install, reimage, move, replace, retire, capture, wake, netboot-grant)"
            )))
        }
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchBody {
    #[serde(default)]
    reason: Option<String>,
    #[serde(deserialize_with = "known_fields_only")]
    operations: Vec<Op>,
}

/// Operations whose every field is one of theirs: serde cannot refuse unknown fields of the
/// variants that flatten another struct (`add`, `edit`), so a field that does not come back
/// when the operation is written out again is refused, naming it.
fn known_fields_only<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Op>, D::Error> {
    use serde::de::Error as _;
    let raw = Vec::<serde_json::Value>::deserialize(d)?;
    raw.into_iter()
        .enumerate()
        .map(|(i, v)| {
            let op: Op =
                serde_json::from_value(v.clone()).map_err(|e| D::Error::custom(format!("operations[{i}]: {e}")))?;
            let back = serde_json::to_value(&op).map_err(D::Error::custom)?;
            match v.as_object().and_then(|o| o.keys().find(|k| back.get(k.as_str()).is_none())) {
                Some(k) => {
                    Err(D::Error::custom(format!("unknown field `{k}`, not one of operations[{i}] ({})", op.name())))
                }
                None => Ok(op),
            }
        })
        .collect()
}

/// Many operations, one commit, one result per operation: 200 whenever the request itself was
/// valid, with `ok`, `status` and `error` per operation.
pub async fn batch(State(st): State<AppState>, caller: Caller, Json(b): Json<BatchBody>) -> Result<Response, AppError> {
    caller.require(Role::Technician)?;
    if b.operations.is_empty() {
        return Err(AppError::invalid("operations", "empty"));
    }
    if b.operations.len() > 20_000 {
        return Err(AppError::invalid("operations", "at most 20000 per request"));
    }
    let report = blocking(move || ops::run(&st, &caller, &b.operations, b.reason.as_deref())).await?;
    Ok(axum::Json(report).into_response())
}

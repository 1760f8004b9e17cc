//! What technicians do to machines: add, install, reimage, move, replace, retire, capture,
//! edit. One function runs a list of them, so one machine and ten thousand take the same path:
//! every inventory change of the list becomes ONE git commit authored by the technician, then
//! tasks are queued, then each operation is journaled. Each operation succeeds or fails on its
//! own and reports why.

use parc_imager::format::manifest::Manifest;
use parc_imager::fs::FsKind;
use parc_profiles::{Department, Inventory, Mac, Machine, MachineStatus, Os, Snapshot};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::auth::Caller;
use crate::db::{Intent, NewEvent, NewTask, Step, Task, TaskKind};
use crate::{AppError, AppState};
use parc_imager::store::ChunkSource as _;

/// Fields of a new inventory row. (Not `deny_unknown_fields`: it is flattened into request
/// bodies, which check for unknown fields themselves.)
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct NewMachine {
    pub mac: String,
    pub department: String,
    #[serde(default)]
    pub hostname: Option<String>,
    #[serde(default)]
    pub serial: Option<String>,
    #[serde(default)]
    pub asset_tag: Option<String>,
    #[serde(default)]
    pub location: Option<String>,
    #[serde(default)]
    pub notes: Option<String>,
    /// Queue an install too: added and queued together, or neither.
    #[serde(default)]
    pub install: bool,
}

/// Fields a technician may edit directly (department changes go through `move`). A field left
/// out keeps its value, an empty string clears it, and `null` is refused naming the field: it
/// is not clear which of the two a client meant. (Absent fields are not serialized either:
/// intents are written as JSON and read back at recovery.)
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct MachineEdit {
    #[serde(default, deserialize_with = "not_null::hostname", skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, deserialize_with = "not_null::serial", skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    #[serde(default, deserialize_with = "not_null::asset_tag", skip_serializing_if = "Option::is_none")]
    pub asset_tag: Option<String>,
    #[serde(default, deserialize_with = "not_null::location", skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    #[serde(default, deserialize_with = "not_null::notes", skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
}

/// One deserializer per field, so that the refusal names it.
mod not_null {
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer};

    macro_rules! fields {
        ($($name:ident),*) => {$(
            pub fn $name<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
                Option::<String>::deserialize(d)?.map(Some).ok_or_else(|| {
                    D::Error::custom(concat!(
                        stringify!($name),
                        ": null is not allowed (a string, empty to clear it; leave the field out to keep it)"
                    ))
                })
            }
        )*};
    }
    fields!(hostname, serial, asset_tag, location, notes);
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(tag = "op", rename_all = "lowercase", deny_unknown_fields)]
pub enum Op {
    Add(NewMachine),
    /// Deploy the machine's department profile. An unknown machine is added first when a
    /// department is given.
    Install {
        machine: String,
        #[serde(default)]
        department: Option<String>,
    },
    Reimage {
        machine: String,
    },
    Move {
        machine: String,
        department: String,
    },
    Replace {
        machine: String,
        with: String,
        #[serde(default)]
        asset_tag: Option<String>,
    },
    Retire {
        machine: String,
    },
    Capture {
        machine: String,
        image: String,
    },
    Edit {
        machine: String,
        /// The machine's `etag` as the technician last saw it: a change made by someone else
        /// in between is a conflict, not a silent overwrite.
        #[serde(default)]
        if_match: Option<String>,
        #[serde(flatten)]
        changes: MachineEdit,
    },
}

impl Op {
    pub fn name(&self) -> &'static str {
        match self {
            Op::Add(_) => "add",
            Op::Install { .. } => "install",
            Op::Reimage { .. } => "reimage",
            Op::Move { .. } => "move",
            Op::Replace { .. } => "replace",
            Op::Retire { .. } => "retire",
            Op::Capture { .. } => "capture",
            Op::Edit { .. } => "edit",
        }
    }
    fn machine_ref(&self) -> &str {
        match self {
            Op::Add(m) => &m.mac,
            Op::Install { machine, .. }
            | Op::Reimage { machine }
            | Op::Move { machine, .. }
            | Op::Replace { machine, .. }
            | Op::Retire { machine }
            | Op::Capture { machine, .. }
            | Op::Edit { machine, .. } => machine,
        }
    }
}

/// The result of one operation.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub op: &'static str,
    pub machine: String,
    pub ok: bool,
    /// HTTP status this operation alone would have had (200, 400, 404, 409).
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task: Option<Task>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub commit: Option<String>,
    pub batch: Option<String>,
    pub succeeded: usize,
    pub failed: usize,
    pub results: Vec<Outcome>,
}

/// What one successful operation will do once the inventory is committed.
#[derive(Debug, Clone)]
struct Plan {
    mac: Mac,
    hostname: String,
    summary: String,
    task: Option<NewTask>,
    /// A machine whose queued or running task becomes void (retired, replaced).
    cancel: Option<Mac>,
    /// The inventory changed (reimage and capture only queue work).
    commits: bool,
}

/// The etag of an inventory row: changes whenever any of its fields does.
pub fn machine_etag(m: &Machine) -> String {
    let mut h = Sha256::new();
    for f in [&m.mac.to_string(), &m.hostname, &m.department, &m.serial, &m.asset_tag, &m.location, &m.notes] {
        h.update(f.as_bytes());
        h.update([0]);
    }
    h.update([matches!(m.status, MachineStatus::Retired) as u8]);
    hex::encode(&h.finalize()[..8])
}

/// Finds a machine by MAC or by hostname (active machines only for hostnames).
pub fn find<'a>(inv: &'a Inventory, reference: &str) -> Option<&'a Machine> {
    match reference.parse::<Mac>() {
        Ok(mac) => inv.get(&mac),
        Err(_) => inv.by_hostname(reference).or_else(|| {
            // Hostnames are case-insensitive for Windows and DNS alike.
            inv.machines().find(|m| m.status == MachineStatus::Active && m.hostname.eq_ignore_ascii_case(reference))
        }),
    }
}

/// The MAC address a journal filter means: the machine's when the reference names one, else
/// the reference itself (a machine that left the inventory), lowercased as MACs are stored.
pub fn journal_mac(inv: &Inventory, reference: &str) -> String {
    match find(inv, reference) {
        Some(m) => m.mac.to_string(),
        None => reference.to_lowercase(),
    }
}

struct Ctx<'a> {
    st: &'a AppState,
    repo: &'a parc_profiles::Repo,
    snap: &'a Snapshot,
    login: &'a str,
    batch: Option<&'a str>,
    reason: Option<&'a str>,
}

impl Ctx<'_> {
    fn department(&self, id: &str) -> Result<&Department, AppError> {
        let d = self.snap.departments.get(id).ok_or_else(|| {
            let known: Vec<&str> = self.snap.departments.keys().map(String::as_str).collect();
            AppError::invalid("department", format!("unknown department {id:?} (known: {})", known.join(", ")))
        })?;
        if d.stale {
            let why: Vec<String> =
                self.snap.problems.iter().filter(|p| p.file == d.file).map(|p| p.to_string()).collect();
            return Err(AppError::Conflict(format!(
                "{} does not validate at HEAD ({}); fix it before deploying this department",
                d.file,
                why.join("; ")
            )));
        }
        Ok(d)
    }

    /// The department's image, resolved to the manifest digest now: a task deploys what the
    /// technician saw when queuing it, even if a newer version is published meanwhile.
    fn image(&self, d: &Department) -> Result<(String, String), AppError> {
        let refused = |e: String| {
            AppError::Conflict(format!(
                "department {} ({} line {}) names image {:?}, which cannot be deployed: {e}",
                d.id, d.file, d.image_line, d.image
            ))
        };
        let digest = self.st.store.resolve(&d.image).map_err(|e| refused(e.to_string()))?;
        let bytes = self.st.store.read_manifest(&digest).map_err(|e| refused(e.to_string()))?;
        let manifest = Manifest::decode(&bytes, Some(digest)).map_err(|e| refused(e.to_string()))?;
        system_matches(d.os, &manifest).map_err(refused)?;
        Ok((d.image.clone(), digest.to_string()))
    }

    fn no_active_task(&self, mac: &Mac) -> Result<(), AppError> {
        if let Some(t) = self.st.db.active_task(&mac.to_string())? {
            return Err(AppError::Conflict(t.busy_message()));
        }
        Ok(())
    }

    fn task(&self, kind: TaskKind, m: &Machine, d: Option<&Department>) -> Result<NewTask, AppError> {
        let (image_ref, image_digest) = match d {
            Some(d) => {
                let (r, dg) = self.image(d)?;
                (Some(r), Some(dg))
            }
            None => (None, None),
        };
        Ok(NewTask {
            kind: Some(kind),
            mac: m.mac.to_string(),
            department: Some(m.department.clone()),
            image_ref,
            image_digest,
            hostname: (!m.hostname.is_empty()).then(|| m.hostname.clone()),
            reason: self.reason.map(str::to_string),
            batch: self.batch.map(str::to_string),
            created_by: self.login.to_string(),
            ..Default::default()
        })
    }

    /// A hostname from the department's pattern, or empty when the pattern needs the serial
    /// and nobody knows it yet (the agent's hello fills it in).
    fn hostname_for(&self, inv: &Inventory, d: &Department, mac: &Mac, serial: &str) -> Result<String, AppError> {
        let serial = if serial.is_empty() {
            self.st.db.machine_state(&mac.to_string())?.and_then(|s| s.serial).unwrap_or_default()
        } else {
            serial.to_string()
        };
        if d.hostname.uses_serial() && serial.is_empty() {
            return Ok(String::new());
        }
        // The machine's own current name does not count: it may be leaving this naming scheme.
        let counter = d.hostname.next_counter(
            inv.machines().filter(|m| m.status == MachineStatus::Active && m.mac != *mac).map(|m| m.hostname.as_str()),
        );
        d.hostname
            .render(counter, Some(&serial).filter(|s| !s.is_empty()).map(String::as_str), mac)
            .map_err(|e| AppError::Conflict(format!("{}: hostname pattern {}: {e}", d.file, d.hostname.as_str())))
    }

    fn plan(&self, inv: &mut Inventory, op: &Op) -> Result<Plan, AppError> {
        let existing = |inv: &Inventory, r: &str| -> Result<Machine, AppError> {
            find(inv, r).cloned().ok_or_else(|| AppError::NotFound(format!("no machine {r:?} in the inventory")))
        };
        let active = |m: &Machine| -> Result<(), AppError> {
            if m.status == MachineStatus::Retired {
                return Err(AppError::Conflict(format!(
                    "machine {} ({}) is retired; add it again to use it",
                    m.mac,
                    display_name(m)
                )));
            }
            Ok(())
        };
        let upsert = |inv: &mut Inventory, m: Machine| -> Result<(), AppError> {
            inv.upsert(m).map_err(|p| AppError::Conflict(p.reason))
        };
        match op {
            Op::Add(n) => {
                let m = self.new_row(inv, n)?;
                let mut summary = format!("add {} ({}) to {}", display_name(&m), m.mac, m.department);
                let task = if n.install {
                    let d = self.department(&m.department)?;
                    summary.push_str(&format!(" and install it with {}", d.image));
                    Some(self.task(TaskKind::Install, &m, Some(d))?)
                } else {
                    None
                };
                upsert(inv, m.clone())?;
                Ok(Plan { mac: m.mac, hostname: m.hostname, summary, task, cancel: None, commits: true })
            }
            Op::Install { machine, department } => {
                let (mut m, added) = match (find(inv, machine).cloned(), department) {
                    (Some(m), Some(d)) if &m.department != d => {
                        return Err(AppError::invalid(
                            "department",
                            format!(
                                "{} is in {}, not {d}; use move to change its department",
                                display_name(&m),
                                m.department
                            ),
                        ))
                    }
                    (Some(m), _) => (m, false),
                    (None, Some(d)) => {
                        let n = NewMachine { mac: machine.clone(), department: d.clone(), ..Default::default() };
                        (self.new_row(inv, &n)?, true)
                    }
                    (None, None) => {
                        return Err(AppError::NotFound(format!(
                            "no machine {machine:?} in the inventory; give its department to add it"
                        )))
                    }
                };
                active(&m)?;
                self.no_active_task(&m.mac)?;
                let d = self.department(&m.department)?;
                if m.hostname.is_empty() {
                    m.hostname = self.hostname_for(inv, d, &m.mac, &m.serial)?;
                }
                let task = self.task(TaskKind::Install, &m, Some(d))?;
                let summary = format!(
                    "{}install {} ({}) with {} ({})",
                    if added { "add and " } else { "" },
                    display_name(&m),
                    m.mac,
                    d.id,
                    d.image
                );
                upsert(inv, m.clone())?;
                Ok(Plan { mac: m.mac, hostname: m.hostname, summary, task: Some(task), cancel: None, commits: true })
            }
            Op::Reimage { machine } => {
                let m = existing(inv, machine)?;
                active(&m)?;
                self.no_active_task(&m.mac)?;
                let d = self.department(&m.department)?;
                let task = self.task(TaskKind::Reimage, &m, Some(d))?;
                let summary = format!("reimage {} ({}) with {} ({})", display_name(&m), m.mac, d.id, d.image);
                Ok(Plan { mac: m.mac, hostname: m.hostname, summary, task: Some(task), cancel: None, commits: false })
            }
            Op::Move { machine, department } => {
                let mut m = existing(inv, machine)?;
                active(&m)?;
                if &m.department == department {
                    return Err(AppError::Conflict(format!("{} is already in {department}", display_name(&m))));
                }
                self.no_active_task(&m.mac)?;
                let d = self.department(department)?;
                let from = std::mem::replace(&mut m.department, d.id.clone());
                let old_name = display_name(&m);
                m.hostname = self.hostname_for(inv, d, &m.mac, &m.serial)?;
                let task = self.task(TaskKind::Move, &m, Some(d))?;
                let summary = format!(
                    "move {old_name} ({}) from {from} to {}, new hostname {}",
                    m.mac,
                    d.id,
                    if m.hostname.is_empty() { "assigned when it boots" } else { &m.hostname }
                );
                upsert(inv, m.clone())?;
                Ok(Plan { mac: m.mac, hostname: m.hostname, summary, task: Some(task), cancel: None, commits: true })
            }
            Op::Replace { machine, with, asset_tag } => {
                let mut old = existing(inv, machine)?;
                active(&old)?;
                let new_mac: Mac = with.parse::<Mac>().map_err(|e| AppError::invalid("with", e.to_string()))?;
                if new_mac == old.mac {
                    return Err(AppError::invalid("with", "a machine cannot replace itself"));
                }
                if let Some(n) = inv.get(&new_mac) {
                    if n.status == MachineStatus::Active {
                        return Err(AppError::Conflict(format!(
                            "{new_mac} is already in the inventory as {} ({}); retire it first",
                            display_name(n),
                            n.department
                        )));
                    }
                }
                self.no_active_task(&new_mac)?;
                let d = self.department(&old.department)?;
                let today = today();
                let new = Machine {
                    mac: new_mac,
                    hostname: old.hostname.clone(),
                    department: old.department.clone(),
                    serial: String::new(),
                    asset_tag: asset_tag.clone().unwrap_or_default(),
                    location: old.location.clone(),
                    status: MachineStatus::Active,
                    notes: format!("replaces {} since {today}", old.mac),
                    line: 0,
                };
                old.status = MachineStatus::Retired;
                old.notes = join_notes(&old.notes, &format!("replaced by {new_mac} on {today}"));
                let old_mac = old.mac;
                upsert(inv, old)?;
                let mut task = self.task(TaskKind::Replace, &new, Some(d))?;
                task.replaces = Some(old_mac.to_string());
                let summary = format!(
                    "replace {} ({old_mac}) by {new_mac}: hostname, department {} and location move to the new machine; {old_mac} retired",
                    display_name(&new),
                    d.id
                );
                upsert(inv, new.clone())?;
                Ok(Plan {
                    mac: new_mac,
                    hostname: new.hostname,
                    summary,
                    task: Some(task),
                    cancel: Some(old_mac),
                    commits: true,
                })
            }
            Op::Retire { machine } => {
                let mut m = existing(inv, machine)?;
                active(&m)?;
                m.status = MachineStatus::Retired;
                m.notes = join_notes(&m.notes, &format!("retired on {}", today()));
                let summary = format!("retire {} ({})", display_name(&m), m.mac);
                upsert(inv, m.clone())?;
                Ok(Plan { mac: m.mac, hostname: m.hostname, summary, task: None, cancel: Some(m.mac), commits: true })
            }
            Op::Capture { machine, image } => {
                let m = existing(inv, machine)?;
                active(&m)?;
                parc_imager::store::validate_name(image).map_err(|e| AppError::invalid("image", e.to_string()))?;
                self.no_active_task(&m.mac)?;
                let mut task = self.task(TaskKind::Capture, &m, None)?;
                task.image_ref = Some(image.clone());
                let summary = format!("capture the disk of {} ({}) as image {image}", display_name(&m), m.mac);
                Ok(Plan { mac: m.mac, hostname: m.hostname, summary, task: Some(task), cancel: None, commits: false })
            }
            Op::Edit { machine, if_match, changes } => {
                let mut m = existing(inv, machine)?;
                let etag = machine_etag(&m);
                if let Some(expected) = if_match {
                    if expected.trim_matches('"') != etag {
                        let by = self.last_change_by(&m);
                        return Err(AppError::Conflict(format!(
                            "{} was changed by {by} since you loaded it; reload and apply your change again",
                            display_name(&m)
                        )));
                    }
                }
                let mut what = Vec::new();
                let mut set = |field: &str, slot: &mut String, v: &Option<String>| {
                    if let Some(v) = v {
                        if slot != v {
                            what.push(format!("{field} {:?} → {v:?}", slot));
                            *slot = v.clone();
                        }
                    }
                };
                set("hostname", &mut m.hostname, &changes.hostname);
                set("serial", &mut m.serial, &changes.serial);
                set("asset tag", &mut m.asset_tag, &changes.asset_tag);
                set("location", &mut m.location, &changes.location);
                set("notes", &mut m.notes, &changes.notes);
                if let Some(h) = &changes.hostname {
                    parc_profiles::valid_hostname(h).map_err(|r| AppError::invalid("hostname", r))?;
                }
                let summary = if what.is_empty() {
                    String::new()
                } else {
                    format!("edit {} ({}): {}", display_name(&m), m.mac, what.join(", "))
                };
                upsert(inv, m.clone())?;
                Ok(Plan { mac: m.mac, hostname: m.hostname, summary, task: None, cancel: None, commits: true })
            }
        }
    }

    fn last_change_by(&self, m: &Machine) -> String {
        let mac = m.mac;
        self.repo
            .machine_history(&mac, 200)
            .ok()
            .and_then(|h| h.into_iter().next())
            .map(|c| c.author_name)
            .unwrap_or_else(|| "someone else".into())
    }

    fn new_row(&self, inv: &Inventory, n: &NewMachine) -> Result<Machine, AppError> {
        let mac: Mac = n.mac.parse::<Mac>().map_err(|e| AppError::invalid("mac", e.to_string()))?;
        if let Some(m) = inv.get(&mac) {
            if m.status == MachineStatus::Active {
                return Err(AppError::Conflict(format!(
                    "{mac} is already in the inventory as {} ({})",
                    display_name(m),
                    m.department
                )));
            }
        }
        let d = self.department(&n.department)?;
        let serial = n.serial.clone().unwrap_or_default();
        let hostname = match &n.hostname {
            Some(h) if !h.is_empty() => {
                parc_profiles::valid_hostname(h).map_err(|r| AppError::invalid("hostname", r))?;
                h.clone()
            }
            _ => self.hostname_for(inv, d, &mac, &serial)?,
        };
        for (field, v) in [("location", &n.location), ("asset_tag", &n.asset_tag), ("notes", &n.notes)] {
            if v.as_deref().is_some_and(|v| v.contains(['\n', '\r'])) {
                return Err(AppError::invalid(field, "must be a single line"));
            }
        }
        Ok(Machine {
            mac,
            hostname,
            department: d.id.clone(),
            serial,
            asset_tag: n.asset_tag.clone().unwrap_or_default(),
            location: n.location.clone().unwrap_or_default(),
            status: MachineStatus::Active,
            notes: n.notes.clone().unwrap_or_default(),
            line: 0,
        })
    }
}

pub(crate) fn display_name(m: &Machine) -> String {
    if m.hostname.is_empty() {
        m.mac.to_string()
    } else {
        m.hostname.clone()
    }
}

fn join_notes(notes: &str, add: &str) -> String {
    if notes.is_empty() {
        add.to_string()
    } else {
        format!("{notes}; {add}")
    }
}

fn today() -> String {
    let days = crate::db::now_ms() / 86_400_000;
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Day count since 1970-01-01 of a Gregorian date (Howard Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Gregorian date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Runs `ops` for `caller`. Blocking: call from a blocking thread.
pub fn run(st: &AppState, caller: &Caller, ops: &[Op], reason: Option<&str>) -> Result<RunReport, AppError> {
    execute(st, caller, ops, reason, false)
}

/// What `run` would do now, operation by operation, without committing, queuing or
/// journaling anything (the console's preview of a bulk operation). Blocking.
pub fn preview(st: &AppState, caller: &Caller, ops: &[Op], reason: Option<&str>) -> Result<RunReport, AppError> {
    execute(st, caller, ops, reason, true)
}

/// A reason as one line of text: newlines and other control characters become spaces (a
/// reason goes into the commit message, whose lines are trailers parc reads back).
pub fn one_line(s: &str) -> String {
    let spaced: String = s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    spaced.split_whitespace().collect::<Vec<_>>().join(" ").chars().take(500).collect()
}

fn execute(
    st: &AppState,
    caller: &Caller,
    ops: &[Op],
    reason: Option<&str>,
    dry_run: bool,
) -> Result<RunReport, AppError> {
    let reason = reason.map(one_line);
    let reason = reason.as_deref();
    let _serial = st.ops_lock.lock().unwrap_or_else(|p| p.into_inner());
    let login = caller.login().to_string();
    let batch = (ops.len() > 1).then(|| format!("b{}", crate::db::now_ms()));
    let intent_id = format!("{}-{}", crate::db::now_ms(), &crate::auth::new_secret("")[..12]);
    let mut outcomes: Vec<Outcome> = Vec::new();
    let mut plans: Vec<Option<Plan>> = Vec::new();
    // The tasks and journal entries are written down before the commit, so that a crash after
    // it finds them (`recover`); the commit message names them.
    let mut staged: Option<Intent> = None;
    let edited = st.profiles.edit_inventory(&caller.author(), |repo, snap, inv| {
        outcomes.clear();
        plans.clear();
        let ctx = Ctx { st, repo, snap, login: &login, batch: batch.as_deref(), reason };
        let mut touched = std::collections::HashSet::new();
        for op in ops {
            let result = ctx.plan(inv, op).and_then(|p| {
                // Two operations on one machine in one request would race each other's tasks.
                if !touched.insert(p.mac) {
                    return Err(AppError::Conflict(format!("{} appears twice in this request", p.mac)));
                }
                Ok(p)
            });
            outcomes.push(outcome(op, &result));
            plans.push(result.ok());
        }
        let lines: Vec<&str> =
            plans.iter().flatten().filter(|p| p.commits && !p.summary.is_empty()).map(|p| p.summary.as_str()).collect();
        if lines.is_empty() || dry_run {
            return Ok(((), None));
        }
        let intent = intent(&intent_id, &login, &snap.commit, ops, &plans, batch.as_deref(), reason);
        st.db.stage_intent(&intent)?;
        let message = format!("{}{}\n", commit_message(&lines, caller, reason, batch.as_deref()), intent.trailer());
        staged = Some(intent);
        crate::failpoint::hit("ops.before_commit");
        Ok(((), Some(message)))
    });
    let commit = match edited {
        Ok((_, commit)) => commit,
        Err(e) => {
            if staged.is_some() {
                st.db.discard_intent(&intent_id)?;
            }
            return Err(e);
        }
    };
    if dry_run {
        let succeeded = outcomes.iter().filter(|o| o.ok).count();
        return Ok(RunReport { commit: None, batch, succeeded, failed: outcomes.len() - succeeded, results: outcomes });
    }
    if staged.is_some() {
        crate::failpoint::hit("ops.after_commit");
    }
    // The inventory is committed: now, in one transaction, void the tasks of machines that
    // left, queue tasks and journal, in request order.
    let intent = match staged {
        Some(i) => i,
        None => intent(&intent_id, &login, "", ops, &plans, batch.as_deref(), reason),
    };
    for applied in st.db.apply_intent(&intent, commit.as_deref())? {
        let o = &mut outcomes[applied.op];
        match applied.task {
            Ok(task) => {
                if let Some(t) = &task {
                    crate::store::task_queued(st, t);
                }
                o.task = task
            }
            Err(why) => {
                let e = AppError::Conflict(why);
                *o = Outcome { ok: false, status: e.status().as_u16(), error: Some(e.public_message()), ..o.clone() };
            }
        }
        if let Some(e) = applied.event {
            let _ = st.live.send(crate::Live::Event(e));
        }
    }
    crate::failpoint::hit("ops.after_apply");
    for (op, o) in ops.iter().zip(&outcomes) {
        if !o.ok {
            st.event(&NewEvent {
                actor: &login,
                kind: &format!("machine.{}.refused", op.name()),
                mac: o.mac.as_deref(),
                task_id: None,
                message: &format!("{} {}: {}", op.name(), o.machine, o.error.as_deref().unwrap_or("")),
                data: None,
            })?;
        }
    }
    let succeeded = outcomes.iter().filter(|o| o.ok).count();
    Ok(RunReport { commit, batch, succeeded, failed: outcomes.len() - succeeded, results: outcomes })
}

/// What the successful operations of a request will write once the inventory is committed.
fn intent(
    id: &str,
    login: &str,
    base_commit: &str,
    ops: &[Op],
    plans: &[Option<Plan>],
    batch: Option<&str>,
    reason: Option<&str>,
) -> Intent {
    let steps = plans
        .iter()
        .enumerate()
        .filter_map(|(i, p)| p.as_ref().map(|p| (i, p)))
        .map(|(i, p)| Step {
            op: i,
            mac: p.mac.to_string(),
            event_kind: format!("machine.{}", ops[i].name()),
            summary: p.summary.clone(),
            data: serde_json::json!({ "batch": batch, "reason": reason }),
            task: p.task.clone(),
            cancel: p.cancel.map(|gone| (gone.to_string(), format!("cancelled by {login}: {}", p.summary))),
        })
        .collect();
    Intent {
        id: id.to_string(),
        created_by: login.to_string(),
        created_at: crate::db::now_ms(),
        base_commit: base_commit.to_string(),
        steps,
    }
}

/// Reconciles the operations a crash interrupted (`parc serve` calls it at start, before
/// serving): one whose commit is on `main` gets its tasks and journal entries now (journaled
/// `ops.recovered`); one whose commit was never made changed nothing and is dropped (journaled
/// `ops.dropped`, so the technician learns to do it again). Returns one line per operation
/// step, for the log. Blocking.
pub fn recover(st: &AppState) -> Result<Vec<String>, AppError> {
    let intents = st.db.intents()?;
    if intents.is_empty() {
        return Ok(Vec::new());
    }
    let _serial = st.ops_lock.lock().unwrap_or_else(|p| p.into_inner());
    // An interrupted commit is among the newest: nothing else commits before this runs.
    let log = st.profiles.with_repo(|r| r.log_path("inventory.csv", 200)).map_err(crate::profiles::repo_error)?;
    let mut said = Vec::new();
    for intent in intents {
        let since = crate::lifecycle::utc(intent.created_at);
        let by = intent.created_by.clone();
        let mut journal = |kind: &str, step: &Step, task_id: Option<i64>, message: String| -> Result<(), AppError> {
            st.event(&NewEvent {
                actor: crate::lifecycle::SYSTEM,
                kind,
                mac: Some(&step.mac),
                task_id,
                message: &message,
                data: Some(serde_json::json!({ "intent": intent.id, "by": by })),
            })?;
            said.push(message);
            Ok(())
        };
        match log.iter().find(|c| intent.is_committed_as(&c.message)) {
            Some(c) => {
                let short = crate::profiles::short(&c.id).to_string();
                let applied = st.db.apply_intent(&intent, Some(&c.id))?;
                for (step, a) in intent.steps.iter().zip(applied) {
                    if let Some(e) = a.event {
                        let _ = st.live.send(crate::Live::Event(e));
                    }
                    let what = if step.summary.is_empty() { step.event_kind.clone() } else { step.summary.clone() };
                    match a.task {
                        Ok(task) => journal(
                            "ops.recovered",
                            step,
                            task.as_ref().map(|t| t.id),
                            format!(
                                "{what} (by {by} at {since}): committed as {short} before the appliance stopped; {} after the restart",
                                match &task {
                                    Some(t) => format!("task #{} queued", t.id),
                                    None => "journaled".to_string(),
                                }
                            ),
                        )?,
                        Err(why) => journal(
                            &format!("{}.refused", step.event_kind),
                            step,
                            None,
                            format!("{what} (by {by} at {since}): committed as {short}, but its task could not be queued after the restart: {why}"),
                        )?,
                    }
                }
            }
            None => {
                st.db.discard_intent(&intent.id)?;
                for step in intent.steps.iter().filter(|s| !s.summary.is_empty()) {
                    journal(
                        "ops.dropped",
                        step,
                        None,
                        format!(
                            "{} (by {by} at {since}) was interrupted before its inventory commit when the appliance stopped; nothing was changed: do it again",
                            step.summary
                        ),
                    )?;
                }
            }
        }
    }
    Ok(said)
}

fn outcome(op: &Op, r: &Result<Plan, AppError>) -> Outcome {
    let base = Outcome {
        op: op.name(),
        machine: op.machine_ref().to_string(),
        ok: false,
        status: 200,
        mac: None,
        hostname: None,
        task: None,
        summary: None,
        error: None,
        field: None,
    };
    match r {
        Ok(p) => Outcome {
            ok: true,
            mac: Some(p.mac.to_string()),
            hostname: Some(p.hostname.clone()).filter(|h| !h.is_empty()),
            summary: Some(p.summary.clone()).filter(|s| !s.is_empty()),
            ..base
        },
        Err(e) => Outcome {
            status: e.status().as_u16(),
            error: Some(e.public_message()),
            field: match e {
                AppError::Invalid { field, .. } => Some(field.clone()),
                _ => None,
            },
            mac: op.machine_ref().parse::<Mac>().ok().map(|m| m.to_string()),
            ..base
        },
    }
}

fn commit_message(lines: &[&str], caller: &Caller, reason: Option<&str>, batch: Option<&str>) -> String {
    let mut msg = if lines.len() == 1 {
        format!("{}\n", lines[0])
    } else {
        let mut m = format!("{} machines changed by {}\n\n", lines.len(), caller.0.name);
        for l in lines {
            m.push_str(&format!("- {l}\n"));
        }
        m
    };
    msg.push('\n');
    if let Some(r) = reason.filter(|r| !r.trim().is_empty()) {
        msg.push_str(&format!("Reason: {}\n", r.trim()));
    }
    if let Some(b) = batch {
        msg.push_str(&format!("Batch: {b}\n"));
    }
    msg.push_str(&format!(
        "By: {} ({}, {}) through the parc API\n",
        caller.0.name,
        caller.0.login,
        caller.0.role.as_str()
    ));
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_454), (2026, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        for days in [-800_000, -1, 0, 59, 11_016, 20_454, 20_785, 900_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }
}

#[cfg(test)]
mod edit_tests {
    use super::MachineEdit;

    #[test]
    fn an_edit_round_trips_and_null_is_refused_by_name() {
        let e: MachineEdit = serde_json::from_str(r#"{"serial":"CZC1","notes":""}"#).unwrap();
        let back: MachineEdit = serde_json::from_str(&serde_json::to_string(&e).unwrap()).unwrap();
        assert_eq!((back.serial.as_deref(), back.notes.as_deref(), back.hostname), (Some("CZC1"), Some(""), None));
        let err = serde_json::from_str::<MachineEdit>(r#"{"location":null}"#).unwrap_err().to_string();
        assert!(err.starts_with("location: null is not allowed"), "{err}");
    }
}

/// The department's `os` must be what the image holds: an NTFS partition for Windows; for Linux,
/// not a Windows image (NTFS and no ext partition). The agent would fail after writing the disk.
pub fn system_matches(os: Os, m: &Manifest) -> Result<(), String> {
    let has = |kinds: &[FsKind]| m.partitions.iter().any(|p| kinds.contains(&p.fs));
    match os {
        Os::Windows if !has(&[FsKind::Ntfs]) => {
            Err("the department says os = \"windows\" but the image has no NTFS partition".into())
        }
        Os::Linux if has(&[FsKind::Ntfs]) && !has(&[FsKind::Ext2, FsKind::Ext3, FsKind::Ext4]) => {
            Err("the department is a Linux one (os = \"linux\", the default) but the image is a Windows one (NTFS, no \
             ext2/3/4 partition); set os = \"windows\""
                .into())
        }
        _ => Ok(()),
    }
}

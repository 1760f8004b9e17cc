//! The server's duties to the image store it serves, which technicians also change by hand
//! (`parc image rm|gc|capture` in another process, no server involved):
//!
//! - **pins** (`<store>/pins/`, see `parc_imager::store::pins`): one file per active task with
//!   the manifest digest it deploys, written when the task is queued, removed when it ends,
//!   and `departments.json` with the image each department names. [`rebuild`] (at start: a
//!   crash leaves no stale or missing pin) and [`reconcile`] (every few seconds from `parc
//!   serve`: tasks ended by any path) make them what the database and the profiles say;
//! - **quarantine**: a chunk an agent reports corrupt is re-hashed here, and a bad file moved
//!   into `<store>/quarantine/` and journaled, so that the store reports it missing and a new
//!   capture stores it again.
//!
//! `POST /api/v1/images/{reference}/remove` is `parc image rm` through the server: the same
//! refusals, journaled (`image.rm`, `image.rm.refused`) with who and why.
//!
//! Pins are a safety net, not a gate: failing to write one is logged (and retried by the next
//! reconcile), never a reason to refuse a technician's operation.

use std::collections::BTreeSet;

use axum::extract::State;
use parc_imager::digest::Digest;
use parc_imager::store::dir::Removal;
use parc_imager::store::{ChunkSource as _, Pin, PinFile, StoreError};
use serde::Deserialize;

use crate::api::{Json, OptionalJson, Path};
use crate::auth::Caller;
use crate::db::{NewEvent, Role, Task};
use crate::{blocking, AppError, AppState};

const DEPARTMENTS: &str = "departments";

fn task_key(id: i64) -> String {
    format!("task-{id}")
}

fn holder(st: &AppState) -> String {
    format!("parc serve (pid {}) for {}", std::process::id(), st.store.location())
}

fn task_pin(t: &Task) -> Option<Pin> {
    let digest = t.image_digest.as_deref()?.parse::<Digest>().ok()?;
    let on = t.hostname.clone().unwrap_or_else(|| t.mac.clone());
    Some(Pin {
        by: format!("task #{} ({} of {on})", t.id, t.kind.as_str()),
        reference: None,
        digest: Some(digest),
        task: true,
    })
}

/// Pins what a newly queued task deploys. Call right after the task row is inserted.
pub fn task_queued(st: &AppState, t: &Task) {
    let Some(pin) = task_pin(t).filter(|_| t.state.is_active()) else { return };
    if let Err(e) = st.store.write_pins(&task_key(t.id), &PinFile::new(holder(st), vec![pin])) {
        tracing::error!(task = t.id, error = %e, "pinning the task's image failed; the next reconcile retries");
    }
}

/// Drops a task's pin once it has ended (done, failed, cancelled).
pub fn task_ended(st: &AppState, id: i64) {
    if let Err(e) = st.store.remove_pins(&task_key(id)) {
        tracing::warn!(task = id, error = %e, "unpinning an ended task failed; the next reconcile retries");
    }
}

/// The pin file of the departments of the current profiles snapshot.
fn department_pins(st: &AppState) -> Vec<Pin> {
    st.profiles
        .snapshot()
        .departments
        .values()
        .map(|d| Pin {
            by: format!("department {} ({} line {})", d.id, d.file, d.image_line),
            reference: Some(d.image.clone()),
            digest: st.store.resolve(&d.image).ok(),
            task: false,
        })
        .collect()
}

/// At start: removes pin files that cannot be read (a crash of something other than parc,
/// a hand edit), then [`reconcile`]. Blocking.
pub fn rebuild(st: &AppState) -> Result<(), AppError> {
    for key in st.store.pin_keys()? {
        if let Err(StoreError::BadPinFile { path, reason }) = st.store.read_pins(&key) {
            tracing::warn!(path = %path.display(), %reason, "image store pins: rewriting an unreadable pin file");
            st.store.remove_pins(&key)?;
        }
    }
    reconcile(st)
}

/// Makes the pins what the database (active tasks) and the profiles snapshot (departments)
/// say: missing task pins written, pins of tasks no longer active removed, the departments'
/// file rewritten when it changed. Cheap enough to run every few seconds: task pin files are
/// only listed (their content never changes). Blocking.
pub fn reconcile(st: &AppState) -> Result<(), AppError> {
    let existing: BTreeSet<String> = st.store.pin_keys()?.into_iter().collect();
    let departments = department_pins(st);
    let current = st.store.read_pins(DEPARTMENTS).ok().flatten();
    if current.is_none_or(|f| f.pins != departments) {
        st.store.write_pins(DEPARTMENTS, &PinFile::new(holder(st), departments))?;
    }
    let mut keep: BTreeSet<String> = BTreeSet::from([DEPARTMENTS.to_string()]);
    for t in st.db.active_tasks()? {
        let Some(pin) = task_pin(&t) else { continue };
        let key = task_key(t.id);
        if !existing.contains(&key) {
            st.store.write_pins(&key, &PinFile::new(holder(st), vec![pin]))?;
        }
        keep.insert(key);
    }
    for key in existing.difference(&keep) {
        st.store.remove_pins(key)?;
    }
    st.store.clean_pin_temp_files();
    Ok(())
}

/// An agent reported chunk `chunk` as the cause of task `t`'s failure: re-hash the stored
/// file; quarantine it if it is bad. Journaled either way; a fault here is logged, never the
/// agent's problem (its report is recorded already). Blocking.
pub fn chunk_reported(st: &AppState, t: &Task, chunk: &str) {
    if let Err(e) = check_reported_chunk(st, t, chunk) {
        tracing::error!(task = t.id, chunk, error = %e.public_message(), detail = ?e, "re-hashing a reported chunk failed");
    }
}

fn check_reported_chunk(st: &AppState, t: &Task, chunk: &str) -> Result<(), AppError> {
    let Ok(digest) = chunk.parse::<Digest>() else { return Ok(()) };
    let image = format!(
        "{}{}",
        t.image_ref.as_deref().unwrap_or("?"),
        t.image_digest.as_deref().map(|d| format!(" ({})", &d[..d.len().min(12)])).unwrap_or_default()
    );
    let data = serde_json::json!({ "chunk": chunk, "image_ref": t.image_ref, "image_digest": t.image_digest });
    let (kind, message) = match st.store.check_chunk(&digest) {
        Ok(Some(reason)) => match st.store.quarantine_chunk(&digest)? {
            Some(to) => (
                "chunk.quarantined",
                format!(
                    "chunk {chunk} of image {image}, reported corrupt by task #{}, is bad in the store ({reason}): \
                     moved to {}; the store now reports it missing until `parc image verify --repair` and a new \
                     capture of the image store it again",
                    t.id,
                    to.display()
                ),
            ),
            None => return Ok(()),
        },
        Ok(None) => (
            "chunk.checked",
            format!(
                "chunk {chunk} of image {image}, reported corrupt by task #{}, is intact in the store: the damage \
                 happened on the way or on the machine (check its network card, memory and disk)",
                t.id
            ),
        ),
        Err(StoreError::ChunkMissing { .. }) => (
            "chunk.missing",
            format!(
                "chunk {chunk} of image {image}, reported by task #{}, is missing from the store: capture the image \
                 again to store it",
                t.id
            ),
        ),
        Err(e) => return Err(e.into()),
    };
    st.event(&NewEvent {
        actor: "parc",
        kind,
        mac: Some(&t.mac),
        task_id: Some(t.id),
        message: &message,
        data: Some(data),
    })?;
    Ok(())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoveBody {
    #[serde(default)]
    force: bool,
    #[serde(default)]
    reason: Option<String>,
}

/// `parc image rm` through the API, journaled.
pub async fn image_remove(
    State(st): State<AppState>,
    caller: Caller,
    Path(reference): Path<String>,
    OptionalJson(body): OptionalJson<RemoveBody>,
) -> Result<Json<Removal>, AppError> {
    caller.require(Role::Admin)?;
    blocking(move || {
        let why =
            body.reason.as_deref().filter(|r| !r.trim().is_empty()).map(|r| format!(" ({r})")).unwrap_or_default();
        let journal = |kind: &str, message: &str, data: serde_json::Value| {
            st.event(&NewEvent { actor: caller.login(), kind, mac: None, task_id: None, message, data: Some(data) })
        };
        match st.store.remove(&reference, body.force) {
            Ok(r) => {
                let mut msg = format!("image {reference} removed by {}{why}: {}", caller.login(), r.removed.join(", "));
                if !r.overridden.is_empty() {
                    msg.push_str(&format!("; forced past: {}", r.overridden.join("; ")));
                }
                if !r.kept.is_empty() {
                    msg.push_str(&format!("; kept for their pins: {}", r.kept.join(", ")));
                }
                journal(
                    "image.rm",
                    &msg,
                    serde_json::json!({ "reference": reference, "removal": r, "reason": body.reason }),
                )?;
                Ok(Json(r))
            }
            Err(StoreError::Pinned { reference, needed_by }) => {
                let msg = format!(
                    "not removing {reference}: {needed_by}. Wait until that is no longer so (change the department's \
                     image, let the task finish or cancel it), or send \"force\": true to remove the name anyway \
                     (what is pinned stays in the store until nothing pins it)"
                );
                journal(
                    "image.rm.refused",
                    &format!("{} asked to remove image {reference}{why}: {msg}", caller.login()),
                    serde_json::json!({ "reference": reference, "reason": body.reason }),
                )?;
                Err(AppError::Conflict(msg))
            }
            Err(e) => Err(e.into()),
        }
    })
    .await
}

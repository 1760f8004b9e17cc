//! Capturing a reference disk image kept on the appliance: a raw disk image in
//! `<data>/reference/` (a reference PC built as a virtual machine, a disk copied there). The
//! pre-flight gate runs first, in the request (metadata only): a refusal is the answer (422),
//! its findings as data and as the table `parc image capture` prints. Accepted, the capture runs
//! in the background (a large disk takes longer than a request may) and ends in the journal:
//! `image.capture` with the version and digest, or `image.capture.failed` with the reason.

use std::path::PathBuf;

use axum::extract::State;
use axum::http::StatusCode;
use parc_imager::capture::{self, CaptureOptions};
use parc_imager::progress::NoProgress;
use serde::Deserialize;

use crate::api::{Json, Path};
use crate::auth::Caller;
use crate::db::{NewEvent, Role};
use crate::{blocking, AppError, AppState};

/// The directory under the data directory that holds reference disk images.
pub const REFERENCE_DIR: &str = "reference";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaptureBody {
    /// A file name in `<data>/reference/`.
    source: String,
    /// Capture a Windows that sysprep did not generalize (a warning instead of a refusal).
    #[serde(default)]
    allow_not_generalized: bool,
}

/// `<data>/reference/NAME`, a regular file: a plain name (no directory, no dot first), no link.
fn reference_file(st: &AppState, name: &str) -> Result<PathBuf, AppError> {
    let plain = !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && !name.contains(['/', '\\', '\0'])
        && name.chars().all(|c| !c.is_control());
    if !plain {
        return Err(AppError::invalid(
            "source",
            format!("{name:?} is not a file name: give the name of a raw disk image in <data>/{REFERENCE_DIR}/"),
        ));
    }
    let path = st.data_dir.join(REFERENCE_DIR).join(name);
    match std::fs::symlink_metadata(&path) {
        Ok(m) if m.file_type().is_file() => Ok(path),
        Ok(_) => Err(AppError::invalid(
            "source",
            format!("<data>/{REFERENCE_DIR}/{name} is not a regular file (links and devices are refused: copy the raw disk image there)"),
        )),
        Err(_) => Err(AppError::NotFound(format!(
            "no reference disk image {name} in <data>/{REFERENCE_DIR}/: copy the raw disk image there first"
        ))),
    }
}

/// `POST /api/v1/images/{name}/capture`: a new version of image `name`.
pub async fn image_capture(
    State(st): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Json(body): Json<CaptureBody>,
) -> Result<(StatusCode, axum::Json<serde_json::Value>), AppError> {
    caller.require(Role::Admin)?;
    parc_imager::store::validate_name(&name).map_err(|e| AppError::invalid("name", e.to_string()))?;
    let source = reference_file(&st, &body.source)?;
    blocking(move || {
        let login = caller.login();
        let journal = |kind: &str, message: &str, data: serde_json::Value| {
            st.event(&NewEvent { actor: login, kind, mac: None, task_id: None, message, data: Some(data) })
        };
        let what = format!("{} as {}", body.source, name);
        let warnings = match capture::gate_path(&source, body.allow_not_generalized) {
            Ok(w) => w,
            Err(parc_imager::Error::Preflight(f)) => {
                let table = f.to_string();
                journal(
                    "image.capture.refused",
                    &format!("{login} asked to capture {what}: refused before anything was stored:\n{table}"),
                    serde_json::json!({ "source": body.source, "name": name, "findings": f.0 }),
                )?;
                let answer = serde_json::json!({
                    "error": format!("capture of {what} refused before anything was stored; see findings"),
                    "findings": f.0,
                    "table": table,
                });
                return Ok((StatusCode::UNPROCESSABLE_ENTITY, axum::Json(answer)));
            }
            Err(e) => return Err(AppError::BadRequest(format!("reading {what}: {e}"))),
        };
        journal(
            "image.capture.started",
            &format!("{login} started the capture of {what}"),
            serde_json::json!({ "source": body.source, "name": name, "warnings": warnings }),
        )?;
        let (st2, image, src_name) = (st.clone(), name.clone(), body.source.clone());
        let opts = CaptureOptions { allow_not_generalized: body.allow_not_generalized, ..Default::default() };
        let login_owned = login.to_string();
        std::thread::spawn(move || {
            let (kind, message, data) = match capture::capture_path(&source, &st2.store, &image, &opts, &NoProgress) {
                Ok(r) => (
                    "image.capture",
                    format!("{src_name} captured as {}@{} ({}) for {login_owned}", r.name, r.version, r.digest),
                    serde_json::json!({ "source": src_name, "report": r }),
                ),
                Err(e) => (
                    "image.capture.failed",
                    format!("the capture of {src_name} as {image} for {login_owned} failed: {e}"),
                    serde_json::json!({ "source": src_name, "name": image, "error": e.to_string() }),
                ),
            };
            let event = NewEvent { actor: &login_owned, kind, mac: None, task_id: None, message: &message, data: Some(data) };
            if let Err(e) = st2.event(&event) {
                tracing::error!(error = %e, "{message}: not journaled");
            }
        });
        let answer = serde_json::json!({
            "accepted": true,
            "source": body.source,
            "name": name,
            "warnings": warnings,
            "message": "capture started: it ends in the journal (image.capture, or image.capture.failed with the reason)",
        });
        Ok((StatusCode::ACCEPTED, axum::Json(answer)))
    })
    .await
}

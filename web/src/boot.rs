//! Network boot over HTTP: the per-machine iPXE script and the agent's kernel and initrd.

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use parc_pxe::ipxe::{self, BootState, Mac};
use serde::Deserialize;

use crate::{AppError, AppState};

/// The agent files `parc serve` offers; nothing else under `/netboot/` is served.
const NETBOOT_FILES: [&str; 2] = ["vmlinuz", "initrd"];

#[derive(Debug, Deserialize)]
pub struct BootQuery {
    mac: Option<String>,
}

#[tracing::instrument(skip(st, headers))]
pub async fn boot_script(
    State(st): State<AppState>,
    Query(q): Query<BootQuery>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    // The machine reached us under this name: its own URLs must use it too.
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| h.bytes().all(|b| b.is_ascii_alphanumeric() || b".:-[]".contains(&b)))
        .ok_or_else(|| AppError::BadRequest("a valid Host header is required".into()))?;
    let Some(mac) = q.mac.as_deref() else {
        return Ok(script(ipxe::render_ask_mac(&format!("http://{host}"))));
    };
    let mac: Mac = mac.parse().map_err(|e: ipxe::BadMac| AppError::BadRequest(e.to_string()))?;
    let netboot = st.netboot_dir.clone();
    let (agent_available, task_token, known_and_idle, last_deploy_failed) = crate::blocking(move || {
        let agent_available = NETBOOT_FILES.iter().all(|f| netboot.join(f).is_file());
        let key = mac.to_string();
        let known =
            key.parse::<parc_profiles::Mac>().ok().and_then(|m| st.profiles.snapshot().inventory.get(&m).cloned());
        // A fresh token for every boot script: the previous boot's token stops working, so a
        // script copied off the wire is only good until the machine boots again.
        let token = match st.db.active_task(&key)? {
            Some(t) if agent_available => {
                let token = crate::auth::new_secret("pt_");
                st.db.set_task_token(t.id, &crate::auth::token_hash(&token))?;
                Some(token)
            }
            _ => None,
        };
        let failed = crate::lifecycle::last_deploy_failed(&st, &key)?.is_some();
        Ok((agent_available, token, known.is_some(), failed))
    })
    .await?;
    let state = BootState {
        http_base: format!("http://{host}"),
        agent_available,
        task_token,
        known_and_idle,
        last_deploy_failed,
    };
    let decision = ipxe::decide(&state);
    tracing::info!(mac = %mac, decision = ?decision, "boot script");
    Ok(script(ipxe::render(&state, mac, &decision)))
}

fn script(body: String) -> Response {
    let mut resp = body.into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

pub async fn netboot_file(State(st): State<AppState>, Path(file): Path<String>) -> Result<Response, AppError> {
    if !NETBOOT_FILES.contains(&file.as_str()) {
        return Err(AppError::NotFound(format!("/netboot/{file} does not exist")));
    }
    let path = st.netboot_dir.join(&file);
    match tokio::fs::read(&path).await {
        Ok(body) => Ok((StatusCode::OK, [(header::CONTENT_TYPE, "application/octet-stream")], body).into_response()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(AppError::NotFound(format!("the agent's {file} is not installed in {}", st.netboot_dir.display())))
        }
        Err(e) => Err(AppError::Internal(format!("{}: {e}", path.display()))),
    }
}

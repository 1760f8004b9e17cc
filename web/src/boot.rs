//! Network boot over HTTP: the per-machine iPXE script and the agent's kernel and initrd.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use parc_pxe::ipxe::{self, BootState, Decision, Mac};
use serde::Deserialize;

use crate::db::{now_ms, CredentialKind, NewEvent};
use crate::{AppError, AppState};

/// The agent files `parc serve` offers; nothing else under `/netboot/` is served.
const NETBOOT_FILES: [&str; 2] = ["vmlinuz", "initrd"];

#[derive(Debug, Deserialize)]
pub struct BootQuery {
    mac: Option<String>,
}

/// How long a boot credential stays good: the agent's kernel and initrd load, then its hello.
const BOOT_CREDENTIAL_TTL_MS: i64 = 10 * 60_000;

#[tracing::instrument(skip(st, headers))]
pub async fn boot_script(
    State(st): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
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
    let http_base = format!("http://{host}");
    crate::blocking(move || {
        let (state, decision) = decide(&st, mac, peer.ip(), http_base)?;
        Ok(script(ipxe::render(&state, mac, &decision)))
    })
    .await
}

/// The boot decision for `mac` asking from `from` (blocking: database and journal), with the
/// boot credential it issues, bound to that address, when the agent is to boot. Shared by the
/// iPXE script over HTTP and GRUB's over TFTP.
fn decide(st: &AppState, mac: Mac, from: IpAddr, http_base: String) -> Result<(BootState, Decision), AppError> {
    let evidence = client_ipv4(from).and_then(|ip| st.sightings.evidence(mac.0, ip));
    let key = mac.to_string();
    let known = key.parse::<parc_profiles::Mac>().ok().and_then(|m| st.profiles.snapshot().inventory.get(&m).cloned());
    let task = st.db.active_task(&key)?;
    let state = BootState {
        http_base,
        agent_available: NETBOOT_FILES.iter().all(|f| st.netboot_dir.join(f).is_file()),
        has_task: task.is_some(),
        known_and_idle: known.is_some(),
        last_deploy_failed: crate::lifecycle::last_deploy_failed(st, &key)?.is_some(),
        seen_booting: evidence.is_some(),
    };
    let mut decision = ipxe::decide(&state);
    let now = now_ms();
    let address = canonical_address(from);
    match (&mut decision, evidence) {
        (Decision::Agent { mode, token }, Some(evidence)) => {
            if st.limits.boot_credentials.allow(&key, now) {
                // One boot credential in flight per machine; a running agent keeps its own
                // session, so this never cuts it off.
                let secret = crate::auth::new_secret("pb_");
                st.db.issue_credential(
                    CredentialKind::Boot,
                    &crate::auth::token_hash(&secret),
                    &key,
                    task.as_ref().map(|t| t.id),
                    Some(&address),
                    BOOT_CREDENTIAL_TTL_MS,
                )?;
                let msg = format!("boot credential for {key} ({mode}) issued to {address}: {}", evidence.as_str());
                st.event(&NewEvent {
                    actor: "parc",
                    kind: "boot.credential",
                    mac: Some(&key),
                    task_id: task.as_ref().map(|t| t.id),
                    message: &msg,
                    data: Some(serde_json::json!({ "address": address, "evidence": evidence.as_str(), "mode": mode })),
                })?;
                *token = Some(secret);
            } else {
                decision = Decision::Refused {
                    reason: "too many boot credentials for this machine in the last 10 minutes".into(),
                };
                refused(st, &key, &address, "too many boot credentials in 10 minutes", now)?;
            }
        }
        (Decision::Refused { .. }, _) => refused(st, &key, &address, "not seen booting from the network", now)?,
        _ => {}
    }
    tracing::info!(mac = %mac, %address, decision = ?decision.clone().redacted(), "boot script");
    Ok((state, decision))
}

/// GRUB's per-machine scripts (`grub/parc/<mac>` over TFTP, see `parc_pxe::grub`): the same
/// decision and credential as `/boot.ipxe`, for the Secure Boot chain.
#[derive(Clone)]
pub struct GrubScripts {
    state: AppState,
    http_base: String,
}

impl GrubScripts {
    /// `http_base`: the URL the agent reaches the appliance at (`http://10.77.0.1:8080`).
    pub fn new(state: AppState, http_base: String) -> Self {
        GrubScripts { state, http_base }
    }
}

impl std::fmt::Debug for GrubScripts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrubScripts").field("http_base", &self.http_base).finish_non_exhaustive()
    }
}

impl parc_pxe::server::tftp::MachineScripts for GrubScripts {
    fn script(&self, mac: Mac, from: Ipv4Addr) -> Option<String> {
        match decide(&self.state, mac, IpAddr::V4(from), self.http_base.clone()) {
            Ok((state, decision)) => Some(parc_pxe::grub::render(&state, mac, &decision)),
            Err(e) => {
                tracing::error!(%mac, %from, error = %e, "GRUB boot script");
                None
            }
        }
    }
}

/// A refused boot script is journaled, at most once a minute per machine (a flood of them
/// must not flood the journal).
fn refused(st: &AppState, mac: &str, address: &str, why: &str, now: i64) -> Result<(), AppError> {
    tracing::warn!(%mac, %address, why, "boot credential refused");
    if st.limits.boot_refusals_journaled.allow(&mac.to_string(), now) {
        let msg = format!("boot credential for {mac} refused to {address}: {why}");
        st.event(&NewEvent {
            actor: "parc",
            kind: "boot.refused",
            mac: Some(mac),
            task_id: None,
            message: &msg,
            data: Some(serde_json::json!({ "address": address, "why": why })),
        })?;
    }
    Ok(())
}

/// The address a credential is bound to and checked against: an IPv4-mapped IPv6 address (a
/// dual-stack listener's view) as plain IPv4, so TFTP and HTTP name the same client alike.
pub fn canonical_address(ip: IpAddr) -> String {
    client_ipv4(ip).map(|v4| v4.to_string()).unwrap_or_else(|| ip.to_string())
}

/// The IPv4 address of a client (IPv4-mapped IPv6 included): PXE is IPv4 here.
fn client_ipv4(ip: IpAddr) -> Option<Ipv4Addr> {
    match ip {
        IpAddr::V4(v4) => Some(v4),
        IpAddr::V6(v6) => v6.to_ipv4_mapped(),
    }
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
    let missing = format!("the agent's {file} is not installed on this appliance (iso/build-netboot)");
    boot_file(st.netboot_dir.join(&file), "application/octet-stream", missing).await
}

/// The iPXE loaders a UEFI HTTP boot client may be offered (`parc_pxe::boot`); nothing else of
/// the iPXE directory is served.
const HTTP_BOOT_LOADERS: [&str; 2] = ["snponly.efi", "ipxe.efi"];

/// `GET /ipxe/<loader>`: what UEFI HTTP boot firmware fetches (plain HTTP, a Content-Length,
/// `application/efi`), then iPXE asks for `/boot.ipxe` as any other.
pub async fn http_boot_loader(State(st): State<AppState>, Path(file): Path<String>) -> Result<Response, AppError> {
    if !HTTP_BOOT_LOADERS.contains(&file.as_str()) {
        return Err(AppError::NotFound(format!("/ipxe/{file} does not exist")));
    }
    let path = st.ipxe_dir.join(&file);
    let missing = format!("{} is missing on this appliance (Debian's ipxe package)", path.display());
    boot_file(path, "application/efi", missing).await
}

/// A file network-booting firmware or the agent fetches, whole (so with a Content-Length);
/// `missing`: what a 404 says.
async fn boot_file(
    path: std::path::PathBuf,
    content_type: &'static str,
    missing: String,
) -> Result<Response, AppError> {
    match tokio::fs::read(&path).await {
        Ok(body) => Ok((StatusCode::OK, [(header::CONTENT_TYPE, content_type)], body).into_response()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            tracing::warn!(path = %path.display(), "boot file missing");
            Err(AppError::NotFound(missing))
        }
        Err(e) => Err(AppError::Internal(format!("{}: {e}", path.display()))),
    }
}

//! `POST /api/v1/agent/domain-join`: a running Windows task's agent asks for its machine's
//! offline-join blob. The appliance provisions the computer account then and there and the blob
//! goes into this answer only: never stored, never journaled, never in git or an image.

use axum::extract::State;
use serde::Serialize;

use super::agent::{require_active, task_snapshot, AgentTask, AGENT};
use super::Json;
use crate::db::{NewEvent, TaskKind};
use crate::domain::{self, net};
use crate::{blocking, AppError, AppState};

#[derive(Debug, Serialize)]
pub struct DomainJoin {
    pub domain: String,
    pub machine: String,
    pub account_data: String,
}

pub async fn domain_join(State(st): State<AppState>, AgentTask(t): AgentTask) -> Result<Json<DomainJoin>, AppError> {
    blocking(move || {
        require_active(&t)?;
        if !matches!(t.kind, TaskKind::Install | TaskKind::Move | TaskKind::Replace | TaskKind::Reimage) {
            return Err(AppError::Conflict(format!("task #{} ({}) joins no domain", t.id, t.kind.as_str())));
        }
        let snap = task_snapshot(&st, &t)?;
        let ou = t
            .department
            .as_ref()
            .and_then(|id| snap.departments.get(id))
            .and_then(|d| d.windows.as_ref())
            .and_then(|w| w.domain_ou.clone())
            .ok_or_else(|| {
                AppError::Conflict(format!("task #{}: its department sets no windows.domain_ou to join", t.id))
            })?;
        let cfg = st.domain.clone().ok_or_else(|| {
            AppError::Conflict(
                "the department joins a domain but parc.toml has no [domain]: add realm, workgroup, \
                                join_user and join_password_file"
                    .into(),
            )
        })?;
        let hostname =
            t.hostname.clone().ok_or_else(|| AppError::Conflict(format!("task #{} has no hostname", t.id)))?;
        let name = domain::machine_name(&hostname).map_err(AppError::Conflict)?;
        let fail = |why: String| {
            let msg = format!("task #{}: computer account {name} in {}: {why}", t.id, cfg.realm);
            let _ = st.event(&NewEvent {
                actor: AGENT,
                kind: "domain.refused",
                mac: Some(&t.mac),
                task_id: Some(t.id),
                message: &msg,
                data: None,
            });
            AppError::Conflict(msg)
        };
        // An account of that name that parc did not provision for this machine (or the one it
        // replaces) belongs to another computer: provisioning it would reset its password.
        let existing = net::search(&cfg, &name).map_err(|e| fail(e.to_string()))?;
        let owner = st.db.domain_account_owner(&name)?;
        let ours = owner.as_deref().is_some_and(|o| o == t.mac || t.replaces.as_deref() == Some(o));
        if let Some(dn) = existing.first().filter(|_| !ours) {
            return Err(fail(format!(
                "{dn} already exists and parc did not provision it for this machine; it belongs to another computer. \
                 Delete or rename that account in Active Directory if it is stale, or give this machine another \
                 hostname"
            )));
        }
        let reuse = !existing.is_empty();
        let blob = net::provision(&cfg, &name, &ou, reuse).map_err(|e| fail(e.to_string()))?;
        st.db.record_domain_account(&name, &t.mac, &cfg.realm, &ou)?;
        let left: Vec<String> = st.db.domain_accounts_of(&t.mac)?.into_iter().filter(|n| *n != name).collect();
        let host = t.hostname.clone().unwrap_or_default();
        let msg = format!(
            "task #{} on {host}: computer account {name} {} in {} ({ou}){}",
            t.id,
            if reuse { "reused (new password)" } else { "created" },
            cfg.realm,
            if left.is_empty() {
                String::new()
            } else {
                format!("; this machine's former account(s) {} remain in the directory: delete them", left.join(", "))
            }
        );
        let data =
            serde_json::json!({ "machine": name, "realm": cfg.realm, "ou": ou, "reused": reuse, "former": left });
        st.event(&NewEvent {
            actor: AGENT,
            kind: "domain.provision",
            mac: Some(&t.mac),
            task_id: Some(t.id),
            message: &msg,
            data: Some(data),
        })?;
        Ok(Json(DomainJoin { domain: cfg.realm.clone(), machine: name, account_data: blob }))
    })
    .await
}

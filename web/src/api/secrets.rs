//! `/api/v1/machines/{id}/secrets`: per-machine secrets, set and removed by admins, listed by
//! name only. Their values leave the appliance only inside the profile files that name them,
//! served to the machine's running task (`agent::file`).

use axum::extract::State;
use serde::Deserialize;

use super::{Json, OptionalJson, Path};
use crate::auth::Caller;
use crate::db::{NewEvent, Role, SecretInfo};
use crate::{blocking, ops, AppError, AppState};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretBody {
    name: String,
    value: String,
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoveBody {
    #[serde(default)]
    reason: Option<String>,
}

/// The MAC of an inventory machine named by MAC or hostname.
fn inventory_mac(st: &AppState, id: &str) -> Result<String, AppError> {
    let snap = st.profiles.snapshot();
    ops::find(&snap.inventory, id)
        .map(|m| m.mac.to_string())
        .ok_or_else(|| AppError::NotFound(format!("no machine {id:?} in the inventory")))
}

fn check_name(name: &str) -> Result<(), AppError> {
    if crate::secrets::valid_name(name) {
        Ok(())
    } else {
        Err(AppError::invalid("name", "1 to 64 of a-z, 0-9, _ and -"))
    }
}

fn journal(st: &AppState, caller: &Caller, mac: &str, message: String, reason: Option<&str>) -> Result<(), AppError> {
    let mut message = message;
    if let Some(r) = reason.map(ops::one_line).filter(|r| !r.is_empty()) {
        message.push_str(&format!(": {r}"));
    }
    st.event(&NewEvent {
        actor: caller.login(),
        kind: "machine.secret",
        mac: Some(mac),
        task_id: None,
        message: &message,
        data: None,
    })?;
    Ok(())
}

pub async fn secrets_list(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Vec<SecretInfo>>, AppError> {
    caller.require(Role::Admin)?;
    blocking(move || {
        let mac = inventory_mac(&st, &id)?;
        Ok(Json(st.db.secrets_of(&mac)?))
    })
    .await
}

/// Sets or replaces a secret; journaled by name and size, never its value.
pub async fn secret_set(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Json(b): Json<SecretBody>,
) -> Result<Json<SecretInfo>, AppError> {
    caller.require(Role::Admin)?;
    check_name(&b.name)?;
    if b.value.is_empty() || b.value.len() > crate::secrets::MAX_VALUE_BYTES {
        return Err(AppError::invalid("value", format!("1 to {} bytes", crate::secrets::MAX_VALUE_BYTES)));
    }
    blocking(move || {
        let mac = inventory_mac(&st, &id)?;
        let info = st.db.set_secret(&mac, &b.name, b.value.as_bytes(), caller.login())?;
        let msg = format!("secret {:?} of {mac} set ({} bytes)", b.name, info.bytes);
        journal(&st, &caller, &mac, msg, b.reason.as_deref())?;
        Ok(Json(info))
    })
    .await
}

pub async fn secret_remove(
    State(st): State<AppState>,
    caller: Caller,
    Path((id, name)): Path<(String, String)>,
    OptionalJson(b): OptionalJson<RemoveBody>,
) -> Result<Json<serde_json::Value>, AppError> {
    caller.require(Role::Admin)?;
    check_name(&name)?;
    blocking(move || {
        let mac = inventory_mac(&st, &id)?;
        if !st.db.remove_secret(&mac, &name)? {
            return Err(AppError::NotFound(format!("{mac} has no secret {name:?}")));
        }
        journal(&st, &caller, &mac, format!("secret {name:?} of {mac} removed"), b.reason.as_deref())?;
        Ok(Json(serde_json::json!({ "name": name, "removed": true })))
    })
    .await
}

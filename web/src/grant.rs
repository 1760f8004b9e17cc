//! A technician's network-boot grant: where the site's DHCP sends PCs straight to parc's boot
//! script URL, parc sees no DHCP exchange or TFTP fetch of theirs, so a technician names the
//! machine and the address it boots from, for a few minutes. Journaled.

use std::net::Ipv4Addr;

use crate::api::machines::ActionBody;
use crate::auth::Caller;
use crate::db::{NewEvent, Role};
use crate::{AppError, AppState};

#[derive(Debug, Clone, serde::Serialize)]
pub struct Granted {
    pub ok: bool,
    pub op: &'static str,
    pub mac: String,
    pub address: String,
    pub minutes: u64,
    pub summary: String,
}

/// A grant's address and minutes (15 unless given), checked whatever the action: a body that
/// carries them is refused when they are wrong, not silently ignored.
pub fn window(b: &ActionBody) -> Result<(Option<Ipv4Addr>, u64), AppError> {
    let address = match b.address.as_deref() {
        None => None,
        Some(a) => {
            let a: Ipv4Addr =
                a.parse().map_err(|_| AppError::invalid("address", "an IPv4 address such as 10.20.0.57"))?;
            if a.is_unspecified() || a.is_broadcast() || a.is_multicast() {
                return Err(AppError::invalid("address", "a unicast address of a PC"));
            }
            Some(a)
        }
    };
    crate::api::in_range("minutes", b.minutes, 1, 120)?;
    Ok((address, b.minutes.unwrap_or(15)))
}

/// Allows machine `id` (inventory hostname or MAC, or any MAC: an unknown PC must be able to
/// register) to get a boot credential from `address` for `minutes`. Blocking.
pub fn grant(st: &AppState, caller: &Caller, id: &str, b: &ActionBody) -> Result<Granted, AppError> {
    let user = caller.require(Role::Technician)?;
    let snap = st.profiles.snapshot();
    let mac = match crate::ops::find(&snap.inventory, id) {
        Some(m) => parc_pxe::ipxe::Mac(m.mac.0),
        None => id.parse::<parc_pxe::ipxe::Mac>().map_err(|_| {
            AppError::NotFound(format!("no machine {id:?} in the inventory, and it is not a MAC address"))
        })?,
    };
    let (address, minutes) = window(b)?;
    let address =
        address.ok_or_else(|| AppError::invalid("address", "required: the IPv4 address the machine boots from"))?;
    st.sightings.grant(mac.0, address, minutes);
    let mut summary = format!("network boot of {mac} from {address} allowed for {minutes} min");
    if let Some(r) = b.reason.as_deref().map(crate::ops::one_line).filter(|r| !r.is_empty()) {
        summary.push_str(&format!(": {r}"));
    }
    st.event(&NewEvent {
        actor: &user.login,
        kind: "boot.grant",
        mac: Some(&mac.to_string()),
        task_id: None,
        message: &summary,
        data: Some(serde_json::json!({ "address": address.to_string(), "minutes": minutes })),
    })?;
    Ok(Granted { ok: true, op: "netboot-grant", mac: mac.to_string(), address: address.to_string(), minutes, summary })
}

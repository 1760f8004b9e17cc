//! Wake-on-LAN for a machine of the inventory, from the API and the console: the magic packet
//! broadcast on the imaging network, and a journal entry naming who woke which machine.

use std::net::{SocketAddr, UdpSocket};

use parc_pxe::ipxe::Mac;
use parc_pxe::wol;

use crate::auth::Caller;
use crate::db::{NewEvent, Role};
use crate::{AppError, AppState};

/// Where the packet goes.
#[derive(Debug, Clone)]
pub struct WakeConfig {
    /// The broadcast address and port (default 255.255.255.255:9).
    pub target: SocketAddr,
    /// Sent out of this interface (the network-boot interface, where the PCs are) rather than
    /// wherever the routing table would send a broadcast.
    pub interface: Option<String>,
}

impl Default for WakeConfig {
    fn default() -> Self {
        WakeConfig { target: SocketAddr::from(([255, 255, 255, 255], wol::PORT)), interface: None }
    }
}

/// A machine the packet was sent to.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Woken {
    pub ok: bool,
    pub op: &'static str,
    pub mac: String,
    pub hostname: String,
    pub summary: String,
}

/// Sends the packet to machine `id` (MAC or hostname) and journals it. Blocking.
pub fn wake(st: &AppState, caller: &Caller, id: &str, reason: Option<&str>) -> Result<Woken, AppError> {
    let user = caller.require(Role::Technician)?;
    let snap = st.profiles.snapshot();
    let m = crate::ops::find(&snap.inventory, id)
        .ok_or_else(|| AppError::NotFound(format!("no machine {id:?} in the inventory")))?;
    let mac = Mac(m.mac.0);
    let name = crate::ops::display_name(m);
    send(&st.wake, mac).map_err(|e| {
        AppError::Internal(format!("Wake-on-LAN packet for {name} to {} not sent: {e}", st.wake.target))
    })?;
    let mut message = format!("Wake-on-LAN packet sent to {name} ({mac}) via {}", st.wake.target);
    if let Some(r) = reason.filter(|r| !r.trim().is_empty()) {
        message.push_str(&format!(": {}", r.trim()));
    }
    st.event(&NewEvent {
        actor: &user.login,
        kind: "machine.wake",
        mac: Some(&mac.to_string()),
        task_id: None,
        message: &message,
        data: None,
    })?;
    tracing::info!(machine = %name, mac = %mac, target = %st.wake.target, "wake-on-lan");
    Ok(Woken { ok: true, op: "wake", mac: mac.to_string(), hostname: m.hostname.clone(), summary: message })
}

fn send(c: &WakeConfig, mac: Mac) -> std::io::Result<()> {
    let domain = if c.target.is_ipv4() { socket2::Domain::IPV4 } else { socket2::Domain::IPV6 };
    let sock = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    sock.set_broadcast(true)?;
    if let Some(iface) = &c.interface {
        sock.bind_device(Some(iface.as_bytes()))?;
    }
    let sock: UdpSocket = sock.into();
    sock.send_to(&wol::magic_packet(mac), c.target)?;
    Ok(())
}

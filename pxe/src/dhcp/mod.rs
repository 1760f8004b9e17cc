//! DHCP and ProxyDHCP as pure code: [`handle`] takes a decoded request, the configuration, the
//! lease table and the time, and returns what to send and what lease to record. It never touches
//! a socket ([`crate::server::dhcp`] does) nor the clock.
//!
//! **ProxyDHCP** (the default; the hospital's DHCP server hands out addresses): only clients
//! whose option 60 starts with `PXEClient` or `HTTPClient` get an answer, and never an address.
//! - DISCOVER on port 67 from iPXE: OFFER with `siaddr`, the `boot.ipxe` URL in the BOOTP `file`
//!   field, option 60 `PXEClient`, option 97 echoed and option 43 telling iPXE to boot that file
//!   directly without waiting (discovery control 8, menu prompt timeout 0). Without siaddr and
//!   43, iPXE ignores the offer (NOTES.md, trap 3).
//! - DISCOVER from PXE firmware (BIOS PXE ROMs, OVMF): OFFER with 60, 97 and siaddr but no boot
//!   file; the firmware then sends a REQUEST to port 4011, answered with an ACK naming the loader
//!   in `file` (with `sname` and `siaddr` set). This is what OVMF expects.
//! - DISCOVER from UEFI HTTP boot: OFFER with the loader's URL and option 60 `HTTPClient`.
//! - REQUESTs on port 67 belong to the address server: never answered.
//!
//! **DHCP mode** (an isolated imaging network): a full server for one address range. Leases are
//! keyed by hardware address (the same machine's firmware sends no client identifier and its iPXE
//! does: both must get one address), offered addresses are held for [`Pool::offer_hold`],
//! declined ones quarantined for [`Pool::decline_hold`]. The boot file goes in option 67 with
//! `siaddr` set, as the reference server does; iPXE also gets option 60 `PXEClient`, which saves
//! it a 3 s wait for ProxyDHCP offers (NOTES.md, trap 2). A REQUEST naming another server's
//! identifier is never answered; a REQUEST for an address that is not the client's gets a NAK.
//! Requests relayed from other subnets (giaddr set) are ignored in DHCP mode.
//!
//! Where a reply may go is decided in one place, [`dest::destination`], for every reply `handle`
//! builds: relays only inside [`Config::relay_networks`], clients only at their own address on the
//! imaging network, otherwise broadcast on the bound interface.

pub mod dest;
pub mod lease;
pub mod wire;

/// The wire-format crate, re-exported so callers can name message types.
pub use dhcproto;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, SystemTime};

use dhcproto::v4::{DhcpOption, Flags, HType, Message, MessageType, Opcode, OptionCode};

use crate::boot::{self, Arch, Boot, VendorClass, IPXE_USER_CLASS};
pub use dest::{destination, BadNetwork, Ipv4Net, Refusal, PRIVATE_NETWORKS};
use lease::{unix_after, Lease, LeaseState, Leases, Mac};

/// UDP port of DHCP servers.
pub const SERVER_PORT: u16 = 67;
/// UDP port of DHCP clients.
pub const CLIENT_PORT: u16 = 68;
/// UDP port of PXE boot servers ("BINL"), where firmware sends its second REQUEST.
pub const PXE_BOOT_PORT: u16 = 4011;

/// Sub-options of option 43 for PXE clients (PXE 2.1 specification, table 2-1).
pub mod pxe_option {
    /// Discovery control bit field.
    pub const DISCOVERY_CONTROL: u8 = 6;
    /// Boot menu.
    pub const BOOT_MENU: u8 = 9;
    /// Menu prompt: timeout byte, then text.
    pub const MENU_PROMPT: u8 = 10;
    /// End of sub-options.
    pub const END: u8 = 255;
    /// Discovery control: boot the file in the offer directly, skip boot server discovery.
    pub const USE_BOOT_FILE: u8 = 8;
}

/// Which mode the server runs in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Boot information only; another server gives out addresses.
    Proxy,
    /// Addresses and boot information.
    Dhcp(Pool),
}

/// The address range of DHCP mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    /// First address handed out.
    pub first: Ipv4Addr,
    /// Last address handed out.
    pub last: Ipv4Addr,
    /// Subnet mask of the network.
    pub netmask: Ipv4Addr,
    /// Default gateway to announce, if any.
    pub router: Option<Ipv4Addr>,
    /// DNS servers to announce.
    pub dns: Vec<Ipv4Addr>,
    /// Lease duration.
    pub lease_time: Duration,
    /// How long an offered address is held for the client it was offered to.
    pub offer_hold: Duration,
    /// How long a declined address is kept out of use.
    pub decline_hold: Duration,
}

impl Pool {
    /// A pool with parc's default timings (1 h leases).
    pub fn new(first: Ipv4Addr, last: Ipv4Addr, netmask: Ipv4Addr) -> Self {
        Pool {
            first,
            last,
            netmask,
            router: None,
            dns: Vec::new(),
            lease_time: Duration::from_secs(3600),
            offer_hold: Duration::from_secs(60),
            decline_hold: Duration::from_secs(600),
        }
    }

    fn contains(&self, ip: Ipv4Addr) -> bool {
        (u32::from(self.first)..=u32::from(self.last)).contains(&u32::from(ip))
    }

    fn same_subnet(&self, ip: Ipv4Addr) -> bool {
        let m = u32::from(self.netmask);
        u32::from(ip) & m == u32::from(self.first) & m
    }

    fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.first) | !u32::from(self.netmask))
    }
}

/// Server settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// parc's address on the boot network: server identifier, `siaddr`, TFTP server.
    pub server_ip: Ipv4Addr,
    /// The imaging network: the network of `server_ip` on the PXE interface. Clients are answered
    /// by unicast only at an address inside it.
    pub network: Ipv4Net,
    /// Networks whose routers may relay requests (`giaddr`) and whose clients may ask the boot
    /// server on port 4011 directly; [`PRIVATE_NETWORKS`] by default. Empty: no relays.
    pub relay_networks: Vec<Ipv4Net>,
    /// Proxy or full DHCP.
    pub mode: Mode,
    /// What to boot.
    pub boot: boot::Config,
    /// Text of the PXE menu prompt sent to iPXE in proxy mode (shown for 0 seconds).
    pub menu_prompt: String,
}

/// The port a request arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Port {
    /// 67.
    Dhcp,
    /// 4011.
    PxeBoot,
}

/// One received request.
#[derive(Debug, Clone)]
pub struct Request {
    /// The decoded message.
    pub message: Message,
    /// Where it came from.
    pub source: SocketAddrV4,
    /// Where it arrived.
    pub port: Port,
}

/// A message to send and where to.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The message.
    pub message: Message,
    /// Destination (255.255.255.255:68 for broadcasts).
    pub to: SocketAddrV4,
}

/// What [`handle`] decided.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The message to send, if any (DECLINE and RELEASE get none).
    pub send: Option<Outgoing>,
    /// The lease to record before sending, if any.
    pub lease: Option<Lease>,
    /// The boot decision, for the log.
    pub boot: Option<Boot>,
    /// Why nothing is sent although the request would be answered, for the log: its reply had
    /// nowhere it may go ([`destination`]). No lease is recorded then.
    pub refused: Option<Refusal>,
}

/// What the protocol logic decided, before [`destination`] says where the message may go.
struct Decision {
    send: Option<Message>,
    lease: Option<Lease>,
    boot: Option<Boot>,
}

/// What the request says about its sender.
#[derive(Debug, Clone)]
struct Asker {
    mac: Mac,
    msg_type: MessageType,
    client: boot::Client,
    uuid: Option<Vec<u8>>,
    requested_ip: Option<Ipv4Addr>,
    server_id: Option<Ipv4Addr>,
}

fn asker(msg: &Message) -> Option<Asker> {
    if msg.opcode() != Opcode::BootRequest || msg.htype() != HType::Eth || msg.hlen() != 6 {
        return None;
    }
    let mac = Mac(msg.chaddr().get(..6)?.try_into().ok()?);
    let opts = msg.opts();
    let msg_type = opts.msg_type()?;
    let arch = match opts.get(OptionCode::ClientSystemArchitecture) {
        Some(DhcpOption::ClientSystemArchitecture(a)) => Some(Arch::from_code(u16::from(*a))),
        _ => None,
    };
    let vendor = match opts.get(OptionCode::ClassIdentifier) {
        Some(DhcpOption::ClassIdentifier(v)) => VendorClass::from_option(Some(v)),
        _ => VendorClass::Other,
    };
    let ipxe = match opts.get(OptionCode::UserClass) {
        // iPXE sends a raw "iPXE"; RFC 3004 format would be a length-prefixed list.
        Some(DhcpOption::UserClass(v)) => {
            v.as_slice() == IPXE_USER_CLASS || v.get(1..) == Some(IPXE_USER_CLASS) && v[0] == 4
        }
        _ => false,
    };
    let uuid = match opts.get(OptionCode::ClientMachineIdentifier) {
        Some(DhcpOption::ClientMachineIdentifier(v)) => Some(v.clone()),
        _ => None,
    };
    let requested_ip = match opts.get(OptionCode::RequestedIpAddress) {
        Some(DhcpOption::RequestedIpAddress(ip)) => Some(*ip),
        _ => None,
    };
    let server_id = match opts.get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(ip)) => Some(*ip),
        _ => None,
    };
    Some(Asker { mac, msg_type, client: boot::Client { arch, vendor, ipxe }, uuid, requested_ip, server_id })
}

/// Decides the answer to one request. Pure: same inputs, same answer.
pub fn handle(config: &Config, leases: &Leases, request: &Request, now: SystemTime) -> Option<Reply> {
    let Decision { send, lease, boot } = decide(config, leases, request, now)?;
    let Some(message) = send else {
        return Some(Reply { send: None, lease, boot, refused: None });
    };
    match destination(config, request, &message) {
        Ok(to) => Some(Reply { send: Some(Outgoing { message, to }), lease, boot, refused: None }),
        // An offer that cannot be sent must not hold an address either.
        Err(refusal) => Some(Reply { send: None, lease: None, boot, refused: Some(refusal) }),
    }
}

fn decide(config: &Config, leases: &Leases, request: &Request, now: SystemTime) -> Option<Decision> {
    let msg = &request.message;
    let a = asker(msg)?;
    let boot = boot::choose(&config.boot, &a.client);
    if request.port == Port::PxeBoot {
        return pxe_boot_ack(config, request, &a, boot?);
    }
    match &config.mode {
        Mode::Proxy => proxy_offer(config, msg, &a, boot?),
        Mode::Dhcp(pool) => {
            if !msg.giaddr().is_unspecified() {
                return None;
            }
            full(config, pool, leases, request, &a, boot, now)
        }
    }
}

/// The reply skeleton: BOOTREPLY echoing the client's identifiers.
fn reply_to(msg: &Message, msg_type: MessageType, server_ip: Ipv4Addr) -> Message {
    let mut r = Message::default();
    r.set_opcode(Opcode::BootReply)
        .set_htype(msg.htype())
        .set_xid(msg.xid())
        .set_secs(msg.secs())
        .set_flags(msg.flags())
        .set_giaddr(msg.giaddr())
        .set_chaddr(msg.chaddr());
    r.opts_mut().insert(DhcpOption::MessageType(msg_type));
    r.opts_mut().insert(DhcpOption::ServerIdentifier(server_ip));
    r
}

fn pxe_options(r: &mut Message, a: &Asker, boot: &Boot) {
    r.opts_mut().insert(DhcpOption::ClassIdentifier(boot.vendor_class().as_bytes().to_vec()));
    if let Some(uuid) = &a.uuid {
        r.opts_mut().insert(DhcpOption::ClientMachineIdentifier(uuid.clone()));
    }
}

/// Option 43 for iPXE in proxy mode: boot the offered file now, no menu, no wait.
fn ipxe_vendor_options(prompt: &str) -> Vec<u8> {
    let text: Vec<u8> = prompt.bytes().filter(|b| b.is_ascii_graphic() || *b == b' ').take(200).collect();
    let mut v = vec![pxe_option::DISCOVERY_CONTROL, 1, pxe_option::USE_BOOT_FILE];
    v.extend_from_slice(&[pxe_option::MENU_PROMPT, 1 + text.len() as u8, 0]);
    v.extend_from_slice(&text);
    v.push(pxe_option::END);
    v
}

/// Puts the boot file in the BOOTP `file` field (127 bytes and a NUL at most), or in option 67
/// when a long URL does not fit (iPXE and UEFI read both).
fn set_boot_file(r: &mut Message, file: &str) {
    if file.len() < BOOTP_FILE_LEN {
        r.set_fname_str(file);
    } else {
        let mut v = file.as_bytes().to_vec();
        v.push(0);
        r.opts_mut().insert(DhcpOption::BootfileName(v));
    }
}

/// Size of the BOOTP `file` field.
const BOOTP_FILE_LEN: usize = 128;

fn proxy_offer(config: &Config, msg: &Message, a: &Asker, boot: Boot) -> Option<Decision> {
    if a.msg_type != MessageType::Discover {
        return None;
    }
    let mut r = reply_to(msg, MessageType::Offer, config.server_ip);
    r.set_siaddr(config.server_ip).set_flags(Flags::default().set_broadcast());
    pxe_options(&mut r, a, &boot);
    match &boot {
        Boot::Http { .. } if a.client.ipxe => {
            set_boot_file(&mut r, boot.file());
            r.opts_mut().insert(DhcpOption::VendorExtensions(ipxe_vendor_options(&config.menu_prompt)));
        }
        Boot::Http { .. } => {
            set_boot_file(&mut r, boot.file());
        }
        // PXE firmware asks again on port 4011 for the file.
        Boot::Tftp(_) => {}
    }
    Some(Decision { send: Some(r), lease: None, boot: Some(boot) })
}

fn pxe_boot_ack(config: &Config, request: &Request, a: &Asker, boot: Boot) -> Option<Decision> {
    if !matches!(a.msg_type, MessageType::Request | MessageType::Inform) {
        return None;
    }
    let msg = &request.message;
    let mut r = reply_to(msg, MessageType::Ack, config.server_ip);
    r.set_ciaddr(msg.ciaddr()).set_siaddr(config.server_ip);
    r.set_sname_str(config.server_ip.to_string());
    set_boot_file(&mut r, boot.file());
    pxe_options(&mut r, a, &boot);
    Some(Decision { send: Some(r), lease: None, boot: Some(boot) })
}

/// Is `ip` free for `mac` at `now`?
fn free_for(pool: &Pool, config: &Config, leases: &Leases, ip: Ipv4Addr, mac: Mac, now: SystemTime) -> bool {
    if !pool.contains(ip) || ip == config.server_ip || ip == pool.broadcast() || Some(ip) == pool.router {
        return false;
    }
    match leases.get(ip) {
        None => true,
        Some(l) if l.state == LeaseState::Declined => !l.active(now),
        Some(l) => l.mac == mac || !l.active(now),
    }
}

/// The address to offer: the client's own, the one it asks for, a never used one, then the one
/// expired longest ago.
fn pick(config: &Config, pool: &Pool, leases: &Leases, a: &Asker, now: SystemTime) -> Option<Ipv4Addr> {
    let free = |ip| free_for(pool, config, leases, ip, a.mac, now);
    if let Some(l) = leases.of(a.mac).filter(|l| l.state != LeaseState::Declined) {
        if free(l.ip) {
            return Some(l.ip);
        }
    }
    if let Some(ip) = a.requested_ip.filter(|&ip| free(ip)) {
        return Some(ip);
    }
    let range = u32::from(pool.first)..=u32::from(pool.last);
    if let Some(ip) = range.clone().map(Ipv4Addr::from).find(|&ip| leases.get(ip).is_none() && free(ip)) {
        return Some(ip);
    }
    range.map(Ipv4Addr::from).filter(|&ip| free(ip)).min_by_key(|&ip| leases.get(ip).map(|l| l.expires).unwrap_or(0))
}

fn full(
    config: &Config,
    pool: &Pool,
    leases: &Leases,
    request: &Request,
    a: &Asker,
    boot: Option<Boot>,
    now: SystemTime,
) -> Option<Decision> {
    let msg = &request.message;
    let record = |ip, state, hold: Duration| Lease { ip, mac: a.mac, state, expires: unix_after(now, hold) };
    let free = |ip| free_for(pool, config, leases, ip, a.mac, now);
    let ours = |ip| leases.get(ip).is_some_and(|l| l.mac == a.mac && l.state != LeaseState::Declined);
    match a.msg_type {
        MessageType::Discover => {
            let ip = pick(config, pool, leases, a, now)?;
            let lease = match leases.get(ip) {
                // Offering a bound client its address again must not shorten its lease.
                Some(l) if l.mac == a.mac && l.state == LeaseState::Bound && l.active(now) => None,
                _ => Some(record(ip, LeaseState::Offered, pool.offer_hold)),
            };
            let r = address_reply(config, pool, msg, a, MessageType::Offer, ip, boot.as_ref());
            Some(Decision { send: Some(r), lease, boot })
        }
        MessageType::Request => {
            let ip = match (a.server_id, a.requested_ip, msg.ciaddr()) {
                // SELECTING: the client chose a server.
                (Some(sid), _, _) if sid != config.server_ip => return None,
                (Some(_), Some(ip), _) => {
                    if !(ours(ip) && free(ip)) {
                        return Some(nak(config, msg));
                    }
                    ip
                }
                (Some(_), None, ciaddr) if !ciaddr.is_unspecified() => ciaddr,
                (Some(_), None, _) => return None, // malformed
                // INIT-REBOOT: the client remembers an address.
                (None, Some(ip), ciaddr) if ciaddr.is_unspecified() => {
                    if !pool.same_subnet(ip) || !pool.contains(ip) {
                        return Some(nak(config, msg));
                    }
                    if !ours(ip) {
                        // Someone else's: NAK; nobody's: no record of this client, stay silent
                        // (RFC 2131 4.3.2).
                        return if free(ip) { None } else { Some(nak(config, msg)) };
                    }
                    if !free(ip) {
                        return Some(nak(config, msg));
                    }
                    ip
                }
                // RENEWING (unicast) or REBINDING (broadcast): ciaddr is the address in use.
                (None, _, ciaddr) if !ciaddr.is_unspecified() => {
                    if !pool.contains(ciaddr) {
                        return if pool.same_subnet(ciaddr) { Some(nak(config, msg)) } else { None };
                    }
                    if !free(ciaddr) {
                        return Some(nak(config, msg));
                    }
                    ciaddr
                }
                (None, _, _) => return None, // malformed
            };
            let lease = record(ip, LeaseState::Bound, pool.lease_time);
            let r = address_reply(config, pool, msg, a, MessageType::Ack, ip, boot.as_ref());
            Some(Decision { send: Some(r), lease: Some(lease), boot })
        }
        MessageType::Decline => {
            let ip = a.requested_ip?;
            if a.server_id.is_some_and(|s| s != config.server_ip) || !ours(ip) {
                return None;
            }
            Some(Decision { send: None, lease: Some(record(ip, LeaseState::Declined, pool.decline_hold)), boot: None })
        }
        MessageType::Release => {
            let ip = msg.ciaddr();
            if a.server_id.is_some_and(|s| s != config.server_ip) || !ours(ip) {
                return None;
            }
            Some(Decision { send: None, lease: Some(record(ip, LeaseState::Released, Duration::ZERO)), boot: None })
        }
        MessageType::Inform => {
            let ciaddr = msg.ciaddr();
            if ciaddr.is_unspecified() {
                return None;
            }
            let mut r = address_reply(config, pool, msg, a, MessageType::Ack, Ipv4Addr::UNSPECIFIED, boot.as_ref());
            r.set_ciaddr(ciaddr);
            for code in [OptionCode::AddressLeaseTime, OptionCode::Renewal, OptionCode::Rebinding] {
                r.opts_mut().remove(code);
            }
            Some(Decision { send: Some(r), lease: None, boot })
        }
        _ => None,
    }
}

fn nak(config: &Config, msg: &Message) -> Decision {
    let mut r = reply_to(msg, MessageType::Nak, config.server_ip);
    r.set_flags(Flags::default().set_broadcast());
    Decision { send: Some(r), lease: None, boot: None }
}

fn address_reply(
    config: &Config,
    pool: &Pool,
    msg: &Message,
    a: &Asker,
    msg_type: MessageType,
    ip: Ipv4Addr,
    boot: Option<&Boot>,
) -> Message {
    let mut r = reply_to(msg, msg_type, config.server_ip);
    r.set_yiaddr(ip).set_siaddr(config.server_ip);
    let lease = pool.lease_time.as_secs().min(u64::from(u32::MAX)) as u32;
    let o = r.opts_mut();
    o.insert(DhcpOption::AddressLeaseTime(lease));
    o.insert(DhcpOption::Renewal(lease / 2));
    o.insert(DhcpOption::Rebinding(lease / 8 * 7));
    o.insert(DhcpOption::SubnetMask(pool.netmask));
    o.insert(DhcpOption::BroadcastAddr(pool.broadcast()));
    if let Some(router) = pool.router {
        o.insert(DhcpOption::Router(vec![router]));
    }
    if !pool.dns.is_empty() {
        o.insert(DhcpOption::DomainNameServer(pool.dns.clone()));
    }
    if let Some(boot) = boot {
        // Also in the BOOTP `file` field: shim reads only that one for the directory it
        // fetches GRUB from (and PXE 2.1 firmware reads it first).
        if boot.file().len() < BOOTP_FILE_LEN {
            r.set_fname_str(boot.file());
        }
        let o = r.opts_mut();
        // NUL-terminated, as dnsmasq sends it: some PXE ROMs read option 67 as a C string.
        let mut file = boot.file().as_bytes().to_vec();
        file.push(0);
        o.insert(DhcpOption::BootfileName(file));
        // iPXE stops waiting for ProxyDHCP offers when it sees PXEClient; HTTP boot firmware
        // needs HTTPClient. PXE firmware gets neither: with 60 it would ask port 4011 again.
        if a.client.ipxe || matches!(boot, Boot::Http { http_client: true, .. }) {
            o.insert(DhcpOption::ClassIdentifier(boot.vendor_class().as_bytes().to_vec()));
        }
    }
    r
}

#[cfg(test)]
mod tests;

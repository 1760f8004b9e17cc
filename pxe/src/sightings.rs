//! Which machines parc saw network-booting, and from which addresses: the evidence the web
//! server asks for before it hands a machine a boot credential (a MAC address is not a secret;
//! a PXE exchange with parc's own DHCP/ProxyDHCP or TFTP server is harder to fake from another
//! segment). Pure: the caller passes the time; [`Sightings`] wraps the table for sharing
//! between the PXE server and the web server of one `parc serve`.
//!
//! Limit, documented in README: a host on the same segment can forge the PXE exchange of a
//! MAC it names. What this removes is the credential for the asking from anywhere else.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Mutex;

use dhcproto::v4::{DhcpOption, Message, OptionCode};

/// How long a sighting counts (milliseconds): a PC's firmware, its loader and iPXE reach the
/// boot script within seconds; a slow TCG guest within a minute or two.
pub const WINDOW_MS: u64 = 5 * 60 * 1000;

/// Table bounds: a flood of forged MACs or addresses evicts old entries instead of growing.
const MAX_MACS: usize = 16_384;
const MAX_ADDRESSES: usize = 16_384;
/// Addresses kept per MAC (offered, requested, client address, relay-free source).
const MAX_ADDRESSES_PER_MAC: usize = 4;

/// Why parc believes this machine is booting from the network right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Evidence {
    /// Its DHCP/ProxyDHCP exchange with parc, for this MAC and this address.
    DhcpExchange,
    /// A loader fetched over parc's TFTP from this address (the site's DHCP points at parc).
    LoaderFetch,
    /// A technician allowed this MAC to boot from this address for a while.
    Granted,
}

impl Evidence {
    pub fn as_str(self) -> &'static str {
        match self {
            Evidence::DhcpExchange => "DHCP exchange with parc",
            Evidence::LoaderFetch => "loader fetched over parc's TFTP",
            Evidence::Granted => "network boot allowed by a technician",
        }
    }
}

#[derive(Debug, Clone)]
struct MacEntry {
    seen_ms: u64,
    addresses: Vec<Ipv4Addr>,
    /// A technician's grant: good until then, for `addresses` only.
    granted_until_ms: Option<u64>,
}

/// The table itself (pure; all times in milliseconds since the epoch).
#[derive(Debug, Default)]
pub struct SightingTable {
    macs: HashMap<[u8; 6], MacEntry>,
    loader_fetches: HashMap<Ipv4Addr, u64>,
}

impl SightingTable {
    /// A DHCP packet from a PXE client or iPXE (`addresses`: what it says it has or wants).
    pub fn dhcp(&mut self, mac: [u8; 6], addresses: &[Ipv4Addr], now_ms: u64) {
        if !self.macs.contains_key(&mac) && self.macs.len() >= MAX_MACS {
            self.prune(now_ms);
            evict_oldest(&mut self.macs, |e| e.seen_ms);
        }
        let e =
            self.macs.entry(mac).or_insert(MacEntry { seen_ms: now_ms, addresses: Vec::new(), granted_until_ms: None });
        if e.granted_until_ms.is_some_and(|until| until < now_ms) {
            e.granted_until_ms = None;
        }
        // A new exchange after the window starts a new boot: old addresses no longer count.
        if now_ms.saturating_sub(e.seen_ms) > WINDOW_MS && e.granted_until_ms.is_none() {
            e.addresses.clear();
        }
        e.seen_ms = now_ms;
        for a in addresses.iter().filter(|a| usable(**a)) {
            if !e.addresses.contains(a) {
                if e.addresses.len() == MAX_ADDRESSES_PER_MAC {
                    e.addresses.remove(0);
                }
                e.addresses.push(*a);
            }
        }
    }

    /// A TFTP read request from `address`.
    pub fn loader_fetch(&mut self, address: Ipv4Addr, now_ms: u64) {
        if !self.loader_fetches.contains_key(&address) && self.loader_fetches.len() >= MAX_ADDRESSES {
            self.prune(now_ms);
            evict_oldest(&mut self.loader_fetches, |t| *t);
        }
        self.loader_fetches.insert(address, now_ms);
    }

    /// A technician allows `mac` to get a boot credential from `address` until `until_ms`.
    pub fn grant(&mut self, mac: [u8; 6], address: Ipv4Addr, now_ms: u64, until_ms: u64) {
        self.macs.insert(mac, MacEntry { seen_ms: now_ms, addresses: vec![address], granted_until_ms: Some(until_ms) });
    }

    /// Whether `mac`, asking from `from`, was seen booting: a recent exchange naming that
    /// address, a grant for it, or a recent loader fetch from it.
    pub fn evidence(&self, mac: [u8; 6], from: Ipv4Addr, now_ms: u64) -> Option<Evidence> {
        if let Some(e) = self.macs.get(&mac) {
            if e.granted_until_ms.is_some_and(|until| now_ms <= until) && e.addresses.contains(&from) {
                return Some(Evidence::Granted);
            }
            if now_ms.saturating_sub(e.seen_ms) <= WINDOW_MS && e.addresses.contains(&from) {
                return Some(Evidence::DhcpExchange);
            }
        }
        self.loader_fetches
            .get(&from)
            .filter(|t| now_ms.saturating_sub(**t) <= WINDOW_MS)
            .map(|_| Evidence::LoaderFetch)
    }

    fn prune(&mut self, now_ms: u64) {
        self.macs.retain(|_, e| {
            now_ms.saturating_sub(e.seen_ms) <= WINDOW_MS || e.granted_until_ms.is_some_and(|u| now_ms <= u)
        });
        self.loader_fetches.retain(|_, t| now_ms.saturating_sub(*t) <= WINDOW_MS);
    }
}

fn evict_oldest<K: Copy + Eq + std::hash::Hash, V>(map: &mut HashMap<K, V>, age: impl Fn(&V) -> u64) {
    if let Some(k) = map.iter().min_by_key(|(_, v)| age(v)).map(|(k, _)| *k) {
        map.remove(&k);
    }
}

/// An address a PC can fetch its boot script from (never 0.0.0.0, broadcast, multicast,
/// loopback: a forged packet must not make "127.0.0.1 booted" true).
fn usable(a: Ipv4Addr) -> bool {
    !(a.is_unspecified() || a.is_broadcast() || a.is_multicast() || a.is_loopback())
}

/// Whether a DHCP message comes from PXE firmware or iPXE (vendor class `PXEClient…` or
/// `HTTPClient…`, or user class `iPXE`): an installed system's own DHCP client is no evidence.
pub fn is_netboot_client(m: &Message) -> bool {
    let class = match m.opts().get(OptionCode::ClassIdentifier) {
        Some(DhcpOption::ClassIdentifier(c)) => c.starts_with(b"PXEClient") || c.starts_with(b"HTTPClient"),
        _ => false,
    };
    let ipxe = match m.opts().get(OptionCode::UserClass) {
        Some(DhcpOption::UserClass(c)) => c.windows(4).any(|w| w == b"iPXE"),
        _ => false,
    };
    class || ipxe
}

/// The addresses a DHCP message says its client has or asks for: `ciaddr`, the requested
/// address (option 50) and the source address of an unrelayed packet.
pub fn addresses_of(m: &Message, source: Ipv4Addr) -> Vec<Ipv4Addr> {
    let mut out = vec![m.ciaddr()];
    if let Some(DhcpOption::RequestedIpAddress(ip)) = m.opts().get(OptionCode::RequestedIpAddress) {
        out.push(*ip);
    }
    if m.giaddr().is_unspecified() {
        out.push(source);
    }
    out.retain(|a| usable(*a));
    out
}

/// The MAC of a DHCP message's client (`chaddr`).
pub fn mac_of(m: &Message) -> [u8; 6] {
    let mut mac = [0u8; 6];
    for (d, s) in mac.iter_mut().zip(m.chaddr()) {
        *d = *s;
    }
    mac
}

/// The table behind a lock, shared by the PXE server (which records) and the web server
/// (which asks).
#[derive(Debug, Default)]
pub struct Sightings(Mutex<SightingTable>);

impl Sightings {
    /// Records a DHCP message received from `source`, if it comes from a network-boot client.
    pub fn record_dhcp(&self, m: &Message, source: Ipv4Addr) {
        if is_netboot_client(m) {
            let addresses = addresses_of(m, source);
            self.lock().dhcp(mac_of(m), &addresses, now_ms());
        }
    }
    /// Records the address parc's own DHCP mode gave a network-boot client.
    pub fn record_offer(&self, mac: [u8; 6], yiaddr: Ipv4Addr) {
        if usable(yiaddr) {
            self.lock().dhcp(mac, &[yiaddr], now_ms());
        }
    }
    pub fn record_loader_fetch(&self, address: Ipv4Addr) {
        if usable(address) {
            self.lock().loader_fetch(address, now_ms());
        }
    }
    pub fn grant(&self, mac: [u8; 6], address: Ipv4Addr, minutes: u64) {
        let now = now_ms();
        self.lock().grant(mac, address, now, now + minutes * 60_000);
    }
    pub fn evidence(&self, mac: [u8; 6], from: Ipv4Addr) -> Option<Evidence> {
        self.lock().evidence(mac, from, now_ms())
    }
    fn lock(&self) -> std::sync::MutexGuard<'_, SightingTable> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dhcp::wire;

    const MAC: [u8; 6] = [0x52, 0x54, 0, 0x77, 0, 1];
    const PC: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 120);
    const OTHER: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 9);

    #[test]
    fn an_exchange_counts_for_its_mac_and_address_for_five_minutes() {
        let mut t = SightingTable::default();
        assert_eq!(t.evidence(MAC, PC, 1_000), None);
        t.dhcp(MAC, &[PC], 1_000);
        assert_eq!(t.evidence(MAC, PC, 2_000), Some(Evidence::DhcpExchange));
        assert_eq!(t.evidence(MAC, OTHER, 2_000), None, "another address naming the MAC");
        assert_eq!(t.evidence([0x52, 0x54, 0, 0x77, 0, 2], PC, 2_000), None, "another MAC from the address");
        assert_eq!(t.evidence(MAC, PC, 1_000 + WINDOW_MS + 1), None, "too old");
        // A DISCOVER (no address yet) then a REQUEST for one: the address joins the entry.
        t.dhcp(MAC, &[], 10 * WINDOW_MS);
        assert_eq!(t.evidence(MAC, PC, 10 * WINDOW_MS), None, "a new boot forgets old addresses");
        t.dhcp(MAC, &[OTHER], 10 * WINDOW_MS + 5);
        assert_eq!(t.evidence(MAC, OTHER, 10 * WINDOW_MS + 6), Some(Evidence::DhcpExchange));
    }

    #[test]
    fn forged_special_addresses_and_floods_do_not_count_or_grow() {
        let mut t = SightingTable::default();
        let specials = [Ipv4Addr::LOCALHOST, Ipv4Addr::BROADCAST, Ipv4Addr::UNSPECIFIED, Ipv4Addr::new(224, 0, 0, 1)];
        t.dhcp(MAC, &specials, 0);
        for a in specials {
            assert_eq!(t.evidence(MAC, a, 1), None, "{a}");
        }
        for i in 0..(MAX_MACS as u32 + 100) {
            let b = i.to_be_bytes();
            t.dhcp([2, 0, b[0], b[1], b[2], b[3]], &[PC], u64::from(i));
            t.loader_fetch(Ipv4Addr::from(i), u64::from(i));
        }
        assert!(t.macs.len() <= MAX_MACS && t.loader_fetches.len() <= MAX_ADDRESSES);
    }

    #[test]
    fn loader_fetches_and_grants() {
        let mut t = SightingTable::default();
        t.loader_fetch(PC, 0);
        assert_eq!(t.evidence(MAC, PC, 10), Some(Evidence::LoaderFetch));
        assert_eq!(t.evidence(MAC, OTHER, 10), None);
        t.grant(MAC, OTHER, 0, 30 * 60_000);
        assert_eq!(t.evidence(MAC, OTHER, 20 * 60_000), Some(Evidence::Granted));
        assert_eq!(t.evidence(MAC, OTHER, 31 * 60_000), None);
    }

    #[test]
    fn only_netboot_clients_and_their_addresses() {
        let text = include_str!("../tests/fixtures/proxy-uefi.dhcp");
        let mut netboot = 0;
        for line in text.lines() {
            let f: Vec<&str> = line.split(' ').collect();
            let bytes: Vec<u8> =
                (0..f[3].len()).step_by(2).map(|i| u8::from_str_radix(&f[3][i..i + 2], 16).unwrap()).collect();
            let Ok(m) = wire::decode(&bytes) else { continue };
            if bytes[0] != 1 {
                continue;
            }
            if is_netboot_client(&m) {
                netboot += 1;
                let src: std::net::SocketAddrV4 =
                    f[1].parse().unwrap_or(std::net::SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68));
                assert!(addresses_of(&m, *src.ip()).iter().all(|a| usable(*a)));
            }
        }
        assert!(netboot >= 2, "the OVMF capture holds PXE DISCOVER and the port-4011 REQUEST");
    }
}

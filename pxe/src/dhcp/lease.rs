//! The lease table of DHCP mode: pure data. [`crate::dhcp::handle`] reads it and returns the
//! change to make; the server applies the change and persists the table (JSON, in the data
//! directory), so leases are honoured across restarts.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// An ethernet hardware address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Mac(pub [u8; 6]);

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5])
    }
}

/// A MAC address string that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a MAC address (expected six hex pairs separated by colons)")]
pub struct BadMac(pub String);

impl FromStr for Mac {
    type Err = BadMac;
    fn from_str(s: &str) -> Result<Self, BadMac> {
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for b in &mut out {
            let p = parts.next().filter(|p| p.len() == 2).ok_or_else(|| BadMac(s.into()))?;
            *b = u8::from_str_radix(p, 16).map_err(|_| BadMac(s.into()))?;
        }
        match parts.next() {
            None => Ok(Mac(out)),
            Some(_) => Err(BadMac(s.into())),
        }
    }
}

impl From<Mac> for String {
    fn from(m: Mac) -> String {
        m.to_string()
    }
}

impl TryFrom<String> for Mac {
    type Error = BadMac;
    fn try_from(s: String) -> Result<Self, BadMac> {
        s.parse()
    }
}

/// Where a lease stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LeaseState {
    /// Offered, not yet requested; held briefly so two clients are not offered one address.
    Offered,
    /// Acknowledged: the client uses it until it expires.
    Bound,
    /// The client found the address in use (DECLINE): not offered to anyone until it expires.
    Declined,
    /// Given back (RELEASE); remembered so the client gets the same address next time.
    Released,
}

/// One address's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The address.
    pub ip: Ipv4Addr,
    /// The client it belongs to.
    pub mac: Mac,
    /// State.
    pub state: LeaseState,
    /// End of validity, seconds since the Unix epoch.
    pub expires: u64,
}

impl Lease {
    /// Whether the lease still holds its address at `now`.
    pub fn active(&self, now: SystemTime) -> bool {
        self.state != LeaseState::Released && self.expires > unix(now)
    }
}

/// Seconds since the Unix epoch (0 before it).
pub fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// `now + d` in Unix seconds.
pub fn unix_after(now: SystemTime, d: Duration) -> u64 {
    unix(now).saturating_add(d.as_secs())
}

/// All leases, by address.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leases {
    by_ip: BTreeMap<Ipv4Addr, Lease>,
}

/// The lease file does not parse.
#[derive(Debug, thiserror::Error)]
#[error("lease file is not valid JSON of parc's lease table: {0}")]
pub struct BadLeaseFile(#[from] serde_json::Error);

impl Leases {
    /// The record for `ip`.
    pub fn get(&self, ip: Ipv4Addr) -> Option<&Lease> {
        self.by_ip.get(&ip)
    }

    /// The address record of `mac` (declined addresses aside), preferring a bound lease, then
    /// the most recent one.
    pub fn of(&self, mac: Mac) -> Option<&Lease> {
        self.by_ip
            .values()
            .filter(|l| l.mac == mac && l.state != LeaseState::Declined)
            .max_by_key(|l| (l.state == LeaseState::Bound, l.expires))
    }

    /// Inserts or replaces the record for `lease.ip`; a client holds one address at a time, so
    /// its other non-declined records are dropped.
    pub fn apply(&mut self, lease: Lease) {
        if lease.state != LeaseState::Declined {
            self.by_ip.retain(|ip, l| *ip == lease.ip || l.mac != lease.mac || l.state == LeaseState::Declined);
        }
        self.by_ip.insert(lease.ip, lease);
    }

    /// All records.
    pub fn iter(&self) -> impl Iterator<Item = &Lease> {
        self.by_ip.values()
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.by_ip.len()
    }

    /// True without records.
    pub fn is_empty(&self) -> bool {
        self.by_ip.is_empty()
    }

    /// Serializes for the lease file.
    pub fn to_json(&self) -> String {
        let list: Vec<&Lease> = self.by_ip.values().collect();
        serde_json::to_string_pretty(&list).unwrap_or_else(|_| "[]".into())
    }

    /// Reads a lease file.
    pub fn from_json(s: &str) -> Result<Self, BadLeaseFile> {
        let list: Vec<Lease> = serde_json::from_str(s)?;
        Ok(Leases { by_ip: list.into_iter().map(|l| (l.ip, l)).collect() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Mac = Mac([0x52, 0x54, 0, 0x77, 0, 0x10]);
    const B: Mac = Mac([0x52, 0x54, 0, 0x77, 0, 0x11]);

    #[test]
    fn mac_parse_and_print() {
        assert_eq!("52:54:00:77:00:10".parse::<Mac>(), Ok(A));
        assert_eq!(A.to_string(), "52:54:00:77:00:10");
        for bad in ["", "52:54:00:77:00", "52:54:00:77:00:10:11", "zz:54:00:77:00:10", "5:54:00:77:00:100"] {
            assert!(bad.parse::<Mac>().is_err(), "{bad}");
        }
    }

    #[test]
    fn one_address_per_client_and_json_round_trip() {
        let mut t = Leases::default();
        let ip1 = Ipv4Addr::new(10, 0, 0, 5);
        let ip2 = Ipv4Addr::new(10, 0, 0, 6);
        t.apply(Lease { ip: ip1, mac: A, state: LeaseState::Bound, expires: 100 });
        t.apply(Lease { ip: ip2, mac: B, state: LeaseState::Offered, expires: 50 });
        assert_eq!(t.of(A).unwrap().ip, ip1);
        // A moves to ip3: its old record goes.
        let ip3 = Ipv4Addr::new(10, 0, 0, 7);
        t.apply(Lease { ip: ip3, mac: A, state: LeaseState::Bound, expires: 200 });
        assert!(t.get(ip1).is_none());
        // A declined record stays next to the client's new one.
        t.apply(Lease { ip: ip1, mac: A, state: LeaseState::Declined, expires: 300 });
        assert_eq!(t.len(), 3);
        assert_eq!(t.of(A).unwrap().ip, ip3);
        let json = t.to_json();
        assert!(json.contains("\"52:54:00:77:00:10\"") && json.contains("\"bound\""), "{json}");
        assert_eq!(Leases::from_json(&json).unwrap(), t);
        assert!(Leases::from_json("{").is_err());
        assert!(Leases::from_json(r#"[{"ip":"10.0.0.1","mac":"nope","state":"bound","expires":1}]"#).is_err());
    }

    #[test]
    fn activity() {
        let now = UNIX_EPOCH + Duration::from_secs(1000);
        let l = |state, expires| Lease { ip: Ipv4Addr::LOCALHOST, mac: A, state, expires };
        assert!(l(LeaseState::Bound, 1001).active(now));
        assert!(!l(LeaseState::Bound, 1000).active(now));
        assert!(l(LeaseState::Declined, 2000).active(now));
        assert!(!l(LeaseState::Released, 2000).active(now));
    }
}

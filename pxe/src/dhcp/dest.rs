//! Where a reply may go. Pure, like the rest of [`crate::dhcp`]: [`destination`] looks only at
//! the request, where it came from and the configuration.
//!
//! Every address a DHCP packet carries is the sender's claim: `giaddr` names a relay agent,
//! `ciaddr` the client's address. Answering them blindly turns parc into a reflector (a fuzzer
//! made the ProxyDHCP server send offers to 224.0.0.1, 127.0.0.1 and public addresses). So:
//! - a relayed request (`giaddr` set) is answered on port 67 of `giaddr` (RFC 2131 4.1) only when
//!   `giaddr` is an ordinary unicast host address inside [`Config::relay_networks`];
//! - a client is answered by unicast, always on port 68, only at an address that is the request's
//!   own source and lies on the imaging network ([`Config::network`]); the port the packet came
//!   from is never trusted;
//! - everything else is broadcast on the interface the server is bound to, as before.
//!
//! The one exception to port 68 is port 4011: PXE firmware talks to the boot server from port
//! 4011 (OVMF does, see `tests/fixtures/proxy-uefi.dhcp`) or 68, and expects the answer there.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::str::FromStr;

use dhcproto::v4::{Message, MessageType};

use super::{Config, Port, Request, CLIENT_PORT, PXE_BOOT_PORT, SERVER_PORT};

/// An IPv4 network in CIDR notation (`10.0.0.0/8`): the relay networks of `parc.toml`, the
/// imaging network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(try_from = "String")]
pub struct Ipv4Net {
    network: Ipv4Addr,
    prefix: u8,
}

/// The private ranges of RFC 1918: the default relay networks. Hospital networks use them, so
/// relayed ProxyDHCP across a site's routers works with no configuration.
pub const PRIVATE_NETWORKS: [Ipv4Net; 3] = [
    Ipv4Net { network: Ipv4Addr::new(10, 0, 0, 0), prefix: 8 },
    Ipv4Net { network: Ipv4Addr::new(172, 16, 0, 0), prefix: 12 },
    Ipv4Net { network: Ipv4Addr::new(192, 168, 0, 0), prefix: 16 },
];

/// A network in `parc.toml` does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BadNetwork {
    /// Not `ADDRESS/PREFIX` with an IPv4 address and a prefix of 0 to 32.
    #[error("{text:?} is not an IPv4 network; write ADDRESS/PREFIX, e.g. \"10.0.0.0/8\"")]
    Syntax {
        /// The entry as written.
        text: String,
    },
    /// The address has bits set beyond the prefix, which usually means a mistyped prefix.
    #[error("{text:?} has host bits set beyond /{prefix}; write the network address, {network}/{prefix}")]
    HostBits {
        /// The entry as written.
        text: String,
        /// The network the prefix selects.
        network: Ipv4Addr,
        /// The prefix length.
        prefix: u8,
    },
}

impl Ipv4Net {
    /// The network `network/prefix`; `network` must have no bits set beyond the prefix.
    pub fn new(network: Ipv4Addr, prefix: u8) -> Result<Self, BadNetwork> {
        let text = format!("{network}/{prefix}");
        if prefix > 32 {
            return Err(BadNetwork::Syntax { text });
        }
        let net = Ipv4Net { network: Ipv4Addr::from(u32::from(network) & mask(prefix)), prefix };
        if net.network != network {
            return Err(BadNetwork::HostBits { text, network: net.network, prefix });
        }
        Ok(net)
    }

    /// The network an interface address lies in, from the interface's netmask. A netmask with
    /// holes (legal once, never seen) counts only its leading ones.
    pub fn of(ip: Ipv4Addr, netmask: Ipv4Addr) -> Self {
        let prefix = u32::from(netmask).leading_ones() as u8;
        Ipv4Net { network: Ipv4Addr::from(u32::from(ip) & mask(prefix)), prefix }
    }

    /// The network address.
    pub fn network(&self) -> Ipv4Addr {
        self.network
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Is `ip` inside?
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.prefix) == u32::from(self.network)
    }

    /// The directed broadcast address (the network itself for /31 and /32, which have none).
    fn broadcast(&self) -> Ipv4Addr {
        if self.prefix >= 31 {
            self.network
        } else {
            Ipv4Addr::from(u32::from(self.network) | !mask(self.prefix))
        }
    }

    /// Is `ip` one host of this network, not its network or broadcast address?
    fn has_host(&self, ip: Ipv4Addr) -> bool {
        self.contains(ip) && (self.prefix >= 31 || (ip != self.network && ip != self.broadcast()))
    }
}

fn mask(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl FromStr for Ipv4Net {
    type Err = BadNetwork;

    fn from_str(s: &str) -> Result<Self, BadNetwork> {
        let syntax = || BadNetwork::Syntax { text: s.to_owned() };
        let (addr, prefix) = s.trim().split_once('/').ok_or_else(syntax)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| syntax())?;
        // Digits only: u8's parser would take "+8".
        if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) {
            return Err(syntax());
        }
        let prefix: u8 = prefix.parse().map_err(|_| syntax())?;
        Ipv4Net::new(addr, prefix).map_err(|e| match e {
            BadNetwork::Syntax { .. } => syntax(),
            BadNetwork::HostBits { network, prefix, .. } => {
                BadNetwork::HostBits { text: s.to_owned(), network, prefix }
            }
        })
    }
}

impl TryFrom<String> for Ipv4Net {
    type Error = BadNetwork;

    fn try_from(s: String) -> Result<Self, BadNetwork> {
        s.parse()
    }
}

/// Why a reply was not sent. The server logs it; [`Refusal::RelayNotAllowed`] is the one a
/// technician may have to act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The request came from an address no host has: multicast, loopback, broadcast, reserved,
    /// "this network" (other than 0.0.0.0, the address of a client that has none yet), or parc's
    /// own. Such packets are forged; answering them would reflect traffic.
    #[error("request from {sender}, which is not a client's address (multicast, loopback, broadcast, reserved or parc's own); not answered")]
    SourceNotHost {
        /// The request's source address.
        sender: Ipv4Addr,
    },
    /// `giaddr` cannot be a relay agent: multicast, loopback, broadcast, reserved, link-local,
    /// "this network", parc's own address or the imaging network's broadcast address.
    #[error("request names relay agent (giaddr) {giaddr}, which cannot be one; not answered")]
    RelayNotHost {
        /// The relay address the request names.
        giaddr: Ipv4Addr,
    },
    /// `giaddr` is a plausible relay agent outside the allowed relay networks.
    #[error(
        "request relayed by {giaddr}, outside the allowed relay networks; not answered. If {giaddr} is \
         a router of this site, add its network to relay_networks in the [pxe] section of parc.toml"
    )]
    RelayNotAllowed {
        /// The relay address.
        giaddr: Ipv4Addr,
    },
    /// A request sent straight to the boot server (port 4011) from outside the imaging network
    /// and the allowed relay networks.
    #[error(
        "boot server request from {sender}, outside the imaging network and the allowed relay \
         networks; not answered. If it is a client of this site behind a router, add its network to \
         relay_networks in the [pxe] section of parc.toml"
    )]
    SourceNotAllowed {
        /// The request's source address.
        sender: Ipv4Addr,
    },
    /// An INFORM whose `ciaddr` is not the address it came from.
    #[error("INFORM names client address {ciaddr} but came from {sender}; not answered")]
    ClientNotSource {
        /// The client address the request names.
        ciaddr: Ipv4Addr,
        /// The address it came from.
        sender: Ipv4Addr,
    },
    /// An INFORM from an address that is not a host of the imaging network.
    #[error("INFORM from {ciaddr}, which is not a host of the imaging network {network}; not answered")]
    ClientOffNetwork {
        /// The client address.
        ciaddr: Ipv4Addr,
        /// The imaging network.
        network: Ipv4Net,
    },
}

/// Could `ip` be an ordinary host's unicast address? Not 0/8 ("this network"), 127/8, 224/4
/// multicast, 240/4 reserved (which holds 255.255.255.255) nor 169.254/16 link-local (which
/// routers do not forward, so no relay or routed client has one).
pub fn is_host_address(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    !(a == 0 || a == 127 || a >= 224 || (a == 169 && b == 254))
}

/// Where `reply`, the answer to `request`, goes, or why it goes nowhere:
/// 1. a request from no host's address ([`is_host_address`], 0.0.0.0 excepted) is refused;
/// 2. on port 4011: back to the source (on port 4011 if it came from there, else 68) when the
///    source is on the imaging network or in a relay network; a source of 0.0.0.0 gets a
///    broadcast;
/// 3. relayed (`giaddr` set): to `giaddr`:67 when `giaddr` is a host address in a relay network;
/// 4. a NAK: broadcast (RFC 2131 4.1);
/// 5. an INFORM: to `ciaddr`:68 when `ciaddr` is the source and a host of the imaging network;
/// 6. a client that has an address (`ciaddr`, renewing): to it on port 68 when it is the source
///    and on the imaging network, else broadcast;
/// 7. else broadcast (255.255.255.255:68, on the bound interface only: parc writes no ARP entry
///    to unicast to a client that has no address yet).
pub fn destination(config: &Config, request: &Request, reply: &Message) -> Result<SocketAddrV4, Refusal> {
    let broadcast = SocketAddrV4::new(Ipv4Addr::BROADCAST, CLIENT_PORT);
    let source = *request.source.ip();
    let msg = &request.message;
    if !source.is_unspecified() && !is_host(config, source) {
        return Err(Refusal::SourceNotHost { sender: source });
    }
    if request.port == Port::PxeBoot {
        if source.is_unspecified() {
            return Ok(broadcast);
        }
        if !config.network.contains(source) && !in_relay_network(config, source) {
            return Err(Refusal::SourceNotAllowed { sender: source });
        }
        let port = if request.source.port() == PXE_BOOT_PORT { PXE_BOOT_PORT } else { CLIENT_PORT };
        return Ok(SocketAddrV4::new(source, port));
    }
    let giaddr = msg.giaddr();
    if !giaddr.is_unspecified() {
        if !is_host(config, giaddr) {
            return Err(Refusal::RelayNotHost { giaddr });
        }
        if !in_relay_network(config, giaddr) {
            return Err(Refusal::RelayNotAllowed { giaddr });
        }
        return Ok(SocketAddrV4::new(giaddr, SERVER_PORT));
    }
    if reply.opts().msg_type() == Some(MessageType::Nak) {
        return Ok(broadcast);
    }
    let ciaddr = msg.ciaddr();
    let inform = msg.opts().msg_type() == Some(MessageType::Inform);
    if ciaddr.is_unspecified() {
        // [`super::handle`] ignores an INFORM without ciaddr; refusing one keeps this rule total.
        return if inform { Err(Refusal::ClientNotSource { ciaddr, sender: source }) } else { Ok(broadcast) };
    }
    match own_client(config, ciaddr, source) {
        Ok(to) => Ok(to),
        Err(refusal) if inform => Err(refusal),
        // A client naming an address it does not send from (or one off the imaging network) gets
        // the answer a client without an address gets: the broadcast stays on the imaging network.
        Err(_) => Ok(broadcast),
    }
}

/// `ciaddr`:68 if the request came from `ciaddr` and it is a host of the imaging network.
fn own_client(config: &Config, ciaddr: Ipv4Addr, source: Ipv4Addr) -> Result<SocketAddrV4, Refusal> {
    if ciaddr != source {
        return Err(Refusal::ClientNotSource { ciaddr, sender: source });
    }
    if !config.network.has_host(ciaddr) {
        return Err(Refusal::ClientOffNetwork { ciaddr, network: config.network });
    }
    Ok(SocketAddrV4::new(ciaddr, CLIENT_PORT))
}

/// A host address that is not parc's own nor the imaging network's network or broadcast
/// address (a subnet-directed broadcast would reach every client at once).
fn is_host(config: &Config, ip: Ipv4Addr) -> bool {
    let imaging_net_itself = config.network.contains(ip) && !config.network.has_host(ip);
    is_host_address(ip) && ip != config.server_ip && !imaging_net_itself
}

fn in_relay_network(config: &Config, ip: Ipv4Addr) -> bool {
    config.relay_networks.iter().any(|n| n.contains(ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_parse_or_say_what_is_wrong() {
        let n: Ipv4Net = "10.0.0.0/8".parse().unwrap();
        assert_eq!((n.network(), n.prefix(), n.to_string()), (Ipv4Addr::new(10, 0, 0, 0), 8, "10.0.0.0/8".into()));
        assert!(n.contains(Ipv4Addr::new(10, 255, 1, 2)) && !n.contains(Ipv4Addr::new(11, 0, 0, 0)));
        let all: Ipv4Net = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(Ipv4Addr::new(8, 8, 8, 8)));
        let one: Ipv4Net = " 203.0.113.7/32 ".parse().unwrap();
        assert!(one.contains(Ipv4Addr::new(203, 0, 113, 7)) && !one.contains(Ipv4Addr::new(203, 0, 113, 8)));
        for bad in ["", "10.0.0.0", "10.0.0.0/", "10.0.0.0/33", "10.0.0/8", "10.0.0.0/+8", "ten/8", "::1/128"] {
            let e = bad.parse::<Ipv4Net>().unwrap_err();
            assert!(matches!(e, BadNetwork::Syntax { .. }), "{bad}: {e}");
            assert!(e.to_string().contains(&format!("{bad:?}")), "{e}");
        }
        let e = "10.1.2.3/8".parse::<Ipv4Net>().unwrap_err();
        assert_eq!(e.to_string(), "\"10.1.2.3/8\" has host bits set beyond /8; write the network address, 10.0.0.0/8");
    }

    #[test]
    fn interface_networks_and_their_hosts() {
        let n = Ipv4Net::of(Ipv4Addr::new(10, 77, 0, 1), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(n.to_string(), "10.77.0.0/24");
        assert!(n.has_host(Ipv4Addr::new(10, 77, 0, 188)));
        assert!(!n.has_host(Ipv4Addr::new(10, 77, 0, 0)) && !n.has_host(Ipv4Addr::new(10, 77, 0, 255)));
        let p2p = Ipv4Net::of(Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(255, 255, 255, 254));
        assert!(p2p.has_host(Ipv4Addr::new(10, 0, 0, 0)) && p2p.has_host(Ipv4Addr::new(10, 0, 0, 1)));
    }

    #[test]
    fn host_addresses() {
        for ip in ["10.0.0.1", "8.8.8.8", "172.16.0.1", "223.255.255.254", "169.253.0.1"] {
            assert!(is_host_address(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["0.0.0.0", "0.1.2.3", "127.0.0.1", "224.0.0.1", "239.255.255.250", "240.0.0.1", "255.255.255.255"] {
            assert!(!is_host_address(ip.parse().unwrap()), "{ip}");
        }
        assert!(!is_host_address(Ipv4Addr::new(169, 254, 1, 1)));
    }
}

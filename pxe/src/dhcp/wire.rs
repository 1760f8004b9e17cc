//! DHCP wire format through `dhcproto`, plus a canonical option order on output.
//!
//! dhcproto keeps options in a hash map, so its encoding order changes from run to run. parc
//! sends options in a fixed order instead: message type (53) first, as dnsmasq does and as old
//! PXE ROMs expect, then server identifier (54), then the rest by code. Replies are then
//! byte-for-byte reproducible, which golden tests and packet captures rely on.

use dhcproto::v4::{Message, OptionCode};
use dhcproto::{Decodable, Encodable};

/// The four bytes before the options (RFC 2131 section 3).
pub const MAGIC_COOKIE: [u8; 4] = [99, 130, 83, 99];
/// Fixed BOOTP header length before the magic cookie.
pub const BOOTP_HEADER_LEN: usize = 236;

/// A datagram that is not a DHCP message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// Shorter than the fixed header, no magic cookie, or options that do not parse.
    #[error("malformed DHCP message: {0}")]
    Malformed(#[from] dhcproto::error::DecodeError),
    /// No magic cookie: a plain BOOTP message, which parc does not serve.
    #[error("not a DHCP message (no magic cookie)")]
    NoCookie,
    /// Well-formed enough to parse, but refused because the decoder would mishandle it.
    #[error("DHCP message refused: {reason}")]
    Refused {
        /// Why.
        reason: &'static str,
    },
    /// dhcproto could not encode the message.
    #[error("cannot encode DHCP message: {0}")]
    Encode(#[from] dhcproto::error::EncodeError),
}

/// Offset of `hlen` in the BOOTP header.
const HLEN_OFFSET: usize = 2;
/// Size of the `chaddr` field.
const CHADDR_LEN: u8 = 16;

/// Decodes one datagram.
///
/// dhcproto (0.12 to 0.14) panics on a few malformed inputs (found by `pxe/fuzz`): option 94
/// whose length is not 3 and a handful of others trip its debug assertions or subtract below
/// zero, and a hardware address length above 16 makes `Message::chaddr` index out of bounds.
/// Those are refused here before dhcproto sees them, and dhcproto runs under `catch_unwind` in case of
/// others: a packet from the network must never take the server down.
pub fn decode(buf: &[u8]) -> Result<Message, WireError> {
    if buf.len() < BOOTP_HEADER_LEN + 4 || buf[BOOTP_HEADER_LEN..BOOTP_HEADER_LEN + 4] != MAGIC_COOKIE {
        return Err(WireError::NoCookie);
    }
    if buf[HLEN_OFFSET] > CHADDR_LEN {
        return Err(WireError::Refused { reason: "hardware address longer than 16 bytes" });
    }
    check_option_lengths(&buf[BOOTP_HEADER_LEN + 4..])?;
    match std::panic::catch_unwind(|| Message::from_bytes(buf)) {
        Ok(r) => Ok(r?),
        Err(_) => Err(WireError::Refused { reason: "decoder panicked" }),
    }
}

/// Refuses options whose length dhcproto does not check before trusting it.
fn check_option_lengths(mut opts: &[u8]) -> Result<(), WireError> {
    let code = |c: OptionCode| u8::from(c);
    while let Some((&c, rest)) = opts.split_first() {
        if c == code(OptionCode::Pad) {
            opts = rest;
            continue;
        }
        if c == code(OptionCode::End) {
            break;
        }
        let Some((&len, rest)) = rest.split_first() else { break };
        let ok = match OptionCode::from(c) {
            OptionCode::ClientNetworkInterface => len == 3,
            OptionCode::RapidCommit => len == 0,
            OptionCode::ClientFQDN => len >= 3,
            OptionCode::BulkLeaseQueryStatusCode => len >= 1,
            OptionCode::BulkLeaseQueryBaseTime
            | OptionCode::BulkLeasQueryStartTimeOfState
            | OptionCode::BulkLeaseQueryQueryStartTime
            | OptionCode::BulkLeaseQueryQueryEndTime => len == 4,
            _ => true,
        };
        if !ok {
            return Err(WireError::Refused { reason: "option with an impossible length" });
        }
        opts = rest.get(usize::from(len)..).unwrap_or_default();
    }
    Ok(())
}

/// Encodes a message with options in canonical order.
pub fn encode(msg: &Message) -> Result<Vec<u8>, WireError> {
    let raw = msg.to_vec()?;
    Ok(canonical_option_order(&raw))
}

fn rank(code: u8) -> (u8, u8) {
    match OptionCode::from(code) {
        OptionCode::MessageType => (0, 0),
        OptionCode::ServerIdentifier => (1, 0),
        _ => (2, code),
    }
}

/// Reorders the options of an encoded message (see the module documentation). Input that does
/// not look like an encoded DHCP message is returned unchanged.
pub fn canonical_option_order(raw: &[u8]) -> Vec<u8> {
    let start = BOOTP_HEADER_LEN + 4;
    if raw.len() < start || raw[BOOTP_HEADER_LEN..start] != MAGIC_COOKIE {
        return raw.to_vec();
    }
    let mut opts: Vec<&[u8]> = Vec::new();
    let mut i = start;
    let mut tail = &raw[raw.len()..];
    while i < raw.len() {
        match raw[i] {
            0 => i += 1,
            255 => {
                tail = &raw[i + 1..];
                break;
            }
            _ => {
                let Some(&len) = raw.get(i + 1) else {
                    return raw.to_vec();
                };
                let end = i + 2 + usize::from(len);
                if end > raw.len() {
                    return raw.to_vec();
                }
                opts.push(&raw[i..end]);
                i = end;
            }
        }
    }
    // Stable: a long option split into several pieces (RFC 3396) keeps its pieces' order.
    opts.sort_by_key(|o| rank(o[0]));
    let mut out = raw[..start].to_vec();
    for o in opts {
        out.extend_from_slice(o);
    }
    out.push(255);
    out.extend_from_slice(tail);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use dhcproto::v4::{DhcpOption, MessageType};
    use std::net::Ipv4Addr;

    #[test]
    fn message_type_then_server_id_then_by_code() {
        let mut m = Message::default();
        m.opts_mut().insert(DhcpOption::ClassIdentifier(b"PXEClient".to_vec()));
        m.opts_mut().insert(DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 0, 0, 1)));
        m.opts_mut().insert(DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)));
        m.opts_mut().insert(DhcpOption::MessageType(MessageType::Offer));
        let out = encode(&m).unwrap();
        let opts = &out[240..];
        assert_eq!(&opts[..3], &[53, 1, 2]);
        assert_eq!(opts[3], 54);
        assert_eq!(opts[9], 1);
        assert_eq!(opts[15], 60);
        assert_eq!(*opts.last().unwrap(), 255);
        assert_eq!(encode(&m).unwrap(), out, "deterministic");
        assert_eq!(decode(&out).unwrap().opts().msg_type(), Some(MessageType::Offer));
    }

    #[test]
    fn malformed_input_is_an_error() {
        assert!(decode(&[]).is_err());
        assert!(decode(&[1; 239]).is_err());
        let mut m = Message::default().to_vec().unwrap();
        m[BOOTP_HEADER_LEN] = 0;
        assert!(matches!(decode(&m), Err(WireError::NoCookie)));
        // An option whose length runs past the end.
        let mut m = Message::default().to_vec().unwrap();
        m.truncate(240);
        m.extend_from_slice(&[53, 1, 1, 60, 200, b'x']);
        let _ = decode(&m);
        assert_eq!(canonical_option_order(&m), m);
    }

    #[test]
    fn inputs_that_panic_dhcproto_are_refused() {
        let base = Message::default().to_vec().unwrap();
        let with = |opts: &[u8]| {
            let mut m = base[..240].to_vec();
            m.extend_from_slice(opts);
            m
        };
        for opts in [
            &[94u8, 2, 1, 2, 255][..],
            &[94, 4, 1, 2, 3, 4, 255],
            &[80, 1, 0, 255],
            &[81, 0, 255],
            &[151, 0, 255],
            &[152, 2, 0, 0, 255],
        ] {
            assert!(matches!(decode(&with(opts)), Err(WireError::Refused { .. })), "{opts:?}");
        }
        assert!(decode(&with(&[94, 3, 1, 2, 1, 255])).is_ok());
        let mut long_hw = with(&[53, 1, 1, 255]);
        long_hw[HLEN_OFFSET] = 17;
        assert!(matches!(decode(&long_hw), Err(WireError::Refused { .. })));
    }
}

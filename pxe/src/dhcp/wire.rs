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
    /// dhcproto could not encode the message.
    #[error("cannot encode DHCP message: {0}")]
    Encode(#[from] dhcproto::error::EncodeError),
}

/// Decodes one datagram.
pub fn decode(buf: &[u8]) -> Result<Message, WireError> {
    if buf.len() < BOOTP_HEADER_LEN + 4
        || buf[BOOTP_HEADER_LEN..BOOTP_HEADER_LEN + 4] != MAGIC_COOKIE
    {
        return Err(WireError::NoCookie);
    }
    Ok(Message::from_bytes(buf)?)
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
        m.opts_mut()
            .insert(DhcpOption::ClassIdentifier(b"PXEClient".to_vec()));
        m.opts_mut()
            .insert(DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 0, 0, 1)));
        m.opts_mut()
            .insert(DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)));
        m.opts_mut()
            .insert(DhcpOption::MessageType(MessageType::Offer));
        let out = encode(&m).unwrap();
        let opts = &out[240..];
        assert_eq!(&opts[..3], &[53, 1, 2]);
        assert_eq!(opts[3], 54);
        assert_eq!(opts[9], 1);
        assert_eq!(opts[15], 60);
        assert_eq!(*opts.last().unwrap(), 255);
        assert_eq!(encode(&m).unwrap(), out, "deterministic");
        assert_eq!(
            decode(&out).unwrap().opts().msg_type(),
            Some(MessageType::Offer)
        );
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
}

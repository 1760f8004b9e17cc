//! TFTP wire format (RFC 1350, with the option extension of RFC 2347).
//!
//! Parsing never panics: every malformed input becomes a [`PacketError`].

use std::fmt;

/// Requests longer than this are refused. RFC 2347 limits requests to 512 bytes; real clients
/// stay far below, so twice the ethernet MTU leaves room for odd ones without inviting abuse.
pub const MAX_REQUEST_LEN: usize = 1500;
/// At most this many options are read from one request.
pub const MAX_OPTIONS: usize = 16;

/// TFTP opcodes (RFC 1350 section 5, RFC 2347).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum Opcode {
    /// Read request.
    Rrq = 1,
    /// Write request.
    Wrq = 2,
    /// Data block.
    Data = 3,
    /// Acknowledgement.
    Ack = 4,
    /// Error.
    Error = 5,
    /// Option acknowledgement (RFC 2347).
    Oack = 6,
}

impl Opcode {
    /// The opcode for a wire value, if it names one.
    pub fn from_u16(v: u16) -> Option<Self> {
        Some(match v {
            1 => Self::Rrq,
            2 => Self::Wrq,
            3 => Self::Data,
            4 => Self::Ack,
            5 => Self::Error,
            6 => Self::Oack,
            _ => return None,
        })
    }
}

/// TFTP error codes (RFC 1350 appendix, RFC 2347).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum ErrorCode {
    /// Not defined, see the message.
    NotDefined = 0,
    /// File not found.
    FileNotFound = 1,
    /// Access violation.
    AccessViolation = 2,
    /// Disk full or allocation exceeded.
    DiskFull = 3,
    /// Illegal TFTP operation.
    IllegalOperation = 4,
    /// Unknown transfer ID.
    UnknownTransferId = 5,
    /// File already exists.
    FileExists = 6,
    /// No such user.
    NoSuchUser = 7,
    /// Option negotiation refused (RFC 2347).
    OptionNegotiation = 8,
}

impl ErrorCode {
    /// The error code for a wire value; unknown values read as [`ErrorCode::NotDefined`].
    pub fn from_u16(v: u16) -> Self {
        match v {
            1 => Self::FileNotFound,
            2 => Self::AccessViolation,
            3 => Self::DiskFull,
            4 => Self::IllegalOperation,
            5 => Self::UnknownTransferId,
            6 => Self::FileExists,
            7 => Self::NoSuchUser,
            8 => Self::OptionNegotiation,
            _ => Self::NotDefined,
        }
    }
}

/// Transfer mode of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Bytes as they are.
    Octet,
    /// Text with CR LF line ends (RFC 764's NVT ASCII).
    Netascii,
}

/// A read or write request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The file name as sent (not yet resolved against any root).
    pub filename: String,
    /// The transfer mode.
    pub mode: Mode,
    /// Options in the order sent, names lower-cased (RFC 2347 names are case-insensitive).
    pub options: Vec<(String, String)>,
}

/// A parsed TFTP packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet<'a> {
    /// Read request.
    Rrq(Request),
    /// Write request.
    Wrq(Request),
    /// A data block.
    Data {
        /// Block number (wraps at 65535).
        block: u16,
        /// Payload.
        data: &'a [u8],
    },
    /// Acknowledgement of a block.
    Ack {
        /// Block number.
        block: u16,
    },
    /// An error.
    Error {
        /// Error code.
        code: ErrorCode,
        /// Message (lossily decoded).
        message: String,
    },
    /// Option acknowledgement.
    Oack {
        /// Acknowledged options.
        options: Vec<(String, String)>,
    },
}

/// Why a packet could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PacketError {
    /// Fewer bytes than the packet type needs.
    #[error("packet truncated: {len} bytes")]
    Truncated {
        /// Bytes received.
        len: usize,
    },
    /// More bytes than any legitimate request needs.
    #[error("request of {len} bytes exceeds the limit of {MAX_REQUEST_LEN}")]
    TooLong {
        /// Bytes received.
        len: usize,
    },
    /// An opcode that TFTP does not define.
    #[error("unknown opcode {opcode}")]
    UnknownOpcode {
        /// The opcode read.
        opcode: u16,
    },
    /// A string field is not terminated by a NUL byte.
    #[error("{field} is not NUL-terminated")]
    MissingNul {
        /// Which field.
        field: &'static str,
    },
    /// A string field is not valid UTF-8 (netascii is ASCII).
    #[error("{field} is not valid text")]
    NotText {
        /// Which field.
        field: &'static str,
    },
    /// The file name is empty.
    #[error("empty file name")]
    EmptyFilename,
    /// A transfer mode other than octet and netascii (such as the obsolete "mail").
    #[error("unsupported transfer mode {mode:?}")]
    UnsupportedMode {
        /// The mode sent.
        mode: String,
    },
    /// An option name without a value.
    #[error("option {name:?} has no value")]
    OptionWithoutValue {
        /// The option name.
        name: String,
    },
    /// More options than [`MAX_OPTIONS`].
    #[error("more than {MAX_OPTIONS} options")]
    TooManyOptions,
}

impl<'a> Packet<'a> {
    /// Parses one datagram.
    pub fn parse(buf: &'a [u8]) -> Result<Self, PacketError> {
        if buf.len() < 2 {
            return Err(PacketError::Truncated { len: buf.len() });
        }
        let raw = u16::from_be_bytes([buf[0], buf[1]]);
        let opcode = Opcode::from_u16(raw).ok_or(PacketError::UnknownOpcode { opcode: raw })?;
        let body = &buf[2..];
        match opcode {
            Opcode::Rrq | Opcode::Wrq => {
                if buf.len() > MAX_REQUEST_LEN {
                    return Err(PacketError::TooLong { len: buf.len() });
                }
                let req = parse_request(body)?;
                Ok(if opcode == Opcode::Rrq { Packet::Rrq(req) } else { Packet::Wrq(req) })
            }
            Opcode::Data => {
                let block = read_u16(body, buf.len())?;
                Ok(Packet::Data { block, data: &body[2..] })
            }
            Opcode::Ack => {
                // Some clients pad ACKs; trailing bytes are ignored as tftpd-hpa does.
                let block = read_u16(body, buf.len())?;
                Ok(Packet::Ack { block })
            }
            Opcode::Error => {
                let code = ErrorCode::from_u16(read_u16(body, buf.len())?);
                // A missing NUL after the message is tolerated: the message is informational.
                let msg = &body[2..];
                let msg = msg.split(|&b| b == 0).next().unwrap_or_default();
                Ok(Packet::Error { code, message: String::from_utf8_lossy(msg).into_owned() })
            }
            Opcode::Oack => {
                let mut fields = Fields { rest: body };
                Ok(Packet::Oack { options: parse_options(&mut fields)? })
            }
        }
    }
}

fn read_u16(body: &[u8], len: usize) -> Result<u16, PacketError> {
    match body {
        [a, b, ..] => Ok(u16::from_be_bytes([*a, *b])),
        _ => Err(PacketError::Truncated { len }),
    }
}

struct Fields<'a> {
    rest: &'a [u8],
}

impl<'a> Fields<'a> {
    fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    fn next(&mut self, field: &'static str) -> Result<&'a str, PacketError> {
        let end = self.rest.iter().position(|&b| b == 0).ok_or(PacketError::MissingNul { field })?;
        let (s, rest) = (&self.rest[..end], &self.rest[end + 1..]);
        self.rest = rest;
        std::str::from_utf8(s).map_err(|_| PacketError::NotText { field })
    }
}

fn parse_request(body: &[u8]) -> Result<Request, PacketError> {
    let mut fields = Fields { rest: body };
    let filename = fields.next("file name")?;
    if filename.is_empty() {
        return Err(PacketError::EmptyFilename);
    }
    let mode = fields.next("mode")?;
    let mode = if mode.eq_ignore_ascii_case("octet") {
        Mode::Octet
    } else if mode.eq_ignore_ascii_case("netascii") {
        Mode::Netascii
    } else {
        return Err(PacketError::UnsupportedMode { mode: mode.to_owned() });
    };
    let options = parse_options(&mut fields)?;
    Ok(Request { filename: filename.to_owned(), mode, options })
}

fn parse_options(fields: &mut Fields<'_>) -> Result<Vec<(String, String)>, PacketError> {
    let mut options = Vec::new();
    while !fields.is_empty() {
        // Some clients pad requests with NULs; an empty name ends the list.
        let name = fields.next("option name")?;
        if name.is_empty() {
            break;
        }
        let value = fields.next("option value").map_err(|e| match e {
            PacketError::MissingNul { .. } => PacketError::OptionWithoutValue { name: name.to_owned() },
            other => other,
        })?;
        if options.len() == MAX_OPTIONS {
            return Err(PacketError::TooManyOptions);
        }
        options.push((name.to_ascii_lowercase(), value.to_owned()));
    }
    Ok(options)
}

/// Appends a DATA packet header for `block` to `out`; the caller appends the payload.
pub fn encode_data_header(block: u16, out: &mut Vec<u8>) {
    out.extend_from_slice(&(Opcode::Data as u16).to_be_bytes());
    out.extend_from_slice(&block.to_be_bytes());
}

/// Encodes an ACK packet.
pub fn encode_ack(block: u16) -> Vec<u8> {
    let mut out = Vec::with_capacity(4);
    out.extend_from_slice(&(Opcode::Ack as u16).to_be_bytes());
    out.extend_from_slice(&block.to_be_bytes());
    out
}

/// Encodes an ERROR packet.
pub fn encode_error(code: ErrorCode, message: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + message.len());
    out.extend_from_slice(&(Opcode::Error as u16).to_be_bytes());
    out.extend_from_slice(&(code as u16).to_be_bytes());
    out.extend(message.bytes().filter(|&b| b != 0));
    out.push(0);
    out
}

/// Encodes an OACK packet.
pub fn encode_oack(options: &[(String, String)]) -> Vec<u8> {
    let mut out = (Opcode::Oack as u16).to_be_bytes().to_vec();
    for (name, value) in options {
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        out.extend_from_slice(value.as_bytes());
        out.push(0);
    }
    out
}

/// Encodes a read or write request (used by tests and tools acting as a client).
pub fn encode_request(opcode: Opcode, req: &Request) -> Vec<u8> {
    let mut out = (opcode as u16).to_be_bytes().to_vec();
    out.extend_from_slice(req.filename.as_bytes());
    out.push(0);
    out.extend_from_slice(match req.mode {
        Mode::Octet => b"octet",
        Mode::Netascii => b"netascii",
    });
    out.push(0);
    for (name, value) in &req.options {
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        out.extend_from_slice(value.as_bytes());
        out.push(0);
    }
    out
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Octet => "octet",
            Mode::Netascii => "netascii",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rrq(parts: &[&str]) -> Vec<u8> {
        let mut v = vec![0, 1];
        for p in parts {
            v.extend_from_slice(p.as_bytes());
            v.push(0);
        }
        v
    }

    #[test]
    fn parses_rrq_with_options_case_insensitively() {
        let buf = rrq(&["ipxe.efi", "OCTET", "tsize", "0", "BlkSize", "1468", "windowsize", "4"]);
        let Packet::Rrq(req) = Packet::parse(&buf).unwrap() else { panic!("not an RRQ") };
        assert_eq!(req.filename, "ipxe.efi");
        assert_eq!(req.mode, Mode::Octet);
        assert_eq!(
            req.options,
            vec![("tsize".into(), "0".into()), ("blksize".into(), "1468".into()), ("windowsize".into(), "4".into())]
        );
        assert_eq!(
            encode_request(Opcode::Rrq, &req),
            rrq(&["ipxe.efi", "octet", "tsize", "0", "blksize", "1468", "windowsize", "4"])
        );
    }

    #[test]
    fn parses_wrq_data_ack_error_oack() {
        assert!(matches!(
            Packet::parse(&rrq(&["f", "netascii"])),
            Ok(Packet::Rrq(Request { mode: Mode::Netascii, .. }))
        ));
        let mut w = rrq(&["f", "octet"]);
        w[1] = 2;
        assert!(matches!(Packet::parse(&w), Ok(Packet::Wrq(_))));
        assert_eq!(Packet::parse(&[0, 3, 1, 2, 9, 9]), Ok(Packet::Data { block: 0x102, data: &[9, 9] }));
        assert_eq!(Packet::parse(&[0, 4, 0xff, 0xff]), Ok(Packet::Ack { block: 0xffff }));
        assert_eq!(Packet::parse(&[0, 4, 0, 7, 0, 0]), Ok(Packet::Ack { block: 7 }));
        assert_eq!(
            Packet::parse(&encode_error(ErrorCode::FileNotFound, "nope")),
            Ok(Packet::Error { code: ErrorCode::FileNotFound, message: "nope".into() })
        );
        // Unknown error codes and a missing final NUL are tolerated.
        assert_eq!(
            Packet::parse(&[0, 5, 0, 99, b'x']),
            Ok(Packet::Error { code: ErrorCode::NotDefined, message: "x".into() })
        );
        let oack = encode_oack(&[("blksize".into(), "1468".into())]);
        assert_eq!(Packet::parse(&oack), Ok(Packet::Oack { options: vec![("blksize".into(), "1468".into())] }));
    }

    #[test]
    fn malformed_packets_are_errors_not_panics() {
        let cases: Vec<(Vec<u8>, PacketError)> = vec![
            (vec![], PacketError::Truncated { len: 0 }),
            (vec![0], PacketError::Truncated { len: 1 }),
            (vec![0, 4, 1], PacketError::Truncated { len: 3 }),
            (vec![0, 3], PacketError::Truncated { len: 2 }),
            (vec![0, 5, 0], PacketError::Truncated { len: 3 }),
            (vec![0, 0], PacketError::UnknownOpcode { opcode: 0 }),
            (vec![0, 7, 0, 0], PacketError::UnknownOpcode { opcode: 7 }),
            (vec![0xff, 0xff], PacketError::UnknownOpcode { opcode: 0xffff }),
            (vec![0, 1], PacketError::MissingNul { field: "file name" }),
            (vec![0, 1, b'a'], PacketError::MissingNul { field: "file name" }),
            (vec![0, 1, b'a', 0, b'o', b'c'], PacketError::MissingNul { field: "mode" }),
            (rrq(&["", "octet"]), PacketError::EmptyFilename),
            (rrq(&["a", "mail"]), PacketError::UnsupportedMode { mode: "mail".into() }),
            (rrq(&["a", ""]), PacketError::UnsupportedMode { mode: "".into() }),
            (
                {
                    let mut v = rrq(&["a", "octet"]);
                    v.extend_from_slice(b"blksize");
                    v
                },
                PacketError::MissingNul { field: "option name" },
            ),
            (
                {
                    let mut v = rrq(&["a", "octet", "blksize"]);
                    v.extend_from_slice(b"14");
                    v
                },
                PacketError::OptionWithoutValue { name: "blksize".into() },
            ),
            (vec![0, 1, 0xff, 0xfe, 0, b'o', 0], PacketError::NotText { field: "file name" }),
            (
                {
                    let mut v = rrq(&["a", "octet"]);
                    v.resize(MAX_REQUEST_LEN + 1, b'x');
                    v
                },
                PacketError::TooLong { len: MAX_REQUEST_LEN + 1 },
            ),
            (
                rrq(&[
                    "a", "octet", "a", "1", "b", "1", "c", "1", "d", "1", "e", "1", "f", "1", "g", "1", "h", "1", "i",
                    "1", "j", "1", "k", "1", "l", "1", "m", "1", "n", "1", "o", "1", "p", "1", "q", "1",
                ]),
                PacketError::TooManyOptions,
            ),
        ];
        for (buf, want) in cases {
            assert_eq!(Packet::parse(&buf), Err(want), "input {buf:?}");
        }
    }

    #[test]
    fn trailing_nul_padding_after_options_is_accepted() {
        let mut v = rrq(&["a", "octet", "tsize", "0"]);
        v.extend_from_slice(&[0, 0, 0]);
        let Ok(Packet::Rrq(req)) = Packet::parse(&v) else { panic!() };
        assert_eq!(req.options.len(), 1);
    }

    #[test]
    fn every_prefix_of_a_valid_request_parses_or_errors() {
        let full = rrq(&["dir/ipxe.efi", "octet", "tsize", "0", "blksize", "1468", "windowsize", "16"]);
        for n in 0..=full.len() {
            let _ = Packet::parse(&full[..n]);
        }
        // And every single-byte corruption.
        for i in 0..full.len() {
            for b in [0u8, 1, 0x7f, 0xff] {
                let mut v = full.clone();
                v[i] = b;
                let _ = Packet::parse(&v);
            }
        }
    }

    #[test]
    fn error_encoding_strips_nul_from_message() {
        assert_eq!(encode_error(ErrorCode::NotDefined, "a\0b"), vec![0, 5, 0, 0, b'a', b'b', 0]);
    }
}

//! Option negotiation: RFC 2347 (framework), 2348 (blksize), 2349 (timeout, tsize), 7440
//! (windowsize).
//!
//! Policy, following tftpd-hpa where the RFCs leave a choice: unknown options are ignored; a
//! known option with an unparseable or out-of-range value is ignored (left out of the OACK, so
//! the client falls back to the RFC 1350 default); a `blksize` or `windowsize` above what the
//! server allows is lowered to the server's limit, as RFC 2348 and 7440 permit.

use std::time::Duration;

use super::packet::Mode;

/// Option names.
pub mod name {
    /// RFC 2348 block size.
    pub const BLKSIZE: &str = "blksize";
    /// RFC 2349 retransmission timeout in seconds.
    pub const TIMEOUT: &str = "timeout";
    /// RFC 2349 transfer size.
    pub const TSIZE: &str = "tsize";
    /// RFC 7440 window size.
    pub const WINDOWSIZE: &str = "windowsize";
}

/// RFC 1350 block size, used unless `blksize` is negotiated.
pub const DEFAULT_BLKSIZE: u16 = 512;
/// RFC 2348 bounds.
pub const MIN_BLKSIZE: u16 = 8;
/// RFC 2348 bounds.
pub const MAX_BLKSIZE: u16 = 65464;
/// The largest block that fits an ethernet frame without IP fragmentation: 1500 - 20 (IPv4) -
/// 8 (UDP) - 4 (TFTP header).
pub const ETHERNET_BLKSIZE: u16 = 1468;
/// RFC 7440 bounds.
pub const MAX_WINDOWSIZE: u16 = 65535;
/// RFC 2349 bounds (seconds).
pub const MAX_TIMEOUT_SECS: u64 = 255;

/// Block size that fits a path MTU without IP fragmentation.
pub fn blksize_for_mtu(mtu: u32) -> u16 {
    let payload = mtu.saturating_sub(20 + 8 + 4);
    payload.clamp(u32::from(MIN_BLKSIZE), u32::from(MAX_BLKSIZE)) as u16
}

/// What the server settled on for one transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// Bytes per DATA packet.
    pub blksize: u16,
    /// DATA packets sent before waiting for an ACK.
    pub windowsize: u16,
    /// Retransmission timeout the client asked for, if any.
    pub timeout: Option<Duration>,
    /// Options to acknowledge, in the client's order; empty means no OACK is sent.
    pub oack: Vec<(String, String)>,
}

/// The server's side of a negotiation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest block for this transfer.
    pub max_blksize: u16,
    /// Largest window in blocks.
    pub max_windowsize: u16,
    /// Largest window in bytes. A window arrives at the client as one burst: it must fit the
    /// client's socket receive buffer or the tail is dropped and costs a timeout. Linux's default
    /// buffer (208 KiB) holds about 64 KiB of payload once per-packet overhead is counted, which
    /// is what atftp with `blksize 8192, windowsize 16` on loopback shows.
    pub max_window_bytes: u32,
}

/// Negotiates `requested` against the server's `limits`.
///
/// `file_size` is the size to announce for `tsize` (`None` when unknown, as for netascii where
/// the converted size is only known after reading the whole file).
pub fn negotiate(requested: &[(String, String)], mode: Mode, limits: Limits, file_size: Option<u64>) -> Negotiated {
    let Limits { max_blksize, max_windowsize, .. } = limits;
    let mut n = Negotiated { blksize: DEFAULT_BLKSIZE, windowsize: 1, timeout: None, oack: Vec::new() };
    let mut seen = Vec::new();
    for (name, value) in requested {
        if seen.contains(&name.as_str()) {
            continue; // the first occurrence wins
        }
        seen.push(name.as_str());
        let value = value.trim();
        let acked = match name.as_str() {
            name::BLKSIZE => value.parse::<u32>().ok().filter(|&v| v >= u32::from(MIN_BLKSIZE)).map(|v| {
                // Values above 65464 are out of range but harmless: lower them like any other.
                n.blksize = v.min(u32::from(max_blksize.clamp(MIN_BLKSIZE, MAX_BLKSIZE))) as u16;
                n.blksize.to_string()
            }),
            name::WINDOWSIZE => value.parse::<u32>().ok().filter(|&v| v >= 1).map(|v| {
                n.windowsize = v.min(u32::from(max_windowsize.max(1))) as u16;
                n.windowsize.to_string()
            }),
            name::TIMEOUT => value.parse::<u64>().ok().filter(|v| (1..=MAX_TIMEOUT_SECS).contains(v)).map(|v| {
                n.timeout = Some(Duration::from_secs(v));
                v.to_string()
            }),
            // A client sends 0 in a read request; the server answers with the size.
            // An empty file's size is not announced: curl (7.88) rejects "tsize 0" in an OACK
            // as illegal, and leaving an option out is always allowed.
            name::TSIZE if mode == Mode::Octet => {
                value.parse::<u64>().ok().and(file_size).filter(|&size| size > 0).map(|size| size.to_string())
            }
            _ => None,
        };
        if let Some(v) = acked {
            n.oack.push((name.clone(), v));
        }
    }
    let by_bytes = (limits.max_window_bytes / u32::from(n.blksize)).clamp(1, u32::from(u16::MAX)) as u16;
    if n.windowsize > by_bytes {
        n.windowsize = by_bytes;
        for (name, value) in &mut n.oack {
            if name == name::WINDOWSIZE {
                *value = by_bytes.to_string();
            }
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits { max_blksize: 1468, max_windowsize: 64, max_window_bytes: 65536 };

    fn opts(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[test]
    fn ovmf_probe_gets_blksize_and_tsize() {
        let n = negotiate(
            &opts(&[("tsize", "0"), ("blksize", "1468"), ("windowsize", "4")]),
            Mode::Octet,
            LIMITS,
            Some(850528),
        );
        assert_eq!((n.blksize, n.windowsize, n.timeout), (1468, 4, None));
        assert_eq!(n.oack, opts(&[("tsize", "850528"), ("blksize", "1468"), ("windowsize", "4")]));
    }

    #[test]
    fn values_are_clamped_or_ignored() {
        type Opts = &'static [(&'static str, &'static str)];
        let cases: &[(Opts, u16, u16, Option<u64>, Opts)] = &[
            // (requested, blksize, windowsize, timeout secs, oack)
            (&[("blksize", "65464")], 1468, 1, None, &[("blksize", "1468")]),
            (&[("blksize", "99999")], 1468, 1, None, &[("blksize", "1468")]),
            (&[("blksize", "8")], 8, 1, None, &[("blksize", "8")]),
            (&[("blksize", "7")], 512, 1, None, &[]),
            (&[("blksize", "0")], 512, 1, None, &[]),
            (&[("blksize", "-1")], 512, 1, None, &[]),
            (&[("blksize", "abc")], 512, 1, None, &[]),
            (&[("blksize", "")], 512, 1, None, &[]),
            (&[("blksize", "99999999999999999999")], 512, 1, None, &[]),
            (&[("windowsize", "0")], 512, 1, None, &[]),
            (&[("windowsize", "1000")], 512, 64, None, &[("windowsize", "64")]),
            (&[("timeout", "0")], 512, 1, None, &[]),
            (&[("timeout", "256")], 512, 1, None, &[]),
            (&[("timeout", "3")], 512, 1, Some(3), &[("timeout", "3")]),
            (&[("tsize", "x")], 512, 1, None, &[]),
            (&[("multicast", "")], 512, 1, None, &[]),
            (&[("blksize", "1024"), ("blksize", "8")], 1024, 1, None, &[("blksize", "1024")]),
        ];
        for (req, blk, win, timeout, oack) in cases {
            let n = negotiate(&opts(req), Mode::Octet, LIMITS, Some(10));
            assert_eq!(n.blksize, *blk, "{req:?}");
            assert_eq!(n.windowsize, *win, "{req:?}");
            assert_eq!(n.timeout, timeout.map(Duration::from_secs), "{req:?}");
            assert_eq!(n.oack, opts(oack), "{req:?}");
        }
    }

    #[test]
    fn tsize_is_not_offered_for_netascii_or_empty_files() {
        let n = negotiate(&opts(&[("tsize", "0")]), Mode::Netascii, LIMITS, Some(10));
        assert!(n.oack.is_empty());
        let n = negotiate(&opts(&[("tsize", "0")]), Mode::Octet, LIMITS, Some(0));
        assert!(n.oack.is_empty());
    }

    #[test]
    fn window_bytes_are_capped() {
        let limits = Limits { max_blksize: 65464, ..LIMITS };
        let n = negotiate(&opts(&[("blksize", "8192"), ("windowsize", "16")]), Mode::Octet, limits, None);
        assert_eq!((n.blksize, n.windowsize), (8192, 8));
        assert_eq!(n.oack, opts(&[("blksize", "8192"), ("windowsize", "8")]));
        let n = negotiate(&opts(&[("windowsize", "16"), ("blksize", "65464")]), Mode::Octet, limits, None);
        assert_eq!((n.blksize, n.windowsize), (65464, 1));
        assert_eq!(n.oack, opts(&[("windowsize", "1"), ("blksize", "65464")]));
        let n = negotiate(&opts(&[("blksize", "1468"), ("windowsize", "64")]), Mode::Octet, limits, None);
        assert_eq!(n.windowsize, 44);
    }

    #[test]
    fn mtu_to_blksize() {
        assert_eq!(blksize_for_mtu(1500), 1468);
        assert_eq!(blksize_for_mtu(65536), MAX_BLKSIZE);
        assert_eq!(blksize_for_mtu(9000), 8968);
        assert_eq!(blksize_for_mtu(0), MIN_BLKSIZE);
    }
}

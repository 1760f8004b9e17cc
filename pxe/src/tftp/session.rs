//! One read transfer as a pure state machine: packets in, packets out, time passed in.
//!
//! The server owns the socket and the clock; it feeds [`Session::on_packet`] and
//! [`Session::on_timeout`], sends whatever [`Session::poll_transmit`] yields, and sleeps until
//! [`Session::deadline`]. Nothing here blocks except reads from the file source.
//!
//! Windows follow RFC 7440: the server sends `windowsize` blocks, then waits for an ACK. An ACK
//! for the last block of the window opens the next window; an ACK for an earlier block means the
//! client lost the one after it, so the window restarts from there. A duplicate ACK for an
//! already acknowledged block is ignored (the "Sorcerer's Apprentice" fix of RFC 1123), and
//! only a timeout retransmits. Block numbers wrap from 65535 to 0, as tftp-hpa, atftp, curl, iPXE
//! and edk2 expect.
//!
//! Retransmission timeout: adapts to the measured round trip (four times the smoothed RTT,
//! at least [`Config::min_timeout`]), doubling on each consecutive timeout, and never longer
//! than [`Config::timeout`] nor than a `timeout` the client negotiated. A negotiated timeout is
//! acknowledged and bounds the wait, but is not waited out in full: curl asks for up to 255 s,
//! and honouring that literally made one lost packet in a hundred stretch a 1 MiB download past
//! two minutes. A client sees at worst a duplicate block, which RFC 1350 clients ignore.
//! So a lost packet on a LAN costs a fraction of a second, not the seconds peers stall for.
//!
//! A duplicate ACK proves the client is alive: it resets the retry count (without resending),
//! so a slow client is not abandoned while it still answers.

use std::collections::VecDeque;
use std::io::{self, Read};
use std::time::{Duration, Instant};

use super::options::{self, Negotiated};
use super::packet::{self, ErrorCode, Mode, Packet};

/// Limits and timing for transfers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Largest block the server agrees to. The server lowers it per transfer to what the path MTU
    /// carries without fragmentation ([`options::blksize_for_mtu`]), or to
    /// [`options::ETHERNET_BLKSIZE`] when the path MTU is unknown.
    pub max_blksize: u16,
    /// Largest window the server agrees to (RFC 7440).
    pub max_windowsize: u16,
    /// Largest window in bytes (see [`options::Limits::max_window_bytes`]).
    pub max_window_bytes: u32,
    /// Initial and largest retransmission timeout when the client negotiates none.
    pub timeout: Duration,
    /// Smallest adaptive retransmission timeout.
    pub min_timeout: Duration,
    /// Consecutive timeouts after which the transfer is abandoned.
    pub max_retries: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_blksize: options::MAX_BLKSIZE,
            max_windowsize: 64,
            max_window_bytes: 64 * 1024,
            timeout: Duration::from_secs(1),
            min_timeout: Duration::from_millis(200),
            max_retries: 6,
        }
    }
}

/// How a transfer ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// Every block was acknowledged.
    Completed {
        /// Bytes delivered (after netascii conversion).
        bytes: u64,
        /// DATA blocks delivered.
        blocks: u64,
    },
    /// The client sent an ERROR, typically after an option probe (OVMF asks for `tsize` and then
    /// aborts with code 8 before the real download).
    ClientError {
        /// Code sent.
        code: ErrorCode,
        /// Message sent.
        message: String,
        /// Bytes acknowledged before it.
        bytes_acked: u64,
    },
    /// The client stopped answering.
    TimedOut {
        /// Bytes acknowledged before it went silent.
        bytes_acked: u64,
        /// Retransmissions attempted.
        retries: u32,
    },
    /// The file could not be read; an ERROR was sent.
    ReadFailed {
        /// The I/O error's description.
        error: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    Nothing,
    Oack,
    /// Window packets from this index on.
    Window(usize),
    Error,
}

#[derive(Debug)]
enum State {
    /// OACK sent, waiting for ACK 0.
    Negotiating,
    Transferring,
    Done(Outcome),
}

/// One read transfer.
#[derive(Debug)]
pub struct Session<R> {
    source: R,
    cfg: Config,
    negotiated: Negotiated,
    state: State,
    pending: Pending,
    oack: Vec<u8>,
    error: Vec<u8>,
    /// Encoded DATA packets for blocks `base..base + window.len()`.
    window: VecDeque<Vec<u8>>,
    free: Vec<Vec<u8>>,
    /// Absolute number (from 1, never wrapping) of the first unacknowledged block.
    base: u64,
    /// The last block has been read into the window.
    eof: bool,
    bytes_acked: u64,
    rto: Duration,
    srtt: Option<Duration>,
    sent_at: Instant,
    retransmitted: bool,
    retries: u32,
    timeouts: u32,
    restarts: u32,
    deadline: Option<Instant>,
}

impl<R: Read> Session<R> {
    /// Starts a transfer of `source` for a read request.
    ///
    /// `path_max_blksize` is the largest block that this transfer's path carries unfragmented
    /// (`None` if unknown); `file_size` is announced for `tsize` (`None` for netascii).
    pub fn start(
        request: &packet::Request,
        source: R,
        file_size: Option<u64>,
        cfg: &Config,
        path_max_blksize: Option<u16>,
        now: Instant,
    ) -> Self {
        let max_blksize = cfg.max_blksize.min(path_max_blksize.unwrap_or(options::ETHERNET_BLKSIZE));
        let size = if request.mode == Mode::Octet { file_size } else { None };
        let limits =
            options::Limits { max_blksize, max_windowsize: cfg.max_windowsize, max_window_bytes: cfg.max_window_bytes };
        let negotiated = options::negotiate(&request.options, request.mode, limits, size);
        let mut s = Session {
            source,
            cfg: cfg.clone(),
            rto: max_rto(cfg, &negotiated),
            oack: packet::encode_oack(&negotiated.oack),
            negotiated,
            state: State::Negotiating,
            pending: Pending::Nothing,
            error: Vec::new(),
            window: VecDeque::new(),
            free: Vec::new(),
            base: 1,
            eof: false,
            bytes_acked: 0,
            srtt: None,
            sent_at: now,
            retransmitted: false,
            retries: 0,
            timeouts: 0,
            restarts: 0,
            deadline: None,
        };
        if s.negotiated.oack.is_empty() {
            s.state = State::Transferring;
            s.fill_and_send(now);
        } else {
            s.pending = Pending::Oack;
            s.arm(now);
        }
        s
    }

    /// The options in force.
    pub fn negotiated(&self) -> &Negotiated {
        &self.negotiated
    }

    /// Retransmission timeouts that fired, and windows restarted because the client
    /// acknowledged only part of one (a lost block), for the log.
    pub fn recoveries(&self) -> (u32, u32) {
        (self.timeouts, self.restarts)
    }

    /// The next packet to send, if any. Call until it returns `None` after every event.
    pub fn poll_transmit(&mut self) -> Option<&[u8]> {
        match self.pending {
            Pending::Nothing => None,
            Pending::Oack => {
                self.pending = Pending::Nothing;
                Some(&self.oack)
            }
            Pending::Error => {
                self.pending = Pending::Nothing;
                Some(&self.error)
            }
            Pending::Window(i) => match self.window.get(i) {
                Some(p) => {
                    self.pending = Pending::Window(i + 1);
                    Some(p)
                }
                None => {
                    self.pending = Pending::Nothing;
                    None
                }
            },
        }
    }

    /// When [`Session::on_timeout`] should be called next; `None` once the transfer is over.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// How the transfer ended, once it has.
    pub fn outcome(&self) -> Option<&Outcome> {
        match &self.state {
            State::Done(o) => Some(o),
            _ => None,
        }
    }

    /// Feeds a datagram received from the client's transfer ID.
    ///
    /// Malformed and unexpected packets are ignored: on a shared network a stray or forged
    /// packet must not end a transfer that is going well.
    pub fn on_packet(&mut self, buf: &[u8], now: Instant) {
        match (Packet::parse(buf), &self.state) {
            (_, State::Done(_)) => {}
            (Ok(Packet::Error { code, message }), _) => {
                self.finish(Outcome::ClientError { code, message, bytes_acked: self.bytes_acked });
            }
            (Ok(Packet::Ack { block: 0 }), State::Negotiating) => {
                self.state = State::Transferring;
                self.sample_rtt(now);
                self.retries = 0;
                self.fill_and_send(now);
            }
            (Ok(Packet::Ack { block }), State::Transferring) => self.on_ack(block, now),
            _ => {}
        }
    }

    /// Tells the session that time has passed; retransmits or gives up if the deadline is past.
    pub fn on_timeout(&mut self, now: Instant) {
        match self.deadline {
            Some(d) if now >= d => {}
            _ => return,
        }
        self.retries += 1;
        self.timeouts += 1;
        if self.retries > self.cfg.max_retries {
            self.finish(Outcome::TimedOut { bytes_acked: self.bytes_acked, retries: self.retries - 1 });
            return;
        }
        self.rto = (self.rto * 2).min(max_rto(&self.cfg, &self.negotiated));
        self.retransmitted = true;
        self.pending = match self.state {
            State::Negotiating => Pending::Oack,
            _ => Pending::Window(0),
        };
        self.arm(now);
    }

    fn on_ack(&mut self, block: u16, now: Instant) {
        let last_acked = self.base - 1;
        let advance = u64::from(block.wrapping_sub(last_acked as u16));
        if advance == 0 {
            self.retries = 0; // a duplicate: the client is alive, but nothing is resent
            return;
        }
        if advance > self.window.len() as u64 {
            return; // for a block never sent
        }
        if advance < self.window.len() as u64 {
            self.restarts += 1; // the client asks for the window again from a lost block
        }
        for _ in 0..advance {
            if let Some(p) = self.window.pop_front() {
                self.bytes_acked += (p.len() - 4) as u64;
                self.free.push(p);
            }
        }
        self.base += advance;
        self.sample_rtt(now);
        self.retries = 0;
        if self.window.is_empty() && self.eof {
            let blocks = self.base - 1;
            self.finish(Outcome::Completed { bytes: self.bytes_acked, blocks });
        } else {
            self.fill_and_send(now);
        }
    }

    fn sample_rtt(&mut self, now: Instant) {
        // Karn: a round trip that included a retransmission says nothing about the path.
        if self.retransmitted {
            self.retransmitted = false;
            return;
        }
        let sample = now.saturating_duration_since(self.sent_at);
        let srtt = match self.srtt {
            None => sample,
            Some(s) => (s * 7 + sample) / 8,
        };
        self.srtt = Some(srtt);
        let max = max_rto(&self.cfg, &self.negotiated);
        self.rto = (srtt * 4).max(self.cfg.min_timeout).min(max);
    }

    /// Tops the window up to `windowsize` blocks and queues all of it.
    fn fill_and_send(&mut self, now: Instant) {
        let blksize = usize::from(self.negotiated.blksize);
        while !self.eof && self.window.len() < usize::from(self.negotiated.windowsize) {
            let number = self.base + self.window.len() as u64;
            let mut p = self.free.pop().unwrap_or_default();
            p.clear();
            p.reserve(4 + blksize);
            packet::encode_data_header(number as u16, &mut p);
            p.resize(4 + blksize, 0);
            match read_full(&mut self.source, &mut p[4..]) {
                Ok(n) => {
                    p.truncate(4 + n);
                    self.eof = n < blksize;
                    self.window.push_back(p);
                }
                Err(e) => {
                    self.error = packet::encode_error(ErrorCode::NotDefined, "server could not read the file");
                    self.finish(Outcome::ReadFailed { error: e.to_string() });
                    self.pending = Pending::Error;
                    return;
                }
            }
        }
        self.pending = Pending::Window(0);
        self.retransmitted = false;
        self.arm(now);
    }

    fn arm(&mut self, now: Instant) {
        self.sent_at = now;
        self.deadline = Some(now + self.rto);
    }

    fn finish(&mut self, outcome: Outcome) {
        self.state = State::Done(outcome);
        self.pending = Pending::Nothing;
        self.deadline = None;
    }
}

/// The longest wait between retransmissions.
fn max_rto(cfg: &Config, negotiated: &Negotiated) -> Duration {
    let cap = negotiated.timeout.map_or(cfg.timeout, |t| t.min(cfg.timeout));
    cap.max(cfg.min_timeout)
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tftp::packet::{encode_ack, encode_error, Request};
    use std::io::Cursor;

    fn req(options: &[(&str, &str)]) -> Request {
        Request {
            filename: "f".into(),
            mode: Mode::Octet,
            options: options.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect(),
        }
    }

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 251) as u8).collect()
    }

    fn drain<R: Read>(s: &mut Session<R>) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(p) = s.poll_transmit() {
            out.push(p.to_vec());
        }
        out
    }

    /// A well-behaved client: acks the last block of each window. Returns the reassembled file
    /// and the number of packets received.
    fn download<R: Read>(s: &mut Session<R>, t0: Instant) -> (Vec<u8>, usize) {
        let mut file = Vec::new();
        let mut count = 0;
        let mut expected: u16 = 1;
        let mut blksize = 512;
        loop {
            let pkts = drain(s);
            assert!(!pkts.is_empty(), "session stalled: {:?}", s.outcome());
            let mut last = None;
            for p in &pkts {
                count += 1;
                match Packet::parse(p).unwrap() {
                    Packet::Oack { options } => {
                        if let Some((_, v)) = options.iter().find(|(n, _)| n == "blksize") {
                            blksize = v.parse().unwrap();
                        }
                        last = Some(0);
                    }
                    Packet::Data { block, data } => {
                        assert_eq!(block, expected);
                        expected = expected.wrapping_add(1);
                        file.extend_from_slice(data);
                        last = Some(block);
                        if data.len() < blksize {
                            s.on_packet(&encode_ack(block), t0);
                            assert!(matches!(s.outcome(), Some(Outcome::Completed { .. })));
                            assert!(s.poll_transmit().is_none());
                            return (file, count);
                        }
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
            s.on_packet(&encode_ack(last.unwrap()), t0);
        }
    }

    #[test]
    fn plain_rrq_sizes_around_block_boundaries() {
        let t0 = Instant::now();
        for len in [0, 1, 511, 512, 513, 1024, 5000] {
            let content = data(len);
            let mut s =
                Session::start(&req(&[]), Cursor::new(content.clone()), Some(len as u64), &Config::default(), None, t0);
            let (got, packets) = download(&mut s, t0);
            assert_eq!(got, content, "len {len}");
            assert_eq!(packets, len / 512 + 1, "len {len}");
            assert_eq!(s.outcome(), Some(&Outcome::Completed { bytes: len as u64, blocks: (len / 512 + 1) as u64 }));
        }
    }

    #[test]
    fn options_windows_and_rollover() {
        let t0 = Instant::now();
        // > 65535 blocks of 512 bytes: block numbers wrap to 0.
        let content = data(512 * 65536 + 100);
        for opts in
            [&[][..], &[("windowsize", "16")][..], &[("blksize", "1468"), ("windowsize", "7"), ("tsize", "0")][..]]
        {
            let mut s = Session::start(
                &req(opts),
                Cursor::new(content.clone()),
                Some(content.len() as u64),
                &Config::default(),
                None,
                t0,
            );
            let (got, _) = download(&mut s, t0);
            assert!(got == content, "options {opts:?}");
        }
    }

    #[test]
    fn oack_carries_tsize_and_is_retransmitted() {
        let t0 = Instant::now();
        let mut s = Session::start(
            &req(&[("tsize", "0"), ("blksize", "1468"), ("windowsize", "4")]),
            Cursor::new(data(3000)),
            Some(3000),
            &Config::default(),
            None,
            t0,
        );
        let first = drain(&mut s);
        assert_eq!(
            first,
            vec![packet::encode_oack(&[
                ("tsize".into(), "3000".into()),
                ("blksize".into(), "1468".into()),
                ("windowsize".into(), "4".into())
            ])]
        );
        let d = s.deadline().unwrap();
        s.on_timeout(d - Duration::from_millis(1));
        assert!(drain(&mut s).is_empty(), "early timer call must not retransmit");
        s.on_timeout(d);
        assert_eq!(drain(&mut s), first);
        // Stray ACKs for other blocks are ignored while negotiating.
        s.on_packet(&encode_ack(5), d);
        assert!(drain(&mut s).is_empty());
        s.on_packet(&encode_ack(0), d);
        let w = drain(&mut s);
        assert_eq!(w.len(), 3); // 1468 + 1468 + 64
        assert_eq!(w[2].len(), 4 + 64);
    }

    #[test]
    fn ovmf_style_probe_abort_ends_quietly() {
        let t0 = Instant::now();
        let mut s =
            Session::start(&req(&[("tsize", "0")]), Cursor::new(data(10)), Some(10), &Config::default(), None, t0);
        drain(&mut s);
        s.on_packet(&encode_error(ErrorCode::OptionNegotiation, "tsize only"), t0);
        assert!(matches!(s.outcome(), Some(Outcome::ClientError { code: ErrorCode::OptionNegotiation, .. })));
        assert_eq!(s.deadline(), None);
        assert!(drain(&mut s).is_empty());
    }

    #[test]
    fn blksize_is_limited_by_path_mtu_then_config() {
        let t0 = Instant::now();
        let r = req(&[("blksize", "65464")]);
        let cfg = Config::default();
        let s = Session::start(&r, Cursor::new(vec![]), Some(0), &cfg, None, t0);
        assert_eq!(s.negotiated().blksize, 1468, "unknown MTU: ethernet-sized blocks");
        let s = Session::start(&r, Cursor::new(vec![]), Some(0), &cfg, Some(options::blksize_for_mtu(65536)), t0);
        assert_eq!(s.negotiated().blksize, 65464, "loopback carries the largest block");
        let cfg = Config { max_blksize: 1024, ..Config::default() };
        let s = Session::start(&r, Cursor::new(vec![]), Some(0), &cfg, Some(8968), t0);
        assert_eq!(s.negotiated().blksize, 1024);
    }

    #[test]
    fn duplicate_acks_do_not_retransmit_but_timeouts_do() {
        let t0 = Instant::now();
        let mut s = Session::start(&req(&[]), Cursor::new(data(2000)), Some(2000), &Config::default(), None, t0);
        let b1 = drain(&mut s);
        s.on_packet(&encode_ack(1), t0);
        let b2 = drain(&mut s);
        assert_eq!(b2.len(), 1);
        s.on_packet(&encode_ack(1), t0);
        assert!(drain(&mut s).is_empty(), "duplicate ACK must not trigger a resend");
        s.on_packet(&encode_ack(9), t0);
        assert!(drain(&mut s).is_empty(), "ACK for an unsent block is ignored");
        let d = s.deadline().unwrap();
        s.on_timeout(d);
        assert_eq!(drain(&mut s), b2);
        assert_ne!(b1, b2);
    }

    #[test]
    fn mid_window_ack_restarts_window_after_it() {
        let t0 = Instant::now();
        let mut s = Session::start(
            &req(&[("windowsize", "4")]),
            Cursor::new(data(512 * 10)),
            Some(5120),
            &Config::default(),
            None,
            t0,
        );
        drain(&mut s); // OACK
        s.on_packet(&encode_ack(0), t0);
        let w = drain(&mut s);
        let blocks = |w: &[Vec<u8>]| w.iter().map(|p| u16::from_be_bytes([p[2], p[3]])).collect::<Vec<_>>();
        assert_eq!(blocks(&w), [1, 2, 3, 4]);
        // The client lost block 3: it acks 2.
        s.on_packet(&encode_ack(2), t0);
        assert_eq!(blocks(&drain(&mut s)), [3, 4, 5, 6]);
        s.on_packet(&encode_ack(6), t0);
        assert_eq!(blocks(&drain(&mut s)), [7, 8, 9, 10]);
    }

    #[test]
    fn gives_up_after_max_retries_with_backoff() {
        let t0 = Instant::now();
        let cfg = Config::default();
        let mut s = Session::start(&req(&[]), Cursor::new(data(100)), Some(100), &cfg, None, t0);
        drain(&mut s);
        let mut now = t0;
        for _ in 0..cfg.max_retries {
            now = s.deadline().unwrap();
            s.on_timeout(now);
            assert_eq!(drain(&mut s).len(), 1);
            assert!(s.deadline().unwrap() - now <= cfg.timeout);
        }
        s.on_timeout(s.deadline().unwrap());
        assert_eq!(s.outcome(), Some(&Outcome::TimedOut { bytes_acked: 0, retries: cfg.max_retries }));
        assert!(drain(&mut s).is_empty());
        assert!(now > t0);
    }

    #[test]
    fn adaptive_timeout_follows_rtt_and_negotiated_timeout_only_bounds_it() {
        let t0 = Instant::now();
        let cfg = Config::default();
        let mut s = Session::start(&req(&[]), Cursor::new(data(5000)), Some(5000), &cfg, None, t0);
        assert_eq!(s.deadline(), Some(t0 + cfg.timeout));
        let mut now = t0;
        for block in 1..=5u16 {
            drain(&mut s);
            now += Duration::from_millis(1);
            s.on_packet(&encode_ack(block), now);
        }
        assert_eq!(s.deadline(), Some(now + cfg.min_timeout), "fast LAN: floor of the adaptive timeout");

        // curl asks for long timeouts: acknowledged, but a lost block is resent within 1 s.
        let mut s = Session::start(&req(&[("timeout", "72")]), Cursor::new(data(5000)), Some(5000), &cfg, None, t0);
        assert_eq!(drain(&mut s), vec![packet::encode_oack(&[("timeout".into(), "72".into())])]);
        s.on_packet(&encode_ack(0), t0);
        assert_eq!(s.deadline(), Some(t0 + cfg.min_timeout));
        s.on_timeout(t0 + cfg.min_timeout);
        assert_eq!(s.deadline(), Some(t0 + cfg.min_timeout * 3), "backs off");
        // A client asking for less than the configured maximum gets it as the maximum.
        let cfg2 = Config { timeout: Duration::from_secs(5), ..Config::default() };
        let s = Session::start(&req(&[("timeout", "2")]), Cursor::new(data(10)), Some(10), &cfg2, None, t0);
        assert_eq!(s.deadline(), Some(t0 + Duration::from_secs(2)));
    }

    #[test]
    fn duplicate_acks_keep_a_slow_client_alive() {
        let t0 = Instant::now();
        let cfg = Config::default();
        let mut s = Session::start(&req(&[]), Cursor::new(data(2000)), Some(2000), &cfg, None, t0);
        drain(&mut s);
        s.on_packet(&encode_ack(1), t0);
        drain(&mut s);
        for _ in 0..3 * cfg.max_retries {
            let now = s.deadline().unwrap();
            s.on_timeout(now);
            drain(&mut s);
            s.on_packet(&encode_ack(1), now); // "I am still here, still waiting for 2"
        }
        assert!(s.outcome().is_none());
    }

    #[test]
    fn garbage_on_the_transfer_socket_is_ignored() {
        let t0 = Instant::now();
        let mut s = Session::start(&req(&[]), Cursor::new(data(600)), Some(600), &Config::default(), None, t0);
        drain(&mut s);
        for junk in [&[][..], &[0], &[0, 4], &[0, 3, 0, 1, 1], &[0, 1, b'x', 0, b'o', 0], &[9, 9, 9, 9], &[0, 6, 0]] {
            s.on_packet(junk, t0);
            assert!(drain(&mut s).is_empty());
            assert!(s.outcome().is_none());
        }
        s.on_packet(&encode_ack(1), t0);
        assert_eq!(drain(&mut s).len(), 1);
    }

    #[test]
    fn read_errors_send_an_error_packet() {
        struct Failing;
        impl Read for Failing {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("disk on fire"))
            }
        }
        let t0 = Instant::now();
        let mut s = Session::start(&req(&[]), Failing, Some(100), &Config::default(), None, t0);
        let out = drain(&mut s);
        assert_eq!(out.len(), 1);
        assert!(matches!(Packet::parse(&out[0]), Ok(Packet::Error { code: ErrorCode::NotDefined, .. })));
        assert!(matches!(s.outcome(), Some(Outcome::ReadFailed { .. })));
    }

    #[test]
    fn netascii_transfer_converts_line_ends() {
        let t0 = Instant::now();
        let mut r = req(&[("tsize", "0")]);
        r.mode = Mode::Netascii;
        let src = super::super::netascii::NetasciiReader::new(Cursor::new(b"a\nb\n".to_vec()));
        let mut s = Session::start(&r, src, Some(4), &Config::default(), None, t0);
        let (got, _) = download(&mut s, t0);
        assert_eq!(got, b"a\r\nb\r\n");
    }
}

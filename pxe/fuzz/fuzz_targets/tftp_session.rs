#![no_main]

use std::io::Cursor;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use parc_pxe::tftp::packet::{Mode, Request};
use parc_pxe::tftp::{Config, Session};

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let (head, events) = data.split_at(4);
    let options = vec![
        ("blksize".to_string(), (8 + u16::from_be_bytes([head[0], head[1]]) % 2000).to_string()),
        ("windowsize".to_string(), (1 + head[2] % 20).to_string()),
        ("tsize".to_string(), "0".to_string()),
    ];
    let mode = if head[3] & 1 == 0 { Mode::Octet } else { Mode::Netascii };
    let request = Request { filename: "f".into(), mode, options };
    let file: Vec<u8> = (0..usize::from(head[3]) * 97).map(|i| i as u8).collect();
    let t0 = Instant::now();
    let mut session =
        Session::start(&request, Cursor::new(file), Some(u64::from(head[3]) * 97), &Config::default(), None, t0);
    let mut now = t0;
    // Each event: a length byte then that many packet bytes; length 0 means "time passes".
    let mut rest = events;
    while let Some((&len, tail)) = rest.split_first() {
        while session.poll_transmit().is_some() {}
        if len == 0 {
            now += Duration::from_millis(250);
            session.on_timeout(now);
            rest = tail;
            continue;
        }
        let n = usize::from(len).min(tail.len());
        session.on_packet(&tail[..n], now);
        rest = &tail[n..];
        if session.outcome().is_some() {
            assert!(session.deadline().is_none());
            assert!(
                session.poll_transmit().is_none()
                    || matches!(session.outcome(), Some(parc_pxe::tftp::Outcome::ReadFailed { .. }))
            );
        }
    }
});

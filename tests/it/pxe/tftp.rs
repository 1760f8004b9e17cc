//! parc's TFTP server against tftp-hpa, atftp and curl on loopback, files compared byte for byte.

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parc_pxe::ipxe::Mac;
use parc_pxe::server::tftp::{run, Files, MachineScripts, TftpConfig};
use parc_pxe::tftp::packet::{encode_ack, encode_request, ErrorCode, Mode, Opcode, Packet, Request};
use tokio_util::sync::CancellationToken;

use super::have;

/// A server on 127.0.0.1:0 serving a temporary root, stopped on drop.
struct Server {
    addr: SocketAddr,
    root: tempfile::TempDir,
    shutdown: CancellationToken,
    rt: Option<tokio::runtime::Runtime>,
    handle: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Server {
    fn start() -> Self {
        Self::with_config(TftpConfig::default())
    }

    fn with_config(config: TftpConfig) -> Self {
        Self::serving(config, |root| root.into())
    }

    fn serving(config: TftpConfig, files: impl FnOnce(PathBuf) -> Files) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let root = tempfile::tempdir().unwrap();
        let shutdown = CancellationToken::new();
        let socket = rt.block_on(tokio::net::UdpSocket::bind("127.0.0.1:0")).unwrap();
        let addr = socket.local_addr().unwrap();
        let handle = rt.spawn(run(socket, files(root.path().to_owned()), config, None, shutdown.clone()));
        Server { addr, root, shutdown, rt: Some(rt), handle: Some(handle) }
    }

    /// Writes a file of `len` pseudo-random bytes into the root.
    fn file(&self, name: &str, len: usize) -> PathBuf {
        let path = self.root.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ len as u64;
        let data: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        std::fs::write(&path, data).unwrap();
        path
    }

    fn port(&self) -> String {
        self.addr.port().to_string()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let (Some(rt), Some(h)) = (self.rt.take(), self.handle.take()) {
            let r = rt.block_on(async { tokio::time::timeout(Duration::from_secs(5), h).await });
            if !std::thread::panicking() {
                let stopped = r.expect("server did not stop within 5 s of shutdown");
                stopped.expect("server task panicked").expect("server returned an error");
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Client {
    TftpHpa,
    TftpHpaNetascii,
    Atftp(&'static [&'static str]),
    Curl(Option<u16>),
}

fn clients_available() -> bool {
    have("tftp", "tftp-hpa") & have("atftp", "atftp") & have("curl", "curl")
}

impl Client {
    /// Fetches `remote` into `local`.
    fn get(self, server: &Server, remote: &str, local: &Path) -> Output {
        let host = server.addr.ip().to_string();
        let mut cmd;
        match self {
            Client::TftpHpa | Client::TftpHpaNetascii => {
                let mode = if matches!(self, Client::TftpHpa) { "binary" } else { "ascii" };
                cmd = Command::new("tftp");
                cmd.args([&host, &server.port(), "-m", mode, "-c", "get", remote]).arg(local);
            }
            Client::Atftp(opts) => {
                cmd = Command::new("atftp");
                for o in opts {
                    cmd.args(["--option", o]);
                }
                cmd.args(["--get", "-r", remote, "-l"]).arg(local).args([&host, &server.port()]);
            }
            Client::Curl(blksize) => {
                cmd = Command::new("curl");
                cmd.args(["-sS", "--path-as-is", "--max-time", "60", "-o"]).arg(local);
                if let Some(b) = blksize {
                    cmd.args(["--tftp-blksize", &b.to_string()]);
                }
                cmd.arg(format!("tftp://{}/{}", server.addr, remote));
            }
        }
        cmd.output().unwrap()
    }

    fn fetch_ok(self, server: &Server, name: &str, out: &Path) {
        let local = out.join(format!("{name}.{:?}", self).replace(['/', ' ', '"', '&', '[', ']'], "_"));
        let started = Instant::now();
        let o = self.get(server, name, &local);
        let took = started.elapsed();
        let want = std::fs::read(server.root.path().join(name)).unwrap();
        let got = std::fs::read(&local)
            .unwrap_or_else(|e| panic!("{self:?} {name}: no output ({e}); {}", String::from_utf8_lossy(&o.stderr)));
        assert!(o.status.success() || matches!(self, Client::TftpHpa), "{self:?} {name}: {o:?}");
        assert!(got.len() == want.len(), "{self:?} {name}: {} bytes, want {}", got.len(), want.len());
        assert!(got == want, "{self:?} {name}: content differs");
        eprintln!("{self:?} {name} ({} bytes): {:.3} s", want.len(), took.as_secs_f64());
    }
}

const ATFTP_WINDOWED: &[&str] = &["blksize 1468", "windowsize 16", "tsize 0"];

#[test]
fn real_clients_fetch_files_byte_for_byte() {
    if !clients_available() {
        return;
    }
    let server = Server::start();
    let out = tempfile::tempdir().unwrap();
    let sizes = [("empty", 0), ("b511", 511), ("b512", 512), ("b513", 513), ("mib", 1 << 20), ("x1468", 1468 * 100)];
    for (name, len) in sizes {
        server.file(name, len);
    }
    server.file("sub/dir/nested.efi", 3000);
    let clients = [
        Client::TftpHpa,
        Client::Atftp(&[]),
        Client::Atftp(&["blksize 1468"]),
        Client::Atftp(ATFTP_WINDOWED),
        Client::Atftp(&["blksize 8192", "windowsize 16"]),
        Client::Curl(None),
        Client::Curl(Some(1468)),
        Client::Curl(Some(512)),
    ];
    for client in clients {
        for (name, _) in sizes {
            client.fetch_ok(&server, name, out.path());
        }
        client.fetch_ok(&server, "sub/dir/nested.efi", out.path());
    }
}

#[test]
fn block_numbers_roll_over_past_65535() {
    if !clients_available() {
        return;
    }
    let server = Server::start();
    let out = tempfile::tempdir().unwrap();
    // 65536 full blocks of 512 bytes and a partial one: block numbers wrap to 0.
    server.file("big", 32 * 1024 * 1024 + 1000);
    for client in [
        Client::TftpHpa,
        Client::Curl(None),
        Client::Atftp(&[]),
        Client::Atftp(ATFTP_WINDOWED),
        Client::Curl(Some(1468)),
    ] {
        client.fetch_ok(&server, "big", out.path());
    }
}

#[test]
fn netascii_converts_line_ends_for_tftp_hpa() {
    if !have("tftp", "tftp-hpa") {
        return;
    }
    let server = Server::start();
    std::fs::write(server.root.path().join("t.txt"), b"line1\nline2\r\nend").unwrap();
    let out = tempfile::tempdir().unwrap();
    let local = out.path().join("t.txt");
    let o = Client::TftpHpaNetascii.get(&server, "t.txt", &local);
    assert!(o.status.success(), "{o:?}");
    // tftp-hpa converts back to local line ends: the file comes back as it was.
    assert_eq!(std::fs::read(&local).unwrap(), b"line1\nline2\r\nend");
}

/// A minimal in-test client: sends one request and returns the first reply.
fn request(server: SocketAddr, opcode: Opcode, filename: &str) -> (Vec<u8>, SocketAddr) {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let req = Request { filename: filename.into(), mode: Mode::Octet, options: vec![] };
    sock.send_to(&encode_request(opcode, &req), server).unwrap();
    let mut buf = vec![0; 70000];
    let (n, from) = sock.recv_from(&mut buf).expect("no reply");
    buf.truncate(n);
    (buf, from)
}

fn error_code(reply: &[u8]) -> Option<ErrorCode> {
    match Packet::parse(reply) {
        Ok(Packet::Error { code, .. }) => Some(code),
        _ => None,
    }
}

#[test]
fn escaping_paths_get_error_packets() {
    let server = Server::start();
    server.file("ok.efi", 10);
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret"), b"secret").unwrap();
    std::os::unix::fs::symlink(outside.path().join("secret"), server.root.path().join("link")).unwrap();
    let cases = [
        ("../etc/passwd", ErrorCode::AccessViolation),
        ("sub/../../etc/passwd", ErrorCode::AccessViolation),
        ("..\\..\\etc\\passwd", ErrorCode::AccessViolation),
        ("link", ErrorCode::AccessViolation),
        ("/etc/passwd", ErrorCode::FileNotFound),
        ("missing", ErrorCode::FileNotFound),
        ("ok.efi\u{1}", ErrorCode::AccessViolation),
    ];
    for (name, want) in cases {
        let (reply, _) = request(server.addr, Opcode::Rrq, name);
        assert_eq!(error_code(&reply), Some(want), "{name:?}");
    }
    // An absolute name is read under the root.
    let (reply, _) = request(server.addr, Opcode::Rrq, "/ok.efi");
    assert!(matches!(Packet::parse(&reply), Ok(Packet::Data { block: 1, .. })));

    if !clients_available() {
        return;
    }
    let out = tempfile::tempdir().unwrap();
    for client in [Client::TftpHpa, Client::Atftp(&[]), Client::Curl(None)] {
        for name in ["../etc/passwd", "../../../../../../etc/passwd", "link"] {
            let local = out.path().join("stolen");
            let o = client.get(&server, name, &local);
            let got = std::fs::read(&local).unwrap_or_default();
            assert!(got.is_empty(), "{client:?} {name}: got data");
            let stderr = String::from_utf8_lossy(&o.stderr) + String::from_utf8_lossy(&o.stdout);
            assert!(
                !o.status.success() || stderr.contains("violation") || stderr.contains("Error"),
                "{client:?} {name}: {o:?}"
            );
        }
    }
}

#[test]
fn write_requests_are_refused() {
    let server = Server::start();
    let (reply, from) = request(server.addr, Opcode::Wrq, "upload.bin");
    assert_eq!(error_code(&reply), Some(ErrorCode::AccessViolation));
    assert_eq!(from, server.addr);
    assert!(!server.root.path().join("upload.bin").exists());
    if !have("curl", "curl") || !have("tftp", "tftp-hpa") {
        return;
    }
    let src = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(src.path(), b"payload").unwrap();
    let o = Command::new("curl")
        .args(["-sS", "--max-time", "10", "-T"])
        .arg(src.path())
        .arg(format!("tftp://{}/upload.bin", server.addr))
        .output()
        .unwrap();
    assert!(!o.status.success(), "curl upload succeeded: {o:?}");
    let o = Command::new("tftp")
        .args([&server.addr.ip().to_string(), &server.port(), "-c", "put"])
        .arg(src.path())
        .arg("upload.bin")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout) + String::from_utf8_lossy(&o.stderr);
    assert!(text.contains("read-only") || !o.status.success(), "tftp put: {o:?}");
    assert!(!server.root.path().join("upload.bin").exists());
}

/// Garbage that a hostile or broken host might send to port 69.
fn malformed_packets() -> Vec<Vec<u8>> {
    let mut many_options = vec![0, 1];
    many_options.extend_from_slice(b"f\0octet\0");
    for i in 0..200 {
        many_options.extend_from_slice(format!("opt{i}\0{i}\0").as_bytes());
    }
    vec![
        vec![],
        vec![0],
        vec![0, 1],
        vec![0, 1, b'f'],
        b"\0\x01f\0octet".to_vec(),
        b"\0\x01f\0mail\0".to_vec(),
        b"\0\x01\0octet\0".to_vec(),
        b"\0\x01f\0octet\0blksize\0".to_vec(),
        b"\0\x01f\0octet\0blksize\0x\0timeout\0999\0".to_vec(),
        vec![0, 9, 1, 2, 3],
        vec![0xff; 64],
        vec![0, 3, 0, 1, 1, 2, 3],
        vec![0, 4, 0, 1],
        vec![0, 5, 0, 1, b'x', 0],
        vec![0, 6, b'x'],
        vec![0, 1].into_iter().chain(std::iter::repeat_n(b'A', 60000)).collect(),
        many_options,
    ]
}

#[test]
fn malformed_flood_does_not_stop_other_transfers() {
    if !clients_available() {
        return;
    }
    let server = Server::start();
    server.file("mib", 1 << 20);
    let out = tempfile::tempdir().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let flooder = {
        let (stop, addr) = (stop.clone(), server.addr);
        std::thread::spawn(move || {
            let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
            let packets = malformed_packets();
            let mut sent = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for p in &packets {
                    let _ = sock.send_to(p, addr);
                    sent += 1;
                }
                std::thread::sleep(Duration::from_micros(200));
            }
            sent
        })
    };
    let clients = [Client::TftpHpa, Client::Atftp(ATFTP_WINDOWED), Client::Curl(Some(1468)), Client::Curl(None)];
    std::thread::scope(|s| {
        for c in clients {
            let (server, out) = (&server, out.path());
            s.spawn(move || c.fetch_ok(server, "mib", out));
        }
    });
    stop.store(true, Ordering::Relaxed);
    let sent = flooder.join().unwrap();
    eprintln!("{sent} malformed packets sent during the transfers");
    assert!(sent > 100);
    // Each malformed request gets at most an error, never a transfer or a crash.
    for p in malformed_packets() {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        sock.send_to(&p, server.addr).unwrap();
        let mut buf = [0; 1500];
        if let Ok((n, _)) = sock.recv_from(&mut buf) {
            assert!(error_code(&buf[..n]).is_some(), "reply to {:?}: {:?}", &p[..p.len().min(16)], &buf[..n]);
        }
    }
    Client::Curl(None).fetch_ok(&server, "mib", out.path());
}

/// Hundreds of transfers at once, each from its own client socket, served from their own
/// server sockets (RFC 1350 transfer IDs).
#[test]
fn hundreds_of_concurrent_transfers() {
    let server = Server::start();
    server.file("f", 200 * 1024);
    let want = std::fs::read(server.root.path().join("f")).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let addr = server.addr;
    let results = rt.block_on(async move {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..300 {
            tasks.spawn(fetch_raw(addr, "f"));
        }
        let mut out = Vec::new();
        while let Some(r) = tasks.join_next().await {
            out.push(r.unwrap());
        }
        out
    });
    let mut server_ports = std::collections::HashSet::new();
    for (data, port) in results {
        assert!(data == want);
        server_ports.insert(port);
    }
    assert_eq!(server_ports.len(), 300, "each transfer has its own server port");
}

/// Lock-step RFC 1350 client (blksize 1468) on tokio; returns the file and the server's port.
async fn fetch_raw(server: SocketAddr, name: &str) -> (Vec<u8>, u16) {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let req = Request { filename: name.into(), mode: Mode::Octet, options: vec![("blksize".into(), "1468".into())] };
    let rrq = encode_request(Opcode::Rrq, &req);
    sock.send_to(&rrq, server).await.unwrap();
    let mut buf = vec![0; 2048];
    let mut data = Vec::new();
    let mut expect: u16 = 1;
    let mut peer = None;
    // Like real clients, retransmit the RRQ while nothing has come back: 300 requests at once
    // can overflow the server socket's receive queue, and UDP drops what does not fit.
    let mut waited = Duration::ZERO;
    loop {
        let (n, from) = match tokio::time::timeout(Duration::from_secs(1), sock.recv_from(&mut buf)).await {
            Ok(r) => r.unwrap(),
            Err(_) => {
                waited += Duration::from_secs(1);
                assert!(waited < Duration::from_secs(30), "transfer stalled");
                if peer.is_none() {
                    sock.send_to(&rrq, server).await.unwrap();
                }
                continue;
            }
        };
        if *peer.get_or_insert(from) != from {
            continue;
        }
        match Packet::parse(&buf[..n]).unwrap() {
            Packet::Oack { .. } => sock.send_to(&encode_ack(0), from).await.map(drop).unwrap(),
            Packet::Data { block, data: d } => {
                if block == expect {
                    data.extend_from_slice(d);
                    expect = expect.wrapping_add(1);
                }
                sock.send_to(&encode_ack(block), from).await.unwrap();
                if block == expect.wrapping_sub(1) && d.len() < 1468 {
                    return (data, from.port());
                }
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// A client that "loses" the first copy of some DATA blocks (never sees them, never acks them)
/// and, like an RFC 7440 receiver, acks the last in-order block when it times out. Returns the
/// file and how long it took.
fn fetch_losing(server: SocketAddr, name: &str, windowsize: u16, lose: &[u16]) -> (Vec<u8>, Duration) {
    let started = Instant::now();
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    let req = Request {
        filename: name.into(),
        mode: Mode::Octet,
        options: vec![("windowsize".into(), windowsize.to_string())],
    };
    sock.send_to(&encode_request(Opcode::Rrq, &req), server).unwrap();
    let mut lose: std::collections::HashSet<u16> = lose.iter().copied().collect();
    let (mut data, mut expected, mut in_window, mut peer) = (Vec::new(), 1u16, 0u16, None);
    let mut buf = vec![0; 2048];
    loop {
        assert!(started.elapsed() < Duration::from_secs(20), "transfer stalled");
        let (n, from) = match sock.recv_from(&mut buf) {
            Ok(r) => r,
            Err(_) => {
                if let Some(p) = peer {
                    sock.send_to(&encode_ack(expected.wrapping_sub(1)), p).unwrap();
                    in_window = 0;
                }
                continue;
            }
        };
        peer = Some(from);
        match Packet::parse(&buf[..n]).unwrap() {
            Packet::Oack { .. } => {
                sock.send_to(&encode_ack(0), from).unwrap();
            }
            Packet::Data { block, data: d } => {
                if lose.remove(&block) || block != expected {
                    continue;
                }
                data.extend_from_slice(d);
                expected = expected.wrapping_add(1);
                in_window += 1;
                if d.len() < 512 {
                    sock.send_to(&encode_ack(block), from).unwrap();
                    return (data, started.elapsed());
                }
                if in_window == windowsize {
                    sock.send_to(&encode_ack(block), from).unwrap();
                    in_window = 0;
                }
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[test]
fn lost_blocks_are_recovered_without_stalls() {
    let server = Server::start();
    server.file("f", 512 * 200 + 7);
    let want = std::fs::read(server.root.path().join("f")).unwrap();
    for windowsize in [1, 8] {
        let (got, took) = fetch_losing(server.addr, "f", windowsize, &[3, 60, 61, 150, 201]);
        assert!(got == want, "windowsize {windowsize}: content differs");
        eprintln!("windowsize {windowsize}, 5 blocks lost: {:.3} s", took.as_secs_f64());
        // Each loss costs one retransmission timeout (200 ms to 1 s), never the seconds-long
        // stalls of peers.
        assert!(took < Duration::from_secs(5), "windowsize {windowsize}: {took:?}");
        assert!(took > Duration::from_millis(150), "losses were not simulated");
    }
}

#[test]
fn retransmitted_requests_start_one_transfer_and_the_limit_holds() {
    let server = Server::with_config(TftpConfig { max_transfers: 1, ..TftpConfig::default() });
    server.file("f", 2000);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    let rrq = encode_request(Opcode::Rrq, &Request { filename: "f".into(), mode: Mode::Octet, options: vec![] });
    // A client that retransmits its request before the first DATA arrives.
    sock.send_to(&rrq, server.addr).unwrap();
    sock.send_to(&rrq, server.addr).unwrap();
    let mut buf = [0u8; 1500];
    let mut ports = std::collections::HashSet::new();
    while let Ok((n, from)) = sock.recv_from(&mut buf) {
        assert!(matches!(Packet::parse(&buf[..n]), Ok(Packet::Data { block: 1, .. })));
        ports.insert(from.port());
    }
    assert_eq!(ports.len(), 1, "one transfer for a retransmitted request");
    // That transfer (unacknowledged, so still running) uses the only slot: others are told so.
    let (reply, _) = request(server.addr, Opcode::Rrq, "f");
    assert_eq!(error_code(&reply), Some(ErrorCode::NotDefined));
    assert!(String::from_utf8_lossy(&reply).contains("busy"));
}

/// Real clients through 2% random loss (nftables in a network namespace: this kernel has no
/// netem). curl negotiates timeouts of many seconds; a server that waits them out takes minutes.
#[test]
fn real_clients_through_packet_loss() {
    if !clients_available() || !have("nft", "nftables") {
        return;
    }
    let Some(lab) = super::lab::Lab::new("loss") else { return };
    super::lab::run_ok(&["ip", "-n", &lab.cli, "addr", "add", "10.99.0.2/24", "dev", "veth1"]);
    let mut nft = Command::new("ip")
        .args(["netns", "exec", &lab.cli, "nft", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    nft.stdin
        .take()
        .unwrap()
        .write_all(
            b"table inet loss {\n  chain input {\n    type filter hook input priority 0;\n    \
              meta l4proto udp numgen random mod 50 == 0 drop\n  }\n}\n",
        )
        .unwrap();
    assert!(nft.wait().unwrap().success());

    let root = tempfile::tempdir().unwrap();
    let content: Vec<u8> = (0..256 * 1024u32).map(|i| (i * 7 % 253) as u8).collect();
    std::fs::write(root.path().join("f"), &content).unwrap();
    let shutdown = CancellationToken::new();
    std::thread::scope(|s| {
        let (srv, stop, root_path) = (lab.srv.clone(), shutdown.clone(), root.path().to_owned());
        let server = s.spawn(move || {
            super::lab::Lab::inside(&srv, || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                rt.block_on(async {
                    let socket = tokio::net::UdpSocket::bind("10.99.0.1:69").await.unwrap();
                    run(socket, root_path, TftpConfig::default(), None, stop).await
                })
            })
        });
        let out = tempfile::tempdir().unwrap();
        let commands: [(&str, Vec<&str>); 4] = [
            ("tftp-hpa", vec!["tftp", "10.99.0.1", "-m", "binary", "-c", "get", "f"]),
            ("curl", vec!["curl", "-sS", "--max-time", "60", "-o"]),
            ("curl 1468", vec!["curl", "-sS", "--max-time", "60", "--tftp-blksize", "1468", "-o"]),
            (
                "atftp windowed",
                vec!["atftp", "--option", "blksize 1468", "--option", "windowsize 16", "--get", "-r", "f", "-l"],
            ),
        ];
        for (name, args) in commands {
            let local = out.path().join(name.replace(' ', "_"));
            let mut cmd = Command::new("ip");
            cmd.args(["netns", "exec", &lab.cli]).args(&args).arg(&local);
            match name {
                "curl" | "curl 1468" => {
                    cmd.arg("tftp://10.99.0.1/f");
                }
                "atftp windowed" => {
                    cmd.arg("10.99.0.1");
                }
                _ => {}
            }
            let started = Instant::now();
            let o = cmd.output().unwrap();
            let took = started.elapsed();
            eprintln!("{name} through 2% loss: {:.3} s", took.as_secs_f64());
            assert!(std::fs::read(&local).unwrap_or_default() == content, "{name}: {o:?}");
            // 256 KiB at 2% loss: about 10 lost blocks, each costing one adaptive timeout.
            assert!(took < Duration::from_secs(15), "{name} took {took:?}");
        }
        shutdown.cancel();
        server.join().unwrap().unwrap();
    });
}

/// Stands in for the web server's decision (tested for real in the end-to-end runs): a script
/// for 52:54:00:00:00:01 and 02:00:00:00:00:09, nothing for the others, and a record of who asked.
#[derive(Debug, Default)]
pub(super) struct Scripts {
    pub(super) asked: std::sync::Mutex<Vec<(Mac, std::net::Ipv4Addr)>>,
}

impl MachineScripts for Scripts {
    fn script(&self, mac: Mac, from: std::net::Ipv4Addr) -> Option<String> {
        self.asked.lock().unwrap().push((mac, from));
        ["52:54:00:00:00:01", "02:00:00:00:00:09"]
            .contains(&mac.to_string().as_str())
            .then(|| format!("echo 'parc: script for {mac}'\n"))
    }
}

/// The Secure Boot chain's files: the loaders and agent files of `<data>/netboot` under
/// `netboot/` (those names only), GRUB's bootstrap, each machine's script from the decision.
/// (That a script request is no evidence of a network boot is checked on a lab network, in
/// `pxe::dhcp::serve_gives_firmware_a_loader_it_can_fetch`: loopback never counts.)
#[test]
fn grub_chain_files_and_machine_scripts() {
    if !have("curl", "curl") {
        return;
    }
    let netboot = tempfile::tempdir().unwrap();
    for (name, body) in [("shimx64.efi", "shim"), ("grubx64.efi", "grub"), ("netboot.stamp", "stamp")] {
        std::fs::write(netboot.path().join(name), body).unwrap();
    }
    let scripts = Arc::new(Scripts::default());
    let dir = netboot.path().to_owned();
    let provider: Arc<dyn MachineScripts> = scripts.clone();
    let server =
        Server::serving(TftpConfig::default(), |root| Files { root, netboot: Some(dir), scripts: Some(provider) });
    server.file("snponly.efi", 3000);
    let out = tempfile::tempdir().unwrap();
    let get = |name: &str| -> Option<Vec<u8>> {
        let local = out.path().join("got");
        let _ = std::fs::remove_file(&local);
        let o = Client::Curl(Some(1024)).get(&server, name, &local);
        o.status.success().then(|| std::fs::read(&local).unwrap())
    };
    let here = std::net::Ipv4Addr::LOCALHOST;
    assert_eq!(
        get("grub/parc/52:54:00:00:00:01").as_deref(),
        Some(&b"echo 'parc: script for 52:54:00:00:00:01'\n"[..])
    );
    assert_eq!(scripts.asked.lock().unwrap().as_slice(), &[("52:54:00:00:00:01".parse().unwrap(), here)]);
    assert_eq!(get("grub/grub.cfg"), Some(parc_pxe::grub::bootstrap().into_bytes()));

    assert_eq!(get("netboot/shimx64.efi").as_deref(), Some(&b"shim"[..]));
    assert_eq!(get("/netboot/grubx64.efi").as_deref(), Some(&b"grub"[..]));
    // Where shim looks when the site's DHCP names the boot file in option 67 only.
    assert_eq!(get("grubx64.efi").as_deref(), Some(&b"grub"[..]));
    assert_eq!(get("snponly.efi").map(|b| b.len()), Some(3000));
    // Not found: other files of <data>/netboot, a MAC the decision has no script for, a name
    // that is no MAC; escapes are access violations as anywhere else.
    for (name, want) in [
        ("netboot/netboot.stamp", ErrorCode::FileNotFound),
        ("netboot/missing", ErrorCode::FileNotFound),
        ("grub/parc/52:54:00:00:00:02", ErrorCode::FileNotFound),
        ("grub/parc/x;reboot", ErrorCode::FileNotFound),
        ("grub/x86_64-efi/grub.cfg", ErrorCode::FileNotFound),
        ("netboot/../shimx64.efi", ErrorCode::AccessViolation),
    ] {
        let (reply, _) = request(server.addr, Opcode::Rrq, name);
        assert_eq!(error_code(&reply), Some(want), "{name:?}");
    }
    assert_eq!(scripts.asked.lock().unwrap().len(), 2, "the decision was asked for a name that is no MAC");
}

//! The TFTP server: one task per transfer, each on its own ephemeral socket (RFC 1350's transfer
//! IDs), reading the file block by block.

use std::collections::HashSet;
use std::io::{self, BufReader, Read};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::ipxe::Mac;
use crate::sightings::Sightings;
use crate::tftp::netascii::NetasciiReader;
use crate::tftp::options::blksize_for_mtu;
use crate::tftp::packet::{encode_error, ErrorCode, Mode, Packet, Request};
use crate::tftp::path::{clean, resolve, PathError};
use crate::tftp::{self, Outcome, Session};

/// TFTP server settings.
#[derive(Debug, Clone)]
pub struct TftpConfig {
    /// Transfer limits and timing.
    pub session: tftp::Config,
    /// Transfers served at once; requests beyond get a "server busy" error.
    pub max_transfers: usize,
}

impl Default for TftpConfig {
    fn default() -> Self {
        Self { session: tftp::Config::default(), max_transfers: 1024 }
    }
}

/// Makes a machine's GRUB script (`grub/parc/<mac>`, see [`crate::grub`]) when GRUB asks for it
/// from `from`: the web server's boot decision, which may issue a boot credential. `None`: no
/// script for it (the request is answered "file not found"). Called on a blocking thread.
pub trait MachineScripts: Send + Sync + std::fmt::Debug {
    /// The script's text.
    fn script(&self, mac: Mac, from: Ipv4Addr) -> Option<String>;
}

/// The agent's files and the Secure Boot loaders, served from `<data>/netboot` under
/// `netboot/`; nothing else there is.
pub const NETBOOT_FILES: [&str; 4] = ["vmlinuz", "initrd", "shimx64.efi", "grubx64.efi"];

/// What the TFTP server serves.
#[derive(Debug, Clone)]
pub struct Files {
    /// Files by their names under this root: Debian's iPXE binaries (`/usr/lib/ipxe`).
    pub root: PathBuf,
    /// `<data>/netboot`: [`NETBOOT_FILES`] as `netboot/<name>`.
    pub netboot: Option<PathBuf>,
    /// GRUB's scripts: [`crate::grub::BOOTSTRAP`], and each machine's from this.
    pub scripts: Option<Arc<dyn MachineScripts>>,
}

impl From<PathBuf> for Files {
    fn from(root: PathBuf) -> Self {
        Files { root, netboot: None, scripts: None }
    }
}

/// Where a request is served from.
enum Source {
    /// A file on disk.
    File(PathBuf),
    /// [`crate::grub::BOOTSTRAP`].
    Bootstrap,
    /// A machine's GRUB script.
    MachineScript(Arc<dyn MachineScripts>, Mac),
}

impl Files {
    fn route(&self, requested: &str) -> Result<Source, (ErrorCode, String)> {
        let not_found = || (ErrorCode::FileNotFound, "file not found".to_owned());
        let name = clean(requested).map_err(path_error)?;
        let name = name.to_str().ok_or_else(not_found)?;
        if let Some(scripts) = &self.scripts {
            if name == crate::grub::BOOTSTRAP {
                return Ok(Source::Bootstrap);
            }
            if name.starts_with(crate::grub::MACHINE_DIR) {
                let mac = crate::grub::machine_script_mac(name).ok_or_else(not_found)?;
                return Ok(Source::MachineScript(scripts.clone(), mac));
            }
        }
        if let Some(dir) = &self.netboot {
            // Shim fetches GRUB from the directory of the boot file named in the BOOTP `file`
            // field; a site DHCP server that sends option 67 alone (shim ignores it) makes it
            // ask for `grubx64.efi` at the top.
            if name == "grubx64.efi" {
                return resolve(dir, name).map(Source::File).map_err(path_error);
            }
            if let Some(file) = name.strip_prefix("netboot/") {
                if !NETBOOT_FILES.contains(&file) {
                    return Err(not_found());
                }
                return resolve(dir, file).map(Source::File).map_err(path_error);
            }
        }
        resolve(&self.root, name).map(Source::File).map_err(path_error)
    }
}

fn path_error(e: PathError) -> (ErrorCode, String) {
    match e {
        PathError::AccessViolation { .. } => (ErrorCode::AccessViolation, "access violation".to_owned()),
        PathError::NotFound => (ErrorCode::FileNotFound, "file not found".to_owned()),
        PathError::Root { .. } => {
            warn!(error = %e, "TFTP root unusable");
            (ErrorCode::NotDefined, "server misconfigured".to_owned())
        }
    }
}

/// Serves read requests for `files` on `socket` until `shutdown` is cancelled, then
/// waits for the transfers in flight to stop (they are cancelled too).
///
/// Files are read as the transfer proceeds, in `blksize × windowsize` steps through a 64 KiB
/// buffer, never whole. Reads are plain blocking reads on the runtime's threads: boot files are
/// small and hot in the page cache, which keeps a transfer's loop free of thread hand-offs.
///
/// Each file served is recorded in `sightings` (when given) as a loader fetch from its address,
/// except a machine's GRUB script: asking for one is no evidence of a boot.
pub async fn run(
    socket: UdpSocket,
    files: impl Into<Files>,
    config: TftpConfig,
    sightings: Option<Arc<Sightings>>,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let local = socket.local_addr()?;
    super::enlarge_recv_buffer(&socket);
    let files: Files = files.into();
    info!(%local, root = %files.root.display(), netboot = ?files.netboot, "TFTP server listening");
    let active: Arc<Mutex<HashSet<SocketAddr>>> = Arc::default();
    let tracker = TaskTracker::new();
    let mut buf = vec![0u8; 2048];
    loop {
        let (n, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = socket.recv_from(&mut buf) => match r {
                Ok(r) => r,
                // ICMP errors from earlier sends surface here on some systems: not fatal.
                Err(e) => { debug!(error = %e, "TFTP receive error"); continue; }
            },
        };
        let request = match Packet::parse(&buf[..n]) {
            Ok(Packet::Rrq(req)) => req,
            Ok(Packet::Wrq(req)) => {
                info!(%peer, file = %req.filename, "TFTP write request refused");
                reply_error(&socket, peer, ErrorCode::AccessViolation, "parc's TFTP server is read-only").await;
                continue;
            }
            Err(e @ (tftp::PacketError::UnknownOpcode { .. } | tftp::PacketError::Truncated { .. })) => {
                // Not a request at all: stay silent rather than reflect traffic.
                debug!(%peer, error = %e, "TFTP garbage ignored");
                continue;
            }
            Err(e) => {
                info!(%peer, error = %e, "malformed TFTP request");
                reply_error(&socket, peer, ErrorCode::IllegalOperation, &e.to_string()).await;
                continue;
            }
            Ok(_) => {
                debug!(%peer, "TFTP packet without transfer ignored");
                continue;
            }
        };
        let admitted = {
            let mut set = active.lock().unwrap_or_else(|e| e.into_inner());
            if set.contains(&peer) {
                // A retransmitted request for a transfer already running.
                continue;
            }
            set.len() < config.max_transfers && set.insert(peer)
        };
        if !admitted {
            warn!(%peer, max = config.max_transfers, "TFTP server busy");
            reply_error(&socket, peer, ErrorCode::NotDefined, "server busy, retry later").await;
            continue;
        }
        let mut guard = ActiveGuard { set: active.clone(), peer, armed: true };
        let opened = match files.route(&request.filename) {
            Ok(Source::File(path)) => open(path),
            Ok(Source::Bootstrap) => Ok(Opened::text(crate::grub::BOOTSTRAP.into(), crate::grub::bootstrap())),
            Err(e) => Err(e),
            Ok(Source::MachineScript(scripts, mac)) => {
                // The web server's decision (database, journal) runs on a blocking thread, in
                // the transfer's own task: the loop goes on receiving.
                let SocketAddr::V4(v4) = peer else {
                    reply_error(&socket, peer, ErrorCode::FileNotFound, "file not found").await;
                    guard.release();
                    continue;
                };
                let local_ip = local.ip();
                let (session_cfg, shutdown) = (config.session.clone(), shutdown.clone());
                tracker.spawn(async move {
                    let _guard = guard;
                    let from = *v4.ip();
                    let text = tokio::task::spawn_blocking(move || scripts.script(mac, from)).await.ok().flatten();
                    let Some(text) = text else {
                        reply_error_from(local_ip, peer, ErrorCode::FileNotFound, "file not found").await;
                        return;
                    };
                    let opened = Opened::text(crate::grub::machine_script_path(mac).into(), text);
                    if let Err(e) = transfer(local_ip, peer, request, opened, session_cfg, shutdown).await {
                        warn!(%peer, error = %e, "TFTP transfer failed");
                    }
                });
                continue;
            }
        };
        let opened = match opened {
            Ok(o) => o,
            Err((code, msg)) => {
                info!(%peer, file = %request.filename, %msg, "TFTP request refused");
                reply_error(&socket, peer, code, &msg).await;
                guard.release();
                continue;
            }
        };
        if let (Some(s), SocketAddr::V4(v4)) = (&sightings, peer) {
            s.record_loader_fetch(*v4.ip());
        }
        let local_ip = local.ip();
        let session_cfg = config.session.clone();
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            let _guard = guard;
            if let Err(e) = transfer(local_ip, peer, request, opened, session_cfg, shutdown).await {
                warn!(%peer, error = %e, "TFTP transfer failed");
            }
        });
    }
    tracker.close();
    tracker.wait().await;
    info!(%local, "TFTP server stopped");
    Ok(())
}

struct ActiveGuard {
    set: Arc<Mutex<HashSet<SocketAddr>>>,
    peer: SocketAddr,
    armed: bool,
}

impl ActiveGuard {
    fn release(&mut self) {
        if self.armed {
            self.armed = false;
            self.set.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.peer);
        }
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.release();
    }
}

struct Opened {
    reader: Box<dyn Read + Send>,
    size: u64,
    path: PathBuf,
}

impl Opened {
    fn text(path: PathBuf, text: String) -> Opened {
        Opened { size: text.len() as u64, reader: Box::new(io::Cursor::new(text.into_bytes())), path }
    }
}

fn open(path: PathBuf) -> Result<Opened, (ErrorCode, String)> {
    let file = std::fs::File::open(&path).map_err(|e| match e.kind() {
        io::ErrorKind::PermissionDenied => (ErrorCode::AccessViolation, "access violation".to_owned()),
        _ => (ErrorCode::FileNotFound, "file not found".to_owned()),
    })?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    Ok(Opened { reader: Box::new(file), size, path })
}

/// An error sent from a socket of its own (a transfer's task has no access to the server's).
async fn reply_error_from(local_ip: IpAddr, peer: SocketAddr, code: ErrorCode, msg: &str) {
    if let Ok(socket) = UdpSocket::bind(SocketAddr::new(local_ip, 0)).await {
        reply_error(&socket, peer, code, msg).await;
    }
}

async fn reply_error(socket: &UdpSocket, peer: SocketAddr, code: ErrorCode, msg: &str) {
    if let Err(e) = socket.send_to(&encode_error(code, msg), peer).await {
        debug!(%peer, error = %e, "could not send TFTP error");
    }
}

async fn transfer(
    local_ip: IpAddr,
    peer: SocketAddr,
    request: Request,
    opened: Opened,
    cfg: tftp::Config,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let socket = UdpSocket::bind(SocketAddr::new(local_ip, 0)).await?;
    socket.connect(peer).await?;
    let path_blksize = path_mtu(&socket).map(blksize_for_mtu);
    let started = Instant::now();
    let reader = BufReader::with_capacity(64 * 1024, opened.reader);
    match request.mode {
        Mode::Octet => {
            let s = Session::start(&request, reader, Some(opened.size), &cfg, path_blksize, started);
            drive(&socket, s, &request, &opened.path, peer, started, shutdown).await
        }
        Mode::Netascii => {
            let s = Session::start(&request, NetasciiReader::new(reader), None, &cfg, path_blksize, started);
            drive(&socket, s, &request, &opened.path, peer, started, shutdown).await
        }
    }
}

async fn drive<R: io::Read>(
    socket: &UdpSocket,
    mut session: Session<R>,
    request: &Request,
    path: &Path,
    peer: SocketAddr,
    started: Instant,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let n = session.negotiated();
    debug!(%peer, file = %request.filename, blksize = n.blksize, windowsize = n.windowsize, "TFTP transfer starting");
    let mut buf = vec![0u8; 2048];
    let timer = tokio::time::sleep_until(tokio::time::Instant::now());
    tokio::pin!(timer);
    let mut armed: Option<Instant> = None;
    loop {
        while let Some(p) = session.poll_transmit() {
            if let Err(e) = socket.send(p).await {
                if e.kind() == io::ErrorKind::ConnectionRefused {
                    debug!(%peer, "TFTP client went away");
                    return Ok(());
                }
                return Err(e);
            }
        }
        if let Some(outcome) = session.outcome() {
            let elapsed_ms = started.elapsed().as_millis() as u64;
            let (timeouts, restarts) = session.recoveries();
            match outcome {
                Outcome::Completed { bytes, .. } => info!(
                    %peer, file = %path.display(), bytes, elapsed_ms, timeouts, restarts,
                    "TFTP transfer complete"
                ),
                other => info!(
                    %peer, file = %path.display(), outcome = ?other, elapsed_ms, timeouts, restarts,
                    "TFTP transfer ended"
                ),
            }
            return Ok(());
        }
        // Lock-step transfers turn around once per block: keep the loop lean. A packet already
        // waiting is taken without going through the reactor, and the timer is armed lazily:
        // it is moved only when it fires early (the deadline moves on every ACK; re-arming the
        // timer wheel each time measurably slowed 512-byte transfers).
        match socket.try_recv(&mut buf) {
            Ok(n) => {
                session.on_packet(&buf[..n], Instant::now());
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                debug!(%peer, "TFTP client went away");
                return Ok(());
            }
            Err(e) => return Err(e),
        }
        let Some(deadline) = session.deadline() else { continue };
        if armed.is_none_or(|a| a > deadline) {
            timer.as_mut().reset(deadline.into());
            armed = Some(deadline);
        }
        tokio::select! {
            biased;
            r = socket.recv(&mut buf) => match r {
                Ok(n) => session.on_packet(&buf[..n], Instant::now()),
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    debug!(%peer, "TFTP client went away");
                    return Ok(());
                }
                Err(e) => return Err(e),
            },
            _ = &mut timer => {
                armed = None;
                let now = Instant::now();
                if session.deadline().is_some_and(|d| d <= now) {
                    session.on_timeout(now);
                }
            }
            _ = shutdown.cancelled() => return Ok(()),
        }
    }
}

/// The kernel's path MTU for a connected IPv4 socket (`IP_MTU`), if it knows one.
fn path_mtu(socket: &UdpSocket) -> Option<u32> {
    if !socket.peer_addr().ok()?.is_ipv4() {
        return None;
    }
    let mut mtu: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: the fd is a live socket owned by `socket`; `mtu` and `len` are valid for writes
    // of the sizes given.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_MTU,
            (&mut mtu as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    (rc == 0 && mtu > 0).then_some(mtu as u32)
}

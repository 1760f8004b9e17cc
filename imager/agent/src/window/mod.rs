//! A window onto a disk, as one file of a FUSE file system of our own: the file is `size`
//! bytes long, its first `backed` bytes are the disk's from `offset`, the rest reads as zeros
//! and writes there are dropped (and counted).
//!
//! Why: `ntfsresize` refuses a volume larger than its device, and a volume being shrunk onto a
//! smaller disk is exactly that. Shown this file, it sees the volume's full size; everything
//! the volume uses lies in the backed part (the deploy's plan checked it), so nothing is lost
//! in the tail. Neither device-mapper nor md is needed (the test machines have neither).

pub mod wire;

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use nix::mount::{mount, umount2, MntFlags, MsFlags};

use wire::{Request, FILE, ROOT};

/// The file's name in the mounted directory.
pub const FILE_NAME: &str = "volume";

/// A mounted window; unmount it to learn what was dropped.
#[derive(Debug)]
pub struct Window {
    dir: PathBuf,
    server: Option<JoinHandle<io::Result<()>>>,
    dropped: Arc<AtomicU64>,
}

struct Server {
    dev: File,
    disk: File,
    offset: u64,
    backed: u64,
    size: u64,
    dropped: Arc<AtomicU64>,
}

impl Window {
    /// Mounts the window over the empty directory `dir`.
    pub fn mount(dir: &Path, disk: &Path, offset: u64, backed: u64, size: u64) -> io::Result<Window> {
        let disk = OpenOptions::new().read(true).write(true).open(disk)?;
        let dev = OpenOptions::new().read(true).write(true).open("/dev/fuse")?;
        let options = format!("fd={},rootmode=40000,user_id=0,group_id=0", dev.as_raw_fd());
        mount(Some("parc-window"), dir, Some("fuse"), MsFlags::MS_NOSUID | MsFlags::MS_NODEV, Some(options.as_str()))
            .map_err(|e| io::Error::other(format!("mounting a FUSE file system on {}: {e}", dir.display())))?;
        let dropped = Arc::new(AtomicU64::new(0));
        let mut server = Server { dev, disk, offset, backed: backed.min(size), size, dropped: dropped.clone() };
        let thread = std::thread::spawn(move || server.serve());
        Ok(Window { dir: dir.to_path_buf(), server: Some(thread), dropped })
    }

    pub fn file(&self) -> PathBuf {
        self.dir.join(FILE_NAME)
    }

    /// Unmounts; the bytes written past the backed part (dropped).
    pub fn unmount(mut self) -> io::Result<u64> {
        self.detach()?;
        Ok(self.dropped.load(Ordering::Relaxed))
    }

    fn detach(&mut self) -> io::Result<()> {
        let Some(server) = self.server.take() else { return Ok(()) };
        umount2(&self.dir, MntFlags::empty())
            .or_else(|_| umount2(&self.dir, MntFlags::MNT_DETACH))
            .map_err(|e| io::Error::other(format!("unmounting {}: {e}", self.dir.display())))?;
        server.join().map_err(|_| io::Error::other("the FUSE server thread panicked"))?
    }
}

impl Drop for Window {
    fn drop(&mut self) {
        let _ = self.detach();
    }
}

impl Server {
    /// Answers requests until the file system is unmounted (the device then reads ENODEV).
    fn serve(&mut self) -> io::Result<()> {
        let mut buf = vec![0u8; wire::BUFFER];
        loop {
            let n = match self.dev.read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.raw_os_error() == Some(libc::ENODEV) => return Ok(()),
                // An interrupted request, or one the kernel withdrew: read the next.
                Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR | libc::ENOENT | libc::EAGAIN)) => continue,
                Err(e) => return Err(e),
            };
            let (h, req) = match wire::parse(&buf[..n]) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "FUSE request ignored");
                    continue;
                }
            };
            if req == Request::NoReply {
                continue;
            }
            let (errno, payload) = self.answer(h.node, req);
            match self.dev.write_all(&wire::reply(h.unique, errno, &payload)) {
                Ok(()) => {}
                // The request was interrupted meanwhile: the kernel no longer waits for it.
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENODEV) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }

    fn answer(&self, node: u64, req: Request<'_>) -> (i32, Vec<u8>) {
        let known = node == ROOT || node == FILE;
        match req {
            Request::Init { major: 7, minor, max_readahead } if minor >= 12 => {
                (0, wire::init_out(minor, max_readahead))
            }
            Request::Init { .. } => (libc::EPROTO, Vec::new()),
            _ if !known => (libc::ENOENT, Vec::new()),
            Request::Lookup { name } if node == ROOT && name == FILE_NAME.as_bytes() => {
                (0, wire::entry_out(FILE, self.size))
            }
            Request::Lookup { .. } => (libc::ENOENT, Vec::new()),
            Request::Getattr => (0, wire::attr_out(node, self.size)),
            Request::Setattr { size: Some(s) } if s != self.size => (libc::EPERM, Vec::new()),
            Request::Setattr { .. } => (0, wire::attr_out(node, self.size)),
            Request::Open => (0, wire::open_out()),
            Request::Read { offset, size } if node == FILE => match self.read(offset, size) {
                Ok(data) => (0, data),
                Err(e) => (e.raw_os_error().unwrap_or(libc::EIO), Vec::new()),
            },
            Request::Write { offset, data } if node == FILE => match self.write(offset, data) {
                Ok(n) => (0, wire::write_out(n)),
                Err(e) => (e.raw_os_error().unwrap_or(libc::EIO), Vec::new()),
            },
            Request::Read { .. } | Request::Write { .. } => (libc::EISDIR, Vec::new()),
            Request::Statfs => (0, wire::statfs_out(self.size)),
            Request::Done { fsync } => match fsync.then(|| self.disk.sync_data()) {
                Some(Err(e)) => (e.raw_os_error().unwrap_or(libc::EIO), Vec::new()),
                _ => (0, Vec::new()),
            },
            Request::NoReply | Request::Other(_) => (libc::ENOSYS, Vec::new()),
        }
    }

    fn read(&self, offset: u64, size: u32) -> io::Result<Vec<u8>> {
        let end = offset.saturating_add(u64::from(size)).min(self.size);
        let mut data = vec![0u8; end.saturating_sub(offset) as usize];
        let backed_end = end.min(self.backed);
        if offset < backed_end {
            self.disk.read_exact_at(&mut data[..(backed_end - offset) as usize], self.offset + offset)?;
        }
        Ok(data)
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<u32> {
        let end = offset.saturating_add(data.len() as u64);
        if end > self.size {
            return Err(io::Error::from_raw_os_error(libc::EFBIG));
        }
        let backed_end = end.min(self.backed);
        if offset < backed_end {
            self.disk.write_all_at(&data[..(backed_end - offset) as usize], self.offset + offset)?;
        }
        self.dropped.fetch_add(end - backed_end.max(offset), Ordering::Relaxed);
        Ok(data.len() as u32)
    }
}

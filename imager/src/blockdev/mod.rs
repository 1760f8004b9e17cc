//! Disks and disk image files: opening, sizes, and the kernel's block-device ioctls.

use std::fs::{File, OpenOptions};
use std::io;
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::Path;

use crate::io::ReadAt;

pub mod loopdev;

nix::ioctl_read!(blkgetsize64, 0x12, 114, u64);
nix::ioctl_none!(blkrrpart, 0x12, 95);
// BLKDISCARD and BLKZEROOUT are declared as _IO (no size) but take a [start, len] pointer.
nix::ioctl_write_ptr_bad!(blkdiscard, nix::request_code_none!(0x12, 119), [u64; 2]);
nix::ioctl_write_ptr_bad!(blkzeroout, nix::request_code_none!(0x12, 127), [u64; 2]);
// BLKSSZGET is declared as _IO but returns an int through its pointer argument.
nix::ioctl_read_bad!(blksszget, 0x1268, libc::c_int);
nix::ioctl_none!(blkflsbuf, 0x12, 97);

/// Byte ranges where reads or writes fail with EIO, as on a disk with bad sectors: what the
/// deploy's bad-sector handling is tested with (this kernel has no device-mapper). Like a real
/// disk remapping a pending sector, a successful write over an unreadable range heals it.
#[derive(Debug, Default)]
pub struct Faults {
    pub read: std::sync::Mutex<Vec<Range<u64>>>,
    pub write: std::sync::Mutex<Vec<Range<u64>>>,
}

impl Faults {
    fn hit(ranges: &[Range<u64>], offset: u64, len: usize) -> io::Result<()> {
        let end = offset + len as u64;
        if ranges.iter().any(|r| r.start < end && offset < r.end) {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        Ok(())
    }
    fn check_read(&self, offset: u64, len: usize) -> io::Result<()> {
        Faults::hit(&self.read.lock().unwrap_or_else(|p| p.into_inner()), offset, len)
    }
    fn check_write(&self, offset: u64, len: usize) -> io::Result<()> {
        Faults::hit(&self.write.lock().unwrap_or_else(|p| p.into_inner()), offset, len)?;
        let end = offset + len as u64;
        self.read.lock().unwrap_or_else(|p| p.into_inner()).retain(|r| !(r.start < end && offset < r.end));
        Ok(())
    }
}

/// An opened source or target: a regular file or a block device.
#[derive(Debug)]
pub struct Disk {
    pub file: File,
    pub size: u64,
    pub logical_sector_size: u32,
    pub is_block_device: bool,
    pub faults: Faults,
}

/// How a verification got its bytes from the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReadPath {
    /// `O_DIRECT`: the device itself, no page cache.
    Direct,
    /// Flushed, then the cached pages dropped (`POSIX_FADV_DONTNEED`, `BLKFLSBUF`) before reading:
    /// for files on file systems without `O_DIRECT` (tmpfs).
    CacheDropped,
}

fn ioerr(e: nix::Error) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

impl Disk {
    pub fn open_read(path: &Path) -> io::Result<Disk> {
        Disk::from_file(File::open(path)?)
    }

    /// Opens a target for writing. A regular file that does not exist is created with
    /// `create_size` bytes (sparse).
    pub fn open_write(path: &Path, create_size: u64) -> io::Result<Disk> {
        match OpenOptions::new().read(true).write(true).open(path) {
            Ok(f) => {
                let mut d = Disk::from_file(f)?;
                if !d.is_block_device && d.size == 0 {
                    d.file.set_len(create_size)?;
                    d.size = create_size;
                }
                Ok(d)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let f = OpenOptions::new().read(true).write(true).create_new(true).open(path)?;
                f.set_len(create_size)?;
                Disk::from_file(f)
            }
            Err(e) => Err(e),
        }
    }

    fn from_file(file: File) -> io::Result<Disk> {
        let meta = file.metadata()?;
        if meta.file_type().is_block_device() {
            let mut size = 0u64;
            let mut ss: libc::c_int = 512;
            // SAFETY: the fd is a block device we hold open; the pointers are to locals of the
            // types these ioctls write.
            unsafe {
                blkgetsize64(file.as_raw_fd(), &mut size).map_err(ioerr)?;
                blksszget(file.as_raw_fd(), &mut ss).map_err(ioerr)?;
            }
            Ok(Disk { file, size, logical_sector_size: ss as u32, is_block_device: true, faults: Faults::default() })
        } else if meta.file_type().is_file() {
            Ok(Disk {
                file,
                size: meta.len(),
                logical_sector_size: 512,
                is_block_device: false,
                faults: Faults::default(),
            })
        } else {
            Err(io::Error::new(io::ErrorKind::InvalidInput, "not a regular file or a block device"))
        }
    }

    /// Asks the kernel to re-read the partition table (block devices only). A device the
    /// kernel does not partition (a loop device without partition scanning) says EINVAL:
    /// that is not an error for a deploy.
    pub fn reread_partitions(&self) -> io::Result<()> {
        if !self.is_block_device {
            return Ok(());
        }
        // SAFETY: no arguments; the fd is an open block device.
        match unsafe { blkrrpart(self.file.as_raw_fd()) } {
            Ok(_) | Err(nix::Error::EINVAL) => Ok(()),
            Err(e) => Err(ioerr(e)),
        }
    }

    /// Makes `[offset, offset+len)` read as zeros: BLKZEROOUT on a device, a punched hole
    /// in a file.
    pub fn zero_range(&self, offset: u64, len: u64) -> io::Result<()> {
        if len == 0 {
            return Ok(());
        }
        self.faults.check_write(offset, len as usize)?;
        if self.is_block_device {
            let range = [offset, len];
            // SAFETY: pointer to a local [u64; 2] as BLKZEROOUT expects.
            unsafe { blkzeroout(self.file.as_raw_fd(), &range) }.map_err(ioerr)?;
            Ok(())
        } else {
            nix::fcntl::fallocate(
                self.file.as_raw_fd(),
                nix::fcntl::FallocateFlags::FALLOC_FL_PUNCH_HOLE | nix::fcntl::FallocateFlags::FALLOC_FL_KEEP_SIZE,
                offset as i64,
                len as i64,
            )
            .map(|_| ())
            .or_else(|_| {
                // File systems without hole punching: write zeros.
                let zeros = vec![0u8; (1 << 20).min(len) as usize];
                let mut off = offset;
                while off < offset + len {
                    let n = (offset + len - off).min(zeros.len() as u64) as usize;
                    std::os::unix::fs::FileExt::write_all_at(&self.file, &zeros[..n], off)?;
                    off += n as u64;
                }
                Ok(())
            })
        }
    }

    /// Discards a range (BLKDISCARD) on a device: used to wipe unused space fast when asked.
    pub fn discard_range(&self, offset: u64, len: u64) -> io::Result<()> {
        if !self.is_block_device {
            return self.zero_range(offset, len);
        }
        let range = [offset, len];
        // SAFETY: pointer to a local [u64; 2] as BLKDISCARD expects.
        match unsafe { blkdiscard(self.file.as_raw_fd(), &range) } {
            Ok(_) => Ok(()),
            // Devices without discard: zero instead, the caller asked for a wipe.
            Err(_) => self.zero_range(offset, len),
        }
    }

    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// Writes all of `buf` at `offset`.
    pub fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.faults.check_write(offset, buf.len())?;
        self.file.write_all_at(buf, offset)
    }

    /// Scatters a chunk's bytes to its `[offset, length]` pieces; an error names the offset.
    pub fn write_pieces(&self, at: &[[u64; 2]], data: &[u8]) -> Result<(), (u64, io::Error)> {
        let mut pos = 0usize;
        for &[o, l] in at {
            self.write_all_at(&data[pos..pos + l as usize], o).map_err(|e| (o, e))?;
            pos += l as usize;
        }
        Ok(())
    }

    /// A reader that gets its bytes from the device, not from the page cache: `O_DIRECT`
    /// when the file system or device allows it, else after flushing and dropping the cache.
    pub fn uncached_reader(&self, path: &Path) -> io::Result<UncachedReader<'_>> {
        self.sync()?;
        let direct = OpenOptions::new().read(true).custom_flags(libc::O_DIRECT).open(path).ok().filter(|f| {
            // Some file systems accept the flag at open and refuse the reads (EINVAL).
            let mut probe = AlignedBuf::new(DIRECT_ALIGN as usize);
            f.read_at(probe.as_mut(), 0).is_ok()
        });
        if direct.is_none() {
            // SAFETY: plain syscalls on an fd we hold; BLKFLSBUF takes no argument.
            unsafe {
                libc::posix_fadvise(self.file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED);
                if self.is_block_device {
                    blkflsbuf(self.file.as_raw_fd()).map_err(ioerr)?;
                }
            }
        }
        Ok(UncachedReader { disk: self, direct })
    }
}

impl ReadAt for Disk {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.faults.check_read(offset, buf.len())?;
        FileExt::read_exact_at(&self.file, buf, offset)
    }
}

/// `O_DIRECT` needs buffers, offsets and lengths aligned to the logical sector; 4 KiB covers
/// every sector size parc accepts.
const DIRECT_ALIGN: u64 = 4096;
const DIRECT_READ: u64 = 4 << 20;

/// See [`Disk::uncached_reader`].
#[derive(Debug)]
pub struct UncachedReader<'d> {
    disk: &'d Disk,
    direct: Option<File>,
}

impl UncachedReader<'_> {
    pub fn path(&self) -> ReadPath {
        if self.direct.is_some() {
            ReadPath::Direct
        } else {
            ReadPath::CacheDropped
        }
    }
}

impl ReadAt for UncachedReader<'_> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let Some(f) = &self.direct else { return self.disk.read_exact_at(buf, offset) };
        self.disk.faults.check_read(offset, buf.len())?;
        let end = offset + buf.len() as u64;
        let mut at = offset / DIRECT_ALIGN * DIRECT_ALIGN;
        let mut bounce = AlignedBuf::new(DIRECT_READ.min(end.div_ceil(DIRECT_ALIGN) * DIRECT_ALIGN - at) as usize);
        while at < end {
            let want = (end.div_ceil(DIRECT_ALIGN) * DIRECT_ALIGN - at).min(DIRECT_READ);
            // A device's size is a multiple of its sector, not always of 4 KiB.
            let want = if self.disk.is_block_device { want.min(self.disk.size - at) } else { want };
            let b = &mut bounce.as_mut()[..want as usize];
            let mut got = 0usize;
            while got < b.len() {
                match f.read_at(&mut b[got..], at + got as u64) {
                    Ok(0) => break,
                    Ok(n) => got += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            // Copy the part of this window the caller asked for.
            let from = offset.max(at);
            let to = end.min(at + got as u64);
            if to <= from {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "read past the end of the device"));
            }
            buf[(from - offset) as usize..(to - offset) as usize]
                .copy_from_slice(&b[(from - at) as usize..(to - at) as usize]);
            if to < end && got < want as usize {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "read past the end of the device"));
            }
            at += want;
        }
        Ok(())
    }
}

/// A heap buffer whose start is aligned for `O_DIRECT`.
struct AlignedBuf {
    raw: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    fn new(len: usize) -> AlignedBuf {
        let raw = vec![0u8; len + DIRECT_ALIGN as usize];
        let start = raw.as_ptr().align_offset(DIRECT_ALIGN as usize);
        AlignedBuf { raw, start, len }
    }
    fn as_mut(&mut self) -> &mut [u8] {
        &mut self.raw[self.start..self.start + self.len]
    }
}

//! Disks and disk image files: opening, sizes, and the kernel's block-device ioctls.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

nix::ioctl_read!(blkgetsize64, 0x12, 114, u64);
nix::ioctl_none!(blkrrpart, 0x12, 95);
// BLKDISCARD and BLKZEROOUT are declared as _IO (no size) but take a [start, len] pointer.
nix::ioctl_write_ptr_bad!(blkdiscard, nix::request_code_none!(0x12, 119), [u64; 2]);
nix::ioctl_write_ptr_bad!(blkzeroout, nix::request_code_none!(0x12, 127), [u64; 2]);
// BLKSSZGET is declared as _IO but returns an int through its pointer argument.
nix::ioctl_read_bad!(blksszget, 0x1268, libc::c_int);

/// An opened source or target: a regular file or a block device.
#[derive(Debug)]
pub struct Disk {
    pub file: File,
    pub size: u64,
    pub logical_sector_size: u32,
    pub is_block_device: bool,
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
            Ok(Disk { file, size, logical_sector_size: ss as u32, is_block_device: true })
        } else if meta.file_type().is_file() {
            Ok(Disk { file, size: meta.len(), logical_sector_size: 512, is_block_device: false })
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
}

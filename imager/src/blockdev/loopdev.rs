//! Loop devices over a byte range of a disk, through the kernel's ioctls (no `losetup`: the
//! agent's busybox one cannot limit the size nor say which device it took).
//!
//! The agent mounts a partition this way before the partition table is written (the boot
//! area comes last), so the kernel's own partition nodes, if any, still describe the disk's
//! previous life and must not be used.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

const LO_NAME_SIZE: usize = 64;
const LO_KEY_SIZE: usize = 32;
/// Detach when the last user (the mount, this handle) goes away.
const LO_FLAGS_AUTOCLEAR: u32 = 4;

/// `struct loop_info64` of `<linux/loop.h>`.
#[derive(Debug)]
#[repr(C)]
pub struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; LO_NAME_SIZE],
    lo_crypt_name: [u8; LO_NAME_SIZE],
    lo_encrypt_key: [u8; LO_KEY_SIZE],
    lo_init: [u64; 2],
}

nix::ioctl_write_int_bad!(loop_set_fd, 0x4C00);
nix::ioctl_none_bad!(loop_clr_fd, 0x4C01);
nix::ioctl_write_ptr_bad!(loop_set_status64, 0x4C04, LoopInfo64);
nix::ioctl_none_bad!(loop_ctl_get_free, 0x4C82);

/// An attached loop device; detached when dropped (and by the kernel once unmounted).
#[derive(Debug)]
pub struct LoopDevice {
    pub path: PathBuf,
    file: File,
}

fn ioerr(e: nix::Error) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

impl LoopDevice {
    /// A loop device showing `[offset, offset + size)` of `backing`, read-write.
    pub fn attach(backing: &Path, offset: u64, size: u64) -> io::Result<LoopDevice> {
        let backing = OpenOptions::new().read(true).write(true).open(backing)?;
        let control = OpenOptions::new().read(true).write(true).open("/dev/loop-control")?;
        // Another process may take the free device between the two calls: try again.
        let mut last = io::Error::other("no free loop device");
        for _ in 0..8 {
            // SAFETY: no argument; the fd is /dev/loop-control.
            let n = unsafe { loop_ctl_get_free(control.as_raw_fd()) }.map_err(ioerr)?;
            let path = PathBuf::from(format!("/dev/loop{n}"));
            let file = match OpenOptions::new().read(true).write(true).open(&path) {
                Ok(f) => f,
                Err(e) => {
                    last = e;
                    continue;
                }
            };
            // SAFETY: both fds are open; LOOP_SET_FD takes the backing fd as its argument.
            match unsafe { loop_set_fd(file.as_raw_fd(), backing.as_raw_fd()) } {
                Ok(_) => {}
                Err(nix::Error::EBUSY) => {
                    last = ioerr(nix::Error::EBUSY);
                    continue;
                }
                Err(e) => return Err(ioerr(e)),
            }
            let info = LoopInfo64 {
                lo_device: 0,
                lo_inode: 0,
                lo_rdevice: 0,
                lo_offset: offset,
                lo_sizelimit: size,
                lo_number: 0,
                lo_encrypt_type: 0,
                lo_encrypt_key_size: 0,
                lo_flags: LO_FLAGS_AUTOCLEAR,
                lo_file_name: [0; LO_NAME_SIZE],
                lo_crypt_name: [0; LO_NAME_SIZE],
                lo_encrypt_key: [0; LO_KEY_SIZE],
                lo_init: [0; 2],
            };
            // SAFETY: pointer to a local struct laid out as the kernel's loop_info64.
            if let Err(e) = unsafe { loop_set_status64(file.as_raw_fd(), &info) } {
                // SAFETY: no argument; undoes the LOOP_SET_FD above.
                let _ = unsafe { loop_clr_fd(file.as_raw_fd()) };
                return Err(ioerr(e));
            }
            return Ok(LoopDevice { path, file });
        }
        Err(last)
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        // Fails with EBUSY while mounted; autoclear then detaches it at unmount.
        // SAFETY: no argument; the fd is our loop device.
        let _ = unsafe { loop_clr_fd(self.file.as_raw_fd()) };
    }
}

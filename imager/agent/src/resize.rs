//! Resizing the last file system to its resized partition before the boot area is written:
//! the table is not written yet, so the tools work on a loop device over the partition's new
//! byte range.
//! - Growing, after the profile step. ext2/3/4: `e2fsck -f -p` (resize2fs wants a checked file
//!   system, and the check also covers what the profile step wrote), then `resize2fs`. NTFS:
//!   `ntfsresize`, which checks the volume first and schedules Windows' chkdsk for the first
//!   boot, as it does after every resize.
//! - Shrinking, before the profile step, which could not mount a file system larger than its
//!   device. The plan allowed it only when every block the file system uses lies inside the new
//!   size, so nothing is moved and nothing past the end is read. ext2/3/4: `resize2fs -f`
//!   (e2fsck cannot run first: it refuses a file system larger than its device), then
//!   `e2fsck -f -p` on the result. NTFS: `ntfsresize --size` through a [`Window`] (it refuses a
//!   volume larger than its device too), then `ntfsresize --check` on the partition.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use parc_imager::blockdev::loopdev::LoopDevice;
use parc_imager::deploy::Resize;
use parc_imager::fs::FsKind;

use crate::window::Window;

#[derive(Debug, thiserror::Error)]
#[error("{} partition {number} ({fs:?}) to {new_mib} MiB: {reason}; {}", if *.shrink { "shrinking" } else { "growing" }, if *.shrink { "deploy to a disk at least as large as the image's" } else { "set `grow = false` under [disk] in the department's file to keep the image's size" })]
pub struct ResizeError {
    pub number: u32,
    pub fs: FsKind,
    pub new_mib: u64,
    pub shrink: bool,
    pub reason: String,
}

/// Resizes the file system of `g` on `disk` to the partition's new length; returns what was
/// done, for the screen and the report. `work`: a scratch directory (a shrunk NTFS volume is
/// shown to ntfsresize through a [`Window`] mounted there).
pub fn resize_file_system(disk: &Path, g: &Resize, work: &Path) -> Result<String, ResizeError> {
    let shrink = g.shrinks();
    let fail = |reason: String| ResizeError { number: g.number, fs: g.fs, new_mib: g.length >> 20, shrink, reason };
    let dev = LoopDevice::attach(disk, g.start, g.length)
        .map_err(|e| fail(format!("attaching a loop device over {}: {e}", disk.display())))?;
    let path = dev.path.to_string_lossy().into_owned();
    // e2fsck: 0 clean, 1 errors corrected; anything else leaves a file system not to trust.
    let e2fsck = |when: &str| -> Result<&'static str, ResizeError> {
        let check = run("e2fsck", &["-f", "-p", &path]).map_err(fail)?;
        match check.status.code() {
            Some(0) => Ok("e2fsck"),
            Some(1) => Ok("e2fsck corrected errors"),
            _ => Err(fail(format!("e2fsck -f -p {when} found errors it did not correct: {}", tail(&check)))),
        }
    };
    let tool = |name: &str, args: &[&str]| -> Result<(), ResizeError> {
        let out = run(name, args).map_err(fail)?;
        if out.status.success() {
            Ok(())
        } else {
            Err(fail(format!("{name} failed: {}", tail(&out))))
        }
    };
    let ntfs_size = g.length.to_string();
    let tools = match g.fs {
        FsKind::Ext2 | FsKind::Ext3 | FsKind::Ext4 if shrink => {
            tool("resize2fs", &["-f", &path])?;
            format!("resize2fs, {}", e2fsck("after resize2fs")?)
        }
        FsKind::Ext2 | FsKind::Ext3 | FsKind::Ext4 => {
            let checked = e2fsck("before resize2fs")?;
            tool("resize2fs", &[&path])?;
            format!("{checked}, resize2fs")
        }
        FsKind::Ntfs if shrink => {
            // ntfsresize refuses a volume larger than its device: it is shown the volume's full
            // size through a window (the partition, then zeros where the image's size went on).
            let dir = work.join("ntfs-window");
            std::fs::create_dir_all(&dir).map_err(|e| fail(format!("creating {}: {e}", dir.display())))?;
            let window =
                Window::mount(&dir, disk, g.start, g.length, g.image_length).map_err(|e| fail(e.to_string()))?;
            let file = window.file().to_string_lossy().into_owned();
            let resized = tool("ntfsresize", &["--force", "--no-progress-bar", "--size", &ntfs_size, &file]);
            let dropped = window.unmount().map_err(|e| fail(e.to_string()))?;
            resized?;
            // Checked again on its own device, now of its new size.
            tool("ntfsresize", &["--check", "--force", "--no-progress-bar", &path])?;
            format!("ntfsresize ({dropped} bytes it wrote past the new end dropped), checked; Windows checks the volume at its first boot")
        }
        FsKind::Ntfs => {
            // --force: no question on the terminal (the volume was checked at capture and the
            // tool checks it again before it changes anything).
            tool("ntfsresize", &["--force", "--no-progress-bar", &path])?;
            "ntfsresize; Windows checks the volume at its first boot".into()
        }
        other => return Err(fail(format!("parc does not resize {other:?} file systems"))),
    };
    std::fs::OpenOptions::new()
        .write(true)
        .open(&dev.path)
        .and_then(|f| f.sync_all())
        .map_err(|e| fail(format!("flushing {path}: {e}")))?;
    Ok(format!(
        "partition {} {} from {} MiB to {} MiB ({:?}: {tools})",
        g.number,
        if shrink { "shrunk" } else { "grown" },
        g.image_length >> 20,
        g.length >> 20,
        g.fs
    ))
}

fn run(tool: &str, args: &[&str]) -> Result<Output, String> {
    Command::new(tool)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running {tool}: {e} (is it in the netboot environment?)"))
}

/// The last lines a tool printed, for an error message.
fn tail(out: &Output) -> String {
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let from = lines.len().saturating_sub(4);
    format!("exit {:?}: {}", out.status.code(), lines[from..].join(" / "))
}

//! Growing the last file system over its grown partition, between the profile step and the
//! boot area: the table is not written yet, so the tools work on a loop device over the
//! partition's new byte range. ext2/3/4: `e2fsck -f -p` (resize2fs wants a checked file system,
//! and the check also covers what the profile step wrote), then `resize2fs`. NTFS:
//! `ntfsresize`, which checks the volume first and schedules Windows' chkdsk for the first
//! boot, as it does after every resize.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use parc_imager::blockdev::loopdev::LoopDevice;
use parc_imager::deploy::Grow;
use parc_imager::fs::FsKind;

#[derive(Debug, thiserror::Error)]
#[error("growing partition {number} ({fs:?}) to {new_mib} MiB: {reason}; set `grow = false` under [disk] in the department's file to keep the image's size")]
pub struct GrowError {
    pub number: u32,
    pub fs: FsKind,
    pub new_mib: u64,
    pub reason: String,
}

/// Grows the file system of `g` on `disk` to the partition's new length; returns what was done,
/// for the screen and the report.
pub fn grow_file_system(disk: &Path, g: &Grow) -> Result<String, GrowError> {
    let fail = |reason: String| GrowError { number: g.number, fs: g.fs, new_mib: g.length >> 20, reason };
    let dev = LoopDevice::attach(disk, g.start, g.length)
        .map_err(|e| fail(format!("attaching a loop device over {}: {e}", disk.display())))?;
    let path = dev.path.to_string_lossy().into_owned();
    let tools = match g.fs {
        FsKind::Ext2 | FsKind::Ext3 | FsKind::Ext4 => {
            // 0: clean; 1: errors corrected. Anything else leaves a file system not to resize.
            let check = run("e2fsck", &["-f", "-p", &path]).map_err(fail)?;
            if !matches!(check.status.code(), Some(0 | 1)) {
                return Err(fail(format!("e2fsck -f -p found errors it did not correct: {}", tail(&check))));
            }
            let resize = run("resize2fs", &[&path]).map_err(fail)?;
            if !resize.status.success() {
                return Err(fail(format!("resize2fs failed: {}", tail(&resize))));
            }
            if check.status.code() == Some(1) {
                "e2fsck corrected errors, resize2fs"
            } else {
                "e2fsck, resize2fs"
            }
        }
        FsKind::Ntfs => {
            // --force: no question on the terminal (the volume was checked at capture and the
            // tool checks it again before it changes anything).
            let resize = run("ntfsresize", &["--force", "--no-progress-bar", &path]).map_err(fail)?;
            if !resize.status.success() {
                return Err(fail(format!("ntfsresize failed: {}", tail(&resize))));
            }
            "ntfsresize; Windows checks the volume at its first boot"
        }
        other => return Err(fail(format!("parc does not grow {other:?} file systems"))),
    };
    std::fs::OpenOptions::new()
        .write(true)
        .open(&dev.path)
        .and_then(|f| f.sync_all())
        .map_err(|e| fail(format!("flushing {path}: {e}")))?;
    Ok(format!(
        "partition {} grown from {} MiB to {} MiB ({:?}: {tools})",
        g.number,
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

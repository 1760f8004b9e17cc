//! Applying the department profile to the system just written: hostname, the profile's
//! payload files, and a first-boot unit that runs the department's script once and then
//! tells the appliance the machine is ready. Linux images only (a systemd unit); a Windows
//! image gets the same step through unattend.xml / SetupComplete.cmd (not built yet).

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use parc_imager::blockdev::loopdev::LoopDevice;
use parc_imager::format::manifest::{Manifest, Partition};
use parc_imager::fs::FsKind;

use crate::api::AgentApi;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProfileError {
    #[error("no Linux root file system (ext2/3/4 with /etc/os-release) in the image written to {disk}; this profile step supports Linux images only")]
    NoLinuxRoot { disk: String },
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("profile file {path:?} would land outside the installed system")]
    UnsafePath { path: String },
    #[error(transparent)]
    Api(#[from] crate::api::ApiError),
    #[error("{0}")]
    Windows(String),
}

pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ProfileError {
    let what = what.into();
    move |source| ProfileError::Io { what, source }
}

/// What the first-boot report needs on the installed system.
#[derive(Debug, Clone)]
pub struct FirstBoot {
    pub server: String,
    pub token: String,
}

#[derive(Debug, Clone, Default)]
pub struct Applied {
    pub root_partition: u32,
    pub files: usize,
    pub first_boot_script: bool,
}

/// A partition of `disk` mounted somewhere; unmounted (and its loop device freed) on drop.
struct Mounted {
    dir: PathBuf,
    _loop: LoopDevice,
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.dir, nix::mount::MntFlags::empty());
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// Mounts partition `number` through a loop device over its byte range as the image defines
/// it: the partition table is not on the disk yet (it is written last), and the kernel's
/// partition nodes, if any, still describe what the disk held before.
fn mount_partition(disk: &Path, p: &Partition, at: &Path) -> Result<Mounted, ProfileError> {
    let number = p.number;
    let dev = LoopDevice::attach(disk, p.start, p.length)
        .map_err(io(format!("attaching a loop device over partition {number} of {}", disk.display())))?;
    std::fs::create_dir_all(at).map_err(io(format!("creating {}", at.display())))?;
    let fstype = match p.fs {
        FsKind::Ext2 => "ext2",
        FsKind::Ext3 => "ext3",
        _ => "ext4",
    };
    let dev_path = dev.path.clone();
    let mounted = Mounted { dir: at.to_path_buf(), _loop: dev };
    nix::mount::mount(Some(&dev_path), at, Some(fstype), nix::mount::MsFlags::empty(), None::<&str>).map_err(|e| {
        ProfileError::Io {
            what: format!("mounting partition {number} ({}, {fstype}) on {}", dev_path.display(), at.display()),
            source: e.into(),
        }
    })?;
    Ok(mounted)
}

/// `dest` inside `root`, refusing anything that would escape it.
pub(crate) fn inside(root: &Path, dest: &str) -> Result<PathBuf, ProfileError> {
    let p = Path::new(dest.trim_start_matches('/'));
    if dest.is_empty() || p.components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(ProfileError::UnsafePath { path: dest.to_string() });
    }
    Ok(root.join(p))
}

/// Replaces `path` with `bytes`, never through a symlink planted in the image. `mode`: the
/// permissions on Linux; `None` on NTFS, where the file keeps the ACL it inherits.
pub(crate) fn write_file(path: &Path, bytes: &[u8], mode: Option<u32>) -> Result<(), ProfileError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
    }
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode.unwrap_or(0o644))
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(io(format!("writing {}", path.display())))?;
    f.write_all(bytes).map_err(io(format!("writing {}", path.display())))?;
    if let Some(mode) = mode {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(io(format!("chmod {}", path.display())))?;
    }
    Ok(())
}

const UNIT: &str = "parc-first-boot.service";

/// The first-boot report, in bash (every Debian-like image has it; nothing else is needed:
/// an HTTP/1.0 POST over bash's /dev/tcp). Retries until the appliance answers 200.
const REPORT_SCRIPT: &str = r#"#!/bin/bash
# Written by the parc agent: tells the appliance this machine booted its new system.
set -u
. /etc/parc/agent.env
hostport=${PARC_SERVER#http://}; hostport=${hostport%%/*}
host=${hostport%%:*}; port=${hostport##*:}; [ "$port" = "$hostport" ] && port=80
for attempt in $(seq 1 60); do
    if exec 3<>"/dev/tcp/$host/$port"; then
        printf 'POST /api/v1/agent/first-boot HTTP/1.0
Host: %s
Authorization: Bearer %s
Content-Type: application/json
Content-Length: 2

{}'             "$hostport" "$PARC_TOKEN" >&3
        read -r _ status _ <&3
        exec 3<&-
        # The credential is single use: gone from this system once answered.
        if [ "$status" = 200 ]; then echo "parc: first boot reported"; rm -f /etc/parc/agent.env; exit 0; fi
        echo "parc: the appliance answered $status" >&2
        case "$status" in 401|409) rm -f /etc/parc/agent.env; exit 1;; esac
    fi
    sleep 10
done
exit 1
"#;

/// Runs on the installed system's first boot: the department's script, then the report.
fn unit(has_script: bool) -> String {
    let script = if has_script { "ExecStart=/usr/local/lib/parc/first-boot.sh\n" } else { "" };
    format!(
        "# Written by the parc agent: runs once, on the first boot after installation.\n\
         [Unit]\n\
         Description=parc first boot: department script, then report to the appliance\n\
         Wants=network-online.target\n\
         After=network-online.target\n\
         ConditionPathExists=/etc/parc/first-boot.pending\n\n\
         [Service]\n\
         Type=oneshot\n\
         {script}\
         ExecStart=/usr/local/lib/parc/report-first-boot\n\
         ExecStartPost=/bin/rm -f /etc/parc/first-boot.pending\n\
         RemainAfterExit=yes\n\n\
         [Install]\n\
         WantedBy=multi-user.target\n"
    )
}

/// Mounts the image's Linux root on `work`, applies the profile, unmounts.
pub fn apply(
    api: &AgentApi,
    disk: &Path,
    manifest: &Manifest,
    hostname: &str,
    first_boot: &FirstBoot,
    work: &Path,
) -> Result<Applied, ProfileError> {
    let candidates = manifest.partitions.iter().filter(|p| matches!(p.fs, FsKind::Ext2 | FsKind::Ext3 | FsKind::Ext4));
    for p in candidates {
        let mnt = mount_partition(disk, p, &work.join(format!("p{}", p.number)))?;
        let root = mnt.dir.clone();
        if !root.join("etc/os-release").exists() && !root.join("usr/lib/os-release").exists() {
            continue;
        }
        let mut applied = Applied { root_partition: p.number, ..Default::default() };
        write_file(&root.join("etc/hostname"), format!("{hostname}\n").as_bytes(), Some(0o644))?;
        let hosts = std::fs::read_to_string(root.join("etc/hosts")).unwrap_or_default();
        let mut lines: Vec<String> =
            hosts.lines().filter(|l| !l.starts_with("127.0.1.1")).map(str::to_string).collect();
        lines.insert(1.min(lines.len()), format!("127.0.1.1\t{hostname}"));
        write_file(&root.join("etc/hosts"), (lines.join("\n") + "\n").as_bytes(), Some(0o644))?;
        for f in api.profile_files()? {
            let bytes = api.profile_file(&f.source)?;
            if f.dest == ".parc-first-boot" {
                write_file(&root.join("usr/local/lib/parc/first-boot.sh"), &bytes, Some(0o755))?;
                applied.first_boot_script = true;
            } else {
                write_file(&inside(&root, &f.dest)?, &bytes, Some(f.mode & 0o7777))?;
                applied.files += 1;
            }
        }
        write_file(&root.join("usr/local/lib/parc/report-first-boot"), REPORT_SCRIPT.as_bytes(), Some(0o755))?;
        let env = format!("PARC_SERVER={}\nPARC_TOKEN={}\n", first_boot.server, first_boot.token);
        write_file(&root.join("etc/parc/agent.env"), env.as_bytes(), Some(0o600))?;
        write_file(&root.join("etc/parc/first-boot.pending"), b"", Some(0o644))?;
        write_file(
            &root.join("etc/systemd/system").join(UNIT),
            unit(applied.first_boot_script).as_bytes(),
            Some(0o644),
        )?;
        let wants = root.join("etc/systemd/system/multi-user.target.wants");
        std::fs::create_dir_all(&wants).map_err(io(format!("creating {}", wants.display())))?;
        let link = wants.join(UNIT);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(format!("/etc/systemd/system/{UNIT}"), &link)
            .map_err(io(format!("linking {}", link.display())))?;
        nix::unistd::sync();
        return Ok(applied);
    }
    Err(ProfileError::NoLinuxRoot { disk: disk.display().to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_paths_stay_inside_the_root() {
        let r = Path::new("/mnt/t");
        assert_eq!(inside(r, "etc/parc/department").unwrap(), Path::new("/mnt/t/etc/parc/department"));
        assert_eq!(inside(r, "/etc/x").unwrap(), Path::new("/mnt/t/etc/x"));
        for bad in ["", "../etc/passwd", "etc/../../x", "./x"] {
            assert!(inside(r, bad).is_err(), "{bad}");
        }
        assert!(unit(true)
            .contains("ExecStart=/usr/local/lib/parc/first-boot.sh\nExecStart=/usr/local/lib/parc/report-first-boot"));
    }
}

//! The profile step for a Windows image: the system partition (the NTFS one holding
//! `Windows\System32`) is mounted through ntfs-3g over a loop device on its byte range, and
//! parc writes, merged with what the image holds:
//! - `Windows\Panther\unattend.xml`: specialize `ComputerName`, `TimeZone`, the offline domain
//!   join blob when the department joins machines;
//! - the department's payload under `C:\parc\`, its PowerShell first-boot script as
//!   `C:\parc\first-boot.ps1`;
//! - `Windows\Setup\Scripts\SetupComplete.cmd`, with one parc block calling
//!   `C:\parc\firstboot.cmd`: the department script, the first-boot report with its single-use
//!   credential, then the cached answer file (it holds the join blob) deleted.
//!
//! Windows cannot run here: what Setup does with these files is Microsoft's documented
//! behaviour (`imager/WINDOWS-RESEARCH.md` §3), checked in tests from outside the disk.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use parc_imager::blockdev::loopdev::LoopDevice;
use parc_imager::format::manifest::{Manifest, Partition};
use parc_imager::fs::{ntfs, FsKind};
use parc_imager::io::Slice;

use super::{setupcomplete, unattend};
use crate::api::AgentApi;
use crate::profile::{Applied, FirstBoot, ProfileError};

/// What the department says about its Windows machines, and the join blob the appliance made
/// for this one.
#[derive(Debug, Clone)]
pub struct Customisation<'a> {
    pub hostname: &'a str,
    pub time_zone: &'a str,
    pub join_blob: Option<&'a str>,
}

const ARCH: &str = "amd64";
const CALL_LINE: &str = r#"call "%SystemDrive%\parc\firstboot.cmd""#;
/// How long ntfs-3g may take to mount or to flush and exit.
const NTFS3G_WAIT: Duration = Duration::from_secs(60);

/// Runs from SetupComplete.cmd as Local System before the first logon. CRLF, ASCII.
const FIRSTBOOT_CMD: &str = "@echo off\r\n\
rem Written by the parc agent: runs once from SetupComplete.cmd, after Windows Setup.\r\n\
set PARCDIR=%SystemDrive%\\parc\r\n\
if exist \"%PARCDIR%\\first-boot.ps1\" powershell.exe -NoProfile -ExecutionPolicy Bypass -File \"%PARCDIR%\\first-boot.ps1\" > \"%PARCDIR%\\first-boot.log\" 2>&1\r\n\
powershell.exe -NoProfile -ExecutionPolicy Bypass -File \"%PARCDIR%\\report-first-boot.ps1\" >> \"%PARCDIR%\\first-boot.log\" 2>&1\r\n\
rem The cached answer file holds the machine's domain join blob: not kept once Setup is done.\r\n\
del /f /q \"%WINDIR%\\Panther\\unattend.xml\" 2>nul\r\n";

/// The first-boot report: one POST with the single-use credential, retried while the
/// appliance cannot be reached; the credential is deleted once answered.
const REPORT_PS1: &str = "# Written by the parc agent: tells the appliance this machine booted its new system.\r\n\
$ErrorActionPreference = 'Stop'\r\n\
$cfg = Join-Path $env:SystemDrive 'parc\\agent.json'\r\n\
$agent = Get-Content -Raw $cfg | ConvertFrom-Json\r\n\
for ($i = 0; $i -lt 60; $i++) {\r\n\
  try {\r\n\
    $r = Invoke-WebRequest -UseBasicParsing -Method Post -Uri ($agent.server.TrimEnd('/') + '/api/v1/agent/first-boot') `\r\n\
      -Headers @{ Authorization = 'Bearer ' + $agent.token } -ContentType 'application/json' -Body '{}'\r\n\
    if ($r.StatusCode -eq 200) { Remove-Item -Force $cfg; Write-Output 'parc: first boot reported'; exit 0 }\r\n\
  } catch {\r\n\
    $code = $_.Exception.Response.StatusCode.value__\r\n\
    if ($code -eq 401 -or $code -eq 409) { Remove-Item -Force $cfg; Write-Error \"parc: the appliance answered $code\"; exit 1 }\r\n\
  }\r\n\
  Start-Sleep -Seconds 10\r\n\
}\r\n\
exit 1\r\n";

/// Finds the Windows system partition, mounts it, writes the customisation, unmounts.
pub fn apply(
    api: &AgentApi,
    disk: &Path,
    manifest: &Manifest,
    c: &Customisation,
    first_boot: &FirstBoot,
    work: &Path,
) -> Result<Applied, ProfileError> {
    unattend::validate_computer_name(c.hostname)
        .map_err(|e| ProfileError::Windows(format!("hostname {:?}: {e}", c.hostname)))?;
    let p = system_partition(disk, manifest)?;
    let mnt = Ntfs3g::mount(disk, p, &work.join(format!("p{}", p.number)))?;
    let root = mnt.dir.clone();
    let mut applied = Applied { root_partition: p.number, ..Default::default() };

    let answer = ci_path(&root, "Windows/Panther/unattend.xml")?;
    let existing = read_if_exists(&answer)?;
    let settings = unattend::Settings {
        computer_name: c.hostname.to_string(),
        time_zone: c.time_zone.to_string(),
        join_blob: c.join_blob.map(str::to_string),
        extra: Vec::new(),
    };
    let merged = unattend::merge(existing.as_deref(), &settings, ARCH)
        .map_err(|e| ProfileError::Windows(format!("{}: {e}", answer.display())))?;
    write_new(&answer, &merged)?;

    let parc = ci_path(&root, "parc")?;
    for f in api.profile_files()? {
        let bytes = api.profile_file(&f.source)?;
        if f.dest == ".parc-first-boot" {
            write_new(&parc.join("first-boot.ps1"), &bytes)?;
            applied.first_boot_script = true;
        } else {
            write_new(&inside(&parc, &f.dest)?, &bytes)?;
            applied.files += 1;
        }
    }
    write_new(&parc.join("firstboot.cmd"), FIRSTBOOT_CMD.as_bytes())?;
    write_new(&parc.join("report-first-boot.ps1"), REPORT_PS1.as_bytes())?;
    let agent = serde_json::json!({ "server": first_boot.server, "token": first_boot.token });
    write_new(&parc.join("agent.json"), agent.to_string().as_bytes())?;

    let script = ci_path(&root, "Windows/Setup/Scripts/SetupComplete.cmd")?;
    let existing = read_if_exists(&script)?;
    let merged = setupcomplete::merge(existing.as_deref(), CALL_LINE)
        .map_err(|e| ProfileError::Windows(format!("{}: {e}", script.display())))?;
    write_new(&script, &merged)?;
    mnt.unmount()?;
    Ok(applied)
}

/// The NTFS partition of the image holding `Windows\System32`, read from the disk just written.
fn system_partition<'m>(disk: &Path, manifest: &'m Manifest) -> Result<&'m Partition, ProfileError> {
    let file = std::fs::File::open(disk).map_err(crate::profile::io(format!("opening {}", disk.display())))?;
    let mut why = Vec::new();
    for p in manifest.partitions.iter().filter(|p| p.fs == FsKind::Ntfs) {
        match ntfs::exists(&Slice::new(&file, p.start, p.length), p.length, &["Windows", "System32"]) {
            Ok(true) => return Ok(p),
            Ok(false) => why.push(format!("partition {} has no Windows\\System32", p.number)),
            Err(e) => why.push(format!("partition {}: {e}", p.number)),
        }
    }
    Err(ProfileError::Windows(format!(
        "no Windows system partition (NTFS with Windows\\System32) in the image written to {}: {}",
        disk.display(),
        if why.is_empty() { "no NTFS partition".to_string() } else { why.join("; ") }
    )))
}

/// An NTFS partition mounted by ntfs-3g in the foreground; the loop device is freed and the
/// process waited for (it flushes on exit) when unmounted.
struct Ntfs3g {
    dir: PathBuf,
    child: Option<Child>,
    _loop: LoopDevice,
}

impl Ntfs3g {
    fn mount(disk: &Path, p: &Partition, at: &Path) -> Result<Ntfs3g, ProfileError> {
        let io = crate::profile::io;
        let dev = LoopDevice::attach(disk, p.start, p.length).map_err(io(format!(
            "attaching a loop device over partition {} of {}",
            p.number,
            disk.display()
        )))?;
        std::fs::create_dir_all(at).map_err(io(format!("creating {}", at.display())))?;
        // `inherit`: new files take the ACL of their Windows directory, as files Windows makes do.
        let child = Command::new("ntfs-3g")
            .args(["-o", "rw,permissions,inherit,no_detach"])
            .arg(&dev.path)
            .arg(at)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                ProfileError::Windows(format!("starting ntfs-3g (is it in this netboot environment?): {e}"))
            })?;
        let mut m = Ntfs3g { dir: at.to_path_buf(), child: Some(child), _loop: dev };
        let started = Instant::now();
        while !is_mounted(at) {
            if let Some(status) = m.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                let err = m.stderr();
                m.child = None;
                return Err(ProfileError::Windows(format!(
                    "ntfs-3g could not mount partition {} ({status}): {}",
                    p.number,
                    err.trim()
                )));
            }
            if started.elapsed() > NTFS3G_WAIT {
                return Err(ProfileError::Windows(format!("ntfs-3g did not mount partition {} in 60 s", p.number)));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(m)
    }

    fn stderr(&mut self) -> String {
        let mut s = String::new();
        if let Some(e) = self.child.as_mut().and_then(|c| c.stderr.as_mut()) {
            let _ = e.read_to_string(&mut s);
        }
        s
    }

    /// Unmounts and waits for ntfs-3g to write everything out and exit cleanly.
    fn unmount(mut self) -> Result<(), ProfileError> {
        nix::unistd::sync();
        nix::mount::umount2(&self.dir, nix::mount::MntFlags::empty())
            .map_err(|e| ProfileError::Windows(format!("unmounting {}: {e}", self.dir.display())))?;
        let mut child = self.child.take().expect("mounted");
        let started = Instant::now();
        loop {
            match child.try_wait() {
                Ok(Some(s)) if s.success() => return Ok(()),
                Ok(Some(s)) => {
                    self.child = Some(child);
                    let err = self.stderr();
                    self.child = None;
                    return Err(ProfileError::Windows(format!("ntfs-3g ended with {s}: {}", err.trim())));
                }
                Ok(None) if started.elapsed() < NTFS3G_WAIT => std::thread::sleep(Duration::from_millis(50)),
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(ProfileError::Windows("ntfs-3g did not exit 60 s after unmounting".into()));
                }
            }
        }
    }
}

impl Drop for Ntfs3g {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = nix::mount::umount2(&self.dir, nix::mount::MntFlags::MNT_DETACH);
            wait_or_kill(&mut c, NTFS3G_WAIT);
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

fn wait_or_kill(c: &mut Child, limit: Duration) {
    let started = Instant::now();
    while matches!(c.try_wait(), Ok(None)) {
        if started.elapsed() > limit {
            let _ = c.kill();
            let _ = c.wait();
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn is_mounted(at: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else { return false };
    let want = at.to_string_lossy();
    text.lines().any(|l| l.split(' ').nth(4) == Some(&want))
}

/// `rel` under `root` with each existing component found as Windows would (ignoring case),
/// missing ones as given. A component that exists as a symbolic link (a reparse point planted
/// in the image) is refused: the write must stay where it says.
fn ci_path(root: &Path, rel: &str) -> Result<PathBuf, ProfileError> {
    let mut at = root.to_path_buf();
    for name in rel.split('/') {
        let found = std::fs::read_dir(&at)
            .ok()
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name())
            .find(|n| n.to_string_lossy().eq_ignore_ascii_case(name));
        at = at.join(found.as_deref().unwrap_or(name.as_ref()));
        if std::fs::symlink_metadata(&at).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(ProfileError::UnsafePath { path: at.display().to_string() });
        }
    }
    Ok(at)
}

/// `dest` under `root` as [`crate::profile::inside`] allows it, components found ignoring case.
fn inside(root: &Path, dest: &str) -> Result<PathBuf, ProfileError> {
    let rel = crate::profile::inside(Path::new(""), dest)?;
    ci_path(root, &rel.to_string_lossy())
}

fn read_if_exists(p: &Path) -> Result<Option<Vec<u8>>, ProfileError> {
    match std::fs::read(p) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ProfileError::Io { what: format!("reading {}", p.display()), source: e }),
    }
}

fn write_new(path: &Path, bytes: &[u8]) -> Result<(), ProfileError> {
    crate::profile::write_file(path, bytes, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_found_ignoring_case_and_symlinks_refused() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("WINDOWS/panther")).unwrap();
        assert_eq!(
            ci_path(d.path(), "Windows/Panther/unattend.xml").unwrap(),
            d.path().join("WINDOWS/panther/unattend.xml")
        );
        assert_eq!(ci_path(d.path(), "parc/x").unwrap(), d.path().join("parc/x"));
        std::os::unix::fs::symlink("/etc", d.path().join("WINDOWS/Setup")).unwrap();
        assert!(matches!(
            ci_path(d.path(), "Windows/Setup/Scripts/SetupComplete.cmd"),
            Err(ProfileError::UnsafePath { .. })
        ));
        assert!(inside(d.path(), "../x").is_err());
    }

    #[test]
    fn batch_and_powershell_are_crlf() {
        for text in [FIRSTBOOT_CMD, REPORT_PS1] {
            assert!(text.split("\r\n").all(|l| !l.contains('\n')), "{text}");
            assert!(text.is_ascii());
        }
        assert!(FIRSTBOOT_CMD.contains("report-first-boot.ps1") && FIRSTBOOT_CMD.contains("Panther\\unattend.xml"));
    }
}

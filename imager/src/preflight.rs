//! The pre-flight gate of a capture: what makes a partition unfit to be captured, found before
//! anything is stored, each finding saying what to do. Reads only the partitions' own
//! structures (pure over `ReadAt`).
//!
//! Checked: BitLocker (the content is ciphertext); an NTFS volume marked dirty or mid-chkdsk, or
//! whose journal was not closed (its `$Bitmap` may lag the journal, so used clusters could be
//! missed); a hibernated session or Fast Startup (Windows would resume a session that no longer
//! matches the disk); a Windows system sysprep did not generalize (every copy would share its
//! identity). See `imager/WINDOWS-RESEARCH.md` §2.

use serde::Serialize;

use crate::fs::ntfs::{self, state};
use crate::fs::FsKind;
use crate::io::ReadAt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The capture does not start.
    Refuse,
    /// Reported; the capture goes on.
    Warn,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub partition: u32,
    pub check: &'static str,
    pub severity: Severity,
    /// What was found and what to do.
    pub message: String,
}

/// BitLocker writes this OEM id where NTFS has "NTFS    ".
const BITLOCKER_OEM: &[u8; 8] = b"-FVE-FS-";

/// The findings for one partition of `len` bytes that the mapper recognised as `fs`.
/// `allow_not_generalized` turns the sysprep refusal into a warning.
pub fn check(dev: &dyn ReadAt, len: u64, partition: u32, fs: FsKind, allow_not_generalized: bool) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut add = |check: &'static str, severity: Severity, message: String| {
        out.push(Finding { partition, check, severity, message })
    };
    let mut oem = [0u8; 8];
    if len >= 512 && dev.read_exact_at(&mut oem, 3).is_ok() && &oem == BITLOCKER_OEM {
        add(
            "bitlocker",
            Severity::Refuse,
            format!(
                "partition {partition} is encrypted with BitLocker: parc would store ciphertext. In Windows, run \
                 `manage-bde -off C:` and wait until `manage-bde -status` says Fully Decrypted, then capture again"
            ),
        );
    }
    if fs != FsKind::Ntfs {
        return out;
    }
    // An unreadable $Volume is the mapper's business (it falls back and says why).
    if let Ok(flags) = ntfs::volume_flags(dev, len) {
        if flags & (ntfs::VOLUME_IS_DIRTY | ntfs::VOLUME_CHKDSK_UNDERWAY) != 0 {
            add(
                "dirty",
                Severity::Refuse,
                format!(
                    "the NTFS volume of partition {partition} is marked dirty (Windows did not shut down cleanly, or \
                     chkdsk is pending): its allocation map may be stale. In Windows run `chkdsk C: /f`, restart \
                     twice, shut down fully (`shutdown /s /t 0`), then capture again"
                ),
            );
        }
    }
    const FULL_SHUTDOWN: &str = "start Windows on this machine, then shut it down fully with `shutdown /s /f /t 0` \
                                 (or turn Fast Startup off for good with `powercfg /h off`), and capture again";
    match state::hibernation(dev, len) {
        Ok(Some(sig)) => add(
            "hibernated",
            Severity::Refuse,
            format!(
                "partition {partition} holds a hibernated Windows session (hiberfil.sys starts with {sig:?}: \
                 hibernation or Fast Startup); every copy would try to resume it: {FULL_SHUTDOWN}"
            ),
        ),
        Ok(None) => {}
        Err(e) => {
            add("hibernated", Severity::Warn, format!("partition {partition}: hiberfil.sys could not be read ({e})"))
        }
    }
    match state::journal(dev, len) {
        Ok(state::Journal::Empty | state::Journal::Clean) => {}
        Ok(state::Journal::CachedByWindows) => add(
            "journal",
            Severity::Refuse,
            format!(
                "the NTFS journal of partition {partition} says Windows kept metadata in its cache (Fast Startup \
                 or hibernation): the allocation map on disk is not final: {FULL_SHUTDOWN}"
            ),
        ),
        Ok(state::Journal::Unclean) => add(
            "journal",
            Severity::Refuse,
            format!(
                "the NTFS journal of partition {partition} was not closed (a power cut or a crash): start Windows \
                 so that it replays the journal, shut it down with `shutdown /s /f /t 0`, then capture again"
            ),
        ),
        Err(e) => add("journal", Severity::Warn, format!("partition {partition}: $LogFile could not be read ({e})")),
    }
    let not_generalized = |what: String| {
        let how = "run `C:\\Windows\\System32\\Sysprep\\sysprep.exe /generalize /oobe /shutdown` on the \
                   reference machine and capture it after it shuts down";
        if allow_not_generalized {
            (
                Severity::Warn,
                format!("{what}: captured anyway (--allow-not-generalized); every copy keeps this machine's identity"),
            )
        } else {
            (
                Severity::Refuse,
                format!(
                    "{what}: every copy would share this machine's identity; {how}, or capture with \
                                        --allow-not-generalized for a single-machine backup"
                ),
            )
        }
    };
    match state::image_state(dev, len) {
        Ok(state::ImageState::NotWindows) => {}
        Ok(s) if s.generalized() => {}
        Ok(state::ImageState::Is(v)) if v == "IMAGE_STATE_UNDEPLOYABLE" => add(
            "sysprep",
            Severity::Refuse,
            format!(
                "Windows on partition {partition} is IMAGE_STATE_UNDEPLOYABLE (sysprep or Setup failed or is under \
                 way): boot it, finish or repeat sysprep, then capture again"
            ),
        ),
        Ok(state::ImageState::Is(v)) => {
            let (sev, msg) = not_generalized(format!("Windows on partition {partition} is not generalized ({v})"));
            add("sysprep", sev, msg)
        }
        Ok(state::ImageState::Unknown(why)) => {
            let (sev, msg) =
                not_generalized(format!("the sysprep state of Windows on partition {partition} is unknown ({why})"));
            add("sysprep", sev, msg)
        }
        Err(e) => {
            add("sysprep", Severity::Warn, format!("partition {partition}: the sysprep state could not be read ({e})"))
        }
    }
    out
}

/// Findings shown as a table: partition, check, verdict, then what was found and what to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Findings(pub Vec<Finding>);

impl std::fmt::Display for Findings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "  {:<9}  {:<10}  {:<7}  what to do", "partition", "check", "verdict")?;
        for x in &self.0 {
            let verdict = match x.severity {
                Severity::Refuse => "refused",
                Severity::Warn => "warning",
            };
            write!(f, "\n  {:<9}  {:<10}  {:<7}  {}", x.partition, x.check, verdict, x.message)?;
        }
        Ok(())
    }
}

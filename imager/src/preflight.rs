//! The pre-flight gate of a capture: what makes a partition unfit to be captured, found before
//! anything is stored, each finding saying what to do. Reads only the partitions' own
//! structures (pure over `ReadAt`).
//!
//! Checked today: BitLocker (the content is ciphertext) and an NTFS volume marked dirty or
//! mid-chkdsk (its `$Bitmap` may lag the journal, so used clusters could be missed).
//! Hibernation / Fast Startup and sysprep state need file lookups and come next
//! (`imager/WINDOWS-RESEARCH.md` §2).

use serde::Serialize;

use crate::fs::{ntfs, FsKind};
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
pub fn check(dev: &dyn ReadAt, len: u64, partition: u32, fs: FsKind) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut oem = [0u8; 8];
    if len >= 512 && dev.read_exact_at(&mut oem, 3).is_ok() && &oem == BITLOCKER_OEM {
        out.push(Finding {
            partition,
            check: "bitlocker",
            severity: Severity::Refuse,
            message: format!(
                "partition {partition} is encrypted with BitLocker: parc would store ciphertext. In Windows, run \
                 `manage-bde -off C:` and wait until `manage-bde -status` says Fully Decrypted, then capture again"
            ),
        });
    }
    if fs == FsKind::Ntfs {
        // An unreadable $Volume is the mapper's business (it falls back and says why).
        if let Ok(flags) = ntfs::volume_flags(dev, len) {
            if flags & (ntfs::VOLUME_IS_DIRTY | ntfs::VOLUME_CHKDSK_UNDERWAY) != 0 {
                out.push(Finding {
                    partition,
                    check: "dirty",
                    severity: Severity::Refuse,
                    message: format!(
                        "the NTFS volume of partition {partition} is marked dirty (Windows did not shut down cleanly, or \
                         chkdsk is pending): its allocation map may be stale. In Windows run `chkdsk C: /f`, restart \
                         twice, shut down fully (`shutdown /s /t 0`), then capture again"
                    ),
                });
            }
        }
    }
    out
}

/// Findings that stopped a capture, shown one per line: partition, check, what to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Findings(pub Vec<Finding>);

impl std::fmt::Display for Findings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, x) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "  partition {} [{}] {}", x.partition, x.check, x.message)?;
        }
        Ok(())
    }
}

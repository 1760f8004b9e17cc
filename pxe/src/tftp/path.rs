//! Mapping a requested TFTP file name onto the served root, refusing everything that escapes it.
//!
//! Rules, in order:
//! 1. A name containing NUL or a control character is refused (access violation).
//! 2. `\` is read as `/`, as tftpd-hpa's remapping does for Windows clients (`boot\pxeboot.n12`).
//! 3. Leading `/` are dropped: `/ipxe.efi` means `<root>/ipxe.efi`. Firmware and pxelinux
//!    configurations commonly send absolute names and tftpd-hpa with `-s` (chroot to the root)
//!    serves them this way; a name therefore can never point outside the root by being absolute.
//! 4. Empty and `.` components are skipped; any `..` component is refused outright (access
//!    violation), even when it would stay inside the root: no legitimate boot loader needs it.
//! 5. The result is canonicalized (resolving symlinks) and must still lie inside the canonical
//!    root; a symlink leading out is an access violation. Missing files and anything that is not
//!    a regular file are "file not found".
//!
//! Canonicalization touches the filesystem but nothing else; the served root is trusted not to be
//! writable by clients (the server is read-only), so the check-then-open window is not a concern.

use std::io;
use std::path::{Component, Path, PathBuf};

/// Why a requested name was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PathError {
    /// The name tries to leave the root or contains bytes no file name should.
    #[error("access violation: {reason}")]
    AccessViolation {
        /// Human-readable reason.
        reason: &'static str,
    },
    /// No regular file by that name under the root.
    #[error("file not found")]
    NotFound,
    /// The root itself could not be resolved.
    #[error("TFTP root {root} unusable: {source}")]
    Root {
        /// The configured root.
        root: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
}

/// Lexically cleans a requested name into a relative path (rules 1–4), without touching the disk.
pub fn clean(requested: &str) -> Result<PathBuf, PathError> {
    if requested.bytes().any(|b| b == 0 || b.is_ascii_control()) {
        return Err(PathError::AccessViolation { reason: "control character in file name" });
    }
    let remapped = requested.replace('\\', "/");
    let mut out = PathBuf::new();
    for part in remapped.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(PathError::AccessViolation { reason: "'..' in file name" }),
            p => out.push(p),
        }
    }
    // Defence in depth: what is left must be plain components only.
    if out.as_os_str().is_empty() {
        return Err(PathError::NotFound);
    }
    if !out.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(PathError::AccessViolation { reason: "file name is not a plain path" });
    }
    Ok(out)
}

/// Resolves `requested` under `root` (rules 1–5) and returns the canonical path of a regular file.
pub fn resolve(root: &Path, requested: &str) -> Result<PathBuf, PathError> {
    let relative = clean(requested)?;
    let root = root.canonicalize().map_err(|source| PathError::Root { root: root.to_owned(), source })?;
    let full = root.join(relative).canonicalize().map_err(|_| PathError::NotFound)?;
    if !full.starts_with(&root) {
        return Err(PathError::AccessViolation { reason: "file name leads outside the TFTP root" });
    }
    match full.metadata() {
        Ok(m) if m.is_file() => Ok(full),
        _ => Err(PathError::NotFound),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn root() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("sub")).unwrap();
        fs::write(dir.path().join("ipxe.efi"), b"efi").unwrap();
        fs::write(dir.path().join("sub/file"), b"sub").unwrap();
        dir
    }

    #[test]
    fn plain_leading_slash_and_backslash_names_resolve_inside() {
        let dir = root();
        let canon = dir.path().canonicalize().unwrap();
        for name in ["ipxe.efi", "/ipxe.efi", "//ipxe.efi", "./ipxe.efi", "\\ipxe.efi"] {
            assert_eq!(resolve(dir.path(), name).unwrap(), canon.join("ipxe.efi"), "{name}");
        }
        for name in ["sub/file", "sub\\file", "/sub//file", "sub/./file"] {
            assert_eq!(resolve(dir.path(), name).unwrap(), canon.join("sub/file"), "{name}");
        }
    }

    #[test]
    fn escapes_are_access_violations() {
        let dir = root();
        for name in [
            "..",
            "../etc/passwd",
            "sub/../ipxe.efi",
            "sub/../../x",
            "..\\..\\windows",
            "/../etc",
            "a\0b",
            "a\nb",
            "\\..\\x",
        ] {
            assert!(
                matches!(resolve(dir.path(), name), Err(PathError::AccessViolation { .. })),
                "{name:?} -> {:?}",
                resolve(dir.path(), name)
            );
        }
    }

    #[test]
    fn absolute_names_stay_under_the_root() {
        let dir = root();
        // /etc/passwd means <root>/etc/passwd, which does not exist.
        assert!(matches!(resolve(dir.path(), "/etc/passwd"), Err(PathError::NotFound)));
        assert!(matches!(resolve(dir.path(), "C:\\Windows\\win.ini"), Err(PathError::NotFound)));
    }

    #[test]
    fn symlinks_leading_out_are_refused_and_inside_ones_followed() {
        let dir = root();
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("secret"), b"s").unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), dir.path().join("out")).unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("outdir")).unwrap();
        std::os::unix::fs::symlink("ipxe.efi", dir.path().join("in")).unwrap();
        assert!(matches!(resolve(dir.path(), "out"), Err(PathError::AccessViolation { .. })));
        assert!(matches!(resolve(dir.path(), "outdir/secret"), Err(PathError::AccessViolation { .. })));
        assert_eq!(resolve(dir.path(), "in").unwrap(), dir.path().canonicalize().unwrap().join("ipxe.efi"));
    }

    #[test]
    fn missing_files_and_directories_are_not_found() {
        let dir = root();
        for name in ["nope", "sub", "/", "", "sub/", "ipxe.efi/x"] {
            assert!(matches!(resolve(dir.path(), name), Err(PathError::NotFound)), "{name:?}");
        }
    }

    #[test]
    fn unusable_root_is_reported() {
        assert!(matches!(resolve(Path::new("/nonexistent/parc-root"), "x"), Err(PathError::Root { .. })));
    }
}

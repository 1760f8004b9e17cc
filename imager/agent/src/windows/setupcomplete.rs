//! Adding parc's first-boot call to `%WINDIR%\Setup\Scripts\SetupComplete.cmd`.
//!
//! Windows runs that script as Local System once Setup has finished, before the logon screen; it ignores
//! its exit code, and domain Group Policy waits for it (WINDOWS-RESEARCH.md §3.5). An image may already
//! carry one, so [`merge`] edits it rather than replacing it:
//! - **One parc block**, between the marker lines `rem parc:begin` and `rem parc:end`. A second merge (an
//!   agent retry, or an image re-captured from a machine parc deployed) removes every old block and writes
//!   one new one, so merging is idempotent. A marker without its partner is refused rather than guessed at:
//!   deleting "to the end of the file" could eat the image's own steps.
//! - **Before a trailing `exit`**: a script may end with `exit` or `exit /b N` (§3.5), and lines after it
//!   would never run. The block goes right before such a last line — and before a last `goto :eof`, which
//!   ends a script the same way — otherwise it is appended. The image's own steps thus still run first, and
//!   parc's call (which reports back and deletes the cached answer file with its join secret, §3.4) runs last.
//!   A script that exits earlier and keeps subroutines after its `exit` is not recognised: the block would
//!   be appended after them and never run.
//! - **Bytes, not text**: batch files are ASCII or an ANSI code page, so existing lines are kept byte for
//!   byte, line endings included. Only the block is written, with CRLF (§3.5); if the last existing line has
//!   no line ending, one CRLF is added so the block does not join it. The call line must be ASCII: cmd.exe
//!   reads the file in the machine's OEM code page, where UTF-8 paths would be mangled.
//! - Refused: files over 256 KiB (setup scripts are small; this is not one) and files with a NUL byte
//!   (usually UTF-16, which cmd.exe cannot run).
//! - Not handled here: Windows skips SetupComplete.cmd on images activated with an OEM product key (except
//!   Enterprise and Server editions; §3.5). The caller must report that case or use the answer file instead.

/// Larger than any real setup script.
pub const MAX_SIZE: usize = 256 * 1024;
/// First line of parc's block.
pub const BEGIN: &str = "rem parc:begin";
/// Last line of parc's block.
pub const END: &str = "rem parc:end";
const CRLF: &[u8] = b"\r\n";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetupCompleteError {
    #[error(
        "SetupComplete.cmd is {size} bytes, more than the {limit} a setup script can plausibly need; check the image's \
         Windows\\Setup\\Scripts\\SetupComplete.cmd"
    )]
    TooLarge { size: usize, limit: usize },
    #[error(
        "SetupComplete.cmd has a NUL byte at byte {offset}, so it is not an ASCII/ANSI batch file (UTF-16?); cmd.exe \
         cannot run it either: re-save it as ANSI in the image"
    )]
    ContainsNul { offset: usize },
    #[error("the call line {line:?} {reason}")]
    InvalidCallLine { line: String, reason: &'static str },
    #[error(
        "SetupComplete.cmd line {line} opens a parc block (`rem parc:begin`) that is never closed; add the `rem \
         parc:end` line or remove the block in the image"
    )]
    UnclosedBlock { line: usize },
    #[error(
        "SetupComplete.cmd line {line} closes a parc block (`rem parc:end`) that was never opened; remove that line in \
         the image"
    )]
    StrayEnd { line: usize },
    #[error(
        "SetupComplete.cmd line {line} opens a parc block inside the one opened on line {outer}; remove the extra `rem \
         parc:begin` in the image"
    )]
    NestedBlock { line: usize, outer: usize },
}

/// Returns `existing` (or a new script) with exactly one parc block holding `call_line`, e.g.
/// `call "%SystemDrive%\parc\firstboot.cmd"`.
pub fn merge(existing: Option<&[u8]>, call_line: &str) -> Result<Vec<u8>, SetupCompleteError> {
    check_call_line(call_line)?;
    let script = existing.unwrap_or_default();
    check_script(script)?;
    let kept = without_parc_blocks(script)?;
    let at = trailing_exit(&kept).unwrap_or(kept.len());
    Ok(assemble(&kept, at, call_line))
}

fn check_call_line(call_line: &str) -> Result<(), SetupCompleteError> {
    let bad = |reason| Err(SetupCompleteError::InvalidCallLine { line: call_line.to_string(), reason });
    if call_line.contains(['\r', '\n']) {
        return bad("contains a line break; it must be a single line");
    }
    if call_line.contains('\0') {
        return bad("contains a NUL character");
    }
    if call_line.trim().is_empty() {
        return bad("is empty");
    }
    if !call_line.is_ascii() {
        return bad("is not ASCII; cmd.exe would read it in the OEM code page, so use an ASCII path");
    }
    if is_marker(call_line.as_bytes(), BEGIN) || is_marker(call_line.as_bytes(), END) {
        return bad("is one of parc's own marker lines");
    }
    Ok(())
}

fn check_script(script: &[u8]) -> Result<(), SetupCompleteError> {
    if script.len() > MAX_SIZE {
        return Err(SetupCompleteError::TooLarge { size: script.len(), limit: MAX_SIZE });
    }
    match script.iter().position(|&b| b == 0) {
        Some(offset) => Err(SetupCompleteError::ContainsNul { offset }),
        None => Ok(()),
    }
}

/// Lines with their own endings; the last one may have none. cmd.exe ends lines at LF, with or without CR.
fn lines(script: &[u8]) -> impl Iterator<Item = &[u8]> {
    script.split_inclusive(|&b| b == b'\n')
}

fn is_marker(line: &[u8], marker: &str) -> bool {
    line.trim_ascii().eq_ignore_ascii_case(marker.as_bytes())
}

/// The script's lines without any parc block.
fn without_parc_blocks(script: &[u8]) -> Result<Vec<&[u8]>, SetupCompleteError> {
    let mut kept = Vec::new();
    let mut open: Option<usize> = None;
    for (number, line) in (1..).zip(lines(script)) {
        match (open, is_marker(line, BEGIN), is_marker(line, END)) {
            (None, true, _) => open = Some(number),
            (Some(outer), true, _) => return Err(SetupCompleteError::NestedBlock { line: number, outer }),
            (None, _, true) => return Err(SetupCompleteError::StrayEnd { line: number }),
            (Some(_), _, true) => open = None,
            (None, false, false) => kept.push(line),
            (Some(_), false, false) => {}
        }
    }
    match open {
        Some(line) => Err(SetupCompleteError::UnclosedBlock { line }),
        None => Ok(kept),
    }
}

/// Index of the last non-blank line if it ends the script.
fn trailing_exit(lines: &[&[u8]]) -> Option<usize> {
    let last = lines.iter().rposition(|line| !line.trim_ascii().is_empty())?;
    ends_script(lines[last]).then_some(last)
}

/// `exit`, `exit /b`, `EXIT /B %ERRORLEVEL%`, `@exit 1`, `goto :eof`, `goto:EOF`. The arguments do not matter:
/// whatever they are, lines after this one do not run.
fn ends_script(line: &[u8]) -> bool {
    let text = line.trim_ascii();
    let text = text.strip_prefix(b"@").unwrap_or(text).trim_ascii_start();
    let is_exit = command_args(text, b"exit").is_some_and(|args| args.first() != Some(&b':'));
    let is_goto_eof = command_args(text, b"goto").is_some_and(|args| args.trim_ascii().eq_ignore_ascii_case(b":eof"));
    is_exit || is_goto_eof
}

/// What follows `command` (any case) when the line runs that command; cmd.exe accepts `exit/b` and `goto:eof`.
fn command_args<'a>(text: &'a [u8], command: &[u8]) -> Option<&'a [u8]> {
    let (word, args) = text.split_at_checked(command.len())?;
    let separated = args.first().is_none_or(|b| b.is_ascii_whitespace() || b"/:".contains(b));
    (word.eq_ignore_ascii_case(command) && separated).then_some(args)
}

fn assemble(kept: &[&[u8]], at: usize, call_line: &str) -> Vec<u8> {
    let mut out: Vec<u8> = kept[..at].concat();
    if !out.is_empty() && !out.ends_with(b"\n") {
        out.extend_from_slice(CRLF);
    }
    for line in [BEGIN, call_line, END] {
        out.extend_from_slice(line.as_bytes());
        out.extend_from_slice(CRLF);
    }
    out.extend(kept[at..].concat());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const CALL: &str = r#"call "%SystemDrive%\parc\firstboot.cmd""#;
    const BLOCK: &str = "rem parc:begin\r\ncall \"%SystemDrive%\\parc\\firstboot.cmd\"\r\nrem parc:end\r\n";

    fn merged(existing: &[u8]) -> Vec<u8> {
        merge(Some(existing), CALL).expect("merge succeeds")
    }

    fn text(bytes: &[u8]) -> String {
        String::from_utf8_lossy(bytes).into_owned()
    }

    fn assert_idempotent(existing: Option<&[u8]>) {
        let once = merge(existing, CALL).unwrap();
        let twice = merge(Some(&once), CALL).unwrap();
        assert_eq!(text(&once), text(&twice));
    }

    fn blocks(script: &[u8]) -> usize {
        lines(script).filter(|l| is_marker(l, BEGIN)).count()
    }

    #[test]
    fn no_file_gives_the_block_alone() {
        assert_eq!(text(&merge(None, CALL).unwrap()), BLOCK);
        assert_eq!(text(&merged(b"")), BLOCK);
        assert_idempotent(None);
    }

    #[test]
    fn appended_when_the_script_has_no_exit() {
        let script = b"@echo off\r\nreg import C:\\setup\\defaults.reg\r\n";
        assert_eq!(text(&merged(script)), format!("{}{BLOCK}", text(script)));
        assert_idempotent(Some(script));
    }

    #[test]
    fn inserted_before_a_trailing_exit() {
        for exit in [
            "exit",
            "EXIT",
            "exit /b",
            "Exit /B 0",
            "exit /b %ERRORLEVEL%",
            "exit 3",
            "@exit 1",
            "  exit/b  ",
            "goto :eof",
            "GOTO:EOF",
        ] {
            let script = format!("@echo off\r\ncall C:\\setup\\image.cmd\r\n{exit}\r\n");
            let expected = format!("@echo off\r\ncall C:\\setup\\image.cmd\r\n{BLOCK}{exit}\r\n");
            assert_eq!(text(&merged(script.as_bytes())), expected, "{exit:?}");
            assert_idempotent(Some(script.as_bytes()));
        }
    }

    #[test]
    fn trailing_blank_lines_stay_after_the_exit() {
        let script = b"echo one\r\nexit /b 0\r\n\r\n   \r\n";
        let expected = format!("echo one\r\n{BLOCK}exit /b 0\r\n\r\n   \r\n");
        assert_eq!(text(&merged(script)), expected);
        assert_idempotent(Some(script));
    }

    #[test]
    fn exit_without_line_ending_is_kept_as_it_is() {
        let script = b"echo one\r\nexit";
        assert_eq!(text(&merged(script)), format!("echo one\r\n{BLOCK}exit"));
        assert_idempotent(Some(script));
    }

    #[test]
    fn words_that_only_start_like_exit_are_not_exits() {
        for last in ["exiting.cmd", "gotoeof", "goto :end", "echo exit", "rem exit", "exit:label"] {
            let script = format!("echo one\r\n{last}\r\n");
            assert_eq!(text(&merged(script.as_bytes())), format!("{script}{BLOCK}"), "{last:?}");
        }
    }

    #[test]
    fn exit_in_the_middle_is_not_trailing() {
        let script = b"if exist C:\\skip exit /b 0\r\nexit\r\necho after\r\n";
        assert_eq!(text(&merged(script)), format!("{}{BLOCK}", text(script)));
    }

    #[test]
    fn last_line_without_line_ending_gets_one() {
        let script = b"echo one\r\necho two";
        assert_eq!(text(&merged(script)), format!("echo one\r\necho two\r\n{BLOCK}"));
        assert_idempotent(Some(script));
    }

    #[test]
    fn existing_lines_are_kept_byte_for_byte() {
        // LF-only lines and an ANSI (cp1252) byte stay as they were; only the block uses CRLF.
        let script = b"@echo off\nrem caf\xe9\n  set X=1  \nexit /b\n";
        let out = merged(script);
        let expected = [&b"@echo off\nrem caf\xe9\n  set X=1  \n"[..], BLOCK.as_bytes(), b"exit /b\n"].concat();
        assert_eq!(out, expected);
        assert_idempotent(Some(script));
    }

    #[test]
    fn a_second_merge_replaces_the_block() {
        let first = merged(b"echo one\r\nexit\r\n");
        let second = merge(Some(&first), "call C:\\parc\\other.cmd").unwrap();
        assert_eq!(text(&second), "echo one\r\nrem parc:begin\r\ncall C:\\parc\\other.cmd\r\nrem parc:end\r\nexit\r\n");
    }

    #[test]
    fn blocks_anywhere_collapse_into_one_before_the_exit() {
        let script = format!("{BLOCK}echo one\r\nREM PARC:BEGIN\r\ncall old.cmd\r\n  rem parc:end\r\nexit\r\n{BLOCK}");
        let out = merged(script.as_bytes());
        assert_eq!(text(&out), format!("echo one\r\n{BLOCK}exit\r\n"));
        assert_eq!(blocks(&out), 1);
    }

    #[test]
    fn block_is_crlf_even_in_an_lf_file() {
        let out = merged(b"echo one\n");
        assert_eq!(text(&out), format!("echo one\n{BLOCK}"));
    }

    #[test]
    fn broken_blocks_are_refused() {
        let unclosed = b"echo one\r\nrem parc:begin\r\ncall x.cmd\r\nexit\r\n";
        assert!(matches!(merge(Some(unclosed), CALL), Err(SetupCompleteError::UnclosedBlock { line: 2 })));
        let stray = b"echo one\r\nrem parc:end\r\n";
        assert!(matches!(merge(Some(stray), CALL), Err(SetupCompleteError::StrayEnd { line: 2 })));
        let nested = b"rem parc:begin\r\nrem parc:begin\r\nrem parc:end\r\n";
        assert!(matches!(merge(Some(nested), CALL), Err(SetupCompleteError::NestedBlock { line: 2, outer: 1 })));
    }

    #[test]
    fn oversized_script_is_refused() {
        let script = vec![b'x'; MAX_SIZE + 1];
        assert!(matches!(merge(Some(&script), CALL), Err(SetupCompleteError::TooLarge { .. })));
        let script = vec![b'x'; MAX_SIZE];
        assert!(merge(Some(&script), CALL).is_ok());
    }

    #[test]
    fn nul_bytes_are_refused() {
        let utf16: Vec<u8> = "echo one\r\n".encode_utf16().flat_map(u16::to_le_bytes).collect();
        let err = merge(Some(&utf16), CALL).unwrap_err();
        assert!(matches!(err, SetupCompleteError::ContainsNul { offset: 1 }), "{err}");
    }

    #[test]
    fn bad_call_lines_are_refused() {
        for line in [
            "call a.cmd\r\nformat c:",
            "call a.cmd\n",
            "a\rb",
            "",
            "   ",
            "call C:\\caf\u{e9}.cmd",
            "a\0b",
            "REM parc:end",
        ] {
            let err = merge(None, line).unwrap_err();
            assert!(matches!(err, SetupCompleteError::InvalidCallLine { .. }), "{line:?}: {err}");
        }
    }
}

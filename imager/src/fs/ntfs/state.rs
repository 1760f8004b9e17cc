//! How Windows left a volume, as far as a capture must know: hibernated (or Fast Startup), an
//! unfinished journal, and whether the system was generalized by sysprep. Read from the
//! volume's own files; the pre-flight gate turns these into findings
//! (`imager/WINDOWS-RESEARCH.md` §2).

use super::{corrupt, Volume};
use crate::fs::FsError;
use crate::io::{le, ReadAt};

/// The first four bytes of `hiberfil.sys` when it holds a session to resume: `hibr`/`HIBR`
/// (hibernation or Fast Startup), `RSTR` (resume under way), `HORM` (hibernate once, resume
/// many). Zeros and `wake` mean Windows started normally since.
const RESUMABLE: [&[u8; 4]; 4] = [b"hibr", b"HIBR", b"RSTR", b"HORM"];

/// `Some(signature)` when `hiberfil.sys` holds a session Windows would resume.
pub fn hibernation(dev: &dyn ReadAt, len: u64) -> Result<Option<String>, FsError> {
    let vol = Volume::open(dev, len)?;
    let Some((n, rec)) = vol.lookup(&["hiberfil.sys"])? else { return Ok(None) };
    let data = vol.data(&rec, n, "hiberfil.sys")?;
    let head = vol.read(&data, 4096, "hiberfil.sys")?;
    Ok(head
        .get(..4)
        .filter(|h| RESUMABLE.iter().any(|s| &s[..] == *h))
        .map(|h| String::from_utf8_lossy(h).into_owned()))
}

/// What `$LogFile`'s restart area says about the last shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Journal {
    /// Every byte 0xFF: reset by ntfs-3g or mkntfs, nothing to replay.
    Empty,
    /// Clients closed cleanly.
    Clean,
    /// Clients still in use and the clean flag unset: a power cut or a crash.
    Unclean,
    /// Log version 2.0: Windows 8+ kept metadata in its cache (Fast Startup or hibernation).
    CachedByWindows,
}

/// Reads the two restart pages at the start of `$LogFile` (MFT record 2).
pub fn journal(dev: &dyn ReadAt, len: u64) -> Result<Journal, FsError> {
    let vol = Volume::open(dev, len)?;
    let rec = vol.record(2, "$MFT record 2 ($LogFile)")?;
    let data = vol.data(&rec, 2, "$LogFile")?;
    let head = vol.read(&data, 2 * 64 * 1024, "$LogFile")?;
    restart_state(&head).map_err(|r| corrupt(format!("$LogFile: {r}")))
}

/// The state told by the newer valid restart page of the log's first bytes.
pub fn restart_state(head: &[u8]) -> Result<Journal, String> {
    let first = head.get(..4096).ok_or("shorter than one page")?;
    if first.iter().all(|&b| b == 0xFF) {
        return Ok(Journal::Empty);
    }
    let page = le(head, 16, 4) as usize;
    if !(512..=64 * 1024).contains(&page) || !page.is_power_of_two() || 2 * page > head.len() {
        return Err(format!("restart page size {page}"));
    }
    let mut best: Option<(u64, Journal)> = None;
    let mut why = String::new();
    for i in 0..2 {
        let mut p = head[i * page..(i + 1) * page].to_vec();
        match super::record::apply_fixups(&mut p, &[b"RSTR", b"CHKD"]).and_then(|()| restart_page(&p)) {
            Ok((lsn, state)) if best.is_none_or(|(b, _)| lsn > b) => best = Some((lsn, state)),
            Ok(_) => {}
            Err(e) => why = format!("restart page {i}: {e}"),
        }
    }
    best.map(|(_, s)| s).ok_or(why)
}

/// One restart page, fixups applied: its current LSN and what it says.
fn restart_page(p: &[u8]) -> Result<(u64, Journal), String> {
    let ra = le(p, 24, 2) as usize;
    let (minor, major) = (le(p, 26, 2) as i16, le(p, 28, 2) as i16);
    if ra + 16 > p.len() || !ra.is_multiple_of(8) {
        return Err(format!("restart area at {ra}"));
    }
    let lsn = le(p, ra, 8);
    if (major, minor) == (2, 0) {
        return Ok((lsn, Journal::CachedByWindows));
    }
    if (major, minor) != (1, 1) {
        return Err(format!("log version {major}.{minor}"));
    }
    let in_use = le(p, ra + 12, 2);
    let clean = le(p, ra + 14, 2) & 0x0002 != 0;
    Ok((lsn, if in_use != 0xFFFF && !clean { Journal::Unclean } else { Journal::Clean }))
}

/// Sysprep's record of the system's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageState {
    /// No `Windows\System32` here: not a Windows system partition.
    NotWindows,
    /// A Windows system without a readable `Windows\Setup\State\State.ini`.
    Unknown(String),
    /// `ImageState=` as written (`IMAGE_STATE_GENERALIZE_RESEAL_TO_OOBE`, `IMAGE_STATE_COMPLETE`…).
    Is(String),
}

impl ImageState {
    /// Sysprep /generalize ran: the image may go to other machines.
    pub fn generalized(&self) -> bool {
        matches!(self, ImageState::Is(s) if s.starts_with("IMAGE_STATE_GENERALIZE_RESEAL"))
    }
}

pub fn image_state(dev: &dyn ReadAt, len: u64) -> Result<ImageState, FsError> {
    let vol = Volume::open(dev, len)?;
    if vol.lookup(&["Windows", "System32"])?.is_none() {
        return Ok(ImageState::NotWindows);
    }
    let Some((n, rec)) = vol.lookup(&["Windows", "Setup", "State", "State.ini"])? else {
        return Ok(ImageState::Unknown("Windows\\Setup\\State\\State.ini is missing".into()));
    };
    let text = match vol.data(&rec, n, "State.ini").and_then(|d| vol.read(&d, 64 * 1024, "State.ini")) {
        Ok(b) => decode_text(&b),
        Err(e) => return Ok(ImageState::Unknown(format!("State.ini unreadable: {e}"))),
    };
    Ok(match state_value(&text) {
        Some(v) => ImageState::Is(v),
        None => ImageState::Unknown("State.ini names no ImageState".into()),
    })
}

/// UTF-16LE with its byte-order mark, else UTF-8 (ASCII in practice).
fn decode_text(b: &[u8]) -> String {
    match b {
        [0xFF, 0xFE, rest @ ..] => super::record::utf16(rest),
        [0xEF, 0xBB, 0xBF, rest @ ..] => String::from_utf8_lossy(rest).into_owned(),
        _ => String::from_utf8_lossy(b).into_owned(),
    }
}

/// `ImageState` under `[State]`, sections and keys case-insensitive as in every INI reader.
fn state_value(text: &str) -> Option<String> {
    let mut in_state = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_state = line.eq_ignore_ascii_case("[State]");
        } else if let Some((k, v)) = line.split_once('=') {
            if in_state && k.trim().eq_ignore_ascii_case("ImageState") {
                return Some(v.trim().trim_matches('"').to_string());
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A restart page of `size` bytes with its update sequence array, version `major.minor`.
    fn restart(size: usize, major: i16, minor: i16, lsn: u64, in_use: u16, flags: u16) -> Vec<u8> {
        let mut p = vec![0u8; size];
        p[0..4].copy_from_slice(b"RSTR");
        p[4..6].copy_from_slice(&30u16.to_le_bytes());
        p[6..8].copy_from_slice(&((size / 512 + 1) as u16).to_le_bytes());
        p[16..20].copy_from_slice(&(size as u32).to_le_bytes());
        p[20..24].copy_from_slice(&4096u32.to_le_bytes());
        p[24..26].copy_from_slice(&64u16.to_le_bytes());
        p[26..28].copy_from_slice(&minor.to_le_bytes());
        p[28..30].copy_from_slice(&major.to_le_bytes());
        p[64..72].copy_from_slice(&lsn.to_le_bytes());
        p[64 + 12..64 + 14].copy_from_slice(&in_use.to_le_bytes());
        p[64 + 14..64 + 16].copy_from_slice(&flags.to_le_bytes());
        p[30..32].copy_from_slice(&[1, 0]);
        for i in 0..size / 512 {
            let end = (i + 1) * 512 - 2;
            let saved = [p[end], p[end + 1]];
            p[32 + 2 * i..34 + 2 * i].copy_from_slice(&saved);
            p[end..end + 2].copy_from_slice(&[1, 0]);
        }
        p
    }

    #[test]
    fn restart_pages_tell_the_shutdown() {
        let two = |a: Vec<u8>, b: Vec<u8>| [a, b].concat();
        assert_eq!(restart_state(&[0xFF; 8192]).unwrap(), Journal::Empty);
        let clean = restart(4096, 1, 1, 10, 0, 0x0002);
        assert_eq!(restart_state(&two(clean.clone(), clean.clone())).unwrap(), Journal::Clean);
        let closed = restart(4096, 1, 1, 10, 0xFFFF, 0);
        assert_eq!(restart_state(&two(closed.clone(), closed)).unwrap(), Journal::Clean);
        let unclean = restart(4096, 1, 1, 20, 0, 0);
        assert_eq!(
            restart_state(&two(clean.clone(), unclean.clone())).unwrap(),
            Journal::Unclean,
            "the newer page wins"
        );
        assert_eq!(restart_state(&two(unclean, clean.clone())).unwrap(), Journal::Unclean);
        let cached = restart(4096, 2, 0, 30, 0, 0x0002);
        assert_eq!(restart_state(&two(cached, clean.clone())).unwrap(), Journal::CachedByWindows);
        let mut torn = restart(4096, 2, 0, 30, 0, 0);
        torn[1022] = 9;
        assert_eq!(restart_state(&two(torn, clean)).unwrap(), Journal::Clean, "a torn page is skipped");
        assert!(restart_state(&[0u8; 8192]).is_err());
        let odd = restart(4096, 3, 0, 1, 0, 0);
        assert!(restart_state(&two(odd.clone(), odd)).unwrap_err().contains("version 3.0"));
    }

    #[test]
    fn state_ini_in_ascii_or_utf16() {
        let ini = "[State]\r\nImageState=IMAGE_STATE_GENERALIZE_RESEAL_TO_OOBE\r\n";
        assert_eq!(state_value(&decode_text(ini.as_bytes())).as_deref(), Some("IMAGE_STATE_GENERALIZE_RESEAL_TO_OOBE"));
        let wide: Vec<u8> = [0xFF, 0xFE].into_iter().chain(ini.encode_utf16().flat_map(u16::to_le_bytes)).collect();
        let s = state_value(&decode_text(&wide)).unwrap();
        assert!(ImageState::Is(s).generalized());
        assert_eq!(state_value("[Other]\nImageState=X\n"), None);
        assert_eq!(
            state_value("[state]\n imagestate = \"IMAGE_STATE_COMPLETE\"\n").as_deref(),
            Some("IMAGE_STATE_COMPLETE")
        );
        assert!(!ImageState::Is("IMAGE_STATE_COMPLETE".into()).generalized());
        assert!(!ImageState::Unknown("x".into()).generalized());
    }
}

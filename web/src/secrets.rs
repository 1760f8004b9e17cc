//! Where a profile file asks for a per-machine secret: the marker `@@parc-secret:NAME@@` in
//! the file's bytes, replaced by the secret's value when the file is served to that machine's
//! running task, and nowhere else. Pure.

/// The marker's opening and closing.
pub const OPEN: &[u8] = b"@@parc-secret:";
pub const CLOSE: &[u8] = b"@@";
/// Secrets are small: a password, a key, an offline domain-join blob (a few KiB).
pub const MAX_VALUE_BYTES: usize = 64 * 1024;

/// A secret name: 1 to 64 of `a-z 0-9 _ -`, so a marker can never be mistaken for text.
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// The names `bytes` asks for, in order, without repeats.
pub fn wanted(bytes: &[u8]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (_, name) in markers(bytes) {
        if !out.contains(&name) {
            out.push(name);
        }
    }
    out
}

/// `bytes` with every marker replaced by `lookup(name)`; the first name `lookup` does not
/// know is the error.
pub fn fill(bytes: &[u8], mut lookup: impl FnMut(&str) -> Option<Vec<u8>>) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    for (range, name) in markers(bytes) {
        out.extend_from_slice(&bytes[at..range.start]);
        out.extend_from_slice(&lookup(&name).ok_or(name)?);
        at = range.end;
    }
    out.extend_from_slice(&bytes[at..]);
    Ok(out)
}

/// Each well-formed marker: its byte range and the name in it. Anything else that starts like
/// one stays text.
fn markers(bytes: &[u8]) -> Vec<(std::ops::Range<usize>, String)> {
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(p) = find(&bytes[i..], OPEN) {
        let start = i + p;
        let name_start = start + OPEN.len();
        let end = bytes[name_start..].iter().take(65).position(|b| !is_name_byte(*b)).map(|n| name_start + n);
        match end {
            Some(e) if bytes[e..].starts_with(CLOSE) && e > name_start => {
                let name = String::from_utf8_lossy(&bytes[name_start..e]).into_owned();
                out.push((start..e + CLOSE.len(), name));
                i = e + CLOSE.len();
            }
            _ => i = name_start,
        }
    }
    out
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_are_replaced_and_everything_else_is_kept() {
        let text = b"user=svc\npass=@@parc-secret:join-password@@\nagain @@parc-secret:join-password@@ end";
        let out = fill(text, |n| (n == "join-password").then(|| b"s3cr\xc3\xa9t".to_vec())).unwrap();
        assert_eq!(out, b"user=svc\npass=s3cr\xc3\xa9t\nagain s3cr\xc3\xa9t end");
        assert_eq!(wanted(text), ["join-password"]);
    }

    #[test]
    fn a_missing_secret_is_named() {
        assert_eq!(fill(b"x @@parc-secret:wifi_psk@@", |_| None), Err("wifi_psk".to_string()));
    }

    #[test]
    fn what_only_looks_like_a_marker_stays_text() {
        for t in [
            &b"@@parc-secret:@@"[..],
            b"@@parc-secret:UPPER@@",
            b"@@parc-secret:open",
            b"@@parc-secret:a b@@",
            b"\xff\xfe@@parc-secret",
        ] {
            assert_eq!(fill(t, |_| Some(b"X".to_vec())).unwrap(), t, "{t:?}");
            assert!(wanted(t).is_empty());
        }
        let long = format!("@@parc-secret:{}@@", "a".repeat(65));
        assert_eq!(fill(long.as_bytes(), |_| Some(b"X".to_vec())).unwrap(), long.as_bytes());
        // A broken marker before a good one does not hide it.
        assert_eq!(
            fill(b"@@parc-secret:a b @@parc-secret:k@@", |_| Some(b"V".to_vec())).unwrap(),
            b"@@parc-secret:a b V"
        );
    }

    #[test]
    fn names_are_plain() {
        assert!(valid_name("domain-join_2"));
        assert!(!valid_name(""));
        assert!(!valid_name("Join"));
        assert!(!valid_name("a/b"));
        assert!(!valid_name(&"a".repeat(65)));
    }
}

//! Hostname patterns such as `RAD-{counter:4}`: parsed once, checked against Windows' computer
//! name rules for their widest rendering, rendered per machine.

use std::fmt;

use serde::{Serialize, Serializer};

use crate::error::PatternError;
use crate::model::Mac;

/// Windows (NetBIOS) computer names have at most 15 characters.
pub const MAX_HOSTNAME_LEN: usize = 15;

/// A checked hostname pattern: literal `A-Z a-z 0-9 -` and the placeholders `{counter:N}`
/// (N 1..=9 zero-padded digits), `{serial:N}` (last N letters/digits of the SMBIOS serial, uppercase)
/// and `{mac:N}` (last N hex digits of the MAC, uppercase, N 1..=12).
///
/// Every placeholder has a fixed width, so every rendering has the same length and parsing can
/// check the Windows rules once for all machines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostnamePattern {
    text: String,
    segments: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Counter(u8),
    Serial(u8),
    Mac(u8),
}

impl Segment {
    fn width(&self) -> usize {
        match self {
            Segment::Literal(s) => s.len(),
            Segment::Counter(n) | Segment::Serial(n) | Segment::Mac(n) => usize::from(*n),
        }
    }
}

impl HostnamePattern {
    pub fn parse(s: &str) -> Result<HostnamePattern, PatternError> {
        let invalid = |reason: String| PatternError::Invalid { pattern: s.to_string(), reason };
        let mut segments = Vec::new();
        let mut literal = String::new();
        let mut rest = s;
        while let Some(c) = rest.chars().next() {
            match c {
                '{' => {
                    let Some(end) = rest.find('}') else {
                        return Err(invalid("a '{' is not closed by '}'".into()));
                    };
                    if !literal.is_empty() {
                        segments.push(Segment::Literal(std::mem::take(&mut literal)));
                    }
                    segments.push(placeholder(s, &rest[1..end])?);
                    rest = &rest[end + 1..];
                }
                '}' => return Err(invalid("a '}' has no matching '{'".into())),
                c if c.is_ascii_alphanumeric() || c == '-' => {
                    literal.push(c);
                    rest = &rest[1..];
                }
                c => return Err(invalid(format!("'{c}' is not allowed (letters, digits, '-' and placeholders only)"))),
            }
        }
        if !literal.is_empty() {
            segments.push(Segment::Literal(literal));
        }
        let pattern = HostnamePattern { text: s.to_string(), segments };
        pattern.check().map_err(invalid)?;
        Ok(pattern)
    }

    /// The Windows rules for the widest rendering (all renderings have the same width).
    fn check(&self) -> Result<(), String> {
        if self.segments.is_empty() {
            return Err("the pattern is empty".into());
        }
        let width = self.width();
        if width > MAX_HOSTNAME_LEN {
            return Err(format!(
                "names would have {width} characters; Windows computer names have at most {MAX_HOSTNAME_LEN}"
            ));
        }
        let literals = || self.segments.iter().filter_map(|s| if let Segment::Literal(l) = s { Some(l) } else { None });
        let starts = matches!(self.segments.first(), Some(Segment::Literal(l)) if l.starts_with('-'));
        let ends = matches!(self.segments.last(), Some(Segment::Literal(l)) if l.ends_with('-'));
        if starts || ends {
            return Err("names must not start or end with '-'".into());
        }
        if !literals().any(|l| l.bytes().any(|b| !b.is_ascii_digit())) {
            return Err("names could be all digits, which Windows refuses; add a letter or '-'".into());
        }
        if self.segments.iter().filter(|s| matches!(s, Segment::Counter(_))).count() > 1 {
            return Err("use {counter} at most once".into());
        }
        Ok(())
    }

    fn width(&self) -> usize {
        self.segments.iter().map(Segment::width).sum()
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn uses_counter(&self) -> bool {
        self.segments.iter().any(|s| matches!(s, Segment::Counter(_)))
    }

    pub fn uses_serial(&self) -> bool {
        self.segments.iter().any(|s| matches!(s, Segment::Serial(_)))
    }

    /// The hostname for one machine. `counter` is used when the pattern has `{counter}`;
    /// `serial` (SMBIOS) and `mac` are the machine's facts.
    pub fn render(&self, counter: u64, serial: Option<&str>, mac: &Mac) -> Result<String, PatternError> {
        let mut out = String::with_capacity(self.width());
        for segment in &self.segments {
            match *segment {
                Segment::Literal(ref l) => out.push_str(l),
                Segment::Counter(n) => {
                    if counter >= 10u64.pow(u32::from(n)) {
                        return Err(PatternError::CounterOverflow { pattern: self.text.clone(), counter, width: n });
                    }
                    out.push_str(&format!("{counter:0width$}", width = usize::from(n)));
                }
                Segment::Serial(n) => {
                    let serial = serial.filter(|s| !s.trim().is_empty());
                    let Some(serial) = serial else {
                        return Err(PatternError::SerialMissing { pattern: self.text.clone() });
                    };
                    let chars: Vec<char> = serial.chars().filter(char::is_ascii_alphanumeric).collect();
                    let Some(start) = chars.len().checked_sub(usize::from(n)) else {
                        return Err(PatternError::SerialTooShort {
                            pattern: self.text.clone(),
                            serial: serial.to_string(),
                            need: n,
                        });
                    };
                    out.extend(chars[start..].iter().map(char::to_ascii_uppercase));
                }
                Segment::Mac(n) => {
                    let hex = mac.hex_upper();
                    out.push_str(&hex[hex.len() - usize::from(n)..]);
                }
            }
        }
        debug_assert!(valid_hostname(&out).is_ok(), "{out} from {}", self.text);
        Ok(out)
    }

    /// The next free counter given existing hostnames: 1 + the largest counter among the
    /// hostnames this pattern could have produced (compared without case), 1 if none.
    pub fn next_counter<'a>(&self, existing: impl IntoIterator<Item = &'a str>) -> u64 {
        existing.into_iter().filter_map(|h| self.counter_of(h)).max().map_or(1, |c| c.saturating_add(1))
    }

    /// The counter in `hostname` if this pattern could have rendered it (0 when it has no counter).
    fn counter_of(&self, hostname: &str) -> Option<u64> {
        if hostname.len() != self.width() || !hostname.is_ascii() {
            return None;
        }
        let mut counter = 0;
        let mut rest = hostname;
        for segment in &self.segments {
            let (part, tail) = rest.split_at(segment.width());
            rest = tail;
            let ok = match segment {
                Segment::Literal(l) => part.eq_ignore_ascii_case(l),
                Segment::Counter(_) => {
                    counter = part.parse().ok().filter(|_| part.bytes().all(|b| b.is_ascii_digit()))?;
                    true
                }
                Segment::Serial(_) => part.bytes().all(|b| b.is_ascii_alphanumeric()),
                Segment::Mac(_) => part.bytes().all(|b| b.is_ascii_hexdigit()),
            };
            if !ok {
                return None;
            }
        }
        Some(counter)
    }
}

fn placeholder(pattern: &str, inner: &str) -> Result<Segment, PatternError> {
    let invalid = |reason: String| PatternError::Invalid { pattern: pattern.to_string(), reason };
    let (name, width) = match inner.split_once(':') {
        Some((name, width)) => (name, Some(width)),
        None => (inner, None),
    };
    let (max, make): (u8, fn(u8) -> Segment) = match name {
        "counter" => (9, Segment::Counter),
        "serial" => (MAX_HOSTNAME_LEN as u8, Segment::Serial),
        "mac" => (12, Segment::Mac),
        _ => return Err(PatternError::UnknownPlaceholder { pattern: pattern.to_string(), name: name.to_string() }),
    };
    let Some(width) = width else {
        return Err(invalid(format!("{{{name}}} needs a width, e.g. {{{name}:4}}")));
    };
    match width.parse::<u8>() {
        Ok(n) if (1..=max).contains(&n) && width.bytes().all(|b| b.is_ascii_digit()) => Ok(make(n)),
        _ => Err(invalid(format!("the width of {{{name}:{width}}} must be a number from 1 to {max}"))),
    }
}

impl fmt::Display for HostnamePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for HostnamePattern {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

/// A Windows/NetBIOS computer name: 1 to 15 characters of `A-Z a-z 0-9 -`, not starting or
/// ending with '-', not all digits.
pub fn valid_hostname(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > MAX_HOSTNAME_LEN {
        return Err(format!("hostname '{s}' must have 1 to {MAX_HOSTNAME_LEN} characters"));
    }
    if let Some(c) = s.chars().find(|c| !c.is_ascii_alphanumeric() && *c != '-') {
        return Err(format!("hostname '{s}': '{c}' is not allowed (letters, digits and '-' only)"));
    }
    if s.starts_with('-') || s.ends_with('-') {
        return Err(format!("hostname '{s}' must not start or end with '-'"));
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("hostname '{s}' must not be all digits"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: Mac = Mac([0x52, 0x54, 0x00, 0xab, 0xcd, 0xef]);

    #[test]
    fn render() {
        struct Case {
            name: &'static str,
            pattern: &'static str,
            counter: u64,
            serial: Option<&'static str>,
            want: Result<&'static str, &'static str>,
        }
        let cases = [
            Case { name: "counter", pattern: "RAD-{counter:4}", counter: 7, serial: None, want: Ok("RAD-0007") },
            Case {
                name: "counter full",
                pattern: "RAD-{counter:4}",
                counter: 9999,
                serial: None,
                want: Ok("RAD-9999"),
            },
            Case {
                name: "counter overflow",
                pattern: "RAD-{counter:4}",
                counter: 10000,
                serial: None,
                want: Err("counter 10000 does not fit in 4 digits"),
            },
            Case {
                name: "serial",
                pattern: "ADM-{serial:8}",
                counter: 0,
                serial: Some("cz-12ab 3456x"),
                want: Ok("ADM-2AB3456X"),
            },
            Case {
                name: "serial missing",
                pattern: "ADM-{serial:8}",
                counter: 0,
                serial: None,
                want: Err("serial number, which is unknown"),
            },
            Case {
                name: "serial blank",
                pattern: "ADM-{serial:8}",
                counter: 0,
                serial: Some("  "),
                want: Err("which is unknown"),
            },
            Case {
                name: "serial short",
                pattern: "ADM-{serial:8}",
                counter: 0,
                serial: Some("AB-12"),
                want: Err("'AB-12' has fewer"),
            },
            Case { name: "mac", pattern: "PC{mac:6}", counter: 0, serial: None, want: Ok("PCABCDEF") },
            Case { name: "mac whole", pattern: "P{mac:12}", counter: 0, serial: None, want: Ok("P525400ABCDEF") },
            Case { name: "mixed", pattern: "u{counter:2}-{mac:2}", counter: 3, serial: None, want: Ok("u03-EF") },
        ];
        for case in cases {
            let pattern = HostnamePattern::parse(case.pattern).unwrap();
            let got = pattern.render(case.counter, case.serial, &MAC).map_err(|e| e.to_string());
            match (got, case.want) {
                (Ok(got), Ok(want)) => assert_eq!(got, want, "{}", case.name),
                (Err(got), Err(want)) => assert!(got.contains(want), "{}: {got}", case.name),
                (got, want) => panic!("{}: got {got:?}, want {want:?}", case.name),
            }
        }
    }

    #[test]
    fn parse_refusals() {
        let cases = [
            ("unknown placeholder", "RAD-{count:4}", "unknown placeholder 'count' (use counter, serial or mac)"),
            ("too wide", "RADIOLOGIE-{counter:5}", "names would have 16 characters"),
            ("too wide serial", "ADMIN-{serial:10}", "16 characters"),
            ("all digits", "{counter:4}", "all digits"),
            ("digits only literal", "12{mac:4}", "all digits"),
            ("leading dash", "-RAD{counter:2}", "start or end with '-'"),
            ("trailing dash", "RAD-", "start or end with '-'"),
            ("no width", "RAD-{counter}", "needs a width"),
            ("zero width", "RAD-{counter:0}", "from 1 to 9"),
            ("counter width 10", "R{counter:10}", "from 1 to 9"),
            ("mac width 13", "R{mac:13}", "from 1 to 12"),
            ("unclosed", "RAD-{counter:4", "not closed"),
            ("stray brace", "RAD}", "no matching"),
            ("bad char", "RAD_{counter:4}", "'_' is not allowed"),
            ("space", "RAD {counter:4}", "' ' is not allowed"),
            ("empty", "", "empty"),
            ("two counters", "A{counter:2}{counter:2}", "at most once"),
        ];
        for (name, pattern, want) in cases {
            let err = HostnamePattern::parse(pattern).expect_err(name).to_string();
            assert!(err.contains(want), "{name}: {err}");
            assert!(err.starts_with(&format!("hostname pattern '{pattern}'")), "{name}: {err}");
        }
        assert!(HostnamePattern::parse("RADIOLOGIE-{counter:4}").is_ok(), "exactly 15");
    }

    #[test]
    fn next_counter() {
        let pattern = HostnamePattern::parse("RAD-{counter:4}").unwrap();
        assert!(pattern.uses_counter() && !pattern.uses_serial());
        assert_eq!(pattern.next_counter([]), 1);
        assert_eq!(pattern.next_counter(["URG-0042", "RAD-12", "RAD-00012", "RAD-+012"]), 1);
        assert_eq!(pattern.next_counter(["RAD-0001", "rad-0041", "URG-0099", "RAD-0007"]), 42);
        assert_eq!(pattern.next_counter(["RAD-0000"]), 1);

        let mixed = HostnamePattern::parse("R{mac:2}-{counter:2}").unwrap();
        assert_eq!(mixed.next_counter(["RAB-05", "Rab-07", "RXY-09", "R0F-3"]), 8);

        let serial = HostnamePattern::parse("ADM-{serial:8}").unwrap();
        assert!(serial.uses_serial() && !serial.uses_counter());
        assert_eq!(serial.next_counter(["ADM-ABCD1234"]), 1);
    }

    #[test]
    fn hostnames() {
        for ok in ["RAD-0001", "a", "PC-1", "ABCDEFGHIJKLMNO", "1a"] {
            assert_eq!(valid_hostname(ok), Ok(()), "{ok}");
        }
        for bad in ["", "ABCDEFGHIJKLMNOP", "-A", "A-", "1234", "A_B", "A.B", "É1"] {
            assert!(valid_hostname(bad).is_err(), "{bad}");
        }
    }
}

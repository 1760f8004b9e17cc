//! Department files: `departments/<id>.toml` to a checked [`Department`], every problem with its line.

use serde::Deserialize;
use toml::Spanned;

use crate::error::Problem;
use crate::hostname::HostnamePattern;
use crate::model::{valid_id, Bus, Choose, Department, DiskRule, EntryKind, Os, WindowsSettings, DEFAULT_TIME_ZONE};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDepartment {
    name: Spanned<String>,
    #[serde(default)]
    description: Option<String>,
    image: Spanned<String>,
    hostname: Spanned<String>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    disk: Option<RawDisk>,
    #[serde(default)]
    software: Option<RawSoftware>,
    #[serde(default)]
    os: Option<Spanned<String>>,
    #[serde(default)]
    windows: Option<Spanned<RawWindows>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWindows {
    time_zone: Option<Spanned<String>>,
    domain_ou: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDisk {
    prefer: Option<Spanned<Vec<Spanned<String>>>>,
    choose: Option<Spanned<String>>,
    min_size: Option<Spanned<RawSize>>,
    grow: Option<bool>,
}

enum RawSize {
    Bytes(i64),
    Text(String),
}

impl<'de> Deserialize<'de> for RawSize {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<RawSize, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = RawSize;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a size such as \"16G\" or a number of bytes")
            }
            fn visit_i64<E>(self, n: i64) -> Result<RawSize, E> {
                Ok(RawSize::Bytes(n))
            }
            fn visit_str<E>(self, s: &str) -> Result<RawSize, E> {
                Ok(RawSize::Text(s.to_string()))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSoftware {
    #[serde(default)]
    payloads: Vec<Spanned<String>>,
    first_boot: Option<Spanned<String>>,
}

/// A Windows time zone id as `tzutil /l` lists them: words, digits and a few signs.
fn check_time_zone(tz: &str) -> Result<(), String> {
    let tz = tz.trim();
    if tz.is_empty() || tz.len() > 256 {
        return Err("give a Windows time zone id such as \"Romance Standard Time\" (tzutil /l lists them)".into());
    }
    if let Some(c) = tz.chars().find(|c| !(c.is_ascii_alphanumeric() || " ()+-._".contains(*c))) {
        return Err(format!("{c:?} does not appear in Windows time zone ids (tzutil /l lists them)"));
    }
    Ok(())
}

/// The OU computer accounts are created in: a distinguished name such as
/// `OU=Radiologie,OU=Postes,DC=chu,DC=local`.
fn check_ou(ou: &str) -> Result<(), String> {
    let ou = ou.trim();
    let first = ou.split(',').next().unwrap_or_default().trim().to_ascii_uppercase();
    if ou.len() > 1024 || ou.chars().any(char::is_control) {
        return Err("an OU distinguished name of at most 1024 printable characters".into());
    }
    if !(first.starts_with("OU=") || first.starts_with("CN=")) || !ou.to_ascii_uppercase().contains("DC=") {
        return Err(format!(
            "{ou:?} is not an OU distinguished name such as \"OU=Radiologie,OU=Postes,DC=chu,DC=local\""
        ));
    }
    Ok(())
}

/// The 1-based line holding byte `offset` of `text`.
pub(crate) fn line_of(text: &str, offset: usize) -> u32 {
    let offset = offset.min(text.len());
    let newlines = text.as_bytes()[..offset].iter().filter(|&&b| b == b'\n').count();
    u32::try_from(newlines + 1).unwrap_or(u32::MAX)
}

/// Parses and checks one department file (pure).
///
/// `id` is the file stem, `file` the path shown in problems (`departments/<id>.toml`), and
/// `tree_has(path, kind)` says whether the same commit holds `path` as a file or a directory
/// (payloads must be directories, `first_boot` a file). Every problem found is returned, each
/// with the line of the offending key when there is one. The image is not looked up here.
pub fn parse_department(
    id: &str,
    file: &str,
    text: &str,
    tree_has: impl Fn(&str, EntryKind) -> bool,
) -> Result<Department, Vec<Problem>> {
    let mut problems = Vec::new();
    let line = |span: std::ops::Range<usize>| Some(line_of(text, span.start));
    if !valid_id(id) {
        problems.push(Problem::new(
            file,
            None,
            format!("'{id}' is not a valid department id; name the file with lowercase letters, digits and '-' only"),
        ));
    }
    let raw: RawDepartment = match toml::from_str(text) {
        Ok(raw) => raw,
        Err(e) => {
            // serde speaks of fields; technicians edit keys. A missing key has no line of its own.
            let reason =
                e.message().trim_end().replace("unknown field", "unknown key").replace("missing field", "missing key");
            let at = if reason.starts_with("missing key") { None } else { e.span().and_then(line) };
            problems.push(Problem::new(file, at, reason));
            return Err(problems);
        }
    };

    let name = raw.name.get_ref().trim().to_string();
    if name.is_empty() {
        problems.push(Problem::new(file, line(raw.name.span()), "name is empty; give the department a display name"));
    }
    let image_line = line_of(text, raw.image.span().start);
    if let Err(reason) = check_image_ref(raw.image.get_ref()) {
        problems.push(Problem::new(file, Some(image_line), reason));
    }
    let hostname = HostnamePattern::parse(raw.hostname.get_ref())
        .map_err(|e| problems.push(Problem::new(file, line(raw.hostname.span()), e.to_string())))
        .ok();

    let mut disk = DiskRule::default();
    if let Some(raw_disk) = raw.disk {
        if let Some(prefer) = raw_disk.prefer {
            let span = prefer.span();
            let given = prefer.get_ref().len();
            disk.prefer.clear();
            for bus in prefer.into_inner() {
                match Bus::ALL.into_iter().find(|b| b.as_str() == bus.get_ref()) {
                    Some(b) if disk.prefer.contains(&b) => problems.push(Problem::new(
                        file,
                        line(bus.span()),
                        format!("disk.prefer lists '{b}' twice", b = b.as_str()),
                    )),
                    Some(b) => disk.prefer.push(b),
                    None => problems.push(Problem::new(
                        file,
                        line(bus.span()),
                        format!(
                            "disk.prefer: unknown bus '{}' (use nvme, sata, sas, virtio or scsi; \
                             USB and removable disks are never eligible)",
                            bus.get_ref()
                        ),
                    )),
                }
            }
            if given == 0 {
                problems.push(Problem::new(file, line(span), "disk.prefer is empty; list at least one bus"));
            }
        }
        if let Some(choose) = raw_disk.choose {
            disk.choose = match choose.get_ref().as_str() {
                "first" => Choose::First,
                "largest" => Choose::Largest,
                "smallest" => Choose::Smallest,
                other => {
                    problems.push(Problem::new(
                        file,
                        line(choose.span()),
                        format!("disk.choose: '{other}' is not a choice (use first, largest or smallest)"),
                    ));
                    Choose::First
                }
            };
        }
        if let Some(grow) = raw_disk.grow {
            disk.grow = grow;
        }
        if let Some(min_size) = raw_disk.min_size {
            let size = match min_size.get_ref() {
                RawSize::Bytes(n) => u64::try_from(*n).map_err(|_| format!("{n} is negative")),
                RawSize::Text(s) => parse_size(s),
            };
            match size {
                Ok(size) => disk.min_size = Some(size),
                Err(reason) => {
                    problems.push(Problem::new(file, line(min_size.span()), format!("disk.min_size: {reason}")))
                }
            }
        }
    }

    let mut payloads = Vec::new();
    let mut first_boot = None;
    if let Some(software) = raw.software {
        for payload in software.payloads {
            match check_repo_path(payload.get_ref(), EntryKind::Dir, &tree_has) {
                Ok(path) => payloads.push(path),
                Err(reason) => {
                    problems.push(Problem::new(file, line(payload.span()), format!("software.payloads: {reason}")))
                }
            }
        }
        if let Some(script) = software.first_boot {
            match check_repo_path(script.get_ref(), EntryKind::File, &tree_has) {
                Ok(path) => first_boot = Some(path),
                Err(reason) => {
                    problems.push(Problem::new(file, line(script.span()), format!("software.first_boot: {reason}")))
                }
            }
        }
    }

    let os = match raw.os.as_ref().map(|o| (o.get_ref().as_str(), o.span())) {
        None | Some(("linux", _)) => Os::Linux,
        Some(("windows", _)) => Os::Windows,
        Some((other, span)) => {
            problems.push(Problem::new(
                file,
                line(span),
                format!("os: '{other}' is not a system (use linux or windows)"),
            ));
            Os::Linux
        }
    };
    let windows = match (os, raw.windows) {
        (Os::Windows, w) => {
            let mut settings = WindowsSettings { time_zone: DEFAULT_TIME_ZONE.to_string(), domain_ou: None };
            if let Some(w) = w.map(Spanned::into_inner) {
                if let Some(tz) = w.time_zone {
                    match check_time_zone(tz.get_ref()) {
                        Ok(()) => settings.time_zone = tz.get_ref().trim().to_string(),
                        Err(reason) => {
                            problems.push(Problem::new(file, line(tz.span()), format!("windows.time_zone: {reason}")))
                        }
                    }
                }
                if let Some(ou) = w.domain_ou {
                    match check_ou(ou.get_ref()) {
                        Ok(()) => settings.domain_ou = Some(ou.get_ref().trim().to_string()),
                        Err(reason) => {
                            problems.push(Problem::new(file, line(ou.span()), format!("windows.domain_ou: {reason}")))
                        }
                    }
                }
            }
            Some(settings)
        }
        (Os::Linux, Some(w)) => {
            problems.push(Problem::new(
                file,
                line(w.span()),
                "[windows] applies to Windows departments: add os = \"windows\" or remove the section",
            ));
            None
        }
        (Os::Linux, None) => None,
    };

    match hostname {
        Some(hostname) if problems.is_empty() => Ok(Department {
            id: id.to_string(),
            name,
            description: raw.description.unwrap_or_default().trim().to_string(),
            image: raw.image.into_inner(),
            image_line,
            hostname,
            tags: raw.tags,
            disk,
            payloads,
            first_boot,
            os,
            windows,
            file: file.to_string(),
            stale: false,
        }),
        _ => Err(problems),
    }
}

/// An image reference as the store resolves it: `name`, `name@N` or `sha256:<64 hex digits>`.
/// Names follow the store's rules (1 to 64 of letters, digits, '.', '_', '-'; not starting with '.' or '-').
fn check_image_ref(image: &str) -> Result<(), String> {
    if let Some(digest) = image.strip_prefix("sha256:") {
        if digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(());
        }
        return Err(format!(
            "image '{image}': a pinned image is sha256: followed by the 64 hex digits of its manifest"
        ));
    }
    let (name, version) = match image.rsplit_once('@') {
        Some((name, version)) => (name, Some(version)),
        None => (image, None),
    };
    if let Some(version) = version {
        if version.is_empty() || !version.bytes().all(|b| b.is_ascii_digit()) || version.parse::<u32>().is_err() {
            return Err(format!("image '{image}': the version after '@' must be a number, e.g. {name}@3"));
        }
    }
    let name_ok = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        && !name.starts_with(['.', '-']);
    if !name_ok {
        return Err(format!(
            "image '{image}' is not an image name (letters, digits, '.', '_' and '-'), name@version or sha256:<digest>"
        ));
    }
    Ok(())
}

/// A path inside the repository as written in a department file: relative, without `..`.
/// Returns it normalised (no `.` or empty components, no trailing '/').
pub(crate) fn normalize_repo_path(path: &str) -> Result<String, &'static str> {
    if path.starts_with('/') || path.starts_with('\\') {
        return Err("must be relative to the repository root, not absolute");
    }
    let mut parts = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err("must not contain '..'"),
            p if p.contains('\\') => return Err("must use '/' between directories"),
            p => parts.push(p),
        }
    }
    if parts.is_empty() {
        return Err("is empty");
    }
    Ok(parts.join("/"))
}

fn check_repo_path(path: &str, kind: EntryKind, tree_has: &impl Fn(&str, EntryKind) -> bool) -> Result<String, String> {
    let normal = normalize_repo_path(path).map_err(|reason| format!("'{path}' {reason}"))?;
    if !tree_has(&normal, kind) {
        let what = match kind {
            EntryKind::File => "file",
            EntryKind::Dir => "directory",
        };
        return Err(format!("'{path}' is not a {what} of this repository; add and commit it, or fix the path"));
    }
    Ok(normal)
}

/// A size: bytes, or a number with K, M, G or T (powers of 1024), e.g. `16G`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let bad = || format!("'{s}' is not a size (use bytes or a number with K, M, G or T, e.g. 16G)");
    let t = s.trim();
    let (digits, shift) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let shift = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                _ => return Err(bad()),
            };
            (t[..i].trim_end(), shift)
        }
        _ => (t, 0),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let n: u64 = digits.parse().map_err(|_| bad())?;
    n.checked_mul(1u64 << shift).ok_or_else(|| format!("'{s}' is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"name = "Radiologie"
description = "Postes de radiologie"
image = "debian-poste@3"
hostname = "RAD-{counter:4}"
tags = ["pacs"]

[disk]
prefer = ["nvme", "sata"]
choose = "largest"
min_size = "16G"

[software]
payloads = ["payloads/radiologie/"]
first_boot = "./scripts/radiologie-firstboot.sh"
"#;

    fn tree(path: &str, kind: EntryKind) -> bool {
        match kind {
            EntryKind::Dir => path == "payloads/radiologie",
            EntryKind::File => path == "scripts/radiologie-firstboot.sh",
        }
    }

    fn problems(text: &str) -> Vec<Problem> {
        parse_department("radiologie", "departments/radiologie.toml", text, tree).expect_err("should fail")
    }

    /// The single problem of `text`: its line and reason.
    fn problem(text: &str) -> (Option<u32>, String) {
        let problems = problems(text);
        assert_eq!(problems.len(), 1, "{problems:?}");
        (problems[0].line, problems[0].reason.clone())
    }

    #[test]
    fn good_department() {
        let d = parse_department("radiologie", "departments/radiologie.toml", GOOD, tree).unwrap();
        assert_eq!(d.name, "Radiologie");
        assert_eq!(d.image, "debian-poste@3");
        assert_eq!(d.image_line, 3);
        assert_eq!(d.hostname.as_str(), "RAD-{counter:4}");
        assert_eq!(
            d.disk,
            DiskRule {
                prefer: vec![Bus::Nvme, Bus::Sata],
                choose: Choose::Largest,
                min_size: Some(16 << 30),
                grow: true
            }
        );
        assert_eq!(d.payloads, ["payloads/radiologie"]);
        assert_eq!(d.first_boot.as_deref(), Some("scripts/radiologie-firstboot.sh"));
        assert!(!d.stale);
    }

    #[test]
    fn minimal_department_has_default_disk_rule() {
        let text = "name = \"Pharmacie\"\nimage = \"sha256:".to_string()
            + &"ab".repeat(32)
            + "\"\nhostname = \"PHA-{counter:3}\"\n";
        let d = parse_department("pharmacie", "departments/pharmacie.toml", &text, |_, _| false).unwrap();
        assert_eq!(d.disk, DiskRule::default());
        assert!(d.payloads.is_empty() && d.first_boot.is_none() && d.tags.is_empty() && d.description.is_empty());
    }

    #[test]
    fn unknown_key_has_its_line() {
        let (line, reason) = problem(&GOOD.replace("tags = [\"pacs\"]", "tag = [\"pacs\"]"));
        assert_eq!(line, Some(5));
        assert!(reason.starts_with("unknown key `tag`, expected one of `name`"), "{reason}");
        let (line, reason) = problem(&GOOD.replace("choose = \"largest\"", "chose = \"largest\""));
        assert_eq!(line, Some(9), "{reason}");
    }

    #[test]
    fn disk_growth_is_on_unless_the_department_says_otherwise() {
        let off = GOOD.replace("min_size = \"16G\"", "min_size = \"16G\"\ngrow = false");
        let d = parse_department("radiologie", "departments/radiologie.toml", &off, tree).unwrap();
        assert!(!d.disk.grow);
        let (line, reason) = problem(&GOOD.replace("min_size = \"16G\"", "grow = \"yes\""));
        assert_eq!(line, Some(10), "{reason}");
        assert!(reason.contains("expected a boolean"), "{reason}");
    }

    #[test]
    fn syntax_error_has_its_line() {
        let (line, reason) = problem(&GOOD.replace("tags = [\"pacs\"]", "tags = pacs"));
        assert_eq!(line, Some(5), "{reason}");
        let (line, reason) = problem(&GOOD.replace("[software]", "[software"));
        assert_eq!(line, Some(12), "{reason}");
    }

    #[test]
    fn bad_pattern_has_its_line_and_reason() {
        let problems = problems(&GOOD.replace("{counter:4}", "{count:4}"));
        assert_eq!(problems.len(), 1);
        assert_eq!(
            problems[0].to_string(),
            "departments/radiologie.toml line 4: hostname pattern 'RAD-{count:4}': \
             unknown placeholder 'count' (use counter, serial or mac)"
        );
    }

    #[test]
    fn bad_image_refs() {
        for image in ["debian poste", "debian@", "debian@x", "sha256:abc", "-debian", "", "a/b"] {
            let (line, reason) = problem(&GOOD.replace("debian-poste@3", image));
            assert_eq!(line, Some(3), "{image}");
            assert!(reason.starts_with(&format!("image '{image}'")), "{reason}");
        }
    }

    #[test]
    fn payload_paths() {
        let (line, reason) = problem(&GOOD.replace("payloads/radiologie/", "payloads/urgences"));
        assert_eq!(line, Some(13));
        assert!(reason.contains("'payloads/urgences' is not a directory of this repository"), "{reason}");
        let (line, reason) = problem(&GOOD.replace("payloads/radiologie/", "payloads/../../etc"));
        assert_eq!(line, Some(13));
        assert!(reason.contains("must not contain '..'"), "{reason}");
        let (line, reason) = problem(&GOOD.replace("payloads/radiologie/", "/etc"));
        assert_eq!(line, Some(13));
        assert!(reason.contains("not absolute"), "{reason}");
        let (line, reason) = problem(&GOOD.replace("./scripts/radiologie-firstboot.sh", "scripts"));
        assert_eq!(line, Some(14));
        assert!(reason.contains("is not a file"), "{reason}");
    }

    #[test]
    fn all_problems_reported() {
        let text = GOOD
            .replace("debian-poste@3", "debian poste")
            .replace("{counter:4}", "{counter:40}")
            .replace("\"sata\"", "\"usb\"")
            .replace("\"largest\"", "\"biggest\"")
            .replace("\"16G\"", "\"16Q\"");
        let lines: Vec<_> = problems(&text).iter().map(|p| p.line.unwrap()).collect();
        assert_eq!(lines, [3, 4, 8, 9, 10]);
    }

    #[test]
    fn missing_required_key() {
        let problems = problems(&GOOD.replace("image = \"debian-poste@3\"\n", ""));
        assert_eq!(problems[0].to_string(), "departments/radiologie.toml: missing key `image`");
        let (line, reason) = problem(&GOOD.replace("\"16G\"", "true"));
        assert_eq!(line, Some(10));
        assert!(reason.contains("expected a size such as \"16G\" or a number of bytes"), "{reason}");
        let (line, reason) = problem(&GOOD.replace("\"16G\"", "-16"));
        assert_eq!((line, reason.as_str()), (Some(10), "disk.min_size: -16 is negative"));
    }

    #[test]
    fn windows_departments() {
        let parse = |text: &str| parse_department("bloc", "departments/bloc.toml", text, tree);
        let d = parse(GOOD).unwrap();
        assert_eq!((d.os, d.windows.as_ref()), (Os::Linux, None));
        let d = parse(&format!("os = \"windows\"\n{GOOD}")).unwrap();
        assert_eq!(d.os, Os::Windows);
        assert_eq!(d.windows.unwrap(), WindowsSettings { time_zone: DEFAULT_TIME_ZONE.into(), domain_ou: None });
        let text = format!(
            "os = \"windows\"\n{GOOD}\n[windows]\ntime_zone = \"W. Europe Standard Time\"\ndomain_ou = \"OU=Bloc,OU=Postes,DC=chu,DC=local\"\n"
        );
        let w = parse(&text).unwrap().windows.unwrap();
        assert_eq!(
            (w.time_zone.as_str(), w.domain_ou.as_deref()),
            ("W. Europe Standard Time", Some("OU=Bloc,OU=Postes,DC=chu,DC=local"))
        );
        let (line, reason) = problem(&format!("os = \"macos\"\n{GOOD}"));
        assert_eq!(line, Some(1));
        assert!(reason.contains("'macos' is not a system"), "{reason}");
        let (_, reason) = problem(&format!("{GOOD}\n[windows]\ntime_zone = \"UTC\"\n"));
        assert!(reason.contains("add os = \"windows\""), "{reason}");
        let (_, reason) = problem(&format!("os = \"windows\"\n{GOOD}\n[windows]\ntime_zone = \"Europe/Paris;\"\n"));
        assert!(reason.contains("windows.time_zone") && reason.contains("tzutil"), "{reason}");
        let (_, reason) = problem(&format!("os = \"windows\"\n{GOOD}\n[windows]\ndomain_ou = \"Radiologie\"\n"));
        assert!(reason.contains("windows.domain_ou") && reason.contains("not an OU"), "{reason}");
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("16G"), Ok(16 << 30));
        assert_eq!(parse_size("512m"), Ok(512 << 20));
        assert_eq!(parse_size("1T"), Ok(1 << 40));
        assert_eq!(parse_size("4K"), Ok(4096));
        assert_eq!(parse_size("1000"), Ok(1000));
        for bad in ["", "G", "16X", "-1G", "1.5G", "16GB", "99999999999999T"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }
}

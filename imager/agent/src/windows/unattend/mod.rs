//! Merging parc's settings into a Windows answer file (`unattend.xml`).
//!
//! A generalized image usually carries its own answer file in `Windows\Panther\unattend.xml`, and Microsoft
//! says to edit rather than replace it when its unprocessed settings must survive (WINDOWS-RESEARCH.md
//! §3.4). So [`merge`] keeps everything of the image's file — other passes and components, comments,
//! processing instructions, unknown elements and attributes, namespace declarations, the source's own
//! indentation and untouched start tags as written — and changes only the settings parc owns (§3.2):
//! `ComputerName` and `TimeZone` in the specialize pass of `Microsoft-Windows-Shell-Setup`, the offline
//! domain join blob in `Microsoft-Windows-UnattendedJoin/Identification/Provisioning/AccountData`, and
//! whatever [`Setting`]s the caller adds. A missing pass, component or element is created with the shape
//! Windows System Image Manager writes (§3.1): the five identity attributes and the `wcm`/`xsi` declarations.
//!
//! Choices worth knowing:
//! - **`wasPassProcessed` is removed** (with any prefix, usually `wcm:`) from every pass parc touches: Setup
//!   marks the cached answer file after each pass and does not run a marked pass again (MS "Windows Setup
//!   Automation Overview", §0.5 and §3.3; google/glazier and cloudfoundry/bosh-psmodules strip it for the same
//!   reason), so a captured file would otherwise have its specialize settings ignored, parc's included.
//!   Passes parc does not touch keep their mark.
//! - **A component is matched by name and `processorArchitecture`**: x86 and amd64 copies may coexist (§3.1)
//!   and only the copy for the machine's architecture is changed. Identity values are compared ignoring ASCII
//!   case so a file written as `AMD64` is edited instead of gaining a second copy (inferred, unconfirmed).
//! - **Ambiguity is refused, not guessed**: two `settings` for one pass (any pass), two copies of one
//!   component or two copies of an element parc writes mean the technician must decide which one counts.
//! - **Joining by blob removes the other join methods** (see [`SUPERSEDED_BY_PROVISIONING`]).
//! - **Created elements** are unprefixed, in the unattend namespace like their neighbours; where the parent
//!   binds that namespace to a prefix instead, the created element declares it as its default. They are
//!   appended after their siblings and indented like them (a new pass goes where Setup's order puts it);
//!   whether Setup cares about the order of a component's settings is unconfirmed.
//! - **Input** is UTF-8 (with or without a byte-order mark) or UTF-16LE with a byte-order mark, re-encoded as
//!   UTF-8 with `<?xml version="1.0" encoding="utf-8"?>` (§3.3). The byte-order mark decides; without one, a
//!   declaration naming a legacy code page is accepted only for pure ASCII text, which reads the same in both.
//! - **Refused input**: a DOCTYPE (answer files have none, and only a DOCTYPE can define the entities of
//!   expansion attacks), more than 1 MiB (real files are a few KiB) or nesting deeper than [`MAX_DEPTH`]
//!   (the tree is handled recursively). Errors give byte offsets in the file as stored, UTF-16 included.
//! - The module is pure: bytes in, bytes out. Where the file lives and who writes it is the caller's business.

use std::borrow::Cow;
use std::fmt;

use quick_xml::escape::{escape, unescape};
use quick_xml::events::attributes::Attribute;
use quick_xml::events::{BytesCData, BytesDecl, BytesEnd, BytesPI, BytesRef, BytesStart, BytesText, Event};
use quick_xml::name::QName;
use quick_xml::{Reader, Writer};

/// The namespace of every element of an answer file.
pub const UNATTEND_NS: &str = "urn:schemas-microsoft-com:unattend";
/// Declared on components as `xmlns:wcm`; list items use `wcm:action`.
const WCM_NS: &str = "http://schemas.microsoft.com/WMIConfig/2002/State";
const XSI_NS: &str = "http://www.w3.org/2001/XMLSchema-instance";
/// The token of every Microsoft-signed component (§3.1).
const PUBLIC_KEY_TOKEN: &str = "31bf3856ad364e35";
/// Answer files are a few KiB; anything this large is not one.
pub const MAX_SIZE: usize = 1024 * 1024;
/// Real answer files nest about six deep (root, pass, component, list, item, value). The tree is read,
/// written and dropped recursively, so a file nesting far deeper must not reach it.
pub const MAX_DEPTH: usize = 64;
/// `processorArchitecture` values of the unattend schema that parc may be asked for.
const ARCHITECTURES: [&str; 4] = ["amd64", "arm64", "x86", "wow64"];

const SHELL_SETUP: &str = "Microsoft-Windows-Shell-Setup";
const UNATTENDED_JOIN: &str = "Microsoft-Windows-UnattendedJoin";
const ACCOUNT_DATA_PATH: [&str; 3] = ["Identification", "Provisioning", "AccountData"];
/// `Identification` children that describe another way of joining. Microsoft documents that Provisioning
/// wins when both it and Credentials are set (§3.2), so they would be dead weight at best; at worst
/// `Credentials` keeps a domain account's password in clear text in the image's file and `MachinePassword`
/// (a pre-created account's password) contradicts the password inside the blob. Leaving one behind would also
/// keep the machine joining the old way if the blob were ever dropped from the file by hand.
pub const SUPERSEDED_BY_PROVISIONING: [&str; 3] = ["Credentials", "JoinDomain", "MachinePassword"];
/// Setup's mark on a processed pass, in any namespace (Windows writes it as `wcm:wasPassProcessed`).
const PASS_MARK: &str = "wasPassProcessed";

/// What parc writes into an answer file.
#[derive(Clone, PartialEq, Eq)]
pub struct Settings {
    /// `Microsoft-Windows-Shell-Setup/ComputerName` in specialize; must pass [`validate_computer_name`].
    pub computer_name: String,
    /// `Microsoft-Windows-Shell-Setup/TimeZone` in specialize: a Windows zone id such as
    /// `Romance Standard Time` (`tzutil /l`), at most 256 characters.
    pub time_zone: String,
    /// The offline domain join blob (`djoin /provision` or Samba's `net offlinejoin provision ... printblob`
    /// output: base64 text, without BOM or trailing NUL). It holds the machine password: never logged.
    pub join_blob: Option<String>,
    /// Further settings, applied after parc's own.
    pub extra: Vec<Setting>,
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The blob is a machine password: keep it out of logs and panic messages.
        f.debug_struct("Settings")
            .field("computer_name", &self.computer_name)
            .field("time_zone", &self.time_zone)
            .field("join_blob", &self.join_blob.as_ref().map(|_| "<redacted>"))
            .field("extra", &self.extra)
            .finish()
    }
}

/// One text setting: `<settings pass=…>` → `<component name=…>` (for the architecture given to [`merge`]) →
/// the elements of `path`, the last of which gets `value` as its text.
///
/// `path` names plain elements, e.g. `["RegisteredOrganization"]` or `["OOBE", "HideEulaPage"]`; each must
/// occur at most once under its parent. Keyed list items (`wcm:action="add"` with an `Order` or `Key`, as in
/// `RunSynchronous`) cannot be expressed yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    pub pass: Pass,
    /// e.g. `Microsoft-Windows-Shell-Setup`.
    pub component: String,
    pub path: Vec<String>,
    pub value: String,
}

/// Configuration passes, in the order Setup runs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Pass {
    WindowsPE,
    OfflineServicing,
    Generalize,
    Specialize,
    AuditSystem,
    AuditUser,
    OobeSystem,
}

impl Pass {
    const ALL: [Pass; 7] = [
        Pass::WindowsPE,
        Pass::OfflineServicing,
        Pass::Generalize,
        Pass::Specialize,
        Pass::AuditSystem,
        Pass::AuditUser,
        Pass::OobeSystem,
    ];

    /// The value of the `pass` attribute.
    pub fn as_str(self) -> &'static str {
        match self {
            Pass::WindowsPE => "windowsPE",
            Pass::OfflineServicing => "offlineServicing",
            Pass::Generalize => "generalize",
            Pass::Specialize => "specialize",
            Pass::AuditSystem => "auditSystem",
            Pass::AuditUser => "auditUser",
            Pass::OobeSystem => "oobeSystem",
        }
    }

    fn from_attr(value: &str) -> Option<Pass> {
        Pass::ALL.into_iter().find(|p| p.as_str().eq_ignore_ascii_case(value))
    }
}

impl fmt::Display for Pass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UnattendError {
    #[error(
        "the answer file is {size} bytes, more than the {limit} an answer file can plausibly need; check that the \
         image's Windows\\Panther\\unattend.xml is really an answer file"
    )]
    TooLarge { size: usize, limit: usize },
    #[error(
        "the answer file is encoded as {found}; parc reads UTF-8 or UTF-16LE with a byte-order mark: re-save it as \
         UTF-8 (e.g. in Notepad) in the image"
    )]
    UnsupportedEncoding { found: String },
    #[error("the answer file is not valid {encoding} at byte {offset}; re-save it as UTF-8 in the image")]
    BadEncoding { encoding: &'static str, offset: usize },
    #[error(
        "the answer file has character U+{code:04X}, which XML does not allow, at byte {offset}; remove it from the \
         file in the image"
    )]
    InvalidCharacter { code: u32, offset: usize },
    #[error("the answer file is not well-formed XML at byte {offset}: {reason}; fix or remove the file in the image")]
    Malformed { offset: usize, reason: String },
    #[error(
        "the answer file uses the undefined entity &{name}; at byte {offset}; replace it with the text it stands for"
    )]
    UndefinedEntity { name: String, offset: usize },
    #[error(
        "the answer file stops at byte {offset} while <{open}> is still open, so it looks cut short; take a complete \
         copy of it"
    )]
    Truncated { offset: usize, open: String },
    #[error(
        "the answer file nests elements more than {limit} deep at byte {offset}; real answer files nest about six \
         deep, so this is not one"
    )]
    TooDeep { offset: usize, limit: usize },
    #[error("the answer file has no root element; it is empty or not XML")]
    NoRoot,
    #[error(
        "the answer file has a DOCTYPE at byte {offset}; answer files never need one and it can hide entity expansion, \
         so remove it"
    )]
    DocType { offset: usize },
    #[error("the answer file declares XML version {version}; parc reads XML 1.0 answer files only")]
    UnsupportedXmlVersion { version: String },
    #[error("the answer file's root element is <{found}>, not <unattend>: this is not a Windows answer file")]
    WrongRoot { found: String },
    #[error(
        "the answer file's <unattend> is in namespace {found:?}, not {UNATTEND_NS:?}: Windows would not read it; fix \
         its xmlns"
    )]
    WrongNamespace { found: String },
    #[error(
        "the answer file has more than one <settings pass=\"{pass}\">; Windows reads one per pass, so merge them into \
         one in the image's file"
    )]
    DuplicatePass { pass: Pass },
    #[error(
        "the answer file has more than one {location}, so parc cannot tell which one Windows would use; remove the \
         extra copies from the image's file"
    )]
    Duplicate { location: String },
    #[error(
        "{location} holds other elements, so parc will not replace it with a text value; target one of its children \
         instead"
    )]
    NotALeaf { location: String },
    #[error(
        "computer name {name:?} {reason}; Windows accepts 1 to 15 bytes without spaces or punctuation other than \
         '-' and '_', and not digits only: change the hostname pattern"
    )]
    InvalidComputerName { name: String, reason: &'static str },
    #[error("the value for {setting} {reason}")]
    InvalidValue { setting: String, reason: &'static str },
    #[error(
        "{what} {name:?} is not a valid name: use letters, digits, '-', '_' and '.', starting with a letter or '_'"
    )]
    InvalidName { what: &'static str, name: String },
    #[error("settings {first} and {second} overlap (one would overwrite the other); drop one of them")]
    Conflict { first: String, second: String },
    #[error("unknown processor architecture {arch:?}; expected one of amd64, arm64, x86, wow64")]
    UnknownArchitecture { arch: String },
}

/// Checks a name against the rules of `Microsoft-Windows-Shell-Setup/ComputerName` (§3.2). An empty name or
/// `*` would make Windows pick a random one; parc always names the machine, so both are refused.
pub fn validate_computer_name(name: &str) -> Result<(), UnattendError> {
    const FORBIDDEN: &str = "{|}~[\\]^':;<=>?@!\"#$%`()+/.,*&";
    let bad = |reason| Err(UnattendError::InvalidComputerName { name: name.to_string(), reason });
    if name.is_empty() {
        return bad("is empty");
    }
    if name.len() > 15 {
        return bad("is longer than 15 bytes");
    }
    if name.contains(' ') {
        return bad("contains a space");
    }
    if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return bad("contains a control or whitespace character");
    }
    if name.chars().any(|c| FORBIDDEN.contains(c)) {
        return bad(
            "contains a character Windows forbids ({ | } ~ [ \\ ] ^ ' : ; < = > ? @ ! \" # $ % ` ( ) + / . , * &)",
        );
    }
    if name.bytes().all(|b| b.is_ascii_digit()) {
        return bad("is made of digits only");
    }
    Ok(())
}

/// Merges `s` into `existing` (the image's answer file, or `None` for a new one) for components of
/// architecture `arch` (`"amd64"`…) and returns the new file, UTF-8 encoded.
pub fn merge(existing: Option<&[u8]>, s: &Settings, arch: &str) -> Result<Vec<u8>, UnattendError> {
    if !ARCHITECTURES.contains(&arch) {
        return Err(UnattendError::UnknownArchitecture { arch: arch.to_string() });
    }
    let edits = plan(s)?;
    let mut doc = match existing {
        Some(bytes) => parse(bytes)?,
        None => Document::new(),
    };
    check_unique_passes(&doc.root)?;
    let style = Style::of(&doc);
    for edit in &edits {
        apply(&mut doc.root, edit, arch, &style)?;
    }
    for pass in touched_passes(&edits) {
        clear_pass_marks(&mut doc.root, pass);
    }
    Ok(write(&doc, &style))
}

// ---------------------------------------------------------------------------------------------------------
// What to change

struct Edit {
    pass: Pass,
    component: String,
    path: Vec<String>,
    action: Action,
}

enum Action {
    /// Unescaped text for the element, which is created if missing.
    Set(String),
    /// Remove the element if present; nothing is created on the way.
    Remove,
}

impl Edit {
    fn set(pass: Pass, component: &str, path: &[&str], value: &str) -> Edit {
        Edit {
            pass,
            component: component.to_string(),
            path: path.iter().map(|p| p.to_string()).collect(),
            action: Action::Set(value.to_string()),
        }
    }

    fn describe(&self) -> String {
        format!("{}/{}/{}", self.pass, self.component, self.path.join("/"))
    }

    fn overlaps(&self, other: &Edit) -> bool {
        let shorter = self.path.len().min(other.path.len());
        self.pass == other.pass
            && self.component.eq_ignore_ascii_case(&other.component)
            && self.path[..shorter] == other.path[..shorter]
    }
}

/// Validates every value and turns the settings into edits, parc's own first.
fn plan(s: &Settings) -> Result<Vec<Edit>, UnattendError> {
    validate_computer_name(&s.computer_name)?;
    let mut edits = vec![
        Edit::set(Pass::Specialize, SHELL_SETUP, &["ComputerName"], &s.computer_name),
        Edit::set(Pass::Specialize, SHELL_SETUP, &["TimeZone"], &s.time_zone),
    ];
    check_time_zone(&s.time_zone, &edits[1].describe())?;
    if let Some(blob) = &s.join_blob {
        let edit = Edit::set(Pass::Specialize, UNATTENDED_JOIN, &ACCOUNT_DATA_PATH, blob);
        check_join_blob(blob, &edit.describe())?;
        edits.push(edit);
        for name in SUPERSEDED_BY_PROVISIONING {
            edits.push(Edit {
                pass: Pass::Specialize,
                component: UNATTENDED_JOIN.to_string(),
                path: vec![ACCOUNT_DATA_PATH[0].to_string(), name.to_string()],
                action: Action::Remove,
            });
        }
    }
    for setting in &s.extra {
        edits.push(extra_edit(setting)?);
    }
    check_no_overlap(&edits)?;
    Ok(edits)
}

fn extra_edit(setting: &Setting) -> Result<Edit, UnattendError> {
    check_name("component name", &setting.component)?;
    if setting.path.is_empty() {
        return Err(UnattendError::InvalidName { what: "element path", name: String::new() });
    }
    for name in &setting.path {
        check_name("element name", name)?;
    }
    let edit = Edit {
        pass: setting.pass,
        component: setting.component.clone(),
        path: setting.path.clone(),
        action: Action::Set(setting.value.clone()),
    };
    check_text(&setting.value, &edit.describe())?;
    Ok(edit)
}

fn check_no_overlap(edits: &[Edit]) -> Result<(), UnattendError> {
    for (i, first) in edits.iter().enumerate() {
        if let Some(second) = edits[i + 1..].iter().find(|e| first.overlaps(e)) {
            return Err(UnattendError::Conflict { first: first.describe(), second: second.describe() });
        }
    }
    Ok(())
}

/// Names of elements parc creates: plain XML names without a prefix, since created elements live in the
/// unattend namespace.
fn check_name(what: &'static str, name: &str) -> Result<(), UnattendError> {
    let mut chars = name.chars();
    let starts_well = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if starts_well && chars.all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
        Ok(())
    } else {
        Err(UnattendError::InvalidName { what, name: name.to_string() })
    }
}

/// Text is escaped on output, but control characters cannot be written in XML 1.0 at all, and a line
/// break or tab in a Windows setting is a mistake upstream.
fn check_text(value: &str, setting: &str) -> Result<(), UnattendError> {
    if value.chars().any(|c| c.is_control() || !is_xml_char(c)) {
        return Err(UnattendError::InvalidValue {
            setting: setting.to_string(),
            reason: "contains a control character (line break, tab or similar); remove it",
        });
    }
    Ok(())
}

fn check_time_zone(zone: &str, setting: &str) -> Result<(), UnattendError> {
    let bad = |reason| Err(UnattendError::InvalidValue { setting: setting.to_string(), reason });
    if zone.trim().is_empty() {
        return bad("is empty; give a Windows time zone id such as \"Romance Standard Time\" (tzutil /l)");
    }
    if zone.chars().count() > 256 {
        return bad("is longer than the 256 characters Windows accepts");
    }
    check_text(zone, setting)
}

/// The value is never echoed: it holds the machine account's password.
fn check_join_blob(blob: &str, setting: &str) -> Result<(), UnattendError> {
    let bad = |reason| Err(UnattendError::InvalidValue { setting: setting.to_string(), reason });
    if blob.is_empty() {
        return bad("is empty; provision the machine again");
    }
    if !blob.bytes().all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b)) {
        return bad("is not base64 text; pass the AccountData string (printblob output), not the UTF-16 djoin file, \
             without BOM, NUL or line breaks");
    }
    Ok(())
}

fn touched_passes(edits: &[Edit]) -> Vec<Pass> {
    let mut passes: Vec<Pass> = edits.iter().filter(|e| matches!(e.action, Action::Set(_))).map(|e| e.pass).collect();
    passes.sort();
    passes.dedup();
    passes
}

// ---------------------------------------------------------------------------------------------------------
// The tree

/// An answer file as read: enough to write back what was there, and to find elements by namespace.
#[derive(Debug)]
struct Document {
    /// Comments and processing instructions before the root (whitespace and the declaration are rewritten).
    prolog: Vec<Node>,
    root: Element,
    epilog: Vec<Node>,
    /// `"\r\n"` when the source used it, so created lines match the file's.
    newline: &'static str,
}

#[derive(Debug)]
enum Node {
    Element(Element),
    /// Escaped as in the source, references included, so untouched text is written back unchanged.
    Text(String),
    CData(String),
    Comment(String),
    Pi(String),
}

#[derive(Debug)]
struct Element {
    /// The qualified name as written, prefix included.
    name: String,
    attrs: Vec<Attr>,
    /// The start tag's content as written (name and attributes), kept while the attributes are untouched
    /// so their quoting, order and line breaks survive.
    original_tag: Option<String>,
    /// The element's resolved namespace.
    ns: Option<String>,
    /// The default namespace in scope for its children: tells whether a created child needs an `xmlns`.
    child_default_ns: Option<String>,
    children: Vec<Node>,
    self_closing: bool,
}

#[derive(Debug)]
struct Attr {
    name: String,
    /// Escaped as written.
    raw: String,
    value: String,
}

impl Node {
    fn is_blank(&self) -> bool {
        matches!(self, Node::Text(t) if t.chars().all(|c| c.is_ascii_whitespace()))
    }

    fn as_element(&self) -> Option<&Element> {
        match self {
            Node::Element(e) => Some(e),
            _ => None,
        }
    }
}

impl Document {
    /// What `merge(None, …)` starts from.
    fn new() -> Document {
        let root = Element::created("unattend", &[("xmlns", UNATTEND_NS)], None);
        Document { prolog: Vec::new(), root, epilog: Vec::new(), newline: "\n" }
    }
}

impl Element {
    /// An element parc adds, in the unattend namespace: unprefixed, declaring that namespace only where the
    /// parent's default namespace is another one.
    fn created(name: &str, attrs: &[(&str, &str)], parent: Option<&Element>) -> Element {
        let mut attrs: Vec<Attr> = attrs
            .iter()
            .map(|(n, v)| Attr { name: n.to_string(), raw: escape(*v).into_owned(), value: v.to_string() })
            .collect();
        let inherits = parent.is_some_and(|p| p.child_default_ns.as_deref() == Some(UNATTEND_NS));
        if parent.is_some() && !inherits {
            attrs.push(Attr { name: "xmlns".into(), raw: UNATTEND_NS.into(), value: UNATTEND_NS.into() });
        }
        Element {
            name: name.to_string(),
            attrs,
            original_tag: None,
            ns: Some(UNATTEND_NS.to_string()),
            child_default_ns: Some(UNATTEND_NS.to_string()),
            children: Vec::new(),
            self_closing: false,
        }
    }

    fn local_name(&self) -> &str {
        local_part(&self.name)
    }

    /// An unattend element called `local`; answer files may use a prefix for the namespace.
    fn is(&self, local: &str) -> bool {
        self.ns.as_deref() == Some(UNATTEND_NS) && self.local_name() == local
    }

    /// The value of an unprefixed attribute (identity attributes are never prefixed).
    fn attr(&self, name: &str) -> Option<&str> {
        self.attrs.iter().find(|a| a.name == name).map(|a| a.value.as_str())
    }

    fn attr_is(&self, name: &str, wanted: &str) -> bool {
        self.attr(name).is_some_and(|v| v.eq_ignore_ascii_case(wanted))
    }

    fn child_elements(&self) -> impl Iterator<Item = &Element> {
        self.children.iter().filter_map(Node::as_element)
    }

    fn remove_attrs(&mut self, unwanted: impl Fn(&Attr) -> bool) {
        let before = self.attrs.len();
        self.attrs.retain(|a| !unwanted(a));
        if self.attrs.len() != before {
            self.original_tag = None;
        }
    }

    /// The child at `index`, which the caller found by searching for elements.
    fn element_at(&mut self, index: usize) -> &mut Element {
        match &mut self.children[index] {
            Node::Element(e) => e,
            _ => unreachable!("index {index} came from a search for elements"),
        }
    }
}

fn local_part(qname: &str) -> &str {
    qname.rsplit_once(':').map_or(qname, |(_, local)| local)
}

// ---------------------------------------------------------------------------------------------------------
// Editing

/// One level of the way from the root to a setting.
enum Step<'a> {
    Pass(Pass),
    Component { name: &'a str, arch: &'a str },
    Element(&'a str),
}

impl Step<'_> {
    fn matches(&self, el: &Element) -> bool {
        match self {
            Step::Pass(pass) => el.is("settings") && el.attr_is("pass", pass.as_str()),
            Step::Component { name, arch } => {
                el.is("component") && el.attr_is("name", name) && el.attr_is("processorArchitecture", arch)
            }
            Step::Element(name) => el.is(name),
        }
    }

    fn create(&self, parent: &Element) -> Element {
        match self {
            Step::Pass(pass) => Element::created("settings", &[("pass", pass.as_str())], Some(parent)),
            Step::Component { name, arch } => Element::created(
                "component",
                &[
                    ("name", name),
                    ("processorArchitecture", arch),
                    ("publicKeyToken", PUBLIC_KEY_TOKEN),
                    ("language", "neutral"),
                    ("versionScope", "nonSxS"),
                    ("xmlns:wcm", WCM_NS),
                    ("xmlns:xsi", XSI_NS),
                ],
                Some(parent),
            ),
            Step::Element(name) => Element::created(name, &[], Some(parent)),
        }
    }

    /// Index of the sibling a new element goes before; `None` appends. Passes keep the order Setup runs them.
    fn place(&self, parent: &Element) -> Option<usize> {
        let Step::Pass(pass) = self else { return None };
        parent.children.iter().position(|n| {
            n.as_element().is_some_and(|e| {
                e.is("settings") && e.attr("pass").and_then(Pass::from_attr).is_some_and(|p| p > *pass)
            })
        })
    }

    fn extend(&self, location: &str) -> String {
        match self {
            Step::Pass(pass) => format!("<settings pass=\"{pass}\">"),
            Step::Component { name, arch } => format!("{location} component {name} ({arch})"),
            Step::Element(name) => format!("{location} <{name}>"),
        }
    }
}

/// Windows reads one `settings` per pass; with two, parc could edit the one Setup ignores.
fn check_unique_passes(root: &Element) -> Result<(), UnattendError> {
    for pass in Pass::ALL {
        if root.child_elements().filter(|e| Step::Pass(pass).matches(e)).count() > 1 {
            return Err(UnattendError::DuplicatePass { pass });
        }
    }
    Ok(())
}

fn apply(root: &mut Element, edit: &Edit, arch: &str, style: &Style) -> Result<(), UnattendError> {
    let (leaf, parents) = edit.path.split_last().expect("plan() refuses empty paths");
    let mut steps = vec![Step::Pass(edit.pass), Step::Component { name: &edit.component, arch }];
    steps.extend(parents.iter().map(|p| Step::Element(p)));
    let create = matches!(edit.action, Action::Set(_));
    if create {
        steps.push(Step::Element(leaf));
    }
    let mut current = root;
    let mut indent = String::new();
    let mut location = String::new();
    for step in &steps {
        location = step.extend(&location);
        match descend(current, &indent, step, create, style, &location)? {
            Some((child, child_indent)) => (current, indent) = (child, child_indent),
            None => return Ok(()),
        }
    }
    match &edit.action {
        Action::Set(text) => set_text(current, text, &location),
        Action::Remove => {
            remove_children(current, &Step::Element(leaf));
            Ok(())
        }
    }
}

/// The one child of `parent` matching `step`, created when missing and `create` is set, with its indentation.
fn descend<'e>(
    parent: &'e mut Element,
    indent: &str,
    step: &Step,
    create: bool,
    style: &Style,
    location: &str,
) -> Result<Option<(&'e mut Element, String)>, UnattendError> {
    let found: Vec<usize> = (0..parent.children.len())
        .filter(|&i| parent.children[i].as_element().is_some_and(|e| step.matches(e)))
        .collect();
    let child_indent = style.child_indent(parent, indent);
    let index = match found[..] {
        [] if !create => return Ok(None),
        [] => {
            let (child, place) = (step.create(parent), step.place(parent));
            insert_child(parent, place, child, &child_indent, indent, style)
        }
        [index] => index,
        _ => return Err(UnattendError::Duplicate { location: location.to_string() }),
    };
    Ok(Some((parent.element_at(index), child_indent)))
}

/// Inserts `child` before the element at `before` (or last), copying the layout of its siblings so the file
/// stays readable; a file without line breaks stays without.
fn insert_child(
    parent: &mut Element,
    before: Option<usize>,
    child: Element,
    indent: &str,
    parent_indent: &str,
    style: &Style,
) -> usize {
    let line = |indent: &str| Node::Text(format!("{}{indent}", style.newline));
    let children = &mut parent.children;
    match before {
        Some(i) => {
            let laid_out = i > 0 && children[i - 1].is_blank();
            children.insert(i, Node::Element(child));
            if laid_out {
                children.insert(i + 1, line(indent));
            }
            i
        }
        None if children.is_empty() => {
            parent.self_closing = false;
            children.extend([line(indent), Node::Element(child), line(parent_indent)]);
            1
        }
        None if children.last().is_some_and(Node::is_blank) => {
            let closing = children.len() - 1;
            children.insert(closing, line(indent));
            children.insert(closing + 1, Node::Element(child));
            closing + 1
        }
        None => {
            children.push(Node::Element(child));
            children.len() - 1
        }
    }
}

fn set_text(el: &mut Element, text: &str, location: &str) -> Result<(), UnattendError> {
    if el.child_elements().next().is_some() {
        return Err(UnattendError::NotALeaf { location: location.to_string() });
    }
    el.children.clear();
    if !text.is_empty() {
        el.children.push(Node::Text(escape(text).into_owned()));
        el.self_closing = false;
    }
    Ok(())
}

/// Removes matching children with the line they stood on.
fn remove_children(parent: &mut Element, step: &Step) {
    let mut i = 0;
    while i < parent.children.len() {
        if parent.children[i].as_element().is_some_and(|e| step.matches(e)) {
            parent.children.remove(i);
            if i > 0 && parent.children[i - 1].is_blank() {
                parent.children.remove(i - 1);
                i -= 1;
            }
        } else {
            i += 1;
        }
    }
}

fn clear_pass_marks(root: &mut Element, pass: Pass) {
    for node in &mut root.children {
        if let Node::Element(settings) = node {
            if Step::Pass(pass).matches(settings) {
                settings.remove_attrs(|a| local_part(&a.name) == PASS_MARK);
            }
        }
    }
}

/// Line breaks and indentation for created elements, taken from the file.
struct Style {
    newline: &'static str,
    /// One level of indentation: what the root's children are indented by, or four spaces.
    unit: String,
}

impl Style {
    fn of(doc: &Document) -> Style {
        let unit = existing_child_indent(&doc.root).filter(|u| !u.is_empty()).unwrap_or("    ");
        Style { newline: doc.newline, unit: unit.to_string() }
    }

    fn child_indent(&self, parent: &Element, parent_indent: &str) -> String {
        existing_child_indent(parent).map_or_else(|| format!("{parent_indent}{}", self.unit), str::to_string)
    }
}

/// The indentation of the first child element that starts a line.
fn existing_child_indent(el: &Element) -> Option<&str> {
    el.children.windows(2).find_map(|pair| match pair {
        [Node::Text(t), Node::Element(_)] if pair[0].is_blank() && t.contains('\n') => {
            t.rsplit_once('\n').map(|(_, indent)| indent)
        }
        _ => None,
    })
}

// ---------------------------------------------------------------------------------------------------------
// Reading

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Utf8 { bom: bool },
    Utf16Le,
}

/// The text of the file and how to map positions in it back to the file's bytes.
struct Decoded {
    text: String,
    encoding: Encoding,
}

impl Decoded {
    /// Technicians open the file in a hex editor or `xxd`: report positions in its own bytes.
    fn source_offset(&self, pos: usize) -> usize {
        match self.encoding {
            Encoding::Utf8 { bom } => pos + if bom { 3 } else { 0 },
            Encoding::Utf16Le => {
                let prefix = self.text.get(..pos).unwrap_or(&self.text);
                2 + 2 * prefix.encode_utf16().count()
            }
        }
    }
}

fn parse(bytes: &[u8]) -> Result<Document, UnattendError> {
    if bytes.len() > MAX_SIZE {
        return Err(UnattendError::TooLarge { size: bytes.len(), limit: MAX_SIZE });
    }
    let decoded = decode(bytes)?;
    check_characters(&decoded)?;
    build_tree(&decoded)
}

fn decode(bytes: &[u8]) -> Result<Decoded, UnattendError> {
    let unsupported = |found: &str| Err(UnattendError::UnsupportedEncoding { found: found.to_string() });
    // UTF-32LE starts like UTF-16LE: test it first.
    match bytes {
        [0xFF, 0xFE, 0, 0, ..] => unsupported("UTF-32LE"),
        [0, 0, 0xFE, 0xFF, ..] => unsupported("UTF-32BE"),
        [0xFE, 0xFF, ..] => unsupported("UTF-16BE"),
        [b'<', 0, ..] => unsupported("UTF-16LE without a byte-order mark"),
        [0, b'<', ..] => unsupported("UTF-16BE without a byte-order mark"),
        [0xFF, 0xFE, rest @ ..] => decode_utf16le(rest),
        [0xEF, 0xBB, 0xBF, rest @ ..] => decode_utf8(rest, true),
        _ => decode_utf8(bytes, false),
    }
}

fn decode_utf8(bytes: &[u8], bom: bool) -> Result<Decoded, UnattendError> {
    let encoding = Encoding::Utf8 { bom };
    match std::str::from_utf8(bytes) {
        Ok(text) => Ok(Decoded { text: text.to_string(), encoding }),
        Err(e) => Err(UnattendError::BadEncoding { encoding: "UTF-8", offset: e.valid_up_to() + usize::from(bom) * 3 }),
    }
}

fn decode_utf16le(bytes: &[u8]) -> Result<Decoded, UnattendError> {
    let bad = |unit: usize| UnattendError::BadEncoding { encoding: "UTF-16LE", offset: 2 + 2 * unit };
    if !bytes.len().is_multiple_of(2) {
        return Err(bad(bytes.len() / 2));
    }
    let units = bytes.chunks_exact(2).map(|pair| u16::from_le_bytes([pair[0], pair[1]]));
    let mut text = String::with_capacity(bytes.len() / 2);
    let mut unit = 0;
    for c in char::decode_utf16(units) {
        let c = c.map_err(|_| bad(unit))?;
        unit += c.len_utf16();
        text.push(c);
    }
    Ok(Decoded { text, encoding: Encoding::Utf16Le })
}

fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// quick-xml does not check characters; a NUL or form feed would otherwise travel into the written file.
fn check_characters(decoded: &Decoded) -> Result<(), UnattendError> {
    match decoded.text.char_indices().find(|(_, c)| !is_xml_char(*c)) {
        Some((pos, c)) => Err(UnattendError::InvalidCharacter { code: c.into(), offset: decoded.source_offset(pos) }),
        None => Ok(()),
    }
}

fn build_tree(decoded: &Decoded) -> Result<Document, UnattendError> {
    let mut reader = Reader::from_str(&decoded.text);
    reader.config_mut().check_comments = true;
    let mut tree = TreeBuilder::default();
    loop {
        let at = decoded.source_offset(to_usize(reader.buffer_position()));
        let event = match reader.read_event() {
            Ok(event) => event,
            Err(e) => {
                let offset = decoded.source_offset(to_usize(reader.error_position()));
                return Err(tree.reader_error(e, offset));
            }
        };
        match event {
            Event::Eof => break,
            Event::DocType(_) => return Err(UnattendError::DocType { offset: at }),
            Event::Decl(decl) => {
                check_declaration(&decl, decoded, tree.started, at)?;
                tree.started = true;
            }
            Event::Start(start) => tree.open(&start, at)?,
            Event::Empty(start) => {
                tree.open(&start, at)?;
                tree.close(true);
            }
            Event::End(_) => tree.close(false),
            Event::Text(text) => tree.text(&text, at)?,
            Event::GeneralRef(reference) => tree.reference(&reference, at)?,
            Event::CData(data) => tree.node(Node::CData(data.to_string()), at)?,
            Event::Comment(comment) => tree.node(Node::Comment(comment.to_string()), at)?,
            Event::PI(pi) => tree.node(Node::Pi(pi.to_string()), at)?,
        }
    }
    let end = decoded.source_offset(decoded.text.len());
    tree.finish(end, newline_of(&decoded.text))
}

fn to_usize(position: u64) -> usize {
    usize::try_from(position).unwrap_or(usize::MAX)
}

fn newline_of(text: &str) -> &'static str {
    if text.contains("\r\n") {
        "\r\n"
    } else {
        "\n"
    }
}

/// The byte-order mark decides how the file is read; a declaration naming another encoding is tolerated
/// only where both readings agree (ASCII text declared as a legacy code page).
fn check_declaration(decl: &BytesDecl, decoded: &Decoded, started: bool, at: usize) -> Result<(), UnattendError> {
    if started {
        return Err(UnattendError::Malformed { offset: at, reason: "the XML declaration must come first".to_string() });
    }
    let version = decl.version().map_err(|e| UnattendError::Malformed { offset: at, reason: e.to_string() })?;
    if version != "1.0" {
        return Err(UnattendError::UnsupportedXmlVersion { version: version.into_owned() });
    }
    let Some(declared) = decl.encoding() else { return Ok(()) };
    let declared = declared.map_err(|e| UnattendError::Malformed { offset: at, reason: e.to_string() })?;
    let utf = declared.eq_ignore_ascii_case("utf-8") || declared.eq_ignore_ascii_case("utf-16");
    let has_bom = decoded.encoding != Encoding::Utf8 { bom: false };
    if utf || has_bom || decoded.text.is_ascii() {
        Ok(())
    } else {
        Err(UnattendError::UnsupportedEncoding { found: declared.into_owned() })
    }
}

/// Builds the tree from reader events, resolving namespaces as it goes.
#[derive(Default)]
struct TreeBuilder {
    /// Open elements with the namespace declarations each one made; at most [`MAX_DEPTH`].
    open: Vec<(Element, Vec<(String, String)>)>,
    prolog: Vec<Node>,
    root: Option<Element>,
    epilog: Vec<Node>,
    /// Whether anything but layout was read: the XML declaration must come first.
    started: bool,
}

impl TreeBuilder {
    fn open(&mut self, start: &BytesStart, at: usize) -> Result<(), UnattendError> {
        self.started = true;
        if self.root.is_some() && self.open.is_empty() {
            return Err(malformed(at, "there is a second root element"));
        }
        if self.open.len() >= MAX_DEPTH {
            return Err(UnattendError::TooDeep { offset: at, limit: MAX_DEPTH });
        }
        let name = start.name().as_ref().to_string();
        let attrs = read_attrs(start, at)?;
        let declarations = namespace_declarations(&attrs);
        let prefix = name.rsplit_once(':').map_or("", |(prefix, _)| prefix);
        let ns = self.resolve(prefix, &declarations);
        if ns.is_none() && !prefix.is_empty() {
            return Err(malformed(at, &format!("the prefix {prefix:?} of <{name}> is not declared")));
        }
        let child_default_ns = self.resolve("", &declarations);
        if self.root.is_none() && self.open.is_empty() {
            check_root(&name, ns.as_deref())?;
        }
        let element = Element {
            original_tag: Some(start.to_string()),
            name,
            attrs,
            ns,
            child_default_ns,
            children: Vec::new(),
            self_closing: false,
        };
        self.open.push((element, declarations));
        Ok(())
    }

    /// The namespace bound to `prefix` (`""` = default) on the element being opened or its ancestors.
    fn resolve(&self, prefix: &str, own: &[(String, String)]) -> Option<String> {
        let scopes = std::iter::once(own).chain(self.open.iter().rev().map(|(_, d)| d.as_slice()));
        let uri = scopes.flat_map(|decls| decls.iter()).find(|(p, _)| p == prefix).map(|(_, uri)| uri.as_str());
        match (prefix, uri) {
            ("xml", None) => Some("http://www.w3.org/XML/1998/namespace".to_string()),
            (_, Some("")) | (_, None) => None,
            (_, Some(uri)) => Some(uri.to_string()),
        }
    }

    /// quick-xml has already checked that end tags match.
    fn close(&mut self, self_closing: bool) {
        let Some((mut element, _)) = self.open.pop() else { return };
        element.self_closing = self_closing;
        match self.open.last_mut() {
            Some((parent, _)) => parent.children.push(Node::Element(element)),
            None => self.root = Some(element),
        }
    }

    fn text(&mut self, text: &BytesText, at: usize) -> Result<(), UnattendError> {
        let Some((parent, _)) = self.open.last_mut() else {
            // Layout around the root is rewritten; anything else there is not XML.
            if text.chars().all(|c| c.is_ascii_whitespace()) {
                return Ok(());
            }
            return Err(malformed(at, "there is text outside the root element"));
        };
        // quick-xml lets it through, but it would end a CDATA section that is not there.
        if text.contains("]]>") {
            return Err(malformed(at, "text contains \"]]>\""));
        }
        match parent.children.last_mut() {
            Some(Node::Text(previous)) => previous.push_str(text),
            _ => parent.children.push(Node::Text(text.to_string())),
        }
        Ok(())
    }

    /// Keeps `&…;` as written after checking it stands for something without a DTD.
    fn reference(&mut self, reference: &BytesRef, at: usize) -> Result<(), UnattendError> {
        let name: &str = reference;
        let known = match reference.resolve_char_ref() {
            Ok(Some(c)) => is_xml_char(c),
            Ok(None) => ["lt", "gt", "amp", "apos", "quot"].contains(&name),
            Err(e) => return Err(malformed(at, &e.to_string())),
        };
        if !known {
            return Err(UnattendError::UndefinedEntity { name: name.to_string(), offset: at });
        }
        self.text(&BytesText::from_escaped(format!("&{name};")), at)
    }

    fn node(&mut self, node: Node, at: usize) -> Result<(), UnattendError> {
        self.started = true;
        match (self.open.last_mut(), &self.root, node) {
            (Some((parent, _)), _, node) => parent.children.push(node),
            (None, _, Node::CData(_)) => return Err(malformed(at, "there is a CDATA section outside the root")),
            (None, None, node) => self.prolog.push(node),
            (None, Some(_), node) => self.epilog.push(node),
        }
        Ok(())
    }

    fn reader_error(&self, error: quick_xml::Error, offset: usize) -> UnattendError {
        use quick_xml::errors::{IllFormedError, SyntaxError};
        let cut_short = matches!(
            error,
            quick_xml::Error::IllFormed(IllFormedError::MissingEndTag(_))
                | quick_xml::Error::Syntax(
                    SyntaxError::UnclosedTag
                        | SyntaxError::UnclosedSingleQuotedAttributeValue
                        | SyntaxError::UnclosedDoubleQuotedAttributeValue
                        | SyntaxError::UnclosedComment
                        | SyntaxError::UnclosedCData
                        | SyntaxError::UnclosedPI
                )
        );
        match self.open.last() {
            Some((open, _)) if cut_short => UnattendError::Truncated { offset, open: open.name.clone() },
            _ => UnattendError::Malformed { offset, reason: error.to_string() },
        }
    }

    fn finish(self, end: usize, newline: &'static str) -> Result<Document, UnattendError> {
        if let Some((open, _)) = self.open.last() {
            return Err(UnattendError::Truncated { offset: end, open: open.name.clone() });
        }
        let root = self.root.ok_or(UnattendError::NoRoot)?;
        Ok(Document { prolog: self.prolog, root, epilog: self.epilog, newline })
    }
}

fn malformed(offset: usize, reason: &str) -> UnattendError {
    UnattendError::Malformed { offset, reason: reason.to_string() }
}

fn check_root(name: &str, ns: Option<&str>) -> Result<(), UnattendError> {
    if local_part(name) != "unattend" {
        return Err(UnattendError::WrongRoot { found: name.to_string() });
    }
    match ns {
        Some(UNATTEND_NS) => Ok(()),
        other => Err(UnattendError::WrongNamespace { found: other.unwrap_or("(none)").to_string() }),
    }
}

fn read_attrs(start: &BytesStart, at: usize) -> Result<Vec<Attr>, UnattendError> {
    let mut attrs = Vec::new();
    for attr in start.attributes() {
        let attr = attr.map_err(|e| malformed(at, &e.to_string()))?;
        attrs.push(read_attr(&attr, at)?);
    }
    Ok(attrs)
}

/// quick-xml leaves attribute values unchecked: refuse what would make the written file ill-formed.
fn read_attr(attr: &Attribute, at: usize) -> Result<Attr, UnattendError> {
    let name = attr.key.as_ref().to_string();
    let raw = attr.value.as_ref();
    if raw.contains('<') {
        return Err(malformed(at, &format!("the value of attribute {name} contains '<'")));
    }
    let value = unescape(raw).map_err(|e| malformed(at, &format!("attribute {name}: {e}")))?;
    if let Some(c) = value.chars().find(|c| !is_xml_char(*c)) {
        return Err(UnattendError::InvalidCharacter { code: c.into(), offset: at });
    }
    Ok(Attr { value: value.into_owned(), raw: raw.to_string(), name })
}

fn namespace_declarations(attrs: &[Attr]) -> Vec<(String, String)> {
    attrs
        .iter()
        .filter_map(|a| match a.name.as_str() {
            "xmlns" => Some((String::new(), a.value.clone())),
            name => name.strip_prefix("xmlns:").map(|prefix| (prefix.to_string(), a.value.clone())),
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------------------
// Writing

fn write(doc: &Document, style: &Style) -> Vec<u8> {
    let mut out = Out(Writer::new(Vec::new()));
    out.event(Event::Decl(BytesDecl::new("1.0", Some("utf-8"), None)));
    out.newline(style);
    for node in &doc.prolog {
        out.node(node);
        out.newline(style);
    }
    out.element(&doc.root);
    out.newline(style);
    for node in &doc.epilog {
        out.node(node);
        out.newline(style);
    }
    out.0.into_inner()
}

struct Out(Writer<Vec<u8>>);

impl Out {
    fn event(&mut self, event: Event) {
        self.0.write_event(event).expect("writing to a Vec cannot fail");
    }

    fn newline(&mut self, style: &Style) {
        self.event(Event::Text(BytesText::from_escaped(style.newline)));
    }

    fn node(&mut self, node: &Node) {
        match node {
            Node::Element(el) => self.element(el),
            Node::Text(text) => self.event(Event::Text(BytesText::from_escaped(text.as_str()))),
            Node::CData(data) => self.event(Event::CData(BytesCData::new(data.as_str()))),
            Node::Comment(comment) => self.event(Event::Comment(BytesText::from_escaped(comment.as_str()))),
            Node::Pi(pi) => self.event(Event::PI(BytesPI::new(pi.as_str()))),
        }
    }

    fn element(&mut self, el: &Element) {
        let start = start_tag(el);
        if el.self_closing && el.children.is_empty() {
            return self.event(Event::Empty(start));
        }
        self.event(Event::Start(start));
        for child in &el.children {
            self.node(child);
        }
        self.event(Event::End(BytesEnd::new(el.name.as_str())));
    }
}

fn start_tag(el: &Element) -> BytesStart<'_> {
    if let Some(tag) = &el.original_tag {
        return BytesStart::from_content(tag.as_str(), el.name.len());
    }
    let mut start = BytesStart::new(el.name.as_str());
    for attr in &el.attrs {
        // Values read from single quotes may hold '"'; they are written in double quotes.
        let value = if attr.raw.contains('"') {
            Cow::Owned(attr.raw.replace('"', "&quot;"))
        } else {
            Cow::Borrowed(&*attr.raw)
        };
        start.push_attribute(Attribute { key: QName(&attr.name), value });
    }
    start
}

#[cfg(test)]
mod tests;

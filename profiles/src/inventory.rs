//! The machine inventory, `inventory.csv`: parsed, checked and edited line by line.
//!
//! Why CSV: one line per machine, so `git diff` and `git blame` show exactly which machine changed
//! and who changed it; it opens in LibreOffice and Excel, which technicians already use; and a
//! 10,000-machine inventory is about 1 MB.
//!
//! The first line that is neither blank nor a `#` comment is the header; columns are found by
//! name, in any order: `mac`, `hostname` and `department` are required, `serial`, `asset_tag`,
//! `location`, `status` (`active`, the default, or `retired`) and `notes` optional, anything else
//! refused. A row may stop early: missing trailing fields are empty. Edits rewrite only the line
//! of the machine that changed, so comments, column order and every other line stay byte for byte.

use std::collections::HashMap;
use std::fmt;

use crate::error::Problem;
use crate::hostname::valid_hostname;
use crate::model::{valid_id, Mac, Machine, MachineStatus};

/// Where the inventory lives in the profiles repository.
pub const INVENTORY_FILE: &str = "inventory.csv";

pub(crate) const EMPTY_INVENTORY: &str = "\
# One line per machine; lines starting with # are comments. Columns, in any order:
# mac (required), hostname (empty until assigned), department (a file name in departments/, without .toml),
# serial, asset_tag, location, status (active or retired), notes.
mac,hostname,department,serial,asset_tag,location,status,notes
";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Column {
    Mac,
    Hostname,
    Department,
    Serial,
    AssetTag,
    Location,
    Status,
    Notes,
}

const COLUMNS: [(Column, &str); 8] = [
    (Column::Mac, "mac"),
    (Column::Hostname, "hostname"),
    (Column::Department, "department"),
    (Column::Serial, "serial"),
    (Column::AssetTag, "asset_tag"),
    (Column::Location, "location"),
    (Column::Status, "status"),
    (Column::Notes, "notes"),
];

const REQUIRED: [Column; 3] = [Column::Mac, Column::Hostname, Column::Department];

impl Column {
    fn name(self) -> &'static str {
        COLUMNS.iter().find(|(c, _)| *c == self).map(|(_, n)| *n).expect("every column is named")
    }

    /// This column's text in a machine's row.
    fn value(self, m: &Machine) -> String {
        match self {
            Column::Mac => m.mac.to_string(),
            Column::Hostname => m.hostname.clone(),
            Column::Department => m.department.clone(),
            Column::Serial => m.serial.clone(),
            Column::AssetTag => m.asset_tag.clone(),
            Column::Location => m.location.clone(),
            Column::Status => m.status.as_str().to_string(),
            Column::Notes => m.notes.clone(),
        }
    }
}

/// The parsed inventory. Keeps the file's raw lines so that edits change only the lines they must.
#[derive(Clone)]
pub struct Inventory {
    /// Physical lines, each with its own line terminator (the last may have none).
    lines: Vec<String>,
    /// Index in `lines` of the header.
    header: usize,
    columns: Vec<Column>,
    /// In file order; `Machine::line` is the 1-based index in `lines`.
    machines: Vec<Machine>,
    by_mac: HashMap<Mac, usize>,
    /// Uppercase hostname of active machines -> index in `machines`.
    by_hostname: HashMap<String, usize>,
    /// The terminator for new lines: the file's own.
    newline: &'static str,
}

impl fmt::Debug for Inventory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inventory").field("machines", &self.machines.len()).finish_non_exhaustive()
    }
}

impl Inventory {
    /// Parses `inventory.csv`; on failure returns every problem found, each with its line.
    pub fn parse(text: &str) -> Result<Inventory, Vec<Problem>> {
        let problem = |line: usize, reason: String| Problem::new(INVENTORY_FILE, Some(line_number(line)), reason);
        let lines: Vec<String> = text.split_inclusive('\n').map(String::from).collect();
        let mut inventory = Inventory {
            lines: Vec::new(),
            header: 0,
            columns: Vec::new(),
            machines: Vec::new(),
            by_mac: HashMap::new(),
            by_hostname: HashMap::new(),
            newline: if text.contains("\r\n") { "\r\n" } else { "\n" },
        };
        let mut problems = Vec::new();
        let mut have_header = false;
        for (i, raw) in lines.iter().enumerate() {
            let content = raw.trim_end_matches(['\n', '\r']);
            let content = if i == 0 { content.trim_start_matches('\u{feff}') } else { content };
            if content.trim().is_empty() || content.starts_with('#') {
                continue;
            }
            let fields = match split_record(content) {
                Ok(fields) => fields,
                Err(reason) => {
                    problems.push(problem(i, reason));
                    continue;
                }
            };
            if !have_header {
                match parse_header(&fields) {
                    Ok(columns) => inventory.columns = columns,
                    Err(reasons) => {
                        problems.extend(reasons.into_iter().map(|r| problem(i, r)));
                        return Err(problems);
                    }
                }
                inventory.header = i;
                have_header = true;
                continue;
            }
            let machine = match parse_row(&inventory.columns, &fields) {
                Ok(machine) => Machine { line: line_number(i), ..machine },
                Err(reasons) => {
                    problems.extend(reasons.into_iter().map(|r| problem(i, r)));
                    continue;
                }
            };
            let index = inventory.machines.len();
            if let Some(&other) = inventory.by_mac.get(&machine.mac) {
                let reason = format!("MAC {} is already on line {}", machine.mac, inventory.machines[other].line);
                problems.push(problem(i, reason));
                continue;
            }
            if let Some(other) = inventory.hostname_owner(&machine) {
                let other = &inventory.machines[other];
                problems.push(problem(i, duplicate_hostname(&machine, other)));
                continue;
            }
            inventory.index(&machine, index);
            inventory.machines.push(machine);
        }
        if !have_header {
            let names: Vec<_> = COLUMNS.iter().map(|(_, n)| *n).collect();
            problems.push(Problem::new(
                INVENTORY_FILE,
                None,
                format!(
                    "no header row; the first line that is not a comment must name the columns, e.g. {}",
                    names.join(",")
                ),
            ));
        }
        if problems.is_empty() {
            inventory.lines = lines;
            Ok(inventory)
        } else {
            Err(problems)
        }
    }

    /// An inventory with no machine: a comment explaining the columns, and the header.
    pub fn empty() -> Inventory {
        Inventory::parse(EMPTY_INVENTORY).expect("the empty inventory parses")
    }

    /// Machines in file order.
    pub fn machines(&self) -> impl Iterator<Item = &Machine> {
        self.machines.iter()
    }

    pub fn get(&self, mac: &Mac) -> Option<&Machine> {
        self.by_mac.get(mac).map(|&i| &self.machines[i])
    }

    /// The active machine with this hostname (compared without case, as Windows does).
    pub fn by_hostname(&self, hostname: &str) -> Option<&Machine> {
        self.by_hostname.get(&hostname.to_ascii_uppercase()).map(|&i| &self.machines[i])
    }

    pub fn len(&self) -> usize {
        self.machines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.machines.is_empty()
    }

    /// Inserts or replaces the row of `machine.mac` (`machine.line` is ignored). Replacing rewrites
    /// only that line; a new machine is appended. A column the header lacks but the machine needs
    /// (e.g. `serial`) is added at the end of the header. On a problem (invalid field, hostname of
    /// another active machine) nothing changes.
    pub fn upsert(&mut self, mut machine: Machine) -> Result<(), Problem> {
        let existing = self.by_mac.get(&machine.mac).copied();
        let index = existing.unwrap_or(self.machines.len());
        let line = existing.map_or(self.lines.len(), |i| self.machines[i].line as usize - 1);
        let problem = |reason: String| Problem::new(INVENTORY_FILE, Some(line_number(line)), reason);
        check_fields(&machine).map_err(problem)?;
        if let Some(other) = self.hostname_owner(&machine).filter(|&other| Some(other) != existing) {
            return Err(problem(duplicate_hostname(&machine, &self.machines[other])));
        }

        for (column, _) in COLUMNS {
            let needed = match column {
                Column::Status => machine.status != MachineStatus::Active,
                _ => !column.value(&machine).is_empty(),
            };
            if needed && !self.columns.contains(&column) {
                self.columns.push(column);
                let names: Vec<&str> = self.columns.iter().map(|c| c.name()).collect();
                let old = &self.lines[self.header];
                let bom = if old.starts_with('\u{feff}') { "\u{feff}" } else { "" };
                self.lines[self.header] = format!("{bom}{}{}", record(&names), terminator(old));
            }
        }
        let values: Vec<String> = self.columns.iter().map(|c| c.value(&machine)).collect();
        let row = record(&values);
        machine.line = line_number(line);
        match existing {
            Some(i) => {
                let old = &self.machines[i];
                if self.hostname_owner(old) == Some(i) {
                    self.by_hostname.remove(&old.hostname.to_ascii_uppercase());
                }
                self.lines[line] = row + terminator(&self.lines[line]);
                self.machines[i] = machine.clone();
            }
            None => {
                if let Some(last) = self.lines.last_mut().filter(|l| !l.ends_with('\n')) {
                    last.push_str(self.newline);
                }
                self.lines.push(row + self.newline);
                self.machines.push(machine.clone());
            }
        }
        self.index(&machine, index);
        Ok(())
    }

    /// The file's content.
    pub fn to_text(&self) -> String {
        self.lines.concat()
    }

    /// The index of the active machine that holds `machine`'s hostname, if `machine` is active.
    fn hostname_owner(&self, machine: &Machine) -> Option<usize> {
        if machine.status != MachineStatus::Active || machine.hostname.is_empty() {
            return None;
        }
        self.by_hostname.get(&machine.hostname.to_ascii_uppercase()).copied()
    }

    fn index(&mut self, machine: &Machine, index: usize) {
        self.by_mac.insert(machine.mac, index);
        if machine.status == MachineStatus::Active && !machine.hostname.is_empty() {
            self.by_hostname.insert(machine.hostname.to_ascii_uppercase(), index);
        }
    }
}

/// The raw text (without terminator) of `mac`'s row in an inventory file, found without checking
/// the rest of the file: what `machine_history` compares between commits.
pub(crate) fn row_text(text: &str, mac: &Mac) -> Option<String> {
    let mut mac_column = None;
    for (i, raw) in text.split_inclusive('\n').enumerate() {
        let content = raw.trim_end_matches(['\n', '\r']);
        let content = if i == 0 { content.trim_start_matches('\u{feff}') } else { content };
        if content.trim().is_empty() || content.starts_with('#') {
            continue;
        }
        let Some(column) = mac_column else {
            let fields = split_record(content).ok()?;
            mac_column = Some(fields.iter().position(|f| f.eq_ignore_ascii_case("mac"))?);
            continue;
        };
        let field = if content.contains('"') {
            split_record(content).ok().and_then(|f| f.into_iter().nth(column))
        } else {
            content.split(',').nth(column).map(|f| f.trim().to_string())
        };
        if field.and_then(|f| f.parse::<Mac>().ok()).as_ref() == Some(mac) {
            return Some(content.to_string());
        }
    }
    None
}

fn line_number(index: usize) -> u32 {
    u32::try_from(index + 1).unwrap_or(u32::MAX)
}

fn duplicate_hostname(machine: &Machine, other: &Machine) -> String {
    format!("hostname {} is already used by the active machine {} on line {}", machine.hostname, other.mac, other.line)
}

/// The line terminator at the end of `line` ("" for a last line without one).
fn terminator(line: &str) -> &'static str {
    if line.ends_with("\r\n") {
        "\r\n"
    } else if line.ends_with('\n') {
        "\n"
    } else {
        ""
    }
}

/// The fields of one CSV line (RFC 4180 quoting), trimmed.
fn split_record(line: &str) -> Result<Vec<String>, String> {
    if line.bytes().filter(|&b| b == b'"').count() % 2 == 1 {
        return Err("a quote (\") is not closed; fields cannot span several lines".into());
    }
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .buffer_capacity(line.len() + 1)
        .from_reader(line.as_bytes());
    let mut record = csv::StringRecord::new();
    match reader.read_record(&mut record) {
        Ok(_) => Ok(record.iter().map(|f| f.trim().to_string()).collect()),
        Err(e) => Err(format!("unreadable CSV: {e}")),
    }
}

/// One CSV line, quoting the fields that need it (and a leading '#', which would make a comment).
fn record<S: AsRef<str>>(fields: &[S]) -> String {
    let mut out = String::new();
    for (i, field) in fields.iter().enumerate() {
        let field = field.as_ref();
        if i > 0 {
            out.push(',');
        }
        let quote = field.contains([',', '"', '\n', '\r']) || field.starts_with('#') || field.trim() != field;
        if quote {
            out.push('"');
            out.push_str(&field.replace('"', "\"\""));
            out.push('"');
        } else {
            out.push_str(field);
        }
    }
    out
}

fn parse_header(fields: &[String]) -> Result<Vec<Column>, Vec<String>> {
    let mut reasons = Vec::new();
    let mut columns = Vec::new();
    let names: Vec<_> = COLUMNS.iter().map(|(_, n)| *n).collect();
    for field in fields {
        match COLUMNS.iter().find(|(_, n)| n.eq_ignore_ascii_case(field)) {
            Some((c, _)) if columns.contains(c) => {
                reasons.push(format!("column '{field}' appears twice in the header"))
            }
            Some((c, _)) => columns.push(*c),
            None => reasons.push(format!("unknown column '{field}' (the columns are {})", names.join(", "))),
        }
    }
    for required in REQUIRED {
        if !columns.contains(&required) {
            reasons.push(format!("the header has no '{}' column, which is required", required.name()));
        }
    }
    if reasons.is_empty() {
        Ok(columns)
    } else {
        Err(reasons)
    }
}

fn parse_row(columns: &[Column], fields: &[String]) -> Result<Machine, Vec<String>> {
    if fields.len() > columns.len() {
        return Err(vec![format!("{} fields, but the header names {} columns", fields.len(), columns.len())]);
    }
    let mut reasons = Vec::new();
    let field =
        |c: Column| columns.iter().position(|&x| x == c).and_then(|i| fields.get(i)).cloned().unwrap_or_default();
    let mac_text = field(Column::Mac);
    let mac = if mac_text.is_empty() {
        reasons.push("mac is empty; every machine needs its MAC address".to_string());
        None
    } else {
        mac_text.parse::<Mac>().map_err(|e| reasons.push(e)).ok()
    };
    let status = match field(Column::Status).to_ascii_lowercase().as_str() {
        "" | "active" => MachineStatus::Active,
        "retired" => MachineStatus::Retired,
        other => {
            reasons.push(format!("status '{other}' is neither active nor retired"));
            MachineStatus::Active
        }
    };
    let machine = Machine {
        mac: mac.unwrap_or(Mac([0; 6])),
        hostname: field(Column::Hostname),
        department: field(Column::Department),
        serial: field(Column::Serial),
        asset_tag: field(Column::AssetTag),
        location: field(Column::Location),
        status,
        notes: field(Column::Notes),
        line: 0,
    };
    if let Err(reason) = check_fields(&machine) {
        reasons.push(reason);
    }
    if reasons.is_empty() {
        Ok(machine)
    } else {
        Err(reasons)
    }
}

/// The per-field rules shared by parsing and editing.
fn check_fields(m: &Machine) -> Result<(), String> {
    if !m.hostname.is_empty() {
        valid_hostname(&m.hostname)?;
    }
    if m.department.is_empty() {
        return Err("department is empty; name the machine's department (a file in departments/)".into());
    }
    if !valid_id(&m.department) {
        return Err(format!(
            "department '{}' is not a department id (lowercase letters, digits and '-')",
            m.department
        ));
    }
    for (name, value) in
        [("serial", &m.serial), ("asset_tag", &m.asset_tag), ("location", &m.location), ("notes", &m.notes)]
    {
        if value.contains(['\n', '\r']) {
            return Err(format!("{name} contains a line break, which the inventory cannot hold"));
        }
        // Escapes would reach technicians' terminals through `parc machine ls` and the log.
        if let Some(c) = value.chars().find(|c| c.is_control()) {
            return Err(format!(
                "{name} contains the control character U+{:04X} (a tab, an escape…): remove it",
                c as u32
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
# Parc inventory
mac,hostname,department,serial,location,status,notes
52:54:00:00:00:01,RAD-0001,radiologie,SN1,\"Bâtiment A, salle 3\",active,
# urgences
52-54-00-00-00-02,urg-0001,urgences,,,,
525400000003,,radiologie
52:54:00:00:00:04,RAD-0002,radiologie,,,retired,\"vieux \"\"poste\"\"\"
";

    fn mac(last: u8) -> Mac {
        Mac([0x52, 0x54, 0, 0, 0, last])
    }

    fn reasons(text: &str) -> Vec<String> {
        Inventory::parse(text).expect_err("should fail").iter().map(|p| p.to_string()).collect()
    }

    #[test]
    fn parse() {
        let inv = Inventory::parse(TEXT).unwrap();
        assert_eq!(inv.len(), 4);
        let m1 = inv.get(&mac(1)).unwrap();
        assert_eq!((m1.hostname.as_str(), m1.location.as_str(), m1.line), ("RAD-0001", "Bâtiment A, salle 3", 3));
        assert_eq!(inv.get(&mac(2)).unwrap().line, 5);
        assert_eq!(inv.by_hostname("URG-0001").unwrap().mac, mac(2));
        let m3 = inv.get(&mac(3)).unwrap();
        assert_eq!((m3.hostname.as_str(), m3.status), ("", MachineStatus::Active));
        let m4 = inv.get(&mac(4)).unwrap();
        assert_eq!((m4.status, m4.notes.as_str()), (MachineStatus::Retired, "vieux \"poste\""));
        assert!(inv.by_hostname("RAD-0002").is_none(), "retired machines are not looked up by name");
        assert_eq!(inv.to_text(), TEXT);
    }

    #[test]
    fn empty() {
        let mut inv = Inventory::empty();
        assert!(inv.is_empty());
        assert!(inv.to_text().starts_with('#'));
        let mut m = Machine::new(mac(9), "PHA-0001", "pharmacie");
        m.notes = "#1, près de la porte".into();
        inv.upsert(m.clone()).unwrap();
        let text = inv.to_text();
        assert!(text.ends_with("52:54:00:00:00:09,PHA-0001,pharmacie,,,,active,\"#1, près de la porte\"\n"), "{text}");
        let again = Inventory::parse(&text).unwrap();
        assert_eq!(again.get(&mac(9)), Some(&Machine { line: 5, ..m }));
    }

    #[test]
    fn upsert_rewrites_one_line() {
        let mut inv = Inventory::parse(TEXT).unwrap();
        let mut m = inv.get(&mac(2)).unwrap().clone();
        m.hostname = "URG-0002".into();
        m.location = "Accueil, box 2".into();
        inv.upsert(m).unwrap();
        let before: Vec<&str> = TEXT.lines().collect();
        let text = inv.to_text();
        let after: Vec<&str> = text.lines().collect();
        assert_eq!(before.len(), after.len());
        let changed: Vec<usize> = (0..before.len()).filter(|&i| before[i] != after[i]).collect();
        assert_eq!(changed, [4]);
        assert_eq!(after[4], "52:54:00:00:00:02,URG-0002,urgences,,\"Accueil, box 2\",active,");
        assert!(inv.by_hostname("urg-0001").is_none());
        assert_eq!(inv.by_hostname("urg-0002").unwrap().line, 5);
        assert_eq!(Inventory::parse(&text).unwrap().get(&mac(2)).unwrap().location, "Accueil, box 2");
    }

    #[test]
    fn upsert_appends_and_adds_missing_columns() {
        let text = "mac,hostname,department\r\n52:54:00:00:00:01,RAD-0001,radiologie";
        let mut inv = Inventory::parse(text).unwrap();
        let mut m = Machine::new(mac(2), "", "urgences");
        m.serial = "CZ123".into();
        inv.upsert(m).unwrap();
        assert_eq!(
            inv.to_text(),
            "mac,hostname,department,serial\r\n52:54:00:00:00:01,RAD-0001,radiologie\r\n\
             52:54:00:00:00:02,,urgences,CZ123\r\n"
        );
        assert_eq!(Inventory::parse(&inv.to_text()).unwrap().get(&mac(2)).unwrap().serial, "CZ123");
    }

    #[test]
    fn upsert_conflicts_change_nothing() {
        let mut inv = Inventory::parse(TEXT).unwrap();
        let problem = inv.upsert(Machine::new(mac(7), "rad-0001", "radiologie")).unwrap_err();
        assert_eq!(problem.line, Some(8));
        assert!(problem.reason.contains("already used by the active machine 52:54:00:00:00:01 on line 3"), "{problem}");
        assert!(inv.upsert(Machine::new(mac(7), "RAD 7", "radiologie")).is_err());
        assert!(inv.upsert(Machine::new(mac(7), "RAD-0007", "")).is_err());
        let mut m = Machine::new(mac(7), "RAD-0007", "radiologie");
        m.notes = "two\nlines".into();
        assert!(inv.upsert(m).is_err());
        let mut m = Machine::new(mac(7), "RAD-0007", "radiologie");
        m.location = "Bât A \u{1b}[2J".into();
        let e = inv.upsert(m).unwrap_err();
        assert!(e.reason.contains("location contains the control character U+001B"), "{e}");
        assert_eq!(inv.to_text(), TEXT);
        assert_eq!(inv.len(), 4);
        // A retired machine's old name can be reused; the machine itself can keep its own name.
        inv.upsert(Machine::new(mac(7), "RAD-0002", "radiologie")).unwrap();
        inv.upsert(Machine { notes: "ok".into(), ..inv.get(&mac(1)).unwrap().clone() }).unwrap();
    }

    #[test]
    fn duplicates_name_both_lines() {
        let text = "mac,hostname,department,status\n\
            52:54:00:00:00:01,RAD-0001,radiologie,\n\
            52:54:00:00:00:02,RAD-0002,radiologie,\n\
            52-54-00-00-00-01,RAD-0003,radiologie,\n\
            52:54:00:00:00:03,rad-0002,radiologie,\n\
            52:54:00:00:00:04,RAD-0001,radiologie,retired\n";
        assert_eq!(
            reasons(text),
            [
                "inventory.csv line 4: MAC 52:54:00:00:00:01 is already on line 2",
                "inventory.csv line 5: hostname rad-0002 is already used by the active machine \
                 52:54:00:00:00:02 on line 3",
            ]
        );
    }

    #[test]
    fn row_and_header_problems() {
        let text = "mac,hostname,department,colour\n";
        let want = "inventory.csv line 1: unknown column 'colour' \
                    (the columns are mac, hostname, department, serial, asset_tag, location, status, notes)";
        assert_eq!(reasons(text), [want]);
        assert!(reasons("# only a comment\nmac,department\n")[0].contains("no 'hostname' column"));
        assert!(reasons("# nothing\n")[0].starts_with("inventory.csv: no header row"));
        let text = "mac,hostname,department,status\n\
            zz:54:00:00:00:01,RAD-0001,radiologie,\n\
            52:54:00:00:00:02,RAD_2,radiologie,\n\
            52:54:00:00:00:03,RAD-0003,Radiologie,\n\
            52:54:00:00:00:04,RAD-0004,radiologie,lost\n\
            52:54:00:00:00:05,RAD-0005,radiologie,,extra\n\
            52:54:00:00:00:06,\"RAD-0006,radiologie\n\
            ,RAD-0007,radiologie\n";
        let lines: Vec<_> = Inventory::parse(text).unwrap_err().iter().map(|p| p.line.unwrap()).collect();
        assert_eq!(lines, [2, 3, 4, 5, 6, 7, 8]);
    }

    #[test]
    fn row_text_finds_the_machine() {
        assert_eq!(row_text(TEXT, &mac(3)).as_deref(), Some("525400000003,,radiologie"));
        assert_eq!(
            row_text(TEXT, &mac(4)).as_deref(),
            Some("52:54:00:00:00:04,RAD-0002,radiologie,,,retired,\"vieux \"\"poste\"\"\"")
        );
        assert_eq!(row_text(TEXT, &mac(8)), None);
        assert_eq!(
            row_text("hostname,mac,department\nA,\"52:54:00:00:00:08\",x\n", &mac(8)).as_deref(),
            Some("A,\"52:54:00:00:00:08\",x")
        );
    }

    #[test]
    fn ten_thousand_machines() {
        let mut text = String::from(EMPTY_INVENTORY);
        for i in 0..10_000u32 {
            let [_, _, a, b] = i.to_be_bytes();
            text.push_str(&format!(
                "02:00:00:00:{a:02x}:{b:02x},RAD-{i:05},radiologie,SN{i},,\"Bât. B, salle {i}\",,\n"
            ));
        }
        let mut inv = Inventory::parse(&text).unwrap();
        assert_eq!(inv.len(), 10_000);
        let target = Mac([2, 0, 0, 0, 0x13, 0x88]);
        assert_eq!(inv.get(&target).unwrap().hostname, "RAD-05000");
        for i in 0..100u8 {
            let mut m = inv.get(&target).unwrap().clone();
            m.notes = format!("edit {i}");
            inv.upsert(m).unwrap();
            inv.upsert(Machine::new(Mac([2, 1, 0, 0, 0, i]), &format!("URG-{i:04}"), "urgences")).unwrap();
        }
        assert_eq!(inv.len(), 10_100);
        assert_eq!(inv.by_hostname("RAD-05000").unwrap().notes, "edit 99");
        assert_eq!(Inventory::parse(&inv.to_text()).unwrap().len(), 10_100);
    }
}

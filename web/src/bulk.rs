//! A CSV of machines for one bulk operation (the CLI's `--from-csv` and the console's bulk
//! form read it the same way): a header row names the columns, one line per machine.

use crate::ops::Op;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BulkOp {
    /// machine[,department]
    Install,
    /// machine,department
    Move,
    /// machine,with[,asset_tag]
    Replace,
}

impl BulkOp {
    pub fn parse(s: &str) -> Option<BulkOp> {
        match s {
            "install" => Some(BulkOp::Install),
            "move" => Some(BulkOp::Move),
            "replace" => Some(BulkOp::Replace),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            BulkOp::Install => "install",
            BulkOp::Move => "move",
            BulkOp::Replace => "replace",
        }
    }
    /// (required, optional) columns.
    pub fn columns(self) -> (&'static [&'static str], &'static [&'static str]) {
        match self {
            BulkOp::Install => (&["machine"], &["department"]),
            BulkOp::Move => (&["machine", "department"], &[]),
            BulkOp::Replace => (&["machine", "with"], &["asset_tag"]),
        }
    }
    fn expected(self) -> String {
        let (r, o) = self.columns();
        [r, o].concat().join(",")
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum CsvError {
    #[error("the header row has no column {column:?} (expected {expected})")]
    MissingColumn { column: String, expected: String },
    #[error("unknown column {column:?} (expected {expected})")]
    UnknownColumn { column: String, expected: String },
    #[error("line {line}: {column} is empty")]
    EmptyField { line: u64, column: String },
    #[error("line {line}: malformed CSV: {reason}")]
    Malformed { line: u64, reason: String },
    #[error("no machines listed")]
    NoRows,
}

/// Reads the CSV `text` into operations of kind `op` (`mac` is accepted for `machine`; lines
/// starting with `#` are comments).
pub fn parse_ops(text: &str, op: BulkOp) -> Result<Vec<Op>, CsvError> {
    let (required, optional) = op.columns();
    let mut r = csv::ReaderBuilder::new().comment(Some(b'#')).trim(csv::Trim::All).from_reader(text.as_bytes());
    let malformed = |e: csv::Error| CsvError::Malformed {
        line: e.position().map(|p| p.line()).unwrap_or(1),
        reason: e.to_string(),
    };
    let headers: Vec<String> = r
        .headers()
        .map_err(malformed)?
        .iter()
        .map(|h| if h.eq_ignore_ascii_case("mac") { "machine".to_string() } else { h.to_lowercase() })
        .collect();
    for want in required {
        if !headers.iter().any(|h| h == want) {
            return Err(CsvError::MissingColumn { column: want.to_string(), expected: op.expected() });
        }
    }
    if let Some(h) = headers.iter().find(|h| !required.contains(&h.as_str()) && !optional.contains(&h.as_str())) {
        return Err(CsvError::UnknownColumn { column: h.clone(), expected: op.expected() });
    }
    let mut ops = Vec::new();
    for rec in r.records() {
        let rec = rec.map_err(malformed)?;
        let line = rec.position().map(|p| p.line()).unwrap_or(0);
        let get = |col: &str| {
            headers.iter().position(|h| h == col).and_then(|i| rec.get(i)).filter(|v| !v.is_empty()).map(str::to_string)
        };
        let need = |col: &str| get(col).ok_or_else(|| CsvError::EmptyField { line, column: col.to_string() });
        ops.push(match op {
            BulkOp::Install => Op::Install { machine: need("machine")?, department: get("department") },
            BulkOp::Move => Op::Move { machine: need("machine")?, department: need("department")? },
            BulkOp::Replace => {
                Op::Replace { machine: need("machine")?, with: need("with")?, asset_tag: get("asset_tag") }
            }
        });
    }
    if ops.is_empty() {
        return Err(CsvError::NoRows);
    }
    Ok(ops)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_each_kind_and_says_what_is_wrong() {
        let ops =
            parse_ops("MAC,department\n# a comment\n52:54:00:00:00:01,urgences\nRAD-0001,\n", BulkOp::Install).unwrap();
        assert_eq!(ops.len(), 2);
        assert!(matches!(&ops[1], Op::Install { machine, department: None } if machine == "RAD-0001"));
        let ops = parse_ops("machine,with,asset_tag\nURG-0007, 52:54:00:ab:cd:ef ,INV-9\n", BulkOp::Replace).unwrap();
        assert!(
            matches!(&ops[0], Op::Replace { with, asset_tag: Some(t), .. } if with == "52:54:00:ab:cd:ef" && t == "INV-9")
        );
        let e = parse_ops("machine\nPHA-0003\n", BulkOp::Move).unwrap_err();
        assert_eq!(e.to_string(), "the header row has no column \"department\" (expected machine,department)");
        let e = parse_ops("machine,department,colour\nA,b,c\n", BulkOp::Move).unwrap_err();
        assert!(e.to_string().starts_with("unknown column \"colour\""), "{e}");
        assert_eq!(
            parse_ops("machine,department\nA,\n", BulkOp::Move).unwrap_err(),
            CsvError::EmptyField { line: 2, column: "department".into() }
        );
        assert_eq!(parse_ops("machine,department\n", BulkOp::Move).unwrap_err(), CsvError::NoRows);
        assert!(matches!(parse_ops("machine\nA,B\n", BulkOp::Install), Err(CsvError::Malformed { line: 2, .. })));
    }
}

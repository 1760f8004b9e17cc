//! The audit journal: filterable, paged backwards, exportable as CSV.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_DISPOSITION, CONTENT_TYPE};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::console::session::{self, Session};
use crate::console::{render, ConsoleError, OrPage, PageCtx};
use crate::db::{Event, EventQuery};
use crate::{blocking, AppError, AppState};

const PAGE: i64 = 100;
/// Rows in one CSV export.
const EXPORT_MAX: i64 = 10_000;

#[derive(Debug, Default, serde::Deserialize)]
pub struct JournalFilters {
    #[serde(default)]
    actor: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    machine: String,
    /// `YYYY-MM-DD` (UTC days), both included.
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
    before: Option<i64>,
}

/// Midnight UTC of a `YYYY-MM-DD` day, in unix ms.
fn day_start(s: &str) -> Option<i64> {
    let mut p = s.trim().splitn(3, '-');
    let (y, m, d) = (p.next()?.parse().ok()?, p.next()?.parse().ok()?, p.next()?.parse().ok()?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    Some(crate::ops::days_from_civil(y, m, d) * 86_400_000)
}

impl JournalFilters {
    fn query(&self, st: &AppState, limit: i64) -> EventQuery {
        let opt = |s: &str| Some(s.trim().to_string()).filter(|s| !s.is_empty());
        let mac = opt(&self.machine).map(|m| crate::ops::journal_mac(&st.profiles.snapshot().inventory, &m));
        EventQuery {
            after: None,
            before: self.before,
            mac,
            task_id: None,
            actor: opt(&self.actor),
            kind: opt(&self.kind),
            since: day_start(&self.from),
            until: day_start(&self.to).map(|t| t + 86_400_000),
            limit,
        }
    }
    /// A date field that does not read as a day, for the message next to it.
    pub fn bad_date(&self, field: &str) -> bool {
        let v = if field == "from" { &self.from } else { &self.to };
        !v.trim().is_empty() && day_start(v).is_none()
    }
    /// Query string of these filters (for the export link and paging).
    pub fn qs(&self) -> String {
        [
            ("actor", &self.actor),
            ("kind", &self.kind),
            ("machine", &self.machine),
            ("from", &self.from),
            ("to", &self.to),
        ]
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{k}={}", session::url_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
    }
}

#[derive(Template)]
#[template(path = "journal.html")]
pub struct JournalPage {
    ctx: PageCtx,
    f: JournalFilters,
    events: Vec<Event>,
    older: Option<i64>,
}

pub async fn journal_list(
    State(st): State<AppState>,
    s: Session,
    Query(f): Query<JournalFilters>,
) -> Result<Response, ConsoleError> {
    let ctx = PageCtx::new(&s, "journal");
    let page = blocking(move || {
        let events = st.db.events(&f.query(&st, PAGE))?;
        let older = (events.len() as i64 == PAGE).then(|| events.last().map(|e| e.id)).flatten();
        Ok(JournalPage { ctx, f, events, older })
    })
    .await
    .or_page(&s)?;
    Ok(render(&page, &page.ctx, StatusCode::OK))
}

/// The filtered journal as CSV (id, time UTC in ISO 8601, actor, kind, MAC, task, message).
pub async fn journal_csv(
    State(st): State<AppState>,
    s: Session,
    Query(f): Query<JournalFilters>,
) -> Result<Response, ConsoleError> {
    let body = blocking(move || {
        let events = st.db.events(&f.query(&st, EXPORT_MAX))?;
        to_csv(&events).map_err(|e| AppError::Internal(format!("journal CSV: {e}")))
    })
    .await
    .or_page(&s)?;
    Ok((
        [
            (CONTENT_TYPE, "text/csv; charset=utf-8"),
            (CONTENT_DISPOSITION, "attachment; filename=\"parc-journal.csv\""),
            (CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response())
}

fn to_csv(events: &[Event]) -> Result<Vec<u8>, csv::Error> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(["id", "time_utc", "actor", "kind", "mac", "task", "message"])?;
    for e in events {
        w.write_record([
            e.id.to_string(),
            crate::console::i18n::iso8601(e.at),
            e.actor.clone(),
            e.kind.clone(),
            e.mac.clone().unwrap_or_default(),
            e.task_id.map(|t| t.to_string()).unwrap_or_default(),
            // A cell starting with = + - @ is a formula to a spreadsheet: quote it as text.
            if e.message.starts_with(['=', '+', '-', '@']) { format!("'{}", e.message) } else { e.message.clone() },
        ])?;
    }
    w.into_inner().map_err(|e| csv::Error::from(e.into_error()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days() {
        assert_eq!(day_start("2026-11-28"), Some(1_795_824_000_000));
        assert_eq!(day_start("1970-01-01"), Some(0));
        assert_eq!(day_start("2026-13-01"), None);
        assert_eq!(day_start("hier"), None);
    }

    #[test]
    fn csv_export_quotes_and_defuses_formulas() {
        let e = |id, message: &str| Event {
            id,
            at: 1_795_903_200_000,
            actor: "alice".into(),
            kind: "machine.move".into(),
            mac: Some("52:54:00:00:00:01".into()),
            task_id: Some(3),
            message: message.into(),
            data: None,
        };
        let out = String::from_utf8(to_csv(&[e(1, "move RAD-0001, to urgences"), e(2, "=HYPERLINK(\"x\")")]).unwrap())
            .unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "id,time_utc,actor,kind,mac,task,message");
        assert_eq!(
            lines[1],
            "1,2026-11-28T22:00:00Z,alice,machine.move,52:54:00:00:00:01,3,\"move RAD-0001, to urgences\""
        );
        assert!(lines[2].ends_with(",\"'=HYPERLINK(\"\"x\"\")\""), "{}", lines[2]);
    }
}

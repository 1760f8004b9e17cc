//! Machines: the filtered, paged list (the API's listing code) and one machine's page with its
//! action forms (the API's operations, through `ops::run`).

use std::collections::HashMap;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;

use super::TaskRow;
use crate::api::machines::{self as api, ActionBody, ListQuery, MachineDetail, MachineList};
use crate::console::csrf::CsrfForm;
use crate::console::session::{self, Session};
use crate::console::{render, require_role, ConsoleError, FormError, OrPage, PageCtx};
use crate::db::Role;
use crate::{blocking, ops, AppState};

const PAGE: usize = 50;
pub const STATUSES: &[&str] =
    &["new", "discovered", "queued", "installing", "capturing", "installed", "ready", "failed", "retired"];

#[derive(Debug, Default, serde::Deserialize)]
pub struct Filters {
    #[serde(default)]
    q: String,
    #[serde(default)]
    department: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    image: String,
    #[serde(default)]
    model: String,
    #[serde(default)]
    location: String,
    #[serde(default)]
    offset: usize,
}

impl Filters {
    fn query(&self) -> ListQuery {
        let opt = |s: &str| Some(s.trim().to_string()).filter(|s| !s.is_empty());
        ListQuery {
            q: opt(&self.q),
            department: opt(&self.department),
            status: opt(&self.status),
            image: opt(&self.image),
            model: opt(&self.model),
            location: opt(&self.location),
            offset: self.offset,
            limit: Some(PAGE),
        }
    }
    /// This listing's query string at another offset (paging links keep the filters).
    pub fn at(&self, offset: &usize) -> String {
        let mut q = format!("/machines?offset={offset}");
        for (k, v) in [
            ("q", &self.q),
            ("department", &self.department),
            ("status", &self.status),
            ("image", &self.image),
            ("model", &self.model),
            ("location", &self.location),
        ] {
            if !v.is_empty() {
                q.push_str(&format!("&{k}={}", session::url_encode(v)));
            }
        }
        q
    }
}

#[derive(Template)]
#[template(path = "machines.html")]
pub struct MachinesPage {
    ctx: PageCtx,
    f: Filters,
    list: MachineList,
    departments: Vec<(String, String)>,
    statuses: &'static [&'static str],
    prev: Option<usize>,
    next: Option<usize>,
    last: usize,
    /// The add form as posted, when it was refused.
    add: Option<(HashMap<String, String>, FormError)>,
}

impl MachinesPage {
    /// A field of the refused add form, to show it again.
    pub fn added(&self, name: &str) -> &str {
        self.add.as_ref().and_then(|(v, _)| v.get(name)).map(String::as_str).unwrap_or("")
    }
    /// Why the add form was refused, about `field` ("": the form as a whole).
    pub fn add_err(&self, field: &str) -> Option<&str> {
        self.add.as_ref().filter(|(_, e)| e.field.as_deref().unwrap_or("") == field).map(|(_, e)| e.message.as_str())
    }
}

fn list_page(
    st: &AppState,
    ctx: PageCtx,
    f: Filters,
    add: Option<(HashMap<String, String>, FormError)>,
) -> Result<MachinesPage, crate::AppError> {
    let list = api::list(st, &f.query())?;
    let prev = (f.offset > 0).then(|| f.offset.saturating_sub(PAGE));
    let next = (f.offset + PAGE < list.total).then_some(f.offset + PAGE);
    let last = (f.offset + list.machines.len()).min(list.total);
    Ok(MachinesPage { ctx, departments: departments(st), f, list, statuses: STATUSES, prev, next, last, add })
}

fn departments(st: &AppState) -> Vec<(String, String)> {
    st.profiles.snapshot().departments.values().map(|d| (d.id.clone(), d.name.clone())).collect()
}

pub async fn machines_list(
    State(st): State<AppState>,
    s: Session,
    Query(f): Query<Filters>,
) -> Result<Response, ConsoleError> {
    let ctx = PageCtx::new(&s, "machines");
    let page = blocking(move || list_page(&st, ctx, f, None)).await.or_page(&s)?;
    Ok(render(&page, &page.ctx, StatusCode::OK))
}

/// A new machine in the inventory (from a purchase order, before it ever boots), optionally
/// with its install queued: `Op::Add`, as `POST /api/v1/machines`.
pub async fn machine_add(State(st): State<AppState>, form: CsrfForm) -> Result<Response, ConsoleError> {
    let s = form.session.clone();
    let caller = require_role(&st, &s, Role::Technician).await?;
    let n = ops::NewMachine {
        mac: form.get("mac").unwrap_or_default(),
        department: form.get("department").unwrap_or_default(),
        hostname: form.get("hostname"),
        serial: form.get("serial"),
        asset_tag: form.get("asset_tag"),
        location: form.get("location"),
        notes: form.get("notes"),
        install: form.get("install").is_some(),
    };
    let reason = form.get("reason");
    let st2 = st.clone();
    let report = blocking(move || ops::run(&st2, &caller, &[ops::Op::Add(n)], reason.as_deref())).await.or_page(&s)?;
    let Some(o) = report.results.into_iter().next() else {
        return Err(ConsoleError::new(&s, crate::AppError::Internal("an operation without outcome".into())));
    };
    if o.ok {
        let to = format!("/machines/{}", o.mac.as_deref().unwrap_or(""));
        return Ok(session::redirect_with_flash(&to, o.summary.as_deref().unwrap_or("added"), s.secure));
    }
    let status = StatusCode::from_u16(o.status).unwrap_or(StatusCode::BAD_REQUEST);
    let error = FormError { form: "add".into(), field: o.field, message: o.error.unwrap_or_default() };
    let ctx = PageCtx::new(&s, "machines");
    let values = form.fields;
    let page = blocking(move || list_page(&st, ctx, Filters::default(), Some((values, error)))).await.or_page(&s)?;
    Ok(render(&page, &page.ctx, status))
}

#[derive(Template)]
#[template(path = "machine.html")]
pub struct MachinePage {
    ctx: PageCtx,
    m: MachineDetail,
    id: String,
    active: Option<TaskRow>,
    departments: Vec<(String, String)>,
    error: Option<FormError>,
}

impl MachinesPage {
    /// The running or queued task of a listed machine, for its progress bar.
    pub fn progress(&self, m: &crate::api::machines::MachineView) -> Option<TaskRow> {
        m.task.clone().filter(|t| t.state.is_active()).map(TaskRow::new)
    }

    /// A department's display name (its id when the repository no longer has it).
    pub fn dep_name<'a>(&'a self, id: &'a str) -> &'a str {
        self.departments.iter().find(|d| d.0 == id).map(|d| d.1.as_str()).unwrap_or(id)
    }
}

impl MachinePage {
    /// "UEFI, Secure Boot on", "BIOS (legacy)"…; empty when no agent reported it.
    pub fn firmware(&self) -> String {
        let key = match self.m.machine.firmware {
            None => return String::new(),
            Some(f) if !f.uefi => "fw.bios",
            Some(f) => match f.secure_boot {
                Some(true) => "fw.sb_on",
                Some(false) => "fw.sb_off",
                None => "fw.sb_unknown",
            },
        };
        self.ctx.t(key).to_string()
    }

    /// What a commit says about this machine: its summary, the lines that name the machine
    /// (a batch commit lists thousands), and its reason and author lines.
    pub fn commit_lines(&self, c: &parc_profiles::CommitInfo) -> Vec<String> {
        let mac = &self.m.machine.mac;
        let mut out = vec![c.summary.clone()];
        for line in c.message.lines().skip(1) {
            let l = line.trim();
            if (l.contains(mac.as_str()) && l != c.summary) || l.starts_with("Reason:") || l.starts_with("Batch:") {
                out.push(l.to_string());
            }
        }
        out
    }

    /// `form` was posted and refused (its section stays open).
    pub fn failed(&self, form: &str) -> bool {
        self.error.as_ref().is_some_and(|e| e.form == form)
    }

    /// The refusal of `form` about `field` ("": about the form as a whole), if that is what
    /// failed.
    pub fn err(&self, form: &str, field: &str) -> Option<&str> {
        self.error
            .as_ref()
            .filter(|e| e.form == form && e.field.as_deref().unwrap_or("") == field)
            .map(|e| e.message.as_str())
    }
}

fn machine_page(
    st: &AppState,
    ctx: PageCtx,
    id: &str,
    error: Option<FormError>,
) -> Result<MachinePage, crate::AppError> {
    let m = api::detail(st, id)?;
    let active = m.machine.task.clone().filter(|t| t.state.is_active()).map(TaskRow::new);
    Ok(MachinePage { ctx, id: m.machine.mac.clone(), m, active, departments: departments(st), error })
}

pub async fn machine_show(
    State(st): State<AppState>,
    s: Session,
    Path(id): Path<String>,
) -> Result<Response, ConsoleError> {
    let ctx = PageCtx::new(&s, "machines");
    let page = blocking(move || machine_page(&st, ctx, &id, None)).await.or_page(&s)?;
    Ok(render(&page, &page.ctx, StatusCode::OK))
}

/// install | reimage | move | replace | retire | edit from the machine page.
pub async fn machine_action(
    State(st): State<AppState>,
    Path((id, action)): Path<(String, String)>,
    form: CsrfForm,
) -> Result<Response, ConsoleError> {
    let s = form.session.clone();
    let caller = require_role(&st, &s, Role::Technician).await?;
    let body = ActionBody {
        reason: form.get("reason"),
        department: form.get("department"),
        with: form.get("with"),
        asset_tag: form.get("asset_tag"),
        image: None,
        address: None,
        minutes: None,
    };
    if action == "wake" {
        let st2 = st.clone();
        let id2 = id.clone();
        let woken = blocking(move || crate::wake::wake(&st2, &caller, &id2, None)).await.or_page(&s)?;
        return Ok(session::redirect_with_flash(&format!("/machines/{id}"), &woken.summary, s.secure));
    }
    if action == "capture" {
        // Capture tasks are not run by the agent yet: the console does not offer them.
        return Err(ConsoleError::new(&s, crate::AppError::NotFound("capture is not offered by the console".into())));
    }
    let op = if action == "edit" {
        // Blank fields are sent too: that is how a technician clears a location or a note.
        let raw = |k: &str| form.fields.get(k).map(|v| v.trim().to_string());
        ops::Op::Edit {
            machine: id.clone(),
            if_match: form.get("etag"),
            changes: ops::MachineEdit {
                hostname: form.get("hostname"),
                serial: raw("serial"),
                asset_tag: raw("asset_tag"),
                location: raw("location"),
                notes: raw("notes"),
            },
        }
    } else {
        api::action_op(id.clone(), &action, body).or_page(&s)?
    };
    let reason = form.get("reason");
    let ctx = PageCtx::new(&s, "machines");
    let st2 = st.clone();
    let report =
        blocking(move || ops::run(&st2, &caller, std::slice::from_ref(&op), reason.as_deref())).await.or_page(&s)?;
    let Some(o) = report.results.into_iter().next() else {
        return Err(ConsoleError::new(&s, crate::AppError::Internal("an operation without outcome".into())));
    };
    if o.ok {
        let to = format!("/machines/{}", o.mac.as_deref().unwrap_or(&id));
        let msg = o.summary.unwrap_or_else(|| action.clone());
        return Ok(session::redirect_with_flash(&to, &msg, s.secure));
    }
    let status = StatusCode::from_u16(o.status).unwrap_or(StatusCode::BAD_REQUEST);
    let error = FormError { form: action, field: o.field, message: o.error.unwrap_or_default() };
    let page = blocking(move || machine_page(&st, ctx, &id, Some(error))).await.or_page(&s)?;
    Ok(render(&page, &page.ctx, status))
}

//! Departments as parsed from the profiles repository, with the repository's problems (file,
//! line, reason): a broken file shows its error here instead of breaking the page.

use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use parc_profiles::Problem;

use crate::api::departments::{all_problems, department_view, DepartmentView};
use crate::console::session::Session;
use crate::console::{render, ConsoleError, OrPage, PageCtx};
use crate::{blocking, AppState};

#[derive(Template)]
#[template(path = "departments.html")]
pub struct DepartmentsPage {
    ctx: PageCtx,
    commit: String,
    departments: Vec<DepartmentView>,
    problems: Vec<Problem>,
}

impl DepartmentsPage {
    /// The disk rule as a technician reads it: `nvme > sata > virtio · first · ≥ 100 GiB`.
    pub fn disk(&self, d: &DepartmentView) -> String {
        let v = serde_json::to_value(&d.disk).unwrap_or_default();
        let word = |x: &serde_json::Value| x.as_str().map(str::to_string).unwrap_or_else(|| x.to_string());
        let prefer: Vec<String> = v["prefer"].as_array().map(|a| a.iter().map(word).collect()).unwrap_or_default();
        let mut out = format!("{} · {}", prefer.join(" > "), word(&v["choose"]));
        if let Some(min) = d.disk.min_size {
            out.push_str(&format!(" · ≥ {}", self.ctx.lang.bytes(min)));
        }
        if !d.disk.grow {
            out.push_str(&format!(" · {}", self.ctx.t("dep.no_grow")));
        }
        out
    }

    /// "Windows · Romance Standard Time · domaine OU=…" or "Linux".
    pub fn system(&self, d: &DepartmentView) -> String {
        match &d.windows {
            None => "Linux".into(),
            Some(w) => {
                let mut out = format!("Windows · {}", w.time_zone);
                if let Some(ou) = &w.domain_ou {
                    out.push_str(&format!(" · {} {ou}", self.ctx.t("dep.domain")));
                }
                out
            }
        }
    }
}

pub async fn departments_list(State(st): State<AppState>, s: Session) -> Result<Response, ConsoleError> {
    let ctx = PageCtx::new(&s, "departments");
    let page = blocking(move || {
        let problems = all_problems(&st);
        let snap = st.profiles.snapshot();
        let departments = snap.departments.values().map(|d| department_view(&st, d, &problems)).collect();
        Ok(DepartmentsPage { ctx, commit: crate::profiles::short(&snap.commit).to_string(), departments, problems })
    })
    .await
    .or_page(&s)?;
    Ok(render(&page, &page.ctx, StatusCode::OK))
}

//! The technicians' web console: server-rendered pages (askama templates in `web/templates/`,
//! HTML-escaped by default), French by default with English available, usable without
//! JavaScript; `static/console.js` only adds live progress from the event stream. Every action
//! goes through the same code as the JSON API (`ops::run`, the listings in `api/`), so the
//! console can do nothing the API would refuse, and everything lands in the journal.

mod auth_pages;
mod csrf;
pub mod i18n;
mod pages;
pub(crate) mod session;

use std::borrow::Borrow;

use askama::filters::Safe;
use askama::Template;
use axum::extract::Path;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, SET_COOKIE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::db::{Role, User};
use crate::{AppError, AppState};
use i18n::Lang;
use session::Session;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(pages::dashboard::dashboard))
        .route("/login", get(auth_pages::login_form).post(auth_pages::login))
        .route("/logout", post(auth_pages::logout))
        .route("/password", get(auth_pages::password_form).post(auth_pages::password_change))
        .route("/lang/{code}", get(auth_pages::lang_switch))
        .route("/machines", get(pages::machines::machines_list).post(pages::machines::machine_add))
        .route("/machines/{id}", get(pages::machines::machine_show))
        .route("/machines/{id}/{action}", post(pages::machines::machine_action))
        .route("/departments", get(pages::departments::departments_list))
        .route("/images", get(pages::images::images_list))
        .route("/images/verify", post(pages::images::image_verify))
        .route("/tasks", get(pages::tasks::tasks_list))
        .route("/tasks/bulk", post(pages::tasks::tasks_bulk))
        .route("/tasks/{id}/cancel", post(pages::tasks::task_cancel))
        .route("/users", get(pages::users::users_list).post(pages::users::user_add))
        .route("/users/{login}/update", axum::routing::post(pages::users::user_update))
        .route("/users/{login}/reset", axum::routing::post(pages::users::user_reset))
        .route("/tokens/{id}/revoke", axum::routing::post(pages::users::token_revoke))
        .route("/journal", get(pages::journal::journal_list))
        .route("/journal.csv", get(pages::journal::journal_csv))
        .route("/live", get(pages::live))
        .route("/static/{file}", get(static_file))
}

/// What every page needs: language, user, CSRF token, where we are.
#[derive(Debug, Clone)]
pub struct PageCtx {
    pub lang: Lang,
    pub user: Option<User>,
    pub csrf: String,
    pub nav: &'static str,
    pub flash: Option<String>,
    /// The path and query of this page (language switch comes back here).
    pub path: String,
}

impl PageCtx {
    pub fn new(s: &Session, nav: &'static str) -> PageCtx {
        PageCtx {
            lang: s.lang,
            user: Some(s.user.clone()),
            csrf: s.csrf.clone(),
            nav,
            flash: s.flash.clone(),
            path: s.path.clone(),
        }
    }
    pub fn anonymous(lang: Lang, path: &str) -> PageCtx {
        PageCtx { lang, user: None, csrf: String::new(), nav: "", flash: None, path: path.to_string() }
    }
    pub fn t(&self, key: &str) -> &'static str {
        self.lang.t(key)
    }
    // Templates hand over values or references depending on where they come from: `Borrow`
    // takes both.
    pub fn num(&self, n: impl Borrow<u64>) -> String {
        self.lang.num(*n.borrow())
    }
    pub fn count(&self, n: impl Borrow<usize>) -> String {
        self.lang.num(*n.borrow() as u64)
    }
    pub fn bytes(&self, n: impl Borrow<u64>) -> String {
        self.lang.bytes(*n.borrow())
    }
    pub fn bytes_opt(&self, n: impl Borrow<Option<u64>>) -> String {
        n.borrow().map(|n| self.lang.bytes(n)).unwrap_or_default()
    }
    pub fn duration(&self, secs: impl Borrow<u64>) -> String {
        self.lang.duration(*secs.borrow())
    }
    /// A date as `<time>`: its text is the UTC time in the page's language, which console.js
    /// rewrites in the browser's time zone. Marked safe: it holds only our own digits and
    /// separators, never user data.
    pub fn date(&self, ms: impl Borrow<i64>) -> Safe<String> {
        let ms = *ms.borrow();
        Safe(format!("<time datetime=\"{}\" data-ms=\"{ms}\">{}</time>", i18n::iso8601(ms), self.lang.datetime(ms)))
    }
    /// A date from unix seconds (git's author time).
    pub fn date_s(&self, secs: impl Borrow<i64>) -> Safe<String> {
        self.date(secs.borrow().saturating_mul(1000))
    }
    pub fn date_opt(&self, ms: impl Borrow<Option<i64>>) -> Safe<String> {
        match *ms.borrow() {
            Some(m) => self.date(m),
            None => Safe("—".into()),
        }
    }
    /// A status or kind word (`ready`, `move`) in the page's language.
    pub fn word(&self, prefix: &str, value: &str) -> &'static str {
        self.lang.t(&format!("{prefix}.{value}"))
    }
    pub fn is_admin(&self) -> bool {
        self.user.as_ref().is_some_and(|u| u.role >= Role::Admin)
    }
    pub fn can_act(&self) -> bool {
        self.user.as_ref().is_some_and(|u| u.role >= Role::Technician)
    }
    pub fn role(&self) -> &'static str {
        self.user.as_ref().map(|u| self.word("role", u.role.as_str())).unwrap_or("")
    }
    pub fn lang_link(&self, code: &str) -> String {
        format!("/lang/{code}?next={}", session::url_encode(&self.path))
    }
    pub fn is(&self, nav: &str) -> bool {
        self.nav == nav
    }
}

/// A refused form, shown next to its field (or at the top of the form without one).
#[derive(Debug, Default)]
pub struct FormError {
    pub form: String,
    pub field: Option<String>,
    pub message: String,
}

/// Renders a page: HTML, never cached (it shows live state and a CSRF token), and the flash
/// message that it showed is cleared.
pub fn render(page: &impl Template, ctx: &PageCtx, status: StatusCode) -> Response {
    match page.render() {
        Ok(html) => {
            let mut r = (status, Html(html)).into_response();
            let h = r.headers_mut();
            h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
            // Defence in depth behind the templates' escaping: only our own script runs, and no
            // other site may frame a page that has action buttons.
            h.insert(
                "content-security-policy",
                HeaderValue::from_static(
                    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self'; frame-ancestors 'none'; form-action 'self'",
                ),
            );
            h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
            h.insert("referrer-policy", HeaderValue::from_static("same-origin"));
            if ctx.flash.is_some() {
                r.headers_mut().append(SET_COOKIE, session::set_cookie(session::FLASH_COOKIE, "", 0, false));
            }
            r
        }
        Err(e) => {
            tracing::error!(error = %e, "console: template rendering failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error; see the appliance log").into_response()
        }
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    ctx: PageCtx,
    status: u16,
    message: String,
}

/// An error shown as a page in the console's look (the API's errors are JSON).
#[derive(Debug)]
pub struct ConsoleError {
    status: StatusCode,
    message: String,
    ctx: Box<PageCtx>,
}

impl ConsoleError {
    pub fn forbidden(lang: Lang, message: String, s: Option<&Session>) -> ConsoleError {
        let ctx = s.map(|s| PageCtx::new(s, "")).unwrap_or_else(|| PageCtx::anonymous(lang, "/"));
        ConsoleError { status: StatusCode::FORBIDDEN, message, ctx: Box::new(ctx) }
    }
    pub fn new(s: &Session, e: AppError) -> ConsoleError {
        if let AppError::Internal(m) = &e {
            tracing::error!(error = %m, path = %s.path, "console: internal error");
        }
        ConsoleError { status: e.status(), message: e.public_message(), ctx: Box::new(PageCtx::new(s, "")) }
    }
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        let page = ErrorPage { status: self.status.as_u16(), message: self.message, ctx: *self.ctx };
        render(&page, &page.ctx, self.status)
    }
}

/// Refuses an action the user's role does not allow, and journals the attempt: a page never
/// offers it, so it came from a stale page or a forged request, and the audit trail shows who.
pub async fn require_role(st: &AppState, s: &Session, role: Role) -> Result<crate::auth::Caller, ConsoleError> {
    let caller = s.caller();
    if let Err(e) = caller.require(role) {
        journal_refusal(st, s, "access.refused", &format!("POST {}: {}", s.path, e.public_message())).await;
        return Err(ConsoleError::new(s, e));
    }
    Ok(caller)
}

/// Journals a refused console request (best effort: the refusal stands either way).
pub async fn journal_refusal(st: &AppState, s: &Session, kind: &'static str, message: &str) {
    let (st, login, message) = (st.clone(), s.user.login.clone(), message.to_string());
    let r = crate::blocking(move || {
        st.event(&crate::db::NewEvent {
            actor: &login,
            kind,
            mac: None,
            task_id: None,
            message: &message,
            data: None,
        })?;
        Ok(())
    })
    .await;
    if let Err(e) = r {
        tracing::error!(error = %e, "console: journaling a refusal failed");
    }
}

/// Ties an `AppError` to the session it happened in, so it renders as a console page.
pub trait OrPage<T> {
    fn or_page(self, s: &Session) -> Result<T, ConsoleError>;
}

impl<T> OrPage<T> for Result<T, AppError> {
    fn or_page(self, s: &Session) -> Result<T, ConsoleError> {
        self.map_err(|e| ConsoleError::new(s, e))
    }
}

const CSS: &str = include_str!("../../static/console.css");
const JS: &str = include_str!("../../static/console.js");

async fn static_file(Path(file): Path<String>) -> Response {
    let (body, ty) = match file.as_str() {
        "console.css" => (CSS, "text/css; charset=utf-8"),
        "console.js" => (JS, "text/javascript; charset=utf-8"),
        _ => return (StatusCode::NOT_FOUND, "not found").into_response(),
    };
    ([(CONTENT_TYPE, ty), (CACHE_CONTROL, "public, max-age=300")], body).into_response()
}

#[cfg(test)]
mod tests;

//! Accounts (admins only): who may use the console and the API, in which role, and a form to
//! add one with a one-time password (shown once, on this page only: never in a redirect or a
//! cookie).

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;

use crate::api::admin::{create_user, UserBody};
use crate::console::csrf::CsrfForm;
use crate::console::session;
use crate::console::session::Session;
use crate::console::{render, require_role, ConsoleError, FormError, OrPage, PageCtx};
use crate::db::{Role, TokenRow, User};
use crate::{blocking, AppError, AppState};

#[derive(Template)]
#[template(path = "users.html")]
pub struct UsersPage {
    ctx: PageCtx,
    users: Vec<User>,
    /// Every API token (never its secret), newest first.
    tokens: Vec<TokenRow>,
    /// (login, one-time password) of the account just created.
    created: Option<(String, String)>,
    /// (login, one-time password) of the account whose password was just reset.
    reset: Option<(String, String)>,
    error: Option<FormError>,
    /// What the refused form held.
    login: String,
    name: String,
    email: String,
    role: String,
}

impl UsersPage {
    pub fn err(&self, field: &str) -> Option<&str> {
        self.error.as_ref().filter(|e| e.field.as_deref().unwrap_or("") == field).map(|e| e.message.as_str())
    }
}

fn page(st: &AppState, ctx: PageCtx) -> Result<UsersPage, AppError> {
    Ok(UsersPage {
        ctx,
        users: st.db.users()?,
        tokens: st.db.tokens(None)?,
        created: None,
        reset: None,
        error: None,
        login: String::new(),
        name: String::new(),
        email: String::new(),
        role: "technician".into(),
    })
}

pub async fn users_list(State(st): State<AppState>, s: Session) -> Result<Response, ConsoleError> {
    s.caller().require(Role::Admin).or_page(&s)?;
    let ctx = PageCtx::new(&s, "users");
    let p = blocking(move || page(&st, ctx)).await.or_page(&s)?;
    Ok(render(&p, &p.ctx, StatusCode::OK))
}

pub async fn user_add(State(st): State<AppState>, form: CsrfForm) -> Result<Response, ConsoleError> {
    let s = form.session.clone();
    let caller = require_role(&st, &s, Role::Admin).await?;
    let (login, name, email) =
        (form.get("login").unwrap_or_default(), form.get("name").unwrap_or_default(), form.get("email"));
    let role_text = form.get("role").unwrap_or_default();
    let ctx = PageCtx::new(&s, "users");
    let p = blocking(move || {
        let mut p = page(&st, ctx)?;
        let result = match Role::parse(&role_text) {
            None => Err(AppError::invalid("role", "readonly, technician or admin")),
            Some(role) => {
                let body =
                    UserBody { login: login.clone(), name: name.clone(), email: email.clone(), role, password: None };
                create_user(&st, &caller, &body)
            }
        };
        match result {
            Ok((user, password)) => {
                p.users = st.db.users()?;
                p.created = password.map(|pw| (user.login, pw));
            }
            Err(e) => {
                let field = match &e {
                    AppError::Invalid { field, .. } => Some(field.clone()),
                    _ => None,
                };
                p.error = Some(FormError { form: "add".into(), field, message: e.public_message() });
                (p.login, p.name, p.email, p.role) = (login, name, email.unwrap_or_default(), role_text);
            }
        }
        Ok(p)
    })
    .await
    .or_page(&s)?;
    let status = if p.error.is_some() { StatusCode::BAD_REQUEST } else { StatusCode::OK };
    Ok(render(&p, &p.ctx, status))
}

/// Role change, disable or enable, from a row of the accounts table.
pub async fn user_update(
    State(st): State<AppState>,
    Path(login): Path<String>,
    form: CsrfForm,
) -> Result<Response, ConsoleError> {
    let s = form.session.clone();
    let caller = require_role(&st, &s, Role::Admin).await?;
    let role = match form.get("role") {
        Some(r) => Some(
            Role::parse(&r).ok_or_else(|| AppError::invalid("role", "readonly, technician or admin")).or_page(&s)?,
        ),
        None => None,
    };
    let disabled = form.get("disabled").map(|d| d == "1");
    let user = blocking(move || crate::api::admin::update_user(&st, &caller, &login, role, disabled, None))
        .await
        .or_page(&s)?;
    let state = if user.disabled { "disabled" } else { "active" };
    let msg = format!("{}: {}, {state}", user.login, user.role.as_str());
    Ok(session::redirect_with_flash("/users", &msg, s.secure))
}

/// A new one-time password for an account, shown on this page only (never in a redirect).
pub async fn user_reset(
    State(st): State<AppState>,
    Path(login): Path<String>,
    form: CsrfForm,
) -> Result<Response, ConsoleError> {
    let s = form.session.clone();
    let caller = require_role(&st, &s, Role::Admin).await?;
    let permit = crate::auth::hashing_permit().await.or_page(&s)?;
    let ctx = PageCtx::new(&s, "users");
    let p = blocking(move || {
        let _permit = permit;
        let (password, _) = crate::api::admin::reset_password(&st, &caller, &login)?;
        let mut p = page(&st, ctx)?;
        p.reset = Some((login, password));
        Ok(p)
    })
    .await
    .or_page(&s)?;
    Ok(render(&p, &p.ctx, StatusCode::OK))
}

/// Revokes an API token from the tokens table.
pub async fn token_revoke(
    State(st): State<AppState>,
    Path(id): Path<i64>,
    form: CsrfForm,
) -> Result<Response, ConsoleError> {
    let s = form.session.clone();
    let caller = require_role(&st, &s, Role::Admin).await?;
    let t = blocking(move || crate::api::admin::revoke_token(&st, &caller, id)).await.or_page(&s)?;
    Ok(session::redirect_with_flash("/users", &format!("token #{} ({}) of {} revoked", t.id, t.name, t.user), s.secure))
}

//! Login, logout, password change and the language switch.

use std::collections::HashMap;

use askama::Template;
use axum::extract::{Path, Query, Request, State};
use axum::http::header::SET_COOKIE;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};

use super::csrf::{field, read_form, same, CsrfForm, FIELD};
use super::i18n::{Lang, LANG_COOKIE};
use super::session::{self, Session, LOGIN_CSRF_COOKIE, SESSION_COOKIE};
use super::{render, ConsoleError, OrPage, PageCtx};
use crate::auth::{hash_password, new_secret, verify_password};
use crate::db::NewEvent;
use crate::{blocking, AppState};

#[derive(Template)]
#[template(path = "login.html")]
pub struct LoginPage {
    ctx: PageCtx,
    next: String,
    login: String,
    error: Option<&'static str>,
    login_missing: bool,
    password_missing: bool,
}

#[derive(Debug, serde::Deserialize)]
pub struct NextQuery {
    next: Option<String>,
}

pub async fn login_form(Query(q): Query<NextQuery>, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    let lang = Lang::from_headers(&parts.headers);
    let mut ctx = PageCtx::anonymous(lang, "/login");
    let token = session::cookie(&parts.headers, LOGIN_CSRF_COOKIE).unwrap_or_else(|| new_secret(""));
    ctx.csrf = token.clone();
    let page = LoginPage {
        ctx,
        next: session::safe_next(q.next.as_deref()),
        login: String::new(),
        error: None,
        login_missing: false,
        password_missing: false,
    };
    let mut r = render(&page, &page.ctx, StatusCode::OK);
    r.headers_mut().append(SET_COOKIE, session::set_cookie(LOGIN_CSRF_COOKIE, &token, 3600, session::is_https(&parts)));
    r
}

pub async fn login(State(st): State<AppState>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let lang = Lang::from_headers(&parts.headers);
    let secure = session::is_https(&parts);
    let ip = session::client_ip(&parts);
    let expected = session::cookie(&parts.headers, LOGIN_CSRF_COOKIE);
    let fields: HashMap<String, String> = match read_form(Request::from_parts(parts, body), &st).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    if !matches!((fields.get(FIELD), &expected), (Some(got), Some(exp)) if same(got, exp)) {
        return ConsoleError::forbidden(lang, lang.t("error.csrf").to_string(), None).into_response();
    }
    let login = field(&fields, "login").unwrap_or_default();
    // Passwords are not trimmed: spaces may be part of them.
    let password = fields.get("password").cloned().unwrap_or_default();
    let next = session::safe_next(fields.get("next").map(String::as_str));
    let mut ctx = PageCtx::anonymous(lang, "/login");
    ctx.csrf = expected.unwrap_or_default();
    let mut page = LoginPage {
        ctx,
        next: next.clone(),
        login: login.clone(),
        error: None,
        login_missing: login.is_empty(),
        password_missing: password.is_empty(),
    };
    if page.login_missing || page.password_missing {
        return render(&page, &page.ctx, StatusCode::BAD_REQUEST);
    }
    let st2 = st.clone();
    let ip2 = ip.clone();
    let permit = crate::auth::hashing_permit().await;
    let result = blocking(move || {
        let _permit = permit?;
        Ok(match session::check_login(&st2, &login, &password, &ip2, "console")? {
            Ok(user) => Ok((session::open_session(&st2, &user, &ip2)?, user.must_change_password)),
            Err(refused) => Err(refused),
        })
    })
    .await;
    match result {
        Ok(Ok((secret, must_change))) => {
            let to = if must_change { "/password".to_string() } else { next };
            let mut r = Redirect::to(&to).into_response();
            r.headers_mut().append(
                SET_COOKIE,
                session::set_cookie(SESSION_COOKIE, &secret, session::SESSION_TTL_MS / 1000, secure),
            );
            r.headers_mut().append(SET_COOKIE, session::set_cookie(LOGIN_CSRF_COOKIE, "", 0, secure));
            r
        }
        Ok(Err(session::LoginRefused::Wrong)) => {
            page.error = Some("login.wrong");
            render(&page, &page.ctx, StatusCode::UNAUTHORIZED)
        }
        Ok(Err(session::LoginRefused::Throttled { .. })) => {
            page.error = Some("login.throttled");
            render(&page, &page.ctx, StatusCode::TOO_MANY_REQUESTS)
        }
        Ok(Err(session::LoginRefused::NoRole)) => {
            page.error = Some("login.no_role");
            render(&page, &page.ctx, StatusCode::FORBIDDEN)
        }
        Ok(Err(session::LoginRefused::DirectoryUnavailable)) => {
            page.error = Some("login.directory_down");
            render(&page, &page.ctx, StatusCode::SERVICE_UNAVAILABLE)
        }
        Err(e) => {
            tracing::error!(error = %e, "console login");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error; see the appliance log").into_response()
        }
    }
}

pub async fn logout(State(st): State<AppState>, form: CsrfForm) -> Response {
    let s = form.session;
    let (hash, login) = (s.token_hash.clone(), s.user.login.clone());
    let done = blocking(move || {
        st.db.delete_session(&hash)?;
        st.event(&NewEvent {
            actor: &login,
            kind: "logout",
            mac: None,
            task_id: None,
            message: &format!("{login} logged out of the console"),
            data: None,
        })?;
        Ok(())
    })
    .await;
    if let Err(e) = done {
        return ConsoleError::new(&s, e).into_response();
    }
    let mut r = Redirect::to("/login").into_response();
    r.headers_mut().append(SET_COOKIE, session::set_cookie(SESSION_COOKIE, "", 0, s.secure));
    r
}

#[derive(Template)]
#[template(path = "password.html")]
pub struct PasswordPage {
    ctx: PageCtx,
    forced: bool,
    current_error: Option<&'static str>,
    new_error: Option<&'static str>,
    confirm_error: Option<&'static str>,
}

pub async fn password_form(s: Session) -> Response {
    let page = PasswordPage {
        forced: s.user.must_change_password,
        ctx: PageCtx::new(&s, "password"),
        current_error: None,
        new_error: None,
        confirm_error: None,
    };
    render(&page, &page.ctx, StatusCode::OK)
}

pub async fn password_change(State(st): State<AppState>, form: CsrfForm) -> Result<Response, ConsoleError> {
    let s = form.session.clone();
    crate::api::admin::not_from_directory(&s.user, "password").or_page(&s)?;
    let current = form.fields.get("current").cloned().unwrap_or_default();
    let new = form.fields.get("new").cloned().unwrap_or_default();
    let confirm = form.fields.get("confirm").cloned().unwrap_or_default();
    let mut page = PasswordPage {
        forced: s.user.must_change_password,
        ctx: PageCtx::new(&s, "password"),
        current_error: None,
        new_error: None,
        confirm_error: None,
    };
    let hash = s.user.password_hash.clone().unwrap_or_default();
    let current_ok = blocking(move || Ok(verify_password(&current, &hash))).await.or_page(&s)?;
    if !current_ok {
        page.current_error = Some("password.wrong");
    }
    if new.chars().count() < 12 {
        page.new_error = Some("password.short");
    } else if current_ok && form.fields.get("current") == Some(&new) {
        page.new_error = Some("password.same");
    }
    if new != confirm {
        page.confirm_error = Some("password.mismatch");
    }
    if page.current_error.is_some() || page.new_error.is_some() || page.confirm_error.is_some() {
        return Ok(render(&page, &page.ctx, StatusCode::BAD_REQUEST));
    }
    let (user, keep) = (s.user.clone(), s.token_hash.clone());
    blocking(move || {
        st.db.set_password(user.id, &hash_password(&new))?;
        st.db.delete_sessions_of(user.id, Some(&keep))?;
        let revoked = st.db.revoke_tokens_of(user.id)?;
        if user.must_change_password {
            let _ = std::fs::remove_file(st.data_dir.join(crate::FIRST_PASSWORD_FILE));
        }
        st.event(&NewEvent {
            actor: &user.login,
            kind: "user.password",
            mac: None,
            task_id: None,
            message: &format!(
                "{} changed their password in the console; their other sessions were closed, {revoked} API token(s) revoked",
                user.login
            ),
            data: None,
        })?;
        Ok(())
    })
    .await
    .or_page(&s)?;
    Ok(session::redirect_with_flash("/", s.lang.t("password.done"), s.secure))
}

pub async fn lang_switch(Path(code): Path<String>, Query(q): Query<NextQuery>, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    let lang = Lang::parse(&code).unwrap_or(Lang::Fr);
    let secure = session::is_https(&parts);
    let mut r = Redirect::to(&session::safe_next(q.next.as_deref())).into_response();
    r.headers_mut().append(SET_COOKIE, session::set_cookie(LANG_COOKIE, lang.code(), 365 * 86_400, secure));
    r
}

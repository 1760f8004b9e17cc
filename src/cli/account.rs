//! `parc user …` and `parc token …`: accounts and API tokens, over the API (admins manage
//! accounts; everyone lists and revokes their own tokens).

use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::client::{enc, print_json, Client, ServerArgs};

#[derive(Debug, Subcommand)]
pub enum UserCmd {
    /// Accounts (admin).
    Ls(ServerOnly),
    /// Create an account; a one-time password is printed unless --password-from-env.
    Add(UserAdd),
    /// Change an account's role: admin, technician or readonly.
    Role(UserRole),
    /// Disable an account: its tokens and console sessions end now.
    Disable(UserOne),
    /// Enable a disabled account.
    Enable(UserOne),
    /// A new one-time password (printed once); the user's tokens and sessions end.
    ResetPassword(UserOne),
}

#[derive(Debug, Subcommand)]
pub enum TokenCmd {
    /// Your API tokens (--all: everyone's, admin), never their secrets.
    Ls(TokenLs),
    /// Revoke a token by its number.
    Revoke(TokenRevoke),
}

#[derive(Debug, Args)]
pub struct ServerOnly {
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(Debug, Args)]
pub struct UserAdd {
    #[command(flatten)]
    server: ServerArgs,
    login: String,
    /// Full name: the author of the git commits this user makes.
    #[arg(long)]
    name: String,
    #[arg(long)]
    email: Option<String>,
    #[arg(long, default_value = "technician")]
    role: String,
}

#[derive(Debug, Args)]
pub struct UserRole {
    #[command(flatten)]
    server: ServerArgs,
    login: String,
    role: String,
    #[arg(long, short = 'm')]
    reason: Option<String>,
}

#[derive(Debug, Args)]
pub struct UserOne {
    #[command(flatten)]
    server: ServerArgs,
    login: String,
    #[arg(long, short = 'm')]
    reason: Option<String>,
}

#[derive(Debug, Args)]
pub struct TokenLs {
    #[command(flatten)]
    server: ServerArgs,
    #[arg(long)]
    all: bool,
}

#[derive(Debug, Args)]
pub struct TokenRevoke {
    #[command(flatten)]
    server: ServerArgs,
    id: i64,
}

impl UserCmd {
    pub fn json(&self) -> bool {
        match self {
            UserCmd::Ls(a) => a.server.json,
            UserCmd::Add(a) => a.server.json,
            UserCmd::Role(a) => a.server.json,
            UserCmd::Disable(a) | UserCmd::Enable(a) | UserCmd::ResetPassword(a) => a.server.json,
        }
    }
}

impl TokenCmd {
    pub fn json(&self) -> bool {
        match self {
            TokenCmd::Ls(a) => a.server.json,
            TokenCmd::Revoke(a) => a.server.json,
        }
    }
}

pub fn run_user(cmd: UserCmd) -> Result<ExitCode> {
    let (server, r) = match &cmd {
        UserCmd::Ls(a) => (&a.server, Client::new(&a.server)?.get("/users")?),
        UserCmd::Add(a) => {
            let body = json!({ "login": a.login, "name": a.name, "email": a.email, "role": a.role });
            (&a.server, Client::new(&a.server)?.post("/users", &body)?)
        }
        UserCmd::Role(a) => (&a.server, patch(&a.server, &a.login, json!({ "role": a.role, "reason": a.reason }))?),
        UserCmd::Disable(a) => {
            (&a.server, patch(&a.server, &a.login, json!({ "disabled": true, "reason": a.reason }))?)
        }
        UserCmd::Enable(a) => {
            (&a.server, patch(&a.server, &a.login, json!({ "disabled": false, "reason": a.reason }))?)
        }
        UserCmd::ResetPassword(a) => {
            (&a.server, Client::new(&a.server)?.post(&format!("/users/{}/reset-password", enc(&a.login)), &json!({}))?)
        }
    };
    if print_json(server, &r) {
        return Ok(ExitCode::SUCCESS);
    }
    match (&cmd, r.as_array()) {
        (UserCmd::Ls(_), Some(users)) => {
            for u in users {
                println!(
                    "{:<20} {:<10} {:<8} {}",
                    u["login"].as_str().unwrap_or(""),
                    u["role"].as_str().unwrap_or(""),
                    if u["disabled"] == true { "disabled" } else { "active" },
                    u["name"].as_str().unwrap_or("")
                );
            }
        }
        _ => {
            println!("{}: {}", r["login"].as_str().unwrap_or("user"), describe(&r));
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn patch(server: &ServerArgs, login: &str, body: Value) -> Result<Value> {
    Client::new(server)?.send("PATCH", &format!("/users/{}", enc(login)), &body, None)
}

fn describe(r: &Value) -> String {
    match (r["password"].as_str(), r["role"].as_str()) {
        (Some(p), _) => format!("one-time password {p} (shown once; to be changed at first login)"),
        (None, Some(role)) => format!("role {role}, {}", if r["disabled"] == true { "disabled" } else { "active" }),
        _ => r.to_string(),
    }
}

pub fn run_token(cmd: TokenCmd) -> Result<ExitCode> {
    match cmd {
        TokenCmd::Ls(a) => {
            let r = Client::new(&a.server)?.get(if a.all { "/tokens?all=true" } else { "/tokens" })?;
            if !print_json(&a.server, &r) {
                for t in r.as_array().into_iter().flatten() {
                    let state = if t["revoked_at"].is_i64() { "revoked" } else { "live" };
                    println!(
                        "#{:<5} {:<16} {:<8} {}",
                        t["id"],
                        t["user"].as_str().unwrap_or(""),
                        state,
                        t["name"].as_str().unwrap_or("")
                    );
                }
            }
        }
        TokenCmd::Revoke(a) => {
            let r = Client::new(&a.server)?.post(&format!("/tokens/{}/revoke", a.id), &json!({}))?;
            if !print_json(&a.server, &r) {
                println!("token #{} of {} revoked", a.id, r["user"].as_str().unwrap_or("?"));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

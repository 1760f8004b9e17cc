//! Users (who may act, in which role) and their API tokens (stored as sha256 digests only).

use rusqlite::{params, OptionalExtension, Row};
use serde::{Deserialize, Serialize};

use super::{now_ms, Db, DbError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Readonly,
    Technician,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Readonly => "readonly",
            Role::Technician => "technician",
            Role::Admin => "admin",
        }
    }
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "readonly" => Some(Role::Readonly),
            "technician" => Some(Role::Technician),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct User {
    pub id: i64,
    pub login: String,
    pub name: String,
    pub email: String,
    pub role: Role,
    #[serde(skip)]
    pub password_hash: Option<String>,
    pub must_change_password: bool,
    pub disabled: bool,
    /// The account's entry in the hospital's directory; `None` for a local account.
    pub directory_dn: Option<String>,
}

pub(super) fn user_row(r: &Row<'_>) -> rusqlite::Result<User> {
    let role: String = r.get(4)?;
    Ok(User {
        id: r.get(0)?,
        login: r.get(1)?,
        name: r.get(2)?,
        email: r.get(3)?,
        role: Role::parse(&role).unwrap_or(Role::Readonly),
        password_hash: r.get(5)?,
        must_change_password: r.get(6)?,
        disabled: r.get(7)?,
        directory_dn: r.get(8)?,
    })
}

/// An API token as listings show it (never its secret).
#[derive(Debug, Clone, Serialize)]
pub struct TokenRow {
    pub id: i64,
    pub user: String,
    pub name: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    #[serde(skip)]
    pub user_id: i64,
}

fn token_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TokenRow> {
    Ok(TokenRow {
        id: r.get(0)?,
        user: r.get(1)?,
        name: r.get(2)?,
        created_at: r.get(3)?,
        last_used_at: r.get(4)?,
        expires_at: r.get(5)?,
        revoked_at: r.get(6)?,
        user_id: r.get(7)?,
    })
}

pub(super) const USER_COLUMNS: &str =
    "u.id, u.login, u.name, u.email, u.role, u.password_hash, u.must_change_password, u.disabled, u.directory_dn";

impl Db {
    pub fn user_count(&self) -> Result<i64, DbError> {
        Ok(self.conn().query_row("SELECT COUNT(*) FROM users", [], |r| r.get(0))?)
    }

    pub fn create_user(
        &self,
        login: &str,
        name: &str,
        email: &str,
        role: Role,
        password_hash: Option<&str>,
        must_change: bool,
    ) -> Result<User, DbError> {
        let conn = self.conn();
        let res = conn.execute(
            "INSERT INTO users (login, name, email, role, password_hash, must_change_password, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![login, name, email, role.as_str(), password_hash, must_change, now_ms()],
        );
        match res {
            Ok(_) => {}
            Err(rusqlite::Error::SqliteFailure(e, _)) if e.code == rusqlite::ErrorCode::ConstraintViolation => {
                return Err(DbError::Conflict(format!("a user {login:?} already exists")));
            }
            Err(e) => return Err(e.into()),
        }
        let id = conn.last_insert_rowid();
        Ok(conn.query_row(&format!("SELECT {USER_COLUMNS} FROM users u WHERE u.id = ?1"), [id], user_row)?)
    }

    /// Records or refreshes an account the directory accepted; `None` when a local account
    /// holds that login (a directory never takes over a local account).
    pub fn upsert_directory_user(
        &self,
        login: &str,
        name: &str,
        email: &str,
        role: Role,
        dn: &str,
    ) -> Result<Option<User>, DbError> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO users (login, name, email, role, password_hash, must_change_password, created_at, directory_dn)
             VALUES (?1, ?2, ?3, ?4, NULL, 0, ?5, ?6)
             ON CONFLICT(login) DO UPDATE SET name = ?2, email = ?3, role = ?4, directory_dn = ?6
             WHERE users.directory_dn IS NOT NULL",
            params![login, name, email, role.as_str(), now_ms(), dn],
        )?;
        Ok(conn
            .query_row(
                &format!("SELECT {USER_COLUMNS} FROM users u WHERE u.login = ?1 AND u.directory_dn IS NOT NULL"),
                [login],
                user_row,
            )
            .optional()?)
    }

    pub fn user_by_login(&self, login: &str) -> Result<Option<User>, DbError> {
        let conn = self.conn();
        Ok(conn
            .query_row(&format!("SELECT {USER_COLUMNS} FROM users u WHERE u.login = ?1"), [login], user_row)
            .optional()?)
    }

    pub fn users(&self) -> Result<Vec<User>, DbError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!("SELECT {USER_COLUMNS} FROM users u ORDER BY u.login"))?;
        let rows = stmt.query_map([], user_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn create_token(&self, user_id: i64, name: &str, token_hash: &str, expires_at: i64) -> Result<i64, DbError> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO api_tokens (user_id, name, token_hash, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![user_id, name, token_hash, now_ms(), expires_at],
        )?;
        Ok(conn.last_insert_rowid())
    }

    /// Tokens, newest first: one user's, or everyone's.
    pub fn tokens(&self, user_id: Option<i64>) -> Result<Vec<TokenRow>, DbError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT t.id, u.login, t.name, t.created_at, t.last_used_at, t.expires_at, t.revoked_at, t.user_id
             FROM api_tokens t JOIN users u ON u.id = t.user_id
             WHERE ?1 IS NULL OR t.user_id = ?1 ORDER BY t.id DESC",
        )?;
        let rows = stmt.query_map([user_id], token_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn token(&self, id: i64) -> Result<Option<TokenRow>, DbError> {
        let conn = self.conn();
        Ok(conn
            .query_row(
                "SELECT t.id, u.login, t.name, t.created_at, t.last_used_at, t.expires_at, t.revoked_at, t.user_id
                 FROM api_tokens t JOIN users u ON u.id = t.user_id WHERE t.id = ?1",
                [id],
                token_row,
            )
            .optional()?)
    }

    /// Revokes one token; false if it was already revoked.
    pub fn revoke_token(&self, id: i64) -> Result<bool, DbError> {
        Ok(self.conn().execute(
            "UPDATE api_tokens SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
            params![id, now_ms()],
        )? == 1)
    }

    /// Revokes every live token of a user (password reset, account disabled); how many.
    pub fn revoke_tokens_of(&self, user_id: i64) -> Result<usize, DbError> {
        Ok(self.conn().execute(
            "UPDATE api_tokens SET revoked_at = ?2 WHERE user_id = ?1 AND revoked_at IS NULL",
            params![user_id, now_ms()],
        )?)
    }

    /// Changes a user's role and/or enabled state.
    pub fn update_user(&self, id: i64, role: Option<Role>, disabled: Option<bool>) -> Result<(), DbError> {
        self.conn().execute(
            "UPDATE users SET role = COALESCE(?2, role), disabled = COALESCE(?3, disabled) WHERE id = ?1",
            params![id, role.map(Role::as_str), disabled],
        )?;
        Ok(())
    }

    /// A password set by an admin: the user must change it at next login.
    pub fn reset_password(&self, id: i64, password_hash: &str) -> Result<(), DbError> {
        self.conn().execute(
            "UPDATE users SET password_hash = ?2, must_change_password = 1 WHERE id = ?1",
            params![id, password_hash],
        )?;
        Ok(())
    }

    /// The enabled user owning a live token.
    pub fn user_by_token(&self, token_hash: &str) -> Result<Option<User>, DbError> {
        let conn = self.conn();
        let user = conn
            .query_row(
                &format!(
                    "SELECT {USER_COLUMNS} FROM api_tokens t JOIN users u ON u.id = t.user_id
                     WHERE t.token_hash = ?1 AND t.revoked_at IS NULL AND u.disabled = 0
                       AND (t.expires_at IS NULL OR t.expires_at > ?2)"
                ),
                params![token_hash, now_ms()],
                user_row,
            )
            .optional()?;
        if user.is_some() {
            conn.execute(
                "UPDATE api_tokens SET last_used_at = ?2 WHERE token_hash = ?1",
                params![token_hash, now_ms()],
            )?;
        }
        Ok(user)
    }
}

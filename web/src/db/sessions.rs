//! Console sessions and login throttling. Session secrets are stored as sha256 digests, like
//! API tokens: a copy of the database does not let anyone in.

use rusqlite::{params, OptionalExtension};

use super::users::{user_row, USER_COLUMNS};
use super::{now_ms, Db, DbError, User};

/// A live session and its user.
#[derive(Debug, Clone)]
pub struct SessionRow {
    pub user: User,
    pub csrf: String,
    pub expires_at: i64,
}

impl Db {
    pub fn create_session(&self, token_hash: &str, user_id: i64, csrf: &str, ttl_ms: i64) -> Result<(), DbError> {
        let now = now_ms();
        let conn = self.conn();
        // Expired sessions go when anyone logs in: no timer needed, and the table stays small.
        conn.execute("DELETE FROM sessions WHERE expires_at < ?1", [now])?;
        conn.execute(
            "INSERT INTO sessions (token_hash, user_id, csrf, created_at, last_seen_at, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?4, ?5)",
            params![token_hash, user_id, csrf, now, now + ttl_ms],
        )?;
        Ok(())
    }

    /// The session behind a cookie, if live and its user enabled; slides its expiry.
    pub fn session(&self, token_hash: &str, ttl_ms: i64) -> Result<Option<SessionRow>, DbError> {
        let now = now_ms();
        let conn = self.conn();
        let row = conn
            .query_row(
                &format!(
                    "SELECT {USER_COLUMNS}, s.csrf, s.expires_at FROM sessions s JOIN users u ON u.id = s.user_id
                     WHERE s.token_hash = ?1 AND s.expires_at > ?2 AND u.disabled = 0"
                ),
                params![token_hash, now],
                |r| Ok(SessionRow { user: user_row(r)?, csrf: r.get(9)?, expires_at: r.get(10)? }),
            )
            .optional()?;
        if row.is_some() {
            conn.execute(
                "UPDATE sessions SET last_seen_at = ?2, expires_at = ?3 WHERE token_hash = ?1",
                params![token_hash, now, now + ttl_ms],
            )?;
        }
        Ok(row)
    }

    pub fn delete_session(&self, token_hash: &str) -> Result<(), DbError> {
        self.conn().execute("DELETE FROM sessions WHERE token_hash = ?1", [token_hash])?;
        Ok(())
    }

    /// Ends every session of a user but `keep` (after a password change).
    pub fn delete_sessions_of(&self, user_id: i64, keep: Option<&str>) -> Result<(), DbError> {
        self.conn()
            .execute("DELETE FROM sessions WHERE user_id = ?1 AND token_hash IS NOT ?2", params![user_id, keep])?;
        Ok(())
    }

    pub fn set_password(&self, user_id: i64, password_hash: &str) -> Result<(), DbError> {
        self.conn().execute(
            "UPDATE users SET password_hash = ?2, must_change_password = 0 WHERE id = ?1",
            params![user_id, password_hash],
        )?;
        Ok(())
    }

    /// (failures, time of the last one) for a throttling key.
    pub fn login_failures(&self, key: &str) -> Result<Option<(i64, i64)>, DbError> {
        Ok(self
            .conn()
            .query_row("SELECT failures, last_failure_at FROM login_failures WHERE key = ?1", [key], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?)
    }

    /// Counts one more failure; returns the new count.
    pub fn login_failed(&self, key: &str) -> Result<i64, DbError> {
        Ok(self.conn().query_row(
            "INSERT INTO login_failures (key, failures, last_failure_at) VALUES (?1, 1, ?2)
             ON CONFLICT(key) DO UPDATE SET failures = failures + 1, last_failure_at = ?2
             RETURNING failures",
            params![key, now_ms()],
            |r| r.get(0),
        )?)
    }

    pub fn login_succeeded(&self, key: &str) -> Result<(), DbError> {
        self.conn().execute("DELETE FROM login_failures WHERE key = ?1", [key])?;
        Ok(())
    }
}

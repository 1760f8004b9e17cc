//! Per-machine secrets: their values are read only to deliver them to the machine's running
//! task; listings give names and who set them when.

use rusqlite::params;
use serde::Serialize;

use super::{now_ms, Db, DbError};

/// A secret as listings show it (never its value).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SecretInfo {
    pub name: String,
    pub set_by: String,
    pub set_at: i64,
    pub bytes: i64,
}

impl Db {
    /// Sets (or replaces) a secret of `mac`.
    pub fn set_secret(&self, mac: &str, name: &str, value: &[u8], set_by: &str) -> Result<SecretInfo, DbError> {
        let at = now_ms();
        self.conn().execute(
            "INSERT INTO machine_secrets (mac, name, value, set_by, set_at) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT(mac, name) DO UPDATE SET value = ?3, set_by = ?4, set_at = ?5",
            params![mac, name, value, set_by, at],
        )?;
        Ok(SecretInfo { name: name.into(), set_by: set_by.into(), set_at: at, bytes: value.len() as i64 })
    }

    pub fn secrets_of(&self, mac: &str) -> Result<Vec<SecretInfo>, DbError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT name, set_by, set_at, length(value) FROM machine_secrets WHERE mac = ?1 ORDER BY name")?;
        let rows = stmt.query_map([mac], |r| {
            Ok(SecretInfo { name: r.get(0)?, set_by: r.get(1)?, set_at: r.get(2)?, bytes: r.get(3)? })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// One secret's value, to deliver it.
    pub fn secret_value(&self, mac: &str, name: &str) -> Result<Option<Vec<u8>>, DbError> {
        use rusqlite::OptionalExtension;
        Ok(self
            .conn()
            .query_row("SELECT value FROM machine_secrets WHERE mac = ?1 AND name = ?2", params![mac, name], |r| {
                r.get(0)
            })
            .optional()?)
    }

    /// Whether there was such a secret.
    pub fn remove_secret(&self, mac: &str, name: &str) -> Result<bool, DbError> {
        Ok(self.conn().execute("DELETE FROM machine_secrets WHERE mac = ?1 AND name = ?2", params![mac, name])? > 0)
    }
}

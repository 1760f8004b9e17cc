//! Which machine each computer account parc provisioned belongs to.

use rusqlite::{params, OptionalExtension};

use super::{now_ms, Db, DbError};

impl Db {
    /// The MAC of the machine parc provisioned account `name` for.
    pub fn domain_account_owner(&self, name: &str) -> Result<Option<String>, DbError> {
        Ok(self.conn().query_row("SELECT mac FROM domain_accounts WHERE name = ?1", [name], |r| r.get(0)).optional()?)
    }

    pub fn record_domain_account(&self, name: &str, mac: &str, realm: &str, ou: &str) -> Result<(), DbError> {
        self.conn().execute(
            "INSERT INTO domain_accounts (name, mac, realm, ou, provisioned_at) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT(name) DO UPDATE SET mac = ?2, realm = ?3, ou = ?4, provisioned_at = ?5",
            params![name, mac, realm, ou, now_ms()],
        )?;
        Ok(())
    }

    /// Other accounts parc provisioned for `mac` (left behind by a move).
    pub fn domain_accounts_of(&self, mac: &str) -> Result<Vec<String>, DbError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT name FROM domain_accounts WHERE mac = ?1 ORDER BY name")?;
        let rows = stmt.query_map([mac], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

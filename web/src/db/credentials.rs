//! Credentials of network-booted machines (`agent_credentials`): boot credentials carried by a
//! boot script, standby sessions of waiting agents, first-boot reports. See migration 0005.

use rusqlite::{params, OptionalExtension};

use super::{now_ms, Db, DbError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialKind {
    Boot,
    Standby,
    FirstBoot,
}

impl CredentialKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialKind::Boot => "boot",
            CredentialKind::Standby => "standby",
            CredentialKind::FirstBoot => "first_boot",
        }
    }
    /// Used once, then gone; a standby session lasts until its agent gets a task.
    fn single_use(self) -> bool {
        !matches!(self, CredentialKind::Standby)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    pub kind: CredentialKind,
    pub mac: String,
    pub task_id: Option<i64>,
    /// The address it is bound to (`None`: any, for the installed system's first boot).
    pub address: Option<String>,
    pub expires_at: i64,
}

impl Db {
    /// Stores a new credential of `kind` for `mac`, replacing the machine's previous one of
    /// that kind (one boot script in flight per machine), and forgets expired ones.
    pub fn issue_credential(
        &self,
        kind: CredentialKind,
        hash: &str,
        mac: &str,
        task_id: Option<i64>,
        address: Option<&str>,
        ttl_ms: i64,
    ) -> Result<(), DbError> {
        let now = now_ms();
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute("DELETE FROM agent_credentials WHERE expires_at < ?1", [now])?;
        tx.execute("DELETE FROM agent_credentials WHERE mac = ?1 AND kind = ?2", params![mac, kind.as_str()])?;
        tx.execute(
            "INSERT INTO agent_credentials (hash, kind, mac, task_id, address, created_at, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![hash, kind.as_str(), mac, task_id, address, now, now + ttl_ms],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// The unexpired credential of one of `kinds` behind `hash`; a single-use one is deleted in
    /// the same statement, so two requests racing with it cannot both succeed.
    pub fn take_credential(&self, hash: &str, kinds: &[CredentialKind]) -> Result<Option<Credential>, DbError> {
        let now = now_ms();
        let conn = self.conn();
        let row = conn
            .query_row(
                "SELECT kind, mac, task_id, address, expires_at FROM agent_credentials
                 WHERE hash = ?1 AND expires_at >= ?2",
                params![hash, now],
                |r| {
                    let kind: String = r.get(0)?;
                    Ok((kind, r.get::<_, String>(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
                },
            )
            .optional()?;
        let Some((kind, mac, task_id, address, expires_at)) = row else { return Ok(None) };
        let Some(kind) = kinds.iter().copied().find(|k| k.as_str() == kind) else { return Ok(None) };
        if kind.single_use() && conn.execute("DELETE FROM agent_credentials WHERE hash = ?1", [hash])? != 1 {
            return Ok(None);
        }
        Ok(Some(Credential { kind, mac, task_id, address, expires_at }))
    }

    /// Ends a machine's credentials of `kind`.
    pub fn drop_credentials(&self, mac: &str, kind: CredentialKind) -> Result<(), DbError> {
        self.conn()
            .execute("DELETE FROM agent_credentials WHERE mac = ?1 AND kind = ?2", params![mac, kind.as_str()])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_use_bound_and_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("parc.db")).unwrap();
        let mac = "52:54:00:00:00:01";
        db.issue_credential(CredentialKind::Boot, "h1", mac, Some(7), Some("10.0.0.5"), 60_000).unwrap();
        // A second boot script replaces the first's credential.
        db.issue_credential(CredentialKind::Boot, "h2", mac, Some(7), Some("10.0.0.5"), 60_000).unwrap();
        assert_eq!(db.take_credential("h1", &[CredentialKind::Boot]).unwrap(), None);
        assert_eq!(db.take_credential("h2", &[CredentialKind::Standby]).unwrap(), None, "wrong kind");
        let c = db.take_credential("h2", &[CredentialKind::Boot]).unwrap().unwrap();
        assert_eq!((c.task_id, c.address.as_deref()), (Some(7), Some("10.0.0.5")));
        assert_eq!(db.take_credential("h2", &[CredentialKind::Boot]).unwrap(), None, "used once");
        // Standby sessions stay until dropped; expired ones never count.
        db.issue_credential(CredentialKind::Standby, "s1", mac, None, Some("10.0.0.5"), 60_000).unwrap();
        assert!(db.take_credential("s1", &[CredentialKind::Standby]).unwrap().is_some());
        assert!(db.take_credential("s1", &[CredentialKind::Standby]).unwrap().is_some());
        db.drop_credentials(mac, CredentialKind::Standby).unwrap();
        assert_eq!(db.take_credential("s1", &[CredentialKind::Standby]).unwrap(), None);
        db.issue_credential(CredentialKind::FirstBoot, "f1", mac, Some(7), None, -1).unwrap();
        assert_eq!(db.take_credential("f1", &[CredentialKind::FirstBoot]).unwrap(), None, "expired");
    }
}

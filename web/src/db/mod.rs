//! The appliance database (SQLite): hardware reported by agents, tasks and their progress,
//! users and API tokens, the audit journal. Versioned migrations in `migrations/`, applied on
//! open. One connection behind a mutex: every statement is a few microseconds, and callers run
//! on blocking threads.

mod credentials;
mod domain;
mod intents;
mod secrets;
mod sessions;
mod tasks;
mod users;

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

pub use credentials::{Credential, CredentialKind};
pub use intents::{Applied, Intent, Step, TRAILER as INTENT_TRAILER};
pub use secrets::SecretInfo;
pub use sessions::SessionRow;
pub use tasks::{BatchSummary, NewTask, Progress, Task, TaskKind, TaskQuery, TaskState};
pub use users::{Role, TokenRow, User};

/// Migrations in order; `PRAGMA user_version` records how many were applied.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_init.sql"),
    include_str!("migrations/0002_console.sql"),
    include_str!("migrations/0003_lost_agents.sql"),
    include_str!("migrations/0004_intents.sql"),
    include_str!("migrations/0005_agent_credentials.sql"),
    include_str!("migrations/0006_token_expiry.sql"),
    include_str!("migrations/0007_directory_users.sql"),
    include_str!("migrations/0008_machine_secrets.sql"),
    include_str!("migrations/0009_domain_accounts.sql"),
    include_str!("migrations/0010_firmware.sql"),
];

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DbError {
    #[error("database {path}: {source}")]
    Open { path: String, source: rusqlite::Error },
    #[error("database {path} was written by a newer parc (schema {found}, this parc knows {known}); upgrade parc")]
    TooNew { path: String, found: i64, known: i64 },
    #[error("database: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("{0}")]
    Conflict(String),
}

#[derive(Debug)]
pub struct Db {
    conn: Mutex<Connection>,
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

impl Db {
    pub fn open(path: &Path) -> Result<Db, DbError> {
        let open_err = |source| DbError::Open { path: path.display().to_string(), source };
        let mut conn = Connection::open(path).map_err(open_err)?;
        // WAL: readers never wait for the writer; NORMAL: a commit survives the process being
        // killed (the journal is fsynced at checkpoints), which is what "server restarted
        // mid-deploy" needs, without an fsync per progress report.
        conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;")
            .map_err(open_err)?;
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(open_err)?;
        let known = MIGRATIONS.len() as i64;
        if version > known {
            return Err(DbError::TooNew { path: path.display().to_string(), found: version, known });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = conn.transaction().map_err(open_err)?;
            tx.execute_batch(sql).map_err(open_err)?;
            tx.execute_batch(&format!("PRAGMA user_version = {}", i + 1)).map_err(open_err)?;
            tx.commit().map_err(open_err)?;
            tracing::info!(migration = i + 1, "database schema migrated");
        }
        Ok(Db { conn: Mutex::new(conn) })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite consistent (statements are atomic).
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    // ---- the audit journal ----

    pub fn event(&self, e: &NewEvent<'_>) -> Result<Event, DbError> {
        Ok(insert_event(&self.conn(), e, now_ms())?)
    }

    pub fn events(&self, q: &EventQuery) -> Result<Vec<Event>, DbError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT id, at, actor, kind, mac, task_id, message, data FROM events
             WHERE id > ?1 AND (?2 IS NULL OR mac = ?2) AND (?3 IS NULL OR task_id = ?3)
               AND (?4 IS NULL OR actor = ?4) AND (?5 IS NULL OR kind LIKE ?5 || '%') AND (?7 IS NULL OR id < ?7)
               AND (?8 IS NULL OR at >= ?8) AND (?9 IS NULL OR at < ?9)
             ORDER BY id DESC LIMIT ?6",
        )?;
        let rows = stmt.query_map(
            params![
                q.after.unwrap_or(0),
                q.mac,
                q.task_id,
                q.actor,
                q.kind,
                q.limit.clamp(1, 10_000),
                q.before,
                q.since,
                q.until
            ],
            |r| {
                let data: Option<String> = r.get(7)?;
                Ok(Event {
                    id: r.get(0)?,
                    at: r.get(1)?,
                    actor: r.get(2)?,
                    kind: r.get(3)?,
                    mac: r.get(4)?,
                    task_id: r.get(5)?,
                    message: r.get(6)?,
                    data: data.and_then(|d| serde_json::from_str(&d).ok()),
                })
            },
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    // ---- what agents report about machines ----

    pub fn record_hello(&self, h: &Hardware, ip: Option<&str>) -> Result<(), DbError> {
        let now = now_ms();
        let disks = serde_json::to_string(&h.disks).expect("serialisable");
        let firmware = h.firmware.map(|f| serde_json::to_string(&f).expect("serialisable"));
        self.conn().execute(
            "INSERT INTO machines (mac, serial, uuid, model, memory_bytes, disks, ip, first_seen, last_seen, firmware)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8, ?9)
             ON CONFLICT(mac) DO UPDATE SET serial = ?2, uuid = ?3, model = ?4, memory_bytes = ?5, disks = ?6,
                 ip = ?7, last_seen = ?8, firmware = ?9",
            params![h.mac, h.serial, h.uuid, h.model, h.memory_bytes as i64, disks, ip, now, firmware],
        )?;
        Ok(())
    }

    pub fn machine_state(&self, mac: &str) -> Result<Option<MachineState>, DbError> {
        let conn = self.conn();
        conn.query_row(
            "SELECT mac, serial, uuid, model, memory_bytes, disks, ip, first_seen, last_seen, image_digest,
                    installed_at, first_boot_at, firmware FROM machines WHERE mac = ?1",
            [mac],
            machine_row,
        )
        .optional()
        .map_err(Into::into)
    }

    /// Every machine the database knows, keyed by MAC (listings join this with the inventory).
    pub fn machine_states(&self) -> Result<Vec<MachineState>, DbError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT mac, serial, uuid, model, memory_bytes, disks, ip, first_seen, last_seen, image_digest,
                    installed_at, first_boot_at, firmware FROM machines",
        )?;
        let rows = stmt.query_map([], machine_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn record_first_boot(&self, mac: &str) -> Result<(), DbError> {
        self.conn().execute("UPDATE machines SET first_boot_at = ?2 WHERE mac = ?1", params![mac, now_ms()])?;
        Ok(())
    }
}

/// Journals `e` at `at` on `conn` (a connection or a transaction).
fn insert_event(conn: &Connection, e: &NewEvent<'_>, at: i64) -> rusqlite::Result<Event> {
    let data = e.data.as_ref().map(|d| d.to_string());
    conn.execute(
        "INSERT INTO events (at, actor, kind, mac, task_id, message, data) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![at, e.actor, e.kind, e.mac, e.task_id, e.message, data],
    )?;
    Ok(Event {
        id: conn.last_insert_rowid(),
        at,
        actor: e.actor.to_string(),
        kind: e.kind.to_string(),
        mac: e.mac.map(str::to_string),
        task_id: e.task_id,
        message: e.message.to_string(),
        data: e.data.clone(),
    })
}

fn machine_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<MachineState> {
    let disks: Option<String> = r.get(5)?;
    let memory: Option<i64> = r.get(4)?;
    Ok(MachineState {
        mac: r.get(0)?,
        serial: r.get(1)?,
        uuid: r.get(2)?,
        model: r.get(3)?,
        memory_bytes: memory.map(|m| m as u64),
        disks: disks.and_then(|d| serde_json::from_str(&d).ok()).unwrap_or_default(),
        ip: r.get(6)?,
        first_seen: r.get(7)?,
        last_seen: r.get(8)?,
        image_digest: r.get(9)?,
        installed_at: r.get(10)?,
        first_boot_at: r.get(11)?,
        firmware: r.get::<_, Option<String>>(12)?.and_then(|f| serde_json::from_str(&f).ok()),
    })
}

#[derive(Debug, Clone)]
pub struct NewEvent<'a> {
    pub actor: &'a str,
    pub kind: &'a str,
    pub mac: Option<&'a str>,
    pub task_id: Option<i64>,
    pub message: &'a str,
    pub data: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub id: i64,
    pub at: i64,
    pub actor: String,
    pub kind: String,
    pub mac: Option<String>,
    pub task_id: Option<i64>,
    pub message: String,
    pub data: Option<serde_json::Value>,
}

#[derive(Debug, Default)]
pub struct EventQuery {
    pub after: Option<i64>,
    /// Events with an id below this one (paging backwards).
    pub before: Option<i64>,
    /// Events at or after this time, and before `until` (unix ms).
    pub since: Option<i64>,
    pub until: Option<i64>,
    pub mac: Option<String>,
    pub task_id: Option<i64>,
    pub actor: Option<String>,
    pub kind: Option<String>,
    pub limit: i64,
}

/// What an agent says about the machine it runs on.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hardware {
    pub mac: String,
    #[serde(default)]
    pub serial: Option<String>,
    #[serde(default)]
    pub uuid: Option<String>,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub memory_bytes: u64,
    #[serde(default)]
    pub disks: Vec<DiskInfo>,
    #[serde(default)]
    pub firmware: Option<Firmware>,
}

/// How the machine booted the agent: UEFI or BIOS, and UEFI's Secure Boot state (`None`: not
/// known).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Firmware {
    pub uefi: bool,
    #[serde(default)]
    pub secure_boot: Option<bool>,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskInfo {
    pub name: String,
    pub size_bytes: u64,
    #[serde(default)]
    pub bus: Option<String>,
    #[serde(default)]
    pub removable: bool,
    #[serde(default)]
    pub serial: Option<String>,
    #[serde(default)]
    pub wwn: Option<String>,
    #[serde(default)]
    pub model: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MachineState {
    pub mac: String,
    pub serial: Option<String>,
    pub uuid: Option<String>,
    pub model: Option<String>,
    pub memory_bytes: Option<u64>,
    pub disks: Vec<DiskInfo>,
    pub ip: Option<String>,
    pub first_seen: Option<i64>,
    pub last_seen: Option<i64>,
    pub image_digest: Option<String>,
    pub installed_at: Option<i64>,
    pub first_boot_at: Option<i64>,
    pub firmware: Option<Firmware>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrates_once_and_refuses_a_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("parc.db");
        let db = Db::open(&path).unwrap();
        db.event(&NewEvent { actor: "alice", kind: "test", mac: None, task_id: None, message: "hello", data: None })
            .unwrap();
        drop(db);
        let db = Db::open(&path).unwrap();
        assert_eq!(db.events(&EventQuery { limit: 10, ..Default::default() }).unwrap().len(), 1);
        db.conn().execute_batch("PRAGMA user_version = 99").unwrap();
        drop(db);
        let e = Db::open(&path).unwrap_err().to_string();
        assert!(e.contains("newer parc") && e.contains("99"), "{e}");
    }
}

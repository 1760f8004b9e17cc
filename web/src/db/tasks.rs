//! Tasks: what a machine must do next (install, move, replace, reimage, capture) and how far
//! its agent got. A task is `queued` until the agent asks for it, `running` while the agent
//! works, then `done`, `failed` or `cancelled`.

use rusqlite::{params, OptionalExtension, Row};
use serde::{Deserialize, Serialize};

use super::{now_ms, Db, DbError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskKind {
    Install,
    Move,
    Replace,
    Reimage,
    Capture,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    Queued,
    Running,
    Done,
    Failed,
    Cancelled,
}

macro_rules! text_enum {
    ($t:ty { $($v:ident = $s:literal),* }) => {
        impl $t {
            pub fn as_str(self) -> &'static str { match self { $(Self::$v => $s),* } }
            pub fn parse(s: &str) -> Option<Self> { match s { $($s => Some(Self::$v),)* _ => None } }
        }
    };
}
text_enum!(TaskKind { Install = "install", Move = "move", Replace = "replace", Reimage = "reimage", Capture = "capture" });
text_enum!(TaskState { Queued = "queued", Running = "running", Done = "done", Failed = "failed", Cancelled = "cancelled" });

impl Task {
    /// Why this task stands in the way of another one on the same machine.
    pub fn busy_message(&self) -> String {
        format!(
            "machine {} already has task #{} ({}, {}) created by {}; cancel it first",
            self.mac,
            self.id,
            self.kind.as_str(),
            self.state.as_str(),
            self.created_by
        )
    }
}

impl TaskState {
    pub fn is_active(self) -> bool {
        matches!(self, TaskState::Queued | TaskState::Running)
    }
}

impl Task {
    /// When its agent last reported (a task migrated from an older schema: its last update).
    pub fn last_heard(&self) -> i64 {
        self.heard_at.or(self.updated_at).or(self.started_at).unwrap_or(self.created_at)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Task {
    pub id: i64,
    pub kind: TaskKind,
    pub mac: String,
    pub state: TaskState,
    pub department: Option<String>,
    pub image_ref: Option<String>,
    pub image_digest: Option<String>,
    pub hostname: Option<String>,
    pub replaces: Option<String>,
    pub reason: Option<String>,
    pub batch: Option<String>,
    pub commit_id: Option<String>,
    pub created_by: String,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub updated_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub phase: Option<String>,
    pub bytes_done: u64,
    pub bytes_total: u64,
    pub bytes_fetched: u64,
    pub rate_bps: u64,
    pub message: Option<String>,
    /// The last report of the task's agent (hello with its token, progress).
    pub heard_at: Option<i64>,
    /// When the appliance failed the task because its agent fell silent.
    pub lost_at: Option<i64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NewTask {
    pub kind: Option<TaskKind>,
    pub mac: String,
    pub department: Option<String>,
    pub image_ref: Option<String>,
    pub image_digest: Option<String>,
    pub hostname: Option<String>,
    pub replaces: Option<String>,
    pub reason: Option<String>,
    pub batch: Option<String>,
    pub commit_id: Option<String>,
    pub created_by: String,
}

/// A progress report from an agent.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Progress {
    pub phase: String,
    #[serde(default)]
    pub bytes_done: u64,
    #[serde(default)]
    pub bytes_total: u64,
    #[serde(default)]
    pub bytes_fetched: u64,
    #[serde(default)]
    pub rate_bps: u64,
    #[serde(default)]
    pub message: Option<String>,
}

pub(super) const COLUMNS: &str =
    "id, kind, mac, state, department, image_ref, image_digest, hostname, replaces, reason, batch, \
     commit_id, created_by, created_at, started_at, updated_at, finished_at, phase, bytes_done, bytes_total, \
     bytes_fetched, rate_bps, message, heard_at, lost_at";

pub(super) fn task_row(r: &Row<'_>) -> rusqlite::Result<Task> {
    let kind: String = r.get(1)?;
    let state: String = r.get(3)?;
    let bad = |what: &str, v: &str| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, format!("{what} {v:?}").into())
    };
    let n = |i: usize| -> rusqlite::Result<u64> { Ok(r.get::<_, i64>(i)?.max(0) as u64) };
    Ok(Task {
        id: r.get(0)?,
        kind: TaskKind::parse(&kind).ok_or_else(|| bad("task kind", &kind))?,
        mac: r.get(2)?,
        state: TaskState::parse(&state).ok_or_else(|| bad("task state", &state))?,
        department: r.get(4)?,
        image_ref: r.get(5)?,
        image_digest: r.get(6)?,
        hostname: r.get(7)?,
        replaces: r.get(8)?,
        reason: r.get(9)?,
        batch: r.get(10)?,
        commit_id: r.get(11)?,
        created_by: r.get(12)?,
        created_at: r.get(13)?,
        started_at: r.get(14)?,
        updated_at: r.get(15)?,
        finished_at: r.get(16)?,
        phase: r.get(17)?,
        bytes_done: n(18)?,
        bytes_total: n(19)?,
        bytes_fetched: n(20)?,
        rate_bps: n(21)?,
        message: r.get(22)?,
        heard_at: r.get(23)?,
        lost_at: r.get(24)?,
    })
}

#[derive(Debug, Default)]
pub struct TaskQuery {
    pub state: Option<TaskState>,
    pub active: bool,
    pub mac: Option<String>,
    pub batch: Option<String>,
    pub before: Option<i64>,
    pub limit: i64,
}

/// Inserts `t` as queued on `conn` (a connection or a transaction); returns its id.
pub(super) fn insert_task(conn: &rusqlite::Connection, t: &NewTask, now: i64) -> rusqlite::Result<i64> {
    let kind = t.kind.expect("task kind set");
    conn.execute(
        "INSERT INTO tasks (kind, mac, state, department, image_ref, image_digest, hostname, replaces, reason, batch,
                            commit_id, created_by, created_at, phase)
         VALUES (?1, ?2, 'queued', ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, 'waiting for the machine to boot')",
        params![
            kind.as_str(),
            t.mac,
            t.department,
            t.image_ref,
            t.image_digest,
            t.hostname,
            t.replaces,
            t.reason,
            t.batch,
            t.commit_id,
            t.created_by,
            now
        ],
    )?;
    Ok(conn.last_insert_rowid())
}

impl Db {
    /// Queues a task. A machine with a queued or running task gets `Conflict` naming it.
    pub fn create_task(&self, t: &NewTask) -> Result<Task, DbError> {
        let conn = self.conn();
        match insert_task(&conn, t, now_ms()) {
            Ok(id) => {
                drop(conn);
                Ok(self.task(id)?.expect("just inserted"))
            }
            Err(rusqlite::Error::SqliteFailure(e, _)) if e.code == rusqlite::ErrorCode::ConstraintViolation => {
                drop(conn);
                let active = self.active_task(&t.mac)?;
                Err(DbError::Conflict(match active {
                    Some(a) => a.busy_message(),
                    None => format!("machine {} already has an active task", t.mac),
                }))
            }
            Err(e) => Err(e.into()),
        }
    }

    pub fn task(&self, id: i64) -> Result<Option<Task>, DbError> {
        let conn = self.conn();
        Ok(conn.query_row(&format!("SELECT {COLUMNS} FROM tasks WHERE id = ?1"), [id], task_row).optional()?)
    }

    pub fn active_task(&self, mac: &str) -> Result<Option<Task>, DbError> {
        let conn = self.conn();
        Ok(conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM tasks WHERE mac = ?1 AND state IN ('queued', 'running')"),
                [mac],
                task_row,
            )
            .optional()?)
    }

    /// The most recent task of every machine that has one, for listings.
    pub fn latest_tasks(&self) -> Result<Vec<Task>, DbError> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare(&format!("SELECT {COLUMNS} FROM tasks WHERE id IN (SELECT MAX(id) FROM tasks GROUP BY mac)"))?;
        let rows = stmt.query_map([], task_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn tasks(&self, q: &TaskQuery) -> Result<Vec<Task>, DbError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM tasks
             WHERE (?1 IS NULL OR state = ?1) AND (?2 = 0 OR state IN ('queued', 'running'))
               AND (?3 IS NULL OR mac = ?3) AND (?4 IS NULL OR batch = ?4) AND (?5 IS NULL OR id < ?5)
             ORDER BY id DESC LIMIT ?6"
        ))?;
        let rows = stmt.query_map(
            params![q.state.map(TaskState::as_str), q.active, q.mac, q.batch, q.before, q.limit.clamp(1, 10_000)],
            task_row,
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Stores the hash of a fresh agent token for the machine's active task (a new one for
    /// every boot script: the previous boot's token stops working).
    pub fn set_task_token(&self, id: i64, token_hash: &str) -> Result<(), DbError> {
        self.conn().execute("UPDATE tasks SET token_hash = ?2 WHERE id = ?1", params![id, token_hash])?;
        Ok(())
    }

    pub fn task_by_token(&self, token_hash: &str) -> Result<Option<Task>, DbError> {
        let conn = self.conn();
        Ok(conn
            .query_row(&format!("SELECT {COLUMNS} FROM tasks WHERE token_hash = ?1"), [token_hash], task_row)
            .optional()?)
    }

    /// The agent picked the task up.
    pub fn start_task(&self, id: i64, hostname: Option<&str>) -> Result<(), DbError> {
        let now = now_ms();
        self.conn().execute(
            "UPDATE tasks SET state = 'running', started_at = COALESCE(started_at, ?2), updated_at = ?2,
                 heard_at = ?2, phase = 'agent started', hostname = COALESCE(?3, hostname)
             WHERE id = ?1 AND state IN ('queued', 'running')",
            params![id, now, hostname],
        )?;
        Ok(())
    }

    /// Records a progress report; returns false when the task is no longer running.
    pub fn task_progress(&self, id: i64, p: &Progress) -> Result<bool, DbError> {
        let n = self.conn().execute(
            "UPDATE tasks SET phase = ?2, bytes_done = ?3, bytes_total = ?4, bytes_fetched = ?5, rate_bps = ?6,
                 message = ?7, updated_at = ?8, heard_at = ?8, state = 'running',
                 started_at = COALESCE(started_at, ?8)
             WHERE id = ?1 AND state IN ('queued', 'running')",
            params![
                id,
                p.phase,
                p.bytes_done as i64,
                p.bytes_total as i64,
                p.bytes_fetched as i64,
                p.rate_bps as i64,
                p.message,
                now_ms()
            ],
        )?;
        Ok(n == 1)
    }

    /// Ends a task. For a successful deployment the machine's installed image is recorded in
    /// the same transaction.
    pub fn finish_task(
        &self,
        id: i64,
        state: TaskState,
        message: &str,
        installed: Option<&str>,
    ) -> Result<bool, DbError> {
        let now = now_ms();
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let n = tx.execute(
            "UPDATE tasks SET state = ?2, message = ?3, finished_at = ?4, updated_at = ?4,
                 phase = CASE WHEN ?2 = 'done' THEN 'done' ELSE phase END
             WHERE id = ?1 AND state IN ('queued', 'running')",
            params![id, state.as_str(), message, now],
        )?;
        if n == 1 {
            if let Some(digest) = installed {
                tx.execute(
                    "INSERT INTO machines (mac, first_seen, last_seen, image_digest, installed_at)
                     SELECT mac, ?2, ?2, ?3, ?2 FROM tasks WHERE id = ?1
                     ON CONFLICT(mac) DO UPDATE SET image_digest = ?3, installed_at = ?2, first_boot_at = NULL",
                    params![id, now, digest],
                )?;
            }
        }
        tx.commit()?;
        Ok(n == 1)
    }
}

impl Db {
    /// Fails a running task whose agent fell silent, unless the agent was heard from after
    /// `heard_at` (a report that arrived since the decision wins). Returns whether it did.
    pub fn fail_lost_task(&self, id: i64, heard_at: i64, message: &str, now: i64) -> Result<bool, DbError> {
        let n = self.conn().execute(
            "UPDATE tasks SET state = 'failed', message = ?3, finished_at = ?4, updated_at = ?4, lost_at = ?4
             WHERE id = ?1 AND state = 'running' AND COALESCE(heard_at, updated_at, started_at, created_at) = ?2",
            params![id, heard_at, message, now],
        )?;
        Ok(n == 1)
    }

    /// The last task that decided what the machine's disk holds: a deployment that succeeded,
    /// failed, or was cancelled after its agent started (a task cancelled while still queued
    /// never touched the disk). Captures only read the disk and do not count.
    pub fn last_disk_outcome(&self, mac: &str) -> Result<Option<Task>, DbError> {
        let conn = self.conn();
        Ok(conn
            .query_row(
                &format!(
                    "SELECT {COLUMNS} FROM tasks WHERE mac = ?1 AND kind != 'capture'
                       AND (state IN ('done', 'failed') OR (state = 'cancelled' AND started_at IS NOT NULL))
                     ORDER BY id DESC LIMIT 1"
                ),
                [mac],
                task_row,
            )
            .optional()?)
    }
}

impl Db {
    /// Tasks that ended since `since` (unix ms), counted by kind and final state: the
    /// dashboard's "today" figures.
    pub fn finished_counts(&self, since: i64) -> Result<Vec<(TaskKind, TaskState, u64)>, DbError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT kind, state, COUNT(*) FROM tasks WHERE finished_at >= ?1 AND state IN ('done', 'failed', 'cancelled')
             GROUP BY kind, state",
        )?;
        let rows = stmt.query_map([since], |r| {
            let (k, s): (String, String) = (r.get(0)?, r.get(1)?);
            Ok((TaskKind::parse(&k), TaskState::parse(&s), r.get::<_, i64>(2)?.max(0) as u64))
        })?;
        let mut out = Vec::new();
        for row in rows {
            if let (Some(k), Some(s), n) = row? {
                out.push((k, s, n));
            }
        }
        Ok(out)
    }
}

/// One campaign: the tasks a bulk operation queued together.
#[derive(Debug, Clone, Serialize)]
pub struct BatchSummary {
    pub batch: String,
    pub created_by: String,
    pub created_at: i64,
    /// When the last task ended, once none is queued or running.
    pub finished_at: Option<i64>,
    pub total: u64,
    pub queued: u64,
    pub running: u64,
    pub done: u64,
    pub failed: u64,
    pub cancelled: u64,
}

impl Db {
    /// The most recent campaigns, newest first (`only`: that one).
    pub fn batches(&self, only: Option<&str>, limit: i64) -> Result<Vec<BatchSummary>, DbError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT batch, MIN(created_by), MIN(created_at), MAX(finished_at), COUNT(*),
                    SUM(state = 'queued'), SUM(state = 'running'), SUM(state = 'done'), SUM(state = 'failed'),
                    SUM(state = 'cancelled')
             FROM tasks WHERE batch IS NOT NULL AND (?1 IS NULL OR batch = ?1)
             GROUP BY batch ORDER BY MAX(id) DESC LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![only, limit.clamp(1, 1000)], |r| {
            let n = |i: usize| -> rusqlite::Result<u64> { Ok(r.get::<_, i64>(i)?.max(0) as u64) };
            let (queued, running) = (n(5)?, n(6)?);
            Ok(BatchSummary {
                batch: r.get(0)?,
                created_by: r.get(1)?,
                created_at: r.get(2)?,
                finished_at: if queued + running == 0 { r.get(3)? } else { None },
                total: n(4)?,
                queued,
                running,
                done: n(7)?,
                failed: n(8)?,
                cancelled: n(9)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

impl Db {
    /// Every queued or running task (no limit: the store's pins are rebuilt from it).
    pub fn active_tasks(&self) -> Result<Vec<Task>, DbError> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare(&format!("SELECT {COLUMNS} FROM tasks WHERE state IN ('queued', 'running') ORDER BY id"))?;
        let rows = stmt.query_map([], task_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

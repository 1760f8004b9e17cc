//! Inventory operations in flight. An operation that changes `inventory.csv` lives in two
//! stores: the git commit and the task rows (with the journal). A crash between the two would
//! split them, so the planned tasks and journal entries are first written here (`stage`), the
//! commit is made (its message carries `Parc-Intent: <id>`), then everything planned is written
//! in one transaction that also deletes the intent (`apply`). An intent still here at start
//! was interrupted: `parc serve` applies it when its commit is on `main`, and drops it (the
//! inventory did not change) otherwise; `ops::recover` decides which and journals it.

use rusqlite::{params, Connection};
use serde::{Deserialize, Serialize};

use super::tasks::{insert_task, task_row, COLUMNS};
use super::{insert_event, now_ms, Db, DbError, Event, NewEvent, NewTask, Task, TaskState};

/// The git trailer naming an intent in its commit message.
pub const TRAILER: &str = "Parc-Intent";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Intent {
    pub id: String,
    /// Login of the technician.
    pub created_by: String,
    pub created_at: i64,
    /// The profiles commit the operations were planned on.
    pub base_commit: String,
    pub steps: Vec<Step>,
}

/// What one successful operation writes once its inventory change is committed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Step {
    /// Index of the operation in its request.
    pub op: usize,
    pub mac: String,
    /// The journal entry (`machine.move`, the plan's summary); none when the summary is empty.
    pub event_kind: String,
    pub summary: String,
    /// The journal entry's data; `commit` is added when applied.
    pub data: serde_json::Value,
    pub task: Option<NewTask>,
    /// A machine whose queued or running task becomes void (retired, replaced), and the
    /// message that task ends with.
    pub cancel: Option<(String, String)>,
}

/// What applying one step did.
#[derive(Debug, Clone)]
pub struct Applied {
    pub op: usize,
    /// The queued task; `Err` with the reason when the machine got another active task.
    pub task: Result<Option<Task>, String>,
    pub event: Option<Event>,
}

impl Intent {
    /// The line its commit message ends with.
    pub fn trailer(&self) -> String {
        format!("{TRAILER}: {}", self.id)
    }

    /// Whether `message` is the commit message of this intent.
    pub fn is_committed_as(&self, message: &str) -> bool {
        let want = self.trailer();
        message.lines().any(|l| l.trim() == want)
    }
}

impl Db {
    /// Records an intent before its commit (replacing an earlier plan of the same intent, as
    /// when the commit is replayed because HEAD moved).
    pub fn stage_intent(&self, i: &Intent) -> Result<(), DbError> {
        let plan = serde_json::to_string(&i.steps).expect("serialisable");
        self.conn().execute(
            "INSERT OR REPLACE INTO intents (id, created_by, created_at, base_commit, plan) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![i.id, i.created_by, i.created_at, i.base_commit, plan],
        )?;
        Ok(())
    }

    /// Forgets an intent whose commit was not made.
    pub fn discard_intent(&self, id: &str) -> Result<(), DbError> {
        self.conn().execute("DELETE FROM intents WHERE id = ?1", [id])?;
        Ok(())
    }

    /// Intents not applied yet, oldest first.
    pub fn intents(&self) -> Result<Vec<Intent>, DbError> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare("SELECT id, created_by, created_at, base_commit, plan FROM intents ORDER BY created_at, id")?;
        let rows = stmt.query_map([], |r| {
            let plan: String = r.get(4)?;
            let steps = serde_json::from_str(&plan)
                .map_err(|e| rusqlite::Error::FromSqlConversionFailure(4, rusqlite::types::Type::Text, Box::new(e)))?;
            Ok(Intent { id: r.get(0)?, created_by: r.get(1)?, created_at: r.get(2)?, base_commit: r.get(3)?, steps })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Writes everything `i` planned, after its inventory change was committed as `commit`
    /// (`None`: there was nothing to commit), and deletes the intent, in one transaction:
    /// cancellations, tasks (with the commit), journal entries. A step whose machine got an
    /// active task meanwhile fails alone, without a journal entry (the caller journals the
    /// refusal).
    pub fn apply_intent(&self, i: &Intent, commit: Option<&str>) -> Result<Vec<Applied>, DbError> {
        let now = now_ms();
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let mut out = Vec::new();
        for step in &i.steps {
            if let Some((mac, message)) = &step.cancel {
                tx.execute(
                    "UPDATE tasks SET state = ?2, message = ?3, finished_at = ?4, updated_at = ?4
                     WHERE mac = ?1 AND state IN ('queued', 'running')",
                    params![mac, TaskState::Cancelled.as_str(), message, now],
                )?;
            }
            let task = match &step.task {
                None => Ok(None),
                Some(nt) => {
                    let nt = NewTask { commit_id: commit.map(str::to_string), ..nt.clone() };
                    match insert_task(&tx, &nt, now) {
                        Ok(id) => Ok(Some(select_task(&tx, id)?)),
                        Err(rusqlite::Error::SqliteFailure(e, _))
                            if e.code == rusqlite::ErrorCode::ConstraintViolation =>
                        {
                            Err(active_of(&tx, &nt.mac)?
                                .map(|a| a.busy_message())
                                .unwrap_or_else(|| format!("machine {} already has an active task", nt.mac)))
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
            };
            let event = match &task {
                Ok(t) if !step.summary.is_empty() => {
                    let mut data = step.data.clone();
                    if let Some(d) = data.as_object_mut() {
                        d.insert("commit".into(), commit.into());
                    }
                    let e = NewEvent {
                        actor: &i.created_by,
                        kind: &step.event_kind,
                        mac: Some(&step.mac),
                        task_id: t.as_ref().map(|t| t.id),
                        message: &step.summary,
                        data: Some(data),
                    };
                    Some(insert_event(&tx, &e, now)?)
                }
                _ => None,
            };
            out.push(Applied { op: step.op, task, event });
        }
        tx.execute("DELETE FROM intents WHERE id = ?1", [&i.id])?;
        tx.commit()?;
        Ok(out)
    }
}

fn select_task(conn: &Connection, id: i64) -> rusqlite::Result<Task> {
    conn.query_row(&format!("SELECT {COLUMNS} FROM tasks WHERE id = ?1"), [id], task_row)
}

fn active_of(conn: &Connection, mac: &str) -> rusqlite::Result<Option<Task>> {
    use rusqlite::OptionalExtension as _;
    conn.query_row(
        &format!("SELECT {COLUMNS} FROM tasks WHERE mac = ?1 AND state IN ('queued', 'running')"),
        [mac],
        task_row,
    )
    .optional()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::{EventQuery, TaskKind};

    fn step(op: usize, mac: &str, with_task: bool) -> Step {
        Step {
            op,
            mac: mac.into(),
            event_kind: "machine.install".into(),
            summary: format!("install {mac}"),
            data: serde_json::json!({ "batch": null, "reason": null }),
            task: with_task.then(|| NewTask {
                kind: Some(TaskKind::Install),
                mac: mac.into(),
                created_by: "alice".into(),
                ..Default::default()
            }),
            cancel: None,
        }
    }

    #[test]
    fn staged_then_applied_in_one_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("parc.db")).unwrap();
        let busy = "52:54:00:00:00:02";
        let queued = db
            .create_task(&NewTask {
                kind: Some(TaskKind::Reimage),
                mac: busy.into(),
                created_by: "bob".into(),
                ..Default::default()
            })
            .unwrap();
        let intent = Intent {
            id: "1-abc".into(),
            created_by: "alice".into(),
            created_at: 1,
            base_commit: "c0".into(),
            steps: vec![step(0, "52:54:00:00:00:01", true), step(2, busy, true)],
        };
        db.stage_intent(&intent).unwrap();
        db.stage_intent(&intent).unwrap(); // replayed commit: planned again
        assert_eq!(db.intents().unwrap().len(), 1);
        assert!(intent
            .is_committed_as("install x\n\nBy: Alice (alice, technician) through the parc API\nParc-Intent: 1-abc\n"));
        assert!(!intent.is_committed_as("install x\n\nParc-Intent: 1-abcd\n"));

        let applied = db.apply_intent(&intent, Some("c1")).unwrap();
        assert!(db.intents().unwrap().is_empty(), "applied intents are deleted with the same commit");
        let t = applied[0].task.clone().unwrap().unwrap();
        assert_eq!((applied[0].op, t.commit_id.as_deref(), t.state), (0, Some("c1"), TaskState::Queued));
        let e = applied[0].event.as_ref().unwrap();
        assert_eq!(
            (e.actor.as_str(), e.task_id, e.data.as_ref().unwrap()["commit"].as_str()),
            ("alice", Some(t.id), Some("c1"))
        );
        // The machine that already had a task: refused alone, not journaled as done.
        assert_eq!(applied[1].op, 2);
        assert!(applied[1].task.as_ref().unwrap_err().contains(&format!("task #{}", queued.id)), "{:?}", applied[1]);
        assert!(applied[1].event.is_none());
        assert_eq!(db.events(&EventQuery { limit: 10, ..Default::default() }).unwrap().len(), 1);
    }
}

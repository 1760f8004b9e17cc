//! What the server decides about a task's life by itself.
//!
//! Silent agents: a machine unplugged or switched off in the middle of a deployment never
//! reports again; its task would stay `running` forever and block every new task for the
//! machine. `parc serve` sweeps running tasks periodically: one whose agent has not reported
//! for the configured silence fails, saying since when, and the machine is free. The decision
//! is a pure function of the running tasks and the time; `sweep_lost` applies it.
//!
//! Failed deployments: a machine whose last deployment failed or was cancelled after its
//! agent started has an unbootable or half-written disk; `last_deploy_failed` tells the boot
//! script and the agent's hello so (`parc.mode=failed`, `last_task`).

use std::time::Duration;

use crate::db::{NewEvent, Task, TaskState};
use crate::{AppError, AppState, Live};

/// Who the journal names for what the appliance decides by itself.
pub const SYSTEM: &str = "system";

/// How long an agent may stay silent before its task fails, unless configured.
pub const DEFAULT_SILENCE: Duration = Duration::from_secs(600);

/// A running task to fail: its agent's last report and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lost {
    pub task_id: i64,
    /// The report the decision was made on; a newer one cancels it.
    pub heard_at: i64,
    pub reason: String,
}

/// Which of `tasks` have been silent longer than `silence` at `now` (unix ms). Tasks not
/// running (queued: the machine has not booted yet; ended) are never lost. Silence is counted
/// from `serving_since` at the earliest (when this server started): agents retry while the
/// appliance is down, so its own downtime is not theirs.
pub fn silent_tasks(tasks: &[Task], now: i64, silence: Duration, serving_since: i64) -> Vec<Lost> {
    let limit = i64::try_from(silence.as_millis()).unwrap_or(i64::MAX);
    tasks
        .iter()
        .filter(|t| t.state == TaskState::Running)
        .filter_map(|t| {
            let heard = t.last_heard();
            let quiet = now.saturating_sub(heard.max(serving_since));
            (quiet >= limit).then(|| Lost {
                task_id: t.id,
                heard_at: heard,
                reason: silent_reason(heard, now.saturating_sub(heard)),
            })
        })
        .collect()
}

fn silent_reason(heard: i64, quiet_ms: i64) -> String {
    format!(
        "agent silent since {} (no report for {}); the machine may be off, unplugged or hung: check it, then queue the task again",
        utc(heard),
        span(quiet_ms.max(0) as u64 / 1000)
    )
}

/// How often to sweep for a given silence: often enough that a task fails at most a quarter
/// of the silence late, at most every 30 s, at least every second.
pub fn sweep_interval(silence: Duration) -> Duration {
    (silence / 4).clamp(Duration::from_secs(1), Duration::from_secs(30))
}

/// Fails the tasks `silent_tasks` picks, journals each (`task.lost`, by the system) and tells
/// live views. Returns the tasks failed. Blocking.
pub fn sweep_lost(st: &AppState, now: i64, silence: Duration, serving_since: i64) -> Result<Vec<Task>, AppError> {
    let running =
        st.db.tasks(&crate::db::TaskQuery { state: Some(TaskState::Running), limit: 10_000, ..Default::default() })?;
    let mut failed = Vec::new();
    for lost in silent_tasks(&running, now, silence, serving_since) {
        // A report that arrived since the listing keeps the task alive.
        if !st.db.fail_lost_task(lost.task_id, lost.heard_at, &lost.reason, now)? {
            continue;
        }
        let Some(t) = st.db.task(lost.task_id)? else { continue };
        let host = t.hostname.clone().unwrap_or_else(|| t.mac.clone());
        let msg = format!("task #{} ({}) on {host} failed: {}", t.id, t.kind.as_str(), lost.reason);
        let data =
            serde_json::json!({ "heard_at": lost.heard_at, "silence_secs": silence.as_secs(), "phase": t.phase });
        st.event(&NewEvent {
            actor: SYSTEM,
            kind: "task.lost",
            mac: Some(&t.mac),
            task_id: Some(t.id),
            message: &msg,
            data: Some(data),
        })?;
        tracing::warn!(task = t.id, mac = %t.mac, heard_at = lost.heard_at, "agent silent: task failed");
        let _ = st.live.send(Live::Progress(Box::new(t.clone())));
        failed.push(t);
    }
    Ok(failed)
}

/// Refuses a report from the agent of a task the sweep failed, and journals what it sent
/// (`agent.late`). `Ok` when the task was not failed that way. Blocking.
pub(crate) fn refuse_late(st: &AppState, task_id: i64, what: &str, sent: serde_json::Value) -> Result<(), AppError> {
    let Some(t) = st.db.task(task_id)? else { return Ok(()) };
    let Some(lost_at) = t.lost_at else { return Ok(()) };
    let host = t.hostname.clone().unwrap_or_else(|| t.mac.clone());
    let msg = format!(
        "late {what} from the agent of task #{} ({}) on {host} refused: the task was failed at {} because its agent was silent",
        t.id,
        t.kind.as_str(),
        utc(lost_at)
    );
    st.event(&NewEvent {
        actor: "agent",
        kind: "agent.late",
        mac: Some(&t.mac),
        task_id: Some(t.id),
        message: &msg,
        data: Some(serde_json::json!({ "report": what, "sent": sent })),
    })?;
    Err(AppError::Conflict(format!(
        "task #{} was failed at {} ({}); this {what} is refused. Boot the machine from the network again to get its current task",
        t.id,
        utc(lost_at),
        t.message.as_deref().unwrap_or("agent silent")
    )))
}

/// The machine's last deployment when it failed or was cancelled after its agent started
/// (none succeeded since): its disk is unbootable or half written, so the boot script sends
/// the machine to the agent, which shows this task, never to its disk. Blocking.
pub fn last_deploy_failed(st: &AppState, mac: &str) -> Result<Option<Task>, AppError> {
    Ok(st.db.last_disk_outcome(mac)?.filter(|t| matches!(t.state, TaskState::Failed | TaskState::Cancelled)))
}

/// `2026-11-28 21:54:07 UTC`.
pub fn utc(ms: i64) -> String {
    let (y, m, d) = crate::ops::civil_from_days(ms.div_euclid(86_400_000));
    let secs = ms.div_euclid(1000).rem_euclid(86_400);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC", secs / 3600, secs % 3600 / 60, secs % 60)
}

/// `45 s`, `10 min`, `2 h 05 min`.
fn span(secs: u64) -> String {
    match (secs / 3600, secs % 3600 / 60) {
        (0, 0) => format!("{secs} s"),
        (0, m) => format!("{m} min"),
        (h, m) => format!("{h} h {m:02} min"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::TaskKind;

    fn task(id: i64, state: TaskState, heard_at: Option<i64>, updated_at: Option<i64>) -> Task {
        Task {
            id,
            kind: TaskKind::Install,
            mac: format!("52:54:00:00:00:{id:02x}"),
            state,
            department: None,
            image_ref: None,
            image_digest: None,
            hostname: None,
            replaces: None,
            reason: None,
            batch: None,
            commit_id: None,
            created_by: "alice".into(),
            created_at: 1_000,
            started_at: Some(2_000),
            updated_at,
            finished_at: None,
            phase: None,
            bytes_done: 0,
            bytes_total: 0,
            bytes_fetched: 0,
            rate_bps: 0,
            message: None,
            heard_at,
            lost_at: None,
        }
    }

    /// 2026-01-01 00:00:00 UTC.
    const T0: i64 = 1_767_225_600_000;
    const MIN: i64 = 60_000;

    #[test]
    fn which_tasks_are_lost() {
        let silence = Duration::from_secs(600);
        let cases: [(&str, Task, i64, bool); 6] = [
            ("heard just now", task(1, TaskState::Running, Some(T0), None), T0, false),
            ("silent one ms short", task(2, TaskState::Running, Some(T0), None), T0 + 10 * MIN - 1, false),
            ("silent exactly the limit", task(3, TaskState::Running, Some(T0), None), T0 + 10 * MIN, true),
            ("queued: the machine has not booted", task(4, TaskState::Queued, None, None), T0 + 600 * MIN, false),
            ("ended", task(5, TaskState::Failed, Some(T0), None), T0 + 600 * MIN, false),
            ("older schema: last update counts", task(6, TaskState::Running, None, Some(T0)), T0 + 11 * MIN, true),
        ];
        for (name, t, now, lost) in cases {
            let got = silent_tasks(std::slice::from_ref(&t), now, silence, 0);
            assert_eq!(got.len() == 1, lost, "{name}: {got:?}");
            if lost {
                assert_eq!(got[0].heard_at, T0, "{name}");
            }
        }
    }

    #[test]
    fn the_appliance_downtime_is_not_the_agents_silence() {
        let t = task(8, TaskState::Running, Some(T0), None);
        let restarted = T0 + 60 * MIN;
        assert!(silent_tasks(std::slice::from_ref(&t), restarted, DEFAULT_SILENCE, restarted).is_empty());
        assert!(silent_tasks(std::slice::from_ref(&t), restarted + 10 * MIN - 1, DEFAULT_SILENCE, restarted).is_empty());
        let lost = silent_tasks(std::slice::from_ref(&t), restarted + 10 * MIN, DEFAULT_SILENCE, restarted);
        assert!(lost[0].reason.contains("since 2026-01-01 00:00:00 UTC (no report for 1 h 10 min)"), "{lost:?}");
    }

    #[test]
    fn the_reason_says_since_when_and_what_to_do() {
        let lost = silent_tasks(
            &[task(7, TaskState::Running, Some(T0 + 5_000), None)],
            T0 + 5_000 + 12 * MIN,
            DEFAULT_SILENCE,
            0,
        );
        assert_eq!(
            lost[0].reason,
            "agent silent since 2026-01-01 00:00:05 UTC (no report for 12 min); the machine may be off, unplugged or hung: check it, then queue the task again"
        );
        assert_eq!(span(45), "45 s");
        assert_eq!(span(7_500), "2 h 05 min");
    }

    #[test]
    fn sweep_intervals() {
        assert_eq!(sweep_interval(DEFAULT_SILENCE), Duration::from_secs(30));
        assert_eq!(sweep_interval(Duration::from_secs(60)), Duration::from_secs(15));
        assert_eq!(sweep_interval(Duration::from_secs(2)), Duration::from_secs(1));
    }
}

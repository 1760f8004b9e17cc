//! A task's life on the server, against a real `parc serve` on loopback: agents that fall
//! silent, what a machine boots after a failed or cancelled deployment, and inventory commits
//! and task rows that a crash cannot split.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::api::{appliance_with, Api, Appliance};
use crate::support::*;

/// The agent files, so boot scripts send machines to the agent.
fn install_netboot(a: &Appliance) {
    std::fs::write(a.data.join("netboot/vmlinuz"), b"kernel").unwrap();
    std::fs::write(a.data.join("netboot/initrd"), b"initrd").unwrap();
}

fn boot_script(url: &str, mac: &str) -> String {
    sh(&format!("curl -sS '{url}/boot.ipxe?mac={mac}'"))
}

/// The task token a boot script carries.
fn token_of(script: &str) -> String {
    script
        .split("parc.token=")
        .nth(1)
        .unwrap_or_else(|| panic!("no task token in the boot script:\n{script}"))
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// Adds `mac` to radiologie with an install; the agent boots, says hello with its token and
/// reports once. Returns the task id and the agent's client.
fn running_task(a: &Appliance, mac: &str) -> (i64, Api) {
    let (s, r) = a.admin.post("/api/v1/machines", json!({ "mac": mac, "department": "radiologie", "install": true }));
    assert_eq!(s, 201, "{r}");
    let id = r["task"]["id"].as_i64().unwrap();
    let agent = Api::new(&a.srv.url, Some(&token_of(&boot_script(&a.srv.url, mac))));
    let (s, h) = agent.post("/api/v1/agent/hello", json!({ "mac": mac, "serial": "CZC0001" }));
    assert_eq!((s, h["task"]["id"].as_i64()), (200, Some(id)), "{h}");
    let (s, p) = agent
        .post("/api/v1/agent/progress", json!({ "phase": "write", "bytes_done": 1 << 20, "bytes_total": 6 << 20 }));
    assert_eq!((s, p["continue"].clone()), (200, json!(true)), "{p}");
    (id, agent)
}

fn events(a: &Appliance, query: &str) -> Vec<Value> {
    let (s, e) = a.admin.get(&format!("/api/v1/events?{query}"));
    assert_eq!(s, 200, "{e}");
    e.as_array().unwrap().clone()
}

/// A task whose agent stops reporting fails after the configured silence, saying since when;
/// the machine takes a new task; the silent agent's late reports are refused and journaled.
#[test]
fn a_silent_agent_fails_its_task_and_late_reports_are_refused() {
    let a = appliance_with(&format!("127.0.0.1:{}", free_port()), &["--agent-silence", "2"]);
    install_netboot(&a);
    let mac = "52:54:00:d0:00:01";
    let (id, agent) = running_task(&a, mac);
    // An agent that keeps reporting is never lost.
    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(800));
        let (s, p) = agent
            .post("/api/v1/agent/progress", json!({ "phase": "write", "bytes_done": 2 << 20, "bytes_total": 6 << 20 }));
        assert_eq!((s, p["continue"].clone()), (200, json!(true)), "a reporting agent was cut off: {p}");
    }
    // Now it falls silent (machine unplugged).
    let started = Instant::now();
    let task = loop {
        let (_, t) = a.admin.get(&format!("/api/v1/tasks/{id}"));
        if t["state"] != "running" || started.elapsed() > Duration::from_secs(20) {
            break t;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    assert_eq!(task["state"], "failed", "task still {} {:?} after 20 s of silence", task["state"], started.elapsed());
    let reason = task["message"].as_str().unwrap();
    assert!(reason.starts_with("agent silent since ") && reason.contains(" UTC (no report for "), "{reason}");
    assert!(task["lost_at"].is_i64(), "{task}");
    let lost = events(&a, &format!("task={id}&kind=task.lost"));
    assert_eq!(lost.len(), 1, "{lost:?}");
    assert_eq!(lost[0]["actor"], "system");
    assert!(lost[0]["message"].as_str().unwrap().contains(reason), "{}", lost[0]);
    let (_, m) = a.admin.get(&format!("/api/v1/machines/{mac}"));
    assert_eq!(m["status"], "failed", "{m}");

    // The machine is free: a technician queues a new task.
    let (s, r) =
        a.admin.post(&format!("/api/v1/machines/{mac}/reimage"), json!({ "reason": "after an unplugged install" }));
    assert_eq!(s, 200, "{r}");
    let new_id = r["task"]["id"].as_i64().unwrap();
    assert_ne!(new_id, id);

    // The silent agent comes back: everything it sends is refused (409, final for the agent)
    // and journaled with what it sent; the new task is untouched.
    let (s, e) = agent
        .post("/api/v1/agent/progress", json!({ "phase": "write", "bytes_done": 5 << 20, "bytes_total": 6 << 20 }));
    assert_eq!(s, 409, "{e}");
    assert!(e["error"].as_str().unwrap_or_default().contains(&format!("task #{id} was failed")), "{e}");
    let (s, e) = agent.post("/api/v1/agent/done", json!({ "verified": true, "image_digest": a.image_digest }));
    assert_eq!(s, 409, "{e}");
    let (s, e) = agent.post("/api/v1/agent/failed", json!({ "reason": "disk vanished" }));
    assert_eq!(s, 409, "{e}");
    let (s, e) = agent.post("/api/v1/agent/hello", json!({ "mac": mac }));
    assert_eq!(s, 409, "{e}");
    let late = events(&a, &format!("task={id}&kind=agent.late"));
    assert_eq!(late.len(), 4, "{late:?}");
    let reports: Vec<&str> = late.iter().map(|e| e["data"]["report"].as_str().unwrap()).collect();
    assert_eq!(reports, ["hello", "failure report", "success report", "progress report"]);
    assert_eq!(late[3]["data"]["sent"]["bytes_done"], 5 << 20, "{}", late[3]);
    assert_eq!(late[2]["data"]["sent"]["image_digest"], a.image_digest.as_str(), "{}", late[2]);
    let (_, t) = a.admin.get(&format!("/api/v1/tasks/{id}"));
    assert_eq!((t["state"].as_str(), t["message"].as_str()), (Some("failed"), Some(reason)), "{t}");
    let (_, t) = a.admin.get(&format!("/api/v1/tasks/{new_id}"));
    assert_eq!(t["state"], "queued", "{t}");
}

//! A task's life on the server, against a real `parc serve` on loopback: agents that fall
//! silent, what a machine boots after a failed or cancelled deployment, and inventory commits
//! and task rows that a crash cannot split.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::api::{agent_hello, appliance_with, boot_script, grant, install_netboot, Api, Appliance};
use crate::support::*;

/// Adds `mac` to radiologie with an install; the agent boots, says hello with its token and
/// reports once. Returns the task id and the agent's client.
fn running_task(a: &Appliance, mac: &str) -> (i64, Api) {
    let (s, r) = a.admin.post("/api/v1/machines", json!({ "mac": mac, "department": "radiologie", "install": true }));
    assert_eq!(s, 201, "{r}");
    let id = r["task"]["id"].as_i64().unwrap();
    let (agent, h) = agent_hello(&a.admin, mac, json!({ "mac": mac, "serial": "CZC0001" }));
    assert_eq!(h["task"]["id"].as_i64(), Some(id), "{h}");
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
    let addr = format!("127.0.0.1:{}", free_port());
    let mut a = appliance_with(&addr, &["--agent-silence", "2"]);
    install_netboot(&a);
    let mac = "52:54:00:d0:00:01";
    let (id, agent) = running_task(&a, mac);
    // The appliance down for longer than the silence: its downtime is not the agent's.
    sh(&format!("kill -KILL {}", a.srv.child.id()));
    a.srv.child.wait().unwrap();
    std::thread::sleep(Duration::from_secs(3));
    a.srv = start_with(&a.data, &addr, &["--agent-silence", "2"]);
    let (s, p) = agent
        .post("/api/v1/agent/progress", json!({ "phase": "write", "bytes_done": 2 << 20, "bytes_total": 6 << 20 }));
    assert_eq!((s, p["continue"].clone()), (200, json!(true)), "the task was failed for the server's downtime: {p}");
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

/// After a failed or cancelled deployment the disk is unbootable or half written: the machine
/// network-boots the agent in `failed` mode and its hello says which task ended how,
/// until a new task succeeds. A task cancelled before any agent started never touched the disk.
#[test]
fn a_machine_whose_deployment_failed_or_was_cancelled_boots_the_agent_never_its_disk() {
    let a = appliance_with(&format!("127.0.0.1:{}", free_port()), &[]);
    install_netboot(&a);
    let hello = |mac: &str| {
        let (_, h) = agent_hello(&a.admin, mac, json!({ "mac": mac, "model": "HP EliteDesk 800 G6" }));
        assert_eq!(h["task"], Value::Null, "{h}");
        h
    };
    let failed_mode = |mac: &str| {
        grant(&a.admin, mac);
        let script = boot_script(&a.srv.url, mac);
        assert!(script.contains("parc.mode=failed") && script.contains("parc.token=pb_"), "{mac}: {script}");
        assert!(!script.contains("local disk"), "{script}");
    };

    // A deployment the agent reports failed.
    let mac = "52:54:00:d1:00:01";
    let (id, agent) = running_task(&a, mac);
    let reason = "disk /dev/nvme0n1: write error at offset 1048576 (Input/output error)";
    assert_eq!(agent.post("/api/v1/agent/failed", json!({ "reason": reason })).0, 200);
    failed_mode(mac);
    failed_mode(mac); // idempotent: firmware asks more than once
    let h = hello(mac);
    let last = &h["last_task"];
    assert_eq!(
        (last["id"].as_i64(), last["kind"].as_str(), last["state"].as_str()),
        (Some(id), Some("install"), Some("failed")),
        "{h}"
    );
    assert_eq!(last["reason"], reason);
    assert!(last["finished_at"].as_i64().unwrap() > 0, "{h}");
    let e = events(&a, &format!("machine={mac}&kind=agent.hello"));
    assert_eq!(e[0]["task_id"].as_i64(), Some(id), "{e:?}");
    assert!(
        e[0]["message"].as_str().unwrap().contains(&format!("last task #{id} (install) failed: {reason}")),
        "{e:?}"
    );

    // A new task boots the agent with its token; its success restores the local disk.
    let (s, r) = a.admin.post(&format!("/api/v1/machines/{mac}/reimage"), json!({}));
    assert_eq!(s, 200, "{r}");
    let (agent, h) = agent_hello(&a.admin, mac, json!({ "mac": mac }));
    assert_eq!(h["task"]["kind"], "reimage", "{h}");
    let (s, d) = agent.post("/api/v1/agent/done", json!({ "verified": true, "image_digest": a.image_digest }));
    assert_eq!(s, 200, "{d}");
    let script = boot_script(&a.srv.url, mac);
    assert!(script.contains("booting the local disk"), "{script}");
    // A capture only reads the disk: its failure does not make the disk unbootable.
    let (s, r) = a.admin.post(&format!("/api/v1/machines/{mac}/capture"), json!({ "image": "poste-ref" }));
    assert_eq!(s, 200, "{r}");
    let (agent, _) = agent_hello(&a.admin, mac, json!({ "mac": mac }));
    assert_eq!(agent.post("/api/v1/agent/failed", json!({ "reason": "no space left in the store" })).0, 200);
    assert!(boot_script(&a.srv.url, mac).contains("booting the local disk"));

    // A deployment cancelled by a technician while its agent was writing.
    let mac = "52:54:00:d1:00:02";
    let (id, _agent) = running_task(&a, mac);
    let (s, t) = a.admin.post(&format!("/api/v1/tasks/{id}/cancel"), json!({ "reason": "wrong department" }));
    assert_eq!(s, 200, "{t}");
    failed_mode(mac);
    let last = hello(mac)["last_task"].clone();
    assert_eq!((last["id"].as_i64(), last["state"].as_str()), (Some(id), Some("cancelled")), "{last}");
    assert!(last["reason"].as_str().unwrap().contains("cancelled by admin: wrong department"), "{last}");
    let (_, m) = a.admin.get(&format!("/api/v1/machines/{mac}"));
    assert_eq!(m["status"], "failed", "a disk cancelled mid-write is not installed: {m}");

    // Cancelled while still queued: no agent ever ran, the disk is as it was.
    let mac = "52:54:00:d1:00:03";
    let (s, r) = a.admin.post("/api/v1/machines", json!({ "mac": mac, "department": "radiologie", "install": true }));
    assert_eq!(s, 201, "{r}");
    let id = r["task"]["id"].as_i64().unwrap();
    assert_eq!(a.admin.post(&format!("/api/v1/tasks/{id}/cancel"), json!({})).0, 200);
    assert!(boot_script(&a.srv.url, mac).contains("booting the local disk"));
}

/// One line of `inventory.csv` at HEAD of the appliance's profiles repository.
fn inventory_row(a: &crate::api::Appliance, mac: &str) -> String {
    let inv = sh(&format!("git -C {} show main:inventory.csv", a.data.join("profiles").display()));
    inv.lines().find(|l| l.starts_with(mac)).unwrap_or_else(|| panic!("{mac} not in inventory.csv:\n{inv}")).to_string()
}

fn head(a: &crate::api::Appliance) -> String {
    sh(&format!("git -C {} rev-parse main", a.data.join("profiles").display())).trim().to_string()
}

/// `parc serve` killed (abort, as by a power cut) at each step of an inventory operation: after
/// the restart, the inventory at HEAD and the task rows say the same thing. A move and an
/// install in one batch either both happened (inventory moved, both tasks queued with the
/// commit, journaled by the technician) or neither did (journaled as dropped).
#[test]
fn a_crash_at_any_step_of_an_operation_leaves_inventory_and_tasks_consistent() {
    let addr = format!("127.0.0.1:{}", free_port());
    let mut a = appliance_with(&addr, &[]);
    let points = ["ops.before_commit", "ops.after_commit", "ops.after_apply"];
    let mac = |i: usize, j: usize| format!("52:54:00:e0:0{i}:0{j}");
    for i in 0..points.len() {
        for j in 0..2 {
            let (s, r) = a.admin.post("/api/v1/machines", json!({ "mac": mac(i, j), "department": "radiologie" }));
            assert_eq!(s, 201, "{r}");
        }
    }
    for (i, point) in points.iter().enumerate() {
        let (moved, installed) = (mac(i, 0), mac(i, 1));
        let before = head(&a);
        sh(&format!("kill -TERM {}", a.srv.child.id()));
        assert!(a.srv.child.wait().unwrap().success());
        a.srv = start_env(&a.data, &addr, &[], &[("PARC_FAILPOINTS", point)]);
        let body = json!({ "reason": "crash test", "operations": [
            { "op": "move", "machine": moved, "department": "urgences" },
            { "op": "install", "machine": installed },
        ] });
        // The server dies before answering.
        let out = std::process::Command::new("curl")
            .args([
                "-sS",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-X",
                "POST",
                "-H",
                "Content-Type: application/json",
            ])
            .args(["-H", &format!("Authorization: Bearer {}", a.admin.token.as_deref().unwrap())])
            .args(["--data", &body.to_string(), &format!("{}/api/v1/batch", a.srv.url)])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "000", "{point}: the server answered");
        let status = a.srv.child.wait().unwrap();
        assert!(!status.success(), "{point}: parc serve exited with {status}");
        a.srv = start(&a.data, &addr);

        let row = inventory_row(&a, &moved);
        let (_, m) = a.admin.get(&format!("/api/v1/machines/{moved}"));
        let (_, m2) = a.admin.get(&format!("/api/v1/machines/{installed}"));
        let tasks: Vec<&Value> = m["tasks"].as_array().unwrap().iter().chain(m2["tasks"].as_array().unwrap()).collect();
        let committed = row.contains(",urgences,");
        assert_eq!(m["department"], if committed { "urgences" } else { "radiologie" }, "{point}: {m}");
        if *point == "ops.before_commit" {
            assert!(!committed && head(&a) == before, "{point}: the commit was made: {row}");
            assert!(tasks.is_empty(), "{point}: tasks without their inventory change: {tasks:?}");
            for who in [&moved, &installed] {
                let dropped = events(&a, &format!("machine={who}&kind=ops.dropped"));
                assert_eq!(dropped.len(), 1, "{dropped:?}");
                let msg = dropped[0]["message"].as_str().unwrap();
                assert!(msg.contains("by admin") && msg.contains(who.as_str()) && msg.contains("do it again"), "{msg}");
            }
        } else {
            assert!(committed, "{point}: {row}");
            let commit = head(&a);
            assert_ne!(commit, before);
            assert_eq!(tasks.len(), 2, "{point}: {tasks:?}");
            for t in &tasks {
                assert_eq!(
                    (t["state"].as_str(), t["commit_id"].as_str()),
                    (Some("queued"), Some(commit.as_str())),
                    "{point}: {t}"
                );
            }
            assert_eq!(tasks[0]["kind"], "move");
            assert_eq!(tasks[1]["kind"], "install");
            for (who, kind) in [(&moved, "machine.move"), (&installed, "machine.install")] {
                let e = events(&a, &format!("machine={who}&kind={kind}"));
                assert_eq!(e.len(), 1, "{point}: {kind} journaled {} times: {e:?}", e.len());
                assert_eq!(
                    (e[0]["actor"].as_str(), e[0]["data"]["commit"].as_str()),
                    (Some("admin"), Some(commit.as_str()))
                );
                // A recovery says so in the machine's journal.
                let recovered = events(&a, &format!("machine={who}&kind=ops.recovered"));
                assert_eq!(recovered.len(), usize::from(*point == "ops.after_commit"), "{point}: {recovered:?}");
            }
        }
        // Either way the machines take new operations normally.
        let (s, r) = a.admin.post(&format!("/api/v1/machines/{installed}/reimage"), json!({}));
        assert_eq!(s, if committed { 409 } else { 200 }, "{point}: {r}");
    }
}

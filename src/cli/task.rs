//! `parc task ls|watch`: what machines are doing, live.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::{Args, Subcommand};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use parc_imager::error::human;
use serde_json::Value;

use super::client::{enc, print_json, with_query, Client, ServerArgs};

#[derive(Debug, Subcommand)]
pub enum TaskCmd {
    /// List tasks, newest first.
    Ls(LsArgs),
    /// Follow tasks until they end: a progress bar per machine; exit 0 if all succeeded.
    Watch(WatchArgs),
}

impl TaskCmd {
    pub fn json(&self) -> bool {
        match self {
            TaskCmd::Ls(a) => a.server.json,
            TaskCmd::Watch(a) => a.server.json,
        }
    }
}

#[derive(Debug, Args)]
pub struct LsArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Queued and running only.
    #[arg(long)]
    active: bool,
    /// queued, running, done, failed, cancelled.
    #[arg(long)]
    state: Option<String>,
    /// MAC or hostname.
    #[arg(long)]
    machine: Option<String>,
    #[arg(long, default_value_t = 50)]
    limit: usize,
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Task numbers; default: every task active now.
    ids: Vec<i64>,
    /// Every task of this batch.
    #[arg(long)]
    batch: Option<String>,
    /// Give up after this many seconds (exit 4).
    #[arg(long)]
    timeout: Option<u64>,
}

pub fn run(cmd: TaskCmd) -> Result<ExitCode> {
    match cmd {
        TaskCmd::Ls(a) => ls(a),
        TaskCmd::Watch(a) => watch(a),
    }
}

fn ls(a: LsArgs) -> Result<ExitCode> {
    let c = Client::new(&a.server)?;
    let limit = a.limit.to_string();
    let q = with_query(
        "/tasks",
        &[
            ("limit", Some(&limit)),
            ("active", a.active.then_some("true")),
            ("state", a.state.as_deref()),
            ("machine", a.machine.as_deref()),
        ],
    );
    let r = c.get(&q)?;
    if print_json(&a.server, &r) {
        return Ok(ExitCode::SUCCESS);
    }
    println!("{:<7} {:<8} {:<16} {:<10} {:<28} BY", "TASK", "KIND", "MACHINE", "STATE", "PHASE");
    for t in r.as_array().map(Vec::as_slice).unwrap_or_default() {
        println!(
            "#{:<6} {:<8} {:<16} {:<10} {:<28} {}",
            t["id"],
            s(t, "kind"),
            t["hostname"].as_str().unwrap_or(s(t, "mac")),
            s(t, "state"),
            s(t, "phase").chars().take(28).collect::<String>(),
            s(t, "created_by")
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str().unwrap_or("")
}

fn finished(t: &Value) -> bool {
    matches!(s(t, "state"), "done" | "failed" | "cancelled")
}

fn label(t: &Value) -> String {
    format!("#{} {}", t["id"], t["hostname"].as_str().unwrap_or(s(t, "mac")))
}

fn watch(a: WatchArgs) -> Result<ExitCode> {
    let c = Client::new(&a.server)?;
    let mut ids: Vec<i64> = a.ids.clone();
    if ids.is_empty() {
        let q = match &a.batch {
            Some(b) => format!("/tasks?batch={}&limit=10000", enc(b)),
            None => "/tasks?active=true&limit=10000".to_string(),
        };
        ids = c
            .get(&q)?
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .filter_map(|t| t["id"].as_i64())
            .collect();
    }
    if ids.is_empty() {
        if !a.server.json {
            eprintln!("no task to watch");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let tty = std::io::stderr().is_terminal() && !a.server.json;
    let multi = MultiProgress::new();
    let style = ProgressStyle::with_template(
        "{prefix:<24} {msg:<30} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
    )
    .expect("valid template")
    .progress_chars("=> ");
    let mut bars: BTreeMap<i64, ProgressBar> = BTreeMap::new();
    let mut last: BTreeMap<i64, Value> = BTreeMap::new();
    let started = Instant::now();
    let mut last_print = Instant::now() - Duration::from_secs(10);
    loop {
        for id in &ids {
            if last.get(id).is_some_and(finished) {
                continue;
            }
            let t = c.get(&format!("/tasks/{id}"))?;
            if tty {
                let bar = bars.entry(*id).or_insert_with(|| {
                    let b = multi.add(ProgressBar::new(0));
                    b.set_style(style.clone());
                    b.set_prefix(label(&t));
                    b
                });
                bar.set_length(t["bytes_total"].as_u64().unwrap_or(0));
                bar.set_position(t["bytes_done"].as_u64().unwrap_or(0));
                bar.set_message(format!("{} {}", s(&t, "state"), s(&t, "phase")));
                if finished(&t) {
                    bar.finish_with_message(format!("{}: {}", s(&t, "state"), s(&t, "message")));
                }
            } else if !a.server.json && (finished(&t) || last_print.elapsed() >= Duration::from_secs(2)) {
                let changed = last.get(id).is_none_or(|p| {
                    p["phase"] != t["phase"] || p["state"] != t["state"] || p["bytes_done"] != t["bytes_done"]
                });
                if changed {
                    eprintln!(
                        "{} {} {} {}/{} {}/s {}",
                        label(&t),
                        s(&t, "state"),
                        s(&t, "phase"),
                        human(t["bytes_done"].as_u64().unwrap_or(0)),
                        human(t["bytes_total"].as_u64().unwrap_or(0)),
                        human(t["rate_bps"].as_u64().unwrap_or(0)),
                        if finished(&t) { s(&t, "message") } else { "" }
                    );
                }
            }
            last.insert(*id, t);
        }
        if !tty {
            last_print = Instant::now();
        }
        if ids.iter().all(|id| last.get(id).is_some_and(finished)) {
            break;
        }
        if a.timeout.is_some_and(|t| started.elapsed() >= Duration::from_secs(t)) {
            if a.server.json {
                println!(
                    "{}",
                    serde_json::json!({ "ok": false, "error": "timeout", "tasks": last.values().collect::<Vec<_>>() })
                );
            } else {
                eprintln!("gave up waiting after {} s", started.elapsed().as_secs());
            }
            return Ok(ExitCode::from(4));
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let failed: Vec<&Value> = last.values().filter(|t| s(t, "state") != "done").collect();
    if a.server.json {
        println!("{}", serde_json::json!({ "ok": failed.is_empty(), "tasks": last.values().collect::<Vec<_>>() }));
    } else {
        for t in &failed {
            eprintln!("{} {}: {}", label(t), s(t, "state"), s(t, "message"));
        }
        eprintln!("{} done, {} not", last.len() - failed.len(), failed.len());
    }
    Ok(if failed.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(3) })
}

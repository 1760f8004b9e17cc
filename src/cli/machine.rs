//! `parc machine …`: the scripted interface to the inventory. Install, move and replace take
//! one machine or `--from-csv FILE` for many: one request, one git commit, one line of result
//! per machine.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, Context, Result};
use clap::{Args, Subcommand};
use parc_web::bulk::BulkOp;
use serde_json::{json, Value};

use super::client::{enc, print_json, with_query, Client, ServerArgs};

#[derive(Debug, Subcommand)]
pub enum MachineCmd {
    /// List machines (inventory and discovered), filtered.
    Ls(LsArgs),
    /// One machine: inventory, hardware, tasks, journal, git history.
    Show(ShowArgs),
    /// Add a machine to the inventory.
    Add(AddArgs),
    /// Deploy a machine's department profile (queues a task; the machine installs at its next network boot).
    Install(InstallArgs),
    /// Move a machine to another department: new hostname, reimaged with the new profile.
    Move(MoveArgs),
    /// Replace a broken machine by a new one: hostname, department and location move to the
    /// new MAC, the old machine is retired, the new one is queued for install.
    Replace(ReplaceArgs),
    /// Redeploy the machine's current department profile.
    Reimage(OneArgs),
    /// Retire a machine (kept in the inventory and its history, marked retired).
    Retire(OneArgs),
    /// Edit inventory fields.
    Edit(EditArgs),
    /// Power a machine on over the network (Wake-on-LAN from the appliance; journaled).
    Wake(OneArgs),
    /// Allow a machine (or any MAC) a boot credential from one address for a few minutes, where
    /// the appliance sees neither its DHCP nor its TFTP (the site's DHCP points at the boot URL).
    NetbootGrant(GrantArgs),
    /// A machine's secrets (admins): set from a file or standard input, never from the command
    /// line (it would show in `ps` and the shell's history); listed by name only. A profile
    /// file receives one where it says @@parc-secret:NAME@@, only when served to the machine's
    /// running task.
    #[command(subcommand)]
    Secret(SecretCmd),
}

#[derive(Debug, clap::Subcommand)]
pub enum SecretCmd {
    /// Set or replace a secret.
    Set(SecretSetArgs),
    /// The machine's secrets by name, who set them, when.
    Ls(OneArgs),
    /// Remove a secret.
    Rm(SecretRmArgs),
}

#[derive(Debug, Args)]
pub struct SecretSetArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Hostname or MAC.
    machine: String,
    /// a-z, 0-9, _ and -.
    name: String,
    /// Read the value from this file (else from standard input); one trailing newline is dropped.
    #[arg(long)]
    file: Option<std::path::PathBuf>,
    #[command(flatten)]
    why: Why,
}

#[derive(Debug, Args)]
pub struct SecretRmArgs {
    #[command(flatten)]
    server: ServerArgs,
    machine: String,
    name: String,
    #[command(flatten)]
    why: Why,
}

#[derive(Debug, Args)]
pub struct GrantArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Hostname or MAC (a MAC not in the inventory: an unknown PC that will register).
    machine: String,
    /// The IPv4 address the machine will boot from.
    #[arg(long = "from")]
    address: String,
    /// 1 to 120.
    #[arg(long, default_value_t = 15)]
    minutes: u64,
    #[command(flatten)]
    why: Why,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Search MAC, hostname, serial, asset tag, location, model.
    #[arg(long, short = 's')]
    search: Option<String>,
    #[arg(long)]
    department: Option<String>,
    /// new, discovered, queued, installing, installed, ready, failed, retired.
    #[arg(long)]
    status: Option<String>,
    #[arg(long, default_value_t = 100)]
    limit: usize,
    #[arg(long, default_value_t = 0)]
    offset: usize,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// MAC address or hostname.
    machine: String,
}

#[derive(Debug, Args)]
pub struct Why {
    /// Why: goes into the git commit and the journal.
    #[arg(long, short = 'm')]
    reason: Option<String>,
}

#[derive(Debug, Args)]
pub struct AddArgs {
    #[command(flatten)]
    server: ServerArgs,
    mac: String,
    #[arg(long, short = 'd')]
    department: String,
    /// Default: from the department's hostname pattern.
    #[arg(long)]
    hostname: Option<String>,
    #[arg(long)]
    serial: Option<String>,
    #[arg(long)]
    asset_tag: Option<String>,
    #[arg(long)]
    location: Option<String>,
    #[arg(long)]
    notes: Option<String>,
    /// Queue an install right away.
    #[arg(long)]
    install: bool,
    #[command(flatten)]
    why: Why,
}

#[derive(Debug, Args)]
pub struct InstallArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// MAC or hostname (omit with --from-csv).
    #[arg(required_unless_present = "from_csv")]
    machine: Option<String>,
    /// Department, to add a machine that is not in the inventory yet.
    #[arg(long, short = 'd')]
    department: Option<String>,
    /// CSV with a header: machine[,department].
    #[arg(long, conflicts_with_all = ["machine", "department"])]
    from_csv: Option<PathBuf>,
    #[command(flatten)]
    why: Why,
}

#[derive(Debug, Args)]
pub struct MoveArgs {
    #[command(flatten)]
    server: ServerArgs,
    #[arg(required_unless_present = "from_csv")]
    machine: Option<String>,
    /// The new department.
    #[arg(long, required_unless_present = "from_csv")]
    to: Option<String>,
    /// CSV with a header: machine,department.
    #[arg(long, conflicts_with_all = ["machine", "to"])]
    from_csv: Option<PathBuf>,
    #[command(flatten)]
    why: Why,
}

#[derive(Debug, Args)]
pub struct ReplaceArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// The machine being replaced (MAC or hostname).
    #[arg(required_unless_present = "from_csv")]
    machine: Option<String>,
    /// MAC address of the new machine.
    #[arg(long, required_unless_present = "from_csv")]
    with: Option<String>,
    /// Asset tag of the new machine.
    #[arg(long)]
    asset_tag: Option<String>,
    /// CSV with a header: machine,with[,asset_tag].
    #[arg(long, conflicts_with_all = ["machine", "with", "asset_tag"])]
    from_csv: Option<PathBuf>,
    #[command(flatten)]
    why: Why,
}

#[derive(Debug, Args)]
pub struct OneArgs {
    #[command(flatten)]
    server: ServerArgs,
    machine: String,
    #[command(flatten)]
    why: Why,
}

#[derive(Debug, Args)]
pub struct EditArgs {
    #[command(flatten)]
    server: ServerArgs,
    machine: String,
    #[arg(long)]
    hostname: Option<String>,
    #[arg(long)]
    serial: Option<String>,
    #[arg(long)]
    asset_tag: Option<String>,
    #[arg(long)]
    location: Option<String>,
    #[arg(long)]
    notes: Option<String>,
    /// Refuse if the machine changed since this etag (from `parc machine show`).
    #[arg(long)]
    if_match: Option<String>,
    #[command(flatten)]
    why: Why,
}

impl MachineCmd {
    pub fn json(&self) -> bool {
        match self {
            MachineCmd::Ls(a) => a.server.json,
            MachineCmd::Show(a) => a.server.json,
            MachineCmd::Add(a) => a.server.json,
            MachineCmd::Install(a) => a.server.json,
            MachineCmd::Move(a) => a.server.json,
            MachineCmd::Replace(a) => a.server.json,
            MachineCmd::Reimage(a) | MachineCmd::Retire(a) | MachineCmd::Wake(a) => a.server.json,
            MachineCmd::Edit(a) => a.server.json,
            MachineCmd::NetbootGrant(a) => a.server.json,
            MachineCmd::Secret(SecretCmd::Set(a)) => a.server.json,
            MachineCmd::Secret(SecretCmd::Ls(a)) => a.server.json,
            MachineCmd::Secret(SecretCmd::Rm(a)) => a.server.json,
        }
    }
}

pub fn run(cmd: MachineCmd) -> Result<ExitCode> {
    match cmd {
        MachineCmd::Ls(a) => ls(a),
        MachineCmd::Show(a) => show(a),
        MachineCmd::Add(a) => {
            let c = Client::new(&a.server)?;
            let body = json!({
                "mac": a.mac, "department": a.department, "hostname": a.hostname, "serial": a.serial,
                "asset_tag": a.asset_tag, "location": a.location, "notes": a.notes, "install": a.install, "reason": a.why.reason,
            });
            let r = c.post("/machines", &strip_nulls(body))?;
            report_one(&a.server, &r)
        }
        MachineCmd::Install(a) => match a.from_csv {
            Some(f) => bulk(&a.server, BulkOp::Install, &f, a.why.reason),
            None => action(
                &a.server,
                a.machine.as_deref().expect("clap"),
                "install",
                json!({ "department": a.department }),
                a.why.reason,
            ),
        },
        MachineCmd::Move(a) => match a.from_csv {
            Some(f) => bulk(&a.server, BulkOp::Move, &f, a.why.reason),
            None => action(
                &a.server,
                a.machine.as_deref().expect("clap"),
                "move",
                json!({ "department": a.to }),
                a.why.reason,
            ),
        },
        MachineCmd::Replace(a) => match a.from_csv {
            Some(f) => bulk(&a.server, BulkOp::Replace, &f, a.why.reason),
            None => action(
                &a.server,
                a.machine.as_deref().expect("clap"),
                "replace",
                json!({ "with": a.with, "asset_tag": a.asset_tag }),
                a.why.reason,
            ),
        },
        MachineCmd::Reimage(a) => action(&a.server, &a.machine, "reimage", json!({}), a.why.reason),
        MachineCmd::Retire(a) => action(&a.server, &a.machine, "retire", json!({}), a.why.reason),
        MachineCmd::Wake(a) => action(&a.server, &a.machine, "wake", json!({}), a.why.reason),
        MachineCmd::NetbootGrant(a) => action(
            &a.server,
            &a.machine,
            "netboot-grant",
            json!({ "address": a.address, "minutes": a.minutes }),
            a.why.reason,
        ),
        MachineCmd::Secret(cmd) => secret(cmd),
        MachineCmd::Edit(a) => {
            let c = Client::new(&a.server)?;
            let body = json!({
                "hostname": a.hostname, "serial": a.serial, "asset_tag": a.asset_tag, "location": a.location,
                "notes": a.notes, "reason": a.why.reason,
            });
            let r =
                c.send("PATCH", &format!("/machines/{}", enc(&a.machine)), &strip_nulls(body), a.if_match.as_deref())?;
            report_one(&a.server, &r)
        }
    }
}

fn secret(cmd: SecretCmd) -> Result<ExitCode> {
    match cmd {
        SecretCmd::Set(a) => {
            let mut value = match &a.file {
                Some(f) => std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?,
                None => {
                    let mut v = String::new();
                    std::io::Read::read_to_string(&mut std::io::stdin(), &mut v).context("reading standard input")?;
                    v
                }
            };
            if value.ends_with('\n') {
                value.pop();
                if value.ends_with('\r') {
                    value.pop();
                }
            }
            let c = Client::new(&a.server)?;
            let body = json!({ "name": a.name, "value": value, "reason": a.why.reason });
            let r = c.post(&format!("/machines/{}/secrets", enc(&a.machine)), &strip_nulls(body))?;
            if !print_json(&a.server, &r) {
                println!("secret {} of {} set ({} bytes)", a.name, a.machine, r["bytes"]);
            }
            Ok(ExitCode::SUCCESS)
        }
        SecretCmd::Ls(a) => {
            let c = Client::new(&a.server)?;
            let r = c.get(&format!("/machines/{}/secrets", enc(&a.machine)))?;
            if !print_json(&a.server, &r) {
                for s in r.as_array().into_iter().flatten() {
                    println!(
                        "{:<24} {:>6} bytes  set by {}",
                        s["name"].as_str().unwrap_or_default(),
                        s["bytes"],
                        s["set_by"].as_str().unwrap_or_default()
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        SecretCmd::Rm(a) => {
            let c = Client::new(&a.server)?;
            let body = strip_nulls(json!({ "reason": a.why.reason }));
            let r = c.post(&format!("/machines/{}/secrets/{}/remove", enc(&a.machine), enc(&a.name)), &body)?;
            if !print_json(&a.server, &r) {
                println!("secret {} of {} removed", a.name, a.machine);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn strip_nulls(mut v: Value) -> Value {
    if let Value::Object(m) = &mut v {
        m.retain(|_, x| !x.is_null());
    }
    v
}

fn action(
    server: &ServerArgs,
    machine: &str,
    action: &str,
    mut body: Value,
    reason: Option<String>,
) -> Result<ExitCode> {
    let c = Client::new(server)?;
    body["reason"] = reason.into();
    let r = c.post(&format!("/machines/{}/{action}", enc(machine)), &strip_nulls(body))?;
    report_one(server, &r)
}

fn report_one(server: &ServerArgs, r: &Value) -> Result<ExitCode> {
    if server.json {
        println!("{r}");
        return Ok(ExitCode::SUCCESS);
    }
    // add --install answers with a batch report.
    if let Some(results) = r.get("results").and_then(Value::as_array) {
        for o in results {
            println!("{}", outcome_line(o));
        }
        return Ok(ExitCode::SUCCESS);
    }
    println!("{}", outcome_line(r));
    if let Some(c) = r["commit"].as_str() {
        println!("  inventory commit {}", &c[..c.len().min(10)]);
    }
    Ok(ExitCode::SUCCESS)
}

fn outcome_line(o: &Value) -> String {
    let name = o["hostname"].as_str().or(o["mac"].as_str()).or(o["machine"].as_str()).unwrap_or("?");
    if o["ok"].as_bool() == Some(true) {
        let task = o["task"]["id"].as_i64().map(|t| format!("  task #{t} queued")).unwrap_or_default();
        format!("ok    {name:<16} {}{task}", o["summary"].as_str().unwrap_or(o["op"].as_str().unwrap_or("")))
    } else {
        format!("FAIL  {name:<16} {}: {}", o["op"].as_str().unwrap_or(""), o["error"].as_str().unwrap_or("error"))
    }
}

fn bulk(server: &ServerArgs, op: BulkOp, path: &Path, reason: Option<String>) -> Result<ExitCode> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let ops = parc_web::bulk::parse_ops(&text, op).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    let c = Client::new(server)?;
    let r = c.post("/batch", &strip_nulls(json!({ "operations": ops, "reason": reason })))?;
    let failed = r["failed"].as_u64().unwrap_or(0);
    if server.json {
        println!("{r}");
    } else {
        for o in r["results"].as_array().map(Vec::as_slice).unwrap_or_default() {
            println!("{}", outcome_line(o));
        }
        println!(
            "{} ok, {failed} failed{}",
            r["succeeded"].as_u64().unwrap_or(0),
            r["commit"].as_str().map(|c| format!("; inventory commit {}", &c[..c.len().min(10)])).unwrap_or_default()
        );
    }
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::from(3) })
}

fn ls(a: LsArgs) -> Result<ExitCode> {
    let c = Client::new(&a.server)?;
    let (limit, offset) = (a.limit.to_string(), a.offset.to_string());
    let q = with_query(
        "/machines",
        &[
            ("limit", Some(&limit)),
            ("offset", Some(&offset)),
            ("q", a.search.as_deref()),
            ("department", a.department.as_deref()),
            ("status", a.status.as_deref()),
        ],
    );
    let r = c.get(&q)?;
    if print_json(&a.server, &r) {
        return Ok(ExitCode::SUCCESS);
    }
    println!("{:<16} {:<17} {:<14} {:<11} {:<20} LOCATION", "HOSTNAME", "MAC", "DEPARTMENT", "STATUS", "MODEL");
    for m in r["machines"].as_array().map(Vec::as_slice).unwrap_or_default() {
        println!(
            "{:<16} {:<17} {:<14} {:<11} {:<20} {}",
            m["hostname"].as_str().unwrap_or(""),
            m["mac"].as_str().unwrap_or(""),
            m["department"].as_str().unwrap_or(""),
            m["status"].as_str().unwrap_or(""),
            m["model"].as_str().unwrap_or("").chars().take(20).collect::<String>(),
            m["location"].as_str().unwrap_or("")
        );
    }
    let shown = r["machines"].as_array().map(Vec::len).unwrap_or(0);
    println!("{shown} of {} shown", r["total"]);
    Ok(ExitCode::SUCCESS)
}

fn show(a: ShowArgs) -> Result<ExitCode> {
    let c = Client::new(&a.server)?;
    let m = c.get(&format!("/machines/{}", enc(&a.machine)))?;
    if a.server.json {
        println!("{m}");
        return Ok(ExitCode::SUCCESS);
    }
    let s = |k: &str| m[k].as_str().unwrap_or("").to_string();
    println!("{} ({})  {}", s("hostname"), s("mac"), s("status"));
    for (label, key) in [
        ("department", "department"),
        ("serial", "serial"),
        ("asset tag", "asset_tag"),
        ("location", "location"),
        ("model", "model"),
        ("ip", "ip"),
        ("image", "image_digest"),
        ("notes", "notes"),
        ("etag", "etag"),
    ] {
        if !s(key).is_empty() {
            println!("  {label:<11} {}", s(key));
        }
    }
    for d in m["disks"].as_array().map(Vec::as_slice).unwrap_or_default() {
        println!(
            "  disk        {} {} GB {}",
            d["name"].as_str().unwrap_or(""),
            d["size_bytes"].as_u64().unwrap_or(0) / 1_000_000_000,
            d["bus"].as_str().unwrap_or("")
        );
    }
    println!("tasks:");
    for t in m["tasks"].as_array().map(Vec::as_slice).unwrap_or_default().iter().take(10) {
        println!(
            "  #{:<6} {:<8} {:<9} {}  {}",
            t["id"],
            t["kind"].as_str().unwrap_or(""),
            t["state"].as_str().unwrap_or(""),
            t["created_by"].as_str().unwrap_or(""),
            t["message"].as_str().unwrap_or("")
        );
    }
    println!("inventory history (git):");
    for h in m["history"].as_array().map(Vec::as_slice).unwrap_or_default().iter().take(10) {
        println!(
            "  {} {:<20} {}",
            &h["id"].as_str().unwrap_or("")[..10.min(h["id"].as_str().unwrap_or("").len())],
            h["author_name"].as_str().unwrap_or(""),
            h["summary"].as_str().unwrap_or("")
        );
    }
    Ok(ExitCode::SUCCESS)
}

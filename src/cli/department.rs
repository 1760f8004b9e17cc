//! `parc department ls|show|validate`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use parc_profiles::EntryKind;
use serde_json::{json, Value};

use super::client::{enc, Client, ServerArgs};

#[derive(Debug, Subcommand)]
pub enum DepartmentCmd {
    /// Departments as the appliance parsed them, with their problems.
    Ls(ServerOnly),
    /// One department.
    Show(ShowArgs),
    /// Check a department file before committing it: syntax, fields, hostname pattern, and
    /// payload paths relative to the repository it sits in; with --online, also against the
    /// appliance (the image must exist in its store).
    Validate(ValidateArgs),
}

#[derive(Debug, Args)]
pub struct ServerOnly {
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    #[command(flatten)]
    server: ServerArgs,
    id: String,
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// departments/<id>.toml inside a checkout of the profiles repository.
    file: PathBuf,
    #[arg(long)]
    online: bool,
}

impl DepartmentCmd {
    pub fn json(&self) -> bool {
        match self {
            DepartmentCmd::Ls(a) => a.server.json,
            DepartmentCmd::Show(a) => a.server.json,
            DepartmentCmd::Validate(a) => a.server.json,
        }
    }
}

pub fn run(cmd: DepartmentCmd) -> Result<ExitCode> {
    match cmd {
        DepartmentCmd::Ls(a) => {
            let r = Client::new(&a.server)?.get("/departments")?;
            if a.server.json {
                println!("{r}");
                return Ok(ExitCode::SUCCESS);
            }
            println!("{:<16} {:<18} {:<20} {:<16} {:>8}  PROBLEMS", "ID", "NAME", "IMAGE", "HOSTNAMES", "MACHINES");
            for d in r.as_array().map(Vec::as_slice).unwrap_or_default() {
                let problems = d["problems"].as_array().map(Vec::len).unwrap_or(0);
                println!(
                    "{:<16} {:<18} {:<20} {:<16} {:>8}  {}",
                    s(d, "id"),
                    s(d, "name"),
                    s(d, "image"),
                    s(d, "hostname_pattern"),
                    d["machines"].as_u64().unwrap_or(0),
                    if problems == 0 { "-".to_string() } else { problems.to_string() }
                );
                for p in d["problems"].as_array().map(Vec::as_slice).unwrap_or_default() {
                    println!("    {}", problem_line(p));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        DepartmentCmd::Show(a) => {
            let d = Client::new(&a.server)?.get(&format!("/departments/{}", enc(&a.id)))?;
            if a.server.json {
                println!("{d}");
            } else {
                println!("{}", serde_json::to_string_pretty(&d)?);
            }
            Ok(ExitCode::SUCCESS)
        }
        DepartmentCmd::Validate(a) => validate(a),
    }
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str().unwrap_or("")
}

fn problem_line(p: &Value) -> String {
    match p["line"].as_u64() {
        Some(l) => format!("{} line {l}: {}", s(p, "file"), s(p, "reason")),
        None => format!("{}: {}", s(p, "file"), s(p, "reason")),
    }
}

/// The repository root of `departments/<id>.toml`, and the path relative to it.
fn locate(file: &Path) -> Result<(PathBuf, String, String)> {
    let abs = std::fs::canonicalize(file).with_context(|| format!("reading {}", file.display()))?;
    let id = abs.file_stem().and_then(|s| s.to_str()).context("file name")?.to_string();
    let dir = abs.parent().context("file has no directory")?;
    let root = if dir.file_name().is_some_and(|n| n == "departments") { dir.parent().unwrap_or(dir) } else { dir };
    Ok((root.to_path_buf(), format!("departments/{id}.toml"), id))
}

fn validate(a: ValidateArgs) -> Result<ExitCode> {
    let (root, rel, id) = locate(&a.file)?;
    let text = std::fs::read_to_string(&a.file).with_context(|| format!("reading {}", a.file.display()))?;
    let safe = |p: &str| !p.split('/').any(|c| c == "..") && !p.starts_with('/');
    let mut problems: Vec<Value> = match parc_profiles::parse_department(&id, &rel, &text, |p, kind| {
        safe(p)
            && match kind {
                EntryKind::File => root.join(p).is_file(),
                EntryKind::Dir => root.join(p).is_dir(),
            }
    }) {
        Ok(_) => Vec::new(),
        Err(ps) => ps.into_iter().map(|p| serde_json::to_value(p).expect("serialisable")).collect(),
    };
    if a.online && problems.is_empty() {
        let r = Client::new(&a.server)?.post("/departments/validate", &json!({ "file": rel, "text": text }))?;
        problems.extend(r["problems"].as_array().cloned().unwrap_or_default());
    }
    if a.server.json {
        println!("{}", json!({ "ok": problems.is_empty(), "file": rel, "problems": problems }));
    } else if problems.is_empty() {
        println!("{rel}: ok");
    } else {
        for p in &problems {
            println!("{}", problem_line(p));
        }
    }
    Ok(if problems.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(2) })
}

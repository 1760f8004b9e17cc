//! Command-line interface: one module per noun.

mod config;
mod image;
mod progress;
mod serve;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "parc", version, about = "Workstation imaging and provisioning appliance")]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
    /// Logs as JSON lines on stderr.
    #[arg(long, global = true)]
    pub log_json: bool,
    /// More logs (-v info, -vv debug).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Disk images: capture, deploy, list, verify, remove, collect garbage, compare.
    #[command(subcommand)]
    Image(image::ImageCmd),
    /// Run the appliance: serves images over HTTP to deploys (PXE, API and console to come).
    Serve(serve::ServeArgs),
}

impl Cli {
    pub fn json_requested(&self) -> bool {
        match &self.cmd {
            Cmd::Image(c) => c.json(),
            Cmd::Serve(_) => false,
        }
    }
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.cmd {
        Cmd::Image(cmd) => image::run(cmd),
        Cmd::Serve(a) => serve::run(a),
    }
}

pub fn init_tracing(json: bool, verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = EnvFilter::try_from_env("PARC_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

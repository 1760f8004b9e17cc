//! Command-line interface: one module per noun.

mod account;
mod agent;
mod client;
mod config;
mod department;
mod image;
mod machine;
mod progress;
mod serve;
mod task;

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
    /// Run the appliance: HTTP (images, boot scripts, API), PXE when an interface is given.
    Serve(serve::ServeArgs),
    /// Machines: list, show, add, install, move, replace, reimage, retire, edit (one or many).
    #[command(subcommand)]
    Machine(machine::MachineCmd),
    /// Tasks: list, watch live.
    #[command(subcommand)]
    Task(task::TaskCmd),
    /// Department profiles: list, show, validate a file.
    #[command(subcommand)]
    Department(department::DepartmentCmd),
    /// Create an API token with a login and password, and save it for later commands.
    Login(client::LoginArgs),
    /// Accounts: list, add, role, disable, enable, reset-password (admin).
    #[command(subcommand)]
    User(account::UserCmd),
    /// Your API tokens: list, revoke.
    #[command(subcommand)]
    Token(account::TokenCmd),
    /// The agent on a network-booted machine (started by its initramfs).
    Agent(agent::AgentArgs),
}

impl Cli {
    pub fn json_requested(&self) -> bool {
        match &self.cmd {
            Cmd::Image(c) => c.json(),
            Cmd::Machine(c) => c.json(),
            Cmd::Task(c) => c.json(),
            Cmd::Department(c) => c.json(),
            Cmd::User(c) => c.json(),
            Cmd::Token(c) => c.json(),
            Cmd::Serve(_) | Cmd::Login(_) | Cmd::Agent(_) => false,
        }
    }
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.cmd {
        Cmd::Image(cmd) => image::run(cmd),
        Cmd::Serve(a) => serve::run(a),
        Cmd::Machine(c) => machine::run(c),
        Cmd::Task(c) => task::run(c),
        Cmd::Department(c) => department::run(c),
        Cmd::Login(a) => client::login(a),
        Cmd::User(c) => account::run_user(c),
        Cmd::Token(c) => account::run_token(c),
        Cmd::Agent(a) => agent::run(a),
    }
}

pub use client::exit_code;

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

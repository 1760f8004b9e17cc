//! The `parc` binary: parses arguments, sets up logging, calls the libraries.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    cli::init_tracing(args.log_json, args.verbose);
    let json = args.json_requested();
    match cli::run(args) {
        Ok(code) => code,
        Err(e) => {
            let msg = format!("{e:#}");
            if json {
                println!("{}", serde_json::json!({ "ok": false, "error": msg }));
            }
            eprintln!("error: {msg}");
            cli::exit_code(&e)
        }
    }
}

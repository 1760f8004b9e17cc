//! `parc agent`: the netbooted machine's program (started by the initramfs's /init).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use parc_agent::{self as agent, AgentOptions, Screen};

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// Read the boot arguments from this file instead of /proc/cmdline.
    #[arg(long)]
    cmdline_file: Option<PathBuf>,
    /// Write this disk instead of choosing one by the department's rule.
    #[arg(long)]
    disk: Option<PathBuf>,
    /// Root of /sys and /proc (tests).
    #[arg(long, default_value = "/", hide = true)]
    root: PathBuf,
    /// Stay instead of rebooting at the end.
    #[arg(long)]
    no_reboot: bool,
    /// Seconds between "any task for me?" checks of a registered machine.
    #[arg(long, default_value_t = 10)]
    poll_secs: u64,
}

/// The console: stdout (the kernel's last `console=`, the serial port in the lab), the
/// machine's screen (tty1) when that is another device, and the log.
struct Console {
    screen: Option<std::sync::Mutex<std::fs::File>>,
}

impl Console {
    fn new() -> Console {
        use std::os::unix::fs::MetadataExt;
        let rdev = |p: &str| std::fs::metadata(p).map(|m| m.rdev()).ok();
        let same = rdev("/dev/tty1").is_some() && rdev("/dev/tty1") == rdev("/proc/self/fd/1");
        let screen = if same { None } else { std::fs::OpenOptions::new().write(true).open("/dev/tty1").ok() };
        Console { screen: screen.map(std::sync::Mutex::new) }
    }
}

impl Screen for Console {
    fn show(&self, line: &str) {
        use std::io::Write;
        println!("{line}");
        if let Some(s) = &self.screen {
            let _ = writeln!(s.lock().unwrap_or_else(|p| p.into_inner()), "{line}\r");
        }
        tracing::info!("{line}");
    }
}

pub fn run(a: AgentArgs) -> Result<ExitCode> {
    let cmdline_path = a.cmdline_file.clone().unwrap_or_else(|| a.root.join("proc/cmdline"));
    let cmdline =
        std::fs::read_to_string(&cmdline_path).with_context(|| format!("reading {}", cmdline_path.display()))?;
    let reboot = !(a.no_reboot || cmdline.split_whitespace().any(|w| w == "parc.reboot=0"));
    let opts = AgentOptions {
        cmdline,
        root: a.root,
        disk: a.disk,
        poll: Duration::from_secs(a.poll_secs.max(1)),
        work: std::env::temp_dir().join("parc-agent"),
    };
    let console = Console::new();
    let result = agent::run(&opts, &console);
    let code = match &result {
        Ok(o) => {
            console.show(&format!(
                "task #{} done: {} is installed and verified",
                o.task,
                o.hostname.as_deref().unwrap_or("this machine")
            ));
            ExitCode::SUCCESS
        }
        Err(e) => {
            console.show(&format!("parc agent: {e}"));
            if reboot {
                // Leave the reason on screen for the technician, then try again from the network.
                console.show("rebooting in 60 s to try again (the appliance has been told why)");
                std::thread::sleep(Duration::from_secs(60));
            }
            ExitCode::FAILURE
        }
    };
    if reboot {
        console.show("rebooting");
        nix::unistd::sync();
        let _ = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_AUTOBOOT);
    }
    Ok(code)
}

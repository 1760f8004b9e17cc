//! Progress for long operations: a bar with bytes, rate and ETA on a terminal; a plain line
//! every few seconds otherwise (logs, CI, the agent's serial console).

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use parc_imager::error::human;
use parc_imager::progress::Progress;

const PLAIN_EVERY: Duration = Duration::from_secs(2);

#[derive(Debug)]
pub struct CliProgress {
    what: &'static str,
    bar: Option<ProgressBar>,
    quiet: bool,
    state: Mutex<Plain>,
    done: AtomicU64,
}

#[derive(Debug)]
struct Plain {
    phase: String,
    total: u64,
    started: Instant,
    last_print: Instant,
}

impl CliProgress {
    /// `quiet` (with `--json`) keeps stdout clean; progress still goes to stderr.
    pub fn new(what: &'static str, quiet: bool) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = ProgressBar::new(0);
            b.set_style(
                ProgressStyle::with_template(
                    "{prefix:>8} {msg:<22} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            b.set_prefix(what);
            b
        });
        let now = Instant::now();
        CliProgress {
            what,
            bar,
            quiet,
            state: Mutex::new(Plain { phase: String::new(), total: 0, started: now, last_print: now }),
            done: AtomicU64::new(0),
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }

    fn print_plain(&self, st: &Plain, done: u64) {
        let secs = st.started.elapsed().as_secs_f64().max(1e-3);
        let rate = done as f64 / secs;
        let line = if st.total > 0 {
            let eta = if rate > 0.0 { (st.total.saturating_sub(done)) as f64 / rate } else { 0.0 };
            format!(
                "{}: {} {} / {} ({:.0}%) {}/s ETA {:.0}s",
                self.what,
                st.phase,
                human(done),
                human(st.total),
                done as f64 * 100.0 / st.total as f64,
                human(rate as u64),
                eta
            )
        } else {
            format!("{}: {}", self.what, st.phase)
        };
        eprintln!("{line}");
    }
}

impl Progress for CliProgress {
    fn phase(&self, name: &str, total_bytes: u64) {
        self.done.store(0, Ordering::Relaxed);
        if let Some(b) = &self.bar {
            b.set_message(name.to_string());
            b.set_length(total_bytes);
            b.set_position(0);
            b.reset_eta();
            return;
        }
        let mut st = self.state.lock().expect("lock poisoned");
        *st =
            Plain { phase: name.to_string(), total: total_bytes, started: Instant::now(), last_print: Instant::now() };
        if !self.quiet || total_bytes > 0 {
            self.print_plain(&st, 0);
        }
    }

    fn advance(&self, bytes: u64) {
        let done = self.done.fetch_add(bytes, Ordering::Relaxed) + bytes;
        if let Some(b) = &self.bar {
            b.set_position(done);
            return;
        }
        let mut st = self.state.lock().expect("lock poisoned");
        if st.last_print.elapsed() >= PLAIN_EVERY {
            st.last_print = Instant::now();
            self.print_plain(&st, done);
        }
    }
}

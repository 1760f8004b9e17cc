//! The agent: what runs on a network-booted machine. It says hello to the appliance with what
//! the machine is, receives its task, chooses the disk, deploys the image with verification
//! (the same `deploy` as `parc image deploy`, fetching over HTTP), applies the department
//! profile, and reports progress every 2 seconds, then done or failed. It never reports
//! success without a verified image.

pub mod api;
pub mod cmdline;
pub mod disk;
pub mod hardware;
pub mod profile;
pub mod resize;
pub mod window;
pub mod windows;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use parc_imager::deploy::{self, DeployOptions, DeployReport};
use parc_imager::format::manifest::Manifest;
use parc_imager::progress::Progress;
use parc_imager::store::{ChunkSource, HttpStore};

use api::{AgentApi, ApiError, ProgressReport, Work};

/// How often progress is reported (the issue asks for at least every 2 s).
pub const REPORT_EVERY: Duration = Duration::from_secs(2);
/// How long the agent keeps retrying the appliance before giving up on a request.
pub const RETRY_FOR: Duration = Duration::from_secs(600);

/// Where the agent shows what it does: the machine's screen (and serial console).
pub trait Screen: Sync {
    fn show(&self, line: &str);
}

#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// The kernel command line (from `/proc/cmdline`).
    pub cmdline: String,
    /// Root of sysfs/procfs (`/`; a fixture tree in tests).
    pub root: PathBuf,
    /// Write this disk instead of choosing one (technicians, tests).
    pub disk: Option<PathBuf>,
    /// How often a registered machine asks whether a task was queued for it.
    pub poll: Duration,
    /// Scratch directory for mounting the installed system.
    pub work: PathBuf,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    #[error(transparent)]
    Cmdline(#[from] cmdline::Missing),
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error(transparent)]
    Deploy(#[from] parc_imager::Error),
    #[error(transparent)]
    Disk(#[from] disk::NoDisk),
    #[error(transparent)]
    Resize(#[from] resize::ResizeError),
    #[error("applying the department profile: {0}")]
    Profile(#[from] profile::ProfileError),
    #[error("task #{id}: {reason}")]
    Task { id: i64, reason: String },
    #[error("the appliance cancelled task #{0}")]
    Cancelled(i64),
    #[error("booted without a boot credential (parc.token=): boot this machine from the network through parc")]
    NoCredential,
}

impl AgentError {
    /// The chunk at fault, when a chunk was.
    pub fn chunk(&self) -> Option<String> {
        match self {
            AgentError::Deploy(parc_imager::Error::ChunkCorrupt { digest, .. }) => Some(digest.to_string()),
            AgentError::Deploy(parc_imager::Error::Store(parc_imager::store::StoreError::ChunkMissing {
                digest,
                ..
            })) => Some(digest.to_string()),
            _ => None,
        }
    }
}

#[derive(Debug)]
pub struct Outcome {
    pub task: i64,
    pub hostname: Option<String>,
    pub report: DeployReport,
}

/// Counts bytes for the reporter thread.
#[derive(Debug, Default)]
struct Meter {
    phase: Mutex<String>,
    total: AtomicU64,
    done: AtomicU64,
}

impl Progress for Meter {
    fn phase(&self, name: &str, total_bytes: u64) {
        *self.phase.lock().unwrap_or_else(|p| p.into_inner()) = name.to_string();
        self.total.store(total_bytes, Ordering::Relaxed);
        self.done.store(0, Ordering::Relaxed);
    }
    fn advance(&self, bytes: u64) {
        self.done.fetch_add(bytes, Ordering::Relaxed);
    }
}

/// Runs the agent until its task is done (or failed, reported and returned as an error).
pub fn run(opts: &AgentOptions, screen: &dyn Screen) -> Result<Outcome, AgentError> {
    let boot = cmdline::parse(&opts.cmdline)?;
    let hw = hardware::probe(&opts.root, &boot.mac);
    screen.show(&format!(
        "parc agent: {} {} (serial {}), {} MiB RAM, {} disk(s); appliance {}",
        boot.mac,
        hw.model.as_deref().unwrap_or("unknown model"),
        hw.serial.as_deref().unwrap_or("unknown"),
        hw.memory_bytes >> 20,
        hw.disks.len(),
        boot.server
    ));
    let mut api = AgentApi::new(&boot.server, boot.token.clone(), RETRY_FOR);
    let mut reply = api.hello(&hw)?;
    if api.token().is_none() {
        screen.show(
            "no boot credential on the command line: the hardware was reported, but this machine gets no task \
             until it boots from the network through parc",
        );
        return Err(AgentError::NoCredential);
    }
    let mut first_boot_token = None;
    loop {
        if let Some(session) = reply.session_token.take() {
            api.set_token(session);
        }
        if reply.first_boot_token.is_some() {
            first_boot_token = reply.first_boot_token.take();
        }
        if reply.task.is_some() {
            break;
        }
        if let Some(last) = &reply.last_task {
            screen.show(&format!(
                "last task #{} ({}) {}: {}; the disk was left unbootable. Waiting for a technician to queue a new task.",
                last.id, last.kind, last.state, last.reason
            ));
        }
        screen.show(&if reply.known {
            format!(
                "registered: {} in {}; nothing to do, waiting for a task",
                reply.hostname.as_deref().unwrap_or("(no hostname yet)"),
                reply.department.as_deref().unwrap_or("?")
            )
        } else {
            "registered as a new machine; waiting for a technician to assign it".to_string()
        });
        // The standby session says hello again until a task is there: no reboot is needed.
        std::thread::sleep(opts.poll);
        reply = api.hello(&hw)?;
    }
    let work = reply.task.expect("loop ends with a task");
    let result = do_task(&api, &boot, &hw, &work, first_boot_token.as_deref(), opts, screen);
    if let Err(e) = &result {
        if let AgentError::Cancelled(id) = e {
            screen.show(&format!(
                "CANCELLED: the appliance cancelled or ended task #{id}; the disk was left unbootable. Waiting for a technician."
            ));
        } else {
            let reason = e.to_string();
            screen.show(&format!("FAILED: {reason}"));
            // The appliance must know, even if it is restarting right now (retried).
            if let Err(report) = api.failed(&reason, e.chunk().as_deref()) {
                screen.show(&format!("could not report the failure: {report}"));
            }
        }
    }
    result
}

fn do_task(
    api: &AgentApi,
    boot: &cmdline::BootArgs,
    hw: &hardware::Hardware,
    work: &Work,
    first_boot_token: Option<&str>,
    opts: &AgentOptions,
    screen: &dyn Screen,
) -> Result<Outcome, AgentError> {
    let task_err = |reason: String| AgentError::Task { id: work.id, reason };
    screen.show(&format!(
        "task #{}: {} {} with {}",
        work.id,
        work.kind,
        work.hostname.as_deref().unwrap_or(&work.mac),
        work.image.as_ref().map(|i| i.reference.as_str()).unwrap_or("-")
    ));
    if !matches!(work.kind.as_str(), "install" | "move" | "replace" | "reimage") {
        return Err(task_err(format!("{} tasks are not supported by this agent yet", work.kind)));
    }
    let image = work.image.as_ref().ok_or_else(|| task_err("the task names no image".into()))?;
    let digest_text = image.digest.as_deref().ok_or_else(|| task_err("the task's image has no digest".into()))?;
    let store = HttpStore::new(&boot.server, RETRY_FOR).with_token(api.token().map(str::to_string));
    let digest = store.resolve(digest_text).map_err(parc_imager::Error::from)?;
    let bytes = store.read_manifest(&digest).map_err(parc_imager::Error::from)?;
    let manifest = Manifest::decode(&bytes, Some(digest)).map_err(parc_imager::Error::from)?;
    let (target, disk_reason) = match &opts.disk {
        Some(p) => (p.clone(), format!("{}: given on the agent's command line", p.display())),
        None => {
            let rule = work.department.as_ref().map(|d| d.disk.clone()).unwrap_or_default();
            let need = deploy::smallest_target(&manifest);
            let c = disk::choose(&hw.disks, &rule, need, work.disk_serial.as_deref())?;
            (PathBuf::from("/dev").join(&c.disk.name), c.reason)
        }
    };
    screen.show(&format!("disk: {disk_reason}"));
    let report =
        |phase: &str, message: Option<String>| ProgressReport { phase: phase.into(), message, ..Default::default() };
    if !api.progress(&report("disk", Some(disk_reason.clone())))? {
        return Err(AgentError::Cancelled(work.id));
    }

    let meter = Arc::new(Meter::default());
    // The reporter's first report may come before the deploy names its first phase, and the
    // appliance refuses a report without one.
    meter.phase("starting", 0);
    let stop = Arc::new(AtomicBool::new(false));
    let cancelled = Arc::new(AtomicBool::new(false));
    let reporter = {
        let (meter, stop, cancelled) = (meter.clone(), stop.clone(), cancelled.clone());
        let api = AgentApi::new(&boot.server, api.token().map(str::to_string), REPORT_EVERY * 5);
        std::thread::spawn(move || reporter(&api, &meter, &stop, &cancelled))
    };
    let disk = parc_imager::blockdev::Disk::open_write(&target, manifest.disk.size)
        .map_err(|source| parc_imager::Error::Target { path: target.clone(), source })?;
    // Shrinking is the only way onto a smaller disk, so it needs no setting.
    let fit = deploy::Fit { grow: work.department.as_ref().is_none_or(|d| d.disk.grow), shrink: true };
    let deploy_opts = DeployOptions { verify: true, cancel: Some(cancelled.clone()), fit, ..Default::default() };
    let req = deploy::Request {
        source: &store,
        image: &image.reference,
        manifest: &manifest,
        disk: &disk,
        target: &target,
        progress: meter.as_ref(),
    };
    // Image verified and flushed, then the profile, then the boot area: the disk boots only
    // once the machine is what its department says.
    let hostname = work.hostname.clone();
    let result = (|| -> Result<(DeployReport, profile::Applied), AgentError> {
        let mut d = deploy::Deployment::new(req, deploy_opts)?;
        d.write_and_verify_body()?;
        let r = d.report();
        screen.show(&format!(
            "image written and verified from the disk: {} MiB fetched, {} MiB already in place, {} MiB zeroed",
            r.bytes_fetched >> 20,
            r.bytes_skipped >> 20,
            r.bytes_zeroed >> 20,
        ));
        if let Some(r) = d.resize().filter(|r| r.shrinks()).cloned() {
            meter.phase("shrinking file system", 0);
            screen.show(&resize::resize_file_system(&target, &r, &opts.work)?);
        }
        meter.phase("profile", 0);
        let name = hostname.clone().unwrap_or_else(|| work.mac.replace(':', ""));
        let first_boot = profile::FirstBoot {
            server: boot.server.clone(),
            token: first_boot_token
                .ok_or_else(|| task_err("the appliance gave no first-boot credential".into()))?
                .to_string(),
        };
        let department = work.department.as_ref();
        let applied = match department.and_then(|d| d.windows.as_ref()) {
            Some(w) if department.and_then(|d| d.os.as_deref()) == Some("windows") => {
                let join = match &w.domain_ou {
                    Some(_) => {
                        let j = api.domain_join()?;
                        screen.show(&format!("domain: computer account {} in {} provisioned", j.machine, j.domain));
                        Some(j)
                    }
                    None => None,
                };
                let c = windows::apply::Customisation {
                    hostname: &name,
                    time_zone: &w.time_zone,
                    join_blob: join.as_ref().map(|j| j.account_data.as_str()),
                };
                windows::apply::apply(api, &target, &manifest, &c, &first_boot, &opts.work)?
            }
            _ => profile::apply(api, &target, &manifest, &name, &first_boot, &opts.work)?,
        };
        if cancelled.load(Ordering::Relaxed) {
            return Err(AgentError::Cancelled(work.id));
        }
        if let Some(why) = &d.report().grow_skipped {
            screen.show(&format!("disk: {why}"));
        }
        if let Some(g) = d.resize().filter(|r| !r.shrinks()).cloned() {
            meter.phase("growing file system", 0);
            screen.show(&resize::resize_file_system(&target, &g, &opts.work)?);
            if cancelled.load(Ordering::Relaxed) {
                return Err(AgentError::Cancelled(work.id));
            }
        }
        d.write_boot_area()?;
        d.verify_boot_area()?;
        Ok((d.finish(), applied))
    })();
    stop.store(true, Ordering::Relaxed);
    let _ = reporter.join();
    let (report, applied) = match result {
        Err(AgentError::Deploy(parc_imager::Error::Cancelled { .. })) => return Err(AgentError::Cancelled(work.id)),
        r => r?,
    };
    if !report.verified_after_write {
        return Err(task_err("the image was written but the re-read verification did not run".into()));
    }
    screen.show(&format!(
        "profile applied on partition {}: hostname {}, {} file(s), first-boot script: {}; boot area written and verified ({:.1} s)",
        applied.root_partition,
        hostname.as_deref().unwrap_or("-"),
        applied.files,
        if applied.first_boot_script { "yes" } else { "no" },
        report.seconds
    ));
    let verified_by = match report.verified_by {
        Some(parc_imager::blockdev::ReadPath::Direct) => "direct reads",
        _ => "reads after dropping the page cache",
    };
    api.done(
        report.verified_after_write,
        &report.digest,
        // Every chunk byte received, retries included: "nothing fetched twice" can be checked.
        store.chunk_bytes_received(),
        &target.display().to_string(),
        &format!(
            "profile on partition {}, {} file(s), {} bytes in place, {} bytes zeroed, verified by {verified_by}{}",
            applied.root_partition,
            applied.files,
            report.bytes_skipped,
            report.bytes_zeroed,
            match (&report.resized, &report.grow_skipped) {
                (Some(g), _) => format!("; partition {} resized to {} MiB", g.number, g.length >> 20),
                (None, Some(why)) => format!("; {why}"),
                (None, None) => String::new(),
            }
        ),
    )?;
    Ok(Outcome { task: work.id, hostname, report })
}

/// Posts the meter every `REPORT_EVERY` until stopped. A failed report is not fatal (the
/// next one carries the same counters); "stop" from the appliance is remembered.
fn reporter(api: &AgentApi, meter: &Meter, stop: &AtomicBool, cancelled: &AtomicBool) {
    let mut last = (Instant::now(), 0u64);
    while !stop.load(Ordering::Relaxed) {
        let done = meter.done.load(Ordering::Relaxed);
        let elapsed = last.0.elapsed().as_secs_f64().max(0.001);
        let rate = (done.saturating_sub(last.1) as f64 / elapsed) as u64;
        last = (Instant::now(), done);
        let p = ProgressReport {
            phase: meter.phase.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            bytes_done: done,
            bytes_total: meter.total.load(Ordering::Relaxed),
            bytes_fetched: 0,
            rate_bps: rate,
            message: None,
        };
        match api.progress(&p) {
            Ok(false) => cancelled.store(true, Ordering::Relaxed),
            // The task ended on the appliance (failed as silent, superseded): stop writing.
            Err(ApiError::Refused { status: 401 | 409, .. }) => cancelled.store(true, Ordering::Relaxed),
            Ok(true) => {}
            Err(e) => tracing::warn!(error = %e, "progress report failed"),
        }
        let until = Instant::now() + REPORT_EVERY;
        while Instant::now() < until && !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

//! `parc serve`: the appliance process. One tokio process serves images to deploys over
//! HTTP, the per-machine iPXE script and the agent's files, the JSON API, and, with
//! `--pxe-interface`, DHCP/ProxyDHCP and TFTP. It watches the profiles repository (and pulls
//! from its remote when one is set).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::Args;
use parc_pxe::boot::UefiLoader;
use parc_pxe::server::{PxeConfig, PxeMode};
use parc_pxe::sightings::Sightings;
use parc_web::listener::Scheme;
use tokio_util::sync::CancellationToken;

use super::config::{FileConfig, LoaderName, PxeModeName};

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Data directory, created on first start: settings in <data>/parc.toml, image store in
    /// <data>/store, database <data>/parc.db, departments and inventory in the git repository
    /// <data>/profiles, agent files in <data>/netboot, DHCP leases in <data>/leases.json.
    #[arg(long, env = "PARC_DATA", default_value = "parc-data")]
    data: PathBuf,
    /// HTTP listen address [parc.toml: http.listen; default 0.0.0.0:8080].
    #[arg(long)]
    http: Option<SocketAddr>,
    /// HTTPS listen address for the console and the API, or `off` [http.https_listen; default
    /// 0.0.0.0:8443].
    #[arg(long)]
    https: Option<String>,
    /// Serve network boot (DHCP/ProxyDHCP and TFTP) on this interface; off unless given [pxe.interface].
    #[arg(long)]
    pxe_interface: Option<String>,
    /// `proxy` answers PXE clients only and leaves addresses to the site's DHCP server;
    /// `dhcp` is a full DHCP server for an isolated imaging network [pxe.mode; default proxy].
    #[arg(long, value_enum)]
    pxe_mode: Option<PxeModeName>,
    /// Addresses handed out in DHCP mode: FIRST-LAST inside the interface's network [pxe.dhcp_range].
    #[arg(long)]
    dhcp_range: Option<String>,
    /// Directory served over TFTP: Debian's iPXE binaries [pxe.tftp_root; default /usr/lib/ipxe].
    #[arg(long)]
    tftp_root: Option<PathBuf>,
    /// Loader for UEFI PXE clients [pxe.uefi_loader; default shim: Debian's signed shim, GRUB and
    /// kernel, which boot with Secure Boot on or off; snponly and ipxe need Secure Boot off].
    #[arg(long, value_enum)]
    uefi_loader: Option<LoaderName>,
    /// Wake-on-LAN packets go to this address, out of the network-boot interface when one is set
    /// [default 255.255.255.255:9].
    #[arg(long)]
    wol_target: Option<SocketAddr>,
    /// A running task whose agent has not reported for this many seconds fails, freeing the
    /// machine [tasks.agent_silence_secs; default 600].
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    agent_silence: Option<u64>,
    /// TFTP port (69; tests use others).
    #[arg(long, default_value_t = 69, hide = true)]
    tftp_port: u16,
}

/// How often HEAD of the profiles repository is checked (and the remote pulled).
const PROFILES_POLL: std::time::Duration = std::time::Duration::from_secs(5);

/// Flags merged over parc.toml merged over defaults.
#[derive(Debug)]
struct Settings {
    data: PathBuf,
    http: SocketAddr,
    https: Option<SocketAddr>,
    bounds: parc_web::listener::Bounds,
    tls: super::config::TlsSection,
    pxe_interface: Option<String>,
    pxe_mode: PxeModeName,
    dhcp_range: Option<String>,
    tftp_root: PathBuf,
    uefi_loader: LoaderName,
    relay_networks: Vec<parc_pxe::dhcp::Ipv4Net>,
    tftp_port: u16,
    wol_target: Option<SocketAddr>,
    remote: Option<parc_web::profiles::Remote>,
    pull_every: std::time::Duration,
    agent_silence: std::time::Duration,
    directory: Option<parc_web::directory::DirectoryConfig>,
    domain: Option<parc_web::domain::DomainConfig>,
}

fn settings(a: ServeArgs, file: FileConfig) -> Result<Settings> {
    let https = match a.https.or(file.http.https_listen).as_deref() {
        None => Some("0.0.0.0:8443".parse().expect("valid address")),
        Some("off") => None,
        Some(addr) => Some(addr.parse().with_context(|| format!("HTTPS address {addr:?}: give ADDRESS:PORT or off"))?),
    };
    let directory = file.directory.resolve()?;
    let domain = file.domain.resolve(&a.data)?;
    Ok(Settings {
        directory,
        domain,
        http: a.http.or(file.http.listen).unwrap_or_else(|| "0.0.0.0:8080".parse().expect("valid address")),
        https,
        bounds: {
            let d = parc_web::listener::Bounds::default();
            parc_web::listener::Bounds {
                per_address: file.http.max_connections_per_address.unwrap_or(d.per_address).max(1),
                total: file.http.max_connections.unwrap_or(d.total).max(1),
                ..d
            }
        },
        tls: file.tls,
        pxe_interface: a.pxe_interface.or(file.pxe.interface),
        pxe_mode: a.pxe_mode.or(file.pxe.mode).unwrap_or(PxeModeName::Proxy),
        dhcp_range: a.dhcp_range.or(file.pxe.dhcp_range),
        tftp_root: a.tftp_root.or(file.pxe.tftp_root).unwrap_or_else(|| "/usr/lib/ipxe".into()),
        uefi_loader: a.uefi_loader.or(file.pxe.uefi_loader).unwrap_or(LoaderName::Shim),
        relay_networks: file.pxe.relay_networks.unwrap_or_else(|| parc_pxe::dhcp::PRIVATE_NETWORKS.to_vec()),
        tftp_port: a.tftp_port,
        wol_target: a.wol_target,
        data: a.data,
        remote: file.profiles.remote.map(|url| parc_web::profiles::Remote {
            url,
            branch: file.profiles.branch.unwrap_or_else(|| "main".into()),
        }),
        pull_every: std::time::Duration::from_secs(file.profiles.pull_interval_secs.unwrap_or(60).max(5)),
        agent_silence: a
            .agent_silence
            .or(file.tasks.agent_silence_secs)
            .map(|s| std::time::Duration::from_secs(s.max(1)))
            .unwrap_or(parc_web::lifecycle::DEFAULT_SILENCE),
    })
}

/// The hospital's certificate from parc.toml, or the appliance's own for its names and
/// addresses.
fn tls_material(a: &Settings) -> Result<parc_web::tls::Tls> {
    match (&a.tls.cert, &a.tls.key) {
        (Some(c), Some(k)) => parc_web::tls::load(c, k).context("[tls] cert and key in parc.toml"),
        (None, None) => {
            let mut names = vec!["localhost".to_string()];
            if let Ok(h) = nix::unistd::gethostname() {
                names.insert(0, h.to_string_lossy().into_owned());
            }
            names.extend(a.tls.names.clone().unwrap_or_default());
            let mut addresses: Vec<std::net::IpAddr> =
                vec!["127.0.0.1".parse().expect("valid"), "::1".parse().expect("valid")];
            if let Ok(ifs) = nix::ifaddrs::getifaddrs() {
                for i in ifs {
                    if let Some(v4) = i.address.as_ref().and_then(|a| a.as_sockaddr_in()) {
                        let ip = std::net::IpAddr::V4(v4.ip());
                        if !addresses.contains(&ip) {
                            addresses.push(ip);
                        }
                    }
                }
            }
            parc_web::tls::own(&a.data.join("tls"), &names, &addresses).context("the appliance's own certificate")
        }
        _ => bail!("[tls] in parc.toml needs both cert and key (or neither, for the appliance's own)"),
    }
}

/// The data directory 0700 and the files at its top 0600, whatever an older parc or a restore
/// left: `parc.db` holds password hashes.
fn restrict_data_dir(data: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let set = |p: &std::path::Path, mode: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("restricting {} to {mode:o}", p.display()))
    };
    set(data, 0o700)?;
    for entry in std::fs::read_dir(data).with_context(|| format!("reading {}", data.display()))? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            set(&entry.path(), 0o600)?;
        }
    }
    Ok(())
}

fn pxe_config(a: &Settings, iface: &str, sightings: Arc<Sightings>) -> Result<PxeConfig> {
    let mode = match (a.pxe_mode, &a.dhcp_range) {
        (PxeModeName::Proxy, None) => PxeMode::Proxy,
        (PxeModeName::Proxy, Some(_)) => bail!("--dhcp-range is only for --pxe-mode dhcp"),
        (PxeModeName::Dhcp, None) => bail!("--pxe-mode dhcp needs --dhcp-range FIRST-LAST"),
        (PxeModeName::Dhcp, Some(r)) => {
            let (first, last) = parc_pxe::server::parse_range(r)?;
            PxeMode::Dhcp { first, last }
        }
    };
    let ip = parc_pxe::server::interface_ipv4(iface)
        .with_context(|| format!("reading the address of {iface}"))?
        .with_context(|| {
            format!("PXE interface {iface:?} has no IPv4 address (or does not exist; `ip addr` lists them)")
        })?
        .ip;
    Ok(PxeConfig {
        interface: iface.to_string(),
        mode,
        tftp_root: a.tftp_root.clone(),
        netboot_dir: Some(a.data.join("netboot")),
        // Set once the web server's state is complete (see `run`).
        grub_scripts: None,
        http_base: format!("http://{ip}:{}", a.http.port()),
        uefi_loader: match a.uefi_loader {
            LoaderName::Shim => UefiLoader::Shim,
            LoaderName::Snponly => UefiLoader::SnpOnly,
            LoaderName::Ipxe => UefiLoader::Ipxe,
        },
        lease_file: a.data.join("leases.json"),
        tftp: Default::default(),
        tftp_port: a.tftp_port,
        sightings,
        relay_networks: a.relay_networks.clone(),
    })
}

pub fn run(args: ServeArgs) -> Result<ExitCode> {
    // Password hashes, tokens' digests, the profiles (domain-join secrets may follow) and the
    // images: nothing parc writes is for other local users.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    std::fs::create_dir_all(&args.data)
        .with_context(|| format!("creating the data directory {}", args.data.display()))?;
    restrict_data_dir(&args.data)?;
    let file = super::config::load_or_create(&args.data)?;
    let a = settings(args, file)?;
    let (mut state, first) = parc_web::AppState::open(&a.data, a.remote.clone())
        .with_context(|| format!("opening the data directory {}", a.data.display()))?;
    if let Some(target) = a.wol_target {
        state.wake.target = target;
    }
    state.wake.interface = a.pxe_interface.clone();
    state.ipxe_dir = a.tftp_root.clone();
    if let Some(c) = a.directory.clone() {
        let url = c.url.clone();
        state.directory = Some(Arc::new(parc_web::directory::Directory::new(c).context("[directory] in parc.toml")?));
        tracing::info!(%url, "technicians log in through the directory");
    }
    if let Some(c) = a.domain.clone() {
        tracing::info!(realm = %c.realm, "Windows departments join the domain offline");
        state.domain = Some(Arc::new(c));
    }
    parc_web::failpoint::announce();
    // Operations a crash interrupted between their inventory commit and their tasks.
    for line in parc_web::ops::recover(&state)
        .map_err(|e| anyhow::anyhow!("reconciling interrupted inventory operations: {e}"))?
    {
        tracing::warn!("{line}");
    }
    let pxe = a.pxe_interface.as_deref().map(|iface| pxe_config(&a, iface, state.sightings.clone())).transpose()?;
    let tls = a.https.map(|_| tls_material(&a)).transpose()?;
    state.ca_pem = tls.as_ref().and_then(|t| t.ca_pem.as_deref()).map(Into::into);
    if let Some(t) = tls.as_ref().filter(|t| t.created) {
        tracing::warn!(fingerprint = %t.fingerprint, "made the appliance's own certificate authority in <data>/tls");
    }
    limit_malloc_arenas();
    // One file per connection: systemd's default soft limit (1,024) is a campaign's undoing.
    match parc_web::listener::raise_file_limit() {
        Ok(n) => tracing::info!(open_files = n, "open-file limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
    }
    // SQLite, git and store reads run on blocking threads; a few dozen keep the disk busy,
    // hundreds would only multiply per-thread memory.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .max_blocking_threads(32)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(a.http)
            .await
            .with_context(|| format!("listening on {} (in use, or a port below 1024 without root?)", a.http))?;
        let addr = listener.local_addr()?;
        let shutdown = CancellationToken::new();
        let pxe_task = pxe.map(|mut config| {
            config.grub_scripts =
                Some(Arc::new(parc_web::boot::GrubScripts::new(state.clone(), config.http_base.clone())));
            let token = shutdown.clone();
            let iface = config.interface.clone();
            tracing::info!(interface = %iface, mode = ?config.mode, boot = %config.http_base, "network boot on");
            tokio::spawn(async move {
                parc_pxe::server::serve(config, token).await.with_context(|| format!("network boot on {iface}"))
            })
        });
        let https_listener = match a.https {
            Some(at) => Some(
                tokio::net::TcpListener::bind(at)
                    .await
                    .with_context(|| format!("listening on {at} for HTTPS (in use, or below 1024 without root?)"))?,
            ),
            None => None,
        };
        // Before the lines below, which tell scripts the server is up: whoever reads them may
        // look for the file at once.
        let password_file = a.data.join(parc_web::FIRST_PASSWORD_FILE);
        if let Some(pw) = &first.admin_password {
            std::fs::write(&password_file, format!("{pw}\n"))
                .with_context(|| format!("writing {}", password_file.display()))?;
        }
        // Scripts and tests read these lines to find the ports when started with port 0.
        println!("parc serving {} on http://{addr}", a.data.display());
        if let (Some(l), Some(t)) = (&https_listener, &tls) {
            println!("parc serving the console and API on https://{} (certificate fingerprint {})", l.local_addr()?, t.fingerprint);
        }
        if first.profiles_created {
            println!("created the profiles repository {} with example departments", a.data.join("profiles").display());
        }
        if let Some(pw) = &first.admin_password {
            println!("first start: console and API account 'admin', password {pw}");
            println!(
                "  (also in {}, 0600, until changed; it must be changed at first login: parc login --server http://{addr} --user admin)",
                password_file.display()
            );
        }
        tokio::spawn(watch_profiles(state.clone(), a.pull_every, shutdown.clone()));
        tokio::spawn(sweep_lost_agents(state.clone(), a.agent_silence, shutdown.clone()));
        let http_stop = shutdown.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            shutdown_signal().await;
            stop.cancel();
        });
        let bounds = a.bounds.clone();
        let http = async move {
            let https_port = https_listener.as_ref().map(|l| l.local_addr().map(|a| a.port())).transpose()?;
            let plain =
                parc_web::serve(listener, state.clone(), Scheme::Http { https_port }, bounds.clone(), http_stop.clone());
            match (https_listener, tls) {
                (Some(l), Some(t)) => {
                    tokio::try_join!(plain, parc_web::serve(l, state, Scheme::Https(t.config), bounds, http_stop))
                        .map(drop)
                }
                _ => plain.await,
            }
        };
        match pxe_task {
            Some(mut pxe) => {
                let mut http = std::pin::pin!(http);
                tokio::select! {
                    r = &mut http => r.context("HTTP server")?,
                    r = &mut pxe => {
                        r.context("network boot task")??;
                        // Stopping on its own, not for a signal, is an error (interface gone).
                        if !shutdown.is_cancelled() {
                            shutdown.cancel();
                            bail!("network boot stopped");
                        }
                        http.await.context("HTTP server")?;
                        tracing::info!("stopped");
                        return Ok(ExitCode::SUCCESS);
                    }
                }
                shutdown.cancel();
                pxe.await.context("network boot task")??;
            }
            None => http.await.context("HTTP server")?,
        }
        tracing::info!("stopped");
        Ok(ExitCode::SUCCESS)
    })
}

/// glibc gives each thread that allocates its own arena (up to 8 per core) and rarely returns
/// their memory: under 500 polling agents the server's resident memory climbed to ~350 MiB
/// (`bench/serve/run`). Two arenas are plenty for a server whose threads mostly wait.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        // A fixed mmap threshold (4 MiB, above a chunk): each password hash's ~19 MiB of
        // argon2 memory is mapped and unmapped, never kept in an arena. With glibc's sliding
        // threshold a guessing flood left the server at ~700 MiB (`bench/security/run`).
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
    }
}

/// Re-reads the profiles repository when its HEAD moves (a technician committed there), and
/// pulls from the remote every `pull_every`. SIGHUP forces both now.
async fn watch_profiles(state: parc_web::AppState, pull_every: std::time::Duration, stop: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup()).ok();
    let mut last_pull = std::time::Instant::now() - pull_every;
    loop {
        let forced = tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(PROFILES_POLL) => false,
            Some(_) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => true,
        };
        let pull = forced || last_pull.elapsed() >= pull_every;
        let st = state.clone();
        let res = tokio::task::spawn_blocking(move || {
            if pull {
                if let Err(e) = st.profiles.sync() {
                    tracing::warn!(error = %e, "profiles: pulling from the remote failed; serving the last good version");
                }
            }
            let reloaded = st.profiles.reload();
            // Tasks end by many paths (done, lost agents, replaced machines): their pins go here.
            if let Err(e) = parc_web::store::reconcile(&st) {
                tracing::error!(error = %e, "image store pins: rewriting them failed; retrying in a few seconds");
            }
            reloaded
        })
        .await;
        if pull {
            last_pull = std::time::Instant::now();
        }
        match res {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::error!(error = %e, "profiles: reading the repository failed; serving the last good version")
            }
            Err(e) => tracing::error!(error = %e, "profiles watcher"),
        }
    }
}

/// Fails running tasks whose agent fell silent (`parc_web::lifecycle`): at start, then
/// periodically; silence is counted from this start at the earliest.
async fn sweep_lost_agents(state: parc_web::AppState, silence: std::time::Duration, stop: CancellationToken) {
    let every = parc_web::lifecycle::sweep_interval(silence);
    let serving_since = parc_web::db::now_ms();
    tracing::info!(silence_secs = silence.as_secs(), every_secs = every.as_secs(), "watching for silent agents");
    loop {
        let st = state.clone();
        let res = tokio::task::spawn_blocking(move || {
            parc_web::lifecycle::sweep_lost(&st, parc_web::db::now_ms(), silence, serving_since)
        })
        .await;
        match res {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "sweeping for silent agents failed; trying again later"),
            Err(e) => tracing::error!(error = %e, "silent agents sweep"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// SIGTERM (systemd stop) or Ctrl-C: stop accepting, let in-flight transfers finish.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("shutting down: finishing in-flight requests");
}

//! parc-web: the appliance's HTTP server. Chunks and manifests for deploys (immutable,
//! cacheable by any HTTP cache in front of a remote site), the per-machine boot script, the
//! JSON API for technicians' tools and for agents (`/api/v1`, described by
//! `/api/v1/openapi.json`), and the technicians' web console under `/` (`console/`).

mod access;
mod api;
mod auth;
pub mod boot;
pub mod bulk;
mod chunks;
mod console;
pub mod db;
pub mod directory;
pub mod domain;
mod error;
pub mod failpoint;
pub mod grant;
pub mod lifecycle;
pub mod limits;
pub mod listener;
pub mod ops;
pub mod profiles;
pub mod range;
pub mod secrets;
pub mod store;
pub mod tls;
pub mod wake;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::routing::get;
use axum::Router;
use parc_imager::store::DirStore;
use tokio::net::TcpListener;
use tokio::sync::broadcast;

pub use auth::{hash_password, new_password};

/// Where `parc serve` writes the first admin's one-time password (0600), removed once changed.
pub const FIRST_PASSWORD_FILE: &str = "first-admin-password";
pub use error::AppError;

use db::{Db, Event, NewEvent, Role};
use profiles::{Profiles, Remote};

#[derive(Debug, Clone)]
pub struct AppState {
    pub store: Arc<DirStore>,
    /// `<data>/netboot`: the agent's `vmlinuz` and `initrd`.
    pub netboot_dir: PathBuf,
    /// The data directory.
    pub data_dir: PathBuf,
    pub db: Arc<Db>,
    pub profiles: Arc<Profiles>,
    /// Inventory operations run one at a time: each is a git commit followed by task rows.
    pub ops_lock: Arc<Mutex<()>>,
    /// Journal entries and task progress, as they happen (console, `parc task watch`).
    pub live: broadcast::Sender<Live>,
    /// Where Wake-on-LAN packets go.
    pub wake: wake::WakeConfig,
    /// Machines the PXE server of this `parc serve` saw network-booting (and technicians'
    /// grants): a boot credential is issued only to them.
    pub sightings: Arc<parc_pxe::sightings::Sightings>,
    /// Rate limits of unauthenticated callers.
    pub limits: Arc<limits::Limits>,
    /// The appliance's own CA certificate (PEM), served at `/tls/ca.pem` for technicians to
    /// check against the fingerprint `parc serve` printed.
    pub ca_pem: Option<Arc<str>>,
    /// The hospital's directory, when technicians log in with their directory accounts.
    pub directory: Option<Arc<directory::Directory>>,
    /// The Active Directory domain Windows machines join offline.
    pub domain: Option<Arc<domain::DomainConfig>>,
    /// Debian's iPXE binaries (`[pxe] tftp_root`, default `/usr/lib/ipxe`): UEFI HTTP boot
    /// clients fetch `snponly.efi` or `ipxe.efi` from `/ipxe/`.
    pub ipxe_dir: PathBuf,
}

/// Something that just happened, for live views.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Live {
    Event(Event),
    Progress(Box<db::Task>),
}

/// What `AppState::open` created on a first start, for the operator to see once.
#[derive(Debug, Default)]
pub struct FirstStart {
    pub admin_password: Option<String>,
    pub profiles_created: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("image store {path}: {source}")]
    Store { path: String, source: parc_imager::store::StoreError },
    #[error(transparent)]
    Db(#[from] db::DbError),
    #[error("profiles repository {path}: {source}")]
    Profiles { path: String, source: parc_profiles::RepoError },
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("writing the image store's pins (<store>/pins/): {0}")]
    Pins(String),
}

impl AppState {
    /// Opens (creating on first start) everything under the data directory: `store/`,
    /// `parc.db`, `profiles/` (a git repository with example departments), `netboot/`, and
    /// the first admin account.
    pub fn open(data: &Path, remote: Option<Remote>) -> Result<(AppState, FirstStart), OpenError> {
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |source| OpenError::Io { path, source }
        };
        std::fs::create_dir_all(data).map_err(io(data))?;
        let store_path = data.join("store");
        let store = DirStore::create(&store_path)
            .map_err(|source| OpenError::Store { path: store_path.display().to_string(), source })?;
        let netboot_dir = data.join("netboot");
        std::fs::create_dir_all(&netboot_dir).map_err(io(&netboot_dir))?;
        let db = Db::open(&data.join("parc.db"))?;
        let repo_path = data.join("profiles");
        let (profiles, profiles_created) = Profiles::open(&repo_path, remote)
            .map_err(|source| OpenError::Profiles { path: repo_path.display().to_string(), source })?;
        let mut first = FirstStart { profiles_created, ..Default::default() };
        if db.user_count()? == 0 {
            let password = new_password();
            db.create_user(
                "admin",
                "Administrateur parc",
                "admin@parc.local",
                Role::Admin,
                Some(&hash_password(&password)),
                true,
            )?;
            first.admin_password = Some(password);
        }
        let (live, _) = broadcast::channel(1024);
        let state = AppState {
            store: Arc::new(store),
            netboot_dir,
            data_dir: data.to_owned(),
            db: Arc::new(db),
            profiles: Arc::new(profiles),
            ops_lock: Arc::new(Mutex::new(())),
            live,
            wake: wake::WakeConfig::default(),
            sightings: Arc::default(),
            limits: Arc::default(),
            ca_pem: None,
            ipxe_dir: "/usr/lib/ipxe".into(),
            directory: None,
            domain: None,
        };
        // Pins as the database and the profiles say now: a crash left none stale or missing.
        store::rebuild(&state).map_err(|e| OpenError::Pins(e.to_string()))?;
        if first.admin_password.is_some() {
            state.event(&NewEvent {
                actor: "parc",
                kind: "user.create",
                mac: None,
                task_id: None,
                message: "first start: account admin created (one-time password shown on the console)",
                data: None,
            })?;
        }
        Ok((state, first))
    }

    /// Journals an event and tells live views.
    pub fn event(&self, e: &NewEvent<'_>) -> Result<Event, db::DbError> {
        let ev = self.db.event(e)?;
        let _ = self.live.send(Live::Event(ev.clone()));
        Ok(ev)
    }
}

pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/chunks/{digest}", get(chunks::chunk_get))
        .route("/manifests/{digest}", get(chunks::manifest_get))
        .route("/boot.ipxe", get(boot::boot_script))
        .route("/netboot/{file}", get(boot::netboot_file))
        .route("/ipxe/{file}", get(boot::http_boot_loader))
        .route("/tls/ca.pem", get(ca_pem))
        .nest("/api/v1", api::routes())
        .merge(console::routes())
        .layer(axum::middleware::from_fn(read_small_bodies_first))
        .with_state(state)
}

/// Request bodies up to this size are read before any handler runs.
const READ_FIRST: u64 = 64 * 1024;

/// Reads a small request body before routing: a request refused early (401 before its body is
/// looked at) would otherwise be answered and closed with the body unread, and the kernel's
/// reset of that connection can destroy the answer before the client reads it (an agent would
/// see "peer disconnected" and retry instead of a final 401). Larger bodies keep their limits
/// and are read by their handlers.
async fn read_small_bodies_first(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let small = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .is_some_and(|n| n > 0 && n <= READ_FIRST);
    if !small {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    match axum::body::to_bytes(body, READ_FIRST as usize).await {
        Ok(bytes) => next.run(axum::extract::Request::from_parts(parts, axum::body::Body::from(bytes))).await,
        Err(e) => AppError::BadRequest(format!("reading the request body: {e}")).into_response(),
    }
}

/// The appliance's CA certificate: public, useless without checking its fingerprint.
async fn ca_pem(
    axum::extract::State(st): axum::extract::State<AppState>,
) -> Result<axum::response::Response, AppError> {
    use axum::response::IntoResponse;
    let pem = st.ca_pem.clone().ok_or_else(|| {
        AppError::NotFound("this appliance serves the hospital's certificate: its own PKI vouches for it".into())
    })?;
    Ok(([(axum::http::header::CONTENT_TYPE, "application/x-pem-file")], pem.to_string()).into_response())
}

/// Percent-encodes a path segment or query value: everything but unreserved characters and
/// `:` (MAC addresses stay readable in URLs).
pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~:".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Runs blocking work (SQLite, git, the store) off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, AppError> + Send + 'static,
) -> Result<T, AppError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| AppError::Internal(e.to_string()))?
}

/// Serves `app` on an already-bound listener within `bounds` until `shutdown` is cancelled,
/// then lets in-flight requests finish.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    scheme: listener::Scheme,
    bounds: listener::Bounds,
    shutdown: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    listener::serve(listener, app(state), scheme, bounds, shutdown).await
}

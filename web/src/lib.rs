//! parc-web: the appliance's HTTP server. Today it serves what deploys read: chunks and
//! manifests (immutable, cacheable by any HTTP cache in front of a remote site) and image
//! name resolution. The API for machines and tasks and the console come with the server and
//! console issues.

mod boot;
mod chunks;
mod error;
pub mod range;

use std::path::PathBuf;
use std::sync::Arc;

use axum::routing::get;
use axum::Router;
use parc_imager::store::DirStore;
use tokio::net::TcpListener;

pub use error::AppError;

#[derive(Debug, Clone)]
pub struct AppState {
    pub store: Arc<DirStore>,
    /// `<data>/netboot`: the agent's `vmlinuz` and `initrd`.
    pub netboot_dir: PathBuf,
}

pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/chunks/{digest}", get(chunks::chunk_get))
        .route("/manifests/{digest}", get(chunks::manifest_get))
        .route("/boot.ipxe", get(boot::boot_script))
        .route("/netboot/{file}", get(boot::netboot_file))
        .route("/api/v1/images", get(chunks::images_list))
        .route("/api/v1/images/{reference}", get(chunks::image_resolve))
        .with_state(state)
}

/// Serves `app` on an already-bound listener until `shutdown` completes, then lets
/// in-flight requests finish.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app(state)).with_graceful_shutdown(shutdown).await
}

//! `parc serve`: the appliance process. Today: chunk, manifest and image-name serving for
//! deploys over HTTP. PXE, the API and the console join it in later issues.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;
use parc_imager::store::DirStore;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Data directory (the image store lives in <data>/store); created on first start.
    #[arg(long, env = "PARC_DATA", default_value = "parc-data")]
    data: PathBuf,
    /// HTTP listen address.
    #[arg(long, default_value = "0.0.0.0:8080")]
    http: SocketAddr,
}

pub fn run(a: ServeArgs) -> Result<ExitCode> {
    let store = DirStore::create(a.data.join("store"))
        .with_context(|| format!("creating the data directory {}", a.data.display()))?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(a.http)
            .await
            .with_context(|| format!("listening on {} (in use, or a port below 1024 without root?)", a.http))?;
        let addr = listener.local_addr()?;
        // Scripts and tests read this line to find the port when started with port 0.
        println!("parc serving {} on http://{addr}", a.data.display());
        let state = parc_web::AppState { store: Arc::new(store) };
        parc_web::serve(listener, state, shutdown_signal()).await.context("HTTP server")?;
        tracing::info!("stopped");
        Ok(ExitCode::SUCCESS)
    })
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

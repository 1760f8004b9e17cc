//! A standalone parc TFTP server, for benchmarks and manual tests until `parc serve` wires it:
//! `cargo run --release -p parc-pxe --example tftpd -- ROOT [ADDR:PORT]` (default 0.0.0.0:69).
//! Logs go to stderr (`RUST_LOG=debug` for more).

use parc_pxe::server::{bind_udp, tftp};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let mut args = std::env::args().skip(1);
    let root = args.next().ok_or_else(|| anyhow::anyhow!("usage: tftpd ROOT [ADDR:PORT]"))?;
    let addr = args.next().unwrap_or_else(|| "0.0.0.0:69".into()).parse()?;
    let socket = bind_udp(addr).await?;
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        stop.cancel();
    });
    tftp::run(socket, std::path::PathBuf::from(root), tftp::TftpConfig::default(), None, shutdown).await?;
    Ok(())
}

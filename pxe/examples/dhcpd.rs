//! A standalone parc DHCP/ProxyDHCP server, for benchmarks and manual tests until `parc serve`
//! wires it: `dhcpd IFACE SERVER_IP (proxy | FIRST-LAST) [LEASE_FILE]`, e.g.
//! `cargo run --release -p parc-pxe --example dhcpd -- veth0 10.99.0.1 proxy`.
//! Only ever on an interface of a network you own; never on a hospital network in DHCP mode.

use std::net::Ipv4Addr;

use anyhow::Context;
use parc_pxe::boot;
use parc_pxe::dhcp::{self, Mode, Pool};
use parc_pxe::server::dhcp::{bind_dhcp, run, DhcpSockets};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [iface, server_ip, mode, rest @ ..] = args.as_slice() else {
        anyhow::bail!("usage: dhcpd IFACE SERVER_IP (proxy | FIRST-LAST) [LEASE_FILE]");
    };
    let server_ip: Ipv4Addr = server_ip.parse().context("SERVER_IP")?;
    let mode = match mode.as_str() {
        "proxy" => Mode::Proxy,
        range => {
            let (a, b) = range.split_once('-').context("range is FIRST-LAST")?;
            Mode::Dhcp(Pool::new(a.parse()?, b.parse()?, Ipv4Addr::new(255, 255, 255, 0)))
        }
    };
    let config = dhcp::Config {
        server_ip,
        network: dhcp::Ipv4Net::of(server_ip, Ipv4Addr::new(255, 255, 255, 0)),
        relay_networks: dhcp::PRIVATE_NETWORKS.to_vec(),
        mode,
        boot: boot::Config { http_base: format!("http://{server_ip}"), uefi_loader: boot::UefiLoader::SnpOnly },
        menu_prompt: "parc".into(),
    };
    let sockets = DhcpSockets {
        dhcp: tokio::net::UdpSocket::from_std(bind_dhcp(iface, dhcp::SERVER_PORT)?)?,
        pxe_boot: Some(tokio::net::UdpSocket::from_std(bind_dhcp(iface, dhcp::PXE_BOOT_PORT)?)?),
    };
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        stop.cancel();
    });
    run(sockets, config, rest.first().map(Into::into), &Default::default(), shutdown).await?;
    Ok(())
}

#![no_main]

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;
use parc_pxe::boot;
use parc_pxe::dhcp::{self, lease::Leases, wire, Ipv4Net, Mode, Pool, Port, Request, PRIVATE_NETWORKS};

fuzz_target!(|data: &[u8]| {
    // The first 6 bytes choose where the request came from: hostile sources (loopback,
    // multicast, a public address, another port) must not steer replies either.
    let Some((head, data)) = data.split_first_chunk::<6>() else { return };
    let source =
        SocketAddrV4::new(Ipv4Addr::new(head[0], head[1], head[2], head[3]), u16::from_be_bytes([head[4], head[5]]));
    let Ok(message) = wire::decode(data) else { return };
    // Round trip (hickory's shape). Compared as messages, not bytes: dhcproto keeps relay agent
    // sub-options (82) in a hash map, so their byte order may differ between encodings.
    if let Ok(once) = wire::encode(&message) {
        let a = wire::decode(&once).expect("re-decoding our own encoding");
        let b = wire::decode(&wire::encode(&a).expect("re-encoding")).expect("re-decoding");
        assert_eq!(a, b, "round trip changed the message");
    }
    let server_ip = Ipv4Addr::new(10, 77, 0, 1);
    let network: Ipv4Net = "10.77.0.0/24".parse().unwrap();
    let pool = Pool::new(Ipv4Addr::new(10, 77, 0, 100), Ipv4Addr::new(10, 77, 0, 110), Ipv4Addr::new(255, 255, 255, 0));
    let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    for mode in [Mode::Proxy, Mode::Dhcp(pool)] {
        let config = dhcp::Config {
            server_ip,
            network,
            relay_networks: PRIVATE_NETWORKS.to_vec(),
            mode,
            boot: boot::Config { http_base: "http://10.77.0.1".into(), uefi_loader: boot::UefiLoader::SnpOnly },
            menu_prompt: "parc".into(),
        };
        for source in [source, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68)] {
            for port in [Port::Dhcp, Port::PxeBoot] {
                let request = Request { message: message.clone(), source, port };
                let Some(reply) = dhcp::handle(&config, &Leases::default(), &request, now) else { continue };
                let Some(out) = reply.send else { continue };
                let _ = wire::encode(&out.message);
                assert_allowed(&config, &request, out.to);
            }
        }
    }
});

/// Every reply goes to the imaging network's broadcast on port 68, a relay in an allowed network
/// on port 67, or a client on the imaging network (or, on port 4011, in a relay network) that is
/// the request's own source, on port 68 (4011 for firmware asking from 4011).
fn assert_allowed(config: &dhcp::Config, request: &Request, to: SocketAddrV4) {
    let ip = *to.ip();
    let host = dhcp::dest::is_host_address(ip) && ip != config.server_ip;
    let relay = config.relay_networks.iter().any(|n| n.contains(ip));
    let ok = if ip == Ipv4Addr::BROADCAST {
        to.port() == dhcp::CLIENT_PORT
    } else if to.port() == dhcp::SERVER_PORT {
        host && relay && ip == request.message.giaddr()
    } else if request.port == Port::PxeBoot {
        host && (config.network.contains(ip) || relay)
            && ip == *request.source.ip()
            && (to.port() == dhcp::CLIENT_PORT
                || to.port() == dhcp::PXE_BOOT_PORT && request.source.port() == dhcp::PXE_BOOT_PORT)
    } else {
        host && config.network.contains(ip)
            && ip == *request.source.ip()
            && ip == request.message.ciaddr()
            && to.port() == dhcp::CLIENT_PORT
    };
    assert!(
        ok,
        "reply to {to} for a request from {} with giaddr {} ciaddr {} on {:?}",
        request.source,
        request.message.giaddr(),
        request.message.ciaddr(),
        request.port
    );
}

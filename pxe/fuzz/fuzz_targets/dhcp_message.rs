#![no_main]

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;
use parc_pxe::boot;
use parc_pxe::dhcp::{self, lease::Leases, wire, Mode, Pool, Port, Request};

fuzz_target!(|data: &[u8]| {
    let Ok(message) = wire::decode(data) else { return };
    // Round trip (hickory's shape). Compared as messages, not bytes: dhcproto keeps relay agent
    // sub-options (82) in a hash map, so their byte order may differ between encodings.
    if let Ok(once) = wire::encode(&message) {
        let a = wire::decode(&once).expect("re-decoding our own encoding");
        let b = wire::decode(&wire::encode(&a).expect("re-encoding")).expect("re-decoding");
        assert_eq!(a, b, "round trip changed the message");
    }
    let server_ip = Ipv4Addr::new(10, 77, 0, 1);
    let pool = Pool::new(Ipv4Addr::new(10, 77, 0, 100), Ipv4Addr::new(10, 77, 0, 110), Ipv4Addr::new(255, 255, 255, 0));
    let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    for mode in [Mode::Proxy, Mode::Dhcp(pool)] {
        let config = dhcp::Config {
            server_ip,
            mode,
            boot: boot::Config { http_base: "http://10.77.0.1".into(), uefi_loader: boot::UefiLoader::SnpOnly },
            menu_prompt: "parc".into(),
        };
        for port in [Port::Dhcp, Port::PxeBoot] {
            let request =
                Request { message: message.clone(), source: SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68), port };
            if let Some(reply) = dhcp::handle(&config, &Leases::default(), &request, now) {
                if let Some(out) = reply.send {
                    let _ = wire::encode(&out.message);
                }
            }
        }
    }
});

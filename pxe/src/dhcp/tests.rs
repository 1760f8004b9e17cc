use super::*;
use std::time::UNIX_EPOCH;

const SERVER: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const MAC_A: [u8; 6] = [0x52, 0x54, 0, 0x77, 0, 0x10];
const MAC_B: [u8; 6] = [0x52, 0x54, 0, 0x77, 0, 0x11];

fn boot_cfg() -> boot::Config {
    boot::Config { http_base: "http://10.77.0.1".into(), uefi_loader: boot::UefiLoader::Ipxe }
}

fn pool() -> Pool {
    let mut p =
        Pool::new(Ipv4Addr::new(10, 77, 0, 145), Ipv4Addr::new(10, 77, 0, 200), Ipv4Addr::new(255, 255, 255, 0));
    p.router = Some(SERVER);
    p
}

fn config(mode: Mode) -> Config {
    Config { server_ip: SERVER, mode, boot: boot_cfg(), menu_prompt: "parc".into() }
}

fn t(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
}

fn msg(mac: [u8; 6], ty: MessageType, opts: Vec<DhcpOption>) -> Message {
    let mut m = Message::default();
    m.set_chaddr(&mac).set_xid(0x1234);
    m.opts_mut().insert(DhcpOption::MessageType(ty));
    for o in opts {
        m.opts_mut().insert(o);
    }
    m
}

fn req(m: Message) -> Request {
    Request { message: m, source: SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, CLIENT_PORT), port: Port::Dhcp }
}

fn plain(mac: [u8; 6], ty: MessageType, opts: Vec<DhcpOption>) -> Request {
    req(msg(mac, ty, opts))
}

/// Runs `handle`, applies its lease and returns the reply.
fn step(cfg: &Config, leases: &mut Leases, r: &Request, now: SystemTime) -> Option<Reply> {
    let reply = handle(cfg, leases, r, now)?;
    if let Some(l) = &reply.lease {
        leases.apply(l.clone());
    }
    Some(reply)
}

fn sent(reply: &Option<Reply>) -> &Message {
    &reply.as_ref().expect("no reply").send.as_ref().expect("nothing sent").message
}

fn ty(m: &Message) -> MessageType {
    m.opts().msg_type().unwrap()
}

fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 77, 0, last)
}

#[test]
fn dora_renew_rebind_and_same_address_after_restart() {
    let cfg = config(Mode::Dhcp(pool()));
    let mut leases = Leases::default();
    let offer = step(&cfg, &mut leases, &plain(MAC_A, MessageType::Discover, vec![]), t(0));
    let o = sent(&offer);
    assert_eq!((ty(o), o.yiaddr(), o.siaddr()), (MessageType::Offer, ip(145), SERVER));
    assert_eq!(o.opts().get(OptionCode::AddressLeaseTime), Some(&DhcpOption::AddressLeaseTime(3600)));
    assert_eq!(o.opts().get(OptionCode::BootfileName), None, "not a boot client");
    assert_eq!(offer.as_ref().unwrap().send.as_ref().unwrap().to, SocketAddrV4::new(Ipv4Addr::BROADCAST, 68));
    assert_eq!(leases.get(ip(145)).unwrap().state, LeaseState::Offered);

    let select = vec![DhcpOption::ServerIdentifier(SERVER), DhcpOption::RequestedIpAddress(ip(145))];
    let ack = step(&cfg, &mut leases, &plain(MAC_A, MessageType::Request, select), t(1));
    assert_eq!((ty(sent(&ack)), sent(&ack).yiaddr()), (MessageType::Ack, ip(145)));
    assert_eq!(leases.get(ip(145)).unwrap().state, LeaseState::Bound);
    assert_eq!(leases.get(ip(145)).unwrap().expires, lease::unix(t(1)) + 3600);

    // Renewing: unicast from the address, answered to it.
    let mut renew = msg(MAC_A, MessageType::Request, vec![]);
    renew.set_ciaddr(ip(145));
    let r = Request { message: renew, source: SocketAddrV4::new(ip(145), 68), port: Port::Dhcp };
    let ack = step(&cfg, &mut leases, &r, t(1800));
    assert_eq!(ty(sent(&ack)), MessageType::Ack);
    assert_eq!(ack.as_ref().unwrap().send.as_ref().unwrap().to, SocketAddrV4::new(ip(145), 68));
    assert_eq!(leases.get(ip(145)).unwrap().expires, lease::unix(t(1800)) + 3600);

    // A restart reloads the table from JSON; the client's next DISCOVER gets its address back
    // even though a lower one is free.
    let mut reloaded = Leases::from_json(&leases.to_json()).unwrap();
    let offer = step(&cfg, &mut reloaded, &plain(MAC_B, MessageType::Discover, vec![]), t(1900));
    assert_eq!(sent(&offer).yiaddr(), ip(146));
    let offer = step(&cfg, &mut reloaded, &plain(MAC_A, MessageType::Discover, vec![]), t(1900));
    assert_eq!(sent(&offer).yiaddr(), ip(145));
    assert!(offer.unwrap().lease.is_none(), "re-offering a bound lease keeps it bound");
    // INIT-REBOOT after the restart: ACK.
    let reboot = plain(MAC_A, MessageType::Request, vec![DhcpOption::RequestedIpAddress(ip(145))]);
    assert_eq!(ty(sent(&step(&cfg, &mut reloaded, &reboot, t(2000)))), MessageType::Ack);
}

#[test]
fn requested_address_is_honoured_when_free() {
    let cfg = config(Mode::Dhcp(pool()));
    let mut leases = Leases::default();
    let d = plain(MAC_A, MessageType::Discover, vec![DhcpOption::RequestedIpAddress(ip(150))]);
    assert_eq!(sent(&step(&cfg, &mut leases, &d, t(0))).yiaddr(), ip(150));
    // Out of range or taken: the next free one.
    let d = plain(MAC_B, MessageType::Discover, vec![DhcpOption::RequestedIpAddress(ip(150))]);
    assert_eq!(sent(&step(&cfg, &mut leases, &d, t(0))).yiaddr(), ip(145));
    let d = plain([1, 2, 3, 4, 5, 6], MessageType::Discover, vec![DhcpOption::RequestedIpAddress(ip(9))]);
    assert_eq!(sent(&step(&cfg, &mut leases, &d, t(0))).yiaddr(), ip(146));
}

#[test]
fn request_for_another_server_is_never_answered() {
    let cfg = config(Mode::Dhcp(pool()));
    let mut leases = Leases::default();
    step(&cfg, &mut leases, &plain(MAC_A, MessageType::Discover, vec![]), t(0));
    let other = vec![DhcpOption::ServerIdentifier(ip(2)), DhcpOption::RequestedIpAddress(ip(145))];
    assert!(step(&cfg, &mut leases, &plain(MAC_A, MessageType::Request, other), t(1)).is_none());
    let cfg = config(Mode::Proxy);
    let other = vec![
        DhcpOption::ServerIdentifier(ip(2)),
        DhcpOption::RequestedIpAddress(ip(188)),
        DhcpOption::ClassIdentifier(b"PXEClient:Arch:00007:UNDI:003000".to_vec()),
    ];
    assert!(handle(&cfg, &leases, &plain(MAC_A, MessageType::Request, other), t(1)).is_none());
}

#[test]
fn conflicting_requests_get_nak() {
    let cfg = config(Mode::Dhcp(pool()));
    let mut leases = Leases::default();
    step(&cfg, &mut leases, &plain(MAC_A, MessageType::Discover, vec![]), t(0));
    let sel = |ip| vec![DhcpOption::ServerIdentifier(SERVER), DhcpOption::RequestedIpAddress(ip)];
    step(&cfg, &mut leases, &plain(MAC_A, MessageType::Request, sel(ip(145))), t(0));
    // B asks for A's address, selecting, init-reboot or renewing: NAK, broadcast.
    for r in [
        plain(MAC_B, MessageType::Request, sel(ip(145))),
        plain(MAC_B, MessageType::Request, vec![DhcpOption::RequestedIpAddress(ip(145))]),
        {
            let mut m = msg(MAC_B, MessageType::Request, vec![]);
            m.set_ciaddr(ip(145));
            req(m)
        },
    ] {
        let reply = step(&cfg, &mut leases, &r, t(5));
        assert_eq!(ty(sent(&reply)), MessageType::Nak);
        assert_eq!(sent(&reply).yiaddr(), Ipv4Addr::UNSPECIFIED);
        assert_eq!(reply.unwrap().send.unwrap().to, SocketAddrV4::new(Ipv4Addr::BROADCAST, 68));
    }
    // An address from another network: NAK. One of ours nobody holds: silence (RFC 2131 4.3.2).
    let wrong_net =
        plain(MAC_B, MessageType::Request, vec![DhcpOption::RequestedIpAddress(Ipv4Addr::new(192, 168, 1, 5))]);
    assert_eq!(ty(sent(&step(&cfg, &mut leases, &wrong_net, t(5)))), MessageType::Nak);
    let unknown = plain(MAC_B, MessageType::Request, vec![DhcpOption::RequestedIpAddress(ip(170))]);
    assert!(step(&cfg, &mut leases, &unknown, t(5)).is_none());
    // Selecting an address it was never offered: NAK.
    assert_eq!(
        ty(sent(&step(&cfg, &mut leases, &plain(MAC_B, MessageType::Request, sel(ip(160))), t(5)))),
        MessageType::Nak
    );
    // Once A's lease expires, B may have it.
    let reply = step(
        &cfg,
        &mut leases,
        &plain(MAC_B, MessageType::Discover, vec![DhcpOption::RequestedIpAddress(ip(145))]),
        t(4000),
    );
    assert_eq!(sent(&reply).yiaddr(), ip(145));
}

#[test]
fn decline_quarantines_and_release_keeps_affinity() {
    let cfg = config(Mode::Dhcp(pool()));
    let mut leases = Leases::default();
    step(&cfg, &mut leases, &plain(MAC_A, MessageType::Discover, vec![]), t(0));
    let decline = plain(
        MAC_A,
        MessageType::Decline,
        vec![DhcpOption::ServerIdentifier(SERVER), DhcpOption::RequestedIpAddress(ip(145))],
    );
    let r = step(&cfg, &mut leases, &decline, t(1)).unwrap();
    assert!(r.send.is_none());
    assert_eq!(leases.get(ip(145)).unwrap().state, LeaseState::Declined);
    // Nobody gets .145 while quarantined, not even the decliner.
    assert_eq!(sent(&step(&cfg, &mut leases, &plain(MAC_A, MessageType::Discover, vec![]), t(2))).yiaddr(), ip(146));
    assert_eq!(sent(&step(&cfg, &mut leases, &plain(MAC_B, MessageType::Discover, vec![]), t(2))).yiaddr(), ip(147));
    // A DECLINE from someone else's client changes nothing.
    let forged = plain(MAC_B, MessageType::Decline, vec![DhcpOption::RequestedIpAddress(ip(146))]);
    assert!(step(&cfg, &mut leases, &forged, t(3)).is_none());

    let sel = vec![DhcpOption::ServerIdentifier(SERVER), DhcpOption::RequestedIpAddress(ip(146))];
    step(&cfg, &mut leases, &plain(MAC_A, MessageType::Request, sel), t(3));
    let mut release = msg(MAC_A, MessageType::Release, vec![DhcpOption::ServerIdentifier(SERVER)]);
    release.set_ciaddr(ip(146));
    let r = step(&cfg, &mut leases, &req(release), t(4)).unwrap();
    assert!(r.send.is_none());
    assert_eq!(leases.get(ip(146)).unwrap().state, LeaseState::Released);
    assert_eq!(sent(&step(&cfg, &mut leases, &plain(MAC_A, MessageType::Discover, vec![]), t(5))).yiaddr(), ip(146));
}

#[test]
fn inform_gets_configuration_without_a_lease() {
    let cfg = config(Mode::Dhcp(pool()));
    let mut m = msg(
        MAC_A,
        MessageType::Inform,
        vec![DhcpOption::ClassIdentifier(b"PXEClient:Arch:00000:UNDI:002001".to_vec())],
    );
    m.set_ciaddr(ip(9));
    let r = Request { message: m, source: SocketAddrV4::new(ip(9), 68), port: Port::Dhcp };
    let reply = handle(&cfg, &Leases::default(), &r, t(0)).unwrap();
    let o = &reply.send.as_ref().unwrap().message;
    assert_eq!((ty(o), o.yiaddr(), o.ciaddr()), (MessageType::Ack, Ipv4Addr::UNSPECIFIED, ip(9)));
    assert!(o.opts().get(OptionCode::AddressLeaseTime).is_none());
    assert_eq!(o.opts().get(OptionCode::BootfileName), Some(&DhcpOption::BootfileName(b"undionly.kpxe\0".to_vec())));
    assert_eq!(reply.send.unwrap().to, SocketAddrV4::new(ip(9), 68));
    assert!(reply.lease.is_none());
}

#[test]
fn pool_exhaustion_means_no_offer() {
    let mut p = pool();
    p.last = ip(146);
    let cfg = config(Mode::Dhcp(p));
    let mut leases = Leases::default();
    for (i, mac) in [MAC_A, MAC_B].into_iter().enumerate() {
        let r = step(&cfg, &mut leases, &plain(mac, MessageType::Discover, vec![]), t(0));
        assert_eq!(sent(&r).yiaddr(), ip(145 + i as u8));
    }
    assert!(step(&cfg, &mut leases, &plain([9; 6], MessageType::Discover, vec![]), t(1)).is_none());
    // Offers expire: after the hold, the address can go to someone else.
    assert_eq!(sent(&step(&cfg, &mut leases, &plain([9; 6], MessageType::Discover, vec![]), t(61))).yiaddr(), ip(145));
}

#[test]
fn malformed_and_foreign_requests_are_ignored() {
    let leases = Leases::default();
    for cfg in [config(Mode::Dhcp(pool())), config(Mode::Proxy)] {
        let pxe = || DhcpOption::ClassIdentifier(b"PXEClient:Arch:00000:UNDI:002001".to_vec());
        let mut no_type = msg(MAC_A, MessageType::Discover, vec![pxe()]);
        no_type.opts_mut().remove(OptionCode::MessageType);
        let mut reply_op = msg(MAC_A, MessageType::Discover, vec![pxe()]);
        reply_op.set_opcode(Opcode::BootReply);
        let mut long_hw = msg(MAC_A, MessageType::Discover, vec![pxe()]);
        long_hw.set_chaddr(&[1; 16]);
        let mut offer = msg(MAC_A, MessageType::Offer, vec![pxe()]);
        offer.set_yiaddr(ip(150));
        let mut relayed = msg(MAC_A, MessageType::Request, vec![pxe()]);
        relayed.set_giaddr(ip(254));
        for (name, m) in [("no type", no_type), ("reply op", reply_op), ("16-byte chaddr", long_hw), ("offer", offer)] {
            assert!(handle(&cfg, &leases, &req(m), t(0)).is_none(), "{name} in {:?}", cfg.mode);
        }
        if matches!(cfg.mode, Mode::Dhcp(_)) {
            assert!(handle(&cfg, &leases, &req(relayed), t(0)).is_none());
        }
    }
}

#[test]
fn proxy_mode_answers_only_boot_clients_and_never_with_an_address() {
    let cfg = config(Mode::Proxy);
    let leases = Leases::default();
    for class in [&b"PXELAB-client"[..], b"MSFT 5.0", b"PXEClien", b""] {
        let d = plain(MAC_A, MessageType::Discover, vec![DhcpOption::ClassIdentifier(class.to_vec())]);
        assert!(handle(&cfg, &leases, &d, t(0)).is_none(), "{class:?}");
    }
    assert!(handle(&cfg, &leases, &plain(MAC_A, MessageType::Discover, vec![]), t(0)).is_none());
    // UEFI HTTP boot: URL and HTTPClient in the offer.
    let d = plain(
        MAC_A,
        MessageType::Discover,
        vec![
            DhcpOption::ClassIdentifier(b"HTTPClient:Arch:00016:UNDI:003001".to_vec()),
            DhcpOption::ClientSystemArchitecture(dhcproto::v4::Architecture::from(16)),
        ],
    );
    let r = handle(&cfg, &leases, &d, t(0)).unwrap();
    let o = &r.send.unwrap().message;
    assert_eq!(o.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert_eq!(o.fname_str(), Some(Ok("http://10.77.0.1/ipxe/ipxe.efi")));
    assert_eq!(o.opts().get(OptionCode::ClassIdentifier), Some(&DhcpOption::ClassIdentifier(b"HTTPClient".to_vec())));
}

#[test]
fn handle_is_idempotent() {
    let cfg = config(Mode::Dhcp(pool()));
    let leases = Leases::default();
    let d = plain(
        MAC_A,
        MessageType::Discover,
        vec![DhcpOption::ClassIdentifier(b"PXEClient:Arch:00000:UNDI:002001".to_vec())],
    );
    let a = wire::encode(&handle(&cfg, &leases, &d, t(0)).unwrap().send.unwrap().message).unwrap();
    let b = wire::encode(&handle(&cfg, &leases, &d, t(0)).unwrap().send.unwrap().message).unwrap();
    assert_eq!(a, b);
}

// Golden tests: the reference exchanges of ../shared/lab/reference, extracted by
// pxe/tests/fixtures/extract.py. For every client packet, parc must answer when the reference
// server (10.77.0.1) did, stay silent when it did not, and agree on the fields that decide the
// boot: message type, yiaddr, siaddr, the BOOTP file field, options 54, 60, 97, 67 and 43.

struct Datagram {
    time: f64,
    src: SocketAddrV4,
    dst: SocketAddrV4,
    message: Message,
}

fn fixture(text: &str) -> Vec<Datagram> {
    text.lines()
        .map(|line| {
            let f: Vec<&str> = line.split(' ').collect();
            let bytes: Vec<u8> =
                (0..f[3].len()).step_by(2).map(|i| u8::from_str_radix(&f[3][i..i + 2], 16).unwrap()).collect();
            Datagram {
                time: f[0].parse().unwrap(),
                src: f[1].parse().unwrap(),
                dst: f[2].parse().unwrap(),
                message: wire::decode(&bytes).unwrap(),
            }
        })
        .collect()
}

fn opt(m: &Message, code: OptionCode) -> Option<&DhcpOption> {
    m.opts().get(code)
}

/// Option 43 as (discovery control, menu prompt timeout): the prompt text is the site's.
fn pxe_43(m: &Message) -> Option<(Option<u8>, Option<u8>)> {
    let Some(DhcpOption::VendorExtensions(v)) = opt(m, OptionCode::VendorExtensions) else {
        return None;
    };
    let (mut control, mut timeout, mut i) = (None, None, 0);
    while i + 1 < v.len() && v[i] != pxe_option::END {
        let (code, len) = (v[i], usize::from(v[i + 1]));
        let body = &v[i + 2..(i + 2 + len).min(v.len())];
        match code {
            pxe_option::DISCOVERY_CONTROL => control = body.first().copied(),
            pxe_option::MENU_PROMPT => timeout = body.first().copied(),
            _ => {}
        }
        i += 2 + len;
    }
    Some((control, timeout))
}

fn golden(name: &str, text: &str, cfg: &Config) -> usize {
    let packets = fixture(text);
    let mut leases = Leases::default();
    let mut compared = 0;
    for (i, p) in packets.iter().enumerate() {
        let port = match p.dst.port() {
            SERVER_PORT => Port::Dhcp,
            PXE_BOOT_PORT if p.message.opcode() == Opcode::BootRequest => Port::PxeBoot,
            _ => continue,
        };
        let now = t(p.time as u64);
        let ours = step(cfg, &mut leases, &Request { message: p.message.clone(), source: p.src, port }, now)
            .and_then(|r| r.send);
        let from_reference = |q: &&Datagram| *q.src.ip() == SERVER && q.message.xid() == p.message.xid();
        let same_request =
            |q: &&Datagram| q.message.xid() == p.message.xid() && q.message.opcode() == Opcode::BootRequest;
        let mut reference = packets[i + 1..].iter().take_while(|q| !same_request(q)).find(from_reference);
        if reference.is_none() && ours.is_some() {
            // dnsmasq pings an address for 3 s before offering it, so it answers only a
            // retransmission; parc answers at once. Compare with that later answer.
            reference = packets[i + 1..].iter().find(from_reference);
        }
        let what = format!("{name} packet {i} at {:.3}s ({:?})", p.time, p.message.opts().msg_type());
        let (ours, reference) = match (ours, reference) {
            (None, None) => continue,
            // Through the wire and back, as the client will see it.
            (Some(o), Some(r)) => (wire::decode(&wire::encode(&o.message).unwrap()).unwrap(), &r.message),
            (o, r) => panic!("{what}: parc answered {}, reference {}", o.is_some(), r.is_some()),
        };
        compared += 1;
        assert_eq!(ours.opts().msg_type(), reference.opts().msg_type(), "{what}: type");
        assert_eq!(ours.yiaddr(), reference.yiaddr(), "{what}: yiaddr");
        assert_eq!(ours.siaddr(), reference.siaddr(), "{what}: siaddr");
        let file = |m: &Message| m.fname().unwrap_or_default().split(|&b| b == 0).next().unwrap_or_default().to_vec();
        assert_eq!(file(&ours), file(reference), "{what}: file");
        for code in [OptionCode::ServerIdentifier, OptionCode::ClientMachineIdentifier, OptionCode::BootfileName] {
            assert_eq!(opt(&ours, code), opt(reference, code), "{what}: option {code:?}");
        }
        let ipxe = matches!(opt(&p.message, OptionCode::UserClass), Some(DhcpOption::UserClass(u)) if u == b"iPXE");
        match (opt(&ours, OptionCode::ClassIdentifier), opt(reference, OptionCode::ClassIdentifier)) {
            (a, b) if a == b => {}
            // Deliberate: iPXE in DHCP mode gets PXEClient, saving its 3 s ProxyDHCP wait.
            (Some(DhcpOption::ClassIdentifier(a)), None) if ipxe && a == b"PXEClient" => {}
            (a, b) => panic!("{what}: option 60 {a:?}, reference {b:?}"),
        }
        match (pxe_43(&ours), pxe_43(reference)) {
            (a, b) if a == b => {}
            // Deliberate: iPXE always gets "boot the file now"; the reference sends it only with
            // a PXE menu configured.
            (Some((Some(pxe_option::USE_BOOT_FILE), Some(0))), None) if ipxe => {}
            (a, b) => panic!("{what}: option 43 {a:?}, reference {b:?}"),
        }
    }
    compared
}

#[test]
fn golden_proxy_exchanges() {
    let cfg = config(Mode::Proxy);
    assert_eq!(golden("proxy-bios", include_str!("../../tests/fixtures/proxy-bios.dhcp"), &cfg), 2);
    assert_eq!(golden("proxy-uefi", include_str!("../../tests/fixtures/proxy-uefi.dhcp"), &cfg), 3);
}

#[test]
fn golden_full_exchanges() {
    let cfg = config(Mode::Dhcp(pool()));
    assert!(golden("full-bios", include_str!("../../tests/fixtures/full-bios.dhcp"), &cfg) >= 4);
    assert!(golden("full-uefi", include_str!("../../tests/fixtures/full-uefi.dhcp"), &cfg) >= 6);
}

#[test]
fn golden_replies_encode_and_decode() {
    for text in [
        include_str!("../../tests/fixtures/proxy-bios.dhcp"),
        include_str!("../../tests/fixtures/proxy-uefi.dhcp"),
        include_str!("../../tests/fixtures/full-bios.dhcp"),
        include_str!("../../tests/fixtures/full-uefi.dhcp"),
    ] {
        for p in fixture(text) {
            let bytes = wire::encode(&p.message).unwrap();
            let again = wire::decode(&bytes).unwrap();
            assert_eq!(wire::encode(&again).unwrap(), bytes);
        }
    }
}

/// Stable-toolchain companion of `pxe/fuzz`: mutated captures never panic the decoder or
/// `handle` (the fuzz target found dhcproto panics on option 94 with a bad length).
#[test]
fn mutated_captures_never_panic() {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let cfgs = [config(Mode::Proxy), config(Mode::Dhcp(pool()))];
    let leases = Leases::default();
    for text in
        [include_str!("../../tests/fixtures/proxy-uefi.dhcp"), include_str!("../../tests/fixtures/full-bios.dhcp")]
    {
        for line in text.lines() {
            let hex = line.split(' ').nth(3).unwrap();
            let orig: Vec<u8> =
                (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect();
            for _ in 0..300 {
                let mut m = orig.clone();
                for _ in 0..1 + rnd() % 4 {
                    let i = (rnd() as usize) % m.len();
                    m[i] = rnd() as u8;
                }
                if rnd() % 4 == 0 {
                    m.truncate((rnd() as usize) % m.len());
                }
                let Ok(msg) = wire::decode(&m) else { continue };
                for cfg in &cfgs {
                    for port in [Port::Dhcp, Port::PxeBoot] {
                        let r = Request {
                            message: msg.clone(),
                            source: SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68),
                            port,
                        };
                        if let Some(Reply { send: Some(out), .. }) = handle(cfg, &leases, &r, t(0)) {
                            wire::encode(&out.message).unwrap();
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn long_boot_urls_go_to_option_67() {
    let mut cfg = config(Mode::Proxy);
    cfg.boot.http_base = format!("http://parc.imaging.{}.example:8080", "x".repeat(120));
    let d = plain(
        MAC_A,
        MessageType::Discover,
        vec![
            DhcpOption::ClassIdentifier(b"PXEClient:Arch:00000:UNDI:002001".to_vec()),
            DhcpOption::UserClass(b"iPXE".to_vec()),
        ],
    );
    let o = handle(&cfg, &Leases::default(), &d, t(0)).unwrap().send.unwrap().message;
    let Some(DhcpOption::BootfileName(f)) = o.opts().get(OptionCode::BootfileName) else { panic!("no option 67") };
    assert!(f.ends_with(b"/boot.ipxe\0"));
    wire::encode(&o).unwrap();
}

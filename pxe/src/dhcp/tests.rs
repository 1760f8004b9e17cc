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
    Config {
        server_ip: SERVER,
        network: "10.77.0.0/24".parse().unwrap(),
        relay_networks: PRIVATE_NETWORKS.to_vec(),
        mode,
        boot: boot_cfg(),
        menu_prompt: "parc".into(),
    }
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
        let in_67 = |m: &Message| match opt(m, OptionCode::BootfileName) {
            Some(DhcpOption::BootfileName(f)) => f.split(|&b| b == 0).next().unwrap_or_default().to_vec(),
            _ => Vec::new(),
        };
        // Deliberate: in DHCP mode the boot file is in the `file` field as well as option 67
        // (shim reads only the field for the directory it fetches GRUB from).
        let copied = file(reference).is_empty() && !ours.yiaddr().is_unspecified() && file(&ours) == in_67(&ours);
        assert!(
            file(&ours) == file(reference) || copied,
            "{what}: file {:?}, reference {:?}",
            file(&ours),
            file(reference)
        );
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

/// Stable-toolchain companion of `pxe/fuzz`: mutated captures from random sources never panic
/// the decoder or `handle` (the fuzz target found dhcproto panics on option 94 with a bad
/// length), and their replies go only where [`assert_allowed`] says.
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
                let source = SocketAddrV4::new(Ipv4Addr::from(rnd() as u32), rnd() as u16);
                for cfg in &cfgs {
                    for source in [source, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68)] {
                        for port in [Port::Dhcp, Port::PxeBoot] {
                            let r = Request { message: msg.clone(), source, port };
                            if let Some(Reply { send: Some(out), .. }) = handle(cfg, &leases, &r, t(0)) {
                                wire::encode(&out.message).unwrap();
                                assert_allowed(cfg, &r, out.to);
                            }
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

// Where replies go (issue #12: a fuzzer made the ProxyDHCP server send offers to 224.0.0.1,
// 127.0.0.1 and public addresses).

/// The same check as `pxe/fuzz/fuzz_targets/dhcp_message.rs`: every reply goes to
/// 255.255.255.255:68, to the request's relay on port 67 inside the relay networks, or to the
/// request's own source, on the imaging network (on port 4011 also in a relay network), on port
/// 68 (4011 only for firmware that asked from 4011).
fn assert_allowed(cfg: &Config, r: &Request, to: SocketAddrV4) {
    let ip = *to.ip();
    let host = dest::is_host_address(ip) && ip != cfg.server_ip && ip != Ipv4Addr::new(10, 77, 0, 255);
    let relay = cfg.relay_networks.iter().any(|n| n.contains(ip));
    let ok = if ip == Ipv4Addr::BROADCAST {
        to.port() == CLIENT_PORT
    } else if to.port() == SERVER_PORT {
        host && relay && ip == r.message.giaddr()
    } else if r.port == Port::PxeBoot {
        let port_ok = to.port() == CLIENT_PORT || (to.port() == PXE_BOOT_PORT && r.source.port() == PXE_BOOT_PORT);
        host && (cfg.network.contains(ip) || relay) && ip == *r.source.ip() && port_ok
    } else {
        let own = ip == *r.source.ip() && ip == r.message.ciaddr();
        host && cfg.network.contains(ip) && own && to.port() == CLIENT_PORT
    };
    assert!(
        ok,
        "reply to {to} for a request from {} (giaddr {}, ciaddr {}, {:?})",
        r.source,
        r.message.giaddr(),
        r.message.ciaddr(),
        r.port
    );
}

const BIOS_PXE: &[u8] = b"PXEClient:Arch:00000:UNDI:002001";

fn addr(s: &str) -> SocketAddrV4 {
    s.parse().unwrap()
}

/// A BIOS PXE DISCOVER (answered in both modes) with `giaddr`, from `source`.
fn discover_via(giaddr: &str, source: &str) -> Request {
    let mut m = msg(MAC_A, MessageType::Discover, vec![DhcpOption::ClassIdentifier(BIOS_PXE.to_vec())]);
    m.set_giaddr(giaddr.parse::<Ipv4Addr>().unwrap());
    if giaddr == "0.0.0.0" {
        m.set_flags(Flags::default().set_broadcast());
    }
    Request { message: m, source: addr(source), port: Port::Dhcp }
}

/// The PXE firmware's REQUEST to the boot server on port 4011, from `source`.
fn boot_request_from(source: &str) -> Request {
    let mut m = msg(MAC_A, MessageType::Request, vec![DhcpOption::ClassIdentifier(BIOS_PXE.to_vec())]);
    m.set_ciaddr(*addr(source).ip());
    Request { message: m, source: addr(source), port: Port::PxeBoot }
}

/// An INFORM naming `ciaddr`, from `source`.
fn inform(ciaddr: &str, source: &str) -> Request {
    let mut m = msg(MAC_A, MessageType::Inform, vec![DhcpOption::ClassIdentifier(BIOS_PXE.to_vec())]);
    m.set_ciaddr(ciaddr.parse::<Ipv4Addr>().unwrap());
    Request { message: m, source: addr(source), port: Port::Dhcp }
}

/// A named request, the configuration it meets, where its reply goes and why it goes nowhere.
type Case<'a> = (&'static str, &'a Config, Request, Option<SocketAddrV4>, Option<Refusal>);

#[test]
fn replies_go_only_where_they_should() {
    let proxy = config(Mode::Proxy);
    let full = config(Mode::Dhcp(pool()));
    let mut public_site = config(Mode::Proxy);
    public_site.relay_networks.push("198.51.100.0/24".parse().unwrap());
    let mut no_relays = config(Mode::Proxy);
    no_relays.relay_networks.clear();
    let bcast = Some(addr("255.255.255.255:68"));
    let relay_no_host = |ip: &str| Some(Refusal::RelayNotHost { giaddr: ip.parse().unwrap() });
    let source_no_host = |ip: &str| Some(Refusal::SourceNotHost { sender: ip.parse().unwrap() });
    let unrelayed = |m: &str| {
        let mut d = discover_via("0.0.0.0", "0.0.0.0:68");
        d.message.set_ciaddr(m.parse::<Ipv4Addr>().unwrap());
        d
    };
    let cases: Vec<Case> = vec![
        // Relayed requests: only to a relay of an allowed network, on port 67.
        ("relayed from 10.20.0.1", &proxy, discover_via("10.20.0.1", "10.20.0.1:67"), Some(addr("10.20.0.1:67")), None),
        ("relay port is 67", &proxy, discover_via("10.20.0.1", "10.20.0.1:9999"), Some(addr("10.20.0.1:67")), None),
        ("giaddr multicast", &proxy, discover_via("224.0.0.1", "0.0.0.0:68"), None, relay_no_host("224.0.0.1")),
        ("giaddr loopback", &proxy, discover_via("127.0.0.1", "0.0.0.0:68"), None, relay_no_host("127.0.0.1")),
        (
            "giaddr broadcast",
            &proxy,
            discover_via("255.255.255.255", "0.0.0.0:68"),
            None,
            relay_no_host("255.255.255.255"),
        ),
        ("giaddr reserved", &proxy, discover_via("240.0.0.1", "0.0.0.0:68"), None, relay_no_host("240.0.0.1")),
        ("giaddr this network", &proxy, discover_via("0.1.2.3", "0.0.0.0:68"), None, relay_no_host("0.1.2.3")),
        ("giaddr link-local", &proxy, discover_via("169.254.1.1", "0.0.0.0:68"), None, relay_no_host("169.254.1.1")),
        ("giaddr parc itself", &proxy, discover_via("10.77.0.1", "0.0.0.0:68"), None, relay_no_host("10.77.0.1")),
        (
            "giaddr subnet broadcast",
            &proxy,
            discover_via("10.77.0.255", "0.0.0.0:68"),
            None,
            relay_no_host("10.77.0.255"),
        ),
        (
            "giaddr public, not listed",
            &proxy,
            discover_via("8.8.8.8", "8.8.8.8:67"),
            None,
            Some(Refusal::RelayNotAllowed { giaddr: Ipv4Addr::new(8, 8, 8, 8) }),
        ),
        (
            "giaddr public, listed",
            &public_site,
            discover_via("198.51.100.1", "198.51.100.1:67"),
            Some(addr("198.51.100.1:67")),
            None,
        ),
        (
            "relays disabled",
            &no_relays,
            discover_via("10.20.0.1", "10.20.0.1:67"),
            None,
            Some(Refusal::RelayNotAllowed { giaddr: Ipv4Addr::new(10, 20, 0, 1) }),
        ),
        // Not relayed: broadcast, as before.
        ("giaddr 0, broadcast flag", &proxy, discover_via("0.0.0.0", "0.0.0.0:68"), bcast, None),
        ("dhcp mode offer", &full, discover_via("0.0.0.0", "0.0.0.0:68"), bcast, None),
        ("dhcp mode, ciaddr multicast", &full, unrelayed("224.0.0.1"), bcast, None),
        ("dhcp mode, ciaddr public", &full, unrelayed("8.8.8.8"), bcast, None),
        // Sources no client has.
        ("source loopback", &proxy, discover_via("0.0.0.0", "127.0.0.1:68"), None, source_no_host("127.0.0.1")),
        ("source multicast", &proxy, discover_via("0.0.0.0", "224.0.0.1:68"), None, source_no_host("224.0.0.1")),
        (
            "source broadcast",
            &full,
            discover_via("0.0.0.0", "255.255.255.255:68"),
            None,
            source_no_host("255.255.255.255"),
        ),
        ("source parc", &full, discover_via("0.0.0.0", "10.77.0.1:68"), None, source_no_host("10.77.0.1")),
        // Port 4011: back to the firmware, on 4011 if it asked from there, else 68.
        ("4011 from 4011", &proxy, boot_request_from("10.77.0.188:4011"), Some(addr("10.77.0.188:4011")), None),
        ("4011 from 68", &proxy, boot_request_from("10.77.0.188:68"), Some(addr("10.77.0.188:68")), None),
        ("4011 from 9999", &proxy, boot_request_from("10.77.0.188:9999"), Some(addr("10.77.0.188:68")), None),
        ("4011 routed client", &proxy, boot_request_from("10.20.0.50:4011"), Some(addr("10.20.0.50:4011")), None),
        (
            "4011 public source",
            &proxy,
            boot_request_from("8.8.8.8:4011"),
            None,
            Some(Refusal::SourceNotAllowed { sender: Ipv4Addr::new(8, 8, 8, 8) }),
        ),
        ("4011 from loopback", &proxy, boot_request_from("127.0.0.1:4011"), None, source_no_host("127.0.0.1")),
        ("4011 from multicast", &proxy, boot_request_from("224.0.0.1:4011"), None, source_no_host("224.0.0.1")),
        ("4011 subnet broadcast", &proxy, boot_request_from("10.77.0.255:4011"), None, source_no_host("10.77.0.255")),
        // INFORM: to the client itself, on the imaging network, on port 68.
        ("inform", &full, inform("10.77.0.9", "10.77.0.9:68"), Some(addr("10.77.0.9:68")), None),
        ("inform from port 9999", &full, inform("10.77.0.9", "10.77.0.9:9999"), Some(addr("10.77.0.9:68")), None),
        (
            "inform ciaddr not source",
            &full,
            inform("10.77.0.9", "10.77.0.50:68"),
            None,
            Some(Refusal::ClientNotSource { ciaddr: ip(9), sender: ip(50) }),
        ),
        (
            "inform ciaddr multicast",
            &full,
            inform("224.0.0.1", "10.77.0.50:68"),
            None,
            Some(Refusal::ClientNotSource { ciaddr: Ipv4Addr::new(224, 0, 0, 1), sender: ip(50) }),
        ),
        (
            "inform off the imaging network",
            &full,
            inform("192.168.5.5", "192.168.5.5:68"),
            None,
            Some(Refusal::ClientOffNetwork { ciaddr: Ipv4Addr::new(192, 168, 5, 5), network: full.network }),
        ),
        ("inform from loopback", &full, inform("127.0.0.1", "127.0.0.1:68"), None, source_no_host("127.0.0.1")),
        (
            "inform to 4011, from 9999",
            &proxy,
            {
                let mut r = inform("10.77.0.9", "10.77.0.9:9999");
                r.port = Port::PxeBoot;
                r
            },
            Some(addr("10.77.0.9:68")),
            None,
        ),
    ];
    let mut wrong = Vec::new();
    for (name, cfg, r, to, refused) in &cases {
        let Some(reply) = handle(cfg, &Leases::default(), r, t(0)) else {
            wrong.push(format!("{name}: not answered at all"));
            continue;
        };
        let sent = reply.send.as_ref().map(|o| o.to);
        if (sent, reply.refused) != (*to, *refused) {
            wrong.push(format!("{name}: sent to {sent:?}, refused {:?}; expected {to:?}, {refused:?}", reply.refused));
        }
        if reply.refused.is_some() {
            assert!(reply.send.is_none() && reply.lease.is_none(), "{name}: a refused reply sends and records nothing");
        }
        if let Some(out) = &reply.send {
            assert_allowed(cfg, r, out.to);
        }
    }
    assert!(wrong.is_empty(), "{} of {} cases wrong:\n{}", wrong.len(), cases.len(), wrong.join("\n"));
}

#[test]
fn relayed_offer_keeps_the_relay_and_the_dhcp_mode_ignores_it() {
    let o = handle(&config(Mode::Proxy), &Leases::default(), &discover_via("10.20.0.1", "10.20.0.1:67"), t(0)).unwrap();
    let out = o.send.unwrap();
    assert_eq!(
        (ty(&out.message), out.message.giaddr(), out.to),
        (MessageType::Offer, Ipv4Addr::new(10, 20, 0, 1), addr("10.20.0.1:67"))
    );
    // DHCP mode serves the imaging network only: a relayed request is not for it.
    assert!(handle(&config(Mode::Dhcp(pool())), &Leases::default(), &discover_via("10.20.0.1", "10.20.0.1:67"), t(0))
        .is_none());
}

#[test]
fn refusals_tell_the_technician_what_to_do() {
    let e = Refusal::RelayNotAllowed { giaddr: Ipv4Addr::new(8, 8, 8, 8) }.to_string();
    assert!(e.contains("8.8.8.8") && e.contains("relay_networks") && e.contains("parc.toml"), "{e}");
}

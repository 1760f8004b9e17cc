//! parc's DHCP server in network namespaces the test creates (never on a real interface):
//! busybox udhcpc gets a lease in DHCP mode, renews it, and gets the same address back after
//! parc restarts; a PXE client replayed from the reference capture gets ProxyDHCP answers on
//! ports 67 and 4011 while a flood of malformed packets runs.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parc_pxe::boot;
use parc_pxe::dhcp::dhcproto::v4::{DhcpOption, MessageType, OptionCode};
use parc_pxe::dhcp::{self, wire, Mode, Pool};
use parc_pxe::server::dhcp::{bind_dhcp, run, DhcpSockets};
use parc_pxe::sightings::Sightings;
use tokio_util::sync::CancellationToken;

use super::have;
use super::lab::{run_ok, Lab};

const SERVER: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);

/// parc's DHCP server in the `srv` namespace, on its own runtime.
struct DhcpServer {
    rt: tokio::runtime::Runtime,
    shutdown: CancellationToken,
    handle: tokio::task::JoinHandle<Result<(), parc_pxe::server::dhcp::DhcpServerError>>,
    /// What the server saw network-booting.
    sightings: Arc<Sightings>,
}

impl DhcpServer {
    fn start(lab: &Lab, mode: Mode, lease_file: Option<PathBuf>) -> Self {
        let (dhcp_std, pxe_std) =
            Lab::inside(&lab.srv, || (bind_dhcp("veth0", 67).unwrap(), bind_dhcp("veth0", 4011).unwrap()));
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        let sightings = Arc::new(Sightings::default());
        let config = dhcp::Config {
            server_ip: SERVER,
            network: dhcp::Ipv4Net::of(SERVER, Ipv4Addr::new(255, 255, 255, 0)),
            relay_networks: dhcp::PRIVATE_NETWORKS.to_vec(),
            mode,
            boot: boot::Config { http_base: "http://10.99.0.1:8080".into(), uefi_loader: boot::UefiLoader::SnpOnly },
            menu_prompt: "parc".into(),
        };
        let handle = {
            let _guard = rt.enter();
            let sockets = DhcpSockets {
                dhcp: tokio::net::UdpSocket::from_std(dhcp_std).unwrap(),
                pxe_boot: Some(tokio::net::UdpSocket::from_std(pxe_std).unwrap()),
            };
            let seen = sightings.clone();
            rt.spawn(async move { run(sockets, config, lease_file, &seen, shutdown).await })
        };
        DhcpServer { rt, shutdown: stop, handle, sightings }
    }

    fn stop(self) {
        self.shutdown.cancel();
        let r = self.rt.block_on(async { tokio::time::timeout(Duration::from_secs(5), self.handle).await });
        r.expect("DHCP server did not stop").expect("DHCP server panicked").expect("DHCP server failed");
    }
}

/// busybox udhcpc in the `cli` namespace; its script logs every event and configures veth1.
struct Udhcpc {
    child: Child,
    log: PathBuf,
}

impl Udhcpc {
    fn start(lab: &Lab, dir: &Path, requested: Option<&str>) -> Self {
        let log = dir.join("events.log");
        let script = dir.join("script.sh");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\necho \"$1 $ip $serverid\" >> {log}\ncase \"$1\" in\n  \
                 bound|renew) ip addr flush dev \"$interface\"; ip addr add \"$ip/$mask\" dev \"$interface\" ;;\n  \
                 deconfig) ip addr flush dev \"$interface\" ;;\nesac\n",
                log = log.display()
            ),
        )
        .unwrap();
        run_ok(&["chmod", "+x", script.to_str().unwrap()]);
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &lab.cli]);
        // Debian's `udhcpc` package links the applet; plain `busybox` has it too.
        if !super::installed("udhcpc") {
            cmd.arg("busybox");
        }
        cmd.args(["udhcpc", "-f", "-i", "veth1", "-t", "10", "-T", "1", "-s"]).arg(&script);
        if let Some(ip) = requested {
            cmd.args(["-r", ip]);
        }
        let child = cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        Udhcpc { child, log }
    }

    fn events(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log).unwrap_or_default().lines().map(str::to_owned).collect()
    }

    /// Waits until the log holds `count` lines starting with `event`; returns the last.
    fn wait_for(&self, event: &str, count: usize) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let matching: Vec<String> = self.events().into_iter().filter(|l| l.starts_with(event)).collect();
            if matching.len() >= count {
                return matching[count - 1].clone();
            }
            assert!(Instant::now() < deadline, "no {event} #{count} from udhcpc; events: {:?}", self.events());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn signal(&self, sig: libc::c_int) {
        // `ip netns exec` execs udhcpc, so the child's pid is udhcpc's.
        // SAFETY: sending a signal to our own child.
        unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
    }
}

impl Drop for Udhcpc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn udhcpc_lease_renew_and_same_address_after_restart() {
    if !super::installed("udhcpc") && !have("busybox", "busybox") {
        return;
    }
    let Some(lab) = Lab::new("dhcp") else { return };
    let dir = tempfile::tempdir().unwrap();
    let leases = dir.path().join("leases.json");
    let mode = || {
        Mode::Dhcp(Pool::new(
            Ipv4Addr::new(10, 99, 0, 100),
            Ipv4Addr::new(10, 99, 0, 200),
            Ipv4Addr::new(255, 255, 255, 0),
        ))
    };

    let server = DhcpServer::start(&lab, mode(), Some(leases.clone()));
    let started = Instant::now();
    let client = Udhcpc::start(&lab, dir.path(), Some("10.99.0.150"));
    assert_eq!(client.wait_for("bound", 1), "bound 10.99.0.150 10.99.0.1");
    eprintln!("udhcpc bound in {:.3} s", started.elapsed().as_secs_f64());
    client.signal(libc::SIGUSR1);
    assert_eq!(client.wait_for("renew", 1), "renew 10.99.0.150 10.99.0.1");

    // Restart parc: the lease file carries the lease over.
    server.stop();
    let saved = std::fs::read_to_string(&leases).unwrap();
    assert!(saved.contains("10.99.0.150") && saved.contains("bound"), "{saved}");
    let server = DhcpServer::start(&lab, mode(), Some(leases.clone()));
    client.signal(libc::SIGUSR1);
    assert_eq!(client.wait_for("renew", 2), "renew 10.99.0.150 10.99.0.1");

    // A fresh client run that asks for nothing in particular gets its address back, although
    // .100 is free: the lease table remembers the machine.
    drop(client);
    std::fs::remove_file(dir.path().join("events.log")).unwrap();
    let client = Udhcpc::start(&lab, dir.path(), None);
    assert_eq!(client.wait_for("bound", 1), "bound 10.99.0.150 10.99.0.1");
    drop(client);
    server.stop();
}

fn fixture_requests(text: &str) -> Vec<(u16, Vec<u8>)> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let dst: SocketAddr = f[2].parse().unwrap();
            let bytes: Vec<u8> =
                (0..f[3].len()).step_by(2).map(|i| u8::from_str_radix(&f[3][i..i + 2], 16).unwrap()).collect();
            (bytes[0] == 1).then_some((dst.port(), bytes))
        })
        .collect()
}

/// Sends `request` and waits for its answer, sending again after 1, 2, 3 and 4 s as PXE
/// firmware does (PXE 2.1, boot server discovery): a server that stalls still fails this.
fn ask(sock: &UdpSocket, request: &[u8], to: SocketAddr, xid: u32) -> Option<dhcp::dhcproto::v4::Message> {
    (1..=4).find_map(|secs| {
        sock.send_to(request, to).unwrap();
        recv_reply_within(sock, xid, Duration::from_secs(secs))
    })
}

fn recv_reply(sock: &UdpSocket, xid: u32) -> Option<dhcp::dhcproto::v4::Message> {
    recv_reply_within(sock, xid, Duration::from_millis(500))
}

fn recv_reply_within(sock: &UdpSocket, xid: u32, wait: Duration) -> Option<dhcp::dhcproto::v4::Message> {
    let deadline = Instant::now() + wait;
    let mut buf = [0u8; 1500];
    while Instant::now() < deadline {
        if let Ok((n, _)) = sock.recv_from(&mut buf) {
            if let Ok(m) = wire::decode(&buf[..n]) {
                if m.xid() == xid {
                    return Some(m);
                }
            }
        }
    }
    None
}

#[test]
fn proxy_dhcp_answers_pxe_firmware_on_67_and_4011_under_a_flood() {
    let Some(lab) = Lab::new("proxy") else { return };
    run_ok(&["ip", "-n", &lab.cli, "addr", "add", "10.99.0.188/24", "dev", "veth1"]);
    let server = DhcpServer::start(&lab, Mode::Proxy, None);
    let packets = fixture_requests(include_str!("../../../pxe/tests/fixtures/proxy-uefi.dhcp"));
    let (discover, boot_request) = (packets[0].1.clone(), packets.iter().find(|p| p.0 == 4011).unwrap().1.clone());
    let non_pxe = packets.last().unwrap().1.clone(); // the booted system's udhcpc: "PXELAB-client"

    Lab::inside(&lab.cli, || {
        let s68 = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
        s68.set_reuse_address(true).unwrap();
        s68.set_broadcast(true).unwrap();
        s68.bind_device(Some(b"veth1")).unwrap();
        s68.bind(&SocketAddr::from(([0, 0, 0, 0], 68)).into()).unwrap();
        let s68: UdpSocket = s68.into();
        s68.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let s4011 = UdpSocket::bind("10.99.0.188:4011").unwrap();
        s4011.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let bcast = SocketAddr::from(([255, 255, 255, 255], 67));

        // A flood of garbage and truncated/oversized/overflowing DHCP messages first.
        let flood = UdpSocket::bind("10.99.0.188:0").unwrap();
        flood.set_broadcast(true).unwrap();
        let mut overflow = discover.clone();
        overflow.truncate(240);
        overflow.extend_from_slice(&[60, 250, b'P']); // option length past the end
        let mut oversized = discover.clone();
        oversized.resize(4000, 0xff);
        let garbage = [
            vec![],
            vec![1; 10],
            discover[..200].to_vec(),
            discover[..241].to_vec(),
            overflow,
            oversized,
            vec![2; 600],
        ];
        for _ in 0..200 {
            for g in &garbage {
                let _ = flood.send_to(g, SocketAddr::from((SERVER, 67)));
                let _ = flood.send_to(g, SocketAddr::from((SERVER, 4011)));
                let _ = flood.send_to(g, bcast);
            }
        }

        // OVMF's DISCOVER: a ProxyDHCP OFFER without address or file. Like firmware, the client
        // sends again when no answer comes: under a flood the kernel may drop its first packet
        // from the server's full receive queue, which is UDP, not a fault of the server.
        let xid = wire::decode(&discover).unwrap().xid();
        let offer = ask(&s68, &discover, bcast, xid).expect("no OFFER to the PXE DISCOVER");
        assert_eq!(offer.opts().msg_type(), Some(MessageType::Offer));
        assert_eq!((offer.yiaddr(), offer.siaddr()), (Ipv4Addr::UNSPECIFIED, SERVER));
        assert_eq!(
            offer.opts().get(OptionCode::ClassIdentifier),
            Some(&DhcpOption::ClassIdentifier(b"PXEClient".to_vec()))
        );

        // Its REQUEST to port 4011: an ACK naming the UEFI loader, back to port 4011.
        let xid = wire::decode(&boot_request).unwrap().xid();
        let ack = ask(&s4011, &boot_request, SocketAddr::from((SERVER, 4011)), xid).expect("no ACK on port 4011");
        assert_eq!(ack.opts().msg_type(), Some(MessageType::Ack));
        assert_eq!(ack.fname_str().and_then(Result::ok).map(|f| f.trim_end_matches('\0')), Some("snponly.efi"));
        assert_eq!(ack.siaddr(), SERVER);

        // A client that is not a PXE client gets nothing at all.
        s68.send_to(&non_pxe, bcast).unwrap();
        assert!(recv_reply(&s68, wire::decode(&non_pxe).unwrap().xid()).is_none());
    });
    // The firmware's exchange is the evidence the web server asks for: its MAC, from the address
    // it asked port 4011 from; nobody else's address counts.
    let mac = parc_pxe::sightings::mac_of(&wire::decode(&discover).unwrap());
    let client = Ipv4Addr::new(10, 99, 0, 188);
    assert_eq!(server.sightings.evidence(mac, client), Some(parc_pxe::sightings::Evidence::DhcpExchange));
    assert_eq!(server.sightings.evidence(mac, Ipv4Addr::new(10, 99, 0, 189)), None);
    server.stop();
}

/// `parc serve`'s entry point in one piece: ProxyDHCP tells OVMF (replayed) which loader to
/// fetch and from where, and tftp-hpa in the client namespace fetches it from that address.
#[test]
fn serve_gives_firmware_a_loader_it_can_fetch() {
    if !have("tftp", "tftp-hpa") {
        return;
    }
    let Some(lab) = Lab::new("serve") else { return };
    run_ok(&["ip", "-n", &lab.cli, "addr", "add", "10.99.0.188/24", "dev", "veth1"]);
    let root = tempfile::tempdir().unwrap();
    let loader: Vec<u8> = (0..300_000u32).map(|i| (i * 31 % 256) as u8).collect();
    std::fs::write(root.path().join("snponly.efi"), &loader).unwrap();
    let scripts = Arc::new(super::tftp::Scripts::default());
    let config = parc_pxe::server::PxeConfig {
        interface: "veth0".into(),
        mode: parc_pxe::server::PxeMode::Proxy,
        tftp_root: root.path().to_owned(),
        netboot_dir: None,
        grub_scripts: Some(scripts.clone()),
        http_base: "http://10.99.0.1:8080".into(),
        uefi_loader: boot::UefiLoader::SnpOnly,
        lease_file: root.path().join("leases.json"),
        tftp: Default::default(),
        tftp_port: 69,
        relay_networks: dhcp::PRIVATE_NETWORKS.to_vec(),
        sightings: Arc::default(),
    };
    let sightings = config.sightings.clone();
    let shutdown = CancellationToken::new();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        let srv_ns = lab.srv.clone();
        let stop = shutdown.clone();
        let server = s.spawn(move || {
            Lab::inside(&srv_ns, || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                rt.block_on(async {
                    let serving = parc_pxe::server::serve(config, stop);
                    ready_tx.send(()).unwrap();
                    serving.await
                })
            })
        });
        ready_rx.recv().unwrap();
        // A failed assertion stops the server too, or the scope would wait for it forever.
        let _stop = shutdown.clone().drop_guard();
        let packets = fixture_requests(include_str!("../../../pxe/tests/fixtures/proxy-uefi.dhcp"));
        let boot_request = packets.iter().find(|p| p.0 == 4011).unwrap().1.clone();
        let ack = Lab::inside(&lab.cli, || {
            let s4011 = UdpSocket::bind("10.99.0.188:4011").unwrap();
            s4011.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
            let xid = wire::decode(&boot_request).unwrap().xid();
            // The server may still be binding: ask until it answers.
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                s4011.send_to(&boot_request, SocketAddr::from((SERVER, 4011))).unwrap();
                if let Some(ack) = recv_reply(&s4011, xid) {
                    break ack;
                }
                assert!(Instant::now() < deadline, "no answer on port 4011");
            }
        });
        let file = ack.fname_str().and_then(Result::ok).unwrap().trim_end_matches('\0').to_owned();
        assert_eq!(file, "snponly.efi");
        let tftp_get = |file: &str, to: &Path| {
            let o = Command::new("ip")
                .args(["netns", "exec", &lab.cli, "tftp", &ack.siaddr().to_string(), "-m", "binary", "-c", "get", file])
                .arg(to)
                .output()
                .unwrap();
            assert!(o.status.success(), "{o:?}");
        };
        // A GRUB script asked for by MAC is served, but it is no evidence of a network boot:
        // otherwise whoever asks twice would get a boot credential.
        let script = root.path().join("script");
        // (tftp-hpa reads "a:b" as host:file: the MAC is written with dashes.)
        tftp_get("grub/parc/02-00-00-00-00-09", &script);
        assert!(std::fs::read_to_string(&script).unwrap().contains("script for 02:00:00:00:00:09"));
        let asked = scripts.asked.lock().unwrap().clone();
        assert_eq!(asked, [("02:00:00:00:00:09".parse().unwrap(), Ipv4Addr::new(10, 99, 0, 188))]);
        assert_eq!(sightings.evidence([2, 0, 0, 0, 0, 9], Ipv4Addr::new(10, 99, 0, 188)), None);
        let got = root.path().join("got.efi");
        tftp_get(&file, &got);
        assert!(std::fs::read(&got).unwrap() == loader, "loader differs");
        // The loader fetch counts for its address (any MAC: TFTP names none), no other address.
        let client = Ipv4Addr::new(10, 99, 0, 188);
        assert!(sightings.evidence([2, 0, 0, 0, 0, 9], client).is_some());
        assert_eq!(sightings.evidence([2, 0, 0, 0, 0, 9], Ipv4Addr::new(10, 99, 0, 77)), None);
        shutdown.cancel();
        server.join().unwrap().expect("serve failed");
    });
}

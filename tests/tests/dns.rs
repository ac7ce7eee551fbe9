//! The embedded DNS with names shared by many containers: an alias answers every address that
//! holds it, on every host; `<name>.<network>` answers as Docker does; an answer that does not fit
//! in UDP is truncated with the TC bit and comes whole over TCP.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use weft_dns::codec::{TYPE_A, is_truncated, parse_answers, query_packet};
use weft_tests::VirtualHosts;
use weft_tests::cluster::{WeftCluster, stderr, stdout};

fn ips_of(cluster: &WeftCluster<'_>, host: usize, name: &str) -> String {
    let c: serde_json::Value = serde_json::from_str(&cluster.weft_ok(host, &["inspect", name])).unwrap();
    c[0]["networks"][0]["ips"][0].as_str().unwrap().to_string()
}

#[test]
fn a_shared_alias_answers_every_address_and_big_answers_come_over_tcp() {
    let bed = VirtualHosts::new(2);
    let cluster = WeftCluster::new(&bed);
    cluster.form(1, 1);
    cluster.import_busybox(&[0, 1]);
    cluster.weft_ok(0, &["network", "create", "--driver", "overlay", "--subnet", "10.99.0.0/16", "app"]);
    let mut want = Vec::new();
    for (host, name) in [(0, "web1"), (0, "web2"), (1, "web3")] {
        cluster.weft_ok(
            host,
            &[
                "run",
                "-d",
                "--name",
                name,
                "--network",
                "app",
                "--network-alias",
                "svc",
                "busybox",
                "sleep",
                "3600",
            ],
        );
        want.push(ips_of(&cluster, host, name));
    }
    // A container's own name stays its own.
    let taken = cluster.weft(
        1,
        &["run", "-d", "--name", "x", "--network", "app", "--network-alias", "web1", "busybox", "true"],
    );
    assert_eq!(taken.status.code(), Some(125), "{}", stderr(&taken));
    cluster.weft_ok(1, &["run", "-d", "--name", "client", "--network", "app", "busybox", "sleep", "3600"]);
    cluster.eventually("nslookup svc answers all three", Duration::from_secs(10), || {
        let out = cluster.weft(1, &["exec", "client", "nslookup", "svc"]);
        want.iter().all(|ip| stdout(&out).contains(ip.as_str()))
    });
    let qualified = cluster.weft(1, &["exec", "client", "nslookup", "web1.app"]);
    assert!(stdout(&qualified).contains(&want[0]), "{}", stdout(&qualified));

    // Sixty containers behind one alias: 512 bytes of UDP hold fewer, TCP holds all.
    let mut many = Vec::new();
    for i in 0..60 {
        let name = format!("m{i}");
        cluster.weft_ok(
            0,
            &[
                "run",
                "-d",
                "--name",
                &name,
                "--network",
                "app",
                "--network-alias",
                "many",
                "busybox",
                "sleep",
                "3600",
            ],
        );
        many.push(ips_of(&cluster, 0, &name).parse::<IpAddr>().unwrap());
    }
    let inspect: serde_json::Value =
        serde_json::from_str(&cluster.weft_ok(0, &["network", "inspect", "app"])).unwrap();
    let gateway: IpAddr = inspect[0]["gateways"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|g| g.as_str().unwrap().strip_prefix("h0="))
        .unwrap()
        .parse()
        .unwrap();
    let server = SocketAddr::new(gateway, 53);
    let (udp, tcp) = bed.host(0).run(move || {
        let query = query_packet(7, "many", TYPE_A);
        let udp = std::net::UdpSocket::bind(SocketAddr::new(gateway, 0)).unwrap();
        udp.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let mut got = None;
        for _ in 0..20 {
            udp.send_to(&query, server).unwrap();
            let mut buf = [0u8; 4096];
            if let Ok(n) = udp.recv(&mut buf) {
                let reply = buf[..n].to_vec();
                if parse_answers(&reply).is_ok_and(|(_, ips)| !ips.is_empty()) && is_truncated(&reply) {
                    got = Some(reply);
                    break;
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let udp_reply = got.expect("a truncated UDP answer");
        let mut stream = std::net::TcpStream::connect_timeout(&server, Duration::from_secs(3)).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        stream.write_all(&(query.len() as u16).to_be_bytes()).unwrap();
        stream.write_all(&query).unwrap();
        let mut len = [0u8; 2];
        stream.read_exact(&mut len).unwrap();
        let mut tcp_reply = vec![0u8; u16::from_be_bytes(len) as usize];
        stream.read_exact(&mut tcp_reply).unwrap();
        (udp_reply, tcp_reply)
    });
    assert!(udp.len() <= 512, "{} bytes over UDP", udp.len());
    let (_, partial) = parse_answers(&udp).unwrap();
    assert!(partial.len() < 60, "{}", partial.len());
    assert!(!is_truncated(&tcp));
    let (rcode, mut all) = parse_answers(&tcp).unwrap();
    assert_eq!(rcode, 0);
    all.sort();
    many.sort();
    assert_eq!(all, many, "TCP carries every address");
}

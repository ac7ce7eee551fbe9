//! The server: one UDP socket per listening address (a network's gateway on this host), bound
//! with IP_FREEBIND so it can start before the bridge holds the address. Names come from the
//! latest [`Zones`]; anything else with a dot in it is forwarded to the upstream resolvers.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use weft_ipam::Cidr;

use crate::codec::{self, Rcode};

/// How long an upstream resolver gets to answer a forwarded query.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(2);

/// The names of one network, as its DNS server answers them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Zone {
    /// The network's subnets: only clients inside them are answered.
    pub clients: Vec<Cidr>,
    /// Lower-case name or alias to addresses.
    pub names: HashMap<String, Vec<IpAddr>>,
}

/// Every zone this host serves, by the address it is served on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Zones {
    /// Listening address (a gateway) to the zone answered there.
    pub by_listen: BTreeMap<IpAddr, Arc<Zone>>,
}

/// What the server decides for one query. Pure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Send these bytes back.
    Reply(Vec<u8>),
    /// Ask the upstream resolvers.
    Forward,
    /// Say nothing (not a query we can even answer with an error).
    Drop,
}

/// Decides how to answer `packet` from `client` with `zone`.
pub fn decide(zone: &Zone, client: IpAddr, packet: &[u8]) -> Decision {
    let query = match codec::parse_query(packet) {
        Ok(q) => q,
        Err(_) => return codec::format_error(packet).map_or(Decision::Drop, Decision::Reply),
    };
    if !zone.clients.iter().any(|c| c.contains(client)) {
        return Decision::Reply(codec::error(packet, &query, Rcode::Refused));
    }
    if let Some(ips) = zone.names.get(&query.name) {
        return Decision::Reply(codec::answer(packet, &query, ips));
    }
    if !query.name.contains('.') {
        // A single label that is no container of this network: no upstream knows it either.
        return Decision::Reply(codec::error(packet, &query, Rcode::NxDomain));
    }
    Decision::Forward
}

/// The name servers of a resolv.conf text.
pub fn upstreams_of(resolv_conf: &str) -> Vec<SocketAddr> {
    resolv_conf
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|a| a.trim().parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

fn bind(addr: IpAddr) -> std::io::Result<UdpSocket> {
    let socket =
        Socket::new(Domain::for_address(SocketAddr::new(addr, 53)), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv4() {
        socket.set_freebind_v4(true)?;
    } else {
        socket.set_freebind_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&SocketAddr::new(addr, 53).into())?;
    UdpSocket::from_std(socket.into())
}

async fn forward(packet: &[u8], upstreams: &[SocketAddr]) -> Option<Vec<u8>> {
    for upstream in upstreams {
        let local: SocketAddr =
            if upstream.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
        let Ok(socket) = UdpSocket::bind(local).await else { continue };
        if socket.send_to(packet, upstream).await.is_err() {
            continue;
        }
        let mut buf = vec![0u8; 4096];
        if let Ok(Ok((n, from))) = tokio::time::timeout(FORWARD_TIMEOUT, socket.recv_from(&mut buf)).await
            && from == *upstream
        {
            buf.truncate(n);
            return Some(buf);
        }
    }
    None
}

async fn serve(
    listen: IpAddr,
    socket: UdpSocket,
    zones: watch::Receiver<Arc<Zones>>,
    upstreams: Arc<Vec<SocketAddr>>,
) {
    let socket = Arc::new(socket);
    let mut buf = vec![0u8; 4096];
    loop {
        let (n, client) = match socket.recv_from(&mut buf).await {
            Ok(got) => got,
            Err(e) => {
                tracing::debug!(%listen, error = %e, "dns receive failed");
                continue;
            }
        };
        let packet = buf[..n].to_vec();
        let Some(zone) = zones.borrow().by_listen.get(&listen).cloned() else { continue };
        match decide(&zone, client.ip(), &packet) {
            Decision::Reply(reply) => {
                let _ = socket.send_to(&reply, client).await;
            }
            Decision::Drop => {}
            Decision::Forward => {
                let (socket, upstreams) = (socket.clone(), upstreams.clone());
                tokio::spawn(async move {
                    let reply = match forward(&packet, &upstreams).await {
                        Some(reply) => reply,
                        None => match codec::parse_query(&packet) {
                            Ok(q) => codec::error(&packet, &q, Rcode::ServFail),
                            Err(_) => return,
                        },
                    };
                    let _ = socket.send_to(&reply, client).await;
                });
            }
        }
    }
}

/// Serves every zone of `zones` on its listening address until `stop` turns true, opening and
/// closing sockets as zones come and go. Forwards to `upstreams`.
pub async fn run(
    mut zones: watch::Receiver<Arc<Zones>>,
    upstreams: Vec<SocketAddr>,
    mut stop: watch::Receiver<bool>,
) {
    let upstreams = Arc::new(upstreams);
    let mut servers: BTreeMap<IpAddr, JoinHandle<()>> = BTreeMap::new();
    let mut retry = tokio::time::interval(Duration::from_secs(2));
    loop {
        let wanted: Vec<IpAddr> = zones.borrow_and_update().by_listen.keys().copied().collect();
        servers.retain(|addr, task| {
            let keep = wanted.contains(addr) && !task.is_finished();
            if !keep {
                task.abort();
            }
            keep
        });
        for addr in wanted {
            if servers.contains_key(&addr) {
                continue;
            }
            match bind(addr) {
                Ok(socket) => {
                    tracing::debug!(%addr, "dns listening");
                    servers.insert(addr, tokio::spawn(serve(addr, socket, zones.clone(), upstreams.clone())));
                }
                Err(e) => tracing::warn!(%addr, error = %e, "dns cannot listen; retrying"),
            }
        }
        tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            changed = zones.changed() => if changed.is_err() { break },
            _ = retry.tick() => {}
        }
    }
    for (_, task) in servers {
        task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{TYPE_A, parse_answers, query_packet};

    fn zone() -> Zone {
        Zone {
            clients: vec!["10.44.0.0/16".parse().unwrap()],
            names: HashMap::from([("db".to_string(), vec!["10.44.1.2".parse().unwrap()])]),
        }
    }

    fn reply(d: Decision) -> (u16, Vec<IpAddr>) {
        match d {
            Decision::Reply(bytes) => parse_answers(&bytes).unwrap(),
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    #[test]
    fn names_answered_only_inside_the_network() {
        let inside: IpAddr = "10.44.0.5".parse().unwrap();
        let q = query_packet(1, "db", TYPE_A);
        assert_eq!(reply(decide(&zone(), inside, &q)), (0, vec!["10.44.1.2".parse().unwrap()]));
        assert_eq!(reply(decide(&zone(), "10.45.0.5".parse().unwrap(), &q)).0, Rcode::Refused as u16);
        assert_eq!(reply(decide(&zone(), inside, &query_packet(2, "web", TYPE_A))).0, 3);
        assert_eq!(decide(&zone(), inside, &query_packet(3, "example.org", TYPE_A)), Decision::Forward);
        assert_eq!(reply(decide(&zone(), inside, &[0, 1, 2])).0, 1);
        assert_eq!(decide(&zone(), inside, &[0]), Decision::Drop);
    }

    #[test]
    fn upstreams_from_resolv_conf() {
        let text = "# x\nsearch lan\nnameserver 192.0.2.53\nnameserver  2001:db8::53 \nnameserver bogus\n";
        assert_eq!(
            upstreams_of(text),
            vec!["192.0.2.53:53".parse().unwrap(), "[2001:db8::53]:53".parse().unwrap()]
        );
    }
}

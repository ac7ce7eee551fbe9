//! The server: one UDP socket and one TCP listener per listening address (a network's gateway on
//! this host), bound with IP_FREEBIND so they can start before the bridge holds the address.
//! Names come from the latest [`Zones`]; a name shared by several containers (an alias) answers
//! all their addresses, rotated from one query to the next; an answer too big for UDP is
//! truncated with the TC bit, and the client gets it whole over TCP. Anything else with a dot in
//! it is forwarded to the upstream resolvers.
//!
//! The codec is weft's own ([`crate::codec`]): it answers A and AAAA for its zones and passes
//! everything else through untouched, which a few hundred lines do; a full DNS library
//! (hickory) would bring a resolver and a server weft does not use.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
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

/// Decides how to answer `packet` from `client` with `zone`, over TCP or UDP (which bounds the
/// reply's size); `rotation` turns the order of a name's addresses (round robin).
pub fn decide(zone: &Zone, client: IpAddr, packet: &[u8], tcp: bool, rotation: usize) -> Decision {
    let query = match codec::parse_query(packet) {
        Ok(q) => q,
        Err(_) => return codec::format_error(packet).map_or(Decision::Drop, Decision::Reply),
    };
    if !zone.clients.iter().any(|c| c.contains(client)) {
        return Decision::Reply(codec::error(packet, &query, Rcode::Refused));
    }
    if let Some(ips) = zone.names.get(&query.name) {
        let mut ips = ips.clone();
        if !ips.is_empty() {
            let by = rotation % ips.len();
            ips.rotate_left(by);
        }
        return Decision::Reply(codec::answer(packet, &query, &ips, codec::reply_limit(&query, tcp)));
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

/// A non-blocking socket bound to `addr`:53 with IP_FREEBIND (the gateway may not be there yet).
fn bound_socket(addr: IpAddr, kind: Type, protocol: Protocol) -> std::io::Result<Socket> {
    let at = SocketAddr::new(addr, 53);
    let socket = Socket::new(Domain::for_address(at), kind, Some(protocol))?;
    if addr.is_ipv4() {
        socket.set_freebind_v4(true)?;
    } else {
        socket.set_freebind_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&at.into())?;
    Ok(socket)
}

fn bind(addr: IpAddr) -> std::io::Result<UdpSocket> {
    UdpSocket::from_std(bound_socket(addr, Type::DGRAM, Protocol::UDP)?.into())
}

fn bind_tcp(addr: IpAddr) -> std::io::Result<TcpListener> {
    let socket = bound_socket(addr, Type::STREAM, Protocol::TCP)?;
    socket.listen(64)?;
    TcpListener::from_std(socket.into())
}

/// How long a TCP client may take to send its query.
const TCP_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Answers DNS over TCP (RFC 7766: each message after a two-byte length) on one listener.
async fn serve_tcp(
    listen: IpAddr,
    listener: TcpListener,
    zones: watch::Receiver<Arc<Zones>>,
    upstreams: Arc<Vec<SocketAddr>>,
    rotation: Arc<std::sync::atomic::AtomicUsize>,
) {
    loop {
        let Ok((mut stream, client)) = listener.accept().await else { continue };
        let (zones, upstreams, rotation) = (zones.clone(), upstreams.clone(), rotation.clone());
        tokio::spawn(async move {
            loop {
                let mut len = [0u8; 2];
                let read = async {
                    stream.read_exact(&mut len).await?;
                    let mut packet = vec![0u8; usize::from(u16::from_be_bytes(len))];
                    stream.read_exact(&mut packet).await?;
                    Ok::<_, std::io::Error>(packet)
                };
                let Ok(Ok(packet)) = tokio::time::timeout(TCP_READ_TIMEOUT, read).await else { return };
                let Some(zone) = zones.borrow().by_listen.get(&listen).cloned() else { return };
                let turn = rotation.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let reply = match decide(&zone, client.ip(), &packet, true, turn) {
                    Decision::Reply(reply) => reply,
                    Decision::Drop => return,
                    Decision::Forward => match forward(&packet, &upstreams).await {
                        Some(reply) => reply,
                        None => match codec::parse_query(&packet) {
                            Ok(q) => codec::error(&packet, &q, Rcode::ServFail),
                            Err(_) => return,
                        },
                    },
                };
                let Ok(len) = u16::try_from(reply.len()) else { return };
                if stream.write_all(&len.to_be_bytes()).await.is_err()
                    || stream.write_all(&reply).await.is_err()
                {
                    return;
                }
            }
        });
    }
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
    let rotation = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let tcp = match bind_tcp(listen) {
        Ok(listener) => Some(tokio::spawn(serve_tcp(
            listen,
            listener,
            zones.clone(),
            upstreams.clone(),
            rotation.clone(),
        ))),
        Err(e) => {
            tracing::warn!(%listen, error = %e, "dns over tcp cannot listen");
            None
        }
    };
    // The TCP side ends with this task.
    struct AbortOnDrop(Option<JoinHandle<()>>);
    impl Drop for AbortOnDrop {
        fn drop(&mut self) {
            if let Some(task) = self.0.take() {
                task.abort();
            }
        }
    }
    let _tcp = AbortOnDrop(tcp);
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
        let turn = rotation.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match decide(&zone, client.ip(), &packet, false, turn) {
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
        assert_eq!(reply(decide(&zone(), inside, &q, false, 0)), (0, vec!["10.44.1.2".parse().unwrap()]));
        assert_eq!(
            reply(decide(&zone(), "10.45.0.5".parse().unwrap(), &q, false, 0)).0,
            Rcode::Refused as u16
        );
        assert_eq!(reply(decide(&zone(), inside, &query_packet(2, "web", TYPE_A), false, 0)).0, 3);
        assert_eq!(
            decide(&zone(), inside, &query_packet(3, "example.org", TYPE_A), false, 0),
            Decision::Forward
        );
        assert_eq!(reply(decide(&zone(), inside, &[0, 1, 2], false, 0)).0, 1);
        assert_eq!(decide(&zone(), inside, &[0], false, 0), Decision::Drop);
    }

    #[test]
    fn a_shared_name_answers_every_address_rotated_per_query() {
        let ips: Vec<IpAddr> =
            ["10.44.1.2", "10.44.2.2", "10.44.3.2"].iter().map(|i| i.parse().unwrap()).collect();
        let zone = Zone { clients: zone().clients, names: HashMap::from([("svc".to_string(), ips.clone())]) };
        let inside: IpAddr = "10.44.0.5".parse().unwrap();
        let q = query_packet(1, "svc", TYPE_A);
        let (_, first) = reply(decide(&zone, inside, &q, false, 0));
        let (_, second) = reply(decide(&zone, inside, &q, false, 1));
        assert_eq!(first, ips);
        assert_eq!(second, vec![ips[1], ips[2], ips[0]]);
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

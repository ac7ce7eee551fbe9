//! Which names this host's embedded DNS answers where: for every user-defined network this host
//! holds a block of, the gateway addresses of its blocks serve the names, aliases and short ids
//! of every endpoint of that network, on every host. Pure; `weft_dns::run` serves it.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use weft_dns::{Zone, Zones};
use weft_ipam::Cidr;
use weft_state::{NodeId, State};

/// The zones node `me` serves. The default `bridge` network has none, as in Docker.
pub fn zones(state: &State, me: NodeId) -> Zones {
    let mut by_listen: BTreeMap<IpAddr, Arc<Zone>> = BTreeMap::new();
    for network in state.networks() {
        if network.name == weft_overlay::desired::DEFAULT_BRIDGE_NETWORK {
            continue;
        }
        let gateways: Vec<IpAddr> =
            state.blocks(network.id).iter().filter(|b| b.node == me).filter_map(|b| b.cidr.nth(1)).collect();
        if gateways.is_empty() {
            continue;
        }
        let mut names: HashMap<String, Vec<IpAddr>> = HashMap::new();
        for endpoint in state.network_endpoints(network.id) {
            let short = endpoint.container_id.chars().take(12).collect::<String>();
            let keys = std::iter::once(&endpoint.name).chain(&endpoint.aliases).filter(|n| !n.is_empty());
            for key in keys.cloned().chain(std::iter::once(short)) {
                let key = key.to_ascii_lowercase();
                // Docker answers `<name>.<network>` too.
                let qualified = format!("{key}.{}", network.name.to_ascii_lowercase());
                for name in [key, qualified] {
                    names.entry(name).or_default().extend(endpoint.ips.iter().copied());
                }
            }
        }
        let clients: Vec<Cidr> = network.subnets.clone();
        let zone = Arc::new(Zone { clients, names });
        for gateway in gateways {
            by_listen.insert(gateway, zone.clone());
        }
    }
    Zones { by_listen }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_state::{Driver, Role, cmd};

    #[test]
    fn names_of_every_host_served_on_local_gateways() {
        let mut s = State::new();
        for id in 1..=2 {
            s.apply(&cmd::register_node(id, &format!("h{id}"), &format!("198.51.100.{id}"), Role::Worker, 0))
                .unwrap();
        }
        s.apply(&cmd::create_network("app", Driver::Overlay, &["10.44.0.0/16"], 0, 0)).unwrap();
        s.apply(&cmd::create_network("other", Driver::Overlay, &["10.45.0.0/16"], 0, 0)).unwrap();
        s.apply(&cmd::allocate_endpoint("app", 1, "aaaaaaaaaaaaaaaa", "web", "")).unwrap();
        s.apply(&cmd::allocate_endpoint("app", 2, "bbbbbbbbbbbbbbbb", "db", "")).unwrap();
        s.apply(&cmd::allocate_endpoint("other", 2, "cccccccccccccccc", "cache", "")).unwrap();
        let z = zones(&s, 1);
        assert_eq!(z.by_listen.len(), 1, "host 1 holds a block of app only");
        let zone = &z.by_listen[&"10.44.0.1".parse::<IpAddr>().unwrap()];
        assert_eq!(zone.names["db"], vec!["10.44.1.2".parse::<IpAddr>().unwrap()]);
        assert!(zone.names.contains_key("bbbbbbbbbbbb"));
        assert_eq!(zone.names["db.app"], zone.names["db"], "<name>.<network> as Docker answers it");
        assert!(!zone.names.contains_key("cache"));
        assert_eq!(zones(&s, 2).by_listen.len(), 2);
    }
}

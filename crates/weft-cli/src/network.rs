//! `weft network`: create, ls, inspect, rm, connect, disconnect.

use clap::{Subcommand, ValueEnum};
use weft_proto::v1 as pb;

use crate::failure::Failure;
use crate::output::{Format, json, print_table};
use crate::rpc::{Api, ClusterApi, err};

/// `--driver`'s values.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub(crate) enum DriverArg {
    Bridge,
    Overlay,
}

/// `weft network ...`
#[derive(Debug, Subcommand)]
pub(crate) enum NetworkCommand {
    /// Creates a network.
    Create {
        /// overlay (every host, VXLAN) or bridge (a local bridge on each host).
        #[arg(short, long, value_enum, default_value = "bridge")]
        driver: DriverArg,
        /// Subnet in CIDR form, one per address family (default: a free /16 from 10.44.0.0 up).
        #[arg(long)]
        subnet: Vec<String>,
        /// Not settable in weft: every host's gateway is the first address of its own block (see
        /// `network inspect`); given, the command is refused.
        #[arg(long)]
        gateway: Option<String>,
        /// No traffic to or from outside the network.
        #[arg(long)]
        internal: bool,
        /// Labels, KEY=VALUE.
        #[arg(long)]
        label: Vec<String>,
        /// The network's name.
        name: String,
    },
    /// Lists networks.
    #[command(alias = "list")]
    Ls {
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Shows networks with their endpoints on every host (JSON).
    Inspect {
        /// Network names.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Removes networks (refused while containers use them).
    Rm {
        /// Network names.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Connects a running container to a network.
    Connect {
        /// Another name for the container on this network.
        #[arg(long)]
        alias: Vec<String>,
        /// A fixed address.
        #[arg(long)]
        ip: Option<String>,
        /// The network.
        network: String,
        /// The container.
        container: String,
    },
    /// The path between two containers (or hosts), checked hop by hop: what blocks it.
    Why(crate::why::WhyArgs),
    /// Disconnects a container from a network.
    Disconnect {
        /// The network.
        network: String,
        /// The container.
        container: String,
    },
}

/// A network driver's name as `network ls` prints it.
fn driver_name(driver: i32) -> &'static str {
    match pb::NetworkDriver::try_from(driver) {
        Ok(pb::NetworkDriver::Overlay) => "overlay",
        Ok(pb::NetworkDriver::Bridge) => "bridge",
        _ => "?",
    }
}

/// One network with its endpoints and address counts, as `network inspect` prints it.
fn network_json(info: &pb::NetworkInfo) -> serde_json::Value {
    let n = info.network.clone().unwrap_or_default();
    let endpoints: Vec<serde_json::Value> = info
        .endpoints
        .iter()
        .map(|e| {
            let ep = e.endpoint.clone().unwrap_or_default();
            serde_json::json!({
                "id": ep.id, "container": ep.container_id, "name": ep.name, "aliases": ep.aliases,
                "ips": ep.ips, "mac": ep.mac, "node": e.node_name,
            })
        })
        .collect();
    serde_json::json!({
        "id": n.id, "name": n.name, "driver": driver_name(n.driver), "subnets": n.subnets,
        "vni": n.vni, "internal": n.internal,
        "labels": n.labels.iter().map(|l| (l.key.clone(), serde_json::Value::from(l.value.clone()))).collect::<serde_json::Map<_, _>>(),
        "gateways": info.gateways, "addresses_used": info.used, "addresses_free": info.free,
        "addresses": info.addresses.iter().map(|a| serde_json::json!({
            "subnet": a.subnet, "family": a.family, "block_len": a.block_len,
            "usable": a.usable, "used": a.used, "free": a.free,
        })).collect::<Vec<_>>(),
        "endpoints": endpoints,
    })
}

/// Runs a `network` verb.
pub(crate) async fn network(
    api: &mut Api,
    cluster: &mut ClusterApi,
    command: NetworkCommand,
) -> Result<u8, Failure> {
    match command {
        NetworkCommand::Why(args) => return crate::why::why(cluster, args).await,
        NetworkCommand::Create { driver, subnet, gateway, internal, label, name } => {
            if let Some(g) = gateway {
                return Err(format!(
                    "--gateway {g}: weft routes per host, so each host's gateway is the first address of its own block of the subnet (`weft network inspect` lists them); drop --gateway"
                ).into());
            }
            let mut labels = Vec::new();
            for l in label {
                let (key, value) =
                    l.split_once('=').ok_or_else(|| format!("--label {l:?}: expected KEY=VALUE"))?;
                labels.push(pb::Label { key: key.into(), value: value.into() });
            }
            let driver = match driver {
                DriverArg::Bridge => pb::NetworkDriver::Bridge,
                DriverArg::Overlay => pb::NetworkDriver::Overlay,
            } as i32;
            let request = pb::CreateNetworkRequest { name, driver, subnets: subnet, internal, labels };
            let info = api.create_network(request).await.map_err(err)?.into_inner();
            let n = info.network.unwrap_or_default();
            println!("{} {} {}", n.name, driver_name(n.driver), n.subnets.join(","));
        }
        NetworkCommand::Ls { format } => {
            let list = api.list_networks(pb::Empty {}).await.map_err(err)?.into_inner();
            if format == Format::Json {
                json(&list.networks.iter().map(network_json).collect::<Vec<_>>());
                return Ok(0);
            }
            let rows = list
                .networks
                .iter()
                .map(|i| {
                    let n = i.network.clone().unwrap_or_default();
                    vec![
                        n.name,
                        driver_name(n.driver).into(),
                        n.subnets.join(","),
                        if n.vni == 0 { "-".into() } else { n.vni.to_string() },
                        if n.internal { "yes".into() } else { "no".into() },
                        i.endpoints.len().to_string(),
                    ]
                })
                .collect();
            print_table(&["NAME", "DRIVER", "SUBNET", "VNI", "INTERNAL", "ENDPOINTS"], rows);
        }
        NetworkCommand::Inspect { names } => {
            let mut out = Vec::new();
            for name in names {
                out.push(network_json(
                    &api.inspect_network(pb::NetworkRef { name }).await.map_err(err)?.into_inner(),
                ));
            }
            json(&out);
        }
        NetworkCommand::Rm { names } => {
            for name in names {
                api.remove_network(pb::NetworkRef { name: name.clone() }).await.map_err(err)?;
                println!("{name}");
            }
        }
        NetworkCommand::Connect { alias, ip, network, container } => {
            let request =
                pb::ConnectRequest { network, container, aliases: alias, ip: ip.unwrap_or_default() };
            let c = api.connect_network(request).await.map_err(err)?.into_inner();
            println!("{}", c.name);
        }
        NetworkCommand::Disconnect { network, container } => {
            let request = pb::ConnectRequest { network, container, ..Default::default() };
            let c = api.disconnect_network(request).await.map_err(err)?.into_inner();
            println!("{}", c.name);
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use clap::error::ErrorKind;

    use super::*;
    use crate::Command;
    use crate::tests::{command, refusal};

    fn verb(line: &[&str]) -> NetworkCommand {
        match command(line) {
            Command::Network(c) => c,
            other => panic!("not a network verb: {other:?}"),
        }
    }

    #[test]
    fn network_create_takes_its_flags_and_defaults_to_bridge() {
        let line = ["network", "create", "-d", "overlay", "--subnet", "10.1.0.0/16", "--subnet", "fd00::/64"];
        let line = [&line[..], &["--internal", "--label", "a=b", "app"]].concat();
        let NetworkCommand::Create { driver, subnet, gateway, internal, label, name } = verb(&line) else {
            panic!("not create");
        };
        assert_eq!(driver, DriverArg::Overlay);
        assert_eq!(subnet, ["10.1.0.0/16", "fd00::/64"]);
        assert_eq!(gateway, None);
        assert!(internal);
        assert_eq!(label, ["a=b"]);
        assert_eq!(name, "app");
        let NetworkCommand::Create { driver, subnet, internal, .. } = verb(&["network", "create", "n"])
        else {
            panic!("not create");
        };
        assert_eq!(driver, DriverArg::Bridge);
        assert!(subnet.is_empty() && !internal);
        // --gateway parses, so that the verb can say why weft refuses it.
        assert!(matches!(
            verb(&["network", "create", "--gateway", "10.1.0.1", "n"]),
            NetworkCommand::Create { gateway: Some(_), .. }
        ));
        assert_eq!(refusal(&["network", "create", "-d", "macvlan", "n"]), ErrorKind::InvalidValue);
        assert_eq!(refusal(&["network", "create"]), ErrorKind::MissingRequiredArgument);
    }

    #[test]
    fn the_other_network_verbs_parse() {
        assert!(matches!(verb(&["network", "list"]), NetworkCommand::Ls { format: Format::Table }));
        assert!(matches!(
            verb(&["network", "ls", "--format", "json"]),
            NetworkCommand::Ls { format: Format::Json }
        ));
        assert!(matches!(
            verb(&["network", "inspect", "a", "b"]),
            NetworkCommand::Inspect { names } if names.len() == 2
        ));
        assert!(matches!(verb(&["network", "rm", "a"]), NetworkCommand::Rm { names } if names == ["a"]));
        let NetworkCommand::Connect { alias, ip, network, container } =
            verb(&["network", "connect", "--alias", "x", "--alias", "y", "--ip", "10.1.0.9", "app", "c"])
        else {
            panic!("not connect");
        };
        assert_eq!(
            (alias, ip, network, container),
            (vec!["x".into(), "y".into()], Some("10.1.0.9".into()), "app".into(), "c".into())
        );
        assert!(matches!(
            verb(&["network", "disconnect", "app", "c"]),
            NetworkCommand::Disconnect { network, container } if network == "app" && container == "c"
        ));
        assert_eq!(refusal(&["network", "connect", "app"]), ErrorKind::MissingRequiredArgument);
        assert_eq!(refusal(&["network", "rm"]), ErrorKind::MissingRequiredArgument);
    }

    #[test]
    fn a_network_in_json() {
        let info = pb::NetworkInfo {
            network: Some(pb::Network {
                id: 7,
                name: "app".into(),
                driver: pb::NetworkDriver::Overlay as i32,
                subnets: vec!["10.1.0.0/16".into()],
                vni: 4097,
                internal: true,
                labels: vec![pb::Label { key: "team".into(), value: "db".into() }],
                ..Default::default()
            }),
            gateways: vec!["h1=10.1.0.1".into()],
            endpoints: vec![pb::EndpointInfo {
                endpoint: Some(pb::Endpoint {
                    name: "web".into(),
                    ips: vec!["10.1.0.2".into()],
                    ..Default::default()
                }),
                node_name: "h1".into(),
            }],
            used: 1,
            free: 2,
            ..Default::default()
        };
        let json = network_json(&info);
        assert_eq!(json["name"], "app");
        assert_eq!(json["driver"], "overlay");
        assert_eq!(json["vni"], 4097);
        assert_eq!(json["internal"], true);
        assert_eq!(json["labels"], serde_json::json!({"team": "db"}));
        assert_eq!(json["gateways"], serde_json::json!(["h1=10.1.0.1"]));
        assert_eq!(json["endpoints"][0]["name"], "web");
        assert_eq!(json["endpoints"][0]["node"], "h1");
        assert_eq!(json["endpoints"][0]["ips"], serde_json::json!(["10.1.0.2"]));
        assert_eq!((json["addresses_used"].as_u64(), json["addresses_free"].as_u64()), (Some(1), Some(2)));
        assert_eq!(driver_name(pb::NetworkDriver::Bridge as i32), "bridge");
        assert_eq!(driver_name(99), "?");
    }
}

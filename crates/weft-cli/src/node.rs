//! `weft node`: ls, inspect, promote, demote, rm, over the cluster API.

use clap::Subcommand;
use weft_proto::v1 as pb;

use crate::failure::Failure;
use crate::output::{Format, print_table};
use crate::rpc::{ClusterApi, err};

/// `weft node ...`
#[derive(Debug, Subcommand)]
pub(crate) enum NodeCommand {
    /// Lists nodes: role, status, raft membership, leader, applied index and lag.
    #[command(alias = "list")]
    Ls {
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Shows one node (JSON).
    Inspect {
        /// Node name or id.
        node: String,
    },
    /// Makes nodes managers.
    Promote {
        /// Node names or ids.
        #[arg(required = true)]
        nodes: Vec<String>,
    },
    /// Makes managers workers.
    Demote {
        /// Node names or ids.
        #[arg(required = true)]
        nodes: Vec<String>,
    },
    /// Removes nodes from the cluster.
    Rm {
        /// Also remove a node that is still Ready.
        #[arg(short, long)]
        force: bool,
        /// Node names or ids.
        #[arg(required = true)]
        nodes: Vec<String>,
    },
}

/// A node role's name as `node ls` and `cluster info` print it.
pub(crate) fn role_name(role: i32) -> &'static str {
    match pb::NodeRole::try_from(role) {
        Ok(pb::NodeRole::Manager) => "manager",
        Ok(pb::NodeRole::Worker) => "worker",
        _ => "?",
    }
}

/// A node status's name as `node ls` prints it.
fn status_name(status: i32) -> &'static str {
    match pb::NodeStatus::try_from(status) {
        Ok(pb::NodeStatus::Ready) => "Ready",
        Ok(pb::NodeStatus::Down) => "Down",
        _ => "?",
    }
}

/// One node as `node ls --format json` and `node inspect` print it.
fn node_json(row: &pb::NodeInfo) -> serde_json::Value {
    let n = row.node.clone().unwrap_or_default();
    serde_json::json!({
        "id": format!("{:016x}", n.id),
        "name": n.name,
        "address": n.underlay_addr,
        "underlay_prefix_len": n.underlay_prefix_len,
        "underlay_mtu": n.underlay_mtu,
        "api": n.api_addr,
        "role": role_name(n.role),
        "status": status_name(n.status),
        "raft": row.raft,
        "leader": row.leader,
        "applied": row.applied,
        "lag": row.lag,
        "last_seen_ms": row.last_seen_ms,
        "status_since_ms": n.status_since_ms,
    })
}

/// Runs a `node` verb.
pub(crate) async fn node(api: &mut ClusterApi, command: NodeCommand) -> Result<u8, Failure> {
    match command {
        NodeCommand::Ls { format } => {
            let nodes = api.nodes(pb::NodesRequest {}).await.map_err(err)?.into_inner();
            if format == Format::Json {
                let rows: Vec<_> = nodes.nodes.iter().map(node_json).collect();
                println!("{}", serde_json::to_string_pretty(&rows).unwrap_or_default());
                return Ok(0);
            }
            let rows = nodes
                .nodes
                .iter()
                .map(|r| {
                    let n = r.node.clone().unwrap_or_default();
                    vec![
                        format!("{:016x}", n.id),
                        n.name,
                        n.underlay_addr,
                        role_name(n.role).into(),
                        status_name(n.status).into(),
                        if r.leader { "leader".into() } else { r.raft.clone() },
                        r.applied.to_string(),
                        r.lag.to_string(),
                    ]
                })
                .collect();
            print_table(&["ID", "NAME", "ADDRESS", "ROLE", "STATUS", "RAFT", "APPLIED", "LAG"], rows);
        }
        NodeCommand::Inspect { node } => {
            let nodes = api.nodes(pb::NodesRequest {}).await.map_err(err)?.into_inner();
            let row = nodes
                .nodes
                .iter()
                .find(|r| {
                    // The server's rule (weft_state::names::node_matches): name, or the id in hex.
                    r.node.as_ref().is_some_and(|n| {
                        n.name.eq_ignore_ascii_case(&node)
                            || (node.len() <= 16 && u64::from_str_radix(&node, 16).is_ok_and(|v| v == n.id))
                    })
                })
                .ok_or_else(|| format!("no node {node:?} in the cluster (see `weft node ls`)"))?;
            println!("{}", serde_json::to_string_pretty(&node_json(row)).unwrap_or_default());
        }
        NodeCommand::Promote { nodes } => {
            for node in nodes {
                let role = pb::NodeRole::Manager as i32;
                let n =
                    api.change_role(pb::ChangeRoleRequest { node, role }).await.map_err(err)?.into_inner();
                println!("node {} is a manager", n.name);
            }
        }
        NodeCommand::Demote { nodes } => {
            for node in nodes {
                let role = pb::NodeRole::Worker as i32;
                let n =
                    api.change_role(pb::ChangeRoleRequest { node, role }).await.map_err(err)?.into_inner();
                println!("node {} is a worker", n.name);
            }
        }
        NodeCommand::Rm { force, nodes } => {
            for node in nodes {
                api.remove_node(pb::RemoveNodeRequest { node: node.clone(), force }).await.map_err(err)?;
                println!("{node}");
            }
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

    fn verb(line: &[&str]) -> NodeCommand {
        match command(line) {
            Command::Node(c) => c,
            other => panic!("not a node verb: {other:?}"),
        }
    }

    #[test]
    fn node_verbs_parse() {
        assert!(matches!(verb(&["node", "ls"]), NodeCommand::Ls { format: Format::Table }));
        assert!(matches!(
            verb(&["node", "list", "--format", "json"]),
            NodeCommand::Ls { format: Format::Json }
        ));
        assert!(matches!(verb(&["node", "inspect", "h1"]), NodeCommand::Inspect { node } if node == "h1"));
        assert!(matches!(
            verb(&["node", "promote", "h1", "h2"]),
            NodeCommand::Promote { nodes } if nodes == ["h1", "h2"]
        ));
        assert!(matches!(verb(&["node", "demote", "h1"]), NodeCommand::Demote { nodes } if nodes == ["h1"]));
        assert!(matches!(verb(&["node", "rm", "h1"]), NodeCommand::Rm { force: false, .. }));
        assert!(matches!(
            verb(&["node", "rm", "-f", "h1", "h2"]),
            NodeCommand::Rm { force: true, nodes } if nodes.len() == 2
        ));
        for needs_a_node in ["inspect", "promote", "demote", "rm"] {
            assert_eq!(
                refusal(&["node", needs_a_node]),
                ErrorKind::MissingRequiredArgument,
                "{needs_a_node}"
            );
        }
    }

    #[test]
    fn a_node_in_json_has_its_id_in_16_hex_digits_and_named_role_and_status() {
        let row = pb::NodeInfo {
            node: Some(pb::Node {
                id: 0xabc,
                name: "h1".into(),
                underlay_addr: "198.51.100.1".into(),
                role: pb::NodeRole::Manager as i32,
                status: pb::NodeStatus::Ready as i32,
                status_since_ms: 7,
                api_addr: "198.51.100.1:7946".into(),
                underlay_prefix_len: 24,
                underlay_mtu: 1400,
            }),
            leader: true,
            raft: "voter".into(),
            applied: 42,
            lag: 1,
            last_seen_ms: 3,
        };
        let json = node_json(&row);
        assert_eq!(json["id"], "0000000000000abc");
        assert_eq!(json["name"], "h1");
        assert_eq!(json["address"], "198.51.100.1");
        assert_eq!(json["api"], "198.51.100.1:7946");
        assert_eq!(json["role"], "manager");
        assert_eq!(json["status"], "Ready");
        assert_eq!(json["raft"], "voter");
        assert_eq!(json["leader"], true);
        assert_eq!((json["applied"].as_u64(), json["lag"].as_u64()), (Some(42), Some(1)));
        assert_eq!((json["last_seen_ms"].as_u64(), json["status_since_ms"].as_u64()), (Some(3), Some(7)));
        // A row without its node still prints, with zero values.
        assert_eq!(node_json(&pb::NodeInfo::default())["id"], "0000000000000000");
    }

    #[test]
    fn roles_and_statuses_by_name_and_unknown_ones_as_a_question_mark() {
        assert_eq!(role_name(pb::NodeRole::Worker as i32), "worker");
        assert_eq!(role_name(pb::NodeRole::Manager as i32), "manager");
        assert_eq!(role_name(99), "?");
        assert_eq!(status_name(pb::NodeStatus::Down as i32), "Down");
        assert_eq!(status_name(pb::NodeStatus::Ready as i32), "Ready");
        assert_eq!(status_name(99), "?");
    }
}

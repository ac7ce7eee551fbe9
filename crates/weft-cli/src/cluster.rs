//! `weft cluster`: this node's view of the cluster, and join tokens.

use clap::{Subcommand, ValueEnum};
use weft_proto::v1 as pb;

use crate::failure::Failure;
use crate::node::role_name;
use crate::output::Format;
use crate::rpc::{ClusterApi, err};

/// `weft cluster ...`
#[derive(Debug, Subcommand)]
pub(crate) enum ClusterCommand {
    /// This node's view: id, role, leader, term, indexes, CA fingerprint.
    Info {
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Prints the join token for workers or managers.
    Token {
        /// worker or manager.
        role: TokenRole,
    },
}

/// `cluster token`'s role.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum TokenRole {
    Worker,
    Manager,
}

/// Runs a `cluster` verb.
pub(crate) async fn cluster(api: &mut ClusterApi, command: ClusterCommand) -> Result<u8, Failure> {
    match command {
        ClusterCommand::Info { format } => {
            let i = api.info(pb::InfoRequest {}).await.map_err(err)?.into_inner();
            let json = serde_json::json!({
                "id": format!("{:016x}", i.node_id), "name": i.name, "role": role_name(i.role),
                "leader": format!("{:016x}", i.leader_id), "term": i.term, "commit": i.commit,
                "applied": i.applied, "revision": i.revision, "ca_fingerprint": i.ca_fingerprint,
                "upstream": i.upstream,
            });
            if format == Format::Json {
                println!("{}", serde_json::to_string_pretty(&json).unwrap_or_default());
            } else if let Some(map) = json.as_object() {
                for (k, v) in map {
                    println!("{k}: {}", v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string()));
                }
            }
        }
        ClusterCommand::Token { role } => {
            let role = match role {
                TokenRole::Worker => pb::NodeRole::Worker,
                TokenRole::Manager => pb::NodeRole::Manager,
            } as i32;
            let t = api.token(pb::TokenRequest { role }).await.map_err(err)?.into_inner();
            println!("{}", t.token);
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

    fn verb(line: &[&str]) -> ClusterCommand {
        match command(line) {
            Command::Cluster(c) => c,
            other => panic!("not a cluster verb: {other:?}"),
        }
    }

    #[test]
    fn cluster_verbs_parse() {
        assert!(matches!(verb(&["cluster", "info"]), ClusterCommand::Info { format: Format::Table }));
        assert!(matches!(
            verb(&["cluster", "info", "--format", "json"]),
            ClusterCommand::Info { format: Format::Json }
        ));
        assert!(matches!(
            verb(&["cluster", "token", "worker"]),
            ClusterCommand::Token { role: TokenRole::Worker }
        ));
        assert!(matches!(
            verb(&["cluster", "token", "manager"]),
            ClusterCommand::Token { role: TokenRole::Manager }
        ));
        assert_eq!(refusal(&["cluster", "token", "admin"]), ErrorKind::InvalidValue);
        assert_eq!(refusal(&["cluster", "token"]), ErrorKind::MissingRequiredArgument);
        assert_eq!(refusal(&["cluster", "info", "--format", "yaml"]), ErrorKind::InvalidValue);
    }
}

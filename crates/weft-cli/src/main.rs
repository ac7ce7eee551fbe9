//! weft: the admin CLI. Talks to the local weftd socket, or to a manager over mutual TLS.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use weft_cli::client::{self, DEFAULT_SOCKET, Host, TlsFiles};
use weft_proto::v1 as pb;

/// Exit status for weft's own errors (Docker uses 125 too).

#[derive(Debug, Parser)]
#[command(name = "weft", version, about = "weft: one flat network for containers on many hosts")]
struct Cli {
    /// Daemon to talk to: unix:///path/to/weft.sock (default /run/weft/weft.sock) or https://IP:PORT.
    #[arg(short = 'H', long, env = "WEFT_HOST", global = true)]
    host: Option<String>,
    /// Client certificate for https:// hosts.
    #[arg(long, global = true)]
    tls_cert: Option<PathBuf>,
    /// Client key for https:// hosts.
    #[arg(long, global = true)]
    tls_key: Option<PathBuf>,
    /// Cluster CA for https:// hosts.
    #[arg(long, global = true)]
    tls_ca: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

mod container;
mod exec;
mod failure;
mod image;
mod network;
mod output;
mod parse;
mod rpc;
mod terminal;

use failure::{EXIT_ERROR, Failure};
use output::{Format, print_table};

#[derive(Debug, Subcommand)]
enum Command {
    /// Cluster nodes.
    #[command(subcommand)]
    Node(NodeCommand),
    /// The cluster.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Networks: create, ls, inspect, rm, connect, disconnect.
    #[command(subcommand)]
    Network(network::NetworkCommand),
    /// Images: import, build, export, ls, inspect, rm, tag.
    #[command(subcommand)]
    Image(image::ImageCommand),
    /// Creates and starts a container.
    Run(container::RunArgs),
    #[command(flatten)]
    Container(container::ContainerCommand),
    /// Prints a shell completion script.
    Completion {
        /// bash, zsh or fish.
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Subcommand)]
enum NodeCommand {
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

#[derive(Debug, Subcommand)]
enum ClusterCommand {
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

#[derive(Debug, Clone, Copy, ValueEnum)]
enum TokenRole {
    Worker,
    Manager,
}

fn role_name(role: i32) -> &'static str {
    match pb::NodeRole::try_from(role) {
        Ok(pb::NodeRole::Manager) => "manager",
        Ok(pb::NodeRole::Worker) => "worker",
        _ => "?",
    }
}

fn status_name(status: i32) -> &'static str {
    match pb::NodeStatus::try_from(status) {
        Ok(pb::NodeStatus::Ready) => "Ready",
        Ok(pb::NodeStatus::Down) => "Down",
        _ => "?",
    }
}

fn node_json(row: &pb::NodeInfo) -> serde_json::Value {
    let n = row.node.clone().unwrap_or_default();
    serde_json::json!({
        "id": format!("{:016x}", n.id),
        "name": n.name,
        "address": n.underlay_addr,
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

async fn run(cli: Cli) -> Result<u8, Failure> {
    if let Command::Completion { shell } = cli.command {
        clap_complete::generate(shell, &mut Cli::command(), "weft", &mut std::io::stdout());
        return Ok(0);
    }
    let host = Host::parse(cli.host.as_deref().unwrap_or(&format!("unix://{DEFAULT_SOCKET}")))
        .map_err(|e| e.to_string())?;
    let tls = TlsFiles { cert: cli.tls_cert, key: cli.tls_key, ca: cli.tls_ca };
    let channel = client::channel(&host, &tls).await.map_err(|e| e.to_string())?;
    let mut agent = pb::agent_client::AgentClient::new(channel.clone())
        .max_decoding_message_size(256 << 20)
        .max_encoding_message_size(256 << 20);
    let mut api = pb::cluster_client::ClusterClient::new(channel).max_decoding_message_size(256 << 20);
    let err = Failure::from;
    match cli.command {
        Command::Completion { .. } => unreachable!("handled above"),
        Command::Network(c) => return network::network(&mut agent, c).await,
        Command::Image(c) => return image::image(&mut agent, c).await,
        Command::Run(args) => return container::run(&mut agent, args).await,
        Command::Container(c) => return container::container(&mut agent, c).await,
        Command::Node(NodeCommand::Ls { format }) => {
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
        Command::Node(NodeCommand::Inspect { node }) => {
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
        Command::Node(NodeCommand::Promote { nodes }) => {
            for node in nodes {
                let role = pb::NodeRole::Manager as i32;
                let n =
                    api.change_role(pb::ChangeRoleRequest { node, role }).await.map_err(err)?.into_inner();
                println!("node {} is a manager", n.name);
            }
        }
        Command::Node(NodeCommand::Demote { nodes }) => {
            for node in nodes {
                let role = pb::NodeRole::Worker as i32;
                let n =
                    api.change_role(pb::ChangeRoleRequest { node, role }).await.map_err(err)?.into_inner();
                println!("node {} is a worker", n.name);
            }
        }
        Command::Node(NodeCommand::Rm { force, nodes }) => {
            for node in nodes {
                api.remove_node(pb::RemoveNodeRequest { node: node.clone(), force }).await.map_err(err)?;
                println!("{node}");
            }
        }
        Command::Cluster(ClusterCommand::Info { format }) => {
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
        Command::Cluster(ClusterCommand::Token { role }) => {
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

fn main() -> ExitCode {
    // Usage errors exit 125 like every other weft error (Docker does the same); --help and
    // --version print and exit 0.
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { ExitCode::from(EXIT_ERROR) } else { ExitCode::SUCCESS };
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("weft: {e}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(failure) => {
            eprintln!("weft: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}

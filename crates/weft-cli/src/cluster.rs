//! `weft cluster`: this node's view of the cluster, join tokens and admin certificates.

use std::path::{Path, PathBuf};

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
    /// Prints the join token for workers or managers; `token rotate ROLE` replaces it (the old
    /// one is refused from then on) and prints the new one.
    Token {
        /// worker, manager, or rotate.
        what: TokenVerb,
        /// With rotate: worker or manager.
        role: Option<TokenRole>,
    },
    /// Writes an admin client certificate (`cert admin -o DIR`): `node.pem`, `node-key.pem` and
    /// `ca.pem`, for `--tls-cert`, `--tls-key` and `--tls-ca` of a remote `weft --host`.
    Cert {
        /// The kind of certificate: admin.
        kind: CertKind,
        /// The directory to write into (made, mode 0700; must not hold a key already).
        #[arg(short = 'o', long = "output")]
        output: PathBuf,
        /// Validity, e.g. 12h or 30d (default: the manager's --cert-ttl).
        #[arg(long, value_parser = parse_ttl)]
        ttl: Option<u64>,
    },
}

/// `cluster token`'s first word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum TokenVerb {
    Worker,
    Manager,
    Rotate,
}

/// A join token's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum TokenRole {
    Worker,
    Manager,
}

/// `cluster cert`'s kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum CertKind {
    Admin,
}

/// Parses `90s`, `30m`, `12h`, `30d` into seconds (at least 60).
fn parse_ttl(text: &str) -> Result<u64, String> {
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().map_err(|_| format!("{text:?} is not a duration (like 12h or 30d)"))?;
    let seconds = match unit {
        "s" | "" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86400,
        _ => return Err(format!("{text:?}: unknown unit {unit:?} (use s, m, h or d)")),
    };
    if seconds < 60 {
        return Err(format!("{text:?} is too short: an admin certificate lives at least 60s"));
    }
    Ok(seconds)
}

fn wire_role(role: TokenRole) -> i32 {
    match role {
        TokenRole::Worker => pb::NodeRole::Worker as i32,
        TokenRole::Manager => pb::NodeRole::Manager as i32,
    }
}

/// Refuses an output directory that already holds a key, before anything is asked for.
fn check_output(dir: &Path) -> Result<(), Failure> {
    for name in ["node.pem", "node-key.pem", "ca.pem"] {
        if dir.join(name).exists() {
            return Err(Failure::from(format!(
                "{} already holds {name}: choose an empty directory (nothing was written)",
                dir.display()
            )));
        }
    }
    Ok(())
}

fn write_bundle(dir: &Path, bundle: &pb::CertBundle) -> Result<(), Failure> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let fail = |what: &str, e: std::io::Error| Failure::from(format!("{what}: {e}"));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| fail(&dir.display().to_string(), e))?;
    for (name, text, mode) in [
        ("ca.pem", &bundle.ca_cert_pem, 0o644),
        ("node.pem", &bundle.cert_pem, 0o644),
        ("node-key.pem", &bundle.key_pem, 0o600),
    ] {
        let path = dir.join(name);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&path)
            .map_err(|e| fail(&path.display().to_string(), e))?;
        std::io::Write::write_all(&mut file, text.as_bytes())
            .map_err(|e| fail(&path.display().to_string(), e))?;
    }
    Ok(())
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
        ClusterCommand::Token { what, role } => {
            let token = match (what, role) {
                (TokenVerb::Rotate, Some(role)) => api
                    .rotate_token(pb::TokenRequest { role: wire_role(role) })
                    .await
                    .map_err(err)?
                    .into_inner(),
                (TokenVerb::Rotate, None) => {
                    return Err(Failure::from("`cluster token rotate` needs the role: worker or manager"));
                }
                (_, Some(extra)) => {
                    return Err(Failure::from(format!(
                        "unexpected {extra:?} after the role: `cluster token worker|manager` or `cluster token rotate worker|manager`"
                    )));
                }
                (TokenVerb::Worker, None) => api
                    .token(pb::TokenRequest { role: wire_role(TokenRole::Worker) })
                    .await
                    .map_err(err)?
                    .into_inner(),
                (TokenVerb::Manager, None) => api
                    .token(pb::TokenRequest { role: wire_role(TokenRole::Manager) })
                    .await
                    .map_err(err)?
                    .into_inner(),
            };
            println!("{}", token.token);
        }
        ClusterCommand::Cert { kind: CertKind::Admin, output, ttl } => {
            check_output(&output)?;
            let request = pb::AdminCertRequest { ttl_seconds: ttl.unwrap_or(0) };
            let bundle = api.issue_admin_cert(request).await.map_err(err)?.into_inner();
            write_bundle(&output, &bundle)?;
            println!("{}", output.display());
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
            ClusterCommand::Token { what: TokenVerb::Worker, role: None }
        ));
        assert!(matches!(
            verb(&["cluster", "token", "manager"]),
            ClusterCommand::Token { what: TokenVerb::Manager, role: None }
        ));
        assert!(matches!(
            verb(&["cluster", "token", "rotate", "worker"]),
            ClusterCommand::Token { what: TokenVerb::Rotate, role: Some(TokenRole::Worker) }
        ));
        assert_eq!(refusal(&["cluster", "token", "admin"]), ErrorKind::InvalidValue);
        assert_eq!(refusal(&["cluster", "token", "rotate", "admin"]), ErrorKind::InvalidValue);
        match verb(&["cluster", "cert", "admin", "-o", "/tmp/x", "--ttl", "12h"]) {
            ClusterCommand::Cert { kind: CertKind::Admin, output, ttl } => {
                assert_eq!((output, ttl), (PathBuf::from("/tmp/x"), Some(12 * 3600)));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(refusal(&["cluster", "cert", "admin"]), ErrorKind::MissingRequiredArgument);
        assert_eq!(refusal(&["cluster", "cert", "node", "-o", "x"]), ErrorKind::InvalidValue);
        assert_eq!(
            refusal(&["cluster", "cert", "admin", "-o", "x", "--ttl", "5s"]),
            ErrorKind::ValueValidation
        );
        assert_eq!(refusal(&["cluster", "token"]), ErrorKind::MissingRequiredArgument);
        assert_eq!(refusal(&["cluster", "info", "--format", "yaml"]), ErrorKind::InvalidValue);
    }
}

//! Certificate renewal while weftd runs: once two thirds of the node certificate's life have
//! passed, a new one is issued (by this manager's own CA key, or by the manager a worker
//! watches), saved to the state dir, and used from then on, by the outgoing channels and, on a
//! manager, by the TLS listener; no restart, no dropped connection.

use std::sync::Arc;
use std::time::Duration;

use weft_proto::v1 as pb;

use crate::identity::StateDir;
use crate::peers::Peers;
use crate::pki::{CertRole, ClusterCa, NodeCert};
use crate::service::Upstream;
use crate::tls::{NodeTls, ServerCert, TlsError};

/// The longest sleep between two looks at the certificate (a clock that jumps is noticed).
const LOOK_EVERY: Duration = Duration::from_secs(60);

/// How long to wait after a failed renewal before the next attempt.
const RETRY: Duration = Duration::from_secs(2);

/// Who issues this node's next certificate.
pub enum Issuer {
    /// A manager signs its own with the cluster CA.
    Own {
        /// The CA.
        ca: ClusterCa,
        /// This node.
        id: u64,
        /// Validity of the new certificate.
        ttl: Duration,
    },
    /// A worker asks the manager it watches.
    Upstream(Arc<Upstream>),
}

/// Why one renewal failed.
#[derive(Debug, thiserror::Error)]
pub enum RenewError {
    /// Reading, issuing or saving the certificate.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The manager refused or could not be reached.
    #[error("the manager did not renew the certificate: {0}")]
    Refused(String),
}

/// Renews this node's certificate whenever it is due, for as long as it runs (the supervisor
/// stops it with the role).
pub async fn run(dir: StateDir, peers: Arc<Peers>, server: Option<Arc<ServerCert>>, issuer: Issuer) {
    loop {
        let due_in = match dir.tls().and_then(|tls| tls.cert.identity()) {
            Ok(identity) => identity.renew_at() - now_s(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read this node's certificate");
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        if due_in > 0 {
            tokio::time::sleep(Duration::from_secs(due_in as u64).min(LOOK_EVERY)).await;
            continue;
        }
        match renew_once(&dir, &peers, server.as_deref(), &issuer).await {
            Ok(identity) => {
                tracing::info!(serial = %identity.serial, not_after = identity.not_after, "certificate renewed")
            }
            Err(e) => {
                tracing::warn!(error = %e, "certificate renewal failed; retrying");
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}

async fn renew_once(
    dir: &StateDir,
    peers: &Peers,
    server: Option<&ServerCert>,
    issuer: &Issuer,
) -> Result<crate::pki::CertIdentity, RenewError> {
    let current = dir.tls()?;
    let cert = match issuer {
        Issuer::Own { ca, id, ttl } => ca.issue_node(*id, CertRole::Manager, *ttl)?,
        Issuer::Upstream(upstream) => {
            let addr = upstream.current().ok_or_else(|| RenewError::Refused("no manager known".into()))?;
            let mut client =
                peers.cluster(&addr).map_err(|s| RenewError::Refused(s.message().to_string()))?;
            let bundle = client
                .renew_cert(pb::InfoRequest {})
                .await
                .map_err(|s| RenewError::Refused(format!("{addr}: {}", s.message())))?
                .into_inner();
            NodeCert { chain_pem: bundle.cert_pem, key_pem: bundle.key_pem }
        }
    };
    let identity = cert.identity()?;
    let renewed = NodeTls { ca_pem: current.ca_pem, cert };
    dir.save_tls(&renewed)?;
    if let Some(server) = server {
        server.replace(&renewed.cert)?;
    }
    peers.renew(renewed);
    Ok(identity)
}

fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

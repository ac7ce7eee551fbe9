//! Where `weft` connects, parsed from `--host` / `WEFT_HOST`, and the connection itself.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity, Uri};
use weft_proto::v1::cluster_client::ClusterClient;

/// The default local socket.
pub const DEFAULT_SOCKET: &str = "/run/weft/weft.sock";

/// The name only managers' certificates carry: the remote CLI talks to managers.
const SERVER_NAME: &str = "manager.weft.cluster";

/// What can go wrong before a call is made.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The host string is not understood.
    #[error("bad --host {0:?}: use unix:///path/to/weft.sock or https://IP:PORT")]
    BadHost(String),
    /// Remote needs certificates.
    #[error(
        "--host https://... needs --tls-cert, --tls-key and --tls-ca (an admin certificate from `weft cluster cert admin -o DIR`, or a manager's tls/ files)"
    )]
    MissingTls,
    /// A certificate file could not be read.
    #[error("{0}: {1}")]
    Read(String, std::io::Error),
    /// The agent is not there.
    #[error("cannot connect to weftd at {0}: {1} (is weftd running?)")]
    Connect(String, String),
}

/// Where to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// A local socket.
    Unix(PathBuf),
    /// A manager's TLS API.
    Remote(String),
}

impl Host {
    /// Parses `unix:///path`, a bare path, or `https://IP:PORT` / `tcp://IP:PORT`.
    pub fn parse(text: &str) -> Result<Host, ClientError> {
        if let Some(path) = text.strip_prefix("unix://") {
            if path.is_empty() {
                return Err(ClientError::BadHost(text.into()));
            }
            return Ok(Host::Unix(PathBuf::from(path)));
        }
        if text.starts_with('/') {
            return Ok(Host::Unix(PathBuf::from(text)));
        }
        for scheme in ["https://", "tcp://"] {
            if let Some(addr) = text.strip_prefix(scheme) {
                if addr.parse::<std::net::SocketAddr>().is_err() {
                    return Err(ClientError::BadHost(text.into()));
                }
                return Ok(Host::Remote(addr.into()));
            }
        }
        Err(ClientError::BadHost(text.into()))
    }
}

/// Certificate files for a remote host.
#[derive(Debug, Clone, Default)]
pub struct TlsFiles {
    /// Client certificate (PEM).
    pub cert: Option<PathBuf>,
    /// Its key.
    pub key: Option<PathBuf>,
    /// The cluster CA.
    pub ca: Option<PathBuf>,
}

fn read(path: &Path) -> Result<String, ClientError> {
    std::fs::read_to_string(path).map_err(|e| ClientError::Read(path.display().to_string(), e))
}

/// Connects to `host`: the cluster API client.
pub async fn connect(host: &Host, tls: &TlsFiles) -> Result<ClusterClient<Channel>, ClientError> {
    Ok(ClusterClient::new(channel(host, tls).await?).max_decoding_message_size(256 << 20))
}

/// Connects to `host`: the channel both APIs (cluster and agent) share.
pub async fn channel(host: &Host, tls: &TlsFiles) -> Result<Channel, ClientError> {
    let channel = match host {
        Host::Unix(path) => {
            let path = path.clone();
            let shown = format!("unix://{}", path.display());
            Endpoint::from_static("http://localhost")
                .connect_timeout(Duration::from_secs(3))
                .connect_with_connector(tower::service_fn(move |_: Uri| {
                    let path = path.clone();
                    async move {
                        let stream = tokio::net::UnixStream::connect(path).await?;
                        Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
                    }
                }))
                .await
                .map_err(|e| ClientError::Connect(shown, cause(&e)))?
        }
        Host::Remote(addr) => {
            let (Some(cert), Some(key), Some(ca)) = (&tls.cert, &tls.key, &tls.ca) else {
                return Err(ClientError::MissingTls);
            };
            let config = ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(read(ca)?))
                .identity(Identity::from_pem(read(cert)?, read(key)?))
                .domain_name(SERVER_NAME);
            Endpoint::from_shared(format!("https://{addr}"))
                .map_err(|_| ClientError::BadHost(addr.clone()))?
                .tls_config(config)
                .map_err(|e| ClientError::Connect(addr.clone(), e.to_string()))?
                .connect_timeout(Duration::from_secs(3))
                .connect()
                .await
                .map_err(|e| ClientError::Connect(addr.clone(), cause(&e)))?
        }
    };
    Ok(channel)
}

fn cause(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        text = format!("{text}: {s}");
        cur = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_parse_and_bad_ones_are_named() {
        assert_eq!(
            Host::parse("unix:///run/weft/weft.sock").unwrap(),
            Host::Unix("/run/weft/weft.sock".into())
        );
        assert_eq!(
            Host::parse("https://198.51.100.1:7946").unwrap(),
            Host::Remote("198.51.100.1:7946".into())
        );
        for bad in ["", "unix://", "https://nohost", "ftp://x"] {
            assert!(Host::parse(bad).unwrap_err().to_string().contains("bad --host"), "{bad}");
        }
    }
}

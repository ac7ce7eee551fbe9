//! The rustls/tonic settings of every connection: managers serve mutual TLS with a certificate
//! that can be replaced while they run (renewal); clients check that the server is a manager of
//! this cluster ([`MANAGER_NAME`]), or a given node; a joining node, which has no certificate
//! yet, checks the server against the CA fingerprint in its token before it sends the secret.

use std::path::Path;
use std::sync::{Arc, RwLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, SignatureScheme};

pub use crate::pki::{MANAGER_NAME, NodeCert, TlsError};
use crate::pki::{certs_der, fingerprint, node_dns_name};

/// The crypto provider of every TLS connection weft makes.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Accepts a server whose chain contains the CA with the pinned fingerprint and whose leaf that
/// CA signed: what a joining node knows before it has the CA certificate.
#[derive(Debug)]
struct PinnedCa {
    fingerprint: String,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for PinnedCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ca = intermediates.iter().find(|c| fingerprint(c) == self.fingerprint).ok_or_else(|| {
            rustls::Error::General(
                "the manager's CA does not match the token's fingerprint (wrong cluster or token)".into(),
            )
        })?;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.clone().into_owned()).map_err(|e| rustls::Error::General(e.to_string()))?;
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            self.provider.clone(),
        )
        .build()
        .map_err(|e| rustls::Error::General(e.to_string()))?;
        verifier.verify_server_cert(end_entity, &[], server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// A gRPC channel to `addr` for joining: TLS without a client certificate, the server checked
/// against the token's CA fingerprint.
pub async fn join_channel(addr: &str, ca_fingerprint: &str) -> Result<tonic::transport::Channel, String> {
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedCa {
            fingerprint: ca_fingerprint.to_string(),
            provider: provider(),
        }))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let target = addr.to_string();
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| e.to_string())?
        .connect_timeout(std::time::Duration::from_secs(3));
    endpoint
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let connector = connector.clone();
            let target = target.clone();
            async move {
                let tcp = tokio::net::TcpStream::connect(&target).await?;
                let name = ServerName::try_from(MANAGER_NAME).map_err(std::io::Error::other)?;
                let tls = connector.connect(name, tcp).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
            }
        }))
        .await
        .map_err(|e| format!("{e}: {}", source_chain(&e)))
}

/// The causes of an error, joined: tonic's transport errors hide the useful part.
pub fn source_chain(e: &dyn std::error::Error) -> String {
    let mut out = Vec::new();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push(s.to_string());
        cur = s.source();
    }
    out.join(": ")
}

/// Key material of a node, as kept in `<state-dir>/tls/`.
#[derive(Debug, Clone)]
pub struct NodeTls {
    /// The CA certificate.
    pub ca_pem: String,
    /// This node's chain and key.
    pub cert: NodeCert,
}

impl NodeTls {
    /// The client side towards any manager: this node's certificate; the server must be a
    /// manager of this cluster.
    pub fn client_config(&self) -> tonic::transport::ClientTlsConfig {
        self.client_config_named(MANAGER_NAME)
    }

    /// The client side towards node `id` in particular (a raft peer): its certificate must be
    /// that node's.
    pub fn client_config_for(&self, id: u64) -> tonic::transport::ClientTlsConfig {
        self.client_config_named(&node_dns_name(id))
    }

    fn client_config_named(&self, name: &str) -> tonic::transport::ClientTlsConfig {
        tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(&self.ca_pem))
            .identity(tonic::transport::Identity::from_pem(&self.cert.chain_pem, &self.cert.key_pem))
            .domain_name(name)
    }

    /// Loads from `dir` (`ca.pem`, `node.pem`, `node-key.pem`).
    pub fn load(dir: &Path) -> Result<NodeTls, TlsError> {
        Ok(NodeTls {
            ca_pem: read(&dir.join("ca.pem"))?,
            cert: NodeCert {
                chain_pem: read(&dir.join("node.pem"))?,
                key_pem: read(&dir.join("node-key.pem"))?,
            },
        })
    }

    /// Saves into `dir` (keys mode 0600).
    pub fn save(&self, dir: &Path) -> Result<(), TlsError> {
        write(&dir.join("ca.pem"), &self.ca_pem, 0o644)?;
        write(&dir.join("node.pem"), &self.cert.chain_pem, 0o644)?;
        write(&dir.join("node-key.pem"), &self.cert.key_pem, 0o600)
    }
}

/// Reads a text file, naming it in the error.
pub fn read(path: &Path) -> Result<String, TlsError> {
    std::fs::read_to_string(path).map_err(|source| TlsError::Io { path: path.display().to_string(), source })
}

/// Writes a state file (identity, keys, secrets, seeds) atomically and durably with `mode`,
/// making its directory first.
pub fn write(path: &Path, text: &str, mode: u32) -> Result<(), TlsError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|source| TlsError::Io { path: parent.display().to_string(), source })?;
    }
    weft_fs::write(path, text.as_bytes(), mode, weft_fs::Durability::Durable).map_err(|e| match e {
        weft_fs::FileError::Io { source, .. } => TlsError::Io { path: path.display().to_string(), source },
        other => TlsError::Io {
            path: path.display().to_string(),
            source: std::io::Error::other(other.to_string()),
        },
    })
}

/// The certificate a manager serves with, replaceable while it runs: a renewed certificate is
/// presented from the next handshake on, without a restart.
#[derive(Debug)]
pub struct ServerCert {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ServerCert {
    /// Serves `cert` until replaced.
    pub fn new(cert: &NodeCert) -> Result<ServerCert, TlsError> {
        Ok(ServerCert { current: RwLock::new(certified_key(cert)?) })
    }

    /// Serves `cert` from now on.
    pub fn replace(&self, cert: &NodeCert) -> Result<(), TlsError> {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = certified_key(cert)?;
        Ok(())
    }
}

impl ResolvesServerCert for ServerCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().unwrap_or_else(|e| e.into_inner()).clone())
    }
}

fn certified_key(cert: &NodeCert) -> Result<Arc<CertifiedKey>, TlsError> {
    use rustls::pki_types::pem::PemObject;
    let chain: Vec<CertificateDer<'static>> =
        certs_der(&cert.chain_pem)?.into_iter().map(CertificateDer::from).collect();
    let key = PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes())
        .map_err(|e| TlsError::Cert(format!("node key: {e}")))?;
    let signer = provider().key_provider.load_private_key(key).map_err(|e| TlsError::Cert(e.to_string()))?;
    Ok(Arc::new(CertifiedKey::new(chain, signer)))
}

/// The rustls configuration of a manager's listener: `cert` served, client certificates checked
/// against the CA but optional at the TLS layer, so a joining node can call Join without one
/// (every other call is refused to it by the authorization layer).
pub fn server_config(ca_pem: &str, cert: Arc<ServerCert>) -> Result<rustls::ServerConfig, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for der in certs_der(ca_pem)? {
        roots.add(CertificateDer::from(der)).map_err(|e| TlsError::Cert(e.to_string()))?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .allow_unauthenticated()
        .build()
        .map_err(|e| TlsError::Cert(e.to_string()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Cert(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(cert);
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{CertRole, ClusterCa};

    fn verifier(ca: &ClusterCa) -> Arc<rustls::client::WebPkiServerVerifier> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from(certs_der(&ca.cert_pem).unwrap().remove(0))).unwrap();
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .unwrap()
    }

    fn verify(v: &rustls::client::WebPkiServerVerifier, cert: &NodeCert, name: &str) -> bool {
        let leaf = CertificateDer::from(certs_der(&cert.chain_pem).unwrap().remove(0));
        v.verify_server_cert(
            &leaf,
            &[],
            &ServerName::try_from(name.to_string()).unwrap(),
            &[],
            UnixTime::now(),
        )
        .is_ok()
    }

    #[test]
    fn only_a_managers_certificate_passes_as_a_manager_and_as_its_own_node() {
        let ca = ClusterCa::generate().unwrap();
        let ttl = std::time::Duration::from_secs(600);
        let v = verifier(&ca);
        let manager = ca.issue_node(7, CertRole::Manager, ttl).unwrap();
        assert!(verify(&v, &manager, MANAGER_NAME));
        assert!(verify(&v, &manager, &node_dns_name(7)));
        assert!(!verify(&v, &manager, &node_dns_name(8)), "another node's name");
        let worker = ca.issue_node(8, CertRole::Worker, ttl).unwrap();
        assert!(!verify(&v, &worker, MANAGER_NAME), "a worker cannot pose as a manager");
        let other = ClusterCa::generate().unwrap().issue_node(7, CertRole::Manager, ttl).unwrap();
        assert!(!verify(&v, &other, MANAGER_NAME), "another cluster's manager");
        assert_eq!(fingerprint(&certs_der(&manager.chain_pem).unwrap()[1]), ca.fingerprint().unwrap());
    }

    #[test]
    fn a_server_certificate_is_replaced_in_place() {
        let ca = ClusterCa::generate().unwrap();
        let ttl = std::time::Duration::from_secs(600);
        let first = ca.issue_node(7, CertRole::Manager, ttl).unwrap();
        let second = ca.issue_node(7, CertRole::Manager, ttl).unwrap();
        let served = ServerCert::new(&first).unwrap();
        let leaf = |c: &NodeCert| certs_der(&c.chain_pem).unwrap().remove(0);
        let now = |s: &ServerCert| s.current.read().unwrap().cert[0].to_vec();
        assert_eq!(now(&served), leaf(&first));
        served.replace(&second).unwrap();
        assert_eq!(now(&served), leaf(&second));
        assert!(server_config(&ca.cert_pem, Arc::new(served)).is_ok());
    }
}

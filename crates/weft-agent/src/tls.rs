//! The cluster's certificate authority, join tokens, and the rustls/tonic settings of every
//! connection: managers serve mutual TLS; a joining node, which has no certificate yet, checks
//! the server against the CA fingerprint in its token before it sends the token's secret.

use std::path::Path;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};

/// The DNS name every node certificate carries and every client checks: identity is "signed by
/// this cluster's CA", not a host name (nodes move between addresses).
pub const SERVER_NAME: &str = "weft.cluster";

/// What can go wrong with certificates and tokens.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A token that does not parse.
    #[error("invalid join token: {0} (expected WEFT-1-<ca fingerprint>-<secret>, from `weft cluster token`)")]
    BadToken(&'static str),
    /// Certificate generation or parsing failed.
    #[error("certificate: {0}")]
    Cert(String),
    /// Reading or writing the key material failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
}

impl From<rcgen::Error> for TlsError {
    fn from(e: rcgen::Error) -> TlsError {
        TlsError::Cert(e.to_string())
    }
}

/// SHA-256 of a certificate's DER, in hex: what a token pins.
pub fn fingerprint(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

/// The DER of the first certificate in `pem`.
pub fn first_der(pem: &str) -> Result<Vec<u8>, TlsError> {
    certs_der(pem)?.into_iter().next().ok_or_else(|| TlsError::Cert("no certificate in PEM".into()))
}

fn certs_der(pem: &str) -> Result<Vec<Vec<u8>>, TlsError> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .map(|c| c.map(|c| c.to_vec()).map_err(|e| TlsError::Cert(e.to_string())))
        .collect()
}

fn ca_params() -> Result<CertificateParams, TlsError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, "weft cluster CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2124, 1, 1);
    Ok(params)
}

/// The second name in node `id`'s certificate: how a manager tells which node a client is.
pub fn node_dns_name(id: u64) -> String {
    format!("node-{id:016x}.{SERVER_NAME}")
}

/// True when `der` (a client certificate the TLS layer already checked against the CA) was issued
/// to node `id`.
pub fn cert_is_for_node(der: &[u8], id: u64) -> bool {
    let der = CertificateDer::from(der.to_vec());
    let Ok(parsed) = rustls::server::ParsedCertificate::try_from(&der) else { return false };
    let Ok(name) = ServerName::try_from(node_dns_name(id)) else { return false };
    rustls::client::verify_server_name(&parsed, &name).is_ok()
}

/// The cluster CA: made by `--bootstrap`, copied to every manager (they all admit nodes).
pub struct ClusterCa {
    /// The CA certificate, PEM.
    pub cert_pem: String,
    /// Its private key, PEM.
    pub key_pem: String,
}

/// A node's certificate chain (its own, then the CA's) and key.
#[derive(Debug, Clone)]
pub struct NodeCert {
    /// Leaf then CA, PEM.
    pub chain_pem: String,
    /// The leaf's private key, PEM.
    pub key_pem: String,
}

impl ClusterCa {
    /// A new CA with a fresh P-256 key.
    pub fn generate() -> Result<ClusterCa, TlsError> {
        let key = KeyPair::generate()?;
        let cert = ca_params()?.self_signed(&key)?;
        Ok(ClusterCa { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }

    /// The fingerprint tokens pin.
    pub fn fingerprint(&self) -> Result<String, TlsError> {
        Ok(fingerprint(&first_der(&self.cert_pem)?))
    }

    /// Issues a certificate for node `name` (id `id`): usable as server and client.
    pub fn issue(&self, name: &str, id: u64) -> Result<NodeCert, TlsError> {
        let ca_key = KeyPair::from_pem(&self.key_pem)?;
        let issuer = Issuer::new(ca_params()?, ca_key);
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec![SERVER_NAME.to_string(), node_dns_name(id)])?;
        params.distinguished_name.push(DnType::CommonName, format!("{name} ({id:016x})"));
        params.extended_key_usages =
            vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth, rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        params.not_before = rcgen::date_time_ymd(2024, 1, 1);
        params.not_after = rcgen::date_time_ymd(2124, 1, 1);
        let cert = params.signed_by(&key, &issuer)?;
        Ok(NodeCert { chain_pem: format!("{}{}", cert.pem(), self.cert_pem), key_pem: key.serialize_pem() })
    }
}

/// A parsed join token: `WEFT-1-<sha256 of the CA certificate, hex>-<secret>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// CA fingerprint the joiner pins.
    pub ca_fingerprint: String,
    /// The role's secret, proven to the manager.
    pub secret: String,
}

impl Token {
    /// Parses a token, checking its shape.
    pub fn parse(text: &str) -> Result<Token, TlsError> {
        let rest = text.trim().strip_prefix("WEFT-1-").ok_or(TlsError::BadToken("missing WEFT-1- prefix"))?;
        let (fp, secret) = rest.split_once('-').ok_or(TlsError::BadToken("missing secret"))?;
        if fp.len() != 64 || !fp.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(TlsError::BadToken("the CA fingerprint must be 64 hex digits"));
        }
        if secret.len() < 16 || !secret.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(TlsError::BadToken("the secret must be at least 16 letters or digits"));
        }
        Ok(Token { ca_fingerprint: fp.to_ascii_lowercase(), secret: secret.to_string() })
    }

    /// The text form.
    pub fn render(&self) -> String {
        format!("WEFT-1-{}-{}", self.ca_fingerprint, self.secret)
    }
}

/// A fresh random secret (128 bits, hex).
pub fn random_secret() -> Result<String, TlsError> {
    let mut bytes = [0u8; 16];
    read_urandom(&mut bytes)?;
    Ok(hex::encode(bytes))
}

/// A random non-zero 64-bit id (node ids).
pub fn random_id() -> Result<u64, TlsError> {
    loop {
        let mut bytes = [0u8; 8];
        read_urandom(&mut bytes)?;
        let id = u64::from_be_bytes(bytes) >> 1;
        if id != 0 {
            return Ok(id);
        }
    }
}

fn read_urandom(buf: &mut [u8]) -> Result<(), TlsError> {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(buf))
        .map_err(|source| TlsError::Io { path: "/dev/urandom".into(), source })
}

/// Compares secrets in time independent of where they differ.
pub fn secrets_equal(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
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
                let name = ServerName::try_from(SERVER_NAME).map_err(std::io::Error::other)?;
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
    /// The server side: this node's certificate; client certificates checked against the CA
    /// but optional at the TLS layer, so Join can run without one (every other call checks).
    pub fn server_config(&self) -> tonic::transport::ServerTlsConfig {
        tonic::transport::ServerTlsConfig::new()
            .identity(tonic::transport::Identity::from_pem(&self.cert.chain_pem, &self.cert.key_pem))
            .client_ca_root(tonic::transport::Certificate::from_pem(&self.ca_pem))
            .client_auth_optional(true)
    }

    /// The client side: this node's certificate, servers checked against the CA.
    pub fn client_config(&self) -> tonic::transport::ClientTlsConfig {
        tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(&self.ca_pem))
            .identity(tonic::transport::Identity::from_pem(&self.cert.chain_pem, &self.cert.key_pem))
            .domain_name(SERVER_NAME)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_bad_ones_are_named() {
        let t = Token { ca_fingerprint: "ab".repeat(32), secret: "0123456789abcdef0123".into() };
        assert_eq!(Token::parse(&t.render()).unwrap(), t);
        for bad in [
            "",
            "WEFT-1-",
            "SWMTKN-1-x-y",
            &format!("WEFT-1-{}-short", "ab".repeat(32)),
            "WEFT-1-zz-0123456789abcdef",
        ] {
            let e = Token::parse(bad).unwrap_err().to_string();
            assert!(e.contains("invalid join token"), "{bad}: {e}");
        }
    }

    #[test]
    fn issued_certificates_chain_to_the_ca() {
        let ca = ClusterCa::generate().unwrap();
        let node = ca.issue("host1", 7).unwrap();
        let ders = certs_der(&node.chain_pem).unwrap();
        assert_eq!(ders.len(), 2);
        assert_eq!(fingerprint(&ders[1]), ca.fingerprint().unwrap());
        assert!(cert_is_for_node(&ders[0], 7));
        assert!(!cert_is_for_node(&ders[0], 8));
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from(ders[1].clone())).unwrap();
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .unwrap();
        verifier
            .verify_server_cert(
                &CertificateDer::from(ders[0].clone()),
                &[],
                &ServerName::try_from(SERVER_NAME).unwrap(),
                &[],
                UnixTime::now(),
            )
            .expect("leaf verifies against the CA");
        // A certificate of another CA does not.
        let other = ClusterCa::generate().unwrap().issue("host1", 7).unwrap();
        let other_leaf = certs_der(&other.chain_pem).unwrap().remove(0);
        assert!(
            verifier
                .verify_server_cert(
                    &CertificateDer::from(other_leaf),
                    &[],
                    &ServerName::try_from(SERVER_NAME).unwrap(),
                    &[],
                    UnixTime::now()
                )
                .is_err()
        );
    }
}

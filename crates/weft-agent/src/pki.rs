//! The cluster's certificate authority and what its certificates say. As in Swarm, a node's
//! certificate names the node (CN: its id) and its role (OU: `manager` or `worker`); an admin
//! certificate (OU `admin`) is a client bundle for the remote CLI. Managers' certificates alone
//! carry the DNS name [`MANAGER_NAME`], which every client checks, so no worker can pose as a
//! manager. Certificates are short-lived (see [`DEFAULT_CERT_TTL`]) and renewed by their nodes.
//! Join tokens are derived from the CA key and a generation kept in the replicated state, so a
//! rotation changes the token on every manager at once without a secret in the state.

use std::time::Duration;

use hmac::Mac as _;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SerialNumber,
};
use rustls::pki_types::CertificateDer;
use sha2::{Digest, Sha256};

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

/// The DNS name only managers' certificates carry: what a client of the cluster API checks.
pub const MANAGER_NAME: &str = "manager.weft.cluster";

/// How long a node or admin certificate is valid unless configured otherwise (Swarm's default).
pub const DEFAULT_CERT_TTL: Duration = Duration::from_secs(90 * 24 * 3600);

/// How far back a new certificate's validity starts, for clocks a little behind the issuer's.
const CLOCK_SKEW: Duration = Duration::from_secs(300);

/// The second DNS name in node `id`'s certificate: lets a peer that knows which node it dials
/// check that it reached that node.
pub fn node_dns_name(id: u64) -> String {
    format!("node-{id:016x}.weft.cluster")
}

/// The role a certificate was issued for (its OU).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertRole {
    /// A manager node: serves the API and the raft transport.
    Manager,
    /// A worker node.
    Worker,
    /// The remote admin CLI (`weft cluster cert admin`): no node behind it.
    Admin,
}

impl CertRole {
    fn unit(self) -> &'static str {
        match self {
            CertRole::Manager => "manager",
            CertRole::Worker => "worker",
            CertRole::Admin => "admin",
        }
    }

    fn from_unit(text: &str) -> Option<CertRole> {
        match text {
            "manager" => Some(CertRole::Manager),
            "worker" => Some(CertRole::Worker),
            "admin" => Some(CertRole::Admin),
            _ => None,
        }
    }
}

/// What a certificate of this cluster says about its holder, read from its DER.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertIdentity {
    /// The role (OU).
    pub role: CertRole,
    /// The node (CN, hex) for node certificates; `None` for admin ones.
    pub node: Option<u64>,
    /// The common name as written.
    pub name: String,
    /// Start of validity, seconds since the epoch.
    pub not_before: i64,
    /// End of validity, seconds since the epoch.
    pub not_after: i64,
    /// Serial number, hex.
    pub serial: String,
}

impl CertIdentity {
    /// Reads the identity of a certificate (that the TLS layer has checked against the CA).
    pub fn from_der(der: &[u8]) -> Result<CertIdentity, TlsError> {
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| TlsError::Cert(format!("unreadable certificate: {e}")))?;
        let subject = cert.subject();
        fn text<'a>(
            mut attrs: impl Iterator<Item = &'a x509_parser::x509::AttributeTypeAndValue<'a>>,
        ) -> Option<String> {
            attrs.next().and_then(|a| a.as_str().ok()).map(str::to_string)
        }
        let unit = text(subject.iter_organizational_unit())
            .ok_or_else(|| TlsError::Cert("the certificate names no role (OU)".into()))?;
        let role = CertRole::from_unit(&unit)
            .ok_or_else(|| TlsError::Cert(format!("unknown certificate role {unit:?}")))?;
        let name = text(subject.iter_common_name())
            .ok_or_else(|| TlsError::Cert("the certificate has no common name".into()))?;
        let node = match role {
            CertRole::Admin => None,
            CertRole::Manager | CertRole::Worker => Some(
                u64::from_str_radix(&name, 16)
                    .ok()
                    .filter(|id| *id != 0)
                    .ok_or_else(|| TlsError::Cert(format!("node certificate with CN {name:?}")))?,
            ),
        };
        Ok(CertIdentity {
            role,
            node,
            name,
            not_before: cert.validity().not_before.timestamp(),
            not_after: cert.validity().not_after.timestamp(),
            serial: cert.raw_serial_as_string().replace(':', ""),
        })
    }

    /// The identity of the first certificate in `pem`.
    pub fn from_pem(pem: &str) -> Result<CertIdentity, TlsError> {
        CertIdentity::from_der(&first_der(pem)?)
    }

    /// When to ask for a new certificate: once two thirds of its life since issue have passed
    /// (the back-dated start for clock skew does not count).
    pub fn renew_at(&self) -> i64 {
        let issued = (self.not_before + CLOCK_SKEW.as_secs() as i64).min(self.not_after);
        self.not_after - (self.not_after - issued) / 3
    }
}

/// The cluster CA: made by `--bootstrap`, copied to every manager (they all admit nodes).
#[derive(Clone)]
pub struct ClusterCa {
    /// The CA certificate, PEM.
    pub cert_pem: String,
    /// Its private key, PEM.
    pub key_pem: String,
}

/// A certificate chain (the leaf, then the CA) and the leaf's key.
#[derive(Debug, Clone)]
pub struct NodeCert {
    /// Leaf then CA, PEM.
    pub chain_pem: String,
    /// The leaf's private key, PEM.
    pub key_pem: String,
}

impl NodeCert {
    /// What the leaf says.
    pub fn identity(&self) -> Result<CertIdentity, TlsError> {
        CertIdentity::from_pem(&self.chain_pem)
    }
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

fn validity(params: &mut CertificateParams, ttl: Duration) -> Result<(), TlsError> {
    let now = time::OffsetDateTime::now_utc();
    let ttl = time::Duration::try_from(ttl).map_err(|e| TlsError::Cert(format!("certificate TTL: {e}")))?;
    let skew = time::Duration::try_from(CLOCK_SKEW).unwrap_or(time::Duration::ZERO);
    params.not_before = now - skew;
    params.not_after = now + ttl;
    let mut serial = [0u8; 16];
    read_urandom(&mut serial)?;
    serial[0] &= 0x7f;
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    Ok(())
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

    fn sign(&self, params: CertificateParams) -> Result<NodeCert, TlsError> {
        let issuer = Issuer::new(ca_params()?, KeyPair::from_pem(&self.key_pem)?);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &issuer)?;
        Ok(NodeCert { chain_pem: format!("{}{}", cert.pem(), self.cert_pem), key_pem: key.serialize_pem() })
    }

    /// Issues node `id` a certificate for `role` (manager or worker), valid for `ttl`. A
    /// manager's is a server certificate too and carries [`MANAGER_NAME`].
    pub fn issue_node(&self, id: u64, role: CertRole, ttl: Duration) -> Result<NodeCert, TlsError> {
        let mut names = vec![node_dns_name(id)];
        let mut usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        match role {
            CertRole::Manager => {
                names.push(MANAGER_NAME.to_string());
                usages.push(ExtendedKeyUsagePurpose::ServerAuth);
            }
            CertRole::Worker => {}
            CertRole::Admin => {
                return Err(TlsError::Cert("a node certificate is for a manager or a worker".into()));
            }
        }
        let mut params = CertificateParams::new(names)?;
        params.distinguished_name.push(DnType::CommonName, format!("{id:016x}"));
        params.distinguished_name.push(DnType::OrganizationalUnitName, role.unit());
        params.distinguished_name.push(DnType::OrganizationName, "weft");
        params.extended_key_usages = usages;
        validity(&mut params, ttl)?;
        self.sign(params)
    }

    /// Issues an admin client certificate (the remote CLI's), valid for `ttl`.
    pub fn issue_admin(&self, ttl: Duration) -> Result<NodeCert, TlsError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, format!("admin-{}", &random_secret()?[..8]));
        params.distinguished_name.push(DnType::OrganizationalUnitName, CertRole::Admin.unit());
        params.distinguished_name.push(DnType::OrganizationName, "weft");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        validity(&mut params, ttl)?;
        self.sign(params)
    }

    /// The secret of the join token for `manager` (or worker) at `generation`: HMAC-SHA256
    /// keyed with the CA key, so only managers can compute it and a new generation makes a new
    /// one.
    pub fn join_secret(&self, manager: bool, generation: u64) -> String {
        let role = if manager { "manager" } else { "worker" };
        let mut mac = hmac::Hmac::<Sha256>::new_from_slice(self.key_pem.as_bytes())
            .expect("HMAC takes keys of any length");
        mac.update(format!("weft join token v1/{role}/{generation}").as_bytes());
        hex::encode(&mac.finalize().into_bytes()[..16])
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

/// SHA-256 of a certificate's DER, in hex: what a token pins.
pub fn fingerprint(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

/// The DER of the first certificate in `pem`.
pub fn first_der(pem: &str) -> Result<Vec<u8>, TlsError> {
    certs_der(pem)?.into_iter().next().ok_or_else(|| TlsError::Cert("no certificate in PEM".into()))
}

/// The DER of every certificate in `pem`.
pub fn certs_der(pem: &str) -> Result<Vec<Vec<u8>>, TlsError> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .map(|c| c.map(|c| c.to_vec()).map_err(|e| TlsError::Cert(e.to_string())))
        .collect()
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
    fn certificates_name_their_node_role_and_lifetime() {
        let ca = ClusterCa::generate().unwrap();
        let ttl = Duration::from_secs(3600);
        let manager = ca.issue_node(0x2a, CertRole::Manager, ttl).unwrap().identity().unwrap();
        assert_eq!((manager.role, manager.node), (CertRole::Manager, Some(0x2a)));
        assert_eq!(manager.not_after - manager.not_before, 3600 + CLOCK_SKEW.as_secs() as i64);
        assert_eq!(manager.renew_at(), manager.not_after - 1200, "a third of the hour before expiry");
        let worker = ca.issue_node(7, CertRole::Worker, ttl).unwrap();
        assert_eq!(worker.identity().unwrap().role, CertRole::Worker);
        let admin = ca.issue_admin(ttl).unwrap().identity().unwrap();
        assert_eq!((admin.role, admin.node), (CertRole::Admin, None));
        assert!(admin.name.starts_with("admin-"));
        // Every certificate gets its own serial.
        let again = ca.issue_node(0x2a, CertRole::Manager, ttl).unwrap().identity().unwrap();
        assert_ne!(again.serial, manager.serial);
        assert!(ca.issue_node(1, CertRole::Admin, ttl).is_err());
    }

    #[test]
    fn join_secrets_differ_by_role_generation_and_ca() {
        let ca = ClusterCa::generate().unwrap();
        let w0 = ca.join_secret(false, 0);
        assert_eq!(w0, ca.join_secret(false, 0), "derived, so every manager computes the same");
        assert_eq!(w0.len(), 32);
        assert_ne!(w0, ca.join_secret(true, 0));
        assert_ne!(w0, ca.join_secret(false, 1));
        assert_ne!(w0, ClusterCa::generate().unwrap().join_secret(false, 0));
        assert!(Token::parse(&Token { ca_fingerprint: "ab".repeat(32), secret: w0 }.render()).is_ok());
    }
}

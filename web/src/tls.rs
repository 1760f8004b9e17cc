//! HTTPS for the console and the API. The hospital's certificate and key (PEM files named in
//! `parc.toml`), or, by default, the appliance's own: a CA made at first start in `<data>/tls/`
//! (`ca.pem`, `ca.key`, 0600) and a server certificate it signs for the appliance's names and
//! addresses. Technicians pin the CA by the fingerprint `parc serve` prints
//! (`parc login --fingerprint`), or trust it from `/tls/ca.pem` after checking that fingerprint.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest as _, Sha256};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: no PEM certificate in it ({reason}); give the certificate chain, server first")]
    BadCertificate { path: PathBuf, reason: String },
    #[error("{path}: no PEM private key in it ({reason})")]
    BadKey { path: PathBuf, reason: String },
    #[error("the certificate and key do not go together, or are not usable: {0}")]
    Config(String),
    #[error("making the appliance's certificate: {0}")]
    Generate(String),
}

/// What the HTTPS listener serves with.
pub struct Tls {
    pub config: Arc<rustls::ServerConfig>,
    /// The CA certificate technicians pin (the appliance's own), PEM; `None` with the
    /// hospital's certificate (their own PKI vouches for it).
    pub ca_pem: Option<String>,
    /// SHA-256 of the pinned certificate (the CA, or the hospital's server certificate), as
    /// `AB:CD:…`.
    pub fingerprint: String,
    /// Made on this start.
    pub created: bool,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("fingerprint", &self.fingerprint).field("created", &self.created).finish()
    }
}

/// `AB:CD:…` of a certificate's DER bytes.
pub fn fingerprint(der: &[u8]) -> String {
    Sha256::digest(der).iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":")
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TlsError + '_ {
    move |source| TlsError::Io { path: path.to_owned(), source }
}

/// The hospital's certificate chain and key.
pub fn load(cert: &Path, key: &Path) -> Result<Tls, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| TlsError::BadCertificate { path: cert.to_owned(), reason: e.to_string() })?
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::BadCertificate { path: cert.to_owned(), reason: e.to_string() })?;
    let first =
        chain.first().ok_or_else(|| TlsError::BadCertificate { path: cert.to_owned(), reason: "empty".into() })?;
    let fp = fingerprint(first);
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| TlsError::BadKey { path: key.to_owned(), reason: e.to_string() })?;
    Ok(Tls { config: server_config(chain, key)?, ca_pem: None, fingerprint: fp, created: false })
}

/// The appliance's own CA and server certificate under `dir` (made when missing), for
/// `names` (DNS names) and `addresses`.
pub fn own(dir: &Path, names: &[String], addresses: &[IpAddr]) -> Result<Tls, TlsError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let (ca_pem_path, ca_key_path) = (dir.join("ca.pem"), dir.join("ca.key"));
    let created = !ca_pem_path.exists();
    if created {
        let key = rcgen::KeyPair::generate().map_err(|e| TlsError::Generate(e.to_string()))?;
        let ca = ca_params().self_signed(&key).map_err(|e| TlsError::Generate(e.to_string()))?;
        write_private(&ca_key_path, key.serialize_pem().as_bytes())?;
        write_private(&ca_pem_path, ca.pem().as_bytes())?;
    }
    let ca_pem = std::fs::read_to_string(&ca_pem_path).map_err(io(&ca_pem_path))?;
    let ca_key_pem = std::fs::read_to_string(&ca_key_path).map_err(io(&ca_key_path))?;
    let ca_key = rcgen::KeyPair::from_pem(&ca_key_pem).map_err(|e| TlsError::Generate(e.to_string()))?;
    // The issuer as rcgen needs it: the same name and key as the stored CA certificate, which
    // is what the chain carries and technicians pinned.
    let ca = ca_params().self_signed(&ca_key).map_err(|e| TlsError::Generate(e.to_string()))?;
    let ca_der = CertificateDer::from_pem_slice(ca_pem.as_bytes())
        .map_err(|e| TlsError::BadCertificate { path: ca_pem_path.clone(), reason: e.to_string() })?;
    // The server certificate is made again at every start, for the names and addresses the
    // appliance has now (an interface renumbered is no reason for a browser warning).
    let leaf_key = rcgen::KeyPair::generate().map_err(|e| TlsError::Generate(e.to_string()))?;
    let mut sans: Vec<rcgen::SanType> = Vec::new();
    for n in names {
        if let Ok(n) = rcgen::Ia5String::try_from(n.as_str()) {
            sans.push(rcgen::SanType::DnsName(n));
        }
    }
    sans.extend(addresses.iter().map(|a| rcgen::SanType::IpAddress(*a)));
    let mut params = rcgen::CertificateParams::default();
    params.subject_alt_names = sans;
    params.distinguished_name.push(rcgen::DnType::CommonName, names.first().map(String::as_str).unwrap_or("parc"));
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2049, 12, 31);
    let leaf = params.signed_by(&leaf_key, &ca, &ca_key).map_err(|e| TlsError::Generate(e.to_string()))?;
    let key = PrivateKeyDer::try_from(leaf_key.serialize_der()).map_err(|e| TlsError::Generate(e.to_string()))?;
    let chain = vec![leaf.der().clone(), ca_der.clone()];
    Ok(Tls { config: server_config(chain, key)?, fingerprint: fingerprint(&ca_der), ca_pem: Some(ca_pem), created })
}

fn ca_params() -> rcgen::CertificateParams {
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name.push(rcgen::DnType::CommonName, "parc appliance CA");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2049, 12, 31);
    params
}

fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), TlsError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(io(path))?;
    f.write_all(bytes).and_then(|_| f.sync_all()).map_err(io(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_ca_is_made_once_and_signs_a_certificate_for_the_names() {
        let dir = tempfile::tempdir().unwrap();
        let names = vec!["parc.hopital.local".to_string(), "localhost".to_string()];
        let addrs: Vec<IpAddr> = vec!["127.0.0.1".parse().unwrap(), "10.77.0.1".parse().unwrap()];
        let first = own(dir.path(), &names, &addrs).unwrap();
        assert!(first.created);
        let again = own(dir.path(), &names, &addrs).unwrap();
        assert!(!again.created);
        assert_eq!(first.fingerprint, again.fingerprint, "the pinned CA survives restarts");
        assert_eq!(first.fingerprint.len(), 32 * 3 - 1);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("ca.key")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(matches!(
            load(&dir.path().join("nope.pem"), &dir.path().join("ca.key")),
            Err(TlsError::BadCertificate { .. })
        ));
    }
}

//! Certificate authorities and server certificates made in the test, for PostgreSQL servers with `ssl = on`.

use std::fs;
use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

/// A CA whose key lives only in this process: what it signs, only its certificate can vouch for.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A server certificate and its private key, both PEM.
#[derive(Clone)]
pub struct ServerCert {
    pub cert_pem: String,
    pub key_pem: String,
}

impl TestCa {
    /// A self-signed CA certificate with `name` as its common name.
    pub fn new(name: &str) -> Result<Self, String> {
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(|e| format!("CA parameters: {e}"))?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().map_err(|e| format!("CA key: {e}"))?;
        let issuer = CertifiedIssuer::self_signed(params, key).map_err(|e| format!("CA certificate: {e}"))?;
        Ok(TestCa { issuer })
    }

    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    /// Writes the CA certificate to `path` (a client's `sslrootcert`).
    pub fn write_cert(&self, path: &Path) -> Result<(), String> {
        fs::write(path, self.cert_pem()).map_err(|e| format!("write {}: {e}", path.display()))
    }

    /// A server certificate signed by this CA, valid for `names` (IP addresses become IP SANs, anything else DNS
    /// SANs); the first name is also the common name.
    pub fn issue(&self, names: &[&str]) -> Result<ServerCert, String> {
        let mut params = server_params(names)?;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().map_err(|e| format!("server key: {e}"))?;
        let cert = params.signed_by(&key, &self.issuer).map_err(|e| format!("server certificate: {e}"))?;
        Ok(ServerCert { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }

    /// A self-signed server certificate that is also a CA (basicConstraints CA:TRUE), as `openssl req -x509`
    /// makes by default, valid for `names`: its own `cert_pem` is the only root that can vouch for it.
    pub fn self_signed_ca_server(names: &[&str]) -> Result<ServerCert, String> {
        let mut params = server_params(names)?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().map_err(|e| format!("server key: {e}"))?;
        let cert = params.self_signed(&key).map_err(|e| format!("server certificate: {e}"))?;
        Ok(ServerCert { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }
}

/// Parameters for a certificate valid for `names` (IP addresses become IP SANs, anything else DNS SANs), the first
/// also its common name.
fn server_params(names: &[&str]) -> Result<CertificateParams, String> {
    let owned: Vec<String> = names.iter().map(ToString::to_string).collect();
    let mut params = CertificateParams::new(owned).map_err(|e| format!("certificate parameters: {e}"))?;
    if let Some(first) = names.first() {
        params.distinguished_name.push(DnType::CommonName, *first);
    }
    Ok(params)
}

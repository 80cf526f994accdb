//! `certs`: a private CA and a serving certificate for `<service>.<namespace>.svc`, plus the base64 caBundle
//! for the MutatingWebhookConfiguration. For clusters without cert-manager.
//!
//! Re-running it keeps an existing CA (so the caBundle stays valid) and issues a fresh serving certificate:
//! that is the rotation procedure, and the server picks the new files up without a restart.

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

use crate::Error;

#[derive(Debug, Clone)]
pub struct CertRequest {
    pub service: String,
    pub namespace: String,
    pub extra_dns: Vec<String>,
    pub ips: Vec<IpAddr>,
    pub days: u32,
    pub ca_days: u32,
}

impl CertRequest {
    /// Every name the API server may use to reach the Service, then the extra ones.
    pub fn dns_names(&self) -> Vec<String> {
        let (s, ns) = (&self.service, &self.namespace);
        let mut names =
            vec![format!("{s}.{ns}.svc"), format!("{s}.{ns}.svc.cluster.local"), format!("{s}.{ns}"), s.clone()];
        names.extend(self.extra_dns.iter().cloned());
        names
    }
}

/// PEM texts of one issue.
#[derive(Debug, Clone)]
pub struct IssuedCerts {
    pub ca_cert_pem: String,
    pub ca_key_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl IssuedCerts {
    pub fn ca_bundle(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.ca_cert_pem.as_bytes())
    }
}

fn certs_error(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Certs(format!("{what}: {e}"))
}

/// Issues a serving certificate, signed by `ca` (PEM certificate and key) or by a new CA.
pub fn issue(request: &CertRequest, ca: Option<(String, String)>) -> Result<IssuedCerts, Error> {
    let now = OffsetDateTime::now_utc();
    let (ca_cert_pem, ca_key_pem) = match ca {
        Some(pair) => pair,
        None => {
            let key = KeyPair::generate().map_err(|e| certs_error("generating the CA key", e))?;
            let mut params = CertificateParams::default();
            params.distinguished_name = DistinguishedName::new();
            params.distinguished_name.push(DnType::CommonName, format!("mount-hints CA ({})", request.namespace));
            params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            params.not_before = now - Duration::minutes(5);
            params.not_after = now + Duration::days(request.ca_days.into());
            let cert = params.self_signed(&key).map_err(|e| certs_error("signing the CA", e))?;
            (cert.pem(), key.serialize_pem())
        }
    };
    let ca_key = KeyPair::from_pem(&ca_key_pem).map_err(|e| certs_error("reading the CA key", e))?;
    let issuer = Issuer::from_ca_cert_pem(&ca_cert_pem, ca_key).map_err(|e| certs_error("reading the CA", e))?;

    let key = KeyPair::generate().map_err(|e| certs_error("generating the serving key", e))?;
    let mut params = CertificateParams::new(request.dns_names()).map_err(|e| certs_error("serving names", e))?;
    params.subject_alt_names.extend(request.ips.iter().map(|ip| SanType::IpAddress(*ip)));
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, request.dns_names()[0].clone());
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.not_before = now - Duration::minutes(5);
    params.not_after = now + Duration::days(request.days.into());
    let cert = params.signed_by(&key, &issuer).map_err(|e| certs_error("signing the serving certificate", e))?;
    Ok(IssuedCerts { ca_cert_pem, ca_key_pem, cert_pem: cert.pem(), key_pem: key.serialize_pem() })
}

/// The files `certs` writes into its output directory.
pub const CA_CERT: &str = "ca.crt";
pub const CA_KEY: &str = "ca.key";
pub const TLS_CERT: &str = "tls.crt";
pub const TLS_KEY: &str = "tls.key";
pub const CA_BUNDLE: &str = "ca-bundle.b64";

/// Reads the CA of an earlier run, if both its files are there.
pub fn existing_ca(dir: &Path) -> Result<Option<(String, String)>, Error> {
    let (cert, key) = (dir.join(CA_CERT), dir.join(CA_KEY));
    if !cert.exists() || !key.exists() {
        return Ok(None);
    }
    let read = |p: &PathBuf| std::fs::read_to_string(p).map_err(|source| Error::Read { path: p.clone(), source });
    Ok(Some((read(&cert)?, read(&key)?)))
}

/// Writes every file atomically (temporary file, then rename), keys readable by the owner only.
pub fn write_issued(dir: &Path, issued: &IssuedCerts) -> Result<(), Error> {
    std::fs::create_dir_all(dir)?;
    let files = [
        (CA_CERT, issued.ca_cert_pem.as_str(), 0o644),
        (CA_KEY, issued.ca_key_pem.as_str(), 0o600),
        (TLS_CERT, issued.cert_pem.as_str(), 0o644),
        (TLS_KEY, issued.key_pem.as_str(), 0o600),
    ];
    let bundle = issued.ca_bundle();
    for (name, content, mode) in files.into_iter().chain([(CA_BUNDLE, bundle.as_str(), 0o644)]) {
        write_atomically(&dir.join(name), content.as_bytes(), mode)?;
    }
    Ok(())
}

fn write_atomically(path: &Path, content: &[u8], mode: u32) -> Result<(), Error> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(&tmp)?;
    file.write_all(content)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serve::ServingCert;

    fn request() -> CertRequest {
        CertRequest {
            service: "mount-hints".into(),
            namespace: "mount-hints".into(),
            extra_dns: vec![],
            ips: vec!["127.0.0.1".parse().unwrap()],
            days: 30,
            ca_days: 365,
        }
    }

    #[test]
    fn issues_a_pair_the_server_accepts_and_keeps_the_ca() {
        let first = issue(&request(), None).unwrap();
        let cert = ServingCert::from_pem(first.cert_pem.as_bytes(), first.key_pem.as_bytes()).unwrap();
        assert!(cert.subject.contains("mount-hints.mount-hints.svc"));
        let (_, parsed) = x509_parser::pem::parse_x509_pem(first.cert_pem.as_bytes()).unwrap();
        let parsed = parsed.parse_x509().unwrap();
        let sans = format!("{:?}", parsed.subject_alternative_name().unwrap().unwrap().value);
        assert!(sans.contains("mount-hints.mount-hints.svc") && sans.contains("IPAddress([127, 0, 0, 1])"), "{sans}");

        let second = issue(&request(), Some((first.ca_cert_pem.clone(), first.ca_key_pem.clone()))).unwrap();
        assert_eq!(second.ca_cert_pem, first.ca_cert_pem);
        assert_ne!(second.cert_pem, first.cert_pem);
        let decoded = base64::engine::general_purpose::STANDARD.decode(second.ca_bundle()).unwrap();
        assert_eq!(decoded, first.ca_cert_pem.as_bytes());
    }
}

//! The hub's certificate authority: its own server certificate, the admin credential, and the
//! certificates it signs for spokes. Identity is a SAN URI:
//! `spiffe://gitfleet/cluster/<name>` for a spoke, `spiffe://gitfleet/admin/<name>` for an admin.
//!
//! Chain validation is rustls's job (the gRPC server trusts only this CA); [`identify`] only maps
//! an already verified certificate to a [`Peer`].

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};

use sha2::Digest;

use crate::client::config::write_private;

#[cfg(test)]
mod tests;

const SPIFFE_CLUSTER: &str = "spiffe://gitfleet/cluster/";
const SPIFFE_ADMIN: &str = "spiffe://gitfleet/admin/";

const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
const SERVER_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
const ADMIN_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// Certificates the hub holds itself are renewed at start when less than this remains.
const RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);
/// Validity of spoke certificates unless the caller asks otherwise.
pub const DEFAULT_CLUSTER_CERT_VALIDITY: Duration = Duration::from_secs(30 * 24 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what}: {source}")]
    Rcgen {
        what: &'static str,
        source: rcgen::Error,
    },
    #[error("invalid certificate signing request: {0}")]
    InvalidCsr(String),
    #[error("{path} does not hold a valid certificate: {message}")]
    BadCertificate { path: PathBuf, message: String },
}

/// Who is calling, as proven by a verified client certificate.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Peer {
    Cluster(String),
    Admin(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("client certificate cannot be parsed: {0}")]
    Unparseable(String),
    #[error("client certificate names no gitfleet identity (no spiffe://gitfleet/ SAN URI)")]
    NoIdentity,
    #[error("client certificate names more than one gitfleet identity")]
    Ambiguous,
    #[error("client certificate identity {0:?} is malformed")]
    Malformed(String),
}

/// Maps a verified client certificate (DER) to the peer it names.
pub fn identify(cert_der: &[u8]) -> Result<Peer, IdentityError> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
        .map_err(|e| IdentityError::Unparseable(e.to_string()))?;
    let sans = cert
        .subject_alternative_name()
        .map_err(|e| IdentityError::Unparseable(e.to_string()))?;
    let uris = sans
        .map(|ext| {
            ext.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    x509_parser::extensions::GeneralName::URI(u) => Some(*u),
                    _ => None,
                })
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    identify_uris(&uris)
}

/// The pure heart of [`identify`]: the peer named by a certificate's SAN URIs.
pub fn identify_uris(uris: &[&str]) -> Result<Peer, IdentityError> {
    let mut found = None;
    for uri in uris {
        let peer = if let Some(name) = uri.strip_prefix(SPIFFE_CLUSTER) {
            Peer::Cluster(valid_name(uri, name)?)
        } else if let Some(name) = uri.strip_prefix(SPIFFE_ADMIN) {
            Peer::Admin(valid_name(uri, name)?)
        } else if uri.starts_with("spiffe://gitfleet/") {
            return Err(IdentityError::Malformed((*uri).to_owned()));
        } else {
            continue;
        };
        if found.replace(peer).is_some() {
            return Err(IdentityError::Ambiguous);
        }
    }
    found.ok_or(IdentityError::NoIdentity)
}

fn valid_name(uri: &str, name: &str) -> Result<String, IdentityError> {
    if dns1123_label_problem(name).is_some() {
        return Err(IdentityError::Malformed(uri.to_owned()));
    }
    Ok(name.to_owned())
}

/// Cluster names are DNS-1123 labels, checked by the same rule as every resource name.
pub use crate::resources::dns1123_label_problem;

/// A certificate issued to a spoke.
#[derive(Debug, Clone)]
pub struct IssuedCert {
    pub certificate_pem: String,
    pub not_after_unix: i64,
    /// SHA-256 of the certified public key, hex: tells a retry with the same key from a
    /// different key claiming the same name.
    pub key_fingerprint: String,
}

/// A certificate and its private key, PEM.
#[derive(Debug, Clone)]
pub struct KeyedCert {
    pub cert_pem: String,
    pub key_pem: String,
}

/// The hub's CA with the credentials it holds itself, loaded from (or created in) `DATA/pki`.
pub struct Pki {
    ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
    server: KeyedCert,
    admin: KeyedCert,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki").finish_non_exhaustive()
    }
}

impl Pki {
    /// Loads the CA from `dir`, creating it on first start; (re)issues the server certificate when
    /// it is missing, near expiry, or lacks one of `server_names`; same for the admin credential.
    pub fn load_or_create(dir: &Path, server_names: &[String]) -> Result<Self, PkiError> {
        std::fs::create_dir_all(dir).map_err(|source| PkiError::Write {
            path: dir.to_owned(),
            source,
        })?;
        let ca_crt = dir.join("ca.crt");
        let ca_key_path = dir.join("ca.key");
        let (ca_pem, ca_key) = if ca_crt.exists() && ca_key_path.exists() {
            let pem = read(&ca_crt)?;
            let key =
                KeyPair::from_pem(&read(&ca_key_path)?).map_err(|source| PkiError::Rcgen {
                    what: "cannot load the CA key",
                    source,
                })?;
            (pem, key)
        } else {
            let key = new_key()?;
            let mut params = CertificateParams::default();
            params.distinguished_name = rcgen::DistinguishedName::new();
            params
                .distinguished_name
                .push(DnType::CommonName, "gitfleet hub CA");
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::CrlSign,
                KeyUsagePurpose::DigitalSignature,
            ];
            set_validity(&mut params, CA_VALIDITY);
            let cert = params.self_signed(&key).map_err(|source| PkiError::Rcgen {
                what: "cannot create the CA certificate",
                source,
            })?;
            write_private(&ca_key_path, key.serialize_pem().as_bytes()).map_err(|source| {
                PkiError::Write {
                    path: ca_key_path.clone(),
                    source,
                }
            })?;
            write(&ca_crt, &cert.pem())?;
            (cert.pem(), key)
        };
        // Signing takes the subject and key identifier from the CA certificate on disk, so that
        // every certificate names the exact issuer clients trust.
        let issuer =
            Issuer::from_ca_cert_pem(&ca_pem, ca_key).map_err(|source| PkiError::Rcgen {
                what: "cannot load the CA certificate",
                source,
            })?;
        let mut pki = Self {
            ca_pem,
            issuer,
            server: KeyedCert {
                cert_pem: String::new(),
                key_pem: String::new(),
            },
            admin: KeyedCert {
                cert_pem: String::new(),
                key_pem: String::new(),
            },
        };

        let mut names: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
        for n in server_names {
            if !names.contains(n) {
                names.push(n.clone());
            }
        }
        pki.server = pki.load_or_issue(
            dir,
            "server",
            |existing| {
                let sans = existing.map(|c| c.dns_and_ips).unwrap_or_default();
                names.iter().all(|n| sans.contains(n))
            },
            |pki, key| pki.server_cert(key, &names),
        )?;
        pki.admin = pki.load_or_issue(
            dir,
            "admin",
            |_| true,
            |pki, key| {
                pki.client_cert(
                    key,
                    "admin",
                    &format!("{SPIFFE_ADMIN}admin"),
                    ADMIN_VALIDITY,
                )
            },
        )?;
        Ok(pki)
    }

    fn load_or_issue(
        &self,
        dir: &Path,
        stem: &str,
        still_fits: impl Fn(Option<CertFacts>) -> bool,
        issue: impl Fn(&Self, &KeyPair) -> Result<String, PkiError>,
    ) -> Result<KeyedCert, PkiError> {
        let crt = dir.join(format!("{stem}.crt"));
        let key_path = dir.join(format!("{stem}.key"));
        if crt.exists() && key_path.exists() {
            let cert_pem = read(&crt)?;
            let facts = cert_facts(&cert_pem, &crt)?;
            let fresh = facts.not_after_unix - now_unix() > RENEW_BEFORE.as_secs() as i64;
            if fresh && still_fits(Some(facts)) {
                return Ok(KeyedCert {
                    cert_pem,
                    key_pem: read(&key_path)?,
                });
            }
        }
        let key = new_key()?;
        let cert_pem = issue(self, &key)?;
        let key_pem = key.serialize_pem();
        write_private(&key_path, key_pem.as_bytes()).map_err(|source| PkiError::Write {
            path: key_path.clone(),
            source,
        })?;
        write(&crt, &cert_pem)?;
        Ok(KeyedCert { cert_pem, key_pem })
    }

    fn server_cert(&self, key: &KeyPair, names: &[String]) -> Result<String, PkiError> {
        let mut params =
            CertificateParams::new(names.to_vec()).map_err(|source| PkiError::Rcgen {
                what: "invalid server name",
                source,
            })?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "gitfleet hub");
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        set_validity(&mut params, SERVER_VALIDITY);
        let cert = params
            .signed_by(key, &self.issuer)
            .map_err(|source| PkiError::Rcgen {
                what: "cannot sign the server certificate",
                source,
            })?;
        Ok(cert.pem())
    }

    fn client_params(
        cn: &str,
        uri: &str,
        validity: Duration,
    ) -> Result<CertificateParams, PkiError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.subject_alt_names = vec![SanType::URI(uri.try_into().map_err(|source| {
            PkiError::Rcgen {
                what: "invalid identity URI",
                source,
            }
        })?)];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        set_validity(&mut params, validity);
        Ok(params)
    }

    fn client_cert(
        &self,
        key: &KeyPair,
        cn: &str,
        uri: &str,
        validity: Duration,
    ) -> Result<String, PkiError> {
        let params = Self::client_params(cn, uri, validity)?;
        let cert = params
            .signed_by(key, &self.issuer)
            .map_err(|source| PkiError::Rcgen {
                what: "cannot sign the client certificate",
                source,
            })?;
        Ok(cert.pem())
    }

    /// Verifies the CSR's signature and issues a certificate naming `cluster` for the CSR's key.
    /// Whatever else the CSR asks for (subject, SANs, usages) is ignored: the hub decides.
    pub fn sign_cluster_csr(
        &self,
        csr_pem: &str,
        cluster: &str,
        validity: Duration,
    ) -> Result<IssuedCert, PkiError> {
        if let Some(problem) = dns1123_label_problem(cluster) {
            return Err(PkiError::InvalidCsr(format!(
                "cluster name {cluster:?} {problem}"
            )));
        }
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| PkiError::InvalidCsr(e.to_string()))?;
        let params = Self::client_params(cluster, &format!("{SPIFFE_CLUSTER}{cluster}"), validity)?;
        let not_after_unix = params.not_after.unix_timestamp();
        let cert = params
            .signed_by(&csr.public_key, &self.issuer)
            .map_err(|source| PkiError::Rcgen {
                what: "cannot sign the cluster certificate",
                source,
            })?;
        Ok(IssuedCert {
            certificate_pem: cert.pem(),
            not_after_unix,
            key_fingerprint: hex::encode(sha2::Sha256::digest(rcgen::PublicKeyData::der_bytes(
                &csr.public_key,
            ))),
        })
    }

    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    pub fn server(&self) -> &KeyedCert {
        &self.server
    }

    pub fn admin(&self) -> &KeyedCert {
        &self.admin
    }
}

/// What the hub checks about a certificate it holds.
#[derive(Debug, Clone, Default)]
struct CertFacts {
    not_after_unix: i64,
    dns_and_ips: Vec<String>,
}

fn cert_facts(pem: &str, path: &Path) -> Result<CertFacts, PkiError> {
    let bad = |message: String| PkiError::BadCertificate {
        path: path.to_owned(),
        message,
    };
    let (_, pem) =
        x509_parser::pem::parse_x509_pem(pem.as_bytes()).map_err(|e| bad(e.to_string()))?;
    let cert = pem.parse_x509().map_err(|e| bad(e.to_string()))?;
    let mut dns_and_ips = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                x509_parser::extensions::GeneralName::DNSName(d) => {
                    dns_and_ips.push((*d).to_owned())
                }
                x509_parser::extensions::GeneralName::IPAddress(ip) => {
                    let ip = match ip.len() {
                        4 => <[u8; 4]>::try_from(*ip).ok().map(std::net::IpAddr::from),
                        16 => <[u8; 16]>::try_from(*ip).ok().map(std::net::IpAddr::from),
                        _ => None,
                    };
                    if let Some(ip) = ip {
                        dns_and_ips.push(ip.to_string());
                    }
                }
                _ => {}
            }
        }
    }
    Ok(CertFacts {
        not_after_unix: cert.validity().not_after.timestamp(),
        dns_and_ips,
    })
}

fn new_key() -> Result<KeyPair, PkiError> {
    KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|source| PkiError::Rcgen {
        what: "cannot generate a key",
        source,
    })
}

fn set_validity(params: &mut CertificateParams, validity: Duration) {
    let now = time::OffsetDateTime::now_utc();
    // A little slack for clocks that run behind.
    params.not_before = now - time::Duration::minutes(5);
    params.not_after = now + validity;
    let mut serial: [u8; 16] = rand::random();
    serial[0] &= 0x7f;
    params.serial_number = Some(SerialNumber::from_slice(&serial));
}

fn read(path: &Path) -> Result<String, PkiError> {
    std::fs::read_to_string(path).map_err(|source| PkiError::Read {
        path: path.to_owned(),
        source,
    })
}

fn write(path: &Path, text: &str) -> Result<(), PkiError> {
    std::fs::write(path, text).map_err(|source| PkiError::Write {
        path: path.to_owned(),
        source,
    })
}

pub(crate) fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

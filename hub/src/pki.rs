//! The hub's certificate authority: its own server certificate, the admin credential, and the
//! certificates it signs for spokes. Identity is a SAN URI:
//! `spiffe://gitfleet/cluster/<name>` for a spoke, `spiffe://gitfleet/admin/<name>` for an admin,
//! `spiffe://gitfleet/replica/<id>` for a replica of the hub handing another one a call (see
//! `grpc::forward`): the hub puts exactly one URI in every certificate it signs, built from one of
//! these prefixes, so a cluster's or user's certificate can never carry a replica's.
//!
//! Chain validation is rustls's job (the gRPC server trusts only this CA); [`identify`] only maps
//! an already verified certificate to a [`Peer`].

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};

use sha2::Digest;

#[cfg(test)]
mod tests;

const SPIFFE_CLUSTER: &str = "spiffe://gitfleet/cluster/";
const SPIFFE_ADMIN: &str = "spiffe://gitfleet/admin/";
const SPIFFE_REPLICA: &str = "spiffe://gitfleet/replica/";

const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
const SERVER_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
const ADMIN_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// Certificates the hub holds itself are renewed at start when less than this remains.
const RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);
/// Validity of the certificate a replica presents to the leading replica: short, since every
/// replica can issue itself another (it holds the CA key).
pub const REPLICA_CERT_VALIDITY: Duration = Duration::from_secs(24 * 3600);
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
    #[error("{0}")]
    InvalidName(String),
    #[error("invalid certificate signing request: {0}")]
    InvalidCsr(String),
    #[error("{path} does not hold a valid certificate: {message}")]
    BadCertificate { path: PathBuf, message: String },
    /// Half of the CA is gone. A new CA would lock out every spoke, so the hub refuses to start.
    #[error(
        "{missing} is missing but {present} exists: the hub will not create a new CA, which would lock out every spoke; restore {missing} from a backup, or remove both files to start a new CA"
    )]
    MissingCaFile { missing: PathBuf, present: PathBuf },
    #[error("{key} is not the private key of the CA certificate {cert}")]
    CaKeyMismatch { key: PathBuf, cert: PathBuf },
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
    /// A replica's certificate only carries calls for their callers (`grpc::forward`).
    #[error("a hub replica's certificate speaks for no user or cluster by itself")]
    Replica,
}

/// Maps a verified client certificate (DER) to the peer it names.
pub fn identify(cert_der: &[u8]) -> Result<Peer, IdentityError> {
    named(cert_der)?.peer()
}

/// Whether a verified certificate (DER) is a replica's (see [`Pki::issue_replica`]).
pub fn is_replica(cert_der: &[u8]) -> bool {
    matches!(named(cert_der), Ok(Named::Replica))
}

fn named(cert_der: &[u8]) -> Result<Named, IdentityError> {
    let uris = san_uris(cert_der)?;
    named_by(&uris.iter().map(String::as_str).collect::<Vec<_>>())
}

fn san_uris(cert_der: &[u8]) -> Result<Vec<String>, IdentityError> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
        .map_err(|e| IdentityError::Unparseable(e.to_string()))?;
    let sans = cert
        .subject_alternative_name()
        .map_err(|e| IdentityError::Unparseable(e.to_string()))?;
    Ok(sans
        .map(|ext| {
            ext.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    x509_parser::extensions::GeneralName::URI(u) => Some((*u).to_owned()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default())
}

/// The pure heart of [`identify`]: the peer named by a certificate's SAN URIs.
pub fn identify_uris(uris: &[&str]) -> Result<Peer, IdentityError> {
    named_by(uris)?.peer()
}

/// Whom a certificate's SAN URIs name.
enum Named {
    Peer(Peer),
    Replica,
}

impl Named {
    fn peer(self) -> Result<Peer, IdentityError> {
        match self {
            Named::Peer(peer) => Ok(peer),
            Named::Replica => Err(IdentityError::Replica),
        }
    }
}

fn named_by(uris: &[&str]) -> Result<Named, IdentityError> {
    let mut found = None;
    for &uri in uris {
        let named = if let Some(name) = uri.strip_prefix(SPIFFE_CLUSTER) {
            Named::Peer(Peer::Cluster(valid_name(uri, name)?))
        } else if let Some(name) = uri.strip_prefix(SPIFFE_ADMIN) {
            Named::Peer(Peer::Admin(valid_name(uri, name)?))
        } else if let Some(id) = uri.strip_prefix(SPIFFE_REPLICA) {
            valid_name(uri, id)?;
            Named::Replica
        } else if uri.starts_with("spiffe://gitfleet/") {
            return Err(IdentityError::Malformed(uri.to_owned()));
        } else {
            continue;
        };
        if found.replace(named).is_some() {
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

/// A CSR whose signature has been verified: the requester holds the key it names.
#[derive(Debug, Clone)]
pub struct VerifiedCsr {
    public_key: rcgen::PublicKey,
    /// See [`IssuedCert::key_fingerprint`].
    pub key_fingerprint: String,
}

/// The key a certificate certifies, and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertKey {
    /// SHA-256 of the certified public key (the subjectPublicKey bits), hex: the same
    /// fingerprint [`IssuedCert::key_fingerprint`] gives the certificate the hub issued.
    pub fingerprint: String,
    pub not_after_unix: i64,
}

/// The key of a (verified) certificate, DER.
pub fn cert_key(cert_der: &[u8]) -> Result<CertKey, IdentityError> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
        .map_err(|e| IdentityError::Unparseable(e.to_string()))?;
    Ok(CertKey {
        fingerprint: key_fingerprint(&cert.public_key().subject_public_key.data),
        not_after_unix: cert.validity().not_after.timestamp(),
    })
}

/// [`cert_key`] of a PEM certificate.
pub fn cert_key_pem(cert_pem: &str) -> Result<CertKey, IdentityError> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes())
        .map_err(|e| IdentityError::Unparseable(e.to_string()))?;
    cert_key(&pem.contents)
}

fn key_fingerprint(public_key: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(public_key))
}

/// A user's new credential and the key it certifies (what the user's record binds).
#[derive(Debug, Clone)]
pub struct IssuedUser {
    pub credential: KeyedCert,
    pub key: CertKey,
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
    /// CSRs verified and cluster certificates signed since start: work that only a caller
    /// holding a valid bootstrap token (or a cluster certificate) may cause.
    csrs_verified: AtomicU64,
    clusters_signed: AtomicU64,
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
        let (ca_pem, ca_key) = match load_ca(&ca_crt, &ca_key_path)? {
            Some(loaded) => loaded,
            None => create_ca(&ca_crt, &ca_key_path)?,
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
            csrs_verified: AtomicU64::new(0),
            clusters_signed: AtomicU64::new(0),
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
            let key_pem = read(&key_path)?;
            // A crash between writing the key and the certificate leaves a pair that does not
            // match: issue again rather than fail the TLS setup.
            let matches = KeyPair::from_pem(&key_pem)
                .is_ok_and(|key| key.public_key_raw() == facts.public_key.as_slice());
            if fresh && matches && still_fits(Some(facts)) {
                return Ok(KeyedCert { cert_pem, key_pem });
            }
        }
        let key = new_key()?;
        let cert_pem = issue(self, &key)?;
        let key_pem = key.serialize_pem();
        write_atomic(&key_path, key_pem.as_bytes(), true).map_err(|source| PkiError::Write {
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
        check_cluster_name(cluster)?;
        let csr = self.verify_csr(csr_pem)?;
        self.sign_cluster(&csr, cluster, validity)
    }

    /// Parses a CSR and verifies its signature (proof that the requester holds the key).
    pub fn verify_csr(&self, csr_pem: &str) -> Result<VerifiedCsr, PkiError> {
        self.csrs_verified.fetch_add(1, Ordering::Relaxed);
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| PkiError::InvalidCsr(e.to_string()))?;
        Ok(VerifiedCsr {
            key_fingerprint: key_fingerprint(rcgen::PublicKeyData::der_bytes(&csr.public_key)),
            public_key: csr.public_key,
        })
    }

    /// Issues a certificate naming `cluster` for a verified CSR's key.
    pub fn sign_cluster(
        &self,
        csr: &VerifiedCsr,
        cluster: &str,
        validity: Duration,
    ) -> Result<IssuedCert, PkiError> {
        check_cluster_name(cluster)?;
        self.clusters_signed.fetch_add(1, Ordering::Relaxed);
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
            key_fingerprint: csr.key_fingerprint.clone(),
        })
    }

    /// Issues a user's credential: a new key (made here, handed back, never stored) and a
    /// certificate naming `spiffe://gitfleet/admin/<name>` for it.
    pub fn issue_user(&self, name: &str, validity: Duration) -> Result<IssuedUser, PkiError> {
        if let Some(problem) = dns1123_label_problem(name) {
            return Err(PkiError::InvalidName(format!(
                "user name {name:?} {problem}"
            )));
        }
        let key = new_key()?;
        let cert_pem = self.client_cert(&key, name, &format!("{SPIFFE_ADMIN}{name}"), validity)?;
        let issued = cert_key_pem(&cert_pem).map_err(|e| PkiError::BadCertificate {
            path: PathBuf::from(format!("(the certificate of user {name})")),
            message: e.to_string(),
        })?;
        Ok(IssuedUser {
            credential: KeyedCert {
                cert_pem,
                key_pem: key.serialize_pem(),
            },
            key: issued,
        })
    }

    /// A short-lived certificate naming this process as a replica of the hub, with a new key:
    /// what a follower presents to the leading replica when it hands it a call. The leader takes
    /// the caller's identity from the headers of a call only when it comes with such a
    /// certificate; the certificate itself speaks for no one ([`IdentityError::Replica`]).
    pub fn issue_replica(&self, validity: Duration) -> Result<KeyedCert, PkiError> {
        let key = new_key()?;
        let id = format!("r{}", hex::encode(rand::random::<[u8; 8]>()));
        let cert_pem = self.client_cert(
            &key,
            "gitfleet hub replica",
            &format!("{SPIFFE_REPLICA}{id}"),
            validity,
        )?;
        Ok(KeyedCert {
            cert_pem,
            key_pem: key.serialize_pem(),
        })
    }

    /// How many CSRs were verified and cluster certificates signed since start.
    pub fn csr_work(&self) -> (u64, u64) {
        (
            self.csrs_verified.load(Ordering::Relaxed),
            self.clusters_signed.load(Ordering::Relaxed),
        )
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
    /// The subjectPublicKey bits.
    public_key: Vec<u8>,
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
        public_key: cert.public_key().subject_public_key.data.to_vec(),
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
    write_atomic(path, text.as_bytes(), false).map_err(|source| PkiError::Write {
        path: path.to_owned(),
        source,
    })
}

/// The CA from its two files; `None` when neither exists (a first start). Exactly one of them
/// is an error, unless a CA creation that a crash interrupted left the other staged: then
/// the creation is finished.
fn load_ca(ca_crt: &Path, ca_key_path: &Path) -> Result<Option<(String, KeyPair)>, PkiError> {
    let (crt_there, key_there) = (exists(ca_crt)?, exists(ca_key_path)?);
    if !crt_there && !key_there {
        return Ok(None);
    }
    if crt_there != key_there {
        let (missing, present) = if crt_there {
            (ca_key_path, ca_crt)
        } else {
            (ca_crt, ca_key_path)
        };
        let staged = staged_path(missing);
        let finished = exists(&staged)? && {
            // Only a staged file that belongs with the one present completes the pair.
            let (pem, key) = if crt_there {
                (read(ca_crt)?, read(&staged)?)
            } else {
                (read(&staged)?, read(ca_key_path)?)
            };
            ca_pair_matches(&pem, &key)
        };
        if !finished {
            return Err(PkiError::MissingCaFile {
                missing: missing.to_owned(),
                present: present.to_owned(),
            });
        }
        commit_staged(&staged, missing).map_err(|source| PkiError::Write {
            path: missing.to_owned(),
            source,
        })?;
    }
    let pem = read(ca_crt)?;
    let key_pem = read(ca_key_path)?;
    if !ca_pair_matches(&pem, &key_pem) {
        return Err(PkiError::CaKeyMismatch {
            key: ca_key_path.to_owned(),
            cert: ca_crt.to_owned(),
        });
    }
    let key = KeyPair::from_pem(&key_pem).map_err(|source| PkiError::Rcgen {
        what: "cannot load the CA key",
        source,
    })?;
    Ok(Some((pem, key)))
}

/// Makes a new CA. Both files are staged (written and synced) before either takes its name,
/// so that a crash leaves neither, or one and its staged partner (which [`load_ca`] finishes).
fn create_ca(ca_crt: &Path, ca_key_path: &Path) -> Result<(String, KeyPair), PkiError> {
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
    let pem = cert.pem();
    let staged_key = staged_path(ca_key_path);
    let staged_crt = staged_path(ca_crt);
    let write_err = |path: &Path| {
        let path = path.to_owned();
        move |source| PkiError::Write { path, source }
    };
    stage(&staged_key, key.serialize_pem().as_bytes(), true).map_err(write_err(ca_key_path))?;
    stage(&staged_crt, pem.as_bytes(), false).map_err(write_err(ca_crt))?;
    commit_staged(&staged_key, ca_key_path).map_err(write_err(ca_key_path))?;
    commit_staged(&staged_crt, ca_crt).map_err(write_err(ca_crt))?;
    Ok((pem, key))
}

/// Whether `key_pem` is the private key of the certificate `cert_pem`.
fn ca_pair_matches(cert_pem: &str, key_pem: &str) -> bool {
    let Ok(key) = KeyPair::from_pem(key_pem) else {
        return false;
    };
    let Ok((_, pem)) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes()) else {
        return false;
    };
    pem.parse_x509().is_ok_and(|cert| {
        cert.public_key().subject_public_key.data.as_ref() == key.public_key_raw()
    })
}

fn exists(path: &Path) -> Result<bool, PkiError> {
    path.try_exists().map_err(|source| PkiError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Where a file is written before it takes its name: the same directory (a rename within one
/// file system is atomic), hidden.
fn staged_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.new"))
}

/// Writes `bytes` to `path` and syncs it; owner-only when `private` (the mode is set when the
/// file is created, so an older file of the same name is replaced, not reused).
fn stage(path: &Path, bytes: &[u8], private: bool) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(if private { 0o600 } else { 0o644 })
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Gives a staged file its name, durably (the directory entry is synced too).
fn commit_staged(staged: &Path, path: &Path) -> std::io::Result<()> {
    std::fs::rename(staged, path)?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)?.sync_all()
}

/// Replaces `path` with `bytes` atomically and durably: a reader (or a restart after a crash)
/// sees the old content or the new, never a mix or an empty file. Owner-only when `private`.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8], private: bool) -> std::io::Result<()> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // Unique, so that two writers of one file never write into each other's temporary file.
    let tmp = path.with_file_name(format!(
        ".{name}.tmp.{}.{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let written = stage(&tmp, bytes, private).and_then(|()| commit_staged(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// [`write_atomic`], owner-only: for files that hold a private key (the admin credentials file,
/// a backup).
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomic(path, bytes, true)
}

pub(crate) fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

/// A cluster name goes into a certificate's URI only as a DNS-1123 label.
fn check_cluster_name(cluster: &str) -> Result<(), PkiError> {
    match dns1123_label_problem(cluster) {
        Some(problem) => Err(PkiError::InvalidCsr(format!(
            "cluster name {cluster:?} {problem}"
        ))),
        None => Ok(()),
    }
}

//! The spoke's identity: its own key pair (generated here; the private key never leaves the data
//! directory), the certificate the hub issued for it, and the hub's CA.
//!
//! Registration trades a bootstrap token and a CSR for the certificate once; after that the
//! spoke starts from the files alone and never needs the token again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use gitfleet_proto::v1::registration_client::RegistrationClient;
use gitfleet_proto::v1::{RegisterRequest, register_response};
use tonic::transport::Endpoint;

use crate::hubs::{Candidate, HubUrl, Rotation};
use crate::store::{self, StoreError};

/// The longest a spoke waits between asking whether its registration was approved.
const MAX_APPROVAL_WAIT: Duration = Duration::from_secs(300);

/// The longest a spoke waits before asking again a hub that limits its registrations.
const MAX_BUSY_WAIT: Duration = Duration::from_secs(60);

/// Key, certificate and CA, all PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct Identity {
    pub key_pem: String,
    pub cert_pem: String,
    pub ca_pem: String,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity").finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cluster name {name:?} is not a DNS-1123 label: {reason}")]
    InvalidClusterName { name: String, reason: &'static str },
    #[error(
        "the spoke has no identity in {dir} yet; registering needs a bootstrap token and the hub's CA (--bootstrap-token, --hub-ca)"
    )]
    NotRegistered { dir: PathBuf },
    #[error("the key in {path} is not usable: {message}")]
    BadKey { path: PathBuf, message: String },
    #[error("creating the certificate signing request: {0}")]
    Csr(String),
    #[error("connecting to the hub at {url}: {message}")]
    Connect { url: String, message: String },
    #[error(transparent)]
    HubUrl(#[from] crate::hubs::HubUrlError),
    #[error("the hub refused the registration: {0}")]
    Refused(String),
    #[error("the hub issued a certificate for {issued:?}, but the spoke asked for {asked:?}")]
    WrongName { asked: String, issued: String },
    #[error("the hub's registration answer was empty")]
    EmptyAnswer,
}

/// Where the identity files live: `<data dir>/identity/`.
#[derive(Debug, Clone)]
pub struct IdentityStore {
    dir: PathBuf,
}

impl IdentityStore {
    pub fn new(data_dir: &Path) -> Self {
        Self {
            dir: data_dir.join("identity"),
        }
    }

    pub fn key_path(&self) -> PathBuf {
        self.dir.join("key.pem")
    }
    pub fn cert_path(&self) -> PathBuf {
        self.dir.join("cert.pem")
    }
    pub fn ca_path(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    fn next_key_path(&self) -> PathBuf {
        self.dir.join("key.next.pem")
    }

    /// The stored identity, if registration has completed. Finishes a renewal a crash
    /// interrupted: a new certificate next to the new key it was issued for.
    pub fn load(&self) -> Result<Option<Identity>, StoreError> {
        if let Some(next) = store::read_text(&self.next_key_path())? {
            let cert = store::read_text(&self.cert_path())?;
            let promote = cert.is_some_and(|cert| key_matches(&next, &cert));
            // A key whose certificate never came is left for the next renewal to replace.
            if promote {
                std::fs::rename(self.next_key_path(), self.key_path()).map_err(|source| {
                    StoreError::Io {
                        path: self.next_key_path(),
                        source,
                    }
                })?;
            }
        }
        let key = store::read_text(&self.key_path())?;
        let cert = store::read_text(&self.cert_path())?;
        let ca = store::read_text(&self.ca_path())?;
        Ok(match (key, cert, ca) {
            (Some(key_pem), Some(cert_pem), Some(ca_pem)) => Some(Identity {
                key_pem,
                cert_pem,
                ca_pem,
            }),
            _ => None,
        })
    }

    /// The spoke's key, generated (ECDSA P-256) and stored with mode 0600 on first use. A
    /// registration waiting for approval keeps using the same key.
    pub fn load_or_create_key(&self) -> Result<rcgen::KeyPair, IdentityError> {
        let path = self.key_path();
        if let Some(pem) = store::read_text(&path)? {
            return rcgen::KeyPair::from_pem(&pem).map_err(|e| IdentityError::BadKey {
                path,
                message: e.to_string(),
            });
        }
        create_key(&path)
    }

    /// Stores a newly issued certificate and the CA to verify the hub with.
    pub fn save_certificate(&self, cert_pem: &str, ca_pem: &str) -> Result<(), StoreError> {
        store::write_atomic(&self.ca_path(), ca_pem.as_bytes(), false)?;
        store::write_atomic(&self.cert_path(), cert_pem.as_bytes(), false)
    }
}

/// Generates a key pair and stores it, owner-only, at `path`.
fn create_key(path: &Path) -> Result<rcgen::KeyPair, IdentityError> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| {
        IdentityError::BadKey {
            path: path.to_owned(),
            message: e.to_string(),
        }
    })?;
    store::write_atomic(path, key.serialize_pem().as_bytes(), true)?;
    Ok(key)
}

impl IdentityStore {
    /// Starts a renewal: a new key (kept aside until its certificate arrives) and its CSR.
    pub fn begin_renewal(&self, cluster_name: &str) -> Result<String, IdentityError> {
        let path = self.next_key_path();
        let key = create_key(&path)?;
        build_csr(&key, cluster_name)
    }

    /// Finishes a renewal with the certificate the hub issued for the new key.
    pub fn finish_renewal(
        &self,
        cert_pem: &str,
        ca_pem: &str,
        current: &Identity,
    ) -> Result<Identity, IdentityError> {
        let path = self.next_key_path();
        let Some(key_pem) = store::read_text(&path)? else {
            return Err(IdentityError::BadKey {
                path,
                message: "no renewal in progress".into(),
            });
        };
        if !key_matches(&key_pem, cert_pem) {
            return Err(IdentityError::BadKey {
                path,
                message: "the renewed certificate is not for this key".into(),
            });
        }
        let ca_pem = if ca_pem.is_empty() {
            current.ca_pem.clone()
        } else {
            ca_pem.to_owned()
        };
        // Certificate first: a crash after it leaves key.next.pem, which `load` promotes.
        self.save_certificate(cert_pem, &ca_pem)?;
        std::fs::rename(&path, self.key_path())
            .map_err(|source| StoreError::Io { path, source })?;
        Ok(Identity {
            key_pem,
            cert_pem: cert_pem.to_owned(),
            ca_pem,
        })
    }
}

/// Validity of a PEM certificate, as (not before, not after) in Unix seconds.
pub fn cert_validity(cert_pem: &str) -> Option<(i64, i64)> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes()).ok()?;
    let cert = pem.parse_x509().ok()?;
    let validity = cert.validity();
    Some((
        validity.not_before.timestamp(),
        validity.not_after.timestamp(),
    ))
}

/// Renew once two thirds of a certificate's lifetime have passed.
pub fn renewal_due(not_before: i64, not_after: i64, now: i64) -> bool {
    let lifetime = (not_after - not_before).max(0);
    now >= not_before + lifetime * 2 / 3
}

/// SHA-256 (hex) of the public key of `key_pem`: how the hub names a certificate's key.
pub fn key_fingerprint(key_pem: &str) -> Option<String> {
    use sha2::Digest as _;
    let key = rcgen::KeyPair::from_pem(key_pem).ok()?;
    Some(hex::encode(sha2::Sha256::digest(key.public_key_raw())))
}

/// Whether the certificate was issued for this key.
fn key_matches(key_pem: &str, cert_pem: &str) -> bool {
    let Ok(key) = rcgen::KeyPair::from_pem(key_pem) else {
        return false;
    };
    let Ok((_, pem)) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes()) else {
        return false;
    };
    let Ok(cert) = pem.parse_x509() else {
        return false;
    };
    cert.public_key().subject_public_key.data.as_ref() == key.public_key_raw()
}

/// What registering needs besides the identity store.
#[derive(Debug, Clone)]
pub struct Registration {
    /// The hub's URLs (one per replica, or a name for all): tried in turn until one answers.
    pub hub_urls: Vec<String>,
    pub hub_ca_pem: String,
    pub token: String,
    pub cluster_name: String,
    pub labels: BTreeMap<String, String>,
    pub agent_version: String,
}

/// Checks a cluster name is a DNS-1123 label (it becomes a certificate name and a label value).
pub fn validate_cluster_name(name: &str) -> Result<(), IdentityError> {
    let invalid = |reason| IdentityError::InvalidClusterName {
        name: name.to_owned(),
        reason,
    };
    if name.is_empty() || name.len() > 63 {
        return Err(invalid("it must be 1 to 63 characters long"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(invalid(
            "it may contain only lowercase letters, digits and '-'",
        ));
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Err(invalid("it must start and end with a letter or digit"));
    }
    Ok(())
}

/// A PEM CSR for `key` with CN = the cluster name.
pub fn build_csr(key: &rcgen::KeyPair, cluster_name: &str) -> Result<String, IdentityError> {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())
        .map_err(|e| IdentityError::Csr(e.to_string()))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cluster_name);
    params
        .serialize_request(key)
        .and_then(|csr| csr.pem())
        .map_err(|e| IdentityError::Csr(e.to_string()))
}

/// Returns the stored identity, registering first when there is none.
pub async fn ensure_identity(
    store: &IdentityStore,
    registration: Option<&Registration>,
) -> Result<Identity, IdentityError> {
    if let Some(identity) = store.load()? {
        return Ok(identity);
    }
    let Some(registration) = registration else {
        return Err(IdentityError::NotRegistered {
            dir: store.dir.clone(),
        });
    };
    register(store, registration).await
}

/// Registers with the hub: CSR in, certificate out, waiting while approval is pending. With
/// several hub addresses, one that cannot be reached (or drops the call) passes the
/// registration to the next; the registration fails when none of them can be reached.
#[tracing::instrument(name = "register", skip_all, fields(cluster = %registration.cluster_name))]
pub async fn register(
    store: &IdentityStore,
    registration: &Registration,
) -> Result<Identity, IdentityError> {
    validate_cluster_name(&registration.cluster_name)?;
    crate::link::install_crypto_provider();
    let urls = HubUrl::parse_all(&registration.hub_urls)?;
    let key = store.load_or_create_key()?;
    let csr_pem = build_csr(&key, &registration.cluster_name)?;
    let mut rotation = Rotation::default();
    // The addresses that could not be reached, in a row.
    let mut unreachable: Vec<String> = Vec::new();
    loop {
        let candidates = crate::link::resolve(&urls).await;
        let count = candidates.len();
        let Some(candidate) = candidates.get(rotation.current(count)) else {
            return Err(IdentityError::HubUrl(crate::hubs::HubUrlError::Empty));
        };
        match register_at(store, registration, candidate, &key, &csr_pem).await {
            Ok(identity) => return Ok(identity),
            Err(Attempt::Refused(error)) => return Err(error),
            Err(Attempt::Unreachable { reached, message }) => {
                let prefix = format!("{}: ", candidate.dial);
                if reached {
                    // A hub answered (UNAVAILABLE: a replica between two leaders, one going
                    // away): there is a hub to come back to, so the registration keeps trying.
                    unreachable.clear();
                } else if !unreachable.iter().any(|m| m.starts_with(&prefix)) {
                    unreachable.push(format!("{prefix}{message}"));
                }
                if unreachable.len() >= count {
                    let url = urls
                        .iter()
                        .map(|u| u.url.as_str())
                        .collect::<Vec<_>>()
                        .join(", ");
                    return Err(IdentityError::Connect {
                        url,
                        message: unreachable.join("; "),
                    });
                }
                let wait =
                    rotation.failed(count, REGISTER_BACKOFF_BASE, MAX_BUSY_WAIT, rand::random());
                tracing::warn!(hub = %candidate.dial, %message, wait_ms = wait.as_millis() as u64, "cannot register through this hub address; trying the next");
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// The first wait before registering through the next hub address.
const REGISTER_BACKOFF_BASE: Duration = Duration::from_millis(500);

/// Why a registration through one hub address did not finish.
enum Attempt {
    /// The hub answered no: final.
    Refused(IdentityError),
    /// No connection, or it broke: another address may do. `reached`: a connection was made.
    Unreachable { reached: bool, message: String },
}

impl From<IdentityError> for Attempt {
    fn from(error: IdentityError) -> Self {
        Self::Refused(error)
    }
}

impl From<StoreError> for Attempt {
    fn from(error: StoreError) -> Self {
        Self::Refused(error.into())
    }
}

async fn register_at(
    store: &IdentityStore,
    registration: &Registration,
    candidate: &Candidate,
    key: &rcgen::KeyPair,
    csr_pem: &str,
) -> Result<Identity, Attempt> {
    let tls = crate::link::tls_for(candidate, &registration.hub_ca_pem);
    let channel = Endpoint::from_shared(candidate.dial.clone())
        .map_err(|e| IdentityError::Connect {
            url: candidate.configured.clone(),
            message: e.to_string(),
        })?
        .connect_timeout(Duration::from_secs(10))
        .tls_config(tls)
        .map_err(|e| IdentityError::Connect {
            url: candidate.configured.clone(),
            message: e.to_string(),
        })?
        .connect()
        .await
        .map_err(|e| Attempt::Unreachable {
            reached: false,
            message: error_chain(&e),
        })?;
    let mut client = RegistrationClient::new(channel);
    let mut backoff = Duration::from_secs(1);
    loop {
        let request = RegisterRequest {
            token: registration.token.clone(),
            cluster_name: registration.cluster_name.clone(),
            csr_pem: csr_pem.to_owned(),
            labels: registration.labels.clone().into_iter().collect(),
            agent_version: registration.agent_version.clone(),
        };
        let answer = match client.register(request).await {
            Ok(answer) => answer.into_inner(),
            // The hub limits registrations per source address (a fleet behind one NAT address
            // registers at once): come back when it says, or after a growing wait.
            Err(status) if status.code() == tonic::Code::ResourceExhausted => {
                let wait = retry_after(&status).unwrap_or_else(|| jittered(backoff));
                backoff = (backoff * 2).min(MAX_BUSY_WAIT);
                tracing::info!(
                    wait_s = wait.as_secs(),
                    reason = %status.message(),
                    "the hub is busy with registrations; asking again later"
                );
                tokio::time::sleep(wait).await;
                continue;
            }
            // The connection broke (the replica went away while approval was pending).
            Err(status) if status.code() == tonic::Code::Unavailable => {
                return Err(Attempt::Unreachable {
                    reached: true,
                    message: format!("{:?}: {}", status.code(), status.message()),
                });
            }
            Err(status) => {
                return Err(Attempt::Refused(IdentityError::Refused(format!(
                    "{:?}: {}",
                    status.code(),
                    status.message()
                ))));
            }
        };
        match answer.outcome {
            Some(register_response::Outcome::Issued(issued)) => {
                if !issued.cluster_name.is_empty()
                    && issued.cluster_name != registration.cluster_name
                {
                    return Err(Attempt::Refused(IdentityError::WrongName {
                        asked: registration.cluster_name.clone(),
                        issued: issued.cluster_name,
                    }));
                }
                let ca_pem = if issued.ca_pem.is_empty() {
                    registration.hub_ca_pem.clone()
                } else {
                    issued.ca_pem
                };
                store.save_certificate(&issued.certificate_pem, &ca_pem)?;
                tracing::info!(hub = %candidate.dial, "registered with the hub");
                return Ok(Identity {
                    key_pem: key.serialize_pem(),
                    cert_pem: issued.certificate_pem,
                    ca_pem,
                });
            }
            Some(register_response::Outcome::Pending(pending)) => {
                let wait = Duration::from_secs(u64::from(pending.retry_after_seconds).max(1))
                    .min(MAX_APPROVAL_WAIT);
                tracing::info!(
                    wait_s = wait.as_secs(),
                    "registration waits for approval by an admin"
                );
                tokio::time::sleep(wait).await;
            }
            None => return Err(Attempt::Refused(IdentityError::EmptyAnswer)),
        }
    }
}

/// The wait a RESOURCE_EXHAUSTED answer asks for (its `retry-after` metadata, seconds), at
/// least a second and at most [`MAX_BUSY_WAIT`].
fn retry_after(status: &tonic::Status) -> Option<Duration> {
    let seconds: u64 = status
        .metadata()
        .get("retry-after")?
        .to_str()
        .ok()?
        .parse()
        .ok()?;
    Some(Duration::from_secs(seconds).clamp(Duration::from_secs(1), MAX_BUSY_WAIT))
}

/// `wait`, give or take a fifth, so that spokes refused together do not come back together.
fn jittered(wait: Duration) -> Duration {
    wait.mul_f64(rand::random_range(0.8..1.2))
}

pub(crate) use gitfleet_support::error_chain;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_names_are_dns_labels() {
        assert!(validate_cluster_name("eu-1").is_ok());
        assert!(validate_cluster_name("").is_err());
        assert!(validate_cluster_name("EU").is_err());
        assert!(validate_cluster_name("-a").is_err());
        assert!(validate_cluster_name("a_b").is_err());
        assert!(validate_cluster_name(&"a".repeat(64)).is_err());
    }

    #[test]
    fn key_is_created_once_private_and_reused() {
        let dir = tempfile::TempDir::new().expect("tempdir");
        let store = IdentityStore::new(dir.path());
        let first = store.load_or_create_key().expect("key");
        let second = store.load_or_create_key().expect("key");
        assert_eq!(first.serialize_pem(), second.serialize_pem());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(store.key_path())
                .expect("meta")
                .permissions()
                .mode()
                & 0o777;
            assert_eq!(mode, 0o600);
        }
        assert!(store.load().expect("load").is_none(), "no certificate yet");
    }

    #[test]
    fn a_busy_hub_says_when_to_come_back() {
        let mut status = tonic::Status::resource_exhausted("busy");
        assert_eq!(retry_after(&status), None, "no hint: the spoke backs off");
        status
            .metadata_mut()
            .insert("retry-after", "7".parse().expect("ascii"));
        assert_eq!(retry_after(&status), Some(Duration::from_secs(7)));
        status
            .metadata_mut()
            .insert("retry-after", "0".parse().expect("ascii"));
        assert_eq!(retry_after(&status), Some(Duration::from_secs(1)));
        status
            .metadata_mut()
            .insert("retry-after", "86400".parse().expect("ascii"));
        assert_eq!(retry_after(&status), Some(MAX_BUSY_WAIT));
        for _ in 0..100 {
            let w = jittered(Duration::from_secs(10));
            assert!(
                w >= Duration::from_secs(8) && w <= Duration::from_secs(12),
                "{w:?}"
            );
        }
    }

    #[test]
    fn renewal_is_due_after_two_thirds_of_the_lifetime() {
        assert!(!renewal_due(0, 300, 199));
        assert!(renewal_due(0, 300, 200));
        assert!(renewal_due(0, 300, 400));
        assert!(
            renewal_due(10, 10, 10),
            "a zero-length certificate is always due"
        );
    }

    #[test]
    fn an_interrupted_renewal_is_finished_or_discarded_on_load() {
        let dir = tempfile::TempDir::new().expect("tempdir");
        let store = IdentityStore::new(dir.path());
        let ca_key = rcgen::KeyPair::generate().expect("key");
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).expect("ca");
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let sign = |csr: &str| {
            rcgen::CertificateSigningRequestParams::from_pem(csr)
                .expect("csr")
                .signed_by(&issuer)
                .expect("sign")
                .pem()
        };
        let key = store.load_or_create_key().expect("key");
        store
            .save_certificate(&sign(&build_csr(&key, "c").expect("csr")), &ca.pem())
            .expect("save");
        let old = store.load().expect("load").expect("identity");
        let (not_before, not_after) = cert_validity(&old.cert_pem).expect("validity");
        assert!(not_after > not_before);

        // The response never came: the old identity stays in use.
        store.begin_renewal("c").expect("begin");
        assert_eq!(store.load().expect("load").expect("identity"), old);

        // The certificate was written, then the process died before the key moved.
        let csr = store.begin_renewal("c").expect("begin");
        store
            .save_certificate(&sign(&csr), &ca.pem())
            .expect("save");
        let recovered = store.load().expect("load").expect("identity");
        assert_ne!(recovered.key_pem, old.key_pem);
        assert!(key_matches(&recovered.key_pem, &recovered.cert_pem));

        // The normal path.
        let csr = store.begin_renewal("c").expect("begin");
        let renewed = store
            .finish_renewal(&sign(&csr), "", &recovered)
            .expect("finish");
        assert_eq!(store.load().expect("load").expect("identity"), renewed);
        assert!(
            store.finish_renewal(&sign(&csr), "", &renewed).is_err(),
            "no renewal in progress"
        );
    }

    #[test]
    fn csr_names_the_cluster() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let pem = build_csr(&key, "eu-1").expect("csr");
        let parsed = rcgen::CertificateSigningRequestParams::from_pem(&pem).expect("parse");
        let cn = parsed
            .params
            .distinguished_name
            .get(&rcgen::DnType::CommonName)
            .expect("cn");
        assert_eq!(cn, &rcgen::DnValue::Utf8String("eu-1".into()));
    }

    #[tokio::test]
    async fn without_identity_or_token_the_error_says_what_is_needed() {
        let dir = tempfile::TempDir::new().expect("tempdir");
        let err = ensure_identity(&IdentityStore::new(dir.path()), None)
            .await
            .expect_err("no identity");
        assert!(err.to_string().contains("--bootstrap-token"), "{err}");
    }
}

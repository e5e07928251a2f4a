//! Signed commits: whether a Git object's signature was made by one of a Repo's trusted keys.
//!
//! Pure: the adapters (the hub's Git follower, the spoke's fetch) read the object and hand over
//! the signed payload and the signature block; this module parses the trusted keys (SSH public
//! key lines as Git's SSH signing uses, or armored OpenPGP public keys) and checks the
//! signature. SSH signatures are `sshsig` blocks whose namespace must be `git`; OpenPGP ones are
//! detached signatures made by a trusted primary key or one of its bound subkeys.

use std::fmt;
use std::io::Cursor;

use pgp::composed::{Deserializable, DetachedSignature, SignedPublicKey};
use pgp::types::KeyDetails;

/// The namespace Git's SSH signatures are made in (`ssh-keygen -Y sign -n git`).
pub const SSH_NAMESPACE: &str = "git";

const SSH_BEGIN: &[u8] = b"-----BEGIN SSH SIGNATURE-----";
const PGP_BEGIN: &[u8] = b"-----BEGIN PGP SIGNATURE-----";

/// One key a Repo trusts to sign what the hub dispatches.
#[derive(Clone)]
pub enum TrustedKey {
    Ssh(ssh_key::PublicKey),
    OpenPgp(Box<SignedPublicKey>),
}

impl fmt::Debug for TrustedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TrustedKey({self})")
    }
}

/// How a key is named in messages: `SHA256:... release-bot` for SSH, `OpenPGP <fingerprint>
/// <user id>` for OpenPGP.
impl fmt::Display for TrustedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrustedKey::Ssh(key) => {
                write!(f, "{}", key.fingerprint(ssh_key::HashAlg::Sha256))?;
                if !key.comment().is_empty() {
                    write!(f, " ({})", key.comment())?;
                }
                Ok(())
            }
            TrustedKey::OpenPgp(key) => {
                write!(f, "OpenPGP {:X}", key.fingerprint())?;
                if let Some(user) = key.details.users.first() {
                    write!(f, " ({})", String::from_utf8_lossy(user.id.id()))?;
                }
                Ok(())
            }
        }
    }
}

/// Why a trusted key entry is not a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("must not be empty")]
    Empty,
    #[error("not an SSH public key or an armored OpenPGP public key")]
    Unrecognised,
    #[error("not a valid SSH public key: {0}")]
    Ssh(String),
    #[error("not a valid armored OpenPGP public key: {0}")]
    OpenPgp(String),
}

impl TrustedKey {
    /// Parses one `trustedKeys` entry: an OpenSSH public key line (`ssh-ed25519 AAAA...
    /// comment`) or an armored OpenPGP public key block.
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(KeyError::Empty);
        }
        if text.starts_with("-----BEGIN PGP PUBLIC KEY BLOCK-----") {
            let (key, _) = SignedPublicKey::from_armor_single(Cursor::new(text.as_bytes()))
                .map_err(|e| KeyError::OpenPgp(e.to_string()))?;
            key.verify_bindings()
                .map_err(|e| KeyError::OpenPgp(format!("its self-signatures: {e}")))?;
            return Ok(TrustedKey::OpenPgp(Box::new(key)));
        }
        let first = text.split_whitespace().next().unwrap_or_default();
        let ssh_like = first.starts_with("ssh-")
            || first.starts_with("ecdsa-sha2-")
            || first.starts_with("sk-");
        if !ssh_like {
            return Err(KeyError::Unrecognised);
        }
        if text.lines().count() > 1 {
            return Err(KeyError::Ssh("expected a single line".into()));
        }
        ssh_key::PublicKey::from_openssh(text)
            .map(TrustedKey::Ssh)
            .map_err(|e| KeyError::Ssh(e.to_string()))
    }
}

/// The keys a Repo trusts, parsed.
#[derive(Debug, Clone, Default)]
pub struct TrustedKeys {
    keys: Vec<TrustedKey>,
}

impl TrustedKeys {
    /// Parses every entry; the error names the index of the first one that is not a key.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, (usize, KeyError)> {
        let keys = entries
            .iter()
            .enumerate()
            .map(|(i, e)| TrustedKey::parse(e.as_ref()).map_err(|err| (i, err)))
            .collect::<Result<_, _>>()?;
        Ok(Self { keys })
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn keys(&self) -> &[TrustedKey] {
        &self.keys
    }
}

/// A signature made by a trusted key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The key that made it, as [`TrustedKey`] displays it.
    pub key: String,
}

/// Why an object is not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("not signed")]
    NotSigned,
    /// A tag or semver ref that names a commit directly: there is no tag object to sign.
    #[error("lightweight tag, not signed (sign an annotated tag: git tag -s)")]
    LightweightTag,
    /// The signature names a key the Repo does not trust (SSH fingerprint or OpenPGP issuer).
    #[error("signed by untrusted key {0}")]
    UntrustedKey(String),
    /// Made by a trusted key, but it does not match the object (tampered, or corrupt).
    #[error("bad signature by {key}: {reason}")]
    BadSignature { key: String, reason: String },
    #[error("unsupported signature format: {0}")]
    Unsupported(String),
}

/// Checks that `signature` (an armored SSH or OpenPGP signature block) over `payload` was made
/// by one of `keys`. An empty signature is [`VerifyError::NotSigned`].
pub fn verify(
    payload: &[u8],
    signature: &[u8],
    keys: &TrustedKeys,
) -> Result<Verified, VerifyError> {
    let block = signature.trim_ascii();
    if block.is_empty() {
        return Err(VerifyError::NotSigned);
    }
    if block.starts_with(SSH_BEGIN) {
        verify_ssh(payload, block, keys)
    } else if block.starts_with(PGP_BEGIN) {
        verify_pgp(payload, block, keys)
    } else {
        let first_line = block.split(|b| *b == b'\n').next().unwrap_or_default();
        Err(VerifyError::Unsupported(format!(
            "{:?}",
            String::from_utf8_lossy(&first_line[..first_line.len().min(64)])
        )))
    }
}

fn verify_ssh(payload: &[u8], block: &[u8], keys: &TrustedKeys) -> Result<Verified, VerifyError> {
    let sig = ssh_key::SshSig::from_pem(block)
        .map_err(|e| VerifyError::Unsupported(format!("SSH signature: {e}")))?;
    let signer = sig.public_key();
    let Some(key) = keys.keys.iter().find_map(|k| match k {
        TrustedKey::Ssh(key) if key.key_data() == signer => Some(key),
        _ => None,
    }) else {
        return Err(VerifyError::UntrustedKey(
            signer.fingerprint(ssh_key::HashAlg::Sha256).to_string(),
        ));
    };
    let name = TrustedKey::Ssh(key.clone()).to_string();
    if sig.namespace() != SSH_NAMESPACE {
        return Err(VerifyError::BadSignature {
            key: name,
            reason: format!(
                "made for namespace {:?}, not {SSH_NAMESPACE:?}",
                sig.namespace()
            ),
        });
    }
    key.verify(SSH_NAMESPACE, payload, &sig)
        .map(|()| Verified { key: name.clone() })
        .map_err(|e| VerifyError::BadSignature {
            key: name,
            reason: e.to_string(),
        })
}

fn verify_pgp(payload: &[u8], block: &[u8], keys: &TrustedKeys) -> Result<Verified, VerifyError> {
    let (sig, _) = DetachedSignature::from_armor_single(Cursor::new(block))
        .map_err(|e| VerifyError::Unsupported(format!("OpenPGP signature: {e}")))?;
    let fingerprints = sig.signature.issuer_fingerprint();
    let key_ids = sig.signature.issuer_key_id();
    let issued_by = |k: &dyn KeyDetails| issued_by(&fingerprints, &key_ids, k);
    for trusted in &keys.keys {
        let TrustedKey::OpenPgp(primary) = trusted else {
            continue;
        };
        let name = trusted.to_string();
        let outcome = if issued_by(primary.as_ref()) {
            Some(sig.verify(primary.as_ref(), payload))
        } else {
            // Subkeys were checked to be bound to their primary when the key was parsed.
            primary
                .public_subkeys
                .iter()
                .find(|sub| issued_by(&sub.key))
                .map(|sub| sig.verify(&sub.key, payload))
        };
        match outcome {
            None => continue,
            Some(Ok(())) => return Ok(Verified { key: name }),
            Some(Err(e)) => {
                return Err(VerifyError::BadSignature {
                    key: name,
                    reason: e.to_string(),
                });
            }
        }
    }
    let issuer = match (fingerprints.first(), key_ids.first()) {
        (Some(f), _) => format!("OpenPGP {f:X}"),
        (None, Some(id)) => format!("OpenPGP key id {}", hex::encode_upper(id)),
        (None, None) => "OpenPGP (the signature names no issuer)".to_owned(),
    };
    Err(VerifyError::UntrustedKey(issuer))
}

/// Whether the issuer subpackets of a signature name `key`.
fn issued_by(
    fingerprints: &[&pgp::types::Fingerprint],
    key_ids: &[&pgp::types::KeyId],
    key: &dyn KeyDetails,
) -> bool {
    let fingerprint = key.fingerprint();
    let key_id = key.legacy_key_id();
    fingerprints.iter().any(|f| **f == fingerprint) || key_ids.iter().any(|id| **id == key_id)
}

/// Splits a raw annotated tag object (as stored in Git, without its header) into the signed
/// payload and the signature block Git appends to the message. `None` for the signature when
/// the tag is not signed.
pub fn split_signed_tag(raw: &[u8]) -> (&[u8], Option<&[u8]>) {
    // Git looks for the last line that starts a signature block.
    let mut start = None;
    let mut at = 0;
    while at < raw.len() {
        let line_end = raw[at..]
            .iter()
            .position(|b| *b == b'\n')
            .map_or(raw.len(), |p| at + p + 1);
        let line = &raw[at..line_end];
        if line.starts_with(SSH_BEGIN)
            || line.starts_with(PGP_BEGIN)
            || line.starts_with(b"-----BEGIN PGP MESSAGE-----")
        {
            start = Some(at);
        }
        at = line_end;
    }
    match start {
        Some(s) => (&raw[..s], Some(&raw[s..])),
        None => (raw, None),
    }
}

#[cfg(test)]
mod tests;

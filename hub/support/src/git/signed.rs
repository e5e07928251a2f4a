//! Reading what a signature covers out of Git objects, for the hub's and the spoke's checks of
//! signed commits ([`gitfleet_core::git::signature`] decides).
//!
//! A commit's signature is its `gpgsig` header, over the commit without it (libgit2's
//! `extract_signature`); an annotated tag's is the block Git appends to its message, over the tag
//! object up to it.

use git2::{ObjectType, Oid, Repository};
use gitfleet_core::git::signature::{self, TrustedKeys, Verified, VerifyError};

/// Checks the signature of the commit `oid` (which the repository must hold).
pub fn verify_commit(
    repo: &Repository,
    oid: Oid,
    keys: &TrustedKeys,
) -> Result<Result<Verified, VerifyError>, git2::Error> {
    repo.find_commit(oid)?;
    match repo.extract_signature(&oid, None) {
        Ok((sig, payload)) => Ok(signature::verify(&payload, &sig, keys)),
        Err(e) if e.code() == git2::ErrorCode::NotFound => Ok(Err(VerifyError::NotSigned)),
        Err(e) => Err(e),
    }
}

/// Checks what a tag ref points at: an annotated tag object's signature, or
/// [`VerifyError::LightweightTag`] when the ref names a commit directly.
pub fn verify_tag_target(
    repo: &Repository,
    target: Oid,
    keys: &TrustedKeys,
) -> Result<Result<Verified, VerifyError>, git2::Error> {
    let odb = repo.odb()?;
    let object = odb.read(target)?;
    if object.kind() != ObjectType::Tag {
        return Ok(Err(VerifyError::LightweightTag));
    }
    Ok(match signature::split_signed_tag(object.data()) {
        (payload, Some(sig)) => signature::verify(payload, sig, keys),
        (_, None) => Err(VerifyError::NotSigned),
    })
}

/// Checks the object a Repo's ref resolved to: the tag object for a tag ref (`refs/tags/...`),
/// else the commit. `reference` is the local ref it was fetched into, or a commit id.
pub fn verify_resolved(
    repo: &Repository,
    reference: &str,
    commit: Oid,
    keys: &TrustedKeys,
) -> Result<Result<Verified, VerifyError>, git2::Error> {
    if reference.starts_with("refs/tags/") {
        let target = repo
            .find_reference(reference)?
            .target()
            .ok_or_else(|| git2::Error::from_str("symbolic tag ref"))?;
        // The tag must lead to the commit that is dispatched.
        if repo.find_object(target, None)?.peel_to_commit()?.id() != commit {
            return Err(git2::Error::from_str(&format!(
                "{reference} no longer points at commit {commit}"
            )));
        }
        verify_tag_target(repo, target, keys)
    } else {
        verify_commit(repo, commit, keys)
    }
}

//! Signed commits only (`spec.verify.trustedKeys`): the hub checks what a Repo's ref resolved to
//! and never dispatches a commit that is not signed by a trusted key. Keys are made by
//! ssh-keygen and gpg at test time; commits and tags are signed by the git command line.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::sync::Arc;
use std::time::Duration;

use gitfleet_core::git::signature::TrustedKeys;
use gitfleet_hub::git::{GitCache, VerifyError};
use gitfleet_hub::resources::GitRef;
use gitfleet_proto::v1 as pb;
use gitfleet_support::testing::signing::{Signer, unsigned_commit, unsigned_tag};
use support::*;

fn cache() -> (tempfile::TempDir, GitCache) {
    let dir = tempfile::tempdir().unwrap();
    let cache = GitCache::new(dir.path().join("git"), 2, Duration::from_secs(30));
    (dir, cache)
}

fn keys(signers: &[&Signer]) -> Option<Arc<TrustedKeys>> {
    let entries: Vec<&str> = signers.iter().map(|s| s.trusted_key()).collect();
    Some(Arc::new(TrustedKeys::parse(&entries).unwrap()))
}

#[tokio::test]
async fn the_cache_checks_the_commit_or_the_tag_a_ref_resolved_to() {
    let repo = GitRepo::new();
    let (ssh, gpg, stranger) = (
        Signer::ssh("release-bot"),
        Signer::gpg("Release Bot <bot@example.com>"),
        Signer::ssh("stranger"),
    );
    let trusted = keys(&[&ssh, &gpg]);
    let (_d, cache) = cache();
    let url = repo.url();
    let main = GitRef::Branch("main".into());
    let fetch = |reference: GitRef| {
        let (cache, url, trusted) = (&cache, url.clone(), trusted.clone());
        async move {
            cache
                .fetch_verified(&url, &reference, None, trusted)
                .await
                .unwrap()
        }
    };

    let c1 = ssh.commit(repo.dir.path(), &[("a/x.yaml", "1")], "ssh-signed");
    let r = fetch(main.clone()).await;
    assert_eq!(r.commit, c1);
    let verified = r.signature.expect("checked").expect("trusted");
    assert!(verified.key.contains("release-bot"), "{verified:?}");

    let c2 = gpg.commit(repo.dir.path(), &[("a/x.yaml", "2")], "gpg-signed");
    let r = fetch(main.clone()).await;
    assert_eq!(r.commit, c2);
    let verified = r.signature.expect("checked").expect("trusted");
    assert!(verified.key.starts_with("OpenPGP "), "{verified:?}");

    let c3 = unsigned_commit(repo.dir.path(), &[("a/x.yaml", "3")], "unsigned");
    let r = fetch(main.clone()).await;
    assert_eq!(
        (r.commit.as_str(), r.signature),
        (c3.as_str(), Some(Err(VerifyError::NotSigned)))
    );

    let c4 = stranger.commit(repo.dir.path(), &[("a/x.yaml", "4")], "untrusted");
    let r = fetch(main.clone()).await;
    assert_eq!(r.commit, c4);
    let err = r.signature.expect("checked").expect_err("untrusted");
    assert!(
        err.to_string()
            .starts_with("signed by untrusted key SHA256:"),
        "{err}"
    );

    // Tags: the tag object is what is checked, whatever the commit.
    ssh.tag(repo.dir.path(), "v1.0.0", &c3);
    unsigned_tag(repo.dir.path(), "v1.1.0", &c1, true);
    unsigned_tag(repo.dir.path(), "v1.2.0", &c1, false);
    let r = fetch(GitRef::Tag("v1.0.0".into())).await;
    assert_eq!(r.commit, c3, "the signed tag of an unsigned commit");
    assert!(matches!(r.signature, Some(Ok(_))), "{:?}", r.signature);
    let r = fetch(GitRef::Tag("v1.1.0".into())).await;
    assert_eq!(r.signature, Some(Err(VerifyError::NotSigned)));
    let r = fetch(GitRef::Tag("v1.2.0".into())).await;
    assert_eq!(r.signature, Some(Err(VerifyError::LightweightTag)));
    // A semver ref picks the highest tag, v1.2.0, lightweight: refused.
    let r = fetch(GitRef::Semver("^1".into())).await;
    assert_eq!(r.git_ref, "refs/tags/v1.2.0");
    assert_eq!(r.signature, Some(Err(VerifyError::LightweightTag)));
    // A signed commit reached through a pinned commit id.
    let r = fetch(GitRef::Commit(c1.clone())).await;
    assert!(matches!(r.signature, Some(Ok(_))), "{:?}", r.signature);

    // Without keys nothing is checked.
    let r = cache.fetch(&url, &main).await.unwrap();
    assert_eq!(r.signature, None);
}

fn signed_repo_doc(url: &str, signer: &Signer) -> pb::ResourceDocument {
    doc(serde_json::json!({
        "apiVersion": "gitfleet.dev/v1", "kind": "Repo",
        "metadata": {"name": "platform"},
        "spec": {
            "url": url, "ref": {"branch": "main"}, "pollInterval": "200ms",
            "verify": {"trustedKeys": [signer.trusted_key()]}
        }
    }))
}

async fn repo_status(hub: &gitfleet_hub::runtime::HubHandle) -> serde_json::Value {
    let docs = hub
        .engine()
        .get(Some(gitfleet_hub::resources::Kind::Repo), Some("platform"))
        .unwrap();
    docs[0]["status"].clone()
}

#[tokio::test]
async fn an_unsigned_or_untrusted_commit_is_never_dispatched_and_the_repo_says_why() {
    let (_tmp, data) = data_dir();
    let hub = start_hub(&data).await;
    let git = GitRepo::new();
    let (trusted, stranger) = (Signer::ssh("release-bot"), Signer::ssh("stranger"));
    let c1 = trusted.commit(git.dir.path(), &[("apps/web/cm.yaml", "v: 1\n")], "one");

    let id = register(&hub, "dev-1", &[("env", "dev")]).await;
    admin(&hub)
        .await
        .apply(pb::ApplyRequest {
            documents: vec![
                signed_repo_doc(&git.url(), &trusted),
                app_doc("web", "platform", "apps/web", "dev"),
            ],
            dry_run: false,
        })
        .await
        .unwrap();
    let mut spoke = FakeSpoke::connect(&hub.grpc_url(), &id, SpokeView::default())
        .await
        .unwrap();
    spoke
        .until("web at the signed commit", |v| {
            v.commit_of("web").as_deref() == Some(c1.as_str())
        })
        .await;
    let sent = spoke.close();
    let target = &sent.targets["web"];
    assert_eq!(
        target.trusted_keys,
        vec![trusted.trusted_key().to_owned()],
        "the spoke is told the keys to check"
    );
    let status = repo_status(&hub).await;
    assert_eq!(status["commit"], c1.as_str());
    assert!(
        status["signedBy"].as_str().unwrap().contains("release-bot"),
        "{status}"
    );

    let unsigned =
        |v: &str| unsigned_commit(git.dir.path(), &[("apps/web/cm.yaml", v)], "unsigned");
    let untrusted =
        |v: &str| stranger.commit(git.dir.path(), &[("apps/web/cm.yaml", v)], "untrusted");
    type Push<'a> = &'a dyn Fn(&str) -> String;
    let pushes: [(Push<'_>, &str); 2] = [
        (&unsigned, "not signed"),
        (&untrusted, "signed by untrusted key SHA256:"),
    ];
    for (i, (push, reason)) in pushes.into_iter().enumerate() {
        // One at a time: each is the branch's tip when the hub fetches it.
        let commit = push(&format!("v: {}\n", i + 2));
        assert!(hub.engine().trigger_fetch("platform"));
        let status = eventually("the Repo to refuse the commit", || async {
            let s = repo_status(&hub).await;
            (s["refused"]["commit"] == commit.as_str()).then_some(s)
        })
        .await;
        assert!(
            status["refused"]["reason"]
                .as_str()
                .unwrap()
                .starts_with(reason),
            "{status}"
        );
        let error = status["error"].as_str().unwrap();
        assert!(
            error.contains(&commit[..7]) && error.contains(reason),
            "the error names the commit and why: {error}"
        );
        assert_eq!(
            status["commit"],
            c1.as_str(),
            "stays at the verified commit"
        );
        let revision = hub
            .engine()
            .get(Some(gitfleet_hub::resources::Kind::App), Some("web"));
        assert_eq!(revision.unwrap()[0]["status"]["revision"], c1.as_str());
        let events = hub
            .engine()
            .events(Some("web"), None, 0, 1000)
            .await
            .unwrap();
        assert!(
            events
                .iter()
                .any(|e| e.kind == "CommitRefused" && e.message.contains(&commit[..7])),
            "an event names the refused commit: {events:#?}"
        );
    }

    // A spoke that connects now is sent the verified commit, never a refused one.
    let mut spoke = FakeSpoke::connect(&hub.grpc_url(), &id, SpokeView::default())
        .await
        .unwrap();
    spoke
        .until("web's Target", |v| v.commit_of("web").is_some())
        .await;
    let view = spoke.close();
    assert_eq!(view.commit_of("web").as_deref(), Some(c1.as_str()));

    // A trusted commit on top moves the App again and clears the refusal.
    let c4 = trusted.commit(git.dir.path(), &[("apps/web/cm.yaml", "v: 4\n")], "four");
    let status = eventually("the Repo at the trusted commit", || async {
        let s = repo_status(&hub).await;
        (s["commit"] == c4.as_str()).then_some(s)
    })
    .await;
    assert!(status.get("refused").is_none(), "{status}");
    assert_eq!(status["error"], "");
    hub.shutdown().await;
}

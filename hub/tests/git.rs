//! The Git adapter against real local repositories: refs, errors, and which files a commit changed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use gitfleet_hub::git::{GitCache, GitError};
use gitfleet_hub::resources::GitRef;
use support::GitRepo;

fn cache() -> (tempfile::TempDir, GitCache) {
    let dir = tempfile::tempdir().unwrap();
    let cache = GitCache::new(dir.path().join("git"), 2, Duration::from_secs(30));
    (dir, cache)
}

fn tag(repo: &GitRepo, name: &str, commit: &str) {
    let r = git2::Repository::open(repo.dir.path()).unwrap();
    let obj = r.revparse_single(commit).unwrap();
    let sig = git2::Signature::now("t", "t@example.com").unwrap();
    r.tag(name, &obj, &sig, "release", false).unwrap();
}

#[tokio::test]
async fn follows_branches_tags_and_pinned_commits() {
    let repo = GitRepo::new();
    let c1 = repo.commit(&[("a/x.yaml", "1")], "one");
    tag(&repo, "v1.0.0", &c1);
    let c2 = repo.commit(&[("a/x.yaml", "2")], "two");
    let (_d, cache) = cache();
    let url = repo.url();

    let main = cache
        .fetch(&url, &GitRef::Branch("main".into()))
        .await
        .unwrap();
    assert_eq!(main.commit, c2);
    assert_eq!(main.git_ref, "refs/heads/main");

    // An annotated tag resolves to the commit it points at.
    let t = cache
        .fetch(&url, &GitRef::Tag("v1.0.0".into()))
        .await
        .unwrap();
    assert_eq!(t.commit, c1);
    assert_eq!(t.git_ref, "refs/tags/v1.0.0");

    let pinned = cache
        .fetch(&url, &GitRef::Commit(c1.clone()))
        .await
        .unwrap();
    assert_eq!(pinned.commit, c1);

    // Fetches are incremental: a new commit on the branch is picked up.
    let c3 = repo.commit(&[("b/y.yaml", "3")], "three");
    let main = cache
        .fetch(&url, &GitRef::Branch("main".into()))
        .await
        .unwrap();
    assert_eq!(main.commit, c3);
}

#[tokio::test]
async fn missing_refs_unreachable_remotes_and_semver_are_clear_errors() {
    let repo = GitRepo::new();
    repo.commit(&[("a/x.yaml", "1")], "one");
    let (_d, cache) = cache();
    let url = repo.url();

    let err = cache
        .fetch(&url, &GitRef::Branch("nope".into()))
        .await
        .unwrap_err();
    assert!(matches!(err, GitError::RefNotFound { .. }), "{err}");
    assert!(err.to_string().contains("nope"), "{err}");

    let missing = "0123456789abcdef0123456789abcdef01234567";
    let err = cache
        .fetch(&url, &GitRef::Commit(missing.into()))
        .await
        .unwrap_err();
    assert!(err.to_string().contains(missing), "{err}");

    let err = cache
        .fetch("file:///no/such/repo", &GitRef::Branch("main".into()))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("/no/such/repo"), "{err}");

    let err = cache
        .fetch(&url, &GitRef::Semver(">=1".into()))
        .await
        .unwrap_err();
    assert!(matches!(err, GitError::RefNotFound { .. }), "{err}");
    assert!(err.to_string().contains(">=1"), "{err}");
    let err = cache
        .fetch(&url, &GitRef::Semver(">>1".into()))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not valid"), "{err}");
}

#[tokio::test]
async fn changed_files_cover_edits_renames_and_deletes() {
    let repo = GitRepo::new();
    let c1 = repo.commit(
        &[
            ("apps/web/a.yaml", "a"),
            ("apps/api/b.yaml", "b"),
            ("bases/common.yaml", "c"),
        ],
        "one",
    );
    // Rename inside web, delete in api (by rewriting the index without it), edit a base.
    let r = git2::Repository::open(repo.dir.path()).unwrap();
    std::fs::rename(
        repo.dir.path().join("apps/web/a.yaml"),
        repo.dir.path().join("apps/web/renamed.yaml"),
    )
    .unwrap();
    std::fs::remove_file(repo.dir.path().join("apps/api/b.yaml")).unwrap();
    let mut index = r.index().unwrap();
    index.update_all(["*"], None).unwrap();
    index.write().unwrap();
    let c2 = repo.commit(&[("bases/common.yaml", "changed")], "two");

    let (_d, cache) = cache();
    let url = repo.url();
    cache
        .fetch(&url, &GitRef::Branch("main".into()))
        .await
        .unwrap();
    let mut files = cache.changed_files(&url, &c1, &c2).await.unwrap().unwrap();
    files.sort();
    assert_eq!(
        files,
        [
            "apps/api/b.yaml",
            "apps/web/a.yaml",
            "apps/web/renamed.yaml",
            "bases/common.yaml"
        ]
    );
    use gitfleet_hub::git::changes::app_touched;
    assert!(app_touched(&files, "apps/web", &[]));
    assert!(app_touched(&files, "apps/api", &[]));
    assert!(!app_touched(&files, "apps/other", &[]));
    assert!(app_touched(&files, "apps/other", &["bases".into()]));

    // A commit the cache never saw (rewritten history): unknown, so the caller moves everything.
    let unknown = "0123456789abcdef0123456789abcdef01234567";
    assert_eq!(cache.changed_files(&url, unknown, &c2).await.unwrap(), None);
}

#[tokio::test]
async fn a_force_push_is_followed() {
    let repo = GitRepo::new();
    let c1 = repo.commit(&[("a/x.yaml", "1")], "one");
    let c2 = repo.commit(&[("a/x.yaml", "2")], "two");
    let (_d, cache) = cache();
    let url = repo.url();
    assert_eq!(
        cache
            .fetch(&url, &GitRef::Branch("main".into()))
            .await
            .unwrap()
            .commit,
        c2
    );
    // Rewrite main back to c1 and on to a different commit.
    let r = git2::Repository::open(repo.dir.path()).unwrap();
    let first = r.find_commit(git2::Oid::from_str(&c1).unwrap()).unwrap();
    r.reset(first.as_object(), git2::ResetType::Hard, None)
        .unwrap();
    let c2b = repo.commit(&[("a/x.yaml", "2b")], "two, rewritten");
    assert_ne!(c2, c2b);
    assert_eq!(
        cache
            .fetch(&url, &GitRef::Branch("main".into()))
            .await
            .unwrap()
            .commit,
        c2b
    );
}

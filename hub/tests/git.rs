//! The Git adapter against real local repositories: refs, errors, and which files a commit changed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::time::Duration;

use gitfleet_hub::git::{GitCache, GitError, MAX_TREE_DEPTH};
use gitfleet_hub::model::{CredentialKind, RepoCredential};
use gitfleet_hub::resources::GitRef;
use gitfleet_support::testing::{Serve, git_server};
use support::{GitRepo, PasswordPrompt, eventually};

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

// --- where credentials go ----------------------------------------------------------------------

/// Issue 16, defence in depth: whatever was checked when the Repo was applied, the fetch itself
/// gives a credential to no server outside its urls, and never over plain http.
#[tokio::test]
async fn the_fetch_never_sends_a_credential_over_http_nor_outside_its_urls() {
    let prompt = PasswordPrompt::default();
    let addr = prompt.start().await;
    let url = format!("http://{addr}/acme/x.git");
    let (_d, cache) = cache();
    for urls in [
        vec!["https://github.com/acme/".to_owned()],
        // Prefixes the credentials file refuses to load; the fetch refuses them as well.
        vec![format!("http://{addr}/")],
    ] {
        let credential = RepoCredential {
            urls,
            kind: CredentialKind::Https {
                username: "github-bot".into(),
                password: "bot-password".into(),
            },
        };
        let err = cache
            .fetch_with(&url, &GitRef::Branch("main".into()), Some(credential))
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains(&format!(
                "refusing to send the credential to {url}: it may be sent only over https or ssh"
            )),
            "{err}"
        );
    }
    assert!(prompt.requests() >= 2, "the server asked");
    assert_eq!(prompt.authorized(), Vec::<String>::new());
}

// --- fetches that must stop ----------------------------------------------------------------------

/// Issue 16: a fetch that timed out gave its permit back while its blocking work went on
/// writing into the cache. Now the permit (and the cache's lock) stays with the work until it
/// has really ended: a fetch stuck on a silent server counts against the bound until the
/// server lets go, and then everything is free again.
#[tokio::test]
async fn a_timed_out_fetch_holds_its_permit_until_it_has_really_stopped() {
    let (url, release) = git_server(Serve::Stall, "x.git").await;
    let dir = tempfile::tempdir().unwrap();
    // Long enough that, on a loaded machine, the blocking fetch is surely inside libgit2 and
    // waiting on the server (not still starting) when its caller gives up.
    let cache = GitCache::new(dir.path().join("git"), 2, Duration::from_secs(5));
    let err = cache
        .fetch(&url, &GitRef::Branch("main".into()))
        .await
        .unwrap_err();
    assert!(matches!(err, GitError::Timeout { .. }), "{err}");
    assert_eq!(
        cache.fetches_running(),
        1,
        "the fetch is still inside libgit2, waiting for the server"
    );
    release.send_replace(true);
    eventually("the stuck fetch to end", || async {
        (cache.fetches_running() == 0).then_some(())
    })
    .await;
    let repo = GitRepo::new();
    let c1 = repo.commit(&[("a.yaml", "1")], "one");
    let fetched = cache
        .fetch(&repo.url(), &GitRef::Branch("main".into()))
        .await;
    assert_eq!(fetched.unwrap().commit, c1);
}

/// A fetch still receiving, slowly, when its caller gives up stops by itself at the next
/// callback, while the server goes on sending.
#[tokio::test]
async fn a_fetch_still_receiving_stops_when_its_caller_gives_up() {
    let (url, _release) = git_server(
        Serve::Endless {
            pace: Duration::from_millis(20),
        },
        "x.git",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let cache = GitCache::new(dir.path().join("git"), 1, Duration::from_secs(1));
    let err = cache
        .fetch(&url, &GitRef::Branch("main".into()))
        .await
        .unwrap_err();
    assert!(matches!(err, GitError::Timeout { .. }), "{err}");
    eventually("the fetch to stop", || async {
        (cache.fetches_running() == 0).then_some(())
    })
    .await;
}

// --- deep trees ----------------------------------------------------------------------------------

/// Writes into the cache of `url` a commit holding `fleet/a.yaml` and `deep.yaml` under
/// `depth + 1` nested directories named `d`, as a fetch would have left it. On a thread with a
/// large stack: libgit2's pack builder recurses into trees too.
fn deep_commit(cache: &GitCache, url: &str, depth: usize, content: &str) -> String {
    let (dir, content) = (cache.cache_dir(url), content.to_owned());
    std::thread::Builder::new()
        .stack_size(256 << 20)
        .spawn(move || write_deep_commit(&dir, depth, &content))
        .unwrap()
        .join()
        .unwrap()
}

fn write_deep_commit(dir: &std::path::Path, depth: usize, content: &str) -> String {
    let repo = git2::Repository::open_bare(dir)
        .or_else(|_| git2::Repository::init_bare(dir))
        .unwrap();
    let odb = repo.odb().unwrap();
    // Thousands of trees go into one pack, not thousands of loose files.
    let mempack = odb.add_new_mempack_backend(1000).unwrap();
    let blob = repo.blob(content.as_bytes()).unwrap();
    let mut tree = {
        let mut b = repo.treebuilder(None).unwrap();
        b.insert("deep.yaml", blob, 0o100644).unwrap();
        b.write().unwrap()
    };
    for _ in 0..depth {
        let mut b = repo.treebuilder(None).unwrap();
        b.insert("d", tree, 0o040000).unwrap();
        tree = b.write().unwrap();
    }
    let fleet = {
        let mut b = repo.treebuilder(None).unwrap();
        b.insert("a.yaml", blob, 0o100644).unwrap();
        b.write().unwrap()
    };
    let mut root = repo.treebuilder(None).unwrap();
    root.insert("fleet", fleet, 0o040000).unwrap();
    root.insert("d", tree, 0o040000).unwrap();
    let root = repo.find_tree(root.write().unwrap()).unwrap();
    let sig = git2::Signature::now("t", "t@example.com").unwrap();
    let commit = repo.commit(None, &sig, &sig, "deep", &root, &[]).unwrap();
    let mut pack = git2::Buf::new();
    mempack.dump(&repo, &mut pack).unwrap();
    let mut writer = odb.packwriter().unwrap();
    std::io::Write::write_all(&mut writer, &pack).unwrap();
    writer.commit().unwrap();
    commit.to_string()
}

/// Issue 16: the hub walked a commit's trees recursively, one stack frame per level, so a
/// repository nesting directories some thousands deep overflowed the stack of the thread
/// reading it (and aborted the hub). The walk is iterative, refuses trees deeper than the
/// limit with the path, and change detection reads such commits too.
#[tokio::test]
async fn deep_trees_are_refused_and_never_walked_recursively() {
    let (_d, cache) = cache();
    let url = "git://127.0.0.1:1/deep.git";
    let deep = deep_commit(&cache, url, 20_000, "v: 1\n");
    let err = match cache.read_documents(url, &deep, ".").await {
        Ok(docs) => panic!("{} documents read from a tree too deep", docs.len()),
        Err(e) => e,
    };
    assert!(
        matches!(&err, GitError::TooDeep { path, limit: MAX_TREE_DEPTH } if path.starts_with("d/d/d/")),
        "{err:?}"
    );
    assert!(
        err.to_string().ends_with(&format!(
            "is nested deeper than {MAX_TREE_DEPTH} directories"
        )),
        "{err}"
    );
    // The path beside it reads as before, and so does a tree exactly as deep as allowed.
    let docs = cache.read_documents(url, &deep, "fleet").await.unwrap();
    assert_eq!(docs, [("fleet/a.yaml".to_owned(), "v: 1\n".to_owned())]);
    let limit = deep_commit(&cache, url, MAX_TREE_DEPTH - 1, "v: 2\n");
    let docs = cache.read_documents(url, &limit, ".").await.unwrap();
    assert_eq!(docs.len(), 2, "{docs:?}");

    // Change detection between deep commits finds the deep file without walking recursively.
    let deeper = deep_commit(&cache, url, 20_000, "v: 3\n");
    let mut files = cache
        .changed_files(url, &deep, &deeper)
        .await
        .unwrap()
        .unwrap();
    files.sort();
    assert_eq!(files.len(), 2, "{files:?}");
    assert!(files[0].starts_with("d/d/d/") && files[0].ends_with("/deep.yaml"));
    assert_eq!(files[0].len(), "d/".len() * 20_001 + "deep.yaml".len());
    assert_eq!(files[1], "fleet/a.yaml");
}

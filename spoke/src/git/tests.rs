use std::collections::BTreeMap;

use git2::{Oid, Repository, Signature};
use gitfleet_support::testing::{ADVERTISED_COMMIT, Serve, git_server};
use tempfile::TempDir;

use super::*;
use crate::model::{CredentialKind, RepoCredential};

/// A throwaway repository whose commits are built from (path, content, mode) entries.
struct TestRepo {
    dir: TempDir,
    repo: Repository,
}

impl TestRepo {
    fn new() -> Self {
        let dir = TempDir::new().expect("tempdir");
        let repo = Repository::init(dir.path()).expect("init");
        Self { dir, repo }
    }

    fn url(&self) -> String {
        format!("file://{}", self.dir.path().display())
    }

    /// Commits exactly these files (mode 0o100644) and symlinks (0o120000) on `main`.
    fn commit(&self, files: &[(&str, &[u8])], symlinks: &[(&str, &str)]) -> Oid {
        let mut entries: Vec<(String, Oid, i32)> = Vec::new();
        for (path, content) in files {
            entries.push((
                (*path).to_owned(),
                self.repo.blob(content).expect("blob"),
                0o100644,
            ));
        }
        for (path, target) in symlinks {
            entries.push((
                (*path).to_owned(),
                self.repo.blob(target.as_bytes()).expect("blob"),
                0o120000,
            ));
        }
        let tree = self.build_tree(&entries);
        let tree = self.repo.find_tree(tree).expect("tree");
        let sig = Signature::now("t", "t@example.com").expect("sig");
        let parent = self.repo.head().ok().and_then(|h| h.peel_to_commit().ok());
        let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
        self.repo
            .commit(Some("HEAD"), &sig, &sig, "test", &tree, &parents)
            .expect("commit")
    }

    fn build_tree(&self, entries: &[(String, Oid, i32)]) -> Oid {
        let mut here = self.repo.treebuilder(None).expect("builder");
        let mut subdirs: BTreeMap<String, Vec<(String, Oid, i32)>> = BTreeMap::new();
        for (path, oid, mode) in entries {
            match path.split_once('/') {
                Some((dir, rest)) => {
                    subdirs
                        .entry(dir.to_owned())
                        .or_default()
                        .push((rest.to_owned(), *oid, *mode))
                }
                None => {
                    here.insert(path, *oid, *mode).expect("insert");
                }
            }
        }
        for (dir, children) in subdirs {
            let sub = self.build_tree(&children);
            here.insert(&dir, sub, 0o040000).expect("insert dir");
        }
        here.write().expect("write tree")
    }
}

fn source(url: &str, commit: Oid, path: &str) -> Source {
    Source {
        repo_url: url.to_owned(),
        repo_name: "r".into(),
        commit: commit.to_string(),
        git_ref: "refs/heads/main".into(),
        path: path.into(),
        extra_paths: Vec::new(),
        trusted_keys: Vec::new(),
    }
}

fn paths(files: &AppFiles) -> Vec<&str> {
    files.files.iter().map(|f| f.path.as_str()).collect()
}

#[tokio::test]
async fn reads_the_app_path_of_the_exact_commit() {
    let origin = TestRepo::new();
    let first = origin.commit(
        &[
            ("apps/web/a.yaml", b"kind: A"),
            ("apps/web/sub/b.yml", b"kind: B"),
            ("apps/web/README.md", b"docs"),
            ("apps/other/c.yaml", b"kind: C"),
        ],
        &[],
    );
    let second = origin.commit(&[("apps/web/a.yaml", b"kind: A2")], &[]);
    let cache_dir = TempDir::new().expect("tempdir");
    let cache = GitCache::new(cache_dir.path());

    let files = cache
        .read_app(
            &source(&origin.url(), first, "apps/web"),
            None,
            ReadLimits::default(),
        )
        .await
        .expect("read");
    assert_eq!(paths(&files), ["apps/web/a.yaml", "apps/web/sub/b.yml"]);
    assert_eq!(files.files[0].content, b"kind: A");
    assert!(files.errors.is_empty());

    let files = cache
        .read_app(
            &source(&origin.url(), second, "./apps/web/"),
            None,
            ReadLimits::default(),
        )
        .await
        .expect("read");
    assert_eq!(paths(&files), ["apps/web/a.yaml"]);
    assert_eq!(files.files[0].content, b"kind: A2");

    // The first commit is still in the cache even though the branch moved on.
    let files = cache
        .read_app(
            &source(&origin.url(), first, "apps"),
            None,
            ReadLimits::default(),
        )
        .await
        .expect("read");
    assert_eq!(
        paths(&files),
        ["apps/other/c.yaml", "apps/web/a.yaml", "apps/web/sub/b.yml"]
    );
}

#[tokio::test]
async fn reads_the_whole_repository_and_single_files() {
    let origin = TestRepo::new();
    let commit = origin.commit(&[("a.yaml", b"x"), ("d/b.json", b"{}")], &[]);
    let cache_dir = TempDir::new().expect("tempdir");
    let cache = GitCache::new(cache_dir.path());
    let files = cache
        .read_app(
            &source(&origin.url(), commit, ""),
            None,
            ReadLimits::default(),
        )
        .await
        .expect("read");
    assert_eq!(paths(&files), ["a.yaml", "d/b.json"]);
    let files = cache
        .read_app(
            &source(&origin.url(), commit, "d/b.json"),
            None,
            ReadLimits::default(),
        )
        .await
        .expect("read");
    assert_eq!(paths(&files), ["d/b.json"]);
}

#[tokio::test]
async fn a_commit_the_repository_does_not_have_is_an_error() {
    let origin = TestRepo::new();
    origin.commit(&[("a.yaml", b"x")], &[]);
    let cache_dir = TempDir::new().expect("tempdir");
    let cache = GitCache::new(cache_dir.path());
    let missing = Oid::from_str("0123456789abcdef0123456789abcdef01234567").expect("oid");
    let err = cache
        .read_app(
            &source(&origin.url(), missing, ""),
            None,
            ReadLimits::default(),
        )
        .await
        .expect_err("missing");
    assert!(matches!(err, GitError::CommitNotFound { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("0123456789abcdef0123456789abcdef01234567")
    );
    // A mirror behind a load balancer may not have the commit yet.
    assert!(err.is_transient(), "{err}");
}

#[tokio::test]
async fn an_unreachable_repository_is_a_fetch_error() {
    let cache_dir = TempDir::new().expect("tempdir");
    let cache = GitCache::new(cache_dir.path());
    let oid = Oid::from_str("0123456789abcdef0123456789abcdef01234567").expect("oid");
    let url = format!("file://{}/nowhere", cache_dir.path().display());
    let err = cache
        .read_app(&source(&url, oid, ""), None, ReadLimits::default())
        .await
        .expect_err("unreachable");
    assert!(matches!(err, GitError::Fetch { .. }), "{err}");
    assert!(err.to_string().contains("nowhere"), "{err}");
}

/// What a test HTTP server saw: how many connections, and the head of every request.
#[derive(Default)]
struct Seen {
    connections: std::sync::atomic::AtomicUsize,
    requests: std::sync::Mutex<Vec<String>>,
}

impl Seen {
    fn connections(&self) -> usize {
        self.connections.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The request heads that carried an `Authorization` header.
    fn authorized(&self) -> Vec<String> {
        self.requests
            .lock()
            .expect("requests")
            .iter()
            .filter(|r| r.to_ascii_lowercase().contains("\r\nauthorization:"))
            .cloned()
            .collect()
    }
}

/// An HTTP server on a free loopback port that answers every request with `response` and
/// closes the connection; `None` closes each connection without a word. Records what it saw.
async fn http_server(response: Option<&'static str>) -> (String, std::sync::Arc<Seen>) {
    use std::sync::atomic::Ordering;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = std::sync::Arc::new(Seen::default());
    let recorded = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            recorded.connections.fetch_add(1, Ordering::SeqCst);
            let Some(response) = response else {
                drop(stream);
                continue;
            };
            let recorded = recorded.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                recorded
                    .requests
                    .lock()
                    .expect("requests")
                    .push(String::from_utf8_lossy(&request).into_owned());
                let _ = stream.write_all(response.as_bytes()).await;
            });
        }
    });
    (format!("http://{addr}/platform.git"), seen)
}

const UNAUTHORIZED: &str = "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"git\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

fn any_commit() -> Oid {
    Oid::from_str(ADVERTISED_COMMIT).expect("oid")
}

#[tokio::test]
async fn a_repository_asking_for_a_credential_none_is_configured_for_fails_as_auth() {
    let (url, seen) = http_server(Some(UNAUTHORIZED)).await;
    let cache_dir = TempDir::new().expect("tempdir");
    let cache = GitCache::new(cache_dir.path());
    let err = cache
        .read_app(&source(&url, any_commit(), ""), None, ReadLimits::default())
        .await
        .expect_err("unauthorized");
    assert_eq!(seen.authorized(), Vec::<String>::new());
    assert!(matches!(err, GitError::Auth { .. }), "{err:?}");
    assert!(
        err.to_string().contains("authentication failed")
            && err.to_string().contains("none is configured"),
        "{err}"
    );
    assert!(!err.is_transient(), "retrying cannot conjure a credential");
}

fn https_credential(repo_url: &str, urls: &[&str]) -> RepoCredential {
    RepoCredential {
        repo_url: repo_url.to_owned(),
        kind: CredentialKind::Https {
            username: "deploy".into(),
            password: "s3cret".into(),
        },
        urls: urls.iter().map(|u| (*u).to_owned()).collect(),
    }
}

/// Issue 16: a credential reached any server a Repo named, over plain HTTP too. Whatever the
/// hub sent (a credential for this very URL, or one whose prefixes are elsewhere), the spoke
/// answers the server's 401 with nothing.
#[tokio::test]
async fn a_credential_is_never_sent_over_http_nor_outside_its_urls() {
    let (url, seen) = http_server(Some(UNAUTHORIZED)).await;
    let cache_dir = TempDir::new().expect("tempdir");
    let cache = GitCache::new(cache_dir.path());
    for credential in [
        // From a hub that sends no prefixes: bound to the Repo's URL, which is plain HTTP.
        https_credential(&url, &[]),
        // Prefixes a hub could not even load, and ones elsewhere.
        https_credential(&url, &[&url]),
        https_credential(&url, &["https://github.com/acme/"]),
    ] {
        let err = cache
            .read_app(
                &source(&url, any_commit(), ""),
                Some(&credential),
                ReadLimits::default(),
            )
            .await
            .expect_err("refused");
        assert!(matches!(err, GitError::Auth { .. }), "{err:?}");
        assert!(
            err.to_string()
                .contains(&format!("refusing to send the credential to {url}")),
            "{err}"
        );
        assert!(!err.is_transient(), "{err}");
    }
    assert!(seen.connections() >= 3, "the server was asked");
    assert_eq!(
        seen.authorized(),
        Vec::<String>::new(),
        "no credential sent"
    );
}

#[tokio::test]
async fn a_server_error_and_a_dropped_connection_are_transient_fetch_errors() {
    let (unavailable, _) = http_server(Some(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    ))
    .await;
    let (dropping, seen) = http_server(None).await;
    let cache_dir = TempDir::new().expect("tempdir");
    let cache = GitCache::new(cache_dir.path());
    for url in [unavailable, dropping] {
        let err = cache
            .read_app(&source(&url, any_commit(), ""), None, ReadLimits::default())
            .await
            .expect_err("the server fails");
        assert!(matches!(err, GitError::Fetch { .. }), "{url}: {err:?}");
        assert!(err.is_transient(), "{url}: {err}");
    }
    assert!(seen.connections() >= 1);
}

#[tokio::test]
async fn a_refused_connection_is_a_transient_fetch_error() {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let cache_dir = TempDir::new().expect("tempdir");
    let cache = GitCache::new(cache_dir.path());
    for url in [
        format!("http://{addr}/platform.git"),
        format!("git://{addr}/platform.git"),
    ] {
        let err = cache
            .read_app(&source(&url, any_commit(), ""), None, ReadLimits::default())
            .await
            .expect_err("refused");
        assert!(matches!(err, GitError::Fetch { .. }), "{url}: {err:?}");
        assert!(err.is_transient(), "{url}: {err}");
    }
}

#[test]
fn only_failures_on_the_way_are_transient() {
    use git2::{ErrorClass, ErrorCode};
    let git = |code, class| GitError::Git(git2::Error::new(code, class, "x"));
    let fetch = |message: &str| GitError::Fetch {
        url: "u".into(),
        message: message.into(),
    };
    let transient = [
        fetch("connection reset by peer"),
        GitError::CommitNotFound {
            url: "u".into(),
            commit: "c".into(),
        },
        git(ErrorCode::GenericError, ErrorClass::Net),
        git(ErrorCode::GenericError, ErrorClass::Http),
        git(ErrorCode::GenericError, ErrorClass::Ssh),
        git(ErrorCode::GenericError, ErrorClass::Ssl),
        git(ErrorCode::GenericError, ErrorClass::Os),
    ];
    for error in transient {
        assert!(error.is_transient(), "{error:?}");
    }
    let permanent = [
        GitError::InvalidCommit("abc".into()),
        GitError::InvalidPath {
            path: "..".into(),
            reason: "r",
        },
        GitError::Auth {
            url: "u".into(),
            message: "m".into(),
        },
        GitError::Untrusted {
            url: "u".into(),
            message: "m".into(),
        },
        GitError::PathNotFound {
            path: "p".into(),
            commit: "c".into(),
        },
        GitError::NotADirectory {
            path: "p".into(),
            commit: "c".into(),
            found: "commit".into(),
        },
        GitError::TooManyFiles { limit: 1 },
        GitError::TooManyBytes { limit: 1 },
        GitError::Cache {
            path: "/data/git".into(),
            message: "m".into(),
        },
        GitError::Task("panicked".into()),
        git(ErrorCode::Auth, ErrorClass::Http),
        git(ErrorCode::Certificate, ErrorClass::Ssl),
        git(ErrorCode::NotFound, ErrorClass::Odb),
        git(ErrorCode::GenericError, ErrorClass::Tree),
    ];
    for error in permanent {
        assert!(!error.is_transient(), "{error:?}");
    }
}

#[test]
fn refusals_from_libgit2_and_from_our_callbacks_are_named() {
    use git2::{ErrorClass, ErrorCode};
    let classify = |code, credential_given| {
        classify_fetch_error(
            "https://git.example/x.git",
            credential_given,
            &git2::Error::new(code, ErrorClass::Http, "m"),
        )
    };
    assert!(matches!(
        classify(ErrorCode::Auth, true),
        GitError::Auth { message, .. } if message == "m"
    ));
    assert!(matches!(
        classify(ErrorCode::Auth, false),
        GitError::Auth { message, .. } if message.contains("none is configured")
    ));
    assert!(matches!(
        classify(ErrorCode::Certificate, true),
        GitError::Untrusted { .. }
    ));
    assert!(matches!(
        classify(ErrorCode::GenericError, true),
        GitError::Fetch { .. }
    ));
    // The shared callbacks' own refusals (gitfleet_support::git) carry these codes, class
    // Callback, which libgit2 hands back as the fetch's.
    let refusal = git2::Error::new(
        ErrorCode::Auth,
        ErrorClass::Callback,
        "the repository rejected the credential",
    );
    assert!(matches!(
        classify_fetch_error("https://git.example/x.git", true, &refusal),
        GitError::Auth { message, .. } if message == "the repository rejected the credential"
    ));
}

#[tokio::test]
async fn a_missing_path_is_an_error() {
    let origin = TestRepo::new();
    let commit = origin.commit(&[("a.yaml", b"x")], &[]);
    let cache_dir = TempDir::new().expect("tempdir");
    let cache = GitCache::new(cache_dir.path());
    let err = cache
        .read_app(
            &source(&origin.url(), commit, "apps/none"),
            None,
            ReadLimits::default(),
        )
        .await
        .expect_err("missing");
    assert!(matches!(err, GitError::PathNotFound { .. }), "{err}");
    assert!(!err.is_transient(), "{err}");
}

#[tokio::test]
async fn symlinks_are_refused_and_the_rest_is_read() {
    let origin = TestRepo::new();
    let commit = origin.commit(
        &[("app/ok.yaml", b"kind: A")],
        &[
            ("app/passwd.yaml", "../../../../etc/passwd"),
            ("app/dir", "/etc"),
        ],
    );
    let cache_dir = TempDir::new().expect("tempdir");
    let cache = GitCache::new(cache_dir.path());
    let files = cache
        .read_app(
            &source(&origin.url(), commit, "app"),
            None,
            ReadLimits::default(),
        )
        .await
        .expect("read");
    assert_eq!(paths(&files), ["app/ok.yaml"]);
    let refused: Vec<&str> = files.errors.iter().map(|e| e.file.as_str()).collect();
    assert_eq!(refused, ["app/dir", "app/passwd.yaml"]);
    assert!(
        files.errors[0]
            .message
            .contains("symbolic links are refused")
    );

    // An App path that is itself a symlink is refused too.
    let files = cache
        .read_app(
            &source(&origin.url(), commit, "app/dir"),
            None,
            ReadLimits::default(),
        )
        .await
        .expect("read");
    assert!(files.files.is_empty());
    assert_eq!(files.errors.len(), 1);
}

#[tokio::test]
async fn size_limits_are_enforced() {
    let origin = TestRepo::new();
    let big = vec![b'a'; 2_000];
    let commit = origin.commit(
        &[
            ("app/big.yaml", &big),
            ("app/small.yaml", b"kind: A"),
            ("app/big.bin", &big),
        ],
        &[],
    );
    let cache_dir = TempDir::new().expect("tempdir");
    let cache = GitCache::new(cache_dir.path());

    let limits = ReadLimits {
        max_file_bytes: 1_000,
        ..ReadLimits::default()
    };
    let files = cache
        .read_app(&source(&origin.url(), commit, "app"), None, limits)
        .await
        .expect("read");
    assert_eq!(paths(&files), ["app/small.yaml"]);
    assert_eq!(files.errors[0].file, "app/big.yaml");
    assert!(
        files.errors[0]
            .message
            .contains("2000 bytes, larger than the limit of 1000"),
        "{}",
        files.errors[0]
    );

    let limits = ReadLimits {
        max_total_bytes: 1_000,
        ..ReadLimits::default()
    };
    let err = cache
        .read_app(&source(&origin.url(), commit, "app"), None, limits)
        .await
        .expect_err("total");
    assert!(
        matches!(err, GitError::TooManyBytes { limit: 1_000 }),
        "{err}"
    );

    let limits = ReadLimits {
        max_files: 1,
        ..ReadLimits::default()
    };
    let err = cache
        .read_app(&source(&origin.url(), commit, "app"), None, limits)
        .await
        .expect_err("files");
    assert!(matches!(err, GitError::TooManyFiles { limit: 1 }), "{err}");
}

#[tokio::test]
async fn bad_commit_ids_and_paths_are_refused_before_fetching() {
    let cache_dir = TempDir::new().expect("tempdir");
    let cache = GitCache::new(cache_dir.path());
    let mut s = source("file:///nonexistent", Oid::ZERO_SHA1, "");
    s.commit = "abc123".into();
    assert!(matches!(
        cache.read_app(&s, None, ReadLimits::default()).await,
        Err(GitError::InvalidCommit(_))
    ));
    s.commit = "0123456789abcdef0123456789abcdef01234567".into();
    s.path = "apps/../../etc".into();
    let err = cache
        .read_app(&s, None, ReadLimits::default())
        .await
        .expect_err("dotdot");
    assert!(err.to_string().contains("must not contain '..'"), "{err}");
}

#[test]
fn normalize_path_cases() {
    assert_eq!(normalize_path("").expect("root"), "");
    assert_eq!(normalize_path(".").expect("dot"), "");
    assert_eq!(normalize_path("./apps//web/").expect("messy"), "apps/web");
    assert!(normalize_path("/etc").is_err());
    assert!(normalize_path("a/../b").is_err());
    assert!(normalize_path("..").is_err());
    assert!(normalize_path(".git/config").is_err());
    assert!(normalize_path("a\\b").is_err());
    let deepest = vec!["d"; MAX_TREE_DEPTH].join("/");
    assert_eq!(normalize_path(&deepest).expect("deepest"), deepest);
    let err = normalize_path(&format!("{deepest}/d")).expect_err("too deep");
    assert!(err.to_string().contains("nested deeper"), "{err}");
}

#[test]
fn parse_commit_cases() {
    assert!(parse_commit("0123456789abcdef0123456789abcdef01234567").is_ok());
    assert!(parse_commit("0123456789ABCDEF0123456789abcdef01234567").is_ok());
    assert!(parse_commit("0123456").is_err());
    assert!(parse_commit("zz23456789abcdef0123456789abcdef01234567").is_err());
    assert!(parse_commit("").is_err());
}

#[test]
fn cache_dirs_differ_per_url() {
    let cache = GitCache::new("/data/git");
    assert_ne!(
        cache.repo_dir("https://a/x.git"),
        cache.repo_dir("https://a/y.git")
    );
    assert!(cache.repo_dir("https://a/x.git").starts_with("/data/git"));
}

// --- bounded fetches ---------------------------------------------------------------------------

/// Fails the test, rather than hanging it, when `fetch` does not return.
async fn returns<T>(fetch: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(std::time::Duration::from_secs(60), fetch)
        .await
        .expect("the fetch returned")
}

/// Issue 16: a server that accepts and says nothing wedged every Target of its URL. The fetch
/// now fails as transient at its deadline; a second read of the same repository fails the same
/// way instead of queueing behind it for ever; other repositories are read meanwhile.
#[tokio::test]
async fn a_stalled_server_times_out_and_wedges_nothing() {
    let (url, release) = git_server(Serve::Stall, "platform.git").await;
    let origin = TestRepo::new();
    let commit = origin.commit(&[("app/a.yaml", b"kind: A")], &[]);
    let cache_dir = TempDir::new().expect("tempdir");
    // Long enough that a healthy local fetch on a machine busy with the rest of the suite never
    // meets it (1 s did, once), short enough to keep the test quick.
    let limits = FetchLimits {
        timeout: std::time::Duration::from_secs(3),
        ..FetchLimits::default()
    };
    let cache = GitCache::new(cache_dir.path()).with_fetch_limits(limits);
    let stalled = source(&url, any_commit(), "");

    let err = returns(cache.read_app(&stalled, None, ReadLimits::default()))
        .await
        .expect_err("stalled");
    assert!(matches!(err, GitError::Timeout { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("fetch {url}: timed out after 3s (--git-fetch-timeout)")
    );
    assert!(err.is_transient(), "{err}");

    // The first fetch is still inside libgit2, waiting for the server: the next one of that
    // repository says so in time, and others go on.
    let err = returns(cache.read_app(&stalled, None, ReadLimits::default()))
        .await
        .expect_err("still stalled");
    assert!(
        matches!(err, GitError::Busy { .. } | GitError::Timeout { .. }),
        "{err:?}"
    );
    assert!(err.is_transient(), "{err}");
    let files = returns(cache.read_app(
        &source(&origin.url(), commit, "app"),
        None,
        ReadLimits::default(),
    ))
    .await
    .expect("another repository");
    assert_eq!(paths(&files), ["app/a.yaml"]);

    // Once the server lets go, the repository is fetched from again (and fails as the server
    // now hangs up at once).
    release.send_replace(true);
    let err = returns(async {
        loop {
            match cache.read_app(&stalled, None, ReadLimits::default()).await {
                Err(GitError::Busy { .. }) => continue,
                other => break other,
            }
        }
    })
    .await
    .expect_err("hung up");
    assert!(err.is_transient(), "{err:?}");
}

/// Issue 16: nothing bounded what a fetch received. Past `max_bytes` the fetch stops, with an
/// error that names the flag, and is not retried at once.
#[tokio::test]
async fn a_server_that_sends_too_much_is_cut_off() {
    let (url, _release) = git_server(
        Serve::Endless {
            pace: std::time::Duration::ZERO,
        },
        "platform.git",
    )
    .await;
    let cache_dir = TempDir::new().expect("tempdir");
    let cache = GitCache::new(cache_dir.path()).with_fetch_limits(FetchLimits {
        max_bytes: 256 * 1024,
        ..FetchLimits::default()
    });
    let err = returns(cache.read_app(&source(&url, any_commit(), ""), None, ReadLimits::default()))
        .await
        .expect_err("too much");
    assert!(
        matches!(err, GitError::TooLarge { limit: 262_144, .. }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!("fetch {url}: the server sent more than 262144 bytes (--git-fetch-max-bytes)")
    );
    assert!(!err.is_transient(), "{err}");
}

/// A fetch that keeps receiving, slowly, past its deadline stops by itself: the lock of its
/// cache comes free without the server ever ending the pack.
#[tokio::test]
async fn a_slow_fetch_stops_at_its_deadline() {
    let (url, _release) = git_server(
        Serve::Endless {
            pace: std::time::Duration::from_millis(20),
        },
        "platform.git",
    )
    .await;
    let cache_dir = TempDir::new().expect("tempdir");
    let limits = FetchLimits {
        timeout: std::time::Duration::from_secs(1),
        ..FetchLimits::default()
    };
    let cache = GitCache::new(cache_dir.path()).with_fetch_limits(limits);
    let slow = source(&url, any_commit(), "");
    let err = returns(cache.read_app(&slow, None, ReadLimits::default()))
        .await
        .expect_err("slow");
    assert!(matches!(err, GitError::Timeout { .. }), "{err:?}");
    // The next fetch gets the lock (it is not Busy) and meets the same fate at its own deadline.
    let err = returns(cache.read_app(&slow, None, ReadLimits::default()))
        .await
        .expect_err("slow again");
    assert!(matches!(err, GitError::Timeout { .. }), "{err:?}");
}

// --- deep trees --------------------------------------------------------------------------------

/// Writes into the cache of `url` a commit holding `app/a.yaml` and `deep.yaml` under `deep/`
/// and `depth` more nested directories, as a fetch would have left it there. On a thread with
/// a large stack: libgit2's pack builder recurses into trees too.
fn deep_commit(cache: &GitCache, url: &str, depth: usize) -> Oid {
    let dir = cache.repo_dir(url);
    std::thread::Builder::new()
        .stack_size(256 << 20)
        .spawn(move || write_deep_commit(&dir, depth))
        .expect("thread")
        .join()
        .expect("deep commit")
}

fn write_deep_commit(dir: &Path, depth: usize) -> Oid {
    let repo = Repository::init_bare(dir).expect("init");
    let odb = repo.odb().expect("odb");
    // Thousands of trees go into one pack, not thousands of loose files.
    let mempack = odb.add_new_mempack_backend(1000).expect("mempack");
    let blob = repo.blob(b"kind: A").expect("blob");
    let mut tree = {
        let mut b = repo.treebuilder(None).expect("builder");
        b.insert("deep.yaml", blob, 0o100644).expect("insert");
        b.write().expect("write")
    };
    for _ in 0..depth {
        let mut b = repo.treebuilder(None).expect("builder");
        b.insert("d", tree, 0o040000).expect("insert");
        tree = b.write().expect("write");
    }
    let app = {
        let mut b = repo.treebuilder(None).expect("builder");
        b.insert("a.yaml", blob, 0o100644).expect("insert");
        b.write().expect("write")
    };
    let mut root = repo.treebuilder(None).expect("builder");
    root.insert("app", app, 0o040000).expect("insert");
    root.insert("deep", tree, 0o040000).expect("insert");
    let root = repo.find_tree(root.write().expect("root")).expect("tree");
    let sig = Signature::now("t", "t@example.com").expect("sig");
    let commit = repo
        .commit(None, &sig, &sig, "deep", &root, &[])
        .expect("commit");
    let mut pack = git2::Buf::new();
    mempack.dump(&repo, &mut pack).expect("dump");
    let mut writer = odb.packwriter().expect("packwriter");
    std::io::Write::write_all(&mut writer, &pack).expect("pack");
    writer.commit().expect("commit pack");
    commit
}

/// Issue 16: trees were walked recursively (by libgit2, one C frame per level), so a tree
/// nested some ten thousand levels deep overflowed the stack of the thread reading it and
/// aborted the spoke. It is refused with the path and the limit; the App beside it and trees
/// within the limit read as before.
#[tokio::test]
async fn deep_trees_are_refused_and_never_walked_recursively() {
    let cache_dir = TempDir::new().expect("tempdir");
    let cache = GitCache::new(cache_dir.path());
    let url = "git://127.0.0.1:1/deep.git";
    let commit = deep_commit(&cache, url, 20_000);

    for path in ["", "deep"] {
        let read = cache
            .read_app(&source(url, commit, path), None, ReadLimits::default())
            .await;
        let err = match read {
            Ok(files) => panic!("{} files read from a tree too deep", files.files.len()),
            Err(e) => e,
        };
        assert!(
            matches!(&err, GitError::TooDeep { limit: MAX_TREE_DEPTH, path } if path.starts_with("deep/d/d/")),
            "{err:?}"
        );
        assert!(
            err.to_string().ends_with(&format!(
                "is nested deeper than {MAX_TREE_DEPTH} directories"
            )),
            "{err}"
        );
        assert!(!err.is_transient(), "{err}");
    }
    let dest = TempDir::new().expect("tempdir");
    let err = match cache
        .materialize(
            &source(url, commit, ""),
            None,
            &["deep".to_owned()],
            dest.path(),
            ReadLimits::default(),
        )
        .await
    {
        Ok(_) => panic!("a tree too deep materialized"),
        Err(e) => e,
    };
    assert!(matches!(err, GitError::TooDeep { .. }), "{err:?}");
    let files = cache
        .read_app(&source(url, commit, "app"), None, ReadLimits::default())
        .await
        .expect("the App beside it");
    assert_eq!(paths(&files), ["app/a.yaml"]);

    // Exactly as deep as allowed: `deep/` and MAX_TREE_DEPTH - 1 levels below it.
    let url = "git://127.0.0.1:1/limit.git";
    let commit = deep_commit(&cache, url, MAX_TREE_DEPTH - 1);
    let files = cache
        .read_app(&source(url, commit, "deep"), None, ReadLimits::default())
        .await
        .expect("within the limit");
    assert_eq!(files.files.len(), 1);
    assert!(files.files[0].path.ends_with("/d/deep.yaml"));
}

/// A Target of the App path `apps/web` at `commit` (followed through `git_ref`) that asks for
/// signatures by `keys`.
fn signed_source(url: &str, commit: &str, git_ref: &str, keys: &[&str]) -> Source {
    Source {
        commit: commit.to_owned(),
        git_ref: git_ref.to_owned(),
        trusted_keys: keys.iter().map(|k| (*k).to_owned()).collect(),
        ..source(url, Oid::ZERO_SHA1, "apps/web")
    }
}

#[tokio::test]
async fn a_target_that_asks_for_signatures_reads_only_what_a_trusted_key_signed() {
    use gitfleet_support::testing::signing::{Signer, init_repo, unsigned_commit, unsigned_tag};
    let origin = TempDir::new().expect("tempdir");
    init_repo(origin.path());
    let url = format!("file://{}", origin.path().display());
    let (trusted, stranger) = (
        Signer::ssh("release-bot"),
        Signer::gpg("Other <o@example.com>"),
    );
    let keys = [trusted.trusted_key()];
    let signed = trusted.commit(origin.path(), &[("apps/web/a.yaml", "kind: A")], "signed");
    let unsigned = unsigned_commit(origin.path(), &[("apps/web/a.yaml", "kind: EVIL")], "x");
    let untrusted = stranger.commit(origin.path(), &[("apps/web/a.yaml", "kind: EVIL2")], "y");
    trusted.tag(origin.path(), "v1", &unsigned);
    unsigned_tag(origin.path(), "v2", &signed, true);
    unsigned_tag(origin.path(), "v3", &signed, false);
    let cache_dir = TempDir::new().expect("tempdir");
    let cache = GitCache::new(cache_dir.path());
    let read = |source: Source| {
        let cache = &cache;
        async move { cache.read_app(&source, None, ReadLimits::default()).await }
    };

    let files = read(signed_source(&url, &signed, "refs/heads/main", &keys))
        .await
        .expect("a trusted signature");
    assert_eq!(files.files[0].content, b"kind: A");
    // A signed tag vouches for the commit it points at, signed or not.
    let files = read(signed_source(&url, &unsigned, "refs/tags/v1", &keys))
        .await
        .expect("a trusted tag");
    assert_eq!(files.files[0].content, b"kind: EVIL");

    for (commit, git_ref, reason) in [
        (&unsigned, "refs/heads/main", "not signed".to_owned()),
        (
            &untrusted,
            "refs/heads/main",
            "signed by untrusted key OpenPGP ".to_owned(),
        ),
        (&signed, "refs/tags/v2", "not signed".to_owned()),
        (&signed, "refs/tags/v3", "lightweight tag".to_owned()),
        // The hub followed v1, which points at `unsigned`: a Target naming another commit
        // under that tag is not vouched for by it.
        (&signed, "refs/tags/v1", "no longer points at".to_owned()),
    ] {
        let err = read(signed_source(&url, commit, git_ref, &keys))
            .await
            .expect_err("refused");
        let message = err.to_string();
        assert!(
            matches!(err, GitError::Unverified { .. }) && !err.is_transient(),
            "{git_ref}: {err:?}"
        );
        assert!(
            message.starts_with(&format!("commit {commit} ({git_ref}) refused: "))
                && message.contains(&reason),
            "{git_ref}: {message}"
        );
    }
    // Without keys the same commit is read as before.
    let files = read(signed_source(&url, &unsigned, "refs/heads/main", &[]))
        .await
        .expect("nothing asked");
    assert_eq!(files.files[0].content, b"kind: EVIL");
}

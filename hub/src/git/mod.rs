//! Following Git repositories: one bare cache per repository URL under `DATA/git`, fetched with
//! git2 off the async runtime, a bounded number at once, each under a deadline.
//!
//! A fetch that misses its deadline is reported at once, and told to stop: libgit2's transfer
//! progress, sideband and credential callbacks check a cancel flag and abort the fetch once it is
//! set. The fetch keeps its permit and the lock of its cache until the blocking work has really
//! ended, so that no other fetch writes into that cache meanwhile and the bound on concurrent
//! fetches stays true. (libgit2 makes no callback while it waits in a socket read: a fetch from a
//! server that accepts and then says nothing ends when the server answers or hangs up.)

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::sync::{Mutex, Semaphore};

pub use gitfleet_core::git::signature::{TrustedKeys, Verified, VerifyError};
use gitfleet_support::git as shared;

use crate::model::RepoCredential;
use crate::resources::GitRef;

/// The pure decisions over Git (which Apps a commit touches, which tag a range picks) live in
/// gitfleet-core; `crate::git::{changes, refs}` stay their paths inside the hub.
pub use gitfleet_core::git::{changes, refs};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GitError {
    #[error("fetching {url}: {message}")]
    Fetch { url: String, message: String },
    #[error("fetching {url}: timed out after {after:?}")]
    Timeout { url: String, after: Duration },
    #[error("{url}: {reference} not found")]
    RefNotFound { url: String, reference: String },
    #[error("{0}")]
    Unsupported(String),
    /// The Repo names a credential the hub does not have.
    #[error("{0}")]
    Credentials(String),
    /// Files the hub reads itself (the fleet path) are missing or unreadable.
    #[error("{0}")]
    Content(String),
    #[error("git cache {path}: {message}")]
    Cache { path: PathBuf, message: String },
    /// A tree nested deeper than [`MAX_TREE_DEPTH`] directories.
    #[error("{path:?} is nested deeper than {limit} directories")]
    TooDeep { path: String, limit: usize },
}

/// Deepest directory nesting the hub reads; deeper trees are refused (and never walked
/// recursively, so no repository can exhaust a thread's stack).
pub const MAX_TREE_DEPTH: usize = 256;

/// What a Repo's ref resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// 40-hex commit id.
    pub commit: String,
    /// The full ref name followed (`refs/heads/main`), or the commit for a pinned commit.
    pub git_ref: String,
    /// For a Repo with `spec.verify`: whether the commit (or the tag object, for tag and semver
    /// refs) is signed by a trusted key. `None` when no keys were given.
    pub signature: Option<Result<Verified, VerifyError>>,
}

/// The shared bare caches.
#[derive(Debug)]
pub struct GitCache {
    root: PathBuf,
    permits: Arc<Semaphore>,
    max_concurrent_fetches: usize,
    timeout: Duration,
    /// One lock per cache directory: two Repos with the same URL never fetch into it at once.
    locks: std::sync::Mutex<HashMap<PathBuf, Arc<Mutex<()>>>>,
}

impl GitCache {
    pub fn new(root: PathBuf, max_concurrent_fetches: usize, timeout: Duration) -> Self {
        let max_concurrent_fetches = max_concurrent_fetches.max(1);
        Self {
            root,
            permits: Arc::new(Semaphore::new(max_concurrent_fetches)),
            max_concurrent_fetches,
            timeout,
            locks: Default::default(),
        }
    }

    /// Fetches whose blocking work is running, including ones whose caller already got a
    /// timeout and that have not stopped yet.
    pub fn fetches_running(&self) -> usize {
        self.max_concurrent_fetches - self.permits.available_permits()
    }

    /// The bare cache of `url`.
    pub fn cache_dir(&self, url: &str) -> PathBuf {
        let digest = Sha256::digest(url.as_bytes());
        self.root.join(hex::encode(&digest[..16]))
    }

    fn lock_for(&self, dir: &Path) -> Arc<Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.entry(dir.to_owned()).or_default().clone()
    }

    /// Fetches what `reference` needs from `url` (anonymously) and resolves it to a commit.
    pub async fn fetch(&self, url: &str, reference: &GitRef) -> Result<Resolved, GitError> {
        self.fetch_with(url, reference, None).await
    }

    /// Fetches with a credential (HTTPS user/password, or an SSH key whose server must be in
    /// the credential's known_hosts).
    pub async fn fetch_with(
        &self,
        url: &str,
        reference: &GitRef,
        credential: Option<RepoCredential>,
    ) -> Result<Resolved, GitError> {
        self.fetch_verified(url, reference, credential, None).await
    }

    /// Fetches as [`GitCache::fetch_with`] and, with `keys`, checks the signature of what the
    /// ref resolved to (the commit, or the tag object of a tag or semver ref) in the same
    /// blocking work, under the cache's lock: what is checked is what was resolved.
    pub async fn fetch_verified(
        &self,
        url: &str,
        reference: &GitRef,
        credential: Option<RepoCredential>,
        keys: Option<Arc<TrustedKeys>>,
    ) -> Result<Resolved, GitError> {
        let dir = self.cache_dir(url);
        let cache = self.lock_for(&dir).lock_owned().await;
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|_| GitError::Unsupported("git cache is shutting down".into()))?;
        let stop = Stop {
            deadline: Instant::now() + self.timeout,
            timeout: self.timeout,
            cancelled: Arc::new(AtomicBool::new(false)),
        };
        let (url_owned, reference, stop_fetch) = (url.to_owned(), reference.clone(), stop.clone());
        let task = tokio::task::spawn_blocking(move || {
            let result = fetch_blocking(
                &dir,
                &url_owned,
                &reference,
                credential.as_ref(),
                &stop_fetch,
            )
            .and_then(|(repo, mut resolved)| {
                if let Some(keys) = &keys {
                    resolved.signature = Some(verify_resolved(&repo, &dir, &resolved, keys)?);
                }
                Ok(resolved)
            });
            // Held until the work is over, not until the caller stops waiting for it.
            drop((permit, cache));
            result
        });
        match tokio::time::timeout(self.timeout, task).await {
            Ok(Ok(result)) => result,
            Ok(Err(join)) => Err(GitError::Fetch {
                url: url.to_owned(),
                message: format!("fetch task failed: {join}"),
            }),
            Err(_) => {
                stop.cancelled.store(true, Ordering::SeqCst);
                Err(GitError::Timeout {
                    url: url.to_owned(),
                    after: self.timeout,
                })
            }
        }
    }

    /// Files that differ between two commits in the cache of `url`, or `None` when either commit
    /// is not there (e.g. history was rewritten or the URL changed): then everything may have
    /// changed.
    pub async fn changed_files(
        &self,
        url: &str,
        old: &str,
        new: &str,
    ) -> Result<Option<Vec<String>>, GitError> {
        let (old, new) = (old.to_owned(), new.to_owned());
        in_cache(self.cache_dir(url), move |dir| {
            changed_files_blocking(dir, &old, &new)
        })
        .await
    }
}

/// Runs `read` on the cache directory `dir` off the async runtime.
async fn in_cache<T: Send + 'static>(
    dir: PathBuf,
    read: impl FnOnce(&Path) -> Result<T, GitError> + Send + 'static,
) -> Result<T, GitError> {
    let task_dir = dir.clone();
    tokio::task::spawn_blocking(move || read(&task_dir))
        .await
        .map_err(|join| GitError::Cache {
            path: dir,
            message: join.to_string(),
        })?
}

/// Limits on what [`GitCache::read_documents`] reads: the fleet path is configuration, not
/// a place for large files.
pub const MAX_DOCUMENT_FILES: usize = 2_000;
pub const MAX_DOCUMENT_BYTES: usize = 1 << 20;
pub const MAX_DOCUMENTS_TOTAL_BYTES: usize = 32 << 20;

impl GitCache {
    /// The `.yaml`, `.yml` and `.json` files under `path` (a directory or one file) at `commit`
    /// in the cache of `url`, as (path in the repository, text), in path order.
    pub async fn read_documents(
        &self,
        url: &str,
        commit: &str,
        path: &str,
    ) -> Result<Vec<(String, String)>, GitError> {
        let dir = self.cache_dir(url);
        let lock = self.lock_for(&dir);
        let _cache = lock.lock().await;
        let (commit, path) = (commit.to_owned(), path.to_owned());
        in_cache(dir, move |dir| read_documents_blocking(dir, &commit, &path)).await
    }
}

fn read_documents_blocking(
    dir: &Path,
    commit: &str,
    path: &str,
) -> Result<Vec<(String, String)>, GitError> {
    let content = |m: String| GitError::Content(m);
    let repo = git2::Repository::open_bare(dir).map_err(|e| GitError::Cache {
        path: dir.to_owned(),
        message: e.message().to_owned(),
    })?;
    let oid = git2::Oid::from_str(commit).map_err(|e| content(e.message().to_owned()))?;
    let tree = repo
        .find_commit(oid)
        .and_then(|c| c.tree())
        .map_err(|e| content(format!("commit {commit}: {}", e.message())))?;
    let path = path.trim_matches('/');
    let is_document = |name: &str| {
        [".yaml", ".yml", ".json"]
            .iter()
            .any(|ext| name.ends_with(ext))
    };
    let mut files: Vec<(String, git2::Oid)> = Vec::new();
    if path.is_empty() || path == "." {
        collect_blobs(&repo, &tree, "", &mut files)?;
    } else {
        let entry = tree
            .get_path(Path::new(path))
            .map_err(|_| content(format!("{path:?} does not exist at commit {commit}")))?;
        match entry.kind() {
            Some(git2::ObjectType::Tree) => {
                let sub = repo
                    .find_tree(entry.id())
                    .map_err(|e| content(e.message().to_owned()))?;
                collect_blobs(&repo, &sub, &format!("{path}/"), &mut files)?;
            }
            Some(git2::ObjectType::Blob) => files.push((path.to_owned(), entry.id())),
            _ => {
                return Err(content(format!(
                    "{path:?} is neither a file nor a directory"
                )));
            }
        }
    }
    files.retain(|(p, _)| is_document(p));
    files.sort();
    if files.len() > MAX_DOCUMENT_FILES {
        return Err(content(format!(
            "{path:?} has {} files, more than the {MAX_DOCUMENT_FILES} allowed",
            files.len()
        )));
    }
    let mut total = 0;
    let mut out = Vec::new();
    for (file, oid) in files {
        let blob = repo
            .find_blob(oid)
            .map_err(|e| content(format!("{file}: {}", e.message())))?;
        if blob.size() > MAX_DOCUMENT_BYTES {
            return Err(content(format!(
                "{file} is {} bytes, more than the {MAX_DOCUMENT_BYTES} allowed",
                blob.size()
            )));
        }
        total += blob.size();
        if total > MAX_DOCUMENTS_TOTAL_BYTES {
            return Err(content(format!(
                "{path:?} holds more than {MAX_DOCUMENTS_TOTAL_BYTES} bytes of documents"
            )));
        }
        let text = String::from_utf8(blob.content().to_vec())
            .map_err(|_| content(format!("{file} is not UTF-8 text")))?;
        out.push((file, text));
    }
    Ok(out)
}

/// Every blob under `tree`, with its path (symlinks and submodules are skipped: the hub reads
/// only what is in the repository itself). Walked with a stack of its own, never recursively:
/// a repository may nest trees as deep as it likes, and is refused past [`MAX_TREE_DEPTH`].
fn collect_blobs(
    repo: &git2::Repository,
    tree: &git2::Tree<'_>,
    prefix: &str,
    out: &mut Vec<(String, git2::Oid)>,
) -> Result<(), GitError> {
    let depth_of = |p: &str| p.split('/').filter(|s| !s.is_empty()).count();
    // (tree, index of its next entry, its path with a trailing '/', its depth)
    let mut stack = vec![(tree.clone(), 0usize, prefix.to_owned(), depth_of(prefix))];
    while let Some((tree, next, dir, depth)) = stack.last_mut() {
        let entry = tree.get(*next).map(|e| {
            let name = e.name().ok().map(str::to_owned);
            (name, e.kind(), e.id(), e.filemode())
        });
        let Some((name, kind, id, mode)) = entry else {
            stack.pop();
            continue;
        };
        *next += 1;
        let Some(name) = name else { continue };
        let (path, depth) = (format!("{dir}{name}"), *depth + 1);
        match kind {
            Some(git2::ObjectType::Blob) if mode != 0o120000 => out.push((path, id)),
            Some(git2::ObjectType::Tree) => {
                if depth > MAX_TREE_DEPTH {
                    return Err(GitError::TooDeep {
                        path,
                        limit: MAX_TREE_DEPTH,
                    });
                }
                let sub = repo
                    .find_tree(id)
                    .map_err(|e| GitError::Content(e.message().to_owned()))?;
                stack.push((sub, 0, format!("{path}/"), depth));
            }
            _ => {}
        }
    }
    Ok(())
}

/// When a blocking fetch must give up: its deadline, or its caller stopped waiting.
#[derive(Debug, Clone)]
struct Stop {
    deadline: Instant,
    timeout: Duration,
    cancelled: Arc<AtomicBool>,
}

impl Stop {
    fn now(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst) || Instant::now() >= self.deadline
    }
}

impl shared::Stop for Stop {
    fn go_on(&self) -> bool {
        !self.now()
    }
}

/// The signature check of what a fetch resolved, in the repository it was fetched into.
fn verify_resolved(
    repo: &git2::Repository,
    dir: &Path,
    resolved: &Resolved,
    keys: &TrustedKeys,
) -> Result<Result<Verified, VerifyError>, GitError> {
    let commit = git2::Oid::from_str(&resolved.commit).map_err(|e| GitError::Cache {
        path: dir.to_owned(),
        message: e.message().to_owned(),
    })?;
    shared::signed::verify_resolved(repo, &resolved.git_ref, commit, keys).map_err(|e| {
        GitError::Cache {
            path: dir.to_owned(),
            message: format!(
                "reading the signature of {}: {}",
                resolved.commit,
                e.message()
            ),
        }
    })
}

fn fetch_blocking(
    dir: &Path,
    url: &str,
    reference: &GitRef,
    credential: Option<&RepoCredential>,
    stop: &Stop,
) -> Result<(git2::Repository, Resolved), GitError> {
    let cache_err = |e: git2::Error| GitError::Cache {
        path: dir.to_owned(),
        message: e.message().to_owned(),
    };
    let repo = if dir.join("HEAD").exists() {
        git2::Repository::open_bare(dir).map_err(cache_err)?
    } else {
        git2::Repository::init_bare(dir).map_err(cache_err)?
    };
    let (refspecs, local_ref, label) = match reference {
        GitRef::Branch(b) => (
            vec![format!("+refs/heads/{b}:refs/heads/{b}")],
            format!("refs/heads/{b}"),
            format!("branch {b:?}"),
        ),
        GitRef::Tag(t) => (
            vec![format!("+refs/tags/{t}:refs/tags/{t}")],
            format!("refs/tags/{t}"),
            format!("tag {t:?}"),
        ),
        GitRef::Commit(c) => {
            let oid = git2::Oid::from_str(c).map_err(|_| {
                GitError::Unsupported(format!("commit {c:?} is not a full commit id"))
            })?;
            if repo.find_commit(oid).is_err() {
                // Servers rarely allow fetching an arbitrary commit; its branches and tags will do.
                fetch_refspecs(
                    &repo,
                    url,
                    &[
                        "+refs/heads/*:refs/heads/*".to_owned(),
                        "+refs/tags/*:refs/tags/*".to_owned(),
                    ],
                    false,
                    credential,
                    stop,
                )?;
            }
            let found = repo.find_commit(oid).map(|commit| commit.id());
            return match found {
                Ok(id) => Ok((
                    repo,
                    Resolved {
                        commit: id.to_string(),
                        git_ref: c.clone(),
                        signature: None,
                    },
                )),
                Err(_) => Err(GitError::RefNotFound {
                    url: url.to_owned(),
                    reference: format!("commit {c}"),
                }),
            };
        }
        GitRef::Semver(range) => {
            let tags = remote_tags(&repo, url, credential, stop)?;
            let tag = refs::highest_matching_tag(tags.iter().map(String::as_str), range)
                .map_err(GitError::Unsupported)?
                .ok_or_else(|| GitError::RefNotFound {
                    url: url.to_owned(),
                    reference: format!("a tag matching semver {range:?}"),
                })?
                .to_owned();
            (
                vec![format!("+refs/tags/{tag}:refs/tags/{tag}")],
                format!("refs/tags/{tag}"),
                format!("tag {tag:?}"),
            )
        }
    };
    fetch_refspecs(&repo, url, &refspecs, true, credential, stop).map_err(|e| match e {
        GitError::Fetch { message, .. } if message.contains("couldn't find remote ref") => {
            GitError::RefNotFound {
                url: url.to_owned(),
                reference: label.clone(),
            }
        }
        other => other,
    })?;
    let commit = repo
        .revparse_single(&local_ref)
        .and_then(|o| o.peel_to_commit())
        .map(|c| c.id())
        .map_err(|_| GitError::RefNotFound {
            url: url.to_owned(),
            reference: label,
        })?;
    Ok((
        repo,
        Resolved {
            commit: commit.to_string(),
            git_ref: local_ref,
            signature: None,
        },
    ))
}

/// Tag names the remote advertises (without `refs/tags/`, peeled entries skipped).
fn remote_tags(
    repo: &git2::Repository,
    url: &str,
    credential: Option<&RepoCredential>,
    stop: &Stop,
) -> Result<Vec<String>, GitError> {
    let fetch_err = |e: git2::Error| fetch_error(url, stop, e);
    let mut remote = repo.remote_anonymous(url).map_err(fetch_err)?;
    let connection = remote
        .connect_auth(
            git2::Direction::Fetch,
            Some(callbacks(credential, stop)),
            None,
        )
        .map_err(fetch_err)?;
    let tags = connection
        .list()
        .map_err(fetch_err)?
        .iter()
        .filter_map(|head| head.name().strip_prefix("refs/tags/"))
        .filter(|name| !name.ends_with("^{}"))
        .map(str::to_owned)
        .collect();
    Ok(tags)
}

/// The error of a failed fetch: a timeout if it was stopped, else what libgit2 said.
fn fetch_error(url: &str, stop: &Stop, e: git2::Error) -> GitError {
    if stop.now() {
        GitError::Timeout {
            url: url.to_owned(),
            after: stop.timeout,
        }
    } else {
        GitError::Fetch {
            url: url.to_owned(),
            message: e.message().to_owned(),
        }
    }
}

/// The libgit2 callbacks and options of a fetch, written once with the spoke's: `credential`
/// goes only to a server its urls name, once, and never over plain http or git://; for SSH only
/// a host key its known_hosts lists is trusted.
fn callbacks<'a>(credential: Option<&'a RepoCredential>, stop: &Stop) -> git2::RemoteCallbacks<'a> {
    shared::callbacks(credential.map(Into::into), Arc::new(stop.clone()))
}

/// Whether to ask for only the tip: libgit2 cannot shallow-fetch from a local path or file://,
/// and a pinned commit may lie anywhere in history.
fn shallow_capable(url: &str) -> bool {
    !(url.starts_with("file://") || url.starts_with('/') || url.starts_with('.'))
}

fn fetch_refspecs(
    repo: &git2::Repository,
    url: &str,
    refspecs: &[String],
    // Only the tip, where the transport allows.
    shallow: bool,
    credential: Option<&RepoCredential>,
    stop: &Stop,
) -> Result<(), GitError> {
    let mut remote = repo
        .remote_anonymous(url)
        .map_err(|e| fetch_error(url, stop, e))?;
    let mut options = shared::fetch_options(credential.map(Into::into), Arc::new(stop.clone()));
    // Decided on the URL libgit2 really fetches from (configuration may rewrite it).
    if shallow && shallow_capable(remote.url().unwrap_or(url)) {
        // Only the tip is needed to render; older commits already fetched stay in the cache, so
        // change detection between the previous tip and the new one still works.
        options.depth(1);
    }
    remote
        .fetch(refspecs, Some(&mut options), None)
        .map_err(|e| fetch_error(url, stop, e))
}

fn changed_files_blocking(
    dir: &Path,
    old: &str,
    new: &str,
) -> Result<Option<Vec<String>>, GitError> {
    let cache_err = |e: git2::Error| GitError::Cache {
        path: dir.to_owned(),
        message: e.message().to_owned(),
    };
    let repo = git2::Repository::open_bare(dir).map_err(cache_err)?;
    let tree = |id: &str| {
        git2::Oid::from_str(id)
            .ok()
            .and_then(|oid| repo.find_commit(oid).ok())
            .and_then(|c| c.tree().ok())
    };
    let (Some(old_tree), Some(new_tree)) = (tree(old), tree(new)) else {
        return Ok(None);
    };
    let diff = repo
        .diff_tree_to_tree(Some(&old_tree), Some(&new_tree), None)
        .map_err(cache_err)?;
    let mut files = Vec::new();
    for delta in diff.deltas() {
        for file in [delta.old_file(), delta.new_file()] {
            if let Some(p) = file.path().and_then(Path::to_str)
                && !files.iter().any(|f| f == p)
            {
                files.push(p.to_owned());
            }
        }
    }
    Ok(Some(files))
}

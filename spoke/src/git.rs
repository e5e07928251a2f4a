//! Git adapter: fetches exactly the commit a Target names into a bare cache in the data
//! directory and reads the App path's files straight from the commit's tree.
//!
//! There is no working tree: files are read as blobs from the tree, so a symbolic link can never
//! lead outside the repository (symlinks are refused outright), and nothing outside the App path
//! is ever read. Sizes are checked from object headers before a blob is loaded. Trees are walked
//! with a stack of our own, to a bounded depth, never recursively.
//!
//! A fetch is bounded in time and in bytes ([`FetchLimits`]). libgit2 is stopped from its
//! callbacks (the transfer progress, the sideband and the credential request): once its deadline
//! has passed, its caller has stopped waiting or it has received too much, the next callback
//! aborts it. The caller gets its answer at the deadline whatever libgit2 is doing; the fetch
//! keeps the lock of its cache until it has really stopped, and a later fetch of the same
//! repository waits for that lock no longer than a fetch may take. (libgit2 makes no callback
//! while it waits in a socket read, nor within one pack object: a fetch from a server that
//! accepts and then says nothing holds that lock until the server answers or hangs up, and the
//! byte budget is checked object by object.)

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use git2::{FetchOptions, ObjectType, Oid, Repository};
use gitfleet_support::git as shared;
use sha2::{Digest, Sha256};

use crate::model::{RepoCredential, Source};
use crate::sync::render::{FileError, SourceFile, is_manifest_file};

/// Git file mode of a symbolic link.
const MODE_SYMLINK: i32 = 0o120000;

/// Deepest directory nesting read from a repository; deeper trees are an error.
pub const MAX_TREE_DEPTH: usize = 256;

/// Bounds on one fetch from a Git server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchLimits {
    /// Longest a fetch (and the read of the App's files that follows it) may take.
    pub timeout: Duration,
    /// Most bytes a fetch may receive, over all its attempts.
    pub max_bytes: usize,
}

impl Default for FetchLimits {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(120),
            max_bytes: 1 << 30,
        }
    }
}

/// Bounds on what one Target may read from a repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadLimits {
    /// Largest single manifest file; bigger ones become a per-file error without being read.
    pub max_file_bytes: usize,
    /// Most bytes of manifest files under one App path.
    pub max_total_bytes: usize,
    /// Most manifest files under one App path.
    pub max_files: usize,
}

impl Default for ReadLimits {
    fn default() -> Self {
        Self {
            max_file_bytes: 8 * 1024 * 1024,
            max_total_bytes: 32 * 1024 * 1024,
            max_files: 5_000,
        }
    }
}

/// The manifest files of an App path, and the entries that were refused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppFiles {
    pub files: Vec<SourceFile>,
    pub errors: Vec<FileError>,
}

#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("commit {0:?} is not a full 40-hex commit id")]
    InvalidCommit(String),
    #[error("path {path:?} is not allowed: {reason}")]
    InvalidPath { path: String, reason: &'static str },
    /// The fetch failed on the way: the network, the server, the transport. Often transient.
    #[error("fetch {url}: {message}")]
    Fetch { url: String, message: String },
    /// The repository refused the credential, or asked for one and none is configured.
    #[error("fetch {url}: authentication failed: {message}")]
    Auth { url: String, message: String },
    /// The server's TLS certificate or SSH host key is not trusted.
    #[error("fetch {url}: the server is not trusted: {message}")]
    Untrusted { url: String, message: String },
    #[error("commit {commit} is not in {url} (fetched its branches and tags)")]
    CommitNotFound { url: String, commit: String },
    #[error("path {path:?} does not exist in commit {commit}")]
    PathNotFound { path: String, commit: String },
    #[error("path {path:?} in commit {commit} is a {found}, not a directory or file")]
    NotADirectory {
        path: String,
        commit: String,
        found: String,
    },
    #[error("the App path holds more than {limit} manifest files")]
    TooManyFiles { limit: usize },
    #[error("the App path holds more than {limit} bytes of manifests")]
    TooManyBytes { limit: usize },
    #[error("git cache {path}: {message}")]
    Cache { path: PathBuf, message: String },
    #[error("git: {0}")]
    Git(#[from] git2::Error),
    #[error("git task failed: {0}")]
    Task(String),
    /// The fetch did not finish within `--git-fetch-timeout`.
    #[error("fetch {url}: timed out after {after:?} (--git-fetch-timeout)")]
    Timeout { url: String, after: Duration },
    /// An earlier fetch of the same repository timed out and has not stopped yet.
    #[error("fetch {url}: waited {after:?} for an earlier fetch of this repository to stop")]
    Busy { url: String, after: Duration },
    /// The server sent more than `--git-fetch-max-bytes`.
    #[error("fetch {url}: the server sent more than {limit} bytes (--git-fetch-max-bytes)")]
    TooLarge { url: String, limit: usize },
    #[error("{path:?} is nested deeper than {limit} directories")]
    TooDeep { path: String, limit: usize },
    /// Signed commits only: what was fetched is not signed by one of the Repo's trusted keys.
    /// Nothing of it is read, rendered or applied.
    #[error("commit {commit} ({git_ref}) refused: {reason}")]
    Unverified {
        commit: String,
        git_ref: String,
        reason: String,
    },
}

impl GitError {
    /// Whether trying again in a few seconds may succeed: the network or the Git server failed
    /// (refused, reset or dropped connections, timeouts, a server over its connection limit,
    /// HTTP 5xx), or the commit is not there yet (a mirror behind a load balancer may lag the
    /// one the hub polled). What the spec or the repository says, a refused credential and an
    /// untrusted server fail the same way every time: retrying them only delays the report.
    pub fn is_transient(&self) -> bool {
        match self {
            GitError::Fetch { .. }
            | GitError::CommitNotFound { .. }
            | GitError::Timeout { .. }
            | GitError::Busy { .. } => true,
            GitError::Git(error) => {
                use git2::{ErrorClass, ErrorCode};
                matches!(
                    error.class(),
                    ErrorClass::Net
                        | ErrorClass::Http
                        | ErrorClass::Ssh
                        | ErrorClass::Ssl
                        | ErrorClass::Os
                ) && !matches!(error.code(), ErrorCode::Auth | ErrorCode::Certificate)
            }
            GitError::InvalidCommit(_)
            | GitError::InvalidPath { .. }
            | GitError::Auth { .. }
            | GitError::Untrusted { .. }
            | GitError::PathNotFound { .. }
            | GitError::NotADirectory { .. }
            | GitError::TooManyFiles { .. }
            | GitError::TooManyBytes { .. }
            // What the server sent and the repository holds: the same next time.
            | GitError::TooLarge { .. }
            | GitError::TooDeep { .. }
            // The same object has the same signature the next time.
            | GitError::Unverified { .. }
            // A cache directory that cannot be opened or created (permissions, a full or
            // read-only disk, a corrupt repository) does not mend itself within seconds.
            | GitError::Cache { .. }
            | GitError::Task(_) => false,
        }
    }
}

/// Bare repositories, one per URL, under a directory of the spoke's data dir.
#[derive(Debug)]
pub struct GitCache {
    root: PathBuf,
    // One fetch at a time per repository: libgit2 does not lock a repository against itself.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    fetch_limits: FetchLimits,
}

impl GitCache {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            locks: Mutex::new(HashMap::new()),
            fetch_limits: FetchLimits::default(),
        }
    }

    /// The same cache, with these bounds on every fetch.
    pub fn with_fetch_limits(mut self, limits: FetchLimits) -> Self {
        self.fetch_limits = limits;
        self
    }

    /// Runs `work` on the cache of `source`'s repository once it holds `oid`, off the async
    /// runtime, within the fetch deadline.
    async fn with_commit<T: Send + 'static>(
        &self,
        source: &Source,
        oid: Oid,
        credential: Option<&RepoCredential>,
        work: impl FnOnce(&Repository) -> Result<T, GitError> + Send + 'static,
    ) -> Result<T, GitError> {
        let limits = self.fetch_limits;
        let url = source.repo_url.clone();
        let lock = {
            let mut locks = self
                .locks
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            locks.entry(url.clone()).or_default().clone()
        };
        // An earlier fetch that timed out may still be inside libgit2, waiting for a server
        // that says nothing: wait for it, but no longer than a fetch may take.
        let guard = tokio::time::timeout(limits.timeout, lock.lock_owned())
            .await
            .map_err(|_| GitError::Busy {
                url: url.clone(),
                after: limits.timeout,
            })?;
        let stop = Arc::new(Stop::new(limits));
        let dir = self.repo_dir(&url);
        let (task_url, task_stop) = (url.clone(), Arc::clone(&stop));
        let git_ref = source.git_ref.clone();
        let trusted_keys = source.trusted_keys.clone();
        let credential = credential.cloned();
        let task = tokio::task::spawn_blocking(move || {
            // Held until the work is over, not until the caller stops waiting for it.
            let _guard = guard;
            let repo = open_or_init(&dir)?;
            ensure_commit(
                &repo,
                &task_url,
                oid,
                &git_ref,
                credential.as_ref(),
                &task_stop,
            )?;
            if !trusted_keys.is_empty() {
                verify_signature(
                    &repo,
                    &task_url,
                    oid,
                    &git_ref,
                    &trusted_keys,
                    credential.as_ref(),
                    &task_stop,
                )?;
            }
            work(&repo)
        });
        match tokio::time::timeout(limits.timeout, task).await {
            Ok(joined) => joined.map_err(|e| GitError::Task(e.to_string()))?,
            Err(_) => {
                stop.cancelled.store(true, Ordering::SeqCst);
                Err(GitError::Timeout {
                    url,
                    after: limits.timeout,
                })
            }
        }
    }

    /// Where the cache of `url` lives.
    pub fn repo_dir(&self, url: &str) -> PathBuf {
        let digest = hex::encode(Sha256::digest(url.as_bytes()));
        self.root.join(format!("{}.git", &digest[..24]))
    }

    /// Fetches `source.commit` (if the cache lacks it) and reads the App path's manifest files.
    pub async fn read_app(
        &self,
        source: &Source,
        credential: Option<&RepoCredential>,
        limits: ReadLimits,
    ) -> Result<AppFiles, GitError> {
        let oid = parse_commit(&source.commit)?;
        let path = normalize_path(&source.path)?;
        self.with_commit(source, oid, credential, move |repo| {
            read_tree(repo, oid, &path, limits)
        })
        .await
    }
}

impl GitCache {
    /// Fetches `source.commit` and writes every regular file under `dirs` (repository paths)
    /// into `dest`, for renderers that need a directory (kustomize). Symlinks are refused and
    /// left out; sizes are bounded like [`GitCache::read_app`].
    pub async fn materialize(
        &self,
        source: &Source,
        credential: Option<&RepoCredential>,
        dirs: &[String],
        dest: &Path,
        limits: ReadLimits,
    ) -> Result<Vec<FileError>, GitError> {
        let oid = parse_commit(&source.commit)?;
        let dirs: Vec<String> = dirs
            .iter()
            .map(|d| normalize_path(d))
            .collect::<Result<_, _>>()?;
        let dest = dest.to_owned();
        self.with_commit(source, oid, credential, move |repo| {
            write_dirs(repo, oid, &dirs, &dest, limits)
        })
        .await
    }
}

fn write_dirs(
    repo: &Repository,
    oid: Oid,
    dirs: &[String],
    dest: &Path,
    limits: ReadLimits,
) -> Result<Vec<FileError>, GitError> {
    let root = repo.find_commit(oid)?.tree()?;
    let odb = repo.odb()?;
    let mut errors = Vec::new();
    let mut total = 0usize;
    let mut count = 0usize;
    for dir in dirs {
        let tree = if dir.is_empty() {
            root.clone()
        } else {
            let entry = root
                .get_path(Path::new(dir))
                .map_err(|_| GitError::PathNotFound {
                    path: dir.clone(),
                    commit: oid.to_string(),
                })?;
            if entry.kind() != Some(ObjectType::Tree) {
                return Err(GitError::NotADirectory {
                    path: dir.clone(),
                    commit: oid.to_string(),
                    found: entry
                        .kind()
                        .map_or("unknown object", |k| k.str())
                        .to_owned(),
                });
            }
            repo.find_tree(entry.id())?
        };
        walk_tree(repo, &tree, dir, |parent, entry| {
            let Ok(name) = entry.name() else {
                return Ok(false);
            };
            if matches!(name, "." | ".." | ".git") || name.contains(['/', '\\', '\0']) {
                return Ok(false);
            }
            if entry.kind() != Some(ObjectType::Blob) {
                return Ok(true);
            }
            let file = [dir.as_str(), parent.trim_end_matches('/'), name]
                .iter()
                .filter(|p| !p.is_empty())
                .copied()
                .collect::<Vec<_>>()
                .join("/");
            if entry.filemode() == MODE_SYMLINK {
                errors.push(FileError {
                    file,
                    line: None,
                    message: "symbolic links are refused: gitfleet reads only regular files from the repository".into(),
                });
                return Ok(false);
            }
            let (size, _) = odb.read_header(entry.id())?;
            if size > limits.max_file_bytes {
                errors.push(FileError {
                    file,
                    line: None,
                    message: format!(
                        "the file is {size} bytes, larger than the limit of {}",
                        limits.max_file_bytes
                    ),
                });
                return Ok(false);
            }
            total += size;
            count += 1;
            if total > limits.max_total_bytes {
                return Err(GitError::TooManyBytes {
                    limit: limits.max_total_bytes,
                });
            }
            if count > limits.max_files {
                return Err(GitError::TooManyFiles {
                    limit: limits.max_files,
                });
            }
            let blob = repo.find_blob(entry.id())?;
            let path = dest.join(&file);
            let io = |e: std::io::Error| GitError::Cache {
                path: path.clone(),
                message: e.to_string(),
            };
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(io)?;
            }
            std::fs::write(&path, blob.content()).map_err(io)?;
            Ok(false)
        })?;
    }
    Ok(errors)
}

/// Parses a full commit id; abbreviations are refused because they are not verifiable.
pub fn parse_commit(commit: &str) -> Result<Oid, GitError> {
    let valid = commit.len() == 40 && commit.bytes().all(|b| b.is_ascii_hexdigit());
    if !valid {
        return Err(GitError::InvalidCommit(commit.to_owned()));
    }
    Oid::from_str(commit).map_err(|_| GitError::InvalidCommit(commit.to_owned()))
}

/// Checks an App path and returns it without `./` or trailing slashes ("" is the root).
pub fn normalize_path(path: &str) -> Result<String, GitError> {
    let invalid = |reason| GitError::InvalidPath {
        path: path.to_owned(),
        reason,
    };
    if path.starts_with('/') {
        return Err(invalid("it must be relative to the repository root"));
    }
    if path.contains('\\') || path.contains('\0') {
        return Err(invalid(
            "it must use '/' separators and no control characters",
        ));
    }
    let mut parts = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => continue,
            ".." => return Err(invalid("it must not contain '..'")),
            ".git" => return Err(invalid("it must not point into .git")),
            part => parts.push(part),
        }
    }
    if parts.len() > MAX_TREE_DEPTH {
        return Err(invalid("it is nested deeper than a repository is read"));
    }
    Ok(parts.join("/"))
}

fn open_or_init(dir: &Path) -> Result<Repository, GitError> {
    if dir.exists() {
        return Repository::open_bare(dir).map_err(|e| GitError::Cache {
            path: dir.to_owned(),
            message: e.message().to_owned(),
        });
    }
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent).map_err(|e| GitError::Cache {
            path: parent.to_owned(),
            message: e.to_string(),
        })?;
    }
    Repository::init_bare(dir).map_err(|e| GitError::Cache {
        path: dir.to_owned(),
        message: e.message().to_owned(),
    })
}

fn has_commit(repo: &Repository, oid: Oid) -> bool {
    repo.find_commit(oid).is_ok_and(|c| c.id() == oid)
}

/// Makes sure the cache holds `oid`: first by asking for exactly that commit (shallow where the
/// transport allows), then by fetching branches, tags and the followed ref.
fn ensure_commit(
    repo: &Repository,
    url: &str,
    oid: Oid,
    git_ref: &str,
    credential: Option<&RepoCredential>,
    stop: &Arc<Stop>,
) -> Result<(), GitError> {
    if has_commit(repo, oid) {
        return Ok(());
    }
    let fetch_error = |e: git2::Error| {
        stop.error(url)
            .unwrap_or_else(|| classify_fetch_error(url, credential.is_some(), &e))
    };
    let mut remote = repo.remote_anonymous(url).map_err(fetch_error)?;
    // libgit2 cannot shallow-fetch over its local transport; asked of the URL it really fetches
    // from (configuration may rewrite it).
    let fetched_from = remote.url().unwrap_or(url);
    let local = fetched_from.starts_with("file://") || !fetched_from.contains("://");

    let by_id = format!("+{oid}:refs/gitfleet/{oid}");
    let mut options = fetch_options(credential, stop);
    if !local {
        options.depth(1);
    }
    let direct = remote.fetch(&[by_id.as_str()], Some(&mut options), None);
    stop.attempt_done();
    // Out of time or over the byte budget: the second way would only spend more.
    if let Some(e) = stop.error(url) {
        return Err(e);
    }
    if direct.is_ok() && has_commit(repo, oid) {
        return Ok(());
    }

    let mut refspecs = vec![
        "+refs/heads/*:refs/remotes/origin/*".to_owned(),
        "+refs/tags/*:refs/tags/*".to_owned(),
    ];
    if git_ref.starts_with("refs/")
        && !git_ref.starts_with("refs/heads/")
        && !git_ref.starts_with("refs/tags/")
    {
        refspecs.push(format!("+{git_ref}:refs/gitfleet/followed"));
    }
    let mut options = fetch_options(credential, stop);
    remote
        .fetch(&refspecs, Some(&mut options), None)
        .map_err(fetch_error)?;
    if has_commit(repo, oid) {
        Ok(())
    } else {
        Err(GitError::CommitNotFound {
            url: url.to_owned(),
            commit: oid.to_string(),
        })
    }
}

/// Signed commits only: checks that `oid` (or, when the hub followed a tag, that tag's object,
/// fetched from the server now) is signed by one of `trusted_keys`, after the fetch and before
/// anything is read from it. The hub checked the same before dispatching; checking again here
/// means a spoke applies nothing a trusted key did not sign, whatever the hub or the server
/// that serves it.
fn verify_signature(
    repo: &Repository,
    url: &str,
    oid: Oid,
    git_ref: &str,
    trusted_keys: &[String],
    credential: Option<&RepoCredential>,
    stop: &Arc<Stop>,
) -> Result<(), GitError> {
    use gitfleet_core::git::signature::TrustedKeys;
    let refused = |reason: String| GitError::Unverified {
        commit: oid.to_string(),
        git_ref: git_ref.to_owned(),
        reason,
    };
    let keys = TrustedKeys::parse(trusted_keys)
        .map_err(|(i, e)| refused(format!("trusted key {i} is not usable: {e}")))?;
    let tag_at_commit = || {
        repo.find_reference(git_ref)
            .and_then(|r| r.peel_to_commit())
            .is_ok_and(|c| c.id() == oid)
    };
    if git_ref.starts_with("refs/tags/") && !tag_at_commit() {
        // The tag object is what is signed; the fetch by commit id did not bring it (a tag
        // fetched before that still leads to this commit is checked again as it is).
        let fetch_error = |e: git2::Error| {
            stop.error(url)
                .unwrap_or_else(|| classify_fetch_error(url, credential.is_some(), &e))
        };
        let mut remote = repo.remote_anonymous(url).map_err(fetch_error)?;
        let mut options = fetch_options(credential, stop);
        remote
            .fetch(&[format!("+{git_ref}:{git_ref}")], Some(&mut options), None)
            .map_err(fetch_error)?;
    }
    let outcome = shared::signed::verify_resolved(repo, git_ref, oid, &keys)
        .map_err(|e| refused(e.message().to_owned()))?;
    outcome.map(|_| ()).map_err(|e| refused(e.to_string()))
}

/// Why a fetch must stop now: its deadline, its caller gave up, or the bytes it received.
#[derive(Debug)]
struct Stop {
    limits: FetchLimits,
    deadline: Instant,
    cancelled: AtomicBool,
    /// Bytes received by the attempts before the current one.
    spent: AtomicUsize,
    /// Bytes received by the current attempt so far.
    current: AtomicUsize,
    /// [`Stop::TIME`] or [`Stop::BYTES`] once the fetch was told to stop.
    tripped: AtomicU8,
}

impl shared::Stop for Stop {
    fn go_on(&self) -> bool {
        Stop::go_on(self)
    }

    fn received(&self, bytes: usize) -> bool {
        Stop::received(self, bytes)
    }
}

impl Stop {
    const TIME: u8 = 1;
    const BYTES: u8 = 2;

    fn new(limits: FetchLimits) -> Self {
        Self {
            limits,
            deadline: Instant::now() + limits.timeout,
            cancelled: AtomicBool::new(false),
            spent: AtomicUsize::new(0),
            current: AtomicUsize::new(0),
            tripped: AtomicU8::new(0),
        }
    }

    /// Whether the fetch may go on; false (and remembered why) once it must stop.
    fn go_on(&self) -> bool {
        if self.tripped.load(Ordering::SeqCst) != 0 {
            return false;
        }
        if self.cancelled.load(Ordering::SeqCst) || Instant::now() >= self.deadline {
            self.tripped.store(Self::TIME, Ordering::SeqCst);
            return false;
        }
        true
    }

    /// [`Stop::go_on`], with the bytes the current attempt has received.
    fn received(&self, bytes: usize) -> bool {
        self.current.store(bytes, Ordering::SeqCst);
        if self.spent.load(Ordering::SeqCst).saturating_add(bytes) > self.limits.max_bytes {
            self.tripped.store(Self::BYTES, Ordering::SeqCst);
            return false;
        }
        self.go_on()
    }

    fn attempt_done(&self) {
        let bytes = self.current.swap(0, Ordering::SeqCst);
        self.spent.fetch_add(bytes, Ordering::SeqCst);
    }

    /// The error of a fetch that was told to stop, if it was.
    fn error(&self, url: &str) -> Option<GitError> {
        match self.tripped.load(Ordering::SeqCst) {
            Self::TIME => Some(GitError::Timeout {
                url: url.to_owned(),
                after: self.limits.timeout,
            }),
            Self::BYTES => Some(GitError::TooLarge {
                url: url.to_owned(),
                limit: self.limits.max_bytes,
            }),
            _ => None,
        }
    }
}

/// Sorts a failed fetch by what retrying it could do. libgit2 marks refused credentials
/// (`GIT_EAUTH`) and untrusted servers (`GIT_ECERTIFICATE`) with their own codes, from its
/// transports and from the callbacks of [`fetch_options`] alike; everything else happened on
/// the way.
fn classify_fetch_error(url: &str, credential_given: bool, error: &git2::Error) -> GitError {
    let url = url.to_owned();
    let message = error.message().to_owned();
    match error.code() {
        git2::ErrorCode::Auth if !credential_given => GitError::Auth {
            url,
            message: format!(
                "the repository asks for a credential and none is configured for it ({message})"
            ),
        },
        git2::ErrorCode::Auth => GitError::Auth { url, message },
        git2::ErrorCode::Certificate => GitError::Untrusted { url, message },
        _ => GitError::Fetch { url, message },
    }
}

/// The libgit2 options of a fetch, written once with the hub's: the credential goes only to a
/// server its urls name, once, and never over plain http or git://; for SSH only a host key
/// its known_hosts lists is trusted; `stop` ends the transfer.
fn fetch_options<'a>(credential: Option<&'a RepoCredential>, stop: &Arc<Stop>) -> FetchOptions<'a> {
    let credential = credential.map(|c| shared::Credential {
        kind: &c.kind,
        urls: c.scope(),
    });
    shared::fetch_options(credential, Arc::clone(stop))
}

/// Reads the manifest files under `path` in the tree of `oid`.
fn read_tree(
    repo: &Repository,
    oid: Oid,
    path: &str,
    limits: ReadLimits,
) -> Result<AppFiles, GitError> {
    let commit = repo.find_commit(oid)?;
    let root = commit.tree()?;
    let mut out = AppFiles::default();
    let mut total = 0usize;
    let odb = repo.odb()?;
    let mut read_blob = |out: &mut AppFiles,
                         file: String,
                         id: Oid,
                         mode: i32|
     -> Result<(), GitError> {
        if mode == MODE_SYMLINK {
            out.errors.push(FileError {
                file,
                line: None,
                message: "symbolic links are refused: gitfleet reads only regular files from the repository".into(),
            });
            return Ok(());
        }
        if !is_manifest_file(&file) {
            return Ok(());
        }
        let (size, _) = odb.read_header(id)?;
        if size > limits.max_file_bytes {
            out.errors.push(FileError {
                file,
                line: None,
                message: format!(
                    "the file is {size} bytes, larger than the limit of {}",
                    limits.max_file_bytes
                ),
            });
            return Ok(());
        }
        total += size;
        if total > limits.max_total_bytes {
            return Err(GitError::TooManyBytes {
                limit: limits.max_total_bytes,
            });
        }
        if out.files.len() >= limits.max_files {
            return Err(GitError::TooManyFiles {
                limit: limits.max_files,
            });
        }
        let blob = repo.find_blob(id)?;
        out.files.push(SourceFile::new(file, blob.content()));
        Ok(())
    };

    let mut walk_files = |tree: &git2::Tree<'_>, prefix: &str, out: &mut AppFiles| {
        walk_tree(repo, tree, prefix, |dir, entry| {
            let Ok(name) = entry.name() else {
                return Ok(false);
            };
            if entry.kind() != Some(ObjectType::Blob) {
                // Trees are descended into; submodules (commits) are not part of this repository.
                return Ok(true);
            }
            let file = match (prefix.is_empty(), dir.is_empty()) {
                (true, _) => format!("{dir}{name}"),
                (false, true) => format!("{prefix}/{name}"),
                (false, false) => format!("{prefix}/{dir}{name}"),
            };
            read_blob(out, file, entry.id(), entry.filemode())?;
            Ok(false)
        })
    };
    if path.is_empty() {
        walk_files(&root, "", &mut out)?;
        return Ok(out);
    }
    let entry = root
        .get_path(Path::new(path))
        .map_err(|_| GitError::PathNotFound {
            path: path.to_owned(),
            commit: oid.to_string(),
        })?;
    match entry.kind() {
        Some(ObjectType::Tree) => {
            let tree = repo.find_tree(entry.id())?;
            walk_files(&tree, path, &mut out)?;
        }
        Some(ObjectType::Blob) => {
            read_blob(&mut out, path.to_owned(), entry.id(), entry.filemode())?
        }
        other => {
            return Err(GitError::NotADirectory {
                path: path.to_owned(),
                commit: oid.to_string(),
                found: other.map_or("unknown object", |k| k.str()).to_owned(),
            });
        }
    }
    Ok(out)
}

/// Calls `visit(dir, entry)` for every entry under `tree` (which lies at `base` in the
/// repository), in the order of a pre-order walk; `dir` is the path of the entry's tree below
/// `tree` ("" or "sub/"). A tree is entered when `visit` returns true for it. The walk keeps a
/// stack of its own rather than recursing (libgit2's `git_tree_walk` recurses in C, one frame
/// per level, as deep as a repository cares to nest) and refuses trees deeper than
/// [`MAX_TREE_DEPTH`] in the repository.
fn walk_tree(
    repo: &Repository,
    tree: &git2::Tree<'_>,
    base: &str,
    mut visit: impl FnMut(&str, &git2::TreeEntry<'_>) -> Result<bool, GitError>,
) -> Result<(), GitError> {
    let base_depth = base.split('/').filter(|s| !s.is_empty()).count();
    // (a tree, the index of its next entry, its path below `tree` with a trailing '/')
    let mut stack: Vec<(git2::Tree<'_>, usize, String)> = vec![(tree.clone(), 0, String::new())];
    while let Some((tree, next, dir)) = stack.last_mut() {
        let Some(entry) = tree.get(*next).map(|e| e.to_owned()) else {
            stack.pop();
            continue;
        };
        *next += 1;
        if !visit(dir, &entry)? || entry.kind() != Some(ObjectType::Tree) {
            continue;
        }
        let Ok(name) = entry.name() else { continue };
        let sub_dir = format!("{dir}{name}/");
        if base_depth + stack.len() > MAX_TREE_DEPTH {
            let path = [base.trim_end_matches('/'), sub_dir.trim_end_matches('/')]
                .iter()
                .filter(|p| !p.is_empty())
                .copied()
                .collect::<Vec<_>>()
                .join("/");
            return Err(GitError::TooDeep {
                path,
                limit: MAX_TREE_DEPTH,
            });
        }
        let sub = repo.find_tree(entry.id())?;
        stack.push((sub, 0, sub_dir));
    }
    Ok(())
}

#[cfg(test)]
mod tests;

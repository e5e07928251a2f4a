//! Git: one follower per Repo, fetches (polled, or triggered by webhooks and people), and
//! moving each App whose files a new commit touches to that commit.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tracing::{Instrument, info, info_span, warn};

use super::{ConnectHook, Engine, EngineError, split_resources};
use crate::fleet::AppRevision;
use crate::git::changes;
use crate::metrics::{ErrorKind as MetricsError, PollOutcome};
use crate::pki::now_unix;
use crate::resources::{Kind, Repo, RepoSpec, Resource};
use crate::telemetry;

/// How often a fetch diffs again when its Repo moved while it diffed, before it moves every App.
const MAX_DIFF_RETRIES: usize = 3;

/// The Repos being followed.
#[derive(Default)]
pub(super) struct Followed {
    pub(super) followers: HashMap<String, Follower>,
    /// Every stored Repo by the repository it follows, for webhooks.
    pub(super) by_url: crate::webhook::RepoIndex,
    /// See [`Engine::set_diff_hook`].
    diff_hook: Option<ConnectHook>,
}

pub(super) struct Follower {
    pub(super) spec: RepoSpec,
    pub(super) trigger: Arc<Notify>,
    pub(super) task: JoinHandle<()>,
}

/// The fetch that moved an App to a commit.
#[derive(Debug, Clone)]
pub struct ChangeOrigin {
    pub commit: String,
    /// W3C trace context of the change: dispatching the commit joins its trace.
    pub trace: BTreeMap<String, String>,
    /// When the fetch that found the commit started: dispatch latency is timed from there.
    pub fetch_started: std::time::Instant,
}

impl Engine {
    pub(super) fn followed(&self) -> std::sync::MutexGuard<'_, Followed> {
        self.followed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    // --- git ---------------------------------------------------------------------------------

    /// (Re)starts following a Repo when its spec is new or changed; fetches at once.
    pub(super) fn follow(self: &Arc<Self>, repo: &Repo) {
        if self.shutdown.is_cancelled() {
            return;
        }
        let name = repo.metadata.name.clone();
        let mut followed = self.followed();
        if let Some(f) = followed.followers.get(&name) {
            if f.spec == repo.spec {
                f.trigger.notify_one();
                return;
            }
            f.task.abort();
        }
        let trigger = Arc::new(Notify::new());
        let engine = Arc::clone(self);
        let spec = repo.spec.clone();
        let task = tokio::spawn(
            follow_repo(engine, name.clone(), spec.clone(), Arc::clone(&trigger))
                .instrument(info_span!("follow", repo = %name)),
        );
        followed.followers.insert(
            name,
            Follower {
                spec,
                trigger,
                task,
            },
        );
    }

    /// For tests: `hook` runs (with the Repo's name) before every diff of two commits, so that
    /// a test can hold a diff and see what the engine does meanwhile.
    #[doc(hidden)]
    pub fn set_diff_hook(&self, hook: Option<ConnectHook>) {
        self.followed().diff_hook = hook;
    }

    /// Asks the follower of `repo` to fetch now. False when no such Repo is followed here (a
    /// replica that does not lead follows none: see [`Engine::fetch_now`]).
    pub fn trigger_fetch(&self, repo: &str) -> bool {
        match self.followed().followers.get(repo) {
            Some(f) => {
                f.trigger.notify_one();
                true
            }
            None => false,
        }
    }

    /// Has `repos` fetched now (a push webhook named them): here when this replica follows
    /// them, else through a request the leading replica sees in the store, durable before this
    /// returns. Returns the Repos a fetch was asked of.
    pub async fn fetch_now(&self, repos: Vec<String>) -> Result<Vec<String>, EngineError> {
        if self.leads() || !self.store.is_shared() {
            return Ok(repos
                .into_iter()
                .filter(|name| self.trigger_fetch(name))
                .collect());
        }
        // A follower follows no Repo: the leader does, and learns of the request from etcd.
        for name in &repos {
            self.store.request_fetch(name);
        }
        self.store.flush().await?;
        Ok(repos)
    }

    /// One fetch of a Repo; moves the revision of every App whose files changed.
    async fn poll_repo(&self, name: &str, spec: &RepoSpec) {
        let started = std::time::Instant::now();
        let keys = match spec.trusted_keys() {
            None => Ok(None),
            Some(Ok(keys)) => Ok(Some(Arc::new(keys))),
            // Validated at apply; a stored entry this hub cannot read verifies nothing.
            Some(Err((i, e))) => Err(crate::git::GitError::Unsupported(format!(
                "spec.verify.trustedKeys[{i}]: {e}"
            ))),
        };
        let fetched = match (self.git_credential(name, spec), keys) {
            (Ok(credential), Ok(keys)) => {
                self.git
                    .fetch_verified(&spec.url, &spec.reference, credential, keys)
                    .await
            }
            (Err(e), _) | (_, Err(e)) => Err(e),
        };
        let outcome = match &fetched {
            Err(_) => PollOutcome::failed,
            Ok(r) if matches!(r.signature, Some(Err(_))) => PollOutcome::failed,
            Ok(r) => match self.store.repo_status(name) {
                Ok(Some(s)) if s.commit == r.commit => PollOutcome::unchanged,
                _ => PollOutcome::changed,
            },
        };
        self.config.metrics.poll(name, outcome, started.elapsed());
        if let Err(e) = self.after_fetch(name, spec, fetched, started).await {
            self.config.metrics.error(MetricsError::store);
            warn!(repo = %name, error = %e, "cannot record fetch result");
        }
        // Charts are resolved again with every poll, so that a range picks up new releases.
        self.resolve_charts_of_repo(name).await;
    }

    async fn after_fetch(
        &self,
        name: &str,
        spec: &RepoSpec,
        fetched: Result<crate::git::Resolved, crate::git::GitError>,
        fetch_started: std::time::Instant,
    ) -> Result<(), EngineError> {
        let now = now_unix();
        // The diff is Git work: done before the write lock is taken, from the commit the Repo
        // was at, which is checked again under the lock.
        let mut diffed = match &fetched {
            // Refused: nothing moves, so there is nothing to diff.
            Ok(resolved) if matches!(resolved.signature, Some(Err(_))) => None,
            Ok(resolved) => {
                let from = self.store.repo_status(name)?.unwrap_or_default().commit;
                let files = self.diff(name, spec, &from, &resolved.commit).await;
                Some((from, files))
            }
            Err(_) => None,
        };
        let mut guard = self.write.lock().await;
        for _ in 0..MAX_DIFF_RETRIES {
            let at = self.store.repo_status(name)?.unwrap_or_default().commit;
            match (&diffed, &fetched) {
                (Some((from, _)), Ok(resolved)) if *from != at => {
                    // Moved while this fetch diffed (a fetch of an earlier spec finishing):
                    // diff again from where it is now, without the lock.
                    drop(guard);
                    let files = self.diff(name, spec, &at, &resolved.commit).await;
                    diffed = Some((at, files));
                    guard = self.write.lock().await;
                }
                _ => break,
            }
        }
        // The Repo may have been deleted or changed while fetching.
        match self.store.resource(Kind::Repo, name)? {
            Some(Resource::Repo(r)) if r.spec == *spec => {}
            _ => return Ok(()),
        }
        let mut status = self.store.repo_status(name)?.unwrap_or_default();
        status.last_fetch_unix = now;
        status.fetches = status.fetches.wrapping_add(1);
        let resolved = match fetched {
            Ok(r) => r,
            Err(e) => {
                warn!(repo = %name, error = %e, "fetch failed");
                status.error = e.to_string();
                self.store.put_repo_status(name, &status)?;
                return Ok(());
            }
        };
        match &resolved.signature {
            Some(Err(reason)) => {
                return self.refuse_commit(name, status, &resolved, reason);
            }
            Some(Ok(verified)) => status.signed_by = verified.key.clone(),
            None => status.signed_by.clear(),
        }
        status.refused_commit.clear();
        status.refused_reason.clear();
        status.error.clear();
        status.last_success_unix = now;
        let old_commit = std::mem::replace(&mut status.commit, resolved.commit.clone());
        status.git_ref = resolved.git_ref.clone();
        let apps = split_resources(self.store.resources()?).apps;
        let revisions = self.store.revisions()?;
        let changed_files = match diffed {
            Some((from, files)) if from == old_commit => files,
            // Still moving after every retry: unknown history, every App moves (safe).
            _ => None,
        };
        let revision = AppRevision {
            commit: resolved.commit.clone(),
            git_ref: resolved.git_ref.clone(),
            ..Default::default()
        };
        // This fetch (the current span) starts the trace of the change for each App it moves.
        let fetch_span = tracing::Span::current();
        telemetry::annotate(
            &fetch_span,
            &[
                (telemetry::VCS_URL, &spec.url),
                (telemetry::VCS_REF, &resolved.git_ref),
                (telemetry::VCS_REVISION, &resolved.commit),
            ],
        );
        // The rollout step this commit starts, if it moves an App: the dispatches to spokes
        // continue its context. Made only then, so that polls that find nothing have no step.
        let mut rollout: Option<(tracing::Span, BTreeMap<String, String>)> = None;
        let mut moved = 0;
        for app in apps.iter().filter(|a| a.spec.repo == name) {
            let current = revisions.get(&app.metadata.name);
            let moves = match current {
                None => true,
                Some(c) if c.commit == revision.commit => false,
                Some(_) => match &changed_files {
                    Some(files) => {
                        changes::app_touched(files, &app.spec.path, &app.spec.extra_paths)
                    }
                    // Unknown history (first fetch, force-push, new URL): move to be safe.
                    None => old_commit != resolved.commit,
                },
            };
            if moves {
                let (_, trace) = rollout.get_or_insert_with(|| {
                    let span = info_span!("rollout", repo = %name, revision = %resolved.commit);
                    let trace = telemetry::context_of(&span);
                    (span, trace)
                });
                // Stored with the revision, so that a replica that did not fetch it still
                // dispatches it in this change's trace, timed from this fetch.
                let revision = AppRevision {
                    trace: trace.clone(),
                    fetched_at_unix_ms: unix_ms_at(fetch_started),
                    // The chart in force stays with the new commit until it is resolved anew.
                    chart: current.and_then(|c| c.chart.clone()),
                    ..revision.clone()
                };
                self.store.put_revision(&app.metadata.name, &revision)?;
                Arc::make_mut(&mut self.lock().traces).insert(
                    app.metadata.name.clone(),
                    ChangeOrigin {
                        commit: revision.commit.clone(),
                        trace: trace.clone(),
                        fetch_started,
                    },
                );
                self.record_app_event(
                    &app.metadata.name,
                    "",
                    "NewRevision",
                    format!(
                        "{} moved to {}{}",
                        revision.git_ref,
                        crate::fleet::rollout::short(&revision.commit),
                        match current {
                            Some(c) =>
                                format!(" (from {})", crate::fleet::rollout::short(&c.commit)),
                            None => String::new(),
                        }
                    ),
                    "",
                )?;
                moved += 1;
            }
        }
        self.store.put_repo_status(name, &status)?;
        if old_commit != resolved.commit {
            info!(repo = %name, revision = %resolved.commit, apps_moved = moved, "ref moved");
        }
        if let Some((span, _)) = rollout {
            self.recompute_locked(&guard).instrument(span).await?;
        }
        Ok(())
    }

    /// Signed commits only: the ref resolved to a commit (or tag) that is not signed by a
    /// trusted key. The Repo stays at its last verified commit, so no App moves and nothing is
    /// dispatched; its status names the refused commit and why, and each of its Apps gets one
    /// event per refused commit.
    fn refuse_commit(
        &self,
        name: &str,
        mut status: crate::model::RepoStatus,
        resolved: &crate::git::Resolved,
        reason: &crate::git::VerifyError,
    ) -> Result<(), EngineError> {
        let message = format!(
            "commit {} ({}) refused: {reason}",
            crate::fleet::rollout::short(&resolved.commit),
            resolved.git_ref
        );
        let new = status.refused_commit != resolved.commit;
        if new {
            warn!(repo = %name, revision = %resolved.commit, %reason, "commit refused: not signed by a trusted key");
        }
        status.refused_commit = resolved.commit.clone();
        status.refused_reason = reason.to_string();
        status.error = if status.commit.is_empty() {
            message.clone()
        } else {
            format!(
                "{message}; staying at {}",
                crate::fleet::rollout::short(&status.commit)
            )
        };
        self.store.put_repo_status(name, &status)?;
        if new {
            let apps = split_resources(self.store.resources()?).apps;
            for app in apps.iter().filter(|a| a.spec.repo == name) {
                self.record_app_event(
                    &app.metadata.name,
                    "",
                    "CommitRefused",
                    message.clone(),
                    "",
                )?;
            }
        }
        Ok(())
    }

    /// The files that changed from `from` to `to` (`None`: unknown history, such as a first
    /// fetch, a force-push or a failed diff, after which every App moves).
    async fn diff(&self, name: &str, spec: &RepoSpec, from: &str, to: &str) -> Option<Vec<String>> {
        if from.is_empty() || from == to {
            return None;
        }
        let hook = self.followed().diff_hook.clone();
        if let Some(hook) = hook {
            hook(name.to_owned()).await;
        }
        match self
            .git
            .changed_files(&spec.url, from, to)
            .instrument(info_span!("detect_changes", %from, %to))
            .await
        {
            Ok(files) => files,
            Err(e) => {
                warn!(repo = %name, error = %e, "cannot diff commits; moving every App");
                None
            }
        }
    }
}

async fn follow_repo(engine: Arc<Engine>, name: String, spec: RepoSpec, trigger: Arc<Notify>) {
    let interval = spec
        .poll_interval
        .unwrap_or(engine.config.default_poll_interval);
    loop {
        engine
            .poll_repo(&name, &spec)
            .instrument(info_span!("fetch", repo = %name, url = %spec.url))
            .await;
        if engine.is_fleet_repo(&name) {
            engine.sync_fleet_detached().await;
        }
        // Jitter spreads the polls of many Repos over time.
        let jittered = interval.mul_f64(rand::random_range(0.9..1.1));
        tokio::select! {
            _ = tokio::time::sleep(jittered) => {}
            _ = trigger.notified() => {}
            _ = engine.shutdown.cancelled() => return,
        }
    }
}

/// The wall-clock time (Unix milliseconds) of `instant`, a moment of this process's past.
fn unix_ms_at(instant: std::time::Instant) -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(now.saturating_sub(instant.elapsed()).as_millis()).unwrap_or(0)
}

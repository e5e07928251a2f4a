//! Several replicas on one shared store: the leader does the work that must happen once; every
//! replica follows the others' writes (see `store::remote`) and acts on them: a follower
//! publishes the desired state the leader wrote to the spokes linked to it and cuts off clusters
//! the leader revoked; the leader moves rollouts on reports and links that other replicas
//! recorded, and fetches a Repo whose webhook reached a follower.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::{broadcast, watch};
use tracing::{debug, info, warn};

use super::desired::{Published, RepoCredentials};
use super::repos::ChangeOrigin;
use super::{Engine, EngineError};
use crate::model::{ClusterDesired, EventRecord, VersionedTarget};
use crate::resources::Resource;
use crate::store::{DesiredHead, RemoteChange, RemoteChanges, StoredTarget, Tree};

/// The key prefix of a fetch request a follower writes for the leader (see
/// [`Engine::fetch_now`]).
pub(super) const FETCH_REQUEST: &str = "fetch/";

impl Engine {
    /// Whether this replica does the work that must happen once (it leads, or is alone).
    pub fn leads(&self) -> bool {
        self.leading.load(Ordering::SeqCst)
    }

    /// Takes up the work that must happen once: this replica was elected (or is alone). What it
    /// finds in the store (every other replica's writes included) is where it starts from: the
    /// rollouts continue from where the last leader left them.
    pub async fn lead(self: &Arc<Self>) -> Result<(), EngineError> {
        if self.leading.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        let started = std::time::Instant::now();
        self.bootstrap_admin().await?;
        // Placement may have changed shape since the store was written (a newer hub).
        self.recompute().await?;
        info!(
            took_ms = started.elapsed().as_millis() as u64,
            "leading: desired state recomputed and every rollout decided"
        );
        for r in self.store.resources()? {
            if let Resource::Repo(repo) = r {
                self.followed().by_url.put(&repo.metadata.name, &repo.spec);
                self.follow(&repo);
            }
        }
        tokio::spawn(super::rollouts::drive_rollouts(Arc::clone(self)));
        super::notifications::log_policy(&self.config.notifications);
        tokio::spawn(Arc::clone(self).deliver_notifications());
        Ok(())
    }

    /// What a replica that does not lead sets up at start: the Repos' webhook index and the
    /// credentials its spokes' desired state carries.
    pub(super) fn prepare_to_follow(&self) -> Result<(), EngineError> {
        self.index_repos()?;
        let credentials = self.stored_credentials()?;
        let mut state = self.lock();
        let clusters: Vec<String> = state.desired.keys().cloned().collect();
        for cluster in clusters {
            if let Some(tx) = state.desired.get(&cluster) {
                let current = Arc::clone(&tx.borrow().desired);
                let published = Arc::new(state.publishable(current, &credentials));
                if let Some(tx) = state.desired.get(&cluster) {
                    tx.send_replace(published);
                }
            }
        }
        state.credentials = Some(credentials);
        Ok(())
    }

    fn index_repos(&self) -> Result<(), EngineError> {
        let mut followed = self.followed();
        followed.by_url = Default::default();
        for r in self.store.resources()? {
            if let Resource::Repo(repo) = r {
                followed.by_url.put(&repo.metadata.name, &repo.spec);
            }
        }
        Ok(())
    }

    /// The credentials the stored Repos' and Apps' spokes fetch with.
    fn stored_credentials(&self) -> Result<Arc<RepoCredentials>, EngineError> {
        let split = super::split_resources(self.store.resources()?);
        Ok(Arc::new(
            self.spoke_credentials(
                split
                    .repos
                    .values()
                    .map(|r| (r.metadata.name.as_str(), &r.spec)),
                &split.apps,
            ),
        ))
    }

    /// Acts on the other replicas' writes until the hub stops.
    pub(super) async fn follow_others(
        self: Arc<Self>,
        mut feed: broadcast::Receiver<RemoteChanges>,
    ) {
        let shutdown = self.shutdown.clone();
        loop {
            let changes = tokio::select! {
                changes = feed.recv() => changes,
                () = shutdown.cancelled() => return,
            };
            match changes {
                Ok(changes) => {
                    // A message is one transaction's writes (the store's feed sends each
                    // revision whole), so the Targets written alone at once are all here.
                    let mut alone = Written::new();
                    for change in changes.iter() {
                        if let Err(e) = self.on_remote(change, &mut alone).await {
                            warn!(error = %e, "cannot act on another replica's write");
                        }
                    }
                    for (cluster, targets) in alone {
                        if let Err(e) = self.publish_alone(&cluster, targets).await {
                            warn!(error = %e, %cluster, "cannot act on another replica's write");
                        }
                    }
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    warn!(
                        missed,
                        "fell behind the other replicas' writes; reading the state again"
                    );
                    if let Err(e) = self.catch_up().await {
                        warn!(error = %e, "cannot read the state again");
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    async fn on_remote(
        &self,
        change: &RemoteChange,
        alone: &mut Written,
    ) -> Result<(), EngineError> {
        let leads = self.leads();
        self.tell_watchers(change);
        match change.tree {
            Tree::DesiredTargets if !leads => {
                let (Some(value), Some((cluster, app))) =
                    (&change.value, change.key.split_once('\u{0}'))
                else {
                    return Ok(());
                };
                let stored = StoredTarget::decode(&change.key, value)?;
                let with_record = stored.with_record;
                let target = stored.versioned();
                if with_record {
                    self.staged()
                        .entry(cluster.to_owned())
                        .or_default()
                        .insert(app.to_owned(), target);
                } else {
                    alone
                        .entry(cluster.to_owned())
                        .or_default()
                        .insert(app.to_owned(), target);
                }
            }
            Tree::Desired if !leads => {
                let Some(value) = &change.value else {
                    return Ok(());
                };
                let head = DesiredHead::decode(&change.key, value)?;
                // Targets written alone just before (by a leader of an older schema, which
                // does not mark them) are named by this record.
                if let Some(targets) = alone.remove(&change.key) {
                    self.staged()
                        .entry(change.key.clone())
                        .or_default()
                        .extend(targets);
                }
                let desired = self.assemble_from_leader(&change.key, head).await?;
                self.publish_from_leader(&change.key, desired);
                self.cluster_changed(&change.key);
            }
            Tree::Clusters if !leads => self.cut_off_if_revoked(&change.key),
            Tree::Resources if !leads => {
                self.index_repos()?;
                let credentials = self.stored_credentials()?;
                let mut state = self.lock();
                if state.credentials.as_ref() != Some(&credentials) {
                    let clusters: Vec<String> = state.desired.keys().cloned().collect();
                    for cluster in clusters {
                        if let Some(tx) = state.desired.get(&cluster) {
                            let current = Arc::clone(&tx.borrow().desired);
                            let published = Arc::new(state.publishable(current, &credentials));
                            if let Some(tx) = state.desired.get(&cluster) {
                                tx.send_replace(published);
                            }
                        }
                    }
                    state.credentials = Some(credentials);
                }
            }
            Tree::Targets if leads => {
                if let Some((_, app)) = change.key.split_once('\u{0}') {
                    self.kick_rollout_of(app);
                }
            }
            Tree::Presence if leads => self.kick_rollouts(),
            Tree::Meta if leads => {
                if let Some(repo) = change.key.strip_prefix(FETCH_REQUEST) {
                    debug!(%repo, "a webhook another replica received asks for a fetch");
                    self.trigger_fetch(repo);
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Tells the live reads what another replica changed: its reports, rollout decisions, links
    /// and events reach a stream here as this replica's own do. Desired state is told once
    /// published here (a follower's `publish_from_leader`).
    fn tell_watchers(&self, change: &RemoteChange) {
        match change.tree {
            Tree::Targets => {
                if let Some((cluster, app)) = change.key.split_once('\u{0}') {
                    self.target_changed(app, cluster);
                }
            }
            Tree::Presence => {
                if let Some((cluster, _)) = change.key.split_once('\u{0}') {
                    self.cluster_changed(cluster);
                }
            }
            Tree::Rollouts | Tree::AppControls => self.app_changed(&change.key),
            Tree::Events => {
                let Some(value) = &change.value else {
                    return;
                };
                match serde_json::from_slice::<EventRecord>(value) {
                    Ok(event) => self.bus.relay(event),
                    Err(e) => {
                        warn!(error = %e, key = %change.key, "cannot read an event another replica recorded");
                    }
                }
            }
            _ => {}
        }
    }

    /// After missing changes: a follower publishes every cluster's stored desired state again;
    /// the leader looks at every rollout again.
    async fn catch_up(&self) -> Result<(), EngineError> {
        if self.leads() {
            self.kick_rollouts();
            return Ok(());
        }
        for (cluster, desired) in self.store.desired_all().await? {
            self.publish_from_leader(&cluster, desired);
        }
        let clusters: Vec<String> = self.lock().connections.keys().cloned().collect();
        for cluster in clusters {
            self.cut_off_if_revoked(&cluster);
        }
        Ok(())
    }

    /// The desired Targets the leader wrote, waiting for their cluster's record.
    fn staged(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, BTreeMap<String, VersionedTarget>>> {
        self.staged_targets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The desired state a record the leader wrote names: each Target from those the leader
    /// wrote since (staged), else from the state published here, else (a change this replica
    /// missed) from the store, which may hold a newer one already: its record follows, and the
    /// delta to it sends that Target again, harmlessly.
    async fn assemble_from_leader(
        &self,
        cluster: &str,
        head: DesiredHead,
    ) -> Result<ClusterDesired, EngineError> {
        let mut staged = self.staged().remove(cluster).unwrap_or_default();
        let published = self.desired(cluster).unwrap_or_default();
        let mut targets = BTreeMap::new();
        for (app, spec) in &head.apps {
            let found = staged
                .remove(app)
                .filter(|t| t.spec_generation == *spec)
                .or_else(|| {
                    published
                        .targets
                        .get(app)
                        .filter(|t| t.spec_generation == *spec)
                        .cloned()
                });
            let target = match found {
                Some(t) => Some(t),
                None => self.store.desired_target(cluster, app).await?,
            };
            if let Some(mut t) = target {
                t.target = self.interner().share(t.target);
                targets.insert(app.clone(), t);
            }
        }
        Ok(head.assemble_as_written(targets))
    }

    /// Publishes Targets the leader wrote without the cluster's record (see
    /// `store/desired.rs`), all at one generation: when the state published here is the
    /// generation just before (it has every change the leader made before these), with them
    /// replaced; when it is that generation or newer, nothing (read from the store after the
    /// write); else (a change missed here: at start, or one that failed) the cluster's state
    /// is read from the store, which holds them already.
    async fn publish_alone(
        &self,
        cluster: &str,
        mut targets: BTreeMap<String, VersionedTarget>,
    ) -> Result<(), EngineError> {
        let generation = targets
            .values()
            .map(|t| t.spec_generation)
            .max()
            .unwrap_or(0);
        {
            // Only the new ones: what was published here is shared already.
            let mut interner = self.interner();
            for t in targets.values_mut() {
                t.target = interner.share(Arc::clone(&t.target));
            }
        }
        let published = self.desired(cluster);
        let at = published.as_ref().map_or(0, |p| p.generation);
        let desired = match with_alone(published.as_deref(), targets) {
            Alone::Held => return Ok(()),
            Alone::Next(desired) => desired,
            Alone::Missed => {
                debug!(%cluster, published = at, generation, "desired Targets written alone after a change not seen here: reading the cluster's state");
                let mut stored = self.store.desired_of(cluster).await?;
                let mut interner = self.interner();
                for t in stored.targets.values_mut() {
                    t.target = interner.share(Arc::clone(&t.target));
                }
                stored
            }
        };
        // Targets staged for a record that never came (a leader that died between the
        // transactions of a split write) are older than these.
        if let Some(staged) = self.staged().get_mut(cluster) {
            staged.retain(|_, t| t.spec_generation > generation);
        }
        self.publish_from_leader(cluster, desired);
        self.cluster_changed(cluster);
        Ok(())
    }

    /// Hands desired state the leader wrote to the cluster's link here, if it is newer, with the
    /// trace of the change that moved each Target (stored with the App's revision).
    fn publish_from_leader(&self, cluster: &str, desired: ClusterDesired) {
        let mut state = self.lock();
        for (app, t) in &desired.targets {
            // Known already: read no revision (this runs for each of 10,000 clusters).
            if state
                .traces
                .get(app)
                .is_some_and(|o| o.commit == t.target.commit)
            {
                continue;
            }
            let Some(r) = self.store.revision(app) else {
                continue;
            };
            if r.trace.is_empty() || r.commit != t.target.commit {
                continue;
            }
            Arc::make_mut(&mut state.traces).insert(
                app.clone(),
                ChangeOrigin {
                    commit: r.commit.clone(),
                    trace: r.trace.clone(),
                    fetch_started: instant_at(r.fetched_at_unix_ms),
                },
            );
        }
        let credentials = state.credentials.clone().unwrap_or_default();
        let published: Arc<Published> =
            Arc::new(state.publishable(Arc::new(desired), &credentials));
        match state.desired.get(cluster) {
            Some(tx) => {
                if tx.borrow().desired.generation < published.desired.generation {
                    tx.send_replace(published);
                }
            }
            None => {
                state
                    .desired
                    .insert(cluster.to_owned(), watch::channel(published).0);
            }
        }
    }

    /// Ends the link of a cluster the leader revoked, as the leader does with its own links.
    fn cut_off_if_revoked(&self, cluster: &str) {
        let revoked = matches!(self.store.cluster(cluster), Ok(Some(r)) if r.revoked);
        if !revoked {
            return;
        }
        if let Some(live) = self.lock().connections.remove(cluster) {
            info!(%cluster, "cluster revoked (by the leading replica): its link ends");
            live.revoked.cancel();
        }
    }
}

/// Targets another replica wrote without their cluster's record, by cluster, as one
/// transaction of it brought them.
type Written = HashMap<String, BTreeMap<String, VersionedTarget>>;

/// What Targets written alone (all at one generation) make of the state published here.
#[derive(Debug, PartialEq)]
enum Alone {
    /// Published already (it was read after the write).
    Held,
    /// The next generation: the published state with them replaced.
    Next(ClusterDesired),
    /// A change before them was not seen here: the state must be read again.
    Missed,
}

fn with_alone(
    published: Option<&ClusterDesired>,
    targets: BTreeMap<String, VersionedTarget>,
) -> Alone {
    let generation = targets
        .values()
        .map(|t| t.spec_generation)
        .max()
        .unwrap_or(0);
    let at = published.map_or(0, |p| p.generation);
    if at >= generation {
        return Alone::Held;
    }
    match published {
        Some(published)
            if at != 0
                && at + 1 == generation
                && targets.keys().all(|a| published.targets.contains_key(a)) =>
        {
            let mut desired = published.clone();
            desired.targets.extend(targets);
            desired.generation = generation;
            Alone::Next(desired)
        }
        _ => Alone::Missed,
    }
}

/// The moment of this process's clock that was the wall-clock time `unix_ms` (now, when it is
/// unknown or in the future).
fn instant_at(unix_ms: u64) -> std::time::Instant {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let ago = now.saturating_sub(std::time::Duration::from_millis(unix_ms));
    if unix_ms == 0 {
        return std::time::Instant::now();
    }
    std::time::Instant::now()
        .checked_sub(ago)
        .unwrap_or_else(std::time::Instant::now)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn targets(of: &[(&str, &str)]) -> BTreeMap<String, Arc<crate::fleet::DesiredTarget>> {
        of.iter()
            .map(|(app, commit)| {
                let target = crate::fleet::DesiredTarget::for_tests(app, commit);
                ((*app).to_owned(), Arc::new(target))
            })
            .collect()
    }

    fn alone(desired: &ClusterDesired, apps: &[&str]) -> BTreeMap<String, VersionedTarget> {
        apps.iter()
            .map(|a| ((*a).to_owned(), desired.targets[*a].clone()))
            .collect()
    }

    /// A follower merges Targets written alone into what it published only when that is the
    /// generation just before theirs: a change it missed (at start, or one that failed) must
    /// not be skipped by the spokes' deltas, which send only Targets newer than what a spoke
    /// holds.
    #[test]
    fn targets_written_alone_follow_only_the_generation_just_before() {
        let g1 = ClusterDesired::default().next(targets(&[("a", "c1"), ("b", "c1")]));
        let g2 = g1.next(targets(&[("a", "c2"), ("b", "c1")]));
        let g3 = g2.next(targets(&[("a", "c2"), ("b", "c3")]));
        assert_eq!(
            with_alone(Some(&g1), alone(&g2, &["a"])),
            Alone::Next(g2.clone())
        );
        assert_eq!(
            with_alone(Some(&g2), alone(&g3, &["b"])),
            Alone::Next(g3.clone())
        );
        // g2 missed: merging b into g1 would publish g3 without a's change.
        assert_eq!(with_alone(Some(&g1), alone(&g3, &["b"])), Alone::Missed);
        assert_eq!(with_alone(None, alone(&g2, &["a"])), Alone::Missed);
        // Read from the store after the write: held already.
        assert_eq!(with_alone(Some(&g3), alone(&g3, &["b"])), Alone::Held);
        // An App the published state lacks (a write of an older leader, unmarked, whose record
        // follows): read again.
        let g2_more = g1.next(targets(&[("a", "c1"), ("b", "c1"), ("d", "c1")]));
        assert_eq!(
            with_alone(Some(&g1), alone(&g2_more, &["d"])),
            Alone::Missed
        );
    }
}

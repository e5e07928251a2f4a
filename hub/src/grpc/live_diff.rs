//! Diff requests to the spokes linked to this hub (`gitfleet diff --live`): a request goes out
//! on the cluster's live `Session` stream, and the spoke's `DiffResult` with the same id comes
//! back to the one waiting for it, within a timeout. Shared by `Admin.DiffLive` (which asks)
//! and `Link.Session` (which carries requests out and answers in).
//!
//! A spoke answers only its own requests: an answer is taken only from the stream of the
//! cluster it was asked of, and one nobody waits for (late, or unknown) is dropped.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use gitfleet_proto::v1 as pb;
use tokio::sync::{mpsc, oneshot};

/// How long a spoke has to answer a diff request: a fetch, a render and a dry run per object.
pub const DIFF_TIMEOUT: Duration = Duration::from_secs(45);
/// How long one `DiffLive` asks for, over all its clusters: the CLI gives up on a call after
/// 60 s, so the clusters asked late get what is left, and an answer always comes back first.
pub const DIFF_DEADLINE: Duration = Duration::from_secs(50);

/// Requests waiting to go out on one stream, at most; beyond, a request is refused at once.
const QUEUE: usize = 16;

/// Why a cluster has no diff.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiffFailure {
    #[error("the spoke is not linked to this hub replica")]
    NotLinked,
    #[error("the spoke has {QUEUE} diff requests waiting already; try again")]
    Busy,
    #[error("the spoke did not answer within {}s", .0.as_secs())]
    Timeout(Duration),
    #[error("the spoke's link ended before it answered")]
    LinkEnded,
}

#[derive(Default)]
struct Inner {
    /// Per cluster: its live session's id and where its requests go.
    links: HashMap<String, (u64, mpsc::Sender<pb::DiffRequest>)>,
    /// Per request id: the cluster asked, and who waits.
    pending: HashMap<String, (String, oneshot::Sender<pb::DiffResult>)>,
}

/// See the module.
#[derive(Clone, Default)]
pub struct LiveDiffs {
    inner: Arc<Mutex<Inner>>,
}

impl std::fmt::Debug for LiveDiffs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.lock();
        f.debug_struct("LiveDiffs")
            .field("links", &inner.links.len())
            .field("pending", &inner.pending.len())
            .finish()
    }
}

impl LiveDiffs {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `cluster`'s session `id` is live: requests for the cluster go to the receiver from now
    /// on (a newer session replaces an older one).
    pub fn attach(&self, cluster: &str, id: u64) -> mpsc::Receiver<pb::DiffRequest> {
        let (tx, rx) = mpsc::channel(QUEUE);
        self.lock().links.insert(cluster.to_owned(), (id, tx));
        rx
    }

    /// Session `id` of `cluster` ended (a newer session's registration stays): requests still
    /// waiting for its answers fail at once.
    pub fn detach(&self, cluster: &str, id: u64) {
        let mut inner = self.lock();
        if inner
            .links
            .get(cluster)
            .is_some_and(|(live, _)| *live == id)
        {
            inner.links.remove(cluster);
            inner.pending.retain(|_, (asked, _)| asked != cluster);
        }
    }

    /// Whether `cluster` has a session here that diff requests can go to.
    pub fn linked(&self, cluster: &str) -> bool {
        self.lock().links.contains_key(cluster)
    }

    /// Asks `cluster`'s spoke for a diff and waits up to `timeout` for its answer.
    pub async fn request(
        &self,
        cluster: &str,
        target: pb::TargetSpec,
        timeout: Duration,
    ) -> Result<pb::DiffResult, DiffFailure> {
        let request_id = hex::encode(rand::random::<[u8; 12]>());
        let (answer_tx, answer_rx) = oneshot::channel();
        let sender = {
            let mut inner = self.lock();
            let Some((_, sender)) = inner.links.get(cluster) else {
                return Err(DiffFailure::NotLinked);
            };
            let sender = sender.clone();
            inner
                .pending
                .insert(request_id.clone(), (cluster.to_owned(), answer_tx));
            sender
        };
        // Forgets the request however this ends (answered, timed out, the caller gone).
        let _pending = Pending {
            diffs: self,
            request_id: request_id.clone(),
        };
        let request = pb::DiffRequest {
            request_id,
            target: Some(target),
        };
        match sender.try_send(request) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => return Err(DiffFailure::Busy),
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(DiffFailure::LinkEnded),
        }
        match tokio::time::timeout(timeout, answer_rx).await {
            Ok(Ok(result)) => Ok(result),
            Ok(Err(_)) => Err(DiffFailure::LinkEnded),
            Err(_) => Err(DiffFailure::Timeout(timeout)),
        }
    }

    /// A spoke's answer on `cluster`'s stream: handed to whoever waits for it, if anyone
    /// does and it was asked of this cluster. Returns whether it was.
    pub fn answer(&self, cluster: &str, result: pb::DiffResult) -> bool {
        let mut inner = self.lock();
        match inner.pending.get(&result.request_id) {
            Some((asked, _)) if asked == cluster => {}
            _ => return false,
        }
        match inner.pending.remove(&result.request_id) {
            Some((_, waiting)) => waiting.send(result).is_ok(),
            None => false,
        }
    }

    /// Requests waiting for an answer (for tests).
    pub fn pending(&self) -> usize {
        self.lock().pending.len()
    }
}

struct Pending<'a> {
    diffs: &'a LiveDiffs,
    request_id: String,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        self.diffs.lock().pending.remove(&self.request_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(id: &str, cluster: &str) -> pb::DiffResult {
        pb::DiffResult {
            request_id: id.into(),
            cluster: cluster.into(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn an_answer_reaches_the_one_waiting_and_only_from_its_cluster() {
        let diffs = LiveDiffs::default();
        let mut rx = diffs.attach("eu-1", 1);
        let asking = {
            let diffs = diffs.clone();
            tokio::spawn(async move {
                diffs
                    .request("eu-1", pb::TargetSpec::default(), Duration::from_secs(10))
                    .await
            })
        };
        let request = rx.recv().await.expect("a request goes out");
        // Another cluster's stream cannot answer it.
        assert!(!diffs.answer("eu-2", result(&request.request_id, "eu-2")));
        assert!(!diffs.answer("eu-1", result("unknown", "eu-1")));
        assert!(diffs.answer("eu-1", result(&request.request_id, "eu-1")));
        let answer = asking.await.expect("joined").expect("answered");
        assert_eq!(answer.request_id, request.request_id);
        assert_eq!(diffs.pending(), 0);
    }

    #[tokio::test]
    async fn no_link_a_timeout_and_an_ended_link_are_failures_and_forget_the_request() {
        let diffs = LiveDiffs::default();
        assert_eq!(
            diffs
                .request("eu-1", pb::TargetSpec::default(), Duration::from_secs(1))
                .await,
            Err(DiffFailure::NotLinked)
        );
        let _rx = diffs.attach("eu-1", 1);
        assert_eq!(
            diffs
                .request("eu-1", pb::TargetSpec::default(), Duration::from_millis(20))
                .await,
            Err(DiffFailure::Timeout(Duration::from_millis(20)))
        );
        assert_eq!(diffs.pending(), 0);
        // A newer session replaces the older; the older one's end leaves it alone.
        let rx2 = diffs.attach("eu-1", 2);
        diffs.detach("eu-1", 1);
        assert!(diffs.linked("eu-1"));
        drop(rx2);
        assert_eq!(
            diffs
                .request("eu-1", pb::TargetSpec::default(), Duration::from_secs(1))
                .await,
            Err(DiffFailure::LinkEnded)
        );
        diffs.detach("eu-1", 2);
        assert!(!diffs.linked("eu-1"));
        assert_eq!(diffs.pending(), 0);
    }
}

//! What every [`Backend`] must do (see the trait's guarantees), run against each of them.

use super::super::backend::{Backend, BackendError, Batch, KeyRange, Order, Tree};
#[cfg(feature = "etcd")]
use super::super::etcd::{EtcdBackend, EtcdOptions};
use super::super::memory::MemoryBackend;
use super::super::sled::SledBackend;

#[cfg(feature = "etcd")]
use super::super::etcd_server;

/// Runs each `async fn(&dyn Backend)` named against sled, memory and a real etcd (one each).
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod sled_backend {
            $(
                #[tokio::test]
                async fn $name() {
                    let dir = tempfile::tempdir().unwrap();
                    let backend = super::SledBackend::open(dir.path()).unwrap();
                    super::$name(&backend).await;
                }
            )*
        }
        mod memory_backend {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(&super::MemoryBackend::new()).await;
                }
            )*
        }
        #[cfg(feature = "etcd")]
        mod etcd_backend {
            $(
                #[tokio::test]
                async fn $name() {
                    let etcd = super::etcd_server::EtcdServer::start();
                    let mut options = super::EtcdOptions::new(vec![etcd.endpoint()]);
                    options.prefix = "/conformance/".into();
                    let backend = super::EtcdBackend::connect(&options).await.unwrap();
                    super::$name(&backend).await;
                }
            )*
        }
    };
}

conformance!(
    puts_and_deletes_are_read_back,
    trees_are_apart,
    scans_honour_range_order_and_limit,
    a_range_is_deleted_whole,
    a_batch_whose_condition_fails_applies_nothing,
    conditions_are_checked_before_the_batch,
    counts_and_syncs,
);

fn kv(k: &str, v: &str) -> (Vec<u8>, Vec<u8>) {
    (k.as_bytes().to_vec(), v.as_bytes().to_vec())
}

async fn commit(b: &dyn Backend, f: impl FnOnce(&mut Batch)) -> Result<(), BackendError> {
    let mut batch = Batch::default();
    f(&mut batch);
    b.commit(batch).await
}

async fn puts_and_deletes_are_read_back(b: &dyn Backend) {
    assert_eq!(b.get(Tree::Clusters, b"a").await.unwrap(), None);
    commit(b, |x| {
        x.put(Tree::Clusters, "a", b"1".to_vec())
            .put(Tree::Clusters, "b", b"2".to_vec())
            // Later writes of a batch win over earlier ones.
            .put(Tree::Clusters, "a", b"3".to_vec())
            .delete(Tree::Clusters, "b");
    })
    .await
    .unwrap();
    assert_eq!(
        b.get(Tree::Clusters, b"a").await.unwrap(),
        Some(b"3".to_vec())
    );
    assert_eq!(b.get(Tree::Clusters, b"b").await.unwrap(), None);
    // Deleting what is not there is no error.
    commit(b, |x| {
        x.delete(Tree::Clusters, "zzz");
    })
    .await
    .unwrap();
}

async fn trees_are_apart(b: &dyn Backend) {
    commit(b, |x| {
        x.put(Tree::Tokens, "k", b"token".to_vec())
            .put(Tree::Acked, "k", b"acked".to_vec());
    })
    .await
    .unwrap();
    assert_eq!(
        b.get(Tree::Tokens, b"k").await.unwrap(),
        Some(b"token".to_vec())
    );
    assert_eq!(
        b.get(Tree::Acked, b"k").await.unwrap(),
        Some(b"acked".to_vec())
    );
    assert_eq!(b.get(Tree::Desired, b"k").await.unwrap(), None);
    assert_eq!(b.count(Tree::Desired).await.unwrap(), 0);
}

async fn scans_honour_range_order_and_limit(b: &dyn Backend) {
    commit(b, |x| {
        for k in ["web\0b", "web\0a", "api\0a", "web", "webby\0a", "x"] {
            x.put(Tree::RolloutHistory, k, k.as_bytes().to_vec());
        }
    })
    .await
    .unwrap();
    let all = b
        .scan(
            Tree::RolloutHistory,
            KeyRange::all(),
            Order::Ascending,
            usize::MAX,
        )
        .await
        .unwrap();
    let keys: Vec<_> = all
        .iter()
        .map(|(k, _)| String::from_utf8_lossy(k))
        .collect();
    assert_eq!(keys, ["api\0a", "web", "web\0a", "web\0b", "webby\0a", "x"]);
    let web = b
        .scan(
            Tree::RolloutHistory,
            KeyRange::prefix("web\0"),
            Order::Ascending,
            usize::MAX,
        )
        .await
        .unwrap();
    assert_eq!(web, vec![kv("web\0a", "web\0a"), kv("web\0b", "web\0b")]);
    let newest = b
        .scan(
            Tree::RolloutHistory,
            KeyRange::starting_at("web"),
            Order::Descending,
            2,
        )
        .await
        .unwrap();
    assert_eq!(newest, vec![kv("x", "x"), kv("webby\0a", "webby\0a")]);
    let bounded = b
        .scan(
            Tree::RolloutHistory,
            KeyRange {
                start: b"web".to_vec(),
                end: Some(b"web\0b".to_vec()),
            },
            Order::Descending,
            usize::MAX,
        )
        .await
        .unwrap();
    assert_eq!(bounded, vec![kv("web\0a", "web\0a"), kv("web", "web")]);
    // A prefix of 0xff bytes runs to the end of the tree.
    commit(b, |x| {
        x.put(Tree::RolloutHistory, vec![0xff, 0xff, 1], b"hi".to_vec());
    })
    .await
    .unwrap();
    let high = b
        .scan(
            Tree::RolloutHistory,
            KeyRange::prefix(vec![0xff, 0xff]),
            Order::Ascending,
            usize::MAX,
        )
        .await
        .unwrap();
    assert_eq!(high, vec![(vec![0xff, 0xff, 1], b"hi".to_vec())]);
}

async fn a_range_is_deleted_whole(b: &dyn Backend) {
    commit(b, |x| {
        for k in ["web\0a", "web\0b", "webby\0a", "api\0a"] {
            x.put(Tree::Healthy, k, b"{}".to_vec());
        }
    })
    .await
    .unwrap();
    commit(b, |x| {
        x.delete_range(Tree::Healthy, KeyRange::prefix("web\0"));
    })
    .await
    .unwrap();
    let left = b
        .scan(Tree::Healthy, KeyRange::all(), Order::Ascending, usize::MAX)
        .await
        .unwrap();
    assert_eq!(left, vec![kv("api\0a", "{}"), kv("webby\0a", "{}")]);
}

async fn a_batch_whose_condition_fails_applies_nothing(b: &dyn Backend) {
    commit(b, |x| {
        x.put(Tree::Tokens, "h", b"uses 1".to_vec());
    })
    .await
    .unwrap();
    // Expected another value: nothing of the batch is written, and the error names the key.
    let err = commit(b, |x| {
        x.require(Tree::Tokens, "h", Some(b"uses 0".to_vec()))
            .put(Tree::Tokens, "h", b"uses 2".to_vec())
            .put(Tree::Clusters, "other", b"x".to_vec());
    })
    .await
    .unwrap_err();
    assert!(
        matches!(
            err,
            BackendError::Conflict {
                tree: Tree::Tokens,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("tokens/h"), "{err}");
    assert_eq!(
        b.get(Tree::Tokens, b"h").await.unwrap(),
        Some(b"uses 1".to_vec())
    );
    assert_eq!(b.get(Tree::Clusters, b"other").await.unwrap(), None);
    // Expected absent, but present.
    let err = commit(b, |x| {
        x.require(Tree::Tokens, "h", None)
            .put(Tree::Tokens, "h", b"new".to_vec());
    })
    .await
    .unwrap_err();
    assert!(matches!(err, BackendError::Conflict { .. }), "{err:?}");
    // Conditions that hold: applied.
    commit(b, |x| {
        x.require(Tree::Tokens, "h", Some(b"uses 1".to_vec()))
            .require(Tree::Tokens, "fresh", None)
            .put(Tree::Tokens, "h", b"uses 2".to_vec())
            .put(Tree::Tokens, "fresh", b"uses 0".to_vec());
    })
    .await
    .unwrap();
    assert_eq!(
        b.get(Tree::Tokens, b"h").await.unwrap(),
        Some(b"uses 2".to_vec())
    );
    assert_eq!(
        b.get(Tree::Tokens, b"fresh").await.unwrap(),
        Some(b"uses 0".to_vec())
    );
}

async fn conditions_are_checked_before_the_batch(b: &dyn Backend) {
    // The condition is about the state before the batch, not after its own writes.
    let err = commit(b, |x| {
        x.put(Tree::Tokens, "h", b"v".to_vec())
            .require(Tree::Tokens, "h", Some(b"v".to_vec()));
    })
    .await
    .unwrap_err();
    assert!(matches!(err, BackendError::Conflict { .. }), "{err:?}");
    assert_eq!(b.get(Tree::Tokens, b"h").await.unwrap(), None);
}

async fn counts_and_syncs(b: &dyn Backend) {
    commit(b, |x| {
        for i in 0..10u64 {
            x.put(Tree::Events, i.to_be_bytes(), b"{}".to_vec());
        }
    })
    .await
    .unwrap();
    assert_eq!(b.count(Tree::Events).await.unwrap(), 10);
    b.sync().await.unwrap();
    // An empty batch is nothing.
    b.commit(Batch::default()).await.unwrap();
    assert_eq!(b.count(Tree::Events).await.unwrap(), 10);
}

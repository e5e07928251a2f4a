use super::*;

use crate::store::etcd_server::EtcdServer;

fn put(key: &str, value: &str) -> Write {
    Write::Put {
        key: key.as_bytes().to_vec(),
        value: value.as_bytes().to_vec(),
    }
}

fn delete(key: &str) -> Write {
    Write::Delete {
        key: key.as_bytes().to_vec(),
    }
}

fn key(write: &Write) -> String {
    match write {
        Write::Put { key, .. } | Write::Delete { key } => String::from_utf8_lossy(key).into(),
        Write::DeleteRange { start, .. } => String::from_utf8_lossy(start).into(),
    }
}

fn range(start: &str, end: &str) -> Write {
    Write::DeleteRange {
        start: start.as_bytes().to_vec(),
        end: end.as_bytes().to_vec(),
    }
}

#[test]
fn the_effect_writes_each_key_once() {
    let writes = effect([put("a", "1"), put("b", "2"), put("a", "3"), delete("b")]);
    assert_eq!(writes, vec![put("a", "3"), delete("b")]);
}

#[test]
fn the_effect_keeps_the_order_of_the_last_writes() {
    // A cluster's desired Targets, then its record: another replica sees them in that order.
    let writes = effect([
        put("desired_targets/eu\0web", "t"),
        put("desired/eu", "h1"),
        put("desired_targets/us\0web", "t"),
        put("desired/eu", "h2"),
    ]);
    assert_eq!(
        writes,
        vec![
            put("desired_targets/eu\0web", "t"),
            put("desired_targets/us\0web", "t"),
            put("desired/eu", "h2"),
        ]
    );
}

#[test]
fn a_range_deleted_after_writes_takes_them_with_it() {
    let writes = effect([
        put("k/1", "x"),
        delete("k/2"),
        put("l", "y"),
        range("k/", "k0"),
    ]);
    assert_eq!(writes, vec![range("k/", "k0"), put("l", "y")]);
}

#[test]
fn keys_written_after_a_range_was_deleted_survive_it() {
    let writes = effect([
        range("k/", "k0"),
        put("k/2", "b"),
        delete("k/3"),
        put("k/1", "a"),
    ]);
    assert_eq!(
        writes,
        vec![
            range("k/", "k/1"),
            put("k/1", "a"),
            range("k/1\0", "k/2"),
            put("k/2", "b"),
            range("k/2\0", "k0"),
        ]
    );
    // A range that only held the key written: nothing left of it.
    assert_eq!(
        effect([range("k", "k\0"), put("k", "v")]),
        vec![put("k", "v")]
    );
}

#[test]
fn overlapping_ranges_become_one() {
    let writes = effect([
        range("a", "c"),
        range("b", "d"),
        range("x", "y"),
        range("q", "q"),
    ]);
    assert_eq!(writes, vec![range("a", "d"), range("x", "y")]);
}

#[test]
fn chunks_keep_the_order_and_fit() {
    let writes: Vec<Write> = (0..300).map(|i| put(&format!("k{i:03}"), "v")).collect();
    let chunks = chunks(writes.clone(), 128, usize::MAX);
    assert_eq!(
        chunks.iter().map(Vec::len).collect::<Vec<_>>(),
        [128, 128, 44]
    );
    assert_eq!(chunks.concat(), writes);
    // A range may be cut by every put of its chunk: both count.
    let mut mixed = vec![range("a", "z")];
    mixed.extend((0..10).map(|i| put(&format!("k{i}"), "v")));
    for chunk in super::chunks(mixed, 8, usize::MAX) {
        assert!(effect(chunk).len() <= 8);
    }
    // And bytes.
    let big: Vec<Write> = (0..10)
        .map(|i| put(&format!("k{i}"), &"x".repeat(1000)))
        .collect();
    for chunk in super::chunks(big, 128, 3000) {
        assert!(bytes(&chunk) <= 3000, "{}", bytes(&chunk));
    }
}

#[test]
fn a_key_written_many_times_costs_one_write_when_a_batch_is_split() {
    // The reports of 1,000 clusters, four each since the last flush, in the order sessions
    // send them: 4,000 writes of 1,000 keys go as the 8 transactions their effect needs, not
    // the 32 of the writes as given, each with the key's last value.
    let writes: Vec<Write> = (1..=4)
        .flat_map(|seq| (0..1000).map(move |c| put(&format!("c{c:04}"), &seq.to_string())))
        .collect();
    let split = transactions(writes, 128, usize::MAX);
    assert_eq!(split.len(), 8);
    let applied = split.concat();
    assert_eq!(applied.len(), 1000);
    assert!(
        applied.iter().all(|w| *w == put(&key(w), "4")),
        "{applied:?}"
    );
    // Desired state: each cluster's Target then its record, written again for every cluster
    // (a second commit before the flush). Each record follows its Target's last write across
    // the transactions, so no prefix of them has a record naming a Target not yet written.
    let mut writes = Vec::new();
    for generation in ["1", "2"] {
        for c in 0..300 {
            writes.push(put(&format!("t/c{c:03}"), generation));
            writes.push(put(&format!("r/c{c:03}"), generation));
        }
    }
    let applied = transactions(writes, 128, usize::MAX).concat();
    assert_eq!(applied.len(), 600);
    for c in 0..300 {
        let at = |k: String| applied.iter().position(|w| key(w) == k).unwrap();
        assert!(
            at(format!("t/c{c:03}")) < at(format!("r/c{c:03}")),
            "c{c:03}"
        );
    }
    // A range deleted: split as written (its effect would cut the range around 400 keys).
    let mut writes = vec![range("a", "z")];
    writes.extend((0..400).map(|i| put(&format!("k{i:03}"), "v")));
    let split = transactions(writes, 128, usize::MAX);
    assert!(split.iter().all(|t| t.len() <= 128));
    assert_eq!(
        split.len(),
        4,
        "{:?}",
        split.iter().map(Vec::len).collect::<Vec<_>>()
    );
}

/// A batch that writes `key` on condition that `on` holds what it held.
fn on_condition(on: &str, key: &str) -> Shape {
    Shape {
        ops: 1,
        bytes: 100,
        compares: 1,
        conditions: vec![on.as_bytes().to_vec()],
        written: vec![key.as_bytes().to_vec()],
        ..Shape::default()
    }
}

#[test]
fn batches_on_condition_share_transactions_within_etcds_limits() {
    // 300 links' records, each written on condition that it is still the one read: three
    // transactions of up to 126 compares (two left for the hold and the leader's fence).
    let links: Vec<Shape> = (0..300)
        .map(|i| on_condition(&format!("c{i}"), &format!("c{i}")))
        .collect();
    assert_eq!(groups(&links, 128, usize::MAX), [126, 126, 48]);
    // Bytes bound them too.
    assert_eq!(groups(&links, 128, 1_000), vec![10; 30]);
    // Unconditional writes (reports) join them, within the op limit.
    let mut mixed = Vec::new();
    for i in 0..10 {
        mixed.push(on_condition(&format!("c{i}"), &format!("c{i}")));
        mixed.push(Shape {
            ops: 20,
            written: vec![format!("r{i}").into_bytes()],
            ..Shape::default()
        });
    }
    let lens = groups(&mixed, 128, usize::MAX);
    assert_eq!(lens.iter().sum::<usize>(), 20);
    assert_eq!(lens, [13, 7]);
}

#[test]
fn a_condition_on_a_key_written_before_it_starts_a_transaction_of_its_own() {
    // The second is on the record the first writes: one at a time it checks the first's write,
    // so it must not be checked before it, in the same transaction.
    let shapes = [
        on_condition("a", "a"),
        on_condition("b", "b"),
        on_condition("a", "a"),
        on_condition("c", "c"),
    ];
    assert_eq!(groups(&shapes, 128, usize::MAX), [2, 2]);
    // A batch that deletes a range, one over the limits, or one with as many conditions as a
    // transaction takes goes alone.
    let alone = Shape {
        alone: true,
        ..on_condition("x", "x")
    };
    let shapes = [
        on_condition("a", "a"),
        alone.clone(),
        on_condition("b", "b"),
        on_condition("c", "c"),
    ];
    assert_eq!(groups(&shapes, 128, usize::MAX), [1, 1, 2]);
}

/// A batch of one cluster's desired state (unordered), writing `keys`.
fn desired(keys: &[&str]) -> Shape {
    Shape {
        unordered: true,
        ops: keys.len(),
        bytes: 100,
        written: keys.iter().map(|k| k.as_bytes().to_vec()).collect(),
        ..Shape::default()
    }
}

#[test]
fn transactions_of_unordered_batches_go_at_once_until_an_ordered_one_or_a_key_written_again() {
    // 300 clusters' desired state (a Target and the record each), grouped 64 to a transaction:
    // five transactions, all at once.
    let clusters: Vec<Shape> = (0..300)
        .map(|i| desired(&[&format!("t{i}"), &format!("d{i}")]))
        .collect();
    let lens = groups(&clusters, 128, usize::MAX);
    assert_eq!(lens, [64, 64, 64, 64, 44]);
    assert_eq!(waves(&clusters, &lens), [5]);
    // An ordered write between them (a report) ends the run: what comes before it is applied
    // before it, what comes after, after.
    let report = Shape {
        ops: 1,
        bytes: 100,
        written: vec![b"r".to_vec()],
        ..Shape::default()
    };
    let mut mixed: Vec<Shape> = clusters[..128].to_vec();
    mixed.push(report.clone());
    mixed.extend(clusters[128..].iter().cloned());
    let lens = groups(&mixed, 128, usize::MAX);
    // The third transaction: the report and 63 clusters after it.
    assert_eq!(lens, [64, 64, 64, 64, 45]);
    assert_eq!(waves(&mixed, &lens), [2, 1, 2]);
    // A group holding an ordered batch is a run of its own.
    let lens = groups(&mixed, 1_000, usize::MAX);
    assert_eq!(lens, [301]);
    assert_eq!(waves(&mixed, &lens), [1]);
    // A cluster written twice (two recomputes before one flush): its second write goes after
    // the first, in the next run, so that it stands.
    let twice = vec![
        desired(&["t0", "d0"]),
        desired(&["t1", "d1"]),
        desired(&["t0", "d0"]),
        desired(&["t2", "d2"]),
    ];
    let lens = groups(&twice, 4, usize::MAX);
    assert_eq!(lens, [2, 2]);
    assert_eq!(waves(&twice, &lens), [1, 1]);
    // A batch over the limits (split in order) is a run of its own.
    let alone = Shape {
        alone: true,
        ..Shape::default()
    };
    let split = vec![desired(&["a"]), alone, desired(&["b"]), desired(&["c"])];
    let lens = groups(&split, 1, usize::MAX);
    assert_eq!(waves(&split, &lens), [1, 1, 2]);
}

async fn connect(etcd: &EtcdServer, prefix: &str) -> EtcdBackend {
    let mut options = EtcdOptions::new(vec![etcd.endpoint()]);
    options.prefix = prefix.into();
    EtcdBackend::connect(&options).await.unwrap()
}

async fn all(backend: &EtcdBackend, tree: Tree) -> Entries {
    backend
        .scan(tree, KeyRange::all(), Order::Ascending, usize::MAX)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_batch_larger_than_a_transaction_is_applied_in_order() {
    let etcd = EtcdServer::start();
    let backend = connect(&etcd, "/gitfleet/").await;
    // 1,000 writes, some of one key, with a range deleted in the middle: more than etcd's 128
    // operations per transaction.
    let mut batch = Batch::default();
    for i in 0..600u32 {
        batch.put(Tree::Events, i.to_be_bytes(), b"old".to_vec());
    }
    batch.delete_range(
        Tree::Events,
        KeyRange {
            start: 100u32.to_be_bytes().to_vec(),
            end: Some(500u32.to_be_bytes().to_vec()),
        },
    );
    for i in 200..600u32 {
        batch.put(Tree::Events, i.to_be_bytes(), b"new".to_vec());
    }
    backend.commit(batch).await.unwrap();
    let entries = all(&backend, Tree::Events).await;
    let expected: Entries = (0..600u32)
        .filter(|i| !(100..200).contains(i))
        .map(|i| {
            let value: &[u8] = if i < 100 { b"old" } else { b"new" };
            (i.to_be_bytes().to_vec(), value.to_vec())
        })
        .collect();
    assert_eq!(entries.len(), expected.len());
    assert_eq!(entries, expected);
    assert_eq!(backend.count(Tree::Events).await.unwrap(), 500);
    // Read back in pages, newest first, with a limit across pages.
    let newest = backend
        .scan(Tree::Events, KeyRange::all(), Order::Descending, 300)
        .await
        .unwrap();
    assert_eq!(newest.len(), 300);
    assert_eq!(newest[0].0, 599u32.to_be_bytes().to_vec());
    assert_eq!(newest[299].0, 300u32.to_be_bytes().to_vec());
}

#[tokio::test]
async fn a_conditional_batch_larger_than_a_transaction_is_refused_whole() {
    let etcd = EtcdServer::start();
    let backend = connect(&etcd, "/gitfleet/").await;
    let mut batch = Batch::default();
    batch.require(Tree::Tokens, "h", None);
    for i in 0..200u32 {
        batch.put(Tree::Clusters, format!("c{i}"), b"{}".to_vec());
    }
    let err = backend.commit(batch).await.unwrap_err().to_string();
    assert!(
        err.contains("conditional store write of 200 operations")
            && err.contains("128 operations")
            && err.contains("--etcd-max-txn-ops"),
        "{err}"
    );
    assert_eq!(backend.count(Tree::Clusters).await.unwrap(), 0);
}

#[tokio::test]
async fn the_op_limit_follows_etcds_flag() {
    // An etcd that takes 512 operations per transaction, and a hub told so: a conditional batch
    // of 200 writes is one transaction.
    let etcd = EtcdServer::start_with(&["--max-txn-ops", "512"]);
    let mut options = EtcdOptions::new(vec![etcd.endpoint()]);
    options.max_txn_ops = 512;
    let backend = EtcdBackend::connect(&options).await.unwrap();
    let mut batch = Batch::default();
    batch.require(Tree::Tokens, "h", None);
    for i in 0..200u32 {
        batch.put(Tree::Clusters, format!("c{i}"), b"{}".to_vec());
    }
    backend.commit(batch).await.unwrap();
    assert_eq!(backend.count(Tree::Clusters).await.unwrap(), 200);
    // A hub that claims more than its etcd takes is told which flag is wrong.
    let etcd = EtcdServer::start();
    let mut options = EtcdOptions::new(vec![etcd.endpoint()]);
    options.max_txn_ops = 512;
    let backend = EtcdBackend::connect(&options).await.unwrap();
    let mut batch = Batch::default();
    for i in 0..200u32 {
        batch.put(Tree::Clusters, format!("c{i}"), b"{}".to_vec());
    }
    let err = backend.commit(batch).await.unwrap_err().to_string();
    assert!(err.contains("--etcd-max-txn-ops"), "{err}");
}

#[tokio::test]
async fn a_value_larger_than_a_request_is_refused_by_name() {
    let etcd = EtcdServer::start();
    let backend = connect(&etcd, "/gitfleet/").await;
    let mut batch = Batch::default();
    batch.put(Tree::Clusters, "small", b"{}".to_vec()).put(
        Tree::Resources,
        "App/huge",
        vec![b'x'; 2 * 1024 * 1024],
    );
    let err = backend.commit(batch).await.unwrap_err().to_string();
    assert!(
        err.contains("resources/App/huge is 2097152 bytes")
            && err.contains("--etcd-max-request-bytes"),
        "{err}"
    );
    assert_eq!(backend.count(Tree::Clusters).await.unwrap(), 0);
    // Many values that together exceed a request go in several.
    let mut batch = Batch::default();
    for i in 0..8u32 {
        batch.put(Tree::Resources, format!("App/{i}"), vec![b'x'; 512 * 1024]);
    }
    backend.commit(batch).await.unwrap();
    assert_eq!(backend.count(Tree::Resources).await.unwrap(), 8);
}

#[tokio::test]
async fn prefixes_keep_stores_apart() {
    let etcd = EtcdServer::start();
    let one = connect(&etcd, "/one/").await;
    let two = connect(&etcd, "/two/").await;
    let mut batch = Batch::default();
    batch.put(Tree::Clusters, "eu-1", b"one".to_vec());
    one.commit(batch).await.unwrap();
    assert_eq!(two.get(Tree::Clusters, b"eu-1").await.unwrap(), None);
    assert_eq!(two.count(Tree::Clusters).await.unwrap(), 0);
    let mut batch = Batch::default();
    batch.delete_range(Tree::Clusters, KeyRange::all());
    two.commit(batch).await.unwrap();
    assert_eq!(
        one.get(Tree::Clusters, b"eu-1").await.unwrap(),
        Some(b"one".to_vec())
    );
}

#[tokio::test]
async fn an_unreachable_etcd_is_named_at_once() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let mut options = EtcdOptions::new(vec![endpoint.clone()]);
    options.connect_timeout = Duration::from_secs(2);
    let started = std::time::Instant::now();
    let err = EtcdBackend::connect(&options)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!("cannot reach etcd at {endpoint}")),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_lost_etcd_fails_sync() {
    let mut etcd = EtcdServer::start();
    let mut options = EtcdOptions::new(vec![etcd.endpoint()]);
    options.request_timeout = Duration::from_secs(2);
    let backend = EtcdBackend::connect(&options).await.unwrap();
    backend.sync().await.unwrap();
    etcd.kill();
    let err = backend.sync().await.unwrap_err().to_string();
    assert!(err.contains(&etcd.endpoint()), "{err}");
}

#[tokio::test]
async fn one_hub_holds_a_prefix_and_lets_go_when_it_stops() {
    let etcd = EtcdServer::start();
    let mut options = EtcdOptions::new(vec![etcd.endpoint()]);
    options.hold_ttl = Duration::from_secs(2);
    options.connect_timeout = Duration::from_secs(1);
    let first = EtcdBackend::connect_exclusive(&options).await.unwrap();
    let started = std::time::Instant::now();
    let err = EtcdBackend::connect_exclusive(&options)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!(
            "etcd prefix /gitfleet/ at {} is held by another hub",
            etcd.endpoint()
        )),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    // Another prefix is free.
    let mut other = options.clone();
    other.prefix = "/other/".into();
    let _other = EtcdBackend::connect_exclusive(&other).await.unwrap();
    // Once the first lets go, the prefix is taken again.
    drop(first);
    let second = EtcdBackend::connect_exclusive(&options).await.unwrap();
    let mut batch = Batch::default();
    batch.put(Tree::Clusters, "eu-1", b"{}".to_vec());
    second.commit(batch).await.unwrap();
}

#[tokio::test]
async fn a_hub_that_lost_its_hold_writes_nothing() {
    let etcd = EtcdServer::start();
    let options = EtcdOptions::new(vec![etcd.endpoint()]);
    let hub = EtcdBackend::connect_exclusive(&options).await.unwrap();
    // As when its lease ran out: the hold is gone.
    let mut client = etcd_client::Client::connect([etcd.endpoint()], None)
        .await
        .unwrap();
    client.delete("/gitfleet/lock", None).await.unwrap();
    let mut batch = Batch::default();
    batch.put(Tree::Clusters, "eu-1", b"{}".to_vec());
    let err = hub.commit(batch).await.unwrap_err().to_string();
    assert!(
        err.contains("this hub no longer holds etcd prefix /gitfleet/"),
        "{err}"
    );
    assert_eq!(hub.get(Tree::Clusters, b"eu-1").await.unwrap(), None);
    // A conditional write too, and its condition is not what is blamed.
    let mut batch = Batch::default();
    batch
        .require(Tree::Tokens, "h", None)
        .put(Tree::Tokens, "h", b"x".to_vec());
    let err = hub.commit(batch).await.unwrap_err().to_string();
    assert!(err.contains("no longer holds"), "{err}");
}

/// Two replicas' stores on `prefix` (a leader and a follower), the follower having seen the
/// clusters `names` the leader wrote.
async fn replicas_with(
    etcd: &EtcdServer,
    prefix: &str,
    names: &[String],
) -> (crate::store::Store, crate::store::Store) {
    use crate::store::Store;
    let follower = Store::with_backend(std::sync::Arc::new(connect(etcd, prefix).await))
        .await
        .unwrap();
    let leader = Store::with_backend(std::sync::Arc::new(connect(etcd, prefix).await))
        .await
        .unwrap();
    assert!(follower.is_shared() && leader.is_shared());
    for name in names {
        leader
            .put_cluster(&crate::store::tests::cluster(name))
            .unwrap();
    }
    leader.flush().await.unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while names.iter().any(|n| follower.cluster(n).unwrap().is_none()) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the follower never saw every cluster"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    (leader, follower)
}

/// Revokes `name` through `store`, durably.
async fn revoke(store: &crate::store::Store, name: &str) {
    store
        .update_cluster(name, |r| {
            (
                r.map(|r| crate::model::ClusterRecord {
                    revoked: true,
                    ..r.clone()
                }),
                (),
            )
        })
        .unwrap();
    store.flush().await.unwrap();
}

/// A link's write of `name`'s last contact (42), on condition that the record is the one read.
fn touch(store: &crate::store::Store, name: &str) -> crate::store::WriteCheck {
    store
        .update_cluster_if_unchanged(name, |r| {
            (
                r.map(|r| crate::model::ClusterRecord {
                    last_contact_unix: 42,
                    ..r.clone()
                }),
                (),
            )
        })
        .unwrap()
        .1
}

/// `name`'s record as etcd holds it.
async fn stored(etcd: &EtcdServer, prefix: &str, name: &str) -> crate::model::ClusterRecord {
    let raw = connect(etcd, prefix)
        .await
        .get(Tree::Clusters, name.as_bytes())
        .await
        .unwrap()
        .unwrap();
    serde_json::from_slice(&raw).unwrap()
}

/// A link's write of a cluster record (its last contact) races a revocation written by another
/// replica: the revocation stands, and the link's writer learns its write was not made.
#[tokio::test]
async fn a_write_on_condition_loses_a_race_with_another_replica_and_says_so() {
    use crate::store::StoreError;
    let etcd = EtcdServer::start();
    let (leader, follower) = replicas_with(&etcd, "/race/", &["dev-1".to_owned()]).await;

    // The follower has not yet heard of the revocation when it records the link's contact.
    let held = follower.hold_others_writes().await;
    revoke(&leader, "dev-1").await;
    let check = touch(&follower, "dev-1");
    drop(held);
    let outcome = check.confirm(&follower).await;
    assert!(
        matches!(outcome, Err(StoreError::Conflict(_))),
        "{outcome:?}"
    );
    assert!(follower.failure().is_none(), "a lost race is no failure");
    let stored_now = leader.cluster("dev-1").unwrap().unwrap();
    assert!(stored_now.revoked, "the revocation stands");
    assert!(stored(&etcd, "/race/", "dev-1").await.revoked);
    // The follower's copy is the record etcd holds, not its own lost write.
    let mine = follower.cluster("dev-1").unwrap().unwrap();
    assert!(mine.revoked && mine.last_contact_unix == 0, "{mine:?}");
}

/// Links connecting at once each write their cluster's record on condition that it is the
/// one they read: a replica sends those writes to etcd together, and the one that lost a race
/// with another replica (a revocation) is refused alone.
#[tokio::test]
async fn writes_on_condition_go_to_etcd_together_and_a_lost_race_refuses_only_its_own() {
    use crate::store::StoreError;
    let etcd = EtcdServer::start();
    let names: Vec<String> = (0..300).map(|i| format!("c{i:03}")).collect();
    let (leader, follower) = replicas_with(&etcd, "/many/", &names).await;

    // The follower has not yet heard of c150's revocation when its links record contact.
    let held = follower.hold_others_writes().await;
    revoke(&leader, "c150").await;
    let raw = connect(&etcd, "/many/").await;
    let revision = || async {
        raw.kv_get(b"/".to_vec(), Some(GetOptions::new().with_count_only()))
            .await
            .unwrap()
            .header()
            .unwrap()
            .revision()
    };
    let before = revision().await;
    let checks: Vec<_> = names.iter().map(|name| touch(&follower, name)).collect();
    drop(held);
    follower.flush().await.unwrap();
    // One transaction per record before: 299 made.
    let made = revision().await - before;
    assert!(made < 10, "{made} transactions for 300 records");
    for (name, check) in names.iter().zip(checks) {
        let outcome = check.confirm(&follower).await;
        match name.as_str() {
            "c150" => assert!(
                matches!(outcome, Err(StoreError::Conflict(_))),
                "{outcome:?}"
            ),
            _ => assert!(outcome.is_ok(), "{name}: {outcome:?}"),
        }
    }
    assert!(follower.failure().is_none(), "a lost race is no failure");
    for name in &names {
        let record = stored(&etcd, "/many/", name).await;
        match name.as_str() {
            "c150" => assert!(
                record.revoked && record.last_contact_unix == 0,
                "{record:?}"
            ),
            _ => assert!(
                !record.revoked && record.last_contact_unix == 42,
                "{record:?}"
            ),
        }
    }
}

/// A commit moving more Targets than the feed had slots for changes (140,000: one App's
/// Targets at 140,000 clusters, or a commit to many Apps) reaches a replica that has not read
/// its feed meanwhile whole: the feed counts watch responses, not changes, so it does not
/// overrun into a full read of the state.
#[tokio::test]
async fn a_commit_of_140000_changes_reaches_a_replica_that_did_not_read_meanwhile_whole() {
    use crate::store::Store;
    const CHANGES: usize = 140_000;
    let etcd = EtcdServer::start_with(&["--max-txn-ops", "4096"]);
    let mut options = EtcdOptions::new(vec![etcd.endpoint()]);
    options.prefix = "/feed/".into();
    options.max_txn_ops = 4096;
    let follower = Store::with_backend(std::sync::Arc::new(
        EtcdBackend::connect(&options).await.unwrap(),
    ))
    .await
    .unwrap();
    let mut feed = follower.subscribe_remote().unwrap();
    let leader = EtcdBackend::connect(&options).await.unwrap();
    let mut batch = Batch::default();
    for i in 0..CHANGES {
        batch.put(
            Tree::DesiredTargets,
            format!("c{i:06}\u{0}app"),
            b"{}".to_vec(),
        );
    }
    leader.commit(batch).await.unwrap();
    // Then a record the follower's mirror shows once it has applied everything before it.
    let mut marker = Batch::default();
    marker.put(
        Tree::Clusters,
        "marker",
        serde_json::to_vec(&crate::store::tests::cluster("marker")).unwrap(),
    );
    leader.commit(marker).await.unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    while follower.cluster("marker").unwrap().is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the follower never applied the commit"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let mut told = 0;
    loop {
        match feed.try_recv() {
            Ok(changes) => told += changes.len(),
            Err(tokio::sync::broadcast::error::TryRecvError::Empty) => break,
            Err(e) => panic!("the feed overran after {told} changes: {e}"),
        }
    }
    assert_eq!(told, CHANGES + 1);
}

/// A member killed while a request was being written to it: tonic answers UNKNOWN "transport
/// error" with the broken pipe underneath, which is no answer from etcd. It is sent again (to
/// a member that lives) rather than failing the store for good.
#[tokio::test]
async fn a_request_whose_connection_broke_under_it_is_sent_again() {
    let broken = || {
        etcd_client::Error::GRpcStatus(tonic::Status::from_error(Box::new(std::io::Error::new(
            std::io::ErrorKind::BrokenPipe,
            "stream closed because of a broken pipe",
        ))))
    };
    assert!(
        matches!(&broken(), etcd_client::Error::GRpcStatus(s) if s.code() == tonic::Code::Unknown)
    );
    assert!(unreachable_member(&broken()));
    let mut tries = 0;
    let answer = retry(
        Duration::from_secs(5),
        || false,
        || {
            tries += 1;
            let first = tries == 1;
            async move { if first { Err(broken()) } else { Ok(7) } }
        },
    )
    .await;
    assert_eq!(answer.unwrap(), 7);
    assert_eq!(tries, 2);
    // What etcd itself answers, even UNKNOWN, is its answer: not sent again.
    let answered = etcd_client::Error::GRpcStatus(tonic::Status::unknown("etcdserver: unknown"));
    assert!(!unreachable_member(&answered));
}

/// A watch whose reader falls behind (a busy replica) is sent what it missed in one response
/// once it reads again, here about 15 MiB: more than a gRPC client decodes by default (4 MiB),
/// which broke the watch again and again (a follower of 10,000 clusters, in `fleetsim`) until
/// etcd compacted what it had not read, and the replica failed.
#[tokio::test]
async fn a_watch_that_fell_behind_gets_what_it_missed() {
    let etcd = EtcdServer::start();
    let backend = connect(&etcd, "/catch-up/").await;
    let from = backend
        .kv_get(
            backend.prefix.clone(),
            Some(GetOptions::new().with_count_only()),
        )
        .await
        .unwrap()
        .header()
        .map_or(0, |h| h.revision())
        + 1;
    // A feed nobody reads while the writes go on: the watch stops reading etcd's stream, and
    // etcd holds back what follows until it can send it, then sends it together.
    let (tx, mut rx) = tokio::sync::mpsc::channel(1);
    let watcher = tokio::spawn(watch_changes(
        backend.watches.clone(),
        backend.prefix.clone(),
        backend.endpoints.clone(),
        from,
        tx,
    ));
    const WRITES: u32 = 400;
    for i in 0..WRITES {
        let mut batch = Batch::default();
        batch.put(Tree::Events, i.to_be_bytes(), vec![b'x'; 64 * 1024]);
        backend.commit(batch).await.unwrap();
    }
    let mut seen = 0;
    tokio::time::timeout(Duration::from_secs(30), async {
        while seen < WRITES as usize {
            let changes = rx
                .recv()
                .await
                .expect("the feed ended")
                .expect("the watch failed");
            seen += changes.len();
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the watch delivered {seen} of {WRITES} writes"));
    watcher.abort();
}

/// etcd keeps every version of every key until its history is compacted: at 10,000 clusters
/// (`fleetsim`) the reports filled etcd's 2 GiB quota within minutes and every write was
/// refused. The leader compacts every interval to the revision one interval back, and a watch
/// that keeps up (another replica's feed) goes on through it.
#[tokio::test]
async fn the_leader_compacts_etcds_history_and_a_watch_keeps_up() {
    let etcd = EtcdServer::start();
    let mut options = EtcdOptions::new(vec![etcd.endpoint()]);
    options.prefix = "/compact/".into();
    options.compaction_interval = Duration::from_secs(1);
    let backend = std::sync::Arc::new(EtcdBackend::connect(&options).await.unwrap());
    let before = backend.current_revision().await.unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    let watcher = tokio::spawn(watch_changes(
        backend.watches.clone(),
        backend.prefix.clone(),
        backend.endpoints.clone(),
        before + 1,
        tx,
    ));
    let write = |value: &'static str| {
        let mut batch = Batch::default();
        batch.put(Tree::Events, b"k".to_vec(), value.as_bytes().to_vec());
        batch
    };
    backend.commit(write("1")).await.unwrap();
    let mut candidacy = backend
        .stand("https://127.0.0.1:1".into(), Duration::from_secs(5))
        .await
        .unwrap();
    tokio::time::timeout(
        Duration::from_secs(10),
        candidacy.leadership.wait_for(|l| l.leads()),
    )
    .await
    .expect("the only candidate was never elected")
    .unwrap();
    let key = [backend.prefix.as_slice(), b"events/k"].concat();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let read = backend
            .kv
            .clone()
            .get(key.clone(), Some(GetOptions::new().with_revision(before)))
            .await;
        match read {
            Err(e) if e.to_string().contains("compacted") => break,
            Err(e) => panic!("reading at revision {before}: {e}"),
            Ok(_) => {}
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "etcd's history before revision {before} was never compacted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    backend.commit(write("2")).await.unwrap();
    let mut values = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), async {
        while !values.iter().any(|v: &Vec<u8>| v == b"2") {
            let changes = rx
                .recv()
                .await
                .expect("the feed ended")
                .expect("the watch failed through the compaction");
            values.extend(
                changes
                    .into_iter()
                    .filter(|c| c.tree == Tree::Events)
                    .filter_map(|c| c.value),
            );
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the watch did not see the write after the compaction: {values:?}"));
    assert_eq!(values.first().map(Vec::as_slice), Some(b"1".as_slice()));
    watcher.abort();
}

/// A commit's desired state (a Target and the record of each of 2,000 clusters) goes to etcd as
/// transactions sent at once (157 in turn took 1.4 s at 10,000 clusters); the writes queued
/// before it land before every one of them and the writes after, after; a cluster written twice
/// in one flush ends with its second state.
#[tokio::test]
async fn a_commits_desired_state_goes_to_etcd_in_transactions_at_once() {
    use crate::model::ClusterDesired;
    use crate::store::Store;
    use crate::store::tests::targets;
    let etcd = EtcdServer::start();
    let backend = std::sync::Arc::new(connect(&etcd, "/fan/").await);
    let store = Store::with_backend(backend.clone()).await.unwrap();
    let names: Vec<String> = (0..2_000).map(|i| format!("c{i:04}")).collect();
    store
        .put_cluster(&crate::store::tests::cluster("before"))
        .unwrap();
    let mut states = Vec::new();
    for name in &names {
        let state = ClusterDesired::default().next(targets(&[("web", "c1")]));
        store
            .put_desired(name, &ClusterDesired::default(), &state)
            .unwrap();
        states.push(state);
    }
    // c0007 again, at the next commit.
    let again = states[7].next(targets(&[("web", "c2")]));
    store.put_desired("c0007", &states[7], &again).unwrap();
    store
        .put_cluster(&crate::store::tests::cluster("after"))
        .unwrap();
    store.flush().await.unwrap();
    let most = backend.most_in_flight();
    assert!(most > 1, "{most} transaction(s) at once");

    let raw = connect(&etcd, "/fan/").await;
    let revisions = |tree: Tree| {
        let raw = &raw;
        async move {
            let (start, end) = raw.range(tree, &KeyRange::all());
            raw.kv_get(start, Some(GetOptions::new().with_range(end)))
                .await
                .unwrap()
                .take_kvs()
                .into_iter()
                .map(|kv| {
                    (
                        String::from_utf8_lossy(kv.key()).into_owned(),
                        kv.mod_revision(),
                    )
                })
                .collect::<Vec<_>>()
        }
    };
    let heads = revisions(Tree::Desired).await;
    let bodies = revisions(Tree::DesiredTargets).await;
    assert_eq!((heads.len(), bodies.len()), (2_000, 2_000));
    let clusters: std::collections::BTreeMap<String, i64> =
        revisions(Tree::Clusters).await.into_iter().collect();
    let before = clusters["/fan/clusters/before"];
    let after = clusters["/fan/clusters/after"];
    // (The writes next to the run may share its first or last transaction.)
    for (key, revision) in heads.iter().chain(&bodies) {
        assert!(
            before <= *revision && *revision <= after,
            "{key} at {revision}, outside [{before}, {after}]"
        );
    }
    // Each cluster's Target and record in one transaction (c0007's second write, made before
    // the first was flushed, with its record too, after the first).
    for ((head, at), (body, with)) in heads.iter().zip(&bodies) {
        assert_eq!(at, with, "{head} and {body}");
    }
    let loaded = Store::with_backend(std::sync::Arc::new(connect(&etcd, "/fan/").await))
        .await
        .unwrap()
        .desired_all()
        .await
        .unwrap();
    assert_eq!(loaded.len(), 2_000);
    assert_eq!(loaded["c0007"], again);
    assert_eq!(loaded["c0008"], states[8]);
}

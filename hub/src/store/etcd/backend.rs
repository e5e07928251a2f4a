//! The etcd backend proper (see the parent module for the layout and the limits).

use std::collections::BTreeMap;
use std::time::Duration;

use std::sync::{Mutex, MutexGuard};

use futures::future::BoxFuture;

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, ElectionClient, EventType, GetOptions,
    Identity, KvClient, LeaseClient, PutOptions, SortOrder, SortTarget, TlsOptions, Txn, TxnOp,
    TxnOpResponse, WatchClient, WatchOptions,
};

use super::super::backend::{
    Backend, BackendError, BackendFuture, Batch, Change, ChangeFeed, Condition, Entries, KeyRange,
    Op, Order, Tree,
};

use super::EtcdOptions;

/// What a request carries besides keys and values, at most: a transaction that fills the rest of
/// `max_request_bytes` with keys and values stays under etcd's limit.
const REQUEST_OVERHEAD: usize = 16 * 1024;
/// Per write in a transaction: its framing, at most.
const OP_OVERHEAD: usize = 32;
/// Keys a scan reads per request: a page of large values stays well under the decoding limit.
const SCAN_PAGE: usize = 256;
/// The largest response the client decodes (a scan page of large values).
const MAX_RESPONSE_BYTES: usize = 512 * 1024 * 1024;

pub struct EtcdBackend {
    pub(super) kv: KvClient,
    pub(super) leases: LeaseClient,
    watches: WatchClient,
    pub(super) elections: ElectionClient,
    /// This hub's hold on the prefix, if it took one: every write is conditional on it.
    hold: Option<Hold>,
    /// This replica's part in the election of the replicas sharing the prefix.
    pub(super) session: Mutex<Session>,
    /// The revisions of this store's transactions not yet taken by `own_revisions`.
    own: Mutex<Vec<i64>>,
    /// Transactions under way now, and the most there have been at once.
    in_flight: std::sync::atomic::AtomicUsize,
    most_in_flight: std::sync::atomic::AtomicUsize,
    /// How long a request may keep trying members that cannot be reached.
    request_timeout: Duration,
    prefix: Vec<u8>,
    endpoints: String,
    max_txn_ops: usize,
    /// Transactions of unordered batches (a commit's desired state) sent at once, at most:
    /// they need not wait for each other's round trip and disk sync.
    txns_in_flight: usize,
    /// Keys and values one transaction may carry.
    max_txn_bytes: usize,
    /// How often the leader compacts etcd's history (zero: never).
    pub(super) compaction_interval: Duration,
}

impl std::fmt::Debug for EtcdBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdBackend")
            .field("endpoints", &self.endpoints)
            .field("prefix", &String::from_utf8_lossy(&self.prefix))
            .finish_non_exhaustive()
    }
}

/// A replica's standing with etcd when several share the prefix (see `super::election`).
#[derive(Debug, Default)]
pub(super) struct Session {
    /// The lease of this replica's election candidacy; its presence records carry it too.
    pub(super) lease: Option<i64>,
    /// While this replica leads: its election key and the revision that created it. Every
    /// transaction is then conditional on that key still having been created at that
    /// revision, so that a replica whose lease ran out (and whose successor may already
    /// write) writes nothing more.
    pub(super) leader: Option<(Vec<u8>, i64)>,
    /// Why this replica lost its lease, once it has: every later transaction is refused.
    pub(super) lost: Option<String>,
}

/// A key under the prefix that names the one hub writing there, attached to a lease the hub
/// keeps alive: when the hub stops or loses etcd for longer than the lease, the key goes.
#[derive(Debug)]
struct Hold {
    key: Vec<u8>,
    owner: Vec<u8>,
    lease: i64,
    ttl: Duration,
    keeper: tokio::task::JoinHandle<()>,
}

/// Lets go of the prefix at once (a hub restarted in place takes it again without waiting for
/// the lease to run out).
impl Drop for EtcdBackend {
    fn drop(&mut self) {
        let mut leases = Vec::new();
        if let Some(hold) = self.hold.take() {
            hold.keeper.abort();
            leases.push(hold.lease);
        }
        leases.extend(self.session().lease.take());
        if leases.is_empty() {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let mut client = self.leases.clone();
            runtime.spawn(async move {
                for lease in leases {
                    let _ = client.revoke(lease).await;
                }
            });
        }
    }
}

impl EtcdBackend {
    /// Connects like [`connect`](Self::connect) and takes the prefix for this hub alone: the
    /// trait's one writer. Another hub holding it is waited for (it may have been killed and its
    /// lease not yet run out) up to `hold_ttl` and the connect timeout, then refused by name.
    /// Every write afterwards is conditional on the hold, so that a hub whose lease ran out
    /// (etcd out of its reach for longer than `hold_ttl`) writes nothing more.
    pub async fn connect_exclusive(options: &EtcdOptions) -> Result<Self, BackendError> {
        let mut backend = Self::connect(options).await?;
        let key = [backend.prefix.as_slice(), b"lock"].concat();
        let owner = hex::encode(rand::random::<[u8; 16]>()).into_bytes();
        let ttl_secs = i64::try_from(options.hold_ttl.as_secs().max(2)).unwrap_or(i64::MAX);
        let lease = backend
            .leases
            .grant(ttl_secs, None)
            .await
            .map_err(|e| backend.error(e))?
            .id();
        let deadline = tokio::time::Instant::now() + options.hold_ttl + options.connect_timeout;
        loop {
            let take = Txn::new()
                .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(
                    key.clone(),
                    owner.clone(),
                    Some(PutOptions::new().with_lease(lease)),
                )])
                .or_else([TxnOp::get(key.clone(), None)]);
            let response = backend
                .kv
                .clone()
                .txn(take)
                .await
                .map_err(|e| backend.error(e))?;
            if response.succeeded() {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                let holder = response
                    .op_responses()
                    .into_iter()
                    .find_map(|r| match r {
                        TxnOpResponse::Get(get) => get
                            .kvs()
                            .first()
                            .map(|kv| String::from_utf8_lossy(kv.value()).into_owned()),
                        _ => None,
                    })
                    .unwrap_or_default();
                let _ = backend.leases.revoke(lease).await;
                return Err(BackendError::Storage(format!(
                    "etcd prefix {} at {} is held by another hub ({holder}): one hub per prefix (a hub that stopped without letting go frees it within {})",
                    options.prefix,
                    backend.endpoints,
                    humantime::format_duration(options.hold_ttl)
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let keeper = tokio::spawn(keep_alive(
            backend.leases.clone(),
            lease,
            options.hold_ttl / 3,
        ));
        backend.hold = Some(Hold {
            key,
            owner,
            lease,
            ttl: options.hold_ttl,
            keeper,
        });
        Ok(backend)
    }

    /// Connects to etcd and checks that it answers within the connect timeout, so that a hub
    /// pointed at an unreachable etcd says so at startup rather than on its first write.
    pub async fn connect(options: &EtcdOptions) -> Result<Self, BackendError> {
        let endpoints = options.endpoints.join(",");
        let unreachable = |e: &dyn std::fmt::Display| {
            BackendError::Storage(format!("cannot reach etcd at {endpoints}: {e}"))
        };
        if options.endpoints.is_empty() {
            return Err(BackendError::Storage(
                "no etcd endpoint given (--etcd-endpoints)".into(),
            ));
        }
        if options.prefix.is_empty() {
            return Err(BackendError::Storage(
                "the etcd key prefix is empty (--etcd-prefix): the store would take etcd's whole key space".into(),
            ));
        }
        if options.max_txn_ops == 0 || options.max_request_bytes <= REQUEST_OVERHEAD {
            return Err(BackendError::Storage(format!(
                "etcd limits too small: {} operations, {} bytes per transaction",
                options.max_txn_ops, options.max_request_bytes
            )));
        }
        let mut connect = ConnectOptions::new()
            .with_connect_timeout(options.connect_timeout)
            .with_timeout(options.request_timeout)
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
        if let Some(tls) = &options.tls {
            let mut config = TlsOptions::new();
            if let Some(ca) = &tls.ca_pem {
                config = config.ca_certificate(Certificate::from_pem(ca));
            }
            if let Some((cert, key)) = &tls.identity {
                config = config.identity(Identity::from_pem(cert, key));
            }
            connect = connect.with_tls(config);
        }
        let client = tokio::time::timeout(
            options.connect_timeout,
            Client::connect(&options.endpoints, Some(connect)),
        )
        .await
        .map_err(|_| unreachable(&"timed out connecting"))?
        .map_err(|e| unreachable(&e))?;
        let mut kv = client
            .kv_client()
            .max_decoding_message_size(MAX_RESPONSE_BYTES);
        // The channel connects lazily: a read proves that etcd is there and has a quorum.
        tokio::time::timeout(
            options.connect_timeout,
            kv.get(
                options.prefix.as_bytes(),
                Some(GetOptions::new().with_count_only()),
            ),
        )
        .await
        .map_err(|_| {
            unreachable(&format!(
                "no answer within {}",
                humantime::format_duration(options.connect_timeout)
            ))
        })?
        .map_err(|e| unreachable(&e))?;
        Ok(Self {
            kv,
            leases: client.lease_client(),
            // A watch that catches up sends many transactions' events in one response.
            watches: client
                .watch_client()
                .max_decoding_message_size(MAX_RESPONSE_BYTES),
            elections: client.election_client(),
            hold: None,
            session: Mutex::new(Session::default()),
            own: Mutex::new(Vec::new()),
            in_flight: Default::default(),
            most_in_flight: Default::default(),
            request_timeout: options.request_timeout,
            prefix: options.prefix.as_bytes().to_vec(),
            endpoints,
            max_txn_ops: options.max_txn_ops,
            txns_in_flight: options.txns_in_flight.max(1),
            max_txn_bytes: options.max_request_bytes - REQUEST_OVERHEAD,
            compaction_interval: options.compaction_interval,
        })
    }

    /// The most transactions this backend has had under way at once.
    #[cfg(test)]
    pub(super) fn most_in_flight(&self) -> usize {
        self.most_in_flight
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    pub(super) fn session(&self) -> MutexGuard<'_, Session> {
        self.session
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(super) fn prefix(&self) -> &[u8] {
        &self.prefix
    }

    pub(super) fn endpoints(&self) -> &str {
        &self.endpoints
    }

    fn tree_prefix(&self, tree: Tree) -> Vec<u8> {
        let mut key = self.prefix.clone();
        key.extend_from_slice(tree.name().as_bytes());
        key.push(b'/');
        key
    }

    fn key(&self, tree: Tree, key: &[u8]) -> Vec<u8> {
        let mut full = self.tree_prefix(tree);
        full.extend_from_slice(key);
        full
    }

    /// The etcd keys of `range` in `tree`: start included, end excluded.
    fn range(&self, tree: Tree, range: &KeyRange) -> (Vec<u8>, Vec<u8>) {
        let start = self.key(tree, &range.start);
        let end = match &range.end {
            Some(end) => self.key(tree, end),
            // The tree's prefix ends with `/`, so its end is the prefix with `/` bumped to `0`.
            None => {
                let mut end = self.tree_prefix(tree);
                if let Some(last) = end.last_mut() {
                    *last += 1;
                }
                end
            }
        };
        (start, end)
    }

    /// A read, tried again while the member it went to cannot be reached (see [`retry`]).
    pub(super) async fn kv_get(
        &self,
        key: Vec<u8>,
        options: Option<GetOptions>,
    ) -> Result<etcd_client::GetResponse, BackendError> {
        retry(
            self.request_timeout,
            || self.session().lost.is_some(),
            || {
                let mut kv = self.kv.clone();
                let (key, options) = (key.clone(), options.clone());
                async move { kv.get(key, options).await }
            },
        )
        .await
        .map_err(|e| self.error(e))
    }

    /// A transaction, tried again while the member it went to cannot be reached (see
    /// [`retry`]).
    async fn kv_txn(&self, txn: Txn) -> Result<etcd_client::TxnResponse, BackendError> {
        let _counted = InFlight::count(self);
        retry(
            self.request_timeout,
            || self.session().lost.is_some(),
            || {
                let mut kv = self.kv.clone();
                let txn = txn.clone();
                async move { kv.txn(txn).await }
            },
        )
        .await
        .map_err(|e| self.error(e))
    }

    pub(super) fn error(&self, e: etcd_client::Error) -> BackendError {
        let message = e.to_string();
        // etcd's answers to a request over its limits, with the flag that raises them.
        let hint = if message.contains("too many operations in txn request") {
            " (the hub's --etcd-max-txn-ops is above etcd's --max-txn-ops)"
        } else if message.contains("request is too large") {
            " (the hub's --etcd-max-request-bytes is above etcd's --max-request-bytes)"
        } else if message.contains("database space exceeded") {
            " (etcd's database reached its --quota-backend-bytes: compact its history, \
             defragment it and disarm the alarm, see docs/ha.md; the leading hub compacts it \
             every --etcd-compaction-interval)"
        } else {
            ""
        };
        BackendError::Storage(format!("etcd at {}: {message}{hint}", self.endpoints))
    }

    async fn scan_now(
        &self,
        tree: Tree,
        range: &KeyRange,
        order: Order,
        limit: usize,
    ) -> Result<Entries, BackendError> {
        let (mut start, mut end) = self.range(tree, range);
        let strip = self.tree_prefix(tree).len();
        let mut entries = Vec::new();
        // Pages after the first read at the first one's revision: one snapshot, as if read at once.
        let mut revision = 0;
        while entries.len() < limit && start < end {
            let page = SCAN_PAGE.min(limit - entries.len());
            let mut options = GetOptions::new()
                .with_range(end.clone())
                .with_limit(i64::try_from(page).unwrap_or(i64::MAX))
                .with_revision(revision);
            if order == Order::Descending {
                options = options.with_sort(SortTarget::Key, SortOrder::Descend);
            }
            let mut response = self.kv_get(start.clone(), Some(options)).await?;
            if revision == 0 {
                revision = response.header().map_or(0, |h| h.revision());
            }
            let more = response.more();
            let kvs = response.take_kvs();
            let Some(last) = kvs.last().map(|kv| kv.key().to_vec()) else {
                break;
            };
            entries.extend(kvs.into_iter().map(|kv| {
                let (mut key, value) = kv.into_key_value();
                key.drain(..strip);
                (key, value)
            }));
            if !more {
                break;
            }
            match order {
                Order::Ascending => {
                    start = last;
                    start.push(0);
                }
                Order::Descending => end = last,
            }
        }
        Ok(entries)
    }

    async fn commit_now(&self, batch: Batch) -> Result<(), BackendError> {
        if batch.is_empty() {
            return Ok(());
        }
        let writes: Vec<Write> = batch.ops.iter().map(|op| self.write(op)).collect();
        for write in &writes {
            if let Write::Put { key, value } = write
                && key.len() + value.len() + OP_OVERHEAD > self.max_txn_bytes
            {
                let (tree, key) = self.split_key(key);
                return Err(BackendError::Storage(format!(
                    "store record {tree}/{key} is {} bytes, more than etcd takes in one request ({} bytes, --etcd-max-request-bytes)",
                    value.len(),
                    self.max_txn_bytes
                )));
            }
        }
        if !batch.conditions.is_empty() {
            let whole = effect(writes);
            if !fits(&whole, self.max_txn_ops, self.max_txn_bytes) {
                return Err(BackendError::Storage(format!(
                    "a conditional store write of {} operations ({} bytes) is more than etcd takes in one transaction ({} operations, {} bytes: --etcd-max-txn-ops, --etcd-max-request-bytes)",
                    whole.len(),
                    bytes(&whole),
                    self.max_txn_ops,
                    self.max_txn_bytes
                )));
            }
            return self.transaction(&batch.conditions, whole).await;
        }
        let given = writes.len();
        let transactions = transactions(writes, self.max_txn_ops, self.max_txn_bytes);
        let count = transactions.len();
        let started = std::time::Instant::now();
        for writes in transactions {
            self.transaction(&[], writes).await?;
        }
        tracing::debug!(
            writes = given,
            transactions = count,
            ms = started.elapsed().as_millis() as u64,
            "committed to etcd"
        );
        Ok(())
    }

    /// Applies `batches` in turn (see [`Backend::commit_all`]): consecutive batches that fit in
    /// one transaction together go as one, on all of their conditions. Each link writes its
    /// cluster's record on condition as its spoke connects, so 10,000 spokes connecting at once
    /// (a replica's restart, a failover) were 10,000 transactions in turn, each waiting for
    /// etcd's disk, and every report's acknowledgement waited behind them. The transactions of
    /// a run of unordered batches (see [`waves`]) go at once, up to `txns_in_flight`.
    async fn commit_all_now(&self, batches: Vec<Batch>) -> Vec<Result<(), BackendError>> {
        use futures::StreamExt;
        let shapes: Vec<Shape> = batches.iter().map(|b| self.shape(b)).collect();
        let lens = groups(&shapes, self.max_txn_ops, self.max_txn_bytes);
        let waves = waves(&shapes, &lens);
        let mut outcomes = Vec::with_capacity(batches.len());
        let mut rest = batches.into_iter();
        let mut lens = lens.into_iter();
        for wave in waves {
            let parts: Vec<Vec<Batch>> = lens
                .by_ref()
                .take(wave)
                .map(|len| rest.by_ref().take(len).collect())
                .collect();
            let started = std::time::Instant::now();
            let (count, writes) = (
                parts.len(),
                parts.iter().flatten().map(|b| b.ops.len()).sum::<usize>(),
            );
            // In order of the batches, whichever transaction etcd answers first.
            let mut done =
                futures::stream::iter(parts.into_iter().map(|part| self.commit_part(part)))
                    .buffered(self.txns_in_flight);
            let mut whole = true;
            while let Some((len, part)) = done.next().await {
                whole = part.len() == len && !part.iter().any(ends_commits);
                outcomes.extend(part);
                if !whole {
                    // Dropping the stream gives up the transactions still under way: they may
                    // have been applied, as the trait allows of an unordered run.
                    break;
                }
            }
            if count > 1 {
                tracing::debug!(
                    writes,
                    transactions = count,
                    ms = started.elapsed().as_millis() as u64,
                    "committed to etcd at once"
                );
            }
            if !whole {
                break;
            }
        }
        outcomes
    }

    /// A group of [`groups`] as one transaction (a batch over etcd's limits alone is split);
    /// how many batches it had, and the outcomes in order up to the first that ends the
    /// commits.
    async fn commit_part(&self, part: Vec<Batch>) -> (usize, Vec<Result<(), BackendError>>) {
        let len = part.len();
        match <[Batch; 1]>::try_from(part) {
            Ok([batch]) => (1, vec![self.commit_now(batch).await]),
            Err(group) => (len, self.commit_group(group).await),
        }
    }

    /// The batches of `group` as one transaction. When conditions do not hold, the batches
    /// they belong to are refused and the others tried again together (their conditions are
    /// on keys no batch before them in the group writes, so they stand without the refused).
    async fn commit_group(&self, group: Vec<Batch>) -> Vec<Result<(), BackendError>> {
        let mut outcomes: Vec<Option<Result<(), BackendError>>> =
            (0..group.len()).map(|_| None).collect();
        loop {
            let open: Vec<usize> = (0..group.len())
                .filter(|i| outcomes[*i].is_none())
                .collect();
            let Some(&first) = open.first() else {
                break;
            };
            let mut conditions = Vec::new();
            let mut owners = Vec::new();
            let mut writes = Vec::new();
            for &i in &open {
                conditions.extend(group[i].conditions.iter().cloned());
                owners.extend(group[i].conditions.iter().map(|_| i));
                writes.extend(group[i].ops.iter().map(|op| self.write(op)));
            }
            match self.attempt(&conditions, effect(writes)).await {
                Ok(Attempt::Applied) => {
                    for i in open {
                        outcomes[i] = Some(Ok(()));
                    }
                }
                Ok(Attempt::Refused(failed)) if !failed.is_empty() => {
                    for c in failed {
                        let (tree, key) = condition_key(&conditions[c]);
                        outcomes[owners[c]].get_or_insert(Err(BackendError::conflict(tree, key)));
                    }
                }
                // Changed again before the reads that tell which: each alone.
                Ok(Attempt::Refused(_)) => {
                    for i in open {
                        let done = self.commit_now(group[i].clone()).await;
                        let ends = ends_commits(&done);
                        outcomes[i] = Some(done);
                        if ends {
                            break;
                        }
                    }
                }
                Err(e) => {
                    outcomes[first] = Some(Err(e));
                    break;
                }
            }
        }
        // In order, up to the first that ends the commits (what follows it is not applied).
        let mut done = Vec::with_capacity(outcomes.len());
        for outcome in outcomes {
            let Some(outcome) = outcome else {
                break;
            };
            let ends = ends_commits(&outcome);
            done.push(outcome);
            if ends {
                break;
            }
        }
        done
    }

    /// Whether `batch` goes in a transaction of its own (see [`Shape::alone`]), and its size
    /// in bytes as [`Shape::bytes`] counts it.
    fn alone(&self, batch: &Batch) -> (bool, usize) {
        let mut range = false;
        let mut bytes = 0;
        for op in &batch.ops {
            bytes += OP_OVERHEAD
                + self.prefix.len()
                + match op {
                    Op::Put { tree, key, value } => tree.name().len() + 1 + key.len() + value.len(),
                    Op::Delete { tree, key } => tree.name().len() + 1 + key.len(),
                    Op::DeleteRange { .. } => {
                        range = true;
                        0
                    }
                };
        }
        // A condition is a compare (key, value) and a read (key) for when it does not hold.
        for condition in &batch.conditions {
            let (tree, key) = condition_key(condition);
            let value = match condition {
                Condition::Absent { .. } => 0,
                Condition::Equals { value, .. } => value.len(),
            };
            bytes +=
                2 * (OP_OVERHEAD + self.prefix.len() + tree.name().len() + 1 + key.len()) + value;
        }
        let alone = range
            || batch.ops.len() > self.max_txn_ops
            || batch.conditions.len() + FENCES > self.max_txn_ops
            || bytes > self.max_txn_bytes;
        (alone, bytes)
    }

    /// What [`groups`] needs to know of `batch`, from its writes as given (an upper bound of
    /// its effect), without copying a value: a large batch (a commit's desired state) is
    /// alone, and only small ones have their keys listed.
    fn shape(&self, batch: &Batch) -> Shape {
        let (alone, bytes) = self.alone(batch);
        let (conditions, written) = match alone {
            true => (Vec::new(), Vec::new()),
            false => (
                batch
                    .conditions
                    .iter()
                    .map(|c| {
                        let (tree, key) = condition_key(c);
                        self.key(tree, key)
                    })
                    .collect(),
                batch
                    .ops
                    .iter()
                    .filter_map(|op| match op {
                        Op::Put { tree, key, .. } | Op::Delete { tree, key } => {
                            Some(self.key(*tree, key))
                        }
                        Op::DeleteRange { .. } => None,
                    })
                    .collect(),
            ),
        };
        Shape {
            alone,
            unordered: batch.unordered && batch.conditions.is_empty() && !alone,
            ops: batch.ops.len(),
            bytes,
            compares: batch.conditions.len(),
            conditions,
            written,
        }
    }

    fn write(&self, op: &Op) -> Write {
        match op {
            Op::Put { tree, key, value } => Write::Put {
                key: self.key(*tree, key),
                value: value.clone(),
            },
            Op::Delete { tree, key } => Write::Delete {
                key: self.key(*tree, key),
            },
            Op::DeleteRange { tree, range } => {
                let (start, end) = self.range(*tree, range);
                Write::DeleteRange { start, end }
            }
        }
    }

    /// The tree and the store key of an etcd key, for messages.
    fn split_key(&self, key: &[u8]) -> (String, String) {
        let rest = key.strip_prefix(self.prefix.as_slice()).unwrap_or(key);
        let text = String::from_utf8_lossy(rest);
        match text.split_once('/') {
            Some((tree, key)) => (tree.to_owned(), key.to_owned()),
            None => (String::new(), text.into_owned()),
        }
    }

    /// One transaction: `writes` if every condition holds (and this replica's fences).
    async fn transaction(
        &self,
        conditions: &[Condition],
        writes: Vec<Write>,
    ) -> Result<(), BackendError> {
        match self.attempt(conditions, writes).await? {
            Attempt::Applied => Ok(()),
            Attempt::Refused(failed) => {
                // Changed between the compare and the reads (another writer): name the first.
                let condition = failed
                    .first()
                    .and_then(|i| conditions.get(*i))
                    .or(conditions.first());
                match condition {
                    Some(condition) => {
                        let (tree, key) = condition_key(condition);
                        Err(BackendError::conflict(tree, key))
                    }
                    None => Err(BackendError::Storage(format!(
                        "etcd at {} refused a write without saying why",
                        self.endpoints
                    ))),
                }
            }
        }
    }

    /// One transaction; when a condition does not hold, which do not (by index: none when
    /// they changed between the compare and the reads that tell). A fence that no longer
    /// holds is an error.
    async fn attempt(
        &self,
        conditions: &[Condition],
        writes: Vec<Write>,
    ) -> Result<Attempt, BackendError> {
        if conditions.len() + 1 > self.max_txn_ops {
            return Err(BackendError::Storage(format!(
                "a store write with {} conditions is more than etcd takes in one transaction ({}, --etcd-max-txn-ops)",
                conditions.len(),
                self.max_txn_ops
            )));
        }
        let mut compares: Vec<Compare> = conditions
            .iter()
            .map(|c| match c {
                Condition::Absent { tree, key } => {
                    Compare::create_revision(self.key(*tree, key), CompareOp::Equal, 0)
                }
                Condition::Equals { tree, key, value } => {
                    Compare::value(self.key(*tree, key), CompareOp::Equal, value.clone())
                }
            })
            .collect();
        // When a compare fails, these reads tell which.
        let mut reads: Vec<TxnOp> = conditions
            .iter()
            .map(|c| {
                let (tree, key) = condition_key(c);
                TxnOp::get(self.key(tree, key), None)
            })
            .collect();
        if let Some(hold) = &self.hold {
            compares.push(Compare::value(
                hold.key.clone(),
                CompareOp::Equal,
                hold.owner.clone(),
            ));
            reads.push(TxnOp::get(hold.key.clone(), None));
        }
        let (lease, leader) = {
            let session = self.session();
            if let Some(why) = &session.lost {
                return Err(BackendError::Storage(why.clone()));
            }
            (session.lease, session.leader.clone())
        };
        if let Some((key, revision)) = &leader {
            compares.push(Compare::create_revision(
                key.clone(),
                CompareOp::Equal,
                *revision,
            ));
            reads.push(TxnOp::get(key.clone(), None));
        }
        let presence = self.tree_prefix(Tree::Presence);
        let ops: Vec<TxnOp> = writes
            .into_iter()
            .map(|w| match w {
                // A replica's presence records go with its lease: a replica that dies takes
                // them with it.
                Write::Put { key, value } if key.starts_with(&presence) => {
                    TxnOp::put(key, value, lease.map(|l| PutOptions::new().with_lease(l)))
                }
                Write::Put { key, value } => TxnOp::put(key, value, None),
                Write::Delete { key } => TxnOp::delete(key, None),
                Write::DeleteRange { start, end } => TxnOp::delete(
                    start,
                    Some(etcd_client::DeleteOptions::new().with_range(end)),
                ),
            })
            .collect();
        let response = self
            .kv_txn(Txn::new().when(compares).and_then(ops).or_else(reads))
            .await?;
        if response.succeeded() {
            if let Some(header) = response.header() {
                self.own
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(header.revision());
            }
            return Ok(Attempt::Applied);
        }
        let found = response.op_responses();
        if let Some((key, revision)) = &leader {
            let created = match found.last() {
                Some(TxnOpResponse::Get(get)) => get.kvs().first().map(|kv| kv.create_revision()),
                _ => None,
            };
            if created != Some(*revision) {
                let why = format!(
                    "this hub replica no longer leads on etcd prefix {} at {} (its election key {} is gone: its lease ran out, etcd was out of its reach): it writes nothing more; restart it",
                    String::from_utf8_lossy(&self.prefix),
                    self.endpoints,
                    String::from_utf8_lossy(key),
                );
                self.session().lost.get_or_insert(why.clone());
                return Err(BackendError::Storage(why));
            }
        }
        if let Some(hold) = &self.hold {
            let holder = match found.last() {
                Some(TxnOpResponse::Get(get)) => get.kvs().first().map(|kv| kv.value().to_vec()),
                _ => None,
            };
            if holder.as_ref() != Some(&hold.owner) {
                return Err(BackendError::Storage(format!(
                    "this hub no longer holds etcd prefix {} at {} (etcd was out of its reach for longer than {}, or another hub took the prefix): it writes nothing more; restart it",
                    String::from_utf8_lossy(&self.prefix),
                    self.endpoints,
                    humantime::format_duration(hold.ttl)
                )));
            }
        }
        let failed = conditions
            .iter()
            .zip(found)
            .enumerate()
            .filter(|(_, (condition, answer))| {
                let value = match answer {
                    TxnOpResponse::Get(get) => get.kvs().first().map(|kv| kv.value()),
                    _ => None,
                };
                let expected = match condition {
                    Condition::Absent { .. } => None,
                    Condition::Equals { value, .. } => Some(value.as_slice()),
                };
                value != expected
            })
            .map(|(i, _)| i)
            .collect();
        Ok(Attempt::Refused(failed))
    }
}

/// Keeps `lease` alive, every `every`, until its task is aborted; a lost stream is opened
/// again. A lease that ran out is not renewed: the hold is gone, and with it every later write.
async fn keep_alive(mut leases: LeaseClient, lease: i64, every: Duration) {
    let mut stream = None;
    loop {
        if stream.is_none() {
            stream = leases.keep_alive(lease).await.ok();
        }
        if let Some((keeper, answers)) = &mut stream {
            let answer = match keeper.keep_alive().await {
                Ok(()) => answers.message().await,
                Err(e) => Err(e),
            };
            match answer {
                Ok(Some(answer)) if answer.ttl() > 0 => {}
                Ok(Some(_)) => {
                    tracing::error!(
                        "the hub's lease on its etcd prefix ran out: etcd refuses its writes from now on"
                    );
                    return;
                }
                Ok(None) | Err(_) => stream = None,
            }
        }
        tokio::time::sleep(every).await;
    }
}

/// `request` until it succeeds, fails for another reason than an unreachable member, or
/// `within` has passed. The client spreads requests over every endpoint and keeps sending some
/// to a member that died: with the others up (a quorum), a request that could not reach its
/// member is sent again. Sending one again is safe: a request that never reached etcd did
/// nothing, and one that did is whole writes of whole records, or conditions that then fail
/// with a conflict (the store's error for a lost race).
/// A replica that lost its lease (`lost`) stops trying at once: it may write nothing more.
async fn retry<T, F, Fut>(
    within: Duration,
    lost: impl Fn() -> bool,
    mut request: F,
) -> Result<T, etcd_client::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
{
    let deadline = tokio::time::Instant::now() + within;
    let mut backoff = Duration::from_millis(20);
    loop {
        match request().await {
            Err(e)
                if unreachable_member(&e)
                    && !lost()
                    && tokio::time::Instant::now() + backoff < deadline =>
            {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
            answer => return answer,
        }
    }
}

/// Whether `e` says the member a request went to could not be reached, or the connection broke
/// under it (not that etcd refused the request).
fn unreachable_member(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
        // A connection that broke under the request: it may or may not have reached etcd.
        etcd_client::Error::GRpcStatus(status) => match status.code() {
            tonic::Code::Unavailable | tonic::Code::Cancelled => true,
            // tonic answers UNKNOWN "transport error" when the connection broke while the
            // request was being written (a broken pipe to a member just killed): no answer
            // from etcd, only the transport's failure underneath.
            tonic::Code::Unknown => broke_underneath(status),
            _ => false,
        },
        _ => false,
    }
}

/// Whether a status carries a transport or I/O failure among its sources, rather than an
/// answer etcd gave.
fn broke_underneath(status: &tonic::Status) -> bool {
    let mut next = std::error::Error::source(status);
    while let Some(e) = next {
        // hyper's error: the HTTP/2 connection broke while the answer was read ("error
        // reading a body from connection", a broken pipe to a member just killed).
        if e.is::<tonic::transport::Error>() || e.is::<std::io::Error>() || e.is::<hyper::Error>() {
            return true;
        }
        next = e.source();
    }
    false
}

/// Sends every change under `prefix` from revision `from` on to `feed`, a transaction's
/// together, until the feed is dropped. A broken stream is opened again where it stopped; etcd
/// having compacted what the feed has not yet seen ends it with an error.
async fn watch_changes(
    mut client: WatchClient,
    prefix: Vec<u8>,
    endpoints: String,
    mut from: i64,
    feed: tokio::sync::mpsc::Sender<Result<Vec<Change>, BackendError>>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(from)
            .with_progress_notify();
        let mut stream = match client.watch(prefix.clone(), Some(options)).await {
            Ok(stream) => stream,
            Err(e) => {
                tracing::warn!(error = %e, %endpoints, "cannot watch etcd; trying again");
                if feed.is_closed() {
                    return;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        loop {
            let response = tokio::select! {
                response = stream.message() => response,
                () = feed.closed() => return,
            };
            let response = match response {
                Ok(Some(response)) => response,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(error = %e, %endpoints, "the etcd watch broke; opening it again");
                    break;
                }
            };
            backoff = Duration::from_millis(100);
            if response.compact_revision() > 0 || response.canceled() {
                let why = if response.compact_revision() > 0 {
                    format!(
                        "etcd at {endpoints} compacted its history past revision {from} before this replica read it (compacted at {}): its copy of the store may miss writes; restart it",
                        response.compact_revision()
                    )
                } else {
                    format!(
                        "etcd at {endpoints} cancelled this replica's watch: {}",
                        response.cancel_reason()
                    )
                };
                let _ = feed.send(Err(BackendError::Storage(why))).await;
                return;
            }
            let mut batch: Vec<Change> = Vec::new();
            for event in response.events() {
                let Some(kv) = event.kv() else { continue };
                from = from.max(kv.mod_revision() + 1);
                let Some(rest) = kv.key().strip_prefix(prefix.as_slice()) else {
                    continue;
                };
                // The store's keys are `{tree}/{key}`; the election's and the lock are not.
                let Some(slash) = rest.iter().position(|b| *b == b'/') else {
                    continue;
                };
                let Some(tree) = std::str::from_utf8(&rest[..slash])
                    .ok()
                    .and_then(Tree::from_name)
                else {
                    continue;
                };
                let change = Change {
                    revision: kv.mod_revision(),
                    tree,
                    key: rest[slash + 1..].to_vec(),
                    value: match event.event_type() {
                        EventType::Put => Some(kv.value().to_vec()),
                        EventType::Delete => None,
                    },
                };
                // A transaction's changes go together; the next one starts a new batch.
                if batch.last().is_some_and(|c| c.revision != change.revision)
                    && feed.send(Ok(std::mem::take(&mut batch))).await.is_err()
                {
                    return;
                }
                batch.push(change);
            }
            if !batch.is_empty() && feed.send(Ok(batch)).await.is_err() {
                return;
            }
        }
    }
}

fn condition_key(condition: &Condition) -> (Tree, &[u8]) {
    match condition {
        Condition::Absent { tree, key } | Condition::Equals { tree, key, .. } => (*tree, key),
    }
}

/// One write, on etcd keys.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Write {
    Put { key: Vec<u8>, value: Vec<u8> },
    Delete { key: Vec<u8> },
    DeleteRange { start: Vec<u8>, end: Vec<u8> },
}

impl Write {
    fn bytes(&self) -> usize {
        OP_OVERHEAD
            + match self {
                Write::Put { key, value } => key.len() + value.len(),
                Write::Delete { key } => key.len(),
                Write::DeleteRange { start, end } => start.len() + end.len(),
            }
    }
}

fn bytes(writes: &[Write]) -> usize {
    writes.iter().map(Write::bytes).sum()
}

fn fits(writes: &[Write], max_ops: usize, max_bytes: usize) -> bool {
    writes.len() <= max_ops && bytes(writes) <= max_bytes
}

/// What `writes` applied in order do, as writes that etcd takes in one transaction: at most
/// one write per key, no key written inside a deleted range (etcd refuses both), ranges that do
/// not overlap. The ranges come first; the other writes keep the order of each key's last
/// write, which is the order other replicas' watches see them in (a cluster's desired Targets
/// before the record that names them).
fn effect(writes: impl IntoIterator<Item = Write>) -> Vec<Write> {
    // By key: when it was last written, and the value it ends with (`None`: deleted).
    let mut points: BTreeMap<Vec<u8>, (usize, Option<Vec<u8>>)> = BTreeMap::new();
    let mut ranges: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    for (at, write) in writes.into_iter().enumerate() {
        match write {
            Write::Put { key, value } => {
                points.insert(key, (at, Some(value)));
            }
            Write::Delete { key } => {
                points.insert(key, (at, None));
            }
            Write::DeleteRange { start, end } => {
                if start < end {
                    points.retain(|k, _| !(*k >= start && *k < end));
                    ranges.push((start, end));
                }
            }
        }
    }
    ranges.sort();
    let mut merged: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    for (start, end) in ranges {
        match merged.last_mut() {
            Some(last) if start <= last.1 => {
                if end > last.1 {
                    last.1 = end;
                }
            }
            _ => merged.push((start, end)),
        }
    }
    let mut out = Vec::new();
    for (start, end) in merged {
        // A key written after the range was deleted survives it: delete around it.
        let mut from = start;
        let inside: Vec<Vec<u8>> = points
            .range(from.clone()..end.clone())
            .map(|(k, _)| k.clone())
            .collect();
        for key in inside {
            // A key deleted on its own inside the range goes with the range.
            if let Some((_, Some(value))) = points.remove(&key) {
                if from < key {
                    out.push(Write::DeleteRange {
                        start: from,
                        end: key.clone(),
                    });
                }
                let mut after = key.clone();
                after.push(0);
                from = after;
                out.push(Write::Put { key, value });
            }
        }
        if from < end {
            out.push(Write::DeleteRange { start: from, end });
        }
    }
    let mut points: Vec<_> = points.into_iter().collect();
    points.sort_by_key(|(_, (at, _))| *at);
    out.extend(points.into_iter().map(|(key, (_, value))| match value {
        Some(value) => Write::Put { key, value },
        None => Write::Delete { key },
    }));
    out
}

/// What a transaction did.
#[derive(Debug)]
enum Attempt {
    Applied,
    /// A condition did not hold: those that did not, by index (none when they changed again
    /// before the reads that tell).
    Refused(Vec<usize>),
}

/// Compares every transaction may carry besides a batch's conditions: the hold on the prefix
/// and the leader's election key.
const FENCES: usize = 2;

/// A batch as [`groups`] sees it.
#[derive(Debug, Clone, Default)]
struct Shape {
    /// Goes in a transaction of its own: it deletes a range, is over etcd's limits alone (and
    /// is split, or refused), or has as many conditions as a transaction takes.
    alone: bool,
    /// May go in any order with its unordered neighbours (see [`Batch::in_any_order`]); never
    /// when it goes alone (a split batch's parts keep their order).
    unordered: bool,
    /// Its writes (as given: at least its effect's).
    ops: usize,
    /// Its writes' keys and values, its conditions' compares and reads.
    bytes: usize,
    compares: usize,
    /// The keys its conditions are on (none listed when it goes alone).
    conditions: Vec<Vec<u8>>,
    /// The keys it writes (none listed when it goes alone).
    written: Vec<Vec<u8>>,
}

/// Consecutive runs of batches (their lengths) that go as one transaction each: within etcd's
/// limits together, and none with a condition on a key a batch before it in the run writes
/// (the transaction checks every condition before any write, where one at a time would check
/// it after the writes before it).
fn groups(shapes: &[Shape], max_ops: usize, max_bytes: usize) -> Vec<usize> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < shapes.len() {
        let first = &shapes[at];
        let mut len = 1;
        if !first.alone {
            let (mut ops, mut bytes, mut compares) = (first.ops, first.bytes, first.compares);
            let mut written: std::collections::HashSet<&[u8]> =
                first.written.iter().map(Vec::as_slice).collect();
            while let Some(next) = shapes.get(at + len) {
                if next.alone
                    || ops + next.ops > max_ops
                    || bytes + next.bytes > max_bytes
                    || compares + next.compares + FENCES > max_ops
                    || next
                        .conditions
                        .iter()
                        .any(|k| written.contains(k.as_slice()))
                {
                    break;
                }
                ops += next.ops;
                bytes += next.bytes;
                compares += next.compares;
                written.extend(next.written.iter().map(Vec::as_slice));
                len += 1;
            }
        }
        out.push(len);
        at += len;
    }
    out
}

/// Consecutive runs of `groups` (how many groups each; a group's length in batches as
/// [`groups`] gives it) whose transactions may go at once: groups of unordered batches alone,
/// none writing a key an earlier group of its run writes (the later write must stand). Every
/// other group is a run of its own, after the run before it and before the next.
fn waves(shapes: &[Shape], groups: &[usize]) -> Vec<usize> {
    let mut out: Vec<usize> = Vec::new();
    let mut written: std::collections::HashSet<&[u8]> = std::collections::HashSet::new();
    // Whether the last run is one of unordered groups that a next one may join.
    let mut open = false;
    let mut at = 0;
    for &len in groups {
        let group = &shapes[at..(at + len).min(shapes.len())];
        at += len;
        let unordered = !group.is_empty() && group.iter().all(|s| s.unordered);
        let keys = || {
            group
                .iter()
                .flat_map(|s| s.written.iter().map(Vec::as_slice))
        };
        let joins = open && unordered && !keys().any(|k| written.contains(k));
        match out.last_mut() {
            Some(last) if joins => *last += 1,
            _ => {
                out.push(1);
                written.clear();
            }
        }
        open = unordered;
        if unordered {
            written.extend(keys());
        }
    }
    out
}

/// Counts a transaction under way while it lives.
struct InFlight<'a>(&'a EtcdBackend);

impl<'a> InFlight<'a> {
    fn count(backend: &'a EtcdBackend) -> Self {
        use std::sync::atomic::Ordering::SeqCst;
        let now = backend.in_flight.fetch_add(1, SeqCst) + 1;
        backend.most_in_flight.fetch_max(now, SeqCst);
        Self(backend)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0
            .in_flight
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Whether `outcome` ends a run of commits (see [`BackendError::ends_commits`]).
fn ends_commits(outcome: &Result<(), BackendError>) -> bool {
    outcome.as_ref().is_err_and(BackendError::ends_commits)
}

/// The transactions that apply `writes` in turn: their [`effect`] whole when it fits in one,
/// else that effect split in order (each key's last write counts), so that a key written many
/// times (a cluster's report, once per report since the last flush) costs one write, not one in
/// every transaction its writes fall in. At 10,000 clusters, the flush of the reports a burst
/// brought to a replica was over 800 transactions, each waiting for etcd's disk, where its
/// effect takes fewer than 30. A range deleted is cut around every key written after it in the
/// effect, so writes that delete a range (a migration, a sweep) are split as written instead.
fn transactions(writes: Vec<Write>, max_ops: usize, max_bytes: usize) -> Vec<Vec<Write>> {
    let whole = effect(writes.iter().cloned());
    if fits(&whole, max_ops, max_bytes) {
        return vec![whole];
    }
    let in_turn = if whole.iter().any(|w| matches!(w, Write::DeleteRange { .. })) {
        writes
    } else {
        whole
    };
    chunks(in_turn, max_ops, max_bytes)
        .into_iter()
        .map(effect)
        .collect()
}

/// `writes` in consecutive runs whose [`effect`] fits in a transaction each.
fn chunks(writes: Vec<Write>, max_ops: usize, max_bytes: usize) -> Vec<Vec<Write>> {
    let mut out = Vec::new();
    let mut chunk: Vec<Write> = Vec::new();
    let (mut puts, mut others, mut has_range, mut size) = (0usize, 0usize, false, 0usize);
    for write in writes {
        let (p, o, r) = match &write {
            Write::Put { .. } => (1, 0, false),
            Write::Delete { .. } => (0, 1, false),
            Write::DeleteRange { .. } => (0, 1, true),
        };
        // An upper bound of the effect's size: each put may cut a range in two.
        let ops =
            |puts: usize, others: usize, range: bool| others + if range { 2 * puts } else { puts };
        let grown = ops(puts + p, others + o, has_range || r);
        if !chunk.is_empty() && (grown > max_ops || size + write.bytes() > max_bytes) {
            out.push(std::mem::take(&mut chunk));
            (puts, others, has_range, size) = (0, 0, false, 0);
        }
        puts += p;
        others += o;
        has_range |= r;
        size += write.bytes();
        chunk.push(write);
    }
    if !chunk.is_empty() {
        out.push(chunk);
    }
    out
}

impl Backend for EtcdBackend {
    fn get<'a>(&'a self, tree: Tree, key: &'a [u8]) -> BackendFuture<'a, Option<Vec<u8>>> {
        Box::pin(async move {
            let mut response = self.kv_get(self.key(tree, key), None).await?;
            Ok(response
                .take_kvs()
                .into_iter()
                .next()
                .map(|kv| kv.into_key_value().1))
        })
    }

    fn scan(
        &self,
        tree: Tree,
        range: KeyRange,
        order: Order,
        limit: usize,
    ) -> BackendFuture<'_, Entries> {
        Box::pin(async move { self.scan_now(tree, &range, order, limit).await })
    }

    fn count(&self, tree: Tree) -> BackendFuture<'_, usize> {
        Box::pin(async move {
            let (start, end) = self.range(tree, &KeyRange::all());
            let response = self
                .kv_get(
                    start,
                    Some(GetOptions::new().with_range(end).with_count_only()),
                )
                .await?;
            Ok(usize::try_from(response.count()).unwrap_or(0))
        })
    }

    fn commit(&self, batch: Batch) -> BackendFuture<'_, ()> {
        Box::pin(self.commit_now(batch))
    }

    /// A batch that goes alone may be split; one that does not is never.
    fn applies_whole(&self, batch: &Batch) -> bool {
        !self.alone(batch).0
    }

    fn commit_all(&self, batches: Vec<Batch>) -> BoxFuture<'_, Vec<Result<(), BackendError>>> {
        Box::pin(self.commit_all_now(batches))
    }

    fn watch(&self) -> BackendFuture<'_, Option<ChangeFeed>> {
        Box::pin(async move {
            // Everything committed after this read goes to the feed.
            let response = self
                .kv_get(
                    self.prefix.clone(),
                    Some(GetOptions::new().with_count_only()),
                )
                .await?;
            let from = response.header().map_or(0, |h| h.revision()) + 1;
            let (tx, rx) = tokio::sync::mpsc::channel(1024);
            tokio::spawn(watch_changes(
                self.watches.clone(),
                self.prefix.clone(),
                self.endpoints.clone(),
                from,
                tx,
            ));
            Ok(Some(rx))
        })
    }

    fn own_revisions(&self) -> Vec<i64> {
        std::mem::take(
            &mut *self
                .own
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// etcd has a transaction on a quorum's disks when it answers; this only checks that etcd is
    /// still there, so that a flush to a lost etcd fails rather than claims durability.
    fn sync(&self) -> BackendFuture<'_, ()> {
        Box::pin(async move {
            self.kv_get(
                self.prefix.clone(),
                Some(GetOptions::new().with_count_only()),
            )
            .await?;
            Ok(())
        })
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;

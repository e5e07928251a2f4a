//! How a rollout's `assigned` (cluster → revision) is stored: grouped by revision, each
//! revision once with the clusters given it. Every decision that changes a rollout writes its
//! whole record, and its history entry; written as a map, each cluster repeated its revision
//! (about 130 bytes), so that a rollout over 10,000 clusters wrote 1.3 MB twice per decision:
//! 665 MB of etcd history for one fleet-wide rollout, which filled etcd's quota. Grouped, a
//! cluster costs its name. Records written as a map (earlier hubs) still read.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::fleet::desired::AppRevision;

#[derive(Serialize)]
struct GroupOut<'a> {
    revision: &'a AppRevision,
    clusters: Vec<&'a str>,
}

#[derive(Deserialize)]
struct GroupIn {
    revision: AppRevision,
    clusters: Vec<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Stored {
    ByRevision(Vec<GroupIn>),
    ByCluster(BTreeMap<String, AppRevision>),
}

/// The same revision in every field (`==` on revisions leaves out where a change came from,
/// which the record keeps).
fn identical(a: &AppRevision, b: &AppRevision) -> bool {
    a == b && a.trace == b.trace && a.fetched_at_unix_ms == b.fetched_at_unix_ms
}

pub(super) fn serialize<S: Serializer>(
    assigned: &BTreeMap<String, Arc<AppRevision>>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    // A rollout gives a handful of revisions at most (this one, the stable one, one rolled
    // back from): a linear search among them.
    let mut groups: Vec<GroupOut<'_>> = Vec::new();
    for (cluster, revision) in assigned {
        match groups.iter_mut().find(|g| identical(g.revision, revision)) {
            Some(group) => group.clusters.push(cluster),
            None => groups.push(GroupOut {
                revision,
                clusters: vec![cluster],
            }),
        }
    }
    groups.serialize(serializer)
}

pub(super) fn deserialize<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<String, Arc<AppRevision>>, D::Error> {
    Ok(match Stored::deserialize(deserializer)? {
        Stored::ByCluster(assigned) => assigned
            .into_iter()
            .map(|(cluster, revision)| (cluster, Arc::new(revision)))
            .collect(),
        // Each group's revision read once and shared by its clusters, as the hub held it.
        Stored::ByRevision(groups) => {
            let mut assigned = BTreeMap::new();
            for group in groups {
                let revision = Arc::new(group.revision);
                for cluster in group.clusters {
                    assigned.insert(cluster, Arc::clone(&revision));
                }
            }
            assigned
        }
    })
}

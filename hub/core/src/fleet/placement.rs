//! Placement: from an App's `targets` and the registered clusters to the set of clusters the App
//! runs on, with the `customize` entry (first match wins) that applies to each.

use std::collections::BTreeMap;

use crate::resources::{App, ClusterGroup, ClusterSelection, LabelSelector, SelectorOperator};

#[cfg(test)]
mod tests;

/// What placement needs to know of a cluster.
#[derive(Debug, Clone, Copy)]
pub struct ClusterLabels<'a> {
    pub name: &'a str,
    pub labels: &'a BTreeMap<String, String>,
}

/// One cluster an App lands on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub cluster: String,
    /// Index into the App's `spec.customize` of the first entry matching this cluster.
    pub customization: Option<usize>,
}

/// Whether `labels` satisfy every `matchLabels` entry and every `matchExpressions` requirement.
/// An empty selector matches everything, as in Kubernetes.
pub fn selector_matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let labels_ok = selector
        .match_labels
        .iter()
        .all(|(k, v)| labels.get(k) == Some(v));
    labels_ok
        && selector.match_expressions.iter().all(|req| {
            let value = labels.get(&req.key);
            match req.operator {
                SelectorOperator::In => value.is_some_and(|v| req.values.contains(v)),
                SelectorOperator::NotIn => value.is_none_or(|v| !req.values.contains(v)),
                SelectorOperator::Exists => value.is_some(),
                SelectorOperator::DoesNotExist => value.is_none(),
            }
        })
}

/// Whether one `targets`/`customize` entry names `cluster`. A group that does not exist matches
/// nothing (it may be created later; placement is recomputed then).
pub fn selection_matches(
    selection: &ClusterSelection,
    cluster: ClusterLabels<'_>,
    groups: &BTreeMap<String, ClusterGroup>,
) -> bool {
    if let Some(sel) = &selection.cluster_selector {
        return selector_matches(sel, cluster.labels);
    }
    if let Some(group) = &selection.cluster_group {
        return groups
            .get(group)
            .is_some_and(|g| selector_matches(&g.spec.selector, cluster.labels));
    }
    selection.clusters.iter().any(|c| c == cluster.name)
}

/// The clusters `app` runs on, sorted by name, each with its customization.
pub fn place(
    app: &App,
    clusters: &[ClusterLabels<'_>],
    groups: &BTreeMap<String, ClusterGroup>,
) -> Vec<Placement> {
    let mut placements: Vec<Placement> = clusters
        .iter()
        .filter(|c| {
            app.spec
                .targets
                .iter()
                .any(|t| selection_matches(t, **c, groups))
        })
        .map(|c| Placement {
            cluster: c.name.to_owned(),
            customization: app
                .spec
                .customize
                .iter()
                .position(|cz| selection_matches(&cz.selection, *c, groups)),
        })
        .collect();
    placements.sort_by(|a, b| a.cluster.cmp(&b.cluster));
    placements.dedup_by(|a, b| a.cluster == b.cluster);
    placements
}

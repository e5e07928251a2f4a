//! The desired state a spoke holds, and how snapshots and deltas from the hub change it. Pure.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::model::{RepoCredential, TargetSpec};

/// Everything the hub wants on this cluster, at one generation of one hub epoch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredState {
    pub generation: u64,
    pub hub_epoch: String,
    pub targets: BTreeMap<String, TargetSpec>,
    pub credentials: Vec<RepoCredential>,
}

/// A snapshot or delta as the hub sent it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DesiredUpdate {
    pub generation: u64,
    pub base_generation: u64,
    pub snapshot: bool,
    pub hub_epoch: String,
    pub upserts: Vec<TargetSpec>,
    pub removals: Vec<String>,
    pub credentials: Vec<RepoCredential>,
}

/// A delta that does not build on what the spoke holds; the spoke must say Hello again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "delta to generation {generation} builds on {base_generation} of epoch {update_epoch:?}, but the spoke holds {held_generation} of epoch {held_epoch:?}"
)]
pub struct StaleDelta {
    pub generation: u64,
    pub base_generation: u64,
    pub update_epoch: String,
    pub held_generation: u64,
    pub held_epoch: String,
}

impl DesiredState {
    /// The state `update` makes of this one, or why it cannot be applied; this one is left as
    /// it is. A delta copies only the Targets it does not replace or remove: a link applies
    /// each update to what it holds, and copying a Target only to drop it was most of a delta's
    /// cost (a one-App spoke copied its one Target on every commit).
    pub fn apply(&self, update: DesiredUpdate) -> Result<DesiredState, StaleDelta> {
        let mut next = if update.snapshot {
            DesiredState {
                hub_epoch: update.hub_epoch.clone(),
                ..DesiredState::default()
            }
        } else {
            if update.base_generation != self.generation || update.hub_epoch != self.hub_epoch {
                return Err(StaleDelta {
                    generation: update.generation,
                    base_generation: update.base_generation,
                    update_epoch: update.hub_epoch,
                    held_generation: self.generation,
                    held_epoch: self.hub_epoch.clone(),
                });
            }
            let replaced: BTreeSet<&str> = update
                .removals
                .iter()
                .map(String::as_str)
                .chain(update.upserts.iter().map(|t| t.target_id.as_str()))
                .collect();
            DesiredState {
                generation: self.generation,
                hub_epoch: self.hub_epoch.clone(),
                targets: self
                    .targets
                    .iter()
                    .filter(|(id, _)| !replaced.contains(id.as_str()))
                    .map(|(id, t)| (id.clone(), t.clone()))
                    .collect(),
                credentials: self.credentials.clone(),
            }
        };
        next.generation = update.generation;
        for spec in update.upserts {
            next.targets.insert(spec.target_id.clone(), spec);
        }
        for credential in update.credentials {
            next.credentials
                .retain(|c| c.repo_url != credential.repo_url);
            next.credentials.push(credential);
        }
        // Keep only credentials some Target still needs.
        let used: BTreeSet<&str> = next
            .targets
            .values()
            .flat_map(|t| {
                let chart = t.render.helm_chart.as_ref().map(|c| c.repository.as_str());
                std::iter::once(t.source.repo_url.as_str()).chain(chart)
            })
            .collect();
        next.credentials
            .retain(|c| used.contains(c.repo_url.as_str()));
        next.credentials.sort_by(|a, b| a.repo_url.cmp(&b.repo_url));
        Ok(next)
    }

    pub fn credential_for(&self, repo_url: &str) -> Option<&RepoCredential> {
        self.credentials.iter().find(|c| c.repo_url == repo_url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::CredentialKind;

    fn spec(id: &str, url: &str, commit: &str) -> TargetSpec {
        let mut spec = TargetSpec::test(id, "");
        spec.source.repo_url = url.into();
        spec.source.repo_name = "r".into();
        spec.source.commit = commit.into();
        spec.namespace = "ns".into();
        spec
    }

    fn credential(url: &str, password: &str) -> RepoCredential {
        RepoCredential {
            repo_url: url.into(),
            kind: CredentialKind::Https {
                username: "u".into(),
                password: password.into(),
            },
            urls: Vec::new(),
        }
    }

    fn snapshot(generation: u64, targets: Vec<TargetSpec>) -> DesiredUpdate {
        DesiredUpdate {
            generation,
            snapshot: true,
            hub_epoch: "e1".into(),
            upserts: targets,
            ..DesiredUpdate::default()
        }
    }

    /// `desired.json` as spokes have written it since credentials carried their urls: the
    /// spoke's `CredentialKind` is now gitfleet-core's, and reads and writes it the same way.
    #[test]
    fn persisted_credentials_read_and_write_as_before() {
        let written = serde_json::json!({
            "generation": 4,
            "hub_epoch": "e1",
            "targets": {},
            "credentials": [
                {
                    "repo_url": "https://git.example.com/a.git",
                    "kind": {"Https": {"username": "u", "password": "p"}},
                    "urls": ["https://git.example.com/"]
                },
                {
                    "repo_url": "ssh://git@git.example.com/b.git",
                    "kind": {"Ssh": {
                        "username": "git",
                        "private_key_pem": "PEM",
                        "known_hosts": "git.example.com ssh-ed25519 AAAA"
                    }},
                    "urls": []
                }
            ]
        });
        let held: DesiredState = serde_json::from_value(written.clone()).expect("reads");
        assert_eq!(
            held.credentials[0].kind,
            CredentialKind::Https {
                username: "u".into(),
                password: "p".into()
            }
        );
        assert_eq!(
            held.credentials[1].kind,
            CredentialKind::Ssh {
                username: "git".into(),
                private_key_pem: "PEM".into(),
                known_hosts: "git.example.com ssh-ed25519 AAAA".into()
            }
        );
        assert_eq!(serde_json::to_value(&held).expect("writes"), written);
        // Written before credentials carried urls: bound to their repo_url.
        let older: RepoCredential = serde_json::from_value(serde_json::json!({
            "repo_url": "https://git.example.com/a.git",
            "kind": {"Https": {"username": "u", "password": "p"}}
        }))
        .expect("reads");
        assert_eq!(older.scope(), ["https://git.example.com/a.git"]);
    }

    #[test]
    fn snapshot_replaces_everything() {
        let held = DesiredState::default()
            .apply(snapshot(3, vec![spec("a", "u1", "c1")]))
            .expect("snapshot");
        let next = held
            .apply(snapshot(7, vec![spec("b", "u1", "c2")]))
            .expect("snapshot");
        assert_eq!(next.generation, 7);
        assert_eq!(next.targets.keys().collect::<Vec<_>>(), ["b"]);
        assert_eq!(next.hub_epoch, "e1");
    }

    #[test]
    fn delta_applies_on_its_base() {
        let held = DesiredState::default()
            .apply(snapshot(
                3,
                vec![spec("a", "u1", "c1"), spec("b", "u2", "c1")],
            ))
            .expect("snapshot");
        let delta = DesiredUpdate {
            generation: 4,
            base_generation: 3,
            hub_epoch: "e1".into(),
            upserts: vec![spec("a", "u1", "c2"), spec("c", "u3", "c1")],
            removals: vec!["b".into()],
            ..DesiredUpdate::default()
        };
        let next = held.apply(delta).expect("delta");
        assert_eq!(next.generation, 4);
        assert_eq!(next.targets.keys().collect::<Vec<_>>(), ["a", "c"]);
        assert_eq!(next.targets["a"].source.commit, "c2");
    }

    /// A delta leaves the state it is applied to as it was, and carries over the Targets and
    /// credentials it does not touch.
    #[test]
    fn a_delta_leaves_what_is_held_and_keeps_what_it_does_not_touch() {
        let mut first = snapshot(
            3,
            vec![
                spec("a", "u1", "c1"),
                spec("b", "u2", "c1"),
                spec("d", "u1", "c1"),
            ],
        );
        first.credentials = vec![credential("u1", "p1"), credential("u2", "p2")];
        let held = DesiredState::default().apply(first).expect("snapshot");
        let before = held.clone();
        let delta = DesiredUpdate {
            generation: 4,
            base_generation: 3,
            hub_epoch: "e1".into(),
            upserts: vec![spec("a", "u1", "c2"), spec("c", "u3", "c1")],
            removals: vec!["b".into()],
            credentials: vec![credential("u3", "p3")],
            ..DesiredUpdate::default()
        };
        let next = held.apply(delta).expect("delta");
        assert_eq!(held, before, "what it was applied to is as it was");
        assert_eq!(next.generation, 4);
        assert_eq!(next.targets.keys().collect::<Vec<_>>(), ["a", "c", "d"]);
        assert_eq!(next.targets["a"].source.commit, "c2");
        assert_eq!(next.targets["d"], held.targets["d"]);
        assert_eq!(
            next.credentials
                .iter()
                .map(|c| c.repo_url.as_str())
                .collect::<Vec<_>>(),
            ["u1", "u3"]
        );
    }

    #[test]
    fn delta_on_another_base_or_epoch_is_stale() {
        let held = DesiredState::default()
            .apply(snapshot(3, vec![]))
            .expect("snapshot");
        let wrong_base = DesiredUpdate {
            generation: 6,
            base_generation: 5,
            hub_epoch: "e1".into(),
            ..DesiredUpdate::default()
        };
        let err = held.apply(wrong_base).expect_err("stale");
        assert_eq!(err.held_generation, 3);
        assert!(err.to_string().contains("builds on 5"), "{err}");
        let wrong_epoch = DesiredUpdate {
            generation: 4,
            base_generation: 3,
            hub_epoch: "e2".into(),
            ..DesiredUpdate::default()
        };
        assert!(held.apply(wrong_epoch).is_err());
    }

    #[test]
    fn a_chart_repository_credential_stays_while_a_target_renders_a_chart_from_there() {
        let mut charted = spec("a", "u1", "c");
        charted.render.helm_chart = Some(gitfleet_core::charts::ResolvedChart {
            repository: "https://charts.example.com/team".into(),
            name: "web".into(),
            version: "1.0.0".into(),
            ..Default::default()
        });
        let mut first = snapshot(1, vec![charted]);
        first.credentials = vec![
            credential("u1", "p1"),
            credential("https://charts.example.com/team", "p2"),
        ];
        let held = DesiredState::default().apply(first).expect("snapshot");
        assert!(
            held.credential_for("https://charts.example.com/team")
                .is_some()
        );
        // The Target moves to a chart in Git: the chart repository's credential goes.
        let delta = DesiredUpdate {
            generation: 2,
            base_generation: 1,
            hub_epoch: "e1".into(),
            upserts: vec![spec("a", "u1", "d")],
            ..DesiredUpdate::default()
        };
        let next = held.apply(delta).expect("delta");
        assert!(
            next.credential_for("https://charts.example.com/team")
                .is_none()
        );
        assert!(next.credential_for("u1").is_some());
    }

    #[test]
    fn credentials_are_replaced_and_dropped_when_unused() {
        let mut first = snapshot(1, vec![spec("a", "u1", "c"), spec("b", "u2", "c")]);
        first.credentials = vec![credential("u1", "p1"), credential("u2", "p2")];
        let held = DesiredState::default().apply(first).expect("snapshot");
        assert!(held.credential_for("u2").is_some());
        let delta = DesiredUpdate {
            generation: 2,
            base_generation: 1,
            hub_epoch: "e1".into(),
            removals: vec!["b".into()],
            credentials: vec![credential("u1", "new")],
            ..DesiredUpdate::default()
        };
        let next = held.apply(delta).expect("delta");
        assert!(
            next.credential_for("u2").is_none(),
            "no Target uses u2 any more"
        );
        assert_eq!(next.credential_for("u1"), Some(&credential("u1", "new")));
        assert_eq!(next.credentials.len(), 1);
    }
}

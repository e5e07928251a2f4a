//! Domain types of the spoke. Only `link.rs` converts between these and the wire format; the
//! rest of the crate (and its on-disk state) speaks only these types.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One App on this cluster, as the hub wants it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetSpec {
    /// Stable id of the Target (the App name).
    pub target_id: String,
    pub app: String,
    pub source: Source,
    /// Namespace objects without one land in.
    pub namespace: String,
    pub render: RenderOptions,
    pub sync_policy: SyncPolicy,
    /// W3C trace context of the change that produced this spec.
    #[serde(default)]
    pub trace: BTreeMap<String, String>,
    pub spec_generation: u64,
    /// The App's Project's rules for this cluster; `None`: the `default` Project, nothing to
    /// enforce (see `sync::project`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<crate::sync::project::TargetProject>,
    /// Custom health rules (the Project's, then the hub-wide ones), first match wins; see
    /// `sync::health`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub health_rules: Vec<gitfleet_core::health_rules::TargetHealthRule>,
}

impl TargetSpec {
    /// Whether `next` changes nothing but how what was applied is watched: `syncPolicy.selfHeal`
    /// (a freeze or window that suspends self-heal starting or ending, an App's own switch) or
    /// the health rules. What was applied stays right, so the Target is not synced again (no
    /// apply, no hooks); it heals drift, or stops healing it, and judges health by the new
    /// rules from now on. A sync would apply without force and fail on a field someone else
    /// changed, the very drift that self-heal, back on, must put right.
    pub fn differs_only_in_watching(&self, next: &TargetSpec) -> bool {
        if self.sync_policy.self_heal == next.sync_policy.self_heal
            && self.health_rules == next.health_rules
        {
            return false;
        }
        let comparable = |s: &TargetSpec| TargetSpec {
            sync_policy: SyncPolicy {
                self_heal: false,
                ..s.sync_policy
            },
            trace: BTreeMap::new(),
            spec_generation: 0,
            health_rules: Vec::new(),
            ..s.clone()
        };
        comparable(self) == comparable(next)
    }
}

#[cfg(test)]
impl TargetSpec {
    /// A Target `id` of App `id` at the App path `path`, everything else empty or default.
    pub(crate) fn test(id: &str, path: &str) -> Self {
        Self {
            target_id: id.into(),
            app: id.into(),
            source: Source {
                repo_url: String::new(),
                repo_name: String::new(),
                commit: String::new(),
                git_ref: String::new(),
                path: path.into(),
                extra_paths: Vec::new(),
                trusted_keys: Vec::new(),
            },
            namespace: String::new(),
            render: RenderOptions::default(),
            sync_policy: SyncPolicy::default(),
            trace: BTreeMap::new(),
            spec_generation: 1,
            project: None,
            health_rules: Vec::new(),
        }
    }
}

/// One exact commit of one repository, and where in it the App lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    pub repo_url: String,
    pub repo_name: String,
    /// Full 40-hex commit id.
    pub commit: String,
    pub git_ref: String,
    pub path: String,
    #[serde(default)]
    pub extra_paths: Vec<String>,
    /// Signed commits only: the Repo's trusted keys. When any, the commit (or, for a tag ref,
    /// the tag object) must be signed by one of them; it is checked after every fetch, before
    /// anything is read from it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trusted_keys: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum RenderType {
    #[default]
    Auto,
    Yaml,
    Kustomize,
    Helm,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RenderOptions {
    pub render_type: RenderType,
    #[serde(default)]
    pub kustomize_dir: String,
    #[serde(default)]
    pub helm_release: String,
    #[serde(default)]
    pub helm_values_files: Vec<String>,
    #[serde(default)]
    pub helm_values_yaml: String,
    /// A chart from a Helm repository or an OCI registry, resolved by the hub; `None`: the
    /// chart is at the App path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub helm_chart: Option<gitfleet_core::charts::ResolvedChart>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SyncPolicy {
    pub prune: bool,
    pub self_heal: bool,
    pub suspended: bool,
    /// Take ownership of fields other managers hold (server-side apply force).
    pub force: bool,
    /// Take over live objects no gitfleet App manages (never another App's). Default for
    /// a `desired.json` written before the field existed.
    #[serde(default)]
    pub adopt: bool,
}

/// What a credential holds: the hub's type, so that the wire, the hub and the spoke's
/// `desired.json` all spell it the same way.
pub use gitfleet_core::model::CredentialKind;

/// A credential to fetch one repository.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoCredential {
    pub repo_url: String,
    pub kind: CredentialKind,
    /// The URL prefixes the hub's credentials entry allows it to be sent to; empty from a hub
    /// that does not send them (then `repo_url` alone).
    #[serde(default)]
    pub urls: Vec<String>,
}

impl RepoCredential {
    /// The URL prefixes it may be sent to (see [`gitfleet_core::credential_scope`]): its
    /// `urls`, or `repo_url` alone when the hub sent none.
    pub fn scope(&self) -> &[String] {
        if self.urls.is_empty() {
            std::slice::from_ref(&self.repo_url)
        } else {
            &self.urls
        }
    }
}

// Credentials must never end up in logs.
impl std::fmt::Debug for RepoCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.kind {
            CredentialKind::Https { .. } => "https",
            CredentialKind::Ssh { .. } => "ssh",
        };
        f.debug_struct("RepoCredential")
            .field("repo_url", &self.repo_url)
            .field("kind", &kind)
            .field("urls", &self.urls)
            .finish_non_exhaustive()
    }
}

/// Whether what is in the cluster matches the desired revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SyncState {
    Pending,
    Syncing,
    Synced,
    OutOfSync,
    Failed,
}

/// How healthy objects are. Ordered from best to worst, so that the health of a Target is the
/// maximum of the health of its objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Health {
    Healthy,
    Suspended,
    Unknown,
    Progressing,
    Missing,
    Degraded,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Healthy => "Healthy",
            Self::Suspended => "Suspended",
            Self::Unknown => "Unknown",
            Self::Progressing => "Progressing",
            Self::Missing => "Missing",
            Self::Degraded => "Degraded",
        }
    }
}

/// What happened to one object of a Target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ResourceAction {
    Applied,
    Unchanged,
    Pruned,
    Failed,
    /// Someone changed, in the cluster, a field Git declares.
    Drifted,
    /// The manifest could not be turned into an object (bad YAML, missing kind, ...).
    Invalid,
    /// Not applied: an earlier wave that stops on failure had a failure.
    Skipped,
    /// Gone from Git but still in the cluster, kept because pruning is off for the App or
    /// the object (`gitfleet.dev/prune: disabled`).
    RequiresPruning,
}

impl ResourceAction {
    /// The wire spelling (`ResourceResult.action`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Unchanged => "unchanged",
            Self::Pruned => "pruned",
            Self::Failed => "failed",
            Self::Drifted => "drifted",
            Self::Invalid => "invalid",
            Self::Skipped => "skipped",
            Self::RequiresPruning => "requires-pruning",
        }
    }
}

/// The identity of a Kubernetes object.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ObjectRef {
    pub api_version: String,
    pub kind: String,
    /// Empty for cluster-scoped objects.
    pub namespace: String,
    pub name: String,
}

impl ObjectRef {
    /// `deployment/web` or `namespace/guestbook`: how a person names an object in a message.
    pub fn display_name(&self) -> String {
        format!("{}/{}", self.kind.to_ascii_lowercase(), self.name)
    }
}

/// The outcome for one object (or one bad file) of a Target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceResult {
    /// Empty fields where the object could not even be identified (an invalid file).
    pub object: ObjectRef,
    pub action: ResourceAction,
    pub health: Health,
    pub message: String,
    pub source_file: String,
    /// The hook phase it ran in (`sync::hooks::Phase::as_str`); empty for an ordinary object.
    #[serde(default)]
    pub hook: String,
}

impl ResourceResult {
    /// A file (or an object in it) that could not be turned into an object: no object to name.
    pub fn invalid(source_file: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            object: ObjectRef::default(),
            action: ResourceAction::Invalid,
            health: Health::Unknown,
            message: message.into(),
            source_file: source_file.into(),
            hook: String::new(),
        }
    }
}

/// A status report about one Target, before it gets a sequence number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetStatus {
    pub target_id: String,
    pub revision: String,
    pub spec_generation: u64,
    pub sync: SyncState,
    pub health: Health,
    pub message: String,
    pub resources: Vec<ResourceResult>,
    pub observed_at_unix: i64,
    #[serde(default)]
    pub trace: BTreeMap<String, String>,
    /// The digest of the chart from a repository the report is about; empty without one.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub chart_digest: String,
}

impl TargetStatus {
    /// Whether two reports say the same thing (ignoring when they were observed), so that the
    /// spoke reports only changes.
    pub fn same_state_as(&self, other: &TargetStatus) -> bool {
        self.target_id == other.target_id
            && self.revision == other.revision
            && self.spec_generation == other.spec_generation
            && self.chart_digest == other.chart_digest
            && self.sync == other.sync
            && self.health == other.health
            && self.message == other.message
            && self.resources == other.resources
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_change_of_self_heal_alone_spares_a_sync() {
        let mut old = TargetSpec::test("web", "apps/web");
        old.sync_policy.self_heal = true;
        old.trace.insert("traceparent".into(), "00-a-b-01".into());
        let mut off = old.clone();
        off.sync_policy.self_heal = false;
        off.spec_generation = 2;
        off.trace.clear();
        assert!(old.differs_only_in_watching(&off));
        assert!(off.differs_only_in_watching(&old), "and back on");

        let mut same = old.clone();
        same.spec_generation = 3;
        assert!(
            !old.differs_only_in_watching(&same),
            "a new generation alone (`gitfleet app sync`) syncs again"
        );
        let mut moved = off.clone();
        moved.source.commit = "b".repeat(40);
        assert!(!old.differs_only_in_watching(&moved), "a new commit syncs");
        let mut pruned = off.clone();
        pruned.sync_policy.prune = !old.sync_policy.prune;
        assert!(
            !old.differs_only_in_watching(&pruned),
            "another policy syncs"
        );
    }

    #[test]
    fn a_change_of_health_rules_alone_spares_a_sync() {
        let old = TargetSpec::test("web", "apps/web");
        let mut ruled = old.clone();
        ruled.spec_generation = 2;
        ruled
            .health_rules
            .push(gitfleet_core::health_rules::TargetHealthRule {
                origin: "Project team-a".into(),
                rule: gitfleet_core::health_rules::HealthRuleSpec {
                    group: "db.example.com".into(),
                    kind: "Database".into(),
                    healthy_when: "true".into(),
                    ..Default::default()
                },
            });
        assert!(old.differs_only_in_watching(&ruled));
        let mut moved = ruled.clone();
        moved.source.commit = "c".repeat(40);
        assert!(!old.differs_only_in_watching(&moved), "a new commit syncs");
    }
}

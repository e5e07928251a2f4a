//! The declarative resources users write (Repo, App, ClusterGroup, Project, HealthRule,
//! Notifier): their
//! types, parsing and validation. Pure: no IO. A document that passes [`parse_document`] is safe
//! to store.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

#[cfg(test)]
mod tests;

pub const API_VERSION: &str = "gitfleet.dev/v1";

/// A validation failure, naming the resource and the field path
/// (`app "web": spec.targets[1].clusterSelector: unknown operator "Inn"`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin}{subject}: {path}{sep}{message}", sep = if path.is_empty() { "" } else { ": " })]
pub struct ResourceError {
    /// Where the document came from ("apps/web.yaml#2 "), may be empty.
    pub origin: String,
    /// `app "web"`, or `document` when the kind or name is unknown.
    pub subject: String,
    /// Field path, e.g. `spec.targets[1].clusterSelector`.
    pub path: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind")]
#[allow(
    clippy::large_enum_variant,
    reason = "most of a fleet's resources are Apps: boxing them would add an allocation to \
              nearly every resource and save space only on the few Repos, groups and Projects"
)]
pub enum Resource {
    Repo(Repo),
    App(App),
    ClusterGroup(ClusterGroup),
    Project(Project),
    HealthRule(HealthRule),
    Notifier(Notifier),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Repo,
    App,
    ClusterGroup,
    Project,
    HealthRule,
    Notifier,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::Repo,
        Kind::App,
        Kind::ClusterGroup,
        Kind::Project,
        Kind::HealthRule,
        Kind::Notifier,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Repo => "Repo",
            Kind::App => "App",
            Kind::ClusterGroup => "ClusterGroup",
            Kind::Project => "Project",
            Kind::HealthRule => "HealthRule",
            Kind::Notifier => "Notifier",
        }
    }

    /// Accepts the kind and the usual CLI spellings ("app", "apps", "clustergroup").
    pub fn parse(s: &str) -> Option<Kind> {
        match s.to_ascii_lowercase().trim_end_matches('s') {
            "repo" => Some(Kind::Repo),
            "app" => Some(Kind::App),
            "clustergroup" | "group" => Some(Kind::ClusterGroup),
            "project" | "proj" => Some(Kind::Project),
            "healthrule" | "hr" => Some(Kind::HealthRule),
            "notifier" => Some(Kind::Notifier),
            _ => None,
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Metadata {
    pub name: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

// ---------------------------------------------------------------------------------------------
// Repo

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Repo {
    pub api_version: String,
    pub metadata: Metadata,
    pub spec: RepoSpec,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RepoSpec {
    /// Clone URL: https://, ssh://, git://, file://, or scp-like `git@host:path`.
    pub url: String,
    /// What to follow; defaults to the branch `main`.
    #[serde(rename = "ref", default)]
    pub reference: GitRef,
    /// How often to poll; the hub's default when absent.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub poll_interval: Option<Duration>,
    /// Name of the entry in the hub's credentials file (`--repo-credentials`) with the HTTPS or
    /// SSH credential for this repository. Absent: the entry named like the Repo, if any. Never
    /// the secret itself: resources are printed by `gitfleet get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_ref: Option<String>,
    /// Name of the entry in the hub's credentials file whose `webhookSecret` signs this
    /// repository's push webhooks. Absent: the hub-wide `--webhook-secret`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_secret_ref: Option<String>,
    /// Signed commits only: the hub dispatches only commits (and, for tag and semver refs, tag
    /// objects) signed by one of these keys, and spokes check the same before they apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<RepoVerify>,
}

/// `spec.verify` of a Repo.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RepoVerify {
    /// Each an SSH public key line (`ssh-ed25519 AAAA... release-bot`) or an armored OpenPGP
    /// public key; validated at apply (`crate::git::signature::TrustedKeys`).
    pub trusted_keys: Vec<String>,
}

impl RepoSpec {
    /// Follows `main` of `url`, with the hub's defaults for everything else.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            reference: GitRef::default(),
            poll_interval: None,
            credentials_ref: None,
            webhook_secret_ref: None,
            verify: None,
        }
    }

    /// The keys a Repo with `spec.verify` trusts; `None` when it does not ask for signatures.
    /// Stored Repos were validated at apply, so an entry that no longer parses (a newer hub's
    /// key type) is an error here, never a reason to skip verification.
    pub fn trusted_keys(
        &self,
    ) -> Option<Result<crate::git::signature::TrustedKeys, (usize, crate::git::signature::KeyError)>>
    {
        self.verify
            .as_ref()
            .map(|v| crate::git::signature::TrustedKeys::parse(&v.trusted_keys))
    }
}

/// What a Repo follows. Written as a one-key map: `{ branch: main }`, `{ tag: v1.2.0 }`,
/// `{ semver: ">=1.2, <2" }`, `{ commit: <40 hex> }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum GitRef {
    Branch(String),
    Tag(String),
    Semver(String),
    Commit(String),
}

impl Default for GitRef {
    fn default() -> Self {
        GitRef::Branch("main".to_owned())
    }
}

// ---------------------------------------------------------------------------------------------
// App

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct App {
    pub api_version: String,
    pub metadata: Metadata,
    pub spec: AppSpec,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AppSpec {
    /// The Project whose rules bound the App; absent: the built-in `default` Project.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// Name of the Repo resource.
    pub repo: String,
    /// Path in the repository, relative, no `..`.
    pub path: String,
    /// Namespace for objects that name none.
    pub namespace: String,
    /// Other paths in the repository the App reads (kustomize bases, shared values files).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_paths: Vec<String>,
    /// Which clusters get the App: the union of all entries.
    pub targets: Vec<ClusterSelection>,
    #[serde(default)]
    pub render: RenderSpec,
    /// Per-cluster differences; the first entry that matches a cluster wins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub customize: Vec<Customization>,
    #[serde(default)]
    pub sync_policy: SyncPolicySpec,
    /// How a new revision moves across the App's clusters; absent: all at once. Boxed: most
    /// Apps have none, and it would make every resource larger.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<Box<RolloutSpec>>,
    /// Apps that must be healthy on a cluster, at their own desired revision there, before
    /// this App's Target on it is given a new revision (the ingress controller before the
    /// shop). Every App named must exist, and the Apps' dependencies form no cycle: the hub
    /// refuses an apply that breaks either.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
    /// When new revisions may start rolling out (with the Project's windows, see
    /// [`SyncWindow`]); none: any time.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sync_windows: Vec<SyncWindow>,
}

impl AppSpec {
    /// The name of the App's Project (`default` when it names none).
    pub fn project_name(&self) -> &str {
        self.project.as_deref().unwrap_or(DEFAULT_PROJECT)
    }
}

/// One way of naming clusters. Exactly one field is set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterSelection {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_selector: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_group: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clusters: Vec<String>,
}

/// A Kubernetes-style label selector: all `matchLabels` and all `matchExpressions` must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelector {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelectorRequirement {
    pub key: String,
    pub operator: SelectorOperator,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SelectorOperator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RenderType {
    #[default]
    Auto,
    Yaml,
    Kustomize,
    Helm,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RenderSpec {
    #[serde(default, rename = "type")]
    pub render_type: RenderType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kustomize: Option<KustomizeOptions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub helm: Option<HelmOptions>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KustomizeOptions {
    /// Directory, relative to the App path, to build instead of the App path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HelmOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release_name: Option<String>,
    /// Values files relative to the App path, applied in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values_files: Vec<String>,
    /// Inline values, merged over the files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<serde_json::Value>,
    /// A chart from a Helm repository or an OCI registry instead of one in Git: the App path
    /// then holds only values files. The App's alone: a customization may not set it, so that
    /// every cluster of a rollout gets the same chart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chart: Option<ChartSpec>,
}

/// `spec.render.helm.chart`: which chart, from where, at which version (the hub resolves it
/// to one exact version and digest, see `crate::charts`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChartSpec {
    /// `https://charts.example.com` (a Helm repository) or `oci://registry.example.com/charts`.
    pub repository: String,
    pub name: String,
    /// An exact version (`6.5.4`) or a semver range (`^6.0.0`).
    pub version: String,
}

/// A per-cluster difference: for clusters the selection matches, these options replace the App's.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Customization {
    #[serde(flatten)]
    pub selection: ClusterSelection,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kustomize: Option<KustomizeOptions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub helm: Option<HelmOptions>,
    /// A different namespace for these clusters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SyncPolicySpec {
    #[serde(default = "yes")]
    pub prune: bool,
    #[serde(default = "yes")]
    pub self_heal: bool,
    #[serde(default)]
    pub suspended: bool,
    /// Server-side apply with force: take fields other managers own.
    #[serde(default)]
    pub force: bool,
    /// Take over live objects no gitfleet App manages (never another App's).
    #[serde(default)]
    pub adopt: bool,
}

fn yes() -> bool {
    true
}

impl Default for SyncPolicySpec {
    fn default() -> Self {
        Self {
            prune: true,
            self_heal: true,
            suspended: false,
            force: false,
            adopt: false,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Rollout strategy

/// How a new revision of an App moves across its clusters: ordered waves, each updated in batches
/// of at most `maxUnavailable` Targets, done once its Targets stay healthy for `minHealthyFor`.
/// Clusters no wave names form an implicit last wave; a cluster several waves name belongs to the
/// first. Every field is optional; [`RolloutSpec::default`] is "all at once".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RolloutSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waves: Vec<WaveSpec>,
    /// Default for every wave: how many of a wave's Targets may be updating or unhealthy at the
    /// new revision at once. Default 100% (the whole wave at once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<IntOrPercent>,
    /// Default for every wave: how long its Targets must stay healthy before the next wave starts.
    /// Default 0s.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub min_healthy_for: Option<Duration>,
    /// How long a wave may go without progress (a Target updated or turning healthy) before the
    /// rollout pauses. Default 10m.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub progress_deadline: Option<Duration>,
    /// What a wave whose failures exceed its failure budget does. Default `pause`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_failure: Option<OnFailure>,
    /// Default for every wave: how many failed Targets a wave tolerates. Default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_budget: Option<IntOrPercent>,
}

/// One wave of a rollout: a set of clusters (exactly one of `clusterSelector`, `clusterGroup`,
/// `clusters`) and optional overrides of the strategy's defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WaveSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_selector: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_group: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clusters: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<IntOrPercent>,
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub min_healthy_for: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_budget: Option<IntOrPercent>,
}

impl WaveSpec {
    /// The clusters this wave names, in the form placement understands.
    pub fn selection(&self) -> ClusterSelection {
        ClusterSelection {
            cluster_selector: self.cluster_selector.clone(),
            cluster_group: self.cluster_group.clone(),
            clusters: self.clusters.clone(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum OnFailure {
    /// Stop giving the new revision to more Targets; wait for a person (or a newer commit).
    #[default]
    Pause,
    /// Put every Target that has the failed revision back on the last revision that completed a
    /// rollout, as a rollout of its own.
    Rollback,
}

impl RolloutSpec {
    pub const DEFAULT_MAX_UNAVAILABLE: IntOrPercent = IntOrPercent::Percent(100);
    pub const DEFAULT_MIN_HEALTHY_FOR: Duration = Duration::ZERO;
    pub const DEFAULT_PROGRESS_DEADLINE: Duration = Duration::from_secs(600);
    pub const DEFAULT_FAILURE_BUDGET: IntOrPercent = IntOrPercent::Count(0);
}

/// A number of Targets, written as a count (`2`, `"2"`) or a percentage of a set (`"25%"`).
///
/// [`IntOrPercent::resolve`] turns it into a count for a set of `total` Targets: a count is capped
/// at `total`; a percentage rounds down, except that a non-zero percentage of a non-empty set is
/// at least 1 (so `"10%"` of 4 clusters is 1, not 0: a rollout always makes progress). `0%` is 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IntOrPercent {
    Count(u32),
    /// 0..=100 once validated.
    Percent(u32),
}

impl IntOrPercent {
    pub fn resolve(self, total: usize) -> usize {
        match self {
            IntOrPercent::Count(n) => (n as usize).min(total),
            IntOrPercent::Percent(0) => 0,
            IntOrPercent::Percent(p) if total > 0 => {
                (total * p.min(100) as usize / 100).clamp(1, total)
            }
            IntOrPercent::Percent(_) => 0,
        }
    }

    pub fn is_zero(self) -> bool {
        matches!(self, IntOrPercent::Count(0) | IntOrPercent::Percent(0))
    }
}

impl std::fmt::Display for IntOrPercent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IntOrPercent::Count(n) => write!(f, "{n}"),
            IntOrPercent::Percent(p) => write!(f, "{p}%"),
        }
    }
}

impl std::str::FromStr for IntOrPercent {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let (digits, percent) = match t.strip_suffix('%') {
            Some(d) => (d.trim_end(), true),
            None => (t, false),
        };
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!(
                "{s:?} is not a count or a percentage (like 2 or \"25%\")"
            ));
        }
        let n: u32 = digits.parse().map_err(|_| format!("{s:?} is too large"))?;
        Ok(if percent {
            IntOrPercent::Percent(n)
        } else {
            IntOrPercent::Count(n)
        })
    }
}

impl Serialize for IntOrPercent {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            IntOrPercent::Count(n) => serializer.serialize_u32(*n),
            IntOrPercent::Percent(_) => serializer.collect_str(self),
        }
    }
}

impl<'de> Deserialize<'de> for IntOrPercent {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = IntOrPercent;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a count or a percentage like \"25%\"")
            }

            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<IntOrPercent, E> {
                u32::try_from(v)
                    .map(IntOrPercent::Count)
                    .map_err(|_| E::custom(format!("{v} is too large")))
            }

            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<IntOrPercent, E> {
                if v < 0 {
                    return Err(E::custom(format!("{v} must not be negative")));
                }
                self.visit_u64(v.unsigned_abs())
            }

            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<IntOrPercent, E> {
                Err(E::custom(format!(
                    "{v} is not a whole number (write a count like 2 or a percentage like \"25%\")"
                )))
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<IntOrPercent, E> {
                v.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

// ---------------------------------------------------------------------------------------------
// ClusterGroup

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterGroup {
    pub api_version: String,
    pub metadata: Metadata,
    pub spec: ClusterGroupSpec,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterGroupSpec {
    pub selector: LabelSelector,
}

// ---------------------------------------------------------------------------------------------
// Project

/// The name of the built-in Project every App without `spec.project` belongs to. It is never
/// stored and allows everything (see `fleet::project::default_project`).
pub const DEFAULT_PROJECT: &str = "default";

/// What the Apps of one team may deploy: from which repositories, to which clusters and
/// namespaces, and which kinds of objects.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Project {
    pub api_version: String,
    pub metadata: Metadata,
    pub spec: ProjectSpec,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProjectSpec {
    /// Repo names, or globs over Repo URLs (`*` within one path segment, `**` across them).
    /// `*` alone allows every Repo. Empty: no Repo at all.
    #[serde(default)]
    pub source_repos: Vec<String>,
    /// Where the Project's Apps may run: the union of all entries.
    #[serde(default)]
    pub destinations: Vec<ProjectDestination>,
    /// Cluster-scoped kinds the Apps may create; none when empty (Namespaces the destinations'
    /// globs allow excepted).
    #[serde(default)]
    pub cluster_resources: Vec<GroupKind>,
    /// Namespaced kinds the Apps may not create.
    #[serde(default)]
    pub namespace_resources: NamespaceResources,
    /// When new revisions of the Project's Apps may start rolling out (with each App's own
    /// windows, see [`SyncWindow`]); none: any time.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sync_windows: Vec<SyncWindow>,
    /// How the Project's Apps' objects of a kind are judged healthy (CEL over the live object;
    /// see [`crate::health_rules`]); before the hub-wide `HealthRule`s and the built-in ones.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub health_rules: Vec<HealthRuleSpec>,
}

// ---------------------------------------------------------------------------------------------
// HealthRule

/// A hub-wide health rule: how objects of one kind are judged, for every App (a Project's own
/// rule for the kind comes first). Applied by admins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HealthRule {
    pub api_version: String,
    pub metadata: Metadata,
    pub spec: HealthRuleSpec,
}

pub use crate::health_rules::HealthRuleSpec;

// ---------------------------------------------------------------------------------------------
// Notifier

/// Where the hub sends events (a webhook, Slack, a commit status) and which ones: see
/// [`crate::notify`] and `docs/notifications.md`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Notifier {
    pub api_version: String,
    pub metadata: Metadata,
    pub spec: NotifierSpec,
}

pub use crate::notify::NotifierSpec;

/// A recurring window of an App or a Project, in Argo CD's manner: a `deny` window holds new
/// revisions while it is open; when any `allow` window applies to a cluster, new revisions reach
/// it only while one of them is open. Deny wins over allow. A window opens at each time its
/// `schedule` names (in `timeZone`) and stays open for `duration`. Rollbacks are never held.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SyncWindow {
    pub kind: SyncWindowKind,
    /// A cron schedule of 5 fields (minute hour day-of-month month day-of-week).
    pub schedule: String,
    /// How long the window stays open each time it opens (at least 1m).
    #[serde(with = "humantime_serde")]
    pub duration: Duration,
    /// An IANA time zone (`Europe/Berlin`) the schedule is read in; default `UTC`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// Which of the App's clusters the window applies to; absent: all of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_selector: Option<LabelSelector>,
    /// Whether the Targets the window holds keep self-healing (the default). False: while the
    /// window holds a cluster (a deny window open, every allow window closed), the App's Target
    /// there reports drift and leaves it be (see `docs/change-control.md`).
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub self_heal: bool,
}

fn is_true(b: &bool) -> bool {
    *b
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncWindowKind {
    Allow,
    Deny,
}

impl SyncWindowKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SyncWindowKind::Allow => "allow",
            SyncWindowKind::Deny => "deny",
        }
    }
}

/// Clusters (exactly one of `name`, `clusterSelector`, `group`) and the namespaces the
/// Project's Apps may use there.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProjectDestination {
    /// A cluster name, or a glob over names (`*`: every cluster).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_selector: Option<LabelSelector>,
    /// A ClusterGroup's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Namespace globs (`team-a`, `team-a-*`, `*`).
    pub namespaces: Vec<String>,
}

/// A kind of Kubernetes object. `group` is `""` for the core group; either may be `*`.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GroupKind {
    #[serde(default)]
    pub group: String,
    pub kind: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NamespaceResources {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<GroupKind>,
}

// ---------------------------------------------------------------------------------------------

impl Resource {
    pub fn kind(&self) -> Kind {
        match self {
            Resource::Repo(_) => Kind::Repo,
            Resource::App(_) => Kind::App,
            Resource::ClusterGroup(_) => Kind::ClusterGroup,
            Resource::Project(_) => Kind::Project,
            Resource::HealthRule(_) => Kind::HealthRule,
            Resource::Notifier(_) => Kind::Notifier,
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Resource::Repo(r) => &r.metadata.name,
            Resource::App(a) => &a.metadata.name,
            Resource::ClusterGroup(g) => &g.metadata.name,
            Resource::Project(p) => &p.metadata.name,
            Resource::HealthRule(h) => &h.metadata.name,
            Resource::Notifier(n) => &n.metadata.name,
        }
    }

    pub fn metadata(&self) -> &Metadata {
        match self {
            Resource::Repo(r) => &r.metadata,
            Resource::App(a) => &a.metadata,
            Resource::ClusterGroup(g) => &g.metadata,
            Resource::Project(p) => &p.metadata,
            Resource::HealthRule(h) => &h.metadata,
            Resource::Notifier(n) => &n.metadata,
        }
    }

    /// The resource as the JSON document a user would write (with `kind`).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("resources serialise: no maps with non-string keys")
    }
}

mod parse;
pub use parse::{
    dns1123_label_problem, label_key_problem, label_value_problem, parse_document, parse_value,
};

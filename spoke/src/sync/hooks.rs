//! Sync hooks and waves that wait: which rendered objects are hooks (and of which phase, in
//! which order, with which delete policies), what a hook's live state says about its run, and
//! whether a wave is healthy enough for the next one to be applied.
//!
//! A hook is annotated `gitfleet.dev/hook: PreSync|Sync|PostSync|SyncFail` (a comma list), or
//! with Argo CD's `argocd.argoproj.io/hook` or Helm's `helm.sh/hook`, in that order of
//! precedence. Hooks are not applied with the ordinary objects: they are run (created, then
//! waited for) in their phase, never pruned, never healed.

use serde_json::{Map, Value};

use super::order::kind_rank;
use super::render::Manifest;
use crate::model::Health;

pub const ANNOTATION_HOOK: &str = "gitfleet.dev/hook";
pub const ANNOTATION_DELETE_POLICY: &str = "gitfleet.dev/hook-delete-policy";
pub const ARGO_HOOK: &str = "argocd.argoproj.io/hook";
pub const ARGO_DELETE_POLICY: &str = "argocd.argoproj.io/hook-delete-policy";
pub const HELM_HOOK: &str = "helm.sh/hook";
pub const HELM_WEIGHT: &str = "helm.sh/hook-weight";
pub const HELM_DELETE_POLICY: &str = "helm.sh/hook-delete-policy";

/// When in a sync a hook runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Phase {
    /// Before anything is applied; a failure stops the sync.
    PreSync,
    /// With the ordinary objects: after every wave was applied (and waited for).
    Sync,
    /// Once every ordinary object is Healthy.
    PostSync,
    /// When anything failed.
    SyncFail,
}

impl Phase {
    /// The spelling in annotations and on the wire (`ResourceResult.hook`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PreSync => "PreSync",
            Self::Sync => "Sync",
            Self::PostSync => "PostSync",
            Self::SyncFail => "SyncFail",
        }
    }

    fn parse(value: &str) -> Option<Self> {
        match value {
            "PreSync" => Some(Self::PreSync),
            "Sync" => Some(Self::Sync),
            "PostSync" => Some(Self::PostSync),
            "SyncFail" => Some(Self::SyncFail),
            _ => None,
        }
    }
}

/// What is done with a hook object around its run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DeletePolicy {
    /// Delete the object left by an earlier run before creating it again (the default).
    BeforeHookCreation,
    /// Delete the object once its run succeeded.
    HookSucceeded,
    /// Delete the object once its run failed.
    HookFailed,
}

impl DeletePolicy {
    fn parse(annotation: &str, value: &str) -> Option<Self> {
        match (annotation, value) {
            (HELM_DELETE_POLICY, "before-hook-creation")
            | (ANNOTATION_DELETE_POLICY | ARGO_DELETE_POLICY, "BeforeHookCreation") => {
                Some(Self::BeforeHookCreation)
            }
            (HELM_DELETE_POLICY, "hook-succeeded")
            | (ANNOTATION_DELETE_POLICY | ARGO_DELETE_POLICY, "HookSucceeded") => {
                Some(Self::HookSucceeded)
            }
            (HELM_DELETE_POLICY, "hook-failed")
            | (ANNOTATION_DELETE_POLICY | ARGO_DELETE_POLICY, "HookFailed") => {
                Some(Self::HookFailed)
            }
            _ => None,
        }
    }
}

/// A rendered object that is a hook of this sync.
#[derive(Debug, Clone, PartialEq)]
pub struct Hook {
    pub manifest: Manifest,
    /// The phases it runs in, in order (most hooks have one).
    pub phases: Vec<Phase>,
    /// Order within a phase (`helm.sh/hook-weight`, else the object's wave), lower first.
    pub weight: i32,
    pub policies: Vec<DeletePolicy>,
    /// `metadata.generateName`: the server names the object, so it is created, not applied.
    pub generate_name: Option<String>,
}

impl Hook {
    pub fn runs_in(&self, phase: Phase) -> bool {
        self.phases.contains(&phase)
    }

    pub fn has_policy(&self, policy: DeletePolicy) -> bool {
        self.policies.contains(&policy)
    }
}

/// The rendered objects of a sync, sorted out.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// Applied in waves, pruned, healed.
    pub ordinary: Vec<Manifest>,
    pub hooks: Vec<Hook>,
    /// Hooks this sync does not run, with the reason (reported `skipped`).
    pub skipped: Vec<(Manifest, String)>,
    /// Objects whose hook annotations are wrong, with the error (reported `failed`).
    pub invalid: Vec<(Manifest, String)>,
}

impl Plan {
    /// The hooks of `phase`, in run order: weight, then kind order, then name.
    pub fn phase(&self, phase: Phase) -> Vec<&Hook> {
        let mut hooks: Vec<&Hook> = self.hooks.iter().filter(|h| h.runs_in(phase)).collect();
        hooks.sort_by(|a, b| {
            (
                a.weight,
                kind_rank(a.manifest.group(), &a.manifest.object.kind),
                &a.manifest.object.name,
            )
                .cmp(&(
                    b.weight,
                    kind_rank(b.manifest.group(), &b.manifest.object.kind),
                    &b.manifest.object.name,
                ))
        });
        hooks
    }
}

/// What one object is to this sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    Ordinary,
    Hook {
        phases: Vec<Phase>,
        weight: i32,
        policies: Vec<DeletePolicy>,
    },
    /// A hook this sync does not run (the reason).
    Skipped(String),
}

/// Sorts rendered objects into ordinary objects and hooks. `first_sync`: the Target has never
/// been applied in this cluster (Helm's install hooks run, its upgrade hooks do not).
pub fn classify(manifests: Vec<Manifest>, first_sync: bool) -> Plan {
    let mut plan = Plan::default();
    for manifest in manifests {
        match role(&manifest.body, first_sync) {
            Ok(Role::Ordinary) => plan.ordinary.push(manifest),
            Ok(Role::Skipped(reason)) => plan.skipped.push((manifest, reason)),
            Ok(Role::Hook {
                phases,
                weight,
                policies,
            }) => {
                let generate_name = generate_name(&manifest.body);
                plan.hooks.push(Hook {
                    manifest,
                    phases,
                    weight,
                    policies,
                    generate_name,
                });
            }
            Err(error) => plan.invalid.push((manifest, error)),
        }
    }
    plan
}

/// Whether object metadata carries any hook annotation (the render lets such an object be
/// named by `generateName`).
pub fn is_hook_body(metadata: &Map<String, Value>) -> bool {
    metadata
        .get("annotations")
        .and_then(Value::as_object)
        .is_some_and(|a| {
            [ANNOTATION_HOOK, ARGO_HOOK, HELM_HOOK]
                .iter()
                .any(|k| a.contains_key(*k))
        })
}

/// The value of the hook annotation that decides what an object is (gitfleet's, Argo CD's, then
/// Helm's): what a person wrote, to show next to a hook that was not run.
pub fn hook_annotation(body: &Value) -> Option<&str> {
    [ANNOTATION_HOOK, ARGO_HOOK, HELM_HOOK]
        .into_iter()
        .find_map(|key| annotation(body, key))
}

fn annotation<'v>(body: &'v Value, key: &str) -> Option<&'v str> {
    body.get("metadata")?.get("annotations")?.get(key)?.as_str()
}

fn generate_name(body: &Value) -> Option<String> {
    let metadata = body.get("metadata")?;
    let named = metadata
        .get("name")
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty());
    if named {
        return None;
    }
    metadata
        .get("generateName")
        .and_then(Value::as_str)
        .filter(|g| !g.is_empty())
        .map(str::to_owned)
}

fn values(raw: &str) -> impl Iterator<Item = &str> {
    raw.split(',').map(str::trim).filter(|v| !v.is_empty())
}

/// What an object is to a sync, from its annotations; an error names the annotation and the
/// value that is wrong.
pub fn role(body: &Value, first_sync: bool) -> Result<Role, String> {
    let phases = if let Some(raw) = annotation(body, ANNOTATION_HOOK) {
        let mut phases = Vec::new();
        for value in values(raw) {
            let phase = Phase::parse(value).ok_or_else(|| {
                format!(
                    "annotation {ANNOTATION_HOOK}: unknown hook {value:?} (expected PreSync, Sync, PostSync or SyncFail)"
                )
            })?;
            phases.push(phase);
        }
        phases
    } else if let Some(raw) = annotation(body, ARGO_HOOK) {
        let mut phases = Vec::new();
        let mut not_run = Vec::new();
        for value in values(raw) {
            match value {
                "Skip" => {
                    return Ok(Role::Skipped(format!(
                        "not applied: {ARGO_HOOK} is Skip"
                    )));
                }
                "PreDelete" | "PostDelete" => not_run.push(value),
                _ => phases.push(Phase::parse(value).ok_or_else(|| {
                    format!(
                        "annotation {ARGO_HOOK}: unknown hook {value:?} (expected PreSync, Sync, PostSync, SyncFail, Skip, PreDelete or PostDelete)"
                    )
                })?),
            }
        }
        if phases.is_empty() && !not_run.is_empty() {
            return Ok(Role::Skipped(format!(
                "not run: {ARGO_HOOK} {} (deletion hooks are not supported)",
                not_run.join(",")
            )));
        }
        phases
    } else if let Some(raw) = annotation(body, HELM_HOOK) {
        let mut phases = Vec::new();
        let mut not_now = Vec::new();
        let mut not_run = Vec::new();
        for value in values(raw) {
            let phase = match value {
                "pre-install" if first_sync => Some(Phase::PreSync),
                "pre-upgrade" if !first_sync => Some(Phase::PreSync),
                "post-install" if first_sync => Some(Phase::PostSync),
                "post-upgrade" if !first_sync => Some(Phase::PostSync),
                "pre-install" | "pre-upgrade" | "post-install" | "post-upgrade" => {
                    not_now.push(value);
                    None
                }
                "test" | "test-success" | "test-failure" | "pre-delete" | "post-delete"
                | "pre-rollback" | "post-rollback" => {
                    not_run.push(value);
                    None
                }
                _ => {
                    return Err(format!(
                        "annotation {HELM_HOOK}: unknown hook {value:?} (expected pre-install, post-install, pre-upgrade, post-upgrade, pre-delete, post-delete, pre-rollback, post-rollback or test)"
                    ));
                }
            };
            if let Some(phase) = phase
                && !phases.contains(&phase)
            {
                phases.push(phase);
            }
        }
        if phases.is_empty() {
            let reason = if !not_now.is_empty() {
                let when = if first_sync {
                    "this is the Target's first sync"
                } else {
                    "the Target was installed before"
                };
                format!("not run: {HELM_HOOK} {} ({when})", not_now.join(","))
            } else {
                format!(
                    "not run: {HELM_HOOK} {} (test, delete and rollback hooks are not run by gitfleet)",
                    not_run.join(",")
                )
            };
            return Ok(Role::Skipped(reason));
        }
        phases
    } else {
        return Ok(Role::Ordinary);
    };
    if phases.is_empty() {
        return Err(
            "a hook annotation names no hook (expected one of PreSync, Sync, PostSync, SyncFail)"
                .to_owned(),
        );
    }
    let weight = match annotation(body, HELM_WEIGHT) {
        Some(raw) => raw
            .trim()
            .parse::<i32>()
            .map_err(|_| format!("annotation {HELM_WEIGHT} must be an integer, not {raw:?}"))?,
        None => Manifest::wave_of(body),
    };
    let mut policies = Vec::new();
    let policy_annotation = [
        ANNOTATION_DELETE_POLICY,
        ARGO_DELETE_POLICY,
        HELM_DELETE_POLICY,
    ]
    .into_iter()
    .find_map(|key| annotation(body, key).map(|raw| (key, raw)));
    if let Some((key, raw)) = policy_annotation {
        for value in values(raw) {
            let policy = DeletePolicy::parse(key, value).ok_or_else(|| {
                let expected = if key == HELM_DELETE_POLICY {
                    "before-hook-creation, hook-succeeded or hook-failed"
                } else {
                    "BeforeHookCreation, HookSucceeded or HookFailed"
                };
                format!("annotation {key}: unknown delete policy {value:?} (expected {expected})")
            })?;
            if !policies.contains(&policy) {
                policies.push(policy);
            }
        }
    }
    if policies.is_empty() {
        policies.push(DeletePolicy::BeforeHookCreation);
    }
    Ok(Role::Hook {
        phases,
        weight,
        policies,
    })
}

/// Where a hook's run stands, from the health of its live object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Run {
    Running,
    Succeeded,
    Failed,
}

/// A hook run succeeds when its object is Healthy (a Job complete, a Pod Succeeded, anything
/// else healthy by the health rules) and fails when it is Degraded; anything else is still
/// running (a hook just created may not be seen yet).
pub fn run_state(health: Health) -> Run {
    match health {
        Health::Healthy => Run::Succeeded,
        Health::Degraded => Run::Failed,
        _ => Run::Running,
    }
}

/// Whether the next wave may be applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    /// Every object of the wave is Healthy (or Suspended).
    Open,
    /// Some are not healthy yet (their names and what they say).
    Wait(Vec<String>),
    /// Some are Degraded: they will not become healthy by waiting.
    Broken(Vec<String>),
}

/// The gate after a wave, from `(name, health, message)` of each object applied in it.
pub fn gate<'a>(objects: impl IntoIterator<Item = (String, Health, &'a str)>) -> Gate {
    let mut waiting = Vec::new();
    let mut broken = Vec::new();
    for (name, health, message) in objects {
        let described = if message.is_empty() {
            format!("{name} ({})", health.as_str())
        } else {
            format!("{name} ({}: {message})", health.as_str())
        };
        match health {
            // Suspended on purpose (a suspended CronJob, a paused rollout): waiting would not
            // change it.
            Health::Healthy | Health::Suspended => {}
            Health::Degraded => broken.push(described),
            _ => waiting.push(described),
        }
    }
    if !broken.is_empty() {
        Gate::Broken(broken)
    } else if !waiting.is_empty() {
        Gate::Wait(waiting)
    } else {
        Gate::Open
    }
}

/// What keeps a gate closed: `is degraded: ...` or `did not become healthy within Ns: ...`
/// (empty for an open gate).
pub fn unhealthy_because(gate: &Gate, timeout: std::time::Duration) -> String {
    match gate {
        Gate::Broken(names) => format!("is degraded: {}", names.join(", ")),
        Gate::Wait(names) => format!(
            "did not become healthy within {}s: {}",
            timeout.as_secs(),
            names.join(", ")
        ),
        Gate::Open => String::new(),
    }
}

/// What failed when wave `wave` did not become healthy (`wave 0 is degraded: ...`).
pub fn wave_not_healthy(wave: i32, gate: &Gate, timeout: std::time::Duration) -> String {
    format!("wave {wave} {}", unhealthy_because(gate, timeout))
}

#[cfg(test)]
mod tests;

//! The only place that converts between wire messages and the hub's domain types.

use std::collections::BTreeMap;
use std::sync::Arc;

use gitfleet_proto::v1 as pb;
use tonic::Status;

use crate::engine::{Applied, NewToken, RegisterOutcome, Registration};
use crate::fleet::DesiredTarget;
use crate::link::DesiredUpdate;
use crate::model::{
    ClusterRecord, ClusterView, CredentialKind, HealthState, RepoCredential, ResourceOutcome,
    SyncState, TargetReport, TargetView, TokenRecord, VersionedTarget,
};
use crate::resources::{RenderSpec, RenderType, SyncPolicySpec};
use gitfleet_core::charts::ResolvedChart;

/// `traces`: the W3C trace context (by App) each upsert carries to the spoke.
pub fn desired_state(
    update: DesiredUpdate,
    hub_epoch: &str,
    credentials: Vec<(String, RepoCredential)>,
    traces: &BTreeMap<String, BTreeMap<String, String>>,
) -> pb::DesiredState {
    pb::DesiredState {
        generation: update.generation,
        base_generation: update.base_generation,
        snapshot: update.snapshot,
        hub_epoch: hub_epoch.to_owned(),
        upserts: update
            .upserts
            .into_iter()
            .map(|t| {
                let trace = traces.get(&t.target.app).cloned().unwrap_or_default();
                target_spec(t, trace)
            })
            .collect(),
        removals: update.removals,
        credentials: credentials
            .into_iter()
            .map(
                |(repo_url, RepoCredential { urls, kind })| pb::RepoCredential {
                    repo_url,
                    kind: Some(match kind {
                        CredentialKind::Https { username, password } => {
                            pb::repo_credential::Kind::Https(pb::HttpsCredential {
                                username,
                                password,
                            })
                        }
                        CredentialKind::Ssh {
                            username,
                            private_key_pem,
                            known_hosts,
                        } => pb::repo_credential::Kind::Ssh(pb::SshCredential {
                            username,
                            private_key_pem,
                            known_hosts,
                        }),
                    }),
                    urls,
                },
            )
            .collect(),
    }
}

pub fn target_spec(v: VersionedTarget, trace: BTreeMap<String, String>) -> pb::TargetSpec {
    let VersionedTarget {
        spec_generation,
        target,
    } = v;
    let DesiredTarget {
        app,
        repo,
        repo_url,
        commit,
        git_ref,
        path,
        extra_paths,
        namespace,
        render,
        sync_policy,
        // Not on the wire: the spec generation it bumped tells the spoke to sync again.
        sync_request: _,
        project,
        // For status only: `sync_policy` already has self-heal off.
        self_heal_suspended: _,
        trusted_keys,
        health_rules,
        chart,
    } = Arc::unwrap_or_clone(target);
    pb::TargetSpec {
        target_id: app.clone(),
        app,
        source: Some(pb::Source {
            repo_url,
            repo_name: repo,
            commit,
            git_ref,
            path,
            extra_paths,
        }),
        namespace,
        render: Some(render_options(&render, chart)),
        sync_policy: Some(sync_policy_pb(sync_policy)),
        trace: (!trace.is_empty()).then(|| pb::TraceContext {
            fields: trace.into_iter().collect(),
        }),
        spec_generation,
        project: project.map(target_project_pb),
        trusted_keys,
        health_rules: health_rules.into_iter().map(health_rule_pb).collect(),
    }
}

fn health_rule_pb(r: crate::health_rules::TargetHealthRule) -> pb::HealthRule {
    let crate::health_rules::TargetHealthRule { origin, rule } = r;
    pb::HealthRule {
        origin,
        group: rule.group,
        kind: rule.kind,
        degraded_when: rule.degraded_when,
        suspended_when: rule.suspended_when,
        healthy_when: rule.healthy_when,
        message: rule.message,
    }
}

fn target_project_pb(p: crate::fleet::project::TargetProject) -> pb::TargetProject {
    let group_kinds = |list: Vec<crate::resources::GroupKind>| {
        list.into_iter()
            .map(|gk| pb::GroupKind {
                group: gk.group,
                kind: gk.kind,
            })
            .collect()
    };
    pb::TargetProject {
        name: p.name,
        namespaces: p.namespaces,
        cluster_resources: group_kinds(p.cluster_resources),
        namespace_deny: group_kinds(p.namespace_deny),
    }
}

/// The engine and its options, and (for spokes older than `engine`) the same in fields 1-5.
#[allow(deprecated)]
fn render_options(r: &RenderSpec, chart: Option<ResolvedChart>) -> pb::RenderOptions {
    let render_type = match r.render_type {
        RenderType::Auto => pb::RenderType::Auto,
        RenderType::Yaml => pb::RenderType::Yaml,
        RenderType::Kustomize => pb::RenderType::Kustomize,
        RenderType::Helm => pb::RenderType::Helm,
    };
    let kustomize = pb::KustomizeOptions {
        dir: r
            .kustomize
            .as_ref()
            .and_then(|k| k.dir.clone())
            .unwrap_or_default(),
    };
    let helm = r.helm.as_ref();
    let helm = pb::HelmOptions {
        release: helm
            .and_then(|h| h.release_name.clone())
            .unwrap_or_default(),
        values_files: helm.map(|h| h.values_files.clone()).unwrap_or_default(),
        values_yaml: helm
            .and_then(|h| h.values.as_ref())
            .and_then(|v| serde_saphyr::to_string(v).ok())
            .unwrap_or_default(),
        chart: chart.map(|c| pb::HelmChart {
            repository: c.repository,
            name: c.name,
            version: c.version,
            digest: c.digest,
            url: c.url,
            manifest_digest: c.manifest_digest,
        }),
    };
    pb::RenderOptions {
        r#type: render_type as i32,
        kustomize_dir: kustomize.dir.clone(),
        helm_release: helm.release.clone(),
        helm_values_files: helm.values_files.clone(),
        helm_values_yaml: helm.values_yaml.clone(),
        engine: Some(match r.render_type {
            RenderType::Auto => pb::render_options::Engine::Detect(pb::DetectOptions {
                kustomize: Some(kustomize),
                helm: Some(helm),
            }),
            RenderType::Yaml => pb::render_options::Engine::Plain(pb::PlainOptions {}),
            RenderType::Kustomize => pb::render_options::Engine::Kustomize(kustomize),
            RenderType::Helm => pb::render_options::Engine::Helm(helm),
        }),
    }
}

fn sync_policy_pb(p: SyncPolicySpec) -> pb::SyncPolicy {
    pb::SyncPolicy {
        prune: p.prune,
        self_heal: p.self_heal,
        suspended: p.suspended,
        force: p.force,
        adopt: p.adopt,
    }
}

fn sync_state(v: i32) -> SyncState {
    match pb::SyncState::try_from(v).unwrap_or(pb::SyncState::Unspecified) {
        pb::SyncState::Unspecified => SyncState::Unknown,
        pb::SyncState::Pending => SyncState::Pending,
        pb::SyncState::Syncing => SyncState::Syncing,
        pb::SyncState::Synced => SyncState::Synced,
        pb::SyncState::OutOfSync => SyncState::OutOfSync,
        pb::SyncState::Failed => SyncState::Failed,
    }
}

fn sync_state_pb(s: SyncState) -> pb::SyncState {
    match s {
        SyncState::Unknown => pb::SyncState::Unspecified,
        SyncState::Pending => pb::SyncState::Pending,
        SyncState::Syncing => pb::SyncState::Syncing,
        SyncState::Synced => pb::SyncState::Synced,
        SyncState::OutOfSync => pb::SyncState::OutOfSync,
        SyncState::Failed => pb::SyncState::Failed,
    }
}

fn health_state(v: i32) -> HealthState {
    match pb::HealthState::try_from(v).unwrap_or(pb::HealthState::Unspecified) {
        pb::HealthState::Unspecified | pb::HealthState::Unknown => HealthState::Unknown,
        pb::HealthState::Healthy => HealthState::Healthy,
        pb::HealthState::Progressing => HealthState::Progressing,
        pb::HealthState::Degraded => HealthState::Degraded,
        pb::HealthState::Missing => HealthState::Missing,
        pb::HealthState::Suspended => HealthState::Suspended,
    }
}

fn health_state_pb(h: HealthState) -> pb::HealthState {
    match h {
        HealthState::Unknown => pb::HealthState::Unknown,
        HealthState::Healthy => pb::HealthState::Healthy,
        HealthState::Progressing => pb::HealthState::Progressing,
        HealthState::Degraded => pb::HealthState::Degraded,
        HealthState::Missing => pb::HealthState::Missing,
        HealthState::Suspended => pb::HealthState::Suspended,
    }
}

/// A spoke's report; the caller has checked that `cluster` is the caller's own.
pub fn target_report(r: pb::StatusReport) -> Result<TargetReport, Status> {
    if r.seq == 0 {
        return Err(Status::invalid_argument(
            "status report: seq must be positive",
        ));
    }
    if r.target_id.is_empty() {
        return Err(Status::invalid_argument(
            "status report: target_id is empty",
        ));
    }
    Ok(TargetReport {
        seq: r.seq,
        cluster: r.cluster,
        app: r.target_id,
        revision: r.revision,
        chart_digest: r.chart_digest,
        spec_generation: r.spec_generation,
        sync: sync_state(r.sync),
        health: health_state(r.health),
        message: r.message,
        resources: r
            .resources
            .into_iter()
            .map(|x| ResourceOutcome {
                api_version: x.api_version,
                kind: x.kind,
                namespace: x.namespace,
                name: x.name,
                action: x.action,
                health: health_state(x.health),
                message: x.message,
                source_file: x.source_file,
                hook: x.hook,
            })
            .collect(),
        observed_at_unix: r.observed_at_unix,
        trace: r
            .trace
            .map(|t| t.fields.into_iter().collect())
            .unwrap_or_default(),
        received_at_unix: 0,
    })
}

/// Why `r` breaks the report limits of docs/protocol.md, in words that name the limit; `None`
/// when it is within them.
pub fn report_over_limits(r: &pb::StatusReport) -> Option<String> {
    use gitfleet_proto::report_limits::*;
    use prost::Message as _;
    let size = r.encoded_len();
    if size > MAX_REPORT_BYTES {
        return Some(format!(
            "the report is {size} bytes encoded (the limit is {MAX_REPORT_BYTES})"
        ));
    }
    if r.resources.len() > MAX_RESOURCES {
        return Some(format!(
            "the report lists {} resources (the limit is {MAX_RESOURCES})",
            r.resources.len()
        ));
    }
    let fields = r.trace.as_ref().map(|t| &t.fields);
    let trace_fields = fields.map_or(0, |f| f.len());
    if trace_fields > MAX_TRACE_FIELDS {
        return Some(format!(
            "the trace context has {trace_fields} fields (the limit is {MAX_TRACE_FIELDS})"
        ));
    }
    too_long(|| "message".into(), &r.message, MAX_MESSAGE_BYTES)
        .or_else(|| too_long(|| "target_id".into(), &r.target_id, MAX_FIELD_BYTES))
        .or_else(|| too_long(|| "revision".into(), &r.revision, MAX_FIELD_BYTES))
        .or_else(|| too_long(|| "chart_digest".into(), &r.chart_digest, MAX_FIELD_BYTES))
        .or_else(|| {
            fields.into_iter().flatten().find_map(|(k, v)| {
                too_long(|| "a trace context key".into(), k, MAX_FIELD_BYTES).or_else(|| {
                    too_long(
                        || format!("trace context field {:?}", cut(k, 64)),
                        v,
                        MAX_FIELD_BYTES,
                    )
                })
            })
        })
        .or_else(|| {
            r.resources.iter().enumerate().find_map(|(i, x)| {
                let field = |name: &str| format!("resources[{i}].{name}");
                [
                    ("api_version", &x.api_version, MAX_FIELD_BYTES),
                    ("kind", &x.kind, MAX_FIELD_BYTES),
                    ("namespace", &x.namespace, MAX_FIELD_BYTES),
                    ("name", &x.name, MAX_FIELD_BYTES),
                    ("action", &x.action, MAX_FIELD_BYTES),
                    ("message", &x.message, MAX_RESOURCE_MESSAGE_BYTES),
                    ("source_file", &x.source_file, MAX_FIELD_BYTES),
                    ("hook", &x.hook, MAX_FIELD_BYTES),
                ]
                .into_iter()
                .find_map(|(name, value, limit)| too_long(|| field(name), value, limit))
            })
        })
}

/// "FIELD is N bytes (the limit is LIMIT)" when `value` is longer than `limit` bytes.
fn too_long(field: impl FnOnce() -> String, value: &str, limit: usize) -> Option<String> {
    (value.len() > limit).then(|| {
        format!(
            "{} is {} bytes (the limit is {limit})",
            field(),
            value.len()
        )
    })
}

/// What the hub keeps of a report over the limits (see [`report_over_limits`]): the spoke's
/// verdict (sync and health, so that rollouts still move), and a message that names the limit,
/// without the resources or the trace context. Bounded whatever the spoke sent.
pub fn report_over_limits_summary(
    r: pb::StatusReport,
    problem: &str,
) -> Result<TargetReport, Status> {
    use gitfleet_proto::report_limits::MAX_FIELD_BYTES;
    let said = if r.message.is_empty() {
        String::new()
    } else {
        format!("; the spoke said: {}", cut(&r.message, 1024))
    };
    let summary = pb::StatusReport {
        message: format!(
            "status report over the hub's limits, kept without its {} resources: {problem}{said}",
            r.resources.len()
        ),
        revision: cut(&r.revision, MAX_FIELD_BYTES).to_owned(),
        chart_digest: cut(&r.chart_digest, MAX_FIELD_BYTES).to_owned(),
        resources: Vec::new(),
        trace: None,
        ..r
    };
    target_report(summary)
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
pub fn cut(s: &str, max: usize) -> &str {
    let mut end = max.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The `next_page_token` after a Target: its key, versioned. App and cluster names cannot hold
/// a `/`, so the split back is unambiguous.
pub fn next_status_page_token(app: &str, cluster: &str) -> String {
    format!("{STATUS_TOKEN_PREFIX}{app}/{cluster}")
}

const STATUS_TOKEN_PREFIX: &str = "t1:";

/// The Target a `page_token` continues after; `None` for the first page.
pub fn status_page_token(token: &str) -> Result<Option<(String, String)>, Status> {
    if token.is_empty() {
        return Ok(None);
    }
    token
        .strip_prefix(STATUS_TOKEN_PREFIX)
        .and_then(|rest| rest.split_once('/'))
        .filter(|(app, cluster)| !app.is_empty() && !cluster.is_empty() && !cluster.contains('/'))
        .map(|(app, cluster)| Some((app.to_owned(), cluster.to_owned())))
        .ok_or_else(|| {
            Status::invalid_argument(format!(
                "page_token {token:?} is not one this hub returned; start again with an empty token"
            ))
        })
}

/// The `next_page_token` of `ListClusters` after a cluster.
pub fn next_cluster_page_token(name: &str) -> String {
    format!("{CLUSTER_TOKEN_PREFIX}{name}")
}

const CLUSTER_TOKEN_PREFIX: &str = "c1:";

/// The cluster a `ListClusters` `page_token` continues after; `None` for the first page.
pub fn cluster_page_token(token: &str) -> Result<Option<String>, Status> {
    if token.is_empty() {
        return Ok(None);
    }
    token
        .strip_prefix(CLUSTER_TOKEN_PREFIX)
        .filter(|name| !name.is_empty())
        .map(|name| Some(name.to_owned()))
        .ok_or_else(|| {
            Status::invalid_argument(format!(
                "page_token {token:?} is not one this hub returned; start again with an empty token"
            ))
        })
}

pub fn target_status(v: TargetView) -> pb::TargetStatus {
    let report = v.report.unwrap_or_default();
    pb::TargetStatus {
        app: v.app,
        cluster: v.cluster,
        desired_revision: v.desired_revision,
        applied_revision: report.revision,
        sync: sync_state_pb(report.sync) as i32,
        health: health_state_pb(report.health) as i32,
        message: report.message,
        resources: report
            .resources
            .into_iter()
            .map(|x| pb::ResourceResult {
                api_version: x.api_version,
                kind: x.kind,
                namespace: x.namespace,
                name: x.name,
                action: x.action,
                health: health_state_pb(x.health) as i32,
                message: x.message,
                source_file: x.source_file,
                hook: x.hook,
            })
            .collect(),
        updated_at_unix: v.updated_at_unix,
        cluster_connected: v.cluster_connected,
        held: v.held,
    }
}

pub fn cluster_info(v: ClusterView) -> pb::ClusterInfo {
    let r = v.record;
    pb::ClusterInfo {
        name: r.name,
        labels: r.labels.into_iter().collect(),
        agent_version: r.agent_version,
        connected: v.connected,
        last_contact_unix: r.last_contact_unix,
        registered_at_unix: r.registered_at_unix,
        certificate_expires_unix: r.certificate_expires_unix,
        revoked: r.revoked,
    }
}

pub fn apply_outcome(a: Applied) -> pb::ApplyOutcome {
    pb::ApplyOutcome {
        kind: a.kind.to_string(),
        name: a.name,
        action: a.action.to_owned(),
    }
}

pub fn create_token_response(t: NewToken) -> pb::CreateTokenResponse {
    pb::CreateTokenResponse {
        token: t.token,
        token_id: t.id,
        expires_at_unix: t.expires_at_unix,
    }
}

pub fn registration(r: pb::RegisterRequest) -> Registration {
    Registration {
        token: r.token,
        cluster: r.cluster_name,
        csr_pem: r.csr_pem,
        labels: r.labels.into_iter().collect::<BTreeMap<_, _>>(),
        agent_version: r.agent_version,
    }
}

pub fn register_response(outcome: RegisterOutcome) -> pb::RegisterResponse {
    let outcome = match outcome {
        RegisterOutcome::Issued(i) => pb::register_response::Outcome::Issued(pb::Issued {
            certificate_pem: i.certificate_pem,
            ca_pem: i.ca_pem,
            cluster_name: i.cluster,
        }),
        RegisterOutcome::Pending {
            cluster,
            retry_after,
        } => pb::register_response::Outcome::Pending(pb::PendingApproval {
            cluster_name: cluster,
            retry_after_seconds: u32::try_from(retry_after.as_secs()).unwrap_or(u32::MAX),
        }),
    };
    pb::RegisterResponse {
        outcome: Some(outcome),
    }
}

pub fn pending_cluster(c: ClusterRecord) -> pb::PendingCluster {
    pb::PendingCluster {
        name: c.name,
        labels: c.labels.into_iter().collect(),
        agent_version: c.agent_version,
        requested_at_unix: c.registered_at_unix,
    }
}

pub fn token_info(t: TokenRecord) -> pb::TokenInfo {
    pb::TokenInfo {
        token_id: t.id,
        expires_at_unix: t.expires_at_unix,
        max_uses: t.max_uses,
        uses: t.uses,
        labels: t.labels.into_iter().collect(),
        description: t.description,
        revoked: t.revoked,
        allowed_label_keys: t.allowed_label_keys.into_iter().collect(),
        cluster_name: t.cluster.unwrap_or_default(),
    }
}

pub fn notifier_info(v: crate::engine::NotifierView) -> pb::NotifierInfo {
    pb::NotifierInfo {
        name: v.name,
        project: v.project,
        sink: v.sink,
        events: v.events,
        last_delivery: v.status.last_delivery,
        last_delivery_unix: v.status.last_delivery_unix,
        last_error: v.status.last_error,
        last_error_unix: v.status.last_error_unix,
        pending: v.pending as u64,
        delivered: v.status.delivered,
        given_up: v.status.given_up,
        next_attempt_unix: v.next_attempt_ms.div_euclid(1000),
    }
}

/// A spoke's diff result, as `DiffLive` answers it for its cluster.
pub fn cluster_diff(r: pb::DiffResult) -> pb::ClusterDiff {
    pb::ClusterDiff {
        cluster: r.cluster,
        revision: r.revision,
        objects: r.objects,
        error: r.error,
        offline: false,
        omitted: r.omitted,
        creates: r.creates,
        updates: r.updates,
        prunes: r.prunes,
        failures: r.failures,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::{HelmOptions, KustomizeOptions};

    /// Spokes from before the `engine` oneof read fields 1-5: the hub still fills them as it did.
    #[test]
    #[allow(deprecated)]
    fn render_options_carry_the_engine_and_the_old_fields_alike() {
        let spec = |render_type| RenderSpec {
            render_type,
            kustomize: Some(KustomizeOptions {
                dir: Some("overlays/dev".into()),
            }),
            helm: Some(HelmOptions {
                release_name: Some("web-b".into()),
                values_files: vec!["values-prod.yaml".into()],
                values: None,
                chart: None,
            }),
        };
        let kustomize = pb::KustomizeOptions {
            dir: "overlays/dev".into(),
        };
        let helm = pb::HelmOptions {
            release: "web-b".into(),
            values_files: vec!["values-prod.yaml".into()],
            values_yaml: String::new(),
            chart: None,
        };
        for (render_type, old_type, engine) in [
            (
                RenderType::Auto,
                pb::RenderType::Auto,
                pb::render_options::Engine::Detect(pb::DetectOptions {
                    kustomize: Some(kustomize.clone()),
                    helm: Some(helm.clone()),
                }),
            ),
            (
                RenderType::Yaml,
                pb::RenderType::Yaml,
                pb::render_options::Engine::Plain(pb::PlainOptions {}),
            ),
            (
                RenderType::Kustomize,
                pb::RenderType::Kustomize,
                pb::render_options::Engine::Kustomize(kustomize.clone()),
            ),
            (
                RenderType::Helm,
                pb::RenderType::Helm,
                pb::render_options::Engine::Helm(helm.clone()),
            ),
        ] {
            let options = render_options(&spec(render_type), None);
            assert_eq!(options.r#type, old_type as i32);
            assert_eq!(options.kustomize_dir, "overlays/dev");
            assert_eq!(options.helm_release, "web-b");
            assert_eq!(options.helm_values_files, ["values-prod.yaml"]);
            assert_eq!(options.engine, Some(engine), "{render_type:?}");
        }
    }
}

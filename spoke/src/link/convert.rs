//! Wire <-> domain: the only place the spoke converts between the link's messages and its own
//! types.

use gitfleet_proto::v1 as pb;

use crate::desired::DesiredUpdate;
use crate::model::{
    CredentialKind, Health, RenderOptions, RenderType, RepoCredential, ResourceResult, Source,
    SyncPolicy, SyncState, TargetSpec,
};
use crate::outbox::SequencedReport;

pub fn desired_from_proto(d: pb::DesiredState) -> DesiredUpdate {
    DesiredUpdate {
        generation: d.generation,
        base_generation: d.base_generation,
        snapshot: d.snapshot,
        hub_epoch: d.hub_epoch,
        upserts: d.upserts.into_iter().map(target_from_proto).collect(),
        removals: d.removals,
        credentials: d
            .credentials
            .into_iter()
            .filter_map(credential_from_proto)
            .collect(),
    }
}

/// The engine and its options: from `engine` where the hub sets it, else from fields 1-5 (a
/// hub older than `engine`).
#[allow(deprecated)]
fn render_from_proto(render: pb::RenderOptions) -> RenderOptions {
    use pb::render_options::Engine;
    let with =
        |render_type, kustomize: Option<pb::KustomizeOptions>, helm: Option<pb::HelmOptions>| {
            let helm = helm.unwrap_or_default();
            RenderOptions {
                render_type,
                kustomize_dir: kustomize.unwrap_or_default().dir,
                helm_release: helm.release,
                helm_values_files: helm.values_files,
                helm_values_yaml: helm.values_yaml,
                helm_chart: helm.chart.map(|c| gitfleet_core::charts::ResolvedChart {
                    repository: c.repository,
                    name: c.name,
                    version: c.version,
                    digest: c.digest,
                    url: c.url,
                    manifest_digest: c.manifest_digest,
                }),
            }
        };
    match render.engine {
        Some(Engine::Detect(detect)) => with(RenderType::Auto, detect.kustomize, detect.helm),
        Some(Engine::Plain(_)) => with(RenderType::Yaml, None, None),
        Some(Engine::Kustomize(kustomize)) => with(RenderType::Kustomize, Some(kustomize), None),
        Some(Engine::Helm(helm)) => with(RenderType::Helm, None, Some(helm)),
        None => RenderOptions {
            render_type: match pb::RenderType::try_from(render.r#type)
                .unwrap_or(pb::RenderType::Unspecified)
            {
                pb::RenderType::Yaml => RenderType::Yaml,
                pb::RenderType::Kustomize => RenderType::Kustomize,
                pb::RenderType::Helm => RenderType::Helm,
                pb::RenderType::Auto | pb::RenderType::Unspecified => RenderType::Auto,
            },
            kustomize_dir: render.kustomize_dir,
            helm_release: render.helm_release,
            helm_values_files: render.helm_values_files,
            helm_values_yaml: render.helm_values_yaml,
            helm_chart: None,
        },
    }
}

pub fn target_from_proto(t: pb::TargetSpec) -> TargetSpec {
    let source = t.source.unwrap_or_default();
    let render = t.render.unwrap_or_default();
    let policy = t.sync_policy.unwrap_or_default();
    TargetSpec {
        target_id: t.target_id,
        app: t.app,
        source: Source {
            repo_url: source.repo_url,
            repo_name: source.repo_name,
            commit: source.commit,
            git_ref: source.git_ref,
            path: source.path,
            extra_paths: source.extra_paths,
            trusted_keys: t.trusted_keys,
        },
        namespace: t.namespace,
        render: render_from_proto(render),
        sync_policy: SyncPolicy {
            prune: policy.prune,
            self_heal: policy.self_heal,
            suspended: policy.suspended,
            force: policy.force,
            adopt: policy.adopt,
        },
        trace: t
            .trace
            .map(|t| t.fields.into_iter().collect())
            .unwrap_or_default(),
        spec_generation: t.spec_generation,
        project: t.project.map(project_from_proto),
        health_rules: t
            .health_rules
            .into_iter()
            .map(health_rule_from_proto)
            .collect(),
    }
}

fn health_rule_from_proto(r: pb::HealthRule) -> gitfleet_core::health_rules::TargetHealthRule {
    gitfleet_core::health_rules::TargetHealthRule {
        origin: r.origin,
        rule: gitfleet_core::health_rules::HealthRuleSpec {
            group: r.group,
            kind: r.kind,
            degraded_when: r.degraded_when,
            suspended_when: r.suspended_when,
            healthy_when: r.healthy_when,
            message: r.message,
        },
    }
}

fn project_from_proto(p: pb::TargetProject) -> crate::sync::project::TargetProject {
    let group_kinds = |list: Vec<pb::GroupKind>| {
        list.into_iter()
            .map(|gk| gitfleet_core::resources::GroupKind {
                group: gk.group,
                kind: gk.kind,
            })
            .collect()
    };
    crate::sync::project::TargetProject {
        name: p.name,
        namespaces: p.namespaces,
        cluster_resources: group_kinds(p.cluster_resources),
        namespace_deny: group_kinds(p.namespace_deny),
    }
}

fn credential_from_proto(c: pb::RepoCredential) -> Option<RepoCredential> {
    let kind = match c.kind? {
        pb::repo_credential::Kind::Https(h) => CredentialKind::Https {
            username: h.username,
            password: h.password,
        },
        pb::repo_credential::Kind::Ssh(s) => CredentialKind::Ssh {
            username: s.username,
            private_key_pem: s.private_key_pem,
            known_hosts: s.known_hosts,
        },
    };
    Some(RepoCredential {
        repo_url: c.repo_url,
        kind,
        urls: c.urls,
    })
}

pub fn status_to_proto(cluster: &str, report: &SequencedReport) -> pb::StatusReport {
    let s = &report.status;
    pb::StatusReport {
        seq: report.seq,
        cluster: cluster.to_owned(),
        target_id: s.target_id.clone(),
        revision: s.revision.clone(),
        spec_generation: s.spec_generation,
        sync: sync_to_proto(s.sync) as i32,
        health: health_to_proto(s.health) as i32,
        message: s.message.clone(),
        resources: s.resources.iter().map(resource_to_proto).collect(),
        observed_at_unix: s.observed_at_unix,
        trace: Some(pb::TraceContext {
            fields: s.trace.clone().into_iter().collect(),
        }),
        chart_digest: s.chart_digest.clone(),
    }
}

fn resource_to_proto(r: &ResourceResult) -> pb::ResourceResult {
    pb::ResourceResult {
        api_version: r.object.api_version.clone(),
        kind: r.object.kind.clone(),
        namespace: r.object.namespace.clone(),
        name: r.object.name.clone(),
        action: r.action.as_str().to_owned(),
        health: health_to_proto(r.health) as i32,
        message: r.message.clone(),
        source_file: r.source_file.clone(),
        hook: r.hook.clone(),
    }
}

pub fn sync_to_proto(s: SyncState) -> pb::SyncState {
    match s {
        SyncState::Pending => pb::SyncState::Pending,
        SyncState::Syncing => pb::SyncState::Syncing,
        SyncState::Synced => pb::SyncState::Synced,
        SyncState::OutOfSync => pb::SyncState::OutOfSync,
        SyncState::Failed => pb::SyncState::Failed,
    }
}

pub fn health_to_proto(h: Health) -> pb::HealthState {
    match h {
        Health::Healthy => pb::HealthState::Healthy,
        Health::Progressing => pb::HealthState::Progressing,
        Health::Degraded => pb::HealthState::Degraded,
        Health::Missing => pb::HealthState::Missing,
        Health::Suspended => pb::HealthState::Suspended,
        Health::Unknown => pb::HealthState::Unknown,
    }
}

/// A diff's answer to the hub's request `request_id`.
pub fn diff_result_to_proto(
    cluster: &str,
    request_id: String,
    diff: crate::sync::diff::TargetDiff,
) -> pb::DiffResult {
    use crate::sync::diff::DiffAction;
    let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    pb::DiffResult {
        request_id,
        cluster: cluster.to_owned(),
        target_id: diff.target_id,
        revision: diff.revision,
        objects: diff
            .objects
            .into_iter()
            .map(|o| pb::DiffObject {
                api_version: o.object.api_version,
                kind: o.object.kind,
                namespace: o.object.namespace,
                name: o.object.name,
                action: match o.action {
                    DiffAction::Create => pb::DiffAction::Create,
                    DiffAction::Update => pb::DiffAction::Update,
                    DiffAction::Unchanged => pb::DiffAction::Unchanged,
                    DiffAction::Prune => pb::DiffAction::Prune,
                    DiffAction::Failed => pb::DiffAction::Failed,
                } as i32,
                diff: o.diff,
                message: o.message,
                source_file: o.source_file,
            })
            .collect(),
        error: diff.error.unwrap_or_default(),
        omitted: count(diff.omitted),
        creates: count(diff.counts.creates),
        updates: count(diff.counts.updates),
        prunes: count(diff.counts.prunes),
        failures: count(diff.counts.failures),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_specs_convert_from_the_wire() {
        let spec = target_from_proto(pb::TargetSpec {
            target_id: "web".into(),
            app: "web".into(),
            source: Some(pb::Source {
                repo_url: "file:///r".into(),
                commit: "c".into(),
                path: "apps/web".into(),
                ..Default::default()
            }),
            namespace: "web".into(),
            render: Some(pb::RenderOptions {
                engine: Some(pb::render_options::Engine::Kustomize(
                    pb::KustomizeOptions::default(),
                )),
                ..Default::default()
            }),
            sync_policy: Some(pb::SyncPolicy {
                prune: true,
                force: true,
                adopt: true,
                ..Default::default()
            }),
            trace: None,
            spec_generation: 4,
            project: Some(pb::TargetProject {
                name: "team-a".into(),
                namespaces: vec!["team-a-*".into()],
                cluster_resources: vec![pb::GroupKind {
                    group: "*".into(),
                    kind: "Namespace".into(),
                }],
                namespace_deny: vec![pb::GroupKind {
                    group: String::new(),
                    kind: "ResourceQuota".into(),
                }],
            }),
            trusted_keys: vec!["ssh-ed25519 AAAA k".into()],
            health_rules: vec![pb::HealthRule {
                origin: "Project team-a".into(),
                group: "db.example.com".into(),
                kind: "Database".into(),
                healthy_when: "status.ready".into(),
                ..Default::default()
            }],
        });
        assert_eq!(spec.health_rules[0].origin, "Project team-a");
        assert_eq!(spec.health_rules[0].rule.kind, "Database");
        assert_eq!(spec.health_rules[0].rule.healthy_when, "status.ready");
        assert_eq!(spec.source.trusted_keys, ["ssh-ed25519 AAAA k"]);
        let project = spec.project.clone().unwrap();
        assert_eq!(
            (project.name.as_str(), project.namespaces.as_slice()),
            ("team-a", ["team-a-*".to_owned()].as_slice())
        );
        assert_eq!(project.cluster_resources[0].kind, "Namespace");
        assert_eq!(project.namespace_deny[0].kind, "ResourceQuota");
        assert_eq!(spec.source.path, "apps/web");
        assert_eq!(spec.render.render_type, RenderType::Kustomize);
        assert!(spec.sync_policy.prune && spec.sync_policy.force && !spec.sync_policy.self_heal);
        assert!(spec.sync_policy.adopt);
        assert_eq!(spec.spec_generation, 4);
    }

    /// `RenderOptions` as hubs and spokes before the `engine` oneof encoded it.
    #[derive(Clone, PartialEq, prost::Message)]
    struct LegacyRenderOptions {
        #[prost(enumeration = "pb::RenderType", tag = "1")]
        r#type: i32,
        #[prost(string, tag = "2")]
        kustomize_dir: String,
        #[prost(string, tag = "3")]
        helm_release: String,
        #[prost(string, repeated, tag = "4")]
        helm_values_files: Vec<String>,
        #[prost(string, tag = "5")]
        helm_values_yaml: String,
    }

    fn options(
        render_type: RenderType,
        kustomize_dir: &str,
        helm_release: &str,
        helm_values_files: &[&str],
        helm_values_yaml: &str,
    ) -> RenderOptions {
        RenderOptions {
            render_type,
            kustomize_dir: kustomize_dir.into(),
            helm_release: helm_release.into(),
            helm_values_files: helm_values_files.iter().map(|f| (*f).to_owned()).collect(),
            helm_values_yaml: helm_values_yaml.into(),
            helm_chart: None,
        }
    }

    /// A hub of the previous release and one of this release meet spokes of either during an
    /// upgrade: each side must read the render options the other meant.
    #[test]
    #[allow(deprecated)]
    fn render_options_read_the_same_in_the_old_encoding_and_the_new() {
        use pb::render_options::Engine;
        use prost::Message as _;
        let kustomize = |dir: &str| pb::KustomizeOptions { dir: dir.into() };
        let helm = pb::HelmOptions {
            release: "web-b".into(),
            values_files: vec!["values-prod.yaml".into()],
            values_yaml: "replicas: 3\n".into(),
            chart: None,
        };
        let cases = [
            (
                options(RenderType::Auto, "", "", &[], ""),
                pb::RenderType::Auto,
                Engine::Detect(pb::DetectOptions::default()),
            ),
            (
                options(
                    RenderType::Auto,
                    "overlays/dev",
                    "web-b",
                    &["values-prod.yaml"],
                    "replicas: 3\n",
                ),
                pb::RenderType::Auto,
                Engine::Detect(pb::DetectOptions {
                    kustomize: Some(kustomize("overlays/dev")),
                    helm: Some(helm.clone()),
                }),
            ),
            (
                options(RenderType::Yaml, "", "", &[], ""),
                pb::RenderType::Yaml,
                Engine::Plain(pb::PlainOptions {}),
            ),
            (
                options(RenderType::Kustomize, "overlays/dev", "", &[], ""),
                pb::RenderType::Kustomize,
                Engine::Kustomize(kustomize("overlays/dev")),
            ),
            (
                options(
                    RenderType::Helm,
                    "",
                    "web-b",
                    &["values-prod.yaml"],
                    "replicas: 3\n",
                ),
                pb::RenderType::Helm,
                Engine::Helm(helm.clone()),
            ),
        ];
        for (expected, render_type, engine) in cases {
            let legacy = LegacyRenderOptions {
                r#type: render_type as i32,
                kustomize_dir: expected.kustomize_dir.clone(),
                helm_release: expected.helm_release.clone(),
                helm_values_files: expected.helm_values_files.clone(),
                helm_values_yaml: expected.helm_values_yaml.clone(),
            };
            // An old hub's message, read by this spoke.
            let old = pb::RenderOptions::decode(legacy.encode_to_vec().as_slice()).expect("decode");
            assert_eq!(
                render_from_proto(old),
                expected,
                "old encoding of {render_type:?}"
            );
            // A new hub's message (both encodings, as the hub fills them), read by this spoke
            // and by an old one.
            let both = pb::RenderOptions {
                r#type: legacy.r#type,
                kustomize_dir: legacy.kustomize_dir.clone(),
                helm_release: legacy.helm_release.clone(),
                helm_values_files: legacy.helm_values_files.clone(),
                helm_values_yaml: legacy.helm_values_yaml.clone(),
                engine: Some(engine.clone()),
            };
            let bytes = both.encode_to_vec();
            let new = pb::RenderOptions::decode(bytes.as_slice()).expect("decode");
            assert_eq!(
                render_from_proto(new),
                expected,
                "new encoding of {render_type:?}"
            );
            assert_eq!(
                LegacyRenderOptions::decode(bytes.as_slice()).expect("decode"),
                legacy,
                "an old spoke reading the new encoding of {render_type:?}"
            );
            // The oneof alone means the same as both.
            let engine_only = pb::RenderOptions {
                engine: Some(engine),
                ..Default::default()
            };
            assert_eq!(
                render_from_proto(engine_only),
                expected,
                "engine only: {render_type:?}"
            );
        }
        // Nothing at all (an empty message): detect.
        assert_eq!(
            render_from_proto(pb::RenderOptions::default()),
            RenderOptions::default()
        );
    }
}

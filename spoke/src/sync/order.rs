//! Apply order: waves first (`gitfleet.dev/wave`, lower first), then by kind inside a wave so
//! that what other objects need exists before them: Namespaces, CRDs, cluster-wide RBAC and
//! configuration, namespaced configuration, storage, Services, workloads, then everything else.
//! Ties keep the render order, so the plan is deterministic.
//!
//! A wave in which any object is annotated `gitfleet.dev/wave-on-failure: stop` stops the sync
//! when one of its objects fails to apply: later waves are skipped (reported, not applied).

use super::render::Manifest;

/// Objects of one wave, in apply order.
#[derive(Debug, Clone, PartialEq)]
pub struct Wave {
    pub wave: i32,
    pub manifests: Vec<Manifest>,
    /// A failure in this wave stops the sync before the next wave.
    pub stop_on_failure: bool,
}

/// Orders rendered objects into waves.
pub fn plan(manifests: Vec<Manifest>) -> Vec<Wave> {
    let mut keyed: Vec<(i32, usize, usize, Manifest)> = manifests
        .into_iter()
        .enumerate()
        .map(|(index, m)| (m.wave(), kind_rank(m.group(), &m.object.kind), index, m))
        .collect();
    keyed.sort_by_key(|(wave, rank, index, _)| (*wave, *rank, *index));

    let mut waves: Vec<Wave> = Vec::new();
    for (wave, _, _, manifest) in keyed {
        match waves.last_mut() {
            Some(last) if last.wave == wave => {
                last.stop_on_failure |= manifest.stops_wave_on_failure();
                last.manifests.push(manifest);
            }
            _ => waves.push(Wave {
                wave,
                stop_on_failure: manifest.stops_wave_on_failure(),
                manifests: vec![manifest],
            }),
        }
    }
    waves
}

/// Where a kind goes within a wave; lower applies first. Kinds not listed (custom resources
/// among them) go after every built-in kind, once their CRDs exist.
pub fn kind_rank(group: &str, kind: &str) -> usize {
    const ORDER: &[(&str, &str)] = &[
        ("", "Namespace"),
        ("apiextensions.k8s.io", "CustomResourceDefinition"),
        ("scheduling.k8s.io", "PriorityClass"),
        ("storage.k8s.io", "StorageClass"),
        ("networking.k8s.io", "IngressClass"),
        ("node.k8s.io", "RuntimeClass"),
        ("rbac.authorization.k8s.io", "ClusterRole"),
        ("rbac.authorization.k8s.io", "ClusterRoleBinding"),
        ("", "PersistentVolume"),
        ("networking.k8s.io", "NetworkPolicy"),
        ("", "ResourceQuota"),
        ("", "LimitRange"),
        ("policy", "PodDisruptionBudget"),
        ("", "ServiceAccount"),
        ("", "Secret"),
        ("", "ConfigMap"),
        ("rbac.authorization.k8s.io", "Role"),
        ("rbac.authorization.k8s.io", "RoleBinding"),
        ("", "PersistentVolumeClaim"),
        ("", "Service"),
        ("", "Endpoints"),
        ("discovery.k8s.io", "EndpointSlice"),
        ("apps", "DaemonSet"),
        ("", "Pod"),
        ("", "ReplicationController"),
        ("apps", "ReplicaSet"),
        ("apps", "Deployment"),
        ("autoscaling", "HorizontalPodAutoscaler"),
        ("apps", "StatefulSet"),
        ("batch", "Job"),
        ("batch", "CronJob"),
        ("networking.k8s.io", "Ingress"),
        ("apiregistration.k8s.io", "APIService"),
        ("admissionregistration.k8s.io", "ValidatingAdmissionPolicy"),
        (
            "admissionregistration.k8s.io",
            "ValidatingAdmissionPolicyBinding",
        ),
        // Webhooks last: before their backends run, they would block everything after them.
        (
            "admissionregistration.k8s.io",
            "MutatingWebhookConfiguration",
        ),
        (
            "admissionregistration.k8s.io",
            "ValidatingWebhookConfiguration",
        ),
    ];
    ORDER
        .iter()
        .position(|(g, k)| *g == group && *k == kind)
        .unwrap_or(ORDER.len())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::model::ObjectRef;

    fn manifest(api_version: &str, kind: &str, name: &str, wave: Option<&str>) -> Manifest {
        let mut body = json!({"apiVersion": api_version, "kind": kind, "metadata": {"name": name}});
        if let Some(wave) = wave {
            body["metadata"]["annotations"] = json!({"gitfleet.dev/wave": wave});
        }
        Manifest {
            object: ObjectRef {
                api_version: api_version.into(),
                kind: kind.into(),
                namespace: String::new(),
                name: name.into(),
            },
            body,
            source_file: String::new(),
        }
    }

    fn order(waves: &[Wave]) -> Vec<String> {
        waves
            .iter()
            .flat_map(|w| {
                w.manifests
                    .iter()
                    .map(|m| format!("{}:{}", w.wave, m.object.name))
            })
            .collect()
    }

    #[test]
    fn namespaces_and_crds_first_then_rbac_then_the_rest() {
        let waves = plan(vec![
            manifest("example.com/v1", "Widget", "widget", None),
            manifest("apps/v1", "Deployment", "web", None),
            manifest("v1", "Service", "svc", None),
            manifest("rbac.authorization.k8s.io/v1", "ClusterRole", "role", None),
            manifest(
                "apiextensions.k8s.io/v1",
                "CustomResourceDefinition",
                "crd",
                None,
            ),
            manifest("v1", "ConfigMap", "cfg", None),
            manifest("v1", "Namespace", "ns", None),
            manifest(
                "admissionregistration.k8s.io/v1",
                "ValidatingWebhookConfiguration",
                "hook",
                None,
            ),
        ]);
        assert_eq!(waves.len(), 1);
        assert_eq!(
            order(&waves),
            [
                "0:ns", "0:crd", "0:role", "0:cfg", "0:svc", "0:web", "0:hook", "0:widget"
            ]
        );
    }

    #[test]
    fn waves_come_before_kinds() {
        let waves = plan(vec![
            manifest("v1", "Namespace", "late-ns", Some("2")),
            manifest("apps/v1", "Deployment", "early", Some("-1")),
            manifest("v1", "ConfigMap", "default", None),
        ]);
        assert_eq!(order(&waves), ["-1:early", "0:default", "2:late-ns"]);
        assert_eq!(waves.iter().map(|w| w.wave).collect::<Vec<_>>(), [-1, 0, 2]);
    }

    #[test]
    fn any_object_of_a_wave_can_make_it_stop_on_failure() {
        let mut stopper = manifest("v1", "ConfigMap", "b", Some("1"));
        stopper.body["metadata"]["annotations"]["gitfleet.dev/wave-on-failure"] = "stop".into();
        let waves = plan(vec![
            manifest("v1", "ConfigMap", "a", Some("1")),
            stopper,
            manifest("v1", "ConfigMap", "c", None),
            manifest("v1", "ConfigMap", "d", Some("2")),
        ]);
        let stops: Vec<(i32, bool)> = waves.iter().map(|w| (w.wave, w.stop_on_failure)).collect();
        assert_eq!(stops, [(0, false), (1, true), (2, false)]);
    }

    #[test]
    fn ties_keep_render_order() {
        let waves = plan(vec![
            manifest("v1", "ConfigMap", "b", None),
            manifest("v1", "ConfigMap", "a", None),
            manifest("v1", "ConfigMap", "c", None),
        ]);
        assert_eq!(order(&waves), ["0:b", "0:a", "0:c"]);
    }

    #[test]
    fn same_kind_name_in_another_group_is_not_confused() {
        assert_eq!(kind_rank("", "Namespace"), 0);
        assert_eq!(
            kind_rank("example.com", "Namespace"),
            kind_rank("example.com", "Whatever")
        );
    }

    #[test]
    fn empty_plan_has_no_waves() {
        assert!(plan(Vec::new()).is_empty());
    }
}

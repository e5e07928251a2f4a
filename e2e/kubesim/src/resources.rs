//! The resource types kubesim serves: the built-in ones the corpus and gitfleet use, and those
//! CustomResourceDefinitions add.

use std::sync::{Arc, LazyLock};

use serde_json::Value;

use super::status::{ApiError, FieldError};
use super::validation::NameRule;

#[derive(Debug, Clone, PartialEq)]
pub struct ResourceType {
    pub group: String,
    /// Served versions, preferred first.
    pub versions: Vec<String>,
    pub kind: String,
    pub plural: String,
    pub singular: String,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    pub namespaced: bool,
    /// Has a `/status` subresource (writes to the main resource leave status alone).
    pub status: bool,
    /// Has `metadata.generation`, bumped when anything but metadata and status changes.
    pub generation: bool,
    pub name_rule: NameRule,
    /// Defined by a CustomResourceDefinition.
    pub custom: bool,
    /// A CRD's `additionalPrinterColumns` (of its preferred version): the columns `kubectl get`
    /// prints after the name instead of the age.
    pub printer_columns: Vec<PrinterColumn>,
}

/// One of a CRD version's `additionalPrinterColumns`.
#[derive(Debug, Clone, PartialEq)]
pub struct PrinterColumn {
    pub name: String,
    /// `string`, `integer`, `number`, `boolean` or `date`.
    pub type_: String,
    pub format: String,
    pub description: String,
    pub priority: i64,
    /// A simple JSONPath: `.status.sync`, `.metadata.labels.env`, `.spec.items[0].name`.
    pub json_path: String,
}

impl ResourceType {
    /// The key objects of this type are stored under: `deployments.apps`, `services`.
    pub fn key(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    pub fn api_version(&self, version: &str) -> String {
        if self.group.is_empty() {
            version.to_string()
        } else {
            format!("{}/{version}", self.group)
        }
    }

    pub fn preferred_version(&self) -> &str {
        self.versions.first().map(String::as_str).unwrap_or("v1")
    }

    /// Has a `/scale` subresource (what `kubectl scale` uses).
    pub fn has_scale(&self) -> bool {
        !self.custom
            && matches!(
                self.kind.as_str(),
                "Deployment" | "StatefulSet" | "ReplicaSet" | "ReplicationController"
            )
    }

    pub fn serves(&self, version: &str) -> bool {
        self.versions.iter().any(|v| v == version)
    }
}

/// A built-in type, column by column: group, versions, kind, plural, short names, namespaced,
/// has a status subresource, has a generation, in the `all` category, name rule.
type Builtin = (
    &'static str,
    &'static [&'static str],
    &'static str,
    &'static str,
    &'static [&'static str],
    bool,
    bool,
    bool,
    bool,
    NameRule,
);

use NameRule::{Dns1035, Label, PathSegment, Subdomain};
const V1: &[&str] = &["v1"];
const NS: bool = true;
const CLUSTER: bool = false;

/// Group order follows kube-apiserver's discovery order (kubectl resolves short names in it).
/// One row a type, a column a field of [`Builtin`].
#[rustfmt::skip]
const BUILTINS: &[Builtin] = &[
    ("", V1, "Binding", "bindings", &[], NS, false, false, false, Subdomain),
    ("", V1, "ConfigMap", "configmaps", &["cm"], NS, false, false, false, Subdomain),
    ("", V1, "Endpoints", "endpoints", &["ep"], NS, false, false, false, Subdomain),
    ("", V1, "Event", "events", &["ev"], NS, false, false, false, Subdomain),
    ("", V1, "LimitRange", "limitranges", &["limits"], NS, false, false, false, Subdomain),
    ("", V1, "Namespace", "namespaces", &["ns"], CLUSTER, true, false, false, Label),
    ("", V1, "Node", "nodes", &["no"], CLUSTER, true, false, false, Subdomain),
    ("", V1, "PersistentVolumeClaim", "persistentvolumeclaims", &["pvc"], NS, true, false, false, Subdomain),
    ("", V1, "PersistentVolume", "persistentvolumes", &["pv"], CLUSTER, true, false, false, Subdomain),
    ("", V1, "Pod", "pods", &["po"], NS, true, false, true, Subdomain),
    ("", V1, "PodTemplate", "podtemplates", &[], NS, false, false, false, Subdomain),
    ("", V1, "ReplicationController", "replicationcontrollers", &["rc"], NS, true, true, true, Subdomain),
    ("", V1, "ResourceQuota", "resourcequotas", &["quota"], NS, true, false, false, Subdomain),
    ("", V1, "Secret", "secrets", &[], NS, false, false, false, Subdomain),
    ("", V1, "ServiceAccount", "serviceaccounts", &["sa"], NS, false, false, false, Subdomain),
    ("", V1, "Service", "services", &["svc"], NS, true, false, true, Dns1035),
    ("apiregistration.k8s.io", V1, "APIService", "apiservices", &[], CLUSTER, true, false, false, PathSegment),
    ("apps", V1, "ControllerRevision", "controllerrevisions", &[], NS, false, false, false, Subdomain),
    ("apps", V1, "DaemonSet", "daemonsets", &["ds"], NS, true, true, true, Subdomain),
    ("apps", V1, "Deployment", "deployments", &["deploy"], NS, true, true, true, Subdomain),
    ("apps", V1, "ReplicaSet", "replicasets", &["rs"], NS, true, true, true, Subdomain),
    ("apps", V1, "StatefulSet", "statefulsets", &["sts"], NS, true, true, true, Subdomain),
    ("autoscaling", &["v2", "v1"], "HorizontalPodAutoscaler", "horizontalpodautoscalers", &["hpa"], NS, true, true, true, Subdomain),
    ("batch", V1, "CronJob", "cronjobs", &["cj"], NS, true, true, true, Subdomain),
    ("batch", V1, "Job", "jobs", &[], NS, true, true, true, Subdomain),
    ("networking.k8s.io", V1, "IngressClass", "ingressclasses", &[], CLUSTER, false, false, false, Subdomain),
    ("networking.k8s.io", V1, "Ingress", "ingresses", &["ing"], NS, true, true, false, Subdomain),
    ("networking.k8s.io", V1, "NetworkPolicy", "networkpolicies", &["netpol"], NS, false, true, false, Subdomain),
    ("policy", V1, "PodDisruptionBudget", "poddisruptionbudgets", &["pdb"], NS, true, true, false, Subdomain),
    ("rbac.authorization.k8s.io", V1, "ClusterRoleBinding", "clusterrolebindings", &[], CLUSTER, false, false, false, PathSegment),
    ("rbac.authorization.k8s.io", V1, "ClusterRole", "clusterroles", &[], CLUSTER, false, false, false, PathSegment),
    ("rbac.authorization.k8s.io", V1, "RoleBinding", "rolebindings", &[], NS, false, false, false, PathSegment),
    ("rbac.authorization.k8s.io", V1, "Role", "roles", &[], NS, false, false, false, PathSegment),
    ("storage.k8s.io", V1, "StorageClass", "storageclasses", &["sc"], CLUSTER, false, false, false, Subdomain),
    ("admissionregistration.k8s.io", V1, "MutatingWebhookConfiguration", "mutatingwebhookconfigurations", &[], CLUSTER, false, true, false, Subdomain),
    ("admissionregistration.k8s.io", V1, "ValidatingWebhookConfiguration", "validatingwebhookconfigurations", &[], CLUSTER, false, true, false, Subdomain),
    ("apiextensions.k8s.io", V1, "CustomResourceDefinition", "customresourcedefinitions", &["crd", "crds"], CLUSTER, true, true, false, Subdomain),
    ("scheduling.k8s.io", V1, "PriorityClass", "priorityclasses", &["pc"], CLUSTER, false, false, false, Subdomain),
    ("coordination.k8s.io", V1, "Lease", "leases", &[], NS, false, false, false, Subdomain),
    ("discovery.k8s.io", V1, "EndpointSlice", "endpointslices", &[], NS, false, false, false, Subdomain),
];

static BUILTIN_TYPES: LazyLock<Vec<Arc<ResourceType>>> = LazyLock::new(|| {
    BUILTINS
        .iter()
        .map(
            |&(group, versions, kind, plural, short, namespaced, status, generation, all, rule)| {
                Arc::new(ResourceType {
                    group: group.into(),
                    versions: versions.iter().map(|v| (*v).to_string()).collect(),
                    kind: kind.into(),
                    plural: plural.into(),
                    singular: kind.to_lowercase(),
                    short_names: short.iter().map(|s| (*s).to_string()).collect(),
                    categories: if all { vec!["all".into()] } else { vec![] },
                    namespaced,
                    status,
                    generation,
                    name_rule: rule,
                    custom: false,
                    printer_columns: Vec::new(),
                })
            },
        )
        .collect()
});

/// The built-in resource types, in discovery order.
pub fn builtins() -> &'static [Arc<ResourceType>] {
    &BUILTIN_TYPES
}

/// Orders versions as Kubernetes does: GA before beta before alpha, higher numbers first, then
/// anything else alphabetically.
pub fn version_priority(v: &str) -> (u8, i64, i64, String) {
    let parse = |s: &str| -> Option<(i64, u8, i64)> {
        let rest = s.strip_prefix('v')?;
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        let major: i64 = digits.parse().ok()?;
        let tail = &rest[digits.len()..];
        if tail.is_empty() {
            return Some((major, 0, 0));
        }
        for (word, rank) in [("beta", 1u8), ("alpha", 2u8)] {
            if let Some(n) = tail.strip_prefix(word) {
                let minor: i64 = n.parse().ok()?;
                return Some((major, rank, minor));
            }
        }
        None
    };
    match parse(v) {
        Some((major, rank, minor)) => (rank, -major, -minor, String::new()),
        None => (3, 0, 0, v.to_string()),
    }
}

/// The served type a CustomResourceDefinition defines, or the validation errors the real server
/// reports for it.
pub fn from_crd(crd: &Value) -> Result<ResourceType, ApiError> {
    let name = crd
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let s = |p: &str| {
        crd.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let group = s("/spec/group");
    let kind = s("/spec/names/kind");
    let plural = s("/spec/names/plural");
    let mut errors = Vec::new();
    if group.is_empty() {
        errors.push(FieldError::required("spec.group", ""));
    }
    if kind.is_empty() {
        errors.push(FieldError::required("spec.names.kind", ""));
    }
    if plural.is_empty() {
        errors.push(FieldError::required("spec.names.plural", ""));
    }
    if !plural.is_empty() && !group.is_empty() && name != format!("{plural}.{group}") {
        errors.push(FieldError::invalid(
            "metadata.name",
            name,
            "must be spec.names.plural+\".\"+spec.group",
        ));
    }
    let scope = s("/spec/scope");
    if scope != "Namespaced" && scope != "Cluster" {
        errors.push(FieldError {
            field: "spec.scope".into(),
            reason: "FieldValueNotSupported",
            value: Some(format!("{scope:?}")),
            detail: "supported values: \"Cluster\", \"Namespaced\"".into(),
        });
    }
    let versions = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if versions.is_empty() {
        errors.push(FieldError::required(
            "spec.versions",
            "must have exactly one version marked as storage version",
        ));
    }
    if !errors.is_empty() {
        return Err(ApiError::invalid(
            "CustomResourceDefinition",
            "apiextensions.k8s.io",
            name,
            errors,
        ));
    }
    let mut served: Vec<String> = versions
        .iter()
        .filter(|v| v.get("served").and_then(Value::as_bool).unwrap_or(false))
        .filter_map(|v| v.get("name").and_then(Value::as_str).map(str::to_string))
        .collect();
    served.sort_by_key(|v| version_priority(v));
    let status = versions
        .iter()
        .any(|v| v.pointer("/subresources/status").is_some());
    let strings = |p: &str| -> Vec<String> {
        crd.pointer(p)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    };
    let preferred = served.first().cloned().unwrap_or_default();
    let printer_columns = versions
        .iter()
        .find(|v| v.get("name").and_then(Value::as_str) == Some(preferred.as_str()))
        .and_then(|v| v.get("additionalPrinterColumns"))
        .and_then(Value::as_array)
        .map(|cols| cols.iter().map(printer_column).collect())
        .unwrap_or_default();
    let singular = match s("/spec/names/singular") {
        x if x.is_empty() => kind.to_lowercase(),
        x => x,
    };
    Ok(ResourceType {
        group,
        versions: served,
        kind,
        plural,
        singular,
        short_names: strings("/spec/names/shortNames"),
        categories: strings("/spec/names/categories"),
        namespaced: scope == "Namespaced",
        status,
        generation: true,
        name_rule: NameRule::Subdomain,
        custom: true,
        printer_columns,
    })
}

fn printer_column(c: &Value) -> PrinterColumn {
    let s = |k: &str| c.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    PrinterColumn {
        name: s("name"),
        type_: s("type"),
        format: s("format"),
        description: s("description"),
        priority: c.get("priority").and_then(Value::as_i64).unwrap_or(0),
        json_path: s("jsonPath"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn builtin_catalog() {
        let deploy = builtins().iter().find(|r| r.kind == "Deployment").unwrap();
        assert_eq!(deploy.key(), "deployments.apps");
        assert_eq!(deploy.api_version("v1"), "apps/v1");
        let svc = builtins().iter().find(|r| r.kind == "Service").unwrap();
        assert_eq!(svc.key(), "services");
        assert_eq!(svc.api_version("v1"), "v1");
        let hpa = builtins()
            .iter()
            .find(|r| r.plural == "horizontalpodautoscalers")
            .unwrap();
        assert_eq!(hpa.preferred_version(), "v2");
        assert!(hpa.serves("v1"));
    }

    #[test]
    fn version_order() {
        let mut v = vec![
            "v1alpha1", "v2beta1", "v1", "foo", "v1beta2", "v2", "v1beta1",
        ];
        v.sort_by_key(|x| version_priority(x));
        assert_eq!(
            v,
            vec![
                "v2", "v1", "v2beta1", "v1beta2", "v1beta1", "v1alpha1", "foo"
            ]
        );
    }

    fn crd() -> Value {
        json!({
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": "widgets.example.com"},
            "spec": {
                "group": "example.com",
                "scope": "Namespaced",
                "names": {"kind": "Widget", "plural": "widgets", "shortNames": ["wd"]},
                "versions": [
                    {"name": "v1beta1", "served": true, "storage": false},
                    {"name": "v1", "served": true, "storage": true, "subresources": {"status": {}}},
                    {"name": "v1alpha1", "served": false, "storage": false}
                ]
            }
        })
    }

    #[test]
    fn crd_types() {
        let t = from_crd(&crd()).unwrap();
        assert_eq!(t.key(), "widgets.example.com");
        assert_eq!(t.versions, vec!["v1", "v1beta1"]);
        assert_eq!(t.singular, "widget");
        assert_eq!(t.short_names, vec!["wd"]);
        assert!(t.namespaced && t.status && t.custom && t.generation);
    }

    #[test]
    fn bad_crds() {
        let mut c = crd();
        c["metadata"]["name"] = json!("wrong");
        let e = from_crd(&c).unwrap_err();
        assert_eq!(e.code, 422);
        assert!(
            e.message
                .contains("must be spec.names.plural+\".\"+spec.group"),
            "{}",
            e.message
        );
        let mut c = crd();
        c["spec"]["scope"] = json!("Galaxy");
        assert_eq!(from_crd(&c).unwrap_err().code, 422);
    }
}

//! What kubesim knows of the Kubernetes schema: which lists merge by key, which are sets, and
//! which maps are atomic. Server-side apply and strategic merge patch both need this; the real
//! server reads it from OpenAPI (`x-kubernetes-list-type`, `patchMergeKey`). kubesim keeps a table
//! of the built-in types' associative lists, keyed by field name and its parent; everything else
//! (including all lists in custom resources) is atomic, which is what a CRD schema without list
//! annotations means too.

use super::fieldset::PathElement;

/// How server-side apply treats a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListType {
    /// Replaced as a whole; owned as one field.
    Atomic,
    /// A set of scalars, merged by value.
    Set,
    /// Items identified by these key fields, each with an optional default.
    Map(&'static [(&'static str, Option<&'static str>)]),
}

/// How strategic merge patch treats a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchStrategy {
    Replace,
    /// Merge objects by this key.
    MergeByKey(&'static str),
    /// Union of scalars.
    MergePrimitives,
}

const NAME: &[(&str, Option<&str>)] = &[("name", None)];
const CONTAINER_PORT: &[(&str, Option<&str>)] =
    &[("containerPort", None), ("protocol", Some("TCP"))];
const SERVICE_PORT: &[(&str, Option<&str>)] = &[("port", None), ("protocol", Some("TCP"))];
const MOUNT_PATH: &[(&str, Option<&str>)] = &[("mountPath", None)];
const DEVICE_PATH: &[(&str, Option<&str>)] = &[("devicePath", None)];
const IP: &[(&str, Option<&str>)] = &[("ip", None)];
const TOPOLOGY: &[(&str, Option<&str>)] = &[("topologyKey", None), ("whenUnsatisfiable", None)];
const TYPE: &[(&str, Option<&str>)] = &[("type", None)];
const UID: &[(&str, Option<&str>)] = &[("uid", None)];

/// The field names on the path to a value, skipping list item elements.
fn field_names(path: &[PathElement]) -> Vec<&str> {
    path.iter()
        .filter_map(|p| match p {
            PathElement::Field(f) => Some(f.as_str()),
            _ => None,
        })
        .collect()
}

fn is_container_list(name: &str) -> bool {
    matches!(
        name,
        "containers" | "initContainers" | "ephemeralContainers"
    )
}

/// The list type of the list at `path` (whose last element is the list's field name).
pub fn list_type(path: &[PathElement]) -> ListType {
    let names = field_names(path);
    let Some((&last, parents)) = names.split_last() else {
        return ListType::Atomic;
    };
    let parent = parents.last().copied().unwrap_or("");
    match last {
        "containers" | "initContainers" | "ephemeralContainers" => ListType::Map(NAME),
        "env" | "imagePullSecrets" | "resourceClaims" | "schedulingGates" if !parent.is_empty() => {
            ListType::Map(NAME)
        }
        "volumes" if parent == "spec" => ListType::Map(NAME),
        "volumeMounts" => ListType::Map(MOUNT_PATH),
        "volumeDevices" => ListType::Map(DEVICE_PATH),
        "hostAliases" => ListType::Map(IP),
        "topologySpreadConstraints" => ListType::Map(TOPOLOGY),
        "conditions" if parents.first() == Some(&"status") => ListType::Map(TYPE),
        "ownerReferences" if parents == ["metadata"] => ListType::Map(UID),
        "finalizers" if parents == ["metadata"] => ListType::Set,
        "ports" if is_container_list(parent) => ListType::Map(CONTAINER_PORT),
        // Service.spec.ports is the only `ports` directly under a top-level spec.
        "ports" if parents == ["spec"] => ListType::Map(SERVICE_PORT),
        _ => ListType::Atomic,
    }
}

/// The strategic-merge-patch strategy of the list at `path` (kubectl's `patchMergeKey`).
pub fn patch_strategy(path: &[PathElement]) -> PatchStrategy {
    match list_type(path) {
        ListType::Atomic => PatchStrategy::Replace,
        ListType::Set => PatchStrategy::MergePrimitives,
        ListType::Map(keys) => PatchStrategy::MergeByKey(keys[0].0),
    }
}

/// Maps that are replaced and owned as a whole (`x-kubernetes-map-type: atomic`): label
/// selectors, Service selectors and the *KeyRef structs.
pub fn is_atomic_map(path: &[PathElement]) -> bool {
    let names = field_names(path);
    matches!(
        names.last().copied(),
        Some(
            "selector"
                | "podSelector"
                | "namespaceSelector"
                | "labelSelector"
                | "secretKeyRef"
                | "configMapKeyRef"
                | "fieldRef"
                | "resourceFieldRef"
        )
    ) && names.first() != Some(&"metadata")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(parts: &[&str]) -> Vec<PathElement> {
        parts
            .iter()
            .map(|s| {
                if let Some(k) = s.strip_prefix("k:") {
                    PathElement::Key(k.to_string())
                } else {
                    PathElement::Field(s.to_string())
                }
            })
            .collect()
    }

    #[test]
    fn pod_template_lists() {
        let c = p(&["spec", "template", "spec", "containers"]);
        assert_eq!(list_type(&c), ListType::Map(NAME));
        let ports = p(&[
            "spec",
            "template",
            "spec",
            "containers",
            "k:{\"name\":\"a\"}",
            "ports",
        ]);
        assert_eq!(list_type(&ports), ListType::Map(CONTAINER_PORT));
        assert_eq!(
            patch_strategy(&ports),
            PatchStrategy::MergeByKey("containerPort")
        );
        let env = p(&["spec", "containers", "k:{\"name\":\"a\"}", "env"]);
        assert_eq!(list_type(&env), ListType::Map(NAME));
        let args = p(&["spec", "containers", "k:{\"name\":\"a\"}", "args"]);
        assert_eq!(list_type(&args), ListType::Atomic);
        assert_eq!(
            list_type(&p(&["spec", "template", "spec", "tolerations"])),
            ListType::Atomic
        );
    }

    #[test]
    fn service_ports_and_metadata() {
        assert_eq!(
            list_type(&p(&["spec", "ports"])),
            ListType::Map(SERVICE_PORT)
        );
        assert_eq!(
            patch_strategy(&p(&["spec", "ports"])),
            PatchStrategy::MergeByKey("port")
        );
        assert_eq!(list_type(&p(&["metadata", "finalizers"])), ListType::Set);
        assert_eq!(list_type(&p(&["spec", "finalizers"])), ListType::Atomic);
        assert_eq!(
            list_type(&p(&["metadata", "ownerReferences"])),
            ListType::Map(UID)
        );
        assert_eq!(
            list_type(&p(&["status", "conditions"])),
            ListType::Map(TYPE)
        );
        assert_eq!(list_type(&p(&["spec", "rules"])), ListType::Atomic);
    }

    #[test]
    fn atomic_maps() {
        assert!(is_atomic_map(&p(&["spec", "selector"])));
        assert!(is_atomic_map(&p(&[
            "spec",
            "template",
            "spec",
            "containers",
            "k:{}",
            "env",
            "k:{}",
            "valueFrom",
            "secretKeyRef"
        ])));
        assert!(!is_atomic_map(&p(&[
            "spec", "template", "metadata", "labels"
        ])));
        assert!(!is_atomic_map(&p(&["metadata", "labels"])));
    }
}

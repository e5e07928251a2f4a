//! The App's Project on the spoke: whether an object the render produced is one the Project
//! allows on this cluster (its kind, its namespace). Pure. The hub already keeps an App's
//! Targets inside its Project; this is the check of what Git made of them, object by object.
//!
//! A Namespace is cluster-scoped, but it is allowed when its name matches the Project's
//! namespace globs here: an App may create the namespaces it may deploy into (which gives it
//! nothing it could not do inside them), and no others unless `clusterResources` lists
//! Namespace.

use gitfleet_core::fleet::project::{describe_kind, group_kind_matches, namespace_allowed};

pub use gitfleet_core::fleet::project::TargetProject;

use super::render::group_of;
use crate::model::ObjectRef;

/// Why `rules` do not allow `object` (placed in its scope: an empty namespace means
/// cluster-scoped), as the resource's message; `Ok` when they do.
pub fn check(rules: &TargetProject, object: &ObjectRef) -> Result<(), String> {
    let group = group_of(&object.api_version);
    let kind = object.kind.as_str();
    let project = &rules.name;
    let allowed_cluster_kind = || {
        rules
            .cluster_resources
            .iter()
            .any(|r| group_kind_matches(r, group, kind))
    };
    if object.namespace.is_empty() {
        if group.is_empty() && kind == "Namespace" {
            if namespace_allowed(&rules.namespaces, &object.name) || allowed_cluster_kind() {
                return Ok(());
            }
            return Err(format!(
                "Project {project} does not allow namespace {}",
                object.name
            ));
        }
        if allowed_cluster_kind() {
            return Ok(());
        }
        return Err(format!(
            "Project {project} does not allow cluster-scoped {}",
            describe_kind(group, kind)
        ));
    }
    if !namespace_allowed(&rules.namespaces, &object.namespace) {
        return Err(format!(
            "Project {project} does not allow namespace {}",
            object.namespace
        ));
    }
    if rules
        .namespace_deny
        .iter()
        .any(|r| group_kind_matches(r, group, kind))
    {
        return Err(format!(
            "Project {project} does not allow {} (namespaceResources.deny)",
            describe_kind(group, kind)
        ));
    }
    Ok(())
}

/// Whether the Target may touch `object` at all: its apply, its inventory, its pruning. No
/// rules (the `default` Project): everything.
pub fn allows(rules: Option<&TargetProject>, object: &ObjectRef) -> bool {
    rules.is_none_or(|r| check(r, object).is_ok())
}

#[cfg(test)]
mod tests {
    use gitfleet_core::resources::GroupKind;

    use super::*;

    fn rules() -> TargetProject {
        TargetProject {
            name: "team-a".into(),
            namespaces: vec!["team-a".into(), "team-a-*".into()],
            cluster_resources: vec![GroupKind {
                group: "apiextensions.k8s.io".into(),
                kind: "*".into(),
            }],
            namespace_deny: vec![GroupKind {
                group: String::new(),
                kind: "ResourceQuota".into(),
            }],
        }
    }

    fn object(api_version: &str, kind: &str, namespace: &str, name: &str) -> ObjectRef {
        ObjectRef {
            api_version: api_version.into(),
            kind: kind.into(),
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    #[test]
    fn namespaced_objects_inside_the_globs_pass() {
        let r = rules();
        assert_eq!(check(&r, &object("v1", "ConfigMap", "team-a", "c")), Ok(()));
        assert_eq!(
            check(&r, &object("apps/v1", "Deployment", "team-a-web", "d")),
            Ok(())
        );
    }

    #[test]
    fn another_teams_namespace_is_refused() {
        assert_eq!(
            check(&rules(), &object("v1", "ConfigMap", "team-b", "c")),
            Err("Project team-a does not allow namespace team-b".into())
        );
    }

    #[test]
    fn cluster_scoped_kinds_need_the_allow_list() {
        let r = rules();
        assert_eq!(
            check(
                &r,
                &object(
                    "rbac.authorization.k8s.io/v1",
                    "ClusterRoleBinding",
                    "",
                    "admin"
                )
            ),
            Err(
                "Project team-a does not allow cluster-scoped rbac.authorization.k8s.io/ClusterRoleBinding"
                    .into()
            )
        );
        assert_eq!(
            check(&r, &object("v1", "PersistentVolume", "", "pv")),
            Err("Project team-a does not allow cluster-scoped PersistentVolume".into())
        );
        assert_eq!(
            check(
                &r,
                &object(
                    "apiextensions.k8s.io/v1",
                    "CustomResourceDefinition",
                    "",
                    "x"
                )
            ),
            Ok(())
        );
    }

    #[test]
    fn namespaces_by_their_name() {
        let mut r = rules();
        assert_eq!(
            check(&r, &object("v1", "Namespace", "", "team-a-1")),
            Ok(())
        );
        assert_eq!(
            check(&r, &object("v1", "Namespace", "", "kube-system")),
            Err("Project team-a does not allow namespace kube-system".into())
        );
        r.cluster_resources.push(GroupKind {
            group: String::new(),
            kind: "Namespace".into(),
        });
        assert_eq!(
            check(&r, &object("v1", "Namespace", "", "kube-system")),
            Ok(())
        );
    }

    #[test]
    fn denied_namespaced_kinds() {
        assert_eq!(
            check(&rules(), &object("v1", "ResourceQuota", "team-a", "q")),
            Err("Project team-a does not allow ResourceQuota (namespaceResources.deny)".into())
        );
        // The same kind name in another group is another kind.
        assert_eq!(
            check(
                &rules(),
                &object("example.com/v1", "ResourceQuota", "team-a", "q")
            ),
            Ok(())
        );
    }

    #[test]
    fn no_rules_allow_everything() {
        let crb = object(
            "rbac.authorization.k8s.io/v1",
            "ClusterRoleBinding",
            "",
            "x",
        );
        assert!(allows(None, &crb));
        assert!(!allows(Some(&rules()), &crb));
    }
}

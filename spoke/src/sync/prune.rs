//! What to delete: objects a Target applied before (its inventory) that Git no longer has.
//!
//! Pure. Safety rules, all of which must hold before anything is deleted:
//! - the App's sync policy allows pruning;
//! - the render of this revision was clean (an invalid file might have held the object);
//! - the object is in the inventory (gitfleet never deletes what it did not record applying);
//! - the live object still carries this Target's label and annotation, and not
//!   `gitfleet.dev/prune: disabled` (checked by [`may_delete`] against the live object).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::render::{ANNOTATION_PRUNE, ANNOTATION_TARGET, LABEL_APP, group_of};
use crate::model::ObjectRef;

/// The objects a Target has applied, as kept in the cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inventory {
    pub revision: String,
    pub objects: Vec<ObjectRef>,
}

/// Identity of an object across API versions of its group.
fn key(o: &ObjectRef) -> (String, String, String, String) {
    (
        group_of(&o.api_version).to_owned(),
        o.kind.clone(),
        o.namespace.clone(),
        o.name.clone(),
    )
}

/// Why nothing is pruned, when nothing may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    PolicyOff,
    RenderErrors,
}

/// Objects of `previous` that are not in `current`, or why none may be pruned.
pub fn candidates(
    previous: &Inventory,
    current: &[ObjectRef],
    prune_allowed: bool,
    render_clean: bool,
) -> Result<Vec<ObjectRef>, Hold> {
    let current: BTreeSet<_> = current.iter().map(key).collect();
    let gone: Vec<ObjectRef> = previous
        .objects
        .iter()
        .filter(|o| !current.contains(&key(o)))
        .cloned()
        .collect();
    if gone.is_empty() {
        return Ok(gone);
    }
    if !prune_allowed {
        return Err(Hold::PolicyOff);
    }
    if !render_clean {
        return Err(Hold::RenderErrors);
    }
    // Delete in reverse apply order: workloads before the namespaces and CRDs they live in.
    let mut gone = gone;
    gone.sort_by_key(|o| {
        std::cmp::Reverse(super::order::kind_rank(group_of(&o.api_version), &o.kind))
    });
    Ok(gone)
}

/// The inventory to record after a sync: what is desired now, plus what should have gone but
/// is still there (kept or not yet deleted), so that it is not forgotten.
pub fn next_inventory(
    revision: &str,
    current: &[ObjectRef],
    still_present: &[ObjectRef],
) -> Inventory {
    let mut seen = BTreeSet::new();
    let mut objects = Vec::new();
    for o in current.iter().chain(still_present) {
        if seen.insert(key(o)) {
            objects.push(o.clone());
        }
    }
    Inventory {
        revision: revision.to_owned(),
        objects,
    }
}

/// The inventory to record *before* applying `about_to_apply`: the previous one plus every
/// object not in it yet, under the previous revision (nothing of the new one is done yet).
/// `None` when the previous inventory names them all already.
///
/// Written ahead, so that a spoke that dies mid-apply has recorded every object it may have
/// created: if the next revision it syncs no longer has them, they are pruned, not orphaned.
pub fn intent(previous: &Inventory, about_to_apply: &[ObjectRef]) -> Option<Inventory> {
    let known: BTreeSet<_> = previous.objects.iter().map(key).collect();
    if about_to_apply.iter().all(|o| known.contains(&key(o))) {
        return None;
    }
    Some(next_inventory(
        &previous.revision,
        &previous.objects,
        about_to_apply,
    ))
}

/// Why an object that opted out of pruning is kept.
pub const KEPT_BY_ANNOTATION: &str = "it is annotated gitfleet.dev/prune: disabled";

/// Whether the live object is one this Target made and may delete.
pub fn may_delete(live: &Value, app: &str, target_id: &str) -> Result<(), &'static str> {
    let metadata = live.get("metadata").ok_or("it has no metadata")?;
    if metadata
        .pointer(&format!("/labels/{}", escape(LABEL_APP)))
        .and_then(Value::as_str)
        != Some(app)
    {
        return Err("it does not carry this App's gitfleet.dev/app label");
    }
    if metadata
        .pointer(&format!("/annotations/{}", escape(ANNOTATION_TARGET)))
        .and_then(Value::as_str)
        != Some(target_id)
    {
        return Err("another Target manages it now");
    }
    if metadata
        .pointer(&format!("/annotations/{}", escape(ANNOTATION_PRUNE)))
        .and_then(Value::as_str)
        == Some("disabled")
    {
        return Err(KEPT_BY_ANNOTATION);
    }
    Ok(())
}

/// JSON-pointer escaping of one path segment.
fn escape(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn obj(api_version: &str, kind: &str, name: &str) -> ObjectRef {
        ObjectRef {
            api_version: api_version.into(),
            kind: kind.into(),
            namespace: "ns".into(),
            name: name.into(),
        }
    }

    fn inventory(objects: Vec<ObjectRef>) -> Inventory {
        Inventory {
            revision: "r1".into(),
            objects,
        }
    }

    #[test]
    fn dropped_objects_are_candidates_in_reverse_apply_order() {
        let previous = inventory(vec![
            obj("v1", "Namespace", "ns"),
            obj("apps/v1", "Deployment", "web"),
            obj("v1", "ConfigMap", "cfg"),
            obj("v1", "Service", "web"),
        ]);
        let current = [obj("v1", "Service", "web")];
        let gone = candidates(&previous, &current, true, true).expect("allowed");
        let names: Vec<&str> = gone.iter().map(|o| o.kind.as_str()).collect();
        assert_eq!(names, ["Deployment", "ConfigMap", "Namespace"]);
    }

    #[test]
    fn a_new_api_version_of_the_same_object_is_not_a_candidate() {
        let previous = inventory(vec![obj("autoscaling/v1", "HorizontalPodAutoscaler", "h")]);
        let current = [obj("autoscaling/v2", "HorizontalPodAutoscaler", "h")];
        assert!(
            candidates(&previous, &current, true, true)
                .expect("allowed")
                .is_empty()
        );
    }

    #[test]
    fn nothing_is_pruned_without_policy_or_with_render_errors() {
        let previous = inventory(vec![obj("v1", "ConfigMap", "a")]);
        assert_eq!(
            candidates(&previous, &[], false, true),
            Err(Hold::PolicyOff)
        );
        assert_eq!(
            candidates(&previous, &[], true, false),
            Err(Hold::RenderErrors)
        );
        assert_eq!(
            candidates(&inventory(vec![]), &[], false, false),
            Ok(vec![])
        );
    }

    #[test]
    fn intent_adds_what_is_about_to_be_applied_under_the_old_revision() {
        let previous = inventory(vec![
            obj("v1", "ConfigMap", "a"),
            obj("v1", "ConfigMap", "b"),
        ]);
        let next = intent(
            &previous,
            &[obj("v1", "ConfigMap", "b"), obj("v1", "ConfigMap", "c")],
        )
        .expect("c is new");
        assert_eq!(next.revision, "r1");
        assert_eq!(
            next.objects,
            [
                obj("v1", "ConfigMap", "a"),
                obj("v1", "ConfigMap", "b"),
                obj("v1", "ConfigMap", "c")
            ]
        );
        // What it names already needs no write, whatever the API version.
        assert_eq!(intent(&previous, &[obj("v1", "ConfigMap", "a")]), None);
        let hpa = inventory(vec![obj("autoscaling/v1", "HorizontalPodAutoscaler", "h")]);
        assert_eq!(
            intent(
                &hpa,
                &[obj("autoscaling/v2", "HorizontalPodAutoscaler", "h")]
            ),
            None
        );
        // A first sync records everything.
        let first = intent(&Inventory::default(), &[obj("v1", "ConfigMap", "a")]).expect("new");
        assert_eq!(first.objects, [obj("v1", "ConfigMap", "a")]);
    }

    #[test]
    fn next_inventory_keeps_what_is_still_there_once() {
        let current = [obj("v1", "ConfigMap", "a")];
        let kept = [obj("v1", "ConfigMap", "b"), obj("v1", "ConfigMap", "a")];
        let next = next_inventory("r2", &current, &kept);
        assert_eq!(next.revision, "r2");
        assert_eq!(
            next.objects,
            [obj("v1", "ConfigMap", "a"), obj("v1", "ConfigMap", "b")]
        );
    }

    #[test]
    fn only_objects_of_this_target_without_opt_out_may_be_deleted() {
        let live = |labels: serde_json::Value, annotations: serde_json::Value| json!({"metadata": {"labels": labels, "annotations": annotations}});
        let ours = live(
            json!({"gitfleet.dev/app": "web"}),
            json!({"gitfleet.dev/target": "web"}),
        );
        assert_eq!(may_delete(&ours, "web", "web"), Ok(()));
        assert!(
            may_delete(
                &live(json!({}), json!({"gitfleet.dev/target": "web"})),
                "web",
                "web"
            )
            .is_err()
        );
        assert!(
            may_delete(
                &live(
                    json!({"gitfleet.dev/app": "web"}),
                    json!({"gitfleet.dev/target": "other"})
                ),
                "web",
                "web"
            )
            .is_err()
        );
        let kept = live(
            json!({"gitfleet.dev/app": "web"}),
            json!({"gitfleet.dev/target": "web", "gitfleet.dev/prune": "disabled"}),
        );
        assert_eq!(
            may_delete(&kept, "web", "web"),
            Err("it is annotated gitfleet.dev/prune: disabled")
        );
    }
}

//! Whose object is it: before applying, the spoke looks at the live object under the same name
//! and decides whether this App may write it.
//!
//! Pure. An App applies over a live object only when
//! - there is none (it creates it);
//! - the object carries this App's `gitfleet.dev/app` label (it applied it before);
//! - the object carries no gitfleet label at all and the App's sync policy says `adopt`.
//!
//! Another App's object is never taken over, whatever the policy says: two Apps writing one
//! object would overwrite each other on every sync, and pruning one would delete the other's.
//!
//! Each App applies with a field manager of its own ([`field_manager`]), so that where two
//! managers do meet on one object the server reports a conflict instead of one silently
//! removing the other's fields. Objects applied before that, by the shared manager
//! [`LEGACY_FIELD_MANAGER`], are handed to the App's manager once ([`legacy_entry`]).

use serde_json::Value;

use super::render::LABEL_APP;

/// The field manager every App shared before each App had its own.
pub const LEGACY_FIELD_MANAGER: &str = "gitfleet";

/// The field manager of App `app`'s server-side applies.
pub fn field_manager(app: &str) -> String {
    format!("{LEGACY_FIELD_MANAGER}/{app}")
}

/// What the live object under a manifest's name says about its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LiveOwner {
    /// Nothing under that name.
    Absent,
    /// An object without gitfleet's label.
    Unmanaged,
    /// An object carrying App `.0`'s label.
    App(String),
}

impl LiveOwner {
    /// The owner recorded in an object's metadata (`metadata` of the object, or the whole
    /// object: both are accepted).
    pub fn of(object: &Value) -> Self {
        let metadata = object.get("metadata").unwrap_or(object);
        match metadata
            .pointer("/labels")
            .and_then(|labels| labels.get(LABEL_APP))
            .and_then(Value::as_str)
        {
            Some(app) if !app.is_empty() => Self::App(app.to_owned()),
            _ => Self::Unmanaged,
        }
    }
}

/// Why an App may not apply over a live object; its `Display` is the resource's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("owned by App {0}")]
    OtherApp(String),
    #[error("exists and is not managed by gitfleet; set syncPolicy.adopt to take it over")]
    Unmanaged,
}

/// Whether App `app` may apply over `live`, with its sync policy's `adopt`.
pub fn may_apply(app: &str, live: &LiveOwner, adopt: bool) -> Result<(), Refusal> {
    match live {
        LiveOwner::Absent => Ok(()),
        LiveOwner::App(owner) if owner == app => Ok(()),
        LiveOwner::App(owner) => Err(Refusal::OtherApp(owner.clone())),
        LiveOwner::Unmanaged if adopt => Ok(()),
        LiveOwner::Unmanaged => Err(Refusal::Unmanaged),
    }
}

/// What becomes of a manifest, given the live object under its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    Apply,
    /// An unmanaged object the App adopts: applied with force, since adopting means Git's
    /// values win over those of whoever created it (its fields would otherwise conflict).
    Adopt,
    /// The Namespace the spoke adds for an App ([`super::render::RenderContext`]'s
    /// `create_namespace`) exists and is someone else's: it is only needed to exist, so it is
    /// left as it is rather than refused (Apps share namespaces, and `default` is nobody's).
    LeaveAsIs,
}

/// [`may_apply`], for a manifest the spoke added itself (`implicit`) or one from Git.
pub fn claim(app: &str, live: &LiveOwner, adopt: bool, implicit: bool) -> Result<Claim, Refusal> {
    match may_apply(app, live, adopt) {
        Ok(()) if *live == LiveOwner::Unmanaged => Ok(Claim::Adopt),
        Ok(()) => Ok(Claim::Apply),
        Err(_) if implicit => Ok(Claim::LeaveAsIs),
        Err(refusal) => Err(refusal),
    }
}

/// The index in `metadata.managedFields` of the shared manager's apply entry, when App
/// `app`'s own manager has none yet: that entry is to be renamed to the App's manager, so that
/// the App keeps owning (and so may later remove) every field it applied before the upgrade,
/// and no conflict arises between the old manager and the new one. `None` when there is
/// nothing to hand over (or both entries exist: then the App's manager already applied and
/// the old entry is left as the server has it).
pub fn legacy_entry(object: &Value, app: &str) -> Option<usize> {
    let metadata = object.get("metadata").unwrap_or(object);
    let entries = metadata.get("managedFields")?.as_array()?;
    let is_apply_by = |entry: &Value, manager: &str| {
        entry.get("manager").and_then(Value::as_str) == Some(manager)
            && entry.get("operation").and_then(Value::as_str) == Some("Apply")
            && entry
                .get("subresource")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .is_empty()
    };
    let own = field_manager(app);
    if entries.iter().any(|e| is_apply_by(e, &own)) {
        return None;
    }
    entries
        .iter()
        .position(|e| is_apply_by(e, LEGACY_FIELD_MANAGER))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn absent_objects_are_created() {
        assert_eq!(may_apply("a", &LiveOwner::Absent, false), Ok(()));
        assert_eq!(may_apply("a", &LiveOwner::Absent, true), Ok(()));
    }

    #[test]
    fn an_apps_own_objects_are_applied() {
        assert_eq!(may_apply("a", &LiveOwner::App("a".into()), false), Ok(()));
    }

    #[test]
    fn another_apps_objects_are_never_taken_over() {
        for adopt in [false, true] {
            let refused = may_apply("a", &LiveOwner::App("b".into()), adopt).unwrap_err();
            assert_eq!(refused.to_string(), "owned by App b");
        }
    }

    #[test]
    fn unmanaged_objects_only_with_adopt() {
        let refused = may_apply("a", &LiveOwner::Unmanaged, false).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "exists and is not managed by gitfleet; set syncPolicy.adopt to take it over"
        );
        assert_eq!(may_apply("a", &LiveOwner::Unmanaged, true), Ok(()));
    }

    #[test]
    fn an_added_namespace_is_created_or_left_as_it_is() {
        assert_eq!(
            claim("a", &LiveOwner::Absent, false, true),
            Ok(Claim::Apply)
        );
        assert_eq!(
            claim("a", &LiveOwner::App("a".into()), false, true),
            Ok(Claim::Apply)
        );
        for other in [LiveOwner::App("b".into()), LiveOwner::Unmanaged] {
            assert_eq!(claim("a", &other, false, true), Ok(Claim::LeaveAsIs));
            assert!(claim("a", &other, false, false).is_err());
        }
        assert_eq!(
            claim("a", &LiveOwner::Unmanaged, true, false),
            Ok(Claim::Adopt)
        );
    }

    #[test]
    fn owner_from_labels() {
        let labelled = json!({"metadata": {"labels": {"gitfleet.dev/app": "b", "x": "y"}}});
        assert_eq!(LiveOwner::of(&labelled), LiveOwner::App("b".into()));
        assert_eq!(
            LiveOwner::of(&labelled["metadata"]),
            LiveOwner::App("b".into())
        );
        let other = json!({"metadata": {"labels": {"app": "b"}}});
        assert_eq!(LiveOwner::of(&other), LiveOwner::Unmanaged);
        assert_eq!(
            LiveOwner::of(&json!({"metadata": {}})),
            LiveOwner::Unmanaged
        );
        let empty = json!({"metadata": {"labels": {"gitfleet.dev/app": ""}}});
        assert_eq!(LiveOwner::of(&empty), LiveOwner::Unmanaged);
    }

    #[test]
    fn each_app_has_its_own_manager() {
        assert_eq!(field_manager("a"), "gitfleet/a");
        assert_ne!(field_manager("a"), field_manager("b"));
    }

    fn entry(manager: &str, operation: &str) -> Value {
        json!({"manager": manager, "operation": operation, "apiVersion": "v1",
               "fieldsType": "FieldsV1", "fieldsV1": {"f:data": {}}})
    }

    #[test]
    fn the_shared_managers_apply_entry_is_handed_over() {
        let object = json!({"metadata": {"managedFields": [
            entry("kubectl-edit", "Update"),
            entry("gitfleet", "Apply"),
        ]}});
        assert_eq!(legacy_entry(&object, "a"), Some(1));
    }

    #[test]
    fn nothing_to_hand_over() {
        let none = json!({"metadata": {}});
        assert_eq!(legacy_entry(&none, "a"), None);
        let updated = json!({"metadata": {"managedFields": [entry("gitfleet", "Update")]}});
        assert_eq!(legacy_entry(&updated, "a"), None);
        let own = json!({"metadata": {"managedFields": [entry("gitfleet/a", "Apply")]}});
        assert_eq!(legacy_entry(&own, "a"), None);
        let both = json!({"metadata": {"managedFields": [
            entry("gitfleet", "Apply"),
            entry("gitfleet/a", "Apply"),
        ]}});
        assert_eq!(legacy_entry(&both, "a"), None);
        let status = json!({"metadata": {"managedFields": [
            {"manager": "gitfleet", "operation": "Apply", "subresource": "status"}
        ]}});
        assert_eq!(legacy_entry(&status, "a"), None);
    }
}

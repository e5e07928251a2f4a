//! Object name validation, worded exactly as apimachinery's `validation.IsDNS1123Subdomain` & co.,
//! and the few checks of what defaulting leaves behind that clients run into
//! ([`validate_update_strategy`]).

use super::status::FieldError;

/// Which naming rule a resource's `metadata.name` follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameRule {
    /// RFC 1123 subdomain (most resources).
    Subdomain,
    /// RFC 1123 label (namespaces).
    Label,
    /// RFC 1035 label (services).
    Dns1035,
    /// Path segment only (RBAC objects accept almost anything).
    PathSegment,
}

const SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const DNS1035_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";

fn is_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

fn is_subdomain(s: &str) -> bool {
    s.split('.').all(is_label)
}

fn is_dns1035(s: &str) -> bool {
    is_label(s) && s.as_bytes()[0].is_ascii_lowercase()
}

/// Errors for `metadata.name` under `rule`; empty when the name is valid.
pub fn validate_name(rule: NameRule, name: &str) -> Vec<FieldError> {
    let field = "metadata.name";
    if name.is_empty() {
        return vec![FieldError::required(
            field,
            "name or generateName is required",
        )];
    }
    let mut errors = Vec::new();
    match rule {
        NameRule::Subdomain => {
            if name.len() > 253 {
                errors.push(FieldError::invalid(
                    field,
                    name,
                    "must be no more than 253 characters",
                ));
            }
            if !is_subdomain(name) {
                errors.push(FieldError::invalid(field, name, SUBDOMAIN_MSG));
            }
        }
        NameRule::Label | NameRule::Dns1035 => {
            if name.len() > 63 {
                errors.push(FieldError::invalid(
                    field,
                    name,
                    "must be no more than 63 characters",
                ));
            }
            let (valid, message) = match rule {
                NameRule::Label => (is_label(name), LABEL_MSG),
                _ => (is_dns1035(name), DNS1035_MSG),
            };
            if !valid {
                errors.push(FieldError::invalid(field, name, message));
            }
        }
        NameRule::PathSegment => {
            if name == "." || name == ".." {
                errors.push(FieldError::invalid(
                    field,
                    name,
                    format!("may not be '{name}'"),
                ));
            }
            for bad in ["/", "%"] {
                if name.contains(bad) {
                    errors.push(FieldError::invalid(
                        field,
                        name,
                        format!("may not contain '{bad}'"),
                    ));
                }
            }
        }
    }
    errors
}

/// Label keys and values, checked so that selectors over them keep working.
pub fn validate_labels(labels: &serde_json::Map<String, serde_json::Value>) -> Vec<FieldError> {
    let mut errors = Vec::new();
    for (k, v) in labels {
        let Some(v) = v.as_str() else {
            errors.push(FieldError::invalid(
                &format!("metadata.labels.{k}"),
                &v.to_string(),
                "label values must be strings",
            ));
            continue;
        };
        if v.len() > 63 {
            errors.push(FieldError::invalid(
                "metadata.labels",
                v,
                "must be no more than 63 characters",
            ));
        }
    }
    errors
}

/// A workload's update strategy against its type, after defaulting: a `rollingUpdate` block
/// (often one the server defaulted earlier, which a later apply of another type does not
/// remove) is refused under Recreate (Deployments) and OnDelete (StatefulSets), as the real
/// validation refuses it.
pub fn validate_update_strategy(obj: &serde_json::Value) -> Vec<FieldError> {
    let kind = obj.get("kind").and_then(serde_json::Value::as_str);
    let (field, refused_type) = match kind {
        Some("Deployment") => ("strategy", "Recreate"),
        Some("StatefulSet") => ("updateStrategy", "OnDelete"),
        _ => return Vec::new(),
    };
    let Some(strategy) = obj.pointer(&format!("/spec/{field}")) else {
        return Vec::new();
    };
    let rolling = strategy.get("rollingUpdate").filter(|r| !r.is_null());
    if strategy.get("type").and_then(serde_json::Value::as_str) != Some(refused_type) {
        return Vec::new();
    }
    let Some(rolling) = rolling else {
        return Vec::new();
    };
    let path = format!("spec.{field}.rollingUpdate");
    if kind == Some("Deployment") {
        vec![FieldError {
            field: path,
            reason: "FieldValueForbidden",
            value: None,
            detail: "may not be specified when strategy `type` is 'Recreate'".into(),
        }]
    } else {
        vec![FieldError {
            field: path,
            reason: "FieldValueInvalid",
            value: Some(rolling.to_string()),
            detail: "only allowed for updateStrategy 'RollingUpdate'".into(),
        }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subdomains() {
        assert!(validate_name(NameRule::Subdomain, "frontend").is_empty());
        assert!(validate_name(NameRule::Subdomain, "a.b-c.d1").is_empty());
        assert!(validate_name(NameRule::Subdomain, "9abc").is_empty());
        let e = validate_name(NameRule::Subdomain, "Bad_Name");
        assert_eq!(e.len(), 1);
        assert_eq!(
            e[0].to_string(),
            format!("metadata.name: Invalid value: \"Bad_Name\": {SUBDOMAIN_MSG}")
        );
        assert_eq!(validate_name(NameRule::Subdomain, "-a").len(), 1);
        assert_eq!(validate_name(NameRule::Subdomain, "a..b").len(), 1);
        assert_eq!(
            validate_name(NameRule::Subdomain, &"a".repeat(254)).len(),
            1
        );
    }

    #[test]
    fn labels_and_1035() {
        assert!(validate_name(NameRule::Label, "kube-system").is_empty());
        assert_eq!(validate_name(NameRule::Label, "a.b").len(), 1);
        assert_eq!(validate_name(NameRule::Label, &"a".repeat(64)).len(), 1);
        assert!(validate_name(NameRule::Dns1035, "redis").is_empty());
        assert_eq!(validate_name(NameRule::Dns1035, "1redis").len(), 1);
        assert_eq!(
            validate_name(NameRule::Dns1035, "")[0].to_string(),
            "metadata.name: Required value: name or generateName is required"
        );
    }

    #[test]
    fn path_segments() {
        assert!(validate_name(NameRule::PathSegment, "system:controller:x").is_empty());
        assert_eq!(validate_name(NameRule::PathSegment, "a/b").len(), 1);
        assert_eq!(validate_name(NameRule::PathSegment, "..").len(), 1);
    }
}

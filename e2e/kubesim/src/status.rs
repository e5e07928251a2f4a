//! API errors as the real API server reports them: an HTTP status code plus a `metav1.Status` body.
//!
//! The messages copy kube-apiserver's wording because clients (kubectl above all) print them verbatim
//! and some tests match on them.

use serde_json::{Value, json};

/// A failed request: the HTTP code and the `Status` object sent as the body.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.code, self.reason, self.message)
    }
}

impl std::error::Error for ApiError {}

/// The group and plural naming an object in messages, e.g. `deployments.apps`.
pub fn qualified_resource(group: &str, plural: &str) -> String {
    if group.is_empty() {
        plural.to_string()
    } else {
        format!("{plural}.{group}")
    }
}

fn details(name: &str, group: &str, kind: &str) -> Value {
    let mut d = serde_json::Map::new();
    if !name.is_empty() {
        d.insert("name".into(), json!(name));
    }
    if !group.is_empty() {
        d.insert("group".into(), json!(group));
    }
    if !kind.is_empty() {
        d.insert("kind".into(), json!(kind));
    }
    Value::Object(d)
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    /// The `Status` object for this error.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            status["details"] = d.clone();
        }
        status
    }

    /// A path no resource is served at (unknown group, version or resource, or a custom resource
    /// whose CRD is not installed).
    pub fn path_not_found() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
        .with_details(json!({}))
    }

    pub fn not_found(group: &str, plural: &str, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", qualified_resource(group, plural)),
        )
        .with_details(details(name, group, plural))
    }

    pub fn already_exists(group: &str, plural: &str, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!(
                "{} \"{name}\" already exists",
                qualified_resource(group, plural)
            ),
        )
        .with_details(details(name, group, plural))
    }

    /// Optimistic concurrency failure (stale `resourceVersion`).
    pub fn stale(group: &str, plural: &str, name: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                qualified_resource(group, plural)
            ),
        )
        .with_details(details(name, group, plural))
    }

    /// A DELETE whose preconditions the object does not meet, as the API server's
    /// `rest.BeforeDelete` words it: the resource in the message is the kind, not the plural.
    pub fn delete_precondition(
        group: &str,
        kind: &str,
        name: &str,
        field: &str,
        expected: &str,
        actual: &str,
    ) -> Self {
        let consequence = if field == "UID" {
            "deleted and then recreated"
        } else {
            "modified"
        };
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": the {field} in the precondition ({expected}) does not match the {field} in record ({actual}). The object might have been {consequence}",
                qualified_resource(group, kind)
            ),
        )
        .with_details(details(name, group, kind))
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    pub fn method_not_allowed() -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )
        .with_details(json!({}))
    }

    pub fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {content_type:?})"
            ),
        )
    }

    pub fn too_large() -> Self {
        Self::new(
            413,
            "RequestEntityTooLarge",
            "Request entity too large: limit is 3145728",
        )
    }

    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }

    /// 422 Invalid with one cause per field error, worded like the real validation.
    pub fn invalid(kind: &str, group: &str, name: &str, causes: Vec<FieldError>) -> Self {
        let qualified = if group.is_empty() {
            kind.to_string()
        } else {
            format!("{kind}.{group}")
        };
        let summary: Vec<String> = causes.iter().map(FieldError::to_string).collect();
        let summary = if summary.len() == 1 {
            summary[0].clone()
        } else {
            format!("[{}]", summary.join(", "))
        };
        let mut d = details(name, group, kind);
        d["causes"] = Value::Array(
            causes
                .iter()
                .map(|c| {
                    json!({
                        "reason": c.reason,
                        "message": c.detail_message(),
                        "field": c.field,
                    })
                })
                .collect(),
        );
        Self::new(
            422,
            "Invalid",
            format!("{qualified} \"{name}\" is invalid: {summary}"),
        )
        .with_details(d)
    }

    /// Namespace deletion in progress: new objects are refused.
    pub fn namespace_terminating(namespace: &str, group: &str, plural: &str, name: &str) -> Self {
        Self::new(
            403,
            "Forbidden",
            format!(
                "{} \"{name}\" is forbidden: unable to create new content in namespace {namespace} because it is being terminated",
                qualified_resource(group, plural)
            ),
        )
        .with_details(details(name, group, plural))
    }

    /// The 410 sent (as a watch ERROR event) when a watch starts before the retained history.
    pub fn expired(requested: u64, oldest: u64) -> Self {
        Self::new(
            410,
            "Expired",
            format!("too old resource version: {requested} ({oldest})"),
        )
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", message)
    }
}

/// One field validation failure (`metav1.StatusCause`).
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    pub field: String,
    pub reason: &'static str,
    /// The bad value, quoted as the real validation quotes it (`"Bad_Name"`).
    pub value: Option<String>,
    pub detail: String,
}

impl FieldError {
    pub fn invalid(field: &str, value: &str, detail: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: "FieldValueInvalid",
            value: Some(format!("{value:?}")),
            detail: detail.into(),
        }
    }

    pub fn required(field: &str, detail: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: "FieldValueRequired",
            value: None,
            detail: detail.into(),
        }
    }

    fn detail_message(&self) -> String {
        match (&self.value, self.reason) {
            (Some(v), _) => format!("Invalid value: {v}: {}", self.detail),
            (None, "FieldValueRequired") => format!("Required value: {}", self.detail),
            (None, "FieldValueForbidden") => format!("Forbidden: {}", self.detail),
            (None, _) => self.detail.clone(),
        }
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.detail_message())
    }
}

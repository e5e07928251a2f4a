//! Custom health rules: how healthy an object of one kind is, written as CEL expressions over
//! the live object, in the manner of Flux's `healthCheckExprs` and Argo CD's health checks.
//!
//! A rule names a group and a kind (`*` for every kind of the group) and says when the object is
//! degraded, suspended and healthy, and what its message is. The hub checks every expression
//! when a rule is applied (a Project's `spec.healthRules`, a hub-wide `HealthRule`); the spoke
//! compiles the rules its Target carries and judges each live object of a matching kind by the
//! first rule that matches: the Project's, then the hub-wide ones, then [`builtin`] rules for
//! common CRDs; an object no rule names keeps the spoke's own judgement.
//!
//! Pure: values in, values out.

use std::sync::{Arc, LazyLock};

use serde::{Deserialize, Serialize};

#[cfg(test)]
mod tests;

/// Longest expression accepted, in bytes: a rule is a few conditions, not a program.
pub const MAX_EXPRESSION_BYTES: usize = 4096;
/// Most rules in one Project, or sent with one Target.
pub const MAX_RULES: usize = 256;

/// One rule as written (a Project's `spec.healthRules[i]`, a `HealthRule`'s `spec`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HealthRuleSpec {
    /// The API group (empty for the core group).
    #[serde(default)]
    pub group: String,
    /// The kind, or `*` for every kind of `group`.
    pub kind: String,
    /// CEL, a bool: the object is Degraded (checked first).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub degraded_when: String,
    /// CEL, a bool: the object is Suspended (checked second).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub suspended_when: String,
    /// CEL, a bool: the object is Healthy (checked last; none true: Progressing).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub healthy_when: String,
    /// CEL, a string: the reason shown with the health.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// A rule with where it came from, as the hub sends it with a Target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetHealthRule {
    /// `Project team-a`, `HealthRule certificates`: named in every message the rule produces.
    pub origin: String,
    pub rule: HealthRuleSpec,
}

/// What a rule judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleHealth {
    Healthy,
    Progressing,
    Degraded,
    Suspended,
    /// The rule could not be evaluated (an expression of the wrong type, a failing function).
    Unknown,
}

/// A rule's judgement of one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judgement {
    pub health: RuleHealth,
    pub message: String,
}

/// A rule that does not compile, or is not a rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct RuleError {
    /// The field, relative to the rule (`healthyWhen`), or the rule itself (`kind`).
    pub field: &'static str,
    pub problem: String,
}

/// The expression fields, in the order they are checked.
const CONDITIONS: [(&str, RuleHealth); 3] = [
    ("degradedWhen", RuleHealth::Degraded),
    ("suspendedWhen", RuleHealth::Suspended),
    ("healthyWhen", RuleHealth::Healthy),
];

/// A compiled rule.
pub struct CompiledRule {
    pub origin: String,
    pub group: String,
    pub kind: String,
    /// `CONDITIONS`' expressions, each when given.
    conditions: Vec<(&'static str, RuleHealth, cel::Program)>,
    message: Option<cel::Program>,
}

impl std::fmt::Debug for CompiledRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledRule")
            .field("origin", &self.origin)
            .field("group", &self.group)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

/// Checks a rule as the hub does on apply: every error, each naming its field.
pub fn validate(rule: &HealthRuleSpec) -> Vec<RuleError> {
    match compile("", rule) {
        Ok(_) => Vec::new(),
        Err(errors) => errors,
    }
}

/// Compiles `rule` (from `origin`).
pub fn compile(origin: &str, rule: &HealthRuleSpec) -> Result<CompiledRule, Vec<RuleError>> {
    let mut errors = Vec::new();
    if rule.kind.is_empty() {
        errors.push(RuleError {
            field: "kind",
            problem: "must not be empty (a kind, or `*` for every kind of the group)".into(),
        });
    } else if rule.kind == "*" && rule.group.is_empty() {
        errors.push(RuleError {
            field: "kind",
            problem:
                "`*` needs a group: a rule for every kind of every group would judge all objects"
                    .into(),
        });
    }
    let texts = [
        ("degradedWhen", RuleHealth::Degraded, &rule.degraded_when),
        ("suspendedWhen", RuleHealth::Suspended, &rule.suspended_when),
        ("healthyWhen", RuleHealth::Healthy, &rule.healthy_when),
    ];
    debug_assert!(texts.iter().zip(CONDITIONS).all(|(t, c)| t.0 == c.0));
    if texts.iter().all(|(_, _, text)| text.trim().is_empty()) {
        errors.push(RuleError {
            field: "healthyWhen",
            problem: "a rule needs healthyWhen or degradedWhen (or suspendedWhen)".into(),
        });
    }
    let mut conditions = Vec::new();
    for (field, health, text) in texts {
        if text.trim().is_empty() {
            continue;
        }
        match program(field, text) {
            Ok(p) => conditions.push((field, health, p)),
            Err(e) => errors.push(e),
        }
    }
    let message = if rule.message.trim().is_empty() {
        None
    } else {
        match program("message", &rule.message) {
            Ok(p) => Some(p),
            Err(e) => {
                errors.push(e);
                None
            }
        }
    };
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(CompiledRule {
        origin: origin.to_owned(),
        group: rule.group.clone(),
        kind: rule.kind.clone(),
        conditions,
        message,
    })
}

fn program(field: &'static str, text: &str) -> Result<cel::Program, RuleError> {
    if text.len() > MAX_EXPRESSION_BYTES {
        return Err(RuleError {
            field,
            problem: format!(
                "{} bytes, more than the {MAX_EXPRESSION_BYTES} an expression may have",
                text.len()
            ),
        });
    }
    // The parser reports a problem as several lines (message, the text, a caret under it):
    // one line reads better in a table, a report and an error of `gitfleet apply`.
    cel::Program::compile(text).map_err(|e| RuleError {
        field,
        problem: format!(
            "not a CEL expression: {}",
            e.to_string()
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('|'))
                .collect::<Vec<_>>()
                .join("; ")
        ),
    })
}

impl CompiledRule {
    /// Whether the rule names objects of `group`/`kind`.
    pub fn matches(&self, group: &str, kind: &str) -> bool {
        self.group == group && (self.kind == kind || self.kind == "*")
    }

    /// Judges `object` (its JSON as the API server returns it). The expressions see the
    /// object as `self`, and its top-level fields (`metadata`, `spec`, `status`, ...) by name.
    /// A field the object does not have (yet) makes a condition false rather than an error:
    /// `status` is written after the object is created.
    pub fn judge(&self, object: &serde_json::Value) -> Judgement {
        let mut context = cel::Context::default();
        if let Err(e) = bind(&mut context, object) {
            return Judgement {
                health: RuleHealth::Unknown,
                message: self.describe(&format!("cannot read the object: {e}")),
            };
        }
        let mut health = RuleHealth::Progressing;
        for (field, judged, program) in &self.conditions {
            match program.execute(&context) {
                Ok(cel::Value::Bool(true)) => {
                    health = *judged;
                    break;
                }
                Ok(cel::Value::Bool(false)) => {}
                Err(e) if is_absent(&e) => {}
                Ok(other) => {
                    return Judgement {
                        health: RuleHealth::Unknown,
                        message: self
                            .describe(&format!("{field} gave {}, not a bool", type_name(&other))),
                    };
                }
                Err(e) => {
                    return Judgement {
                        health: RuleHealth::Unknown,
                        message: self.describe(&format!("{field}: {e}")),
                    };
                }
            }
        }
        let message = match self.message.as_ref().map(|p| p.execute(&context)) {
            None => String::new(),
            Some(Ok(cel::Value::String(s))) => s.to_string(),
            Some(Ok(cel::Value::Null)) => String::new(),
            Some(Err(e)) if is_absent(&e) => String::new(),
            Some(Ok(other)) => {
                self.describe(&format!("message gave {}, not a string", type_name(&other)))
            }
            Some(Err(e)) => self.describe(&format!("message: {e}")),
        };
        Judgement { health, message }
    }

    /// `problem`, said of this rule.
    fn describe(&self, problem: &str) -> String {
        let kind = if self.group.is_empty() {
            self.kind.clone()
        } else {
            format!("{}/{}", self.group, self.kind)
        };
        if self.origin.is_empty() {
            format!("health rule for {kind}: {problem}")
        } else {
            format!("health rule for {kind} ({}): {problem}", self.origin)
        }
    }
}

/// Binds `self` and the object's top-level fields.
fn bind(context: &mut cel::Context<'_, '_>, object: &serde_json::Value) -> Result<(), String> {
    context
        .add_variable("self", object)
        .map_err(|e| e.to_string())?;
    if let Some(fields) = object.as_object() {
        for (name, value) in fields {
            if name != "self" {
                context
                    .add_variable(name.as_str(), value)
                    .map_err(|e| e.to_string())?;
            }
        }
    }
    Ok(())
}

/// An error that means a field or variable the object does not have.
fn is_absent(e: &cel::ExecutionError) -> bool {
    matches!(
        e,
        cel::ExecutionError::NoSuchKey(_) | cel::ExecutionError::UndeclaredReference(_)
    ) || e.to_string().contains("No such key")
}

fn type_name(v: &cel::Value) -> &'static str {
    match v {
        cel::Value::List(_) => "a list",
        cel::Value::Map(_) => "a map",
        cel::Value::Int(_) | cel::Value::UInt(_) => "an integer",
        cel::Value::Float(_) => "a number",
        cel::Value::String(_) => "a string",
        cel::Value::Bool(_) => "a bool",
        cel::Value::Null => "null",
        _ => "a value",
    }
}

/// The rules one Target's objects are judged by, compiled: first match wins.
#[derive(Debug, Default, Clone)]
pub struct RuleSet {
    rules: Vec<Arc<CompiledRule>>,
    /// Rules that did not compile (a spoke newer or older than the hub that checked them):
    /// the objects they name are Unknown with this message.
    broken: Vec<(String, String, String)>,
}

impl RuleSet {
    /// The Target's rules, then the built-in ones.
    pub fn new(rules: &[TargetHealthRule]) -> Self {
        let mut set = RuleSet::default();
        for r in rules.iter().take(MAX_RULES) {
            match compile(&r.origin, &r.rule) {
                Ok(c) => set.rules.push(Arc::new(c)),
                Err(errors) => set.broken.push((
                    r.rule.group.clone(),
                    r.rule.kind.clone(),
                    format!(
                        "health rule for {} ({}) does not compile: {}",
                        if r.rule.group.is_empty() {
                            r.rule.kind.clone()
                        } else {
                            format!("{}/{}", r.rule.group, r.rule.kind)
                        },
                        r.origin,
                        errors
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join("; ")
                    ),
                )),
            }
        }
        set.rules.extend(BUILTIN.iter().cloned());
        set
    }

    /// The judgement of the first rule that names the object's kind, exact kinds before `*`;
    /// `None` when no rule does (the caller's own judgement stands).
    pub fn judge(&self, group: &str, kind: &str, object: &serde_json::Value) -> Option<Judgement> {
        if let Some((_, _, message)) = self
            .broken
            .iter()
            .find(|(g, k, _)| g == group && (k == kind || k == "*"))
        {
            return Some(Judgement {
                health: RuleHealth::Unknown,
                message: message.clone(),
            });
        }
        let exact = self
            .rules
            .iter()
            .find(|r| r.group == group && r.kind == kind);
        let rule = exact.or_else(|| self.rules.iter().find(|r| r.matches(group, kind)))?;
        Some(rule.judge(object))
    }
}

/// The rules gitfleet knows for common CRDs, as CEL like any other rule: the last ones
/// consulted, so a Project's or a hub-wide rule for the same kind wins.
pub fn builtin() -> Vec<TargetHealthRule> {
    const READY_TRUE: &str = "has(status.conditions) && status.conditions.exists(c, c.type == 'Ready' && c.status == 'True')";
    const READY_MESSAGE: &str = "has(status.conditions) && status.conditions.exists(c, c.type == 'Ready') ? status.conditions.filter(c, c.type == 'Ready')[0].message : ''";
    // Flux's controllers follow kstatus: Stalled=True is a failure that needs a change; a
    // Ready=False with a failure reason (InstallFailed, UpgradeFailed, BuildFailed,
    // HealthCheckFailed, ArtifactFailed, ...) is one too, unless it is reconciling again.
    let flux = |group: &str| {
        HealthRuleSpec {
        group: group.into(),
        kind: "*".into(),
        degraded_when: "has(status.conditions) && (status.conditions.exists(c, c.type == 'Stalled' && c.status == 'True') || (status.conditions.exists(c, c.type == 'Ready' && c.status == 'False' && has(c.reason) && c.reason.endsWith('Failed')) && !status.conditions.exists(c, c.type == 'Reconciling' && c.status == 'True')))".into(),
        suspended_when: "has(spec.suspend) && spec.suspend == true".into(),
        healthy_when: format!(
            "{READY_TRUE} && (!has(status.observedGeneration) || status.observedGeneration >= metadata.generation)"
        ),
        message: READY_MESSAGE.into(),
    }
    };
    let rules = [
        // cert-manager: Ready=False while a first certificate is being issued (Issuing=True)
        // is progress; without an issuance under way it is a failure.
        HealthRuleSpec {
            group: "cert-manager.io".into(),
            kind: "Certificate".into(),
            degraded_when: "has(status.conditions) && status.conditions.exists(c, c.type == 'Ready' && c.status == 'False') && !status.conditions.exists(c, c.type == 'Issuing' && c.status == 'True')".into(),
            suspended_when: String::new(),
            healthy_when: READY_TRUE.into(),
            message: READY_MESSAGE.into(),
        },
        HealthRuleSpec {
            group: "cert-manager.io".into(),
            kind: "*".into(),
            degraded_when: "has(status.conditions) && status.conditions.exists(c, c.type == 'Ready' && c.status == 'False' && has(c.reason) && c.reason in ['Failed', 'Denied', 'InvalidRequest', 'ErrInitIssuer', 'ErrorConfig'])".into(),
            suspended_when: String::new(),
            healthy_when: READY_TRUE.into(),
            message: READY_MESSAGE.into(),
        },
        // Argo Rollouts reports its own judgement in status.phase.
        HealthRuleSpec {
            group: "argoproj.io".into(),
            kind: "Rollout".into(),
            degraded_when: "has(status.phase) && status.phase == 'Degraded'".into(),
            suspended_when: "has(status.phase) && status.phase == 'Paused'".into(),
            healthy_when: "has(status.phase) && status.phase == 'Healthy'".into(),
            message: "has(status.message) ? status.message : ''".into(),
        },
        flux("helm.toolkit.fluxcd.io"),
        flux("kustomize.toolkit.fluxcd.io"),
        flux("source.toolkit.fluxcd.io"),
    ];
    rules
        .into_iter()
        .map(|rule| TargetHealthRule {
            origin: "built in".into(),
            rule,
        })
        .collect()
}

static BUILTIN: LazyLock<Vec<Arc<CompiledRule>>> = LazyLock::new(|| {
    builtin()
        .iter()
        .filter_map(|r| compile(&r.origin, &r.rule).ok().map(Arc::new))
        .collect()
});

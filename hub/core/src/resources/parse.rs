//! Parsing and validation of resource documents, with field paths in every error.

use serde::de::DeserializeOwned;

use super::{
    API_VERSION, App, ChartSpec, ClusterGroup, ClusterSelection, DEFAULT_PROJECT, GitRef,
    GroupKind, HealthRule, HealthRuleSpec, HelmOptions, IntOrPercent, Kind, LabelSelector,
    Metadata, Notifier, Project, RenderType, Repo, Resource, ResourceError, RolloutSpec,
    SelectorOperator, SyncWindow,
};

/// Parses and validates one resource document (JSON; the CLI converts YAML). `origin` names where
/// it came from in errors ("apps/web.yaml#2"); pass "" when there is nothing useful to say.
pub fn parse_document(origin: &str, json: &str) -> Result<Resource, ResourceError> {
    let value: serde_json::Value =
        serde_json::from_str(json).map_err(|e| err(origin, "document", "", e.to_string()))?;
    parse_value(origin, value)
}

/// As [`parse_document`], from an already parsed JSON value.
pub fn parse_value(origin: &str, value: serde_json::Value) -> Result<Resource, ResourceError> {
    let obj = value.as_object().ok_or_else(|| {
        err(
            origin,
            "document",
            "",
            "expected a mapping with apiVersion, kind, metadata and spec".into(),
        )
    })?;
    let kind_str = obj.get("kind").and_then(|k| k.as_str()).ok_or_else(|| {
        err(
            origin,
            "document",
            "kind",
            "missing (one of Repo, App, ClusterGroup, Project, HealthRule, Notifier)".into(),
        )
    })?;
    let kind = match kind_str {
        "Repo" => Kind::Repo,
        "App" => Kind::App,
        "ClusterGroup" => Kind::ClusterGroup,
        "Project" => Kind::Project,
        "HealthRule" => Kind::HealthRule,
        "Notifier" => Kind::Notifier,
        other => {
            return Err(err(
                origin,
                "document",
                "kind",
                format!(
                    "unknown kind {other:?} (expected Repo, App, ClusterGroup, Project, HealthRule or Notifier)"
                ),
            ));
        }
    };
    let name = obj
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(|n| n.as_str())
        .unwrap_or("")
        .to_owned();
    let subject = if name.is_empty() {
        kind_str.to_ascii_lowercase()
    } else {
        format!("{} {name:?}", subject_word(kind))
    };
    match obj.get("apiVersion").and_then(|v| v.as_str()) {
        Some(API_VERSION) => {}
        Some(other) => {
            return Err(err(
                origin,
                &subject,
                "apiVersion",
                format!("unsupported apiVersion {other:?} (expected {API_VERSION:?})"),
            ));
        }
        None => {
            return Err(err(
                origin,
                &subject,
                "apiVersion",
                format!("missing (expected {API_VERSION:?})"),
            ));
        }
    }
    let mut value = value;
    if let Some(o) = value.as_object_mut() {
        o.remove("kind");
    }
    let v = Validator {
        origin,
        subject: &subject,
    };
    let resource = match kind {
        Kind::Repo => {
            let r: Repo = v.deserialize(value)?;
            v.metadata(&r.metadata)?;
            v.repo(&r)?;
            Resource::Repo(r)
        }
        Kind::App => {
            let a: App = v.deserialize(value)?;
            v.metadata(&a.metadata)?;
            v.app(&a)?;
            Resource::App(a)
        }
        Kind::ClusterGroup => {
            let g: ClusterGroup = v.deserialize(value)?;
            v.metadata(&g.metadata)?;
            v.selector("spec.selector", &g.spec.selector)?;
            Resource::ClusterGroup(g)
        }
        Kind::Project => {
            let p: Project = v.deserialize(value)?;
            v.metadata(&p.metadata)?;
            v.project(&p)?;
            Resource::Project(p)
        }
        Kind::HealthRule => {
            let h: HealthRule = v.deserialize(value)?;
            v.metadata(&h.metadata)?;
            v.health_rule("spec", &h.spec)?;
            Resource::HealthRule(h)
        }
        Kind::Notifier => {
            let n: Notifier = v.deserialize(value)?;
            v.metadata(&n.metadata)?;
            v.notifier(&n)?;
            Resource::Notifier(n)
        }
    };
    Ok(resource)
}

fn subject_word(kind: Kind) -> &'static str {
    match kind {
        Kind::Repo => "repo",
        Kind::App => "app",
        Kind::ClusterGroup => "clustergroup",
        Kind::Project => "project",
        Kind::HealthRule => "healthrule",
        Kind::Notifier => "notifier",
    }
}

fn err(origin: &str, subject: &str, path: &str, message: String) -> ResourceError {
    ResourceError {
        origin: if origin.is_empty() {
            String::new()
        } else {
            format!("{origin}: ")
        },
        subject: subject.to_owned(),
        path: path.to_owned(),
        message,
    }
}

struct Validator<'a> {
    origin: &'a str,
    subject: &'a str,
}

impl Validator<'_> {
    fn fail(&self, path: &str, message: impl Into<String>) -> ResourceError {
        err(self.origin, self.subject, path, message.into())
    }

    fn deserialize<T: DeserializeOwned>(
        &self,
        value: serde_json::Value,
    ) -> Result<T, ResourceError> {
        serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            let path = if path == "." { String::new() } else { path };
            self.fail(&path, clean_serde_message(&e.into_inner().to_string()))
        })
    }

    fn metadata(&self, m: &Metadata) -> Result<(), ResourceError> {
        if let Some(problem) = dns1123_label_problem(&m.name) {
            return Err(self.fail("metadata.name", format!("{:?} {problem}", m.name)));
        }
        for (k, v) in &m.labels {
            if let Some(problem) = label_key_problem(k) {
                return Err(self.fail(&format!("metadata.labels[{k:?}]"), format!("key {problem}")));
            }
            if let Some(problem) = label_value_problem(v) {
                return Err(self.fail(
                    &format!("metadata.labels[{k:?}]"),
                    format!("value {v:?} {problem}"),
                ));
            }
        }
        Ok(())
    }

    fn repo(&self, r: &Repo) -> Result<(), ResourceError> {
        let url = r.spec.url.trim();
        if url.is_empty() {
            return Err(self.fail("spec.url", "must not be empty"));
        }
        let known_scheme = ["https://", "http://", "ssh://", "git://", "file://"]
            .iter()
            .any(|s| url.starts_with(s));
        let scp_like = !url.contains("://") && url.contains('@') && url.contains(':');
        if !known_scheme && !scp_like {
            return Err(self.fail(
                "spec.url",
                format!(
                    "{url:?} is not a Git URL (https://, ssh://, git://, file:// or user@host:path)"
                ),
            ));
        }
        match &r.spec.reference {
            GitRef::Branch(b) | GitRef::Tag(b) => {
                if let Some(problem) = ref_name_problem(b) {
                    return Err(self.fail("spec.ref", format!("{b:?} {problem}")));
                }
            }
            GitRef::Semver(range) => {
                if range.trim().is_empty() {
                    return Err(self.fail("spec.ref.semver", "must not be empty"));
                }
            }
            GitRef::Commit(c) => {
                if c.len() != 40 || !c.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(self.fail(
                        "spec.ref.commit",
                        format!("{c:?} is not a full 40-hex commit id"),
                    ));
                }
            }
        }
        if let Some(d) = r.spec.poll_interval
            && d.as_millis() < 100
        {
            return Err(self.fail("spec.pollInterval", "must be at least 100ms"));
        }
        for (path, reference) in [
            ("spec.credentialsRef", &r.spec.credentials_ref),
            ("spec.webhookSecretRef", &r.spec.webhook_secret_ref),
        ] {
            if let Some(problem) = reference.as_deref().and_then(secret_ref_problem) {
                return Err(self.fail(path, problem));
            }
        }
        if let Some(verify) = &r.spec.verify {
            if verify.trusted_keys.is_empty() {
                return Err(self.fail(
                    "spec.verify.trustedKeys",
                    "must list at least one key (an SSH public key line or an armored OpenPGP public key)",
                ));
            }
            if let Err((i, problem)) =
                crate::git::signature::TrustedKeys::parse(&verify.trusted_keys)
            {
                return Err(self.fail(
                    &format!("spec.verify.trustedKeys[{i}]"),
                    problem.to_string(),
                ));
            }
        }
        Ok(())
    }

    fn app(&self, a: &App) -> Result<(), ResourceError> {
        let s = &a.spec;
        if let Some(project) = &s.project
            && let Some(problem) = dns1123_label_problem(project)
        {
            return Err(self.fail("spec.project", format!("{project:?} {problem}")));
        }
        if let Some(problem) = dns1123_label_problem(&s.repo) {
            return Err(self.fail("spec.repo", format!("{:?} {problem}", s.repo)));
        }
        self.repo_path("spec.path", &s.path)?;
        for (i, p) in s.extra_paths.iter().enumerate() {
            self.repo_path(&format!("spec.extraPaths[{i}]"), p)?;
        }
        if let Some(problem) = dns1123_label_problem(&s.namespace) {
            return Err(self.fail("spec.namespace", format!("{:?} {problem}", s.namespace)));
        }
        if s.targets.is_empty() {
            return Err(self.fail(
                "spec.targets",
                "must name at least one cluster, selector or group",
            ));
        }
        for (i, t) in s.targets.iter().enumerate() {
            self.selection(&format!("spec.targets[{i}]"), t)?;
        }
        if let Some(k) = &s.render.kustomize
            && let Some(dir) = &k.dir
        {
            self.repo_path("spec.render.kustomize.dir", dir)?;
        }
        if let Some(h) = &s.render.helm {
            self.helm("spec.render.helm", h)?;
            if let Some(c) = &h.chart {
                self.chart("spec.render.helm.chart", c)?;
                if matches!(
                    s.render.render_type,
                    RenderType::Yaml | RenderType::Kustomize
                ) {
                    return Err(self.fail(
                        "spec.render.type",
                        "must be helm or auto (or absent) when spec.render.helm.chart is set",
                    ));
                }
            }
            if let Some(v) = &h.values
                && !v.is_object()
            {
                return Err(self.fail("spec.render.helm.values", "must be a mapping"));
            }
        }
        for (i, c) in s.customize.iter().enumerate() {
            let base = format!("spec.customize[{i}]");
            self.selection(&base, &c.selection)?;
            if let Some(ns) = &c.namespace
                && let Some(problem) = dns1123_label_problem(ns)
            {
                return Err(self.fail(&format!("{base}.namespace"), format!("{ns:?} {problem}")));
            }
            if let Some(k) = &c.kustomize
                && let Some(dir) = &k.dir
            {
                self.repo_path(&format!("{base}.kustomize.dir"), dir)?;
            }
            if let Some(h) = &c.helm {
                self.helm(&format!("{base}.helm"), h)?;
                if h.chart.is_some() {
                    return Err(self.fail(
                        &format!("{base}.helm.chart"),
                        "must not be set: the chart is the App's (spec.render.helm.chart), so that every cluster gets the same one; customize values instead",
                    ));
                }
            }
        }
        if let Some(r) = &s.rollout {
            self.rollout("spec.rollout", r)?;
        }
        for (i, dependency) in s.depends_on.iter().enumerate() {
            let path = format!("spec.dependsOn[{i}]");
            if let Some(problem) = dns1123_label_problem(dependency) {
                return Err(self.fail(&path, format!("{dependency:?} {problem}")));
            }
            if *dependency == a.metadata.name {
                return Err(self.fail(&path, "an App cannot depend on itself"));
            }
            if s.depends_on[..i].contains(dependency) {
                return Err(self.fail(&path, format!("{dependency:?} is named twice")));
            }
        }
        self.sync_windows(&s.sync_windows)?;
        Ok(())
    }

    fn sync_windows(&self, windows: &[SyncWindow]) -> Result<(), ResourceError> {
        for (i, w) in windows.iter().enumerate() {
            let base = format!("spec.syncWindows[{i}]");
            if let Err(problem) = crate::fleet::window::CompiledWindow::compile(w) {
                return Err(self.fail(&format!("{base}.{}", problem.field), problem.message));
            }
            if let Some(sel) = &w.cluster_selector {
                self.selector(&format!("{base}.clusterSelector"), sel)?;
            }
        }
        Ok(())
    }

    /// A health rule at `base` (`spec`, `spec.healthRules[2]`): its first error.
    fn health_rule(&self, base: &str, rule: &HealthRuleSpec) -> Result<(), ResourceError> {
        match crate::health_rules::validate(rule).into_iter().next() {
            Some(e) => Err(self.fail(&format!("{base}.{}", e.field), e.problem)),
            None => Ok(()),
        }
    }

    fn project(&self, p: &Project) -> Result<(), ResourceError> {
        if p.spec.health_rules.len() > crate::health_rules::MAX_RULES {
            return Err(self.fail(
                "spec.healthRules",
                format!(
                    "{} rules, more than the {} a Project may have",
                    p.spec.health_rules.len(),
                    crate::health_rules::MAX_RULES
                ),
            ));
        }
        for (i, rule) in p.spec.health_rules.iter().enumerate() {
            self.health_rule(&format!("spec.healthRules[{i}]"), rule)?;
        }
        if p.metadata.name == DEFAULT_PROJECT {
            return Err(self.fail(
                "metadata.name",
                format!(
                    "{DEFAULT_PROJECT:?} is the built-in Project, which allows everything and \
                     cannot be changed (create a Project of another name and name it in the \
                     Apps' spec.project)"
                ),
            ));
        }
        for (i, r) in p.spec.source_repos.iter().enumerate() {
            let path = format!("spec.sourceRepos[{i}]");
            if r.trim().is_empty() {
                return Err(self.fail(&path, "must not be empty"));
            }
            if r.chars().any(char::is_whitespace) {
                return Err(self.fail(&path, format!("{r:?} must not contain whitespace")));
            }
        }
        for (i, d) in p.spec.destinations.iter().enumerate() {
            let base = format!("spec.destinations[{i}]");
            let set = usize::from(d.name.is_some())
                + usize::from(d.cluster_selector.is_some())
                + usize::from(d.group.is_some());
            if set != 1 {
                return Err(self.fail(&base, "set exactly one of name, clusterSelector or group"));
            }
            if let Some(name) = &d.name
                && let Some(problem) = glob_problem(name, 63)
            {
                return Err(self.fail(&format!("{base}.name"), format!("{name:?} {problem}")));
            }
            if let Some(sel) = &d.cluster_selector {
                self.selector(&format!("{base}.clusterSelector"), sel)?;
            }
            if let Some(g) = &d.group
                && let Some(problem) = dns1123_label_problem(g)
            {
                return Err(self.fail(&format!("{base}.group"), format!("{g:?} {problem}")));
            }
            if d.namespaces.is_empty() {
                return Err(self.fail(
                    &format!("{base}.namespaces"),
                    "must list at least one namespace or glob (\"*\" for any)",
                ));
            }
            for (j, ns) in d.namespaces.iter().enumerate() {
                if let Some(problem) = glob_problem(ns, 63) {
                    return Err(self.fail(
                        &format!("{base}.namespaces[{j}]"),
                        format!("{ns:?} {problem}"),
                    ));
                }
            }
        }
        for (i, gk) in p.spec.cluster_resources.iter().enumerate() {
            self.group_kind(&format!("spec.clusterResources[{i}]"), gk)?;
        }
        for (i, gk) in p.spec.namespace_resources.deny.iter().enumerate() {
            self.group_kind(&format!("spec.namespaceResources.deny[{i}]"), gk)?;
        }
        self.sync_windows(&p.spec.sync_windows)?;
        Ok(())
    }

    fn group_kind(&self, path: &str, gk: &GroupKind) -> Result<(), ResourceError> {
        let group_ok = gk.group == "*"
            || gk.group.is_empty()
            || gk
                .group
                .split('.')
                .all(|p| dns1123_label_problem(p).is_none());
        if !group_ok {
            return Err(self.fail(
                &format!("{path}.group"),
                format!(
                    "{:?} is not an API group (\"\" for the core group, \"*\" for any)",
                    gk.group
                ),
            ));
        }
        let kind_ok = gk.kind == "*"
            || (!gk.kind.is_empty()
                && gk.kind.len() <= 63
                && gk.kind.bytes().all(|b| b.is_ascii_alphanumeric()));
        if !kind_ok {
            return Err(self.fail(
                &format!("{path}.kind"),
                format!(
                    "{:?} is not a kind (like ConfigMap, or \"*\" for any)",
                    gk.kind
                ),
            ));
        }
        Ok(())
    }

    /// Everything of the Helm options that ends up on `helm template`'s command line.
    fn helm(&self, path: &str, h: &HelmOptions) -> Result<(), ResourceError> {
        if let Some(name) = &h.release_name
            && let Some(problem) = helm_release_name_problem(name)
        {
            return Err(self.fail(
                &format!("{path}.releaseName"),
                format!("{name:?} {problem}"),
            ));
        }
        for (i, f) in h.values_files.iter().enumerate() {
            let field = format!("{path}.valuesFiles[{i}]");
            self.repo_path(&field, f)?;
            if f.starts_with('-') {
                return Err(self.fail(&field, format!("{f:?} must not start with '-'")));
            }
        }
        Ok(())
    }

    /// `spec.render.helm.chart`: a repository the hub may fetch from, a chart name, a version
    /// or range.
    fn chart(&self, path: &str, c: &ChartSpec) -> Result<(), ResourceError> {
        if let Some(problem) = crate::charts::repository_problem(&c.repository) {
            return Err(self.fail(
                &format!("{path}.repository"),
                format!("{:?} {problem}", c.repository),
            ));
        }
        if let Some(problem) = crate::charts::chart_name_problem(&c.name) {
            return Err(self.fail(&format!("{path}.name"), format!("{:?} {problem}", c.name)));
        }
        if let Err(problem) = crate::charts::Wanted::parse(&c.version) {
            return Err(self.fail(&format!("{path}.version"), problem));
        }
        Ok(())
    }

    fn rollout(&self, path: &str, r: &RolloutSpec) -> Result<(), ResourceError> {
        self.max_unavailable(&format!("{path}.maxUnavailable"), r.max_unavailable)?;
        self.percent(&format!("{path}.failureBudget"), r.failure_budget)?;
        if r.progress_deadline.is_some_and(|d| d.as_secs() < 1) {
            return Err(self.fail(&format!("{path}.progressDeadline"), "must be at least 1s"));
        }
        let mut names: Vec<&str> = Vec::new();
        for (i, w) in r.waves.iter().enumerate() {
            let base = format!("{path}.waves[{i}]");
            if let Some(name) = &w.name {
                if let Some(problem) = dns1123_label_problem(name) {
                    return Err(self.fail(&format!("{base}.name"), format!("{name:?} {problem}")));
                }
                if names.contains(&name.as_str()) {
                    return Err(self.fail(
                        &format!("{base}.name"),
                        format!("{name:?} names an earlier wave too"),
                    ));
                }
                names.push(name);
            }
            self.selection(&base, &w.selection())?;
            self.max_unavailable(&format!("{base}.maxUnavailable"), w.max_unavailable)?;
            self.percent(&format!("{base}.failureBudget"), w.failure_budget)?;
        }
        Ok(())
    }

    /// A wave that may update nothing would never finish.
    fn max_unavailable(&self, path: &str, v: Option<IntOrPercent>) -> Result<(), ResourceError> {
        if let Some(v) = v
            && v.is_zero()
        {
            return Err(self.fail(
                path,
                format!("\"{v}\" would never update anything (use at least 1 or 1%)"),
            ));
        }
        self.percent(path, v)
    }

    fn percent(&self, path: &str, v: Option<IntOrPercent>) -> Result<(), ResourceError> {
        if let Some(IntOrPercent::Percent(p)) = v
            && p > 100
        {
            return Err(self.fail(path, format!("\"{p}%\" is more than 100%")));
        }
        Ok(())
    }

    fn selection(&self, path: &str, t: &ClusterSelection) -> Result<(), ResourceError> {
        let set = usize::from(t.cluster_selector.is_some())
            + usize::from(t.cluster_group.is_some())
            + usize::from(!t.clusters.is_empty());
        if set != 1 {
            return Err(self.fail(
                path,
                "set exactly one of clusterSelector, clusterGroup or clusters",
            ));
        }
        if let Some(sel) = &t.cluster_selector {
            self.selector(&format!("{path}.clusterSelector"), sel)?;
        }
        if let Some(g) = &t.cluster_group
            && let Some(problem) = dns1123_label_problem(g)
        {
            return Err(self.fail(&format!("{path}.clusterGroup"), format!("{g:?} {problem}")));
        }
        for (i, c) in t.clusters.iter().enumerate() {
            if let Some(problem) = dns1123_label_problem(c) {
                return Err(self.fail(&format!("{path}.clusters[{i}]"), format!("{c:?} {problem}")));
            }
        }
        Ok(())
    }

    fn notifier(&self, n: &Notifier) -> Result<(), ResourceError> {
        let spec = &n.spec;
        crate::notify::validate(spec).map_err(|p| self.fail(&p.path, p.message))?;
        if let Some(project) = &spec.project
            && let Some(problem) = dns1123_label_problem(project)
        {
            return Err(self.fail("spec.project", format!("{project:?} {problem}")));
        }
        for (field, names) in [("apps", &spec.apps), ("projects", &spec.projects)] {
            for (i, name) in names.iter().enumerate() {
                if let Some(problem) = dns1123_label_problem(name) {
                    return Err(
                        self.fail(&format!("spec.{field}[{i}]"), format!("{name:?} {problem}"))
                    );
                }
            }
        }
        if let Some(selector) = &spec.cluster_selector {
            self.selector("spec.clusterSelector", selector)?;
        }
        if let Some((reference, path)) = spec.secret_ref()
            && let Some(problem) = secret_ref_problem(reference)
        {
            return Err(self.fail(path, problem));
        }
        Ok(())
    }

    fn selector(&self, path: &str, s: &LabelSelector) -> Result<(), ResourceError> {
        for (k, v) in &s.match_labels {
            if let Some(problem) = label_key_problem(k) {
                return Err(self.fail(
                    &format!("{path}.matchLabels"),
                    format!("key {k:?} {problem}"),
                ));
            }
            if let Some(problem) = label_value_problem(v) {
                return Err(self.fail(
                    &format!("{path}.matchLabels[{k:?}]"),
                    format!("value {v:?} {problem}"),
                ));
            }
        }
        for (i, e) in s.match_expressions.iter().enumerate() {
            let p = format!("{path}.matchExpressions[{i}]");
            if let Some(problem) = label_key_problem(&e.key) {
                return Err(self.fail(&format!("{p}.key"), format!("{:?} {problem}", e.key)));
            }
            match e.operator {
                SelectorOperator::In | SelectorOperator::NotIn => {
                    if e.values.is_empty() {
                        return Err(self.fail(
                            &format!("{p}.values"),
                            format!("operator {:?} needs at least one value", e.operator),
                        ));
                    }
                }
                SelectorOperator::Exists | SelectorOperator::DoesNotExist => {
                    if !e.values.is_empty() {
                        return Err(self.fail(
                            &format!("{p}.values"),
                            format!("operator {:?} takes no values", e.operator),
                        ));
                    }
                }
            }
            for (j, v) in e.values.iter().enumerate() {
                if let Some(problem) = label_value_problem(v) {
                    return Err(self.fail(&format!("{p}.values[{j}]"), format!("{v:?} {problem}")));
                }
            }
        }
        Ok(())
    }

    fn repo_path(&self, field: &str, p: &str) -> Result<(), ResourceError> {
        if let Some(problem) = repo_path_problem(p) {
            return Err(self.fail(field, format!("{p:?} {problem}")));
        }
        Ok(())
    }
}

/// Why `glob` is not a name glob: lowercase letters, digits, '-' and '*', at most `max` long.
fn glob_problem(glob: &str, max: usize) -> Option<&'static str> {
    if glob.is_empty() {
        return Some("must not be empty");
    }
    if glob.len() > max {
        return Some("is too long");
    }
    if !glob
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'*')
    {
        return Some("must consist of lowercase letters, digits, '-' and '*'");
    }
    None
}

/// serde says "unknown variant `Inn`, expected one of ..."; users think in operators and fields.
fn clean_serde_message(msg: &str) -> String {
    msg.replace("unknown variant", "unknown value")
}

/// Why `s` is not a DNS-1123 label (lowercase alphanumerics and '-', 1-63, alphanumeric ends).
pub fn dns1123_label_problem(s: &str) -> Option<&'static str> {
    if s.is_empty() {
        return Some("must not be empty");
    }
    if s.len() > 63 {
        return Some("must be at most 63 characters");
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Some("must consist of lowercase letters, digits and '-'");
    }
    if s.starts_with('-') || s.ends_with('-') {
        return Some("must start and end with a letter or digit");
    }
    None
}

pub use crate::names::helm_release_name_problem;

/// Why `k` is not a valid label key (`[prefix/]name`, name ≤ 63 of [A-Za-z0-9-_.]).
pub fn label_key_problem(k: &str) -> Option<&'static str> {
    let (prefix, name) = match k.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    if let Some(p) = prefix {
        if p.is_empty() || p.len() > 253 {
            return Some("has an invalid prefix (a DNS subdomain of at most 253 characters)");
        }
        if !p
            .split('.')
            .all(|part| dns1123_label_problem(part).is_none())
        {
            return Some("has an invalid prefix (must be a DNS subdomain)");
        }
    }
    if name.is_empty() {
        return Some("must have a name");
    }
    label_value_problem(name)
}

/// Why `v` is not a valid label value (≤ 63 of [A-Za-z0-9-_.], alphanumeric ends, may be empty).
pub fn label_value_problem(v: &str) -> Option<&'static str> {
    if v.len() > 63 {
        return Some("must be at most 63 characters");
    }
    if !v
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        return Some("must consist of letters, digits, '-', '_' and '.'");
    }
    let ends_ok = |b: Option<u8>| b.is_none_or(|b| b.is_ascii_alphanumeric());
    if !ends_ok(v.bytes().next()) || !ends_ok(v.bytes().last()) {
        return Some("must start and end with a letter or digit");
    }
    None
}

/// Why `p` is not a safe path inside a repository.
pub fn repo_path_problem(p: &str) -> Option<&'static str> {
    if p.starts_with('/') {
        return Some("must be relative to the repository root");
    }
    if p.contains('\\') || p.contains('\0') {
        return Some("must use '/' separators and no NUL");
    }
    if p.split('/').any(|seg| seg == "..") {
        return Some("must not contain '..'");
    }
    if p.split('/').any(|seg| seg == ".git") {
        return Some("must not point into .git");
    }
    None
}

fn ref_name_problem(r: &str) -> Option<&'static str> {
    if r.is_empty() {
        return Some("must not be empty");
    }
    if r.contains("..")
        || r.starts_with('/')
        || r.ends_with('/')
        || r.ends_with(".lock")
        || r.bytes()
            .any(|b| b.is_ascii_control() || b" ~^:?*[\\".contains(&b))
    {
        return Some("is not a valid Git ref name");
    }
    None
}

/// Why `reference` cannot name an entry of the hub's credentials file. The message never repeats
/// the value: someone may have pasted the secret itself, and errors end up in logs.
fn secret_ref_problem(reference: &str) -> Option<String> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || "-_.".contains(c);
    if reference.is_empty() {
        Some("must not be empty".into())
    } else if reference.len() > 253 || !reference.chars().all(ok_char) {
        Some(
            "must be the name of an entry in the hub's credentials file (at most 253 letters, \
             digits, '-', '_' or '.'), never the secret itself"
                .into(),
        )
    } else {
        None
    }
}

//! Helm adapter: runs `helm template` on a chart the git adapter wrote to a temporary
//! directory, with the App's values, a timeout, a bounded output, no network and a cleared
//! environment. Chart dependencies must be vendored under `charts/`: gitfleet never downloads
//! them.
//!
//! Everything that reaches helm's arguments is checked here first, whatever the hub checked:
//! a release name such as `--set-file=k=/data/identity/key.pem` would otherwise be a flag.
//!
//! The command is configurable (`--helm-command`): any `helm` 3 or 4 works, and so does
//! `scripts/helm`, the wrapper around the Helm engine of the PyPI package helm-python-sdk that
//! the tests use.

use std::path::{Path, PathBuf};
use std::time::Duration;

use gitfleet_core::yaml::Budget;

use crate::process::{self, RunError};
use crate::sync::render::{SourceFile, is_manifest_file};

#[derive(Debug, thiserror::Error)]
pub enum HelmError {
    #[error(
        "{chart}: dependency {name:?} is not vendored under charts/ (repository {repository:?}); gitfleet does not download chart dependencies: run `helm dependency build` and commit charts/"
    )]
    NotVendored {
        chart: String,
        name: String,
        repository: String,
    },
    #[error("{file}: {message}")]
    Invalid { file: String, message: String },
    #[error("values file {0:?} is not in the App path or its extra paths")]
    MissingValues(String),
    /// An argument that would not reach helm as the value it is meant to be.
    #[error("{field} {value:?} {problem}")]
    Refused {
        field: &'static str,
        value: String,
        problem: &'static str,
    },
    #[error("cannot run {command}: {source}; install helm or point --helm-command at it")]
    NotInstalled {
        command: String,
        source: std::io::Error,
    },
    #[error("helm template {0}")]
    Run(#[from] RunError),
    #[error("helm: {0}")]
    Io(#[from] std::io::Error),
}

/// One `helm template` run.
#[derive(Debug, Clone)]
pub struct TemplateRequest<'a> {
    pub command: &'a Path,
    /// Directory holding Chart.yaml (absolute).
    pub chart: &'a Path,
    /// Checked with [`release_name_problem`].
    pub release: &'a str,
    pub namespace: &'a str,
    /// Values files, in order (later ones win); absolute paths.
    pub values_files: &'a [PathBuf],
    pub timeout: Duration,
    pub max_bytes: usize,
    /// The copy of the repository: helm runs there, and it is cut out of error messages.
    pub work_dir: &'a Path,
    /// A throwaway home for helm (its cache, config and data directories), outside
    /// `work_dir` so that nothing of the repository can stand in for them.
    pub home: &'a Path,
}

pub use gitfleet_core::names::{
    MAX_HELM_RELEASE_NAME as MAX_RELEASE_NAME, helm_release_name_problem as release_name_problem,
};

/// Why `namespace` is not a Kubernetes namespace name (a DNS-1123 label).
pub fn namespace_problem(namespace: &str) -> Option<&'static str> {
    if namespace.is_empty() {
        return Some("must not be empty");
    }
    if namespace.len() > 63 {
        return Some("must be at most 63 characters");
    }
    if !namespace
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Some("must consist of lowercase letters, digits and '-'");
    }
    if namespace.starts_with('-') || namespace.ends_with('-') {
        return Some("must start and end with a letter or digit");
    }
    None
}

/// Why `file`, a values file as the App names it (relative to the App path), may not be
/// handed to helm. The git adapter's path rules (relative, no `..`, not into `.git`) apply on
/// top of this.
pub fn values_file_problem(file: &str) -> Option<&'static str> {
    if file.starts_with('-') {
        return Some("must not start with '-'");
    }
    if file.bytes().any(|b| b.is_ascii_control()) {
        return Some("must not contain control characters");
    }
    None
}

/// Refuses any argument of `request` that helm could take for something else.
fn check_arguments(request: &TemplateRequest<'_>) -> Result<(), HelmError> {
    let refused = |field, value: &str, problem| HelmError::Refused {
        field,
        value: value.to_owned(),
        problem,
    };
    if let Some(problem) = release_name_problem(request.release) {
        return Err(refused("release name", request.release, problem));
    }
    if let Some(problem) = namespace_problem(request.namespace) {
        return Err(refused("namespace", request.namespace, problem));
    }
    let relative = "must be an absolute path";
    if !request.chart.is_absolute() {
        return Err(refused(
            "chart",
            &request.chart.display().to_string(),
            relative,
        ));
    }
    if let Some(file) = request.values_files.iter().find(|f| !f.is_absolute()) {
        return Err(refused(
            "values file",
            &file.display().to_string(),
            relative,
        ));
    }
    Ok(())
}

/// Refuses a chart (and its vendored subcharts) declaring a dependency that is not under its
/// `charts/` directory, as a directory or a packaged `.tgz`.
pub fn check_vendored(chart: &Path, root: &Path, budget: &Budget) -> Result<(), HelmError> {
    let display = |p: &Path| p.strip_prefix(root).unwrap_or(p).display().to_string();
    let mut stack = vec![chart.to_owned()];
    while let Some(dir) = stack.pop() {
        let mut declared = Vec::new();
        for file in ["Chart.yaml", "requirements.yaml"] {
            let path = dir.join(file);
            let text = match std::fs::read_to_string(&path) {
                Ok(text) => text,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e.into()),
            };
            let doc = budget.document(&text).map_err(|e| HelmError::Invalid {
                file: display(&path),
                message: crate::kustomize::yaml_message(&e),
            })?;
            for dep in doc
                .get("dependencies")
                .and_then(serde_json::Value::as_array)
                .into_iter()
                .flatten()
            {
                let field = |f: &str| dep.get(f).and_then(|v| v.as_str()).unwrap_or("").to_owned();
                declared.push((field("name"), field("repository")));
            }
        }
        let charts = dir.join("charts");
        let vendored: Vec<String> = match std::fs::read_dir(&charts) {
            Ok(entries) => entries
                .filter_map(Result::ok)
                .map(|e| {
                    if e.file_type().is_ok_and(|t| t.is_dir()) {
                        stack.push(e.path());
                    }
                    e.file_name().to_string_lossy().into_owned()
                })
                .collect(),
            Err(_) => Vec::new(),
        };
        for (name, repository) in declared {
            let present = vendored.iter().any(|v| {
                *v == name
                    || v.strip_prefix(&format!("{name}-"))
                        .is_some_and(|rest| rest.ends_with(".tgz"))
            });
            if !present {
                return Err(HelmError::NotVendored {
                    chart: display(&dir.join("Chart.yaml")),
                    name,
                    repository,
                });
            }
        }
    }
    Ok(())
}

/// Runs `helm template` and returns its YAML output. Refuses, before running anything, a
/// release name, namespace or path that helm could read as something else.
pub async fn template(request: &TemplateRequest<'_>) -> Result<Vec<u8>, HelmError> {
    check_arguments(request)?;
    // Helm keeps repositories, plugins, registry logins and caches under its home directories:
    // the sandbox points them at the throwaway home, and passes nothing of the spoke's
    // environment on (see `process::sandbox_env`).
    let mut command = process::renderer_command(request.command, request.work_dir, request.home)?;
    // Flags take their values with `=`, and `--` ends the flags: nothing after it is parsed
    // as one, whatever it looks like.
    command
        .arg("template")
        .arg(format!("--namespace={}", request.namespace))
        // CRDs are part of what the App installs; test hooks are not.
        .arg("--include-crds")
        .arg("--skip-tests");
    for file in request.values_files {
        let mut flag = std::ffi::OsString::from("--values=");
        flag.push(file);
        command.arg(flag);
    }
    command.arg("--").arg(request.release).arg(request.chart);
    process::run(
        command,
        request.timeout,
        request.max_bytes,
        request.work_dir,
    )
    .await
    .map_err(|e| match e {
        RunError::Spawn { program, source } => HelmError::NotInstalled {
            command: program,
            source,
        },
        other => HelmError::Run(other),
    })
}

/// Splits `helm template` output into one source file per template, named by its path in the
/// repository (`# Source: podinfo/templates/service.yaml` of the chart at `chart_path` becomes
/// `chart_path/templates/service.yaml`), so that results and errors name the template.
/// Documents before any `# Source:` line are kept under `chart_path/Chart.yaml`.
pub fn split_sources(output: &[u8], chart_path: &str) -> Vec<SourceFile> {
    let text = String::from_utf8_lossy(output);
    let join = |rest: &str| {
        let name = if chart_path.is_empty() {
            rest.to_owned()
        } else {
            format!("{chart_path}/{rest}")
        };
        // Only manifest names render; a template named otherwise still holds manifests.
        if is_manifest_file(&name) {
            name
        } else {
            format!("{name}.yaml")
        }
    };
    let mut files: Vec<(String, String)> = Vec::new();
    let mut current = join("Chart.yaml");
    let mut document = String::new();
    let mut flush = |name: &str, document: &mut String| {
        if document.trim().is_empty() {
            document.clear();
            return;
        }
        match files.iter_mut().find(|(n, _)| n == name) {
            Some((_, content)) => {
                content.push_str("---\n");
                content.push_str(document);
            }
            None => files.push((name.to_owned(), std::mem::take(document))),
        }
        document.clear();
    };
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_end();
        if trimmed == "---" || trimmed.starts_with("--- ") {
            flush(&current, &mut document);
            continue;
        }
        if let Some(source) = trimmed.strip_prefix("# Source: ") {
            flush(&current, &mut document);
            // Drop the chart's own name: the chart lives at `chart_path`.
            let rest = source.split_once('/').map_or(source, |(_, rest)| rest);
            current = join(rest);
            continue;
        }
        document.push_str(line);
    }
    flush(&current, &mut document);
    files
        .into_iter()
        .map(|(name, content)| SourceFile::new(name, content))
        .collect()
}

#[cfg(test)]
mod tests;

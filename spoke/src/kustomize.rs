//! Kustomize adapter: runs `kustomize build` (or `kubectl kustomize`, whichever is installed)
//! on a directory the git adapter wrote, with a timeout, a bounded output, a cleared
//! environment, and no way to read anything but that directory: every field of every
//! kustomization that names a file, a directory or a URL is checked before the build runs.
//!
//! kustomize's own defaults stay in force behind these checks: gitfleet never passes
//! `--enable-alpha-plugins`, `--enable-exec`, `--enable-helm`, `--network` or
//! `--load-restrictor`, so plugins, exec functions and Helm charts do not run and files are
//! only read from under the kustomization being built.

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use gitfleet_core::yaml::{Budget, YamlError};
use serde_json::Value;

use crate::process::{self, RunError};

/// Files that make a directory a kustomization.
pub const KUSTOMIZATION_FILES: &[&str] =
    &["kustomization.yaml", "kustomization.yml", "Kustomization"];

/// Annotations that make a generator, transformer or validator config a KRM function (a
/// container, an executable or a starlark script that kustomize would run).
const FUNCTION_ANNOTATIONS: &[&str] = &["config.kubernetes.io/function", "config.k8s.io/function"];

#[derive(Debug, thiserror::Error)]
pub enum KustomizeError {
    #[error("neither kustomize nor kubectl is installed")]
    NotInstalled,
    #[error(
        "{file}: {field}: remote resource {reference:?} is not allowed; vendor it into the repository"
    )]
    Remote {
        file: String,
        field: String,
        reference: String,
    },
    #[error("{file}: {field}: {reference:?} {why}")]
    Outside {
        file: String,
        field: String,
        reference: String,
        why: &'static str,
    },
    #[error(
        "{file}: {field}: {what} is a plugin that runs a program (a KRM function); gitfleet runs no kustomize plugins"
    )]
    Plugin {
        file: String,
        field: String,
        what: String,
    },
    #[error("{file}: {message}")]
    Invalid { file: String, message: String },
    #[error("kustomize build did not finish within {0:?}")]
    Timeout(Duration),
    #[error("kustomize build wrote more than {0} bytes")]
    TooLarge(usize),
    #[error("kustomize build failed: {0}")]
    Failed(String),
    #[error("running kustomize: {0}")]
    Io(#[from] std::io::Error),
}

/// How kustomize reads what a field names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reads {
    /// A file, a directory or a URL (`resources`, `bases`, `components`, patch `path`s, ...).
    Path,
    /// The same, or a plugin config written inline (a multi-line string): `generators`,
    /// `transformers`, `validators`.
    PluginConfig,
    /// A path, or a patch written inline: `patchesStrategicMerge`.
    PathOrInline,
    /// A chart repository: any is remote (`helmCharts[].repo`).
    Repository,
}

/// A reference: its field path, the string, and how kustomize reads it.
type Reference<'a> = (String, &'a str, Reads);

/// Adds `value`, a list of strings (or, leniently, one string), as `field[i]` (or `field`).
fn strings<'a>(out: &mut Vec<Reference<'a>>, field: &str, value: Option<&'a Value>, reads: Reads) {
    match value {
        Some(Value::String(s)) => out.push((field.to_owned(), s.as_str(), reads)),
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                if let Some(s) = item.as_str() {
                    out.push((format!("{field}[{i}]"), s, reads));
                }
            }
        }
        _ => {}
    }
}

/// Every string of a kustomization that kustomize reads from disk or network.
fn references(doc: &Value) -> Vec<Reference<'_>> {
    let mut out = Vec::new();
    for field in ["resources", "bases", "components", "crds", "configurations"] {
        strings(&mut out, field, doc.get(field), Reads::Path);
    }
    for field in ["generators", "transformers", "validators"] {
        strings(&mut out, field, doc.get(field), Reads::PluginConfig);
    }
    strings(
        &mut out,
        "patchesStrategicMerge",
        doc.get("patchesStrategicMerge"),
        Reads::PathOrInline,
    );
    let items = |field: &'static str| {
        doc.get(field)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
            .map(move |(i, item)| (format!("{field}[{i}]"), item))
    };
    for field in ["patches", "patchesJson6902", "replacements"] {
        for (base, item) in items(field) {
            strings(
                &mut out,
                &format!("{base}.path"),
                item.get("path"),
                Reads::Path,
            );
        }
    }
    for field in ["configMapGenerator", "secretGenerator"] {
        for (base, item) in items(field) {
            // `files` entries are `path` or `key=path`.
            if let Some(files) = item.get("files").and_then(Value::as_array) {
                for (i, entry) in files.iter().enumerate() {
                    if let Some(entry) = entry.as_str() {
                        let path = entry.split_once('=').map_or(entry, |(_, path)| path);
                        out.push((format!("{base}.files[{i}]"), path, Reads::Path));
                    }
                }
            }
            strings(
                &mut out,
                &format!("{base}.envs"),
                item.get("envs"),
                Reads::Path,
            );
            strings(
                &mut out,
                &format!("{base}.env"),
                item.get("env"),
                Reads::Path,
            );
        }
    }
    for (base, item) in items("helmCharts") {
        strings(
            &mut out,
            &format!("{base}.repo"),
            item.get("repo"),
            Reads::Repository,
        );
        for field in ["valuesFile", "additionalValuesFiles"] {
            strings(
                &mut out,
                &format!("{base}.{field}"),
                item.get(field),
                Reads::Path,
            );
        }
    }
    for (base, item) in items("helmChartInflationGenerator") {
        strings(
            &mut out,
            &format!("{base}.chartRepoUrl"),
            item.get("chartRepoUrl"),
            Reads::Repository,
        );
        for field in ["chartHome", "valuesFrom"] {
            strings(
                &mut out,
                &format!("{base}.{field}"),
                item.get(field),
                Reads::Path,
            );
        }
    }
    if let Some(globals) = doc.get("helmGlobals") {
        for field in ["chartHome", "configHome"] {
            strings(
                &mut out,
                &format!("helmGlobals.{field}"),
                globals.get(field),
                Reads::Path,
            );
        }
    }
    if let Some(openapi) = doc.get("openapi") {
        strings(&mut out, "openapi.path", openapi.get("path"), Reads::Path);
    }
    out
}

/// Refuses kustomizations that reference anything outside the files gitfleet copied for the
/// App (`root`: the App path and its extra paths, at their paths in the repository): remote
/// resources, bases, components, generators, chart repositories (URLs, `github.com/…`,
/// `git@…`, `?ref=`), absolute paths or paths whose `..` lead out of `root`, in any field that
/// names a file; and generators, transformers or validators that are KRM functions. Walks
/// every kustomization under `root`.
pub fn check_local_only(root: &Path, budget: &Budget) -> Result<(), KustomizeError> {
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let path = entry.path();
            if entry.file_type()?.is_dir() {
                stack.push(path);
                continue;
            }
            let name = entry.file_name();
            if !KUSTOMIZATION_FILES.iter().any(|k| name.to_str() == Some(k)) {
                continue;
            }
            let file = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .display()
                .to_string();
            let text = std::fs::read_to_string(&path)?;
            let doc = budget
                .document(&text)
                .map_err(|e| KustomizeError::Invalid {
                    file: file.clone(),
                    message: yaml_message(&e),
                })?;
            let base = dir.strip_prefix(root).unwrap_or(Path::new(""));
            for (field, reference, reads) in references(&doc) {
                check_reference(root, base, &file, field, reference, reads)?;
            }
        }
    }
    Ok(())
}

/// A YAML error for a person: its line and column first where they are known.
pub(crate) fn yaml_message(error: &YamlError) -> String {
    match error {
        YamlError::Syntax {
            line: Some(line),
            column: Some(column),
            ..
        } => format!("line {line}, column {column}: {error}"),
        _ => match error.line() {
            Some(line) => format!("line {line}: {error}"),
            None => error.to_string(),
        },
    }
}

/// Checks one reference of the kustomization `file`, in directory `base` of `root`.
fn check_reference(
    root: &Path,
    base: &Path,
    file: &str,
    field: String,
    reference: &str,
    reads: Reads,
) -> Result<(), KustomizeError> {
    let remote = || KustomizeError::Remote {
        file: file.to_owned(),
        field: field.clone(),
        reference: reference.to_owned(),
    };
    let inline = reference.contains('\n');
    match reads {
        Reads::Repository if !reference.trim().is_empty() => return Err(remote()),
        Reads::Repository => return Ok(()),
        Reads::PluginConfig if inline => {
            return check_plugin_text(reference, file, &field, "the inline config");
        }
        Reads::PathOrInline if inline => return Ok(()),
        Reads::Path | Reads::PluginConfig | Reads::PathOrInline => {}
    }
    if is_remote(reference) {
        return Err(remote());
    }
    let outside = |why| KustomizeError::Outside {
        file: file.to_owned(),
        field: field.clone(),
        reference: reference.to_owned(),
        why,
    };
    let Some(resolved) = resolve_within(base, reference) else {
        return Err(if Path::new(reference).is_absolute() {
            outside("is an absolute path; name files relative to the kustomization")
        } else {
            outside("leads out of the App path and its extraPaths")
        });
    };
    if reads == Reads::PluginConfig {
        let path = root.join(&resolved);
        let what = format!("{:?}", resolved.display().to_string());
        if path.is_file() {
            let text = std::fs::read_to_string(&path)?;
            check_plugin_text(&text, file, &field, &what)?;
        } else if path.is_dir() {
            // A directory is a kustomization whose output is the plugin configs.
            let mut stack = vec![path];
            while let Some(dir) = stack.pop() {
                for entry in std::fs::read_dir(&dir)? {
                    let entry = entry?;
                    if entry.file_type()?.is_dir() {
                        stack.push(entry.path());
                    } else {
                        let text = std::fs::read_to_string(entry.path())?;
                        check_plugin_text(&text, file, &field, &what)?;
                    }
                }
            }
        }
    }
    Ok(())
}

/// Refuses plugin configs that are KRM functions. kustomize would not run them anyway (gitfleet
/// never passes `--enable-alpha-plugins`); this says so before the build, by name.
fn check_plugin_text(
    text: &str,
    file: &str,
    field: &str,
    what: &str,
) -> Result<(), KustomizeError> {
    if FUNCTION_ANNOTATIONS.iter().any(|a| text.contains(a)) {
        return Err(KustomizeError::Plugin {
            file: file.to_owned(),
            field: field.to_owned(),
            what: what.to_owned(),
        });
    }
    Ok(())
}

/// `reference` resolved against directory `base` (both relative to the root of the copy),
/// lexically; `None` when it is absolute or its `..` climb above the root.
fn resolve_within(base: &Path, reference: &str) -> Option<PathBuf> {
    let mut parts: Vec<&std::ffi::OsStr> = Vec::new();
    for component in base.components().chain(Path::new(reference).components()) {
        match component {
            Component::Normal(part) => parts.push(part),
            Component::CurDir => {}
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(parts.iter().collect())
}

fn is_remote(reference: &str) -> bool {
    reference.contains("://")
        || reference.starts_with("github.com/")
        || reference.starts_with("gitlab.com/")
        || reference.starts_with("bitbucket.org/")
        || reference.starts_with("git@")
        || reference.contains("?ref=")
        || reference.contains("//") && !reference.starts_with('/')
}

/// The command that builds a kustomization, if one is installed.
fn command() -> Option<(PathBuf, &'static str)> {
    let path = std::env::var_os("PATH")?;
    let find = |name: &str| {
        std::env::split_paths(&path)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    };
    if let Some(kustomize) = find("kustomize") {
        return Some((kustomize, "build"));
    }
    find("kubectl").map(|kubectl| (kubectl, "kustomize"))
}

/// Runs the build of `dir` (inside `root`, the copy of the repository that
/// [`check_local_only`] checked) and returns its YAML output. `home` is the build's throwaway
/// home, outside `root`.
pub async fn build(
    root: &Path,
    dir: &Path,
    home: &Path,
    timeout: Duration,
    max_bytes: usize,
) -> Result<Vec<u8>, KustomizeError> {
    let (program, subcommand) = command().ok_or(KustomizeError::NotInstalled)?;
    let mut command = process::renderer_command(&program, root, home)?;
    // `--` ends the flags, whatever the directory's name looks like.
    command.arg(subcommand).arg("--").arg(dir);
    process::run(command, timeout, max_bytes, dir)
        .await
        .map_err(|e| match e {
            RunError::Timeout(t) => KustomizeError::Timeout(t),
            RunError::TooLarge(n) => KustomizeError::TooLarge(n),
            RunError::Failed(message) => KustomizeError::Failed(message),
            RunError::Spawn { source, .. } | RunError::Io(source) => KustomizeError::Io(source),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use gitfleet_core::yaml::Limits;

    #[test]
    fn remote_references_are_recognised() {
        for remote in [
            "https://github.com/x/y//base?ref=v1",
            "github.com/kubernetes-sigs/kustomize/examples/multibases?ref=v1.0.6",
            "git@github.com:x/y.git",
            "ssh://git@host/x",
        ] {
            assert!(is_remote(remote), "{remote}");
        }
        for local in ["../../bases/backend", "deployment.yaml", "base"] {
            assert!(!is_remote(local), "{local}");
        }
    }

    /// `check_local_only` of a copy holding `app/kustomization.yaml` with `text`, and `files`.
    fn check(text: &str, files: &[(&str, &str)]) -> Result<(), KustomizeError> {
        let dir = tempfile::TempDir::new().expect("tempdir");
        for (path, content) in [("app/kustomization.yaml", text)].iter().chain(files) {
            let full = dir.path().join(path);
            std::fs::create_dir_all(full.parent().expect("parent")).expect("mkdir");
            std::fs::write(full, content).expect("write");
        }
        check_local_only(dir.path(), &Budget::new(Limits::DEFAULT))
    }

    fn refused(text: &str) -> String {
        check(text, &[]).expect_err(text).to_string()
    }

    #[test]
    fn every_field_that_names_a_file_or_url_is_checked_for_remote_references() {
        for (text, field) in [
            ("generators: [https://example.com/gen]", "generators[0]"),
            (
                "transformers: ['github.com/x/y/t?ref=v1']",
                "transformers[0]",
            ),
            ("validators: ['git@github.com:x/y.git']", "validators[0]"),
            ("components: [https://example.com/c]", "components[0]"),
            ("bases: [https://example.com/b]", "bases[0]"),
            ("crds: [https://example.com/crd.yaml]", "crds[0]"),
            (
                "configurations: [https://example.com/t.yaml]",
                "configurations[0]",
            ),
            (
                "openapi: {path: https://example.com/schema.json}",
                "openapi.path",
            ),
            (
                "patches: [{path: https://example.com/p.yaml}]",
                "patches[0].path",
            ),
            (
                "patchesJson6902: [{path: https://example.com/p.yaml}]",
                "patchesJson6902[0].path",
            ),
            (
                "patchesStrategicMerge: [https://example.com/p.yaml]",
                "patchesStrategicMerge[0]",
            ),
            (
                "replacements: [{path: https://example.com/r.yaml}]",
                "replacements[0].path",
            ),
            (
                "configMapGenerator: [{name: x, files: [k=https://example.com/f]}]",
                "configMapGenerator[0].files[0]",
            ),
            (
                "secretGenerator: [{name: x, envs: [https://example.com/e.env]}]",
                "secretGenerator[0].envs[0]",
            ),
            (
                "helmCharts: [{name: redis, repo: https://charts.example.com}]",
                "helmCharts[0].repo",
            ),
            (
                "helmCharts: [{name: redis, repo: oci://registry.example.com/charts}]",
                "helmCharts[0].repo",
            ),
            (
                "helmChartInflationGenerator: [{chartName: redis, chartRepoUrl: https://charts.example.com}]",
                "helmChartInflationGenerator[0].chartRepoUrl",
            ),
        ] {
            let err = refused(text);
            assert!(
                err.starts_with(&format!(
                    "app/kustomization.yaml: {field}: remote resource "
                )),
                "{text}: {err}"
            );
            assert!(
                err.ends_with("is not allowed; vendor it into the repository"),
                "{err}"
            );
        }
    }

    #[test]
    fn every_field_that_names_a_file_is_kept_inside_the_copy() {
        for (text, field, reference) in [
            ("resources: [../../x]", "resources[0]", "../../x"),
            ("bases: [../../x]", "bases[0]", "../../x"),
            ("components: [../../x]", "components[0]", "../../x"),
            (
                "generators: [../../gen.yaml]",
                "generators[0]",
                "../../gen.yaml",
            ),
            (
                "transformers: [../../t.yaml]",
                "transformers[0]",
                "../../t.yaml",
            ),
            (
                "validators: [../../v.yaml]",
                "validators[0]",
                "../../v.yaml",
            ),
            ("crds: [../../crd.yaml]", "crds[0]", "../../crd.yaml"),
            (
                "configurations: [../../c.yaml]",
                "configurations[0]",
                "../../c.yaml",
            ),
            (
                "openapi: {path: ../../schema.json}",
                "openapi.path",
                "../../schema.json",
            ),
            (
                "patches: [{path: ../../p.yaml}]",
                "patches[0].path",
                "../../p.yaml",
            ),
            (
                "patchesJson6902: [{path: ../../p.yaml}]",
                "patchesJson6902[0].path",
                "../../p.yaml",
            ),
            (
                "patchesStrategicMerge: [../../p.yaml]",
                "patchesStrategicMerge[0]",
                "../../p.yaml",
            ),
            (
                "replacements: [{path: ../../r.yaml}]",
                "replacements[0].path",
                "../../r.yaml",
            ),
            (
                "configMapGenerator: [{name: x, files: [key=../../data/identity/key.pem]}]",
                "configMapGenerator[0].files[0]",
                "../../data/identity/key.pem",
            ),
            (
                "configMapGenerator: [{name: x, files: [../../f]}]",
                "configMapGenerator[0].files[0]",
                "../../f",
            ),
            (
                "configMapGenerator: [{name: x, envs: [../../e.env]}]",
                "configMapGenerator[0].envs[0]",
                "../../e.env",
            ),
            (
                "configMapGenerator: [{name: x, env: ../../e.env}]",
                "configMapGenerator[0].env",
                "../../e.env",
            ),
            (
                "secretGenerator: [{name: x, files: [app/../../../f]}]",
                "secretGenerator[0].files[0]",
                "app/../../../f",
            ),
            (
                "helmCharts: [{name: x, valuesFile: ../../v.yaml}]",
                "helmCharts[0].valuesFile",
                "../../v.yaml",
            ),
            (
                "helmCharts: [{name: x, additionalValuesFiles: [../../v.yaml]}]",
                "helmCharts[0].additionalValuesFiles[0]",
                "../../v.yaml",
            ),
            (
                "helmGlobals: {chartHome: ../../charts}",
                "helmGlobals.chartHome",
                "../../charts",
            ),
        ] {
            assert_eq!(
                refused(text),
                format!(
                    "app/kustomization.yaml: {field}: {reference:?} leads out of the App path and its extraPaths"
                ),
                "{text}"
            );
        }
        assert_eq!(
            refused("secretGenerator: [{name: x, files: [key=/data/identity/key.pem]}]"),
            "app/kustomization.yaml: secretGenerator[0].files[0]: \"/data/identity/key.pem\" is an absolute path; name files relative to the kustomization"
        );
        assert!(refused("resources: [/etc]").contains("is an absolute path"));
    }

    #[test]
    fn local_references_inside_the_copy_are_accepted() {
        let text = "resources: [../base, cm.yaml, ./svc.yaml]\n\
            configMapGenerator: [{name: x, files: [key=cfg.txt, other.txt], envs: [a.env]}]\n\
            patches:\n- path: patch.yaml\n- patch: |-\n    - op: add\n      path: /metadata/x\n      value: https://example.com\n\
            patchesStrategicMerge:\n- |-\n  apiVersion: v1\n  kind: ConfigMap\n  metadata: {name: a}\n\
            generators:\n- |-\n  apiVersion: builtin\n  kind: ConfigMapGenerator\n  metadata: {name: g}\n\
            helmCharts: [{name: local, valuesFile: values.yaml}]\n\
            openapi: {path: schema.json}\n";
        check(text, &[("base/kustomization.yaml", "resources: []\n")]).expect("all local");
    }

    #[test]
    fn generators_transformers_and_validators_that_run_programs_are_refused() {
        let function = "apiVersion: example.com/v1\nkind: Evil\nmetadata:\n  name: evil\n  annotations:\n    config.kubernetes.io/function: |\n      exec:\n        path: /bin/sh\n";
        let inline = format!(
            "generators:\n- |-\n{}",
            function
                .lines()
                .map(|l| format!("  {l}\n"))
                .collect::<String>()
        );
        assert_eq!(
            check(&inline, &[]).expect_err("inline").to_string(),
            "app/kustomization.yaml: generators[0]: the inline config is a plugin that runs a program (a KRM function); gitfleet runs no kustomize plugins"
        );
        assert_eq!(
            check(
                "transformers: [evil.yaml]\n",
                &[("app/evil.yaml", function)]
            )
            .expect_err("file")
            .to_string(),
            "app/kustomization.yaml: transformers[0]: \"app/evil.yaml\" is a plugin that runs a program (a KRM function); gitfleet runs no kustomize plugins"
        );
        let legacy = function.replace("config.kubernetes.io/function", "config.k8s.io/function");
        let err = check(
            "validators: [../plugins]\n",
            &[
                ("plugins/kustomization.yaml", "resources: [v.yaml]\n"),
                ("plugins/v.yaml", &legacy),
            ],
        )
        .expect_err("directory");
        assert!(
            err.to_string()
                .contains("validators[0]: \"plugins\" is a plugin"),
            "{err}"
        );
        check("generators: [gen.yaml]\n", &[("app/gen.yaml", "apiVersion: builtin\nkind: ConfigMapGenerator\nmetadata: {name: g}\nliterals: [a=b]\n")])
            .expect("a builtin generator");
    }

    /// kustomization.yaml was parsed without any budget.
    #[test]
    fn an_alias_bomb_in_a_kustomization_is_refused() {
        let dir = tempfile::TempDir::new().expect("tempdir");
        let mut text = format!("resources: []\nx: &x \"{}\"\ny: [", "x".repeat(4096));
        text.push_str(&vec!["*x"; 100_000].join(","));
        text.push_str("]\n");
        std::fs::write(dir.path().join("kustomization.yaml"), text).expect("write");
        let err = check_local_only(dir.path(), &Budget::new(Limits::DEFAULT)).expect_err("bomb");
        assert!(
            err.to_string()
                .starts_with("kustomization.yaml: more than 10000 YAML aliases"),
            "{err}"
        );
    }

    #[test]
    fn check_local_only_finds_remote_bases_in_nested_kustomizations() {
        let dir = tempfile::TempDir::new().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("overlay/base")).expect("mkdir");
        std::fs::write(
            dir.path().join("overlay/kustomization.yaml"),
            "resources: [base]\n",
        )
        .expect("write");
        assert!(check_local_only(dir.path(), &Budget::new(Limits::DEFAULT)).is_ok());
        std::fs::write(
            dir.path().join("overlay/base/kustomization.yaml"),
            "resources:\n- https://example.com/evil.yaml\n",
        )
        .expect("write");
        let err = check_local_only(dir.path(), &Budget::new(Limits::DEFAULT)).expect_err("remote");
        assert!(
            err.to_string().contains("overlay/base/kustomization.yaml"),
            "{err}"
        );
        assert!(
            err.to_string().contains("https://example.com/evil.yaml"),
            "{err}"
        );
    }
}

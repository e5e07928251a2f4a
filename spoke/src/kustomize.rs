//! Kustomize adapter: runs `kustomize build` (or `kubectl kustomize`, whichever is installed)
//! on a directory the git adapter wrote, with a timeout, a bounded output, and no way to fetch
//! remote bases.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::process::{self, RunError};

/// Files that make a directory a kustomization.
pub const KUSTOMIZATION_FILES: &[&str] =
    &["kustomization.yaml", "kustomization.yml", "Kustomization"];

#[derive(Debug, thiserror::Error)]
pub enum KustomizeError {
    #[error("neither kustomize nor kubectl is installed")]
    NotInstalled,
    #[error("{file}: remote resource {reference:?} is not allowed; vendor it into the repository")]
    Remote { file: String, reference: String },
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

/// Refuses kustomizations that reference anything outside the repository: remote bases,
/// components or resources (URLs, `github.com/…`, `git@…`, `?ref=`). Walks every kustomization
/// under `root`.
pub fn check_local_only(root: &Path) -> Result<(), KustomizeError> {
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
            let doc: serde_yaml::Value =
                serde_yaml::from_str(&text).map_err(|e| KustomizeError::Invalid {
                    file: file.clone(),
                    message: e.to_string(),
                })?;
            for field in ["resources", "bases", "components"] {
                for item in doc
                    .get(field)
                    .and_then(serde_yaml::Value::as_sequence)
                    .into_iter()
                    .flatten()
                {
                    if let Some(reference) = item.as_str()
                        && is_remote(reference)
                    {
                        return Err(KustomizeError::Remote {
                            file,
                            reference: reference.to_owned(),
                        });
                    }
                }
            }
        }
    }
    Ok(())
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
fn command() -> Option<(PathBuf, Vec<&'static str>)> {
    let path = std::env::var_os("PATH")?;
    let find = |name: &str| {
        std::env::split_paths(&path)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    };
    if let Some(kustomize) = find("kustomize") {
        return Some((kustomize, vec!["build"]));
    }
    find("kubectl").map(|kubectl| (kubectl, vec!["kustomize"]))
}

/// Runs the build in `dir` and returns its YAML output.
pub async fn build(
    dir: &Path,
    timeout: Duration,
    max_bytes: usize,
) -> Result<Vec<u8>, KustomizeError> {
    let (program, args) = command().ok_or(KustomizeError::NotInstalled)?;
    let mut command = tokio::process::Command::new(program);
    command.args(args).arg(dir);
    // Belt and braces next to `check_local_only`: no network, no prompts.
    process::deny_network(&mut command);
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

    #[test]
    fn check_local_only_finds_remote_bases_in_nested_kustomizations() {
        let dir = tempfile::TempDir::new().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("overlay/base")).expect("mkdir");
        std::fs::write(
            dir.path().join("overlay/kustomization.yaml"),
            "resources: [base]\n",
        )
        .expect("write");
        assert!(check_local_only(dir.path()).is_ok());
        std::fs::write(
            dir.path().join("overlay/base/kustomization.yaml"),
            "resources:\n- https://example.com/evil.yaml\n",
        )
        .expect("write");
        let err = check_local_only(dir.path()).expect_err("remote");
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

//! Running a renderer (kustomize, helm) as a child process the repository cannot take over: a
//! timeout after which the child is killed, a bound on what it may write, no network, a cleared
//! environment with a throwaway home, and its standard error kept short for the Target's
//! message.

use std::ffi::OsString;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt as _};

/// Most bytes of a child's standard error kept for the error message.
const MAX_STDERR: u64 = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{program} is not installed or not executable: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("did not finish within {0:?}")]
    Timeout(Duration),
    #[error("wrote more than {0} bytes")]
    TooLarge(usize),
    /// The child failed; its standard error, trimmed.
    #[error("{0}")]
    Failed(String),
    #[error("reading its output: {0}")]
    Io(#[from] std::io::Error),
}

/// Variables a renderer keeps from the spoke's own environment: where programs are, and how to
/// read and write text. Nothing else: the spoke's environment holds its bootstrap token,
/// whatever `extraEnv` adds, `KUBECONFIG` and cloud credentials, none of which a chart or a
/// kustomization has any business seeing.
pub const INHERITED_ENV: &[&str] = &["PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ"];

/// `PATH` for a renderer when the spoke has none.
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// The whole environment of a renderer whose throwaway home is `home`: the [`INHERITED_ENV`]
/// variables of `parent`, a home, temporary, XDG and Helm directories under `home` (so that
/// nothing from the spoke's own home, such as plugins, repositories, registry logins or git
/// configuration, is read), no cluster, and no network: every proxy variable points at a closed
/// port and git may only use local files, so that a renderer that tries to fetch fails at once.
pub fn sandbox_env(
    parent: impl IntoIterator<Item = (OsString, OsString)>,
    home: &Path,
) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = parent
        .into_iter()
        .filter(|(key, _)| INHERITED_ENV.iter().any(|k| key.as_os_str() == *k))
        .collect();
    if !env.iter().any(|(key, _)| key.as_os_str() == "PATH") {
        env.push(("PATH".into(), DEFAULT_PATH.into()));
    }
    let dirs = [
        ("HOME", home.to_owned()),
        ("TMPDIR", home.join("tmp")),
        ("XDG_CONFIG_HOME", home.join(".config")),
        ("XDG_CACHE_HOME", home.join(".cache")),
        ("XDG_DATA_HOME", home.join(".local/share")),
        ("XDG_STATE_HOME", home.join(".local/state")),
        ("HELM_CONFIG_HOME", home.join(".config/helm")),
        ("HELM_CACHE_HOME", home.join(".cache/helm")),
        ("HELM_DATA_HOME", home.join(".local/share/helm")),
        (
            "KUSTOMIZE_PLUGIN_HOME",
            home.join(".config/kustomize/plugin"),
        ),
    ];
    env.extend(
        dirs.into_iter()
            .map(|(k, v)| (k.into(), v.into_os_string())),
    );
    for var in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "http_proxy",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
    ] {
        env.push((var.into(), "http://127.0.0.1:9".into()));
    }
    for (key, value) in [
        ("KUBECONFIG", "/dev/null"),
        ("GIT_TERMINAL_PROMPT", "0"),
        ("GIT_ALLOW_PROTOCOL", "file"),
        ("GIT_CONFIG_NOSYSTEM", "1"),
        // A Python-based renderer (scripts/helm) writes no bytecode into its home on every run.
        ("PYTHONDONTWRITEBYTECODE", "1"),
    ] {
        env.push((key.into(), value.into()));
    }
    env
}

/// A renderer's command: `program` in `work_dir`, with nothing of the spoke's environment but
/// [`sandbox_env`] over it, and the directories that environment names created under `home`
/// (a directory of this render's own, outside the repository's files).
pub fn renderer_command(
    program: &Path,
    work_dir: &Path,
    home: &Path,
) -> std::io::Result<tokio::process::Command> {
    let env = sandbox_env(std::env::vars_os(), home);
    for (key, value) in &env {
        let key = key.to_string_lossy();
        if key == "HOME" || key == "TMPDIR" || key.starts_with("XDG_") || key.ends_with("_HOME") {
            std::fs::create_dir_all(value)?;
        }
    }
    let mut command = tokio::process::Command::new(program);
    command.current_dir(work_dir).env_clear().envs(env);
    Ok(command)
}

/// Runs `command` and returns its standard output. The child is killed when `timeout` passes
/// or when it writes more than `max_bytes`. `work_dir` is cut out of error messages (a
/// temporary path means nothing to the person reading the Target).
pub async fn run(
    mut command: tokio::process::Command,
    timeout: Duration,
    max_bytes: usize,
    work_dir: &Path,
) -> Result<Vec<u8>, RunError> {
    let program = command
        .as_std()
        .get_program()
        .to_string_lossy()
        .into_owned();
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| RunError::Spawn { program, source })?;
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let run = async {
        let limit = u64::try_from(max_bytes)
            .unwrap_or(u64::MAX)
            .saturating_add(1);
        // Both pipes at once: a child that fills one while we wait on the other would hang.
        let (out, err) = tokio::join!(
            read_bounded(stdout, limit),
            read_bounded(stderr, MAX_STDERR)
        );
        let (out, err) = (out?, err?);
        if out.len() > max_bytes {
            return Err(RunError::TooLarge(max_bytes));
        }
        let status = child.wait().await?;
        if !status.success() {
            let message = String::from_utf8_lossy(&err)
                .trim()
                .replace(&format!("{}/", work_dir.display()), "")
                .replace(&work_dir.display().to_string(), ".");
            let message = if message.is_empty() {
                format!("exited with {status}")
            } else {
                message
            };
            return Err(RunError::Failed(message));
        }
        Ok(out)
    };
    // Dropping the future on timeout drops the child, which kills it (kill_on_drop).
    tokio::time::timeout(timeout, run)
        .await
        .map_err(|_| RunError::Timeout(timeout))?
}

async fn read_bounded<R: AsyncRead + Unpin>(
    pipe: Option<R>,
    limit: u64,
) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    if let Some(pipe) = pipe {
        pipe.take(limit).read_to_end(&mut out).await?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> tokio::process::Command {
        let mut command = tokio::process::Command::new("sh");
        command.arg("-c").arg(script);
        command
    }

    #[test]
    fn a_renderer_inherits_nothing_but_the_allow_list() {
        let parent = [
            ("PATH", "/opt/bin:/usr/bin"),
            ("LANG", "C.UTF-8"),
            ("HOME", "/root"),
            ("GITFLEET_BOOTSTRAP_TOKEN", "gft_secret"),
            ("KUBECONFIG", "/root/.kube/config"),
            ("AWS_SECRET_ACCESS_KEY", "hunter2"),
            ("HELM_PLUGINS", "/root/helm-plugins"),
            ("XDG_CONFIG_HOME", "/root/.config"),
            ("NO_PROXY", "*"),
        ]
        .map(|(k, v)| (OsString::from(k), OsString::from(v)));
        let home = Path::new("/tmp/render/home");
        let env = sandbox_env(parent, home);
        let get = |key: &str| {
            let found: Vec<&OsString> = env
                .iter()
                .filter(|(k, _)| k == key)
                .map(|(_, v)| v)
                .collect();
            assert!(found.len() <= 1, "{key} set twice");
            found.first().map(|v| v.to_string_lossy().into_owned())
        };
        assert_eq!(get("PATH").as_deref(), Some("/opt/bin:/usr/bin"));
        assert_eq!(get("LANG").as_deref(), Some("C.UTF-8"));
        for secret in [
            "GITFLEET_BOOTSTRAP_TOKEN",
            "AWS_SECRET_ACCESS_KEY",
            "HELM_PLUGINS",
            "NO_PROXY",
        ] {
            assert_eq!(get(secret), None, "{secret}");
        }
        assert_eq!(get("KUBECONFIG").as_deref(), Some("/dev/null"));
        assert_eq!(get("HOME").as_deref(), Some("/tmp/render/home"));
        for (key, value) in &env {
            let key = key.to_string_lossy();
            if key.ends_with("_HOME") || key == "TMPDIR" {
                assert!(Path::new(value).starts_with(home), "{key}={value:?}");
            }
        }
        assert_eq!(get("HTTPS_PROXY").as_deref(), Some("http://127.0.0.1:9"));
        let bare = sandbox_env(Vec::new(), home);
        assert!(bare.iter().any(|(k, v)| k == "PATH" && v == DEFAULT_PATH));
    }

    #[tokio::test]
    async fn a_renderer_process_sees_only_its_sandbox() {
        let work = tempfile::TempDir::new().expect("tempdir");
        let home = work.path().join("home");
        let mut command = renderer_command(Path::new("env"), work.path(), &home).expect("command");
        command.arg("-0");
        let out = run(command, Duration::from_secs(10), 1 << 20, work.path())
            .await
            .expect("runs");
        let seen: Vec<(String, String)> = out
            .split(|b| *b == 0)
            .filter(|v| !v.is_empty())
            .map(|v| {
                let v = String::from_utf8_lossy(v);
                let (k, v) = v.split_once('=').expect("k=v");
                (k.to_owned(), v.to_owned())
            })
            .collect();
        let expected: Vec<String> = sandbox_env(std::env::vars_os(), &home)
            .into_iter()
            .map(|(k, _)| k.to_string_lossy().into_owned())
            .collect();
        let mut keys: Vec<&String> = seen.iter().map(|(k, _)| k).collect();
        keys.sort();
        let mut want: Vec<&String> = expected.iter().collect();
        want.sort();
        assert_eq!(
            keys, want,
            "the child's environment is exactly the sandbox's"
        );
        // The test process has variables of its own (cargo's, at least): none reached the child.
        let own: Vec<String> = std::env::vars_os()
            .map(|(k, _)| k.to_string_lossy().into_owned())
            .filter(|k| !expected.contains(k))
            .collect();
        assert!(!own.is_empty(), "the test runs with variables of its own");
        let leaked: Vec<&String> = own
            .iter()
            .filter(|k| seen.iter().any(|(s, _)| s == *k))
            .collect();
        assert!(leaked.is_empty(), "{leaked:?}");
        let home_seen = seen
            .iter()
            .find(|(k, _)| k == "HOME")
            .map(|(_, v)| v.as_str());
        assert_eq!(home_seen, Some(home.to_str().expect("utf8")));
        assert!(home.join(".config/helm").is_dir() && home.join("tmp").is_dir());
    }

    #[tokio::test]
    async fn output_is_returned_and_bounded() {
        let dir = Path::new("/nonexistent");
        let out = run(sh("printf hello"), Duration::from_secs(10), 5, dir)
            .await
            .expect("runs");
        assert_eq!(out, b"hello");
        let err = run(sh("printf hello!"), Duration::from_secs(10), 5, dir)
            .await
            .expect_err("too large");
        assert!(matches!(err, RunError::TooLarge(5)), "{err}");
    }

    #[tokio::test]
    async fn a_child_that_never_ends_is_killed_at_the_timeout() {
        let err = run(
            sh("while :; do :; done"),
            Duration::from_millis(200),
            1024,
            Path::new("/x"),
        )
        .await
        .expect_err("timeout");
        assert!(matches!(err, RunError::Timeout(_)), "{err}");
    }

    #[tokio::test]
    async fn failures_carry_standard_error_without_the_work_dir() {
        let err = run(
            sh("echo 'bad thing in /tmp/work/app/x.yaml' >&2; exit 3"),
            Duration::from_secs(10),
            1024,
            Path::new("/tmp/work"),
        )
        .await
        .expect_err("fails");
        assert_eq!(err.to_string(), "bad thing in app/x.yaml");
        let err = run(
            tokio::process::Command::new("/nonexistent/helm"),
            Duration::from_secs(10),
            1024,
            Path::new("/x"),
        )
        .await
        .expect_err("missing");
        assert!(
            err.to_string()
                .starts_with("/nonexistent/helm is not installed"),
            "{err}"
        );
    }
}

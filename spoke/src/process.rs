//! Running a renderer (kustomize, helm) as a child process the repository cannot take over: a
//! timeout after which the child is killed, a bound on what it may write, no network, and its
//! standard error kept short for the Target's message.

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

/// Points every proxy variable at a closed port and disables git's prompts and transports, so
/// that a renderer that tries to reach the network fails at once instead of fetching.
pub fn deny_network(command: &mut tokio::process::Command) {
    for var in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "http_proxy",
        "https_proxy",
        "ALL_PROXY",
    ] {
        command.env(var, "http://127.0.0.1:9");
    }
    command
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_ALLOW_PROTOCOL", "file");
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

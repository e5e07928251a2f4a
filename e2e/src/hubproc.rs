//! The hub as a child process (the real `gitfleet-hub serve`), for tests that kill it with
//! SIGKILL and start it again from the same data directory; several of them, sharing one PKI
//! and an etcd store, are the replicas of a highly available hub.
//!
//! The binary is `gitfleet-hub-e2e`, built by this crate from the hub's own `main` source (see
//! `e2e/Cargo.toml`): integration tests can only locate binaries of their own crate.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use gitfleet_cli::client::AdminClient;
use gitfleet_cli::client::config::{ClientConfig, ConfigFile as _};
use tokio::process::{Child, Command};

/// How long a start may take before it is reported as failed.
const START_DEADLINE: Duration = Duration::from_secs(60);

/// A running hub process.
pub struct HubProcess {
    exe: PathBuf,
    data_dir: PathBuf,
    grpc_addr: SocketAddr,
    http_addr: SocketAddr,
    extra_args: Vec<String>,
    child: Child,
    starts: u32,
}

impl HubProcess {
    /// Starts `exe serve` on a free loopback port with `data_dir`; `extra_args` are added to
    /// every start (e.g. `--heartbeat-grace 5s`). Returns once the Admin API answers.
    pub async fn start(
        exe: &Path,
        data_dir: &Path,
        extra_args: Vec<String>,
    ) -> anyhow::Result<HubProcess> {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        let (child, grpc_addr, http_addr) = spawn(exe, data_dir, any, any, &extra_args, 1).await?;
        Ok(HubProcess {
            exe: exe.to_owned(),
            data_dir: data_dir.to_owned(),
            grpc_addr,
            http_addr,
            extra_args,
            child,
            starts: 1,
        })
    }

    /// `exe init`: a new hub's PKI in `data_dir/pki` (and its admin credential), what the
    /// replicas of one hub share.
    pub async fn init(exe: &Path, data_dir: &Path) -> anyhow::Result<()> {
        let out = Command::new(exe)
            .arg("init")
            .arg("--data-dir")
            .arg(data_dir)
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .stdin(Stdio::null())
            .output()
            .await
            .with_context(|| format!("running {} init", exe.display()))?;
        anyhow::ensure!(
            out.status.success(),
            "{} init failed ({}): {}",
            exe.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }

    /// Like [`start`](Self::start), on a data directory that first receives a copy of the PKI
    /// in `pki` (a directory like `DATA/pki` of [`init`](Self::init)): one replica of the hub
    /// whose CA that is.
    pub async fn start_with_pki(
        exe: &Path,
        data_dir: &Path,
        pki: &Path,
        extra_args: Vec<String>,
    ) -> anyhow::Result<HubProcess> {
        let to = data_dir.join("pki");
        std::fs::create_dir_all(&to).with_context(|| format!("creating {}", to.display()))?;
        for entry in std::fs::read_dir(pki).with_context(|| format!("reading {}", pki.display()))? {
            let from = entry?.path();
            if let Some(name) = from.file_name() {
                std::fs::copy(&from, to.join(name))
                    .with_context(|| format!("copying {}", from.display()))?;
            }
        }
        Self::start(exe, data_dir, extra_args).await
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    pub fn grpc_url(&self) -> String {
        format!("https://{}", self.grpc_addr)
    }

    /// The HTTP listener: `/healthz`, `/readyz`, `/metrics`.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn admin_config_path(&self) -> PathBuf {
        self.data_dir.join("admin.gitfleetconfig")
    }

    /// The hub's CA, which spokes need for their first registration.
    pub fn ca_pem(&self) -> anyhow::Result<String> {
        let path = self.data_dir.join("pki").join("ca.crt");
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
    }

    /// A fresh admin client (connections die with the process).
    pub async fn admin(&self) -> anyhow::Result<AdminClient> {
        admin_client(&self.admin_config_path()).await
    }

    /// How many times the process was started.
    pub fn starts(&self) -> u32 {
        self.starts
    }

    /// SIGKILL, and waits until the process is gone (its store's lock is then released).
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        self.child
            .start_kill()
            .context("sending SIGKILL to the hub")?;
        let status = self.child.wait().await.context("waiting for the hub")?;
        tracing::info!(?status, "hub process killed");
        Ok(())
    }

    /// Starts the process again from the same data directory, on the same addresses.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.starts += 1;
        let (child, grpc, http) = spawn(
            &self.exe,
            &self.data_dir,
            self.grpc_addr,
            self.http_addr,
            &self.extra_args,
            self.starts,
        )
        .await?;
        anyhow::ensure!(grpc == self.grpc_addr, "the hub moved to {grpc}");
        anyhow::ensure!(http == self.http_addr, "the hub's HTTP moved to {http}");
        self.child = child;
        Ok(())
    }

    /// The exit status, once the process has ended by itself (or been killed).
    pub fn exited(&mut self) -> anyhow::Result<Option<std::process::ExitStatus>> {
        self.child.try_wait().context("polling the hub process")
    }

    /// The log of the current start (`DATA.log.N`).
    pub fn log(&self) -> String {
        std::fs::read_to_string(log_path(&self.data_dir, self.starts)).unwrap_or_default()
    }

    /// GET `path` from the HTTP listener: the status code and the body.
    pub async fn http_get(&self, path: &str) -> anyhow::Result<(u16, String)> {
        http_get(self.http_addr, path).await
    }

    /// Whether this process leads the replicas on its store: its `gitfleet_hub_leader` gauge.
    pub async fn leads(&self) -> anyhow::Result<bool> {
        let (code, metrics) = self.http_get("/metrics").await?;
        anyhow::ensure!(
            code == 200,
            "/metrics of {} answered {code}",
            self.grpc_url()
        );
        let value = metrics
            .lines()
            .find_map(|l| l.strip_prefix("gitfleet_hub_leader "))
            .with_context(|| {
                format!("no gitfleet_hub_leader on /metrics of {}", self.grpc_url())
            })?;
        Ok(value.trim() == "1")
    }

    /// SIGTERM (a graceful stop), waiting for the process to end.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(pid) = self.child.id() {
            // `kill` the command: std offers no SIGTERM, and this crate allows no unsafe.
            let _ = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status();
        }
        match tokio::time::timeout(Duration::from_secs(20), self.child.wait()).await {
            Ok(status) => {
                status.context("waiting for the hub")?;
            }
            Err(_) => self.kill().await?,
        }
        Ok(())
    }
}

fn log_path(data_dir: &Path, start: u32) -> PathBuf {
    data_dir.with_extension(format!("log.{start}"))
}

/// Spawns the hub and waits until its Admin API answers; retries while an address is still
/// held (a restart on the same ports right after a kill). The gRPC and HTTP addresses bound.
async fn spawn(
    exe: &Path,
    data_dir: &Path,
    grpc_listen: SocketAddr,
    http_listen: SocketAddr,
    extra_args: &[String],
    start: u32,
) -> anyhow::Result<(Child, SocketAddr, SocketAddr)> {
    let admin_path = data_dir.join("admin.gitfleetconfig");
    let log_path = log_path(data_dir, start);
    let deadline = Instant::now() + START_DEADLINE;
    'spawn: loop {
        // The hub writes the credential once it has bound its listener: its absence means
        // "not up yet", never a stale file from the previous process.
        match std::fs::remove_file(&admin_path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {}", admin_path.display())),
        }
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        let mut child = Command::new(exe)
            .arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--grpc-listen")
            .arg(grpc_listen.to_string())
            .arg("--http-listen")
            .arg(http_listen.to_string())
            .args(extra_args)
            .env("RUST_LOG", "info")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("sharing the hub's log file")?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", exe.display()))?;
        let mut grpc_addr = None;
        loop {
            if let Some(status) = child.try_wait().context("polling the hub process")? {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                if Instant::now() < deadline && log.contains("cannot listen") {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue 'spawn;
                }
                if log.trim().is_empty() {
                    // Not even its error reached the log: the disk under it is the usual cause.
                    bail!(
                        "the hub exited at start ({status}) and wrote nothing to {}, not even its \
                         error: is the disk full?",
                        log_path.display()
                    );
                }
                bail!("the hub exited at start ({status}):\n{log}");
            }
            if grpc_addr.is_none()
                && admin_path.exists()
                && let Ok(mut admin) = admin_client(&admin_path).await
                && admin.list_clusters().await.is_ok()
            {
                let config = ClientConfig::load(&admin_path)?;
                let server = config.context(None)?.server.clone();
                let addr: SocketAddr = server
                    .trim_start_matches("https://")
                    .parse()
                    .with_context(|| format!("the hub advertises {server}"))?;
                grpc_addr = Some(addr);
            }
            // The HTTP listener is bound right after the gRPC one starts serving; the hub
            // logs both addresses once it has.
            if let Some(grpc) = grpc_addr
                && let Some(http) = started_http_addr(&log_path)?
            {
                return Ok((child, grpc, http));
            }
            if Instant::now() > deadline {
                let _ = child.start_kill();
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                bail!("the hub did not answer within {START_DEADLINE:?}:\n{log}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The HTTP address in the hub's "hub started" log line (`http=Some(127.0.0.1:PORT)`), once
/// it is there.
fn started_http_addr(log_path: &Path) -> anyhow::Result<Option<SocketAddr>> {
    let log = std::fs::read_to_string(log_path).unwrap_or_default();
    let Some(line) = log.lines().find(|l| l.contains("hub started")) else {
        return Ok(None);
    };
    let addr = line
        .split_once("http=Some(")
        .and_then(|(_, rest)| rest.split_once(')'))
        .map(|(addr, _)| addr)
        .with_context(|| format!("no HTTP address in the hub's log line {line:?}"))?;
    Ok(Some(addr.parse().with_context(|| {
        format!("the hub logged the HTTP address {addr:?}")
    })?))
}

/// GET `path` from an HTTP/1.0 server at `addr` (the hub's health and metrics listener): the
/// status code and the body.
pub async fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: hub\r\n\r\n").as_bytes())
            .await?;
        let mut text = String::new();
        s.read_to_string(&mut text).await?;
        anyhow::Ok(text)
    };
    let text = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .with_context(|| format!("GET {path} from {addr} timed out"))?
        .with_context(|| format!("GET {path} from {addr}"))?;
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("not an HTTP response from {addr}: {text}"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    Ok((code, body))
}

/// An admin client of the hub whose credential (`admin.gitfleetconfig`) is at `path`.
pub async fn admin_client(path: &Path) -> anyhow::Result<AdminClient> {
    let config = ClientConfig::load(path)?;
    let context = config.context(None)?;
    Ok(AdminClient::connect(context).await?)
}

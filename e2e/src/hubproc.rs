//! The hub as a child process (the real `gitfleet-hub serve`), for tests that kill it with
//! SIGKILL and start it again from the same data directory.
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
        let listen = SocketAddr::from(([127, 0, 0, 1], 0));
        let (child, grpc_addr) = spawn(exe, data_dir, listen, &extra_args, 1).await?;
        Ok(HubProcess {
            exe: exe.to_owned(),
            data_dir: data_dir.to_owned(),
            grpc_addr,
            extra_args,
            child,
            starts: 1,
        })
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    pub fn grpc_url(&self) -> String {
        format!("https://{}", self.grpc_addr)
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

    /// Starts the process again from the same data directory, on the same address.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.starts += 1;
        let (child, addr) = spawn(
            &self.exe,
            &self.data_dir,
            self.grpc_addr,
            &self.extra_args,
            self.starts,
        )
        .await?;
        anyhow::ensure!(addr == self.grpc_addr, "the hub moved to {addr}");
        self.child = child;
        Ok(())
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

/// Spawns the hub and waits until its Admin API answers; retries while the address is still
/// held (a restart on the same port right after a kill).
async fn spawn(
    exe: &Path,
    data_dir: &Path,
    listen: SocketAddr,
    extra_args: &[String],
    start: u32,
) -> anyhow::Result<(Child, SocketAddr)> {
    let admin_path = data_dir.join("admin.gitfleetconfig");
    let log_path = data_dir.with_extension(format!("log.{start}"));
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
            .arg(listen.to_string())
            .arg("--http-listen")
            .arg("127.0.0.1:0")
            .args(extra_args)
            .env("RUST_LOG", "info")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("sharing the hub's log file")?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", exe.display()))?;
        loop {
            if let Some(status) = child.try_wait().context("polling the hub process")? {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                if Instant::now() < deadline && log.contains("cannot listen") {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue 'spawn;
                }
                bail!("the hub exited at start ({status}):\n{log}");
            }
            if admin_path.exists()
                && let Ok(mut admin) = admin_client(&admin_path).await
                && admin.list_clusters().await.is_ok()
            {
                let config = ClientConfig::load(&admin_path)?;
                let server = config.context(None)?.server.clone();
                let addr: SocketAddr = server
                    .trim_start_matches("https://")
                    .parse()
                    .with_context(|| format!("the hub advertises {server}"))?;
                return Ok((child, addr));
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

async fn admin_client(path: &Path) -> anyhow::Result<AdminClient> {
    let config = ClientConfig::load(path)?;
    let context = config.context(None)?;
    Ok(AdminClient::connect(context).await?)
}

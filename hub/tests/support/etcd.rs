//! A real etcd for tests: one member on loopback, its data in a temporary directory, killed on
//! drop. Debian's `etcd-server` package puts it at /usr/bin/etcd (`scripts/test` installs it);
//! `GITFLEET_TEST_ETCD` names another binary. Shared by the hub's unit tests (`#[path]`) and its
//! integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How long etcd may take to become healthy.
const STARTUP: Duration = Duration::from_secs(30);
/// What etcd logs once it has joined its (one-member) cluster and serves clients.
const READY: &str = "published local member to cluster through raft";

pub struct EtcdServer {
    child: Child,
    client_url: String,
    dir: tempfile::TempDir,
}

impl EtcdServer {
    /// Starts etcd with its defaults (128 operations per transaction, 1.5 MiB per request).
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts etcd with extra flags.
    pub fn start_with(args: &[&str]) -> Self {
        Self::launch(args, None)
    }

    /// Starts etcd serving clients over TLS with `cert` and `key` (PEM), and accepting only
    /// clients with a certificate signed by `ca`.
    pub fn start_tls(ca: &Path, cert: &Path, key: &Path) -> Self {
        Self::launch(&[], Some((ca, cert, key)))
    }

    /// etcd cannot listen on port 0: free ports are picked by binding and releasing them, and
    /// another process may take one in between, so a start whose etcd exits is retried on new
    /// ports. Health is read from the plain-HTTP metrics listener, with or without TLS.
    fn launch(args: &[&str], tls: Option<(&Path, &Path, &Path)>) -> Self {
        let binary = std::env::var("GITFLEET_TEST_ETCD").unwrap_or_else(|_| "/usr/bin/etcd".into());
        let mut last_log = String::new();
        for _attempt in 0..5 {
            let dir = tempfile::tempdir().unwrap();
            let (client, peer, metrics) = (free_port(), free_port(), free_port());
            let scheme = if tls.is_some() { "https" } else { "http" };
            let client_url = format!("{scheme}://127.0.0.1:{client}");
            let peer_url = format!("http://127.0.0.1:{peer}");
            let mut tls_args: Vec<String> = Vec::new();
            if let Some((ca, cert, key)) = tls {
                for (flag, path) in [
                    ("--trusted-ca-file", ca),
                    ("--cert-file", cert),
                    ("--key-file", key),
                ] {
                    tls_args.push(flag.into());
                    tls_args.push(path.to_str().unwrap().into());
                }
                tls_args.push("--client-cert-auth".into());
            }
            let log = std::fs::File::create(dir.path().join("etcd.log")).unwrap();
            let mut child = Command::new(&binary)
                .args([
                    "--name",
                    "test",
                    "--data-dir",
                    dir.path().join("data").to_str().unwrap(),
                    "--listen-client-urls",
                    &client_url,
                    "--advertise-client-urls",
                    &client_url,
                    "--listen-peer-urls",
                    &peer_url,
                    "--initial-advertise-peer-urls",
                    &peer_url,
                    "--initial-cluster",
                    &format!("test={peer_url}"),
                    "--listen-metrics-urls",
                    &format!("http://127.0.0.1:{metrics}"),
                    "--log-level",
                    "info",
                    "--logger",
                    "zap",
                ])
                .args(&tls_args)
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| {
                    panic!("cannot start {binary} (install Debian's etcd-server): {e}")
                });
            let ready = follow_log(&mut child, log);
            let mut server = EtcdServer {
                child,
                client_url,
                dir,
            };
            if server.wait_healthy(&ready, metrics) {
                return server;
            }
            last_log =
                std::fs::read_to_string(server.dir.path().join("etcd.log")).unwrap_or_default();
        }
        panic!("etcd did not start; its last log:\n{last_log}");
    }

    /// The client URL (`http://127.0.0.1:PORT`, `https://` with TLS).
    pub fn endpoint(&self) -> String {
        self.client_url.clone()
    }

    /// Waits for etcd to say it is ready (then checks its health once); false if it exited
    /// first (a port clash).
    fn wait_healthy(&mut self, ready: &mpsc::Receiver<bool>, port: u16) -> bool {
        match ready.recv_timeout(STARTUP) {
            Ok(true) => {
                assert!(health(port), "etcd said it was ready but is not healthy");
                true
            }
            // Its log ended: it exited.
            Ok(false) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                let _ = self.child.wait();
                false
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!("etcd on port {port} not ready within {STARTUP:?}")
            }
        }
    }

    /// Freezes etcd (SIGSTOP): it holds its connections and answers nothing, as a member
    /// stalled on a slow disk would, until [`EtcdServer::resume`].
    pub fn pause(&self) {
        self.signal("STOP");
    }

    /// Lets a paused etcd go on (SIGCONT).
    pub fn resume(&self) {
        self.signal("CONT");
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -{name} of etcd failed: {status}");
    }

    /// Stops etcd at once (as a crash would), keeping its data directory.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Copies etcd's log into `log` as it comes; the receiver hears `true` once etcd is ready, or
/// `false` when the log ends before that (etcd exited).
fn follow_log(child: &mut Child, mut log: std::fs::File) -> mpsc::Receiver<bool> {
    let (tx, rx) = mpsc::channel();
    let stderr = child.stderr.take().expect("piped stderr");
    std::thread::spawn(move || {
        let mut told = false;
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let _ = writeln!(log, "{line}");
            if !told && line.contains(READY) {
                told = true;
                let _ = tx.send(true);
            }
        }
        if !told {
            let _ = tx.send(false);
        }
    });
    rx
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// etcd's /health over plain HTTP/1.0 (no HTTP client needed).
fn health(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect((Ipv4Addr::LOCALHOST, port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream
        .write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.contains("\"health\":\"true\"")
}

/// The value of an unlabelled metric `name` on etcd's plain-HTTP metrics listener.
fn metric(port: u16, name: &str) -> Option<String> {
    let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).ok()?;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .ok()?;
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    let prefix = format!("{name} ");
    answer
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(|v| v.trim().to_owned())
}

/// A real etcd cluster of several members on loopback, for the tests that kill one.
pub struct EtcdCluster {
    members: Vec<Member>,
}

struct Member {
    child: Child,
    client_url: String,
    metrics_port: u16,
    _dir: tempfile::TempDir,
}

impl EtcdCluster {
    /// Starts `n` members and waits until each has joined the cluster and is healthy.
    pub fn start(n: usize) -> Self {
        let binary = std::env::var("GITFLEET_TEST_ETCD").unwrap_or_else(|_| "/usr/bin/etcd".into());
        for _attempt in 0..3 {
            let ports: Vec<(u16, u16, u16)> = (0..n)
                .map(|_| (free_port(), free_port(), free_port()))
                .collect();
            let initial = ports
                .iter()
                .enumerate()
                .map(|(i, (_, peer, _))| format!("m{i}=http://127.0.0.1:{peer}"))
                .collect::<Vec<_>>()
                .join(",");
            let token = format!("gitfleet-test-{}", free_port());
            let mut members = Vec::new();
            let mut readies = Vec::new();
            for (i, (client, peer, metrics)) in ports.iter().enumerate() {
                let dir = tempfile::tempdir().unwrap();
                let client_url = format!("http://127.0.0.1:{client}");
                let peer_url = format!("http://127.0.0.1:{peer}");
                let log = std::fs::File::create(dir.path().join("etcd.log")).unwrap();
                let mut child = Command::new(&binary)
                    .args([
                        "--name",
                        &format!("m{i}"),
                        "--data-dir",
                        dir.path().join("data").to_str().unwrap(),
                        "--listen-client-urls",
                        &client_url,
                        "--advertise-client-urls",
                        &client_url,
                        "--listen-peer-urls",
                        &peer_url,
                        "--initial-advertise-peer-urls",
                        &peer_url,
                        "--initial-cluster",
                        &initial,
                        "--initial-cluster-token",
                        &token,
                        "--initial-cluster-state",
                        "new",
                        "--listen-metrics-urls",
                        &format!("http://127.0.0.1:{metrics}"),
                        "--logger",
                        "zap",
                    ])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap_or_else(|e| {
                        panic!("cannot start {binary} (install Debian's etcd-server): {e}")
                    });
                readies.push((follow_log(&mut child, log), *metrics));
                members.push(Member {
                    child,
                    client_url,
                    metrics_port: *metrics,
                    _dir: dir,
                });
            }
            let mut cluster = EtcdCluster { members };
            let all_ready = readies.iter().all(|(ready, metrics)| {
                matches!(ready.recv_timeout(STARTUP), Ok(true)) && health(*metrics)
            });
            if all_ready {
                return cluster;
            }
            for i in 0..n {
                cluster.kill(i);
            }
        }
        panic!("an etcd cluster of {n} members did not start");
    }

    /// Every member's client URL.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_url.clone()).collect()
    }

    /// The member that leads the cluster's raft, by its own metrics (`None` while there is
    /// none, or none answers).
    pub fn leader(&self) -> Option<usize> {
        self.members
            .iter()
            .position(|m| metric(m.metrics_port, "etcd_server_is_leader").as_deref() == Some("1"))
    }

    /// Kills member `i` at once, as a crash would.
    pub fn kill(&mut self, i: usize) {
        let _ = self.members[i].child.kill();
        let _ = self.members[i].child.wait();
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}

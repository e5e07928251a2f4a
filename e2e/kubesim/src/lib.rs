//! kubesim: a Kubernetes API simulator faithful enough for kube-rs and kubectl, with many virtual
//! clusters in one process under `/clusters/{name}/...`.
//!
//! Layout: pure decisions in [`fieldset`], [`ssa`], [`smp`], [`selector`], [`validation`],
//! [`resources`], [`discovery`], [`controllers`] and [`table`]; the per-cluster state and write paths
//! in [`store`]; the HTTP adapter in [`http`]; the listener, TLS, auth and the shared controller
//! timer in [`server`]. See docs/kubesim.md for what is simulated and what is not.

pub mod controllers;
pub mod defaults;
pub mod discovery;
pub mod fieldset;
pub mod http;
pub mod memory;
pub mod protobuf;
pub mod resources;
pub mod schema;
pub mod selector;
pub mod server;
pub mod smp;
pub mod ssa;
pub mod status;
pub mod store;
pub mod table;
pub mod validation;
pub mod yaml;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use controllers::FAIL_ANNOTATION;
use server::{ListenerSetup, Sim};

#[derive(Debug, Clone)]
pub struct KubesimConfig {
    /// Where to listen; `127.0.0.1:0` picks a free port.
    pub listen: SocketAddr,
    pub clusters: Vec<String>,
    /// How long workloads take to become ready (and PVCs to bind, Jobs to complete).
    pub ready_delay: Duration,
    /// Serve HTTPS with a generated CA (the kubeconfigs carry it).
    pub tls: bool,
    /// Require this bearer token.
    pub token: Option<String>,
    /// How often watches that allow bookmarks get one.
    pub bookmark_interval: Duration,
    /// Watch events kept per cluster; a watch from an older resourceVersion gets 410 Gone.
    pub watch_history: usize,
    /// Run an ingress controller that gives every Ingress an address
    /// ([`controllers::INGRESS_ADDRESS`]); off, Ingresses stay without one.
    pub ingress_controller: bool,
}

impl KubesimConfig {
    pub fn new(clusters: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            clusters: clusters.into_iter().map(Into::into).collect(),
            ready_delay: Duration::from_millis(500),
            tls: false,
            token: None,
            bookmark_interval: Duration::from_secs(10),
            watch_history: 256,
            ingress_controller: true,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KubesimError {
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("setting up TLS: {0}")]
    Tls(String),
}

pub struct Kubesim;

impl Kubesim {
    pub async fn start(config: KubesimConfig) -> Result<KubesimHandle, KubesimError> {
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| KubesimError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let addr = listener.local_addr().map_err(|source| KubesimError::Bind {
            addr: config.listen,
            source,
        })?;
        let tls = if config.tls {
            Some(server::make_tls().map_err(KubesimError::Tls)?)
        } else {
            None
        };
        let sim = server::start_sim(
            addr.to_string(),
            config.watch_history,
            config.bookmark_interval,
            config.token.clone(),
            config.ready_delay,
            controllers::ControllerOptions {
                ingress_controller: config.ingress_controller,
            },
        );
        for c in &config.clusters {
            sim.add_cluster(c);
        }
        let setup = ListenerSetup {
            listener,
            tls: tls.as_ref().map(|t| t.server_config.clone()),
        };
        let task = tokio::spawn(server::serve(sim.clone(), setup));
        Ok(KubesimHandle {
            sim,
            addr,
            ca: tls.map(|t| (t.ca_pem, t.ca_der)),
            token: config.token,
            task,
        })
    }
}

pub struct KubesimHandle {
    sim: Arc<Sim>,
    addr: SocketAddr,
    /// (PEM, DER) of the CA when serving TLS.
    ca: Option<(String, Vec<u8>)>,
    token: Option<String>,
    task: JoinHandle<()>,
}

impl KubesimHandle {
    /// `http(s)://127.0.0.1:PORT`
    pub fn base_url(&self) -> String {
        let scheme = if self.ca.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `base_url()/clusters/NAME`
    pub fn cluster_url(&self, cluster: &str) -> String {
        format!("{}/clusters/{cluster}", self.base_url())
    }

    /// A kube-rs client for `cluster` over in-memory connections (no sockets, no TLS): for
    /// simulating more clusters in one process than its open-file limit allows over TCP.
    pub fn in_memory_client(&self, cluster: &str) -> Result<kube::Client, kube::Error> {
        let url: ::http::Uri = format!("http://kubesim.invalid/clusters/{cluster}")
            .parse()
            .expect("a base URL with a cluster name is a valid URI");
        let mut config = kube::Config::new(url);
        if let Some(t) = &self.token {
            config.auth_info.token = Some(t.clone().into());
        }
        memory::client(self.sim.clone(), &config)
    }

    /// Adds an empty cluster (a no-op when it exists).
    pub fn add_cluster(&self, cluster: &str) {
        self.sim.add_cluster(cluster);
    }

    pub fn clusters(&self) -> Vec<String> {
        self.sim.cluster_names()
    }

    /// The CA certificate (PEM) when serving TLS.
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca.as_ref().map(|(pem, _)| pem.as_str())
    }

    /// A kubeconfig for one cluster: server URL, CA data when TLS is on, the token if any.
    pub fn kubeconfig_yaml(&self, cluster: &str) -> String {
        let ca = match &self.ca {
            Some((pem, _)) => format!(
                "    certificate-authority-data: {}\n",
                base64::engine::general_purpose::STANDARD.encode(pem.as_bytes())
            ),
            None => String::new(),
        };
        let user = match &self.token {
            Some(t) => format!("    token: {t}\n"),
            None => "    {}\n".to_string(),
        };
        let user = if self.token.is_some() {
            format!("  user:\n{user}")
        } else {
            "  user: {}\n".to_string()
        };
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: {cluster}\n  cluster:\n    server: {server}\n{ca}contexts:\n- name: {cluster}\n  context:\n    cluster: {cluster}\n    user: {cluster}\n    namespace: default\ncurrent-context: {cluster}\nusers:\n- name: {cluster}\n{user}preferences: {{}}\n",
            server = self.cluster_url(cluster),
        )
    }

    /// Writes `DIR/<cluster>.kubeconfig` for every cluster.
    pub fn write_kubeconfigs(&self, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
        std::fs::create_dir_all(dir)?;
        let mut out = Vec::new();
        for c in self.sim.cluster_names() {
            let path = dir.join(format!("{c}.kubeconfig"));
            std::fs::write(&path, self.kubeconfig_yaml(&c))?;
            out.push(path);
        }
        Ok(out)
    }

    /// A kube-rs config for an in-process client of one cluster.
    pub fn kube_config(&self, cluster: &str) -> kube::Config {
        let url: ::http::Uri = self
            .cluster_url(cluster)
            .parse()
            .expect("a base URL with a cluster name is a valid URI");
        let mut config = kube::Config::new(url);
        if let Some((_, der)) = &self.ca {
            config.root_cert = Some(vec![der.clone()]);
        }
        if let Some(t) = &self.token {
            config.auth_info.token = Some(t.clone().into());
        }
        config
    }

    /// One object as stored, or None.
    pub fn get_object(
        &self,
        cluster: &str,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<Value> {
        let c = self.sim.cluster(cluster)?;
        let state = c.lock();
        let (rt, _) = state.resolve_kind(api_version, kind)?;
        let ns = if rt.namespaced {
            namespace.unwrap_or("default")
        } else {
            ""
        };
        state.get(&rt, ns, name).ok().map(|o| o.value())
    }

    /// How many GETs of one named object the cluster served so far (lists and watches are not
    /// counted).
    pub fn object_reads(&self, cluster: &str) -> u64 {
        self.sim.cluster(cluster).map_or(0, |c| {
            c.object_reads.load(std::sync::atomic::Ordering::Relaxed)
        })
    }

    /// Every object in a cluster, for assertions.
    pub fn list_objects(&self, cluster: &str) -> Vec<Value> {
        let Some(c) = self.sim.cluster(cluster) else {
            return Vec::new();
        };
        let objects = c.lock().all_objects();
        objects.iter().map(|o| o.value()).collect()
    }

    /// Bytes of JSON held by a cluster's objects and watch history.
    pub fn stored_bytes(&self, cluster: &str) -> usize {
        self.sim
            .cluster(cluster)
            .map(|c| c.lock().stored_bytes())
            .unwrap_or(0)
    }

    pub async fn shutdown(self) {
        self.sim.cancel.cancel();
        let _ = self.task.await;
    }
}

//! The process side of kubesim: the cluster registry, the listener (plain or TLS), bearer-token
//! auth, and the one timer task that drives every simulated controller of every cluster.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info_span, warn};

use super::controllers::{ControllerOptions, Delay};
use super::http::{self as khttp, Body};
use super::status::ApiError;
use super::store::{ClusterState, PlannedJob};

pub fn now_rfc3339() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

pub struct Cluster {
    pub name: String,
    state: Mutex<ClusterState>,
    /// GETs of one named object served so far (lists and watches not counted): lets tests
    /// show what a client reads per object.
    pub object_reads: std::sync::atomic::AtomicU64,
}

impl Cluster {
    pub fn lock(&self) -> MutexGuard<'_, ClusterState> {
        // A panic while holding the lock leaves the state usable (every write is applied whole or
        // not at all), so a poisoned lock is recovered rather than propagated.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

type JobMsg = (Arc<Cluster>, PlannedJob);

pub struct Sim {
    clusters: RwLock<HashMap<String, Arc<Cluster>>>,
    pub history_cap: usize,
    pub bookmark_interval: Duration,
    pub token: Option<String>,
    /// host:port, for discovery's serverAddressByClientCIDRs.
    pub address: String,
    jobs: mpsc::UnboundedSender<JobMsg>,
    pub cancel: CancellationToken,
    /// The optional controllers every cluster runs.
    pub options: ControllerOptions,
}

impl Sim {
    pub fn cluster(&self, name: &str) -> Option<Arc<Cluster>> {
        self.clusters
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    pub fn add_cluster(&self, name: &str) {
        let mut clusters = self.clusters.write().unwrap_or_else(|p| p.into_inner());
        clusters.entry(name.to_string()).or_insert_with(|| {
            Arc::new(Cluster {
                name: name.to_string(),
                state: Mutex::new({
                    let mut state = ClusterState::new(self.history_cap, &now_rfc3339());
                    state.options = self.options;
                    state
                }),
                object_reads: std::sync::atomic::AtomicU64::new(0),
            })
        });
    }

    pub fn cluster_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .clusters
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect();
        names.sort();
        names
    }

    /// Runs a write against a cluster and hands the controller work it planned to the timer.
    pub fn write<T>(
        &self,
        cluster: &Arc<Cluster>,
        f: impl FnOnce(&mut ClusterState) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let (result, jobs) = {
            let mut state = cluster.lock();
            let r = f(&mut state);
            (r, std::mem::take(&mut state.jobs))
        };
        for job in jobs {
            // The timer only stops at shutdown, when nobody needs the work any more.
            let _ = self.jobs.send((cluster.clone(), job));
        }
        result
    }
}

struct Timed {
    at: Instant,
    seq: u64,
    msg: JobMsg,
}

impl PartialEq for Timed {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Timed {}
impl PartialOrd for Timed {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Timed {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// The single delay queue behind every simulated controller in the process.
async fn timer_loop(
    mut rx: mpsc::UnboundedReceiver<JobMsg>,
    ready_delay: Duration,
    cancel: CancellationToken,
) {
    let mut heap: BinaryHeap<Reverse<Timed>> = BinaryHeap::new();
    let mut seq = 0u64;
    let mut schedule = |heap: &mut BinaryHeap<Reverse<Timed>>, msg: JobMsg| {
        let delay = match msg.1.delay {
            Delay::Now => Duration::ZERO,
            Delay::Ready => ready_delay,
        };
        seq += 1;
        heap.push(Reverse(Timed {
            at: Instant::now() + delay,
            seq,
            msg,
        }));
    };
    loop {
        let next = heap.peek().map(|Reverse(t)| t.at);
        tokio::select! {
            msg = rx.recv() => match msg {
                Some(m) => schedule(&mut heap, m),
                None => return,
            },
            () = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            } => {
                let now = Instant::now();
                let stamp = now_rfc3339();
                while heap.peek().is_some_and(|Reverse(t)| t.at <= now) {
                    let Some(Reverse(t)) = heap.pop() else { break };
                    let (cluster, job) = t.msg;
                    let _span = info_span!("controller", cluster = %cluster.name, object = %job.name, step = ?job.step).entered();
                    let follow_up = {
                        let mut state = cluster.lock();
                        state.run_job(&job, &stamp);
                        std::mem::take(&mut state.jobs)
                    };
                    for j in follow_up {
                        schedule(&mut heap, (cluster.clone(), j));
                    }
                }
            }
            () = cancel.cancelled() => return,
        }
    }
}

/// What the listener needs besides the router.
pub struct ListenerSetup {
    pub listener: TcpListener,
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

pub fn start_sim(
    address: String,
    history_cap: usize,
    bookmark_interval: Duration,
    token: Option<String>,
    ready_delay: Duration,
    options: ControllerOptions,
) -> Arc<Sim> {
    let (tx, rx) = mpsc::unbounded_channel();
    let cancel = CancellationToken::new();
    let sim = Arc::new(Sim {
        clusters: RwLock::new(HashMap::new()),
        history_cap,
        bookmark_interval,
        token,
        address,
        jobs: tx,
        cancel: cancel.clone(),
        options,
    });
    tokio::spawn(timer_loop(rx, ready_delay, cancel).instrument(info_span!("kubesim_controllers")));
    sim
}

/// Accepts connections until cancelled.
pub async fn serve(sim: Arc<Sim>, setup: ListenerSetup) {
    let acceptor = setup.tls.map(tokio_rustls::TlsAcceptor::from);
    loop {
        let accepted = tokio::select! {
            a = setup.listener.accept() => a,
            () = sim.cancel.cancelled() => return,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                warn!(error = %e, "accept failed");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let sim = sim.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let cancel = sim.cancel.clone();
            let service = service(sim);
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let result = match acceptor {
                Some(acceptor) => match acceptor.accept(stream).await {
                    Ok(tls) => {
                        tokio::select! {
                            r = builder.serve_connection(TokioIo::new(tls), service) => r,
                            () = cancel.cancelled() => Ok(()),
                        }
                    }
                    Err(e) => {
                        debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                },
                None => tokio::select! {
                    r = builder.serve_connection(TokioIo::new(stream), service) => r,
                    () = cancel.cancelled() => Ok(()),
                },
            };
            if let Err(e) = result {
                debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
}

fn service(
    sim: Arc<Sim>,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = Response<Body>,
    Error = std::convert::Infallible,
    Future = impl Future<Output = Result<Response<Body>, std::convert::Infallible>> + Send,
> + Clone
+ Send {
    hyper::service::service_fn(move |req| {
        let sim = sim.clone();
        async move { Ok::<_, std::convert::Infallible>(route(sim, req).await) }
    })
}

/// Serves one in-memory connection (plain HTTP) until it closes or the simulator stops.
pub async fn serve_in_memory(sim: Arc<Sim>, io: tokio::io::DuplexStream) {
    let cancel = sim.cancel.clone();
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    tokio::select! {
        r = builder.serve_connection(TokioIo::new(io), service(sim)) => {
            if let Err(e) = r {
                debug!(error = %e, "in-memory connection ended with an error");
            }
        }
        () = cancel.cancelled() => {}
    }
}

/// Splits `/clusters/{name}/rest` and dispatches.
async fn route(sim: Arc<Sim>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let Some(rest) = path.strip_prefix("/clusters/") else {
        if path == "/healthz" || path == "/livez" || path == "/readyz" {
            return Response::new(http_body_util::BodyExt::boxed(http_body_util::Full::new(
                bytes::Bytes::from_static(b"ok"),
            )));
        }
        return khttp::error_response(&ApiError::path_not_found());
    };
    let (name, tail) = match rest.split_once('/') {
        Some((n, t)) => (n, format!("/{t}")),
        None => (rest, "/".to_string()),
    };
    if let Some(token) = &sim.token {
        let presented = req
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if presented != Some(token.as_str()) {
            return khttp::error_response(&ApiError::unauthorized());
        }
    }
    let Some(cluster) = sim.cluster(name) else {
        return khttp::error_response(&ApiError::path_not_found());
    };
    let prefix = format!("/clusters/{name}");
    let span = info_span!("kubesim_request", cluster = %name, method = %req.method(), path = %tail);
    khttp::handle(sim.clone(), cluster, prefix, tail, req)
        .instrument(span)
        .await
}

/// A self-signed CA and a server certificate for 127.0.0.1 and localhost.
pub struct TlsMaterial {
    pub ca_pem: String,
    pub ca_der: Vec<u8>,
    pub server_config: Arc<rustls::ServerConfig>,
}

pub fn make_tls() -> Result<TlsMaterial, String> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
    let err = |e: rcgen::Error| format!("generating certificates: {e}");
    let ca_key = KeyPair::generate().map_err(err)?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "kubesim-ca");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).map_err(err)?;
    let key = KeyPair::generate().map_err(err)?;
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .map_err(err)?;
    params
        .distinguished_name
        .push(DnType::CommonName, "kubesim");
    let cert = params.signed_by(&key, &ca).map_err(err)?;
    let key_der = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der())
        .map_err(|e| format!("server key: {e}"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS config: {e}"))?
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone(), ca.der().clone()], key_der)
        .map_err(|e| format!("TLS config: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsMaterial {
        ca_pem: ca.pem(),
        ca_der: ca.der().to_vec(),
        server_config: Arc::new(config),
    })
}

pub fn bound_address(listener: &TcpListener) -> std::io::Result<SocketAddr> {
    listener.local_addr()
}

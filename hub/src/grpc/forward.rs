//! Followers hand every call but spoke sessions and reads that need no leader (`Watch`,
//! `Admin/DiffLive`) to the leading replica.
//!
//! Only the leader writes desired state, resources, rollouts, tokens and registrations (one
//! writer for each, see docs/ha.md). A follower serves the spokes connected to it
//! (`Link/Session`), the live reads (`Watch`, read from its store, which follows the others'
//! writes) and `DiffLive` (through its spokes, or the replica a cluster's spoke is linked to,
//! see [`ReplicaLinks`]) itself, and passes every other call, as the HTTP/2 request it is
//! (streams included), to the leader at the URL the election names. It dials the leader with
//! mutual TLS: the hub's CA as the only root, the leader's certificate checked against the
//! hub's server name (not the address in the URL), and a short-lived certificate of its own
//! naming it a replica ([`Pki::issue_replica`]). Two headers carry the caller along: the leaf
//! certificate the follower verified (DER, base64) and the address it connected from.
//!
//! The leader believes those headers only from a replica's certificate, which the TLS layer
//! verified against the CA and which no cluster or user certificate can pass for (the
//! `spiffe://gitfleet/replica/` URI, see `pki`). From anyone else they are dropped before any
//! handler runs, so no caller can speak for another. A replica's certificate with no forwarded
//! certificate speaks for nobody: calls that need one are unauthenticated.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use futures::future::BoxFuture;
use gitfleet_support::error_chain;
use http::{HeaderMap, HeaderValue};
use hyper_util::client::legacy::connect::HttpConnector;
use tonic::Status;
use tonic::body::Body;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::transport::{Certificate, CertificateDer, Channel, ClientTlsConfig, Endpoint, Identity};
use tower::{Layer, Service, ServiceExt as _};
use tracing::{debug, warn};

use crate::leadership::{Leadership, LeadershipWatch};
use crate::pki::{Pki, REPLICA_CERT_VALIDITY, is_replica};

#[cfg(test)]
mod tests;

/// Every header a replica adds to a call it hands over starts with this; nobody else's reach a
/// handler.
pub const FORWARDED_PREFIX: &str = "x-gitfleet-forwarded-";
/// The caller's verified leaf certificate, DER, base64 (standard alphabet, padded).
pub const FORWARDED_CLIENT_CERT: &str = "x-gitfleet-forwarded-client-cert";
/// The address the caller connected from, `ip:port`: the registration rate limit's key.
pub const FORWARDED_FOR: &str = "x-gitfleet-forwarded-for";
/// A call a follower serves itself: a spoke's session.
pub const SESSION_PATH: &str = "/gitfleet.v1.Link/Session";
/// The other calls a follower serves itself: the live reads (`Watch`). Its store follows
/// every other replica's writes and its engine tells its streams of them (`engine::replicas`),
/// so a stream here sees what one at the leader would; and it keeps going when the leader goes,
/// without holding one of the (at most 100) streams of this replica's connection to it.
pub const WATCH_PREFIX: &str = "/gitfleet.v1.Watch/";
/// `gitfleet diff --live`, a read every replica answers: it asks the spokes linked to it, and
/// hands each cluster linked to another replica to that replica ([`ReplicaLinks`]).
pub const DIFF_LIVE_PATH: &str = "/gitfleet.v1.Admin/DiffLive";

/// Whether a follower serves the call at `path` itself rather than handing it to the leader.
fn served_by_followers(path: &str) -> bool {
    path == SESSION_PATH || path == DIFF_LIVE_PATH || path.starts_with(WATCH_PREFIX)
}

/// What a follower answers while no replica leads.
pub const NO_LEADER: &str = "no hub replica leads right now (an election is under way); retry";

/// A dead leader must not hold a caller for long: the election names another soon.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// The channel to the leader, and the certificate it presents, are made again after this: well
/// before the certificate expires.
const RENEW_AFTER: Duration = Duration::from_secs(REPLICA_CERT_VALIDITY.as_secs() / 2);

/// The caller of a call another replica handed over, as that replica verified it. Only
/// [`Forward`] inserts it into a request, and only when the TLS peer is a replica; handlers take
/// the caller from it (`grpc::peer`, `grpc::remote_addr`).
#[derive(Debug, Clone, Default)]
pub struct Forwarded {
    /// The caller's leaf certificate; `None`: it presented none.
    pub client_cert: Option<CertificateDer<'static>>,
    pub remote_addr: Option<SocketAddr>,
}

/// Puts [`Forward`] in front of the hub's gRPC services.
#[derive(Debug, Clone)]
pub struct ForwardLayer {
    leadership: LeadershipWatch,
    leader: Arc<LeaderLink>,
}

impl ForwardLayer {
    /// `server_name`: the name the leader's certificate is checked against (every replica
    /// serves the one server certificate of the shared PKI).
    pub fn new(leadership: LeadershipWatch, pki: Arc<Pki>, server_name: String) -> Self {
        Self {
            leadership,
            leader: Arc::new(LeaderLink {
                pki,
                server_name,
                current: Mutex::new(None),
            }),
        }
    }
}

impl<S> Layer<S> for ForwardLayer {
    type Service = Forward<S>;

    fn layer(&self, inner: S) -> Forward<S> {
        Forward {
            inner,
            leadership: self.leadership.clone(),
            leader: Arc::clone(&self.leader),
        }
    }
}

/// Serves a call here, or hands it to the leading replica; see the module.
#[derive(Debug, Clone)]
pub struct Forward<S> {
    inner: S,
    leadership: LeadershipWatch,
    leader: Arc<LeaderLink>,
}

impl<S> Service<http::Request<Body>> for Forward<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<http::Response<Body>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        let headers = take_forwarded(request.headers_mut());
        let (leaf, remote) = tls_peer(&request);
        let from_replica = leaf.as_ref().is_some_and(|cert| is_replica(cert));
        if from_replica {
            match headers.parse() {
                Ok(forwarded) => {
                    request.extensions_mut().insert(forwarded);
                }
                Err(status) => {
                    warn!(?remote, error = %status.message(), "a replica handed over a call with bad headers");
                    return answer(status);
                }
            }
        } else if !headers.is_empty() {
            warn!(
                ?remote,
                "forwarded-caller headers from a caller that is not a hub replica; ignored"
            );
        }

        let leadership = self.leadership.borrow().clone();
        let leader_url = match leadership {
            Leadership::Alone | Leadership::Leader => None,
            Leadership::Follower { .. } if served_by_followers(request.uri().path()) => None,
            Leadership::Follower { leader_url: None } => {
                return answer(Status::unavailable(NO_LEADER));
            }
            // Handed over once already: passing it on could send it round in a circle.
            Leadership::Follower {
                leader_url: Some(_),
            } if from_replica => {
                return answer(Status::unavailable(
                    "a replica handed this call to one that does not lead either (the \
                     replicas have not yet agreed on the new leader); retry",
                ));
            }
            Leadership::Follower {
                leader_url: Some(url),
            } => Some(url),
        };
        let Some(url) = leader_url else {
            // The clone keeps readiness with the service that was polled (tower's rule).
            let clone = self.inner.clone();
            let mut inner = std::mem::replace(&mut self.inner, clone);
            return Box::pin(inner.call(request));
        };

        let channel = match self.leader.channel(&url) {
            Ok(channel) => channel,
            Err(problem) => return answer(unreachable(&url, &problem)),
        };
        debug!(path = request.uri().path(), leader = %url, "handing the call to the leading replica");
        let request = handed_over(request, leaf, remote);
        Box::pin(async move {
            match channel.oneshot(request).await {
                Ok(response) => Ok(response),
                Err(error) => {
                    let problem = error_chain(&error);
                    warn!(leader = %url, error = %problem, "cannot hand a call to the leading replica");
                    Ok(unreachable(&url, &problem).into_http())
                }
            }
        })
    }
}

fn answer<E: Send + 'static>(
    status: Status,
) -> BoxFuture<'static, Result<http::Response<Body>, E>> {
    Box::pin(std::future::ready(Ok(status.into_http())))
}

fn unreachable(url: &str, problem: &str) -> Status {
    Status::unavailable(format!(
        "cannot reach the leading replica at {url}: {problem}"
    ))
}

/// The leaf certificate the TLS layer verified (if the caller presented one) and the address
/// it connected from.
fn tls_peer(
    request: &http::Request<Body>,
) -> (Option<CertificateDer<'static>>, Option<SocketAddr>) {
    let extensions = request.extensions();
    match extensions.get::<TlsConnectInfo<TcpConnectInfo>>() {
        Some(tls) => (
            tls.peer_certs().and_then(|certs| certs.first().cloned()),
            tls.get_ref().remote_addr(),
        ),
        None => (
            None,
            extensions
                .get::<TcpConnectInfo>()
                .and_then(TcpConnectInfo::remote_addr),
        ),
    }
}

/// The request as the leader gets it: the caller's headers and body, and who the caller is.
fn handed_over(
    request: http::Request<Body>,
    leaf: Option<CertificateDer<'static>>,
    remote: Option<SocketAddr>,
) -> http::Request<Body> {
    let (parts, body) = request.into_parts();
    let mut out = http::Request::new(body);
    *out.method_mut() = parts.method;
    *out.uri_mut() = parts.uri;
    *out.version_mut() = http::Version::HTTP_2;
    *out.headers_mut() = parts.headers;
    add_forwarded(out.headers_mut(), leaf.as_deref(), remote);
    out
}

/// Adds the forwarded-caller headers (the caller's own were taken out before).
fn add_forwarded(headers: &mut HeaderMap, leaf: Option<&[u8]>, remote: Option<SocketAddr>) {
    if let Some(leaf) = leaf
        && let Ok(value) = HeaderValue::try_from(BASE64.encode(leaf))
    {
        headers.insert(FORWARDED_CLIENT_CERT, value);
    }
    if let Some(remote) = remote
        && let Ok(value) = HeaderValue::try_from(remote.to_string())
    {
        headers.insert(FORWARDED_FOR, value);
    }
}

/// The forwarded-caller headers a request came with, taken out of it.
#[derive(Debug, Default)]
struct ForwardedHeaders {
    client_cert: Vec<HeaderValue>,
    remote: Vec<HeaderValue>,
    /// Any header with the prefix, known or not.
    any: bool,
}

/// Removes every header named `x-gitfleet-forwarded-*` (header names are lower case on the
/// wire and in `http`).
fn take_forwarded(headers: &mut HeaderMap) -> ForwardedHeaders {
    let names: Vec<_> = headers
        .keys()
        .filter(|name| name.as_str().starts_with(FORWARDED_PREFIX))
        .cloned()
        .collect();
    let mut taken = ForwardedHeaders::default();
    for name in names {
        taken.any = true;
        let values: Vec<HeaderValue> = headers.get_all(&name).iter().cloned().collect();
        headers.remove(&name);
        match name.as_str() {
            FORWARDED_CLIENT_CERT => taken.client_cert = values,
            FORWARDED_FOR => taken.remote = values,
            _ => {}
        }
    }
    taken
}

impl ForwardedHeaders {
    fn is_empty(&self) -> bool {
        !self.any
    }

    /// The caller a replica names, or INVALID_ARGUMENT naming the header it got wrong.
    fn parse(self) -> Result<Forwarded, Status> {
        let one = |name: &str, values: Vec<HeaderValue>| -> Result<Option<String>, Status> {
            let bad = |why: &str| {
                Status::invalid_argument(format!(
                    "header {name} of a call handed over by a hub replica {why}"
                ))
            };
            match values.as_slice() {
                [] => Ok(None),
                [value] => value
                    .to_str()
                    .map(|v| Some(v.to_owned()))
                    .map_err(|_| bad("is not text")),
                _ => Err(bad("appears more than once")),
            }
        };
        let client_cert = match one(FORWARDED_CLIENT_CERT, self.client_cert)? {
            None => None,
            Some(text) => Some(CertificateDer::from(BASE64.decode(text).map_err(|e| {
                Status::invalid_argument(format!(
                    "header {FORWARDED_CLIENT_CERT} of a call handed over by a hub replica is not base64: {e}"
                ))
            })?)),
        };
        let remote_addr = match one(FORWARDED_FOR, self.remote)? {
            None => None,
            Some(text) => Some(text.parse::<SocketAddr>().map_err(|e| {
                Status::invalid_argument(format!(
                    "header {FORWARDED_FOR} of a call handed over by a hub replica is not an address ({text:?}): {e}"
                ))
            })?),
        };
        Ok(Forwarded {
            client_cert,
            remote_addr,
        })
    }
}

/// Channels to other replicas by URL, each presenting a replica certificate, for the calls a
/// replica makes of another on a caller's behalf (`diff --live` of a cluster linked there).
#[derive(Debug)]
pub struct ReplicaLinks {
    pki: Arc<Pki>,
    server_name: String,
    links: Mutex<std::collections::HashMap<String, Arc<LeaderLink>>>,
}

impl ReplicaLinks {
    /// `server_name`: the name every replica's certificate is checked against.
    pub fn new(pki: Arc<Pki>, server_name: String) -> Self {
        Self {
            pki,
            server_name,
            links: Mutex::default(),
        }
    }

    /// The channel to the replica at `url`, made on first use and again before its
    /// certificate grows old.
    pub fn channel(&self, url: &str) -> Result<Channel, String> {
        let link = {
            let mut links = self.links.lock().unwrap_or_else(PoisonError::into_inner);
            Arc::clone(links.entry(url.to_owned()).or_insert_with(|| {
                Arc::new(LeaderLink {
                    pki: Arc::clone(&self.pki),
                    server_name: self.server_name.clone(),
                    current: Mutex::new(None),
                })
            }))
        };
        link.channel(url)
    }
}

/// `request`, carrying `caller` (the leaf certificate of the user a replica calls another on
/// behalf of) as [`Forward`] reads it at the other end.
pub fn on_behalf_of<T>(message: T, caller: &[u8]) -> Result<tonic::Request<T>, Status> {
    let mut request = tonic::Request::new(message);
    let value = tonic::metadata::MetadataValue::try_from(BASE64.encode(caller))
        .map_err(|e| Status::internal(format!("cannot carry the caller's certificate: {e}")))?;
    request.metadata_mut().insert(FORWARDED_CLIENT_CERT, value);
    Ok(request)
}

/// The channel to the leading replica, made for one URL and remade when the election names
/// another (or the certificate it presents grows old).
#[derive(Debug)]
struct LeaderLink {
    pki: Arc<Pki>,
    server_name: String,
    current: Mutex<Option<LeaderChannel>>,
}

#[derive(Debug)]
struct LeaderChannel {
    url: String,
    channel: Channel,
    made: Instant,
}

impl LeaderLink {
    fn channel(&self, url: &str) -> Result<Channel, String> {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(link) = current.as_ref()
            && link.url == url
            && link.made.elapsed() < RENEW_AFTER
        {
            return Ok(link.channel.clone());
        }
        // Calls under way on the old channel finish on it; it closes when they have.
        let channel = self.connect(url)?;
        *current = Some(LeaderChannel {
            url: url.to_owned(),
            channel: channel.clone(),
            made: Instant::now(),
        });
        Ok(channel)
    }

    /// A channel that connects on first use, so a leader that is down costs each call one
    /// connect attempt (bounded) and an UNAVAILABLE answer, not a stuck follower.
    ///
    /// The connector is given here, not left to tonic, because only then does the connect
    /// timeout cover the TLS handshake too: a leader that accepts connections and then says
    /// nothing (a frozen process) would otherwise hold every call handed to it.
    fn connect(&self, url: &str) -> Result<Channel, String> {
        let replica = self
            .pki
            .issue_replica(REPLICA_CERT_VALIDITY)
            .map_err(|e| format!("cannot issue this replica's certificate: {e}"))?;
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(self.pki.ca_pem()))
            .identity(Identity::from_pem(replica.cert_pem, replica.key_pem))
            .domain_name(self.server_name.clone());
        let endpoint = Endpoint::from_shared(url.to_owned())
            .map_err(|e| format!("the URL is not valid: {}", error_chain(&e)))?
            .connect_timeout(CONNECT_TIMEOUT)
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true)
            .tls_config(tls)
            .map_err(|e| error_chain(&e))?;
        let mut tcp = HttpConnector::new();
        // The scheme is https: TLS is added above this connector.
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        Ok(endpoint.connect_with_connector_lazy(tcp))
    }
}

//! HTTP GETs of Helm chart repositories and OCI registries, for the hub (index.yaml, tag
//! lists, manifests) and the spoke (chart archives), and the hub's notification POSTs
//! ([`Fetcher::post`]), with the same rules on both sides:
//!
//! - a timeout over the whole request and a cap on the body (checked against Content-Length
//!   first, then while reading);
//! - `https://`, or `http://` to a loopback host only;
//! - no connection to an address `gitfleet_core::charts::address_problem` refuses: link-local
//!   (cloud metadata services), unspecified, multicast, and loopback unless the policy allows
//!   it. Names are resolved here and only the allowed addresses are dialled, so a name that
//!   resolves to 169.254.169.254 is refused too; the same holds for every redirect;
//! - at most [`MAX_REDIRECTS`] redirects, each checked like the first URL;
//! - a basic credential only to URLs its `urls:` prefixes cover (never over `http://`), and
//!   only to the origin of the first request; an OCI registry's `WWW-Authenticate: Bearer`
//!   challenge is answered by fetching a token from its realm (with the basic credential when
//!   the realm is covered too) and trying once more.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use gitfleet_core::charts::{address_problem, host_problem, is_loopback_host};
use gitfleet_core::credential_scope;
use http::{HeaderMap, HeaderValue, Request, StatusCode, header};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::rt::TokioExecutor;

/// Most redirects followed for one GET.
pub const MAX_REDIRECTS: usize = 5;
/// Most bytes of a token response read.
const MAX_TOKEN_BYTES: usize = 64 * 1024;

/// Why a GET failed. Every message names the URL (without user information).
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{url}: {problem}")]
    Refused { url: String, problem: String },
    #[error("{url}: {message}")]
    Connect { url: String, message: String },
    #[error("{url}: HTTP {status}{hint}")]
    Status {
        url: String,
        status: u16,
        hint: &'static str,
    },
    #[error("{url}: larger than the limit of {limit} bytes")]
    TooLarge { url: String, limit: usize },
    #[error("{url}: no answer within {timeout:?}")]
    Timeout { url: String, timeout: Duration },
    #[error("{url}: cannot set up TLS: {message}")]
    Tls { url: String, message: String },
}

/// What the client may contact.
#[derive(Debug, Clone)]
pub struct FetchPolicy {
    /// Whether loopback addresses may be dialled (tests serving charts on 127.0.0.1; off in
    /// production: a Git writer could otherwise make the hub GET its own local services).
    pub allow_loopback: bool,
    /// Longest one GET may take, redirects and body included.
    pub timeout: Duration,
    /// Certificate authorities trusted besides the system's (a private chart repository
    /// behind a company CA): `--chart-ca-file` of the hub and the spoke.
    pub extra_roots: Vec<rustls::pki_types::CertificateDer<'static>>,
}

impl Default for FetchPolicy {
    fn default() -> Self {
        Self {
            allow_loopback: false,
            timeout: Duration::from_secs(30),
            extra_roots: Vec::new(),
        }
    }
}

impl FetchPolicy {
    /// Trusts the certificates of the PEM bundle `pem` as well (read from `source`, which the
    /// error names): at least one certificate, every block a certificate.
    pub fn trust_pem(&mut self, pem: &[u8], source: &str) -> Result<(), String> {
        use rustls::pki_types::pem::PemObject as _;
        let mut found = 0;
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| format!("{source}: not a PEM certificate bundle: {e}"))?;
            self.extra_roots.push(cert);
            found += 1;
        }
        if found == 0 {
            return Err(format!("{source}: holds no PEM certificate"));
        }
        Ok(())
    }
}

/// A username and password for chart repositories and registries, and where they may go.
#[derive(Clone, PartialEq, Eq)]
pub struct BasicAuth {
    pub username: String,
    pub password: String,
    /// `https://` prefixes (see `gitfleet_core::credential_scope`).
    pub urls: Vec<String>,
}

impl std::fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BasicAuth")
            .field("username", &self.username)
            .field("urls", &self.urls)
            .finish_non_exhaustive()
    }
}

impl BasicAuth {
    fn header(&self) -> Option<HeaderValue> {
        use base64::Engine as _;
        let token = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", self.username, self.password));
        let mut value = HeaderValue::from_str(&format!("Basic {token}")).ok()?;
        value.set_sensitive(true);
        Some(value)
    }
}

/// A GET's answer.
#[derive(Debug)]
pub struct Fetched {
    pub body: Bytes,
    pub headers: HeaderMap,
    /// The URL that answered (after redirects).
    pub url: String,
}

type Connector = HttpsConnector<HttpConnector<Resolver>>;

/// The HTTP client; cheap to clone.
#[derive(Clone)]
pub struct Fetcher {
    client: Client<Connector, Full<Bytes>>,
    policy: FetchPolicy,
}

impl std::fmt::Debug for Fetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetcher")
            .field("policy", &self.policy)
            .finish()
    }
}

/// Resolves names, keeping only the addresses the policy allows.
#[derive(Clone)]
struct Resolver {
    allow_loopback: bool,
}

impl tower::Service<Name> for Resolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = std::io::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let allow_loopback = self.allow_loopback;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refused = None;
            let allowed: Vec<SocketAddr> = found
                .into_iter()
                .filter(|a| match address_problem(a.ip(), allow_loopback) {
                    None => true,
                    Some(p) => {
                        refused = Some(format!("{host} resolves to {} which {p}", a.ip()));
                        false
                    }
                })
                .collect();
            if allowed.is_empty() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    refused.unwrap_or_else(|| format!("{host} resolves to no address")),
                ));
            }
            Ok(allowed.into_iter())
        })
    }
}

impl Fetcher {
    /// A client trusting the system's root certificates.
    pub fn new(policy: FetchPolicy) -> Result<Fetcher, FetchError> {
        let tls_error = |message: String| FetchError::Tls {
            url: String::new(),
            message,
        };
        let mut roots = rustls::RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        roots.add_parsable_certificates(native.certs);
        for cert in &policy.extra_roots {
            roots
                .add(cert.clone())
                .map_err(|e| tls_error(format!("a certificate of the CA bundle: {e}")))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_error(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut http = HttpConnector::new_with_resolver(Resolver {
            allow_loopback: policy.allow_loopback,
        });
        http.enforce_http(false);
        http.set_connect_timeout(Some(policy.timeout));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new()).build(https);
        Ok(Fetcher { client, policy })
    }

    pub fn policy(&self) -> &FetchPolicy {
        &self.policy
    }

    /// GETs `url` (at most `max_bytes` of body), following redirects, with `accept` as the
    /// Accept header and `auth` where it may go.
    pub async fn get(
        &self,
        url: &str,
        accept: Option<&str>,
        max_bytes: usize,
        auth: Option<&BasicAuth>,
    ) -> Result<Fetched, FetchError> {
        let timeout = self.policy.timeout;
        match tokio::time::timeout(timeout, self.get_inner(url, accept, max_bytes, auth)).await {
            Ok(r) => r,
            Err(_) => Err(FetchError::Timeout {
                url: credential_scope::redacted(url),
                timeout,
            }),
        }
    }

    async fn get_inner(
        &self,
        url: &str,
        accept: Option<&str>,
        max_bytes: usize,
        auth: Option<&BasicAuth>,
    ) -> Result<Fetched, FetchError> {
        let origin = origin_of(url);
        let mut current = url.to_owned();
        let mut bearer: Option<HeaderValue> = None;
        let mut challenged = false;
        let mut redirects = 0;
        loop {
            let uri = self.check(&current)?;
            let same_origin = origin_of(&current) == origin;
            let authorization = if !same_origin {
                None
            } else if let Some(b) = &bearer {
                Some(b.clone())
            } else {
                auth.filter(|a| credential_scope::allows(&a.urls, &current))
                    .and_then(BasicAuth::header)
            };
            let response = self.send(&current, uri, accept, authorization).await?;
            let status = response.status();
            let redacted = credential_scope::redacted(&current);
            if status.is_redirection() {
                redirects += 1;
                if redirects > MAX_REDIRECTS {
                    return Err(FetchError::Refused {
                        url: redacted,
                        problem: format!("more than {MAX_REDIRECTS} redirects"),
                    });
                }
                let location = response
                    .headers()
                    .get(header::LOCATION)
                    .and_then(|l| l.to_str().ok())
                    .ok_or_else(|| FetchError::Refused {
                        url: redacted.clone(),
                        problem: format!("redirect ({status}) without a Location"),
                    })?;
                current =
                    gitfleet_core::charts::resolve_url(&current, location).map_err(|problem| {
                        FetchError::Refused {
                            url: redacted.clone(),
                            problem,
                        }
                    })?;
                continue;
            }
            if status == StatusCode::UNAUTHORIZED && !challenged && same_origin {
                challenged = true;
                if let Some(challenge) = response
                    .headers()
                    .get(header::WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_bearer_challenge)
                {
                    let token = self.token(&challenge, auth).await?;
                    let mut value =
                        HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
                            FetchError::Refused {
                                url: redacted.clone(),
                                problem: "the registry's token is not a header value".into(),
                            }
                        })?;
                    value.set_sensitive(true);
                    bearer = Some(value);
                    continue;
                }
            }
            if !status.is_success() {
                return Err(FetchError::Status {
                    url: redacted,
                    status: status.as_u16(),
                    hint: match status {
                        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                            " (credentials: an entry of the credentials file whose urls: cover this URL)"
                        }
                        StatusCode::NOT_FOUND => " (not found)",
                        _ => "",
                    },
                });
            }
            let headers = response.headers().clone();
            if let Some(length) = headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
                && length > max_bytes as u64
            {
                return Err(FetchError::TooLarge {
                    url: redacted,
                    limit: max_bytes,
                });
            }
            let body = Limited::new(response.into_body(), max_bytes)
                .collect()
                .await
                .map_err(|e| {
                    if e.is::<http_body_util::LengthLimitError>() {
                        FetchError::TooLarge {
                            url: redacted.clone(),
                            limit: max_bytes,
                        }
                    } else {
                        FetchError::Connect {
                            url: redacted.clone(),
                            message: crate::error_chain(&*e),
                        }
                    }
                })?
                .to_bytes();
            return Ok(Fetched {
                body,
                headers,
                url: current,
            });
        }
    }

    async fn send(
        &self,
        url: &str,
        uri: http::Uri,
        accept: Option<&str>,
        authorization: Option<HeaderValue>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, FetchError> {
        let mut request = Request::get(uri).header(header::USER_AGENT, "gitfleet");
        if let Some(accept) = accept {
            request = request.header(header::ACCEPT, accept);
        }
        if let Some(value) = authorization {
            request = request.header(header::AUTHORIZATION, value);
        }
        let request = request
            .body(Full::new(Bytes::new()))
            .map_err(|e| FetchError::Refused {
                url: credential_scope::redacted(url),
                problem: e.to_string(),
            })?;
        self.client
            .request(request)
            .await
            .map_err(|e| FetchError::Connect {
                url: credential_scope::redacted(url),
                message: crate::error_chain(&e),
            })
    }

    /// POSTs `body` to `url` with `headers` (notifications), under the same rules as a GET: the
    /// policy's timeout over the whole request, `https://` (`http://` to a loopback host),
    /// no refused address. No redirect is followed: a 3xx is the answer. The status comes back
    /// with at most `max_bytes` of the body (the rest is not read).
    pub async fn post(
        &self,
        url: &str,
        headers: &[(http::HeaderName, HeaderValue)],
        body: Bytes,
        max_bytes: usize,
    ) -> Result<(u16, Bytes), FetchError> {
        let timeout = self.policy.timeout;
        let redacted = credential_scope::redacted(url);
        let post = async {
            let uri = self.check(url)?;
            let mut request = Request::post(uri).header(header::USER_AGENT, "gitfleet");
            for (name, value) in headers {
                request = request.header(name, value.clone());
            }
            let request = request
                .body(Full::new(body))
                .map_err(|e| FetchError::Refused {
                    url: redacted.clone(),
                    problem: e.to_string(),
                })?;
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| FetchError::Connect {
                    url: redacted.clone(),
                    message: crate::error_chain(&e),
                })?;
            let status = response.status().as_u16();
            let mut body = response.into_body();
            let mut read = Vec::new();
            while read.len() < max_bytes {
                match body.frame().await {
                    Some(Ok(frame)) => {
                        if let Ok(data) = frame.into_data() {
                            let room = max_bytes - read.len();
                            read.extend_from_slice(&data[..data.len().min(room)]);
                        }
                    }
                    // The status is the answer; a body cut short changes nothing.
                    Some(Err(_)) | None => break,
                }
            }
            Ok((status, Bytes::from(read)))
        };
        match tokio::time::timeout(timeout, post).await {
            Ok(r) => r,
            Err(_) => Err(FetchError::Timeout {
                url: redacted,
                timeout,
            }),
        }
    }

    /// The URL, if the policy lets the client GET it.
    fn check(&self, url: &str) -> Result<http::Uri, FetchError> {
        let refused = |problem: String| FetchError::Refused {
            url: credential_scope::redacted(url),
            problem,
        };
        let uri: http::Uri = url
            .parse()
            .map_err(|e| refused(format!("not a URL: {e}")))?;
        let host = uri
            .host()
            .ok_or_else(|| refused("no host".into()))?
            .trim_start_matches('[')
            .trim_end_matches(']');
        match uri.scheme_str() {
            Some("https") => {}
            Some("http") if is_loopback_host(host) => {}
            _ => {
                return Err(refused(
                    "only https:// is fetched (http:// only from a loopback host)".into(),
                ));
            }
        }
        if let Some(problem) = host_problem(host) {
            return Err(refused(format!("host {host} {problem}")));
        }
        // IP literals do not reach the resolver.
        if let Ok(ip) = host.parse::<IpAddr>()
            && let Some(problem) = address_problem(ip, self.policy.allow_loopback)
        {
            return Err(refused(format!("address {ip} {problem}")));
        }
        Ok(uri)
    }

    /// A registry's token for `challenge`.
    async fn token(
        &self,
        challenge: &BearerChallenge,
        auth: Option<&BasicAuth>,
    ) -> Result<String, FetchError> {
        let mut url = challenge.realm.clone();
        let mut query = Vec::new();
        if let Some(service) = &challenge.service {
            query.push(format!("service={}", encode(service)));
        }
        if let Some(scope) = &challenge.scope {
            query.push(format!("scope={}", encode(scope)));
        }
        if !query.is_empty() {
            url.push(if url.contains('?') { '&' } else { '?' });
            url.push_str(&query.join("&"));
        }
        let uri = self.check(&url)?;
        let authorization = auth
            .filter(|a| credential_scope::allows(&a.urls, &challenge.realm))
            .and_then(BasicAuth::header);
        let response = self.send(&url, uri, None, authorization).await?;
        let redacted = credential_scope::redacted(&challenge.realm);
        if !response.status().is_success() {
            return Err(FetchError::Status {
                url: redacted,
                status: response.status().as_u16(),
                hint: " (the registry's token service)",
            });
        }
        let body = Limited::new(response.into_body(), MAX_TOKEN_BYTES)
            .collect()
            .await
            .map_err(|e| FetchError::Connect {
                url: redacted.clone(),
                message: crate::error_chain(&*e),
            })?
            .to_bytes();
        let value: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| FetchError::Refused {
                url: redacted.clone(),
                problem: format!("the token service's answer is not JSON: {e}"),
            })?;
        value
            .get("token")
            .or_else(|| value.get("access_token"))
            .and_then(|t| t.as_str())
            .map(str::to_owned)
            .ok_or(FetchError::Refused {
                url: redacted,
                problem: "the token service's answer holds no token".into(),
            })
    }
}

/// `scheme://host[:port]` of a URL.
fn origin_of(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            format!("{scheme}://{}", rest[..end].to_ascii_lowercase())
        }
        None => url.to_owned(),
    }
}

fn encode(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// `WWW-Authenticate: Bearer realm="…",service="…",scope="…"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BearerChallenge {
    pub realm: String,
    pub service: Option<String>,
    pub scope: Option<String>,
}

/// Reads a Bearer challenge; `None` for any other scheme or one without a realm.
pub fn parse_bearer_challenge(value: &str) -> Option<BearerChallenge> {
    let rest = value
        .trim()
        .strip_prefix("Bearer ")
        .or_else(|| value.trim().strip_prefix("bearer "))?;
    let mut realm = None;
    let mut service = None;
    let mut scope = None;
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        let value: String = if chars.peek() == Some(&'"') {
            chars.next();
            chars.by_ref().take_while(|c| *c != '"').collect()
        } else {
            chars.by_ref().take_while(|c| *c != ',').collect()
        };
        match key.trim() {
            "realm" => realm = Some(value),
            "service" => service = Some(value),
            "scope" => scope = Some(value),
            _ => {}
        }
    }
    Some(BearerChallenge {
        realm: realm?,
        service,
        scope,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenges() {
        let c = parse_bearer_challenge(
            r#"Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:charts/podinfo:pull""#,
        )
        .unwrap();
        assert_eq!(c.realm, "https://auth.example.com/token");
        assert_eq!(c.service.as_deref(), Some("registry.example.com"));
        assert_eq!(c.scope.as_deref(), Some("repository:charts/podinfo:pull"));
        assert_eq!(parse_bearer_challenge(r#"Basic realm="x""#), None);
        assert_eq!(parse_bearer_challenge("Bearer service=x"), None);
    }

    #[test]
    fn a_ca_bundle_must_hold_certificates() {
        let mut policy = FetchPolicy::default();
        let e = policy.trust_pem(b"", "ca.pem").unwrap_err();
        assert_eq!(e, "ca.pem: holds no PEM certificate");
        let e = policy
            .trust_pem(
                b"-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n",
                "ca.pem",
            )
            .unwrap_err();
        assert!(e.starts_with("ca.pem: not a PEM certificate bundle"), "{e}");
        assert!(policy.extra_roots.is_empty());
    }

    #[test]
    fn origins() {
        assert_eq!(
            origin_of("https://H.example.com:443/a?b"),
            "https://h.example.com:443"
        );
        assert_eq!(origin_of("http://127.0.0.1:80"), "http://127.0.0.1:80");
    }

    #[tokio::test]
    async fn refuses_what_the_policy_does_not_allow() {
        crate::install_crypto_provider();
        let fetcher = Fetcher::new(FetchPolicy::default()).unwrap();
        for (url, says) in [
            ("http://charts.example.com/index.yaml", "https://"),
            ("https://169.254.169.254/latest/meta-data", "link-local"),
            ("https://[fe80::1]/x", "link-local"),
            ("http://127.0.0.1:1/index.yaml", "loopback"),
            ("https://metadata.google.internal/x", "metadata"),
            ("file:///etc/passwd", "not a URL"),
        ] {
            let e = fetcher.get(url, None, 10, None).await.unwrap_err();
            assert!(e.to_string().contains(says), "{url}: {e}");
        }
    }
}

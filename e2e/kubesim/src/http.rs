//! The HTTP adapter: routes `/clusters/{name}/...` requests to a cluster's store and renders
//! results (objects, lists, tables, watch streams, `Status` errors) as the API server does.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::ReceiverStream;

use super::discovery;
use super::resources::ResourceType;
use super::selector::{FieldSelector, LabelSelector};
use super::server::{Cluster, Sim, now_rfc3339};
use super::status::ApiError;
use super::store::{
    self, PatchKind, Propagation, Stored, WatchFilter, WatchItem, WatchStart, WriteCtx,
};

pub type Body = BoxBody<Bytes, Infallible>;

/// The API server's request body limit.
pub const MAX_BODY: usize = 3 * 1024 * 1024;

/// What a path (after `/clusters/{name}`) addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Version,
    Health,
    CoreVersions,
    GroupList,
    Group(String),
    ResourceList { group: String, version: String },
    OpenApiV2,
    OpenApiV3Root,
    OpenApiV3 { group: String, version: String },
    Resource(ResourcePath),
    NotFound,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourcePath {
    pub group: String,
    pub version: String,
    pub namespace: Option<String>,
    pub plural: String,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

fn resource_route(group: &str, version: &str, rest: &[&str]) -> Route {
    let rp = |ns: Option<&str>, plural: &str, name: Option<&&str>, sub: Option<&&str>| {
        Route::Resource(ResourcePath {
            group: group.into(),
            version: version.into(),
            namespace: ns.map(str::to_string),
            plural: plural.into(),
            name: name.map(|s| (*s).to_string()),
            subresource: sub.map(|s| (*s).to_string()),
        })
    };
    match rest {
        ["namespaces", ns, sub @ ("status" | "finalize")] if group.is_empty() => {
            rp(None, "namespaces", Some(ns), Some(sub))
        }
        ["namespaces", ns, plural, tail @ ..] if tail.len() <= 2 => {
            rp(Some(ns), plural, tail.first(), tail.get(1))
        }
        [plural, tail @ ..] if tail.len() <= 2 => rp(None, plural, tail.first(), tail.get(1)),
        _ => Route::NotFound,
    }
}

/// Parses a cluster-relative path.
pub fn parse_route(path: &str) -> Route {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match segs.as_slice() {
        ["version"] => Route::Version,
        ["healthz" | "livez" | "readyz", ..] => Route::Health,
        ["api"] => Route::CoreVersions,
        ["api", v] => Route::ResourceList {
            group: String::new(),
            version: (*v).into(),
        },
        ["api", v, rest @ ..] => resource_route("", v, rest),
        ["apis"] => Route::GroupList,
        ["apis", g] => Route::Group((*g).into()),
        ["apis", g, v] => Route::ResourceList {
            group: (*g).into(),
            version: (*v).into(),
        },
        ["apis", g, v, rest @ ..] => resource_route(g, v, rest),
        ["openapi", "v2"] => Route::OpenApiV2,
        ["openapi", "v3"] => Route::OpenApiV3Root,
        ["openapi", "v3", "api", v] => Route::OpenApiV3 {
            group: String::new(),
            version: (*v).into(),
        },
        ["openapi", "v3", "apis", g, v] => Route::OpenApiV3 {
            group: (*g).into(),
            version: (*v).into(),
        },
        _ => Route::NotFound,
    }
}

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

fn respond(code: u16, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(full(body));
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(v) = HeaderValue::from_str(content_type) {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r
}

fn json_response(code: u16, v: &Value) -> Response<Body> {
    respond(
        code,
        "application/json",
        serde_json::to_vec(v).unwrap_or_default(),
    )
}

pub fn error_response(e: &ApiError) -> Response<Body> {
    json_response(e.code, &e.to_status())
}

fn query_map(query: Option<&str>) -> HashMap<String, String> {
    query
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default()
}

fn flag(q: &HashMap<String, String>, name: &str) -> bool {
    q.get(name).is_some_and(|v| v == "true" || v == "1")
}

/// Serves one request for `cluster` (already resolved from the path prefix).
pub async fn handle(
    sim: Arc<Sim>,
    cluster: Arc<Cluster>,
    prefix: String,
    route_path: String,
    req: Request<Incoming>,
) -> Response<Body> {
    match handle_inner(&sim, &cluster, &prefix, &route_path, req).await {
        Ok(r) => r,
        Err(e) => error_response(&e),
    }
}

/// A created or replaced object's body: protobuf when the client sent it, else JSON.
fn object_body(body: &[u8], protobuf: bool) -> Result<Value, ApiError> {
    if !protobuf {
        return store::parse_body(body, false);
    }
    super::protobuf::decode(body).map_err(|e| {
        ApiError::new(
            415,
            "UnsupportedMediaType",
            format!("the body of the request was in an unknown format: {e}"),
        )
    })
}

async fn read_body(req: Request<Incoming>) -> Result<Bytes, ApiError> {
    if let Some(len) = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        && len > MAX_BODY
    {
        return Err(ApiError::too_large());
    }
    match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(ApiError::too_large())
        }
        Err(e) => Err(ApiError::bad_request(format!(
            "error reading request body: {e}"
        ))),
    }
}

fn wants_aggregated(req: &Request<Incoming>) -> bool {
    req.headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"))
}

fn wants_table(req: &Request<Incoming>) -> bool {
    req.headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("as=Table"))
}

async fn handle_inner(
    sim: &Arc<Sim>,
    cluster: &Arc<Cluster>,
    prefix: &str,
    path: &str,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let route = parse_route(path);
    let types = || cluster.lock().all_types();
    match route {
        Route::Version => Ok(json_response(200, &discovery::version())),
        Route::Health => Ok(respond(200, "text/plain", "ok")),
        Route::CoreVersions => {
            if wants_aggregated(&req) {
                return Ok(aggregated_response(&discovery::aggregated(&types(), true)));
            }
            Ok(json_response(200, &discovery::api_versions(&sim.address)))
        }
        Route::GroupList => {
            if wants_aggregated(&req) {
                return Ok(aggregated_response(&discovery::aggregated(&types(), false)));
            }
            Ok(json_response(200, &discovery::api_group_list(&types())))
        }
        Route::Group(g) => discovery::api_group(&types(), &g)
            .map(|v| json_response(200, &v))
            .ok_or_else(ApiError::path_not_found),
        Route::ResourceList { group, version } => {
            discovery::resource_list(&types(), &group, &version)
                .map(|v| json_response(200, &v))
                .ok_or_else(ApiError::path_not_found)
        }
        Route::OpenApiV2 => {
            let accept = req
                .headers()
                .get(header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if accept.contains("protobuf") {
                Ok(respond(
                    200,
                    "application/com.github.proto-openapi.spec.v2.v1.0+protobuf",
                    discovery::openapi_v2_protobuf(),
                ))
            } else {
                Ok(json_response(200, &discovery::openapi_v2_json()))
            }
        }
        Route::OpenApiV3Root => Ok(json_response(
            200,
            &discovery::openapi_v3_root(&types(), prefix),
        )),
        Route::OpenApiV3 { group, version } => {
            discovery::openapi_v3_group_version(&types(), &group, &version)
                .map(|v| json_response(200, &v))
                .ok_or_else(ApiError::path_not_found)
        }
        Route::NotFound => Err(ApiError::path_not_found()),
        Route::Resource(rp) => resource(sim, cluster, rp, req).await,
    }
}

fn aggregated_response(v: &Value) -> Response<Body> {
    respond(
        200,
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList",
        serde_json::to_vec(v).unwrap_or_default(),
    )
}

fn user_agent_manager(req: &Request<Incoming>) -> String {
    let ua = req
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let m = ua.split('/').next().unwrap_or("").trim();
    if m.is_empty() {
        "unknown".into()
    } else {
        m.chars().take(128).collect()
    }
}

/// Rewrites the apiVersion of an object stored under another version of a multi-version type.
fn in_version(rt: &ResourceType, version: &str, obj: &Stored) -> Bytes {
    if rt.versions.len() <= 1 {
        return obj.bytes.clone();
    }
    let want = rt.api_version(version);
    let mut v = obj.value();
    if v.get("apiVersion").and_then(Value::as_str) == Some(&want) {
        return obj.bytes.clone();
    }
    v["apiVersion"] = json!(want);
    Bytes::from(serde_json::to_vec(&v).unwrap_or_default())
}

fn object_response(code: u16, rt: &ResourceType, version: &str, obj: &Stored) -> Response<Body> {
    respond(code, "application/json", in_version(rt, version, obj))
}

async fn resource(
    sim: &Arc<Sim>,
    cluster: &Arc<Cluster>,
    rp: ResourcePath,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let Some(rt) = cluster.lock().resolve(&rp.group, &rp.version, &rp.plural) else {
        return Err(ApiError::path_not_found());
    };
    if rp.namespace.is_some() && !rt.namespaced {
        return Err(ApiError::path_not_found());
    }
    let status_sub = match rp.subresource.as_deref() {
        None => false,
        Some("status") if rt.status => true,
        Some("scale") if rt.has_scale() => return scale(sim, cluster, &rt, &rp, req).await,
        Some(_) => return Err(ApiError::path_not_found()),
    };
    let q = query_map(req.uri().query());
    let ns = rp.namespace.clone().unwrap_or_default();
    let version = rp.version.clone();
    let dry_run = match q.get("dryRun").map(String::as_str) {
        None | Some("") => false,
        Some("All") => true,
        Some(other) => {
            return Err(ApiError::invalid(
                "DryRun",
                "",
                "",
                vec![super::status::FieldError {
                    field: "dryRun".into(),
                    reason: "FieldValueNotSupported",
                    value: Some(format!("{other:?}")),
                    detail: "supported values: \"All\"".into(),
                }],
            ));
        }
    };
    let field_manager = q.get("fieldManager").cloned().filter(|m| !m.is_empty());
    let ctx = WriteCtx {
        manager: field_manager
            .clone()
            .unwrap_or_else(|| user_agent_manager(&req)),
        dry_run,
        force: flag(&q, "force"),
        now: now_rfc3339(),
    };
    let method = req.method().clone();
    let table = wants_table(&req);
    let content_type = content_type(&req);

    // Protobuf is the real server's other wire format: kubesim decodes what kubectl's typed
    // `create` generators send for simple kinds (see protobuf.rs) and refuses the rest.
    let protobuf = content_type.contains("protobuf");
    if content_type.contains("cbor") || (protobuf && req.method() != Method::POST) {
        return Err(ApiError::unsupported_media_type(&content_type));
    }
    match (method, rp.name.as_deref()) {
        (Method::GET, None) => {
            let labels =
                LabelSelector::parse(q.get("labelSelector").map(String::as_str).unwrap_or(""))
                    .map_err(ApiError::bad_request)?;
            let fields =
                FieldSelector::parse(q.get("fieldSelector").map(String::as_str).unwrap_or(""))
                    .map_err(ApiError::bad_request)?;
            if flag(&q, "watch") {
                return watch(sim, cluster, rt, version, rp.namespace, labels, fields, &q);
            }
            let (rv, items) = {
                let state = cluster.lock();
                (
                    state.resource_version(),
                    state.list(&rt, rp.namespace.as_deref(), &labels, &fields),
                )
            };
            if table {
                let rows: Vec<Value> = items.iter().map(|o| o.value()).collect();
                return Ok(json_response(200, &super::table::table(&rt, &rows, rv, &q)));
            }
            let mut out =
                Vec::with_capacity(items.iter().map(|o| o.bytes.len() + 1).sum::<usize>() + 200);
            out.extend_from_slice(
                format!(
                    "{{\"kind\":\"{}List\",\"apiVersion\":\"{}\",\"metadata\":{{\"resourceVersion\":\"{rv}\"}},\"items\":[",
                    rt.kind,
                    rt.api_version(&version)
                )
                .as_bytes(),
            );
            for (i, o) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(&in_version(&rt, &version, o));
            }
            out.extend_from_slice(b"]}");
            Ok(respond(200, "application/json", out))
        }
        (Method::GET, Some(name)) => {
            cluster
                .object_reads
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let obj = cluster.lock().get(&rt, &ns, name)?;
            if table {
                let rv = obj.rv;
                return Ok(json_response(
                    200,
                    &super::table::table(&rt, &[obj.value()], rv, &q),
                ));
            }
            Ok(object_response(200, &rt, &version, &obj))
        }
        (Method::POST, None) => {
            let value = object_body(&read_body(req).await?, protobuf)?;
            let obj = sim.write(cluster, |s| {
                s.create(&rt, &version, rp.namespace.as_deref(), value, &ctx)
            })?;
            Ok(object_response(201, &rt, &version, &obj))
        }
        (Method::PUT, Some(name)) => {
            let value = object_body(&read_body(req).await?, protobuf)?;
            let obj = sim.write(cluster, |s| {
                s.replace(&rt, &version, &ns, name, value, status_sub, &ctx)
            })?;
            Ok(object_response(200, &rt, &version, &obj))
        }
        (Method::PATCH, Some(name)) => {
            let kind = match content_type.as_str() {
                "application/json-patch+json" => PatchKind::Json,
                "application/merge-patch+json" => PatchKind::Merge,
                "application/strategic-merge-patch+json" => PatchKind::Strategic,
                "application/apply-patch+yaml" => PatchKind::Apply,
                other => return Err(ApiError::unsupported_media_type(other)),
            };
            if kind == PatchKind::Apply && field_manager.is_none() {
                return Err(ApiError::bad_request(
                    "PATCH, application/apply-patch+yaml requires fieldManager",
                ));
            }
            if kind != PatchKind::Apply && ctx.force {
                return Err(ApiError::bad_request(
                    "force: Invalid value: true: may not be specified for non-apply patch",
                ));
            }
            let body = read_body(req).await?;
            let (obj, created) = sim.write(cluster, |s| {
                s.patch(&rt, &version, &ns, name, kind, &body, status_sub, &ctx)
            })?;
            Ok(object_response(
                if created { 201 } else { 200 },
                &rt,
                &version,
                &obj,
            ))
        }
        (Method::DELETE, Some(name)) => {
            let body = read_body(req).await?;
            let opts: Value = if body.is_empty() {
                json!({})
            } else {
                serde_json::from_slice(&body).map_err(|e| {
                    ApiError::bad_request(format!("error decoding DeleteOptions: {e}"))
                })?
            };
            let propagation = q.get("propagationPolicy").cloned().or_else(|| {
                opts.get("propagationPolicy")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            });
            let propagation = match propagation.as_deref() {
                None | Some("Background") => Propagation::Background,
                Some("Foreground") => Propagation::Foreground,
                Some("Orphan") => Propagation::Orphan,
                Some(other) => {
                    return Err(ApiError::bad_request(format!(
                        "propagationPolicy: Unsupported value: {other:?}: supported values: \"Foreground\", \"Background\", \"Orphan\""
                    )));
                }
            };
            let body_dry = opts
                .get("dryRun")
                .and_then(Value::as_array)
                .is_some_and(|d| d.iter().any(|x| x == "All"));
            let ctx = WriteCtx {
                dry_run: ctx.dry_run || body_dry,
                ..ctx
            };
            let uid = opts
                .pointer("/preconditions/uid")
                .and_then(Value::as_str)
                .map(str::to_string);
            let prv = opts
                .pointer("/preconditions/resourceVersion")
                .and_then(Value::as_str)
                .map(str::to_string);
            let (obj, _) = sim.write(cluster, |s| {
                s.delete(
                    &rt,
                    &ns,
                    name,
                    propagation,
                    (uid.as_deref(), prv.as_deref()),
                    &ctx,
                )
            })?;
            Ok(object_response(200, &rt, &version, &obj))
        }
        (Method::DELETE, None) => {
            let labels =
                LabelSelector::parse(q.get("labelSelector").map(String::as_str).unwrap_or(""))
                    .map_err(ApiError::bad_request)?;
            let fields =
                FieldSelector::parse(q.get("fieldSelector").map(String::as_str).unwrap_or(""))
                    .map_err(ApiError::bad_request)?;
            let deleted = sim.write(cluster, |s| {
                Ok(s.delete_collection(&rt, rp.namespace.as_deref(), &labels, &fields, &ctx))
            })?;
            let items: Vec<Value> = deleted.iter().map(|o| o.value()).collect();
            Ok(json_response(
                200,
                &json!({
                    "kind": format!("{}List", rt.kind),
                    "apiVersion": rt.api_version(&version),
                    "metadata": {},
                    "items": items,
                }),
            ))
        }
        _ => Err(ApiError::method_not_allowed()),
    }
}

async fn scale(
    sim: &Arc<Sim>,
    cluster: &Arc<Cluster>,
    rt: &ResourceType,
    rp: &ResourcePath,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let Some(name) = rp.name.as_deref() else {
        return Err(ApiError::path_not_found());
    };
    let ns = rp.namespace.clone().unwrap_or_default();
    let q = query_map(req.uri().query());
    let kind = match (req.method(), content_type(&req).as_str()) {
        (&Method::GET, _) => {
            let v = cluster.lock().scale(rt, &ns, name)?;
            return Ok(json_response(200, &v));
        }
        (&Method::PUT, _) => None,
        (&Method::PATCH, "application/json-patch+json") => Some(PatchKind::Json),
        (&Method::PATCH, "application/merge-patch+json") => Some(PatchKind::Merge),
        (&Method::PATCH, "application/strategic-merge-patch+json") => Some(PatchKind::Strategic),
        (&Method::PATCH, "application/apply-patch+yaml") => Some(PatchKind::Apply),
        (&Method::PATCH, other) => return Err(ApiError::unsupported_media_type(other)),
        _ => return Err(ApiError::method_not_allowed()),
    };
    let ctx = WriteCtx {
        manager: q
            .get("fieldManager")
            .cloned()
            .unwrap_or_else(|| user_agent_manager(&req)),
        dry_run: q.get("dryRun").is_some_and(|d| d == "All"),
        force: flag(&q, "force"),
        now: now_rfc3339(),
    };
    let body = read_body(req).await?;
    let version = rp.version.clone();
    let v = sim.write(cluster, |s| {
        s.write_scale(rt, &version, &ns, name, kind, &body, &ctx)
    })?;
    Ok(json_response(200, &v))
}

fn content_type(req: &Request<Incoming>) -> String {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_string()
}

fn watch_line(kind: &str, object: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(object.len() + 32);
    out.extend_from_slice(b"{\"type\":\"");
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(b"\",\"object\":");
    out.extend_from_slice(object);
    out.extend_from_slice(b"}\n");
    Bytes::from(out)
}

fn bookmark(rt: &ResourceType, version: &str, rv: u64, initial_end: bool) -> Bytes {
    let mut meta = json!({"resourceVersion": rv.to_string(), "creationTimestamp": null});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    let obj = json!({"kind": rt.kind, "apiVersion": rt.api_version(version), "metadata": meta});
    watch_line("BOOKMARK", &serde_json::to_vec(&obj).unwrap_or_default())
}

#[allow(clippy::too_many_arguments)]
fn watch(
    sim: &Arc<Sim>,
    cluster: &Arc<Cluster>,
    rt: Arc<ResourceType>,
    version: String,
    namespace: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
    q: &HashMap<String, String>,
) -> Result<Response<Body>, ApiError> {
    let start = match q.get("resourceVersion").map(String::as_str) {
        None | Some("") | Some("0") => WatchStart::Snapshot,
        Some(rv) => WatchStart::After(rv.parse().map_err(|_| {
            ApiError::bad_request(format!(
                "resourceVersion: Invalid value: {rv:?}: must be a non-negative integer"
            ))
        })?),
    };
    let send_initial = flag(q, "sendInitialEvents");
    let bookmarks = flag(q, "allowWatchBookmarks");
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(1800));
    let filter = WatchFilter {
        type_key: rt.key(),
        namespace,
        labels,
        fields,
    };
    let (tx, mut rx) = mpsc::channel::<WatchItem>(1024);
    let (out_tx, out_rx) = mpsc::channel::<Bytes>(64);
    let registered = cluster.lock().watch(filter, start, tx);
    let body_stream = ReceiverStream::new(out_rx).map(|b| Ok::<_, Infallible>(Frame::data(b)));
    let mut response = Response::new(StreamBody::new(body_stream).boxed());
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, private"),
    );
    let initial = match registered {
        Ok(initial) => initial,
        Err(e) => {
            // Like the real server: 200, then one ERROR event with the 410 Status.
            let line = watch_line(
                "ERROR",
                &serde_json::to_vec(&e.to_status()).unwrap_or_default(),
            );
            tokio::spawn(async move {
                let _ = out_tx.send(line).await;
            });
            return Ok(response);
        }
    };
    let interval = sim.bookmark_interval;
    let cancel = sim.cancel.clone();
    let cluster = cluster.clone();
    tokio::spawn(async move {
        for (kind, obj) in initial {
            if out_tx
                .send(watch_line(kind.as_str(), &in_version(&rt, &version, &obj)))
                .await
                .is_err()
            {
                return;
            }
        }
        if send_initial && start == WatchStart::Snapshot {
            let rv = cluster.lock().resource_version();
            if out_tx
                .send(bookmark(&rt, &version, rv, true))
                .await
                .is_err()
            {
                return;
            }
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        loop {
            tokio::select! {
                item = rx.recv() => match item {
                    Some((kind, obj)) => {
                        let line = watch_line(kind.as_str(), &in_version(&rt, &version, &obj));
                        if out_tx.send(line).await.is_err() { return; }
                    }
                    // Dropped for falling behind: end the stream, the client re-watches.
                    None => return,
                },
                _ = ticks.tick(), if bookmarks => {
                    let rv = cluster.lock().resource_version();
                    if out_tx.send(bookmark(&rt, &version, rv, false)).await.is_err() { return; }
                }
                () = &mut deadline => return,
                () = out_tx.closed() => return,
                () = cancel.cancelled() => return,
            }
        }
    });
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(
        group: &str,
        version: &str,
        ns: Option<&str>,
        plural: &str,
        name: Option<&str>,
        sub: Option<&str>,
    ) -> Route {
        Route::Resource(ResourcePath {
            group: group.into(),
            version: version.into(),
            namespace: ns.map(str::to_string),
            plural: plural.into(),
            name: name.map(str::to_string),
            subresource: sub.map(str::to_string),
        })
    }

    #[test]
    fn routes() {
        assert_eq!(parse_route("/version"), Route::Version);
        assert_eq!(parse_route("/api"), Route::CoreVersions);
        assert_eq!(
            parse_route("/api/v1"),
            Route::ResourceList {
                group: "".into(),
                version: "v1".into()
            }
        );
        assert_eq!(parse_route("/apis"), Route::GroupList);
        assert_eq!(parse_route("/apis/apps"), Route::Group("apps".into()));
        assert_eq!(
            parse_route("/apis/apps/v1/namespaces/default/deployments"),
            res("apps", "v1", Some("default"), "deployments", None, None)
        );
        assert_eq!(
            parse_route("/apis/apps/v1/namespaces/default/deployments/web/status"),
            res(
                "apps",
                "v1",
                Some("default"),
                "deployments",
                Some("web"),
                Some("status")
            )
        );
        assert_eq!(
            parse_route("/apis/apps/v1/deployments"),
            res("apps", "v1", None, "deployments", None, None)
        );
        assert_eq!(
            parse_route("/api/v1/namespaces"),
            res("", "v1", None, "namespaces", None, None)
        );
        assert_eq!(
            parse_route("/api/v1/namespaces/dev"),
            res("", "v1", None, "namespaces", Some("dev"), None)
        );
        assert_eq!(
            parse_route("/api/v1/namespaces/dev/status"),
            res("", "v1", None, "namespaces", Some("dev"), Some("status"))
        );
        assert_eq!(
            parse_route("/api/v1/namespaces/dev/configmaps/x"),
            res("", "v1", Some("dev"), "configmaps", Some("x"), None)
        );
        assert_eq!(
            parse_route("/openapi/v3/apis/apps/v1"),
            Route::OpenApiV3 {
                group: "apps".into(),
                version: "v1".into()
            }
        );
        assert_eq!(
            parse_route("/openapi/v3/api/v1"),
            Route::OpenApiV3 {
                group: "".into(),
                version: "v1".into()
            }
        );
        assert_eq!(parse_route("/nope"), Route::NotFound);
        assert_eq!(
            parse_route("/apis/apps/v1/namespaces/a/deployments/b/status/extra"),
            Route::NotFound
        );
    }
}

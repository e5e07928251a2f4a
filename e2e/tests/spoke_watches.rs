//! The spoke's shared watches (`gitfleet_spoke::watch`) against kubesim: one watch per kind for
//! every Target, events routed to the Target whose object changed, and the per-namespace
//! fallback where the spoke may not watch a kind cluster-wide.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use gitfleet_kubesim::{Kubesim, KubesimConfig, KubesimHandle};
use gitfleet_spoke::cluster::Cluster;
use gitfleet_spoke::model::ObjectRef;
use gitfleet_spoke::watch::{Seen, Subscription, Watches};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};

const DEADLINE: Duration = Duration::from_secs(30);

fn configmap(namespace: &str, name: &str) -> ObjectRef {
    ObjectRef {
        api_version: "v1".into(),
        kind: "ConfigMap".into(),
        namespace: namespace.into(),
        name: name.into(),
    }
}

fn namespace(name: &str) -> ObjectRef {
    ObjectRef {
        api_version: "v1".into(),
        kind: "Namespace".into(),
        namespace: String::new(),
        name: name.into(),
    }
}

fn client(kubesim: &KubesimHandle) -> kube::Client {
    kube::Client::try_from(kubesim.kube_config("c1")).expect("client")
}

/// Creates namespace `ns` and, in it, ConfigMap `name` labelled as App `app`'s.
async fn create(client: &kube::Client, app: &str, ns: &str, name: &str) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let body = serde_json::from_value(serde_json::json!({
        "metadata": {"name": ns, "labels": {"gitfleet.dev/app": app}},
    }))
    .expect("namespace");
    match namespaces.create(&PostParams::default(), &body).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(error) => panic!("creating namespace {ns}: {error}"),
    }
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let body = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": {"gitfleet.dev/app": app}},
        "data": {"a": "b"},
    }))
    .expect("configmap");
    configmaps
        .create(&PostParams::default(), &body)
        .await
        .expect("create configmap");
}

/// Changes a ConfigMap as `kubectl edit` would.
async fn edit(client: &kube::Client, ns: &str, name: &str, value: &str) {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let params = PatchParams {
        field_manager: Some("kubectl-edit".into()),
        ..Default::default()
    };
    api.patch(
        name,
        &params,
        &Patch::Merge(serde_json::json!({"data": {"a": value}})),
    )
    .await
    .expect("edit");
}

/// Polls `done` until it holds or the deadline passes.
async fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `subscription` was woken more than `before` times.
async fn woken(subscription: &Subscription, before: u64, what: &str) -> u64 {
    wait_until(what, || subscription.wakes() > before).await;
    subscription.wakes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targets_with_objects_of_one_kind_share_one_watch_and_each_hears_only_its_own() {
    let kubesim = Kubesim::start(KubesimConfig::new(["c1"]))
        .await
        .expect("kubesim");
    let client = client(&kubesim);
    create(&client, "shop", "shop", "settings").await;
    create(&client, "blog", "blog", "settings").await;
    let watches = Watches::new(Arc::new(Cluster::new(client.clone())));

    let unknown = ObjectRef {
        api_version: "example.com/v1".into(),
        kind: "Nonsense".into(),
        namespace: "shop".into(),
        name: "x".into(),
    };
    let shop = watches
        .subscribe(
            "shop",
            &[configmap("shop", "settings"), namespace("shop"), unknown],
        )
        .await;
    let blog = watches
        .subscribe("blog", &[configmap("blog", "settings"), namespace("blog")])
        .await;
    assert_eq!(shop.len(), 2, "the unknown kind is left to the poll");
    assert_eq!(
        watches.len(),
        2,
        "one watch for ConfigMaps and one for Namespaces, shared by both Targets"
    );
    wait_until("both subscriptions work", || {
        shop.working() && blog.working()
    })
    .await;

    // Events of one watch arrive in order: once blog hears of its edit, the edits before it
    // have been routed too.
    let (shop_before, blog_before) = (shop.wakes(), blog.wakes());
    edit(&client, "shop", "settings", "edited").await;
    tokio::time::timeout(DEADLINE, shop.changed())
        .await
        .expect("shop is woken by its own object");
    let shop_after = woken(&shop, shop_before, "shop hears of its edit").await;
    create(&client, "news", "news", "settings").await;
    edit(&client, "blog", "settings", "edited").await;
    woken(&blog, blog_before, "blog hears of its edit").await;
    assert_eq!(
        blog.wakes(),
        blog_before + 1,
        "blog was woken by shop's edit or by another App's object"
    );
    assert_eq!(
        shop.wakes(),
        shop_after,
        "shop was woken by blog's edit or by another App's object"
    );

    // The last subscriber of a kind leaving stops its watch.
    drop(shop);
    assert_eq!(watches.len(), 2, "blog still needs both kinds");
    drop(blog);
    assert!(watches.is_empty(), "no subscriber, no watch");
    kubesim.shutdown().await;
}

/// An HTTP proxy in front of kubesim that refuses (403) `forbidden_path` as a namespaced RBAC
/// setup would, and counts the requests it refused.
async fn forbidding_proxy(
    upstream: SocketAddr,
    forbidden_path: &'static str,
) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let refused = Arc::new(AtomicUsize::new(0));
    let counter = refused.clone();
    let forward: hyper_util::client::legacy::Client<_, Incoming> =
        hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let forward = forward.clone();
            let counter = counter.clone();
            let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
                let forward = forward.clone();
                let counter = counter.clone();
                async move {
                    if req.uri().path() == forbidden_path {
                        counter.fetch_add(1, Ordering::Relaxed);
                        let status = serde_json::json!({
                            "kind": "Status", "apiVersion": "v1", "metadata": {},
                            "status": "Failure", "reason": "Forbidden", "code": 403,
                            "message": "configmaps is forbidden: User \"system:serviceaccount:gitfleet:spoke\" cannot list resource \"configmaps\" in API group \"\" at the cluster scope",
                        });
                        let body = Full::new(Bytes::from(status.to_string()))
                            .map_err(|never: Infallible| match never {})
                            .boxed();
                        let mut response = hyper::Response::new(body);
                        *response.status_mut() = hyper::StatusCode::FORBIDDEN;
                        response.headers_mut().insert(
                            hyper::header::CONTENT_TYPE,
                            hyper::header::HeaderValue::from_static("application/json"),
                        );
                        return Ok::<_, hyper_util::client::legacy::Error>(response);
                    }
                    let path = req
                        .uri()
                        .path_and_query()
                        .map_or("/", |p| p.as_str())
                        .to_owned();
                    *req.uri_mut() = format!("http://{upstream}{path}").parse().expect("uri");
                    let response = forward.request(req).await?;
                    Ok(response.map(BodyExt::boxed))
                }
            });
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, refused)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kind_the_spoke_may_not_watch_cluster_wide_is_watched_in_each_namespace() {
    let kubesim = Kubesim::start(KubesimConfig::new(["c1"]))
        .await
        .expect("kubesim");
    let direct = client(&kubesim);
    for app in ["shop", "blog", "news"] {
        create(&direct, app, app, "settings").await;
    }
    let (proxy, refused) = forbidding_proxy(kubesim.addr(), "/clusters/c1/api/v1/configmaps").await;
    let config = kube::Config::new(
        format!("http://{proxy}/clusters/c1")
            .parse()
            .expect("proxy url"),
    );
    let proxied = kube::Client::try_from(config).expect("client");
    let watches = Watches::new(Arc::new(Cluster::new(proxied)));

    let shop = watches
        .subscribe("shop", &[configmap("shop", "settings")])
        .await;
    let blog = watches
        .subscribe("blog", &[configmap("blog", "settings")])
        .await;
    wait_until("both subscriptions work through namespaced watches", || {
        shop.working() && blog.working()
    })
    .await;
    assert!(
        refused.load(Ordering::Relaxed) >= 1,
        "cluster-wide was tried"
    );
    assert_eq!(
        watches.len(),
        2,
        "one watch per namespace, none cluster-wide"
    );

    let (shop_before, blog_before) = (shop.wakes(), blog.wakes());
    edit(&direct, "shop", "settings", "edited").await;
    let shop_after = woken(&shop, shop_before, "shop hears of its edit").await;
    edit(&direct, "blog", "settings", "edited").await;
    woken(&blog, blog_before, "blog hears of its edit").await;
    assert_eq!(blog.wakes(), blog_before + 1);
    assert_eq!(
        shop.wakes(),
        shop_after,
        "shop was woken by the watch of blog's namespace"
    );

    // A later subscriber goes straight to a watch of its namespace.
    let refused_before = refused.load(Ordering::Relaxed);
    let news = watches
        .subscribe("news", &[configmap("news", "settings")])
        .await;
    assert_eq!(watches.len(), 3);
    wait_until("news works", || news.working()).await;
    assert_eq!(refused.load(Ordering::Relaxed), refused_before);

    // A namespace nobody needs any more is no longer watched.
    drop(shop);
    assert_eq!(watches.len(), 2);
    drop((blog, news));
    assert!(watches.is_empty());
    kubesim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watches_know_every_object_and_its_owner_without_a_request() {
    let kubesim = Kubesim::start(KubesimConfig::new(["c1"]))
        .await
        .expect("kubesim");
    let client = client(&kubesim);
    create(&client, "shop", "shop", "settings").await;
    create(&client, "blog", "shop", "blogs").await;
    let cluster = Arc::new(Cluster::new(client.clone()));
    let watches = Watches::new(cluster.clone());
    let resource = cluster
        .resolve("v1", "ConfigMap")
        .await
        .expect("configmaps")
        .resource;
    assert_eq!(
        watches.seen(&resource, "shop", "settings"),
        Seen::Unknown,
        "nothing watches ConfigMaps yet"
    );
    let shop = watches
        .subscribe("shop", &[configmap("shop", "settings")])
        .await;
    wait_until("the watch listed", || shop.working()).await;
    let app_of = |name: &str| match watches.seen(&resource, "shop", name) {
        Seen::Labelled(metadata) => {
            Some(metadata["metadata"]["labels"]["gitfleet.dev/app"].to_string())
        }
        Seen::Unlabelled | Seen::Absent => None,
        Seen::Unknown => panic!("the watch is live"),
    };
    assert_eq!(app_of("settings").as_deref(), Some("\"shop\""));
    // An object no Target subscribed to is known too: whose it is matters to every Target.
    assert_eq!(app_of("blogs").as_deref(), Some("\"blog\""));
    assert_eq!(app_of("absent"), None);
    // Absent and someone else's differ without a read: only the latter needs syncPolicy.adopt.
    assert_eq!(watches.seen(&resource, "shop", "absent"), Seen::Absent);
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "shop");
    let mut theirs = ConfigMap::default();
    theirs.metadata.name = Some("theirs".into());
    api.create(&Default::default(), &theirs)
        .await
        .expect("create");
    wait_until("the unlabelled object is seen", || {
        watches.seen(&resource, "shop", "theirs") == Seen::Unlabelled
    })
    .await;

    api.delete("blogs", &Default::default())
        .await
        .expect("delete");
    wait_until("the deletion is seen", || app_of("blogs").is_none()).await;
    create(&client, "shop", "shop", "later").await;
    wait_until("the creation is seen", || app_of("later").is_some()).await;
    kubesim.shutdown().await;
}

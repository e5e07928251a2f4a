//! Bad input gets the status codes and `Status` bodies a real API server returns: malformed
//! bodies, unknown kinds, wrong apiVersions, invalid names, oversized bodies.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use gitfleet_kubesim::{Kubesim, KubesimConfig, KubesimHandle};
use http::Request;
use http_body_util::BodyExt;
use serde_json::{Value, json};

struct Raw {
    h: KubesimHandle,
    client: kube::Client,
}

impl Raw {
    async fn start() -> Self {
        let h = Kubesim::start(KubesimConfig::new(["c"])).await.unwrap();
        let client = kube::Client::try_from(h.kube_config("c")).unwrap();
        Self { h, client }
    }

    /// Sends a request to the cluster and returns the status code and JSON body.
    async fn send(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> (u16, Value) {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", content_type)
            .body(kube::client::Body::from(body))
            .unwrap();
        let resp = self.client.send(req).await.unwrap();
        let code = resp.status().as_u16();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let v = serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&bytes)));
        (code, v)
    }
}

/// Asserts a `Status` failure body with this code, reason and message.
fn assert_status(got: &(u16, Value), code: u16, reason: &str, message: &str) {
    let (status, body) = got;
    assert_eq!(*status, code, "{body}");
    assert_eq!(body["kind"], "Status", "{body}");
    assert_eq!(body["apiVersion"], "v1", "{body}");
    assert_eq!(body["status"], "Failure", "{body}");
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["reason"], reason, "{body}");
    let m = body["message"].as_str().unwrap();
    assert!(
        m.starts_with(message),
        "expected a message starting {message:?}, got {m:?}"
    );
}

const DEPLOYMENTS: &str = "/apis/apps/v1/namespaces/default/deployments";

fn deployment(name: &str) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
           "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {"metadata": {"labels": {"a": "b"}}}}})
}

#[tokio::test]
async fn malformed_bodies_are_400() {
    let r = Raw::start().await;
    let got = r
        .send(
            "POST",
            DEPLOYMENTS,
            "application/json",
            b"{\"apiVersion\": ".to_vec(),
        )
        .await;
    assert_status(
        &got,
        400,
        "BadRequest",
        "the object provided is unrecognized",
    );
    let got = r
        .send("POST", DEPLOYMENTS, "application/json", b"[1, 2]".to_vec())
        .await;
    assert_status(
        &got,
        400,
        "BadRequest",
        "the object provided is unrecognized",
    );
    let got = r
        .send(
            "PATCH",
            &format!("{DEPLOYMENTS}/x?fieldManager=t"),
            "application/apply-patch+yaml",
            b"kind: Deployment\nmetadata: [\n".to_vec(),
        )
        .await;
    assert_status(&got, 400, "BadRequest", "error decoding YAML");
    // Patches of the other kinds against an existing object.
    r.send(
        "POST",
        DEPLOYMENTS,
        "application/json",
        serde_json::to_vec(&deployment("x")).unwrap(),
    )
    .await;
    let got = r
        .send(
            "PATCH",
            &format!("{DEPLOYMENTS}/x"),
            "application/merge-patch+json",
            b"{nope".to_vec(),
        )
        .await;
    assert_status(&got, 400, "BadRequest", "error decoding patch");
    let got = r
        .send(
            "PATCH",
            &format!("{DEPLOYMENTS}/x"),
            "application/json-patch+json",
            b"{\"op\": 1}".to_vec(),
        )
        .await;
    assert_status(&got, 400, "BadRequest", "error decoding patch");
    let got = r
        .send(
            "PATCH",
            &format!("{DEPLOYMENTS}/x"),
            "text/plain",
            b"{}".to_vec(),
        )
        .await;
    assert_status(
        &got,
        415,
        "UnsupportedMediaType",
        "the body of the request was in an unknown format",
    );
    let got = r
        .send(
            "PATCH",
            &format!("{DEPLOYMENTS}/x"),
            "application/apply-patch+yaml",
            serde_json::to_vec(&deployment("x")).unwrap(),
        )
        .await;
    assert_status(
        &got,
        400,
        "BadRequest",
        "PATCH, application/apply-patch+yaml requires fieldManager",
    );
    let got = r
        .send(
            "GET",
            "/api/v1/configmaps?labelSelector=a%20in%20b",
            "",
            vec![],
        )
        .await;
    assert_status(&got, 400, "BadRequest", "unable to parse requirement");
    let got = r
        .send(
            "GET",
            "/api/v1/configmaps?fieldSelector=spec.x%3D1",
            "",
            vec![],
        )
        .await;
    assert_status(&got, 400, "BadRequest", "field label not supported: spec.x");
    r.h.shutdown().await;
}

#[tokio::test]
async fn unknown_kinds_and_versions_are_404() {
    let r = Raw::start().await;
    let not_found = "the server could not find the requested resource";
    for path in [
        "/apis/example.com/v1/namespaces/default/widgets",
        "/apis/apps/v1/namespaces/default/widgets",
        "/apis/apps/v1beta1/namespaces/default/deployments",
        "/api/v2/namespaces/default/configmaps",
        "/apis/example.com/v1",
        "/apis/example.com",
    ] {
        let got = r.send("GET", path, "", vec![]).await;
        assert_status(&got, 404, "NotFound", not_found);
        assert_eq!(got.1["details"], json!({}), "{path}");
    }
    // Creating through a version that is not served fails the same way.
    let mut old = deployment("x");
    old["apiVersion"] = json!("apps/v1beta1");
    let got = r
        .send(
            "PATCH",
            "/apis/apps/v1beta1/namespaces/default/deployments/x?fieldManager=t",
            "application/apply-patch+yaml",
            serde_json::to_vec(&old).unwrap(),
        )
        .await;
    assert_status(&got, 404, "NotFound", not_found);
    // A missing object names itself.
    let got = r
        .send("GET", &format!("{DEPLOYMENTS}/nope"), "", vec![])
        .await;
    assert_status(&got, 404, "NotFound", "deployments.apps \"nope\" not found");
    assert_eq!(
        got.1["details"],
        json!({"name": "nope", "group": "apps", "kind": "deployments"})
    );
    r.h.shutdown().await;
}

#[tokio::test]
async fn wrong_api_version_or_kind_in_the_body_is_400() {
    let r = Raw::start().await;
    let mut body = deployment("x");
    body["apiVersion"] = json!("apps/v1beta1");
    let got = r
        .send(
            "POST",
            DEPLOYMENTS,
            "application/json",
            serde_json::to_vec(&body).unwrap(),
        )
        .await;
    assert_status(
        &got,
        400,
        "BadRequest",
        "the API version in the data (apps/v1beta1) does not match the expected API version (apps/v1)",
    );
    let mut body = deployment("x");
    body["kind"] = json!("StatefulSet");
    let got = r
        .send(
            "POST",
            DEPLOYMENTS,
            "application/json",
            serde_json::to_vec(&body).unwrap(),
        )
        .await;
    assert_status(
        &got,
        400,
        "BadRequest",
        "the kind in the data (StatefulSet) does not match the expected kind (Deployment)",
    );
    let got = r
        .send(
            "PATCH",
            &format!("{DEPLOYMENTS}/other?fieldManager=t"),
            "application/apply-patch+yaml",
            serde_json::to_vec(&deployment("x")).unwrap(),
        )
        .await;
    assert_status(
        &got,
        400,
        "BadRequest",
        "the name of the object (x) does not match the name on the URL (other)",
    );
    r.h.shutdown().await;
}

#[tokio::test]
async fn names_that_are_not_dns_1123_are_422() {
    let r = Raw::start().await;
    let got = r
        .send(
            "POST",
            DEPLOYMENTS,
            "application/json",
            serde_json::to_vec(&deployment("Bad_Name")).unwrap(),
        )
        .await;
    assert_status(
        &got,
        422,
        "Invalid",
        "Deployment.apps \"Bad_Name\" is invalid: metadata.name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
    );
    let details = &got.1["details"];
    assert_eq!(details["name"], "Bad_Name");
    assert_eq!(details["group"], "apps");
    assert_eq!(details["kind"], "Deployment");
    assert_eq!(details["causes"][0]["reason"], "FieldValueInvalid");
    assert_eq!(details["causes"][0]["field"], "metadata.name");

    let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "1svc"}, "spec": {"ports": [{"port": 80}]}});
    let got = r
        .send(
            "POST",
            "/api/v1/namespaces/default/services",
            "application/json",
            serde_json::to_vec(&svc).unwrap(),
        )
        .await;
    assert_status(
        &got,
        422,
        "Invalid",
        "Service \"1svc\" is invalid: metadata.name: Invalid value: \"1svc\": a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character",
    );
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a.b"}});
    let got = r
        .send(
            "POST",
            "/api/v1/namespaces",
            "application/json",
            serde_json::to_vec(&ns).unwrap(),
        )
        .await;
    assert_status(
        &got,
        422,
        "Invalid",
        "Namespace \"a.b\" is invalid: metadata.name: Invalid value: \"a.b\": a lowercase RFC 1123 label must consist of",
    );
    let long = "a".repeat(254);
    let got = r
        .send(
            "POST",
            DEPLOYMENTS,
            "application/json",
            serde_json::to_vec(&deployment(&long)).unwrap(),
        )
        .await;
    assert_status(
        &got,
        422,
        "Invalid",
        &format!(
            "Deployment.apps \"{long}\" is invalid: metadata.name: Invalid value: \"{long}\": must be no more than 253 characters"
        ),
    );
    r.h.shutdown().await;
}

#[tokio::test]
async fn oversized_bodies_are_413() {
    let r = Raw::start().await;
    let big = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "big"}, "data": {"blob": "x".repeat(3 * 1024 * 1024)}});
    let got = r
        .send(
            "POST",
            "/api/v1/namespaces/default/configmaps",
            "application/json",
            serde_json::to_vec(&big).unwrap(),
        )
        .await;
    assert_status(
        &got,
        413,
        "RequestEntityTooLarge",
        "Request entity too large: limit is 3145728",
    );
    // Just under the limit is fine.
    let ok = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ok"}, "data": {"blob": "x".repeat(1024 * 1024)}});
    let got = r
        .send(
            "POST",
            "/api/v1/namespaces/default/configmaps",
            "application/json",
            serde_json::to_vec(&ok).unwrap(),
        )
        .await;
    assert_eq!(got.0, 201);
    r.h.shutdown().await;
}

#[tokio::test]
async fn conflicts_and_duplicates_are_409() {
    let r = Raw::start().await;
    let body = serde_json::to_vec(&deployment("x")).unwrap();
    assert_eq!(
        r.send("POST", DEPLOYMENTS, "application/json", body.clone())
            .await
            .0,
        201
    );
    let got = r.send("POST", DEPLOYMENTS, "application/json", body).await;
    assert_status(
        &got,
        409,
        "AlreadyExists",
        "deployments.apps \"x\" already exists",
    );
    let mut stale = deployment("x");
    stale["metadata"]["resourceVersion"] = json!("1");
    let got = r
        .send(
            "PUT",
            &format!("{DEPLOYMENTS}/x"),
            "application/json",
            serde_json::to_vec(&stale).unwrap(),
        )
        .await;
    assert_status(
        &got,
        409,
        "Conflict",
        "Operation cannot be fulfilled on deployments.apps \"x\": the object has been modified",
    );
    r.h.shutdown().await;
}

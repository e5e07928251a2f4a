use super::*;

fn context(server: &str) -> Context {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["admin".to_owned()])
        .unwrap()
        .signed_by(&key, &rcgen::Issuer::new(ca_params, ca_key))
        .unwrap();
    Context {
        name: "test".into(),
        server: server.into(),
        certificate_authority_data: ca.pem(),
        client_certificate_data: cert.pem(),
        client_key_data: key.serialize_pem(),
        tls_server_name: None,
    }
}

#[test]
fn addresses_without_a_scheme_get_https() {
    assert_eq!(normalise_server("127.0.0.1:7443"), "https://127.0.0.1:7443");
    assert_eq!(normalise_server(" https://hub:7443/ "), "https://hub:7443");
}

#[test]
fn a_good_context_makes_an_endpoint() {
    let endpoint = endpoint(&context("hub.example:7443")).unwrap();
    assert_eq!(endpoint.uri().to_string(), "https://hub.example:7443/");
    assert_eq!(endpoint.get_connect_timeout(), Some(CONNECT_TIMEOUT));
}

#[test]
fn plain_http_is_refused() {
    let err = endpoint(&context("http://hub:7443")).unwrap_err();
    assert!(matches!(err, ClientError::BadAddress { .. }), "{err:?}");
    assert!(err.to_string().contains("https://HOST:PORT"), "{err}");
}

#[test]
fn malformed_pem_names_the_field() {
    let mut ctx = context("https://hub:7443");
    ctx.client_key_data = "not a key".into();
    let err = endpoint(&ctx).unwrap_err().to_string();
    assert!(err.contains("client-key-data"), "{err}");
    assert!(err.contains("gitfleet config import"), "{err}");

    let mut ctx = context("https://hub:7443");
    ctx.certificate_authority_data = String::new();
    let err = endpoint(&ctx).unwrap_err().to_string();
    assert!(
        err.contains("certificate-authority-data: it is empty"),
        "{err}"
    );

    let mut ctx = context("https://hub:7443");
    ctx.client_certificate_data =
        "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n".into();
    let err = endpoint(&ctx).unwrap_err().to_string();
    assert!(err.contains("client-certificate-data"), "{err}");
}

#[tokio::test]
async fn an_unreachable_hub_says_where_it_looked() {
    // Bind then drop a listener: nothing listens on that port any more.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let server = format!("https://127.0.0.1:{port}");
    let err = AdminClient::connect(&context(&server)).await.unwrap_err();
    assert!(matches!(err, ClientError::Unreachable { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains(&format!("is the hub running at {server}?")),
        "{text}"
    );
    assert!(text.contains("GITFLEET_CONFIG"), "{text}");
}

#[test]
fn statuses_map_to_errors_that_say_what_to_do() {
    let map = |s: tonic::Status| ClientError::from_status("https://hub:7443", s);
    let err = map(tonic::Status::invalid_argument(
        "apps/web.yaml#0: app \"web\": spec.path: must be relative",
    ));
    assert_eq!(
        err.to_string(),
        "apps/web.yaml#0: app \"web\": spec.path: must be relative"
    );
    assert!(matches!(
        map(tonic::Status::not_found("x")),
        ClientError::NotFound { .. }
    ));
    let err = map(tonic::Status::permission_denied(
        "spoke certificates cannot call Admin",
    ));
    assert!(err.to_string().contains("admin certificate"), "{err}");
    let err = map(tonic::Status::unavailable("connection refused"));
    assert!(matches!(err, ClientError::Unreachable { .. }), "{err:?}");
    // A replica of a highly available hub between two leaders: not "is the hub running?".
    let err = map(tonic::Status::unavailable(
        "no hub replica leads right now (an election is under way); retry",
    ));
    assert!(matches!(err, ClientError::NoLeader { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("nothing was changed: run the command again"),
        "{err}"
    );
    let err = map(tonic::Status::unavailable(
        "received fatal alert: UnknownCA",
    ));
    assert!(matches!(err, ClientError::Tls { .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with("certificate rejected talking to https://hub:7443"),
        "{err}"
    );
    let err = map(tonic::Status::unimplemented(""));
    assert!(
        err.to_string().contains("older than this gitfleet CLI"),
        "{err}"
    );
    let err = map(tonic::Status::internal("sled: disk full"));
    assert!(
        matches!(
            err,
            ClientError::Rpc {
                code: tonic::Code::Internal,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn tls_failures_say_which_side_refused() {
    let map = |m: &str| {
        ClientError::from_status("https://hub:7443", tonic::Status::unknown(m)).to_string()
    };
    assert!(
        map("transport error: invalid peer certificate: UnknownIssuer")
            .contains("not signed by this context's CA")
    );
    assert!(
        map("received fatal alert: UnknownCA")
            .contains("the hub does not trust this admin certificate")
    );
    assert!(
        map("invalid peer certificate: certificate expired: verification time 5")
            .contains("has expired")
    );
    let other = map("invalid peer certificate: BadSignature");
    assert!(other.contains("certificate rejected talking to https://hub:7443: invalid peer certificate: BadSignature;"), "{other}");
}

use super::*;

#[test]
fn the_session_path_is_the_link_services() {
    assert_eq!(
        SESSION_PATH,
        format!("/{}/Session", gitfleet_proto::v1::link_server::SERVICE_NAME)
    );
}

#[test]
fn followers_serve_sessions_and_live_reads_and_hand_over_the_rest() {
    assert_eq!(
        WATCH_PREFIX,
        format!("/{}/", gitfleet_proto::v1::watch_server::SERVICE_NAME)
    );
    assert!(served_by_followers(SESSION_PATH));
    assert!(served_by_followers("/gitfleet.v1.Watch/WatchEvents"));
    assert!(!served_by_followers("/gitfleet.v1.Admin/Status"));
    assert!(!served_by_followers("/gitfleet.v1.Rollouts/ListEvents"));
    assert!(!served_by_followers("/gitfleet.v1.WatchOther/X"));
}

#[test]
fn every_forwarded_header_is_taken_out() {
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/grpc"));
    headers.append(FORWARDED_CLIENT_CERT, HeaderValue::from_static("AAAA"));
    headers.append(FORWARDED_CLIENT_CERT, HeaderValue::from_static("BBBB"));
    headers.insert(FORWARDED_FOR, HeaderValue::from_static("192.0.2.1:5"));
    headers.insert(
        "X-Gitfleet-Forwarded-Something-New",
        HeaderValue::from_static("x"),
    );
    let taken = take_forwarded(&mut headers);
    assert!(!taken.is_empty());
    assert_eq!(taken.client_cert.len(), 2);
    assert_eq!(taken.remote.len(), 1);
    assert_eq!(
        headers.keys().map(|k| k.as_str()).collect::<Vec<_>>(),
        ["content-type"]
    );

    let mut plain = HeaderMap::new();
    plain.insert("x-gitfleet-other", HeaderValue::from_static("kept"));
    assert!(take_forwarded(&mut plain).is_empty());
    assert_eq!(plain.len(), 1);
}

#[test]
fn the_caller_goes_over_and_comes_back_as_it_was() {
    let cert = vec![0x30, 0x82, 0x01, 0x0a, 0xff, 0x00];
    let remote: SocketAddr = "[2001:db8::1]:4433".parse().unwrap();
    let mut headers = HeaderMap::new();
    add_forwarded(&mut headers, Some(&cert), Some(remote));
    let forwarded = take_forwarded(&mut headers).parse().unwrap();
    assert_eq!(forwarded.client_cert.as_deref(), Some(cert.as_slice()));
    assert_eq!(forwarded.remote_addr, Some(remote));

    // A caller without a certificate is forwarded as one.
    let mut headers = HeaderMap::new();
    add_forwarded(&mut headers, None, Some(remote));
    let forwarded = take_forwarded(&mut headers).parse().unwrap();
    assert_eq!(forwarded.client_cert, None);
    assert_eq!(forwarded.remote_addr, Some(remote));
}

#[test]
fn bad_forwarded_headers_are_refused_naming_the_header() {
    let refused = |name: &'static str, values: &[&'static str]| {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(name, HeaderValue::from_static(v));
        }
        let status = take_forwarded(&mut headers).parse().unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        status.message().to_owned()
    };
    assert_eq!(
        refused(FORWARDED_FOR, &["not an address"]),
        "header x-gitfleet-forwarded-for of a call handed over by a hub replica is not an address (\"not an address\"): invalid socket address syntax"
    );
    assert!(
        refused(FORWARDED_CLIENT_CERT, &["***"]).starts_with(
            "header x-gitfleet-forwarded-client-cert of a call handed over by a hub replica is not base64: "
        )
    );
    assert_eq!(
        refused(FORWARDED_FOR, &["192.0.2.1:1", "192.0.2.2:1"]),
        "header x-gitfleet-forwarded-for of a call handed over by a hub replica appears more than once"
    );
}

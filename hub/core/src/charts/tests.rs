use super::*;

const D1: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const D2: &str = "2222222222222222222222222222222222222222222222222222222222222222";

fn budget() -> Budget {
    Budget::new(INDEX_LIMITS)
}

fn index() -> String {
    format!(
        "apiVersion: v1
entries:
  podinfo:
  - version: 6.5.4
    digest: \"{D1}\"
    urls: [podinfo-6.5.4.tgz]
  - version: 6.6.0
    digest: \"{D2}\"
    urls: [https://cdn.example.com/podinfo-6.6.0.tgz]
  - version: 7.0.0-rc.1
    digest: \"{D2}\"
    urls: [/charts/podinfo-7.0.0-rc.1.tgz]
  nodigest:
  - version: 1.0.0
    urls: [a.tgz]
"
    )
}

#[test]
fn repositories_https_and_oci_http_only_on_loopback() {
    for ok in [
        "https://charts.example.com",
        "https://charts.example.com/sub/",
        "oci://registry.example.com/charts",
        "oci://registry.example.com:5000",
        "http://127.0.0.1:8080",
        "http://localhost/charts",
        "http://[::1]:80",
    ] {
        assert_eq!(repository_problem(ok), None, "{ok}");
    }
    for (bad, says) in [
        ("charts.example.com", "https:// or oci://"),
        ("ftp://x", "https:// or oci://"),
        ("http://charts.example.com", "loopback"),
        ("https://", "host"),
        ("https://user:pw@charts.example.com", "user information"),
        ("https://charts.example.com/?x=1", "query"),
        ("https://charts.example.com/a/../b", "'..'"),
        ("https://169.254.169.254/latest", "link-local"),
        ("oci://[fe80::1]/x", "link-local"),
    ] {
        let problem = repository_problem(bad).unwrap_or_default();
        assert!(problem.contains(says), "{bad}: {problem}");
    }
}

#[test]
fn chart_names() {
    assert_eq!(chart_name_problem("podinfo"), None);
    assert_eq!(chart_name_problem("cert-manager_x.1"), None);
    assert!(chart_name_problem("").is_some());
    assert!(chart_name_problem("Podinfo").is_some());
    assert!(chart_name_problem("a/b").is_some());
    assert!(chart_name_problem("-x").is_some());
    assert!(chart_name_problem("a..b").is_some());
}

#[test]
fn versions_exact_or_range() {
    assert!(matches!(Wanted::parse("6.5.4"), Ok(Wanted::Exact(_))));
    assert!(matches!(Wanted::parse("v6.5.4"), Ok(Wanted::Exact(_))));
    assert!(matches!(Wanted::parse("^6.0.0"), Ok(Wanted::Range(_))));
    assert!(matches!(Wanted::parse(">=1, <2"), Ok(Wanted::Range(_))));
    assert!(Wanted::parse("").is_err());
    let err = Wanted::parse(">>1").unwrap_err();
    assert!(err.contains(">>1"), "{err}");
}

#[test]
fn an_exact_version_is_not_a_caret_range() {
    let exact = Wanted::parse("6.5.4").unwrap();
    assert_eq!(highest(["6.5.4", "6.6.0"], &exact), Some("6.5.4"));
    assert_eq!(highest(["6.6.0"], &exact), None);
}

#[test]
fn picks_the_highest_matching_version_and_resolves_its_url() {
    let url = "https://charts.example.com/sub/index.yaml";
    let wanted = Wanted::parse("^6.0.0").unwrap();
    let r = pick_from_index(
        &index(),
        url,
        "https://charts.example.com/sub",
        "podinfo",
        &wanted,
        &budget(),
    )
    .unwrap();
    assert_eq!(r.version, "6.6.0");
    assert_eq!(r.digest, format!("sha256:{D2}"));
    assert_eq!(r.url, "https://cdn.example.com/podinfo-6.6.0.tgz");

    let exact = Wanted::parse("6.5.4").unwrap();
    let r = pick_from_index(&index(), url, "x", "podinfo", &exact, &budget()).unwrap();
    assert_eq!(r.url, "https://charts.example.com/sub/podinfo-6.5.4.tgz");
    assert_eq!(r.digest, format!("sha256:{D1}"));

    let pre = Wanted::parse(">=7.0.0-rc.0").unwrap();
    let r = pick_from_index(&index(), url, "x", "podinfo", &pre, &budget()).unwrap();
    assert_eq!(
        r.url,
        "https://charts.example.com/charts/podinfo-7.0.0-rc.1.tgz"
    );
}

#[test]
fn index_errors_name_the_url_and_what_is_wrong() {
    let url = "https://c.example.com/index.yaml";
    let any = Wanted::parse("*").unwrap();
    let e = pick_from_index(&index(), url, "x", "nginx", &any, &budget()).unwrap_err();
    assert!(matches!(e, ChartError::NotInIndex { .. }), "{e}");
    let e = pick_from_index(
        &index(),
        url,
        "x",
        "podinfo",
        &Wanted::parse("^9").unwrap(),
        &budget(),
    )
    .unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains(url) && text.contains("6.5.4, 6.6.0"),
        "{text}"
    );
    let e = pick_from_index(&index(), url, "x", "nodigest", &any, &budget()).unwrap_err();
    assert!(e.to_string().contains("no `digest`"), "{e}");
    let e = pick_from_index("entries: [", url, "x", "podinfo", &any, &budget()).unwrap_err();
    assert!(matches!(e, ChartError::Index { .. }), "{e}");
    let e = pick_from_index("apiVersion: v1\n", url, "x", "podinfo", &any, &budget()).unwrap_err();
    assert!(e.to_string().contains("entries"), "{e}");
}

#[test]
fn relative_urls() {
    let base = "http://127.0.0.1:8080/charts/index.yaml";
    assert_eq!(
        resolve_url(base, "a.tgz").unwrap(),
        "http://127.0.0.1:8080/charts/a.tgz"
    );
    assert_eq!(
        resolve_url(base, "./a.tgz").unwrap(),
        "http://127.0.0.1:8080/charts/a.tgz"
    );
    assert_eq!(
        resolve_url(base, "/a.tgz").unwrap(),
        "http://127.0.0.1:8080/a.tgz"
    );
    assert_eq!(
        resolve_url("https://h/index.yaml", "a.tgz").unwrap(),
        "https://h/a.tgz"
    );
    assert!(resolve_url(base, "file:///etc/passwd").is_err());
}

#[test]
fn oci_sources_and_manifests() {
    let s = ChartSource::of("oci://registry.example.com/charts/", "podinfo").unwrap();
    assert_eq!(
        s.tags_url().unwrap(),
        "https://registry.example.com/v2/charts/podinfo/tags/list"
    );
    let s = ChartSource::of("oci://127.0.0.1:5000", "podinfo").unwrap();
    assert_eq!(
        s.manifest_url("6.5.4").unwrap(),
        "http://127.0.0.1:5000/v2/podinfo/manifests/6.5.4"
    );
    assert_eq!(s.index_url(), None);
    let r = ChartSource::of("https://c.example.com/", "podinfo").unwrap();
    assert_eq!(r.index_url().unwrap(), "https://c.example.com/index.yaml");
    assert!(ChartSource::of("http://c.example.com", "x").is_err());

    let manifest = format!(
        r#"{{"schemaVersion":2,"config":{{"mediaType":"application/vnd.cncf.helm.config.v1+json","digest":"sha256:{D1}"}},
        "layers":[{{"mediaType":"{HELM_LAYER_MEDIA_TYPE}","digest":"sha256:{D2}","size":10}}]}}"#
    );
    let b = Budget::new(Limits::DEFAULT);
    assert_eq!(
        chart_layer(&manifest, "u", &b).unwrap(),
        format!("sha256:{D2}")
    );
    let image = format!(
        r#"{{"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:{D2}"}}]}}"#
    );
    let e = chart_layer(&image, "u", &b).unwrap_err();
    assert!(e.to_string().contains("not a Helm chart"), "{e}");
    let tags = parse_tags(
        r#"{"name":"podinfo","tags":["6.5.4","latest","6.6.0_build.1"]}"#,
        "u",
        &b,
    )
    .unwrap();
    assert_eq!(tags.len(), 3);
    assert_eq!(tag_to_version("6.6.0_build.1"), "6.6.0+build.1");
}

#[test]
fn digests() {
    let bytes = b"chart";
    let d = sha256_digest(bytes);
    assert!(check_digest(bytes, &d, "u").is_ok());
    assert!(check_digest(bytes, d.trim_start_matches("sha256:"), "u").is_ok());
    let e = check_digest(b"tampered", &d, "http://x/c.tgz").unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains(&d) && text.contains("http://x/c.tgz"),
        "{text}"
    );
    assert!(normalize_digest("abc").is_err());
    assert_eq!(
        normalize_digest(&D1.to_ascii_uppercase()).unwrap(),
        format!("sha256:{D1}")
    );
}

#[test]
fn refused_addresses() {
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    assert!(address_problem(ip("169.254.169.254"), true).is_some());
    assert!(address_problem(ip("fe80::1"), true).is_some());
    assert!(address_problem(ip("fd00:ec2::254"), true).is_some());
    assert!(address_problem(ip("::ffff:169.254.169.254"), true).is_some());
    assert!(address_problem(ip("0.0.0.0"), true).is_some());
    assert!(address_problem(ip("224.0.0.1"), true).is_some());
    assert!(address_problem(ip("127.0.0.1"), false).is_some());
    assert_eq!(address_problem(ip("127.0.0.1"), true), None);
    assert_eq!(address_problem(ip("10.1.2.3"), false), None);
    assert_eq!(address_problem(ip("2001:db8::1"), false), None);
    assert!(host_problem("metadata.google.internal.").is_some());
    assert_eq!(host_problem("charts.example.com"), None);
}

#[test]
fn resolution_describes_itself() {
    let r = ResolvedChart {
        repository: "https://c".into(),
        name: "podinfo".into(),
        version: "6.5.4".into(),
        digest: format!("sha256:{D1}"),
        url: "https://c/p.tgz".into(),
        manifest_digest: String::new(),
    };
    assert_eq!(r.describe(), "podinfo 6.5.4 (sha256:111111111111)");
    assert!(r.is_of("https://c", "podinfo"));
    assert!(!r.is_of("https://c", "other"));
}

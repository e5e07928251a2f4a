use super::*;

fn csr_for(key: &KeyPair) -> String {
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, "whatever-the-spoke-asks");
    params.serialize_request(key).unwrap().pem().unwrap()
}

fn der_of(pem: &str) -> Vec<u8> {
    let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
    p.contents
}

#[test]
fn uris_map_to_peers() {
    assert_eq!(
        identify_uris(&["spiffe://gitfleet/cluster/eu-1"]),
        Ok(Peer::Cluster("eu-1".into()))
    );
    assert_eq!(
        identify_uris(&["https://example.com", "spiffe://gitfleet/admin/admin"]),
        Ok(Peer::Admin("admin".into()))
    );
    assert_eq!(identify_uris(&[]), Err(IdentityError::NoIdentity));
    assert_eq!(
        identify_uris(&["spiffe://other/cluster/x"]),
        Err(IdentityError::NoIdentity)
    );
    assert_eq!(
        identify_uris(&["spiffe://gitfleet/cluster/a", "spiffe://gitfleet/admin/b"]),
        Err(IdentityError::Ambiguous)
    );
    for bad in [
        "spiffe://gitfleet/cluster/",
        "spiffe://gitfleet/cluster/UPPER",
        "spiffe://gitfleet/cluster/a/b",
        "spiffe://gitfleet/robot/x",
    ] {
        assert!(
            matches!(identify_uris(&[bad]), Err(IdentityError::Malformed(_))),
            "{bad}"
        );
    }
}

#[test]
fn dns1123_labels() {
    assert_eq!(dns1123_label_problem("eu-1"), None);
    assert_eq!(dns1123_label_problem("a"), None);
    assert!(dns1123_label_problem("").is_some());
    assert!(dns1123_label_problem("-a").is_some());
    assert!(dns1123_label_problem("a-").is_some());
    assert!(dns1123_label_problem("A").is_some());
    assert!(dns1123_label_problem("a.b").is_some());
    assert!(dns1123_label_problem(&"a".repeat(64)).is_some());
}

#[test]
fn creates_once_and_reloads_the_same_ca() {
    let dir = tempfile::tempdir().unwrap();
    let first = Pki::load_or_create(dir.path(), &[]).unwrap();
    let second = Pki::load_or_create(dir.path(), &[]).unwrap();
    assert_eq!(first.ca_pem(), second.ca_pem());
    assert_eq!(first.server().cert_pem, second.server().cert_pem);
    assert_eq!(first.admin().cert_pem, second.admin().cert_pem);
    assert_eq!(
        identify(&der_of(&first.admin().cert_pem)),
        Ok(Peer::Admin("admin".into()))
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("ca.key"))
        .unwrap()
        .permissions();
    assert_eq!(mode.mode() & 0o777, 0o600);
}

#[test]
fn server_certificate_is_reissued_for_new_names() {
    let dir = tempfile::tempdir().unwrap();
    let first = Pki::load_or_create(dir.path(), &[]).unwrap();
    let facts = cert_facts(&first.server().cert_pem, dir.path()).unwrap();
    for n in ["localhost", "127.0.0.1", "::1"] {
        assert!(facts.dns_and_ips.iter().any(|s| s == n), "{n} in {facts:?}");
    }
    let second = Pki::load_or_create(dir.path(), &["hub.example.com".into()]).unwrap();
    assert_ne!(first.server().cert_pem, second.server().cert_pem);
    let facts = cert_facts(&second.server().cert_pem, dir.path()).unwrap();
    assert!(facts.dns_and_ips.iter().any(|s| s == "hub.example.com"));
    assert_eq!(first.ca_pem(), second.ca_pem());
}

#[test]
fn signs_a_csr_for_the_cluster_name_only() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::load_or_create(dir.path(), &[]).unwrap();
    let key = KeyPair::generate().unwrap();
    let issued = pki
        .sign_cluster_csr(&csr_for(&key), "eu-1", DEFAULT_CLUSTER_CERT_VALIDITY)
        .unwrap();
    let der = der_of(&issued.certificate_pem);
    assert_eq!(identify(&der), Ok(Peer::Cluster("eu-1".into())));
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    // The certificate is for the spoke's own key.
    assert_eq!(
        cert.public_key().subject_public_key.data.as_ref(),
        key.public_key_raw()
    );
    let cn = cert.subject().iter_common_name().next().unwrap();
    assert_eq!(cn.as_str().unwrap(), "eu-1");
    let days = (issued.not_after_unix - now_unix()) / 86400;
    assert!((29..=30).contains(&days), "{days}");
}

#[test]
fn refuses_bad_csrs_and_names() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::load_or_create(dir.path(), &[]).unwrap();
    let key = KeyPair::generate().unwrap();
    let csr = csr_for(&key);
    let err = pki
        .sign_cluster_csr("not a csr", "eu-1", DEFAULT_CLUSTER_CERT_VALIDITY)
        .unwrap_err();
    assert!(matches!(err, PkiError::InvalidCsr(_)), "{err}");
    let err = pki
        .sign_cluster_csr(&csr, "Bad_Name", DEFAULT_CLUSTER_CERT_VALIDITY)
        .unwrap_err();
    assert!(err.to_string().contains("Bad_Name"), "{err}");

    // Flip a byte inside the signature: the CSR no longer verifies.
    let (_, pem) = x509_parser::pem::parse_x509_pem(csr.as_bytes()).unwrap();
    let mut der = pem.contents.clone();
    let last = der.len() - 2;
    der[last] ^= 0x55;
    use base64::Engine as _;
    let tampered = format!(
        "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
        base64::engine::general_purpose::STANDARD.encode(&der)
    );
    let err = pki
        .sign_cluster_csr(&tampered, "eu-1", DEFAULT_CLUSTER_CERT_VALIDITY)
        .unwrap_err();
    assert!(matches!(err, PkiError::InvalidCsr(_)), "{err}");
}

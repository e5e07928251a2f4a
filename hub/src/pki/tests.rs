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
fn a_replica_uri_names_no_peer() {
    assert_eq!(
        identify_uris(&["spiffe://gitfleet/replica/r0123abcd"]),
        Err(IdentityError::Replica)
    );
    assert_eq!(
        identify_uris(&[
            "spiffe://gitfleet/replica/r0123abcd",
            "spiffe://gitfleet/admin/admin"
        ]),
        Err(IdentityError::Ambiguous)
    );
    assert!(matches!(
        identify_uris(&["spiffe://gitfleet/replica/"]),
        Err(IdentityError::Malformed(_))
    ));
}

#[test]
fn only_a_replica_certificate_is_a_replicas() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::load_or_create(dir.path(), &[]).unwrap();
    let replica = der_of(&pki.issue_replica(REPLICA_CERT_VALIDITY).unwrap().cert_pem);
    assert!(is_replica(&replica));
    assert_eq!(identify(&replica), Err(IdentityError::Replica));
    let (_, cert) = x509_parser::parse_x509_certificate(&replica).unwrap();
    let hours = (cert.validity().not_after.timestamp() - now_unix()) / 3600;
    assert!((23..=24).contains(&hours), "{hours}");

    let key = KeyPair::generate().unwrap();
    let cluster = pki
        .sign_cluster_csr(&csr_for(&key), "eu-1", DEFAULT_CLUSTER_CERT_VALIDITY)
        .unwrap();
    let user = pki.issue_user("alice", ADMIN_VALIDITY).unwrap();
    for (what, pem) in [
        ("cluster", cluster.certificate_pem.as_str()),
        ("user", user.credential.cert_pem.as_str()),
        ("admin", pki.admin().cert_pem.as_str()),
        ("server", pki.server().cert_pem.as_str()),
        ("CA", pki.ca_pem()),
    ] {
        assert!(!is_replica(&der_of(pem)), "{what}");
    }
    // A CSR asking for a replica's URI gets a cluster certificate all the same.
    let mut params = CertificateParams::default();
    params.subject_alt_names = vec![SanType::URI(
        "spiffe://gitfleet/replica/r1".try_into().unwrap(),
    )];
    let csr = params.serialize_request(&key).unwrap().pem().unwrap();
    let issued = pki
        .sign_cluster_csr(&csr, "eu-2", DEFAULT_CLUSTER_CERT_VALIDITY)
        .unwrap();
    let der = der_of(&issued.certificate_pem);
    assert!(!is_replica(&der));
    assert_eq!(identify(&der), Ok(Peer::Cluster("eu-2".into())));
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

#[test]
fn a_missing_half_of_the_ca_stops_the_hub_instead_of_replacing_it() {
    for missing in ["ca.crt", "ca.key"] {
        let dir = tempfile::tempdir().unwrap();
        Pki::load_or_create(dir.path(), &[]).unwrap();
        std::fs::remove_file(dir.path().join(missing)).unwrap();
        let err = Pki::load_or_create(dir.path(), &[]).unwrap_err();
        assert!(
            matches!(&err, PkiError::MissingCaFile { missing: m, .. } if m.ends_with(missing)),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(text.contains(missing), "names the missing file: {text}");
        assert!(text.contains("backup"), "says what to do: {text}");
        // Nothing was replaced: put the file back and the same CA loads.
        assert!(!dir.path().join(missing).exists());
        let present = if missing == "ca.crt" {
            "ca.key"
        } else {
            "ca.crt"
        };
        assert!(dir.path().join(present).exists());
    }
    // Both gone: a new CA (a first start).
    let dir = tempfile::tempdir().unwrap();
    let first = Pki::load_or_create(dir.path(), &[]).unwrap();
    std::fs::remove_file(dir.path().join("ca.crt")).unwrap();
    std::fs::remove_file(dir.path().join("ca.key")).unwrap();
    let second = Pki::load_or_create(dir.path(), &[]).unwrap();
    assert_ne!(first.ca_pem(), second.ca_pem());
}

#[test]
fn a_ca_key_that_is_not_the_certificates_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    Pki::load_or_create(dir.path(), &[]).unwrap();
    let other = tempfile::tempdir().unwrap();
    Pki::load_or_create(other.path(), &[]).unwrap();
    std::fs::copy(other.path().join("ca.key"), dir.path().join("ca.key")).unwrap();
    let err = Pki::load_or_create(dir.path(), &[]).unwrap_err();
    assert!(matches!(err, PkiError::CaKeyMismatch { .. }), "{err:?}");
    assert!(err.to_string().contains("ca.key"), "{err}");
}

#[test]
fn a_ca_creation_cut_short_by_a_crash_is_finished_at_the_next_start() {
    // The crash came after the key took its name and before the certificate did: the
    // certificate is still staged next to it.
    let dir = tempfile::tempdir().unwrap();
    let first = Pki::load_or_create(dir.path(), &[]).unwrap();
    std::fs::rename(dir.path().join("ca.crt"), dir.path().join(".ca.crt.new")).unwrap();
    let second = Pki::load_or_create(dir.path(), &[]).unwrap();
    assert_eq!(first.ca_pem(), second.ca_pem(), "the same CA, finished");
    assert!(!dir.path().join(".ca.crt.new").exists());
    // A staged file that does not belong with the one present completes nothing.
    let other = tempfile::tempdir().unwrap();
    Pki::load_or_create(other.path(), &[]).unwrap();
    std::fs::remove_file(dir.path().join("ca.crt")).unwrap();
    std::fs::copy(other.path().join("ca.crt"), dir.path().join(".ca.crt.new")).unwrap();
    let err = Pki::load_or_create(dir.path(), &[]).unwrap_err();
    assert!(matches!(err, PkiError::MissingCaFile { .. }), "{err:?}");
}

#[test]
fn pki_files_are_replaced_whole_and_keys_stay_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let first = Pki::load_or_create(dir.path(), &[]).unwrap();
    // A key file left with a wider mode (an older hub, an operator's copy) is replaced by one
    // that is private again when the hub writes it: a new file, never the old one reused.
    let server_key = dir.path().join("server.key");
    std::fs::set_permissions(&server_key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let inode = |p: &Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap());
    let before = inode(&server_key);
    let second = Pki::load_or_create(dir.path(), &["hub.example.com".into()]).unwrap();
    assert_ne!(first.server().cert_pem, second.server().cert_pem);
    assert_ne!(inode(&server_key), before, "a new file took the name");
    for key in ["ca.key", "server.key", "admin.key"] {
        let mode = std::fs::metadata(dir.path().join(key))
            .unwrap()
            .permissions();
        assert_eq!(mode.mode() & 0o777, 0o600, "{key}");
    }
    for crt in ["ca.crt", "server.crt", "admin.crt"] {
        let mode = std::fs::metadata(dir.path().join(crt))
            .unwrap()
            .permissions();
        assert_eq!(mode.mode() & 0o777, 0o644, "{crt}");
    }
    // No temporary file is left behind.
    let leftovers: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn an_atomic_write_leaves_the_old_content_or_the_new() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    write_atomic(&path, b"old", true).unwrap();
    write_atomic(&path, b"new", true).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"new");
    // A write that cannot happen (the directory is gone) changes nothing and leaves nothing.
    let gone = dir.path().join("gone/f");
    assert!(write_atomic(&gone, b"x", false).is_err());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn a_server_key_that_does_not_match_its_certificate_is_issued_again() {
    let dir = tempfile::tempdir().unwrap();
    let first = Pki::load_or_create(dir.path(), &[]).unwrap();
    // A crash between writing the new key and the new certificate.
    std::fs::write(
        dir.path().join("server.key"),
        KeyPair::generate().unwrap().serialize_pem(),
    )
    .unwrap();
    let second = Pki::load_or_create(dir.path(), &[]).unwrap();
    assert_ne!(first.server().cert_pem, second.server().cert_pem);
    let facts = cert_facts(&second.server().cert_pem, dir.path()).unwrap();
    let key = KeyPair::from_pem(&second.server().key_pem).unwrap();
    assert_eq!(facts.public_key, key.public_key_raw());
}

#[test]
fn a_certificates_key_has_the_fingerprint_bound_at_issue() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::load_or_create(dir.path(), &[]).unwrap();
    let key = KeyPair::generate().unwrap();
    let csr = pki.verify_csr(&csr_for(&key)).unwrap();
    let issued = pki
        .sign_cluster(&csr, "eu-1", DEFAULT_CLUSTER_CERT_VALIDITY)
        .unwrap();
    let seen = cert_key(&der_of(&issued.certificate_pem)).unwrap();
    assert_eq!(seen.fingerprint, issued.key_fingerprint);
    assert_eq!(seen.fingerprint, csr.key_fingerprint);
    assert_eq!(seen.not_after_unix, issued.not_after_unix);
    // Another key, another fingerprint.
    let other = pki
        .sign_cluster_csr(
            &csr_for(&KeyPair::generate().unwrap()),
            "eu-1",
            DEFAULT_CLUSTER_CERT_VALIDITY,
        )
        .unwrap();
    assert_ne!(other.key_fingerprint, issued.key_fingerprint);
    assert_eq!(pki.csr_work(), (2, 2));
}

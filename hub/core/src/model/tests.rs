use super::*;

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn token(pairs: &[(&str, &str)], allowed: &[&str], cluster: Option<&str>) -> TokenRecord {
    TokenRecord {
        id: "tok1".into(),
        expires_at_unix: 100,
        max_uses: 1,
        uses: 0,
        labels: labels(pairs),
        description: String::new(),
        revoked: false,
        allowed_label_keys: allowed.iter().map(|k| (*k).to_owned()).collect(),
        cluster: cluster.map(str::to_owned),
    }
}

fn cluster(token_id: &str) -> ClusterRecord {
    ClusterRecord {
        name: "dev-1".into(),
        labels: BTreeMap::new(),
        agent_version: String::new(),
        registered_at_unix: 1,
        certificate_expires_unix: 500,
        last_contact_unix: 0,
        revoked: false,
        key_fingerprint: "aa".into(),
        renewed_key_fingerprints: Vec::new(),
        pending: true,
        token_id: token_id.into(),
    }
}

#[test]
fn the_tokens_labels_are_the_clusters_labels() {
    let t = token(&[("env", "dev")], &[], None);
    assert_eq!(
        t.admit("dev-1", &labels(&[])),
        Ok(labels(&[("env", "dev")]))
    );
    // Proposing what the token says is fine.
    assert_eq!(
        t.admit("dev-1", &labels(&[("env", "dev")])),
        Ok(labels(&[("env", "dev")]))
    );
    // A token minted for env=dev does not register a cluster that also claims team=payments.
    let err = t
        .admit("dev-1", &labels(&[("env", "dev"), ("team", "payments")]))
        .unwrap_err();
    assert!(
        matches!(&err, AdmissionProblem::LabelNotAllowed { key, .. } if key == "team"),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(text.contains("\"team\""), "names the key: {text}");
    assert!(text.contains("allowed: none"), "{text}");
    assert!(
        text.contains("--allow-label-key team"),
        "says what to do: {text}"
    );
    assert!(!text.ends_with('.'), "{text}");
    // Nor one that says env=prod.
    let err = t.admit("dev-1", &labels(&[("env", "prod")])).unwrap_err();
    assert_eq!(
        err,
        AdmissionProblem::LabelChanged {
            token_id: "tok1".into(),
            key: "env".into(),
            expected: "dev".into(),
            proposed: "prod".into(),
        }
    );
    assert!(err.to_string().contains("env=dev"), "{err}");
}

#[test]
fn a_spoke_adds_labels_only_under_allowed_keys() {
    let t = token(&[("env", "dev")], &["zone", "rack"], None);
    assert_eq!(
        t.admit("dev-1", &labels(&[("zone", "a"), ("rack", "r7")])),
        Ok(labels(&[("env", "dev"), ("zone", "a"), ("rack", "r7")]))
    );
    let err = t
        .admit("dev-1", &labels(&[("zone", "a"), ("team", "x")]))
        .unwrap_err();
    assert!(err.to_string().contains("allowed: rack, zone"), "{err}");
    // An allowed key does not let the spoke change a label the token sets.
    let t = token(&[("env", "dev")], &["zone"], None);
    assert!(t.admit("dev-1", &labels(&[("env", "prod")])).is_err());
}

#[test]
fn a_pinned_token_registers_its_cluster_only() {
    let t = token(&[], &[], Some("edge-7"));
    assert_eq!(t.admit("edge-7", &labels(&[])), Ok(labels(&[])));
    let err = t.admit("edge-8", &labels(&[])).unwrap_err();
    assert_eq!(
        err.to_string(),
        "bootstrap token tok1 is for cluster \"edge-7\" only, not \"edge-8\""
    );
}

#[test]
fn a_retry_of_its_own_registration_needs_only_an_unrevoked_token() {
    let mut t = token(&[], &[], None);
    t.uses = 1;
    t.expires_at_unix = 10;
    // A new registration needs a usable token.
    assert_eq!(t.check_for(None, 50), Err(TokenProblem::Expired));
    assert_eq!(
        t.check_for(Some(&cluster("another-token")), 50),
        Err(TokenProblem::Expired)
    );
    // The registration this token made comes back after its answer was lost, or approval.
    assert_eq!(t.check_for(Some(&cluster("tok1")), 50), Ok(()));
    // Records from before the hub kept the token accept any token still standing.
    assert_eq!(t.check_for(Some(&cluster("")), 50), Ok(()));
    t.revoked = true;
    assert_eq!(
        t.check_for(Some(&cluster("tok1")), 50),
        Err(TokenProblem::Revoked)
    );
}

#[test]
fn records_written_before_the_new_fields_still_load() {
    // A token and a cluster as an older hub stored them.
    let token: TokenRecord = serde_json::from_str(
        r#"{"id":"abc","expires_at_unix":9,"max_uses":0,"uses":0,"labels":{"env":"dev"},"description":""}"#,
    )
    .unwrap();
    assert!(
        token.allowed_label_keys.is_empty(),
        "a spoke may add nothing"
    );
    assert_eq!(token.cluster, None, "any name");
    assert!(!token.revoked);
    let record: ClusterRecord = serde_json::from_str(
        r#"{"name":"eu-1","labels":{},"agent_version":"","registered_at_unix":1,"certificate_expires_unix":2,"last_contact_unix":0}"#,
    )
    .unwrap();
    assert_eq!(record.key_fingerprint, "");
    assert_eq!(record.token_id, "");
    // And the new fields are written only when set, so an older hub reads new records too.
    let text = serde_json::to_string(&token).unwrap();
    assert!(
        !text.contains("allowed_label_keys") && !text.contains("cluster"),
        "{text}"
    );
}

#[test]
fn only_the_current_certificate_and_a_renewed_one_speak_for_a_cluster() {
    let mut c = cluster("tok1");
    assert_eq!(c.key_binding("aa", 1), KeyBinding::Bound);
    assert_eq!(c.key_binding("bb", 500), KeyBinding::Superseded);
    // Renewed, the spoke not yet holding the new certificate: both get in; the new one, once
    // used, is the only one.
    let renewed = c.renewed("aa", "bb", 900);
    assert_eq!(renewed.certificate_expires_unix, 900);
    assert_eq!(renewed.key_binding("aa", 1), KeyBinding::Bound);
    assert_eq!(renewed.key_binding("bb", 1), KeyBinding::Renewed);
    assert_eq!(renewed.key_binding("cc", 1), KeyBinding::Superseded);
    let bound = renewed.bind_key("bb");
    assert_eq!(bound.key_binding("bb", 1), KeyBinding::Bound);
    assert_eq!(bound.key_binding("aa", 1), KeyBinding::Superseded);
    // A spoke that never confirms (an older one) and renews again on the same stream may hold
    // any of the recent certificates: the last few are accepted, older ones are not.
    let mut again = c.clone();
    for (i, key) in ["k1", "k2", "k3", "k4", "k5"].iter().enumerate() {
        again = again.renewed("aa", key, 900 + i as i64);
    }
    assert_eq!(again.renewed_key_fingerprints.len(), RENEWALS_UNCONFIRMED);
    assert_eq!(again.key_binding("k1", 1), KeyBinding::Superseded);
    assert_eq!(again.key_binding("k2", 1), KeyBinding::Renewed);
    assert_eq!(again.key_binding("k5", 1), KeyBinding::Renewed);
    assert_eq!(again.key_binding("aa", 1), KeyBinding::Bound);
    // A record without a bound key binds the session's key when it renews.
    let mut legacy = c.clone();
    legacy.key_fingerprint.clear();
    assert_eq!(legacy.renewed("aa", "bb", 900).key_fingerprint, "aa");
    // A record from before keys were bound: only the certificate issued last (its expiry is
    // the one recorded) is taken, and its key is bound.
    c.key_fingerprint.clear();
    assert_eq!(c.key_binding("bb", 500), KeyBinding::BindNow);
    assert_eq!(c.key_binding("cc", 499), KeyBinding::Superseded);
}

fn interned_target(app: &str, commit: &str) -> DesiredTarget {
    DesiredTarget::for_tests(app, commit)
}

#[test]
fn equal_targets_are_held_once() {
    let mut interner = TargetInterner::default();
    let a = interner.share(Arc::new(interned_target("web", "c1")));
    let b = interner.share(Arc::new(interned_target("web", "c1")));
    assert!(Arc::ptr_eq(&a, &b));
    // A canary's Target and the rest's: two copies, each shared.
    let canary = interner.share(Arc::new(interned_target("web", "c2")));
    assert!(!Arc::ptr_eq(&a, &canary));
    assert!(Arc::ptr_eq(
        &canary,
        &interner.share(Arc::new(interned_target("web", "c2")))
    ));
    assert!(Arc::ptr_eq(
        &a,
        &interner.share(Arc::new(interned_target("web", "c1")))
    ));
    // Another App's equal-looking Target is its own.
    let api = interner.share(Arc::new(interned_target("api", "c1")));
    assert_eq!(api.app, "api");
    // One decoded from the store joins the shared copy.
    let decoded = Arc::new(interned_target("web", "c1"));
    assert!(Arc::ptr_eq(&a, &interner.share(decoded)));
    // Only the last few distinct Targets of an App are remembered.
    for i in 0..10 {
        interner.share(Arc::new(interned_target("web", &format!("x{i}"))));
    }
    assert!(!Arc::ptr_eq(
        &a,
        &interner.share(Arc::new(interned_target("web", "c1")))
    ));
}

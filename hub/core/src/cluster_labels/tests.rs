use super::*;

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn changes(args: &[&str], overwrite: bool) -> LabelChanges {
    let mut c = LabelChanges {
        overwrite,
        ..Default::default()
    };
    for a in args {
        parse_label_arg(a, &mut c).unwrap();
    }
    c
}

#[test]
fn sets_and_removes_like_kubectl() {
    let old = labels(&[("ring", "canary"), ("team", "a")]);
    let new = apply_label_changes(&old, &changes(&["env=prod", "ring-"], false)).unwrap();
    assert_eq!(new, labels(&[("env", "prod"), ("team", "a")]));
}

#[test]
fn an_empty_value_is_a_value() {
    let c = changes(&["gitfleet.dev/edge="], false);
    let new = apply_label_changes(&BTreeMap::new(), &c).unwrap();
    assert_eq!(new, labels(&[("gitfleet.dev/edge", "")]));
}

#[test]
fn changing_a_value_needs_overwrite() {
    let old = labels(&[("ring", "canary")]);
    let err = apply_label_changes(&old, &changes(&["ring=prod"], false)).unwrap_err();
    assert_eq!(
        err,
        r#"label "ring" already has the value "canary"; pass --overwrite to change it"#
    );
    // The same value again is no change, so needs nothing.
    apply_label_changes(&old, &changes(&["ring=canary"], false)).unwrap();
    let new = apply_label_changes(&old, &changes(&["ring=prod"], true)).unwrap();
    assert_eq!(new, labels(&[("ring", "prod")]));
}

#[test]
fn removing_an_absent_key_changes_nothing() {
    let old = labels(&[("ring", "canary")]);
    assert_eq!(
        apply_label_changes(&old, &changes(&["env-"], false)).unwrap(),
        old
    );
}

#[test]
fn bad_keys_and_values_are_named() {
    let old = BTreeMap::new();
    let err = apply_label_changes(&old, &changes(&["bad key=x"], false)).unwrap_err();
    assert!(
        err.starts_with(r#"label key "bad key" must consist of"#),
        "{err}"
    );
    let err = apply_label_changes(&old, &changes(&["-ring=x"], false)).unwrap_err();
    assert!(
        err.starts_with(r#"label key "-ring" must start and end"#),
        "{err}"
    );
    let err = apply_label_changes(&old, &changes(&["Bad_Prefix/x=y"], false)).unwrap_err();
    assert!(
        err.starts_with(r#"label key "Bad_Prefix/x" has an invalid prefix"#),
        "{err}"
    );
    let err = apply_label_changes(&old, &changes(&["=x"], false)).unwrap_err();
    assert!(err.starts_with(r#"label key "" must have a name"#), "{err}");
    let long = "v".repeat(64);
    let err = apply_label_changes(&old, &changes(&[&format!("env={long}")], false)).unwrap_err();
    assert_eq!(
        err,
        format!(r#"label "env": value "{long}" must be at most 63 characters"#)
    );
    let err = apply_label_changes(&old, &changes(&["env=a/b"], false)).unwrap_err();
    assert!(
        err.starts_with(r#"label "env": value "a/b" must consist of"#),
        "{err}"
    );
}

#[test]
fn arguments_are_parsed_with_kubectls_grammar() {
    let mut c = LabelChanges::default();
    assert_eq!(
        parse_label_arg("env", &mut c).unwrap_err(),
        r#""env" is neither key=value (to set a label) nor key- (to remove one)"#
    );
    parse_label_arg("env=prod", &mut c).unwrap();
    assert_eq!(
        parse_label_arg("env-", &mut c).unwrap_err(),
        r#"label "env" is given more than once"#
    );
    // A value may contain '=' only to be refused by the value check, not misparsed.
    parse_label_arg("x=a=b", &mut c).unwrap();
    assert_eq!(c.set["x"], "a=b");
    let err = apply_label_changes(&BTreeMap::new(), &c).unwrap_err();
    assert!(err.starts_with(r#"label "x": value "a=b""#), "{err}");
}

#[test]
fn nothing_to_change_is_refused() {
    let err = apply_label_changes(&BTreeMap::new(), &LabelChanges::default()).unwrap_err();
    assert!(err.starts_with("no label changes given"), "{err}");
}

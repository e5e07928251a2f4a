use super::*;

const A: SubscriberId = 1;
const B: SubscriberId = 2;

/// Two Targets with ConfigMaps: A's `settings` and `db` in `shop`, B's `settings` in `blog` (the
/// same name in another namespace).
fn two_targets() -> Interests {
    let mut interests = Interests::default();
    interests.add(
        A,
        [Place::new("shop", "settings"), Place::new("shop", "db")],
    );
    interests.add(B, [Place::new("blog", "settings")]);
    interests
}

#[test]
fn an_event_wakes_only_the_subscribers_that_named_the_object() {
    let interests = two_targets();
    assert_eq!(interests.route("shop", "settings"), vec![A]);
    assert_eq!(interests.route("shop", "db"), vec![A]);
    assert_eq!(interests.route("blog", "settings"), vec![B]);
}

#[test]
fn objects_nobody_named_wake_nobody() {
    let interests = two_targets();
    // Another App's object, an inventory ConfigMap, the same name in another namespace.
    assert!(interests.route("shop", "gitfleet-inventory-x").is_empty());
    assert!(interests.route("blog", "db").is_empty());
    assert!(interests.route("", "settings").is_empty());
}

#[test]
fn an_object_two_subscribers_claim_wakes_both() {
    let mut interests = two_targets();
    interests.add(B, [Place::new("shop", "db")]);
    assert_eq!(interests.route("shop", "db"), vec![A, B]);
}

#[test]
fn cluster_scoped_objects_are_routed_by_name() {
    let mut interests = Interests::default();
    interests.add(A, [Place::new("", "shop")]);
    interests.add(B, [Place::new("", "blog")]);
    assert_eq!(interests.route("", "shop"), vec![A]);
    assert_eq!(interests.route("", "blog"), vec![B]);
}

#[test]
fn a_relisted_watch_wakes_every_subscriber_it_covers() {
    let interests = two_targets();
    assert_eq!(interests.listed(&Scope::Cluster), vec![A, B]);
    assert_eq!(interests.listed(&Scope::Namespace("shop".into())), vec![A]);
    assert_eq!(interests.listed(&Scope::Namespace("blog".into())), vec![B]);
    assert!(
        interests
            .listed(&Scope::Namespace("elsewhere".into()))
            .is_empty()
    );
}

#[test]
fn removing_a_subscriber_forgets_only_its_interest() {
    let mut interests = two_targets();
    interests.add(B, [Place::new("shop", "db")]);
    assert!(interests.remove(A));
    assert!(!interests.remove(A), "already gone");
    assert_eq!(interests.route("shop", "db"), vec![B]);
    assert!(interests.route("shop", "settings").is_empty());
    assert_eq!(
        interests.namespaces(),
        BTreeSet::from(["blog".to_owned(), "shop".to_owned()])
    );
    assert!(!interests.is_empty());
    assert!(interests.remove(B));
    assert!(interests.is_empty());
    assert!(interests.namespaces().is_empty());
}

#[test]
fn a_kind_is_watched_once_cluster_wide_while_it_may_be() {
    let interests = two_targets();
    assert_eq!(
        wanted_scopes(&interests, true, false),
        BTreeSet::from([Scope::Cluster])
    );
    assert_eq!(
        wanted_scopes(&interests, false, false),
        BTreeSet::from([Scope::Cluster])
    );
}

#[test]
fn a_kind_forbidden_cluster_wide_is_watched_in_each_namespace_its_subscribers_use() {
    let interests = two_targets();
    assert_eq!(
        wanted_scopes(&interests, true, true),
        BTreeSet::from([
            Scope::Namespace("blog".into()),
            Scope::Namespace("shop".into())
        ])
    );
    // A cluster-scoped kind has no namespaces to fall back to.
    assert_eq!(
        wanted_scopes(&interests, false, true),
        BTreeSet::from([Scope::Cluster])
    );
}

#[test]
fn a_kind_without_subscribers_needs_no_watch() {
    assert!(wanted_scopes(&Interests::default(), true, false).is_empty());
    assert!(wanted_scopes(&Interests::default(), true, true).is_empty());
}

#[test]
fn a_subscriber_works_when_the_cluster_wide_watch_does() {
    let interests = two_targets();
    let scopes = BTreeSet::from([Scope::Cluster]);
    assert!(working(&interests, A, &scopes, |_| true));
    assert!(!working(&interests, A, &scopes, |_| false));
}

#[test]
fn a_subscriber_works_when_the_watches_of_its_own_namespaces_do() {
    let mut interests = two_targets();
    interests.add(B, [Place::new("news", "feed")]);
    let scopes = wanted_scopes(&interests, true, true);
    let live = |s: &Scope| *s != Scope::Namespace("news".into());
    assert!(working(&interests, A, &scopes, live), "shop is live");
    assert!(!working(&interests, B, &scopes, live), "news is not");
}

#[test]
fn a_forbidden_cluster_wide_watch_of_a_namespaced_kind_falls_back_to_namespaces() {
    assert_eq!(
        after_error(&Scope::Cluster, true, true),
        AfterError::WatchPerNamespace
    );
    assert_eq!(after_error(&Scope::Cluster, true, false), AfterError::Retry);
    // Nothing narrower to fall back to.
    assert_eq!(after_error(&Scope::Cluster, false, true), AfterError::Retry);
    assert_eq!(
        after_error(&Scope::Namespace("shop".into()), true, true),
        AfterError::Retry
    );
}

#[test]
fn scopes_cover_their_objects() {
    let shop = Place::new("shop", "db");
    assert!(covers(&Scope::Cluster, &shop));
    assert!(covers(&Scope::Namespace("shop".into()), &shop));
    assert!(!covers(&Scope::Namespace("blog".into()), &shop));
    assert_eq!(Scope::Cluster.to_string(), "all namespaces");
    assert_eq!(
        Scope::Namespace("shop".into()).to_string(),
        "namespace shop"
    );
}

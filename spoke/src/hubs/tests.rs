use super::*;

const BASE: Duration = Duration::from_millis(500);
const CAP: Duration = Duration::from_secs(60);

fn urls(list: &[&str]) -> Vec<HubUrl> {
    HubUrl::parse_all(&list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()).expect("urls")
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("socket address")
}

#[test]
fn hub_urls_are_checked_and_deduplicated() {
    let parsed = urls(&["https://hub-a:7443", "https://hub-b", "https://hub-a:7443"]);
    assert_eq!(parsed.len(), 2);
    assert_eq!(parsed[0].to_resolve(), Some(("hub-a", 7443)));
    assert_eq!(parsed[1].to_resolve(), Some(("hub-b", 443)));
    assert_eq!(urls(&["https://127.0.0.1:7443"])[0].to_resolve(), None);
    assert_eq!(urls(&["https://[::1]:7443"])[0].to_resolve(), None);

    assert_eq!(HubUrl::parse_all(&[]), Err(HubUrlError::Empty));
    for (bad, why) in [
        ("hub:7443", "no scheme"),
        ("ftp://hub:7443", "the scheme must be https"),
        ("https://hub:7443/api", "a hub URL has no path"),
        ("https://", "not a URL"),
    ] {
        let err = HubUrl::parse(bad).expect_err(bad).to_string();
        assert!(err.contains(why) && err.contains(bad), "{bad}: {err}");
    }
}

#[test]
fn every_resolved_address_is_a_candidate_checked_against_the_configured_name() {
    let list = urls(&[
        "https://hubs.gitfleet:7443",
        "https://10.0.0.9:7443",
        "https://gone.example:7443",
    ]);
    let found = candidates(&list, |url| match url.to_resolve() {
        Some(("hubs.gitfleet", 7443)) => vec![
            addr("10.0.0.1:7443"),
            addr("[fd00::2]:7443"),
            addr("10.0.0.1:7443"),
        ],
        _ => Vec::new(),
    });
    let dials: Vec<(&str, &str)> = found
        .iter()
        .map(|c| (c.dial.as_str(), c.server_name.as_str()))
        .collect();
    assert_eq!(
        dials,
        [
            ("https://10.0.0.1:7443", "hubs.gitfleet"),
            ("https://[fd00::2]:7443", "hubs.gitfleet"),
            ("https://10.0.0.9:7443", "10.0.0.9"),
            // Unresolvable now: dialled as given, so the error names it.
            ("https://gone.example:7443", "gone.example"),
        ]
    );
    assert_eq!(found[1].configured, "https://hubs.gitfleet:7443");
}

#[test]
fn a_failure_moves_to_the_next_address_and_the_wait_grows_per_round() {
    let mut rotation = Rotation::default();
    assert_eq!(rotation.current(3), 0);
    // The first round: each address once, waits below the base.
    assert_eq!(
        rotation.failed(3, BASE, CAP, 0.5),
        Duration::from_millis(250)
    );
    assert_eq!(rotation.current(3), 1);
    assert_eq!(
        rotation.failed(3, BASE, CAP, 0.5),
        Duration::from_millis(250)
    );
    assert_eq!(rotation.current(3), 2);
    assert_eq!(
        rotation.failed(3, BASE, CAP, 0.5),
        Duration::from_millis(250)
    );
    assert_eq!(rotation.current(3), 0, "back to the first address");
    // The second round doubles the ceiling.
    assert_eq!(
        rotation.failed(3, BASE, CAP, 0.5),
        Duration::from_millis(500)
    );
    assert_eq!(rotation.current(3), 1);
    assert_eq!(rotation.failures(), 4);

    // A session that held resets the backoff, not the position.
    rotation.healthy();
    assert_eq!(
        rotation.failed(3, BASE, CAP, 0.5),
        Duration::from_millis(250)
    );
    assert_eq!(rotation.current(3), 2);
}

#[test]
fn the_jitter_spreads_waits_over_the_whole_range_up_to_the_cap() {
    let mut rotation = Rotation::default();
    assert_eq!(rotation.failed(2, BASE, CAP, 0.0), Duration::ZERO);
    assert_eq!(
        rotation.failed(2, BASE, CAP, 0.999_999),
        BASE.mul_f64(0.999_999)
    );
    for _ in 0..200 {
        rotation.failed(2, BASE, CAP, 0.5);
    }
    assert_eq!(rotation.failed(2, BASE, CAP, 0.5), Duration::from_secs(30));
    assert_eq!(rotation.failed(2, BASE, CAP, 1.0), CAP);
}

#[test]
fn one_address_behaves_like_the_plain_reconnect_backoff() {
    let mut rotation = Rotation::default();
    for attempt in 1..=8 {
        let wait = rotation.failed(1, BASE, CAP, 0.5);
        assert_eq!(wait, backoff(attempt, BASE, CAP, 0.5), "attempt {attempt}");
        assert_eq!(rotation.current(1), 0);
    }
}

#[test]
fn the_list_may_change_between_attempts() {
    let mut rotation = Rotation::default();
    rotation.failed(4, BASE, CAP, 0.5);
    rotation.failed(4, BASE, CAP, 0.5);
    rotation.failed(4, BASE, CAP, 0.5);
    assert_eq!(rotation.current(4), 3);
    // A name now resolves to fewer addresses: the position stays within the list.
    assert_eq!(rotation.current(2), 1);
    assert_eq!(rotation.current(0), 0);
    rotation.skip(2);
    assert_eq!(rotation.current(2), 0);
    assert_eq!(rotation.failures(), 3, "skipping is not a failure");
}

#[test]
fn backoff_grows_exponentially_to_the_cap_with_full_jitter() {
    assert_eq!(
        backoff(1, BASE, CAP, 0.999_999),
        Duration::from_millis(500).mul_f64(0.999_999)
    );
    assert_eq!(backoff(3, BASE, CAP, 0.5), Duration::from_secs(1));
    assert_eq!(backoff(20, BASE, CAP, 0.5), Duration::from_secs(30));
    assert_eq!(backoff(u32::MAX, BASE, CAP, 0.5), Duration::from_secs(30));
    assert_eq!(backoff(5, BASE, CAP, 0.0), Duration::ZERO);
}

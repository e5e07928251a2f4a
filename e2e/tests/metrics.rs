//! `/metrics` of a hub and its spokes after one App converged on two clusters: the fleet's
//! state (connected spokes, Targets by sync state and health) and the counters of what it took
//! (polls, fetch/render/apply durations, status reports, webhooks) have sane values.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use gitfleet_e2e::harness::{ClusterSpec, Fleet, FleetOptions};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const DEADLINE: Duration = Duration::from_secs(60);

const CONFIGMAP: &str = include_str!("../demo/hello/configmap.yaml");

/// One HTTP/1.1 request; returns the status code and the body.
async fn request(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("receive");
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, body.to_owned())
}

async fn scrape(addr: SocketAddr) -> String {
    let (status, body) = request(addr, "GET", "/metrics").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.ends_with("# EOF\n"), "not OpenMetrics text:\n{body}");
    body
}

/// The value of the sample `series` (name and labels exactly as exposed), if present.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter_map(|l| l.rsplit_once(' '))
        .find(|(s, _)| *s == series)
        .and_then(|(_, v)| v.parse().ok())
}

/// A series and what its value must satisfy.
type Check<'a> = (&'a str, fn(f64) -> bool);

/// Scrapes until every `(series, check)` holds, or fails with the last text.
async fn scrape_until(addr: SocketAddr, what: &str, checks: &[Check<'_>]) -> String {
    let start = Instant::now();
    loop {
        let text = scrape(addr).await;
        let failing: Vec<String> = checks
            .iter()
            .filter(|(series, check)| !value(&text, series).is_some_and(check))
            .map(|(series, _)| format!("{series} = {:?}", value(&text, series)))
            .collect();
        if failing.is_empty() {
            return text;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "{what}: {} still off in\n{text}",
            failing.join(", ")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_and_spokes_expose_the_fleet_and_what_it_took() {
    let mut fleet = Fleet::start(FleetOptions::new(vec![
        ClusterSpec::new("eu-1"),
        ClusterSpec::new("eu-2"),
    ]))
    .await
    .unwrap();
    fleet
        .git
        .write("apps/hello/configmap.yaml", CONFIGMAP)
        .unwrap();
    let v1 = fleet.git.commit("hello v1").unwrap();
    let app = "apiVersion: gitfleet.dev/v1\nkind: App\nmetadata: { name: hello }\nspec:\n  repo: platform\n  path: apps/hello\n  namespace: hello\n  targets:\n    - clusters: [eu-1, eu-2]\n";
    let yaml = format!("{}---\n{app}", fleet.repo_yaml("platform"));
    fleet.apply_yaml(&yaml).await.unwrap();
    fleet
        .wait_converged("hello", &v1, 2, DEADLINE)
        .await
        .unwrap();

    let hub = fleet.hub().http_addr().expect("the hub serves HTTP");
    // Webhooks are off on this hub: the refusal is counted too.
    let (status, _) = request(hub, "POST", "/webhooks/github").await;
    assert_eq!(status, 404);
    let text = scrape_until(
        hub,
        "hub",
        &[
            ("gitfleet_clusters", |v| v == 2.0),
            ("gitfleet_spokes_connected", |v| v == 2.0),
            (
                "gitfleet_targets{sync=\"Synced\",health=\"Healthy\"}",
                |v| v == 2.0,
            ),
            (
                "gitfleet_polls_total{repo=\"platform\",outcome=\"changed\"}",
                |v| v >= 1.0,
            ),
            ("gitfleet_git_fetch_duration_seconds_count", |v| v >= 1.0),
            // Both connected spokes were handed the first revision, timed from its fetch.
            ("gitfleet_dispatch_latency_seconds_count", |v| v >= 2.0),
            // At least syncing and synced+healthy from each spoke.
            ("gitfleet_status_reports_total", |v| v >= 4.0),
            ("gitfleet_store_size_bytes", |v| v > 0.0),
            // An App without a strategy rolls out in one wave, at once.
            ("gitfleet_rollout_waves{app=\"hello\"}", |v| v == 1.0),
            ("gitfleet_rollout_paused{app=\"hello\"}", |v| v == 0.0),
            (
                "gitfleet_rollout_targets{app=\"hello\",state=\"healthy\"}",
                |v| v == 2.0,
            ),
            (
                "gitfleet_rollout_targets{app=\"hello\",state=\"pending\"}",
                |v| v == 0.0,
            ),
            (
                "gitfleet_webhooks_total{provider=\"github\",outcome=\"not_found\"}",
                |v| v == 1.0,
            ),
        ],
    )
    .await;
    let errors: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("gitfleet_errors_total{"))
        .collect();
    assert_eq!(errors.len(), 5, "every kind of error is exposed:\n{text}");
    assert!(
        errors.iter().all(|l| l.ends_with(" 0")),
        "no errors expected:\n{text}"
    );

    // Every metric the hub chart's dashboard and alert rules read is one the hub exposes.
    let families: std::collections::BTreeSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    for name in metrics_read_by_the_hub_chart() {
        assert!(
            families.contains(family(&name)),
            "the hub chart's dashboard or alert rules read {name}, which the hub does not expose:\n{text}"
        );
    }

    for (name, spoke) in &fleet.spokes {
        let addr = spoke.http_addr().expect("the spoke serves HTTP");
        assert_eq!(request(addr, "GET", "/healthz").await.0, 200, "{name}");
        assert_eq!(request(addr, "GET", "/readyz").await.0, 200, "{name}");
        let text = scrape_until(
            addr,
            name,
            &[
                ("gitfleet_spoke_connected", |v| v == 1.0),
                (
                    "gitfleet_spoke_targets{sync=\"Synced\",health=\"Healthy\"}",
                    |v| v == 1.0,
                ),
                ("gitfleet_spoke_fetch_duration_seconds_count", |v| v >= 1.0),
                ("gitfleet_spoke_render_duration_seconds_count", |v| v >= 1.0),
                ("gitfleet_spoke_apply_duration_seconds_count", |v| v >= 1.0),
                ("gitfleet_spoke_status_reports_total", |v| v >= 2.0),
                ("gitfleet_spoke_unacked_reports", |v| v == 0.0),
                ("gitfleet_spoke_desired_generation", |v| v >= 1.0),
            ],
        )
        .await;
        assert!(
            !text.contains("gitfleet_spoke_errors_total{"),
            "{name}: no errors expected:\n{text}"
        );
    }

    // A spoke that loses its hub says so on /readyz and in its metrics.
    let addrs: Vec<SocketAddr> = fleet
        .spokes
        .values()
        .filter_map(|s| s.http_addr())
        .collect();
    let hub_handle = fleet.hub().shutdown_token();
    hub_handle.cancel();
    for addr in addrs {
        scrape_until(
            addr,
            "spoke without its hub",
            &[("gitfleet_spoke_connected", |v| v == 0.0)],
        )
        .await;
        assert_eq!(request(addr, "GET", "/readyz").await.0, 503);
    }
    fleet.shutdown().await;
}

/// The `gitfleet_*` metrics the hub chart's Grafana dashboard and PrometheusRule read.
fn metrics_read_by_the_hub_chart() -> std::collections::BTreeSet<String> {
    let chart = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/gitfleet-hub");
    let mut names = std::collections::BTreeSet::new();
    for file in [
        "dashboards/gitfleet-fleet.json",
        "templates/prometheusrule.yaml",
    ] {
        let text = std::fs::read_to_string(chart.join(file)).expect(file);
        let mut rest = text.as_str();
        while let Some(at) = rest.find("gitfleet_") {
            let name: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            rest = &rest[at + name.len()..];
            names.insert(name);
        }
    }
    assert!(names.len() > 10, "found only {names:?}");
    names
}

/// The family a series belongs to, as `# TYPE` lines name it (OpenMetrics: counters without
/// `_total`, histograms without `_bucket`/`_sum`/`_count`, info metrics without `_info`).
fn family(series: &str) -> &str {
    ["_bucket", "_count", "_sum", "_total", "_info"]
        .iter()
        .find_map(|s| series.strip_suffix(s))
        .unwrap_or(series)
}

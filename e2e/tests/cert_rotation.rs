//! A spoke renews its certificate over the live stream before it expires: no restart, no gap in
//! status, and its next connection uses the new certificate.

use std::time::{Duration, Instant};

use gitfleet_e2e::harness::{ClusterSpec, Fleet, FleetOptions};

const DEADLINE: Duration = Duration::from_secs(60);
const CONFIGMAP: &str = include_str!("../demo/hello/configmap.yaml");
const APP: &str = "apiVersion: gitfleet.dev/v1\nkind: App\nmetadata: { name: hello }\nspec:\n  repo: platform\n  path: apps/hello\n  namespace: hello\n  targets:\n    - clusters: [rot-1]\n";

async fn cert_expiry(fleet: &mut Fleet) -> anyhow::Result<(i64, bool)> {
    let clusters = fleet.admin().list_clusters().await?;
    let c = clusters
        .iter()
        .find(|c| c.name == "rot-1")
        .ok_or_else(|| anyhow::anyhow!("rot-1 not registered"))?;
    Ok((c.certificate_expires_unix, c.connected))
}

async fn rotation() -> anyhow::Result<()> {
    let mut options = FleetOptions::new(vec![ClusterSpec::new("rot-1")]);
    // Renewal is due after two thirds of the validity: about 10 s into the test.
    options.cluster_cert_validity = Some(Duration::from_secs(15));
    let mut fleet = Fleet::start(options).await?;
    fleet.git.write("apps/hello/configmap.yaml", CONFIGMAP)?;
    let v1 = fleet.git.commit("v1")?;
    let resources = format!("{}---\n{APP}", fleet.repo_yaml("platform"));
    fleet.apply_yaml(&resources).await?;
    fleet.wait_converged("hello", &v1, 1, DEADLINE).await?;
    let (first_expiry, _) = cert_expiry(&mut fleet).await?;

    // Watch the cluster while the renewal happens: it must stay connected throughout.
    let start = Instant::now();
    let renewed_expiry = loop {
        let (expiry, connected) = cert_expiry(&mut fleet).await?;
        anyhow::ensure!(connected, "the spoke disconnected while renewing");
        if expiry > first_expiry {
            break expiry;
        }
        anyhow::ensure!(start.elapsed() < DEADLINE, "no renewal within {DEADLINE:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    anyhow::ensure!(renewed_expiry > first_expiry);

    // Status keeps flowing on the same stream: a new commit converges.
    fleet.git.write(
        "apps/hello/configmap.yaml",
        CONFIGMAP.replace("gitfleet, v1", "gitfleet, v2"),
    )?;
    let v2 = fleet.git.commit("v2")?;
    fleet.wait_converged("hello", &v2, 1, DEADLINE).await?;

    // After the first certificate has expired, a new connection must use the renewed one.
    let wait_until = first_expiry + 1;
    while chrono_now() <= wait_until {
        anyhow::ensure!(
            start.elapsed() < DEADLINE,
            "clock did not pass the first expiry"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    fleet.restart_hub().await?;
    fleet.git.write(
        "apps/hello/configmap.yaml",
        CONFIGMAP.replace("gitfleet, v1", "gitfleet, v3"),
    )?;
    let v3 = fleet.git.commit("v3")?;
    fleet.wait_converged("hello", &v3, 1, DEADLINE).await?;
    let (_, connected) = cert_expiry(&mut fleet).await?;
    anyhow::ensure!(connected, "reconnected with the renewed certificate");
    fleet.shutdown().await;
    Ok(())
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spoke_renews_its_certificate_without_a_gap() {
    rotation().await.unwrap();
}

//! A spoke's identity over time. It renews its certificate over the live stream before it
//! expires: no restart, no gap in status, its next connection uses the new certificate, and the
//! old one no longer gets in. A spoke the hub turns away for registering too often from one
//! address registers when the hub says to come back.

use std::time::{Duration, Instant};

use gitfleet_e2e::harness::{ClusterSpec, Fleet, FleetOptions, until};
use gitfleet_proto::v1 as pb;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

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
    // A certificate and key of the spoke, as an old copy of its volume would hold them.
    let (old_cert, old_key) = identity_copy(&fleet).await?;
    let old_fingerprint = gitfleet_hub::pki::cert_key_pem(&old_cert)?.fingerprint;
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

    // Once the spoke holds a renewed certificate (and told the hub), the copy is superseded:
    // it cannot take the cluster's place, though it has not expired.
    let store = fleet.hub().store();
    until("the spoke to confirm its renewal", DEADLINE, || {
        let bound = store.cluster("rot-1")?;
        Ok(bound
            .is_some_and(|c| c.key_fingerprint != old_fingerprint)
            .then_some(()))
    })
    .await?;
    let refused = open_session(&fleet, &old_cert, &old_key).await;
    let status = refused
        .err()
        .ok_or_else(|| anyhow::anyhow!("the superseded certificate was accepted"))?;
    anyhow::ensure!(
        status.code() == tonic::Code::Unauthenticated && status.message().contains("superseded"),
        "{status}"
    );
    let (_, connected) = cert_expiry(&mut fleet).await?;
    anyhow::ensure!(connected, "the spoke's own session is intact");

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

/// The spoke's certificate and key as they are on its volume now: read until the two belong
/// together (a renewal replaces one file, then the other).
async fn identity_copy(fleet: &Fleet) -> anyhow::Result<(String, String)> {
    let dir = fleet.work_dir().join("spokes/rot-1/identity");
    until("a matching key and certificate", DEADLINE, || {
        let cert = std::fs::read_to_string(dir.join("cert.pem"))?;
        let key = std::fs::read_to_string(dir.join("key.pem"))?;
        let matching = gitfleet_spoke::identity::key_fingerprint(&key)
            == Some(gitfleet_hub::pki::cert_key_pem(&cert)?.fingerprint);
        Ok(matching.then_some((cert, key)))
    })
    .await
}

/// Opens a Link session as rot-1 with `cert`; the hub's answer.
async fn open_session(fleet: &Fleet, cert: &str, key: &str) -> Result<(), tonic::Status> {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(fleet.hub().ca_pem()))
        .identity(Identity::from_pem(cert, key));
    let channel = Channel::from_shared(fleet.hub().grpc_url())
        .map_err(|e| tonic::Status::internal(e.to_string()))?
        .tls_config(tls)
        .map_err(|e| tonic::Status::internal(e.to_string()))?
        .connect()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(pb::SpokeMessage {
        msg: Some(pb::spoke_message::Msg::Hello(pb::Hello {
            cluster: "rot-1".into(),
            agent_version: "copy".into(),
            ..Default::default()
        })),
    })
    .await
    .map_err(|e| tonic::Status::internal(e.to_string()))?;
    pb::link_client::LinkClient::new(channel)
        .session(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .map(|_| ())
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

/// A fleet behind one address registers faster than the hub's budget allows: the spoke waits
/// as long as the hub says and registers then, instead of failing to start.
async fn registration_over_budget() -> anyhow::Result<()> {
    use gitfleet_hub::runtime::{self, HubConfig};
    use gitfleet_spoke::identity::{self, IdentityStore, Registration};

    let tmp = tempfile::tempdir()?;
    let mut config = HubConfig::for_tests(tmp.path().join("hub"));
    // A burst of 60, then one a second.
    config.register_rate_limit = 60;
    let hub = runtime::start(config).await?;
    let anonymous = Channel::from_shared(hub.grpc_url())?
        .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(hub.ca_pem())))?
        .connect()
        .await?;
    let mut client = pb::registration_client::RegistrationClient::new(anonymous);
    let mut exhausted = false;
    for _ in 0..=60 {
        let refused = client
            .register(pb::RegisterRequest {
                token: "gft_not-a-token".into(),
                cluster_name: "noise".into(),
                ..Default::default()
            })
            .await
            .err()
            .ok_or_else(|| anyhow::anyhow!("a bogus token registered"))?;
        exhausted = refused.code() == tonic::Code::ResourceExhausted;
    }
    anyhow::ensure!(exhausted, "the address's budget is spent");

    let token = hub
        .create_token(Duration::from_secs(600), Default::default(), 1)
        .await?;
    let store = IdentityStore::new(&tmp.path().join("spoke"));
    let registration = Registration {
        hub_urls: vec![hub.grpc_url()],
        hub_ca_pem: hub.ca_pem().to_owned(),
        token,
        cluster_name: "late-1".into(),
        labels: Default::default(),
        agent_version: "test".into(),
    };
    tokio::time::timeout(DEADLINE, identity::register(&store, &registration))
        .await
        .map_err(|_| anyhow::anyhow!("no registration within {DEADLINE:?}"))??;
    let registered = hub.store().cluster("late-1")?;
    anyhow::ensure!(registered.is_some(), "late-1 is registered");
    hub.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spoke_over_the_registration_budget_registers_when_the_hub_says() {
    registration_over_budget().await.unwrap();
}

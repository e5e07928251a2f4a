//! Signed commits only, end to end on kubesim: keys made by ssh-keygen and gpg at test time,
//! commits signed by the git command line, a Repo with `spec.verify.trustedKeys`, a real hub,
//! real spokes and server-side apply.

use std::time::Duration;

use gitfleet_e2e::harness::{ClusterSpec, Fleet, FleetOptions, describe, until};
use gitfleet_hub::resources::Kind;
use gitfleet_proto::v1 as pb;
use gitfleet_support::testing::signing::{Signer, unsigned_commit};

const DEADLINE: Duration = Duration::from_secs(60);

fn configmap(greeting: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: hello-config\ndata:\n  greeting: {greeting:?}\n"
    )
}

fn app_yaml() -> &'static str {
    "apiVersion: gitfleet.dev/v1\nkind: App\nmetadata: { name: hello }\nspec:\n  repo: platform\n  path: apps/hello\n  namespace: hello\n  targets:\n    - clusterSelector: { matchLabels: { env: prod } }\n"
}

/// The fleet's Repo asking for signatures by `keys` (as YAML block scalars).
fn signed_repo_yaml(fleet: &Fleet, keys: &[&Signer]) -> String {
    let mut yaml = format!(
        "{}  verify:\n    trustedKeys:\n",
        fleet.repo_yaml("platform")
    );
    for key in keys {
        yaml.push_str("      - |\n");
        for line in key.trusted_key().trim().lines() {
            yaml.push_str(&format!("        {line}\n"));
        }
    }
    yaml
}

fn two_prod_clusters() -> FleetOptions {
    FleetOptions::new(vec![
        ClusterSpec::new("prod-a").label("env", "prod"),
        ClusterSpec::new("prod-b").label("env", "prod"),
    ])
}

fn greeting(fleet: &Fleet, cluster: &str) -> Option<String> {
    fleet
        .kubesim
        .get_object(cluster, "v1", "ConfigMap", Some("hello"), "hello-config")
        .and_then(|cm| cm["data"]["greeting"].as_str().map(str::to_owned))
}

/// The Repo's status, as `gitfleet get repo platform -o json` shows it.
fn repo_status(fleet: &Fleet) -> serde_json::Value {
    fleet
        .hub()
        .engine()
        .get(Some(Kind::Repo), Some("platform"))
        .expect("get repo")[0]["status"]
        .clone()
}

async fn wait_refused(fleet: &Fleet, commit: &str) -> serde_json::Value {
    until("the Repo to refuse the commit", DEADLINE, || {
        let status = repo_status(fleet);
        Ok((status["refused"]["commit"] == commit).then_some(status))
    })
    .await
    .expect("refused")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsigned_and_untrusted_commits_are_refused_while_trusted_ones_roll_out() {
    let mut fleet = Fleet::start(two_prod_clusters()).await.unwrap();
    let (ssh, gpg, stranger) = (
        Signer::ssh("release-bot"),
        Signer::gpg("Release Bot <release@example.com>"),
        Signer::ssh("stranger"),
    );
    let dir = fleet.git.dir().to_owned();
    let v1 = ssh.commit(&dir, &[("apps/hello/cm.yaml", &configmap("v1"))], "v1");
    let yaml = format!(
        "{}---\n{}",
        signed_repo_yaml(&fleet, &[&ssh, &gpg]),
        app_yaml()
    );
    fleet.apply_yaml(&yaml).await.unwrap();
    fleet
        .wait_converged("hello", &v1, 2, DEADLINE)
        .await
        .unwrap();
    assert_eq!(greeting(&fleet, "prod-a").as_deref(), Some("v1"));
    let status = repo_status(&fleet);
    assert!(
        status["signedBy"].as_str().unwrap().contains("release-bot"),
        "{status}"
    );

    // An unsigned commit, then one signed by a key the Repo does not trust: both refused with
    // the reason, neither reaches a cluster.
    let v2 = unsigned_commit(&dir, &[("apps/hello/cm.yaml", &configmap("v2"))], "v2");
    let status = wait_refused(&fleet, &v2).await;
    assert_eq!(status["refused"]["reason"], "not signed", "{status}");
    assert_eq!(status["commit"], v1.as_str(), "{status}");
    let v3 = stranger.commit(&dir, &[("apps/hello/cm.yaml", &configmap("v3"))], "v3");
    let status = wait_refused(&fleet, &v3).await;
    let reason = status["refused"]["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("signed by untrusted key SHA256:"),
        "{status}"
    );
    assert!(
        status["error"].as_str().unwrap().contains(&v3[..7]),
        "the error names the commit: {status}"
    );
    let targets = fleet.status("hello").await.unwrap();
    assert!(
        targets.iter().all(|t| t.desired_revision == v1),
        "nothing refused is dispatched:\n{}",
        describe(&targets)
    );
    let events = fleet
        .hub()
        .engine()
        .events(Some("hello"), None, 0, 1000)
        .await
        .unwrap();
    for refused in [&v2, &v3] {
        assert!(
            events
                .iter()
                .any(|e| e.kind == "CommitRefused" && e.message.contains(&refused[..7])),
            "an event names {refused}: {events:#?}"
        );
    }
    for cluster in ["prod-a", "prod-b"] {
        assert_eq!(
            greeting(&fleet, cluster).as_deref(),
            Some("v1"),
            "{cluster}"
        );
    }

    // The next commit signed with the trusted OpenPGP key rolls out.
    let v4 = gpg.commit(&dir, &[("apps/hello/cm.yaml", &configmap("v4"))], "v4");
    fleet
        .wait_converged("hello", &v4, 2, DEADLINE)
        .await
        .unwrap();
    for cluster in ["prod-a", "prod-b"] {
        assert_eq!(
            greeting(&fleet, cluster).as_deref(),
            Some("v4"),
            "{cluster}"
        );
    }
    let status = repo_status(&fleet);
    assert!(status.get("refused").is_none(), "{status}");
    assert!(
        status["signedBy"].as_str().unwrap().starts_with("OpenPGP "),
        "{status}"
    );
    fleet.shutdown().await;
}

/// The spoke checks what it fetched itself: here it is handed a commit no trusted key signed
/// (the Repo ran without `verify` when the commit rolled out; then `verify` was turned on, so
/// the hub has no verified commit to move to and the Target keeps naming the unsigned one). The
/// spoke refuses to sync it again, with a Target error naming the commit and the reason, and
/// applies nothing; a signed commit then rolls out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spoke_refuses_a_commit_no_trusted_key_signed_although_the_hub_sent_it() {
    let mut options = two_prod_clusters();
    options.deferred_spokes = vec!["prod-b".into()];
    let mut fleet = Fleet::start(options).await.unwrap();
    let ssh = Signer::ssh("release-bot");
    let dir = fleet.git.dir().to_owned();
    let v1 = unsigned_commit(&dir, &[("apps/hello/cm.yaml", &configmap("v1"))], "v1");
    let yaml = format!("{}---\n{}", fleet.repo_yaml("platform"), app_yaml());
    fleet.apply_yaml(&yaml).await.unwrap();
    fleet
        .wait_for("hello", "prod-a at v1", DEADLINE, |s| {
            s.iter()
                .any(|t| t.cluster == "prod-a" && gitfleet_e2e::harness::is_converged(t, &v1))
        })
        .await
        .unwrap();

    fleet
        .apply_yaml(&signed_repo_yaml(&fleet, &[&ssh]))
        .await
        .unwrap();
    wait_refused(&fleet, &v1).await;
    // prod-b joins now: the hub sends it v1 with the keys; it fetches v1 and refuses it.
    let prod_b = fleet.clusters()[1].clone();
    fleet.start_spoke(&prod_b).await.unwrap();
    let status = fleet
        .wait_for("hello", "prod-b to refuse v1", DEADLINE, |s| {
            s.iter().any(|t| {
                t.cluster == "prod-b"
                    && t.message.contains(&format!("commit {v1}"))
                    && t.message.contains("refused: not signed")
            })
        })
        .await
        .unwrap();
    let b = status.iter().find(|t| t.cluster == "prod-b").unwrap();
    assert_eq!(
        b.sync,
        pb::SyncState::Failed as i32,
        "{}",
        describe(&status)
    );
    assert_eq!(
        greeting(&fleet, "prod-b"),
        None,
        "nothing applied on prod-b"
    );

    let v2 = ssh.commit(&dir, &[("apps/hello/cm.yaml", &configmap("v2"))], "v2");
    fleet
        .wait_converged("hello", &v2, 2, DEADLINE)
        .await
        .unwrap();
    assert_eq!(greeting(&fleet, "prod-b").as_deref(), Some("v2"));
    fleet.shutdown().await;
}

/// A tampered Git server: after the hub accepted the signed v1, the server's repository holds
/// other, unsigned content under v1's id (its object file swapped). A spoke that fetches v1
/// now refuses it and applies nothing of it. (What refuses it first is Git's own content
/// addressing: the spoke fetches by the commit id the hub sent and libgit2 hashes what it
/// receives, so the swapped object does not hash to v1; the signature check after the fetch is
/// the second line, for a commit id that reaches a spoke unverified: see the test above.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spoke_refuses_what_a_tampered_server_serves_under_an_accepted_commit_id() {
    let mut options = two_prod_clusters();
    options.deferred_spokes = vec!["prod-b".into()];
    let mut fleet = Fleet::start(options).await.unwrap();
    let ssh = Signer::ssh("release-bot");
    let dir = fleet.git.dir().to_owned();
    let v1 = ssh.commit(&dir, &[("apps/hello/cm.yaml", &configmap("v1"))], "v1");
    let yaml = format!("{}---\n{}", signed_repo_yaml(&fleet, &[&ssh]), app_yaml());
    fleet.apply_yaml(&yaml).await.unwrap();
    fleet
        .wait_for("hello", "prod-a at v1", DEADLINE, |s| {
            s.iter()
                .any(|t| t.cluster == "prod-a" && gitfleet_e2e::harness::is_converged(t, &v1))
        })
        .await
        .unwrap();

    // The attacker's commit, unsigned; the hub refuses it when it sees it on main.
    let evil = unsigned_commit(&dir, &[("apps/hello/cm.yaml", &configmap("evil"))], "evil");
    wait_refused(&fleet, &evil).await;
    // ...and the server now answers for v1 with the attacker's commit.
    let object = |id: &str| dir.join(".git/objects").join(&id[..2]).join(&id[2..]);
    let swapped = std::fs::read(object(&evil)).expect("the evil commit is a loose object");
    let target = object(&v1);
    let mut perms = std::fs::metadata(&target).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(&target, perms).unwrap();
    std::fs::write(&target, swapped).unwrap();

    let prod_b = fleet.clusters()[1].clone();
    fleet.start_spoke(&prod_b).await.unwrap();
    let status = fleet
        .wait_for("hello", "prod-b to refuse v1", DEADLINE, |s| {
            s.iter().any(|t| {
                t.cluster == "prod-b"
                    && t.sync == pb::SyncState::Failed as i32
                    && t.message.contains(&v1)
            })
        })
        .await
        .unwrap();
    let b = status.iter().find(|t| t.cluster == "prod-b").unwrap();
    assert_ne!(
        b.sync,
        pb::SyncState::Synced as i32,
        "{}",
        describe(&status)
    );
    assert_eq!(
        greeting(&fleet, "prod-b"),
        None,
        "nothing applied on prod-b"
    );
    assert_eq!(greeting(&fleet, "prod-a").as_deref(), Some("v1"));
    fleet.shutdown().await;
}

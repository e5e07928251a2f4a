//! The audit log survives `kill -9` of the hub: the real hub binary answers mutations by several
//! users (allowed and refused), is killed with SIGKILL as soon as the last answer is in (no
//! graceful shutdown), and after a restart on the same data directory every answered mutation
//! is in `gitfleet audit`, with its user and outcome.

use std::path::Path;

use anyhow::{Context as _, ensure};
use gitfleet_cli::client::config::{ClientConfig, ConfigFile as _, Context};
use gitfleet_cli::client::{AdminClient, AppVerb};
use gitfleet_e2e::harness::resource_documents;
use gitfleet_e2e::hubproc::HubProcess;
use gitfleet_proto::v1 as pb;

const REPO: &str = "apiVersion: gitfleet.dev/v1\nkind: Repo\nmetadata: { name: platform }\nspec:\n  url: https://git.example.com/platform.git\n";

fn app(name: &str) -> String {
    format!(
        "apiVersion: gitfleet.dev/v1\nkind: App\nmetadata: {{ name: {name} }}\nspec:\n  repo: platform\n  path: apps/{name}\n  namespace: {name}\n  targets:\n    - clusterSelector: {{}}\n"
    )
}

fn token_request(description: &str) -> pb::CreateTokenRequest {
    pb::CreateTokenRequest {
        ttl_seconds: 600,
        labels: Default::default(),
        max_uses: 1,
        description: description.into(),
        allowed_label_keys: Vec::new(),
        cluster_name: String::new(),
    }
}

/// A client with a new user's credential, created by `admin`.
async fn user(
    admin: &mut AdminClient,
    hub: &HubProcess,
    name: &str,
    role: &str,
) -> anyhow::Result<AdminClient> {
    let created = admin
        .create_user(pb::CreateUserRequest {
            name: name.into(),
            role: role.into(),
            projects: Vec::new(),
            ttl_seconds: 3600,
        })
        .await?;
    let context = Context {
        name: name.into(),
        server: hub.grpc_url(),
        certificate_authority_data: created.ca_pem,
        client_certificate_data: created.certificate_pem,
        client_key_data: created.private_key_pem,
        tls_server_name: None,
    };
    // Through the file, as a user would get it.
    let path = hub
        .data_dir()
        .with_extension(format!("{name}.gitfleetconfig"));
    ClientConfig::single(context).save(&path)?;
    let config = ClientConfig::load(&path)?;
    Ok(AdminClient::connect(config.context(None)?).await?)
}

/// What a test expects to find in the audit log: user, action, outcome, and a part of the
/// target.
type Expected = (String, &'static str, &'static str, String);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answered_mutation_is_in_the_audit_log_after_kill_9() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let mut hub = HubProcess::start(
        Path::new(env!("CARGO_BIN_EXE_gitfleet-hub-e2e")),
        &tmp.path().join("hub"),
        Vec::new(),
    )
    .await?;
    let mut admin = hub.admin().await?;
    let mut expected: Vec<Expected> = Vec::new();

    let mut operator = user(&mut admin, &hub, "otto", "operator").await?;
    push(&mut expected, "admin", "user create", "ok", "user/otto");
    let mut viewer = user(&mut admin, &hub, "vera", "viewer").await?;
    push(&mut expected, "admin", "user create", "ok", "user/vera");

    // Each kind of mutation, then a kill as soon as the answer is in.
    for round in 0..3 {
        let name = format!("web{round}");
        admin
            .apply(resource_documents("fleet.yaml", REPO)?, false)
            .await?;
        push(&mut expected, "admin", "apply", "ok", "Repo/platform");
        operator
            .apply(resource_documents("app.yaml", &app(&name))?, false)
            .await?;
        push(&mut expected, "otto", "apply", "ok", &format!("App/{name}"));
        let refused = viewer
            .apply(resource_documents("app.yaml", &app("nope"))?, false)
            .await;
        ensure!(refused.is_err(), "a viewer's apply was allowed");
        push(&mut expected, "vera", "apply", "denied", "app.yaml#0");
        operator.app_control(AppVerb::Suspend, &name, None).await?;
        push(
            &mut expected,
            "otto",
            "app suspend",
            "ok",
            &format!("App/{name}"),
        );
        let refused = operator.create_token(token_request("no")).await;
        ensure!(refused.is_err(), "an operator created a token");
        push(&mut expected, "otto", "token create", "denied", "");
        let token = admin.create_token(token_request(&name)).await?;
        push(
            &mut expected,
            "admin",
            "token create",
            "ok",
            &format!("token {}", token.token_id),
        );
        ensure!(admin.revoke_token(&token.token_id).await?);
        push(
            &mut expected,
            "admin",
            "token revoke",
            "ok",
            &format!("token {}", token.token_id),
        );

        // Concurrent mutations share flushes: each answer still waits for its own entry.
        let mut tasks = Vec::new();
        for i in 0..8 {
            let mut client = admin.clone();
            let description = format!("{name}-{i}");
            tasks.push(tokio::spawn(async move {
                client.create_token(token_request(&description)).await
            }));
        }
        for task in tasks {
            let token = task.await??;
            push(
                &mut expected,
                "admin",
                "token create",
                "ok",
                &format!("token {}", token.token_id),
            );
        }
        ensure!(admin.delete("App", &name).await?);
        push(
            &mut expected,
            "admin",
            "delete",
            "ok",
            &format!("App/{name}"),
        );

        hub.kill().await?;
        hub.restart().await?;
        admin = hub.admin().await?;
        operator = reconnect(&hub, "otto").await?;
        viewer = reconnect(&hub, "vera").await?;

        let log = admin.audit("", 0, 10_000).await?;
        for (user, action, outcome, target) in &expected {
            ensure!(
                log.iter().any(|e| &e.user == user
                    && e.action == *action
                    && e.outcome == *outcome
                    && e.target.contains(target.as_str())),
                "after kill {}: no audit entry {user} {action} {target} {outcome} in {log:#?}",
                round + 1
            );
        }
        // Nothing answered is left unfinished, and no secret is written.
        ensure!(
            !log.iter().any(|e| e.outcome == "unanswered"),
            "an answered call's outcome was lost: {log:#?}"
        );
    }
    let log = admin.audit("", 0, 10_000).await?;
    ensure!(
        log.len() == expected.len(),
        "{} entries, {} mutations answered: {log:#?}",
        log.len(),
        expected.len()
    );
    hub.stop().await?;
    Ok(())
}

fn push(
    expected: &mut Vec<Expected>,
    user: &str,
    action: &'static str,
    outcome: &'static str,
    target: &str,
) {
    expected.push((user.into(), action, outcome, target.into()));
}

/// A user's client after the hub restarted (the connection died with the process).
async fn reconnect(hub: &HubProcess, name: &str) -> anyhow::Result<AdminClient> {
    let path = hub
        .data_dir()
        .with_extension(format!("{name}.gitfleetconfig"));
    let config = ClientConfig::load(&path).context("the user's credentials file")?;
    Ok(AdminClient::connect(config.context(None)?).await?)
}

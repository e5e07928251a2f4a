//! `cargo demo`: kubesim with six clusters, a hub, six spokes and a local Git repository, all in
//! this process. An App rolls out in waves (canary → staging → prod), a second commit rolls out
//! the same way, and a third, broken one is caught by the canary and rolled back by itself; then
//! the rollout history, the events and the fleet status are printed.

use std::io::IsTerminal as _;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use gitfleet_e2e::harness::{ClusterSpec, Fleet, FleetOptions, describe, is_converged, short};

/// Runs a whole gitfleet fleet on embedded defaults and shows a real rollout.
#[derive(Debug, Parser)]
#[command(name = "demo", version)]
struct Args {
    /// End with status 0 once the broken third commit has been rolled back and every Target is
    /// synced and healthy again (non-zero otherwise), instead of leaving the fleet running for
    /// you to explore.
    #[arg(long, env = "GITFLEET_DEMO_EXIT_WHEN_CONVERGED")]
    exit_when_converged: bool,
    /// How long each rollout may take before the demo gives up.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration, env = "GITFLEET_DEMO_TIMEOUT")]
    timeout: Duration,
    /// Keep the working directory (hub store, spoke data, Git repository) after exit.
    #[arg(long, env = "GITFLEET_DEMO_KEEP")]
    keep: bool,
}

const CONFIGMAP: &str = include_str!("../../demo/hello/configmap.yaml");
const DEPLOYMENT: &str = include_str!("../../demo/hello/deployment.yaml");
const SERVICE: &str = include_str!("../../demo/hello/service.yaml");

const APP: &str = r#"apiVersion: gitfleet.dev/v1
kind: App
metadata: { name: hello }
spec:
  repo: demo
  path: apps/hello
  namespace: hello
  targets:
    - clusterSelector:
        matchExpressions:
          - { key: env, operator: In, values: [dev, staging, prod] }
  syncPolicy: { prune: true, selfHeal: true }
  rollout:
    minHealthyFor: 2s
    onFailure: rollback
    waves:
      - name: canary
        clusterSelector: { matchLabels: { env: dev } }
      - name: staging
        clusterSelector: { matchLabels: { env: staging } }
        maxUnavailable: 1
      # everything else (prod) is the implicit last wave "rest"
"#;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("\ndemo failed: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("GITFLEET_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();

    let tmp = tempfile::Builder::new()
        .prefix("gitfleet-demo-")
        .tempdir()
        .context("creating the demo directory")?;
    let work_dir = tmp.path().to_owned();
    println!("gitfleet demo — everything lives in {}", work_dir.display());

    let clusters = vec![
        ClusterSpec::new("dev-1").label("env", "dev"),
        ClusterSpec::new("staging-1").label("env", "staging"),
        ClusterSpec::new("staging-2").label("env", "staging"),
        ClusterSpec::new("prod-1").label("env", "prod"),
        ClusterSpec::new("prod-2").label("env", "prod"),
        ClusterSpec::new("prod-3").label("env", "prod"),
    ];
    let mut options = FleetOptions::new(clusters.clone());
    options.work_dir = Some(work_dir.clone());
    options.ready_delay = Duration::from_millis(1500);
    let mut fleet = Fleet::start(options).await?;
    println!(
        "  ✓ kubesim serving {} clusters at {}",
        clusters.len(),
        fleet.kubesim.base_url()
    );
    for c in &clusters {
        let labels: Vec<String> = c.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!("      {:<10} {}", c.name, labels.join(","));
    }
    println!("  ✓ hub listening on {}", fleet.hub().grpc_url());
    println!(
        "  ✓ {} spokes registered with one-use bootstrap tokens (mutual TLS from now on)",
        clusters.len()
    );
    println!(
        "  ✓ dashboard: open this sign-in link (it works once, within 5 minutes) to watch the \
         rollout in a browser:\n      {}",
        dashboard_link(&fleet).await?
    );

    let result = demo(&mut fleet, &args).await;
    let kubeconfigs = work_dir.join("kubeconfigs");
    if result.is_ok() && !args.exit_when_converged {
        fleet.kubesim.write_kubeconfigs(&kubeconfigs)?;
        println!("\nThe fleet keeps running. Try, in another terminal:");
        println!(
            "  the dashboard, with a new sign-in link: {}",
            dashboard_link(&fleet).await?
        );
        println!(
            "  cargo run -q --bin gitfleet -- --config {} status",
            fleet.hub().admin_config_path().display()
        );
        println!(
            "  kubectl --kubeconfig {}/prod-1.kubeconfig -n hello get deploy,svc,cm",
            kubeconfigs.display()
        );
        println!(
            "  edit {}/apps/hello/*.yaml, then: git -C {} commit -am 'my change'",
            fleet.git.dir().display(),
            fleet.git.dir().display()
        );
        println!("Press Ctrl-C to stop.");
        tokio::signal::ctrl_c()
            .await
            .context("waiting for Ctrl-C")?;
    }
    fleet.shutdown().await;
    if args.keep {
        let kept = tmp.keep();
        println!("kept {}", kept.display());
    }
    result
}

async fn demo(fleet: &mut Fleet, args: &Args) -> anyhow::Result<()> {
    fleet.git.write("apps/hello/configmap.yaml", CONFIGMAP)?;
    fleet.git.write("apps/hello/deployment.yaml", DEPLOYMENT)?;
    fleet.git.write("apps/hello/service.yaml", SERVICE)?;
    fleet
        .git
        .write("README.md", "Demo repository created by `cargo demo`.\n")?;
    let v1 = fleet.git.commit("hello v1")?;
    println!(
        "  ✓ Git repository {} at {} \"hello v1\"",
        fleet.git.url(),
        short(&v1)
    );

    println!(
        "\n→ gitfleet apply: Repo \"demo\" and App \"hello\", rolled out in waves: canary (dev) → \
         staging → rest (prod); onFailure: rollback"
    );
    let repo = fleet.repo_yaml("demo");
    for outcome in fleet.apply_yaml(&format!("{repo}---\n{APP}")).await? {
        println!(
            "  {}/{} {}",
            outcome.kind.to_lowercase(),
            outcome.name,
            outcome.action
        );
    }
    watch_rollout(fleet, &v1, args.timeout).await?;
    converged(fleet, &v1, args.timeout).await?;

    let deployment = DEPLOYMENT.replace("replicas: 2", "replicas: 3");
    let configmap = CONFIGMAP.replace("gitfleet, v1", "gitfleet, v2");
    fleet.git.write("apps/hello/deployment.yaml", &deployment)?;
    fleet.git.write("apps/hello/configmap.yaml", configmap)?;
    let v2 = fleet
        .git
        .commit("hello v2: three replicas and a new greeting")?;
    println!(
        "\n→ git commit {} \"hello v2: three replicas and a new greeting\"",
        short(&v2)
    );
    watch_rollout(fleet, &v2, args.timeout).await?;
    converged(fleet, &v2, args.timeout).await?;

    // A broken change: kubesim's failure annotation makes the Deployment never become available,
    // as a bad image would.
    let broken = deployment.replacen(
        "  name: hello\n",
        "  name: hello\n  annotations:\n    kubesim.gitfleet.dev/fail: \"true\"\n",
        1,
    );
    fleet.git.write("apps/hello/deployment.yaml", broken)?;
    let v3 = fleet
        .git
        .commit("hello v3: a release that never becomes ready")?;
    println!(
        "\n→ git commit {} \"hello v3: a release that never becomes ready\"",
        short(&v3)
    );
    match watch_rollout(fleet, &v3, args.timeout).await {
        Err(e) if e.to_string().contains("rolled back") => {
            println!("  ✓ the canary caught it: {e}");
        }
        Err(e) => return Err(e),
        Ok(()) => anyhow::bail!("the broken commit {} rolled out", short(&v3)),
    }
    let status = converged(fleet, &v2, args.timeout).await?;
    let leaked: Vec<&str> = status
        .iter()
        .filter(|t| t.cluster != "dev-1" && t.applied_revision == v3)
        .map(|t| t.cluster.as_str())
        .collect();
    anyhow::ensure!(leaked.is_empty(), "v3 reached {leaked:?}");
    println!(
        "  ✓ every cluster is back at {}; no cluster outside the canary wave ever ran {}",
        short(&v2),
        short(&v3)
    );

    for command in [
        &["rollout", "history", "hello"][..],
        &["events", "hello", "--limit", "8"][..],
        &["status"][..],
    ] {
        println!("\n$ gitfleet {}", command.join(" "));
        print!("{}", gitfleet(fleet, command, false).await?);
    }
    Ok(())
}

/// Runs the CLI in-process against the demo hub; its output, or its error with the output.
async fn gitfleet(fleet: &Fleet, args: &[&str], terminal: bool) -> anyhow::Result<String> {
    let config = fleet.hub().admin_config_path().display().to_string();
    let mut argv = vec!["gitfleet", "--config", config.as_str()];
    argv.extend_from_slice(args);
    let cli = gitfleet_cli::cli::Cli::try_parse_from(argv)
        .map_err(|e| anyhow::anyhow!("gitfleet {}: {e}", args.join(" ")))?;
    let mut out = Vec::new();
    let result = if terminal {
        gitfleet_cli::cli::run_with(cli, &mut std::io::stdout(), true).await
    } else {
        gitfleet_cli::cli::run(cli, &mut out).await
    };
    let text = String::from_utf8_lossy(&out).into_owned();
    match result {
        Ok(()) => Ok(text),
        Err(e) => {
            print!("{text}");
            Err(anyhow::anyhow!("{e}"))
        }
    }
}

/// Waits for the hub to start rolling out `commit`, then follows it with
/// `gitfleet rollout status hello --watch`: a progress bar per wave on a terminal, a line per
/// step elsewhere. Err when the rollout pauses or rolls back.
async fn watch_rollout(fleet: &mut Fleet, commit: &str, timeout: Duration) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        match fleet.admin().rollout("hello").await {
            Ok(r) if r.revision == commit || r.rolled_back_from == commit => break,
            Ok(_) => {}
            Err(e) if e.to_string().contains("no rollout yet") => {}
            Err(e) => return Err(e.into()),
        }
        anyhow::ensure!(
            start.elapsed() < timeout,
            "the hub did not start rolling out {} within {timeout:?}",
            short(commit)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("$ gitfleet rollout status hello --watch");
    let terminal = std::io::stdout().is_terminal();
    let timeout = humantime::format_duration(timeout).to_string();
    let args = [
        "rollout",
        "status",
        "hello",
        "--watch",
        "--interval",
        "200ms",
        "--timeout",
        timeout.as_str(),
    ];
    let text = gitfleet(fleet, &args, terminal).await?;
    print!("{text}");
    Ok(())
}

/// Waits until every Target of the demo App is synced and healthy at `commit`.
async fn converged(
    fleet: &mut Fleet,
    commit: &str,
    timeout: Duration,
) -> anyhow::Result<Vec<gitfleet_proto::v1::TargetStatus>> {
    let total = fleet.clusters().len();
    let start = Instant::now();
    loop {
        let status = fleet.status("hello").await?;
        if status.len() == total && status.iter().all(|t| is_converged(t, commit)) {
            return Ok(status);
        }
        anyhow::ensure!(
            start.elapsed() < timeout,
            "the Targets did not converge at {} within {timeout:?}:\n{}",
            short(commit),
            describe(&status)
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

/// A single-use sign-in link to the hub's web dashboard, as `gitfleet dashboard --no-open`
/// makes it for the demo's admin.
async fn dashboard_link(fleet: &Fleet) -> anyhow::Result<String> {
    let out = fleet
        .cli(&["dashboard", "--no-open", "-o", "json"])
        .await
        .context("gitfleet dashboard")?;
    let report: serde_json::Value =
        serde_json::from_str(&out).context("gitfleet dashboard's answer")?;
    report["url"]
        .as_str()
        .map(str::to_owned)
        .context("gitfleet dashboard printed no link")
}

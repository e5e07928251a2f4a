//! `cargo demo`: kubesim with three clusters, a hub, three spokes and a local Git repository, all
//! in this process; an App rolls out, a second commit rolls out, and the fleet status is printed.

use std::io::IsTerminal as _;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use gitfleet_e2e::harness::{ClusterSpec, Fleet, FleetOptions, describe, is_converged, short};
use indicatif::{ProgressBar, ProgressStyle};

/// Runs a whole gitfleet fleet on embedded defaults and shows a real rollout.
#[derive(Debug, Parser)]
#[command(name = "demo", version)]
struct Args {
    /// End with status 0 once every Target is synced and healthy at the second commit (non-zero
    /// on timeout), instead of leaving the fleet running for you to explore.
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
        ClusterSpec::new("prod-1").label("env", "prod"),
    ];
    let mut options = FleetOptions::new(clusters.clone());
    options.work_dir = Some(work_dir.clone());
    options.ready_delay = Duration::from_millis(1500);
    let mut fleet = Fleet::start(options).await?;
    println!(
        "  ✓ kubesim serving 3 clusters at {}",
        fleet.kubesim.base_url()
    );
    for c in &clusters {
        let labels: Vec<String> = c.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!("      {:<10} {}", c.name, labels.join(","));
    }
    println!("  ✓ hub listening on {}", fleet.hub().grpc_url());
    println!("  ✓ 3 spokes registered with one-use bootstrap tokens (mutual TLS from now on)");

    let result = demo(&mut fleet, &args).await;
    let kubeconfigs = work_dir.join("kubeconfigs");
    if result.is_ok() && !args.exit_when_converged {
        fleet.kubesim.write_kubeconfigs(&kubeconfigs)?;
        println!("\nThe fleet keeps running. Try, in another terminal:");
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
        "\n→ gitfleet apply: Repo \"demo\" and App \"hello\" (clusters with env in dev, staging, prod)"
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
    rollout(fleet, &v1, args.timeout).await?;

    let deployment = DEPLOYMENT.replace("replicas: 2", "replicas: 3");
    let configmap = CONFIGMAP.replace("gitfleet, v1", "gitfleet, v2");
    fleet.git.write("apps/hello/deployment.yaml", deployment)?;
    fleet.git.write("apps/hello/configmap.yaml", configmap)?;
    let v2 = fleet
        .git
        .commit("hello v2: three replicas and a new greeting")?;
    println!(
        "\n→ git commit {} \"hello v2: three replicas and a new greeting\"",
        short(&v2)
    );
    rollout(fleet, &v2, args.timeout).await?;

    println!("\n$ gitfleet status");
    let config = fleet.hub().admin_config_path().display().to_string();
    let mut out = Vec::new();
    gitfleet_hub::cli::run_args(["gitfleet", "--config", &config, "status"], &mut out)
        .await
        .context("gitfleet status")?;
    print!("{}", String::from_utf8_lossy(&out));
    Ok(())
}

/// Shows a progress bar until every Target of the demo App is synced and healthy at `commit`.
async fn rollout(fleet: &mut Fleet, commit: &str, timeout: Duration) -> anyhow::Result<()> {
    let total = fleet.clusters().len() as u64;
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "  {spinner} [{bar:30}] {pos}/{len} Targets synced+healthy at {prefix}  {msg}",
        )
        .expect("the template is valid")
        .progress_chars("=> "),
    );
    bar.set_prefix(short(commit).to_owned());
    bar.enable_steady_tick(Duration::from_millis(120));
    // Without a terminal the bar is hidden: print each step as a line instead.
    let plain = !std::io::stderr().is_terminal();
    let mut last_done = None;
    let start = Instant::now();
    loop {
        let status = fleet.status("hello").await?;
        let done = status.iter().filter(|t| is_converged(t, commit)).count() as u64;
        bar.set_position(done);
        if plain && last_done != Some(done) {
            println!(
                "  {done}/{total} Targets synced+healthy at {} ({:.1}s)",
                short(commit),
                start.elapsed().as_secs_f64()
            );
            last_done = Some(done);
        }
        let pending: Vec<String> = status
            .iter()
            .filter(|t| !is_converged(t, commit))
            .map(|t| format!("{}: {}", t.cluster, state_word(t, commit)))
            .collect();
        bar.set_message(pending.join("  "));
        if done == total && status.len() as u64 == total {
            bar.finish_with_message(format!("done in {:.1}s", start.elapsed().as_secs_f64()));
            return Ok(());
        }
        if start.elapsed() > timeout {
            bar.abandon_with_message("timed out");
            anyhow::bail!(
                "the rollout of {} did not converge within {timeout:?}:\n{}",
                short(commit),
                describe(&status)
            );
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

fn state_word(t: &gitfleet_proto::v1::TargetStatus, commit: &str) -> &'static str {
    use gitfleet_proto::v1::{HealthState, SyncState};
    if t.desired_revision != commit {
        "waiting for the hub"
    } else if t.applied_revision != commit {
        "applying"
    } else if t.sync != SyncState::Synced as i32 {
        "out of sync"
    } else if t.health == HealthState::Progressing as i32 {
        "progressing"
    } else if t.health == HealthState::Degraded as i32 {
        "degraded"
    } else {
        "checking health"
    }
}

//! Sync hooks and waves that wait, end to end: hub, spoke and kubesim. Apps are laid out the
//! way Argo CD's example repositories lay them out (a migration Job before the Deployment, a
//! smoke check after it, a failure notice), with Argo CD's, gitfleet's and Helm's annotations.
//!
//! Order is asserted with resourceVersions, which kubesim (like the API server) hands out from
//! one counter per cluster: an object that is never written again after its creation (a
//! ConfigMap) has a resourceVersion greater than that of every write that happened before it
//! was created.

use std::path::Path;
use std::time::Duration;

use gitfleet_e2e::harness::{ClusterSpec, Fleet, FleetOptions, until_async};
use gitfleet_proto::v1 as pb;
use kube::api::{Api, DynamicObject, ListParams};
use kube::core::{ApiResource, GroupVersionKind};

const DEADLINE: Duration = Duration::from_secs(60);

fn app(name: &str, namespace: &str) -> String {
    format!(
        "apiVersion: gitfleet.dev/v1
kind: App
metadata: {{name: {name}}}
spec:
  repo: platform
  path: apps/{name}
  namespace: {namespace}
  syncPolicy: {{prune: true}}
  targets:
  - clusterSelector: {{}}
"
    )
}

fn options() -> FleetOptions {
    let mut options = FleetOptions::new(vec![ClusterSpec::new("c1")]);
    // Long enough that a test sees a Job running, short enough to keep the suite quick.
    options.ready_delay = Duration::from_millis(800);
    options.progress_timeout = Duration::from_secs(20);
    options
}

fn job(name_field: &str, annotations: &str) -> String {
    format!(
        "apiVersion: batch/v1
kind: Job
metadata:
  {name_field}
  annotations:
{annotations}
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: run
        image: example.com/tools:1
        command: [sh, -c, 'true']
"
    )
}

fn config_map(name: &str, annotations: &str) -> String {
    format!(
        "apiVersion: v1
kind: ConfigMap
metadata:
  name: {name}
  annotations:
    {annotations}
data: {{ready: \"yes\"}}
"
    )
}

const DEPLOYMENT: &str = "apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: example.com/web:1}]
";

async fn api(
    fleet: &Fleet,
    namespace: &str,
    group: &str,
    kind: &str,
    plural: &str,
) -> Api<DynamicObject> {
    let client = kube::Client::try_from(fleet.kubesim.kube_config("c1")).expect("kube client");
    let (group, version) = match group {
        "" => ("", "v1"),
        g => (g, "v1"),
    };
    let resource =
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
    Api::namespaced_with(client, namespace, &resource)
}

async fn jobs(fleet: &Fleet, namespace: &str) -> Api<DynamicObject> {
    api(fleet, namespace, "batch", "Job", "jobs").await
}

async fn config_maps(fleet: &Fleet, namespace: &str) -> Api<DynamicObject> {
    api(fleet, namespace, "", "ConfigMap", "configmaps").await
}

async fn deployments(fleet: &Fleet, namespace: &str) -> Api<DynamicObject> {
    api(fleet, namespace, "apps", "Deployment", "deployments").await
}

fn version(object: &DynamicObject) -> u64 {
    object
        .metadata
        .resource_version
        .as_deref()
        .and_then(|v| v.parse().ok())
        .expect("numeric resourceVersion")
}

fn target(status: &[pb::TargetStatus]) -> Option<&pb::TargetStatus> {
    status.first()
}

fn resource<'a>(
    t: &'a pb::TargetStatus,
    kind: &str,
    name_prefix: &str,
) -> Option<&'a pb::ResourceResult> {
    t.resources
        .iter()
        .find(|r| r.kind == kind && r.name.starts_with(name_prefix))
}

fn settled_at(status: &[pb::TargetStatus], commit: &str) -> bool {
    target(status).is_some_and(|t| {
        t.applied_revision == commit
            && t.health() != pb::HealthState::Progressing
            && t.sync() != pb::SyncState::Syncing
    })
}

async fn start(files: &[(&str, String)], app_name: &str, namespace: &str) -> (Fleet, String) {
    start_with(options(), files, app_name, namespace).await
}

async fn start_with(
    options: FleetOptions,
    files: &[(&str, String)],
    app_name: &str,
    namespace: &str,
) -> (Fleet, String) {
    let mut fleet = Fleet::start(options).await.expect("fleet");
    for (path, text) in files {
        fleet
            .git
            .write(&format!("apps/{app_name}/{path}"), text)
            .expect("write");
    }
    let commit = fleet.git.commit(app_name).expect("commit");
    let yaml = format!(
        "{}---\n{}",
        fleet.repo_yaml("platform"),
        app(app_name, namespace)
    );
    fleet.apply_yaml(&yaml).await.expect("apply");
    (fleet, commit)
}

/// (a) Argo CD's pre/post-sync layout: a PreSync migration Job named by the server, the
/// Deployment, and PostSync hooks once it is healthy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presync_runs_before_the_objects_and_postsync_after_they_are_healthy() {
    let (mut fleet, commit) = start(
        &[
            (
                "migrate.yaml",
                job(
                    "generateName: migrate-",
                    "    argocd.argoproj.io/hook: PreSync",
                ),
            ),
            (
                "settings.yaml",
                config_map("settings", "gitfleet.dev/wave: \"0\""),
            ),
            ("deployment.yaml", DEPLOYMENT.to_owned()),
            (
                "smoke.yaml",
                job("name: smoke", "    argocd.argoproj.io/hook: PostSync"),
            ),
            (
                "smoke-done.yaml",
                config_map("smoke-done", "argocd.argoproj.io/hook: PostSync"),
            ),
        ],
        "shop",
        "shop",
    )
    .await;
    let status = fleet
        .wait_for("shop", "the sync and its hooks done", DEADLINE, |s| {
            settled_at(s, &commit)
                && target(s).is_some_and(|t| resource(t, "ConfigMap", "smoke-done").is_some())
        })
        .await
        .unwrap();
    let t = target(&status).unwrap();
    assert_eq!(t.health(), pb::HealthState::Healthy, "{}", t.message);
    assert_eq!(t.sync(), pb::SyncState::Synced, "{}", t.message);
    let migrate = resource(t, "Job", "migrate-").expect("the PreSync hook is reported");
    assert_eq!(migrate.hook, "PreSync");
    assert_ne!(migrate.name, "migrate-", "the server named it");
    assert_eq!(
        migrate.health(),
        pb::HealthState::Healthy,
        "{}",
        migrate.message
    );
    assert_eq!(resource(t, "Job", "smoke").unwrap().hook, "PostSync");
    assert_eq!(resource(t, "Deployment", "web").unwrap().hook, "");

    // The migration Job completed before the first ordinary object was created, and the
    // PostSync hook was created after the Deployment became available.
    let job = jobs(&fleet, "shop").await.get(&migrate.name).await.unwrap();
    let settings = config_maps(&fleet, "shop")
        .await
        .get("settings")
        .await
        .unwrap();
    assert!(
        version(&job) < version(&settings),
        "the PreSync Job (last written at {}) completed before the objects were applied ({})",
        version(&job),
        version(&settings)
    );
    let web = deployments(&fleet, "shop").await.get("web").await.unwrap();
    let smoke_done = config_maps(&fleet, "shop")
        .await
        .get("smoke-done")
        .await
        .unwrap();
    assert!(
        version(&web) < version(&smoke_done),
        "the PostSync hook ({}) came after the Deployment became available ({})",
        version(&smoke_done),
        version(&web)
    );
    // Hooks are not the App's inventory: the inventory names the ordinary objects only.
    let inventory = config_maps(&fleet, "shop")
        .await
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .find(|c| {
            c.metadata
                .name
                .as_deref()
                .is_some_and(|n| n.starts_with("gitfleet-inventory-"))
        })
        .expect("an inventory");
    let recorded = serde_json::to_string(&inventory.data).unwrap();
    assert!(recorded.contains("settings"), "{recorded}");
    assert!(
        !recorded.contains("migrate-") && !recorded.contains("smoke"),
        "{recorded}"
    );

    // The CLI shows the phase in the HOOK column.
    let out = fleet
        .cli(&["status", "--app", "shop", "--resources"])
        .await
        .unwrap();
    assert!(out.contains("HOOK"), "{out}");
    let smoke_row = out
        .lines()
        .find(|l| l.contains("Job/shop/smoke"))
        .unwrap_or_else(|| panic!("no smoke row in\n{out}"));
    assert!(smoke_row.contains("PostSync"), "{out}");
    fleet.shutdown().await;
}

/// (b) A PreSync hook that fails stops the sync: nothing else is applied, the Target names the
/// hook and why, and the SyncFail hook runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_presync_hook_stops_the_sync_and_runs_syncfail() {
    let (mut fleet, commit) = start(
        &[
            (
                "migrate.yaml",
                job(
                    "name: migrate",
                    "    gitfleet.dev/hook: PreSync\n    kubesim.gitfleet.dev/fail: \"true\"",
                ),
            ),
            ("deployment.yaml", DEPLOYMENT.to_owned()),
            (
                "notify.yaml",
                config_map("sync-failed", "gitfleet.dev/hook: SyncFail"),
            ),
            (
                "smoke.yaml",
                job("name: smoke", "    gitfleet.dev/hook: PostSync"),
            ),
        ],
        "orders",
        "orders",
    )
    .await;
    let status = fleet
        .wait_for(
            "orders",
            "the sync stopped by its PreSync hook",
            DEADLINE,
            |s| {
                settled_at(s, &commit)
                    && target(s).is_some_and(|t| resource(t, "ConfigMap", "sync-failed").is_some())
            },
        )
        .await
        .unwrap();
    let t = target(&status).unwrap();
    assert_eq!(t.health(), pb::HealthState::Degraded, "{}", t.message);
    assert!(
        t.message.contains("job/migrate") && t.message.contains("BackoffLimitExceeded"),
        "the Target names the hook and why: {}",
        t.message
    );
    let migrate = resource(t, "Job", "migrate").unwrap();
    assert_eq!(
        (migrate.hook.as_str(), migrate.action.as_str()),
        ("PreSync", "failed")
    );
    let web = resource(t, "Deployment", "web").unwrap();
    assert_eq!(web.action, "skipped");
    assert!(web.message.contains("job/migrate"), "{}", web.message);
    let smoke = resource(t, "Job", "smoke").unwrap();
    assert_eq!(
        (smoke.hook.as_str(), smoke.action.as_str()),
        ("PostSync", "skipped")
    );
    let notify = resource(t, "ConfigMap", "sync-failed").unwrap();
    assert_eq!(
        (notify.hook.as_str(), notify.action.as_str()),
        ("SyncFail", "applied")
    );

    assert!(
        deployments(&fleet, "orders")
            .await
            .get_opt("web")
            .await
            .unwrap()
            .is_none(),
        "the Deployment was never applied"
    );
    assert!(
        jobs(&fleet, "orders")
            .await
            .get_opt("smoke")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        config_maps(&fleet, "orders")
            .await
            .get_opt("sync-failed")
            .await
            .unwrap()
            .is_some()
    );
    fleet.shutdown().await;
}

/// (c) Waves -1, 0 and 1 (Argo CD's sync-wave): wave 1 is applied only once the Job of wave 0
/// has completed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wave_is_applied_only_once_the_wave_before_it_is_healthy() {
    let (mut fleet, commit) = start(
        &[
            (
                "00-config.yaml",
                config_map("first", "argocd.argoproj.io/sync-wave: \"-1\""),
            ),
            (
                "10-seed.yaml",
                job("name: seed", "    argocd.argoproj.io/sync-wave: \"0\""),
            ),
            (
                "20-after.yaml",
                config_map("after", "gitfleet.dev/wave: \"1\""),
            ),
        ],
        "waves",
        "waves",
    )
    .await;
    // While the Job of wave 0 runs, wave 1 is not there.
    let seen_running = until_async("the seed Job running", DEADLINE, async || {
        let Some(seed) = jobs(&fleet, "waves").await.get_opt("seed").await? else {
            return Ok(None);
        };
        let after = config_maps(&fleet, "waves").await.get_opt("after").await?;
        Ok(Some((seed, after)))
    })
    .await
    .unwrap();
    let (seed, after) = seen_running;
    let complete = seed
        .data
        .pointer("/status/conditions")
        .and_then(|c| c.as_array())
        .is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "Complete" && c["status"] == "True")
        });
    if !complete {
        // Read after the Job: created by then only if the Job had completed in between.
        if let Some(after) = &after {
            let seed_now = jobs(&fleet, "waves").await.get("seed").await.unwrap();
            assert!(version(&seed_now) < version(after));
        }
    }
    let status = fleet
        .wait_for("waves", "every wave applied", DEADLINE, |s| {
            settled_at(s, &commit)
        })
        .await
        .unwrap();
    let t = target(&status).unwrap();
    assert_eq!(t.health(), pb::HealthState::Healthy, "{}", t.message);
    assert_eq!(t.sync(), pb::SyncState::Synced, "{}", t.message);
    let seed = jobs(&fleet, "waves").await.get("seed").await.unwrap();
    let first = config_maps(&fleet, "waves")
        .await
        .get("first")
        .await
        .unwrap();
    let after = config_maps(&fleet, "waves")
        .await
        .get("after")
        .await
        .unwrap();
    assert!(version(&first) < version(&seed), "wave -1 before wave 0");
    assert!(
        version(&seed) < version(&after),
        "wave 1 ({}) was created after wave 0's Job completed ({})",
        version(&after),
        version(&seed)
    );
    fleet.shutdown().await;
}

/// (c') A wave that does not become healthy stops the sync: later waves are reported skipped,
/// naming the wave and the object, and the Target is Degraded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wave_that_fails_keeps_later_waves_back() {
    let (mut fleet, commit) = start(
        &[
            (
                "10-seed.yaml",
                job(
                    "name: seed",
                    "    gitfleet.dev/wave: \"0\"\n    kubesim.gitfleet.dev/fail: \"true\"",
                ),
            ),
            (
                "20-after.yaml",
                config_map("after", "gitfleet.dev/wave: \"1\""),
            ),
        ],
        "broken",
        "broken",
    )
    .await;
    let status = fleet
        .wait_for("broken", "the sync stopped after wave 0", DEADLINE, |s| {
            settled_at(s, &commit)
        })
        .await
        .unwrap();
    let t = target(&status).unwrap();
    assert_eq!(t.health(), pb::HealthState::Degraded, "{}", t.message);
    let after = resource(t, "ConfigMap", "after").unwrap();
    assert_eq!(after.action, "skipped");
    assert!(
        after.message.contains("wave 0") && after.message.contains("job/seed"),
        "{}",
        after.message
    );
    assert!(
        config_maps(&fleet, "broken")
            .await
            .get_opt("after")
            .await
            .unwrap()
            .is_none(),
        "wave 1 was never applied"
    );
    fleet.shutdown().await;
}

const CHART: &str = "apiVersion: v2
name: shop
version: 0.1.0
";

const CHART_CONFIG: &str = "apiVersion: v1
kind: ConfigMap
metadata: {name: {{ .Release.Name }}-config}
data: {version: \"{{ .Values.version }}\"}
";

const CHART_UPGRADE_HOOK: &str = "apiVersion: batch/v1
kind: Job
metadata:
  name: {{ .Release.Name }}-upgrade-{{ .Values.version }}
  annotations:
    helm.sh/hook: pre-upgrade
    helm.sh/hook-weight: \"-1\"
    helm.sh/hook-delete-policy: before-hook-creation
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      containers: [{name: upgrade, image: example.com/tools:1}]
";

/// (d) A Helm chart's pre-upgrade hook does not run on the first sync, and runs on the next
/// commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_helm_pre_upgrade_hook_runs_on_upgrades_only() {
    let mut options = options();
    options.helm_command = Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/helm"));
    let (mut fleet, first) = start_with(
        options,
        &[
            ("Chart.yaml", CHART.to_owned()),
            ("values.yaml", "version: \"1\"\n".to_owned()),
            ("templates/config.yaml", CHART_CONFIG.to_owned()),
            ("templates/upgrade.yaml", CHART_UPGRADE_HOOK.to_owned()),
        ],
        "chart",
        "chart",
    )
    .await;
    let status = fleet
        .wait_for("chart", "the chart installed", DEADLINE, |s| {
            settled_at(s, &first)
        })
        .await
        .unwrap();
    let t = target(&status).unwrap();
    assert_eq!(t.sync(), pb::SyncState::Synced, "{}", t.message);
    let hook = resource(t, "Job", "chart-upgrade-1").expect("the hook is reported");
    assert_eq!(hook.action, "skipped");
    assert!(hook.message.contains("first sync"), "{}", hook.message);
    assert!(
        jobs(&fleet, "chart")
            .await
            .get_opt("chart-upgrade-1")
            .await
            .unwrap()
            .is_none()
    );

    fleet
        .git
        .write("apps/chart/values.yaml", "version: \"2\"\n")
        .unwrap();
    let second = fleet.git.commit("version 2").unwrap();
    let status = fleet
        .wait_for(
            "chart",
            "the chart upgraded",
            Duration::from_secs(90),
            |s| settled_at(s, &second),
        )
        .await
        .unwrap();
    let t = target(&status).unwrap();
    assert_eq!(t.health(), pb::HealthState::Healthy, "{}", t.message);
    let hook = resource(t, "Job", "chart-upgrade-2").expect("the hook ran");
    assert_eq!(
        (hook.hook.as_str(), hook.action.as_str()),
        ("PreSync", "applied")
    );
    let job = jobs(&fleet, "chart")
        .await
        .get("chart-upgrade-2")
        .await
        .unwrap();
    let config = config_maps(&fleet, "chart")
        .await
        .get("chart-config")
        .await
        .unwrap();
    assert_eq!(config.data["data"]["version"], "2");
    assert!(
        version(&job) < version(&config),
        "the upgrade hook ran before the upgrade"
    );
    fleet.shutdown().await;
}

/// (e) HookSucceeded removes the hook's Job once it has completed; BeforeHookCreation replaces
/// a fixed-name hook's earlier run on the next sync.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_policies_remove_a_hook_after_success_or_before_the_next_run() {
    let (mut fleet, commit) = start(
        &[
            (
                "cleanup.yaml",
                job(
                    "name: cleanup",
                    "    gitfleet.dev/hook: PreSync\n    gitfleet.dev/hook-delete-policy: HookSucceeded",
                ),
            ),
            (
                "kept.yaml",
                job("name: kept", "    gitfleet.dev/hook: PostSync"),
            ),
            ("settings.yaml", config_map("settings", "gitfleet.dev/wave: \"0\"")),
        ],
        "tidy",
        "tidy",
    )
    .await;
    let status = fleet
        .wait_for("tidy", "the sync and its hooks done", DEADLINE, |s| {
            settled_at(s, &commit)
                && target(s).is_some_and(|t| resource(t, "Job", "kept").is_some())
        })
        .await
        .unwrap();
    let t = target(&status).unwrap();
    assert_eq!(t.health(), pb::HealthState::Healthy, "{}", t.message);
    let cleanup = resource(t, "Job", "cleanup").unwrap();
    assert!(
        cleanup.message.contains("deleted (HookSucceeded)"),
        "{}",
        cleanup.message
    );
    assert!(
        jobs(&fleet, "tidy")
            .await
            .get_opt("cleanup")
            .await
            .unwrap()
            .is_none(),
        "HookSucceeded deleted the Job"
    );
    let kept = jobs(&fleet, "tidy").await.get("kept").await.unwrap();
    let kept_uid = kept.metadata.uid.clone();

    // The next commit runs the PostSync hook again: its earlier Job is deleted and created anew.
    fleet
        .git
        .write(
            "apps/tidy/settings.yaml",
            config_map("settings", "gitfleet.dev/wave: \"1\""),
        )
        .unwrap();
    let second = fleet.git.commit("again").unwrap();
    fleet
        .wait_for("tidy", "the second sync done", DEADLINE, |s| {
            settled_at(s, &second)
                && target(s).is_some_and(|t| resource(t, "Job", "kept").is_some())
        })
        .await
        .unwrap();
    let again = jobs(&fleet, "tidy").await.get("kept").await.unwrap();
    assert_ne!(
        again.metadata.uid, kept_uid,
        "BeforeHookCreation made a new Job"
    );
    fleet.shutdown().await;
}

/// PostSync hooks wait for the App to be healthy: a Deployment that never becomes available
/// keeps them from running, and the SyncFail hook runs instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postsync_hooks_do_not_run_when_the_app_does_not_become_healthy() {
    let failing = DEPLOYMENT.replace(
        "metadata: {name: web}",
        "metadata: {name: web, annotations: {kubesim.gitfleet.dev/fail: \"true\"}}",
    );
    let (mut fleet, commit) = start(
        &[
            ("deployment.yaml", failing),
            (
                "smoke.yaml",
                job("name: smoke", "    argocd.argoproj.io/hook: PostSync"),
            ),
            (
                "notify.yaml",
                config_map("sync-failed", "argocd.argoproj.io/hook: SyncFail"),
            ),
        ],
        "stuck",
        "stuck",
    )
    .await;
    let status = fleet
        .wait_for(
            "stuck",
            "the sync given up before PostSync",
            DEADLINE,
            |s| {
                settled_at(s, &commit)
                    && target(s).is_some_and(|t| resource(t, "ConfigMap", "sync-failed").is_some())
            },
        )
        .await
        .unwrap();
    let t = target(&status).unwrap();
    assert_eq!(t.health(), pb::HealthState::Degraded, "{}", t.message);
    let smoke = resource(t, "Job", "smoke").unwrap();
    assert_eq!(
        (smoke.hook.as_str(), smoke.action.as_str()),
        ("PostSync", "skipped")
    );
    assert!(
        smoke.message.contains("deployment/web") && smoke.message.contains("degraded"),
        "{}",
        smoke.message
    );
    let notify = resource(t, "ConfigMap", "sync-failed").unwrap();
    assert_eq!(
        (notify.hook.as_str(), notify.action.as_str()),
        ("SyncFail", "applied")
    );
    assert!(
        jobs(&fleet, "stuck")
            .await
            .get_opt("smoke")
            .await
            .unwrap()
            .is_none()
    );
    fleet.shutdown().await;
}

use super::*;
use gitfleet_core::yaml::Limits;

/// `scripts/helm`: the helm-compatible wrapper around helm-python-sdk (its venv comes from
/// scripts/charts-venv, which scripts/test prepares through scripts/check-charts).
fn helm_command() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/helm")
}

fn podinfo_chart() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus/podinfo/charts/podinfo")
}

fn write(dir: &Path, path: &str, content: &str) {
    let full = dir.join(path);
    std::fs::create_dir_all(full.parent().expect("parent")).expect("mkdir");
    std::fs::write(full, content).expect("write");
}

/// A request whose throwaway home is `work` itself (tests that look at the home set their own).
fn request<'a>(
    command: &'a Path,
    chart: &'a Path,
    work: &'a Path,
    values: &'a [PathBuf],
) -> TemplateRequest<'a> {
    TemplateRequest {
        command,
        chart,
        release: "web",
        namespace: "shop",
        values_files: values,
        timeout: Duration::from_secs(60),
        max_bytes: 8 * 1024 * 1024,
        work_dir: work,
        home: work,
    }
}

/// A stand-in for helm that records that it ran (a file next to it) and prints its arguments,
/// one per line, then `===`, then its environment.
fn fake_helm(dir: &Path) -> PathBuf {
    let script = dir.join("fake-helm");
    write(
        dir,
        "fake-helm",
        "#!/bin/sh\ntouch \"$0.ran\"\nprintf '%s\\n' \"$@\"\necho ===\nenv\n",
    );
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    script
}

#[test]
fn release_names_follow_helm_s_rule() {
    for good in ["web", "web-1", "web.v1", "a", &"a".repeat(53)] {
        assert_eq!(release_name_problem(good), None, "{good}");
    }
    for (bad, problem) in [
        ("", "must not be empty"),
        (&"a".repeat(54) as &str, "must be at most 53 characters"),
        (
            "--set-file=k=/data/identity/key.pem",
            "must consist of lowercase letters, digits, '-' and '.'",
        ),
        (
            "--post-renderer=/bin/sh",
            "must consist of lowercase letters, digits, '-' and '.'",
        ),
        (
            "Web",
            "must consist of lowercase letters, digits, '-' and '.'",
        ),
        (
            "web app",
            "must consist of lowercase letters, digits, '-' and '.'",
        ),
        (
            "-web",
            "must start and end with a letter or digit, and so must each part between dots",
        ),
        (
            "web.",
            "must start and end with a letter or digit, and so must each part between dots",
        ),
        (
            "web..v1",
            "must start and end with a letter or digit, and so must each part between dots",
        ),
        (
            "web.-v1",
            "must start and end with a letter or digit, and so must each part between dots",
        ),
    ] {
        assert_eq!(release_name_problem(bad), Some(problem), "{bad}");
    }
    assert_eq!(namespace_problem("shop"), None);
    assert!(namespace_problem("--kubeconfig=/x").is_some());
    assert!(namespace_problem("shop.v1").is_some());
    assert_eq!(values_file_problem("values-prod.yaml"), None);
    assert_eq!(
        values_file_problem("-f.yaml"),
        Some("must not start with '-'")
    );
}

#[tokio::test]
async fn a_release_name_that_smuggles_a_flag_is_refused_and_helm_never_runs() {
    let work = tempfile::TempDir::new().expect("tempdir");
    let helm = fake_helm(work.path());
    let chart = podinfo_chart();
    for (release, namespace, message) in [
        (
            "--set-file=k=/data/identity/key.pem",
            "shop",
            "release name \"--set-file=k=/data/identity/key.pem\" must consist of lowercase letters, digits, '-' and '.'",
        ),
        (
            "--post-renderer=/bin/sh",
            "shop",
            "release name \"--post-renderer=/bin/sh\" must consist of lowercase letters, digits, '-' and '.'",
        ),
        (
            "web",
            "--set-file=k=/x",
            "namespace \"--set-file=k=/x\" must consist of lowercase letters, digits and '-'",
        ),
    ] {
        let mut req = request(&helm, &chart, work.path(), &[]);
        req.release = release;
        req.namespace = namespace;
        let err = template(&req).await.expect_err("refused");
        assert!(matches!(err, HelmError::Refused { .. }), "{err}");
        assert_eq!(err.to_string(), message);
    }
    let relative = [PathBuf::from("--values=x.yaml")];
    let err = template(&request(&helm, &chart, work.path(), &relative))
        .await
        .expect_err("refused");
    assert_eq!(
        err.to_string(),
        "values file \"--values=x.yaml\" must be an absolute path"
    );
    assert!(!work.path().join("fake-helm.ran").exists(), "helm ran");
}

#[tokio::test]
async fn helm_gets_its_flags_before_a_double_dash_and_only_a_sandboxed_environment() {
    let work = tempfile::TempDir::new().expect("tempdir");
    let home = tempfile::TempDir::new().expect("tempdir");
    let helm = fake_helm(work.path());
    let chart = podinfo_chart();
    let values = [
        chart.join("values-prod.yaml"),
        work.path().join("inline.yaml"),
    ];
    let mut req = request(&helm, &chart, work.path(), &values);
    req.home = home.path();
    let output = template(&req).await.expect("runs");
    let output = String::from_utf8(output).expect("utf8");
    let (args, env) = output.split_once("===\n").expect("args and env");
    let values_flag = |p: &Path| format!("--values={}", p.display());
    assert_eq!(
        args.lines().collect::<Vec<_>>(),
        [
            "template".to_owned(),
            "--namespace=shop".to_owned(),
            "--include-crds".to_owned(),
            "--skip-tests".to_owned(),
            values_flag(&values[0]),
            values_flag(&values[1]),
            "--".to_owned(),
            "web".to_owned(),
            chart.display().to_string(),
        ]
    );
    let env: Vec<(&str, &str)> = env.lines().filter_map(|l| l.split_once('=')).collect();
    let var = |key: &str| env.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
    assert_eq!(var("HOME"), Some(home.path().to_str().expect("utf8")));
    for key in [
        "HELM_CONFIG_HOME",
        "HELM_CACHE_HOME",
        "HELM_DATA_HOME",
        "XDG_CONFIG_HOME",
    ] {
        let dir = var(key).unwrap_or_else(|| panic!("{key} set"));
        assert!(Path::new(dir).starts_with(home.path()), "{key}={dir}");
    }
    assert_eq!(var("KUBECONFIG"), Some("/dev/null"));
    // Whatever else the test process has in its environment (cargo's variables, at least)
    // stays out of helm's. (The fake helm's shell sets PWD, SHLVL and `_` itself.)
    let allowed = crate::process::sandbox_env(Vec::new(), home.path());
    let own: Vec<String> = std::env::vars()
        .map(|(k, _)| k)
        .filter(|k| !["PWD", "OLDPWD", "SHLVL", "_"].contains(&k.as_str()))
        .filter(|k| !crate::process::INHERITED_ENV.contains(&k.as_str()))
        .filter(|k| !allowed.iter().any(|(a, _)| a == k.as_str()))
        .collect();
    assert!(!own.is_empty());
    for key in &own {
        assert_eq!(var(key), None, "{key} reached helm");
    }
}

#[test]
fn output_is_split_per_template_and_named_in_the_repository() {
    let output = b"---\n# Source: podinfo/templates/service.yaml\napiVersion: v1\nkind: Service\n\
---\n# Source: podinfo/templates/deployment.yaml\napiVersion: apps/v1\nkind: Deployment\n\
---\n# Source: podinfo/templates/service.yaml\napiVersion: v1\nkind: Service\nmetadata: {name: b}\n\
---\n# Source: podinfo/templates/NOTES\nkind: X\n";
    let files = split_sources(output, "charts/podinfo");
    let names: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(
        names,
        [
            "charts/podinfo/templates/service.yaml",
            "charts/podinfo/templates/deployment.yaml",
            "charts/podinfo/templates/NOTES.yaml",
        ]
    );
    let service = String::from_utf8(files[0].content.clone()).expect("utf8");
    assert_eq!(
        service,
        "apiVersion: v1\nkind: Service\n---\napiVersion: v1\nkind: Service\nmetadata: {name: b}\n"
    );
    let root = split_sources(b"apiVersion: v1\nkind: ConfigMap\n", "");
    assert_eq!(root[0].path, "Chart.yaml");
    assert!(split_sources(b"---\n---\n", "c").is_empty());
}

#[test]
fn dependencies_must_be_vendored() {
    let dir = tempfile::TempDir::new().expect("tempdir");
    let chart = dir.path().join("app");
    write(
        &chart,
        "Chart.yaml",
        "apiVersion: v2\nname: app\nversion: 1.0.0\ndependencies:\n- name: redis\n  version: 1.x\n  repository: https://charts.example.com\n",
    );
    let err = check_vendored(&chart, dir.path(), &Budget::new(Limits::DEFAULT))
        .expect_err("not vendored");
    assert!(
        err.to_string().starts_with(
            "app/Chart.yaml: dependency \"redis\" is not vendored under charts/ (repository \"https://charts.example.com\")"
        ),
        "{err}"
    );
    write(&chart, "charts/redis-1.2.3.tgz", "");
    check_vendored(&chart, dir.path(), &Budget::new(Limits::DEFAULT)).expect("packaged subchart");
    std::fs::remove_file(chart.join("charts/redis-1.2.3.tgz")).expect("rm");
    write(
        &chart,
        "charts/redis/Chart.yaml",
        "apiVersion: v2\nname: redis\nversion: 1.0.0\ndependencies:\n- name: common\n  repository: oci://registry.example.com/charts\n",
    );
    let err = check_vendored(&chart, dir.path(), &Budget::new(Limits::DEFAULT))
        .expect_err("nested not vendored");
    assert!(
        err.to_string()
            .starts_with("app/charts/redis/Chart.yaml: dependency \"common\""),
        "{err}"
    );
    write(
        &chart,
        "charts/redis/charts/common/Chart.yaml",
        "apiVersion: v2\nname: common\nversion: 1.0.0\n",
    );
    check_vendored(&chart, dir.path(), &Budget::new(Limits::DEFAULT)).expect("all vendored");
    write(&chart, "requirements.yaml", "dependencies: {broken");
    let err =
        check_vendored(&chart, dir.path(), &Budget::new(Limits::DEFAULT)).expect_err("bad yaml");
    assert!(
        err.to_string().starts_with("app/requirements.yaml: "),
        "{err}"
    );
}

#[tokio::test]
async fn podinfo_renders_with_values_release_and_namespace() {
    let work = tempfile::TempDir::new().expect("tempdir");
    let chart = podinfo_chart();
    let values = work.path().join("inline.yaml");
    std::fs::write(&values, "hpa:\n  maxReplicas: 7\n").expect("write");
    let values = [chart.join("values-prod.yaml"), values];
    let output = template(&request(&helm_command(), &chart, work.path(), &values))
        .await
        .expect("renders");
    let files = split_sources(&output, "charts/podinfo");
    let doc = |path: &str| -> serde_json::Value {
        let file = files
            .iter()
            .find(|f| f.path == path)
            .unwrap_or_else(|| panic!("{path} rendered"));
        let text = std::str::from_utf8(&file.content).expect("utf-8");
        Budget::new(Limits::DEFAULT).document(text).expect("yaml")
    };
    let deployment = doc("charts/podinfo/templates/deployment.yaml");
    assert_eq!(deployment["kind"], "Deployment");
    assert_eq!(deployment["metadata"]["name"], "web-podinfo");
    assert_eq!(deployment["metadata"]["namespace"], "shop");
    // values-prod.yaml turns the HPA on (so the Deployment leaves replicas to it); the inline
    // values, last, override its maxReplicas.
    assert!(deployment["spec"].get("replicas").is_none());
    let hpa = doc("charts/podinfo/templates/hpa.yaml");
    assert_eq!(hpa["spec"]["maxReplicas"], 7);
}

#[tokio::test]
async fn a_looping_chart_is_stopped_at_the_timeout() {
    let work = tempfile::TempDir::new().expect("tempdir");
    let chart = work.path().join("loop");
    write(
        &chart,
        "Chart.yaml",
        "apiVersion: v2\nname: loop\nversion: 1.0.0\n",
    );
    write(
        &chart,
        "templates/cm.yaml",
        "{{- range until 100000 }}{{- range until 100000 }}{{- end }}{{- end }}\n",
    );
    let helm = helm_command();
    let mut req = request(&helm, &chart, work.path(), &[]);
    req.timeout = Duration::from_secs(3);
    let err = template(&req).await.expect_err("loops");
    assert!(matches!(err, HelmError::Run(RunError::Timeout(_))), "{err}");
    assert_eq!(err.to_string(), "helm template did not finish within 3s");
}

#[tokio::test]
async fn a_recursive_template_fails_with_the_engine_s_message() {
    let work = tempfile::TempDir::new().expect("tempdir");
    let chart = work.path().join("rec");
    write(
        &chart,
        "Chart.yaml",
        "apiVersion: v2\nname: rec\nversion: 1.0.0\n",
    );
    write(
        &chart,
        "templates/cm.yaml",
        "{{- define \"rec.loop\" }}{{ include \"rec.loop\" . }}{{- end }}{{ include \"rec.loop\" . }}\n",
    );
    let err = template(&request(&helm_command(), &chart, work.path(), &[]))
        .await
        .expect_err("recursion");
    let message = err.to_string();
    assert!(message.starts_with("helm template "), "{message}");
    assert!(
        !message.contains(&work.path().display().to_string()),
        "{message}"
    );
    assert!(message.contains("rec/templates/cm.yaml"), "{message}");
}

#[tokio::test]
async fn a_chart_writing_too_much_is_refused() {
    let work = tempfile::TempDir::new().expect("tempdir");
    let (helm, chart) = (helm_command(), podinfo_chart());
    let mut req = request(&helm, &chart, work.path(), &[]);
    req.max_bytes = 1000;
    let err = template(&req).await.expect_err("too large");
    assert_eq!(err.to_string(), "helm template wrote more than 1000 bytes");
}

#[tokio::test]
async fn a_missing_helm_says_how_to_configure_one() {
    let work = tempfile::TempDir::new().expect("tempdir");
    let chart = podinfo_chart();
    let missing = Path::new("/nonexistent/helm");
    let err = template(&request(missing, &chart, work.path(), &[]))
        .await
        .expect_err("missing");
    assert_eq!(
        err.to_string(),
        "cannot run /nonexistent/helm: No such file or directory (os error 2); install helm or point --helm-command at it"
    );
}

/// A YAML alias bomb: one anchored scalar repeated by 100,000 aliases, under 1 MiB.
fn alias_bomb(head: &str) -> String {
    let mut text = format!("{head}\nx: &x \"{}\"\ny: [", "x".repeat(4096));
    text.push_str(&vec!["*x"; 100_000].join(","));
    text.push_str("]\n");
    text
}

/// Chart.yaml and requirements.yaml were parsed without any budget.
#[test]
fn an_alias_bomb_in_chart_yaml_or_requirements_yaml_is_refused() {
    for file in ["Chart.yaml", "requirements.yaml"] {
        let dir = tempfile::TempDir::new().unwrap();
        let chart = dir.path().join("app");
        write(
            &chart,
            "Chart.yaml",
            "apiVersion: v2\nname: app\nversion: 1.0.0\n",
        );
        write(
            &chart,
            file,
            &alias_bomb("apiVersion: v2\nname: app\nversion: 1.0.0"),
        );
        let err = check_vendored(&chart, dir.path(), &Budget::new(Limits::DEFAULT))
            .expect_err("alias bomb");
        assert!(
            err.to_string()
                .starts_with(&format!("app/{file}: more than 10000 YAML aliases")),
            "{err}"
        );
    }
}

/// Chart.yaml is read with serde-saphyr (through gitfleet-core's budget): a syntax error says
/// where it is.
#[test]
fn a_chart_that_does_not_parse_is_refused_with_its_location() {
    let work = tempfile::TempDir::new().expect("tempdir");
    let chart = work.path().join("web");
    write(
        &chart,
        "Chart.yaml",
        "apiVersion: v2\nname: web\ndependencies: [a, b\nversion: 1.0.0\n",
    );
    let err = check_vendored(&chart, work.path(), &Budget::new(Limits::DEFAULT))
        .expect_err("bad yaml")
        .to_string();
    assert!(err.starts_with("web/Chart.yaml: line "), "{err}");
    assert!(err.contains("column"), "{err}");
}

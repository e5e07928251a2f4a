use super::*;

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
    let err = check_vendored(&chart, dir.path()).expect_err("not vendored");
    assert!(
        err.to_string().starts_with(
            "app/Chart.yaml: dependency \"redis\" is not vendored under charts/ (repository \"https://charts.example.com\")"
        ),
        "{err}"
    );
    write(&chart, "charts/redis-1.2.3.tgz", "");
    check_vendored(&chart, dir.path()).expect("packaged subchart");
    std::fs::remove_file(chart.join("charts/redis-1.2.3.tgz")).expect("rm");
    write(
        &chart,
        "charts/redis/Chart.yaml",
        "apiVersion: v2\nname: redis\nversion: 1.0.0\ndependencies:\n- name: common\n  repository: oci://registry.example.com/charts\n",
    );
    let err = check_vendored(&chart, dir.path()).expect_err("nested not vendored");
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
    check_vendored(&chart, dir.path()).expect("all vendored");
    write(&chart, "requirements.yaml", "dependencies: {broken");
    let err = check_vendored(&chart, dir.path()).expect_err("bad yaml");
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
    let doc = |path: &str| -> serde_yaml::Value {
        let file = files
            .iter()
            .find(|f| f.path == path)
            .unwrap_or_else(|| panic!("{path} rendered"));
        serde_yaml::from_slice(&file.content).expect("yaml")
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

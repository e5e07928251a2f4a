use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;
use crate::sync::render::{RenderContext, no_discovery};

fn file(path: &str) -> SourceFile {
    SourceFile::new(path, "x")
}

fn target(path: &str, render_type: RenderType, kustomize_dir: &str) -> TargetSpec {
    let mut spec = TargetSpec::test("t", path);
    spec.render.render_type = render_type;
    spec.render.kustomize_dir = kustomize_dir.into();
    spec
}

/// (render type, directory) of the engine the standard set picks.
fn chosen(spec: &TargetSpec, files: &[SourceFile]) -> Result<(RenderType, String), String> {
    Renderers::standard()
        .choose(spec, files)
        .map(|c| (c.renderer.render_type(), c.dir))
        .map_err(|e| e.to_string())
}

#[test]
fn the_renderer_follows_options_and_detection() {
    let plain = [file("app/a.yaml")];
    let kustomized = [file("app/kustomization.yaml"), file("app/a.yaml")];
    let chart = [file("app/Chart.yaml")];
    let pick = |kind, dir: &str| Ok((kind, dir.to_owned()));
    assert_eq!(
        chosen(&target("app", RenderType::Auto, ""), &plain),
        pick(RenderType::Yaml, "app")
    );
    assert_eq!(
        chosen(&target("app", RenderType::Auto, ""), &kustomized),
        pick(RenderType::Kustomize, "app")
    );
    assert_eq!(
        chosen(&target("app", RenderType::Yaml, ""), &kustomized),
        pick(RenderType::Yaml, "app")
    );
    assert_eq!(
        chosen(
            &target("app", RenderType::Kustomize, "overlays/dev"),
            &plain
        ),
        pick(RenderType::Kustomize, "app/overlays/dev")
    );
    assert_eq!(
        chosen(&target("app", RenderType::Auto, ""), &chart),
        pick(RenderType::Helm, "app")
    );
    assert_eq!(
        chosen(&target("app", RenderType::Helm, ""), &plain),
        pick(RenderType::Helm, "app")
    );
    assert_eq!(
        chosen(
            &target("", RenderType::Auto, ""),
            &[file("kustomization.yml")]
        ),
        pick(RenderType::Kustomize, "")
    );
    // A kustomization and a chart: kustomize is asked first.
    assert_eq!(
        chosen(
            &target("app", RenderType::Auto, ""),
            &[file("app/kustomization.yaml"), file("app/Chart.yaml")]
        ),
        pick(RenderType::Kustomize, "app")
    );
}

#[test]
fn a_bad_kustomize_dir_fails_whatever_the_render_type() {
    for render_type in [
        RenderType::Auto,
        RenderType::Yaml,
        RenderType::Kustomize,
        RenderType::Helm,
    ] {
        assert_eq!(
            chosen(&target("app", render_type, "../x"), &[]),
            Err("kustomize dir: path \"../x\" is not allowed: it must not contain '..'".to_owned()),
            "{render_type:?}"
        );
    }
}

#[test]
fn an_engine_that_is_not_registered_is_named() {
    let only_plain = Renderers::new(vec![Arc::new(Plain)]);
    let err = only_plain
        .choose(&target("app", RenderType::Helm, ""), &[])
        .expect_err("no helm");
    assert_eq!(
        err.to_string(),
        "no renderer is registered for render type Helm"
    );
}

/// The messages the Target fails with are the ones users saw before the renderers had a type.
#[test]
fn renderer_errors_keep_their_messages() {
    let cases: Vec<(RendererError, &str)> = vec![
        (
            RendererError::WorkDir(std::io::Error::other("disk full")),
            "creating a work directory: disk full",
        ),
        (
            RendererError::KustomizeBuild {
                dir: "app".into(),
                source: KustomizeError::Failed("boom".into()),
            },
            "app: kustomize build failed: boom",
        ),
        (
            RendererError::AppNameNotARelease {
                name: "Web".into(),
                problem: "must be lowercase",
            },
            "release name \"Web\" (the App's name; set spec.render.helm.releaseName) must be lowercase",
        ),
        (
            RendererError::ReleaseName {
                name: "--set".into(),
                problem: "must not start with '-'",
            },
            "spec.render.helm.releaseName \"--set\" must not start with '-'",
        ),
        (
            RendererError::Namespace {
                namespace: "Bad".into(),
                problem: "must consist of lowercase letters, digits and '-'",
            },
            "namespace \"Bad\" must consist of lowercase letters, digits and '-'",
        ),
        (
            RendererError::ValuesFile {
                field: "spec.render.helm.valuesFiles[0]".into(),
                file: "-x".into(),
                problem: "must not start with '-'",
            },
            "spec.render.helm.valuesFiles[0] \"-x\" must not start with '-'",
        ),
        (
            RendererError::Helm(HelmError::MissingValues("app/v.yaml".into())),
            "values file \"app/v.yaml\" is not in the App path or its extra paths",
        ),
        (
            RendererError::HelmTemplate {
                chart: "app".into(),
                source: HelmError::MissingValues("v".into()),
            },
            "app: values file \"v\" is not in the App path or its extra paths",
        ),
        (
            RendererError::InlineValues(std::io::Error::other("disk full")),
            "writing the inline values: disk full",
        ),
    ];
    for (error, message) in cases {
        assert_eq!(error.to_string(), message);
    }
}

/// A renderer that yields while it renders and counts how many renders run at once.
struct Counting {
    running: AtomicUsize,
    most: AtomicUsize,
    done: AtomicUsize,
}

impl Renderer for Counting {
    fn render_type(&self) -> RenderType {
        RenderType::Yaml
    }

    fn source_dir(&self, spec: &TargetSpec, base: &str) -> Result<String, RendererError> {
        Plain.source_dir(spec, base)
    }

    fn detect(&self, dir: &str, files: &[SourceFile]) -> bool {
        Plain.detect(dir, files)
    }

    fn render<'a>(
        &'a self,
        _dir: &'a str,
        workspace: Workspace<'a>,
    ) -> BoxFuture<'a, Result<AppFiles, RendererError>> {
        Box::pin(async move {
            let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.most.fetch_max(now, Ordering::SeqCst);
            // Gives every other task on the runtime its turn while this render is running.
            for _ in 0..20 {
                tokio::task::yield_now().await;
            }
            self.running.fetch_sub(1, Ordering::SeqCst);
            self.done.fetch_add(1, Ordering::SeqCst);
            Ok(workspace.files)
        })
    }
}

/// Renders two Targets at once through a gate of `bound` permits; returns the most renders
/// that ran together and how many completed.
async fn two_targets_render(bound: usize) -> (usize, usize) {
    let counting = Arc::new(Counting {
        running: AtomicUsize::new(0),
        most: AtomicUsize::new(0),
        done: AtomicUsize::new(0),
    });
    let renderers = Renderers::new(vec![counting.clone()]);
    let gate = RenderGate::new(bound);
    let dir = tempfile::TempDir::new().expect("tempdir");
    let git = GitCache::new(dir.path());
    let settings = RenderSettings {
        limits: RenderLimits::default(),
        read_limits: ReadLimits::default(),
        kustomize_timeout: Duration::from_secs(1),
        helm_command: "helm".into(),
        helm_timeout: Duration::from_secs(1),
        charts: None,
    };
    let specs = [
        target("a", RenderType::Auto, ""),
        target("b", RenderType::Auto, ""),
    ];
    let renders =
        specs.iter().map(|spec| {
            let workspace = Workspace {
                spec,
                files: AppFiles {
                    files: vec![SourceFile::new(
                        format!("{}/cm.yaml", spec.source.path),
                        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm}\n",
                    )],
                    errors: Vec::new(),
                },
                credential: None,
                chart_credential: None,
                git: &git,
                settings: &settings,
            };
            let ctx = RenderContext {
                app: spec.source.path.clone(),
                target_id: spec.source.path.clone(),
                revision: "r".into(),
                namespace: "ns".into(),
                create_namespace: false,
            };
            let (renderers, gate) = (&renderers, &gate);
            async move {
                crate::agent::render_target(renderers, gate, workspace, &ctx, &no_discovery).await
            }
        });
    for result in futures::future::join_all(renders).await {
        let (_, rendered, _) = result.expect("rendered");
        assert_eq!(rendered.manifests.len(), 1);
    }
    (
        counting.most.load(Ordering::SeqCst),
        counting.done.load(Ordering::SeqCst),
    )
}

#[tokio::test(flavor = "current_thread")]
async fn with_one_permit_two_targets_never_render_at_once_and_both_finish() {
    assert_eq!(two_targets_render(1).await, (1, 2));
}

/// The double does see renders overlap when the gate lets them: the test above would catch a
/// gate that did not hold.
#[tokio::test(flavor = "current_thread")]
async fn with_two_permits_two_targets_render_at_once() {
    assert_eq!(two_targets_render(2).await, (2, 2));
}

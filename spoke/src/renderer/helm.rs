//! Helm: `helm template` of a chart with the App's values, on a copy of the App path and its
//! extra paths (see `crate::helm` for what is checked and how helm runs).

use futures::future::BoxFuture;
use std::path::Path;

use gitfleet_core::yaml::Budget;
use tracing::Instrument as _;

use super::{Renderer, RendererError, Workspace, has_file, join_repo_path};
use crate::git::AppFiles;
use crate::helm::HelmError;
use crate::model::{RenderType, TargetSpec};
use crate::sync::render::SourceFile;

/// Detects a `Chart.yaml` at the App path; with a chart from a repository
/// (`spec.render.helm.chart`), renders that chart with the values files at the App path.
#[derive(Debug, Clone, Copy, Default)]
pub struct Helm;

impl Renderer for Helm {
    fn render_type(&self) -> RenderType {
        RenderType::Helm
    }

    fn source_dir(&self, _spec: &TargetSpec, base: &str) -> Result<String, RendererError> {
        Ok(base.to_owned())
    }

    fn detect(&self, dir: &str, files: &[SourceFile]) -> bool {
        has_file(files, dir, "Chart.yaml")
    }

    fn render<'a>(
        &'a self,
        chart: &'a str,
        workspace: Workspace<'a>,
    ) -> BoxFuture<'a, Result<AppFiles, RendererError>> {
        Box::pin(template(chart, workspace).instrument(tracing::info_span!("helm", chart = %chart)))
    }
}

/// Runs `helm template` on the chart in `chart` with the App's values files (relative to the
/// App path) and inline values (last, so they win); the output becomes one source file per
/// template.
async fn template(chart: &str, workspace: Workspace<'_>) -> Result<AppFiles, RendererError> {
    let (spec, settings) = (workspace.spec, workspace.settings);
    // Checked before anything is fetched: the hub checks these too, but the spoke runs helm
    // and does not take the hub's word for what reaches its command line.
    let release = release_name(spec)?;
    if let Some(problem) = crate::helm::namespace_problem(&spec.namespace) {
        return Err(RendererError::Namespace {
            namespace: spec.namespace.clone(),
            problem,
        });
    }
    let mut values = Vec::new();
    for (i, file) in spec.render.helm_values_files.iter().enumerate() {
        let field = format!("spec.render.helm.valuesFiles[{i}]");
        if let Some(problem) = crate::helm::values_file_problem(file) {
            return Err(RendererError::ValuesFile {
                field,
                file: file.clone(),
                problem,
            });
        }
        let path = crate::git::normalize_path(file)
            .map(|f| join_repo_path(chart, &f))
            .map_err(|source| RendererError::ValuesFilePath { field, source })?;
        values.push(path);
    }
    // A chart from a repository: downloaded (or taken from the cache) and checked against the
    // digest the hub resolved before anything of the App's files is written out.
    let archive = match &spec.render.helm_chart {
        Some(resolved) => {
            let cache = settings
                .charts
                .as_ref()
                .ok_or(RendererError::NoChartCache)?;
            let bytes = cache
                .archive(resolved, workspace.chart_credential)
                .await
                .map_err(|e| RendererError::Chart(Box::new(e)))?;
            Some((resolved, bytes, *cache.limits()))
        }
        None => None,
    };
    let copy = workspace.materialize().await?;
    let root = copy.root();
    let budget = Budget::new(settings.limits.yaml);
    let chart_dir = match archive {
        Some((resolved, bytes, limits)) => {
            let dest = copy.work.path().join("chart");
            let name = resolved.describe();
            tokio::task::spawn_blocking(move || crate::charts::unpack(&bytes, &dest, &limits))
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r)
                .map_err(|message| RendererError::ChartUnpack {
                    chart: name,
                    message,
                })?
        }
        None => root.join(chart),
    };
    // Errors name a chart in Git by its path in the repository (`apps/web/Chart.yaml`), a
    // downloaded chart by its own name (`podinfo/Chart.yaml`).
    let vendored_root = match &spec.render.helm_chart {
        Some(_) => chart_dir
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default(),
        None => root.to_path_buf(),
    };
    crate::helm::check_vendored(&chart_dir, &vendored_root, &budget)
        .map_err(RendererError::Helm)?;
    let mut values_files = Vec::new();
    for path in values {
        if !root.join(&path).is_file() {
            return Err(RendererError::Helm(HelmError::MissingValues(path)));
        }
        values_files.push(root.join(path));
    }
    if !spec.render.helm_values_yaml.trim().is_empty() {
        let inline = copy.work.path().join("values-inline.yaml");
        std::fs::write(&inline, &spec.render.helm_values_yaml)
            .map_err(RendererError::InlineValues)?;
        values_files.push(inline);
    }
    let home = copy.home();
    let request = crate::helm::TemplateRequest {
        command: &settings.helm_command,
        chart: &chart_dir,
        release,
        namespace: &spec.namespace,
        values_files: &values_files,
        timeout: settings.helm_timeout,
        max_bytes: settings.limits.max_bytes,
        work_dir: &root,
        home: &home,
    };
    let output = crate::helm::template(&request).await.map_err(|source| {
        if chart.is_empty() {
            RendererError::Helm(source)
        } else {
            RendererError::HelmTemplate {
                chart: chart.to_owned(),
                source,
            }
        }
    })?;
    Ok(AppFiles {
        files: crate::helm::split_sources(&output, chart),
        errors: copy.errors,
    })
}

/// The Helm release name of a Target: `spec.render.helm.releaseName`, else the App's name;
/// refused, naming where it came from, when Helm would not take it as a release name.
fn release_name(spec: &TargetSpec) -> Result<&str, RendererError> {
    if spec.render.helm_release.is_empty() {
        return match crate::helm::release_name_problem(&spec.app) {
            None => Ok(&spec.app),
            Some(problem) => Err(RendererError::AppNameNotARelease {
                name: spec.app.clone(),
                problem,
            }),
        };
    }
    match crate::helm::release_name_problem(&spec.render.helm_release) {
        None => Ok(&spec.render.helm_release),
        Some(problem) => Err(RendererError::ReleaseName {
            name: spec.render.helm_release.clone(),
            problem,
        }),
    }
}

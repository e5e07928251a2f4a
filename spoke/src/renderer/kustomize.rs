//! kustomize: `kustomize build` of a kustomization, on a copy of the App path and its extra
//! paths (see `crate::kustomize` for what is checked and how the build runs).

use futures::future::BoxFuture;
use gitfleet_core::yaml::Budget;
use tracing::Instrument as _;

use super::{Renderer, RendererError, Workspace, has_file, join_repo_path};
use crate::git::AppFiles;
use crate::model::{RenderType, TargetSpec};
use crate::sync::render::SourceFile;

/// Detects a `kustomization.yaml` (or `.yml`) in the kustomize dir under the App path.
#[derive(Debug, Clone, Copy, Default)]
pub struct Kustomize;

impl Renderer for Kustomize {
    fn render_type(&self) -> RenderType {
        RenderType::Kustomize
    }

    fn source_dir(&self, spec: &TargetSpec, base: &str) -> Result<String, RendererError> {
        crate::git::normalize_path(&spec.render.kustomize_dir)
            .map(|dir| join_repo_path(base, &dir))
            .map_err(RendererError::KustomizeDir)
    }

    fn detect(&self, dir: &str, files: &[SourceFile]) -> bool {
        ["kustomization.yaml", "kustomization.yml"]
            .iter()
            .any(|name| has_file(files, dir, name))
    }

    fn render<'a>(
        &'a self,
        dir: &'a str,
        workspace: Workspace<'a>,
    ) -> BoxFuture<'a, Result<AppFiles, RendererError>> {
        Box::pin(build(dir, workspace).instrument(tracing::info_span!("kustomize", dir = %dir)))
    }
}

/// Builds the kustomization in `dir` on a copy; the output becomes one source file named after
/// the kustomization.
async fn build(dir: &str, workspace: Workspace<'_>) -> Result<AppFiles, RendererError> {
    let settings = workspace.settings;
    let copy = workspace.materialize().await?;
    let root = copy.root();
    // The kustomizations are read within the Target's YAML budget (and their output, later,
    // within another of the same size).
    let budget = Budget::new(settings.limits.yaml);
    crate::kustomize::check_local_only(&root, &budget).map_err(RendererError::Kustomization)?;
    let output = crate::kustomize::build(
        &root,
        &root.join(dir),
        &copy.home(),
        settings.kustomize_timeout,
        settings.limits.max_bytes,
    )
    .await
    .map_err(|source| RendererError::KustomizeBuild {
        dir: dir.to_owned(),
        source,
    })?;
    let name = join_repo_path(dir, "kustomization.yaml");
    Ok(AppFiles {
        files: vec![SourceFile::new(name, output)],
        errors: copy.errors,
    })
}

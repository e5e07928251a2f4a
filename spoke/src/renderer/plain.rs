//! Plain YAML: the manifest files at the App path, as they are.

use futures::future::BoxFuture;

use super::{Renderer, RendererError, Workspace};
use crate::git::AppFiles;
use crate::model::{RenderType, TargetSpec};
use crate::sync::render::SourceFile;

/// Renders nothing: `sync::render` reads the App path's files themselves. Detects every App
/// path, so it comes last.
#[derive(Debug, Clone, Copy, Default)]
pub struct Plain;

impl Renderer for Plain {
    fn render_type(&self) -> RenderType {
        RenderType::Yaml
    }

    fn source_dir(&self, _spec: &TargetSpec, base: &str) -> Result<String, RendererError> {
        Ok(base.to_owned())
    }

    fn detect(&self, _dir: &str, _files: &[SourceFile]) -> bool {
        true
    }

    fn render<'a>(
        &'a self,
        _dir: &'a str,
        workspace: Workspace<'a>,
    ) -> BoxFuture<'a, Result<AppFiles, RendererError>> {
        Box::pin(async move { Ok(workspace.files) })
    }
}

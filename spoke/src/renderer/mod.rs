//! Renderers: how the files of a Target's commit become the YAML that `sync::render` turns into
//! objects. Each engine (plain YAML, kustomize, Helm) is one [`Renderer`]; [`Renderers`] holds
//! them in detection order and picks one per Target from its render options (or, for `auto`,
//! from the files at the App path). A new engine is one implementation and one entry in
//! [`Renderers::standard`].
//!
//! Renders run child processes and parse YAML: the agent bounds how many run at once with a
//! [`RenderGate`] shared by every Target.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::git::{AppFiles, GitCache, GitError, ReadLimits};
use crate::helm::HelmError;
use crate::kustomize::KustomizeError;
use crate::model::{RenderType, RepoCredential, TargetSpec};
use crate::sync::render::{FileError, RenderLimits, SourceFile};

mod helm;
mod kustomize;
mod plain;

pub use helm::Helm;
pub use kustomize::Kustomize;
pub use plain::Plain;

/// Why a renderer could not produce a Target's files. The Target fails with this message.
#[derive(Debug, thiserror::Error)]
pub enum RendererError {
    /// `spec.render.kustomize.dir` is not a path inside the repository.
    #[error("kustomize dir: {0}")]
    KustomizeDir(GitError),
    #[error("creating a work directory: {0}")]
    WorkDir(std::io::Error),
    /// Writing the App path and its extra paths out for the engine failed.
    #[error(transparent)]
    Materialize(GitError),
    /// A kustomization refused before the build (remote, outside the copy, a plugin).
    #[error(transparent)]
    Kustomization(KustomizeError),
    #[error("{dir}: {source}")]
    KustomizeBuild { dir: String, source: KustomizeError },
    #[error("release name {name:?} (the App's name; set spec.render.helm.releaseName) {problem}")]
    AppNameNotARelease { name: String, problem: &'static str },
    #[error("spec.render.helm.releaseName {name:?} {problem}")]
    ReleaseName { name: String, problem: &'static str },
    #[error("namespace {namespace:?} {problem}")]
    Namespace {
        namespace: String,
        problem: &'static str,
    },
    #[error("{field} {file:?} {problem}")]
    ValuesFile {
        field: String,
        file: String,
        problem: &'static str,
    },
    #[error("{field}: {source}")]
    ValuesFilePath { field: String, source: GitError },
    /// A chart refused before `helm template` runs, or its run failed (chart at the root).
    #[error(transparent)]
    Helm(HelmError),
    #[error("writing the inline values: {0}")]
    InlineValues(std::io::Error),
    #[error("{chart}: {source}")]
    HelmTemplate { chart: String, source: HelmError },
    #[error("no renderer is registered for render type {0:?}")]
    NoRenderer(RenderType),
    #[error("the Target's chart comes from a chart repository, and this spoke has no chart cache")]
    NoChartCache,
    #[error(transparent)]
    Chart(Box<crate::charts::ChartFetchError>),
    #[error("chart {chart}: {message}")]
    ChartUnpack { chart: String, message: String },
}

/// What renderers may spend, and the commands they run.
#[derive(Debug, Clone)]
pub struct RenderSettings {
    pub limits: RenderLimits,
    pub read_limits: ReadLimits,
    /// Longest a `kustomize build` may run.
    pub kustomize_timeout: Duration,
    /// The `helm` to run `helm template` with (a path, or a name looked up on PATH).
    pub helm_command: PathBuf,
    /// Longest a `helm template` may run.
    pub helm_timeout: Duration,
    /// Where charts from Helm repositories and OCI registries come from; `None`: this spoke
    /// renders only charts in Git.
    pub charts: Option<Arc<crate::charts::ChartCache>>,
}

/// What a renderer renders from: the Target, the files read at its App path, and the Git cache
/// holding its commit (for engines that need a directory on disk).
pub struct Workspace<'a> {
    pub spec: &'a TargetSpec,
    pub files: AppFiles,
    pub credential: Option<&'a RepoCredential>,
    /// The credential of the chart's repository, for a Target of a chart from a Helm
    /// repository or an OCI registry that needs one.
    pub chart_credential: Option<&'a RepoCredential>,
    pub git: &'a GitCache,
    pub settings: &'a RenderSettings,
}

/// The App path and its extra paths written to a temporary directory, for engines that run a
/// program on a directory.
pub struct Materialized {
    /// Holds the copy (`repo/`) and the program's throwaway home (`home/`) side by side, so
    /// that no file of the repository can stand in for the home's.
    pub work: tempfile::TempDir,
    /// Entries of the commit that were refused (symlinks, oversized files).
    pub errors: Vec<FileError>,
}

impl Materialized {
    /// The copy of the repository.
    pub fn root(&self) -> PathBuf {
        self.work.path().join("repo")
    }

    /// The throwaway home of the program that renders.
    pub fn home(&self) -> PathBuf {
        self.work.path().join("home")
    }
}

impl Workspace<'_> {
    /// Writes the App path and the extra paths the Target declares to a temporary directory.
    pub async fn materialize(&self) -> Result<Materialized, RendererError> {
        let work = tempfile::TempDir::new().map_err(RendererError::WorkDir)?;
        let source = &self.spec.source;
        let mut dirs = vec![source.path.clone()];
        dirs.extend(source.extra_paths.iter().cloned());
        let errors = self
            .git
            .materialize(
                source,
                self.credential,
                &dirs,
                &work.path().join("repo"),
                self.settings.read_limits,
            )
            .await
            .map_err(RendererError::Materialize)?;
        Ok(Materialized { work, errors })
    }
}

/// One rendering engine.
pub trait Renderer: Send + Sync {
    /// The render type that asks for this engine by name.
    fn render_type(&self) -> RenderType;

    /// The repository directory this engine renders `spec` from (`base`, the normalized App
    /// path, with the engine's options applied).
    fn source_dir(&self, spec: &TargetSpec, base: &str) -> Result<String, RendererError>;

    /// Whether, with render type `auto`, the files at the App path are this engine's to render
    /// from `dir`.
    fn detect(&self, dir: &str, files: &[SourceFile]) -> bool;

    /// Renders the Target from `dir` into manifest files (and the entries that were refused on
    /// the way).
    fn render<'a>(
        &'a self,
        dir: &'a str,
        workspace: Workspace<'a>,
    ) -> BoxFuture<'a, Result<AppFiles, RendererError>>;
}

/// The engine picked for a Target, and the directory it renders from.
pub struct Chosen<'a> {
    pub renderer: &'a dyn Renderer,
    pub dir: String,
}

impl fmt::Debug for Chosen<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Chosen")
            .field("render_type", &self.renderer.render_type())
            .field("dir", &self.dir)
            .finish()
    }
}

/// The registered engines, in detection order.
#[derive(Clone)]
pub struct Renderers {
    engines: Vec<Arc<dyn Renderer>>,
}

impl fmt::Debug for Renderers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.engines.iter().map(|e| e.render_type()))
            .finish()
    }
}

impl Default for Renderers {
    fn default() -> Self {
        Self::standard()
    }
}

impl Renderers {
    /// kustomize (a kustomization at the kustomize dir), then Helm (a Chart.yaml at the App
    /// path), then plain YAML, which takes whatever the others do not.
    pub fn standard() -> Self {
        Self::new(vec![Arc::new(Kustomize), Arc::new(Helm), Arc::new(Plain)])
    }

    /// Engines in detection order: `auto` picks the first that detects its files.
    pub fn new(engines: Vec<Arc<dyn Renderer>>) -> Self {
        Self { engines }
    }

    /// Picks the engine from the render options and, for `auto`, the files at the App path.
    /// Every engine's options are checked, whichever is picked.
    pub fn choose(
        &self,
        spec: &TargetSpec,
        files: &[SourceFile],
    ) -> Result<Chosen<'_>, RendererError> {
        let base = crate::git::normalize_path(&spec.source.path).unwrap_or_default();
        let mut candidates = Vec::with_capacity(self.engines.len());
        for engine in &self.engines {
            candidates.push((engine.as_ref(), engine.source_dir(spec, &base)?));
        }
        let wanted = spec.render.render_type;
        candidates
            .into_iter()
            .find(|(engine, dir)| match wanted {
                // A chart from a repository is Helm's, whatever the App path holds.
                RenderType::Auto if spec.render.helm_chart.is_some() => {
                    engine.render_type() == RenderType::Helm
                }
                RenderType::Auto => engine.detect(dir, files),
                wanted => engine.render_type() == wanted,
            })
            .map(|(renderer, dir)| Chosen { renderer, dir })
            .ok_or(RendererError::NoRenderer(wanted))
    }
}

/// Bounds how many renders run at once across every Target of the spoke.
#[derive(Debug, Clone)]
pub struct RenderGate {
    permits: Arc<Semaphore>,
}

impl RenderGate {
    /// At most `max` renders at once (at least one).
    pub fn new(max: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(max.max(1))),
        }
    }

    /// Waits for a turn to render; the render may run while the permit is held. `None` only
    /// if the semaphore were closed, which it never is: rendering then goes ahead unbounded
    /// rather than never.
    pub async fn enter(&self) -> Option<SemaphorePermit<'_>> {
        self.permits.acquire().await.ok()
    }
}

/// `a/b` of two repository paths, either of which may be the root ("").
pub fn join_repo_path(a: &str, b: &str) -> String {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b.to_owned(),
        (_, true) => a.to_owned(),
        _ => format!("{a}/{b}"),
    }
}

/// Whether `files` holds `name` in the repository directory `dir`.
fn has_file(files: &[SourceFile], dir: &str, name: &str) -> bool {
    let path = join_repo_path(dir, name);
    files.iter().any(|f| f.path == path)
}

#[cfg(test)]
mod tests;

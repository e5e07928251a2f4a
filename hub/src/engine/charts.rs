//! Chart resolution in the engine: when an App with `spec.render.helm.chart` is applied, and
//! after every poll of its Repo, the hub resolves the chart (no lock held over the network)
//! and, when the exact chart changed, stores it in the App's revision (a new revision, which
//! rolls out like a commit) and recomputes. A failure leaves the revision, and so the chart in
//! force, as it was, and is an event of the App (once per distinct message).

use tracing::{info, warn};

use super::{Engine, EngineError};
use gitfleet_core::fleet::project::allows_chart_repository;

use crate::resources::{App, ChartSpec, DEFAULT_PROJECT, Kind, Resource};

impl Engine {
    /// Resolves the charts of `apps` that name one, one after the other.
    pub(super) async fn resolve_charts(&self, apps: &[App]) {
        for app in apps {
            let Some(spec) = chart_of(app) else { continue };
            // Never with the hub's credential for a repository the App's Project does not
            // allow (its sourceRepos may have narrowed since the App was applied).
            let result = match self.chart_allowed(app, spec) {
                Ok(()) => {
                    self.config
                        .charts
                        .resolve(spec, &self.config.repo_credentials)
                        .await
                }
                Err(message) => Err(message),
            };
            if let Err(e) = self.record_chart(&app.metadata.name, spec, result).await {
                warn!(app = %app.metadata.name, error = %e, "cannot record a chart resolution");
            }
        }
    }

    /// Whether `app`'s Project allows charts from `spec`'s repository; the error says why not.
    fn chart_allowed(&self, app: &App, spec: &ChartSpec) -> Result<(), String> {
        let name = app.spec.project_name();
        if name == DEFAULT_PROJECT {
            return Ok(());
        }
        match self.store.resource(Kind::Project, name) {
            Ok(Some(Resource::Project(p))) if allows_chart_repository(&p, &spec.repository) => {
                Ok(())
            }
            Ok(Some(_)) => Err(format!(
                "chart repository {} is not allowed by Project {name}'s sourceRepos",
                spec.repository
            )),
            Ok(None) => Err(format!("Project {name:?} does not exist")),
            Err(e) => Err(format!("cannot read Project {name}: {e}")),
        }
    }

    /// Resolves the charts of the Apps of Repo `repo` (after a poll of it).
    pub(super) async fn resolve_charts_of_repo(&self, repo: &str) {
        let apps: Vec<App> = match self.store.resources() {
            Ok(resources) => super::split_resources(resources)
                .apps
                .into_iter()
                .filter(|a| a.spec.repo == repo && chart_of(a).is_some())
                .collect(),
            Err(e) => {
                warn!(repo = %repo, error = %e, "cannot read Apps to resolve their charts");
                return;
            }
        };
        self.resolve_charts(&apps).await;
    }

    async fn record_chart(
        &self,
        name: &str,
        spec: &ChartSpec,
        result: Result<gitfleet_core::charts::ResolvedChart, String>,
    ) -> Result<(), EngineError> {
        let guard = self.write.lock().await;
        // The App may have changed or gone while resolving.
        match self.store.resource(Kind::App, name)? {
            Some(Resource::App(a)) if chart_of(&a) == Some(spec) => {}
            _ => return Ok(()),
        }
        let resolved = match result {
            Ok(r) => r,
            Err(message) => {
                let new = self
                    .chart_errors()
                    .insert(name.to_owned(), message.clone())
                    .as_ref()
                    != Some(&message);
                if new {
                    warn!(app = %name, error = %message, "chart resolution failed");
                    self.record_app_event(
                        name,
                        "",
                        "ChartResolutionFailed",
                        format!(
                            "chart {} {} from {}: {message} (the chart resolved before stays in force)",
                            spec.name, spec.version, spec.repository
                        ),
                        "",
                    )?;
                    self.store.flush().await?;
                }
                return Ok(());
            }
        };
        self.chart_errors().remove(name);
        // No commit yet: the resolution after the Repo's first fetch places the App.
        let Some(mut revision) = self.store.revisions()?.remove(name) else {
            return Ok(());
        };
        if revision.chart.as_deref() == Some(&resolved) {
            return Ok(());
        }
        let message = match &revision.chart {
            Some(old) => format!(
                "chart {} from {} (was {})",
                resolved.describe(),
                resolved.url,
                old.describe()
            ),
            None => format!("chart {} from {}", resolved.describe(), resolved.url),
        };
        info!(app = %name, chart = %resolved.describe(), "chart resolved");
        revision.chart = Some(Box::new(resolved));
        self.store.put_revision(name, &revision)?;
        self.record_app_event(name, "", "ChartResolved", message, "")?;
        self.recompute_locked(&guard).await?;
        self.store.flush().await?;
        Ok(())
    }

    fn chart_errors(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, String>> {
        self.chart_errors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The chart `app` names, if any.
pub(super) fn chart_of(app: &App) -> Option<&ChartSpec> {
    app.spec.render.helm.as_ref().and_then(|h| h.chart.as_ref())
}

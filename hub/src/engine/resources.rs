//! Resources: apply (validated, all or nothing), delete and get of Repos, Apps,
//! ClusterGroups and Projects. An App is stored only inside its Project; a Project is deleted
//! only when no App names it.

use std::sync::Arc;

use gitfleet_core::authz::{Action, Scope, Subject, authorize};

use super::users::app_project;
use super::{Engine, EngineError, Split, WriteGuard, placeable, split_resources};
use crate::fleet::project::{self, ProjectProblem};
use crate::fleet::{AppRevision, dependencies};
use crate::model::RepoStatus;
use crate::resources::{App, DEFAULT_PROJECT, Kind, Resource, parse_document};

/// The outcome of applying one resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub kind: Kind,
    pub name: String,
    /// "created", "configured", "unchanged".
    pub action: &'static str,
}

impl Engine {
    // --- resources ---------------------------------------------------------------------------

    /// Validates every document, then stores all of them or none (as the hub itself: no
    /// user's role is checked).
    pub async fn apply(
        self: &Arc<Self>,
        documents: &[(String, String)],
        dry_run: bool,
    ) -> Result<Vec<Applied>, EngineError> {
        self.apply_checked(documents, dry_run, None).await
    }

    /// [`Engine::apply`] for a user: every document is checked against the user's role (an
    /// App against its Project, old and new) before anything changes; one that is not allowed
    /// refuses the whole apply, naming the document.
    pub async fn apply_as(
        self: &Arc<Self>,
        documents: &[(String, String)],
        dry_run: bool,
        user: &Subject,
    ) -> Result<Vec<Applied>, EngineError> {
        self.apply_checked(documents, dry_run, Some(user)).await
    }

    async fn apply_checked(
        self: &Arc<Self>,
        documents: &[(String, String)],
        dry_run: bool,
        user: Option<&Subject>,
    ) -> Result<Vec<Applied>, EngineError> {
        let parsed = self.validate(documents)?;
        if let Some(user) = user {
            // Declarative objects own their resources (docs/kube-api.md).
            for r in &parsed {
                self.refuse_kube_owned("apply", r.kind(), r.name(), Some(r))?;
            }
            let denials: Vec<String> = parsed
                .iter()
                .zip(documents)
                .filter_map(|(r, (origin, _))| self.may_apply(user, r, origin).err())
                .collect();
            if !denials.is_empty() {
                return Err(EngineError::PermissionDenied(denials.join("\n")));
            }
        }
        let by = user.map(|u| u.name.as_str()).unwrap_or_default();
        let guard = self.write.lock().await;
        let (outcomes, stored) = self.apply_locked(&guard, parsed, dry_run, by)?;
        if stored.is_empty() {
            return Ok(outcomes);
        }
        self.recompute_locked(&guard).await?;
        // The recompute flushes only when some cluster's desired state changed; the answer
        // ("created") must not leave before the resources are on disk either way.
        self.store.flush().await?;
        drop(guard);
        self.follow_applied(&stored);
        Ok(outcomes)
    }

    /// Whether `user` may apply `resource` (from the document at `origin`): an App needs an
    /// operator of its Project (the one it is in, if stored, and the one the document puts
    /// it in), anything else an admin.
    fn may_apply(&self, user: &Subject, resource: &Resource, origin: &str) -> Result<(), String> {
        let at = if origin.is_empty() {
            String::new()
        } else {
            format!(" ({origin})")
        };
        let what = format!("{} {:?}{at}", resource.kind(), resource.name());
        let scopes: Vec<String> = match resource {
            // A Project's Notifier is its operators' (in the Project it is in, if stored,
            // and the one the document puts it in); a hub-wide one the admins'.
            Resource::Notifier(n) => {
                let mut projects: Vec<String> = n.spec.project.iter().cloned().collect();
                let stored = self.store.resource(Kind::Notifier, resource.name());
                if let Ok(Some(Resource::Notifier(old))) = stored {
                    match old.spec.project {
                        Some(p) => projects.push(p),
                        None => projects.clear(),
                    }
                }
                if n.spec.project.is_none() || projects.is_empty() {
                    return authorize(user, Action::Apply, Scope::Fleet { what: &what })
                        .map_err(|e| e.to_string());
                }
                projects.dedup();
                projects
            }
            Resource::App(app) => {
                let mut projects = vec![app_project(app)];
                if self
                    .store
                    .resource(Kind::App, resource.name())
                    .is_ok_and(|r| r.is_some())
                {
                    projects.push(self.project_of_app(resource.name()));
                }
                projects.dedup();
                projects
            }
            _ => {
                return authorize(user, Action::Apply, Scope::Fleet { what: &what })
                    .map_err(|e| e.to_string());
            }
        };
        for project in &scopes {
            authorize(
                user,
                Action::Apply,
                Scope::Project {
                    what: &what,
                    project,
                },
            )
            .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Every document parsed, or every problem found in any of them.
    pub(super) fn validate(
        &self,
        documents: &[(String, String)],
    ) -> Result<Vec<Resource>, EngineError> {
        let mut parsed = Vec::new();
        let mut errors = Vec::new();
        for (origin, json) in documents {
            match parse_document(origin, json) {
                Ok(r) => parsed.push(r),
                Err(e) => errors.push(e.to_string()),
            }
        }
        for (i, r) in parsed.iter().enumerate() {
            if parsed[..i]
                .iter()
                .any(|p| p.kind() == r.kind() && p.name() == r.name())
            {
                errors.push(format!(
                    "{} {:?} appears more than once",
                    r.kind(),
                    r.name()
                ));
            }
        }
        errors.extend(self.credential_ref_errors(&parsed));
        errors.extend(self.notifier_secret_errors(&parsed));
        if !errors.is_empty() {
            return Err(EngineError::Invalid(errors.join("\n")));
        }
        if documents.is_empty() {
            return Err(EngineError::Invalid("no documents to apply".into()));
        }
        Ok(parsed)
    }

    /// Writes validated resources (not yet flushed, desired state not yet recomputed: the
    /// caller does both, once for everything it changes under the lock). Returns the outcome
    /// per resource and the resources written.
    pub(super) fn apply_locked(
        &self,
        _write: &WriteGuard<'_>,
        parsed: Vec<Resource>,
        dry_run: bool,
        by: &str,
    ) -> Result<(Vec<Applied>, Vec<Resource>), EngineError> {
        let mut outcomes = Vec::new();
        let mut to_store = Vec::new();
        let mut previous = Vec::new();
        for r in parsed {
            let old = self.store.resource(r.kind(), r.name())?;
            let action = match &old {
                None => "created",
                Some(o) if *o == r => "unchanged",
                Some(_) => "configured",
            };
            outcomes.push(Applied {
                kind: r.kind(),
                name: r.name().to_owned(),
                action,
            });
            if action != "unchanged" {
                previous.push(old);
                to_store.push(r);
            }
        }
        let after = self.resources_after(&to_store)?;
        self.refuse_apps_outside_projects(&to_store, &after)?;
        refuse_broken_dependencies(&to_store, &after)?;
        refuse_notifiers_of_unknown_projects(&to_store, &after)?;
        if dry_run || to_store.is_empty() {
            return Ok((outcomes, Vec::new()));
        }
        self.store.put_resources(&to_store)?;
        {
            let mut followed = self.followed();
            for r in &to_store {
                if let Resource::Repo(repo) = r {
                    followed.by_url.put(&repo.metadata.name, &repo.spec);
                }
            }
        }
        for (r, old) in to_store.iter().zip(&previous) {
            if let Resource::App(app) = r {
                let (kind, message) = match old {
                    Some(_) => ("Configured", "spec changed"),
                    None => ("Created", "created"),
                };
                self.record_app_event(&app.metadata.name, "", kind, message.into(), by)?;
                let repo_changed = match old {
                    Some(Resource::App(o)) => o.spec.repo != app.spec.repo,
                    _ => true,
                };
                if repo_changed {
                    self.assign_current_revision(app)?;
                }
            }
        }
        self.recheck_project_apps(&to_store, &after)?;
        Ok((outcomes, to_store))
    }

    /// The stored resources as they will be once `to_store` is written.
    fn resources_after(&self, to_store: &[Resource]) -> Result<Split, EngineError> {
        let mut resources = self.store.resources()?;
        resources.retain(|r| {
            !to_store
                .iter()
                .any(|n| n.kind() == r.kind() && n.name() == r.name())
        });
        resources.extend(to_store.iter().cloned());
        Ok(split_resources(resources))
    }

    /// What of `app` its Project does not allow, as things will be after this apply.
    fn project_problems(&self, app: &App, after: &Split) -> Vec<ProjectProblem> {
        if app.spec.project_name() == DEFAULT_PROJECT {
            // Allows everything: no need to look at the fleet's clusters.
            return Vec::new();
        }
        let (clusters, _) = self.store.clusters_snapshot();
        let labels = placeable(clusters.values());
        project::check_app(
            app,
            project::project_of(app, &after.projects),
            after.repos.get(&app.spec.repo),
            &labels,
            &after.groups,
        )
    }

    /// Refuses the apply when an App it writes falls outside its Project, naming every field.
    fn refuse_apps_outside_projects(
        &self,
        to_store: &[Resource],
        after: &Split,
    ) -> Result<(), EngineError> {
        let mut errors = Vec::new();
        for r in to_store {
            if let Resource::App(app) = r {
                for problem in self.project_problems(app, after) {
                    errors.push(format!("app {:?}: {problem}", app.metadata.name));
                }
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(EngineError::Invalid(errors.join("\n")))
        }
    }

    /// A Project or Repo written may leave Apps (not written themselves) outside their
    /// Project: they keep only the clusters it still allows (placement sees to that) and get an
    /// event saying what is wrong; `gitfleet get app` shows it as long as it lasts.
    fn recheck_project_apps(&self, written: &[Resource], after: &Split) -> Result<(), EngineError> {
        let projects: Vec<&str> = written
            .iter()
            .filter(|r| r.kind() == Kind::Project)
            .map(Resource::name)
            .collect();
        let repos: Vec<&str> = written
            .iter()
            .filter(|r| r.kind() == Kind::Repo)
            .map(Resource::name)
            .collect();
        if projects.is_empty() && repos.is_empty() {
            return Ok(());
        }
        for app in &after.apps {
            let concerned = projects.contains(&app.spec.project_name())
                || repos.contains(&app.spec.repo.as_str());
            let written_itself = written
                .iter()
                .any(|r| r.kind() == Kind::App && r.name() == app.metadata.name);
            if !concerned || written_itself {
                continue;
            }
            let problems = self.project_problems(app, after);
            if problems.is_empty() {
                continue;
            }
            let message = problems
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ");
            self.record_app_event(
                &app.metadata.name,
                "",
                "OutsideProject",
                format!(
                    "outside Project {} (it keeps only the clusters the Project allows): {message}",
                    app.spec.project_name()
                ),
                "",
            )?;
        }
        Ok(())
    }

    /// The problems of every App outside its Project as things are now, by App (`default`'s
    /// Apps never have any).
    pub(super) fn apps_outside_projects(
        &self,
    ) -> Result<std::collections::BTreeMap<String, Vec<String>>, EngineError> {
        let split = split_resources(self.store.resources()?);
        Ok(split
            .apps
            .iter()
            .filter(|app| app.spec.project_name() != DEFAULT_PROJECT)
            .filter_map(|app| {
                let problems: Vec<String> = self
                    .project_problems(app, &split)
                    .iter()
                    .map(ToString::to_string)
                    .collect();
                (!problems.is_empty()).then(|| (app.metadata.name.clone(), problems))
            })
            .collect())
    }

    /// An `OutsideProject` event (by `by`) for each App with a problem it did not have in
    /// `before`: a cluster's new labels made its targets select a cluster its Project does not
    /// allow (placement keeps it off that cluster all the same).
    pub(super) fn report_new_project_problems(
        &self,
        before: &std::collections::BTreeMap<String, Vec<String>>,
        by: &str,
    ) -> Result<(), EngineError> {
        for (app, problems) in self.apps_outside_projects()? {
            let new: Vec<&String> = problems
                .iter()
                .filter(|p| !before.get(&app).is_some_and(|b| b.contains(p)))
                .collect();
            if new.is_empty() {
                continue;
            }
            let project = match self.store.resource(Kind::App, &app) {
                Ok(Some(Resource::App(a))) => a.spec.project_name().to_owned(),
                _ => continue,
            };
            let message = new
                .iter()
                .map(|p| p.as_str())
                .collect::<Vec<_>>()
                .join("; ");
            self.record_app_event(
                &app,
                "",
                "OutsideProject",
                format!(
                    "outside Project {project} (it keeps only the clusters the Project allows): {message}"
                ),
                by,
            )?;
        }
        Ok(())
    }

    /// Follows the Repos among `applied` (once the write lock is released: a follower's first
    /// fetch takes it).
    pub(super) fn follow_applied(self: &Arc<Self>, applied: &[Resource]) {
        let mut charts = Vec::new();
        for r in applied {
            match r {
                Resource::Repo(repo) => self.follow(repo),
                Resource::App(app) if super::charts::chart_of(app).is_some() => {
                    charts.push(app.clone());
                }
                _ => {}
            }
        }
        // Resolved at once (the Repo's polls resolve again), without the caller waiting.
        if !charts.is_empty() && !self.shutdown.is_cancelled() {
            let engine = Arc::clone(self);
            tokio::spawn(async move { engine.resolve_charts(&charts).await });
        }
    }

    /// Gives an App the commit its Repo is at now (or none, until the Repo is fetched).
    fn assign_current_revision(&self, app: &App) -> Result<(), EngineError> {
        match self.store.repo_status(&app.spec.repo)? {
            Some(s) if !s.commit.is_empty() => {
                // A chart resolved before stays in force until it is resolved anew.
                let chart = self
                    .store
                    .revisions()?
                    .remove(&app.metadata.name)
                    .and_then(|r| r.chart);
                self.store.put_revision(
                    &app.metadata.name,
                    &AppRevision {
                        commit: s.commit,
                        git_ref: s.git_ref,
                        chart,
                        ..Default::default()
                    },
                )?
            }
            _ => self.store.delete_revision(&app.metadata.name)?,
        }
        Ok(())
    }

    /// Deletes a resource and what the hub keeps for it (not yet flushed, desired state not
    /// yet recomputed: the caller does both). False when there is no such resource.
    pub(super) fn delete_locked(
        &self,
        _write: &WriteGuard<'_>,
        kind: Kind,
        name: &str,
    ) -> Result<bool, EngineError> {
        match kind {
            Kind::Project => self.refuse_deleting_used_project(name)?,
            Kind::App => self.refuse_deleting_a_dependency(name)?,
            Kind::Repo | Kind::ClusterGroup | Kind::HealthRule | Kind::Notifier => {}
        }
        if !self.store.delete_resource(kind, name)? {
            return Ok(false);
        }
        match kind {
            Kind::Repo => {
                let mut followed = self.followed();
                followed.by_url.remove(name);
                if let Some(f) = followed.followers.remove(name) {
                    f.task.abort();
                }
                drop(followed);
                self.store.delete_repo_status(name)?;
            }
            Kind::App => {
                self.store.delete_revision(name)?;
                self.store.delete_app_records(name)?;
            }
            Kind::Notifier => self.store.delete_notifier_records(name),
            Kind::ClusterGroup | Kind::Project | Kind::HealthRule => {}
        }
        Ok(true)
    }

    /// A Project is deleted only once no App names it (the Apps would otherwise be placed
    /// nowhere at once); the built-in `default` never.
    fn refuse_deleting_used_project(&self, name: &str) -> Result<(), EngineError> {
        if name == DEFAULT_PROJECT {
            return Err(EngineError::FailedPrecondition(format!(
                "Project {DEFAULT_PROJECT:?} is built in and cannot be deleted"
            )));
        }
        let users: Vec<String> = split_resources(self.store.resources()?)
            .apps
            .into_iter()
            .filter(|a| a.spec.project_name() == name)
            .map(|a| a.metadata.name)
            .collect();
        let notifiers: Vec<String> = self
            .store
            .notifiers()
            .into_iter()
            .filter(|n| n.spec.project.as_deref() == Some(name))
            .map(|n| format!("{:?}", n.metadata.name))
            .collect();
        if users.is_empty() && !notifiers.is_empty() {
            return Err(EngineError::FailedPrecondition(format!(
                "Project {name:?} still has Notifier{} {}: delete them first",
                if notifiers.len() == 1 { "" } else { "s" },
                notifiers.join(", ")
            )));
        }
        if users.is_empty() {
            return Ok(());
        }
        Err(EngineError::FailedPrecondition(format!(
            "Project {name:?} is still used by App{} {}: delete them or move them to another \
             Project first",
            if users.len() == 1 { "" } else { "s" },
            users
                .iter()
                .map(|u| format!("{u:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        )))
    }

    /// An App is deleted only once no other App depends on it: its dependents would wait for
    /// it on every cluster, for ever.
    fn refuse_deleting_a_dependency(&self, name: &str) -> Result<(), EngineError> {
        let apps = split_resources(self.store.resources()?).apps;
        let dependents = dependencies::dependents(&apps, name);
        if dependents.is_empty() {
            return Ok(());
        }
        Err(EngineError::FailedPrecondition(format!(
            "App {name:?} is a dependency of App{} {}: remove it from their spec.dependsOn or \
             delete them first",
            if dependents.len() == 1 { "" } else { "s" },
            dependents
                .iter()
                .map(|d| format!("{d:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        )))
    }

    pub async fn delete(&self, kind: Kind, name: &str) -> Result<bool, EngineError> {
        let guard = self.write.lock().await;
        if !self.delete_locked(&guard, kind, name)? {
            return Ok(false);
        }
        self.recompute_locked(&guard).await?;
        self.store.flush().await?;
        Ok(true)
    }

    /// Stored resources as documents; Repos and Apps carry what the hub learned under `status`
    /// (a Repo's last fetched commit and error, an App's current revision and, when its
    /// Project no longer allows all of it, `status.project`: what is outside).
    /// `gitfleet get projects` also lists the built-in `default`, which is never stored (`get`
    /// of every kind does not: it is what can be applied back).
    /// Whether a resource of `kind` named `name` is stored: one lookup, nothing else read.
    pub fn exists(&self, kind: Kind, name: &str) -> Result<bool, EngineError> {
        Ok(self.store.resource(kind, name)?.is_some())
    }

    pub fn get(
        &self,
        kind: Option<Kind>,
        name: Option<&str>,
    ) -> Result<Vec<serde_json::Value>, EngineError> {
        let statuses = self.store.repo_statuses()?;
        let revisions = self.store.revisions()?;
        let resources = self.store.resources()?;
        let split = split_resources(resources.clone());
        let mut out = Vec::new();
        // Read once, if a Notifier is listed.
        let mut notifier_views: Option<Vec<super::NotifierView>> = None;
        // Only when Projects are asked for: `get` of everything stays what can be applied back.
        if kind == Some(Kind::Project) && name.is_none_or(|n| n == DEFAULT_PROJECT) {
            let mut doc = Resource::Project(project::default_project().clone()).to_json();
            if let Some(obj) = doc.as_object_mut() {
                obj.insert("status".into(), serde_json::json!({ "builtIn": true }));
            }
            out.push(doc);
        }
        for r in resources {
            if kind.is_some_and(|k| k != r.kind()) || name.is_some_and(|n| n != r.name()) {
                continue;
            }
            let mut doc = r.to_json();
            let status = match &r {
                Resource::Repo(repo) => Some(repo_status_json(
                    &statuses
                        .get(&repo.metadata.name)
                        .cloned()
                        .unwrap_or_default(),
                )),
                Resource::App(app) => {
                    let mut status = match revisions.get(&app.metadata.name) {
                        Some(rev) => {
                            serde_json::json!({ "revision": rev.commit, "ref": rev.git_ref })
                        }
                        None => serde_json::json!({ "revision": "" }),
                    };
                    let problems = self.project_problems(app, &split);
                    if !problems.is_empty() {
                        status["project"] = serde_json::json!({
                            "name": app.spec.project_name(),
                            "message": format!(
                                "outside Project {} (it keeps only the clusters the Project allows)",
                                app.spec.project_name()
                            ),
                            "problems": problems.iter().map(ToString::to_string).collect::<Vec<_>>(),
                        });
                    }
                    Some(status)
                }
                Resource::Notifier(n) => {
                    let view = notifier_views
                        .get_or_insert_with(|| self.notifiers_view())
                        .iter()
                        .find(|v| v.name == n.metadata.name);
                    view.map(|v| {
                        serde_json::json!({
                            "pending": v.pending,
                            "delivered": v.status.delivered,
                            "givenUp": v.status.given_up,
                            "lastDelivery": v.status.last_delivery,
                            "lastDeliveryUnix": v.status.last_delivery_unix,
                            "lastError": v.status.last_error,
                            "lastErrorUnix": v.status.last_error_unix,
                        })
                    })
                }
                Resource::ClusterGroup(_) | Resource::Project(_) | Resource::HealthRule(_) => None,
            };
            if let (Some(status), Some(obj)) = (status, doc.as_object_mut()) {
                obj.insert("status".into(), status);
            }
            out.push(doc);
        }
        Ok(out)
    }
}

fn repo_status_json(s: &RepoStatus) -> serde_json::Value {
    let mut status = serde_json::json!({
        "commit": s.commit,
        "ref": s.git_ref,
        "lastFetchUnix": s.last_fetch_unix,
        "lastSuccessUnix": s.last_success_unix,
        "fetches": s.fetches,
        "error": s.error,
    });
    if !s.signed_by.is_empty() {
        status["signedBy"] = serde_json::json!(s.signed_by);
    }
    if !s.refused_commit.is_empty() {
        status["refused"] =
            serde_json::json!({ "commit": s.refused_commit, "reason": s.refused_reason });
    }
    if !s.fleet_commit.is_empty() || !s.fleet_error.is_empty() {
        status["fleet"] = serde_json::json!({ "commit": s.fleet_commit, "error": s.fleet_error });
    }
    status
}

/// Refuses the apply when a Notifier it writes belongs to a Project that will not exist.
fn refuse_notifiers_of_unknown_projects(
    to_store: &[Resource],
    after: &Split,
) -> Result<(), EngineError> {
    let errors: Vec<String> = to_store
        .iter()
        .filter_map(|r| match r {
            Resource::Notifier(n) => n.spec.project.as_deref().and_then(|p| {
                (p != DEFAULT_PROJECT && !after.projects.contains_key(p)).then(|| {
                    format!(
                        "notifier {:?}: spec.project: Project {p:?} does not exist; apply it first",
                        n.metadata.name
                    )
                })
            }),
            _ => None,
        })
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(EngineError::Invalid(errors.join("\n")))
    }
}

/// Refuses the apply when an App it writes names an App that will not exist, or closes a cycle
/// of dependencies, naming each problem.
fn refuse_broken_dependencies(to_store: &[Resource], after: &Split) -> Result<(), EngineError> {
    let written: Vec<&str> = to_store
        .iter()
        .filter(|r| r.kind() == Kind::App)
        .map(Resource::name)
        .collect();
    if written.is_empty() {
        return Ok(());
    }
    let errors: Vec<String> = dependencies::problems(&after.apps)
        .into_iter()
        .filter(|p| written.iter().any(|w| p.involves(w)))
        .map(|p| p.to_string())
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(EngineError::Invalid(errors.join("\n")))
    }
}

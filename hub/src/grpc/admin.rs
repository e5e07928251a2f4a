//! The `Admin` service the CLI uses. Every call needs a user's certificate and a role that
//! allows it (see `auth`); applies, deletes and token creation are audited.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use gitfleet_proto::v1 as pb;
use gitfleet_proto::v1::admin_server::Admin;
use tonic::{Request, Response, Status};
use tracing::{Instrument, info, info_span};

use gitfleet_core::authz::{Action, Scope};
use gitfleet_core::users::summarize_targets;

use super::auth::{begin, reader};
use super::convert;
use crate::engine::{Engine, TokenSpec};
use crate::resources::Kind;

/// Targets per `Status` page when the request names no size, and the most it may ask for.
const STATUS_PAGE_DEFAULT: usize = 500;
const STATUS_PAGE_MAX: usize = 5000;
/// Clusters per `ListClusters` page when the request names no size (the most: as `Status`).
const CLUSTERS_PAGE_DEFAULT: usize = 1000;
/// A page ends before what it lists passes this, encoded (a quarter of the message limit).
const STATUS_PAGE_BYTES: usize = gitfleet_proto::MAX_MESSAGE_BYTES / 4;

/// TTL of a bootstrap token when the request names none.
const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone)]
pub struct AdminService {
    engine: Arc<Engine>,
}

impl AdminService {
    pub fn new(engine: Arc<Engine>) -> Self {
        Self { engine }
    }
}

fn kind(s: &str) -> Result<Option<Kind>, Status> {
    if s.is_empty() {
        return Ok(None);
    }
    Kind::parse(s).map(Some).ok_or_else(|| {
        Status::invalid_argument(format!(
            "unknown kind {s:?}; expected Repo, App, ClusterGroup, Project, HealthRule or Notifier"
        ))
    })
}

/// The leading items of a page that fit in [`STATUS_PAGE_BYTES`] encoded (at least one), and
/// whether more follow: `more` from the listing, or true when the budget cut the page short.
fn within_page_bytes<T: prost::Message>(
    items: impl ExactSizeIterator<Item = T>,
    more: bool,
) -> (Vec<T>, bool) {
    let mut page = Vec::with_capacity(items.len());
    let mut bytes = 0;
    for item in items {
        bytes += item.encoded_len();
        if bytes > STATUS_PAGE_BYTES && !page.is_empty() {
            return (page, true);
        }
        page.push(item);
    }
    (page, more)
}

fn non_empty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn apply(
        &self,
        request: Request<pb::ApplyRequest>,
    ) -> Result<Response<pb::ApplyResponse>, Status> {
        let dry = if request.get_ref().dry_run {
            " (dry run)"
        } else {
            ""
        };
        let origins: Vec<&str> = request
            .get_ref()
            .documents
            .iter()
            .map(|d| d.origin.as_str())
            .collect();
        let target = format!("{}{dry}", summarize_targets(&origins));
        let mut audited = begin(&self.engine, &request, Action::Apply, target, Scope::Any).await?;
        let admin = audited.caller.name().to_owned();
        let req = request.into_inner();
        let documents: Vec<(String, String)> = req
            .documents
            .into_iter()
            .map(|d| (d.origin, d.json))
            .collect();
        let result = self
            .engine
            .apply_as(&documents, req.dry_run, &audited.caller.subject())
            .instrument(info_span!("apply", %admin, dry_run = req.dry_run))
            .await
            .map_err(Status::from);
        if let Ok(outcomes) = &result {
            let names: Vec<String> = outcomes
                .iter()
                .map(|o| format!("{}/{}", o.kind, o.name))
                .collect();
            audited.set_target(format!("{}{dry}", summarize_targets(&names)));
        }
        let outcomes = audited.finish(result).await?;
        for o in outcomes.iter().filter(|o| o.action != "unchanged") {
            info!(%admin, kind = %o.kind, name = %o.name, action = o.action, dry_run = req.dry_run, "resource applied");
        }
        Ok(Response::new(pb::ApplyResponse {
            outcomes: outcomes.into_iter().map(convert::apply_outcome).collect(),
        }))
    }

    async fn delete(
        &self,
        request: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let (kind_name, name) = (
            request.get_ref().kind.clone(),
            request.get_ref().name.clone(),
        );
        let parsed = kind(&kind_name);
        let what = format!("{kind_name} {name:?}");
        // An App's, and a Project's Notifier's, deletion is its Project's operators'.
        let project = match parsed {
            Ok(Some(Kind::App)) => Some(self.engine.project_of_app(&name)),
            Ok(Some(Kind::Notifier)) => self.engine.project_of_notifier(&name),
            _ => None,
        };
        let scope = match (&parsed, &project) {
            (_, Some(project)) => Scope::Project {
                what: &what,
                project,
            },
            (Ok(Some(_)), None) => Scope::Fleet { what: &what },
            _ => Scope::Any,
        };
        let audited = begin(
            &self.engine,
            &request,
            Action::Delete,
            format!("{kind_name}/{name}"),
            scope,
        )
        .await?;
        let admin = audited.caller.name().to_owned();
        let result = async {
            let kind =
                parsed?.ok_or_else(|| Status::invalid_argument("kind is required to delete"))?;
            if name.is_empty() {
                return Err(Status::invalid_argument("name is required to delete"));
            }
            let deleted = self.engine.delete(kind, &name).await?;
            if deleted {
                info!(%admin, %kind, %name, "resource deleted");
            }
            Ok(deleted)
        }
        .await;
        let deleted = audited.finish(result).await?;
        Ok(Response::new(pb::DeleteResponse { deleted }))
    }

    async fn get(
        &self,
        request: Request<pb::GetRequest>,
    ) -> Result<Response<pb::GetResponse>, Status> {
        reader(&self.engine, &request, Action::Get)?;
        let req = request.into_inner();
        let docs = self.engine.get(kind(&req.kind)?, non_empty(&req.name))?;
        Ok(Response::new(pb::GetResponse {
            resources: docs
                .into_iter()
                .map(|d| pb::ResourceDocument {
                    origin: String::new(),
                    json: d.to_string(),
                })
                .collect(),
        }))
    }

    async fn status(
        &self,
        request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        reader(&self.engine, &request, Action::Status)?;
        let req = request.into_inner();
        let after = convert::status_page_token(&req.page_token)?;
        let limit = match req.page_size {
            0 => STATUS_PAGE_DEFAULT,
            n => (n as usize).min(STATUS_PAGE_MAX),
        };
        let page = self
            .engine
            .status_page(
                non_empty(&req.app),
                non_empty(&req.cluster),
                after.as_ref().map(|(a, c)| (a.as_str(), c.as_str())),
                limit,
            )
            .await?;
        let (targets, more) = within_page_bytes(
            page.targets.into_iter().map(convert::target_status),
            page.more,
        );
        let next_page_token = match targets.last() {
            Some(last) if more => convert::next_status_page_token(&last.app, &last.cluster),
            _ => String::new(),
        };
        Ok(Response::new(pb::StatusResponse {
            targets,
            next_page_token,
        }))
    }

    async fn create_token(
        &self,
        request: Request<pb::CreateTokenRequest>,
    ) -> Result<Response<pb::CreateTokenResponse>, Status> {
        let mut audited = begin(
            &self.engine,
            &request,
            Action::CreateToken,
            String::new(),
            Scope::Any,
        )
        .await?;
        let admin = audited.caller.name().to_owned();
        let req = request.into_inner();
        let ttl = if req.ttl_seconds == 0 {
            DEFAULT_TOKEN_TTL
        } else {
            Duration::from_secs(req.ttl_seconds)
        };
        let labels: BTreeMap<String, String> = req.labels.into_iter().collect();
        let result = self
            .engine
            .create_token(TokenSpec {
                ttl,
                labels,
                allowed_label_keys: req.allowed_label_keys.into_iter().collect(),
                cluster: Some(req.cluster_name).filter(|c| !c.is_empty()),
                max_uses: req.max_uses,
                description: req.description,
            })
            .await
            .map_err(Status::from);
        if let Ok(token) = &result {
            // The id only: the secret is never written anywhere but the answer.
            audited.set_target(format!("token {}", token.id));
        }
        let token = audited.finish(result).await?;
        info!(%admin, token = %token.id, "bootstrap token created");
        Ok(Response::new(convert::create_token_response(token)))
    }

    async fn refresh_repo(
        &self,
        request: Request<pb::RefreshRepoRequest>,
    ) -> Result<Response<pb::RefreshRepoResponse>, Status> {
        let caller = reader(&self.engine, &request, Action::RefreshRepo)?;
        let name = request.into_inner().name;
        if name.is_empty() {
            return Err(Status::invalid_argument("name: a Repo's name is required"));
        }
        if !self.engine.exists(Kind::Repo, &name)? {
            return Err(Status::not_found(format!(
                "Repo {name:?} not found; list what exists with `gitfleet get repos`"
            )));
        }
        self.engine.fetch_now(vec![name.clone()]).await?;
        info!(user = %caller.name(), repo = %name, "repo refresh");
        Ok(Response::new(pb::RefreshRepoResponse {}))
    }

    async fn list_notifiers(
        &self,
        request: Request<pb::ListNotifiersRequest>,
    ) -> Result<Response<pb::ListNotifiersResponse>, Status> {
        reader(&self.engine, &request, Action::ListNotifiers)?;
        Ok(Response::new(pb::ListNotifiersResponse {
            notifiers: self
                .engine
                .notifiers_view()
                .into_iter()
                .map(convert::notifier_info)
                .collect(),
        }))
    }

    async fn list_clusters(
        &self,
        request: Request<pb::ListClustersRequest>,
    ) -> Result<Response<pb::ListClustersResponse>, Status> {
        reader(&self.engine, &request, Action::ListClusters)?;
        let req = request.into_inner();
        let after = convert::cluster_page_token(&req.page_token)?;
        let limit = match req.page_size {
            0 => CLUSTERS_PAGE_DEFAULT,
            n => (n as usize).min(STATUS_PAGE_MAX),
        };
        let mut views = self.engine.clusters()?;
        views.retain(|v| after.as_ref().is_none_or(|a| v.record.name > *a));
        views.sort_unstable_by(|a, b| a.record.name.cmp(&b.record.name));
        let more = views.len() > limit;
        views.truncate(limit);
        let (clusters, more) =
            within_page_bytes(views.into_iter().map(convert::cluster_info), more);
        let next_page_token = match clusters.last() {
            Some(last) if more => convert::next_cluster_page_token(&last.name),
            _ => String::new(),
        };
        Ok(Response::new(pb::ListClustersResponse {
            clusters,
            next_page_token,
        }))
    }
}

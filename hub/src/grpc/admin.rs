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
use super::forward::{Forwarded, ReplicaLinks, on_behalf_of};
use super::live_diff::{DIFF_DEADLINE, DIFF_TIMEOUT, DiffFailure, LiveDiffs};
use crate::engine::{DiffTarget, Engine, LinkPlace, MAX_DIFF_CLUSTERS, TokenSpec};
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
    /// Diff requests to the spokes linked here (shared with `Link.Session`).
    live_diffs: LiveDiffs,
    /// The other replicas, asked about the spokes linked to them (several replicas only).
    replicas: Option<Arc<ReplicaLinks>>,
}

impl AdminService {
    pub fn new(engine: Arc<Engine>) -> Self {
        Self {
            engine,
            live_diffs: LiveDiffs::default(),
            replicas: None,
        }
    }

    /// Asks the other replicas through `replicas` about the spokes linked to them.
    pub fn with_replicas(mut self, replicas: Arc<ReplicaLinks>) -> Self {
        self.replicas = Some(replicas);
        self
    }

    /// Asks for diffs through `live_diffs` (the Link service's).
    pub fn with_live_diffs(mut self, live_diffs: LiveDiffs) -> Self {
        self.live_diffs = live_diffs;
        self
    }
}

/// Spokes asked for a diff at once by one `DiffLive`.
const DIFF_CONCURRENCY: usize = 16;

/// "12s", "5m", "3h", "2d": how long ago, for a person.
fn ago(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

/// How a replica asks another about a cluster whose spoke is linked there, on the caller's
/// behalf: the same request for that cluster alone, which the other replica authorizes again
/// and answers itself, never handing it further.
struct Hop<'a> {
    replicas: &'a ReplicaLinks,
    /// The caller's verified leaf certificate.
    caller: Vec<u8>,
    app: &'a str,
    /// As the caller asked (empty: the App's head, which every replica reads alike).
    revision: &'a str,
}

impl Hop<'_> {
    async fn ask(&self, url: &str, cluster: &str, timeout: Duration) -> pb::ClusterDiff {
        let failed = |why: String| pb::ClusterDiff {
            cluster: cluster.to_owned(),
            error: format!(
                "the spoke is linked to the hub replica at {url}, which did not answer: {why}"
            ),
            ..Default::default()
        };
        let channel = match self.replicas.channel(url) {
            Ok(channel) => channel,
            Err(problem) => return failed(problem),
        };
        let request = pb::DiffLiveRequest {
            app: self.app.to_owned(),
            cluster: cluster.to_owned(),
            revision: self.revision.to_owned(),
        };
        let request = match on_behalf_of(request, &self.caller) {
            Ok(request) => request,
            Err(status) => return failed(status.message().to_owned()),
        };
        let mut client = pb::admin_client::AdminClient::new(channel)
            .max_decoding_message_size(gitfleet_proto::MAX_MESSAGE_BYTES);
        // The other replica waits for its spoke as long as this one would: a little longer.
        let wait = timeout + Duration::from_secs(2);
        match tokio::time::timeout(wait, client.diff_live(request)).await {
            Ok(Ok(answer)) => answer
                .into_inner()
                .clusters
                .into_iter()
                .find(|c| c.cluster == cluster)
                .unwrap_or_else(|| failed("its answer does not name the cluster".to_owned())),
            Ok(Err(status)) => failed(status.message().to_owned()),
            Err(_) => failed(format!("no answer within {}s", wait.as_secs())),
        }
    }
}

/// One cluster's diff: asked of its spoke when it is linked here, of the replica it is linked
/// to (through `hop`) when it is linked there, or why not.
async fn cluster_diff(
    live_diffs: &LiveDiffs,
    hop: Option<&Hop<'_>>,
    target: DiffTarget,
    deadline: tokio::time::Instant,
) -> pb::ClusterDiff {
    let cluster = target.cluster.clone();
    let failed = |error: String, offline: bool| pb::ClusterDiff {
        cluster: cluster.clone(),
        error,
        offline,
        ..Default::default()
    };
    let timeout = deadline
        .saturating_duration_since(tokio::time::Instant::now())
        .min(DIFF_TIMEOUT);
    let spent = || {
        failed(
            format!(
                "not asked: this diff's {}s went to other clusters; name this one with \
                 --cluster {cluster}",
                DIFF_DEADLINE.as_secs()
            ),
            false,
        )
    };
    match target.link {
        LinkPlace::OtherReplica { url: Some(url) } if hop.is_some() => match hop {
            Some(hop) if !timeout.is_zero() => hop.ask(&url, &cluster, timeout).await,
            _ => spent(),
        },
        LinkPlace::Offline { last_contact_unix } => {
            let when = if last_contact_unix > 0 {
                format!(
                    "last heard from {} ago",
                    ago(crate::pki::now_unix() - last_contact_unix)
                )
            } else {
                "never connected".to_owned()
            };
            failed(
                format!("offline: the spoke is not connected ({when})"),
                true,
            )
        }
        LinkPlace::OtherReplica { .. } => failed(
            "the spoke is linked to another hub replica, which this one cannot ask (a \
             replica of an older release, or the call was handed over already); ask that \
             replica, or again once the spoke reconnects"
                .to_owned(),
            false,
        ),
        LinkPlace::Here => {
            if timeout.is_zero() {
                return spent();
            }
            let spec = convert::target_spec(target.target, BTreeMap::new());
            match live_diffs.request(&cluster, spec, timeout).await {
                Ok(result) => convert::cluster_diff(result),
                Err(DiffFailure::NotLinked | DiffFailure::LinkEnded) => failed(
                    "offline: the spoke's link ended before it answered".to_owned(),
                    true,
                ),
                Err(e) => failed(e.to_string(), false),
            }
        }
    }
}

/// Keeps the answer within [`gitfleet_proto::diff_limits::MAX_RESPONSE_BYTES`]: the objects
/// of the clusters that do not fit are left out (counted in `omitted`; the counts stay).
fn within_response_limit(clusters: &mut [pb::ClusterDiff]) {
    use prost::Message as _;
    let budget = gitfleet_proto::diff_limits::MAX_RESPONSE_BYTES;
    let mut spent = 0;
    for c in clusters.iter_mut() {
        let size = c.encoded_len();
        if spent + size > budget {
            let left_out = u32::try_from(c.objects.len()).unwrap_or(u32::MAX);
            c.objects.clear();
            c.omitted = c.omitted.saturating_add(left_out);
            spent += c.encoded_len();
        } else {
            spent += size;
        }
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
            let deleted = self.engine.delete_unowned(kind, &name).await?;
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

    async fn diff_live(
        &self,
        request: Request<pb::DiffLiveRequest>,
    ) -> Result<Response<pb::DiffLiveResponse>, Status> {
        use futures::StreamExt as _;
        let caller = reader(&self.engine, &request, Action::DiffLive)?;
        // A call another replica handed over is answered here, never handed on (no circles).
        let handed_over = request.extensions().get::<Forwarded>().is_some();
        let leaf = super::peer_leaf(&request)?;
        let mut req = request.into_inner();
        if req.app.is_empty() {
            return Err(Status::invalid_argument(
                "app: the name of the App to diff is required",
            ));
        }
        if !req.revision.is_empty() {
            // A prefix of a commit the App rolled out, as `rollback --to` takes.
            req.revision = self
                .engine
                .resolve_revision(&req.app, &req.revision)
                .await?
                .commit;
        }
        let plan =
            self.engine
                .diff_plan(&req.app, non_empty(&req.cluster), non_empty(&req.revision))?;
        info!(
            user = %caller.name(),
            app = %plan.app,
            revision = %plan.revision,
            clusters = plan.targets.len(),
            "diff --live"
        );
        let live_diffs = &self.live_diffs;
        let hop = match &self.replicas {
            Some(replicas) if !handed_over => Some(Hop {
                replicas,
                caller: leaf.to_vec(),
                app: &req.app,
                revision: &req.revision,
            }),
            _ => None,
        };
        let hop = hop.as_ref();
        let deadline = tokio::time::Instant::now() + DIFF_DEADLINE;
        let mut clusters: Vec<pb::ClusterDiff> = futures::stream::iter(plan.targets)
            .map(|target| cluster_diff(live_diffs, hop, target, deadline))
            .buffered(DIFF_CONCURRENCY)
            .collect::<Vec<_>>()
            .instrument(info_span!("diff_live", app = %plan.app, revision = %plan.revision))
            .await;
        clusters.extend(plan.not_asked.into_iter().map(|cluster| pb::ClusterDiff {
            error: format!(
                "not asked: one diff asks at most {MAX_DIFF_CLUSTERS} clusters; name this \
                 one with --cluster {cluster}"
            ),
            cluster,
            ..Default::default()
        }));
        within_response_limit(&mut clusters);
        Ok(Response::new(pb::DiffLiveResponse {
            app: plan.app,
            revision: plan.revision,
            clusters,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(name: &str, objects: usize, diff_bytes: usize) -> pb::ClusterDiff {
        pb::ClusterDiff {
            cluster: name.into(),
            objects: (0..objects)
                .map(|i| pb::DiffObject {
                    name: format!("o{i}"),
                    diff: "d".repeat(diff_bytes),
                    action: pb::DiffAction::Update as i32,
                    ..Default::default()
                })
                .collect(),
            updates: u32::try_from(objects).unwrap_or(u32::MAX),
            ..Default::default()
        }
    }

    #[test]
    fn clusters_beyond_the_answers_size_keep_their_counts_not_their_objects() {
        use prost::Message as _;
        // Four clusters of about 1 MiB each: not all of them fit in 3 MiB.
        let mut clusters: Vec<pb::ClusterDiff> = (0..4)
            .map(|i| cluster(&format!("eu-{i}"), 16, 60 * 1024))
            .collect();
        within_response_limit(&mut clusters);
        let size: usize = clusters.iter().map(|c| c.encoded_len()).sum();
        assert!(
            size <= gitfleet_proto::diff_limits::MAX_RESPONSE_BYTES,
            "{size}"
        );
        assert_eq!(clusters[0].objects.len(), 16, "the first fit whole");
        let cut = clusters.last().expect("four");
        assert!(cut.objects.is_empty());
        assert_eq!((cut.omitted, cut.updates), (16, 16), "counts stay");
    }

    #[test]
    fn ago_reads_like_a_person() {
        assert_eq!(ago(-5), "0s");
        assert_eq!(ago(59), "59s");
        assert_eq!(ago(60), "1m");
        assert_eq!(ago(7200), "2h");
        assert_eq!(ago(3 * 86400 + 5), "3d");
    }
}

//! Talking to a hub as an admin: the credentials file and the gRPC client.
//!
//! [`AdminClient`] is the CLI's only gRPC edge: it dials the hub named by a [`Context`] with
//! mutual TLS and turns transport and status failures into [`ClientError`]s that say what to do
//! next. One channel carries both admin services: `Admin` (resources, status, tokens) and
//! `Access` (approving and revoking clusters, listing and revoking tokens). It hands back the wire types unchanged; the CLI's output module shapes them for people
//! and scripts.

pub mod config;
mod error;

use std::time::Duration;

use gitfleet_proto::v1 as pb;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tonic::Streaming;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

pub use config::{ClientConfig, ConfigError, ConfigFile, Context};
pub use error::ClientError;

/// How long to wait for TCP and TLS to the hub before saying it is unreachable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one admin call may take. Admin calls read or write a handful of records.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// How often an open connection is pinged, and how long an answer may take.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(20);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Installs rustls' ring provider as the process default, once (shared with the hub and the
/// spoke).
pub use gitfleet_support::install_crypto_provider;

/// A connected admin client for one hub.
#[derive(Debug, Clone)]
pub struct AdminClient {
    inner: pb::admin_client::AdminClient<Channel>,
    access: pb::access_client::AccessClient<Channel>,
    rollouts: pb::rollouts_client::RolloutsClient<Channel>,
    users: pb::users_client::UsersClient<Channel>,
    audit: pb::audit_client::AuditClient<Channel>,
    watch: pb::watch_client::WatchClient<Channel>,
    server: String,
    /// The context dialled (a new user's credentials file reuses its server and CA).
    context: Context,
}

impl AdminClient {
    /// Dials the hub in `context` and completes the TLS handshake, so that an unreachable hub or
    /// a bad server certificate is reported here rather than on the first call.
    pub async fn connect(context: &Context) -> Result<AdminClient, ClientError> {
        install_crypto_provider();
        let endpoint = endpoint(context)?;
        let server = context.server.clone();
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| ClientError::from_transport(&server, &e))?;
        let inner = pb::admin_client::AdminClient::new(channel.clone())
            .max_decoding_message_size(gitfleet_proto::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(gitfleet_proto::MAX_MESSAGE_BYTES);
        let access = pb::access_client::AccessClient::new(channel.clone())
            .max_decoding_message_size(gitfleet_proto::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(gitfleet_proto::MAX_MESSAGE_BYTES);
        let rollouts = pb::rollouts_client::RolloutsClient::new(channel.clone())
            .max_decoding_message_size(gitfleet_proto::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(gitfleet_proto::MAX_MESSAGE_BYTES);
        let users = pb::users_client::UsersClient::new(channel.clone())
            .max_decoding_message_size(gitfleet_proto::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(gitfleet_proto::MAX_MESSAGE_BYTES);
        let watch = pb::watch_client::WatchClient::new(channel.clone())
            .max_decoding_message_size(gitfleet_proto::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(gitfleet_proto::MAX_MESSAGE_BYTES);
        let audit = pb::audit_client::AuditClient::new(channel)
            .max_decoding_message_size(gitfleet_proto::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(gitfleet_proto::MAX_MESSAGE_BYTES);
        Ok(AdminClient {
            inner,
            access,
            rollouts,
            users,
            audit,
            watch,
            server,
            context: context.clone(),
        })
    }

    /// The `server` of the context this client dialled.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The context this client dialled.
    pub fn context(&self) -> &Context {
        &self.context
    }

    pub async fn create_user(
        &mut self,
        request: pb::CreateUserRequest,
    ) -> Result<pb::CreateUserResponse, ClientError> {
        let response = self.users.create_user(request).await;
        self.check(response)
    }

    pub async fn list_users(&mut self) -> Result<Vec<pb::UserInfo>, ClientError> {
        let response = self.users.list_users(pb::ListUsersRequest {}).await;
        Ok(self.check(response)?.users)
    }

    /// False when no active user has the name.
    pub async fn revoke_user(&mut self, name: &str) -> Result<bool, ClientError> {
        let request = pb::RevokeUserRequest {
            name: name.to_owned(),
        };
        let response = self.users.revoke_user(request).await;
        Ok(self.check(response)?.revoked)
    }

    /// Every Notifier with what its deliveries did.
    pub async fn list_notifiers(&mut self) -> Result<Vec<pb::NotifierInfo>, ClientError> {
        let response = self.inner.list_notifiers(pb::ListNotifiersRequest {}).await;
        Ok(self.check(response)?.notifiers)
    }

    /// `gitfleet diff --live`: what syncing `app` at `revision` (empty: its head) would change
    /// on `cluster` (empty: each of its clusters), as the spokes' dry runs say.
    pub async fn diff_live(
        &mut self,
        app: &str,
        cluster: &str,
        revision: &str,
    ) -> Result<pb::DiffLiveResponse, ClientError> {
        let request = pb::DiffLiveRequest {
            app: app.to_owned(),
            cluster: cluster.to_owned(),
            revision: revision.to_owned(),
        };
        let response = self.inner.diff_live(request).await;
        self.check(response)
    }

    /// Asks the hub to fetch Repo `name` now.
    pub async fn refresh_repo(&mut self, name: &str) -> Result<(), ClientError> {
        let response = self
            .inner
            .refresh_repo(pb::RefreshRepoRequest {
                name: name.to_owned(),
            })
            .await;
        self.check(response)?;
        Ok(())
    }

    /// A single-use sign-in link to the hub's web dashboard, as the caller.
    pub async fn dashboard_signin(
        &mut self,
    ) -> Result<pb::CreateDashboardSigninResponse, ClientError> {
        let response = self
            .users
            .create_dashboard_signin(pb::CreateDashboardSigninRequest {})
            .await;
        self.check(response)
    }

    pub async fn whoami(&mut self) -> Result<pb::WhoamiResponse, ClientError> {
        let response = self.users.whoami(pb::WhoamiRequest {}).await;
        self.check(response)
    }

    /// The newest `limit` audit entries (of `user` when not empty, at or after `since_unix`),
    /// oldest first.
    pub async fn audit(
        &mut self,
        user: &str,
        since_unix: i64,
        limit: u32,
    ) -> Result<Vec<pb::AuditEntry>, ClientError> {
        let request = pb::ListAuditRequest {
            user: user.to_owned(),
            since_unix,
            limit,
        };
        let response = self.audit.list_audit(request).await;
        Ok(self.check(response)?.entries)
    }

    pub async fn apply(
        &mut self,
        documents: Vec<pb::ResourceDocument>,
        dry_run: bool,
    ) -> Result<Vec<pb::ApplyOutcome>, ClientError> {
        let request = pb::ApplyRequest { documents, dry_run };
        let response = self.inner.apply(request).await;
        Ok(self.check(response)?.outcomes)
    }

    /// Deletes one resource; `false` when there was none of that name.
    pub async fn delete(&mut self, kind: &str, name: &str) -> Result<bool, ClientError> {
        let request = pb::DeleteRequest {
            kind: kind.to_owned(),
            name: name.to_owned(),
        };
        let response = self.inner.delete(request).await;
        Ok(self.check(response)?.deleted)
    }

    /// Stored resources; `kind` empty for every kind, `name` empty for every name.
    pub async fn get(
        &mut self,
        kind: &str,
        name: &str,
    ) -> Result<Vec<pb::ResourceDocument>, ClientError> {
        let request = pb::GetRequest {
            kind: kind.to_owned(),
            name: name.to_owned(),
        };
        let response = self.inner.get(request).await;
        Ok(self.check(response)?.resources)
    }

    /// Every Target's state, optionally narrowed to one App and/or one cluster (empty = all),
    /// ordered by (app, cluster): every page the hub serves, one request each.
    pub async fn status(
        &mut self,
        app: &str,
        cluster: &str,
    ) -> Result<Vec<pb::TargetStatus>, ClientError> {
        let mut targets = Vec::new();
        let mut page_token = String::new();
        loop {
            let page = self.status_page(app, cluster, 0, &page_token).await?;
            targets.extend(page.targets);
            if page.next_page_token.is_empty() {
                return Ok(targets);
            }
            page_token = page.next_page_token;
        }
    }

    /// One page of `status`: `page_size` 0 lets the hub choose; `page_token` empty for the
    /// first page, else the previous page's `next_page_token`.
    pub async fn status_page(
        &mut self,
        app: &str,
        cluster: &str,
        page_size: u32,
        page_token: &str,
    ) -> Result<pb::StatusResponse, ClientError> {
        let request = pb::StatusRequest {
            app: app.to_owned(),
            cluster: cluster.to_owned(),
            page_size,
            page_token: page_token.to_owned(),
        };
        let response = self.inner.status(request).await;
        self.check(response)
    }

    /// Target status as it changes (`status --watch`): a snapshot, then each change.
    pub async fn watch_status(
        &mut self,
        app: &str,
        cluster: &str,
    ) -> Result<Streaming<pb::WatchStatusResponse>, ClientError> {
        let request = pb::WatchStatusRequest {
            app: app.to_owned(),
            cluster: cluster.to_owned(),
        };
        let response = self.watch.watch_status(request).await;
        self.check(response)
    }

    /// An App's rollout, again whenever it changes (`rollout status --watch`).
    pub async fn watch_rollout(
        &mut self,
        app: &str,
    ) -> Result<Streaming<pb::RolloutStatus>, ClientError> {
        let request = pb::RolloutRequest {
            app: app.to_owned(),
            counts_only: false,
        };
        let response = self.watch.watch_rollout(request).await;
        self.check(response)
    }

    /// Events after `after_id` (0: the newest `limit`), then each new one (`events --watch`).
    pub async fn watch_events(
        &mut self,
        app: &str,
        cluster: &str,
        after_id: u64,
        limit: u32,
    ) -> Result<Streaming<pb::WatchEventsResponse>, ClientError> {
        let request = pb::WatchEventsRequest {
            app: app.to_owned(),
            cluster: cluster.to_owned(),
            after_id,
            limit,
        };
        let response = self.watch.watch_events(request).await;
        self.check(response)
    }

    /// The next message of a stream from the hub; `None` once the hub ended it (it stops).
    pub async fn next<T>(&self, stream: &mut Streaming<T>) -> Result<Option<T>, ClientError> {
        stream
            .message()
            .await
            .map_err(|status| ClientError::from_status(&self.server, status))
    }

    pub async fn create_token(
        &mut self,
        request: pb::CreateTokenRequest,
    ) -> Result<pb::CreateTokenResponse, ClientError> {
        let response = self.inner.create_token(request).await;
        self.check(response)
    }

    /// Every registered cluster, ordered by name: every page the hub serves.
    pub async fn list_clusters(&mut self) -> Result<Vec<pb::ClusterInfo>, ClientError> {
        let mut clusters = Vec::new();
        let mut page_token = String::new();
        loop {
            let request = pb::ListClustersRequest {
                page_size: 0,
                page_token,
            };
            let response = self.inner.list_clusters(request).await;
            let page = self.check(response)?;
            clusters.extend(page.clusters);
            if page.next_page_token.is_empty() {
                return Ok(clusters);
            }
            page_token = page.next_page_token;
        }
    }

    /// Lets a registration waiting for approval get its certificate on its next retry; `false`
    /// when no registration of that name is waiting.
    pub async fn approve_cluster(&mut self, name: &str) -> Result<bool, ClientError> {
        let request = pb::ApproveClusterRequest {
            name: name.to_owned(),
        };
        let response = self.access.approve_cluster(request).await;
        Ok(self.check(response)?.approved)
    }

    /// Cuts a cluster (or a pending registration) off at once; `false` when there is no cluster
    /// of that name.
    pub async fn revoke_cluster(&mut self, name: &str) -> Result<bool, ClientError> {
        let request = pb::RevokeClusterRequest {
            name: name.to_owned(),
        };
        let response = self.access.revoke_cluster(request).await;
        Ok(self.check(response)?.revoked)
    }

    /// Changes a cluster's labels; the answer is the cluster as it now is.
    pub async fn label_cluster(
        &mut self,
        name: &str,
        changes: &gitfleet_core::cluster_labels::LabelChanges,
    ) -> Result<pb::ClusterInfo, ClientError> {
        let request = pb::LabelClusterRequest {
            name: name.to_owned(),
            set: changes.set.clone().into_iter().collect(),
            remove: changes.remove.iter().cloned().collect(),
            overwrite: changes.overwrite,
        };
        let response = self.access.label_cluster(request).await;
        self.check(response)?
            .cluster
            .ok_or_else(|| ClientError::Rpc {
                server: self.server.clone(),
                code: tonic::Code::Internal,
                message: "the answer to LabelCluster lacks the cluster".to_owned(),
            })
    }

    /// Registrations waiting for approval.
    pub async fn list_pending_clusters(&mut self) -> Result<Vec<pb::PendingCluster>, ClientError> {
        let response = self
            .access
            .list_pending_clusters(pb::ListPendingClustersRequest {})
            .await;
        Ok(self.check(response)?.clusters)
    }

    /// Every bootstrap token the hub knows, without secrets.
    pub async fn list_tokens(&mut self) -> Result<Vec<pb::TokenInfo>, ClientError> {
        let response = self.access.list_tokens(pb::ListTokensRequest {}).await;
        Ok(self.check(response)?.tokens)
    }

    /// Makes a bootstrap token unusable; `false` when no token has that id.
    pub async fn revoke_token(&mut self, token_id: &str) -> Result<bool, ClientError> {
        let request = pb::RevokeTokenRequest {
            token_id: token_id.to_owned(),
        };
        let response = self.access.revoke_token(request).await;
        Ok(self.check(response)?.revoked)
    }

    // --- rollouts, App controls, events ------------------------------------------------------

    /// An App's current rollout with per-wave progress.
    pub async fn rollout(&mut self, app: &str) -> Result<pb::RolloutStatus, ClientError> {
        let request = pb::RolloutRequest {
            app: app.to_owned(),
            counts_only: false,
        };
        let response = self.rollouts.get_rollout(request).await;
        self.check(response)
    }

    /// An App's current rollout with each wave's counts but not its Targets: cheap to poll
    /// however large the fleet.
    pub async fn rollout_counts(&mut self, app: &str) -> Result<pb::RolloutStatus, ClientError> {
        let request = pb::RolloutRequest {
            app: app.to_owned(),
            counts_only: true,
        };
        let response = self.rollouts.get_rollout(request).await;
        self.check(response)
    }

    /// `pause`, `resume` or `promote` on an App's rollout; the rollout after it.
    pub async fn rollout_command(
        &mut self,
        verb: RolloutVerb,
        app: &str,
    ) -> Result<pb::RolloutStatus, ClientError> {
        let request = pb::RolloutRequest {
            app: app.to_owned(),
            counts_only: false,
        };
        let response = match verb {
            RolloutVerb::Pause => self.rollouts.pause_rollout(request).await,
            RolloutVerb::Resume => self.rollouts.resume_rollout(request).await,
            RolloutVerb::Promote => self.rollouts.promote_rollout(request).await,
        };
        self.check(response)
    }

    /// Rolls an App back to `to` (a commit or unique prefix), or to its stable revision.
    pub async fn rollback(
        &mut self,
        app: &str,
        to: Option<&str>,
    ) -> Result<pb::RolloutStatus, ClientError> {
        let request = pb::RollbackRequest {
            app: app.to_owned(),
            to_revision: to.unwrap_or_default().to_owned(),
        };
        let response = self.rollouts.rollback_rollout(request).await;
        self.check(response)
    }

    /// Lets an App's current rollout through freezes and sync windows.
    pub async fn override_freeze(
        &mut self,
        app: &str,
        reason: &str,
    ) -> Result<pb::RolloutStatus, ClientError> {
        let request = pb::StartRolloutRequest {
            app: app.to_owned(),
            override_freeze: true,
            reason: reason.to_owned(),
        };
        let response = self.rollouts.start_rollout(request).await;
        self.check(response)
    }

    // --- freezes -----------------------------------------------------------------------------

    pub async fn create_freeze(
        &mut self,
        request: pb::CreateFreezeRequest,
    ) -> Result<pb::FreezeInfo, ClientError> {
        let response = self.rollouts.create_freeze(request).await;
        self.check(response)
    }

    pub async fn list_freezes(&mut self) -> Result<Vec<pb::FreezeInfo>, ClientError> {
        let response = self.rollouts.list_freezes(pb::ListFreezesRequest {}).await;
        Ok(self.check(response)?.freezes)
    }

    /// `false` when there was no freeze of that name.
    pub async fn delete_freeze(&mut self, name: &str) -> Result<bool, ClientError> {
        let request = pb::DeleteFreezeRequest {
            name: name.to_owned(),
        };
        let response = self.rollouts.delete_freeze(request).await;
        Ok(self.check(response)?.deleted)
    }

    pub async fn rollout_history(
        &mut self,
        app: &str,
    ) -> Result<Vec<pb::RolloutRecord>, ClientError> {
        let request = pb::RolloutRequest {
            app: app.to_owned(),
            counts_only: false,
        };
        let response = self.rollouts.rollout_history(request).await;
        Ok(self.check(response)?.rollouts)
    }

    /// Suspends or resumes an App, or forces a sync (of one cluster when given); the hub's
    /// message for people.
    pub async fn app_control(
        &mut self,
        verb: AppVerb,
        app: &str,
        cluster: Option<&str>,
    ) -> Result<String, ClientError> {
        let request = pb::AppControlRequest {
            app: app.to_owned(),
            cluster: cluster.unwrap_or_default().to_owned(),
        };
        let response = match verb {
            AppVerb::Suspend => self.rollouts.suspend_app(request).await,
            AppVerb::Resume => self.rollouts.resume_app(request).await,
            AppVerb::Sync => self.rollouts.sync_app(request).await,
        };
        Ok(self.check(response)?.message)
    }

    /// Events, oldest first (empty `app`/`cluster`: all), with ids above `after_id`.
    pub async fn events(
        &mut self,
        app: &str,
        cluster: &str,
        after_id: u64,
        limit: u32,
    ) -> Result<Vec<pb::Event>, ClientError> {
        let request = pb::ListEventsRequest {
            app: app.to_owned(),
            cluster: cluster.to_owned(),
            after_id,
            limit,
        };
        let response = self.rollouts.list_events(request).await;
        Ok(self.check(response)?.events)
    }

    fn check<T>(
        &self,
        response: Result<tonic::Response<T>, tonic::Status>,
    ) -> Result<T, ClientError> {
        response
            .map(tonic::Response::into_inner)
            .map_err(|status| ClientError::from_status(&self.server, status))
    }
}

/// Commands on a rollout that need nothing but the App.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RolloutVerb {
    Pause,
    Resume,
    Promote,
}

/// Controls on an App outside its spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppVerb {
    Suspend,
    Resume,
    Sync,
}

/// The endpoint for a context: address, TLS identity, timeouts. Fails on anything that can be
/// known wrong without dialling (a malformed address, PEM data that is not PEM).
pub fn endpoint(context: &Context) -> Result<Endpoint, ClientError> {
    let bad_address = |reason: String| ClientError::BadAddress {
        context: context.name.clone(),
        server: context.server.clone(),
        reason,
    };
    let url = normalise_server(&context.server);
    let uri: http::Uri = url.parse().map_err(|e| bad_address(format!("{e}")))?;
    if uri.scheme_str() != Some("https") {
        return Err(bad_address(
            "the hub only speaks TLS: use https://HOST:PORT".to_owned(),
        ));
    }
    let host = uri
        .host()
        .ok_or_else(|| bad_address("no host".to_owned()))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let domain = context.tls_server_name.clone().unwrap_or(host);

    check_pem(
        context,
        "certificate-authority-data",
        &context.certificate_authority_data,
        PemKind::Certificate,
    )?;
    check_pem(
        context,
        "client-certificate-data",
        &context.client_certificate_data,
        PemKind::Certificate,
    )?;
    check_pem(
        context,
        "client-key-data",
        &context.client_key_data,
        PemKind::PrivateKey,
    )?;

    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&context.certificate_authority_data))
        .identity(Identity::from_pem(
            &context.client_certificate_data,
            &context.client_key_data,
        ))
        .domain_name(domain)
        .timeout(CONNECT_TIMEOUT);
    Endpoint::from_shared(url)
        .map_err(|e| bad_address(error::chain(&e)))?
        .tls_config(tls)
        .map_err(|e| ClientError::BadCredentials {
            context: context.name.clone(),
            field: "TLS settings",
            reason: error::chain(&e),
        })
        .map(|e| {
            e.connect_timeout(CONNECT_TIMEOUT)
                .timeout(REQUEST_TIMEOUT)
                .tcp_nodelay(true)
                // A `--watch` stream may be quiet for hours: pings find a hub that went away
                // (the stream then fails and the CLI dials again).
                .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
                .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        })
}

/// `host:port` → `https://host:port`: people paste the address without a scheme.
fn normalise_server(server: &str) -> String {
    let trimmed = server.trim().trim_end_matches('/');
    if trimmed.contains("://") {
        trimmed.to_owned()
    } else {
        format!("https://{trimmed}")
    }
}

#[derive(Clone, Copy)]
enum PemKind {
    Certificate,
    PrivateKey,
}

fn check_pem(
    context: &Context,
    field: &'static str,
    pem: &str,
    kind: PemKind,
) -> Result<(), ClientError> {
    let bad = |reason: &str| ClientError::BadCredentials {
        context: context.name.clone(),
        field,
        reason: reason.to_owned(),
    };
    if pem.trim().is_empty() {
        return Err(bad("it is empty"));
    }
    match kind {
        PemKind::Certificate => {
            let mut count = 0;
            for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                cert.map_err(|e| bad(&format!("not a PEM certificate: {e}")))?;
                count += 1;
            }
            if count == 0 {
                return Err(bad("no PEM certificate in it"));
            }
        }
        PemKind::PrivateKey => {
            PrivateKeyDer::from_pem_slice(pem.as_bytes())
                .map_err(|e| bad(&format!("not a PEM private key: {e}")))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;

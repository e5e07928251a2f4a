//! The `Access` service: approving, revoking and listing clusters' and tokens' access. Admin
//! role only, but for listing pending clusters (any role); every change is audited.

use std::sync::Arc;

use gitfleet_core::authz::{Action, Scope};
use gitfleet_proto::v1 as pb;
use gitfleet_proto::v1::access_server::Access;
use tonic::{Request, Response, Status};
use tracing::info;

use super::auth::{begin, reader};
use super::{convert, required};
use crate::engine::Engine;
use gitfleet_core::cluster_labels::LabelChanges;

#[derive(Debug, Clone)]
pub struct AccessService {
    engine: Arc<Engine>,
}

impl AccessService {
    pub fn new(engine: Arc<Engine>) -> Self {
        Self { engine }
    }
}

/// The audit target and the authorization scope of a call about one cluster.
fn cluster_target(name: &str) -> (String, String) {
    (format!("cluster/{name}"), format!("cluster {name:?}"))
}

#[tonic::async_trait]
impl Access for AccessService {
    async fn approve_cluster(
        &self,
        request: Request<pb::ApproveClusterRequest>,
    ) -> Result<Response<pb::ApproveClusterResponse>, Status> {
        let (target, what) = cluster_target(&request.get_ref().name);
        let audited = begin(
            &self.engine,
            &request,
            Action::ApproveCluster,
            target,
            Scope::Fleet { what: &what },
        )
        .await?;
        let admin = audited.caller.name().to_owned();
        let req = request.into_inner();
        let result = async {
            Ok(self
                .engine
                .approve_cluster(required("name", &req.name)?)
                .await?)
        }
        .await;
        let approved = audited.finish(result).await?;
        info!(%admin, cluster = %req.name, approved, "approve cluster");
        Ok(Response::new(pb::ApproveClusterResponse { approved }))
    }

    async fn revoke_cluster(
        &self,
        request: Request<pb::RevokeClusterRequest>,
    ) -> Result<Response<pb::RevokeClusterResponse>, Status> {
        let (target, what) = cluster_target(&request.get_ref().name);
        let audited = begin(
            &self.engine,
            &request,
            Action::RevokeCluster,
            target,
            Scope::Fleet { what: &what },
        )
        .await?;
        let admin = audited.caller.name().to_owned();
        let req = request.into_inner();
        let result = async {
            Ok(self
                .engine
                .revoke_cluster(required("name", &req.name)?)
                .await?)
        }
        .await;
        let revoked = audited.finish(result).await?;
        info!(%admin, cluster = %req.name, revoked, "revoke cluster");
        Ok(Response::new(pb::RevokeClusterResponse { revoked }))
    }

    async fn label_cluster(
        &self,
        request: Request<pb::LabelClusterRequest>,
    ) -> Result<Response<pb::LabelClusterResponse>, Status> {
        let (target, what) = cluster_target(&request.get_ref().name);
        let audited = begin(
            &self.engine,
            &request,
            Action::LabelCluster,
            target,
            Scope::Fleet { what: &what },
        )
        .await?;
        let admin = audited.caller.name().to_owned();
        let req = request.into_inner();
        let changes = LabelChanges {
            set: req.set.into_iter().collect(),
            remove: req.remove.into_iter().collect(),
            overwrite: req.overwrite,
        };
        let result = async {
            Ok(self
                .engine
                .label_cluster(required("name", &req.name)?, &changes, &admin)
                .await?)
        }
        .await;
        let view = audited.finish(result).await?;
        info!(%admin, cluster = %req.name, "label cluster");
        Ok(Response::new(pb::LabelClusterResponse {
            cluster: Some(convert::cluster_info(view)),
        }))
    }

    async fn list_pending_clusters(
        &self,
        request: Request<pb::ListPendingClustersRequest>,
    ) -> Result<Response<pb::ListPendingClustersResponse>, Status> {
        reader(&self.engine, &request, Action::ListPendingClusters)?;
        let clusters = self.engine.pending_clusters()?;
        Ok(Response::new(pb::ListPendingClustersResponse {
            clusters: clusters.into_iter().map(convert::pending_cluster).collect(),
        }))
    }

    async fn list_tokens(
        &self,
        request: Request<pb::ListTokensRequest>,
    ) -> Result<Response<pb::ListTokensResponse>, Status> {
        reader(&self.engine, &request, Action::ListTokens)?;
        let tokens = self.engine.tokens()?;
        Ok(Response::new(pb::ListTokensResponse {
            tokens: tokens.into_iter().map(convert::token_info).collect(),
        }))
    }

    async fn revoke_token(
        &self,
        request: Request<pb::RevokeTokenRequest>,
    ) -> Result<Response<pb::RevokeTokenResponse>, Status> {
        let target = format!("token {}", request.get_ref().token_id);
        let audited = begin(
            &self.engine,
            &request,
            Action::RevokeToken,
            target,
            Scope::Any,
        )
        .await?;
        let admin = audited.caller.name().to_owned();
        let req = request.into_inner();
        let result = async {
            Ok(self
                .engine
                .revoke_token(required("token_id", &req.token_id)?)
                .await?)
        }
        .await;
        let revoked = audited.finish(result).await?;
        info!(%admin, token = %req.token_id, revoked, "revoke token");
        Ok(Response::new(pb::RevokeTokenResponse { revoked }))
    }
}

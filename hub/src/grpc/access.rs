//! The `Access` service: approving, revoking and listing clusters' and tokens' access. Every
//! call needs an admin certificate.

use std::sync::Arc;

use gitfleet_proto::v1 as pb;
use gitfleet_proto::v1::access_server::Access;
use tonic::{Request, Response, Status};
use tracing::info;

use super::{admin_peer, convert, required};
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

#[tonic::async_trait]
impl Access for AccessService {
    async fn approve_cluster(
        &self,
        request: Request<pb::ApproveClusterRequest>,
    ) -> Result<Response<pb::ApproveClusterResponse>, Status> {
        let admin = admin_peer(&request)?;
        let req = request.into_inner();
        let approved = self
            .engine
            .approve_cluster(required("name", &req.name)?)
            .await?;
        info!(%admin, cluster = %req.name, approved, "approve cluster");
        Ok(Response::new(pb::ApproveClusterResponse { approved }))
    }

    async fn revoke_cluster(
        &self,
        request: Request<pb::RevokeClusterRequest>,
    ) -> Result<Response<pb::RevokeClusterResponse>, Status> {
        let admin = admin_peer(&request)?;
        let req = request.into_inner();
        let revoked = self
            .engine
            .revoke_cluster(required("name", &req.name)?)
            .await?;
        info!(%admin, cluster = %req.name, revoked, "revoke cluster");
        Ok(Response::new(pb::RevokeClusterResponse { revoked }))
    }

    async fn label_cluster(
        &self,
        request: Request<pb::LabelClusterRequest>,
    ) -> Result<Response<pb::LabelClusterResponse>, Status> {
        let admin = admin_peer(&request)?;
        let req = request.into_inner();
        let changes = LabelChanges {
            set: req.set.into_iter().collect(),
            remove: req.remove.into_iter().collect(),
            overwrite: req.overwrite,
        };
        let view = self
            .engine
            .label_cluster(required("name", &req.name)?, &changes, &admin)
            .await?;
        info!(%admin, cluster = %req.name, "label cluster");
        Ok(Response::new(pb::LabelClusterResponse {
            cluster: Some(convert::cluster_info(view)),
        }))
    }

    async fn list_pending_clusters(
        &self,
        request: Request<pb::ListPendingClustersRequest>,
    ) -> Result<Response<pb::ListPendingClustersResponse>, Status> {
        admin_peer(&request)?;
        let clusters = self.engine.pending_clusters()?;
        Ok(Response::new(pb::ListPendingClustersResponse {
            clusters: clusters.into_iter().map(convert::pending_cluster).collect(),
        }))
    }

    async fn list_tokens(
        &self,
        request: Request<pb::ListTokensRequest>,
    ) -> Result<Response<pb::ListTokensResponse>, Status> {
        admin_peer(&request)?;
        let tokens = self.engine.tokens()?;
        Ok(Response::new(pb::ListTokensResponse {
            tokens: tokens.into_iter().map(convert::token_info).collect(),
        }))
    }

    async fn revoke_token(
        &self,
        request: Request<pb::RevokeTokenRequest>,
    ) -> Result<Response<pb::RevokeTokenResponse>, Status> {
        let admin = admin_peer(&request)?;
        let req = request.into_inner();
        let revoked = self
            .engine
            .revoke_token(required("token_id", &req.token_id)?)
            .await?;
        info!(%admin, token = %req.token_id, revoked, "revoke token");
        Ok(Response::new(pb::RevokeTokenResponse { revoked }))
    }
}

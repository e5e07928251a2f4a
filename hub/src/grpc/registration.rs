//! `Registration.Register`: a bootstrap token and a CSR in, a certificate out.

use std::sync::Arc;

use gitfleet_proto::v1 as pb;
use gitfleet_proto::v1::registration_server::Registration;
use tonic::{Request, Response, Status};
use tracing::{Instrument, info_span, warn};

use super::convert;
use crate::engine::Engine;

#[derive(Debug, Clone)]
pub struct RegistrationService {
    engine: Arc<Engine>,
}

impl RegistrationService {
    pub fn new(engine: Arc<Engine>) -> Self {
        Self { engine }
    }
}

#[tonic::async_trait]
impl Registration for RegistrationService {
    async fn register(
        &self,
        request: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        let remote = request.remote_addr();
        let reg = convert::registration(request.into_inner());
        let cluster = reg.cluster.clone();
        let issued = self
            .engine
            .register(reg)
            .instrument(info_span!("register", %cluster))
            .await
            .map_err(|e| {
                warn!(%cluster, ?remote, error = %e, "registration refused");
                Status::from(e)
            })?;
        Ok(Response::new(convert::register_response(issued)))
    }
}

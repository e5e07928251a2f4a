//! `Registration.Register`: a bootstrap token and a CSR in, a certificate out.
//!
//! The one call without a client certificate: each source address gets a budget of calls (see
//! [`RateLimiter`]), and the engine checks the token before it does any work on the request.
//! A call another replica handed over counts against the address that replica was called from.

use std::sync::Arc;
use std::time::Instant;

use gitfleet_proto::v1 as pb;
use gitfleet_proto::v1::registration_server::Registration;
use tonic::{Request, Response, Status};
use tracing::{Instrument, info_span, warn};

use super::convert;
use super::rate_limit::{DEFAULT_REGISTER_PER_MINUTE, RateLimiter};
use crate::engine::Engine;

/// Metadata of a RESOURCE_EXHAUSTED answer: seconds until a call would be allowed.
pub const RETRY_AFTER: &str = "retry-after";

#[derive(Debug, Clone)]
pub struct RegistrationService {
    engine: Arc<Engine>,
    limiter: Arc<RateLimiter>,
}

impl RegistrationService {
    pub fn new(engine: Arc<Engine>) -> Self {
        Self::with_rate_limit(engine, DEFAULT_REGISTER_PER_MINUTE)
    }

    /// At most `per_minute` calls a minute (and as many at once) from one source address;
    /// 0: no limit.
    pub fn with_rate_limit(engine: Arc<Engine>, per_minute: u32) -> Self {
        Self {
            engine,
            limiter: Arc::new(RateLimiter::per_minute(per_minute)),
        }
    }
}

#[tonic::async_trait]
impl Registration for RegistrationService {
    async fn register(
        &self,
        request: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        let remote = super::remote_addr(&request);
        if let Err(wait) = self.limiter.check(remote.map(|a| a.ip()), Instant::now()) {
            let source =
                remote.map_or_else(|| "an unknown address".to_owned(), |a| a.ip().to_string());
            warn!(%source, "registration refused: over the rate limit");
            let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
            let mut status = Status::resource_exhausted(format!(
                "too many registrations from {source}; retry in {seconds}s"
            ));
            // For spokes: when to come back, as a number.
            if let Ok(value) = seconds.to_string().parse() {
                status.metadata_mut().insert(RETRY_AFTER, value);
            }
            return Err(status);
        }
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

//! Flushing digests (`DigestService.Flush`, `POST /v1/subscribers/{id}/digests/flush`):
//! a `DigestFlushRequested` on the subscriber's stream, which the router
//! applies by closing the open digest(s) at once (docs/scheduling.md,
//! "Digests"). The call answers once the router applied it.

use clarion_domain::{Payload, Violations};
use clarion_proto::api;
use clarion_proto::events as pb;
use tonic::{Request, Response, Status};

use crate::error::ApiError;
use crate::preference_input::who;
use crate::preferences::{self, Interface, Who};
use crate::state::GatewayState;

/// What a flush names: the subscriber, the workflow and, optionally, the key.
pub struct Flush {
    pub subscriber_id: String,
    pub workflow_id: String,
    pub digest_key: String,
}

/// Checks a flush (fields named as `subscriber_id`, `workflow_id`,
/// `digest_key`), and hands it to the router: the subscriber must exist in
/// the caller's tenant (another tenant's id is not found).
pub async fn flush(s: &GatewayState, who: &Who, f: Flush) -> Result<(), ApiError> {
    let mut v = Violations::default();
    if f.subscriber_id.is_empty() {
        v.push("subscriber_id", "is required");
    }
    clarion_domain::workflow::validate_id(&mut v, "workflow_id", &f.workflow_id);
    if f.digest_key.len() > clarion_domain::limits::MAX_KEY_BYTES || f.digest_key.contains('\0') {
        v.push(
            "digest_key",
            "at most 255 bytes, without NUL (empty: every key)",
        );
    }
    v.into_result()?;
    who.reach("subscriber_id", &f.subscriber_id)?;
    preferences::profile(s, who, &f.subscriber_id).await?;
    let event = Payload::DigestFlushRequested(pb::DigestFlushRequested {
        subscriber_id: f.subscriber_id.clone(),
        workflow_id: f.workflow_id,
        digest_key: f.digest_key,
        origin: Some(who.origin()),
    });
    preferences::to_subscriber(s, who, &f.subscriber_id, event).await
}

pub struct DigestApi(pub GatewayState);

#[tonic::async_trait]
impl api::digest_service_server::DigestService for DigestApi {
    async fn flush(
        &self,
        req: Request<api::FlushDigestRequest>,
    ) -> Result<Response<api::FlushDigestResponse>, Status> {
        let who = who(&self.0, req.metadata(), Interface::Grpc).await?;
        let r = req.into_inner();
        let f = Flush {
            subscriber_id: r.subscriber_id,
            workflow_id: r.workflow_id,
            digest_key: r.digest_key,
        };
        flush(&self.0, &who, f).await?;
        Ok(Response::new(api::FlushDigestResponse {}))
    }
}

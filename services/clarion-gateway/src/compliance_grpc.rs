//! `ComplianceService` (legal holds, retention policy, exports) and
//! `SubscriberService.Erase` over gRPC: the operations of
//! [`crate::compliance`].

use clarion_proto::api;
use tonic::{Request, Response, Status};

use crate::auth;
use crate::compliance as ops;
use crate::state::GatewayState;

pub struct ComplianceApi(pub GatewayState);

#[tonic::async_trait]
impl api::compliance_service_server::ComplianceService for ComplianceApi {
    async fn place_hold(
        &self,
        req: Request<api::PlaceHoldRequest>,
    ) -> Result<Response<api::LegalHold>, Status> {
        let c = auth::tenant(&self.0, req.metadata()).await?;
        let h = ops::place_hold(&self.0, &c.tenant, &c.actor, req.into_inner()).await?;
        Ok(Response::new(h))
    }

    async fn list_holds(
        &self,
        req: Request<api::ListHoldsRequest>,
    ) -> Result<Response<api::ListHoldsResponse>, Status> {
        let c = auth::tenant(&self.0, req.metadata()).await?;
        let holds = ops::list_holds(&self.0, &c.tenant).await?;
        Ok(Response::new(api::ListHoldsResponse { holds }))
    }

    async fn extend_hold(
        &self,
        req: Request<api::ExtendHoldRequest>,
    ) -> Result<Response<api::LegalHold>, Status> {
        let c = auth::tenant(&self.0, req.metadata()).await?;
        let h = ops::extend_hold(&self.0, &c.tenant, &c.actor, req.into_inner()).await?;
        Ok(Response::new(h))
    }

    async fn release_hold(
        &self,
        req: Request<api::ReleaseHoldRequest>,
    ) -> Result<Response<api::LegalHold>, Status> {
        let c = auth::tenant(&self.0, req.metadata()).await?;
        let h = ops::release_hold(&self.0, &c.tenant, &c.actor, req.into_inner()).await?;
        Ok(Response::new(h))
    }

    async fn set_retention_policy(
        &self,
        req: Request<api::RetentionPolicy>,
    ) -> Result<Response<api::RetentionPolicy>, Status> {
        let c = auth::tenant(&self.0, req.metadata()).await?;
        let p = ops::set_policy(&self.0, &c.tenant, &c.actor, req.into_inner()).await?;
        Ok(Response::new(p))
    }

    async fn get_retention_policy(
        &self,
        req: Request<api::GetRetentionPolicyRequest>,
    ) -> Result<Response<api::RetentionPolicy>, Status> {
        let c = auth::tenant(&self.0, req.metadata()).await?;
        Ok(Response::new(ops::policy(&self.0, &c.tenant).await?))
    }

    async fn create_export(
        &self,
        req: Request<api::CreateExportRequest>,
    ) -> Result<Response<api::ExportManifest>, Status> {
        let c = auth::tenant(&self.0, req.metadata()).await?;
        let body = crate::rest_exports::body_of(req.into_inner());
        let answer = crate::rest_exports::export(&self.0, c.tenant, c.actor, body).await?;
        Ok(Response::new(crate::rest_exports::manifest_of(answer)))
    }
}

/// `SubscriberService.Erase`.
pub async fn erase(
    s: &GatewayState,
    req: Request<api::EraseSubscriberRequest>,
) -> Result<api::ErasureReceipt, crate::error::ApiError> {
    let c = auth::tenant(s, req.metadata()).await?;
    let r = req.into_inner();
    let receipt =
        ops::erase_subscriber(s, &c.tenant, &c.actor, &r.subscriber_id, &r.reason).await?;
    Ok(ops::receipt_to_api(receipt))
}

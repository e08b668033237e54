//! `ScheduleService` over gRPC: the operations of [`crate::schedules`].

use clarion_domain::schedule;
use clarion_proto::api;
use tonic::{Request, Response, Status};

use crate::auth;
use crate::error::ApiError;
use crate::pagination::PageParams;
use crate::preference_input::who;
use crate::preferences::Interface;
use crate::schedules as ops;
use crate::state::GatewayState;

pub struct ScheduleApi(pub GatewayState);

impl ScheduleApi {
    async fn change(
        &self,
        r: Request<api::ScheduleRef>,
        state: &str,
    ) -> Result<Option<api::Schedule>, ApiError> {
        let who = who(&self.0, r.metadata(), Interface::Grpc).await?;
        ops::change_state(&self.0, &who, &r.into_inner().schedule_id, state).await
    }
}

#[tonic::async_trait]
impl api::schedule_service_server::ScheduleService for ScheduleApi {
    async fn create(
        &self,
        r: Request<api::CreateScheduleRequest>,
    ) -> Result<Response<api::Schedule>, Status> {
        let who = who(&self.0, r.metadata(), Interface::Grpc).await?;
        Ok(Response::new(
            ops::create(&self.0, &who, r.into_inner()).await?,
        ))
    }

    async fn get(
        &self,
        r: Request<api::GetScheduleRequest>,
    ) -> Result<Response<api::Schedule>, Status> {
        let caller = auth::tenant(&self.0, r.metadata()).await?;
        let r = r.into_inner();
        let n = if r.upcoming == 0 {
            ops::DEFAULT_UPCOMING
        } else {
            r.upcoming
        };
        Ok(Response::new(
            ops::get(&self.0, &caller.tenant, &r.schedule_id, n).await?,
        ))
    }

    async fn list(
        &self,
        r: Request<api::ListSchedulesRequest>,
    ) -> Result<Response<api::ListSchedulesResponse>, Status> {
        let caller = auth::tenant(&self.0, r.metadata()).await?;
        let r = r.into_inner();
        let params = PageParams {
            limit: (r.page_size != 0).then_some(r.page_size),
            cursor: (!r.page_token.is_empty()).then_some(r.page_token),
        };
        let (schedules, next) = ops::list(&self.0, &caller.tenant, &params)
            .await
            .map_err(grpc_page_fields)?;
        Ok(Response::new(api::ListSchedulesResponse {
            schedules,
            next_page_token: next.unwrap_or_default(),
        }))
    }

    async fn pause(&self, r: Request<api::ScheduleRef>) -> Result<Response<api::Schedule>, Status> {
        let s = self.change(r, schedule::PAUSED).await?;
        Ok(Response::new(s.unwrap_or_default()))
    }

    async fn resume(
        &self,
        r: Request<api::ScheduleRef>,
    ) -> Result<Response<api::Schedule>, Status> {
        let s = self.change(r, schedule::ACTIVE).await?;
        Ok(Response::new(s.unwrap_or_default()))
    }

    async fn delete(
        &self,
        r: Request<api::ScheduleRef>,
    ) -> Result<Response<api::DeleteScheduleResponse>, Status> {
        self.change(r, schedule::DELETED).await?;
        Ok(Response::new(api::DeleteScheduleResponse {}))
    }
}

/// The list's paging fields under their gRPC names.
fn grpc_page_fields(e: ApiError) -> ApiError {
    match e {
        ApiError::Invalid(mut v) => {
            for f in &mut v.0 {
                match f.field.as_str() {
                    "limit" => f.field = "page_size".into(),
                    "cursor" => f.field = "page_token".into(),
                    _ => {}
                }
            }
            ApiError::Invalid(v)
        }
        other => other,
    }
}

//! `QuietHoursService` and `CalendarService` over gRPC: the operations of
//! [`crate::settings`].

use clarion_proto::api;
use tonic::{Request, Response, Status};

use crate::preference_input::who;
use crate::preferences::Interface;
use crate::settings as ops;
use crate::state::GatewayState;

pub struct QuietHoursApi(pub GatewayState);
pub struct CalendarApi(pub GatewayState);

type Answer<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl api::quiet_hours_service_server::QuietHoursService for QuietHoursApi {
    async fn set_tenant(
        &self,
        r: Request<api::QuietHoursSettings>,
    ) -> Answer<api::QuietHoursSettings> {
        let who = who(&self.0, r.metadata(), Interface::Grpc).await?;
        Ok(Response::new(
            ops::set_tenant_quiet_hours(&self.0, &who, r.into_inner()).await?,
        ))
    }

    async fn get_tenant(
        &self,
        r: Request<api::GetTenantQuietHoursRequest>,
    ) -> Answer<api::QuietHoursSettings> {
        let who = who(&self.0, r.metadata(), Interface::Grpc).await?;
        Ok(Response::new(ops::tenant_quiet_hours(&self.0, &who).await?))
    }

    async fn set_subscriber(
        &self,
        r: Request<api::QuietHoursSettings>,
    ) -> Answer<api::QuietHoursSettings> {
        let who = who(&self.0, r.metadata(), Interface::Grpc).await?;
        let input = r.into_inner();
        let id = input.subscriber_id.clone();
        Ok(Response::new(
            ops::set_subscriber_quiet_hours(&self.0, &who, &id, input).await?,
        ))
    }

    async fn get_subscriber(
        &self,
        r: Request<api::GetSubscriberQuietHoursRequest>,
    ) -> Answer<api::QuietHoursSettings> {
        let who = who(&self.0, r.metadata(), Interface::Grpc).await?;
        let id = r.into_inner().subscriber_id;
        Ok(Response::new(
            ops::subscriber_quiet_hours(&self.0, &who, &id).await?,
        ))
    }
}

#[tonic::async_trait]
impl api::calendar_service_server::CalendarService for CalendarApi {
    async fn set(&self, r: Request<api::TenantCalendar>) -> Answer<api::TenantCalendar> {
        let who = who(&self.0, r.metadata(), Interface::Grpc).await?;
        Ok(Response::new(
            ops::set_calendar(&self.0, &who, r.into_inner()).await?,
        ))
    }

    async fn get(&self, r: Request<api::GetCalendarRequest>) -> Answer<api::TenantCalendar> {
        let who = who(&self.0, r.metadata(), Interface::Grpc).await?;
        Ok(Response::new(ops::calendar(&self.0, &who).await?))
    }
}

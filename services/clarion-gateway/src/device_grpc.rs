//! `DeviceService` over gRPC: apps ([`crate::apps`]) and the device registry
//! ([`crate::devices`]). Apps need an API key; the device methods also take
//! a subscriber token, which reaches only its own subscriber's devices.

use clarion_proto::api;
use tonic::{Request, Response, Status};

use crate::error::ApiError;
use crate::preference_input::who;
use crate::preferences::Interface;
use crate::state::GatewayState;
use crate::{apps, auth, devices};

pub struct DeviceApi(pub GatewayState);

impl DeviceApi {
    async fn configure_app(&self, req: Request<api::App>) -> Result<api::App, ApiError> {
        let who = who(&self.0, req.metadata(), Interface::Grpc).await?;
        let app = apps::configure(&self.0, &who, req.into_inner()).await?;
        Ok(apps::to_api(&app))
    }

    async fn get_app(&self, req: Request<api::GetAppRequest>) -> Result<api::App, ApiError> {
        let caller = auth::tenant(&self.0, req.metadata()).await?;
        let app = apps::get(&self.0, &caller.tenant, &req.into_inner().app_id).await?;
        Ok(apps::to_api(&app))
    }

    async fn list_apps(
        &self,
        req: Request<api::ListAppsRequest>,
    ) -> Result<api::ListAppsResponse, ApiError> {
        let caller = auth::tenant(&self.0, req.metadata()).await?;
        let apps = apps::apps_by_id(&self.0, &caller.tenant).await?;
        Ok(api::ListAppsResponse {
            apps: apps.values().map(apps::to_api).collect(),
        })
    }

    async fn register(
        &self,
        req: Request<api::RegisterDeviceRequest>,
    ) -> Result<api::Device, ApiError> {
        let who = who(&self.0, req.metadata(), Interface::Grpc).await?;
        devices::register(&self.0, &who, &req.into_inner()).await
    }

    async fn list(
        &self,
        req: Request<api::ListDevicesRequest>,
    ) -> Result<api::ListDevicesResponse, ApiError> {
        let who = who(&self.0, req.metadata(), Interface::Grpc).await?;
        let r = req.into_inner();
        let devices = devices::list(&self.0, &who, &r.subscriber_id, r.include_inactive).await?;
        Ok(api::ListDevicesResponse { devices })
    }

    async fn rotate(
        &self,
        req: Request<api::RotateDeviceRequest>,
    ) -> Result<api::Device, ApiError> {
        let who = who(&self.0, req.metadata(), Interface::Grpc).await?;
        let r = req.into_inner();
        devices::rotate(&self.0, &who, &r.subscriber_id, &r.device_id, &r.new_token).await
    }

    async fn revoke(
        &self,
        req: Request<api::RevokeDeviceRequest>,
    ) -> Result<api::Device, ApiError> {
        let who = who(&self.0, req.metadata(), Interface::Grpc).await?;
        let r = req.into_inner();
        devices::revoke(&self.0, &who, &r.subscriber_id, &r.device_id).await
    }
}

#[tonic::async_trait]
impl api::device_service_server::DeviceService for DeviceApi {
    async fn configure_app(&self, r: Request<api::App>) -> Result<Response<api::App>, Status> {
        Ok(Response::new(DeviceApi::configure_app(self, r).await?))
    }

    async fn get_app(&self, r: Request<api::GetAppRequest>) -> Result<Response<api::App>, Status> {
        Ok(Response::new(DeviceApi::get_app(self, r).await?))
    }

    async fn list_apps(
        &self,
        r: Request<api::ListAppsRequest>,
    ) -> Result<Response<api::ListAppsResponse>, Status> {
        Ok(Response::new(DeviceApi::list_apps(self, r).await?))
    }

    async fn register_device(
        &self,
        r: Request<api::RegisterDeviceRequest>,
    ) -> Result<Response<api::Device>, Status> {
        Ok(Response::new(DeviceApi::register(self, r).await?))
    }

    async fn list_devices(
        &self,
        r: Request<api::ListDevicesRequest>,
    ) -> Result<Response<api::ListDevicesResponse>, Status> {
        Ok(Response::new(DeviceApi::list(self, r).await?))
    }

    async fn rotate_device(
        &self,
        r: Request<api::RotateDeviceRequest>,
    ) -> Result<Response<api::Device>, Status> {
        Ok(Response::new(DeviceApi::rotate(self, r).await?))
    }

    async fn revoke_device(
        &self,
        r: Request<api::RevokeDeviceRequest>,
    ) -> Result<Response<api::Device>, Status> {
        Ok(Response::new(DeviceApi::revoke(self, r).await?))
    }
}

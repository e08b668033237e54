//! `NotificationService`: Trigger and GetNotification.

use clarion_domain::trigger::{Recipient, TriggerCommand};
use clarion_domain::{Event, Payload, Violations};
use clarion_proto::api;
use clarion_proto::events as pb;
use clarion_runtime::projector::{history, status_of};
use clarion_runtime::Topic;
use clarion_store::{RowKey, Table};
use tonic::{Request, Response, Status};

use crate::auth;
use crate::config_read::latest_workflow;
use crate::error::ApiError;
use crate::state::GatewayState;

pub struct NotificationApi(pub GatewayState);

fn command(req: api::TriggerRequest) -> TriggerCommand {
    TriggerCommand {
        workflow_id: req.workflow_id,
        recipients: req
            .recipients
            .into_iter()
            .map(|r| {
                let contact = pb::RecipientOverride {
                    email: r.email,
                    phone: r.phone,
                    locale: r.locale,
                    timezone: r.timezone,
                    webhook_url: r.webhook_url,
                };
                Recipient {
                    subscriber_id: r.subscriber_id,
                    contact: (contact != pb::RecipientOverride::default()).then_some(contact),
                }
            })
            .collect(),
        payload_json: req.payload_json,
        idempotency_key: req.idempotency_key,
    }
}

impl NotificationApi {
    async fn trigger(
        &self,
        req: Request<api::TriggerRequest>,
    ) -> Result<api::TriggerResponse, ApiError> {
        let s = &self.0;
        let caller = auth::tenant(s, req.metadata()).await?;
        let cmd = command(req.into_inner());
        cmd.validate(&s.limits)?;
        let workflow = latest_workflow(&*s.store, &caller.tenant, &cmd.workflow_id)
            .await?
            .ok_or_else(|| {
                Violations::single(
                    "workflow_id",
                    format!(
                        "no workflow {:?} exists for tenant {:?}",
                        cmd.workflow_id,
                        caller.tenant.as_str()
                    ),
                )
            })?;
        let events = cmd.accept(
            &caller.tenant,
            workflow.version,
            rand::random(),
            s.clock.now_ms(),
            &caller.actor,
        );
        s.append(Topic::Triggers, &events).await?;
        metrics::counter!("clarion_triggers_accepted_total").increment(events.len() as u64);
        Ok(api::TriggerResponse {
            notification_ids: events
                .iter()
                .filter_map(|e| e.payload.notification_id().map(str::to_string))
                .collect(),
        })
    }

    async fn get(
        &self,
        req: Request<api::GetNotificationRequest>,
    ) -> Result<api::Notification, ApiError> {
        let s = &self.0;
        let caller = auth::tenant(s, req.metadata()).await?;
        let id = req.into_inner().notification_id;
        if id.is_empty() {
            return Err(Violations::single("notification_id", "is required").into());
        }
        let t = caller.tenant.as_str();
        let head = s
            .store
            .get(&RowKey::new(Table::Notifications, t, &id, Vec::new()))
            .await?;
        let events = history(&*s.store, t, &id)
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        if head.is_none() && events.is_empty() {
            return Err(ApiError::NotFound(format!(
                "no notification {id:?} for tenant {t:?}"
            )));
        }
        let triggered = head
            .and_then(|b| Event::decode(&b).ok())
            .and_then(|e| match e.payload {
                Payload::Triggered(p) => Some(p),
                _ => None,
            })
            .unwrap_or_default();
        Ok(api::Notification {
            notification_id: id,
            workflow_id: triggered.workflow_id,
            subscriber_id: triggered.subscriber_id,
            status: status_of(&events).to_string(),
            events: events
                .iter()
                .map(|e| api::NotificationEvent {
                    event_id: e.id.to_hex(),
                    event_type: e.event_type().to_string(),
                    occurred_at_ms: e.occurred_at_ms,
                    detail_json: e.payload.detail_json().to_string(),
                })
                .collect(),
        })
    }
}

#[tonic::async_trait]
impl api::notification_service_server::NotificationService for NotificationApi {
    async fn trigger(
        &self,
        request: Request<api::TriggerRequest>,
    ) -> Result<Response<api::TriggerResponse>, Status> {
        Ok(Response::new(
            NotificationApi::trigger(self, request).await?,
        ))
    }

    async fn get_notification(
        &self,
        request: Request<api::GetNotificationRequest>,
    ) -> Result<Response<api::Notification>, Status> {
        Ok(Response::new(self.get(request).await?))
    }
}

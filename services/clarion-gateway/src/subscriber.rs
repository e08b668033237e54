//! `SubscriberService`: Upsert and Get.
//!
//! Upserts are events on the subscriber's own partition of the triggers topic,
//! so the router applies them in order with that subscriber's triggers.
//! Upsert replaces the whole record (fields left empty are cleared).

use clarion_domain::ids::recipient_key;
use clarion_domain::limits;
use clarion_domain::subscriber::{validate_contact, validate_subscriber_id, Contact};
use clarion_domain::{Event, Id, Payload, Violations};
use clarion_proto::api;
use clarion_proto::events as pb;
use clarion_runtime::router::ROUTER;
use clarion_runtime::Topic;
use clarion_store::{RowKey, Table};
use prost::Message;
use tonic::{Request, Response, Status};

use crate::auth::{self, Caller};
use crate::error::ApiError;
use crate::state::GatewayState;

pub struct SubscriberApi(pub GatewayState);

fn to_api(s: pb::SubscriberUpserted) -> api::Subscriber {
    api::Subscriber {
        subscriber_id: s.subscriber_id,
        email: s.email,
        phone: s.phone,
        locale: s.locale,
        timezone: s.timezone,
        attributes_json: s.attributes_json,
        webhook_url: s.webhook_url,
        country: s.country,
    }
}

impl SubscriberApi {
    pub(crate) async fn upsert(
        &self,
        req: Request<api::Subscriber>,
    ) -> Result<api::Subscriber, ApiError> {
        let s = &self.0;
        let caller = auth::tenant(s, req.metadata()).await?;
        let r = req.into_inner();
        let mut v = Violations::default();
        validate_subscriber_id(&mut v, "subscriber_id", &r.subscriber_id);
        let contact = Contact {
            email: &r.email,
            phone: &r.phone,
            locale: &r.locale,
            timezone: &r.timezone,
            webhook_url: &r.webhook_url,
        };
        validate_contact(&mut v, "", contact);
        if !r.country.is_empty()
            && (r.country.len() != 2 || !r.country.bytes().all(|b| b.is_ascii_uppercase()))
        {
            v.push(
                "country",
                "must be an ISO 3166-1 alpha-2 code in capitals, e.g. FR",
            );
        }
        let max_attributes = s.limits.max_payload_bytes.min(limits::MAX_ATTRIBUTES_BYTES);
        let attributes_json = if r.attributes_json.len() > max_attributes {
            limits::check_len(
                &mut v,
                "attributes_json",
                &r.attributes_json,
                max_attributes,
            );
            String::new()
        } else if r.attributes_json.trim().is_empty() {
            "{}".to_string()
        } else {
            match serde_json::from_str::<serde_json::Value>(&r.attributes_json) {
                Ok(serde_json::Value::Object(_)) => r.attributes_json.clone(),
                Ok(_) => {
                    v.push("attributes_json", "must be a JSON object");
                    String::new()
                }
                Err(e) => {
                    v.push("attributes_json", format!("is not valid JSON: {e}"));
                    String::new()
                }
            }
        };
        v.into_result()?;
        let payload = pb::SubscriberUpserted {
            subscriber_id: r.subscriber_id.clone(),
            email: r.email,
            phone: r.phone,
            locale: r.locale,
            timezone: r.timezone,
            attributes_json,
            webhook_url: r.webhook_url,
            country: r.country,
        };
        let seed: [u8; 16] = rand::random();
        let event = Event {
            id: Id(seed),
            tenant: caller.tenant.clone(),
            partition_key: recipient_key(&caller.tenant, &r.subscriber_id),
            occurred_at_ms: s.clock.now_ms(),
            causation_id: None,
            correlation_id: None,
            actor: caller.actor,
            payload: Payload::SubscriberUpserted(payload.clone()),
        };
        let at = s.append(Topic::Triggers, &[event]).await?;
        s.wait_applied(ROUTER, Topic::Triggers, at[0]).await;
        Ok(to_api(payload))
    }

    pub(crate) async fn get(
        &self,
        req: Request<api::GetSubscriberRequest>,
    ) -> Result<api::Subscriber, ApiError> {
        let caller = auth::tenant(&self.0, req.metadata()).await?;
        get(&self.0, &caller, &req.into_inner().subscriber_id).await
    }
}

/// A subscriber of the caller's tenant; not found when there is none (for
/// this tenant: another tenant's id is answered the same).
pub async fn get(s: &GatewayState, caller: &Caller, id: &str) -> Result<api::Subscriber, ApiError> {
    let mut v = Violations::default();
    validate_subscriber_id(&mut v, "subscriber_id", id);
    v.into_result()?;
    let t = caller.tenant.as_str();
    let row = s
        .store
        .get(&RowKey::new(Table::Subscribers, t, id, Vec::new()))
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no subscriber {id:?} for tenant {t:?}")))?;
    let mut sub = pb::SubscriberUpserted::decode(&row[..])
        .map_err(|e| ApiError::Internal(format!("stored subscriber: {e}")))?;
    s.open_profile(&caller.tenant, &mut sub).await?;
    Ok(to_api(sub))
}

#[tonic::async_trait]
impl api::subscriber_service_server::SubscriberService for SubscriberApi {
    async fn upsert(
        &self,
        request: Request<api::Subscriber>,
    ) -> Result<Response<api::Subscriber>, Status> {
        Ok(Response::new(SubscriberApi::upsert(self, request).await?))
    }

    async fn get(
        &self,
        request: Request<api::GetSubscriberRequest>,
    ) -> Result<Response<api::Subscriber>, Status> {
        Ok(Response::new(SubscriberApi::get(self, request).await?))
    }

    async fn erase(
        &self,
        request: Request<api::EraseSubscriberRequest>,
    ) -> Result<Response<api::ErasureReceipt>, Status> {
        Ok(Response::new(
            crate::compliance_grpc::erase(&self.0, request).await?,
        ))
    }
}

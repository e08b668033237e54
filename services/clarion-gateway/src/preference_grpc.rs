//! `PreferenceService` over gRPC: proto messages to and from the operations
//! of [`crate::preferences`] (which every door shares), and subscriber
//! tokens ([`crate::subscriber_token`]).

use clarion_domain::preferences::Preferences;
use clarion_proto::api;
use tonic::{Request, Response, Status};

use crate::auth;
use crate::error::ApiError;
use crate::preference_input::{requested, value_name, who};
use crate::preferences::{self as ops, Explained, HistoryEntry, Interface};
use crate::state::GatewayState;
use crate::subscriber_token;

pub struct PreferenceApi(pub GatewayState);

/// A subscriber's settings as the API shows them.
pub fn to_api(subscriber_id: &str, p: &Preferences) -> api::SubscriberPreferences {
    let on_off = |b: &bool| value_name(Some(*b)).to_string();
    api::SubscriberPreferences {
        subscriber_id: subscriber_id.to_string(),
        channels: p
            .channels
            .iter()
            .map(|(c, b)| (c.clone(), on_off(b)))
            .collect(),
        topics: p
            .topics
            .iter()
            .map(|(id, t)| api::TopicPreference {
                topic_id: id.clone(),
                enabled: value_name(t.enabled).into(),
                channels: t
                    .channels
                    .iter()
                    .map(|(c, b)| (c.clone(), on_off(b)))
                    .collect(),
            })
            .collect(),
        marketing: value_name(p.marketing).into(),
        contacts: p
            .contacts
            .iter()
            .map(|(ch, c)| api::ContactStatus {
                channel: ch.clone(),
                value: c.value.clone(),
                verified: c.verified,
            })
            .collect(),
    }
}

fn explained(e: Explained) -> api::EvaluateResponse {
    api::EvaluateResponse {
        allowed: e.verdict.allowed,
        rule: e.verdict.rule.as_str().into(),
        reason: e.verdict.reason,
        topic_id: e.topic_id.unwrap_or_default(),
        workflow_version: e.workflow_version,
    }
}

fn entry(e: HistoryEntry) -> api::PreferenceHistoryEntry {
    api::PreferenceHistoryEntry {
        event_id: e.event_id,
        at_ms: e.at_ms,
        kind: e.kind.into(),
        interface: e.interface,
        actor: e.actor,
        changes: e
            .changes
            .into_iter()
            .map(|c| api::PreferenceChangeView {
                path: c.path,
                old: c.old,
                new: c.new,
            })
            .collect(),
    }
}

impl PreferenceApi {
    async fn get(
        &self,
        req: Request<api::GetPreferencesRequest>,
    ) -> Result<api::SubscriberPreferences, ApiError> {
        let who = who(&self.0, req.metadata(), Interface::Grpc).await?;
        let id = req.into_inner().subscriber_id;
        let p = ops::get(&self.0, &who, &id).await?;
        Ok(to_api(&id, &p))
    }

    async fn update(
        &self,
        req: Request<api::UpdatePreferencesRequest>,
    ) -> Result<api::SubscriberPreferences, ApiError> {
        let who = who(&self.0, req.metadata(), Interface::Grpc).await?;
        let r = req.into_inner();
        let changes = requested(
            "changes",
            r.changes
                .iter()
                .map(|c| (c.path.as_str(), c.value.as_str())),
        )?;
        let p = ops::update(&self.0, &who, &r.subscriber_id, &changes).await?;
        Ok(to_api(&r.subscriber_id, &p))
    }

    async fn evaluate(
        &self,
        req: Request<api::EvaluateRequest>,
    ) -> Result<api::EvaluateResponse, ApiError> {
        let who = who(&self.0, req.metadata(), Interface::Grpc).await?;
        let r = req.into_inner();
        let e = ops::evaluate(&self.0, &who, &r.subscriber_id, &r.workflow_id, &r.channel).await?;
        Ok(explained(e))
    }

    async fn history(
        &self,
        req: Request<api::PreferenceHistoryRequest>,
    ) -> Result<api::PreferenceHistoryResponse, ApiError> {
        let who = who(&self.0, req.metadata(), Interface::Grpc).await?;
        let r = req.into_inner();
        let (entries, next) =
            ops::history(&self.0, &who, &r.subscriber_id, r.limit, &r.cursor).await?;
        Ok(api::PreferenceHistoryResponse {
            entries: entries.into_iter().map(entry).collect(),
            next_cursor: next.unwrap_or_default(),
        })
    }

    async fn change_contact(
        &self,
        req: Request<api::ChangeContactRequest>,
    ) -> Result<api::ChangeContactResponse, ApiError> {
        let who = who(&self.0, req.metadata(), Interface::Grpc).await?;
        let r = req.into_inner();
        let expires =
            ops::change_contact(&self.0, &who, &r.subscriber_id, &r.channel, &r.value).await?;
        Ok(api::ChangeContactResponse {
            code_expires_at_ms: expires,
        })
    }

    async fn verify_contact(
        &self,
        req: Request<api::VerifyContactRequest>,
    ) -> Result<api::VerifyContactResponse, ApiError> {
        let who = who(&self.0, req.metadata(), Interface::Grpc).await?;
        let r = req.into_inner();
        let value =
            ops::verify_contact(&self.0, &who, &r.subscriber_id, &r.channel, &r.code).await?;
        Ok(api::VerifyContactResponse {
            value,
            verified: true,
        })
    }

    async fn create_token(
        &self,
        req: Request<api::CreateSubscriberTokenRequest>,
    ) -> Result<api::CreateSubscriberTokenResponse, ApiError> {
        // An API key only: a token never mints tokens.
        let caller = auth::tenant(&self.0, req.metadata()).await?;
        let r = req.into_inner();
        let m = subscriber_token::mint(&self.0, &caller.tenant, &r.subscriber_id, r.ttl_seconds)
            .await?;
        Ok(api::CreateSubscriberTokenResponse {
            token: m.token,
            expires_at_ms: m.expires_at_ms,
        })
    }

    async fn rotate_token_key(
        &self,
        req: Request<api::RotateSubscriberTokenKeyRequest>,
    ) -> Result<api::RotateSubscriberTokenKeyResponse, ApiError> {
        let caller = auth::tenant(&self.0, req.metadata()).await?;
        let key_id = subscriber_token::rotate(&self.0, &caller.tenant).await?;
        tracing::info!(
            tenant = caller.tenant.as_str(),
            key_id,
            "subscriber token key rotated"
        );
        Ok(api::RotateSubscriberTokenKeyResponse { key_id })
    }
}

#[tonic::async_trait]
impl api::preference_service_server::PreferenceService for PreferenceApi {
    async fn get_preferences(
        &self,
        r: Request<api::GetPreferencesRequest>,
    ) -> Result<Response<api::SubscriberPreferences>, Status> {
        Ok(Response::new(self.get(r).await?))
    }

    async fn update_preferences(
        &self,
        r: Request<api::UpdatePreferencesRequest>,
    ) -> Result<Response<api::SubscriberPreferences>, Status> {
        Ok(Response::new(self.update(r).await?))
    }

    async fn evaluate(
        &self,
        r: Request<api::EvaluateRequest>,
    ) -> Result<Response<api::EvaluateResponse>, Status> {
        Ok(Response::new(PreferenceApi::evaluate(self, r).await?))
    }

    async fn history(
        &self,
        r: Request<api::PreferenceHistoryRequest>,
    ) -> Result<Response<api::PreferenceHistoryResponse>, Status> {
        Ok(Response::new(PreferenceApi::history(self, r).await?))
    }

    async fn change_contact(
        &self,
        r: Request<api::ChangeContactRequest>,
    ) -> Result<Response<api::ChangeContactResponse>, Status> {
        Ok(Response::new(PreferenceApi::change_contact(self, r).await?))
    }

    async fn verify_contact(
        &self,
        r: Request<api::VerifyContactRequest>,
    ) -> Result<Response<api::VerifyContactResponse>, Status> {
        Ok(Response::new(PreferenceApi::verify_contact(self, r).await?))
    }

    async fn create_subscriber_token(
        &self,
        r: Request<api::CreateSubscriberTokenRequest>,
    ) -> Result<Response<api::CreateSubscriberTokenResponse>, Status> {
        Ok(Response::new(self.create_token(r).await?))
    }

    async fn rotate_subscriber_token_key(
        &self,
        r: Request<api::RotateSubscriberTokenKeyRequest>,
    ) -> Result<Response<api::RotateSubscriberTokenKeyResponse>, Status> {
        Ok(Response::new(self.rotate_token_key(r).await?))
    }
}

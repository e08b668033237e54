//! `DeadLetterService`: list, show, retry and discard dead-lettered
//! notifications of the caller's tenant. Retry and discard are events on the
//! notification's recipient stream, so they are ordered with the run's other
//! inputs and recorded in its history with the caller as actor.

use std::ops::Bound;

use clarion_domain::{Actor, Event, Payload, TenantId, Violations};
use clarion_proto::api;
use clarion_proto::events as pb;
use clarion_store::{RowKey, Scan, Table};
use tonic::{Request, Response, Status};

use crate::auth;
use crate::error::ApiError;
use crate::notification::append_for_notification;
use crate::pagination::Page;
use crate::state::GatewayState;

pub struct DeadLetterApi(pub GatewayState);

fn to_api(e: &Event) -> Option<api::DeadLetter> {
    let Payload::Ended(end) = &e.payload else {
        return None;
    };
    Some(api::DeadLetter {
        notification_id: end.notification_id.clone(),
        workflow_id: end.workflow_id.clone(),
        workflow_version: end.workflow_version,
        subscriber_id: end.subscriber_id.clone(),
        step: end.step.clone(),
        reason: end.reason.clone(),
        dead_lettered_at_ms: e.occurred_at_ms,
        attempts: end
            .attempts
            .iter()
            .map(|a| api::DeadLetterAttempt {
                attempt_id: a.attempt_id.clone(),
                step: a.step.clone(),
                channel: a.channel.clone(),
                provider: a.provider.clone(),
                at_ms: a.at_ms,
                error: a.error.clone(),
                retryable: a.retryable,
            })
            .collect(),
    })
}

/// Whether a dead letter passes the list filters (`now` for `older_than_ms`).
fn matches(f: &api::ListDeadLettersRequest, now: i64, d: &api::DeadLetter) -> bool {
    (f.workflow_id.is_empty() || d.workflow_id == f.workflow_id)
        && (f.channel.is_empty() || d.attempts.iter().any(|a| a.channel == f.channel))
        && (f.reason_contains.is_empty() || d.reason.contains(&f.reason_contains))
        && (f.older_than_ms <= 0 || now - d.dead_lettered_at_ms >= f.older_than_ms)
}

/// The tenant's dead letters matching the filters, oldest first.
pub async fn list(
    s: &GatewayState,
    tenant: &TenantId,
    f: &api::ListDeadLettersRequest,
) -> Result<Vec<api::DeadLetter>, ApiError> {
    let rows = s
        .store
        .scan(&Scan::partition(
            Table::DeadLetters,
            tenant.as_str(),
            "dlq",
            100_000,
        ))
        .await?;
    let now = s.clock.now_ms();
    let limit = if f.limit == 0 { 100 } else { f.limit as usize };
    let mut out: Vec<api::DeadLetter> = rows
        .into_iter()
        .filter_map(|(_, v)| Event::decode(&v).ok())
        .filter_map(|e| to_api(&e))
        .filter(|d| matches(f, now, d))
        .collect();
    out.sort_by_key(|d| (d.dead_lettered_at_ms, d.notification_id.clone()));
    out.truncate(limit);
    Ok(out)
}

/// One page of the tenant's dead letters matching the filters (its
/// `limit` is ignored), in notification id order (the notifications'
/// creation time), after `page.after`; with the position of the last one
/// when more follow.
pub async fn page(
    s: &GatewayState,
    tenant: &TenantId,
    f: &api::ListDeadLettersRequest,
    page: &Page,
) -> Result<(Vec<api::DeadLetter>, Option<Vec<u8>>), ApiError> {
    let now = s.clock.now_ms();
    // Filters drop rows after the read: read a few pages' worth at a time.
    let chunk = (page.limit * 4).clamp(64, 1_000);
    let mut from = page.after.clone();
    let mut out: Vec<(Vec<u8>, api::DeadLetter)> = Vec::new();
    while out.len() <= page.limit {
        let lower = from.clone().map_or(Bound::Unbounded, Bound::Excluded);
        let rows = s
            .store
            .scan(
                &Scan::partition(Table::DeadLetters, tenant.as_str(), "dlq", chunk)
                    .range(lower, Bound::Unbounded),
            )
            .await?;
        let exhausted = rows.len() < chunk;
        for (ck, v) in rows {
            from = Some(ck.clone());
            let d = Event::decode(&v).ok().and_then(|e| to_api(&e));
            if let Some(d) = d.filter(|d| matches(f, now, d)) {
                out.push((ck, d));
                if out.len() > page.limit {
                    break;
                }
            }
        }
        if exhausted {
            break;
        }
    }
    let more = out.len() > page.limit;
    out.truncate(page.limit);
    let next = more.then(|| out.last().map(|(ck, _)| ck.clone())).flatten();
    Ok((out.into_iter().map(|(_, d)| d).collect(), next))
}

pub async fn show(
    s: &GatewayState,
    tenant: &TenantId,
    notification_id: &str,
) -> Result<api::DeadLetter, ApiError> {
    if notification_id.is_empty() {
        return Err(Violations::single("notification_id", "is required").into());
    }
    s.store
        .get(&RowKey::new(
            Table::DeadLetters,
            tenant.as_str(),
            "dlq",
            notification_id.as_bytes().to_vec(),
        ))
        .await?
        .and_then(|v| Event::decode(&v).ok())
        .and_then(|e| to_api(&e))
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "notification {notification_id:?} is not in the dead-letter queue of tenant {:?}",
                tenant.as_str()
            ))
        })
}

/// Retries (`retry = true`) or discards a dead letter.
pub async fn act(
    s: &GatewayState,
    tenant: &TenantId,
    actor: Actor,
    action: &api::DeadLetterAction,
    retry: bool,
) -> Result<(), ApiError> {
    show(s, tenant, &action.notification_id).await?;
    let nid = action.notification_id.clone();
    let payload = if retry {
        Payload::DlqRetried(pb::DeadLetterRetried {
            notification_id: nid.clone(),
            note: action.note.clone(),
        })
    } else {
        Payload::DlqDiscarded(pb::DeadLetterDiscarded {
            notification_id: nid.clone(),
            note: action.note.clone(),
        })
    };
    append_for_notification(s, tenant, &nid, actor, payload).await?;
    metrics::counter!("clarion_dlq_actions_total", "action" => if retry { "retry" } else { "discard" })
        .increment(1);
    Ok(())
}

#[tonic::async_trait]
impl api::dead_letter_service_server::DeadLetterService for DeadLetterApi {
    async fn list(
        &self,
        request: Request<api::ListDeadLettersRequest>,
    ) -> Result<Response<api::ListDeadLettersResponse>, Status> {
        let caller = auth::tenant(&self.0, request.metadata()).await?;
        let dead_letters = list(&self.0, &caller.tenant, request.get_ref()).await?;
        Ok(Response::new(api::ListDeadLettersResponse { dead_letters }))
    }

    async fn show(
        &self,
        request: Request<api::DeadLetterRef>,
    ) -> Result<Response<api::DeadLetter>, Status> {
        let caller = auth::tenant(&self.0, request.metadata()).await?;
        Ok(Response::new(
            show(&self.0, &caller.tenant, &request.get_ref().notification_id).await?,
        ))
    }

    async fn retry(
        &self,
        request: Request<api::DeadLetterAction>,
    ) -> Result<Response<api::DeadLetterActionResponse>, Status> {
        let caller = auth::tenant(&self.0, request.metadata()).await?;
        act(
            &self.0,
            &caller.tenant,
            caller.actor,
            request.get_ref(),
            true,
        )
        .await?;
        Ok(Response::new(api::DeadLetterActionResponse {}))
    }

    async fn discard(
        &self,
        request: Request<api::DeadLetterAction>,
    ) -> Result<Response<api::DeadLetterActionResponse>, Status> {
        let caller = auth::tenant(&self.0, request.metadata()).await?;
        act(
            &self.0,
            &caller.tenant,
            caller.actor,
            request.get_ref(),
            false,
        )
        .await?;
        Ok(Response::new(api::DeadLetterActionResponse {}))
    }
}

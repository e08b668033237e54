//! `QuarantineService` (operator only): the partitions stopped at a record
//! they cannot process, the records themselves, and parking one so its
//! partition goes on past it (`clarion_runtime::quarantine`).

use clarion_domain::tenant::sha256_hex;
use clarion_domain::{Actor, Event, Violations};
use clarion_proto::api;
use clarion_proto::events as pb;
use clarion_runtime::quarantine::{self, partition_key, Stop};
use clarion_runtime::Topic;
use tonic::{Request, Response, Status};

use crate::auth;
use crate::error::ApiError;
use crate::state::GatewayState;

pub struct QuarantineApi(pub GatewayState);

/// Longest operator note kept.
const MAX_NOTE: usize = 2_000;

fn runtime_error(e: clarion_runtime::ProcessError) -> ApiError {
    ApiError::Unavailable(e.to_string())
}

/// The topic named `name` (a full name, with the deployment's prefix) and
/// checks `partition` is one of it.
fn topic(s: &GatewayState, name: &str, partition: u32) -> Result<Topic, ApiError> {
    let t = Topic::ALL
        .into_iter()
        .find(|t| s.topics.name(*t) == name)
        .ok_or_else(|| {
            let known: Vec<String> = Topic::ALL.iter().map(|t| s.topics.name(*t)).collect();
            Violations::single(
                "topic",
                format!("unknown topic; one of {}", known.join(", ")),
            )
        })?;
    let n = s.topics.partitions_of(t);
    if partition >= n {
        return Err(Violations::single(
            "partition",
            format!("out of range: {name} has {n} partitions"),
        )
        .into());
    }
    Ok(t)
}

fn stopped_to_api(s: Stop) -> api::StoppedPartition {
    api::StoppedPartition {
        processor: s.processor,
        topic: s.topic,
        partition: s.partition,
        offset: s.offset,
        reason: s.reason,
        stopped_at_ms: s.stopped_at_ms,
    }
}

fn actor_text(a: &Actor) -> String {
    match a {
        Actor::ApiKey(id) => format!("api-key:{id}"),
        Actor::Operator(id) => format!("operator:{id}"),
        Actor::System(id) => format!("system:{id}"),
    }
}

fn quarantined_to_api(q: pb::RecordQuarantined) -> api::QuarantinedRecord {
    api::QuarantinedRecord {
        actor: q.actor,
        processor: q.processor,
        topic: q.topic,
        partition: q.partition,
        offset: q.offset,
        note: q.note,
        reason: q.reason,
        record_sha256: q.record_sha256,
        record_size: q.record_size,
        quarantined_at_ms: q.quarantined_at_ms,
    }
}

/// Stopped partitions and quarantined records.
pub async fn list(s: &GatewayState) -> Result<api::ListQuarantineResponse, ApiError> {
    let stopped = quarantine::stopped(&*s.store)
        .await
        .map_err(runtime_error)?;
    let quarantined = quarantine::quarantined(&*s.store)
        .await
        .map_err(runtime_error)?;
    Ok(api::ListQuarantineResponse {
        stopped: stopped.into_iter().map(stopped_to_api).collect(),
        quarantined: quarantined.into_iter().map(quarantined_to_api).collect(),
    })
}

/// The record at `r` as stored in the log.
async fn record(
    s: &GatewayState,
    name: &str,
    partition: u32,
    offset: u64,
) -> Result<clarion_log::LogRecord, ApiError> {
    s.log
        .read(name, partition, offset, 1)
        .await
        .map_err(|e| ApiError::Unavailable(format!("event log: {e}")))?
        .into_iter()
        .find(|r| r.offset == offset)
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "no record at offset {offset} of {name} partition {partition}"
            ))
        })
}

/// One record of the log, and its decoding or why it fails.
pub async fn show(s: &GatewayState, r: &api::LogRecordRef) -> Result<api::LogRecordView, ApiError> {
    topic(s, &r.topic, r.partition)?;
    let rec = record(s, &r.topic, r.partition, r.offset).await?;
    let truncated = rec.value.len() > quarantine::MAX_KEPT_RECORD;
    let mut view = api::LogRecordView {
        topic: r.topic.clone(),
        partition: r.partition,
        offset: r.offset,
        key: rec.key.clone(),
        size: rec.value.len() as u64,
        sha256: sha256_hex(&rec.value),
        value: rec.value[..rec.value.len().min(quarantine::MAX_KEPT_RECORD)].to_vec(),
        truncated,
        ..Default::default()
    };
    match Event::decode(&rec.value) {
        Ok(e) => {
            view.event_type = e.event_type().to_string();
            view.detail_json = e.payload.detail_json().to_string();
        }
        Err(e) => view.decode_error = e.to_string(),
    }
    Ok(view)
}

/// Parks the record `req` names: it must be the one its partition is
/// stopped at, so nothing is skipped that did not stop a partition.
pub async fn park(
    s: &GatewayState,
    actor: Actor,
    req: &api::ParkRecordRequest,
) -> Result<api::QuarantinedRecord, Status> {
    let mut v = Violations::default();
    if req.processor.is_empty() {
        v.push("processor", "is required");
    }
    if req.note.trim().is_empty() {
        v.push("note", "is required: say why the record may be skipped");
    } else if req.note.len() > MAX_NOTE {
        v.push("note", format!("is longer than {MAX_NOTE} bytes"));
    }
    if !v.0.is_empty() {
        return Err(ApiError::from(v).into());
    }
    topic(s, &req.topic, req.partition)?;
    let key = partition_key(&req.processor, &req.topic, req.partition);
    let stop = quarantine::stop_of(&*s.store, &key)
        .await
        .map_err(runtime_error)?
        .filter(|stop: &Stop| stop.offset == req.offset)
        .ok_or_else(|| {
            Status::failed_precondition(format!(
                "{} partition {} of {} is not stopped at offset {}: only the record a \
                 partition stopped at can be parked (see `clarion quarantine list`)",
                req.processor, req.partition, req.topic, req.offset
            ))
        })?;
    let rec = record(s, &req.topic, req.partition, req.offset).await?;
    let q = pb::RecordQuarantined {
        processor: req.processor.clone(),
        topic: req.topic.clone(),
        partition: req.partition,
        offset: req.offset,
        note: req.note.clone(),
        actor: actor_text(&actor),
        reason: stop.reason,
        record_sha256: sha256_hex(&rec.value),
        record_size: rec.value.len() as u64,
        record: quarantine::kept_bytes(&rec.value),
        quarantined_at_ms: s.clock.now_ms(),
    };
    quarantine::park(&*s.store, &q)
        .await
        .map_err(runtime_error)?;
    metrics::counter!("clarion_quarantine_parked_total", "processor" => req.processor.clone())
        .increment(1);
    tracing::warn!(processor = %q.processor, topic = %q.topic, partition = q.partition, offset = q.offset, note = %q.note, "record quarantined by an operator");
    Ok(quarantined_to_api(q))
}

#[tonic::async_trait]
impl api::quarantine_service_server::QuarantineService for QuarantineApi {
    async fn list(
        &self,
        request: Request<api::ListQuarantineRequest>,
    ) -> Result<Response<api::ListQuarantineResponse>, Status> {
        auth::admin(&self.0, request.metadata())?;
        Ok(Response::new(list(&self.0).await?))
    }

    async fn show(
        &self,
        request: Request<api::LogRecordRef>,
    ) -> Result<Response<api::LogRecordView>, Status> {
        auth::admin(&self.0, request.metadata())?;
        Ok(Response::new(show(&self.0, request.get_ref()).await?))
    }

    async fn park(
        &self,
        request: Request<api::ParkRecordRequest>,
    ) -> Result<Response<api::QuarantinedRecord>, Status> {
        let actor = auth::admin(&self.0, request.metadata())?;
        Ok(Response::new(
            park(&self.0, actor, request.get_ref()).await?,
        ))
    }
}

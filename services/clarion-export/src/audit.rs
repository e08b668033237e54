//! The export is an audit event: `clarion.export.created.v1` on the
//! tenant's config stream, its actor the requester.

use clarion_domain::ids::tenant_key;
use clarion_domain::{Actor, Event, Id, Payload};
use clarion_log::{EventLog, Record};
use clarion_proto::events as pb;
use clarion_runtime::{Topic, Topics};

use crate::manifest::Manifest;
use crate::request::ExportRequest;
use crate::ExportError;

/// The event recording `manifest` (written as `manifest_bytes`).
pub fn export_created(
    req: &ExportRequest,
    manifest: &Manifest,
    manifest_bytes: &[u8],
    at_ms: i64,
) -> Event {
    let payload = pb::ExportCreated {
        export_id: manifest.export_id.clone(),
        requester: manifest.requester.clone(),
        purpose: manifest.purpose.clone(),
        scope_json: manifest.scope.to_string(),
        from_ms: req.from_ms,
        until_ms: req.until_ms,
        format: manifest.format.clone(),
        files: manifest
            .files
            .iter()
            .map(|f| pb::ExportedFile {
                name: f.name.clone(),
                sha256: f.sha256.clone(),
                rows: f.rows,
            })
            .collect(),
        manifest_sha256: crate::manifest::sha256_hex(manifest_bytes),
        public_key: manifest.signing.public_key.clone(),
        encrypted_to: manifest.encrypted_to.clone().unwrap_or_default(),
    };
    Event {
        // One event per export, whoever appends it again.
        id: Id::derive(&[b"export-created", manifest.export_id.as_bytes()]),
        tenant: req.tenant.clone(),
        partition_key: tenant_key(&req.tenant),
        occurred_at_ms: at_ms,
        causation_id: None,
        correlation_id: None,
        actor: req.actor.clone(),
        payload: Payload::ExportCreated(payload),
    }
}

/// Appends the event to the config stream.
pub async fn append(log: &dyn EventLog, topics: &Topics, e: &Event) -> Result<(), ExportError> {
    let rec = Record::new(e.partition_key.clone(), e.encode());
    log.append(&topics.name(Topic::Config), vec![rec]).await?;
    Ok(())
}

/// A requester's display name: `operator:alice`, `api-key:k_123`.
pub fn requester_of(actor: &Actor) -> String {
    match actor {
        Actor::ApiKey(id) => format!("api-key:{id}"),
        Actor::Operator(id) => format!("operator:{id}"),
        Actor::System(id) => format!("system:{id}"),
    }
}

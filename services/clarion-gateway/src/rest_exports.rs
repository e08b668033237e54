//! REST door to secure exports (docs/export.md): `POST /v1/exports` writes
//! the tenant's notification history under the server's export directory
//! (`[compliance] export-dir`) and answers with the signed manifest. The
//! requester is the calling API key (admin scope).

use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use clarion_domain::{Actor, Violations};
use clarion_export::export::ExportContext;
use clarion_export::request::parse_time;
use clarion_export::{ExportError, ExportRequest, MaskRules, OpenPersonal};
use serde::{Deserialize, Serialize};
use tonic::metadata::MetadataMap;
use utoipa::{OpenApi, ToSchema};

use crate::auth;
use crate::error::ApiError;
use crate::extract::JsonBody;
use crate::problem::Problem;
use crate::state::GatewayState;

/// What the gateway needs to make exports.
pub struct ExportDoor {
    /// Exports go to `<dir>/<tenant>/<export id>`.
    pub dir: PathBuf,
    /// Opens sealed personal fields (the runtime's per-subscriber keys).
    pub opener: Arc<dyn OpenPersonal>,
}

#[derive(OpenApi)]
#[openapi(paths(create))]
pub struct Paths;

pub fn routes() -> Router<GatewayState> {
    Router::new().route("/v1/exports", post(create))
}

/// An export request.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExportBody {
    /// Notifications triggered at or after (RFC 3339, or a date `YYYY-MM-DD`).
    pub from: String,
    /// ... and before (at most 366 days after `from`).
    pub until: String,
    /// Why the data leaves (1-500 characters): in every file's watermark.
    pub purpose: String,
    /// Only this subscriber's notifications.
    #[serde(default)]
    pub subscriber_id: Option<String>,
    /// Only this workflow's notifications.
    #[serde(default)]
    pub workflow_id: Option<String>,
    /// `jsonl` (default) or `parquet`.
    #[serde(default)]
    pub format: Option<String>,
    /// Masking rules `FIELD=KIND` (docs/export.md), later ones win.
    #[serde(default)]
    #[schema(max_items = 16)]
    pub masks: Vec<String>,
    /// An age X25519 recipient (`age1...`): the files are encrypted to it.
    #[serde(default)]
    pub encrypt_to: Option<String>,
}

/// One file of the export.
#[derive(Serialize, ToSchema)]
pub struct ExportFile {
    pub name: String,
    pub sha256: String,
    pub bytes: u64,
    pub rows: u64,
}

/// The export written: its manifest, and where it is.
#[derive(Serialize, ToSchema)]
pub struct ExportAnswer {
    pub export_id: String,
    pub tenant: String,
    pub requester: String,
    pub purpose: String,
    /// Range, subscriber, workflow and masking rules.
    #[schema(value_type = Object)]
    pub scope: serde_json::Value,
    pub format: String,
    pub created_at: String,
    pub encrypted_to: Option<String>,
    pub files: Vec<ExportFile>,
    pub rows: u64,
    /// Base64 Ed25519 key that signed manifest.json (manifest.sig).
    pub public_key: String,
    /// The directory on the server holding the files and the manifest.
    pub directory: String,
}

fn invalid(field: &str, problem: impl Into<String>) -> ApiError {
    ApiError::Invalid(Violations::single(field, problem.into()))
}

fn api_error(e: ExportError) -> ApiError {
    match e {
        ExportError::Invalid { field, problem } => invalid(&field, problem),
        ExportError::Log(e) => ApiError::Unavailable(format!("event log: {e}")),
        e => ApiError::Internal(e.to_string()),
    }
}

fn request(
    b: ExportBody,
    tenant: clarion_domain::TenantId,
    actor: Actor,
) -> Result<ExportRequest, ApiError> {
    let requester = clarion_export::audit::requester_of(&actor);
    let format = b.format.as_deref().unwrap_or("jsonl");
    Ok(ExportRequest {
        tenant,
        from_ms: parse_time("from", &b.from).map_err(api_error)?,
        until_ms: parse_time("until", &b.until).map_err(api_error)?,
        subscriber: b.subscriber_id,
        workflow: b.workflow_id,
        format: format.parse().map_err(api_error)?,
        actor,
        requester,
        purpose: b.purpose,
        masks: MaskRules::parse(&b.masks).map_err(api_error)?,
        encrypt_to: b.encrypt_to,
        max_rows_per_file: 1_000_000,
    })
}

/// Export the tenant's notification history (masked, watermarked, signed).
#[utoipa::path(post, path = "/v1/exports", tag = "exports",
    operation_id = "createExport",
    request_body = ExportBody,
    responses((status = 201, description = "The export is written; its manifest", body = ExportAnswer)))]
async fn create(
    State(s): State<GatewayState>,
    headers: HeaderMap,
    JsonBody(b): JsonBody<ExportBody>,
) -> Result<(StatusCode, Json<ExportAnswer>), Problem> {
    let caller = auth::tenant(&s, &MetadataMap::from_headers(headers)).await?;
    let answer = export(&s, caller.tenant, caller.actor, b).await?;
    Ok((StatusCode::CREATED, Json(answer)))
}

/// Writes an export for the caller's tenant: the one path of the REST and
/// gRPC doors (same checks, files, manifest and audit event).
pub async fn export(
    s: &GatewayState,
    tenant: clarion_domain::TenantId,
    actor: Actor,
    b: ExportBody,
) -> Result<ExportAnswer, ApiError> {
    let door = s
        .export
        .clone()
        .ok_or_else(|| ApiError::Unavailable("exports are not enabled on this gateway".into()))?;
    let req = request(b, tenant.clone(), actor)?;
    req.validate().map_err(api_error)?;
    let ctx = ExportContext {
        log: s.log.clone(),
        topics: s.topics.clone(),
        keyring: s.keyring.clone(),
        opener: door.opener.clone(),
    };
    // A fresh directory per export, under the tenant's.
    let dir = door
        .dir
        .join(tenant.as_str())
        .join(uuid::Uuid::now_v7().simple().to_string());
    let done = clarion_export::run_export(&ctx, &req, &dir, s.clock.now_ms(), &mut ())
        .await
        .map_err(api_error)?;
    let m = done.manifest;
    Ok(ExportAnswer {
        export_id: m.export_id,
        tenant: m.tenant,
        requester: m.requester,
        purpose: m.purpose,
        scope: m.scope,
        format: m.format,
        created_at: m.created_at,
        encrypted_to: m.encrypted_to,
        files: m
            .files
            .into_iter()
            .map(|f| ExportFile {
                name: f.name,
                sha256: f.sha256,
                bytes: f.bytes,
                rows: f.rows,
            })
            .collect(),
        rows: m.rows,
        public_key: m.signing.public_key,
        directory: done.dir.display().to_string(),
    })
}

/// `ComplianceService.CreateExport`: the gRPC request as the REST body
/// (empty strings: not given).
pub fn body_of(r: clarion_proto::api::CreateExportRequest) -> ExportBody {
    let given = |s: String| (!s.is_empty()).then_some(s);
    ExportBody {
        from: r.from,
        until: r.until,
        purpose: r.purpose,
        subscriber_id: given(r.subscriber_id),
        workflow_id: given(r.workflow_id),
        format: given(r.format),
        masks: r.masks,
        encrypt_to: given(r.encrypt_to),
    }
}

/// The answer as the gRPC manifest.
pub fn manifest_of(a: ExportAnswer) -> clarion_proto::api::ExportManifest {
    clarion_proto::api::ExportManifest {
        export_id: a.export_id,
        tenant: a.tenant,
        requester: a.requester,
        purpose: a.purpose,
        scope_json: a.scope.to_string(),
        format: a.format,
        created_at: a.created_at,
        encrypted_to: a.encrypted_to.unwrap_or_default(),
        files: a
            .files
            .into_iter()
            .map(|f| clarion_proto::api::ExportFileEntry {
                name: f.name,
                sha256: f.sha256,
                bytes: f.bytes,
                rows: f.rows,
            })
            .collect(),
        rows: a.rows,
        public_key: a.public_key,
        directory: a.directory,
    }
}

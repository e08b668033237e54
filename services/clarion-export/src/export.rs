//! One export, start to end: read, open, mask, watermark, write, encrypt,
//! sign, record.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clarion_dispatch::secrets::Keyring;
use clarion_log::EventLog;
use clarion_runtime::Topics;

use crate::collect::{self, Collector};
use crate::manifest::{sha256_hex, FileEntry, Manifest, SigningInfo, MANIFEST, SIGNATURE, VERSION};
use crate::mask::Masker;
use crate::opener::OpenPersonal;
use crate::request::ExportRequest;
use crate::row::{rows_of, ExportRow};
use crate::signing::TenantKeys;
use crate::watermark::{rfc3339, Watermark};
use crate::{audit, encode, encrypt, ExportError};

/// What an export reads from and signs with.
#[derive(Clone)]
pub struct ExportContext {
    pub log: Arc<dyn EventLog>,
    pub topics: Topics,
    pub keyring: Arc<Keyring>,
    pub opener: Arc<dyn OpenPersonal>,
}

/// Hears how far an export got (the CLI's progress bar).
pub trait Progress: Send {
    /// Records to read in all.
    fn total(&mut self, records: u64);
    /// Records read since the last call.
    fn read(&mut self, records: u64);
}

impl Progress for () {
    fn total(&mut self, _: u64) {}
    fn read(&mut self, _: u64) {}
}

#[derive(Debug)]
pub struct ExportOutcome {
    pub manifest: Manifest,
    pub dir: PathBuf,
    /// Log records read.
    pub records: u64,
}

/// Runs `req` into `out` (a new or empty directory) at `now_ms`.
pub async fn run_export(
    ctx: &ExportContext,
    req: &ExportRequest,
    out: &Path,
    now_ms: i64,
    progress: &mut dyn Progress,
) -> Result<ExportOutcome, ExportError> {
    req.validate()?;
    prepare_dir(out)?;
    let keys = TenantKeys::derive(&ctx.keyring, &req.tenant)?;
    let wm = Watermark {
        export_id: uuid::Uuid::now_v7().simple().to_string(),
        tenant: req.tenant.as_str().to_string(),
        requester: req.requester.clone(),
        purpose: req.purpose.trim().to_string(),
        created_at: rfc3339(now_ms),
    };
    let (spans, total) = collect::plan(&*ctx.log, &ctx.topics, req.from_ms).await?;
    progress.total(total);
    let mut collector = Collector::new(req, &*ctx.opener);
    collector
        .read(&*ctx.log, &spans, &mut |n| progress.read(n))
        .await?;
    let masker = Masker::new(req.masks.clone(), keys.hash_key);
    let text = wm.text();
    let rows: Vec<ExportRow> = collector
        .finish()
        .iter()
        .flat_map(|n| rows_of(n, &masker, &text))
        .collect();
    let files = write_files(req, &wm, &rows, out).await?;
    let manifest = Manifest {
        version: VERSION,
        export_id: wm.export_id.clone(),
        tenant: wm.tenant.clone(),
        requester: wm.requester.clone(),
        purpose: wm.purpose.clone(),
        scope: req.scope_json(),
        format: req.format.as_str().to_string(),
        created_at: wm.created_at.clone(),
        encrypted_to: req.encrypt_to.as_ref().map(|r| r.trim().to_string()),
        rows: rows.len() as u64,
        files,
        signing: SigningInfo {
            algorithm: "ed25519".into(),
            public_key: keys.public_key_b64(),
            master_key_id: keys.key_id.clone(),
        },
    };
    let bytes =
        serde_json::to_vec_pretty(&manifest).map_err(|e| ExportError::Encode(e.to_string()))?;
    write(&out.join(MANIFEST), &bytes).await?;
    write(&out.join(SIGNATURE), keys.sign(&bytes).as_bytes()).await?;
    let event = audit::export_created(req, &manifest, &bytes, now_ms);
    audit::append(&*ctx.log, &ctx.topics, &event).await?;
    Ok(ExportOutcome {
        manifest,
        dir: out.to_path_buf(),
        records: total,
    })
}

/// Creates `out`, or accepts it empty: an export never mixes with other files.
fn prepare_dir(out: &Path) -> Result<(), ExportError> {
    if out.exists() {
        let mut entries = std::fs::read_dir(out).map_err(|e| ExportError::io(out, e))?;
        if entries.next().is_some() {
            return Err(ExportError::invalid(
                "out",
                format!(
                    "{} is not empty: exports go to a new directory",
                    out.display()
                ),
            ));
        }
        return Ok(());
    }
    std::fs::create_dir_all(out).map_err(|e| ExportError::io(out, e))
}

/// The data files: `notifications-0001.<ext>[.age]`, `max_rows_per_file`
/// rows each, at least one (an empty export still carries its watermark).
async fn write_files(
    req: &ExportRequest,
    wm: &Watermark,
    rows: &[ExportRow],
    out: &Path,
) -> Result<Vec<FileEntry>, ExportError> {
    let recipient = req
        .encrypt_to
        .as_deref()
        .map(encrypt::parse_recipient)
        .transpose()?;
    let mut chunks: Vec<&[ExportRow]> = rows.chunks(req.max_rows_per_file).collect();
    if chunks.is_empty() {
        chunks.push(&[]);
    }
    let mut files = Vec::with_capacity(chunks.len());
    for (i, chunk) in chunks.into_iter().enumerate() {
        let mut bytes = encode::encode(req.format, chunk, wm)?;
        let mut name = format!("notifications-{:04}.{}", i + 1, req.format.extension());
        if let Some(r) = &recipient {
            bytes = encrypt::encrypt(r, &bytes)?;
            name.push_str(".age");
        }
        write(&out.join(&name), &bytes).await?;
        files.push(FileEntry {
            name,
            sha256: sha256_hex(&bytes),
            bytes: bytes.len() as u64,
            rows: chunk.len() as u64,
        });
    }
    Ok(files)
}

async fn write(path: &Path, bytes: &[u8]) -> Result<(), ExportError> {
    tokio::fs::write(path, bytes)
        .await
        .map_err(|e| ExportError::io(path, e))
}

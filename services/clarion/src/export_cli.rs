//! `clarion export`: a tenant's notification history, masked, watermarked,
//! signed and optionally encrypted (docs/export.md); `clarion export verify`
//! and `clarion export public-key`. Reads the log directly (like `clarion
//! warehouse backfill`); appends the export's audit event to it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Subcommand};
use clarion_dispatch::secrets::Keyring;
use clarion_domain::{Actor, TenantId};
use clarion_export::export::{ExportContext, ExportOutcome, Progress};
use clarion_export::request::parse_time;
use clarion_export::signing::TenantKeys;
use clarion_export::{ExportRequest, MaskRules};
use indicatif::{ProgressBar, ProgressStyle};

use crate::{Config, Node};

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct ExportArgs {
    #[command(subcommand)]
    pub cmd: Option<ExportCmd>,
    #[command(flatten)]
    pub create: CreateArgs,
}

#[derive(Subcommand)]
pub enum ExportCmd {
    /// Check an export: the manifest's Ed25519 signature, then every file's
    /// SHA-256 and size. Exits non-zero naming the first bad file.
    Verify {
        /// The export directory (holding manifest.json and manifest.sig).
        dir: PathBuf,
        /// The tenant's export public key (base64, from `clarion export
        /// public-key`). Without it the signature is checked against the
        /// key the manifest names: that proves integrity, not who signed.
        #[arg(long, value_name = "BASE64")]
        public_key: Option<String>,
    },
    /// Print the tenant's export public key (base64 Ed25519), derived from
    /// the deployment's master keyring: give it to whoever verifies.
    PublicKey {
        #[arg(long)]
        tenant: String,
    },
}

/// `clarion export --tenant T --from .. --until .. --purpose .. --out DIR`.
#[derive(Args)]
pub struct CreateArgs {
    #[arg(long, required = true)]
    pub tenant: Option<String>,
    /// Notifications triggered at or after (RFC 3339, or a date: midnight UTC).
    #[arg(long, required = true, value_name = "TIME")]
    pub from: Option<String>,
    /// ... and before this time.
    #[arg(long, required = true, value_name = "TIME")]
    pub until: Option<String>,
    /// Only this subscriber's notifications.
    #[arg(long)]
    pub subscriber: Option<String>,
    /// Only this workflow's notifications.
    #[arg(long)]
    pub workflow: Option<String>,
    /// jsonl or parquet.
    #[arg(long, default_value = "jsonl")]
    pub format: String,
    /// Why the data leaves (required): in the watermark of every file and row.
    #[arg(long, required = true)]
    pub purpose: Option<String>,
    /// A new (or empty) directory for the files and the signed manifest.
    #[arg(long, required = true, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// A masking rule FIELD=KIND, repeatable, later rules win. Fields: to,
    /// email, phone, address, subject, body, subscriber. Kinds: keep,
    /// email, last4, redact, hash. Default: email=email, phone=last4, the
    /// rest kept.
    #[arg(long = "mask", value_name = "FIELD=KIND")]
    pub masks: Vec<String>,
    /// Encrypt every file to this age X25519 recipient (age1...).
    #[arg(long, value_name = "RECIPIENT")]
    pub encrypt_to: Option<String>,
    /// Who asks (default: $USER): the audit event's actor.
    #[arg(long, env = "USER", default_value = "operator")]
    pub requester: String,
    /// Rows per file.
    #[arg(long, default_value_t = 1_000_000)]
    pub max_rows_per_file: usize,
}

pub async fn export(cfg: Config, args: ExportArgs) -> anyhow::Result<()> {
    match args.cmd {
        Some(ExportCmd::Verify { dir, public_key }) => verify(&dir, public_key.as_deref()),
        Some(ExportCmd::PublicKey { tenant }) => {
            let tenant = TenantId::parse(&tenant).map_err(|e| anyhow::anyhow!("--tenant: {e}"))?;
            let keyring = Keyring::load(&cfg.secrets, &cfg.data_dir)?;
            println!(
                "{}",
                TenantKeys::derive(&keyring, &tenant)?.public_key_b64()
            );
            Ok(())
        }
        None => {
            let req = request(&args.create)?;
            let out = args.create.out.clone().expect("required by clap");
            let node = Node::open(cfg).await?;
            let done = run(&node, &req, &out, true).await?;
            let m = &done.manifest;
            println!(
                "export {}: {} rows in {} file(s) from {} log records into {}",
                m.export_id,
                m.rows,
                m.files.len(),
                done.records,
                done.dir.display()
            );
            println!("signed by the tenant's export key {}", m.signing.public_key);
            println!(
                "check it with: clarion export verify {} --public-key {}",
                done.dir.display(),
                m.signing.public_key
            );
            Ok(())
        }
    }
}

/// The request the flags describe (errors name the flag).
pub fn request(a: &CreateArgs) -> anyhow::Result<ExportRequest> {
    let field = |v: &Option<String>, name: &str| {
        v.clone()
            .ok_or_else(|| anyhow::anyhow!("--{name} is required"))
    };
    let tenant = field(&a.tenant, "tenant")?;
    let tenant = TenantId::parse(&tenant).map_err(|e| anyhow::anyhow!("--tenant: {e}"))?;
    let cli = |e: clarion_export::ExportError| anyhow::anyhow!("--{e}");
    Ok(ExportRequest {
        tenant,
        from_ms: parse_time("from", &field(&a.from, "from")?).map_err(cli)?,
        until_ms: parse_time("until", &field(&a.until, "until")?).map_err(cli)?,
        subscriber: a.subscriber.clone(),
        workflow: a.workflow.clone(),
        format: a.format.parse().map_err(cli)?,
        actor: Actor::Operator(a.requester.clone()),
        requester: format!("operator:{}", a.requester),
        purpose: field(&a.purpose, "purpose")?,
        masks: MaskRules::parse(&a.masks).map_err(cli)?,
        encrypt_to: a.encrypt_to.clone(),
        max_rows_per_file: a.max_rows_per_file,
    })
}

/// Runs an export against a node's log and keyring, with a progress bar
/// when `show_progress`.
pub async fn run(
    node: &Node,
    req: &ExportRequest,
    out: &Path,
    show_progress: bool,
) -> anyhow::Result<ExportOutcome> {
    let ctx = ExportContext {
        log: node.log.clone(),
        topics: node.topics.clone(),
        keyring: node.keyring.clone(),
        opener: opener(node),
    };
    let mut bar = Bar(if show_progress {
        ProgressBar::new(0)
    } else {
        ProgressBar::hidden()
    });
    bar.0.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} records ({per_sec}, eta {eta})",
        )
        .expect("a valid template"),
    );
    let now = node.clock.now_ms();
    let done = clarion_export::run_export(&ctx, req, out, now, &mut bar)
        .await
        .map_err(|e| match e {
            clarion_export::ExportError::Invalid { .. } => anyhow::anyhow!("--{e}"),
            e => anyhow::Error::new(e).context("export failed"),
        })?;
    bar.0.finish();
    Ok(done)
}

struct Bar(ProgressBar);

impl Progress for Bar {
    fn total(&mut self, records: u64) {
        self.0.set_length(records);
    }
    fn read(&mut self, records: u64) {
        self.0.inc(records);
    }
}

fn verify(dir: &Path, public_key: Option<&str>) -> anyhow::Result<()> {
    let v = clarion_export::verify_dir(dir, public_key)
        .with_context(|| format!("export {} does not verify", dir.display()))?;
    let m = &v.manifest;
    println!(
        "export {} of tenant {} ({} rows, {} files): signature and every file's SHA-256 check out",
        m.export_id,
        m.tenant,
        m.rows,
        m.files.len()
    );
    if !v.key_pinned {
        println!(
            "note: checked against the key the manifest names ({}); pass --public-key to check who signed",
            m.signing.public_key
        );
    }
    Ok(())
}

/// Exports open personal fields with the deployment's keys: what an
/// erasure destroyed reads `[erased]` (then masked like any value).
pub fn opener(node: &Node) -> Arc<dyn clarion_export::OpenPersonal> {
    node.personal.clone()
}

//! Admin commands that talk to a running Clarion over gRPC:
//! `clarion workflow apply|list|get`, `clarion limits apply|get`,
//! `clarion tenant webhook-secret rotate`, `clarion dlq list|show|retry|discard`,
//! `clarion keys create|list|revoke`, `clarion preferences
//! get|set|history|evaluate`, `clarion topics register|list|get`,
//! `clarion subscribers token`, `clarion tenant subscriber-token-key rotate`
//! (apps and devices: `crate::client_devices`),
//! and (with the admin token) `clarion quarantine list|show|park`.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use clarion_proto::api;
use tonic::transport::Channel;
use tonic_types::StatusExt;

#[derive(Args, Clone)]
pub struct ClientArgs {
    /// gRPC endpoint of a Clarion gateway.
    #[arg(
        long,
        global = true,
        env = "CLARION_ENDPOINT",
        default_value = "http://127.0.0.1:50051"
    )]
    pub endpoint: String,
    /// Tenant API key (ck_<tenant>_...).
    #[arg(long, global = true, env = "CLARION_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
}

impl ClientArgs {
    pub(crate) fn key(&self) -> anyhow::Result<&str> {
        self.api_key
            .as_deref()
            .filter(|k| !k.is_empty())
            .ok_or_else(|| anyhow::anyhow!("--api-key (or CLARION_API_KEY) is required"))
    }
}

#[derive(Subcommand)]
pub enum WorkflowCmd {
    /// Validate and publish a definition (YAML or JSON) as a new version.
    Apply {
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: PathBuf,
    },
    /// List the tenant's workflows (latest versions).
    List,
    /// Print a workflow definition (latest version unless --version).
    Get {
        workflow_id: String,
        #[arg(long, default_value_t = 0)]
        version: u32,
    },
}

#[derive(Subcommand)]
pub enum LimitsCmd {
    /// Validate and set the tenant's limits (YAML or JSON) as a new version.
    Apply {
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: PathBuf,
    },
    /// Print the tenant's current limits.
    Get,
}

#[derive(Subcommand)]
pub enum TenantCmd {
    /// The tenant's webhook signing secret.
    WebhookSecret {
        #[command(subcommand)]
        cmd: WebhookSecretCmd,
    },
    /// The key that signs the tenant's subscriber tokens.
    SubscriberTokenKey {
        #[command(subcommand)]
        cmd: SubscriberTokenKeyCmd,
    },
}

#[derive(Subcommand)]
pub enum SubscriberTokenKeyCmd {
    /// Replace the key: every subscriber token minted before stops working
    /// at once (how tokens are revoked).
    Rotate,
}

#[derive(Subcommand)]
pub enum WebhookSecretCmd {
    /// Make a new signing secret and print it (the only time it is shown).
    /// The replaced secret keeps signing during the overlap.
    Rotate {
        /// How long the replaced secret still signs, in seconds (default
        /// 86400; 0: stop at once; at most 2592000).
        #[arg(long, value_name = "SECONDS")]
        overlap_seconds: Option<u32>,
    },
}

#[derive(Subcommand)]
pub enum DlqCmd {
    /// List dead letters, oldest first.
    List {
        #[arg(long)]
        workflow: Option<String>,
        #[arg(long)]
        channel: Option<String>,
        /// Substring of the reason.
        #[arg(long)]
        reason: Option<String>,
        /// Only entries at least this old (e.g. 30m, 2h, 1d).
        #[arg(long, value_name = "DURATION")]
        older_than: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Show one dead letter with every attempt.
    Show { notification_id: String },
    /// Re-enter the workflow at the step that failed.
    Retry {
        notification_id: String,
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Remove from the queue (the history keeps it).
    Discard {
        notification_id: String,
        #[arg(long, default_value = "")]
        note: String,
    },
}

fn authed<T>(key: &str, msg: T) -> anyhow::Result<tonic::Request<T>> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut().insert(
        "authorization",
        format!("Bearer {key}")
            .parse()
            .context("the API key is not valid header text")?,
    );
    Ok(r)
}

/// A gRPC error as a person should read it: the message and every field problem.
pub(crate) fn explain(s: tonic::Status) -> anyhow::Error {
    let mut msg = format!("{:?}: {}", s.code(), s.message());
    if let Some(br) = s.get_details_bad_request() {
        for v in br.field_violations {
            msg.push_str(&format!("\n  {}: {}", v.field, v.description));
        }
    }
    anyhow::anyhow!(msg)
}

fn read_definition(file: &std::path::Path) -> anyhow::Result<String> {
    std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))
}

/// A stored definition as people read it: its version, then pretty JSON.
fn print_definition(version: u32, json: &str) -> anyhow::Result<()> {
    let v: serde_json::Value = serde_json::from_str(json)?;
    println!("# version {version}\n{}", serde_json::to_string_pretty(&v)?);
    Ok(())
}

pub(crate) async fn connect(c: &ClientArgs) -> anyhow::Result<Channel> {
    Channel::from_shared(c.endpoint.clone())
        .context("--endpoint")?
        .connect()
        .await
        .with_context(|| format!("connecting to {}", c.endpoint))
}

pub async fn workflow(c: ClientArgs, cmd: WorkflowCmd) -> anyhow::Result<()> {
    let mut client = api::workflow_service_client::WorkflowServiceClient::new(connect(&c).await?);
    match cmd {
        WorkflowCmd::Apply { file } => {
            let definition = read_definition(&file)?;
            let r = client
                .apply(authed(c.key()?, api::ApplyWorkflowRequest { definition })?)
                .await
                .map_err(explain)?
                .into_inner();
            println!("published {} version {}", r.workflow_id, r.version);
        }
        WorkflowCmd::List => {
            let r = client
                .list(authed(c.key()?, api::ListWorkflowsRequest {})?)
                .await
                .map_err(explain)?
                .into_inner();
            for w in r.workflows {
                println!(
                    "{}\tv{}\t{}\t{}",
                    w.workflow_id, w.version, w.trigger_event, w.name
                );
            }
        }
        WorkflowCmd::Get {
            workflow_id,
            version,
        } => {
            let r = client
                .get(authed(
                    c.key()?,
                    api::GetWorkflowRequest {
                        workflow_id,
                        version,
                    },
                )?)
                .await
                .map_err(explain)?
                .into_inner();
            print_definition(r.version, &r.definition_json)?;
        }
    }
    Ok(())
}

pub async fn limits(c: ClientArgs, cmd: LimitsCmd) -> anyhow::Result<()> {
    let mut client = api::tenant_service_client::TenantServiceClient::new(connect(&c).await?);
    match cmd {
        LimitsCmd::Apply { file } => {
            let definition = read_definition(&file)?;
            let r = client
                .put_limits(authed(c.key()?, api::PutLimitsRequest { definition })?)
                .await
                .map_err(explain)?
                .into_inner();
            println!("limits version {}", r.version);
        }
        LimitsCmd::Get => {
            let r = client
                .get_limits(authed(c.key()?, api::GetLimitsRequest {})?)
                .await
                .map_err(explain)?
                .into_inner();
            print_definition(r.version, &r.definition_json)?;
        }
    }
    Ok(())
}

pub async fn tenant(c: ClientArgs, cmd: TenantCmd) -> anyhow::Result<()> {
    let mut client = api::tenant_service_client::TenantServiceClient::new(connect(&c).await?);
    match cmd {
        TenantCmd::SubscriberTokenKey {
            cmd: SubscriberTokenKeyCmd::Rotate,
        } => {
            let r =
                api::preference_service_client::PreferenceServiceClient::new(connect(&c).await?)
                    .rotate_subscriber_token_key(authed(
                        c.key()?,
                        api::RotateSubscriberTokenKeyRequest {},
                    )?)
                    .await
                    .map_err(explain)?
                    .into_inner();
            println!(
                "subscriber token key {}: every earlier token is revoked",
                r.key_id
            );
        }
        TenantCmd::WebhookSecret {
            cmd: WebhookSecretCmd::Rotate { overlap_seconds },
        } => {
            let r = client
                .rotate_webhook_secret(authed(
                    c.key()?,
                    api::RotateWebhookSecretRequest { overlap_seconds },
                )?)
                .await
                .map_err(explain)?
                .into_inner();
            println!("{}", r.secret);
            if r.previous_valid_until_ms > 0 {
                eprintln!(
                    "the previous secret also signs until {} (unix ms)",
                    r.previous_valid_until_ms
                );
            }
        }
    }
    Ok(())
}

/// `--older-than` (e.g. `2h`) in milliseconds; 0 when not given.
fn older_than_ms(older_than: Option<String>) -> anyhow::Result<i64> {
    match older_than {
        Some(d) => Ok(clarion_domain::flow::duration::parse_ms(&d)
            .map_err(|e| anyhow::anyhow!("--older-than: {e}"))? as i64),
        None => Ok(0),
    }
}

/// One dead letter with its attempts, as `clarion dlq show` prints it.
fn print_dead_letter(d: &api::DeadLetter) {
    println!(
        "notification {}\nworkflow {} v{}\nsubscriber {}\nstopped at step {}\nreason {}\nattempts:",
        d.notification_id, d.workflow_id, d.workflow_version, d.subscriber_id, d.step, d.reason
    );
    for a in &d.attempts {
        println!(
            "  {} step {} {} via {} at {}: {}{}",
            a.attempt_id,
            a.step,
            a.channel,
            if a.provider.is_empty() {
                "default"
            } else {
                &a.provider
            },
            a.at_ms,
            if a.error.is_empty() { "sent" } else { &a.error },
            if a.retryable { " (retryable)" } else { "" }
        );
    }
}

pub async fn dlq(c: ClientArgs, cmd: DlqCmd) -> anyhow::Result<()> {
    let mut client =
        api::dead_letter_service_client::DeadLetterServiceClient::new(connect(&c).await?);
    match cmd {
        DlqCmd::List {
            workflow,
            channel,
            reason,
            older_than,
            limit,
        } => {
            let request = api::ListDeadLettersRequest {
                workflow_id: workflow.unwrap_or_default(),
                channel: channel.unwrap_or_default(),
                reason_contains: reason.unwrap_or_default(),
                older_than_ms: older_than_ms(older_than)?,
                limit,
            };
            let r = client
                .list(authed(c.key()?, request)?)
                .await
                .map_err(explain)?
                .into_inner();
            for d in &r.dead_letters {
                println!(
                    "{}\t{}\tstep {}\t{} attempt(s)\t{}",
                    d.notification_id,
                    d.workflow_id,
                    d.step,
                    d.attempts.len(),
                    d.reason
                );
            }
            eprintln!("{} dead letter(s)", r.dead_letters.len());
        }
        DlqCmd::Show { notification_id } => {
            let d = client
                .show(authed(c.key()?, api::DeadLetterRef { notification_id })?)
                .await
                .map_err(explain)?
                .into_inner();
            print_dead_letter(&d);
        }
        DlqCmd::Retry {
            notification_id,
            note,
        } => {
            client
                .retry(authed(
                    c.key()?,
                    api::DeadLetterAction {
                        notification_id: notification_id.clone(),
                        note,
                    },
                )?)
                .await
                .map_err(explain)?;
            println!("retrying {notification_id}");
        }
        DlqCmd::Discard {
            notification_id,
            note,
        } => {
            client
                .discard(authed(
                    c.key()?,
                    api::DeadLetterAction {
                        notification_id: notification_id.clone(),
                        note,
                    },
                )?)
                .await
                .map_err(explain)?;
            println!("discarded {notification_id}");
        }
    }
    Ok(())
}

#[derive(Subcommand)]
pub enum KeysCmd {
    /// Mint an API key (printed once). It gets at most the scopes and the
    /// lifetime of the key that mints it.
    Create {
        #[arg(long, default_value = "")]
        name: String,
        /// admin, trigger, read, preferences (repeat or comma-separate;
        /// default: the calling key's scopes).
        #[arg(long = "scope", value_delimiter = ',')]
        scopes: Vec<String>,
        /// Lifetime, e.g. 30d or 12h (default: the calling key's expiry).
        #[arg(long, value_name = "DURATION")]
        expires_in: Option<String>,
    },
    /// List the tenant's keys (never their secrets).
    List,
    /// Revoke a key: it stops working at once on this gateway, within 10 s on others.
    Revoke { key_id: String },
}

pub(crate) fn ms_text(ms: i64) -> String {
    if ms == 0 {
        return "-".into();
    }
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| ms.to_string())
}

pub async fn keys(c: ClientArgs, cmd: KeysCmd) -> anyhow::Result<()> {
    let ch = connect(&c).await?;
    match cmd {
        KeysCmd::Create {
            name,
            scopes,
            expires_in,
        } => {
            let expires_at_ms = match expires_in {
                Some(d) => {
                    let ms = clarion_domain::flow::duration::parse_ms(&d)
                        .map_err(|e| anyhow::anyhow!("--expires-in: {e}"))?;
                    chrono::Utc::now().timestamp_millis() + ms as i64
                }
                None => 0,
            };
            let r = api::tenant_service_client::TenantServiceClient::new(ch)
                .create_api_key(authed(
                    c.key()?,
                    api::CreateApiKeyRequest {
                        name,
                        scopes,
                        expires_at_ms,
                    },
                )?)
                .await
                .map_err(explain)?
                .into_inner();
            println!("{}\t{}", r.key_id, r.api_key);
            eprintln!("the key is shown once: only its hash is stored");
        }
        KeysCmd::List => {
            let r = api::api_key_service_client::ApiKeyServiceClient::new(ch)
                .list(authed(c.key()?, api::ListApiKeysRequest {})?)
                .await
                .map_err(explain)?
                .into_inner();
            println!("KEY\tNAME\tSCOPES\tCREATED\tEXPIRES\tLAST USED\tREVOKED");
            for k in &r.keys {
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}",
                    k.key_id,
                    if k.name.is_empty() { "-" } else { &k.name },
                    k.scopes.join(","),
                    ms_text(k.created_at_ms),
                    ms_text(k.expires_at_ms),
                    ms_text(k.last_used_at_ms),
                    ms_text(k.revoked_at_ms),
                );
            }
        }
        KeysCmd::Revoke { key_id } => {
            api::api_key_service_client::ApiKeyServiceClient::new(ch)
                .revoke(authed(
                    c.key()?,
                    api::RevokeApiKeyRequest {
                        key_id: key_id.clone(),
                    },
                )?)
                .await
                .map_err(explain)?;
            println!("revoked {key_id}");
        }
    }
    Ok(())
}

// --- `clarion quarantine` (operator, admin token) ---------------------------

#[derive(Args, Clone)]
pub struct AdminArgs {
    /// gRPC endpoint of a Clarion gateway.
    #[arg(
        long,
        global = true,
        env = "CLARION_ENDPOINT",
        default_value = "http://127.0.0.1:50051"
    )]
    pub endpoint: String,
    /// The operator admin token (printed once at first start).
    #[arg(
        long,
        global = true,
        env = "CLARION_ADMIN_TOKEN",
        hide_env_values = true
    )]
    pub admin_token: Option<String>,
}

#[derive(Subcommand)]
pub enum QuarantineCmd {
    /// Stopped partitions (where and why) and every quarantined record.
    List,
    /// One record of the log: its size, hash, key and decoding (or why it
    /// does not decode); `--raw` also prints its bytes in hex.
    Show {
        #[arg(long)]
        topic: String,
        #[arg(long)]
        partition: u32,
        #[arg(long)]
        offset: u64,
        #[arg(long)]
        raw: bool,
    },
    /// Quarantine the record a partition stopped at, so it goes on past it.
    Park {
        /// router, dispatcher or projector (as `list` shows).
        #[arg(long)]
        processor: String,
        /// The full topic name, as `list` shows it (e.g. clarion.triggers).
        #[arg(long)]
        topic: String,
        #[arg(long)]
        partition: u32,
        #[arg(long)]
        offset: u64,
        /// Why it may be skipped (kept with the entry).
        #[arg(long)]
        note: String,
    },
}

/// `clarion quarantine list`: stopped partitions, then quarantined records.
fn print_quarantine(r: &api::ListQuarantineResponse) {
    println!("stopped partitions: {}", r.stopped.len());
    for s in &r.stopped {
        println!(
            "  {}\t{}\tpartition {}\toffset {}\tsince {}\t{}",
            s.processor, s.topic, s.partition, s.offset, s.stopped_at_ms, s.reason
        );
    }
    println!("quarantined records: {}", r.quarantined.len());
    for q in &r.quarantined {
        println!(
            "  {}\t{}\tpartition {}\toffset {}\tby {} at {}\tsha256 {} ({} bytes)\tnote: {}\treason: {}",
            q.processor,
            q.topic,
            q.partition,
            q.offset,
            q.actor,
            q.quarantined_at_ms,
            q.record_sha256,
            q.record_size,
            q.note,
            q.reason
        );
    }
}

pub async fn quarantine(a: AdminArgs, cmd: QuarantineCmd) -> anyhow::Result<()> {
    let token = a
        .admin_token
        .clone()
        .filter(|t| !t.is_empty())
        .ok_or_else(|| anyhow::anyhow!("--admin-token (or CLARION_ADMIN_TOKEN) is required"))?;
    let channel = connect(&ClientArgs {
        endpoint: a.endpoint.clone(),
        api_key: None,
    })
    .await?;
    let mut client = api::quarantine_service_client::QuarantineServiceClient::new(channel);
    match cmd {
        QuarantineCmd::List => {
            let r = client
                .list(authed(&token, api::ListQuarantineRequest {})?)
                .await
                .map_err(explain)?
                .into_inner();
            print_quarantine(&r);
        }
        QuarantineCmd::Show {
            topic,
            partition,
            offset,
            raw,
        } => {
            let v = client
                .show(authed(
                    &token,
                    api::LogRecordRef {
                        topic,
                        partition,
                        offset,
                    },
                )?)
                .await
                .map_err(explain)?
                .into_inner();
            println!(
                "{} partition {} offset {}\nkey {:?}\nsize {} bytes, sha256 {}",
                v.topic, v.partition, v.offset, v.key, v.size, v.sha256
            );
            if v.decode_error.is_empty() {
                println!("event {}\n{}", v.event_type, v.detail_json);
            } else {
                println!("does not decode: {}", v.decode_error);
            }
            if raw {
                println!(
                    "bytes{}: {}",
                    if v.truncated { " (first 64 KiB)" } else { "" },
                    hex::encode(&v.value)
                );
            }
        }
        QuarantineCmd::Park {
            processor,
            topic,
            partition,
            offset,
            note,
        } => {
            let q = client
                .park(authed(
                    &token,
                    api::ParkRecordRequest {
                        processor,
                        topic,
                        partition,
                        offset,
                        note,
                    },
                )?)
                .await
                .map_err(explain)?
                .into_inner();
            println!(
                "parked {} partition {} offset {} for {} (sha256 {}): the partition goes on past it",
                q.topic, q.partition, q.offset, q.processor, q.record_sha256
            );
        }
    }
    Ok(())
}

// --- `clarion preferences|topics|subscribers` --------------------------------

#[derive(Subcommand)]
pub enum PreferencesCmd {
    /// Print a subscriber's settings (as JSON).
    Get { subscriber: String },
    /// Change settings: PATH=VALUE, VALUE one of on, off, inherit; PATH one
    /// of channels.<channel>, topics.<topic>, topics.<topic>.<channel>,
    /// marketing. Only the named settings change.
    Set {
        subscriber: String,
        #[arg(required = true, value_name = "PATH=VALUE")]
        changes: Vec<String>,
    },
    /// The subscriber's preference and contact changes, oldest first.
    History {
        subscriber: String,
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// The cursor printed after the previous page.
        #[arg(long, default_value = "")]
        cursor: String,
    },
    /// Would WORKFLOW reach SUBSCRIBER on CHANNEL now, and which rule decides?
    Evaluate {
        subscriber: String,
        #[arg(long)]
        workflow: String,
        #[arg(long)]
        channel: String,
    },
}

#[derive(Subcommand)]
pub enum TopicsCmd {
    /// Create or replace a topic.
    Register {
        topic_id: String,
        #[arg(long, default_value = "")]
        name: String,
        #[arg(long, default_value = "")]
        description: String,
        /// Channels it may use (repeat or comma-separate; default: every channel).
        #[arg(long = "channel", value_delimiter = ',')]
        channels: Vec<String>,
        /// Whether a subscriber who never chose receives it.
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        default_opt_in: bool,
        /// Transactional: no opt-out, only a choice among its channels.
        #[arg(long)]
        required: bool,
        /// Commercial: a marketing unsubscribe blocks it.
        #[arg(long)]
        marketing: bool,
    },
    /// The tenant's topics.
    List,
    /// One topic.
    Get { topic_id: String },
}

#[derive(Subcommand)]
pub enum SubscribersCmd {
    /// Mint a subscriber token (reaches only this subscriber's preferences).
    Token {
        subscriber: String,
        /// Lifetime, e.g. 1h or 7d (default 1h, at most 30d).
        #[arg(long, value_name = "DURATION")]
        ttl: Option<String>,
    },
    /// GDPR erasure: destroys the subscriber's data key; prints the receipt
    /// (refused, and deferred, under a legal hold; docs/compliance.md).
    Erase {
        subscriber: String,
        /// Why (kept with the erasure's event).
        #[arg(long, default_value = "")]
        reason: String,
    },
}

/// An authenticated request recorded as made through the CLI.
pub(crate) fn from_cli<T>(key: &str, msg: T) -> anyhow::Result<tonic::Request<T>> {
    let mut r = authed(key, msg)?;
    r.metadata_mut().insert(
        "x-clarion-interface",
        tonic::metadata::MetadataValue::from_static("cli"),
    );
    Ok(r)
}

pub(crate) fn print_json<T: serde::Serialize>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn preferences_json(p: &api::SubscriberPreferences) -> serde_json::Value {
    serde_json::json!({
        "subscriber_id": p.subscriber_id,
        "channels": p.channels.iter().collect::<std::collections::BTreeMap<_, _>>(),
        "topics": p.topics.iter().map(|t| serde_json::json!({
            "topic_id": t.topic_id,
            "enabled": t.enabled,
            "channels": t.channels.iter().collect::<std::collections::BTreeMap<_, _>>(),
        })).collect::<Vec<_>>(),
        "marketing": p.marketing,
        "contacts": p.contacts.iter().map(|c| serde_json::json!({
            "channel": c.channel, "value": c.value, "verified": c.verified,
        })).collect::<Vec<_>>(),
    })
}

fn setting(arg: &str) -> anyhow::Result<api::PreferenceSetting> {
    let (path, value) = arg.split_once('=').ok_or_else(|| {
        anyhow::anyhow!("{arg:?}: expected PATH=VALUE, e.g. topics.marketing.sms=off")
    })?;
    Ok(api::PreferenceSetting {
        path: path.into(),
        value: value.into(),
    })
}

pub async fn preferences(c: ClientArgs, cmd: PreferencesCmd) -> anyhow::Result<()> {
    let mut client =
        api::preference_service_client::PreferenceServiceClient::new(connect(&c).await?);
    let key = c.key()?;
    match cmd {
        PreferencesCmd::Get { subscriber } => {
            let p = client
                .get_preferences(from_cli(
                    key,
                    api::GetPreferencesRequest {
                        subscriber_id: subscriber,
                    },
                )?)
                .await
                .map_err(explain)?
                .into_inner();
            print_json(&preferences_json(&p))?;
        }
        PreferencesCmd::Set {
            subscriber,
            changes,
        } => {
            let changes = changes
                .iter()
                .map(|a| setting(a))
                .collect::<anyhow::Result<_>>()?;
            let p = client
                .update_preferences(from_cli(
                    key,
                    api::UpdatePreferencesRequest {
                        subscriber_id: subscriber,
                        changes,
                    },
                )?)
                .await
                .map_err(explain)?
                .into_inner();
            print_json(&preferences_json(&p))?;
        }
        PreferencesCmd::History {
            subscriber,
            limit,
            cursor,
        } => {
            let r = client
                .history(from_cli(
                    key,
                    api::PreferenceHistoryRequest {
                        subscriber_id: subscriber,
                        limit,
                        cursor,
                    },
                )?)
                .await
                .map_err(explain)?
                .into_inner();
            for e in &r.entries {
                let changes: Vec<String> = e
                    .changes
                    .iter()
                    .map(|c| format!("{}: {} -> {}", c.path, c.old, c.new))
                    .collect();
                println!(
                    "{}\t{}\t{}\t{}\t{}",
                    ms_text(e.at_ms),
                    e.kind,
                    e.interface,
                    e.actor,
                    changes.join("; ")
                );
            }
            if !r.next_cursor.is_empty() {
                eprintln!("more: --cursor {}", r.next_cursor);
            }
        }
        PreferencesCmd::Evaluate {
            subscriber,
            workflow,
            channel,
        } => {
            let r = client
                .evaluate(from_cli(
                    key,
                    api::EvaluateRequest {
                        subscriber_id: subscriber,
                        workflow_id: workflow,
                        channel,
                    },
                )?)
                .await
                .map_err(explain)?
                .into_inner();
            println!(
                "{} by {}: {}",
                if r.allowed { "allowed" } else { "suppressed" },
                r.rule,
                r.reason
            );
        }
    }
    Ok(())
}

fn print_topic(t: &api::Topic) {
    println!(
        "{}\tv{}\t{}\tchannels={}\tdefault={}{}{}\t{}",
        t.topic_id,
        t.version,
        t.name,
        if t.channels.is_empty() {
            "all".to_string()
        } else {
            t.channels.join(",")
        },
        if t.default_opt_in { "in" } else { "out" },
        if t.required { "\trequired" } else { "" },
        if t.marketing { "\tmarketing" } else { "" },
        t.description
    );
}

pub async fn topics(c: ClientArgs, cmd: TopicsCmd) -> anyhow::Result<()> {
    let mut client = api::topic_service_client::TopicServiceClient::new(connect(&c).await?);
    let key = c.key()?;
    match cmd {
        TopicsCmd::Register {
            topic_id,
            name,
            description,
            channels,
            default_opt_in,
            required,
            marketing,
        } => {
            let t = client
                .register(from_cli(
                    key,
                    api::Topic {
                        topic_id,
                        name,
                        description,
                        channels,
                        default_opt_in,
                        required,
                        marketing,
                        version: 0,
                    },
                )?)
                .await
                .map_err(explain)?
                .into_inner();
            print_topic(&t);
        }
        TopicsCmd::List => {
            let r = client
                .list(from_cli(key, api::ListTopicsRequest {})?)
                .await
                .map_err(explain)?
                .into_inner();
            for t in &r.topics {
                print_topic(t);
            }
        }
        TopicsCmd::Get { topic_id } => {
            let t = client
                .get(from_cli(key, api::GetTopicRequest { topic_id })?)
                .await
                .map_err(explain)?
                .into_inner();
            print_topic(&t);
        }
    }
    Ok(())
}

pub async fn subscribers(c: ClientArgs, cmd: SubscribersCmd) -> anyhow::Result<()> {
    if let SubscribersCmd::Erase { subscriber, reason } = cmd {
        return crate::client_compliance::erase(&c, subscriber, reason).await;
    }
    let mut client =
        api::preference_service_client::PreferenceServiceClient::new(connect(&c).await?);
    match cmd {
        SubscribersCmd::Token { subscriber, ttl } => {
            let ttl_seconds = match ttl {
                Some(d) => {
                    let ms = clarion_domain::flow::duration::parse_ms(&d)
                        .map_err(|e| anyhow::anyhow!("--ttl: {e}"))?;
                    u32::try_from(ms / 1000).map_err(|_| anyhow::anyhow!("--ttl: too long"))?
                }
                None => 0,
            };
            let r = client
                .create_subscriber_token(from_cli(
                    c.key()?,
                    api::CreateSubscriberTokenRequest {
                        subscriber_id: subscriber,
                        ttl_seconds,
                    },
                )?)
                .await
                .map_err(explain)?
                .into_inner();
            println!("{}", r.token);
            eprintln!("expires {}", ms_text(r.expires_at_ms));
        }
        SubscribersCmd::Erase { .. } => unreachable!("handled above"),
    }
    Ok(())
}

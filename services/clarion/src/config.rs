//! The typed configuration tree. Layers, later wins: built-in defaults, the
//! TOML file (`clarion.toml` or `--config`), environment variables
//! `CLARION__SECTION__KEY` (e.g. `CLARION__LOG__URL=kafka://127.0.0.1:9092`),
//! then command-line flags.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clarion_dispatch::breaker::BreakerConfig;
use clarion_dispatch::push::PushConfig;
use clarion_dispatch::sendgrid::SendgridConfig;
use clarion_dispatch::smtp::SmtpConfig;
use clarion_dispatch::twilio::TwilioConfig;
use clarion_dispatch::vonage::VonageConfig;
use clarion_dispatch::webhook::WebhookConfig;
use clarion_runtime::RunnerConfig;
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Config {
    /// Where the embedded backends keep their files.
    pub data_dir: PathBuf,
    pub log: LogConfig,
    pub store: StoreConfig,
    pub grpc: ListenConfig,
    pub http: HttpConfig,
    pub auth: AuthConfig,
    pub limits: LimitsConfig,
    pub providers: ProvidersConfig,
    pub runtime: RuntimeConfig,
    pub tracking: TrackingConfig,
    pub retry: RetryConfig,
    pub dlq: DlqConfig,
    /// Per-tenant request rate limit of the gateway (docs/security.md).
    #[serde(default)]
    pub rate_limit: clarion_gateway::ratelimit::RateLimitConfig,
    /// Exposure of operator surfaces (docs/security.md).
    #[serde(default)]
    pub security: SecurityConfig,
    /// Requests to destinations tenants name: the SSRF guard's allow-list
    /// and the bound on one send (docs/webhooks.md).
    #[serde(default)]
    pub outbound: OutboundConfig,
    /// The master keyring that seals secrets at rest (docs/webhooks.md).
    #[serde(default)]
    pub secrets: clarion_dispatch::secrets::SecretsConfig,
    /// The device registry (docs/push.md).
    #[serde(default)]
    pub devices: DevicesConfig,
    /// Delayed sends, send windows, quiet hours (docs/scheduling.md).
    #[serde(default)]
    pub scheduling: SchedulingConfig,
    /// The web console under `/console` (docs/console.md).
    #[serde(default)]
    pub console: clarion_console::ConsoleConfig,
    /// OpenTelemetry traces over OTLP (docs/operations.md).
    #[serde(default)]
    pub telemetry: crate::telemetry::TelemetryConfig,
    /// Delivery analytics: how long its rows are kept (docs/analytics.md).
    #[serde(default)]
    pub analytics: AnalyticsConfig,
    /// Anomaly alerts over delivery outcomes (docs/alerts.md).
    #[serde(default)]
    pub alerts: crate::alerts::AlertsConfig,
    /// SLA tracking (issue #31, docs/slas.md).
    #[serde(default)]
    pub sla: crate::sla::SlaConfig,
    /// The warehouse exporter's Parquet files (docs/warehouse.md).
    #[serde(default)]
    pub warehouse: WarehouseConfig,
    /// The notary's signing key and checkpoint cadence (docs/audit.md).
    #[serde(default)]
    pub audit: clarion_audit::AuditConfig,
    /// Compliance: where `POST /v1/exports` writes (docs/export.md).
    #[serde(default)]
    pub compliance: ComplianceConfig,
    /// The retention role: how often each tenant's policy is applied
    /// (docs/compliance.md).
    #[serde(default)]
    pub retention: RetentionConfig,
}

/// `compliance`: secure exports (issue #32).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct ComplianceConfig {
    /// Where exports made over the API go (`<dir>/<tenant>/<export id>`).
    /// Empty: `<data-dir>/exports`.
    pub export_dir: String,
}

impl ComplianceConfig {
    pub fn export_dir(&self, data_dir: &std::path::Path) -> PathBuf {
        if self.export_dir.is_empty() {
            data_dir.join("exports")
        } else {
            PathBuf::from(&self.export_dir)
        }
    }
}

/// `retention`: the retention role's schedule (issue #32).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Seconds between two runs of a tenant's retention (at least 1).
    pub tick_seconds: u64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig { tick_seconds: 3600 }
    }
}

/// `warehouse`: where the exporter writes the Parquet tables, and how often
/// it rolls a file.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct WarehouseConfig {
    /// A directory (a path or `file:///PATH`), or `s3://BUCKET/PREFIX`.
    /// Empty: `<data-dir>/warehouse`.
    pub url: String,
    /// How to reach an `s3://` destination (docs/warehouse.md).
    pub s3: WarehouseS3Config,
    /// A row is in a published file within about this long (ms).
    pub max_file_age_ms: u64,
    /// A file is rolled once it holds this many rows ...
    pub max_file_rows: usize,
    /// ... or this many bytes (estimated before compression).
    pub max_file_bytes: usize,
}

impl Default for WarehouseConfig {
    fn default() -> Self {
        let d = clarion_warehouse::ExporterConfig::default();
        WarehouseConfig {
            url: String::new(),
            s3: WarehouseS3Config::default(),
            max_file_age_ms: d.max_file_age_ms as u64,
            max_file_rows: d.max_file_rows,
            max_file_bytes: d.max_file_bytes,
        }
    }
}

impl WarehouseConfig {
    /// Checks the values serde cannot.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_file_rows == 0 {
            return Err("warehouse.max-file-rows: must be at least 1".into());
        }
        if self.max_file_bytes == 0 {
            return Err("warehouse.max-file-bytes: must be at least 1".into());
        }
        let scheme_ok = ["file://", "s3://"].iter().any(|s| self.url.starts_with(s));
        if self.url.contains("://") && !scheme_ok {
            return Err(format!(
                "warehouse.url: {:?}: a directory (a path or file:///PATH) or s3://BUCKET/PREFIX \
                 is supported",
                self.url
            ));
        }
        if self.url.starts_with("s3://") && self.url["s3://".len()..].split('/').next() == Some("")
        {
            return Err(format!(
                "warehouse.url: {:?}: no bucket (s3://BUCKET/PREFIX)",
                self.url
            ));
        }
        let e = &self.s3.endpoint;
        let is_url = e.starts_with("http://") || e.starts_with("https://");
        if !e.is_empty() && !is_url {
            return Err(format!(
                "warehouse.s3.endpoint: {e:?}: must be an http(s):// URL"
            ));
        }
        if e.starts_with("http://") && !self.s3.allow_http {
            return Err(format!(
                "warehouse.s3.endpoint: {e:?}: plain http needs warehouse.s3.allow-http = true"
            ));
        }
        Ok(())
    }
}

/// `warehouse.s3`: an S3-compatible destination. Empty values fall back to
/// the `AWS_*` environment variables (`AWS_ENDPOINT`, `AWS_REGION`,
/// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`,
/// `AWS_ALLOW_HTTP`), then to the instance's role.
#[derive(Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct WarehouseS3Config {
    /// `https://host[:port]` of a store that is not AWS (MinIO, Ceph, R2).
    pub endpoint: String,
    pub region: String,
    pub access_key_id: String,
    /// Prefer `AWS_SECRET_ACCESS_KEY` (or a mounted secret) to the file.
    pub secret_access_key: String,
    pub session_token: String,
    /// Allows an `http://` endpoint (a local store in development or tests).
    pub allow_http: bool,
}

/// Never prints the secret (configs are logged at start in debug).
impl std::fmt::Debug for WarehouseS3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hidden = |v: &str| if v.is_empty() { "" } else { "***" };
        f.debug_struct("WarehouseS3Config")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &hidden(&self.secret_access_key))
            .field("session_token", &hidden(&self.session_token))
            .field("allow_http", &self.allow_http)
            .finish()
    }
}

impl WarehouseS3Config {
    pub fn options(&self) -> clarion_warehouse::destination::S3Options {
        clarion_warehouse::destination::S3Options {
            endpoint: self.endpoint.clone(),
            region: self.region.clone(),
            access_key_id: self.access_key_id.clone(),
            secret_access_key: self.secret_access_key.clone(),
            session_token: self.session_token.clone(),
            allow_http: self.allow_http,
        }
    }
}

/// `analytics`: the retention of the analytics projection's rows.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct AnalyticsConfig {
    /// Minute buckets are kept this many hours.
    pub minute_retention_hours: u32,
    /// Hour buckets are kept this many days.
    pub hour_retention_days: u32,
    /// A send's join row is kept this many days: engagement later than
    /// that is not counted.
    pub attempt_retention_days: u32,
}

impl Default for AnalyticsConfig {
    fn default() -> Self {
        AnalyticsConfig {
            minute_retention_hours: 48,
            hour_retention_days: 90,
            attempt_retention_days: 30,
        }
    }
}

impl AnalyticsConfig {
    pub fn retention(&self) -> clarion_analytics::Retention {
        let h = |n: u32| std::time::Duration::from_secs(3600 * u64::from(n.max(1)));
        clarion_analytics::Retention {
            minutes: h(self.minute_retention_hours),
            hours: h(24 * self.hour_retention_days),
            attempts: h(24 * self.attempt_retention_days),
        }
    }
}

/// `scheduling`: how held sends are released.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct SchedulingConfig {
    /// Sends held by quiet hours are released within this long after the
    /// period ends, spread by attempt id (`5m`; `0s`: all at the end).
    pub release_spread: String,
}

impl Default for SchedulingConfig {
    fn default() -> Self {
        SchedulingConfig {
            release_spread: "5m".into(),
        }
    }
}

impl SchedulingConfig {
    pub fn release_spread(&self) -> Result<std::time::Duration, String> {
        clarion_domain::flow::duration::parse_ms(&self.release_spread)
            .map(std::time::Duration::from_millis)
            .map_err(|e| format!("scheduling.release-spread: {e}"))
    }
}

/// The device registry.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct DevicesConfig {
    /// A device neither seen nor given a new token for this many days stops
    /// receiving pushes (and shows `expired`).
    pub expire_after_days: u32,
}

impl Default for DevicesConfig {
    fn default() -> Self {
        DevicesConfig {
            expire_after_days: clarion_domain::push::DEFAULT_DEVICE_EXPIRY_DAYS,
        }
    }
}

impl DevicesConfig {
    pub fn expiry(&self) -> std::time::Duration {
        std::time::Duration::from_secs(u64::from(self.expire_after_days) * 86_400)
    }
}

/// The HTTP side: the public listener (REST, tracking, callbacks, health)
/// and an optional internal one for operator surfaces.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    /// Where `/metrics` (and operator routes) are served instead of the
    /// public listener, e.g. `127.0.0.1:9090`. Unset: on the public one.
    #[serde(default)]
    pub internal_listen: Option<SocketAddr>,
}

/// Credentials and exposure (docs/security.md).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct SecurityConfig {
    /// Who may use gRPC reflection: `public`, `admin-token` or `off`.
    pub reflection: clarion_gateway::access::ReflectionAccess,
    /// Tenant names in metric labels (off: the label reads `_`).
    pub metrics_tenant_labels: bool,
    /// How often API keys' last-used times are written (ms).
    pub key_last_used_flush_ms: u64,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        SecurityConfig {
            reflection: clarion_gateway::access::ReflectionAccess::Public,
            metrics_tenant_labels: false,
            key_last_used_flush_ms: 60_000,
        }
    }
}

/// `outbound`: what tenant-named destinations may be, and how long a send
/// may take.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct OutboundConfig {
    /// Internal destinations the SSRF guard lets through: CIDRs, addresses
    /// or host names. Empty (the default): only public addresses.
    pub allow: Vec<String>,
    /// The longest any one provider send may take before it fails
    /// retryably (on top of each provider's own timeouts).
    pub send_timeout_ms: u64,
}

impl Default for OutboundConfig {
    fn default() -> Self {
        OutboundConfig {
            allow: Vec::new(),
            send_timeout_ms: 30_000,
        }
    }
}

impl OutboundConfig {
    pub fn guard(&self) -> clarion_dispatch::ssrf::OutboundConfig {
        clarion_dispatch::ssrf::OutboundConfig {
            allow: self.allow.clone(),
        }
    }
}

/// Dead-letter queue alerting.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct DlqConfig {
    /// Dead letters of one tenant that raise an alert (0: never).
    pub alert_threshold: u64,
    /// Per-tenant thresholds (tenant id → count).
    pub tenant_thresholds: HashMap<String, u64>,
    /// Where alerts are POSTed, signed (needs `providers.webhook`).
    pub alert_webhook_url: String,
}

/// Retries of retryable provider errors: a default policy, overridden per
/// channel and per tenant and channel. Each policy: max-attempts, base-ms,
/// max-ms, jitter (fraction).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct RetryConfig {
    pub default: clarion_domain::flow::RetryPolicy,
    pub channels: HashMap<String, clarion_domain::flow::RetryPolicy>,
    pub tenants: HashMap<String, HashMap<String, clarion_domain::flow::RetryPolicy>>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct TrackingConfig {
    /// Add an open-tracking pixel to emails.
    pub enabled: bool,
    /// Public base URL of this deployment's HTTP endpoint (where /t/o and /t/c are served).
    pub base_url: String,
    /// How long open and click links work after the send.
    #[serde(default = "default_token_ttl_days")]
    pub token_ttl_days: u32,
    /// Whether links made before tokens carried an expiry still work.
    #[serde(default = "default_true")]
    pub accept_legacy_tokens: bool,
}

fn default_token_ttl_days() -> u32 {
    90
}

fn default_true() -> bool {
    true
}

/// The embedded default's file in the data directory: log and store.
pub const EMBEDDED_FILE: &str = "clarion.db";

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct LogConfig {
    /// `sqlite://PATH[?sync=full&compression=lz4]` (fsync every commit;
    /// store record batches LZ4-compressed: a smaller file for more CPU) or
    /// `kafka://HOST:PORT[,HOST:PORT][?fetch_wait_ms=N&linger_ms=N]` (how
    /// long an idle fetch waits at the broker, default 10, and how long the
    /// producer lets records gather, default 5: lower means less latency,
    /// more CPU and broker load). Empty: `sqlite://<data-dir>/clarion.db`, the store's
    /// file: a log and store in one SQLite file commit a processor's state and
    /// the events it emits in one transaction.
    pub url: String,
    /// Partitions of each recipient topic: how many router and dispatcher
    /// tasks run side by side. Fixed once topics exist (a later start with
    /// another value warns and keeps theirs). The default 2 suits the
    /// embedded log on a small machine (4 and 8 delivered 12–30 % less on
    /// 2 cores, docs/benchmarks.md); on Kafka, at least the number of
    /// processes that share a role.
    pub partitions: u32,
    /// Prefix of every topic name.
    pub topic_prefix: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct StoreConfig {
    /// `sqlite://PATH` or `scylla://HOST:PORT/KEYSPACE`. Empty: `sqlite://<data-dir>/clarion.db`.
    pub url: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ListenConfig {
    pub listen: SocketAddr,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct AuthConfig {
    /// SHA-256 (hex) of the operator admin token. Empty: the one generated on
    /// first start of `clarion serve` (stored hashed in the store).
    pub admin_token_sha256: String,
    /// The operator admin token itself (hashed at start; wins over
    /// `admin-token-sha256`). Best given as `admin-token-file`.
    #[serde(default)]
    pub admin_token: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct LimitsConfig {
    pub max_payload_bytes: usize,
    pub max_recipients: usize,
    /// Notifications one Trigger may start (workflows matched × recipients).
    #[serde(default = "default_max_fanout")]
    pub max_fanout: usize,
    /// How long trigger idempotency keys are remembered.
    pub idempotency_retention_hours: u64,
}

fn default_max_fanout() -> usize {
    clarion_domain::limits::MAX_FANOUT
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ProvidersConfig {
    /// Provider per channel when a workflow step names none
    /// (channel name → `sink` | `smtp` | `webhook` | `twilio` | `push`).
    pub defaults: HashMap<String, String>,
    pub smtp: Option<SmtpConfig>,
    pub webhook: Option<WebhookConfig>,
    pub twilio: Option<TwilioConfig>,
    /// SendGrid's v3 mail API (docs/providers.md).
    #[serde(default)]
    pub sendgrid: Option<SendgridConfig>,
    /// Vonage's SMS API (docs/providers.md).
    #[serde(default)]
    pub vonage: Option<VonageConfig>,
    /// APNs and FCM credentials per tenant and app (docs/push.md). With
    /// at least one app, channel push goes to the `push` provider.
    #[serde(default)]
    pub push: Option<PushConfig>,
    /// Providers per channel in priority order (channel → names): a send
    /// fails over to the next when one fails on its side or its circuit
    /// breaker is open; the first is the channel's default (docs/providers.md).
    #[serde(default)]
    pub routes: HashMap<String, Vec<String>>,
    /// The circuit breaker of every provider (docs/providers.md).
    #[serde(default)]
    pub breaker: BreakerConfig,
    /// How long a dispatcher trusts what it read of a tenant's own
    /// providers, routes and SLA demotions (issue #31): a change reaches
    /// sends within this after the projector applied it.
    #[serde(default = "default_tenant_cache_ms")]
    pub tenant_cache_ms: u64,
}

fn default_tenant_cache_ms() -> u64 {
    1_000
}

impl ProvidersConfig {
    /// The push apps configured, if any.
    pub fn push_apps(&self) -> Option<&PushConfig> {
        self.push.as_ref().filter(|p| !p.apps.is_empty())
    }

    /// The provider of each channel a step names none for: the configured
    /// defaults, and `push` for channel push when push apps are configured.
    pub fn channel_defaults(&self) -> HashMap<String, String> {
        let mut out = self.defaults.clone();
        // A route's first provider is its channel's default, unless the
        // defaults name one (which then leads, the route's others following).
        for (channel, route) in &self.routes {
            if let Some(first) = route.first() {
                out.entry(channel.clone()).or_insert_with(|| first.clone());
            }
        }
        if self.push_apps().is_some() {
            out.entry(clarion_domain::Channel::Push.to_string())
                .or_insert_with(|| clarion_dispatch::push::PUSH.to_string());
        }
        out
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Most records a processor applies per commit. Batches fill up only
    /// under a backlog; there, larger ones cost less per record (every
    /// commit rewrites the right-edge pages of the B-trees it touches), and
    /// 4,096 rather than 1,024 let the routers keep up with the delivery
    /// outcomes instead of trailing by seconds (docs/benchmarks.md). It is
    /// also how many external sends of a dispatcher partition may repeat
    /// after a crash.
    pub max_batch: usize,
    /// How long a processor's poll of the log waits.
    pub poll_wait_ms: u64,
    /// Concurrent provider sends per dispatcher partition.
    pub effect_concurrency: usize,
    /// How long the roles that follow the spine (analytics, alerts, the
    /// warehouse exporter, the notary, retention) let records gather after
    /// a batch that did not fill `max-batch`. Under load they would
    /// otherwise commit a small batch per spine commit, each one a turn of
    /// the SQLite writer the spine needs (docs/benchmarks.md); none of them
    /// is on a notification's path. 0 reads at once.
    pub follower_linger_ms: u64,
    /// Which partitions a processor process runs: `all` of them (one
    /// process per role; the default) or those its role's Kafka consumer
    /// group gives it (`group`: several processes of a role share the
    /// partitions; docs/operations.md, "Scaling processor roles").
    #[serde(default)]
    pub partition_assignment: PartitionAssignment,
    /// With `group`: how long a silent process keeps its partitions before
    /// the others take them over (the failover time after a crash).
    #[serde(default = "default_group_session_timeout_ms")]
    pub group_session_timeout_ms: u64,
}

/// `runtime.partition-assignment`.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum PartitionAssignment {
    /// Every process of a role runs every partition: one process per role.
    #[default]
    All,
    /// A Kafka consumer group per role shares the partitions out among the
    /// role's processes, and moves them when one comes or goes.
    Group,
}

fn default_group_session_timeout_ms() -> u64 {
    10_000
}

impl Config {
    /// `runtime.partition-assignment` and its session timeout.
    fn validate_assignment(&self) -> Result<(), String> {
        let r = &self.runtime;
        if r.partition_assignment == PartitionAssignment::Group
            && !self.log_url().starts_with("kafka://")
        {
            return Err(format!(
                "runtime.partition-assignment: \"group\" needs the Kafka log (log.url = \
                 \"kafka://HOST:PORT\"), not {:?}",
                self.log_url()
            ));
        }
        if !(1_000..=300_000).contains(&r.group_session_timeout_ms) {
            return Err(format!(
                "runtime.group-session-timeout-ms: {} is out of range (1000 to 300000)",
                r.group_session_timeout_ms
            ));
        }
        Ok(())
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./data"),
            log: LogConfig {
                url: String::new(),
                partitions: 2,
                topic_prefix: "clarion.".into(),
            },
            store: StoreConfig { url: String::new() },
            grpc: ListenConfig {
                listen: "0.0.0.0:50051".parse().expect("literal address"),
            },
            http: HttpConfig {
                listen: "0.0.0.0:8080".parse().expect("literal address"),
                internal_listen: None,
            },
            auth: AuthConfig::default(),
            limits: LimitsConfig {
                max_payload_bytes: 64 * 1024,
                max_recipients: 1000,
                max_fanout: default_max_fanout(),
                idempotency_retention_hours: 24,
            },
            providers: ProvidersConfig {
                defaults: HashMap::new(),
                smtp: None,
                webhook: None,
                twilio: None,
                sendgrid: None,
                vonage: None,
                push: None,
                routes: HashMap::new(),
                breaker: BreakerConfig::default(),
                tenant_cache_ms: default_tenant_cache_ms(),
            },
            runtime: RuntimeConfig {
                max_batch: RunnerConfig::default().max_batch,
                poll_wait_ms: 100,
                effect_concurrency: 64,
                follower_linger_ms: 250,
                partition_assignment: PartitionAssignment::All,
                group_session_timeout_ms: default_group_session_timeout_ms(),
            },
            tracking: TrackingConfig {
                enabled: true,
                base_url: "http://localhost:8080".into(),
                token_ttl_days: default_token_ttl_days(),
                accept_legacy_tokens: true,
            },
            retry: RetryConfig::default(),
            dlq: DlqConfig {
                alert_threshold: 100,
                ..DlqConfig::default()
            },
            rate_limit: Default::default(),
            security: SecurityConfig::default(),
            outbound: OutboundConfig::default(),
            secrets: Default::default(),
            devices: DevicesConfig::default(),
            scheduling: SchedulingConfig::default(),
            console: Default::default(),
            telemetry: Default::default(),
            analytics: Default::default(),
            alerts: Default::default(),
            sla: Default::default(),
            warehouse: WarehouseConfig::default(),
            audit: clarion_audit::AuditConfig::default(),
            compliance: ComplianceConfig::default(),
            retention: RetentionConfig::default(),
        }
    }
}

impl Config {
    /// Defaults, then `file` (or `./clarion.toml` if it exists), then `CLARION__*`.
    pub fn load(file: Option<&Path>) -> Result<Config, Box<figment::Error>> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        match file {
            Some(f) => {
                if !f.exists() {
                    return Err(Box::new(figment::Error::from(format!(
                        "config file {} does not exist",
                        f.display()
                    ))));
                }
                fig = fig.merge(Toml::file(f));
            }
            None => fig = fig.merge(Toml::file("clarion.toml")),
        }
        // Keys are kebab-case; env names use `_` inside a key and `__` between levels.
        let env = Env::prefixed("CLARION__")
            .map(|k| k.as_str().replace('_', "-").into())
            .split("--");
        let mut tree: figment::value::Value = fig.merge(env).extract().map_err(Box::new)?;
        crate::secrets::resolve_files(&mut tree).map_err(|e| Box::new(figment::Error::from(e)))?;
        Figment::from(Serialized::defaults(tree))
            .extract()
            .map_err(Box::new)
    }

    /// SHA-256 of the admin token the configuration names, if any.
    pub fn admin_token_sha256(&self) -> Option<String> {
        if !self.auth.admin_token.is_empty() {
            return Some(clarion_domain::tenant::sha256_hex(
                self.auth.admin_token.as_bytes(),
            ));
        }
        (!self.auth.admin_token_sha256.is_empty()).then(|| self.auth.admin_token_sha256.clone())
    }

    /// The SQLite file both the log and the store use when they share one
    /// (the embedded default), or `None`.
    pub fn colocated_file(&self) -> Option<String> {
        let file = |url: &str| {
            let path = url.strip_prefix("sqlite://")?;
            let path = path.split_once('?').map_or(path, |(p, _)| p);
            std::path::absolute(path).ok()
        };
        let log = file(&self.log_url())?;
        (Some(&log) == file(&self.store_url()).as_ref()).then(|| self.log_url())
    }

    pub fn log_url(&self) -> String {
        if self.log.url.is_empty() {
            format!("sqlite://{}", self.data_dir.join(EMBEDDED_FILE).display())
        } else {
            self.log.url.clone()
        }
    }

    pub fn store_url(&self) -> String {
        if self.store.url.is_empty() {
            format!("sqlite://{}", self.data_dir.join(EMBEDDED_FILE).display())
        } else {
            self.store.url.clone()
        }
    }

    /// Checks what serde cannot: known channels and providers.
    pub fn validate(&self) -> Result<(), String> {
        for (channel, provider) in &self.providers.defaults {
            channel
                .parse::<clarion_domain::Channel>()
                .map_err(|e| format!("providers.defaults: {e}"))?;
            if !clarion_domain::workflow::KNOWN_PROVIDERS.contains(&provider.as_str()) {
                return Err(format!(
                    "providers.defaults.{channel}: unknown provider {provider:?}"
                ));
            }
        }
        self.validate_push()?;
        self.validate_routes()?;
        self.scheduling.release_spread()?;
        self.warehouse.validate()?;
        self.audit.validate()?;
        clarion_dispatch::ssrf::Guard::new(&self.outbound.guard())?;
        if !self.dlq.alert_webhook_url.is_empty()
            && self
                .providers
                .webhook
                .as_ref()
                .is_none_or(|w| w.signing_secret.is_empty())
        {
            return Err(
                "dlq.alert-webhook-url needs providers.webhook.signing-secret (the operator's \
                 secret that signs alerts)"
                    .into(),
            );
        }
        if self.log.partitions == 0 {
            return Err("log.partitions must be at least 1".into());
        }
        self.validate_assignment()?;
        self.alerts.validate(self.providers.smtp.is_some())?;
        self.sla.validate()?;
        Ok(())
    }
}

impl Config {
    /// `providers.routes` and `providers.breaker`: known channels, and
    /// providers configured here that send on the channel.
    fn validate_routes(&self) -> Result<(), String> {
        self.providers.breaker.validate()?;
        let p = &self.providers;
        let configured = |name: &str| match name {
            "smtp" => p.smtp.is_some(),
            "sendgrid" => p.sendgrid.is_some(),
            "twilio" => p.twilio.is_some(),
            "vonage" => p.vonage.is_some(),
            "webhook" => p.webhook.is_some(),
            _ => false,
        };
        for (channel, route) in &p.routes {
            let ch: clarion_domain::Channel = channel
                .parse()
                .map_err(|e| format!("providers.routes: {e}"))?;
            let serves: &[&str] = match ch {
                clarion_domain::Channel::Email => &["smtp", "sendgrid"],
                clarion_domain::Channel::Sms => &["twilio", "vonage"],
                clarion_domain::Channel::Webhook => &["webhook"],
                // Push fans out itself; the inbox is built in; the sink
                // records in the dispatcher's commit, where nothing fails over.
                clarion_domain::Channel::Push | clarion_domain::Channel::InApp => &[],
            };
            if route.is_empty() {
                return Err(format!("providers.routes.{channel}: names no provider"));
            }
            for (i, name) in route.iter().enumerate() {
                let key = format!("providers.routes.{channel}[{i}]");
                if !serves.contains(&name.as_str()) {
                    return Err(format!(
                        "{key}: {name:?} does not send channel {channel} (one of: {})",
                        serves.join(", ")
                    ));
                }
                if !configured(name) {
                    return Err(format!(
                        "{key}: {name:?} needs a [providers.{name}] section"
                    ));
                }
                if route[..i].contains(name) {
                    return Err(format!("{key}: {name:?} is named twice"));
                }
            }
        }
        Ok(())
    }

    /// `providers.push`: each app's credentials (keys parsed, clients
    /// built), and a `push` default only with apps to send for.
    fn validate_push(&self) -> Result<(), String> {
        if let Some(push) = &self.providers.push {
            push.validate(std::sync::Arc::new(clarion_runtime::SystemClock))?;
        }
        let push = clarion_dispatch::push::PUSH;
        for (channel, provider) in &self.providers.defaults {
            if provider == push && channel != push {
                return Err(format!(
                    "providers.defaults.{channel}: the push provider sends channel push only"
                ));
            }
            if provider == push && self.providers.push_apps().is_none() {
                return Err(format!(
                    "providers.defaults.{channel}: the push provider needs at least one \
                     [[providers.push.apps]]"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `[warehouse.s3]` as an operator writes it, the secret kept out of
    /// the debug form, and each mistake named by its key.
    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail fixes the closure type
    fn warehouse_s3_loads_hides_its_secret_and_names_its_mistakes() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "c.toml",
                "[warehouse]\nurl = \"s3://analytics/clarion\"\n[warehouse.s3]\n\
                 endpoint = \"http://127.0.0.1:9000\"\nregion = \"eu-west-1\"\n\
                 access-key-id = \"AKID\"\nsecret-access-key = \"s3cr3t\"\nallow-http = true\n",
            )?;
            let c = Config::load(Some(Path::new("c.toml"))).unwrap();
            c.validate().unwrap();
            let o = c.warehouse.s3.options();
            assert_eq!((o.region.as_str(), o.allow_http), ("eu-west-1", true));
            assert_eq!(o.secret_access_key, "s3cr3t");
            let shown = format!("{:?} {o:?}", c.warehouse);
            assert!(
                !shown.contains("s3cr3t") && shown.contains("AKID"),
                "{shown}"
            );
            Ok(())
        });
        let bad = |edit: &dyn Fn(&mut WarehouseConfig), expected: &str| {
            let mut w = WarehouseConfig::default();
            edit(&mut w);
            let err = w.validate().unwrap_err();
            assert!(err.contains(expected), "{err}");
        };
        bad(&|w| w.url = "gs://b/p".into(), "warehouse.url");
        bad(&|w| w.url = "s3:///p".into(), "no bucket");
        bad(
            &|w| {
                w.url = "s3://b".into();
                w.s3.endpoint = "minio:9000".into();
            },
            "warehouse.s3.endpoint",
        );
        bad(
            &|w| {
                w.url = "s3://b".into();
                w.s3.endpoint = "http://minio:9000".into();
            },
            "allow-http",
        );
    }

    /// `runtime.partition-assignment`: "all" by default, "group" from the
    /// file on a Kafka log; on the embedded log, or with a session timeout
    /// out of range, the error names the key.
    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail fixes the closure type
    fn partition_assignment_loads_and_names_its_mistakes() {
        assert_eq!(
            Config::default().runtime.partition_assignment,
            PartitionAssignment::All
        );
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(
            &f,
            "[log]\nurl = \"kafka://127.0.0.1:9092\"\n\
             [runtime]\npartition-assignment = \"group\"\ngroup-session-timeout-ms = 6000\n",
        )
        .unwrap();
        figment::Jail::expect_with(|_| {
            let c = Config::load(Some(&f)).unwrap();
            c.validate().unwrap();
            assert_eq!(c.runtime.partition_assignment, PartitionAssignment::Group);
            assert_eq!(c.runtime.group_session_timeout_ms, 6000);

            let mut embedded = c.clone();
            embedded.log.url = String::new();
            let e = embedded.validate().unwrap_err();
            assert!(e.starts_with("runtime.partition-assignment"), "{e}");

            let mut short = c.clone();
            short.runtime.group_session_timeout_ms = 10;
            let e = short.validate().unwrap_err();
            assert!(e.starts_with("runtime.group-session-timeout-ms"), "{e}");
            Ok(())
        });
        std::fs::write(&f, "[runtime]\npartition-assignment = \"some\"\n").unwrap();
        figment::Jail::expect_with(|_| {
            let e = Config::load(Some(&f)).unwrap_err().to_string();
            assert!(e.contains("partition-assignment"), "{e}");
            Ok(())
        });
    }

    /// `providers.routes` and `providers.breaker` as an operator writes
    /// them (credentials from files), and each mistake named by its key.
    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail fixes the closure type
    fn routes_and_breaker_load_and_name_their_mistakes() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("sendgrid-key");
        std::fs::write(&key, "SG.from-file\n").unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(
            &f,
            format!(
                "[providers.routes]\nemail = [\"sendgrid\", \"smtp\"]\nsms = [\"vonage\"]\n\
                 [providers.breaker]\nmin-requests = 5\nopen-ms = 1000\n\
                 [providers.sendgrid]\napi-key-file = {key:?}\nfrom-email = \"no@acme.test\"\n\
                 [providers.vonage]\napi-key = \"k\"\napi-secret = \"s\"\nfrom = \"Acme\"\n\
                 [providers.smtp]\nhost = \"127.0.0.1\"\nfrom = \"no@acme.test\"\n"
            ),
        )
        .unwrap();
        figment::Jail::expect_with(|_| {
            let c = Config::load(Some(&f)).unwrap();
            c.validate().unwrap();
            assert_eq!(
                c.providers.sendgrid.as_ref().unwrap().api_key,
                "SG.from-file"
            );
            assert_eq!(c.providers.routes["email"], ["sendgrid", "smtp"]);
            assert_eq!(c.providers.breaker.min_requests, 5);
            assert_eq!(c.providers.breaker.failure_rate, 0.5, "a default");
            let d = c.providers.channel_defaults();
            assert_eq!(
                (d["email"].as_str(), d["sms"].as_str()),
                ("sendgrid", "vonage")
            );
            Ok(())
        });
        let c = Config::load(Some(&f)).unwrap();
        assert!(c.providers.vonage.is_some());
        let bad = |edit: &dyn Fn(&mut Config), expected: &str| {
            let mut c = c.clone();
            edit(&mut c);
            let err = c.validate().unwrap_err();
            assert!(err.contains(expected), "{err}");
        };
        bad(
            &|c| {
                c.providers
                    .routes
                    .insert("sms".into(), vec!["sendgrid".into()]);
            },
            "providers.routes.sms[0]: \"sendgrid\" does not send channel sms",
        );
        bad(
            &|c| {
                c.providers
                    .routes
                    .insert("sms".into(), vec!["vonage".into(), "twilio".into()]);
            },
            "providers.routes.sms[1]: \"twilio\" needs a [providers.twilio] section",
        );
        bad(
            &|c| {
                c.providers
                    .routes
                    .insert("email".into(), vec!["smtp".into(), "smtp".into()]);
            },
            "providers.routes.email[1]: \"smtp\" is named twice",
        );
        bad(
            &|c| {
                c.providers.routes.insert("fax".into(), vec!["smtp".into()]);
            },
            "providers.routes:",
        );
        bad(
            &|c| c.providers.breaker.failure_rate = 1.5,
            "providers.breaker.failure-rate",
        );
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail fixes the closure type
    fn layers_file_then_env() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(
            &f,
            "[log]\npartitions = 8\n[providers.defaults]\nemail = \"smtp\"\n[providers.smtp]\nhost = \"127.0.0.1\"\nport = 2525\nfrom = \"Clarion <noreply@example.test>\"\n",
        )
        .unwrap();
        figment::Jail::expect_with(|jail| {
            jail.set_env("CLARION__LOG__TOPIC_PREFIX", "x.");
            let c = Config::load(Some(&f)).unwrap();
            assert_eq!(c.log.partitions, 8);
            assert_eq!(c.log.topic_prefix, "x.");
            assert_eq!(c.providers.smtp.as_ref().unwrap().port, 2525);
            assert_eq!(c.providers.defaults["email"], "smtp");
            c.validate().unwrap();
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail fixes the closure type
    fn secrets_come_from_files_named_by_file_keys_and_from_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("twilio-token");
        std::fs::write(&token, "tw-secret-123\n").unwrap();
        let admin = dir.path().join("admin");
        std::fs::write(&admin, "adm_from_file").unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(
            &f,
            format!(
                "[auth]\nadmin-token-file = {admin:?}\n[providers.twilio]\naccount-sid = \"AC1\"\nauth-token-file = {token:?}\nfrom = \"+15145550000\"\n"
            ),
        )
        .unwrap();
        figment::Jail::expect_with(|jail| {
            let c = Config::load(Some(&f)).unwrap();
            assert_eq!(
                c.providers.twilio.as_ref().unwrap().auth_token,
                "tw-secret-123"
            );
            assert_eq!(
                c.admin_token_sha256().unwrap(),
                clarion_domain::tenant::sha256_hex(b"adm_from_file")
            );
            jail.set_env("CLARION__AUTH__ADMIN_TOKEN", "adm_from_env");
            let c = Config::load(Some(&f)).unwrap();
            // The file key wins over the plain key, wherever that came from.
            assert_eq!(
                c.admin_token_sha256().unwrap(),
                clarion_domain::tenant::sha256_hex(b"adm_from_file")
            );
            jail.set_env(
                "CLARION__PROVIDERS__TWILIO__AUTH_TOKEN_FILE",
                "/nonexistent/x",
            );
            let err = Config::load(Some(&f)).unwrap_err().to_string();
            assert!(err.contains("providers.twilio.auth-token-file"), "{err}");
            Ok(())
        });
        figment::Jail::expect_with(|jail| {
            jail.set_env("CLARION__AUTH__ADMIN_TOKEN", "adm_from_env");
            let c = Config::load(None).unwrap();
            assert_eq!(
                c.admin_token_sha256().unwrap(),
                clarion_domain::tenant::sha256_hex(b"adm_from_env")
            );
            Ok(())
        });
    }

    #[test]
    fn outbound_and_secrets_sections_load_and_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(
            &f,
            "[outbound]\nallow = [\"10.0.0.0/8\", \"hooks.internal\"]\n\
             [secrets]\nactive-key-id = \"k2\"\n[secrets.keys]\nk2 = \"env:X\"\n",
        )
        .unwrap();
        let c = Config::load(Some(&f)).unwrap();
        assert_eq!(c.outbound.allow.len(), 2);
        assert_eq!(c.outbound.send_timeout_ms, 30_000, "defaults fill the rest");
        assert_eq!(c.secrets.keys["k2"], "env:X");
        c.validate().unwrap();
        let mut bad = c.clone();
        bad.outbound.allow.push("http://x/".into());
        assert!(bad.validate().unwrap_err().contains("outbound.allow[2]"));
        let mut alert = Config::default();
        alert.dlq.alert_webhook_url = "https://ops.example/alerts".into();
        assert!(alert.validate().unwrap_err().contains("signing-secret"));
    }

    /// A `providers.push` section naming key files, as an operator writes it.
    fn push_toml(dir: &Path, extra: &str) -> PathBuf {
        let key = clarion_push_servers::apns::ProviderKey::generate();
        std::fs::write(dir.join("apns.p8"), &key.pem).unwrap();
        let account = clarion_push_servers::fcm::service_account_json(
            &clarion_push_servers::fcm::rsa_key_pem(),
            "https://oauth2.example.test/token",
        );
        std::fs::write(dir.join("fcm.json"), account).unwrap();
        let f = dir.join("c.toml");
        std::fs::write(
            &f,
            format!(
                "[[providers.push.apps]]\ntenant = \"acme\"\napp = \"fieldapp\"\n\
                 [providers.push.apps.apns]\nteam-id = \"TEAM123456\"\nkey-id = \"KEY7654321\"\n\
                 key-file = {:?}\ntopic = \"com.acme.field\"\nenvironment = \"sandbox\"\n\
                 [providers.push.apps.fcm]\nservice-account-file = {:?}\n\
                 base-url = \"http://127.0.0.1:9\"\n\
                 [[providers.push.apps]]\ntenant = \"globex\"\napp = \"fieldapp\"\n\
                 [providers.push.apps.fcm]\nservice-account-file = {:?}\n{extra}",
                dir.join("apns.p8"),
                dir.join("fcm.json"),
                dir.join("fcm.json"),
            ),
        )
        .unwrap();
        f
    }

    #[test]
    fn push_apps_load_with_key_files_and_make_push_the_default_of_channel_push() {
        let dir = tempfile::tempdir().unwrap();
        let c = Config::load(Some(&push_toml(dir.path(), ""))).unwrap();
        c.validate().unwrap();
        let apps = &c.providers.push_apps().unwrap().apps;
        assert_eq!(apps.len(), 2);
        let apns = apps[0].apns.as_ref().unwrap();
        assert!(apns.key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        assert_eq!(
            apns.environment,
            clarion_dispatch::apns::Environment::Sandbox
        );
        assert!(apps[1].apns.is_none());
        assert!(apps[1]
            .fcm
            .as_ref()
            .unwrap()
            .service_account_json
            .contains("client_email"));
        assert_eq!(c.providers.channel_defaults()["push"], "push");
        // An explicit default wins; without apps, push stays on the sink.
        let mut sink = c.clone();
        sink.providers.defaults.insert("push".into(), "sink".into());
        assert_eq!(sink.providers.channel_defaults()["push"], "sink");
        assert!(!Config::default()
            .providers
            .channel_defaults()
            .contains_key("push"));
        // The key's text never reaches a debug print of the configuration.
        assert!(!format!("{c:?}").contains("BEGIN PRIVATE KEY"));
    }

    #[test]
    fn bad_push_settings_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let base = Config::load(Some(&push_toml(dir.path(), ""))).unwrap();
        let check = |edit: &dyn Fn(&mut Config), want: &str| {
            let mut c = base.clone();
            edit(&mut c);
            let err = c.validate().unwrap_err();
            assert!(err.contains(want), "wanted {want:?} in {err:?}");
        };
        fn apps(c: &mut Config) -> &mut Vec<clarion_dispatch::push::PushAppConfig> {
            &mut c.providers.push.as_mut().unwrap().apps
        }
        check(
            &|c| apps(c)[0].apns.as_mut().unwrap().key_pem = "not a key".into(),
            "providers.push.apps[0].apns.key-pem:",
        );
        check(
            &|c| apps(c)[0].apns.as_mut().unwrap().team_id.clear(),
            "providers.push.apps[0].apns.team-id:",
        );
        check(
            &|c| apps(c)[0].apns.as_mut().unwrap().topic.clear(),
            "providers.push.apps[0].apns.topic:",
        );
        check(
            &|c| apps(c)[0].apns.as_mut().unwrap().base_url = Some("http://plain".into()),
            "providers.push.apps[0].apns.base-url:",
        );
        check(
            &|c| apps(c)[0].apns.as_mut().unwrap().ca_pem = Some("junk".into()),
            "providers.push.apps[0].apns.ca: no PEM certificate",
        );
        check(
            &|c| apps(c)[1].fcm.as_mut().unwrap().service_account_json = "not json".into(),
            "providers.push.apps[1].fcm.service-account:",
        );
        check(
            &|c| apps(c)[1].tenant = "Bad Tenant!".into(),
            "providers.push.apps[1].tenant:",
        );
        check(
            &|c| apps(c)[1].app = "a b".into(),
            "providers.push.apps[1].app:",
        );
        check(
            &|c| apps(c)[1].fcm = None,
            "providers.push.apps[1]: no credentials",
        );
        check(
            &|c| apps(c)[1].tenant = "acme".into(),
            "providers.push.apps[1]: tenant \"acme\" app \"fieldapp\" is configured twice",
        );
        check(
            &|c| {
                c.providers.push = None;
                c.providers.defaults.insert("push".into(), "push".into());
            },
            "providers.defaults.push: the push provider needs",
        );
        check(
            &|c| {
                c.providers.defaults.insert("email".into(), "push".into());
            },
            "providers.defaults.email: the push provider sends channel push only",
        );
        // Unknown keys and unreadable key files name themselves at load.
        let err = Config::load(Some(&push_toml(dir.path(), "colour = \"red\"\n")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("colour"), "{err}");
        let f = push_toml(dir.path(), "");
        let toml = std::fs::read_to_string(&f)
            .unwrap()
            .replace("apns.p8", "missing.p8");
        std::fs::write(&f, toml).unwrap();
        let err = Config::load(Some(&f)).unwrap_err().to_string();
        assert!(
            err.contains("providers.push.apps[0].apns.key-file"),
            "{err}"
        );
    }

    #[test]
    fn unknown_keys_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "[log]\npartitons = 8\n").unwrap();
        let err = Config::load(Some(&f)).unwrap_err().to_string();
        assert!(err.contains("partitons"), "{err}");
    }
}

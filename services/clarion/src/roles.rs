//! Roles: the gateway, router, dispatcher, projector, analytics, alerts and
//! exporter, each a set of tasks.
//! `clarion serve` runs all of them in one process; `clarion run <role>` one.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clarion_dispatch::push::PushProvider;
use clarion_dispatch::secrets::Keyring;
use clarion_dispatch::sendgrid::SendgridProvider;
use clarion_dispatch::smtp::{SmtpProvider, Tracking};
use clarion_dispatch::tenant_secrets::TenantSecrets;
use clarion_dispatch::twilio::TwilioProvider;
use clarion_dispatch::vonage::VonageProvider;
use clarion_dispatch::webhook::WebhookProvider;
use clarion_dispatch::{DispatchEffects, Dispatcher, Provider};
use clarion_domain::trigger::TriggerLimits;
use clarion_domain::Channel;
use clarion_gateway::GatewayState;
use clarion_log::EventLog;
use clarion_runtime::assignment::GroupOwner;
use clarion_runtime::colocated::Colocated;
use clarion_runtime::inbox::{HubEffects, InboxHub, InboxProjector};
use clarion_runtime::processor::NoEffects;
use clarion_runtime::projector::Projector;
use clarion_runtime::quarantine::PartitionReport;
use clarion_runtime::router::Router;
use clarion_runtime::{
    Clock, Effects, PartitionRunner, Processor, RunnerConfig, SystemClock, Topic, Topics,
};
use clarion_store::Store;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::{Config, PartitionAssignment};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    Gateway,
    Router,
    Dispatcher,
    Projector,
    Analytics,
    /// Anomaly alerts over delivery outcomes (issue #30, docs/alerts.md).
    Alerts,
    /// The warehouse exporter (issue #30, docs/warehouse.md).
    Exporter,
    /// The audit chain's notary (issue #32, docs/audit.md).
    Notary,
    /// Retention policies, legal holds, deferred erasures (issue #32,
    /// docs/compliance.md).
    Retention,
    /// SLA tracking, breaches and provider switches (issue #31, docs/slas.md).
    Sla,
}

impl Role {
    pub const ALL: [Role; 10] = [
        Role::Gateway,
        Role::Router,
        Role::Dispatcher,
        Role::Projector,
        Role::Analytics,
        Role::Alerts,
        Role::Exporter,
        Role::Notary,
        Role::Retention,
        Role::Sla,
    ];
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Gateway => "gateway",
            Role::Router => "router",
            Role::Dispatcher => "dispatcher",
            Role::Projector => "projector",
            Role::Analytics => "analytics",
            Role::Alerts => "alerts",
            Role::Exporter => "exporter",
            Role::Notary => "notary",
            Role::Retention => "retention",
            Role::Sla => "sla",
        })
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Role::ALL
            .into_iter()
            .find(|r| r.to_string() == s)
            .ok_or_else(|| format!("unknown role {s:?} (gateway, router, dispatcher, projector, analytics, alerts, exporter, notary, retention, sla)"))
    }
}

/// The connections and settings every role of a process shares.
#[derive(Clone)]
pub struct Node {
    pub cfg: Config,
    pub log: Arc<dyn EventLog>,
    pub store: Arc<dyn Store>,
    /// Set when the log and the store share one SQLite file.
    pub colocated: Option<Arc<Colocated>>,
    pub topics: Topics,
    pub clock: Arc<dyn Clock>,
    /// Rate limits and key last-use notes, shared by the gRPC and REST doors.
    pub security: Arc<clarion_gateway::access::Security>,
    /// Seals the secrets Clarion stores (`secrets` configuration).
    pub keyring: Arc<Keyring>,
    /// This process's stopped and paused processor partitions
    /// (`/v1/admin/partitions`).
    pub partitions: PartitionReport,
    /// Wakes the gateway's live inbox streams when this process's inbox
    /// projector moved a feed (`clarion serve`); a gateway alone polls.
    pub inbox_hub: Arc<InboxHub>,
    /// Seals and opens personal data (issue #32).
    pub personal: Arc<clarion_runtime::personal::Personal>,
    /// Destroys personal data keys (erasure, retention; issue #32).
    pub shredder: Arc<dyn clarion_runtime::retention::Shredder>,
    /// While [`Node::spawn_role`] starts a role with
    /// `runtime.partition-assignment = "group"`: collects its runners for
    /// the role's group instead of starting them for every partition.
    assigning: Arc<std::sync::Mutex<Option<Arc<GroupOwner>>>>,
}

impl Node {
    /// Opens the log and store named by the configuration and creates topics.
    pub async fn open(cfg: Config) -> anyhow::Result<Node> {
        cfg.validate().map_err(anyhow::Error::msg)?;
        if cfg.log.url.is_empty()
            && cfg.store.url.is_empty()
            && cfg.data_dir.join("log.db").exists()
            && !cfg.data_dir.join(crate::config::EMBEDDED_FILE).exists()
        {
            tracing::warn!(
                data_dir = %cfg.data_dir.display(),
                "the data directory holds log.db and store.db of an earlier release, which kept \
                 the log and the store in two files; starting afresh in clarion.db. To keep \
                 using them, set log.url and store.url to sqlite://DIR/log.db and sqlite://DIR/store.db"
            );
        }
        let (log, store, colocated) = match cfg.colocated_file() {
            Some(url) => {
                let path = url.strip_prefix("sqlite://").unwrap_or(&url);
                let c = Arc::new(
                    Colocated::open(path)
                        .with_context(|| format!("opening log and store {url}"))?,
                );
                (c.log(), c.store(), Some(c))
            }
            None => {
                let log = clarion_log::open(&cfg.log_url())
                    .await
                    .with_context(|| format!("opening log {}", cfg.log_url()))?;
                let store = clarion_store::open(&cfg.store_url())
                    .await
                    .with_context(|| format!("opening store {}", cfg.store_url()))?;
                (log, store, None)
            }
        };
        let keyring = Arc::new(
            Keyring::load(&cfg.secrets, &cfg.data_dir).context("loading the master keyring")?,
        );
        let mut topics = Topics::new(&cfg.log.topic_prefix, cfg.log.partitions);
        if let Some(configured) = topics.ensure(&*log).await.context("creating topics")? {
            tracing::warn!(
                configured,
                existing = topics.partitions,
                "log.partitions differs from the partition count of the existing topics, which \
                 is fixed once they are created: using the existing count"
            );
        }
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let personal = clarion_runtime::personal::Personal::new(store.clone(), keyring.clone());
        Ok(Node {
            shredder: personal.clone(),
            personal,
            security: security(&cfg, clock.clone()),
            cfg,
            log,
            store,
            colocated,
            topics,
            clock,
            keyring,
            partitions: PartitionReport::default(),
            inbox_hub: Arc::default(),
            assigning: Arc::default(),
        })
    }

    /// The node on another clock (tests: the manual clock).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Node {
        self.security = security(&self.cfg, clock.clone());
        self.clock = clock;
        self
    }

    fn runner_config(&self) -> RunnerConfig {
        RunnerConfig {
            max_batch: self.cfg.runtime.max_batch,
            poll_wait: Duration::from_millis(self.cfg.runtime.poll_wait_ms),
            linger: self.follower_linger(),
            effect_concurrency: self.cfg.runtime.effect_concurrency,
            ..RunnerConfig::default()
        }
    }

    /// `runtime.follower-linger-ms`: for the roles that follow the spine.
    fn follower_linger(&self) -> Duration {
        Duration::from_millis(self.cfg.runtime.follower_linger_ms)
    }

    pub fn gateway_state(&self, admin_token_sha256: Option<String>) -> GatewayState {
        GatewayState {
            log: self.log.clone(),
            store: self.store.clone(),
            topics: self.topics.clone(),
            clock: self.clock.clone(),
            limits: TriggerLimits {
                max_payload_bytes: self.cfg.limits.max_payload_bytes,
                max_recipients: self.cfg.limits.max_recipients,
                max_fanout: self.cfg.limits.max_fanout,
            },
            admin_token_sha256,
            projection_wait: Duration::from_secs(10),
            idempotency_ttl: Duration::from_secs(
                3600 * self.cfg.limits.idempotency_retention_hours,
            ),
            config_lock: Arc::default(),
            config_cache: Arc::default(),
            security: self.security.clone(),
            keyring: self.keyring.clone(),
            inbox_hub: self.inbox_hub.clone(),
            device_expiry: self.cfg.devices.expiry(),
            personal: self.personal.clone(),
            export: Some(Arc::new(clarion_gateway::rest_exports::ExportDoor {
                dir: self.cfg.compliance.export_dir(&self.cfg.data_dir),
                opener: crate::export_cli::opener(self),
            })),
            shredder: self.shredder.clone(),
        }
    }

    #[allow(clippy::too_many_arguments)]
    /// [`Node::spawn_partitions`] for the roles of other modules.
    pub(crate) fn spawn_partitions_pub<P: Processor>(
        &self,
        tasks: &mut JoinSet<anyhow::Result<()>>,
        topic: Topic,
        more_inputs: &[Topic],
        effects: Arc<dyn Effects>,
        make: impl Fn() -> P + Send + Sync + 'static,
        shutdown: &watch::Receiver<bool>,
    ) {
        self.spawn_partitions(tasks, topic, more_inputs, effects, make, shutdown)
    }

    fn spawn_partitions<P: Processor>(
        &self,
        tasks: &mut JoinSet<anyhow::Result<()>>,
        topic: Topic,
        more_inputs: &[Topic],
        effects: Arc<dyn Effects>,
        make: impl Fn() -> P + Send + Sync + 'static,
        shutdown: &watch::Receiver<bool>,
    ) {
        let make = move |_partition: u32| make();
        self.spawn_partitions_with(tasks, topic, more_inputs, effects, make, shutdown)
    }

    /// [`Self::spawn_partitions`] for a processor that is told its
    /// partition (e.g. to shard rows the partitions share).
    fn spawn_partitions_with<P: Processor>(
        &self,
        tasks: &mut JoinSet<anyhow::Result<()>>,
        topic: Topic,
        more_inputs: &[Topic],
        effects: Arc<dyn Effects>,
        make: impl Fn(u32) -> P + Send + Sync + 'static,
        shutdown: &watch::Receiver<bool>,
    ) {
        // A runner that fails starts over with a fresh processor; a record
        // it cannot process stops that partition only (until an operator
        // parks it), never the process.
        let make = Arc::new(make);
        let node = self.clone();
        let more_inputs = more_inputs.to_vec();
        let start = move |p: u32, sd: watch::Receiver<bool>| {
            let of_p = make.clone();
            let make: clarion_runtime::runner::Restart<P> = Arc::new(move || of_p(p));
            let mut runner = PartitionRunner::new(
                make(),
                effects.clone(),
                node.log.clone(),
                node.store.clone(),
                node.topics.clone(),
                topic,
                p,
                node.clock.clone(),
                node.runner_config(),
            )
            .with_inputs(&more_inputs)
            .with_restart(make.clone())
            .with_report(node.partitions.clone())
            .with_personal(node.personal.clone());
            if let Some(c) = &node.colocated {
                runner = runner.with_colocated(c.clone());
            }
            // Several processes share the partitions: fence out one that
            // lost its partition without noticing.
            if node.cfg.runtime.partition_assignment == PartitionAssignment::Group {
                runner = runner.with_fencing();
            }
            async move {
                runner
                    .run(sd)
                    .await
                    .with_context(|| format!("{topic} partition {p}"))
            }
        };
        let group = self.assigning.lock().expect("assigning lock").clone();
        match group {
            // The role's group starts and stops them (`spawn_role`).
            Some(owner) => {
                let start = Arc::new(start);
                owner.add(
                    self.topics.name(topic),
                    self.topics.partitions_of(topic),
                    Arc::new(move |p, sd| {
                        let run = start(p, sd);
                        Box::pin(async move {
                            if let Err(e) = run.await {
                                tracing::error!(error = format!("{e:#}"), "runner failed");
                            }
                        })
                    }),
                );
            }
            None => {
                for p in 0..self.topics.partitions_of(topic) {
                    tasks.spawn(start(p, shutdown.clone()));
                }
            }
        }
    }

    /// Tenants' own providers, routes and SLA demotions over the
    /// operator's provider sections (issue #31, docs/providers.md).
    fn tenant_providers(&self) -> Arc<clarion_dispatch::tenant_providers::TenantProviders> {
        let p = &self.cfg.providers;
        Arc::new(clarion_dispatch::tenant_providers::TenantProviders::new(
            self.store.clone(),
            self.keyring.clone(),
            clarion_dispatch::tenant_providers::OperatorProviders {
                sendgrid: p.sendgrid.clone(),
                vonage: p.vonage.clone(),
                twilio: p.twilio.clone(),
            },
            Duration::from_millis(p.tenant_cache_ms),
        ))
    }

    async fn providers(&self) -> anyhow::Result<Vec<Arc<dyn Provider>>> {
        let mut out: Vec<Arc<dyn Provider>> = Vec::new();
        if let Some(smtp) = &self.cfg.providers.smtp {
            let tracking = if self.cfg.tracking.enabled {
                Some(Tracking {
                    base_url: self.cfg.tracking.base_url.clone(),
                    secret: clarion_gateway::tracking::secret(&*self.store, &self.keyring).await?,
                    token_ttl: Duration::from_secs(
                        86_400 * u64::from(self.cfg.tracking.token_ttl_days),
                    ),
                })
            } else {
                None
            };
            out.push(Arc::new(
                SmtpProvider::new(smtp, tracking).map_err(anyhow::Error::msg)?,
            ));
        }
        if let Some(tw) = &self.cfg.providers.twilio {
            out.push(Arc::new(
                TwilioProvider::new(tw).map_err(anyhow::Error::msg)?,
            ));
        }
        if let Some(sg) = &self.cfg.providers.sendgrid {
            out.push(Arc::new(
                SendgridProvider::new(sg).map_err(anyhow::Error::msg)?,
            ));
        }
        if let Some(v) = &self.cfg.providers.vonage {
            out.push(Arc::new(
                VonageProvider::new(v).map_err(anyhow::Error::msg)?,
            ));
        }
        if let Some(push) = self.cfg.providers.push_apps() {
            out.push(Arc::new(
                PushProvider::new(push, self.keyring.clone(), self.clock.clone())
                    .map_err(anyhow::Error::msg)?,
            ));
        }
        if let Some(wh) = &self.cfg.providers.webhook {
            let secrets = Arc::new(TenantSecrets::new(self.store.clone(), self.keyring.clone()));
            let operator_urls = (!self.cfg.dlq.alert_webhook_url.is_empty())
                .then(|| self.cfg.dlq.alert_webhook_url.clone())
                .into_iter()
                .collect();
            out.push(Arc::new(
                WebhookProvider::new(wh, &self.cfg.outbound.guard(), secrets)
                    .map_err(anyhow::Error::msg)?
                    .with_operator_urls(operator_urls)
                    .with_clock(self.clock.clone()),
            ));
        }
        Ok(out)
    }

    /// The provider per channel when a step names none: the configured
    /// ones, and the built-in inbox for in_app unless configured otherwise.
    fn default_providers(&self) -> HashMap<Channel, String> {
        let mut out: HashMap<Channel, String> = self
            .cfg
            .providers
            .channel_defaults()
            .iter()
            .filter_map(|(c, p)| c.parse().ok().map(|c| (c, p.clone())))
            .collect();
        out.entry(Channel::InApp)
            .or_insert_with(|| clarion_dispatch::dispatcher::INBOX.to_string());
        out
    }

    /// Starts the tasks of `role`. Processor roles run until `shutdown`; the
    /// gateway serves gRPC on the configured address.
    pub async fn spawn_role(
        &self,
        role: Role,
        tasks: &mut JoinSet<anyhow::Result<()>>,
        admin_token_sha256: Option<String>,
        shutdown: &watch::Receiver<bool>,
    ) -> anyhow::Result<()> {
        let owner = (self.cfg.runtime.partition_assignment == PartitionAssignment::Group)
            .then(|| GroupOwner::new(role.to_string()));
        *self.assigning.lock().expect("assigning lock") = owner.clone();
        let spawned = self
            .spawn_role_tasks(role, tasks, admin_token_sha256, shutdown)
            .await;
        *self.assigning.lock().expect("assigning lock") = None;
        spawned?;
        if let Some(owner) = owner.filter(|o| !o.topics().is_empty()) {
            let (log, store, sd) = (self.log.clone(), self.store.clone(), shutdown.clone());
            let group =
                clarion_runtime::assignment::group_id(&self.topics.prefix, &role.to_string());
            let timeout = Duration::from_millis(self.cfg.runtime.group_session_timeout_ms);
            tasks.spawn(async move {
                clarion_runtime::assignment::run_member(
                    log,
                    store,
                    group.clone(),
                    owner,
                    timeout,
                    sd,
                )
                .await
                .with_context(|| format!("partition group {group}"))
            });
        }
        Ok(())
    }

    async fn spawn_role_tasks(
        &self,
        role: Role,
        tasks: &mut JoinSet<anyhow::Result<()>>,
        admin_token_sha256: Option<String>,
        shutdown: &watch::Receiver<bool>,
    ) -> anyhow::Result<()> {
        match role {
            Role::Gateway => self.spawn_gateway(tasks, admin_token_sha256, shutdown)?,
            Role::Router => self.spawn_router(tasks, shutdown),
            Role::Dispatcher => self.spawn_dispatcher(tasks, shutdown).await?,
            Role::Projector => self.spawn_projector(tasks, shutdown),
            Role::Analytics => self.spawn_analytics(tasks, shutdown),
            Role::Alerts => self.spawn_alerts(tasks, shutdown)?,
            Role::Exporter => self.spawn_exporter(tasks, shutdown)?,
            Role::Notary => self.spawn_notary(tasks, shutdown)?,
            Role::Retention => self.spawn_retention(tasks, shutdown),
            Role::Sla => self.spawn_sla(tasks, shutdown)?,
        }
        Ok(())
    }

    fn spawn_gateway(
        &self,
        tasks: &mut JoinSet<anyhow::Result<()>>,
        admin_token_sha256: Option<String>,
        shutdown: &watch::Receiver<bool>,
    ) -> anyhow::Result<()> {
        let state = self.gateway_state(admin_token_sha256);
        let addr = self.cfg.grpc.listen;
        let incoming = clarion_gateway::bind_grpc(addr)
            .map_err(|e| anyhow::anyhow!("gRPC server on {addr}: cannot listen: {e}"))?;
        let sd = shutdown.clone();
        tasks.spawn(async move {
            clarion_gateway::serve_grpc(state, incoming, addr, sd)
                .await
                .with_context(|| format!("gRPC server on {addr}"))
        });
        // Live inbox streams never end by themselves: at shutdown they are
        // ended, or the servers' graceful shutdown would wait for them.
        let (hub, mut sd) = (self.inbox_hub.clone(), shutdown.clone());
        tasks.spawn(async move {
            let _ = sd.wait_for(|s| *s).await;
            hub.close();
            Ok(())
        });
        Ok(())
    }

    /// The dead-letter alerting of the configuration (`dlq.*`).
    fn dlq_alerts(&self) -> clarion_runtime::router::DlqAlerts {
        clarion_runtime::router::DlqAlerts {
            threshold: self.cfg.dlq.alert_threshold,
            per_tenant: self.cfg.dlq.tenant_thresholds.clone(),
            webhook_url: (!self.cfg.dlq.alert_webhook_url.is_empty())
                .then(|| self.cfg.dlq.alert_webhook_url.clone()),
        }
    }

    fn spawn_router(
        &self,
        tasks: &mut JoinSet<anyhow::Result<()>>,
        shutdown: &watch::Receiver<bool>,
    ) {
        let defaults = self.default_providers();
        let partitions = self.topics.partitions_of(Topic::Triggers);
        let alerts = self.dlq_alerts();
        let retry = clarion_runtime::router::RetryPolicies {
            default: self.cfg.retry.default.clone(),
            channels: self.cfg.retry.channels.clone(),
            tenants: self.cfg.retry.tenants.clone(),
        };
        let device_expiry = self.cfg.devices.expiry();
        // Validated with the configuration.
        let release_spread = self.cfg.scheduling.release_spread().unwrap_or_default();
        let personal = self.personal.clone();
        // Outcomes come back to the router on the same partition.
        self.spawn_partitions(
            tasks,
            Topic::Triggers,
            &[Topic::Deliveries],
            Arc::new(NoEffects),
            move || {
                Router::new(defaults.clone())
                    .with_partitions(partitions)
                    .with_retry(retry.clone())
                    .with_dlq_alerts(alerts.clone())
                    .with_device_expiry(device_expiry)
                    .with_release_spread(release_spread)
                    .with_personal(personal.clone())
            },
            shutdown,
        );
    }

    async fn spawn_dispatcher(
        &self,
        tasks: &mut JoinSet<anyhow::Result<()>>,
        shutdown: &watch::Receiver<bool>,
    ) -> anyhow::Result<()> {
        let effects = Arc::new(
            DispatchEffects::new(self.providers().await?)
                .with_send_timeout(Duration::from_millis(self.cfg.outbound.send_timeout_ms))
                .with_routes(
                    self.cfg.providers.routes.clone(),
                    &self.cfg.providers.breaker,
                )
                .with_clock(self.clock.clone())
                .with_personal(self.personal.clone())
                .with_tenant_providers(self.tenant_providers()),
        );
        let personal = self.personal.clone();
        // With the log in the store's file, routers append requests
        // in their commits, exactly once: no dedup rows needed.
        let colocated = self.colocated.is_some();
        self.spawn_partitions(
            tasks,
            Topic::Dispatch,
            &[],
            effects,
            move || {
                if colocated {
                    Dispatcher::colocated()
                } else {
                    Dispatcher::new()
                }
                .with_personal(personal.clone())
            },
            shutdown,
        );
        Ok(())
    }

    fn spawn_projector(
        &self,
        tasks: &mut JoinSet<anyhow::Result<()>>,
        shutdown: &watch::Receiver<bool>,
    ) {
        // A log that keeps an index (the embedded one) answers a
        // notification's history itself: the projector then has
        // nothing to do on the recipient streams and does not read
        // them. Otherwise one runner per partition reads every
        // recipient stream (the projector's writes are idempotent
        // puts, so the interleaving of topics does not matter).
        // Config has its own partitions.
        if !self.log.keeps_index() {
            self.spawn_partitions(
                tasks,
                Topic::Triggers,
                &[Topic::Notifications, Topic::Dispatch, Topic::Deliveries],
                Arc::new(NoEffects),
                || Projector,
                shutdown,
            );
        }
        self.spawn_partitions(
            tasks,
            Topic::Config,
            &[],
            Arc::new(NoEffects),
            || Projector,
            shutdown,
        );
        // The inbox feeds, on either log: items and marks are on the
        // deliveries topic. After each commit it wakes this process's live
        // streams through the hub.
        self.inbox_hub.attach();
        self.spawn_partitions(
            tasks,
            Topic::Deliveries,
            &[],
            Arc::new(HubEffects(self.inbox_hub.clone())),
            InboxProjector::default,
            shutdown,
        );
    }
}

impl Node {
    /// The analytics projection (docs/analytics.md): one runner per
    /// recipient partition reads what was dispatched, the outcomes and
    /// the engagement of that partition's recipients.
    fn spawn_analytics(
        &self,
        tasks: &mut JoinSet<anyhow::Result<()>>,
        shutdown: &watch::Receiver<bool>,
    ) {
        let retention = self.cfg.analytics.retention();
        self.spawn_partitions_with(
            tasks,
            Topic::Dispatch,
            &[Topic::Deliveries, Topic::Triggers],
            Arc::new(NoEffects),
            move |p| clarion_analytics::AnalyticsProcessor::new(retention, p),
            shutdown,
        );
    }

    /// The alerts role: a counter on each deliveries partition and, unless
    /// `alerts.evaluate` is off, the evaluator with the configured sinks.
    fn spawn_alerts(
        &self,
        tasks: &mut JoinSet<anyhow::Result<()>>,
        shutdown: &watch::Receiver<bool>,
    ) -> anyhow::Result<()> {
        if !self.cfg.alerts.enabled {
            tracing::info!("alerts.enabled is false: no anomaly alerts");
            return Ok(());
        }
        let colocated = self.colocated.is_some();
        self.spawn_partitions(
            tasks,
            Topic::Deliveries,
            &[],
            Arc::new(NoEffects),
            move || {
                if colocated {
                    clarion_runtime::alerts::AlertCounter::colocated()
                } else {
                    clarion_runtime::alerts::AlertCounter::new()
                }
            },
            shutdown,
        );
        if self.cfg.alerts.evaluate {
            let evaluator = clarion_runtime::alerts::Evaluator::new(
                self.store.clone(),
                self.log.clone(),
                self.topics.clone(),
                self.clock.clone(),
                self.cfg.alerts.evaluator(),
                self.alert_sinks()?,
            );
            let sd = shutdown.clone();
            tasks.spawn(async move {
                evaluator.run(sd).await;
                Ok(())
            });
        }
        Ok(())
    }
}

impl Node {
    /// The warehouse's destination (`warehouse.url`, default
    /// `<data-dir>/warehouse`).
    pub fn warehouse_destination(&self) -> anyhow::Result<clarion_warehouse::Destination> {
        clarion_warehouse::Destination::open_with(
            &self.cfg.warehouse.url,
            &self.cfg.data_dir.join("warehouse"),
            &self.cfg.warehouse.s3.options(),
        )
        .map_err(anyhow::Error::msg)
    }

    /// The exporter's settings from the configuration.
    pub fn exporter_config(&self) -> clarion_warehouse::ExporterConfig {
        let w = &self.cfg.warehouse;
        clarion_warehouse::ExporterConfig {
            max_file_age_ms: w.max_file_age_ms as i64,
            max_file_rows: w.max_file_rows,
            max_file_bytes: w.max_file_bytes,
            max_batch: self.cfg.runtime.max_batch,
            poll_wait: Duration::from_millis(self.cfg.runtime.poll_wait_ms),
            linger: self.follower_linger(),
        }
    }

    /// The exporter of one partition, under the state `name`.
    pub fn exporter(
        &self,
        name: &str,
        partition: u32,
        dest: clarion_warehouse::Destination,
    ) -> clarion_warehouse::Exporter {
        clarion_warehouse::Exporter::new(
            name,
            self.log.clone(),
            self.store.clone(),
            self.topics.clone(),
            partition,
            self.clock.clone(),
            dest,
            self.exporter_config(),
        )
        .with_recipients(clarion_warehouse::pii::Recipients::new(
            self.personal.clone(),
            self.keyring.clone(),
        ))
    }

    /// One exporter per recipient partition: it reads every recipient
    /// stream of its partition (docs/warehouse.md).
    fn spawn_exporter(
        &self,
        tasks: &mut JoinSet<anyhow::Result<()>>,
        shutdown: &watch::Receiver<bool>,
    ) -> anyhow::Result<()> {
        let dest = self.warehouse_destination()?;
        for p in 0..self.topics.partitions_of(Topic::Deliveries) {
            let exporter = self.exporter(clarion_warehouse::exporter::LIVE, p, dest.clone());
            let sd = shutdown.clone();
            tasks.spawn(async move {
                exporter
                    .run(sd)
                    .await
                    .with_context(|| format!("warehouse exporter partition {p}"))
            });
        }
        Ok(())
    }
}

/// The gateway's rate limits and exposure settings from the configuration.
fn security(cfg: &Config, clock: Arc<dyn Clock>) -> Arc<clarion_gateway::access::Security> {
    clarion_runtime::metric_labels::set_tenant_labels(cfg.security.metrics_tenant_labels);
    Arc::new(clarion_gateway::access::Security {
        limiter: clarion_gateway::ratelimit::TenantLimiter::new(&cfg.rate_limit, clock),
        key_usage: Default::default(),
        reflection: cfg.security.reflection,
        last_used_flush: Duration::from_millis(cfg.security.key_last_used_flush_ms.max(10)),
    })
}

impl Node {
    /// The HTTP routes a gateway adds to the side server: engagement
    /// tracking, the REST API and GraphQL.
    pub async fn tracking_routes(&self) -> anyhow::Result<axum::Router> {
        self.tracking_routes_with_admin(None).await
    }

    /// [`Node::tracking_routes`], the console signing the operator in with
    /// the admin token of this hash.
    pub async fn tracking_routes_with_admin(
        &self,
        admin_token_sha256: Option<String>,
    ) -> anyhow::Result<axum::Router> {
        let secret = clarion_gateway::tracking::secret(&*self.store, &self.keyring).await?;
        let state = self.gateway_state(admin_token_sha256);
        let policy = clarion_gateway::tracking::TokenPolicy {
            accept_legacy: self.cfg.tracking.accept_legacy_tokens,
        };
        let mut routes = clarion_gateway::tracking::routes(state.clone(), secret, policy)
            .merge(clarion_gateway::rest::routes(state.clone()))
            .merge(clarion_gateway::graphql::routes(state.clone()));
        if self.cfg.console.enabled {
            let key = clarion_console::session::secret(&*self.store, &self.keyring)
                .await
                .map_err(|e| anyhow::anyhow!("console session key: {e}"))?;
            let console =
                clarion_console::Console::new(state.clone(), key, self.cfg.console.clone())
                    .with_dlq_alerts(self.dlq_alerts());
            routes = routes.merge(clarion_console::routes(console));
        }
        if let Some(tw) = &self.cfg.providers.twilio {
            if let Some(cb) = &tw.status_callback_url {
                routes = routes.merge(clarion_gateway::inbound::twilio_routes(
                    state,
                    tw.auth_token.clone(),
                    cb.clone(),
                ));
            }
        }
        Ok(routes)
    }
}

impl Node {
    /// The notary's signing key (`audit.signing-key`, or the one generated
    /// in the data directory).
    pub fn audit_key(&self) -> anyhow::Result<Arc<clarion_audit::AuditKey>> {
        Ok(Arc::new(
            clarion_audit::AuditKey::load(&self.cfg.audit, &self.cfg.data_dir)
                .context("loading the audit signing key")?,
        ))
    }

    /// The notary of one partition (docs/audit.md).
    pub fn notary(
        &self,
        part: clarion_audit::walk::Part,
        key: Arc<clarion_audit::AuditKey>,
    ) -> clarion_audit::Notary {
        let a = &self.cfg.audit;
        clarion_audit::Notary::new(
            self.log.clone(),
            self.store.clone(),
            part,
            self.clock.clone(),
            key,
            clarion_audit::NotaryConfig {
                max_batch: self.cfg.runtime.max_batch,
                poll_wait: Duration::from_millis(self.cfg.runtime.poll_wait_ms),
                linger: self.follower_linger(),
                checkpoint_every: a.checkpoint_every,
                checkpoint_interval_ms: a.checkpoint_interval_ms as i64,
            },
        )
    }

    /// One notary per partition of every topic: the single chainer of its
    /// partition (docs/audit.md).
    fn spawn_notary(
        &self,
        tasks: &mut JoinSet<anyhow::Result<()>>,
        shutdown: &watch::Receiver<bool>,
    ) -> anyhow::Result<()> {
        let key = self.audit_key()?;
        for part in clarion_audit::walk::parts(&self.topics) {
            let what = format!("notary of {} partition {}", part.name, part.partition);
            let notary = self.notary(part, key.clone());
            let sd = shutdown.clone();
            tasks.spawn(async move { notary.run(sd).await.context(what) });
        }
        Ok(())
    }

    /// The retention role (docs/compliance.md): one runner per config
    /// partition keeps its tenants' policies, holds and deferred erasures,
    /// and runs their retention on the runtime clock's ticks.
    fn spawn_retention(
        &self,
        tasks: &mut JoinSet<anyhow::Result<()>>,
        shutdown: &watch::Receiver<bool>,
    ) {
        let job = Arc::new(clarion_runtime::retention::RetentionJob::new(
            self.store.clone(),
            self.log.clone(),
            self.topics.clone(),
            self.shredder.clone(),
        ));
        let tick_ms = 1000 * self.cfg.retention.tick_seconds.max(1) as i64;
        self.spawn_partitions(
            tasks,
            Topic::Config,
            &[],
            job,
            move || clarion_runtime::retention::RetentionProcessor::new(tick_ms),
            shutdown,
        );
    }
}

//! `clarion`: the one binary.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use clarion::bootstrap;
use clarion::{Config, Node, Role};
use tokio::sync::watch;
use tokio::task::JoinSet;

// Every event is decoded, re-encoded and copied a few times between the log,
// the processors and the store: the allocator is on the hot path. glibc
// malloc showed as ~30% of the server's user time; mimalloc cut that, and
// jemalloc delivered 7-11% more than mimalloc in back-to-back runs: much of
// the memory is allocated on the async workers and freed on the SQLite
// writer thread, and mimalloc's delayed cross-thread frees showed in the
// profile (docs/benchmarks.md).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Clarion: multi-tenant notifications, event-sourced.
///
/// Configuration layers (later wins): built-in defaults, `clarion.toml` in the
/// working directory (or --config FILE), environment variables
/// `CLARION__SECTION__KEY` (e.g. CLARION__LOG__URL=kafka://127.0.0.1:9092),
/// then the flags below.
#[derive(Parser)]
#[command(name = "clarion", version, about, long_about)]
struct Cli {
    /// TOML configuration file (default: ./clarion.toml when it exists).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run every role in one process on the embedded backends (default: the
    /// log and the store in one file, ./data/clarion.db). On first start creates an admin
    /// token and a "demo" tenant with a `welcome` workflow, and prints both
    /// credentials once.
    Serve {
        /// Leave a role out (repeatable), e.g. `--without exporter` on a
        /// machine where another process exports, or to measure what a
        /// role costs.
        #[arg(long, value_name = "ROLE")]
        without: Vec<Role>,
        #[command(flatten)]
        overrides: Overrides,
    },
    /// Run the given roles of a distributed deployment (e.g. against Kafka):
    /// gateway, router, dispatcher, projector, analytics, alerts, exporter, notary,
    /// retention, sla.
    Run {
        #[arg(required = true, value_name = "ROLE")]
        roles: Vec<Role>,
        #[command(flatten)]
        overrides: Overrides,
    },
    /// Tamper evidence and auditor replay: verify the log's hash chain,
    /// replay what was known at a time, print the notary's public key
    /// (docs/audit.md).
    Audit {
        #[command(subcommand)]
        cmd: clarion::audit_cli::AuditCmd,
    },
    /// The warehouse's Parquet tables (docs/warehouse.md).
    Warehouse {
        #[command(subcommand)]
        cmd: clarion::warehouse_cli::WarehouseCmd,
    },
    /// Secure export of a tenant's notification history: masked,
    /// watermarked, signed, optionally age-encrypted (docs/export.md);
    /// `verify` and `public-key` subcommands.
    Export(clarion::export_cli::ExportArgs),
    /// Manage workflow definitions of a running deployment (over gRPC).
    Workflow {
        #[command(subcommand)]
        cmd: clarion::client::WorkflowCmd,
        #[command(flatten)]
        client: clarion::client::ClientArgs,
    },
    /// Set or show the tenant's send limits across all its workflows (over gRPC).
    Limits {
        #[command(subcommand)]
        cmd: clarion::client::LimitsCmd,
        #[command(flatten)]
        client: clarion::client::ClientArgs,
    },
    /// Tenant settings of a running deployment (over gRPC).
    Tenant {
        #[command(subcommand)]
        cmd: clarion::client::TenantCmd,
        #[command(flatten)]
        client: clarion::client::ClientArgs,
    },
    /// Work the dead-letter queue of a running deployment (over gRPC).
    Dlq {
        #[command(subcommand)]
        cmd: clarion::client::DlqCmd,
        #[command(flatten)]
        client: clarion::client::ClientArgs,
    },
    /// Create, list and revoke the tenant's API keys (over gRPC; admin scope).
    Keys {
        #[command(subcommand)]
        cmd: clarion::client::KeysCmd,
        #[command(flatten)]
        client: clarion::client::ClientArgs,
    },
    /// A subscriber's notification preferences: get, set, history, and
    /// evaluate a send (over gRPC; docs/preferences.md).
    Preferences {
        #[command(subcommand)]
        cmd: clarion::client::PreferencesCmd,
        #[command(flatten)]
        client: clarion::client::ClientArgs,
    },
    /// The tenant's topics: register, list, get (over gRPC).
    Topics {
        #[command(subcommand)]
        cmd: clarion::client::TopicsCmd,
        #[command(flatten)]
        client: clarion::client::ClientArgs,
    },
    /// The tenant's mobile and web apps and their deep links: put, get,
    /// list (over gRPC; docs/push.md).
    Apps {
        #[command(subcommand)]
        cmd: clarion::client_devices::AppsCmd,
        #[command(flatten)]
        client: clarion::client::ClientArgs,
    },
    /// A subscriber's push devices: register, list, rotate, revoke (over
    /// gRPC; docs/push.md).
    Devices {
        #[command(subcommand)]
        cmd: clarion::client_devices::DevicesCmd,
        #[command(flatten)]
        client: clarion::client::ClientArgs,
    },
    /// Recurring reminders: create, list, get, pause, resume, delete (over
    /// gRPC; docs/scheduling.md).
    Schedule {
        #[command(subcommand)]
        cmd: clarion::client_schedules::ScheduleCmd,
        #[command(flatten)]
        client: clarion::client::ClientArgs,
    },
    /// Subscriber tokens for end users' apps, and GDPR erasure (over gRPC;
    /// admin scope). Also `clarion subscriber`.
    #[command(alias = "subscriber")]
    Subscribers {
        #[command(subcommand)]
        cmd: clarion::client::SubscribersCmd,
        #[command(flatten)]
        client: clarion::client::ClientArgs,
    },
    /// Legal holds: place, list, extend, release (over gRPC; docs/compliance.md).
    Holds {
        #[command(subcommand)]
        cmd: clarion::client_compliance::HoldsCmd,
        #[command(flatten)]
        client: clarion::client::ClientArgs,
    },
    /// The tenant's retention policy: set, show (over gRPC; docs/compliance.md).
    Retention {
        #[command(subcommand)]
        cmd: clarion::client_compliance::RetentionCmd,
        #[command(flatten)]
        client: clarion::client::ClientArgs,
    },
    /// The tenant's own provider credentials (write-only) and routes (over
    /// gRPC; docs/providers.md).
    Providers {
        #[command(subcommand)]
        cmd: clarion::client_providers::ProvidersCmd,
        #[command(flatten)]
        client: clarion::client::ClientArgs,
    },
    /// The tenant's SLAs and their compliance (over gRPC; docs/slas.md).
    Slas {
        #[command(subcommand)]
        cmd: clarion::client_providers::SlasCmd,
        #[command(flatten)]
        client: clarion::client::ClientArgs,
    },
    /// Records that stopped a processor partition: list them, inspect one,
    /// park one so its partition goes on (over gRPC, with the admin token).
    Quarantine {
        #[command(subcommand)]
        cmd: clarion::client::QuarantineCmd,
        #[command(flatten)]
        admin: clarion::client::AdminArgs,
    },
}

#[derive(Args, Default)]
struct Overrides {
    /// Directory of the embedded log and store files [config: data-dir].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Event log URL: sqlite://PATH[?sync=full&compression=lz4] or kafka://HOST:PORT[,HOST:PORT][?fetch_wait_ms=N&linger_ms=N]
    /// [config: log.url].
    #[arg(long, value_name = "URL")]
    log_url: Option<String>,
    /// Store URL: sqlite://PATH or scylla://HOST:PORT/KEYSPACE [config: store.url].
    #[arg(long, value_name = "URL")]
    store_url: Option<String>,
    /// gRPC listen address [config: grpc.listen, default 0.0.0.0:50051].
    #[arg(long, value_name = "ADDR")]
    grpc_listen: Option<SocketAddr>,
    /// HTTP health/metrics listen address [config: http.listen, default 0.0.0.0:8080].
    #[arg(long, value_name = "ADDR")]
    http_listen: Option<SocketAddr>,
}

impl Overrides {
    fn apply(self, cfg: &mut Config) {
        if let Some(d) = self.data_dir {
            cfg.data_dir = d;
        }
        if let Some(u) = self.log_url {
            cfg.log.url = u;
        }
        if let Some(u) = self.store_url {
            cfg.store.url = u;
        }
        if let Some(a) = self.grpc_listen {
            cfg.grpc.listen = a;
        }
        if let Some(a) = self.http_listen {
            cfg.http.listen = a;
        }
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut cfg = Config::load(cli.config.as_deref()).context("loading configuration")?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    // A node logs and, if configured, traces (the exporter needs the
    // runtime); the CLI's commands only log.
    let node = |cfg: &Config| {
        cfg.telemetry.check()?;
        rt.block_on(async { clarion::telemetry::init(&cfg.telemetry) })
    };
    if !matches!(cli.command, Command::Serve { .. } | Command::Run { .. }) {
        clarion::telemetry::init_logs();
    }
    match cli.command {
        Command::Serve { without, overrides } => {
            overrides.apply(&mut cfg);
            let _traces = node(&cfg)?;
            let roles = Role::ALL.iter().filter(|r| !without.contains(r)).copied();
            rt.block_on(run(cfg, roles.collect(), true))
        }
        Command::Run { roles, overrides } => {
            overrides.apply(&mut cfg);
            let _traces = node(&cfg)?;
            rt.block_on(run(cfg, roles, false))
        }
        Command::Warehouse { cmd } => rt.block_on(clarion::warehouse_cli::warehouse(cfg, cmd)),
        Command::Audit { cmd } => rt.block_on(clarion::audit_cli::audit(cfg, cmd)),
        Command::Export(args) => rt.block_on(clarion::export_cli::export(cfg, args)),
        Command::Workflow { cmd, client } => rt.block_on(clarion::client::workflow(client, cmd)),
        Command::Dlq { cmd, client } => rt.block_on(clarion::client::dlq(client, cmd)),
        Command::Limits { cmd, client } => rt.block_on(clarion::client::limits(client, cmd)),
        Command::Keys { cmd, client } => rt.block_on(clarion::client::keys(client, cmd)),
        Command::Tenant { cmd, client } => rt.block_on(clarion::client::tenant(client, cmd)),
        Command::Preferences { cmd, client } => {
            rt.block_on(clarion::client::preferences(client, cmd))
        }
        Command::Topics { cmd, client } => rt.block_on(clarion::client::topics(client, cmd)),
        Command::Apps { cmd, client } => rt.block_on(clarion::client_devices::apps(client, cmd)),
        Command::Devices { cmd, client } => {
            rt.block_on(clarion::client_devices::devices(client, cmd))
        }
        Command::Schedule { cmd, client } => {
            rt.block_on(clarion::client_schedules::schedule(client, cmd))
        }
        Command::Subscribers { cmd, client } => {
            rt.block_on(clarion::client::subscribers(client, cmd))
        }
        Command::Holds { cmd, client } => {
            rt.block_on(clarion::client_compliance::holds(client, cmd))
        }
        Command::Retention { cmd, client } => {
            rt.block_on(clarion::client_compliance::retention(client, cmd))
        }
        Command::Providers { cmd, client } => {
            rt.block_on(clarion::client_providers::providers(client, cmd))
        }
        Command::Slas { cmd, client } => rt.block_on(clarion::client_providers::slas(client, cmd)),
        Command::Quarantine { cmd, admin } => rt.block_on(clarion::client::quarantine(admin, cmd)),
    }
}

async fn run(cfg: Config, roles: Vec<Role>, serve: bool) -> anyhow::Result<()> {
    // The analytics latencies are real histograms (bucketed like the
    // projection's), so dashboards can aggregate them across processes.
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Full("clarion_analytics_latency_seconds".into()),
            &clarion_analytics::metrics::latency_buckets_s(),
        )
        .context("analytics latency buckets")?
        .install_recorder()
        .context("installing the metrics recorder")?;
    // Histogram samples queue in the recorder until upkeep folds them into
    // their summaries: without it they would pile up between scrapes, or
    // forever with no scraper.
    {
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(5));
            loop {
                every.tick().await;
                metrics.run_upkeep();
            }
        });
    }
    let node = Node::open(cfg.clone()).await?;
    let (shutdown_tx, shutdown) = watch::channel(false);
    let (ready_tx, ready) = watch::channel(false);
    let mut tasks = JoinSet::new();

    // Processors first: the bootstrap waits for the projector.
    for role in roles.iter().filter(|r| **r != Role::Gateway) {
        node.spawn_role(*role, &mut tasks, None, &shutdown).await?;
    }

    let mut admin = None;
    if roles.contains(&Role::Gateway) {
        let state = node.gateway_state(None);
        if serve {
            if let Some(c) = bootstrap::first_start(&state).await? {
                println!(
                    "First start: created the operator admin token and tenant \"{}\".",
                    bootstrap::DEMO_TENANT
                );
                println!("  admin token: {}", c.admin_token);
                println!("  demo API key: {}", c.demo_api_key);
                println!("  (shown once: only their hashes are stored)");
                if cfg.console.enabled {
                    println!(
                        "Console: http://localhost:{}/console (sign in with either)",
                        cfg.http.listen.port()
                    );
                }
                println!("Try:");
                println!(
                    "  curl -s -H 'authorization: Bearer {}' -H 'content-type: application/json' -d '{{\"workflow_id\":\"welcome\",\"recipients\":[{{\"subscriber_id\":\"ana\",\"email\":\"ana@example.test\",\"locale\":\"fr-CA\"}}],\"payload\":{{\"name\":\"Ana\"}}}}' http://localhost:{}/v1/notifications",
                    c.demo_api_key,
                    cfg.http.listen.port()
                );
            }
        }
        admin = match cfg.admin_token_sha256() {
            Some(configured) => Some(configured),
            None => bootstrap::admin_token_hash(&state).await?,
        };
        node.spawn_role(Role::Gateway, &mut tasks, admin.clone(), &shutdown)
            .await?;
    }

    // After the gateway's bootstrap: the console signs the operator in with
    // the admin token it made.
    {
        let sd = shutdown.clone();
        let addr = cfg.http.listen;
        let internal = cfg.http.internal_listen;
        // Stopped partitions are an operator surface: on the internal
        // listener when there is one.
        let operator = clarion_gateway::http::partition_routes(node.partitions.clone());
        let extra = if roles.contains(&Role::Gateway) {
            Some(node.tracking_routes_with_admin(admin.clone()).await?)
        } else {
            None
        };
        tasks.spawn(async move {
            clarion_gateway::http::serve_split(addr, internal, metrics, ready, extra, operator, sd)
                .await
                .with_context(|| format!("HTTP server on {addr}"))
        });
    }

    let _ = ready_tx.send(true);
    println!(
        "Clarion is running: roles {} | log {} | store {} | gRPC {} | HTTP {}",
        roles
            .iter()
            .map(|r| r.to_string())
            .collect::<Vec<_>>()
            .join(","),
        cfg.log_url(),
        cfg.store_url(),
        cfg.grpc.listen,
        cfg.http.listen
    );

    let stop = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = term.recv() => {},
        }
    };
    tokio::pin!(stop);
    let mut failure = None;
    loop {
        tokio::select! {
            _ = &mut stop, if failure.is_none() && !*shutdown.borrow() => {
                tracing::info!("shutting down");
                let _ = shutdown_tx.send(true);
            }
            done = tasks.join_next() => match done {
                None => break,
                Some(Ok(Ok(()))) => {}
                Some(Ok(Err(e))) => {
                    tracing::error!(error = format!("{e:#}"), "a role stopped with an error; shutting down");
                    failure.get_or_insert(e);
                    let _ = shutdown_tx.send(true);
                }
                Some(Err(e)) => {
                    failure.get_or_insert(anyhow::anyhow!("task panicked: {e}"));
                    let _ = shutdown_tx.send(true);
                }
            }
        }
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

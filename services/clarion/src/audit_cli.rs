//! `clarion audit`: verify the log's hash chain, replay what was known at a
//! time, print the notary's public key (docs/audit.md).
//!
//! Both read the log directly (the embedded file or Kafka, per `log.url`)
//! and the chain rows from the store; neither writes.

use std::str::FromStr;
use std::sync::Arc;

use clap::Subcommand;
use clarion_audit::replay::{self, Query, Replay, State};
use clarion_audit::signing::PublicKey;
use clarion_audit::verify::{Report, Verify};
use clarion_domain::ids::TenantId;
use indicatif::{ProgressBar, ProgressStyle};

use crate::{Config, Node};

#[derive(Subcommand)]
pub enum AuditCmd {
    /// Walk every topic and partition of the log, recompute each tenant's
    /// hash chain, compare it with the notary's stored links and signed
    /// checkpoints, and report the first break (exit status 1) and the
    /// records not chained yet.
    Verify {
        /// Only this tenant's chains.
        #[arg(long)]
        tenant: Option<String>,
        /// The notary's public key (base64, from `clarion audit
        /// public-key`, taken out of band). Default: the public half of the
        /// configured signing key.
        #[arg(long, value_name = "BASE64")]
        public_key: Option<String>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Rebuild from the log alone what was known at a time: the
    /// subscribers' preferences and profiles, workflow versions, and every
    /// notification's status.
    Replay {
        #[arg(long)]
        tenant: String,
        /// RFC 3339 (2026-03-01T12:00:00Z) or milliseconds since the epoch.
        #[arg(long, value_name = "RFC3339|UNIX_MS")]
        at: At,
        /// Only this subscriber (reads only its partition).
        #[arg(long)]
        subscriber: Option<String>,
        /// Print the state as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the notary's Ed25519 public key (base64), for auditors.
    PublicKey,
}

/// A point in time, in milliseconds since the epoch.
#[derive(Clone, Copy, Debug)]
pub struct At(pub i64);

impl FromStr for At {
    type Err = String;
    fn from_str(s: &str) -> Result<At, String> {
        if let Ok(ms) = s.parse::<i64>() {
            return Ok(At(ms));
        }
        chrono::DateTime::parse_from_rfc3339(s)
            .map(|t| At(t.timestamp_millis()))
            .map_err(|e| format!("--at: {s:?} is neither RFC 3339 nor milliseconds: {e}"))
    }
}

pub async fn audit(cfg: Config, cmd: AuditCmd) -> anyhow::Result<()> {
    let node = Node::open(cfg).await?;
    match cmd {
        AuditCmd::PublicKey => {
            println!("{}", node.audit_key()?.public().to_base64());
            Ok(())
        }
        AuditCmd::Verify {
            tenant,
            public_key,
            json,
        } => {
            let report = run_verify(&node, tenant, public_key.as_deref(), !json).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print_report(&report);
            }
            match report.first_break {
                Some(b) => anyhow::bail!(
                    "the chain is broken: first at {} partition {} offset {} (tenant {})",
                    b.topic,
                    b.partition,
                    b.offset,
                    b.tenant
                ),
                None => Ok(()),
            }
        }
        AuditCmd::Replay {
            tenant,
            at,
            subscriber,
            json,
        } => {
            let state = run_replay(&node, &tenant, at.0, subscriber, !json).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&state)?);
            } else {
                print_state(&state);
            }
            Ok(())
        }
    }
}

fn bar(total: u64, show: bool) -> ProgressBar {
    let bar = if show {
        ProgressBar::new(total)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} records ({per_sec}, eta {eta})",
        )
        .expect("a valid template"),
    );
    bar
}

fn tenant_arg(t: &str) -> anyhow::Result<String> {
    TenantId::parse(t)
        .map(|t| t.to_string())
        .map_err(|e| anyhow::anyhow!("--tenant: {e}"))
}

/// Verifies the chains (all tenants, or one) with `public_key` (base64;
/// default the configured key's).
pub async fn run_verify(
    node: &Node,
    tenant: Option<String>,
    public_key: Option<&str>,
    show_progress: bool,
) -> anyhow::Result<Report> {
    let public_key = match public_key {
        Some(k) => PublicKey::from_base64(k)?,
        None => node.audit_key()?.public(),
    };
    let verify = Verify {
        log: node.log.clone(),
        store: node.store.clone(),
        parts: clarion_audit::walk::parts(&node.topics),
        tenant: tenant.as_deref().map(tenant_arg).transpose()?,
        public_key,
        concurrency: std::thread::available_parallelism().map_or(2, |n| n.get()),
    };
    let bar = bar(verify.total().await?, show_progress);
    let b = bar.clone();
    let report = verify.run(&move |n| b.inc(n)).await?;
    bar.finish_and_clear();
    Ok(report)
}

/// Rebuilds the tenant's state at `at_ms` from the log.
pub async fn run_replay(
    node: &Node,
    tenant: &str,
    at_ms: i64,
    subscriber: Option<String>,
    show_progress: bool,
) -> anyhow::Result<State> {
    if subscriber
        .as_ref()
        .is_some_and(|s| s.is_empty() || s.len() > 256)
    {
        anyhow::bail!("--subscriber: must be 1-256 bytes");
    }
    let replay = Replay {
        log: node.log.clone(),
        topics: node.topics.clone(),
        opener: opener(node),
        query: Query {
            tenant: tenant_arg(tenant)?,
            at_ms,
            subscriber,
        },
    };
    let bar = bar(replay.total().await?, show_progress);
    let b = bar.clone();
    let state = replay.run(&move |n| b.inc(n)).await?;
    bar.finish_and_clear();
    Ok(state)
}

/// Opens sealed personal fields with the deployment's data keys.
/// Replay opens personal fields with the deployment's keys: what an
/// erasure destroyed reads `[erased]`.
fn opener(node: &Node) -> Arc<dyn replay::Opener> {
    node.personal.clone()
}

fn print_report(r: &Report) {
    match &r.first_break {
        None => println!("verify: the chain is intact"),
        Some(b) => {
            println!(
                "verify: FIRST BREAK at {} partition {} offset {} (tenant {}): {}",
                b.topic, b.partition, b.offset, b.tenant, b.what
            );
            println!("  breaks found: {}", r.breaks);
        }
    }
    println!(
        "  {} records read, {} links checked, {} signed checkpoints verified, {} records not chained yet (tail)",
        r.records, r.checked, r.checkpoints, r.tail
    );
    println!(
        "  {:.2} s, {:.0} events/s",
        r.elapsed.as_secs_f64(),
        r.events_per_s()
    );
}

fn print_state(s: &State) {
    let at = chrono::DateTime::from_timestamp_millis(s.at_ms)
        .map(|t| t.to_rfc3339())
        .unwrap_or_else(|| s.at_ms.to_string());
    println!("replay of tenant {} at {at} (from the log alone)", s.tenant);
    println!("subscribers: {}", s.subscribers.len());
    for (id, p) in &s.subscribers {
        println!(
            "  {id}: email {:?} phone {:?} locale {:?}",
            p.email, p.phone, p.locale
        );
    }
    println!("preferences: {}", s.preferences.len());
    for (id, p) in &s.preferences {
        println!("  {id}: {}", serde_json::to_string(p).unwrap_or_default());
    }
    println!("workflows: {}", s.workflows.len());
    for (id, w) in &s.workflows {
        println!("  {id}: version {} (published {:?})", w.version, w.versions);
    }
    println!("notifications: {}", s.notifications.len());
    for (id, n) in &s.notifications {
        println!(
            "  {id}: {} to {} via {} ({} events)",
            n.status, n.subscriber_id, n.workflow_id, n.events
        );
    }
    println!(
        "read {} records ({} events of the tenant) in {:.2} s: {:.0} events/s",
        s.records_read,
        s.events_applied,
        s.elapsed.as_secs_f64(),
        s.events_per_s()
    );
}

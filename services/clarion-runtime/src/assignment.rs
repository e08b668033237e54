//! Partition assignment across the processes of a role
//! (`runtime.partition-assignment = "group"`, issue #31).
//!
//! A process registers how to start a runner for a partition of each
//! primary topic, then joins its role's group ([`clarion_log::group`]): the
//! group says which partitions this process owns, and [`GroupOwner`] starts
//! their runners and stops them again. A partition's runner is stopped, its
//! in-flight commit landed and its effects finished, before the revoke
//! returns, so the next owner starts after it. Positions stay in the store.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use clarion_log::group::{GroupSettings, Ownership, TopicPartition};
use clarion_log::EventLog;
use clarion_store::{RowKey, Scan, Store, Table, WriteBatch, SYSTEM_TENANT};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Starts the runner of one partition; it runs until its receiver turns
/// true.
pub type StartRunner = Arc<
    dyn Fn(u32, watch::Receiver<bool>) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync,
>;

/// A runner this process owns.
struct Running {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// Starts and stops a role's runners as its group decides.
pub struct GroupOwner {
    /// Names the role in logs and the ownership metric.
    role: String,
    /// Per primary topic name: the runners each of its partitions gets.
    starters: Mutex<HashMap<String, Vec<StartRunner>>>,
    /// Per primary topic name: its partition count.
    partitions: Mutex<HashMap<String, u32>>,
    running: tokio::sync::Mutex<HashMap<TopicPartition, Vec<Running>>>,
}

impl GroupOwner {
    pub fn new(role: impl Into<String>) -> Arc<GroupOwner> {
        Arc::new(GroupOwner {
            role: role.into(),
            starters: Mutex::default(),
            partitions: Mutex::default(),
            running: tokio::sync::Mutex::default(),
        })
    }

    /// Each owned partition of `topic` (of `partitions`) gets a runner from
    /// `start`.
    pub fn add(&self, topic: String, partitions: u32, start: StartRunner) {
        self.partitions
            .lock()
            .expect("partitions lock")
            .insert(topic.clone(), partitions);
        self.starters
            .lock()
            .expect("starters lock")
            .entry(topic)
            .or_default()
            .push(start);
    }

    /// The topics whose partitions the group shares out.
    pub fn topics(&self) -> Vec<String> {
        let mut t: Vec<String> = self
            .starters
            .lock()
            .expect("starters lock")
            .keys()
            .cloned()
            .collect();
        t.sort();
        t
    }

    /// Partitions of every topic the group shares out.
    pub fn total(&self) -> usize {
        self.partitions
            .lock()
            .expect("partitions lock")
            .values()
            .map(|n| *n as usize)
            .sum()
    }

    /// The partitions this process runs now.
    pub async fn owned(&self) -> Vec<TopicPartition> {
        let mut p: Vec<TopicPartition> = self.running.lock().await.keys().cloned().collect();
        p.sort();
        p
    }

    fn gauge(&self, p: &TopicPartition, owned: bool) {
        metrics::gauge!(
            "clarion_partition_owned",
            "role" => self.role.clone(),
            "topic" => p.topic.clone(),
            "partition" => p.partition.to_string()
        )
        .set(if owned { 1.0 } else { 0.0 });
    }

    /// Stops the runners of `parts` and waits until each has ended (its
    /// in-flight commit landed, its effects finished).
    async fn stop(&self, parts: &[TopicPartition]) {
        let mut running = self.running.lock().await;
        let mut stopping = Vec::new();
        for p in parts {
            for r in running.remove(p).unwrap_or_default() {
                let _ = r.stop.send(true);
                stopping.push((p.clone(), r.task));
            }
        }
        drop(running);
        for (p, task) in stopping {
            if let Err(e) = task.await {
                tracing::error!(role = %self.role, topic = %p.topic, partition = p.partition, error = %e, "runner ended abnormally");
            }
            self.gauge(&p, false);
        }
    }

    /// Stops every runner (shutdown, or the group could not be left).
    pub async fn stop_all(&self) {
        let all: Vec<TopicPartition> = self.running.lock().await.keys().cloned().collect();
        self.stop(&all).await;
    }
}

#[async_trait]
impl Ownership for GroupOwner {
    async fn assigned(&self, parts: Vec<TopicPartition>) {
        let starters = self.starters.lock().expect("starters lock").clone();
        let mut running = self.running.lock().await;
        for p in parts {
            if running.contains_key(&p) {
                continue;
            }
            let Some(starts) = starters.get(&p.topic) else {
                continue;
            };
            let runners = starts
                .iter()
                .map(|start| {
                    let (stop, rx) = watch::channel(false);
                    Running {
                        stop,
                        task: tokio::spawn(start(p.partition, rx)),
                    }
                })
                .collect();
            tracing::info!(role = %self.role, topic = %p.topic, partition = p.partition, "partition owned: runner started");
            self.gauge(&p, true);
            running.insert(p, runners);
        }
    }

    async fn revoked(&self, parts: Vec<TopicPartition>) {
        self.stop(&parts).await;
        tracing::info!(role = %self.role, partitions = parts.len(), "partitions given back: runners stopped");
    }
}

/// The group id of a role: one per deployment (topic prefix) and role.
/// Not the processors' own names, under which their positions are mirrored
/// to Kafka for lag monitoring (a group with members refuses those commits).
pub fn group_id(topic_prefix: &str, role: &str) -> String {
    format!("{topic_prefix}owners.{role}")
}

/// Keeps this process in the group of `owner` until `shutdown`, then gives
/// its partitions back and leaves.
///
/// Meanwhile it keeps a row of its own in the store's member registry of
/// the group (expiring after the session timeout) and compares what it owns
/// with an even split among the live members: see [`StaleLeader`].
pub async fn run_member(
    log: Arc<dyn EventLog>,
    store: Arc<dyn Store>,
    group: String,
    owner: Arc<GroupOwner>,
    session_timeout: Duration,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), clarion_log::LogError> {
    let settings = GroupSettings {
        group: group.clone(),
        topics: owner.topics(),
        session_timeout,
    };
    tracing::info!(group = %settings.group, topics = ?settings.topics, "joining the role's group");
    let membership = log.join_group(settings, owner.clone()).await?;
    let mut check = StaleLeader::new(store, group, session_timeout);
    let mut tick = tokio::time::interval(check.every());
    while !*shutdown.borrow() {
        tokio::select! {
            _ = tick.tick() => {
                if check.short(owner.owned().await.len(), owner.total()).await {
                    tracing::warn!(group = %check.group, "this process owns less than an even share of the partitions among the live members: rejoining the group");
                    membership.rejoin();
                }
            }
            changed = shutdown.changed() => if changed.is_err() { break },
        }
    }
    check.forget().await;
    membership.leave().await;
    owner.stop_all().await;
    Ok(())
}

/// Finds a process shortchanged by a stale group leader.
///
/// tansu 0.6 (the test broker) drops a member that stopped heartbeating but
/// keeps it as the group's leader: the survivors rejoin as followers, get
/// their previous assignment back, and the crashed member's partitions have
/// no owner (Kafka elects a new leader). A member leaving makes tansu drop
/// the stale leader. So each process registers itself in the store
/// (a row that expires after the session timeout unless renewed), and one
/// that owns fewer partitions than an even split among the registered
/// members, three checks in a row, leaves and rejoins the group. A healthy
/// group never trips it (the range assignor gives each member at least the
/// even share rounded down); if it did, the cost is one more rebalance.
struct StaleLeader {
    store: Arc<dyn Store>,
    group: String,
    me: String,
    ttl: Duration,
    short: u32,
}

/// Checks in a row below the even share before rejoining.
const SHORT_CHECKS: u32 = 3;

impl StaleLeader {
    fn new(store: Arc<dyn Store>, group: String, ttl: Duration) -> StaleLeader {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        StaleLeader {
            store,
            group,
            me: format!("{}-{nanos:x}", std::process::id()),
            ttl,
            short: 0,
        }
    }

    fn every(&self) -> Duration {
        (self.ttl / 3).max(Duration::from_millis(100))
    }

    fn key(&self) -> RowKey {
        RowKey::new(
            Table::ProcessorOffsets,
            SYSTEM_TENANT,
            &format!("members/{}", self.group),
            self.me.as_bytes().to_vec(),
        )
    }

    /// Renews this member's row and tells whether it has owned less than
    /// its share long enough to rejoin. Store errors only skip a check.
    async fn short(&mut self, mine: usize, total: usize) -> bool {
        let mut renew = WriteBatch::new();
        renew.put_ttl(self.key(), Bytes::new(), self.ttl);
        let members = match self.store.write(renew).await {
            Ok(()) => self
                .store
                .scan(&Scan::partition(
                    Table::ProcessorOffsets,
                    SYSTEM_TENANT,
                    &format!("members/{}", self.group),
                    10_000,
                ))
                .await
                .map(|rows| rows.len()),
            Err(e) => Err(e),
        };
        let short = match members {
            Ok(n) if n > 0 => mine < total / n,
            Ok(_) => false,
            Err(e) => {
                tracing::debug!(group = %self.group, error = %e, "member registry unavailable");
                false
            }
        };
        self.short = if short { self.short + 1 } else { 0 };
        if self.short >= SHORT_CHECKS {
            self.short = 0;
            return true;
        }
        false
    }

    /// Removes this member's row (a clean leave).
    async fn forget(&self) {
        let mut del = WriteBatch::new();
        del.delete(self.key());
        if let Err(e) = self.store.write(del).await {
            tracing::debug!(group = %self.group, error = %e, "could not remove the member row");
        }
    }
}

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
use clarion_log::group::{GroupSettings, Ownership, TopicPartition};
use clarion_log::EventLog;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Starts the runner of one partition; it runs until its receiver turns
/// true.
pub type StartRunner =
    Arc<dyn Fn(u32, watch::Receiver<bool>) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

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
    running: tokio::sync::Mutex<HashMap<TopicPartition, Vec<Running>>>,
}

impl GroupOwner {
    pub fn new(role: impl Into<String>) -> Arc<GroupOwner> {
        Arc::new(GroupOwner {
            role: role.into(),
            starters: Mutex::default(),
            running: tokio::sync::Mutex::default(),
        })
    }

    /// Each owned partition of `topic` gets a runner from `start`.
    pub fn add(&self, topic: String, start: StartRunner) {
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
pub async fn run_member(
    log: Arc<dyn EventLog>,
    group: String,
    owner: Arc<GroupOwner>,
    session_timeout: Duration,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), clarion_log::LogError> {
    let settings = GroupSettings {
        group,
        topics: owner.topics(),
        session_timeout,
    };
    tracing::info!(group = %settings.group, topics = ?settings.topics, "joining the role's group");
    let membership = log.join_group(settings, owner.clone()).await?;
    let _ = shutdown.wait_for(|s| *s).await;
    membership.leave().await;
    owner.stop_all().await;
    Ok(())
}

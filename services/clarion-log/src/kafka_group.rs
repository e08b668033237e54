//! Partition ownership by a Kafka consumer group (see [`crate::group`]).
//!
//! One consumer per group and process, on a thread of its own: it
//! subscribes to the topics and serves the group's rebalances, and reads
//! nothing (each assigned partition is paused at once; the processors read
//! with their own consumers from the positions in the store). The eager
//! protocol (librdkafka's default `range,roundrobin` assignors) revokes
//! every partition of every member before assigning any: the revoke
//! callback blocks until [`Ownership::revoked`] returned, so a partition
//! never has two owners that both know it. A member that stops
//! heartbeating (a crash) is dropped after the session timeout and its
//! partitions move then. [`Membership::rejoin`] leaves and joins again as a
//! new member (the runtime's way out of a broker that kept a crashed leader).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::TopicPartitionList;

use crate::group::{GroupSettings, Membership, Ownership, TopicPartition};
use crate::{LogError, Result};

/// Serves a member's rebalances on the consumer's thread.
struct GroupContext {
    owner: Arc<dyn Ownership>,
    runtime: tokio::runtime::Handle,
    group: String,
    /// Set by an assignment: the poll loop pauses the new partitions.
    assigned: AtomicBool,
}

fn parts(tpl: &TopicPartitionList) -> Vec<TopicPartition> {
    tpl.elements()
        .iter()
        .map(|e| TopicPartition {
            topic: e.topic().to_string(),
            partition: e.partition() as u32,
        })
        .collect()
}

impl ClientContext for GroupContext {}

impl ConsumerContext for GroupContext {
    // Before librdkafka gives the partitions up: the owner stops its work
    // on them first. Blocking here is the point (this is the consumer's own
    // thread, not a runtime worker).
    fn pre_rebalance(&self, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => {
                let parts = parts(tpl);
                tracing::info!(group = %self.group, partitions = ?parts, "partitions revoked");
                self.runtime.block_on(self.owner.revoked(parts));
            }
            Rebalance::Assign(_) => {}
            Rebalance::Error(e) => {
                tracing::warn!(group = %self.group, error = %e, "group rebalance failed")
            }
        }
    }

    fn post_rebalance(&self, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let parts = parts(tpl);
            tracing::info!(group = %self.group, partitions = ?parts, "partitions assigned");
            self.assigned.store(true, Ordering::SeqCst);
            self.runtime.block_on(self.owner.assigned(parts));
        }
    }
}

/// A process's membership: the consumer's thread, stopped by `leave`.
pub struct KafkaMembership {
    stop: Arc<AtomicBool>,
    rejoin: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// How often the member's thread serves the group (heartbeats run on
/// librdkafka's own threads; this bounds how late a rebalance is served).
const POLL: Duration = Duration::from_millis(50);

/// Joins `settings.group` on `brokers`; see the module docs.
pub fn join(
    brokers: &str,
    settings: GroupSettings,
    owner: Arc<dyn Ownership>,
) -> Result<Box<dyn Membership>> {
    let runtime = tokio::runtime::Handle::try_current()
        .map_err(|e| LogError::Unavailable(format!("joining a group needs a runtime: {e}")))?;
    let session_ms = settings.session_timeout.as_millis().max(1000);
    let context = GroupContext {
        owner,
        runtime,
        group: settings.group.clone(),
        assigned: AtomicBool::new(false),
    };
    let consumer: BaseConsumer<GroupContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", &settings.group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("session.timeout.ms", session_ms.to_string())
        .set(
            "heartbeat.interval.ms",
            (session_ms / 3).max(100).to_string(),
        )
        // Eager: every member gives everything back before anyone is
        // assigned (a cooperative protocol would need incremental callbacks).
        .set("partition.assignment.strategy", "range")
        // The consumer reads nothing (see `pause`): fetch as little as can be.
        .set("auto.offset.reset", "latest")
        .set("queued.max.messages.kbytes", "1")
        .set("enable.partition.eof", "false")
        .create_with_context(context)
        .map_err(|e| LogError::Unavailable(e.to_string()))?;
    consumer
        .subscribe(&topic_refs(&settings))
        .map_err(|e| LogError::Unavailable(e.to_string()))?;
    let stop = Arc::new(AtomicBool::new(false));
    let rejoin = Arc::new(AtomicBool::new(false));
    let thread = std::thread::Builder::new()
        .name(format!("group-{}", settings.group))
        .spawn({
            let (stop, rejoin) = (stop.clone(), rejoin.clone());
            move || serve(consumer, &settings, &stop, &rejoin)
        })
        .map_err(|e| LogError::Unavailable(e.to_string()))?;
    Ok(Box::new(KafkaMembership {
        stop,
        rejoin,
        thread: Some(thread),
    }))
}

/// The member's loop: serves rebalances until told to stop, then gives
/// everything back and leaves.
fn serve(
    consumer: BaseConsumer<GroupContext>,
    settings: &GroupSettings,
    stop: &AtomicBool,
    rejoin: &AtomicBool,
) {
    while !stop.load(Ordering::SeqCst) {
        if let Some(Err(e)) = consumer.poll(POLL) {
            tracing::debug!(error = %e, "group consumer");
        }
        pause_assigned(&consumer);
        if rejoin.swap(false, Ordering::SeqCst) {
            tracing::warn!(group = %settings.group, "leaving and rejoining the group");
            give_back(&consumer);
            if let Err(e) = consumer.subscribe(&topic_refs(settings)) {
                tracing::warn!(group = %settings.group, error = %e, "rejoining the group");
            }
        }
    }
    // Unsubscribing revokes (the callback stops the owner's work) and leaves
    // the group, so the others rebalance at once rather than after the
    // session timeout.
    give_back(&consumer);
    drop(consumer);
}

fn topic_refs(settings: &GroupSettings) -> Vec<&str> {
    settings.topics.iter().map(String::as_str).collect()
}

/// Unsubscribes and serves the revoke until nothing is assigned (bounded).
fn give_back(consumer: &BaseConsumer<GroupContext>) {
    consumer.unsubscribe();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline
        && consumer
            .assignment()
            .map(|a| a.count() > 0)
            .unwrap_or(false)
    {
        let _ = consumer.poll(POLL);
    }
}

/// Pauses fetching of newly assigned partitions: the group is for
/// ownership only.
fn pause_assigned(consumer: &BaseConsumer<GroupContext>) {
    if !consumer.context().assigned.swap(false, Ordering::SeqCst) {
        return;
    }
    match consumer.assignment() {
        Ok(a) if a.count() > 0 => {
            if let Err(e) = consumer.pause(&a) {
                tracing::debug!(error = %e, "pausing the group's partitions");
            }
        }
        _ => {}
    }
}

#[async_trait]
impl Membership for KafkaMembership {
    fn rejoin(&self) {
        self.rejoin.store(true, Ordering::SeqCst);
    }

    async fn leave(mut self: Box<Self>) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            // The thread blocks on the runtime in its revoke callback: wait
            // for it off the runtime's workers.
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
    }
}

impl Drop for KafkaMembership {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

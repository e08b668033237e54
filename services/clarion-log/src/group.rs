//! Partition ownership across processes: which process of a role runs
//! which partitions.
//!
//! A group decides ownership only. The processors keep reading by their own
//! positions, kept in the store with their state (the exactly-once recipe);
//! the group's committed offsets are never used. The contract a backend
//! keeps (the Kafka one with a consumer group on the eager protocol):
//! a partition is handed to a member only after its previous owner's
//! [`Ownership::revoked`] returned, or after that owner left the group
//! (closed, or silent for the session timeout: a crashed process).

use std::time::Duration;

use async_trait::async_trait;

/// One partition of one topic, by topic name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: u32,
}

/// What a member does with the partitions the group gives and takes.
#[async_trait]
pub trait Ownership: Send + Sync + 'static {
    /// This process now owns `parts`: start working on them.
    async fn assigned(&self, parts: Vec<TopicPartition>);

    /// This process no longer owns `parts`: return only once no work on
    /// them runs any more (in-flight commits landed), since the group hands
    /// them to another member as soon as this returns.
    async fn revoked(&self, parts: Vec<TopicPartition>);
}

/// How a process joins a group.
#[derive(Clone, Debug)]
pub struct GroupSettings {
    /// The group: every process of a role names the same one.
    pub group: String,
    /// The topics whose partitions are shared out.
    pub topics: Vec<String>,
    /// How long a member may stay silent before the group gives its
    /// partitions to the others: the failover time after a crash.
    pub session_timeout: Duration,
}

/// Membership in a group, until [`Membership::leave`].
#[async_trait]
pub trait Membership: Send + Sync {
    /// Leaves the group (giving every partition back) and joins it again
    /// as a new member: the way out when the group's assignment is stale
    /// (see `clarion_runtime::assignment`, "stale leader").
    fn rejoin(&self);

    /// Gives every owned partition back ([`Ownership::revoked`] runs) and
    /// leaves the group, so the others take them at once.
    async fn leave(self: Box<Self>);
}

//! The log's topics. Recipient streams (triggers, notifications, dispatch,
//! deliveries) share the key `tenant/subscriber` and one partition count, so
//! one recipient's events are on the same partition number in each.

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Topic {
    /// Triggers and subscriber upserts: the router's input, in order per recipient.
    Triggers,
    /// Routing decisions and other lifecycle events.
    Notifications,
    /// Rendered messages for the dispatcher.
    Dispatch,
    /// Provider outcomes: sent, delivered, failed.
    Deliveries,
    /// Tenant configuration: tenants, API keys, templates, workflows.
    Config,
}

impl Topic {
    pub const ALL: [Topic; 5] = [
        Topic::Triggers,
        Topic::Notifications,
        Topic::Dispatch,
        Topic::Deliveries,
        Topic::Config,
    ];

    /// A one-byte code for stored references (outbox rows, history rows).
    pub fn code(self) -> u8 {
        Topic::ALL
            .iter()
            .position(|x| *x == self)
            .expect("known topic") as u8
    }

    pub fn from_code(code: u8) -> Option<Topic> {
        Topic::ALL.get(code as usize).copied()
    }

    pub fn base_name(&self) -> &'static str {
        match self {
            Topic::Triggers => "triggers",
            Topic::Notifications => "notifications",
            Topic::Dispatch => "dispatch",
            Topic::Deliveries => "deliveries",
            Topic::Config => "config",
        }
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.base_name())
    }
}

/// Topic naming and sizing for one deployment.
#[derive(Clone, Debug)]
pub struct Topics {
    /// Prepended to every topic name, e.g. `clarion.`.
    pub prefix: String,
    pub partitions: u32,
    /// Tenant configuration is small and ordered per tenant: few partitions.
    pub config_partitions: u32,
}

impl Topics {
    pub fn new(prefix: &str, partitions: u32) -> Topics {
        Topics {
            prefix: prefix.to_string(),
            partitions,
            config_partitions: 1,
        }
    }

    pub fn name(&self, t: Topic) -> String {
        format!("{}{}", self.prefix, t.base_name())
    }

    pub fn partitions_of(&self, t: Topic) -> u32 {
        match t {
            Topic::Config => self.config_partitions,
            _ => self.partitions,
        }
    }

    /// Creates every topic (idempotent). Recipient topics that exist keep
    /// the partition count they were created with: a key's partition is
    /// computed from it, so it cannot change under written records. If it
    /// differs from `partitions`, it replaces it, and the configured count
    /// is returned for the caller to report.
    pub async fn ensure(
        &mut self,
        log: &dyn clarion_log::EventLog,
    ) -> clarion_log::Result<Option<u32>> {
        let mut replaced = None;
        match log.partitions(&self.name(Topic::Triggers)).await {
            Ok(n) if n != self.partitions => {
                replaced = Some(self.partitions);
                self.partitions = n;
            }
            Ok(_) | Err(clarion_log::LogError::UnknownTopic(_)) => {}
            Err(e) => return Err(e),
        }
        for t in Topic::ALL {
            log.create_topic(&self.name(t), self.partitions_of(t))
                .await?;
        }
        Ok(replaced)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clarion_log::{embedded::SqliteLog, EventLog};

    #[tokio::test]
    async fn existing_topics_keep_their_partition_count() {
        let dir = tempfile::tempdir().unwrap();
        let log = SqliteLog::open(dir.path().join("log.db").to_str().unwrap()).unwrap();
        let mut first = Topics::new("c.", 4);
        assert_eq!(first.ensure(&log).await.unwrap(), None);
        assert_eq!(log.partitions("c.dispatch").await.unwrap(), 4);

        // A later start configured for 2 adopts the 4 the topics have.
        let mut later = Topics::new("c.", 2);
        assert_eq!(later.ensure(&log).await.unwrap(), Some(2));
        assert_eq!(later.partitions_of(Topic::Deliveries), 4);
        assert_eq!(later.partitions_of(Topic::Config), 1);

        // New topics under another prefix get what is configured.
        let mut other = Topics::new("d.", 2);
        assert_eq!(other.ensure(&log).await.unwrap(), None);
        assert_eq!(log.partitions("d.triggers").await.unwrap(), 2);
    }
}

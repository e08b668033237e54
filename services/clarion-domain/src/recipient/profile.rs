//! Subscriber profiles: the stored contact data and attributes of each
//! recipient, replaced whole by `SubscriberUpserted`.

use crate::subscriber::Subscriber;

use super::{Map, Pair};

/// Profiles by `(tenant, subscriber)`; `None`: known to have none.
#[derive(Debug, Default)]
pub struct Profiles {
    map: Map<(String, String), Option<Subscriber>>,
}

/// A profile replaced (upsert replaces the whole record).
#[derive(Clone, Debug, PartialEq)]
pub struct Upserted {
    pub tenant: String,
    pub subscriber: Subscriber,
}

impl Profiles {
    /// What is known of a subscriber: `None` when not loaded yet,
    /// `Some(None)` when it has no stored profile.
    pub fn get(&self, tenant: &str, id: &str) -> Option<&Option<Subscriber>> {
        self.map.get(&Pair(tenant, id))
    }

    /// Remembers what the store holds for a subscriber.
    pub fn load(&mut self, tenant: &str, id: &str, stored: Option<Subscriber>) {
        self.map
            .insert((tenant.to_string(), id.to_string()), stored);
    }

    pub(super) fn evolve(&mut self, e: Upserted) {
        let key = (e.tenant, e.subscriber.subscriber_id.clone());
        self.map.insert(key, Some(e.subscriber));
    }

    /// Forgets one subscriber (erased: the next read opens the stored,
    /// now unreadable, profile).
    pub fn forget(&mut self, tenant: &str, id: &str) {
        self.map.remove(&Pair(tenant, id));
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Forgets everything (the runtime's bound on memory; the store keeps
    /// every profile).
    pub fn clear(&mut self) {
        self.map.clear();
    }
}

//! Subscribers' preferences as far as the router has loaded them: the
//! settings each send is checked against (`preferences::evaluate`).

use crate::preferences::Preferences;

use super::{Map, Pair};

/// Preferences by `(tenant, subscriber)`; `None`: known to have none.
#[derive(Debug, Default)]
pub struct Known {
    map: Map<(String, String), Option<Preferences>>,
}

/// A subscriber's settings after a change (a `PreferencesChanged`, a
/// contact change or verification, applied by the router).
#[derive(Clone, Debug, PartialEq)]
pub struct Replaced {
    pub tenant: String,
    pub subscriber: String,
    pub preferences: Preferences,
}

impl Known {
    /// What is known of a subscriber: `None` when not loaded yet,
    /// `Some(None)` when it has no stored preferences.
    pub fn get(&self, tenant: &str, subscriber: &str) -> Option<&Option<Preferences>> {
        self.map.get(&Pair(tenant, subscriber))
    }

    /// Remembers what the store holds for a subscriber.
    pub fn load(&mut self, tenant: &str, subscriber: &str, stored: Option<Preferences>) {
        self.map
            .insert((tenant.to_string(), subscriber.to_string()), stored);
    }

    pub(super) fn evolve(&mut self, e: Replaced) {
        self.map
            .insert((e.tenant, e.subscriber), Some(e.preferences));
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Forgets everything (the runtime's bound on memory; the store keeps
    /// every subscriber's preferences).
    pub fn clear(&mut self) {
        self.map.clear();
    }
}

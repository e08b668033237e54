//! The recipient aggregate: what the router knows and decides per recipient.
//!
//! Every per-recipient rule lives here as a pure module: its state, the
//! events that change that state, and the functions that decide. The
//! runtime's router is the adapter around them: it loads the state a batch
//! needs from the store (into [`State`]), asks the deciders, turns their
//! decisions (plain data) into store writes, emitted events, timers and
//! effects, and feeds the resulting [`Event`]s back through
//! [`State::evolve`]. Nothing here reads a clock or the store; time comes in
//! as [`Ctx::now_ms`].
//!
//! The rules:
//! * [`acceptance`]: whether a trigger starts a run, and how it ends when not
//!   (unknown workflow version, trigger condition false or failing);
//! * [`dedup`]: content dedup (the same content within the workflow's
//!   `dedup_window` is suppressed);
//! * [`throttle`]: which limits cover a send, and whether it goes, is
//!   dropped or deferred;
//! * [`dlq`]: the dead-letter count and its alert threshold;
//! * [`preference`]: subscribers' preference settings, which
//!   `preferences::evaluate` checks every send against;
//! * [`devices`]: subscribers' push devices (register, rotate, revoke,
//!   seen, a provider's rejection with the APNs 410 rule, expiry) and the
//!   devices a push fans out to.
//!
//! A new per-recipient capability (devices, preferences, quiet hours,
//! digests) is a module beside these, a field in [`State`], an [`Event`]
//! variant or two, and a few lines of wiring in the router
//! (docs/architecture.md, "Adding a per-recipient capability").

pub mod acceptance;
pub mod dedup;
pub mod devices;
pub mod dlq;
pub mod preference;
pub mod profile;
pub mod throttle;
pub mod timing;

/// The router's maps: keys are tenant-scoped strings hashed several times
/// per input, and SipHash showed in the router's profile. foldhash is
/// seeded per process, so keys chosen by a tenant cannot be aimed at one
/// bucket.
pub type Map<K, V> = hashbrown::HashMap<K, V, foldhash::fast::RandomState>;

/// A `(tenant, id)` key of a [`Map`], borrowed: it hashes and compares as
/// the owned `(String, String)`, so a lookup allocates nothing.
#[derive(Hash)]
pub struct Pair<'a>(pub &'a str, pub &'a str);

impl hashbrown::Equivalent<(String, String)> for Pair<'_> {
    fn equivalent(&self, k: &(String, String)) -> bool {
        self.0 == k.0 && self.1 == k.1
    }
}

/// What a decision sees besides the state: the time, and where the router
/// deciding it sits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ctx {
    pub now_ms: i64,
    /// The router's partition of the recipient streams.
    pub partition: u32,
    /// How many partitions share the recipients (limits that span
    /// recipients are shared among them).
    pub partitions: u32,
}

/// The state of a router partition's recipients, as far as it has been
/// loaded: profiles, content marks, throttle windows, dead-letter counts,
/// preferences and devices.
/// The runtime bounds it (a full map starts over between batches); every
/// fact is also a store row, reloaded when next needed.
#[derive(Debug, Default)]
pub struct State {
    pub profiles: profile::Profiles,
    pub content: dedup::Marks,
    pub throttle: throttle::Windows,
    pub dlq: dlq::Counts,
    pub preferences: preference::Known,
    pub devices: devices::Known,
}

/// A change of [`State`], the result of a decision the runtime carried out
/// (or of a fact from the log, such as a subscriber upsert).
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// The subscriber's profile was replaced (`SubscriberUpserted`).
    ProfileUpserted(profile::Upserted),
    /// A trigger's content was accepted: duplicates within the window are
    /// suppressed from now on.
    ContentMarked(dedup::Marked),
    /// A send went out and counts in every window that covers it.
    SendCounted(throttle::Counted),
    /// This partition's dead-letter count of a tenant changed.
    DeadLettersCounted(dlq::Counted),
    /// A subscriber's preference settings changed.
    PreferencesReplaced(preference::Replaced),
    /// A subscriber's device changed (registered, rotated, revoked, seen).
    /// Boxed: a device record is several times the size of the others.
    DeviceChanged(Box<devices::Changed>),
}

impl State {
    /// Applies an event. Events are taken by value: each carries the keys
    /// and values its state keeps, so nothing is copied twice.
    pub fn evolve(&mut self, event: Event) {
        match event {
            Event::ProfileUpserted(e) => self.profiles.evolve(e),
            Event::ContentMarked(e) => self.content.evolve(e),
            Event::SendCounted(e) => self.throttle.evolve(e),
            Event::DeadLettersCounted(e) => self.dlq.evolve(e),
            Event::PreferencesReplaced(e) => self.preferences.evolve(e),
            Event::DeviceChanged(e) => self.devices.evolve(*e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn borrowed_pairs_find_what_owned_pairs_stored() {
        let mut m: Map<(String, String), u32> = Map::default();
        for i in 0..200u32 {
            m.insert((format!("t{}", i % 3), format!("n{i}")), i);
        }
        for i in 0..200u32 {
            let (t, n) = (format!("t{}", i % 3), format!("n{i}"));
            assert_eq!(m.get(&Pair(&t, &n)), Some(&i));
            // The same strings split differently are another key.
            assert_eq!(m.get(&Pair(&format!("{t}n"), &format!("{i}"))), None);
        }
    }
}

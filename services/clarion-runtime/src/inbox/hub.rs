//! The in-process hub between the inbox projector and the gateway's live
//! streams: after each commit the projector says which feeds moved to
//! which version, and every stream watching such a feed wakes and reads
//! the rows. A feed nobody watches costs nothing.
//!
//! The hub carries versions, never data: a stream always answers from the
//! committed rows, so a missed or repeated wake-up only costs a read. When
//! no projector runs in the process (`clarion run gateway`), the hub is
//! never told anything and streams poll the counts row instead
//! ([`InboxHub::attached`]).
//!
//! It also bounds live streams per subscriber and per tenant, and counts
//! them (`clarion_inbox_streams`, the streams open on this process).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::watch;

use crate::processor::{Effects, Emit};

/// Live streams one subscriber may hold (tabs, devices) at once.
pub const MAX_STREAMS_PER_SUBSCRIBER: usize = 16;
/// Live streams one tenant may hold at once on one gateway.
pub const MAX_STREAMS_PER_TENANT: usize = 10_000;

type FeedKey = (String, String);

struct Watched {
    tx: watch::Sender<u64>,
    streams: usize,
}

#[derive(Default)]
struct State {
    feeds: HashMap<FeedKey, Watched>,
    per_tenant: HashMap<String, usize>,
}

pub struct InboxHub {
    state: Mutex<State>,
    attached: AtomicBool,
    /// Turns true when the process shuts down: streams end, so that the
    /// servers' graceful shutdown (which waits for open requests) ends too.
    closing: watch::Sender<bool>,
    pub max_per_subscriber: usize,
    pub max_per_tenant: usize,
}

impl Default for InboxHub {
    fn default() -> Self {
        InboxHub {
            state: Mutex::default(),
            attached: AtomicBool::new(false),
            closing: watch::channel(false).0,
            max_per_subscriber: MAX_STREAMS_PER_SUBSCRIBER,
            max_per_tenant: MAX_STREAMS_PER_TENANT,
        }
    }
}

/// Too many live streams: which bound was hit.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Busy {
    #[error("this subscriber has {0} live inbox streams open already: close one first")]
    Subscriber(usize),
    #[error("this tenant has {0} live inbox streams open on this gateway already")]
    Tenant(usize),
    #[error("this gateway is shutting down: reconnect")]
    Closing,
}

/// One live stream's registration: wakes when the feed moves; released
/// (and the feed forgotten once nobody watches it) on drop.
pub struct Subscription {
    hub: Arc<InboxHub>,
    key: FeedKey,
    pub rx: watch::Receiver<u64>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut s = self.hub.state.lock().expect("hub lock");
        if let Some(w) = s.feeds.get_mut(&self.key) {
            w.streams -= 1;
            if w.streams == 0 {
                s.feeds.remove(&self.key);
            }
        }
        if let Some(n) = s.per_tenant.get_mut(&self.key.0) {
            *n -= 1;
            if *n == 0 {
                s.per_tenant.remove(&self.key.0);
            }
        }
        metrics::gauge!("clarion_inbox_streams").decrement(1.0);
    }
}

impl InboxHub {
    /// A projector in this process reports to the hub.
    pub fn attach(&self) {
        self.attached.store(true, Ordering::Relaxed);
    }

    /// Whether a projector in this process reports to the hub (otherwise
    /// streams must poll).
    pub fn attached(&self) -> bool {
        self.attached.load(Ordering::Relaxed)
    }

    /// Ends every live stream, now and to come (the process shuts down).
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    /// Turns true when the hub closes.
    pub fn closing(&self) -> watch::Receiver<bool> {
        self.closing.subscribe()
    }

    /// Registers a live stream of a feed, within the bounds.
    pub fn subscribe(
        self: &Arc<Self>,
        tenant: &str,
        subscriber: &str,
    ) -> Result<Subscription, Busy> {
        if *self.closing.borrow() {
            return Err(Busy::Closing);
        }
        let key = (tenant.to_string(), subscriber.to_string());
        let mut s = self.state.lock().expect("hub lock");
        let tenant_streams = s.per_tenant.get(tenant).copied().unwrap_or(0);
        if tenant_streams >= self.max_per_tenant {
            return Err(Busy::Tenant(tenant_streams));
        }
        let w = s.feeds.entry(key.clone()).or_insert_with(|| Watched {
            tx: watch::channel(0).0,
            streams: 0,
        });
        if w.streams >= self.max_per_subscriber {
            return Err(Busy::Subscriber(w.streams));
        }
        w.streams += 1;
        let rx = w.tx.subscribe();
        *s.per_tenant.entry(tenant.to_string()).or_default() += 1;
        metrics::gauge!("clarion_inbox_streams").increment(1.0);
        Ok(Subscription {
            hub: self.clone(),
            key,
            rx,
        })
    }

    /// A feed moved to `version`: wakes its streams (if any).
    pub fn notify(&self, tenant: &str, subscriber: &str, version: u64) {
        let s = self.state.lock().expect("hub lock");
        if let Some(w) = s.feeds.get(&(tenant.to_string(), subscriber.to_string())) {
            w.tx.send_if_modified(|v| {
                let newer = version > *v;
                if newer {
                    *v = version;
                }
                newer
            });
        }
    }

    /// Live streams open now.
    pub fn streams(&self) -> usize {
        self.state
            .lock()
            .expect("hub lock")
            .per_tenant
            .values()
            .sum()
    }
}

/// The projector's effect: a feed moved to a version.
pub struct Moved;

impl Moved {
    pub fn encode(tenant: &str, subscriber: &str, version: u64) -> Bytes {
        let mut b = Vec::with_capacity(tenant.len() + subscriber.len() + 10);
        b.extend_from_slice(&version.to_be_bytes());
        b.extend_from_slice(tenant.as_bytes());
        b.push(0);
        b.extend_from_slice(subscriber.as_bytes());
        Bytes::from(b)
    }

    pub fn decode(b: &[u8]) -> Option<(&str, &str, u64)> {
        let version = u64::from_be_bytes(b.get(..8)?.try_into().ok()?);
        let rest = std::str::from_utf8(&b[8..]).ok()?;
        let (tenant, subscriber) = rest.split_once('\0')?;
        Some((tenant, subscriber, version))
    }
}

/// Runs the projector's effects: tells the hub.
pub struct HubEffects(pub Arc<InboxHub>);

#[async_trait]
impl Effects for HubEffects {
    async fn run(&self, effect: &[u8], _now_ms: i64) -> Vec<Emit> {
        if let Some((tenant, subscriber, version)) = Moved::decode(effect) {
            self.0.notify(tenant, subscriber, version);
        }
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moved_round_trips() {
        let b = Moved::encode("acme", "ana", 42);
        assert_eq!(Moved::decode(&b), Some(("acme", "ana", 42)));
        assert_eq!(Moved::decode(b"short"), None);
    }

    #[tokio::test]
    async fn streams_wake_on_their_feed_only_and_are_bounded() {
        let hub = Arc::new(InboxHub {
            max_per_subscriber: 2,
            max_per_tenant: 3,
            ..InboxHub::default()
        });
        let mut a = hub.subscribe("acme", "ana").unwrap();
        let b = hub.subscribe("acme", "bob").unwrap();
        hub.notify("acme", "ana", 3);
        hub.notify("globex", "bob", 9);
        a.rx.changed().await.unwrap();
        assert_eq!(*a.rx.borrow_and_update(), 3);
        assert!(!b.rx.has_changed().unwrap());
        // An older version never moves a stream back.
        hub.notify("acme", "ana", 2);
        assert!(!a.rx.has_changed().unwrap());

        let a2 = hub.subscribe("acme", "ana").unwrap();
        assert_eq!(
            hub.subscribe("acme", "ana").err(),
            Some(Busy::Tenant(3)),
            "the tenant bound comes first"
        );
        drop(b);
        assert_eq!(
            hub.subscribe("acme", "ana").err(),
            Some(Busy::Subscriber(2))
        );
        drop(a);
        drop(a2);
        assert_eq!(hub.streams(), 0);
        assert!(hub.state.lock().unwrap().feeds.is_empty());
        let mut closing = hub.closing();
        hub.close();
        assert!(*closing.borrow_and_update());
        assert_eq!(hub.subscribe("acme", "ana").err(), Some(Busy::Closing));
    }
}

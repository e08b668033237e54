//! What a processor implements, and what it hands back to the runtime.

use async_trait::async_trait;
use bytes::Bytes;
use clarion_domain::Event;
use clarion_store::{Store, WriteBatch};

use crate::topics::Topic;

/// One decoded input record.
#[derive(Clone, Debug)]
pub struct Input {
    pub offset: u64,
    pub event: Event,
    /// The record as read from the log (the encoded `event`): a processor
    /// that stores the event as is (the projector) keeps these bytes rather
    /// than encode it again.
    pub raw: Bytes,
}

/// An output event for a topic.
#[derive(Clone, Debug, PartialEq)]
pub struct Emit {
    pub topic: Topic,
    pub event: Event,
}

/// Everything one batch decided. The runtime commits `writes` together with
/// dedup ids, the offset and an outbox holding `emits`, `effects` and `timers`.
#[derive(Default)]
pub struct Batch {
    pub topic: Option<Topic>,
    pub partition: u32,
    /// The runtime clock's time when the batch started; domain code uses this.
    pub now_ms: i64,
    pub writes: WriteBatch,
    pub emits: Vec<Emit>,
    /// Opaque to the runtime; run by the processor's `Effects` after commit.
    pub effects: Vec<Bytes>,
    /// Events to append to a topic at (or after) a due time.
    pub timers: Vec<(i64, Emit)>,
}

impl Batch {
    pub fn emit(&mut self, topic: Topic, event: Event) {
        self.emits.push(Emit { topic, event });
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("store: {0}")]
    Store(#[from] clarion_store::StoreError),
    #[error("log: {0}")]
    Log(#[from] clarion_log::LogError),
    /// An input this processor cannot interpret: it stops rather than skip it.
    #[error("poison input at offset {offset}: {reason}")]
    Poison { offset: u64, reason: String },
}

impl From<crate::personal::PersonalError> for ProcessError {
    fn from(e: crate::personal::PersonalError) -> Self {
        match e {
            crate::personal::PersonalError::Store(e) => ProcessError::Store(e),
            // The master keyring does not open a stored key: a configuration
            // error the operator must fix, reported like a failing store.
            other => ProcessError::Store(clarion_store::StoreError::Storage(other.to_string())),
        }
    }
}

/// Pure-ish decision logic over a batch of inputs: reads state through the
/// store, records every change in `batch`. Must not perform side effects.
#[async_trait]
pub trait Processor: Send + Sync + 'static {
    /// Stable name: part of the offset, dedup and outbox keys.
    fn name(&self) -> &'static str;

    /// Whether inputs are checked against the dedup table. Processors whose
    /// writes are idempotent puts keyed by event id may skip it.
    fn dedup(&self) -> bool {
        true
    }

    /// Whether this processor follows the spine rather than being on a
    /// notification's path (analytics, alert counts, retention): its runner
    /// then lets records gather for `RunnerConfig::linger` after a batch
    /// that did not fill up, so it commits a few large batches instead of
    /// one small batch per spine commit.
    fn follows(&self) -> bool {
        false
    }

    /// The event types the processor uses, if not all. The runner then
    /// decodes and passes only those (peeking at the envelope's type); the
    /// others still move the position. Followers that read a few types of
    /// a stream say so: decoding every trigger's payload cost more than
    /// their work. `None` (the default) skips the peek altogether, so the
    /// spine's processors pay nothing for it. A record whose type cannot
    /// even be peeked is decoded, so a damaged record still stops the
    /// partition.
    fn accepted_types(&self) -> Option<&'static [&'static str]> {
        None
    }

    /// Whether this processor schedules timers (the runner then fires them).
    fn uses_timers(&self) -> bool {
        false
    }

    async fn process(
        &mut self,
        store: &dyn Store,
        batch: &mut Batch,
        inputs: &[Input],
    ) -> Result<(), ProcessError>;
}

/// Runs a processor's effects after its batch committed. Never fails: an
/// effect's failure is reported as events (e.g. `NotificationFailed`).
/// Must be idempotent per effect: after a crash an effect may run again.
#[async_trait]
pub trait Effects: Send + Sync + 'static {
    async fn run(&self, effect: &[u8], now_ms: i64) -> Vec<Emit>;
}

/// For processors without effects.
pub struct NoEffects;

#[async_trait]
impl Effects for NoEffects {
    async fn run(&self, _effect: &[u8], _now_ms: i64) -> Vec<Emit> {
        Vec::new()
    }
}

//! The inbox projection: applies `InboxItemWritten` and `InboxItemsMarked`
//! (both on the deliveries topic under the subscriber's key, so one
//! partition sees a feed's events in log order) to the feed's rows.
//!
//! Everything it writes is a function of the events alone (times are the
//! events' times), so a store rebuilt from the log holds the same feed.
//! An event seen twice (an outbox publishes at least once) is recognised by
//! its id among the feed's latest ones, and an item by its id, so a repeat
//! changes nothing. After its commit it tells the in-process hub which
//! feeds moved (an effect), so live streams wake at once.

use std::collections::HashMap;

use async_trait::async_trait;
use bytes::Bytes;
use clarion_domain::{Event, Payload};
use clarion_proto::events as pb;
use clarion_store::{Store, Table};
use prost::Message;

use super::pending::Pending;
use super::rows::{self, counts_key, item_ck, row, Flags, Part, MAX_ITEMS_PER_FEED};
use crate::processor::{Batch, Input, ProcessError, Processor};

pub const INBOX_PROJECTOR: &str = "inbox";

/// Event ids a feed remembers (republished events come within minutes,
/// long before this many more events of the same feed).
const RECENT_EVENTS: usize = 64;

/// The marks a client may set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mark {
    Seen,
    Read,
    Unread,
    Archived,
    Unarchived,
    /// Read, and the workflow hears `acknowledged` (an explicit "done").
    Acknowledged,
}

impl Mark {
    pub const NAMES: &'static str = "seen, read, unread, archived, unarchived, acknowledged";

    pub fn parse(s: &str) -> Option<Mark> {
        Some(match s {
            "seen" => Mark::Seen,
            "read" => Mark::Read,
            "unread" => Mark::Unread,
            "archived" => Mark::Archived,
            "unarchived" => Mark::Unarchived,
            "acknowledged" => Mark::Acknowledged,
            _ => return None,
        })
    }

    /// Sets the mark on `r` at `at`; whether anything changed.
    pub fn apply(self, r: &mut pb::InboxItemRecord, at: i64) -> bool {
        let before = (r.seen_at_ms, r.read_at_ms, r.archived_at_ms);
        let set = |t: &mut i64| {
            if *t == 0 {
                *t = at.max(1);
            }
        };
        match self {
            Mark::Seen => set(&mut r.seen_at_ms),
            Mark::Read | Mark::Acknowledged => {
                set(&mut r.seen_at_ms);
                set(&mut r.read_at_ms);
            }
            Mark::Unread => r.read_at_ms = 0,
            Mark::Archived => set(&mut r.archived_at_ms),
            Mark::Unarchived => r.archived_at_ms = 0,
        }
        before != (r.seen_at_ms, r.read_at_ms, r.archived_at_ms)
    }

    /// The partition whose items "mark all" (of `category`, if any) may
    /// change: every other item already has the mark.
    fn candidates(self, category: &str) -> Part {
        match self {
            Mark::Seen => Part::Unseen,
            Mark::Read | Mark::Acknowledged => Part::Unread,
            Mark::Unread if category.is_empty() => Part::Read,
            Mark::Archived | Mark::Unread if !category.is_empty() => {
                Part::Category(category.to_string())
            }
            Mark::Unread | Mark::Archived => Part::Items,
            Mark::Unarchived => Part::Archived,
        }
    }
}

/// Applies inbox events to the feeds. Stateless between batches.
pub struct InboxProjector {
    cap: u64,
}

impl Default for InboxProjector {
    fn default() -> Self {
        InboxProjector {
            cap: MAX_ITEMS_PER_FEED,
        }
    }
}

impl InboxProjector {
    /// Keeps at most `cap` items per feed (tests; the default is
    /// [`MAX_ITEMS_PER_FEED`], which the reads are bounded by).
    pub fn with_cap(cap: u64) -> InboxProjector {
        InboxProjector {
            cap: cap.clamp(1, MAX_ITEMS_PER_FEED),
        }
    }
}

/// A feed touched by the batch: its counts as the batch leaves them.
struct Feed {
    counts: pb::InboxCountsRecord,
    /// The version it had before the batch.
    was: u64,
    dirty: bool,
}

type FeedKey = (String, String);

/// One batch's work: the view of the rows and the feeds it touched.
struct Work<'a> {
    cap: u64,
    rows: Pending<'a>,
    feeds: HashMap<FeedKey, Feed>,
}

#[async_trait]
impl Processor for InboxProjector {
    fn name(&self) -> &'static str {
        INBOX_PROJECTOR
    }

    /// Repeats are recognised per feed (see the module docs).
    fn dedup(&self) -> bool {
        false
    }

    async fn process(
        &mut self,
        store: &dyn Store,
        batch: &mut Batch,
        inputs: &[Input],
    ) -> Result<(), ProcessError> {
        let mut work = Work {
            cap: self.cap,
            rows: Pending::new(store),
            feeds: HashMap::new(),
        };
        for input in inputs {
            let e = &input.event;
            match &e.payload {
                Payload::InboxItemWritten(w) => work.write(e, w).await?,
                Payload::InboxItemsMarked(m) => work.mark(e, m).await?,
                _ => {}
            }
        }
        work.finish(batch);
        Ok(())
    }
}

fn corrupt(e: rows::ReadError) -> ProcessError {
    match e {
        rows::ReadError::Store(e) => ProcessError::Store(e),
        rows::ReadError::Corrupt(reason) => ProcessError::Poison { offset: 0, reason },
    }
}

impl Work<'_> {
    async fn feed(&mut self, tenant: &str, sub: &str) -> Result<&mut Feed, ProcessError> {
        let key = (tenant.to_string(), sub.to_string());
        if !self.feeds.contains_key(&key) {
            let counts = match self.rows.get(&counts_key(tenant, sub)).await? {
                Some(b) => {
                    pb::InboxCountsRecord::decode(&b[..]).map_err(|e| ProcessError::Poison {
                        offset: 0,
                        reason: format!("stored inbox counts: {e}"),
                    })?
                }
                None => pb::InboxCountsRecord::default(),
            };
            let was = counts.version;
            self.feeds.insert(
                key.clone(),
                Feed {
                    counts,
                    was,
                    dirty: false,
                },
            );
        }
        Ok(self.feeds.get_mut(&key).expect("inserted"))
    }

    /// Whether the feed already applied event `e` (and remembers it if not).
    async fn seen_before(&mut self, e: &Event, sub: &str) -> Result<bool, ProcessError> {
        let feed = self.feed(e.tenant.as_str(), sub).await?;
        let id = e.id.0.to_vec();
        if feed.counts.recent_events.contains(&id) {
            return Ok(true);
        }
        let recent = &mut feed.counts.recent_events;
        if recent.len() >= RECENT_EVENTS {
            recent.remove(0);
        }
        recent.push(id);
        feed.dirty = true;
        Ok(false)
    }

    async fn write(&mut self, e: &Event, w: &pb::InboxItemWritten) -> Result<(), ProcessError> {
        if w.subscriber_id.is_empty() || w.item_id.is_empty() {
            tracing::warn!(event = %e.id, "inbox item without a subscriber or an id: ignored");
            return Ok(());
        }
        let (tenant, sub) = (e.tenant.as_str(), w.subscriber_id.as_str());
        if self.seen_before(e, sub).await? {
            return Ok(());
        }
        let id_row = row(tenant, sub, Part::Ids, w.item_id.as_bytes().to_vec());
        if self.rows.get(&id_row).await?.is_some() {
            return Ok(()); // the same item again (the item id is the attempt id)
        }
        let ck = item_ck(e.occurred_at_ms, &w.item_id);
        let feed = self.feed(tenant, sub).await?;
        feed.counts.version += 1;
        let record = pb::InboxItemRecord {
            item_id: w.item_id.clone(),
            notification_id: w.notification_id.clone(),
            title: w.title.clone(),
            body: w.body.clone(),
            link: w.link.clone(),
            category: w.category.clone(),
            workflow_id: w.workflow_id.clone(),
            locale: w.locale.clone(),
            data_json: w.data_json.clone(),
            created_at_ms: e.occurred_at_ms,
            version: feed.counts.version,
            ..Default::default()
        };
        feed.counts.kept += 1;
        self.rows.put(id_row, Bytes::from(ck.clone()));
        self.store_item(tenant, sub, &ck, None, Some(&record))
            .await?;
        while self.feed(tenant, sub).await?.counts.kept > self.cap {
            self.drop_oldest(tenant, sub).await?;
        }
        Ok(())
    }

    /// Writes an item's change (`before` → `after`, either absent) to its
    /// rows and the feed's counts.
    async fn store_item(
        &mut self,
        tenant: &str,
        sub: &str,
        ck: &[u8],
        before: Option<&pb::InboxItemRecord>,
        after: Option<&pb::InboxItemRecord>,
    ) -> Result<(), ProcessError> {
        let (was, now) = (before.map(Flags::of), after.map(Flags::of));
        let key = |part| row(tenant, sub, part, ck.to_vec());
        match after {
            Some(r) => self.rows.put(key(Part::Items), rows::encode(r)),
            None => self.rows.delete(key(Part::Items)),
        }
        let feed = self.feed(tenant, sub).await?;
        feed.dirty = true;
        let c = &mut feed.counts;
        let mut index = Vec::new();
        for (part, f) in [
            (Part::Unread, (|f: Flags| f.unread) as fn(Flags) -> bool),
            (Part::Unseen, |f: Flags| f.unseen),
            (Part::Read, |f: Flags| f.read),
            (Part::Archived, |f: Flags| f.archived),
        ] {
            let (a, b) = (was.is_some_and(f), now.is_some_and(f));
            if a != b {
                index.push((part, b));
            }
        }
        // An item's category never changes: its index row comes and goes
        // with the item.
        if let Some(c) = after.or(before).map(|r| &r.category) {
            if !c.is_empty() && before.is_some() != after.is_some() {
                index.push((Part::Category(c.clone()), after.is_some()));
            }
        }
        let active = |f: Option<Flags>| f.is_some_and(|f| !f.archived);
        adjust(&mut c.total, active(was), active(now));
        adjust(
            &mut c.unread,
            was.is_some_and(|f| f.unread),
            now.is_some_and(|f| f.unread),
        );
        adjust(
            &mut c.unseen,
            was.is_some_and(|f| f.unseen),
            now.is_some_and(|f| f.unseen),
        );
        for (part, present) in index {
            if present {
                self.rows.put(key(part), Bytes::new());
            } else {
                self.rows.delete(key(part));
            }
        }
        Ok(())
    }

    /// Drops the feed's oldest item (the cap; see [`MAX_ITEMS_PER_FEED`]).
    async fn drop_oldest(&mut self, tenant: &str, sub: &str) -> Result<(), ProcessError> {
        let oldest = self
            .rows
            .scan(
                Table::InboxItems,
                tenant,
                &rows::pk(sub, Part::Items),
                None,
                1,
                false,
            )
            .await?
            .into_iter()
            .next();
        let feed = self.feed(tenant, sub).await?;
        let Some((ck, v)) = oldest else {
            // Counts say more than the rows hold: trust the rows.
            feed.counts.kept = 0;
            return Ok(());
        };
        feed.counts.kept -= 1;
        let r = rows::decode_item(&v).map_err(corrupt)?;
        self.rows
            .delete(row(tenant, sub, Part::Ids, r.item_id.as_bytes().to_vec()));
        self.store_item(tenant, sub, &ck, Some(&r), None).await
    }

    async fn mark(&mut self, e: &Event, m: &pb::InboxItemsMarked) -> Result<(), ProcessError> {
        let Some(mark) = Mark::parse(&m.mark) else {
            // The gateway refuses unknown marks; one in the log came from a
            // newer producer this build does not know.
            return Err(ProcessError::Poison {
                offset: 0,
                reason: format!("inbox mark {:?} is unknown to this build", m.mark),
            });
        };
        let (tenant, sub) = (e.tenant.as_str(), m.subscriber_id.as_str());
        if sub.is_empty() || self.seen_before(e, sub).await? {
            return Ok(());
        }
        let targets = if m.all {
            self.every(tenant, sub, mark.candidates(&m.category))
                .await?
        } else {
            let mut out = Vec::new();
            for id in &m.item_ids {
                let key = row(tenant, sub, Part::Ids, id.as_bytes().to_vec());
                if let Some(ck) = self.rows.get(&key).await? {
                    out.push(ck.to_vec());
                }
            }
            out
        };
        let mut changed = false;
        for ck in targets {
            let Some(v) = self
                .rows
                .get(&row(tenant, sub, Part::Items, ck.clone()))
                .await?
            else {
                continue;
            };
            let before = rows::decode_item(&v).map_err(corrupt)?;
            // `all` is the feed (archived items left out), or with
            // `unarchived` the archive; of one category if named.
            let scope = (mark == Mark::Unarchived) == (before.archived_at_ms != 0);
            if m.all && (!scope || (!m.category.is_empty() && before.category != m.category)) {
                continue;
            }
            let mut after = before.clone();
            if mark.apply(&mut after, e.occurred_at_ms) {
                self.store_item(tenant, sub, &ck, Some(&before), Some(&after))
                    .await?;
                changed = true;
            }
        }
        if changed {
            self.feed(tenant, sub).await?.counts.version += 1;
        }
        Ok(())
    }

    /// The items "mark all" may change: the mark's candidate partition,
    /// whole (a feed holds at most [`MAX_ITEMS_PER_FEED`] items).
    async fn every(
        &mut self,
        tenant: &str,
        sub: &str,
        candidates: Part,
    ) -> Result<Vec<Vec<u8>>, ProcessError> {
        let rows = self
            .rows
            .scan(
                Table::InboxItems,
                tenant,
                &rows::pk(sub, candidates),
                None,
                MAX_ITEMS_PER_FEED as usize,
                false,
            )
            .await?;
        Ok(rows.into_iter().map(|(ck, _)| ck).collect())
    }

    /// Writes the touched feeds' counts, and tells the hub (after the
    /// commit) of the ones whose version moved.
    fn finish(self, batch: &mut Batch) {
        for ((tenant, sub), feed) in self.feeds.iter() {
            if feed.dirty {
                batch
                    .writes
                    .put(counts_key(tenant, sub), rows::encode(&feed.counts));
            }
            if feed.counts.version != feed.was {
                batch
                    .effects
                    .push(super::hub::Moved::encode(tenant, sub, feed.counts.version));
            }
        }
        self.rows.into_writes(&mut batch.writes);
    }
}

fn adjust(n: &mut u64, was: bool, now: bool) {
    match (was, now) {
        (false, true) => *n += 1,
        (true, false) => *n = n.saturating_sub(1),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_set_times_once_and_say_whether_they_changed() {
        let mut r = pb::InboxItemRecord::default();
        assert!(Mark::Seen.apply(&mut r, 10));
        assert!(!Mark::Seen.apply(&mut r, 20));
        assert_eq!(r.seen_at_ms, 10);
        assert!(Mark::Read.apply(&mut r, 30));
        assert_eq!((r.seen_at_ms, r.read_at_ms), (10, 30));
        assert!(!Mark::Acknowledged.apply(&mut r, 40));
        assert!(Mark::Unread.apply(&mut r, 50));
        assert_eq!(r.read_at_ms, 0);
        assert!(Mark::Archived.apply(&mut r, 60));
        assert!(Mark::Unarchived.apply(&mut r, 70));
        assert!(!Mark::Unarchived.apply(&mut r, 80));
        assert_eq!(Mark::parse("snoozed"), None);
        for m in Mark::NAMES.split(", ") {
            assert!(Mark::parse(m).is_some(), "{m}");
        }
    }
}

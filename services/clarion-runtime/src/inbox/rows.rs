//! The inbox feed's rows, and the reads the gateway serves from them.
//!
//! A feed lives in the `inbox_items` table under the subscriber's id:
//!
//! | partition            | clustering key               | value                       |
//! |----------------------|------------------------------|-----------------------------|
//! | `<sub>`              | created_at_ms (8, BE) + id   | `InboxItemRecord`           |
//! | `<sub>/id`           | item id                      | the item's clustering key   |
//! | `<sub>/unread`       | the item's clustering key    | empty: unread, not archived |
//! | `<sub>/unseen`       | the item's clustering key    | empty: unseen, not archived |
//! | `<sub>/read`         | the item's clustering key    | empty: read, not archived   |
//! | `<sub>/archived`     | the item's clustering key    | empty: archived             |
//! | `<sub>/category/<c>` | the item's clustering key    | empty: of category `c`      |
//!
//! Subscriber ids cannot contain `/`, so no index partition meets a feed.
//! The indexes make every list and mark read what it shows, not the whole
//! feed: the unread tab, "mark all seen" when the bell opens, "mark all
//! read", the archive, a category. The counts and the version are one row
//! of `inbox_counts` (pk subscriber id).

use std::ops::Bound;

use bytes::Bytes;
use clarion_proto::events as pb;
use clarion_store::{RowKey, Scan, Store, StoreError, Table};
use prost::Message;

/// Items one feed keeps, archived ones included. The oldest item goes when
/// a new one would pass it: a feed is a working list, not an archive, and
/// the cap bounds every read and every "mark all" (docs/inbox.md).
pub const MAX_ITEMS_PER_FEED: u64 = 10_000;

/// The partitions of a feed (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Part {
    Items,
    Ids,
    Unread,
    Unseen,
    Read,
    Archived,
    Category(String),
}

/// Partition key of one part of `subscriber`'s feed.
pub fn pk(subscriber: &str, part: Part) -> String {
    match part {
        Part::Items => subscriber.to_string(),
        Part::Ids => format!("{subscriber}/id"),
        Part::Unread => format!("{subscriber}/unread"),
        Part::Unseen => format!("{subscriber}/unseen"),
        Part::Read => format!("{subscriber}/read"),
        Part::Archived => format!("{subscriber}/archived"),
        Part::Category(c) => format!("{subscriber}/category/{c}"),
    }
}

/// Clustering key of an item: its creation time (big-endian, so scans are
/// in time order; newest first reversed), then its id.
pub fn item_ck(created_at_ms: i64, item_id: &str) -> Vec<u8> {
    let mut ck = Vec::with_capacity(8 + item_id.len());
    ck.extend_from_slice(&(created_at_ms.max(0) as u64).to_be_bytes());
    ck.extend_from_slice(item_id.as_bytes());
    ck
}

pub fn row(tenant: &str, subscriber: &str, part: Part, ck: Vec<u8>) -> RowKey {
    RowKey::new(Table::InboxItems, tenant, &pk(subscriber, part), ck)
}

pub fn counts_key(tenant: &str, subscriber: &str) -> RowKey {
    RowKey::new(Table::InboxCounts, tenant, subscriber, Vec::new())
}

/// Which index partitions an item belongs to (besides `Items` and `Ids`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flags {
    pub unread: bool,
    pub unseen: bool,
    pub read: bool,
    pub archived: bool,
}

impl Flags {
    pub fn of(r: &pb::InboxItemRecord) -> Flags {
        let archived = r.archived_at_ms != 0;
        Flags {
            unread: r.read_at_ms == 0 && !archived,
            unseen: r.seen_at_ms == 0 && !archived,
            read: r.read_at_ms != 0 && !archived,
            archived,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("stored inbox row: {0}")]
    Corrupt(String),
}

pub fn decode_item(b: &[u8]) -> Result<pb::InboxItemRecord, ReadError> {
    pb::InboxItemRecord::decode(b).map_err(|e| ReadError::Corrupt(e.to_string()))
}

/// The feed's counts (zero, version 0, for a feed never written).
pub async fn counts(
    store: &dyn Store,
    tenant: &str,
    subscriber: &str,
) -> Result<pb::InboxCountsRecord, ReadError> {
    match store.get(&counts_key(tenant, subscriber)).await? {
        Some(b) => {
            pb::InboxCountsRecord::decode(&b[..]).map_err(|e| ReadError::Corrupt(e.to_string()))
        }
        None => Ok(pb::InboxCountsRecord::default()),
    }
}

/// One item by id, with its clustering key.
pub async fn item(
    store: &dyn Store,
    tenant: &str,
    subscriber: &str,
    item_id: &str,
) -> Result<Option<(Vec<u8>, pb::InboxItemRecord)>, ReadError> {
    let Some(ck) = store
        .get(&row(
            tenant,
            subscriber,
            Part::Ids,
            item_id.as_bytes().to_vec(),
        ))
        .await?
    else {
        return Ok(None);
    };
    let ck = ck.to_vec();
    match store
        .get(&row(tenant, subscriber, Part::Items, ck.clone()))
        .await?
    {
        Some(b) => Ok(Some((ck, decode_item(&b)?))),
        None => Ok(None),
    }
}

/// Read or unread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    All,
    Unread,
    Read,
}

impl Status {
    pub fn parse(s: &str) -> Option<Status> {
        match s {
            "" | "all" => Some(Status::All),
            "unread" => Some(Status::Unread),
            "read" => Some(Status::Read),
            _ => None,
        }
    }
}

/// Which items a list shows.
#[derive(Clone, Debug)]
pub struct Filter {
    pub status: Status,
    /// The archive (archived items only) rather than the feed (archived
    /// items left out).
    pub archived: bool,
    /// Only this category (`None`: every category).
    pub category: Option<String>,
}

impl Filter {
    fn admits(&self, r: &pb::InboxItemRecord) -> bool {
        let status = match self.status {
            Status::All => true,
            Status::Unread => r.read_at_ms == 0,
            Status::Read => r.read_at_ms != 0,
        };
        status
            && (r.archived_at_ms != 0) == self.archived
            && self.category.as_ref().is_none_or(|c| *c == r.category)
    }

    /// Whether [`Filter::source`] holds exactly what the filter admits.
    fn exact(&self) -> bool {
        matches!(
            (self.archived, self.status, &self.category),
            (true, Status::All, None) | (false, _, None)
        )
    }

    /// A partition whose rows are a superset of what the filter admits:
    /// the one it names exactly, when there is one.
    fn source(&self) -> Part {
        match (self.archived, self.status, &self.category) {
            (true, _, _) => Part::Archived,
            (false, Status::Unread, _) => Part::Unread,
            (false, _, Some(c)) => Part::Category(c.clone()),
            (false, Status::Read, None) => Part::Read,
            (false, Status::All, None) => Part::Items,
        }
    }
}

/// A page of a feed, newest first: the items with their clustering keys,
/// and whether more follow.
pub struct Page {
    pub items: Vec<(Vec<u8>, pb::InboxItemRecord)>,
    pub more: bool,
}

/// Rows read per scan of a list: a page of a filtered list may need more
/// than one, never more than the feed holds.
const CHUNK: usize = 256;

/// The items `filter` admits, newest first, strictly older than `before`
/// (a clustering key), at most `limit`. Reads at most the whole feed
/// (bounded by [`MAX_ITEMS_PER_FEED`]), in chunks.
pub async fn list(
    store: &dyn Store,
    tenant: &str,
    subscriber: &str,
    filter: &Filter,
    before: Option<Vec<u8>>,
    limit: usize,
) -> Result<Page, ReadError> {
    let source = filter.source();
    let source_pk = pk(subscriber, source.clone());
    let mut upper = before.map_or(Bound::Unbounded, Bound::Excluded);
    let mut items = Vec::new();
    let mut scanned = 0usize;
    loop {
        // An exact source needs one row more than the page (is there a
        // next page?); another is read in chunks.
        let want = if filter.exact() {
            limit + 1
        } else {
            (limit + 1).max(CHUNK.min(limit * 4 + 1))
        };
        let rows = store
            .scan(
                &Scan::partition(Table::InboxItems, tenant, &source_pk, want)
                    .range(Bound::Unbounded, upper.clone())
                    .reversed(),
            )
            .await?;
        let exhausted = rows.len() < want;
        scanned += rows.len();
        let Some((last, _)) = rows.last() else {
            break;
        };
        upper = Bound::Excluded(last.clone());
        let records = match source {
            Part::Items => rows
                .into_iter()
                .map(|(ck, v)| Ok((ck, Some(decode_item(&v)?))))
                .collect::<Result<Vec<_>, ReadError>>()?,
            _ => {
                let keys: Vec<RowKey> = rows
                    .iter()
                    .map(|(ck, _)| row(tenant, subscriber, Part::Items, ck.clone()))
                    .collect();
                let got = store.get_many(&keys).await?;
                rows.into_iter()
                    .zip(got)
                    .map(|((ck, _), v)| Ok((ck, v.map(|v| decode_item(&v)).transpose()?)))
                    .collect::<Result<Vec<_>, ReadError>>()?
            }
        };
        for (ck, r) in records {
            // An index row whose item is gone (never left by the projector,
            // which writes both in one commit) is skipped, not an error.
            let Some(r) = r else { continue };
            if filter.admits(&r) {
                if items.len() == limit {
                    return Ok(Page { items, more: true });
                }
                items.push((ck, r));
            }
        }
        if exhausted || scanned as u64 > 2 * MAX_ITEMS_PER_FEED {
            break;
        }
    }
    Ok(Page { items, more: false })
}

/// The items written after feed version `after` (and up to `upto`), oldest
/// first, at most `max` (the newest ones when there are more): what a live
/// stream sends when the feed moved on from the version its client has.
pub async fn written_after(
    store: &dyn Store,
    tenant: &str,
    subscriber: &str,
    after: u64,
    upto: u64,
    max: usize,
) -> Result<Vec<pb::InboxItemRecord>, ReadError> {
    let mut out = Vec::new();
    let mut upper = Bound::Unbounded;
    // At most one item per version since `after` (marks move it too): the
    // usual wake-up after one new item reads two rows.
    let mut chunk = (upto.saturating_sub(after) as usize).min(max) + 1;
    // Newest first: items are written in version order, so the first item
    // at or below `after` ends the walk.
    'scan: loop {
        chunk = chunk.min(CHUNK);
        let rows = store
            .scan(
                &Scan::partition(
                    Table::InboxItems,
                    tenant,
                    &pk(subscriber, Part::Items),
                    chunk,
                )
                .range(Bound::Unbounded, upper.clone())
                .reversed(),
            )
            .await?;
        let exhausted = rows.len() < chunk;
        for (ck, v) in rows {
            let r = decode_item(&v)?;
            if r.version <= after {
                break 'scan;
            }
            if r.version <= upto {
                out.push(r);
                if out.len() == max {
                    break 'scan;
                }
            }
            upper = Bound::Excluded(ck);
        }
        if exhausted {
            break;
        }
        chunk *= 2;
    }
    out.reverse();
    Ok(out)
}

/// Encodes a record for its row.
pub fn encode<M: Message>(m: &M) -> Bytes {
    Bytes::from(m.encode_to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clustering_keys_sort_by_time_then_id() {
        let a = item_ck(1_000, "b");
        let b = item_ck(1_001, "a");
        let c = item_ck(1_001, "b");
        assert!(a < b && b < c);
        assert_eq!(&a[8..], b"b");
        // Time before the epoch cannot happen; if it did it sorts first.
        assert!(item_ck(-5, "z") < a);
    }

    #[test]
    fn flags_leave_archived_items_out_of_the_badges() {
        let mut r = pb::InboxItemRecord::default();
        assert_eq!(
            Flags::of(&r),
            Flags {
                unread: true,
                unseen: true,
                read: false,
                archived: false
            }
        );
        r.read_at_ms = 4;
        assert!(Flags::of(&r).read);
        r.archived_at_ms = 5;
        assert_eq!(
            Flags::of(&r),
            Flags {
                unread: false,
                unseen: false,
                read: false,
                archived: true
            }
        );
    }

    #[test]
    fn statuses_parse() {
        assert_eq!(Status::parse(""), Some(Status::All));
        assert_eq!(Status::parse("unread"), Some(Status::Unread));
        assert_eq!(Status::parse("read"), Some(Status::Read));
        assert_eq!(Status::parse("seen"), None);
    }
}

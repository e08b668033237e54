//! Record batches: how the embedded log stores records, many to a row.
//!
//! A row per record made the log's appends the writer's largest cost: a
//! B-tree insert, its statement and its page bookkeeping for every ~300-byte
//! event. An append now becomes one row per partition it touches (split when
//! a body passes [`MAX_BODY`]), whose body holds the records one after the
//! other. The body is built (and compressed, see [`Codec`]) by the task that
//! appends, so the writer thread, the serial resource, only inserts it.
//!
//! A body is one codec byte, then the frames, each a key and a value with
//! their lengths (`u32`, little-endian) in front; or, compressed, the codec
//! byte, the frames' length and the frames as one LZ4 block. Events of one
//! batch repeat their tenant, type names and ids, so LZ4 shrinks a full body
//! two to four times: fewer pages for the writer to write, checksum and
//! sync, and a smaller file.

use bytes::Bytes;

use crate::{partition_for, LogError, Record, Result};

/// Frames are added to a body until it holds this many bytes (a record that
/// is larger alone gets a body of its own). Small enough that reading one
/// record by the index decodes little beside it; large enough that a
/// processor's batch of emits takes few rows.
pub(super) const MAX_BODY: usize = 16 * 1024;

/// How a body's frames are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum Codec {
    Plain = 0,
    /// `u32` (little-endian) length of the frames, then an LZ4 block.
    Lz4 = 1,
}

/// Frames shorter than this are stored plain: too little to repeat itself.
const COMPRESS_FROM: usize = 128;
/// The largest frames a compressed body may claim to hold (a damaged length
/// must not allocate without bound): a single record may exceed
/// [`MAX_BODY`], but not the largest payload the gateway accepts by far.
const MAX_FRAMES: usize = 64 << 20;

/// The frames of one body being built.
#[derive(Default)]
pub(super) struct BodyWriter {
    frames: Vec<u8>,
    count: u32,
    compress: bool,
}

impl BodyWriter {
    /// A body that [`BodyWriter::finish`] compresses, if `compress`, when
    /// that makes it smaller.
    pub(super) fn new(compress: bool) -> BodyWriter {
        BodyWriter {
            compress,
            ..BodyWriter::default()
        }
    }

    /// The frames of a record of `key` and `value` take this many bytes.
    pub(super) fn frame_len(key: &str, value: &[u8]) -> usize {
        8 + key.len() + value.len()
    }

    /// Makes room for `bytes` of frames (see [`BodyWriter::frame_len`]) at
    /// once, before the first push: a body is written by many pushes, and
    /// growing it by doubling copied it several times over.
    pub(super) fn reserve(&mut self, bytes: usize) {
        self.frames.reserve(1 + bytes);
    }

    pub(super) fn push(&mut self, key: &str, value: &[u8]) {
        if self.frames.is_empty() {
            self.frames
                .reserve(MAX_BODY.min(Self::frame_len(key, value) + 1));
            self.frames.push(Codec::Plain as u8);
        }
        self.frames
            .extend_from_slice(&(key.len() as u32).to_le_bytes());
        self.frames.extend_from_slice(key.as_bytes());
        self.frames
            .extend_from_slice(&(value.len() as u32).to_le_bytes());
        self.frames.extend_from_slice(value);
        self.count += 1;
    }

    /// Records in the body.
    pub(super) fn count(&self) -> u32 {
        self.count
    }

    /// Whether a record of `key` and `value` would push a non-empty body
    /// past [`MAX_BODY`].
    pub(super) fn full_for(&self, key: &str, value: &[u8]) -> bool {
        self.count > 0 && self.frames.len() + Self::frame_len(key, value) > MAX_BODY
    }

    /// The body as stored: plain, or if asked for, compressed when that
    /// makes it smaller.
    pub(super) fn finish(self) -> Vec<u8> {
        let frames = &self.frames[1.min(self.frames.len())..];
        if !self.compress || frames.len() < COMPRESS_FROM {
            return self.frames;
        }
        let mut body = vec![0u8; 5 + lz4_flex::block::get_maximum_output_size(frames.len())];
        body[0] = Codec::Lz4 as u8;
        body[1..5].copy_from_slice(&(frames.len() as u32).to_le_bytes());
        match lz4_flex::block::compress_into(frames, &mut body[5..]) {
            Ok(n) if 5 + n < self.frames.len() => {
                body.truncate(5 + n);
                body
            }
            _ => self.frames,
        }
    }
}

/// The records of one stored body, in order.
pub(super) struct Frames {
    body: Bytes,
    at: usize,
}

/// Decodes a stored body. Values share the body's buffer.
pub(super) fn frames(body: impl Into<Bytes>) -> Result<Frames> {
    let body: Bytes = body.into();
    match body.first() {
        Some(&c) if c == Codec::Plain as u8 => Ok(Frames { body, at: 1 }),
        Some(&c) if c == Codec::Lz4 as u8 => {
            let len = body
                .get(1..5)
                .ok_or_else(|| corrupt("compressed length cut short".into()))?;
            let len = u32::from_le_bytes(len.try_into().expect("four bytes")) as usize;
            if len > MAX_FRAMES {
                return Err(corrupt(format!("claims {len} bytes of frames")));
            }
            let mut frames = vec![0u8; len];
            match lz4_flex::block::decompress_into(&body[5..], &mut frames) {
                Ok(n) if n == len => Ok(Frames {
                    body: Bytes::from(frames),
                    at: 0,
                }),
                Ok(n) => Err(corrupt(format!("{n} bytes of frames, {len} claimed"))),
                Err(e) => Err(corrupt(e.to_string())),
            }
        }
        Some(c) => Err(corrupt(format!("unknown codec {c}"))),
        None => Err(corrupt("empty body".into())),
    }
}

fn corrupt(problem: String) -> LogError {
    LogError::Storage(format!("corrupt record batch: {problem}"))
}

impl Frames {
    /// Passes over the next `n` records (or to the end) without decoding
    /// them: a read from inside a batch, a record by its position.
    pub(super) fn skip_records(&mut self, n: usize) -> Result<()> {
        for _ in 0..2 * n {
            if self.at >= self.body.len() {
                break;
            }
            self.take()?;
        }
        Ok(())
    }

    fn take(&mut self) -> Result<Bytes> {
        let len = self
            .body
            .get(self.at..self.at + 4)
            .ok_or_else(|| corrupt(format!("length cut short at byte {}", self.at)))?;
        let len = u32::from_le_bytes(len.try_into().expect("four bytes")) as usize;
        let start = self.at + 4;
        if start + len > self.body.len() {
            return Err(corrupt(format!(
                "frame at byte {} overruns the body",
                self.at
            )));
        }
        self.at = start + len;
        Ok(self.body.slice(start..start + len))
    }
}

impl Iterator for Frames {
    type Item = Result<(String, Bytes)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.at >= self.body.len() {
            return None;
        }
        let frame = self.take().and_then(|key| {
            let key = String::from_utf8(key.to_vec())
                .map_err(|_| corrupt("a key is not UTF-8".into()))?;
            Ok((key, self.take()?))
        });
        if frame.is_err() {
            // Nothing after a bad frame can be trusted.
            self.at = self.body.len();
        }
        Some(frame)
    }
}

/// One row to insert: records of one partition.
pub(super) struct Batch {
    pub partition: u32,
    pub count: u32,
    pub body: Vec<u8>,
    /// The secondary keys of its records ([`Record::index`]), with each
    /// record's position in the batch.
    pub index: Vec<(Bytes, u32)>,
}

/// An append, split into rows.
pub(super) struct Split {
    /// In the order their offsets are assigned: a partition's batches come
    /// in the order of its records.
    pub batches: Vec<Batch>,
    /// For each record appended, in order: its batch and its position there.
    pub places: Vec<(u32, u32)>,
}

/// Groups `records` by the partition their key picks among `partitions`,
/// each batch's body compressed if `compress`.
pub(super) fn split(records: Vec<Record>, partitions: u32, compress: bool) -> Split {
    struct Open {
        slot: usize,
        body: BodyWriter,
        index: Vec<(Bytes, u32)>,
    }
    let mut open: Vec<Option<Open>> = (0..partitions).map(|_| None).collect();
    let mut done: Vec<Option<Batch>> = Vec::new();
    let mut places = Vec::with_capacity(records.len());
    // Each record's partition, and the bytes of frames still to come per
    // partition, so that a body is sized once when it opens.
    let parts: Vec<u32> = records
        .iter()
        .map(|r| partition_for(&r.key, partitions))
        .collect();
    let mut left = vec![0usize; partitions as usize];
    for (r, &p) in records.iter().zip(&parts) {
        left[p as usize] += BodyWriter::frame_len(&r.key, &r.value);
    }
    let close = |o: Open, p: u32, done: &mut Vec<Option<Batch>>| {
        done[o.slot] = Some(Batch {
            partition: p,
            count: o.body.count(),
            body: o.body.finish(),
            index: o.index,
        });
    };
    for (r, p) in records.into_iter().zip(parts) {
        let cur = &mut open[p as usize];
        if cur
            .as_ref()
            .is_some_and(|o| o.body.full_for(&r.key, &r.value))
        {
            close(cur.take().expect("checked"), p, &mut done);
        }
        let o = cur.get_or_insert_with(|| {
            done.push(None);
            let mut body = BodyWriter::new(compress);
            body.reserve(
                left[p as usize].min(MAX_BODY.max(BodyWriter::frame_len(&r.key, &r.value))),
            );
            Open {
                slot: done.len() - 1,
                body,
                index: Vec::new(),
            }
        });
        left[p as usize] -= BodyWriter::frame_len(&r.key, &r.value);
        let pos = o.body.count();
        o.body.push(&r.key, &r.value);
        if let Some(idx) = r.index {
            o.index.push((idx, pos));
        }
        places.push((o.slot as u32, pos));
    }
    for (p, o) in open.into_iter().enumerate() {
        if let Some(o) = o {
            close(o, p as u32, &mut done);
        }
    }
    Split {
        batches: done
            .into_iter()
            .map(|b| b.expect("every slot closed"))
            .collect(),
        places,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoded(body: Vec<u8>) -> Vec<(String, Bytes)> {
        frames(body).unwrap().collect::<Result<_>>().unwrap()
    }

    #[test]
    fn a_body_gives_back_its_records_in_order() {
        let mut w = BodyWriter::default();
        w.push("k1", b"first");
        w.push("", b"");
        w.push("k\u{e9}", &[0u8; 300]);
        assert_eq!(w.count(), 3);
        assert_eq!(
            decoded(w.finish()),
            vec![
                ("k1".to_string(), Bytes::from_static(b"first")),
                (String::new(), Bytes::new()),
                ("k\u{e9}".to_string(), Bytes::from(vec![0u8; 300])),
            ]
        );
    }

    #[test]
    fn a_body_that_repeats_itself_is_stored_compressed_if_asked() {
        let mut w = BodyWriter::new(true);
        for i in 0..40 {
            w.push(
                "demo/subscriber-0042",
                format!("clarion.notification.routed.v1 tenant demo n{i}").as_bytes(),
            );
        }
        let plain = 40 * (8 + 20 + 36) + 1;
        let mut unasked = BodyWriter::default();
        unasked.push("demo/subscriber-0042", &[b'x'; 200]);
        assert_eq!(unasked.finish()[0], Codec::Plain as u8);
        let body = w.finish();
        assert_eq!(body[0], Codec::Lz4 as u8);
        assert!(body.len() * 2 < plain, "{} of {plain}", body.len());
        let recs = decoded(body);
        assert_eq!(recs.len(), 40);
        assert_eq!(
            recs[39].1,
            Bytes::from_static(b"clarion.notification.routed.v1 tenant demo n39")
        );
    }

    #[test]
    fn a_body_that_does_not_shrink_is_stored_plain() {
        // Bytes of a simple generator: nothing for LZ4 to find.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let noise: Vec<u8> = (0..2000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let mut w = BodyWriter::new(true);
        w.push("k", &noise);
        let body = w.finish();
        assert_eq!(body[0], Codec::Plain as u8);
        assert_eq!(decoded(body)[0].1, Bytes::from(noise));
    }

    #[test]
    fn records_can_be_skipped_to_a_position_or_to_the_end() {
        let mut w = BodyWriter::default();
        for k in ["a", "b", "c"] {
            w.push(k, k.as_bytes());
        }
        let body = w.finish();
        let mut f = frames(body.clone()).unwrap();
        f.skip_records(2).unwrap();
        assert_eq!(f.next().unwrap().unwrap().0, "c");
        assert!(f.next().is_none());
        let mut f = frames(body).unwrap();
        f.skip_records(5).unwrap();
        assert!(f.next().is_none());
    }

    #[test]
    fn a_damaged_body_is_an_error_not_a_short_read() {
        let mut w = BodyWriter::default();
        w.push("key", b"value");
        let body = w.finish();
        let cut = body[..body.len() - 1].to_vec();
        let got: Vec<_> = frames(cut).unwrap().collect();
        assert_eq!(got.len(), 1);
        assert!(got[0]
            .as_ref()
            .unwrap_err()
            .to_string()
            .contains("overruns"));
        let mut unknown = body.clone();
        unknown[0] = 200;
        assert!(frames(unknown).is_err());
        assert!(frames(Vec::new()).is_err());

        let mut w = BodyWriter::new(true);
        for _ in 0..20 {
            w.push("key", b"a value that repeats, a value that repeats");
        }
        let lz4 = w.finish();
        assert_eq!(lz4[0], Codec::Lz4 as u8);
        let mut claims_more = lz4.clone();
        claims_more[1] = claims_more[1].wrapping_add(1);
        assert!(frames(claims_more).is_err());
        assert!(frames(lz4[..lz4.len() - 3].to_vec()).is_err());
        let mut huge = lz4.clone();
        huge[1..5].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(frames(huge).err().unwrap().to_string().contains("claims"));
    }

    #[test]
    fn an_append_becomes_one_batch_per_partition_until_a_body_fills() {
        let records: Vec<Record> = (0..40)
            .map(|i| {
                let r = Record::new(format!("key-{}", i % 4), vec![i as u8; 1000]);
                if i % 2 == 0 {
                    r.indexed(format!("n{i}"))
                } else {
                    r
                }
            })
            .collect();
        let keys: Vec<String> = records.iter().map(|r| r.key.clone()).collect();
        let s = split(records, 3, false);

        // Every record has a place, in its key's partition, and the
        // batches of a partition hold its records in append order.
        assert_eq!(s.places.len(), 40);
        let mut seen: Vec<Vec<(String, Bytes)>> = vec![Vec::new(); 3];
        for b in &s.batches {
            assert!(b.count >= 1);
            assert!(b.body.len() <= MAX_BODY);
            let recs = decoded(b.body.clone());
            assert_eq!(recs.len() as u32, b.count);
            seen[b.partition as usize].extend(recs);
        }
        for (i, (slot, pos)) in s.places.iter().enumerate() {
            let b = &s.batches[*slot as usize];
            assert_eq!(b.partition, partition_for(&keys[i], 3));
            let recs = decoded(b.body.clone());
            assert_eq!(recs[*pos as usize].1, Bytes::from(vec![i as u8; 1000]));
            let indexed = b.index.iter().find(|(_, p)| p == pos);
            assert_eq!(
                indexed.map(|(k, _)| k.clone()),
                (i % 2 == 0).then(|| Bytes::from(format!("n{i}")))
            );
        }
        // 40 KB of records over at most 3 partitions at 16 KB a body.
        assert!(s.batches.len() >= 3, "{}", s.batches.len());
        assert_eq!(seen.iter().map(Vec::len).sum::<usize>(), 40);
    }

    #[test]
    fn a_record_larger_than_a_body_gets_one_of_its_own() {
        let big = vec![7u8; MAX_BODY * 2];
        let s = split(
            vec![
                Record::new("a", b"small".to_vec()),
                Record::new("a", big.clone()),
                Record::new("a", b"after".to_vec()),
            ],
            1,
            false,
        );
        assert_eq!(
            s.batches.iter().map(|b| b.count).collect::<Vec<_>>(),
            vec![1, 1, 1]
        );
        assert_eq!(s.places, vec![(0, 0), (1, 0), (2, 0)]);
        assert_eq!(decoded(s.batches[1].body.clone())[0].1, Bytes::from(big));
    }
}

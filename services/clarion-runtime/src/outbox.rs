//! The outbox: what a committed batch still has to do.
//!
//! Stored as one row per batch so a commit adds one row and completion deletes
//! one row. The encoding is a small length-prefixed binary format: it is only
//! ever read back by the same runtime, and it is on the hot path.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use clarion_domain::Event;

use crate::processor::Emit;
use crate::topics::Topic;

#[derive(Debug, Default, PartialEq)]
pub struct OutboxEntry {
    pub emits: Vec<Emit>,
    pub effects: Vec<Bytes>,
}

#[derive(Debug, thiserror::Error)]
#[error("corrupt outbox row: {0}")]
pub struct OutboxError(String);

fn put_bytes(buf: &mut BytesMut, b: &[u8]) {
    buf.put_u32(b.len() as u32);
    buf.put_slice(b);
}

fn take_bytes(buf: &mut Bytes) -> Result<Bytes, OutboxError> {
    if buf.remaining() < 4 {
        return Err(OutboxError("truncated length".into()));
    }
    let n = buf.get_u32() as usize;
    if buf.remaining() < n {
        return Err(OutboxError("truncated value".into()));
    }
    Ok(buf.split_to(n))
}

impl OutboxEntry {
    pub fn is_empty(&self) -> bool {
        self.emits.is_empty() && self.effects.is_empty()
    }

    pub fn encode(&self) -> Bytes {
        let encoded: Vec<Bytes> = self
            .emits
            .iter()
            .map(|e| Bytes::from(e.event.encode()))
            .collect();
        self.encode_with(&encoded)
    }

    /// [`OutboxEntry::encode`] with the outputs already encoded
    /// (`encoded[i]` is `emits[i]`'s event).
    pub fn encode_with(&self, encoded: &[Bytes]) -> Bytes {
        let mut buf = BytesMut::with_capacity(
            64 + encoded.iter().map(|b| 5 + b.len()).sum::<usize>() + 400 * self.effects.len(),
        );
        buf.put_u32(self.emits.len() as u32);
        for (e, bytes) in self.emits.iter().zip(encoded) {
            buf.put_u8(e.topic.code());
            put_bytes(&mut buf, bytes);
        }
        buf.put_u32(self.effects.len() as u32);
        for f in &self.effects {
            put_bytes(&mut buf, f);
        }
        buf.freeze()
    }

    pub fn decode(mut buf: Bytes) -> Result<OutboxEntry, OutboxError> {
        let mut out = OutboxEntry::default();
        if buf.remaining() < 4 {
            return Err(OutboxError("empty".into()));
        }
        for _ in 0..buf.get_u32() {
            if buf.remaining() < 1 {
                return Err(OutboxError("truncated topic".into()));
            }
            let code = buf.get_u8();
            let topic = Topic::from_code(code)
                .ok_or_else(|| OutboxError(format!("unknown topic code {code}")))?;
            let event =
                Event::decode(&take_bytes(&mut buf)?).map_err(|e| OutboxError(e.to_string()))?;
            out.emits.push(Emit { topic, event });
        }
        if buf.remaining() < 4 {
            return Err(OutboxError("truncated effects".into()));
        }
        for _ in 0..buf.get_u32() {
            out.effects.push(take_bytes(&mut buf)?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clarion_domain::{Actor, Id, Payload, TenantId};

    #[test]
    fn roundtrips_and_rejects_truncation() {
        let ev = Event {
            id: Id::derive(&[b"x"]),
            tenant: TenantId::parse("acme").unwrap(),
            partition_key: "acme/u".into(),
            occurred_at_ms: 5,
            causation_id: None,
            correlation_id: None,
            actor: Actor::System("t".into()),
            payload: Payload::Delivered(Default::default()),
        };
        let entry = OutboxEntry {
            emits: vec![Emit {
                topic: Topic::Deliveries,
                event: ev,
            }],
            effects: vec![Bytes::from_static(b"send-it")],
        };
        let enc = entry.encode();
        assert_eq!(OutboxEntry::decode(enc.clone()).unwrap(), entry);
        assert!(OutboxEntry::decode(enc.slice(..enc.len() - 2)).is_err());
    }
}

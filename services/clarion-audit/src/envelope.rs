//! The tenant of a record, read from its `EventEnvelope` without decoding
//! the payload: the notary and `verify` see every record of every topic,
//! and a full decode would cost more than the hash.

use prost::encoding::{decode_key, decode_varint, skip_field, DecodeContext, WireType};

/// Field number of `tenant_id` in `EventEnvelope` (schemas/events/v1/envelope.proto).
const TENANT_FIELD: u32 = 3;

/// The envelope's tenant, or `None` when the record is not a readable
/// envelope (such records are still chained, under the system tenant).
/// Stops at the tenant: the fields before it are two small scalars/ids.
pub fn tenant_of(record: &[u8]) -> Option<&str> {
    let mut buf = record;
    let mut found = None;
    while !buf.is_empty() {
        let (tag, wire) = decode_key(&mut buf).ok()?;
        if tag == TENANT_FIELD && wire == WireType::LengthDelimited {
            let len = decode_varint(&mut buf).ok()? as usize;
            if len > buf.len() {
                return None;
            }
            // The last occurrence wins in protobuf; a producer writes it
            // once, so the first is taken unless another follows.
            found = Some(std::str::from_utf8(&buf[..len]).ok()?);
            buf = &buf[len..];
            continue;
        }
        if found.is_some() && tag > TENANT_FIELD {
            // Fields are written in tag order: nothing later repeats it.
            break;
        }
        skip_field(wire, tag, &mut buf, DecodeContext::default()).ok()?;
    }
    found.filter(|t| !t.is_empty())
}

/// The chain a record belongs to: its tenant, or the system tenant when
/// it has none (it is chained all the same, so no record escapes).
pub fn chain_tenant(record: &[u8]) -> &str {
    tenant_of(record).unwrap_or(clarion_store::SYSTEM_TENANT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clarion_domain::event::{Actor, Event, Payload};
    use clarion_domain::ids::{Id, TenantId};
    use clarion_proto::events as pb;

    fn event(tenant: &str) -> Event {
        Event {
            id: Id::derive(&[b"x"]),
            tenant: TenantId::parse(tenant).unwrap(),
            partition_key: format!("{tenant}/s1"),
            occurred_at_ms: 1_700_000_000_000,
            causation_id: None,
            correlation_id: None,
            actor: Actor::ApiKey("k".into()),
            payload: Payload::SubscriberUpserted(pb::SubscriberUpserted {
                subscriber_id: "s1".into(),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn reads_the_tenant_of_an_envelope() {
        for t in ["acme", "globex"] {
            let bytes = event(t).encode();
            assert_eq!(tenant_of(&bytes), Some(t));
            assert_eq!(chain_tenant(&bytes), t);
        }
    }

    #[test]
    fn garbage_has_no_tenant() {
        assert_eq!(tenant_of(b"\xff\xff\xff"), None);
        assert_eq!(tenant_of(b""), None);
        assert_eq!(chain_tenant(b"nonsense"), clarion_store::SYSTEM_TENANT);
    }
}

//! The `audit_chain` table's rows.
//!
//! Per tenant, pk `<topic>/<partition>`:
//! - ck = big-endian first offset of a notary batch (8 bytes): the batch's
//!   links of that tenant, `(offset, hash)` each, and a signed checkpoint
//!   when the notary made one at the batch's end;
//! - ck = big-endian offset then `0x01` (9 bytes): a checkpoint alone,
//!   made by the clock on an idle partition (sorts after the batch holding
//!   that offset and before the next).
//!
//! Under the system tenant, pk `notary/<topic>/<partition>`: ck empty = the
//! notary's next offset; ck = a tenant id = that tenant's head (last
//! offset and hash, records since its last checkpoint, and since when).
//! They are written in the same store write as the links, so a crash
//! leaves the chain and the position consistent.

use crate::chain::Hash;
use crate::{AuditError, Result};

/// Format of a chain row's value.
const VERSION: u8 = 1;

/// A signed statement: the tenant's chain of this partition had `head` at
/// `offset`, signed at `at_ms`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    pub offset: u64,
    pub head: Hash,
    pub at_ms: i64,
    pub signature: [u8; 64],
}

/// One row of a tenant's chain.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChainRow {
    pub links: Vec<(u64, Hash)>,
    pub checkpoint: Option<Checkpoint>,
}

/// A tenant's chain state on a partition, as the notary keeps it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    /// Last chained offset of the tenant.
    pub offset: u64,
    pub hash: Hash,
    /// Records chained since the last checkpoint.
    pub unsigned: u64,
    /// When the first of those was chained (clock ms), or of the last checkpoint.
    pub since_ms: i64,
}

pub fn chain_pk(topic: &str, partition: u32) -> String {
    format!("{topic}/{partition}")
}

pub fn batch_ck(first_offset: u64) -> Vec<u8> {
    first_offset.to_be_bytes().to_vec()
}

pub fn checkpoint_ck(offset: u64) -> Vec<u8> {
    let mut ck = offset.to_be_bytes().to_vec();
    ck.push(1);
    ck
}

pub fn notary_pk(topic: &str, partition: u32) -> String {
    format!("notary/{topic}/{partition}")
}

/// The ck of the notary's position row (no tenant id starts with NUL).
pub const POSITION_CK: &[u8] = b"\0";

fn damaged(what: &str, reason: &str) -> AuditError {
    AuditError::Row {
        what: what.to_string(),
        reason: reason.to_string(),
    }
}

/// Reads `N` bytes at `*at`, moving it on.
fn take<const N: usize>(b: &[u8], at: &mut usize) -> Option<[u8; N]> {
    let out = b.get(*at..*at + N)?.try_into().ok()?;
    *at += N;
    Some(out)
}

impl ChainRow {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(6 + self.links.len() * 40 + 113);
        out.push(VERSION);
        out.extend_from_slice(&(self.links.len() as u32).to_le_bytes());
        for (offset, hash) in &self.links {
            out.extend_from_slice(&offset.to_le_bytes());
            out.extend_from_slice(hash);
        }
        match &self.checkpoint {
            None => out.push(0),
            Some(c) => {
                out.push(1);
                out.extend_from_slice(&c.offset.to_le_bytes());
                out.extend_from_slice(&c.head);
                out.extend_from_slice(&c.at_ms.to_le_bytes());
                out.extend_from_slice(&c.signature);
            }
        }
        out
    }

    /// Decodes a row's value; `what` names it in the error.
    pub fn decode(b: &[u8], what: &str) -> Result<ChainRow> {
        let short = || damaged(what, "cut short");
        if b.first() != Some(&VERSION) {
            return Err(damaged(what, "unknown format version"));
        }
        let mut at = 1;
        let n = u32::from_le_bytes(take(b, &mut at).ok_or_else(short)?) as usize;
        if n > (b.len() - at) / 40 {
            return Err(short());
        }
        let mut links = Vec::with_capacity(n);
        for _ in 0..n {
            let offset = u64::from_le_bytes(take(b, &mut at).ok_or_else(short)?);
            links.push((offset, take::<32>(b, &mut at).ok_or_else(short)?));
        }
        let checkpoint = match take::<1>(b, &mut at).ok_or_else(short)?[0] {
            0 => None,
            1 => Some(Checkpoint {
                offset: u64::from_le_bytes(take(b, &mut at).ok_or_else(short)?),
                head: take(b, &mut at).ok_or_else(short)?,
                at_ms: i64::from_le_bytes(take(b, &mut at).ok_or_else(short)?),
                signature: take(b, &mut at).ok_or_else(short)?,
            }),
            _ => return Err(damaged(what, "bad checkpoint flag")),
        };
        if at != b.len() {
            return Err(damaged(what, "trailing bytes"));
        }
        Ok(ChainRow { links, checkpoint })
    }
}

impl Head {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(56);
        out.extend_from_slice(&self.offset.to_le_bytes());
        out.extend_from_slice(&self.hash);
        out.extend_from_slice(&self.unsigned.to_le_bytes());
        out.extend_from_slice(&self.since_ms.to_le_bytes());
        out
    }

    pub fn decode(b: &[u8], what: &str) -> Result<Head> {
        let short = || damaged(what, "not a head");
        let mut at = 0;
        let head = Head {
            offset: u64::from_le_bytes(take(b, &mut at).ok_or_else(short)?),
            hash: take(b, &mut at).ok_or_else(short)?,
            unsigned: u64::from_le_bytes(take(b, &mut at).ok_or_else(short)?),
            since_ms: i64::from_le_bytes(take(b, &mut at).ok_or_else(short)?),
        };
        if at != b.len() {
            return Err(short());
        }
        Ok(head)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_round_trip_and_damage_is_an_error() {
        let row = ChainRow {
            links: vec![(3, [1; 32]), (9, [2; 32])],
            checkpoint: Some(Checkpoint {
                offset: 9,
                head: [2; 32],
                at_ms: 1_700_000_000_000,
                signature: [7; 64],
            }),
        };
        let b = row.encode();
        assert_eq!(ChainRow::decode(&b, "r").unwrap(), row);
        assert!(ChainRow::decode(&b[..b.len() - 1], "r").is_err());
        let plain = ChainRow {
            links: vec![(1, [3; 32])],
            checkpoint: None,
        };
        assert_eq!(ChainRow::decode(&plain.encode(), "r").unwrap(), plain);
        let head = Head {
            offset: 4,
            hash: [5; 32],
            unsigned: 2,
            since_ms: 10,
        };
        assert_eq!(Head::decode(&head.encode(), "h").unwrap(), head);
        assert!(Head::decode(&[0; 10], "h").is_err());
    }

    #[test]
    fn a_lone_checkpoint_sorts_between_batches() {
        assert!(batch_ck(5) < checkpoint_ck(5));
        assert!(checkpoint_ck(5) < batch_ck(6));
    }
}

//! The hash chain: `h_i = SHA-256(h_{i-1} || offset || record bytes)` over
//! one tenant's records of one log partition, in offset order.
//!
//! The offset is in the hash so that a record cannot be moved, and the
//! chain starts from a genesis hash naming the tenant, topic and partition
//! so that a chain cannot be passed off as another's.

use sha2::{Digest, Sha256};

pub type Hash = [u8; 32];

/// The hash before a chain's first record.
pub fn genesis(tenant: &str, topic: &str, partition: u32) -> Hash {
    let mut h = Sha256::new();
    h.update(b"clarion.audit.chain.v1\0");
    h.update(tenant.as_bytes());
    h.update([0]);
    h.update(topic.as_bytes());
    h.update([0]);
    h.update(partition.to_be_bytes());
    h.finalize().into()
}

/// The link of the record at `offset` after `prev`.
pub fn link(prev: &Hash, offset: u64, record: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update(prev);
    h.update(offset.to_be_bytes());
    h.update(record);
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_input_changes_the_link() {
        let g = genesis("acme", "triggers", 0);
        assert_ne!(g, genesis("globex", "triggers", 0));
        assert_ne!(g, genesis("acme", "config", 0));
        assert_ne!(g, genesis("acme", "triggers", 1));
        let h = link(&g, 7, b"record");
        assert_eq!(h, link(&g, 7, b"record"));
        assert_ne!(h, link(&g, 8, b"record"));
        assert_ne!(h, link(&g, 7, b"recorD"));
        assert_ne!(h, link(&genesis("acme", "triggers", 1), 7, b"record"));
    }
}

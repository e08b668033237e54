//! Keyed partitioning shared by every backend.

/// Partition of `key` among `partitions`: FNV-1a, stable across processes,
/// releases and backends (unlike `std`'s randomly seeded hasher).
pub fn partition_for(key: &str, partitions: u32) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % u64::from(partitions.max(1))) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_and_in_range() {
        assert_eq!(partition_for("acme/u1", 8), partition_for("acme/u1", 8));
        // Pinned: changing the function would move every key to another partition.
        assert_eq!(partition_for("acme/u1", 1000), 818);
        let spread: std::collections::HashSet<_> = (0..200)
            .map(|i| partition_for(&format!("t/{i}"), 8))
            .collect();
        assert_eq!(spread.len(), 8);
    }
}

//! The per-process cache of keys, by tenant and then owner (a subscriber,
//! or a body key's ck). Looked up on every seal and open, so a hit costs no
//! allocation: the two-level map is read with the `&str`s at hand, where a
//! map keyed by `(String, String)` needs both copied to build the probe.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Entries kept before the cache starts over (bounded memory).
const CACHE_MAX: usize = 200_000;

pub(super) struct KeyCache<T> {
    tenants: HashMap<String, HashMap<String, (Instant, T)>>,
    len: usize,
}

impl<T> Default for KeyCache<T> {
    fn default() -> Self {
        KeyCache {
            tenants: HashMap::new(),
            len: 0,
        }
    }
}

impl<T: Clone> KeyCache<T> {
    /// The entry, if cached less than `ttl` ago.
    pub(super) fn get(&self, tenant: &str, owner: &str, ttl: Duration) -> Option<T> {
        let (at, v) = self.tenants.get(tenant)?.get(owner)?;
        (at.elapsed() < ttl).then(|| v.clone())
    }

    pub(super) fn insert(&mut self, tenant: &str, owner: &str, value: T) {
        if self.len >= CACHE_MAX {
            self.tenants.clear();
            self.len = 0;
        }
        let entries = match self.tenants.get_mut(tenant) {
            Some(m) => m,
            None => self.tenants.entry(tenant.to_string()).or_default(),
        };
        if entries
            .insert(owner.to_string(), (Instant::now(), value))
            .is_none()
        {
            self.len += 1;
        }
    }

    pub(super) fn remove(&mut self, tenant: &str, owner: &str) {
        if let Some(m) = self.tenants.get_mut(tenant) {
            if m.remove(owner).is_some() {
                self.len -= 1;
            }
        }
    }

    pub(super) fn forget_tenant(&mut self, tenant: &str) {
        if let Some(m) = self.tenants.remove(tenant) {
            self.len -= m.len();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_per_tenant_expire_and_stay_bounded() {
        let mut c = KeyCache::<u32>::default();
        c.insert("acme", "ana", 1);
        c.insert("globex", "ana", 2);
        assert_eq!(c.get("acme", "ana", Duration::from_secs(30)), Some(1));
        assert_eq!(c.get("globex", "ana", Duration::from_secs(30)), Some(2));
        assert_eq!(c.get("acme", "ana", Duration::ZERO), None, "expired");
        c.remove("acme", "ana");
        assert_eq!(c.get("acme", "ana", Duration::from_secs(30)), None);
        assert_eq!(c.len, 1);
        c.forget_tenant("globex");
        assert_eq!(c.len, 0);
        for i in 0..CACHE_MAX + 1 {
            c.insert("acme", &i.to_string(), 0);
        }
        assert_eq!(c.len, 1, "started over when full");
    }
}

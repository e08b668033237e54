//! A short-lived memory of the configuration every Trigger call reads: that
//! its API key is valid, and the latest version of its workflow. Without it
//! each call costs two store reads before its append.
//!
//! Only positive answers are kept (an unknown key or workflow is read again
//! every time, so one created a moment ago is seen at once), and only briefly:
//! a workflow version for [`WORKFLOW_TTL`], a key for [`API_KEY_TTL`]. A
//! configuration write through this gateway clears the workflow versions once
//! the projector has applied it, so "publish, then trigger" gets the new
//! version; another gateway's write is seen within the TTL. A generation
//! counter keeps a read that raced such a write from putting the old answer
//! back.

use std::collections::HashMap;
use std::sync::Mutex;

/// How long a workflow's latest version is trusted without a store read.
pub const WORKFLOW_TTL_MS: i64 = 1_000;
/// How long a valid API key is trusted without a store read. Keys cannot be
/// revoked yet; revocation must call [`ConfigCache::invalidate`].
pub const API_KEY_TTL_MS: i64 = 10_000;
/// Entries per map; past it the map starts over (a guard, not an LRU).
const MAX_ENTRIES: usize = 10_000;

#[derive(Default)]
pub struct ConfigCache {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    generation: u64,
    /// (tenant, key hash) → when it was read.
    api_keys: HashMap<(String, String), i64>,
    /// (tenant, workflow id) → when it was read, version, trigger event.
    workflows: HashMap<(String, String), (i64, u32, String)>,
}

/// Taken before a store read, handed back with its answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Generation(u64);

impl ConfigCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn generation(&self) -> Generation {
        Generation(self.lock().generation)
    }

    pub fn api_key_valid(&self, tenant: &str, key_sha256: &str, now_ms: i64) -> bool {
        self.lock()
            .api_keys
            .get(&(tenant.to_string(), key_sha256.to_string()))
            .is_some_and(|at| now_ms - at < API_KEY_TTL_MS)
    }

    pub fn remember_api_key(&self, seen: Generation, tenant: &str, key_sha256: &str, now_ms: i64) {
        let mut inner = self.lock();
        if inner.generation != seen.0 {
            return;
        }
        if inner.api_keys.len() >= MAX_ENTRIES {
            inner.api_keys.clear();
        }
        inner
            .api_keys
            .insert((tenant.to_string(), key_sha256.to_string()), now_ms);
    }

    /// The workflow's latest version and trigger event, if read recently.
    pub fn workflow_version(&self, tenant: &str, id: &str, now_ms: i64) -> Option<(u32, String)> {
        self.lock()
            .workflows
            .get(&(tenant.to_string(), id.to_string()))
            .filter(|(at, _, _)| now_ms - at < WORKFLOW_TTL_MS)
            .map(|(_, v, e)| (*v, e.clone()))
    }

    pub fn remember_workflow_version(
        &self,
        seen: Generation,
        tenant: &str,
        id: &str,
        version: u32,
        trigger_event: &str,
        now_ms: i64,
    ) {
        let mut inner = self.lock();
        if inner.generation != seen.0 {
            return;
        }
        if inner.workflows.len() >= MAX_ENTRIES {
            inner.workflows.clear();
        }
        inner.workflows.insert(
            (tenant.to_string(), id.to_string()),
            (now_ms, version, trigger_event.to_string()),
        );
    }

    /// Forgets everything: configuration changed.
    pub fn invalidate(&self) {
        let mut inner = self.lock();
        inner.generation += 1;
        inner.api_keys.clear();
        inner.workflows.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_700_000_000_000;

    #[test]
    fn a_workflow_version_is_trusted_for_its_ttl_then_read_again() {
        let c = ConfigCache::default();
        assert_eq!(c.workflow_version("acme", "welcome", T0), None);
        c.remember_workflow_version(c.generation(), "acme", "welcome", 3, "signup", T0);
        assert_eq!(
            c.workflow_version("acme", "welcome", T0 + WORKFLOW_TTL_MS - 1),
            Some((3, "signup".to_string()))
        );
        assert_eq!(
            c.workflow_version("acme", "welcome", T0 + WORKFLOW_TTL_MS),
            None
        );
        // Keyed by tenant: another tenant's workflow of the same id is not it.
        assert_eq!(c.workflow_version("globex", "welcome", T0), None);
    }

    #[test]
    fn an_api_key_is_trusted_for_its_ttl_and_only_for_its_tenant() {
        let c = ConfigCache::default();
        c.remember_api_key(c.generation(), "acme", "ab12", T0);
        assert!(c.api_key_valid("acme", "ab12", T0 + API_KEY_TTL_MS - 1));
        assert!(!c.api_key_valid("acme", "ab12", T0 + API_KEY_TTL_MS));
        assert!(!c.api_key_valid("globex", "ab12", T0));
        assert!(!c.api_key_valid("acme", "cd34", T0));
    }

    #[test]
    fn a_configuration_write_forgets_answers_and_refuses_ones_read_before_it() {
        let c = ConfigCache::default();
        c.remember_workflow_version(c.generation(), "acme", "welcome", 1, "", T0);
        c.remember_api_key(c.generation(), "acme", "ab12", T0);
        // A Trigger starts its store read, then a publish lands.
        let before_publish = c.generation();
        c.invalidate();
        assert_eq!(c.workflow_version("acme", "welcome", T0), None);
        assert!(!c.api_key_valid("acme", "ab12", T0));
        // The racing read's (old) answer is not put back.
        c.remember_workflow_version(before_publish, "acme", "welcome", 1, "", T0);
        assert_eq!(c.workflow_version("acme", "welcome", T0), None);
        // A read started after the publish is remembered.
        c.remember_workflow_version(c.generation(), "acme", "welcome", 2, "", T0);
        assert_eq!(
            c.workflow_version("acme", "welcome", T0),
            Some((2, String::new()))
        );
    }
}

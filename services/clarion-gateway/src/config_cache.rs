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
//!
//! Revoking a key clears the cache of the gateway that revoked it once the
//! projector applied the revocation, so the key stops there at once; every
//! other gateway stops accepting it within [`API_KEY_TTL_MS`] (the bounded
//! staleness documented in docs/security.md). Expiry needs no cache
//! clearing: the cached grant carries its expiry, checked on every call.

use std::collections::HashMap;
use std::sync::Mutex;

use clarion_domain::tenant::KeyGrant;

/// How long a workflow's latest version is trusted without a store read.
pub const WORKFLOW_TTL_MS: i64 = 1_000;
/// How long a valid API key is trusted without a store read: the longest a
/// key revoked through another gateway still works on this one.
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
    /// (tenant, key hash) → when it was read, and what it grants.
    api_keys: HashMap<(String, String), (i64, KeyGrant)>,
    /// (tenant, workflow id) → when it was read, and its head.
    workflows: HashMap<(String, String), (i64, WorkflowHead)>,
}

/// What a Trigger needs of a workflow's latest version.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkflowHead {
    pub version: u32,
    pub trigger_event: String,
    /// Payload paths it marks personal (sealed at the door).
    pub personal: Vec<String>,
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

    /// What a key read recently grants (expired or not: the caller checks).
    pub fn api_key(&self, tenant: &str, key_sha256: &str, now_ms: i64) -> Option<KeyGrant> {
        self.lock()
            .api_keys
            .get(&(tenant.to_string(), key_sha256.to_string()))
            .filter(|(at, _)| now_ms - at < API_KEY_TTL_MS)
            .map(|(_, g)| g.clone())
    }

    pub fn remember_api_key(
        &self,
        seen: Generation,
        tenant: &str,
        key_sha256: &str,
        grant: KeyGrant,
        now_ms: i64,
    ) {
        let mut inner = self.lock();
        if inner.generation != seen.0 {
            return;
        }
        if inner.api_keys.len() >= MAX_ENTRIES {
            inner.api_keys.clear();
        }
        inner.api_keys.insert(
            (tenant.to_string(), key_sha256.to_string()),
            (now_ms, grant),
        );
    }

    /// The workflow's latest version and trigger event, if read recently.
    pub fn workflow_version(&self, tenant: &str, id: &str, now_ms: i64) -> Option<WorkflowHead> {
        self.lock()
            .workflows
            .get(&(tenant.to_string(), id.to_string()))
            .filter(|(at, _)| now_ms - at < WORKFLOW_TTL_MS)
            .map(|(_, h)| h.clone())
    }

    pub fn remember_workflow_version(
        &self,
        seen: Generation,
        tenant: &str,
        id: &str,
        head: &WorkflowHead,
        now_ms: i64,
    ) {
        let mut inner = self.lock();
        if inner.generation != seen.0 {
            return;
        }
        if inner.workflows.len() >= MAX_ENTRIES {
            inner.workflows.clear();
        }
        inner
            .workflows
            .insert((tenant.to_string(), id.to_string()), (now_ms, head.clone()));
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

    fn head(version: u32, event: &str) -> WorkflowHead {
        WorkflowHead {
            version,
            trigger_event: event.into(),
            personal: Vec::new(),
        }
    }

    fn g() -> KeyGrant {
        KeyGrant {
            key_id: "key_ab12".into(),
            scopes: clarion_domain::tenant::Scopes::ALL,
            expires_at_ms: None,
        }
    }

    #[test]
    fn a_workflow_version_is_trusted_for_its_ttl_then_read_again() {
        let c = ConfigCache::default();
        assert_eq!(c.workflow_version("acme", "welcome", T0), None);
        c.remember_workflow_version(c.generation(), "acme", "welcome", &head(3, "signup"), T0);
        assert_eq!(
            c.workflow_version("acme", "welcome", T0 + WORKFLOW_TTL_MS - 1),
            Some(head(3, "signup"))
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
        c.remember_api_key(c.generation(), "acme", "ab12", g(), T0);
        assert_eq!(
            c.api_key("acme", "ab12", T0 + API_KEY_TTL_MS - 1),
            Some(g())
        );
        assert_eq!(c.api_key("acme", "ab12", T0 + API_KEY_TTL_MS), None);
        assert_eq!(c.api_key("globex", "ab12", T0), None);
        assert_eq!(c.api_key("acme", "cd34", T0), None);
    }

    #[test]
    fn a_configuration_write_forgets_answers_and_refuses_ones_read_before_it() {
        let c = ConfigCache::default();
        c.remember_workflow_version(c.generation(), "acme", "welcome", &head(1, ""), T0);
        c.remember_api_key(c.generation(), "acme", "ab12", g(), T0);
        // A Trigger starts its store read, then a publish lands.
        let before_publish = c.generation();
        c.invalidate();
        assert_eq!(c.workflow_version("acme", "welcome", T0), None);
        assert_eq!(c.api_key("acme", "ab12", T0), None);
        // The racing read's (old) answer is not put back.
        c.remember_workflow_version(before_publish, "acme", "welcome", &head(1, ""), T0);
        assert_eq!(c.workflow_version("acme", "welcome", T0), None);
        // A read started after the publish is remembered.
        c.remember_workflow_version(c.generation(), "acme", "welcome", &head(2, ""), T0);
        assert_eq!(c.workflow_version("acme", "welcome", T0), Some(head(2, "")));
    }
}

//! Opening sealed personal fields before masking them. The implementation
//! is the runtime's `Personal` (per-subscriber data keys): erased subjects
//! read `[erased]`, redacted bodies `[redacted]`. A trait, so the export
//! does not care which process holds the keys.

use async_trait::async_trait;
use clarion_domain::Event;

#[async_trait]
pub trait OpenPersonal: Send + Sync {
    /// Opens in place every sealed personal field of the event's payload.
    async fn open_event(&self, event: &mut Event) -> Result<(), String>;
}

/// The deployment's personal-data keys (`clarion_runtime::personal`).
#[async_trait]
impl OpenPersonal for clarion_runtime::personal::Personal {
    async fn open_event(&self, event: &mut Event) -> Result<(), String> {
        clarion_runtime::personal::Personal::open_event(self, event)
            .await
            .map_err(|e| e.to_string())
    }
}

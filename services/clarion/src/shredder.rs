//! The key destruction the retention role and the erasure use
//! (`clarion_runtime::retention::Shredder`). The crypto layer
//! (`clarion_runtime::personal::Personal`, issue #32) implements it; until
//! it is in this build, [`KeysUnavailable`] refuses every destruction with
//! an error (an erasure answers 503, a retention run is retried), never a
//! silent success.

use async_trait::async_trait;
use chrono::NaiveDate;
use clarion_domain::TenantId;
use clarion_runtime::retention::{Shredder, ShredderError};

pub struct KeysUnavailable;

fn unavailable() -> ShredderError {
    ShredderError("personal data keys are not in this build (clarion_runtime::personal)".into())
}

#[async_trait]
impl Shredder for KeysUnavailable {
    async fn erase_subscriber(&self, _: &TenantId, _: &str) -> Result<Vec<u32>, ShredderError> {
        Err(unavailable())
    }

    async fn redact_bodies(
        &self,
        _: &TenantId,
        _: NaiveDate,
        _: &str,
        _: &str,
    ) -> Result<u64, ShredderError> {
        Err(unavailable())
    }

    async fn body_key_days(
        &self,
        _: &TenantId,
    ) -> Result<Vec<(NaiveDate, String, String)>, ShredderError> {
        Err(unavailable())
    }
}

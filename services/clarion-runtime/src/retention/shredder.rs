//! What the retention role and the erasure need of the crypto layer: the
//! destruction of keys. `clarion_runtime::personal::Personal` implements it
//! (a key destroyed is a row deleted under SQLite `secure_delete`).

use async_trait::async_trait;
use chrono::NaiveDate;
use clarion_domain::TenantId;

#[derive(Debug, thiserror::Error)]
#[error("key store: {0}")]
pub struct ShredderError(pub String);

#[async_trait]
pub trait Shredder: Send + Sync + 'static {
    /// Destroys the subscriber's data key (every generation); returns the
    /// generations destroyed (none: there was no key).
    async fn erase_subscriber(
        &self,
        tenant: &TenantId,
        subscriber: &str,
    ) -> Result<Vec<u32>, ShredderError>;

    /// Destroys the tenant's body keys of `day` for the channel and country
    /// (`*`: all); returns how many.
    async fn redact_bodies(
        &self,
        tenant: &TenantId,
        day: NaiveDate,
        channel: &str,
        country: &str,
    ) -> Result<u64, ShredderError>;

    /// The body keys that exist, oldest first: (day, channel, country).
    async fn body_key_days(
        &self,
        tenant: &TenantId,
    ) -> Result<Vec<(NaiveDate, String, String)>, ShredderError>;
}

fn keys_error(e: crate::personal::PersonalError) -> ShredderError {
    ShredderError(e.to_string())
}

#[async_trait]
impl Shredder for crate::personal::Personal {
    async fn erase_subscriber(
        &self,
        tenant: &TenantId,
        subscriber: &str,
    ) -> Result<Vec<u32>, ShredderError> {
        crate::personal::Personal::erase_subscriber(self, tenant, subscriber)
            .await
            .map(|k| k.generations)
            .map_err(keys_error)
    }

    async fn redact_bodies(
        &self,
        tenant: &TenantId,
        day: NaiveDate,
        channel: &str,
        country: &str,
    ) -> Result<u64, ShredderError> {
        crate::personal::Personal::redact_bodies(self, tenant, day, channel, country)
            .await
            .map_err(keys_error)
    }

    async fn body_key_days(
        &self,
        tenant: &TenantId,
    ) -> Result<Vec<(NaiveDate, String, String)>, ShredderError> {
        crate::personal::Personal::body_key_days(self, tenant)
            .await
            .map_err(keys_error)
    }
}

//! Pending contact verifications at rest (issue #32). A contact changed
//! through the preference APIs waits in the subscriber's preferences row
//! until its code is confirmed (and stays there, verified, afterwards); the
//! address is sealed there under the subscriber's data key. The router
//! keeps it open in memory; the rows it writes in a batch are sealed at the
//! batch's end, in one place for every writer.

use bytes::Bytes;
use clarion_domain::personal::is_sealed;
use clarion_domain::preferences::Preferences;
use clarion_domain::TenantId;
use clarion_store::{Op, Table};

use super::Router;
use crate::processor::{Batch, ProcessError};

fn tenant_id(tenant: &str) -> Result<TenantId, ProcessError> {
    TenantId::parse(tenant).map_err(|e| clarion_store::StoreError::Storage(e.to_string()).into())
}

/// Whether a row holds a contact address still in clear.
fn has_clear_contact(p: &Preferences) -> bool {
    p.contacts
        .values()
        .any(|c| !c.value.is_empty() && !is_sealed(&c.value))
}

impl Router {
    /// Seals the contact addresses of the preferences rows `batch` writes.
    pub(super) async fn seal_preference_rows(&self, batch: &mut Batch) -> Result<(), ProcessError> {
        let Some(p) = &self.personal else {
            return Ok(());
        };
        for op in &mut batch.writes.ops {
            let Op::Put { key, value, .. } = op else {
                continue;
            };
            if key.table != Table::Preferences {
                continue;
            }
            let Ok(mut prefs) = Preferences::decode(value) else {
                continue;
            };
            if !has_clear_contact(&prefs) {
                continue;
            }
            let t = tenant_id(&key.tenant)?;
            for c in prefs.contacts.values_mut() {
                c.value = p.seal_value(&t, &key.pk, &c.value).await?;
            }
            *value = Bytes::from(prefs.encode());
        }
        Ok(())
    }

    /// Opens the contact addresses of a stored row, in place.
    pub(super) async fn open_pending_contacts(
        &self,
        tenant: &str,
        subscriber: &str,
        prefs: &mut Preferences,
    ) -> Result<(), ProcessError> {
        let Some(p) = &self.personal else {
            return Ok(());
        };
        if !prefs.contacts.values().any(|c| is_sealed(&c.value)) {
            return Ok(());
        }
        let t = tenant_id(tenant)?;
        for c in prefs.contacts.values_mut() {
            if is_sealed(&c.value) {
                c.value = p.open(&t, subscriber, &c.value).await?;
            }
        }
        Ok(())
    }
}

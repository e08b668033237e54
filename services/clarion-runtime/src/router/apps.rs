//! A tenant's apps (`AppConfigured`, projected into `Table::Apps`), cached
//! like topics: all of a tenant's apps in one read, re-read at most every
//! `template_refresh`, so a changed app (a new deep-link pattern) applies
//! within it.

use std::sync::Arc;
use std::time::Instant;

use clarion_domain::push::App;
use clarion_proto::events as pb;
use clarion_store::{Scan, Store, Table};
use prost::Message;

use super::{Router, TenantApps};
use crate::processor::ProcessError;

/// The apps' partition of a tenant (one row per app, ck the app id).
const PK: &str = "apps";
/// Most apps read per tenant.
const MAX_APPS: usize = 10_000;

impl Router {
    /// A tenant's app; `None`: not configured (or its row does not
    /// validate).
    pub(super) async fn app(
        &mut self,
        store: &dyn Store,
        tenant: &str,
        id: &str,
    ) -> Result<Option<Arc<App>>, ProcessError> {
        if let Some((at, apps)) = self.apps.get(tenant) {
            if at.elapsed() < self.template_refresh {
                return Ok(apps.get(id).cloned());
            }
        }
        let rows = store
            .scan(&Scan::partition(Table::Apps, tenant, PK, MAX_APPS))
            .await?;
        let apps: TenantApps = rows
            .iter()
            .filter_map(|(_, b)| pb::AppConfigured::decode(&b[..]).ok())
            .filter_map(|e| match App::from_event(&e) {
                Ok(app) => Some((app.app_id.clone(), Arc::new(app))),
                Err(v) => {
                    tracing::warn!(tenant, app = e.app_id.as_str(), problems = ?v, "stored app does not validate; skipped");
                    None
                }
            })
            .collect();
        let found = apps.get(id).cloned();
        self.apps
            .insert(tenant.to_string(), (Instant::now(), Arc::new(apps)));
        Ok(found)
    }
}

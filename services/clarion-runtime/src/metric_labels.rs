//! Metric label values that name tenants. Tenant names in labels tell an
//! operator who is failing, but they also grow every series by the number of
//! tenants and expose tenant names to whoever reads `/metrics`; so they are
//! off unless the operator turns them on (`security.metrics-tenant-labels`), and the
//! label then reads `_`. Every metric with a tenant label goes through
//! [`tenant`].

use std::sync::atomic::{AtomicBool, Ordering};

use metrics::SharedString;

/// Process-wide, like the metrics recorder itself: set once at start.
static TENANT_LABELS: AtomicBool = AtomicBool::new(false);

/// The value written for a tenant when tenant labels are off.
pub const HIDDEN: &str = "_";

/// Turns tenant names in metric labels on or off.
pub fn set_tenant_labels(on: bool) {
    TENANT_LABELS.store(on, Ordering::Relaxed);
}

/// Whether tenant names are written into labels.
pub fn tenant_labels_on() -> bool {
    TENANT_LABELS.load(Ordering::Relaxed)
}

/// The `tenant` label value for `tenant`.
pub fn tenant(tenant: &str) -> SharedString {
    if TENANT_LABELS.load(Ordering::Relaxed) {
        SharedString::from(tenant.to_string())
    } else {
        SharedString::const_str(HIDDEN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_names_show_only_when_turned_on() {
        assert_eq!(tenant("acme").as_ref(), HIDDEN);
        set_tenant_labels(true);
        assert_eq!(tenant("acme").as_ref(), "acme");
        set_tenant_labels(false);
        assert_eq!(tenant("acme").as_ref(), HIDDEN);
    }
}

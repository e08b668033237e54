//! A tenant's own providers (issue #31, docs/providers.md "Tenant
//! providers"): its credentials for SendGrid, Vonage or Twilio, its route
//! per channel, and the demotions its SLAs put in force.
//!
//! Credentials come in through the API (write-only), are checked against
//! the provider's [`Spec`], and are kept as a `ProviderCredentialsSet`
//! config event: the fields as a JSON object sealed with the master keyring
//! for `provider-credentials/<tenant>/<provider>` (a ciphertext copied to
//! another tenant or provider does not open). Only the field names are
//! readable.
//!
//! SSRF: a tenant supplies credentials and sender fields only, never a URL.
//! The provider's base URL, timeout and callback are the operator's
//! `[providers.<name>]` section, or the provider's public API when the
//! operator has none: a tenant cannot point a provider at an arbitrary host.
//!
//! The dispatcher builds the tenant's provider instances from the sealed
//! credentials and reads its routes and demotions through a short cache
//! ([`TenantProviders`]), so a change reaches sends within the cache's
//! lifetime after the projector applied it.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clarion_domain::Violations;
use clarion_proto::events as pb;
use clarion_runtime::provider_rows;
use clarion_store::Store;
use serde_json::{Map, Value};

use crate::provider::Provider;
use crate::secrets::{Keyring, KeyringError};
use crate::sendgrid::{SendgridConfig, SendgridProvider, SENDGRID};
use crate::twilio::{TwilioConfig, TwilioProvider};
use crate::vonage::{VonageConfig, VonageProvider, VONAGE};

pub const TWILIO: &str = "twilio";
pub const SMTP: &str = "smtp";
/// The longest value of a credential field.
pub const MAX_FIELD_BYTES: usize = 1024;
/// Providers in one tenant route.
pub const MAX_ROUTE: usize = 4;

/// What a provider's credentials are made of.
pub struct Spec {
    pub provider: &'static str,
    pub channel: &'static str,
    /// (field, required).
    pub fields: &'static [(&'static str, bool)],
}

/// The providers a tenant may bring credentials for. SMTP is not among
/// them: the SMTP provider authenticates as the operator's relay only.
pub const SPECS: &[Spec] = &[
    Spec {
        provider: SENDGRID,
        channel: "email",
        fields: &[
            ("api_key", true),
            ("from_email", false),
            ("from_name", false),
        ],
    },
    Spec {
        provider: VONAGE,
        channel: "sms",
        fields: &[("api_key", true), ("api_secret", true), ("from", false)],
    },
    Spec {
        provider: TWILIO,
        channel: "sms",
        fields: &[("account_sid", true), ("auth_token", true), ("from", false)],
    },
];

/// Providers a tenant route may name, per channel (the routable ones).
pub const ROUTABLE: &[(&str, &[&str])] =
    &[("email", &[SENDGRID, SMTP]), ("sms", &[VONAGE, TWILIO])];

pub fn spec(provider: &str) -> Option<&'static Spec> {
    SPECS.iter().find(|s| s.provider == provider)
}

fn names(list: &[&str]) -> String {
    list.join(", ")
}

/// Checks credentials for `provider`: every field known, required ones
/// present, values bounded. Violations name `provider` or
/// `credentials.<field>`.
pub fn check_credentials(
    provider: &str,
    fields: &BTreeMap<String, String>,
) -> Result<&'static Spec, Violations> {
    let Some(spec) = spec(provider) else {
        let known: Vec<&str> = SPECS.iter().map(|s| s.provider).collect();
        return Err(Violations::single(
            "provider",
            format!("unknown provider {provider:?} (one of {})", names(&known)),
        ));
    };
    let mut v = Violations::default();
    for (name, value) in fields {
        let field = format!("credentials.{name}");
        if !spec.fields.iter().any(|(f, _)| f == name) {
            let known: Vec<&str> = spec.fields.iter().map(|(f, _)| *f).collect();
            v.push(
                field,
                format!("{provider} takes no such field (one of {})", names(&known)),
            );
        } else if value.len() > MAX_FIELD_BYTES {
            v.push(field, format!("is over {MAX_FIELD_BYTES} bytes"));
        } else if value.chars().any(char::is_control) {
            v.push(field, "may not hold control characters");
        }
    }
    for (name, required) in spec.fields {
        if *required && fields.get(*name).is_none_or(|v| v.is_empty()) {
            v.push(format!("credentials.{name}"), "is required");
        }
    }
    if provider == SENDGRID {
        if let Some(f) = fields.get("from_email").filter(|f| !f.contains('@')) {
            v.push(
                "credentials.from_email",
                format!("{f:?} is not an email address"),
            );
        }
    }
    v.into_result().map(|()| spec)
}

/// Checks a tenant route: a routable channel, its providers, none twice.
pub fn check_route(channel: &str, providers: &[String]) -> Result<(), Violations> {
    let Some((_, allowed)) = ROUTABLE.iter().find(|(c, _)| *c == channel) else {
        let known: Vec<&str> = ROUTABLE.iter().map(|(c, _)| *c).collect();
        return Err(Violations::single(
            "channel",
            format!(
                "no route for {channel:?}: routes exist for {}",
                names(&known)
            ),
        ));
    };
    let mut v = Violations::default();
    if providers.is_empty() || providers.len() > MAX_ROUTE {
        v.push("providers", format!("must name 1 to {MAX_ROUTE} providers"));
    }
    for (i, p) in providers.iter().enumerate() {
        if !allowed.contains(&p.as_str()) {
            v.push(
                format!("providers[{i}]"),
                format!("{p:?} does not send {channel} (one of {})", names(allowed)),
            );
        } else if providers[..i].contains(p) {
            v.push(format!("providers[{i}]"), format!("{p:?} is named twice"));
        }
    }
    v.into_result()
}

/// What a tenant's credentials for `provider` are sealed for.
pub fn purpose(tenant: &str, provider: &str) -> String {
    format!("provider-credentials/{tenant}/{provider}")
}

/// The event keeping `fields` (checked) sealed.
pub fn sealed(
    keyring: &Keyring,
    tenant: &str,
    provider: &str,
    fields: &BTreeMap<String, String>,
    version: u32,
) -> pb::ProviderCredentialsSet {
    let json = serde_json::to_vec(fields).expect("a map of strings encodes");
    pb::ProviderCredentialsSet {
        provider: provider.to_string(),
        sealed_credentials: keyring.seal(&purpose(tenant, provider), &json),
        fields: fields.keys().cloned().collect(),
        master_key_id: keyring.active_key_id().to_string(),
        removed: false,
        version,
    }
}

/// Opens the sealed fields of a credentials event.
pub fn open(
    keyring: &Keyring,
    tenant: &str,
    ev: &pb::ProviderCredentialsSet,
) -> Result<BTreeMap<String, String>, KeyringError> {
    let bytes = keyring.open(&purpose(tenant, &ev.provider), &ev.sealed_credentials)?;
    Ok(serde_json::from_slice(&bytes).unwrap_or_default())
}

/// The operator's sections the tenant's providers start from (base URL,
/// timeouts, sender defaults).
#[derive(Clone, Debug, Default)]
pub struct OperatorProviders {
    pub sendgrid: Option<SendgridConfig>,
    pub vonage: Option<VonageConfig>,
    pub twilio: Option<TwilioConfig>,
}

/// The operator's section of a provider as kebab-case JSON with the
/// tenant's fields laid over it (only credential and sender fields).
fn overlay<T: serde::Serialize>(base: Option<&T>, fields: &BTreeMap<String, String>) -> Value {
    let mut obj = match base.map(serde_json::to_value) {
        Some(Ok(Value::Object(m))) => m,
        _ => Map::new(),
    };
    for (k, v) in fields {
        obj.insert(k.replace('_', "-"), Value::String(v.clone()));
    }
    // Callbacks are verified with the operator's credentials: a tenant
    // account's reports would not verify (docs/providers.md).
    obj.remove("status-callback-url");
    Value::Object(obj)
}

fn parse<T: serde::de::DeserializeOwned>(provider: &str, v: Value) -> Result<T, String> {
    serde_json::from_value(v).map_err(|e| format!("{provider}: {e}"))
}

/// Builds the tenant's instance of `provider` from its opened fields.
pub fn build(
    op: &OperatorProviders,
    provider: &str,
    fields: &BTreeMap<String, String>,
) -> Result<Arc<dyn Provider>, String> {
    Ok(match provider {
        SENDGRID => {
            let cfg: SendgridConfig = parse(provider, overlay(op.sendgrid.as_ref(), fields))?;
            Arc::new(SendgridProvider::new(&cfg)?)
        }
        VONAGE => {
            let cfg: VonageConfig = parse(provider, overlay(op.vonage.as_ref(), fields))?;
            Arc::new(VonageProvider::new(&cfg)?)
        }
        TWILIO => {
            let cfg: TwilioConfig = parse(provider, overlay(op.twilio.as_ref(), fields))?;
            Arc::new(TwilioProvider::new(&cfg)?)
        }
        other => return Err(format!("{other}: tenants cannot bring credentials for it")),
    })
}

/// What the dispatcher knows of one tenant's providers.
#[derive(Default)]
pub struct TenantView {
    /// Channel → providers in priority order.
    pub routes: HashMap<String, Vec<String>>,
    /// The tenant's own provider instances, by name.
    pub providers: HashMap<String, Arc<dyn Provider>>,
    /// (channel, provider) demoted by a breached SLA.
    pub demoted: Vec<(String, String)>,
}

impl TenantView {
    pub fn is_demoted(&self, channel: &str, provider: &str) -> bool {
        self.demoted
            .iter()
            .any(|(c, p)| c == channel && p == provider)
    }
}

/// Every tenant's view, read from the store and cached for `ttl`.
pub struct TenantProviders {
    store: Arc<dyn Store>,
    keyring: Arc<Keyring>,
    operator: OperatorProviders,
    ttl: Duration,
    cache: Mutex<HashMap<String, (Instant, Arc<TenantView>)>>,
}

impl TenantProviders {
    pub fn new(
        store: Arc<dyn Store>,
        keyring: Arc<Keyring>,
        operator: OperatorProviders,
        ttl: Duration,
    ) -> TenantProviders {
        TenantProviders {
            store,
            keyring,
            operator,
            ttl,
            cache: Mutex::default(),
        }
    }

    /// The tenant's view. The error is the operator's (store, keyring),
    /// never a tenant's value.
    pub async fn get(&self, tenant: &str) -> Result<Arc<TenantView>, String> {
        if let Some((at, v)) = self.cache.lock().expect("not poisoned").get(tenant) {
            if at.elapsed() < self.ttl {
                return Ok(v.clone());
            }
        }
        let view = Arc::new(self.load(tenant).await?);
        self.cache
            .lock()
            .expect("not poisoned")
            .insert(tenant.to_string(), (Instant::now(), view.clone()));
        Ok(view)
    }

    async fn load(&self, tenant: &str) -> Result<TenantView, String> {
        let store = &*self.store;
        let read = |e: clarion_store::StoreError| format!("reading the tenant's providers: {e}");
        let mut view = TenantView::default();
        for r in provider_rows::routes(store, tenant).await.map_err(read)? {
            view.routes.insert(r.channel, r.providers);
        }
        for b in provider_rows::demotions(store, tenant)
            .await
            .map_err(read)?
        {
            view.demoted.push((b.channel, b.demoted_provider));
        }
        for c in provider_rows::credentials(store, tenant)
            .await
            .map_err(read)?
        {
            let fields = open(&self.keyring, tenant, &c)
                .map_err(|e| format!("opening the {} credentials: {e}", c.provider))?;
            match build(&self.operator, &c.provider, &fields) {
                Ok(p) => {
                    view.providers.insert(c.provider.clone(), p);
                }
                // The tenant's fields were checked; what fails here is the
                // combination with the operator's section: logged, and the
                // tenant's sends through it fail as unconfigured.
                Err(e) => tracing::warn!(tenant, provider = %c.provider, error = %e,
                    "cannot build the tenant's provider"),
            }
        }
        Ok(view)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn credentials_name_the_bad_field() {
        let fields = |p: &str, m| -> Vec<String> {
            check_credentials(p, &m)
                .err()
                .map(|v| v.0.into_iter().map(|f| f.field).collect())
                .unwrap_or_default()
        };
        assert_eq!(
            fields("sendgrid", map(&[("api_key", "SG.x")])),
            Vec::<String>::new()
        );
        assert_eq!(fields("mailgun", map(&[])), ["provider"]);
        assert_eq!(
            fields(
                "vonage",
                map(&[("api_key", "k"), ("base_url", "http://169.254.169.254")])
            ),
            ["credentials.base_url", "credentials.api_secret"]
        );
        assert_eq!(
            fields(
                "sendgrid",
                map(&[("api_key", "SG.x"), ("from_email", "nope")])
            ),
            ["credentials.from_email"]
        );
    }

    #[test]
    fn routes_name_the_bad_entry() {
        let s = |v: &[&str]| v.iter().map(|p| p.to_string()).collect::<Vec<_>>();
        check_route("sms", &s(&["twilio", "vonage"])).unwrap();
        let e = check_route("sms", &s(&["twilio", "sendgrid", "twilio"])).unwrap_err();
        let f: Vec<_> = e.0.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(f, ["providers[1]", "providers[2]"]);
        assert_eq!(
            check_route("push", &s(&["fcm"])).unwrap_err().0[0].field,
            "channel"
        );
    }

    #[test]
    fn sealed_credentials_open_for_their_tenant_and_provider_only() {
        let dir = tempfile::tempdir().unwrap();
        let keyring = Keyring::load(&Default::default(), dir.path()).unwrap();
        let f = map(&[("api_key", "SG.secret")]);
        let ev = sealed(&keyring, "acme", "sendgrid", &f, 1);
        assert_eq!(ev.fields, ["api_key"]);
        assert!(!String::from_utf8_lossy(&ev.sealed_credentials).contains("SG.secret"));
        assert_eq!(open(&keyring, "acme", &ev).unwrap(), f);
        assert!(
            open(&keyring, "globex", &ev).is_err(),
            "bound to the tenant"
        );
    }

    #[test]
    fn a_tenant_provider_keeps_the_operators_base_url() {
        let op = OperatorProviders {
            sendgrid: Some(SendgridConfig {
                base_url: "http://127.0.0.1:9".into(),
                api_key: "SG.operator".into(),
                from_email: "ops@example.com".into(),
                from_name: String::new(),
                timeout_ms: 5_000,
            }),
            ..Default::default()
        };
        let v = overlay(op.sendgrid.as_ref(), &map(&[("api_key", "SG.tenant")]));
        assert_eq!(v["base-url"], "http://127.0.0.1:9");
        assert_eq!(v["api-key"], "SG.tenant");
        assert!(build(&op, "sendgrid", &map(&[("api_key", "SG.tenant")])).is_ok());
        // Without an operator section the public API and a tenant sender.
        let none = OperatorProviders::default();
        assert!(build(&none, "sendgrid", &map(&[("api_key", "SG.t")])).is_err());
        let v = overlay::<SendgridConfig>(None, &map(&[("api_key", "SG.t")]));
        assert!(v.get("base-url").is_none(), "the default applies");
    }
}

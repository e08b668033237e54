//! `providers.push`: the operator's credentials per tenant and app. A
//! tenant describes its apps (platforms, bundle id, deep links) through the
//! API; the keys that let Clarion speak for an app to Apple and Google are
//! the operator's, so they live in the configuration, one
//! `[[providers.push.apps]]` per (tenant, app).
//!
//! Secrets follow the configuration's `NAME-file` rule: `key-file` (the
//! `.p8`), `service-account-file` (the key JSON) and `ca-file` name files
//! whose contents become `key`, `service-account` and `ca`.

use std::collections::HashSet;
use std::sync::Arc;

use clarion_runtime::Clock;
use serde::{Deserialize, Serialize};

use crate::apns::{ApnsClient, ApnsConfig, Environment};
use crate::fcm::{FcmClient, FcmConfig};

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct PushConfig {
    #[serde(default)]
    pub apps: Vec<PushAppConfig>,
}

/// One app of one tenant: its APNs and/or FCM credentials.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct PushAppConfig {
    pub tenant: String,
    /// The app id the tenant configured (`ConfigureApp`).
    pub app: String,
    #[serde(default)]
    pub apns: Option<ApnsAppConfig>,
    #[serde(default)]
    pub fcm: Option<FcmAppConfig>,
}

#[derive(Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ApnsAppConfig {
    /// The Apple developer team id (the provider token's `iss`).
    pub team_id: String,
    /// The signing key's id (the provider token's `kid`).
    pub key_id: String,
    /// The `.p8` key (PKCS#8 PEM, P-256); `key-file` names the file.
    #[serde(alias = "key")]
    pub key_pem: String,
    /// The bundle id: `apns-topic` unless the tenant's app names its own
    /// (`ios_bundle_id`).
    pub topic: String,
    /// The environment of the app's tokens unless the tenant's app says
    /// (`apns_environment`).
    #[serde(default)]
    pub environment: Environment,
    /// Replaces Apple's host, for both environments (a relay, a test server).
    #[serde(default)]
    pub base_url: Option<String>,
    /// A root certificate to trust besides the system's (PEM; `ca-file`
    /// names the file): a relay with a private CA, a test server.
    #[serde(default, alias = "ca")]
    pub ca_pem: Option<String>,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

impl std::fmt::Debug for ApnsAppConfig {
    // The key never reaches a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApnsAppConfig")
            .field("team_id", &self.team_id)
            .field("key_id", &self.key_id)
            .field("topic", &self.topic)
            .field("environment", &self.environment)
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct FcmAppConfig {
    /// The service account's key file (JSON); `service-account-file` names
    /// the file.
    #[serde(alias = "service-account")]
    pub service_account_json: String,
    /// Overrides the key file's `project_id`.
    #[serde(default)]
    pub project_id: Option<String>,
    /// Replaces `https://fcm.googleapis.com` (a relay, a test server).
    #[serde(default)]
    pub base_url: Option<String>,
    /// Replaces the key file's `token_uri`.
    #[serde(default)]
    pub token_url: Option<String>,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

impl std::fmt::Debug for FcmAppConfig {
    // The service account's private key never reaches a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FcmAppConfig")
            .field("project_id", &self.project_id)
            .field("base_url", &self.base_url)
            .field("token_url", &self.token_url)
            .finish_non_exhaustive()
    }
}

fn default_timeout_ms() -> u64 {
    10_000
}

impl ApnsAppConfig {
    /// The client's configuration for one environment.
    pub fn client_config(&self, environment: Environment) -> ApnsConfig {
        ApnsConfig {
            environment,
            base_url: self.base_url.clone(),
            team_id: self.team_id.clone(),
            key_id: self.key_id.clone(),
            key_pem: self.key_pem.clone(),
            topic: self.topic.clone(),
            timeout_ms: self.timeout_ms,
        }
    }

    /// A client (one HTTP/2 connection) for `environment`. Errors name the
    /// key under `field` (e.g. `providers.push.apps[0].apns`).
    pub fn client(
        &self,
        environment: Environment,
        clock: Arc<dyn Clock>,
        field: &str,
    ) -> Result<ApnsClient, String> {
        let cfg = self.client_config(environment);
        let built = match &self.ca_pem {
            Some(ca) => {
                check_certificates(ca).map_err(|e| format!("{field}.ca: {e}"))?;
                ApnsClient::with_root_certificate(&cfg, clock, ca.as_bytes())
            }
            None => ApnsClient::new(&cfg, clock),
        };
        built.map_err(|e| rebase(&e, "providers.apns", field))
    }
}

impl FcmAppConfig {
    pub fn client(&self, clock: Arc<dyn Clock>, field: &str) -> Result<FcmClient, String> {
        let cfg = FcmConfig {
            service_account_json: self.service_account_json.clone(),
            project_id: self.project_id.clone(),
            base_url: self.base_url.clone(),
            token_url: self.token_url.clone(),
            timeout_ms: self.timeout_ms,
        };
        FcmClient::new(&cfg, clock).map_err(|e| {
            rebase(&e, "providers.fcm", field)
                .replace(".service-account-json:", ".service-account:")
        })
    }
}

/// At least one PEM certificate, and nothing unreadable (reqwest takes a
/// PEM without certificates silently, and the connection fails later).
fn check_certificates(pem: &str) -> Result<(), String> {
    use rustls_pki_types::pem::PemObject;
    let certs = rustls_pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not a PEM certificate: {e}"))?;
    if certs.is_empty() {
        return Err("no PEM certificate in it".into());
    }
    Ok(())
}

/// `providers.apns.key-pem: ...` → `providers.push.apps[0].apns.key-pem: ...`.
fn rebase(err: &str, from: &str, to: &str) -> String {
    match err.strip_prefix(from) {
        Some(rest) => format!("{to}{rest}"),
        None => format!("{to}: {err}"),
    }
}

fn check_url(field: &str, url: Option<&str>, https: bool) -> Result<(), String> {
    let Some(url) = url else { return Ok(()) };
    let ok = url.starts_with("https://") || (!https && url.starts_with("http://"));
    if !ok {
        let want = if https {
            "an https:// URL"
        } else {
            "an http(s):// URL"
        };
        return Err(format!("{field}: {url:?} is not {want}"));
    }
    Ok(())
}

impl PushConfig {
    /// Checks every app: ids, duplicates, and each credential by building
    /// its client (a bad key fails here, at start, naming its key).
    pub fn validate(&self, clock: Arc<dyn Clock>) -> Result<(), String> {
        let mut seen = HashSet::new();
        for (i, app) in self.apps.iter().enumerate() {
            let field = format!("providers.push.apps[{i}]");
            app.validate(&field, clock.clone())?;
            if !seen.insert((app.tenant.as_str(), app.app.as_str())) {
                return Err(format!(
                    "{field}: tenant {:?} app {:?} is configured twice",
                    app.tenant, app.app
                ));
            }
        }
        Ok(())
    }
}

impl PushAppConfig {
    fn validate(&self, field: &str, clock: Arc<dyn Clock>) -> Result<(), String> {
        clarion_domain::TenantId::parse(&self.tenant)
            .map_err(|e| format!("{field}.tenant: {e}"))?;
        let mut v = clarion_domain::Violations::default();
        clarion_domain::workflow::validate_id(&mut v, "app", &self.app);
        if let Some(first) = v.0.first() {
            return Err(format!("{field}.app: {}", first.description));
        }
        if self.apns.is_none() && self.fcm.is_none() {
            return Err(format!(
                "{field}: no credentials: give apns, fcm or both (tenant {:?}, app {:?})",
                self.tenant, self.app
            ));
        }
        if let Some(apns) = &self.apns {
            let field = format!("{field}.apns");
            check_url(&format!("{field}.base-url"), apns.base_url.as_deref(), true)?;
            apns.client(apns.environment, clock.clone(), &field)?;
        }
        if let Some(fcm) = &self.fcm {
            let field = format!("{field}.fcm");
            check_url(&format!("{field}.base-url"), fcm.base_url.as_deref(), false)?;
            check_url(
                &format!("{field}.token-url"),
                fcm.token_url.as_deref(),
                false,
            )?;
            fcm.client(clock, &field)?;
        }
        Ok(())
    }
}

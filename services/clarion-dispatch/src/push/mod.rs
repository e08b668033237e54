//! The `push` provider: one `DispatchRequested` of channel push fans out to
//! every device it names (`push_targets`), concurrently, each through APNs
//! or FCM with the credentials the operator configured for the tenant's app
//! (`providers.push`, [`config`]).
//!
//! Per device: the sealed token is opened with the master keyring (only
//! here, only for the call), the request built ([`apns_request`],
//! [`fcm_request`]) and the answer classified ([`outcome`]). The send is
//! delivered when one device accepted it; every device's answer becomes a
//! `PushDeviceOutcome`, a dead token a `PushRejected` on the subscriber's
//! stream (the router revokes). Credential errors alert the operator and
//! never touch tokens.
//!
//! One APNs client (one HTTP/2 connection) per tenant, app and environment;
//! one FCM client (one cached access token) per tenant and app.

pub mod apns_request;
pub mod config;
pub mod fcm_request;
pub mod outcome;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use clarion_domain::push::{Platform, PushProvider as Via};
use clarion_proto::events as pb;
use clarion_runtime::Clock;
use serde_json::{Map, Value};

pub use config::{ApnsAppConfig, FcmAppConfig, PushAppConfig, PushConfig};
pub use outcome::{Class, DeviceResult};

use crate::apns::{ApnsClient, Environment};
use crate::fcm::FcmClient;
use crate::provider::{Provider, Report, SendError, SendOutcome};
use crate::secrets::Keyring;

/// The provider's name (`KNOWN_PROVIDERS`, the router's default for push).
pub const PUSH: &str = "push";

struct ApnsApp {
    cfg: ApnsAppConfig,
    field: String,
    /// Per environment (sandbox, production): made at its first push, the
    /// configured environment's at start.
    clients: Mutex<[Option<Arc<ApnsClient>>; 2]>,
}

impl ApnsApp {
    fn client(&self, env: Environment, clock: &Arc<dyn Clock>) -> Result<Arc<ApnsClient>, String> {
        let slot = match env {
            Environment::Sandbox => 0,
            Environment::Production => 1,
        };
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = &clients[slot] {
            return Ok(c.clone());
        }
        let c = Arc::new(self.cfg.client(env, clock.clone(), &self.field)?);
        clients[slot] = Some(c.clone());
        Ok(c)
    }
}

struct App {
    apns: Option<ApnsApp>,
    fcm: Option<FcmClient>,
}

pub struct PushProvider {
    apps: HashMap<(String, String), App>,
    keyring: Arc<Keyring>,
    clock: Arc<dyn Clock>,
}

impl PushProvider {
    /// Checks the configuration and makes every app's clients; errors name
    /// the configuration key.
    pub fn new(
        cfg: &PushConfig,
        keyring: Arc<Keyring>,
        clock: Arc<dyn Clock>,
    ) -> Result<PushProvider, String> {
        cfg.validate(clock.clone())?;
        let mut apps = HashMap::new();
        for (i, a) in cfg.apps.iter().enumerate() {
            let field = format!("providers.push.apps[{i}]");
            let apns = a.apns.as_ref().map(|c| ApnsApp {
                cfg: c.clone(),
                field: format!("{field}.apns"),
                clients: Mutex::default(),
            });
            if let Some(apns) = &apns {
                apns.client(apns.cfg.environment, &clock)?;
            }
            let fcm = match &a.fcm {
                Some(c) => Some(c.client(clock.clone(), &format!("{field}.fcm"))?),
                None => None,
            };
            apps.insert((a.tenant.clone(), a.app.clone()), App { apns, fcm });
        }
        Ok(PushProvider {
            apps,
            keyring,
            clock,
        })
    }
}

/// The step's data (a JSON object) for both wire formats: as JSON for the
/// APNs payload, as strings for FCM (or why it cannot be).
struct Data {
    json: Option<Map<String, Value>>,
    strings: Result<BTreeMap<String, String>, String>,
}

impl Data {
    fn parse(data_json: &str) -> Result<Data, String> {
        if data_json.trim().is_empty() {
            return Ok(Data {
                json: None,
                strings: Ok(BTreeMap::new()),
            });
        }
        let value: Value =
            serde_json::from_str(data_json).map_err(|e| format!("data: not JSON: {e}"))?;
        let Value::Object(obj) = &value else {
            return Err("data: must be a JSON object".into());
        };
        Ok(Data {
            strings: crate::fcm::data_from_json(&value).map_err(|e| e.to_string()),
            json: Some(obj.clone()),
        })
    }
}

/// One device's push, as the fan-out sees it.
struct Send<'a> {
    tenant: &'a str,
    msg: &'a pb::DispatchRequested,
    options: &'a pb::PushOptions,
    app: Option<&'a App>,
    data: &'a Data,
    now_ms: i64,
}

impl PushProvider {
    async fn send_one(&self, s: &Send<'_>, target: &pb::PushTarget) -> DeviceResult {
        let platform = match target.platform.parse::<Platform>() {
            Ok(p) => p,
            Err(e) => return DeviceResult::failed("", e),
        };
        let via = match target.provider.as_str() {
            "" => platform.default_provider(),
            p => match p.parse::<Via>() {
                Ok(v) => v,
                Err(e) => return DeviceResult::failed("", e),
            },
        };
        let name = via.as_str();
        let missing = || {
            DeviceResult::failed(
                name,
                format!(
                    "app {:?} of tenant {:?} has no {} credentials on this dispatcher for its {} \
                     devices (providers.push.apps)",
                    s.options.app_id,
                    s.tenant,
                    match via {
                        Via::Apns => "APNs",
                        Via::Fcm => "FCM",
                    },
                    platform
                ),
            )
        };
        let Some(app) = s.app else { return missing() };
        let token = match target.token.as_ref() {
            None => return DeviceResult::failed(name, "the device has no token"),
            Some(t) => match crate::device_token::clear(&self.keyring, s.tenant, t) {
                Ok(t) => t,
                Err(e) => return DeviceResult::failed(name, e.to_string()),
            },
        };
        match via {
            Via::Apns => {
                let Some(apns) = &app.apns else {
                    return missing();
                };
                let env = match s.options.apns_environment.as_str() {
                    "sandbox" => Environment::Sandbox,
                    "production" => Environment::Production,
                    _ => apns.cfg.environment,
                };
                let client = match apns.client(env, &self.clock) {
                    Ok(c) => c,
                    Err(e) => return DeviceResult::failed(name, e),
                };
                let req = apns_request::request(
                    s.msg,
                    s.options,
                    s.data.json.as_ref(),
                    &target.device_id,
                    &apns.cfg.topic,
                    s.now_ms,
                );
                DeviceResult::from_apns(client.send(&token, &req).await, &token)
            }
            Via::Fcm => {
                let Some(fcm) = &app.fcm else {
                    return missing();
                };
                let data = match &s.data.strings {
                    Ok(d) => d,
                    Err(e) => return DeviceResult::failed(name, e.clone()),
                };
                let m =
                    fcm_request::message(token.clone(), platform, s.msg, s.options, data, s.now_ms);
                DeviceResult::from_fcm(fcm.send(&m).await, &token)
            }
        }
    }
}

/// Counts every device's outcome; credential errors also alert the
/// operator (labels stay bounded: no tenant, app or device).
fn observe(tenant: &str, app: &str, results: &[DeviceResult]) {
    for r in results {
        metrics::counter!(
            "clarion_push_device_outcomes_total",
            "provider" => r.provider,
            "outcome" => r.class.as_str()
        )
        .increment(1);
        if r.class == Class::Credentials {
            metrics::counter!("clarion_push_credential_errors_total", "provider" => r.provider)
                .increment(1);
            tracing::error!(
                tenant,
                app,
                provider = r.provider,
                detail = %r.detail,
                "push credentials refused: an operator must fix them (providers.push.apps); \
                 device tokens are left alone"
            );
        }
    }
}

#[async_trait]
impl Provider for PushProvider {
    fn name(&self) -> &'static str {
        PUSH
    }

    async fn send(
        &self,
        tenant: &str,
        msg: &pb::DispatchRequested,
    ) -> Result<SendOutcome, SendError> {
        self.send_reported(tenant, msg).await.result
    }

    async fn send_reported(&self, tenant: &str, msg: &pb::DispatchRequested) -> Report {
        let options = msg.push.clone().unwrap_or_default();
        if msg.push_targets.is_empty() {
            return Err(SendError::terminal(format!(
                "no active device of app {:?} to push to",
                options.app_id
            )))
            .into();
        }
        let data = match Data::parse(&msg.data_json) {
            Ok(d) => d,
            Err(e) => return Err(SendError::terminal(e)).into(),
        };
        let s = Send {
            tenant,
            msg,
            options: &options,
            app: self.apps.get(&(tenant.to_string(), options.app_id.clone())),
            data: &data,
            now_ms: self.clock.now_ms(),
        };
        let results =
            futures::future::join_all(msg.push_targets.iter().map(|t| self.send_one(&s, t))).await;
        observe(tenant, &options.app_id, &results);
        outcome::report(msg, &results)
    }
}

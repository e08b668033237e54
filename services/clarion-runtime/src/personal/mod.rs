//! Crypto-shredding (issue #32): personal data sealed under per-subscriber
//! data keys, message bodies also under the tenant's per-day body keys.
//!
//! Personal fields (`clarion_domain::personal`) are sealed where they enter
//! the log — the gateway's appends, the runner's emits — and opened only
//! where they are used: the router when it renders, the dispatcher when it
//! sends, read APIs and exports when they answer. Projections copy events as
//! logged, so they hold ciphertext too. Destroying a subscriber's data keys
//! (erasure) or a day's body key (retention) makes every copy unreadable:
//! what was sealed under it opens as `[erased]` / `[redacted]`, while the
//! facts around it (ids, statuses, timings) stay.
//!
//! Keys are cached per process for [`KEY_TTL`]: a process that did not make
//! the erasure stops opening the subscriber's data within that time (the
//! router drops its cache at once on the erasure event it consumes).

mod keys;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aes_gcm::aead::{Aead, KeyInit, Payload as AeadPayload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use chrono::{Datelike, NaiveDate};
use clarion_domain::ids::TenantId;
use clarion_domain::personal::{self, Kind, Owner, Sealed};
pub use clarion_domain::personal::{is_sealed, ERASED, REDACTED};
use clarion_domain::Event;
use clarion_store::{Store, StoreError};
use hmac::{Hmac, Mac};
use serde_json::Value;

use crate::secrets::{Keyring, KeyringError};
use keys::{Key, SubscriberKeys};

/// How long a process trusts its cached keys.
pub const KEY_TTL: Duration = Duration::from_secs(30);
/// Cached entries before the cache starts over (bounded memory).
const CACHE_MAX: usize = 200_000;

#[derive(Debug, thiserror::Error)]
pub enum PersonalError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("personal-data key: {0}")]
    Keyring(#[from] KeyringError),
}

impl PersonalError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, PersonalError::Store(e) if e.is_retryable())
    }
}

/// What an erasure destroyed.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct KeysDestroyed {
    pub subscriber: String,
    pub generations: Vec<u32>,
}

type Cached<T> = (Instant, T);
/// Cache entries by (tenant, subscriber) or (tenant, body key ck).
type Cache<T> = Mutex<HashMap<(String, String), Cached<T>>>;

/// The sealing and opening service of one process.
pub struct Personal {
    store: Arc<dyn Store>,
    ring: Arc<Keyring>,
    subscribers: Cache<Arc<SubscriberKeys>>,
    bodies: Cache<Option<Arc<Key>>>,
}

impl Personal {
    pub fn new(store: Arc<dyn Store>, ring: Arc<Keyring>) -> Arc<Personal> {
        Arc::new(Personal {
            store,
            ring,
            subscribers: Mutex::default(),
            bodies: Mutex::default(),
        })
    }

    pub fn is_sealed(value: &str) -> bool {
        personal::is_sealed(value)
    }

    /// Seals in place every personal field of the event still in clear.
    pub async fn seal_event(&self, event: &mut Event) -> Result<(), PersonalError> {
        let tenant = event.tenant.as_str().to_string();
        let day = utc_day(event.occurred_at_ms);
        if let clarion_domain::Payload::Triggered(t) = &mut event.payload {
            if !t.personal_paths.is_empty() && !t.subscriber_id.is_empty() {
                t.payload_json = self
                    .seal_paths(
                        &tenant,
                        &t.subscriber_id,
                        &t.payload_json,
                        &t.personal_paths,
                    )
                    .await?;
            }
        }
        let Some((owner, fields)) = personal::fields_mut(&mut event.payload) else {
            return Ok(());
        };
        if owner.subscriber.is_empty() {
            return Ok(()); // a send to a bare address: no subscriber to erase
        }
        for (kind, value) in fields {
            if value.is_empty() || is_sealed(value) || kind == Kind::Json {
                continue;
            }
            *value = match kind {
                Kind::Field => self.seal_field(&tenant, &owner.subscriber, value).await?,
                _ => self.seal_body(&tenant, &owner, day, value).await?,
            };
        }
        Ok(())
    }

    /// Opens in place every sealed personal field of the event.
    pub async fn open_event(&self, event: &mut Event) -> Result<(), PersonalError> {
        let tenant = event.tenant.clone();
        let Some((owner, fields)) = personal::fields_mut(&mut event.payload) else {
            return Ok(());
        };
        for (kind, value) in fields {
            match kind {
                Kind::Json if personal::json_may_hold_sealed(value) => {
                    *value = self.open_json(&tenant, &owner.subscriber, value).await?;
                }
                _ if is_sealed(value) => {
                    *value = self.open(&tenant, &owner.subscriber, value).await?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Seals one value under the subscriber's data key (a field kept
    /// outside an event's listed fields, e.g. a device token).
    pub async fn seal_value(
        &self,
        tenant: &TenantId,
        subscriber: &str,
        value: &str,
    ) -> Result<String, PersonalError> {
        if value.is_empty() || is_sealed(value) {
            return Ok(value.to_string());
        }
        self.seal_field(tenant.as_str(), subscriber, value).await
    }

    /// Opens one value: plain values come back unchanged; destroyed keys
    /// give [`ERASED`] / [`REDACTED`].
    pub async fn open(
        &self,
        tenant: &TenantId,
        subscriber: &str,
        value: &str,
    ) -> Result<String, PersonalError> {
        let tenant = tenant.as_str();
        let Some(sealed) = Sealed::parse(value) else {
            return Ok(value.to_string());
        };
        let keys = self.subscriber_keys(tenant, subscriber).await?;
        Ok(match sealed {
            Sealed::Field { generation, blob } => match keys.get(generation) {
                Some(k) => decrypt(&k.cipher, b"pd1", blob).unwrap_or_else(|| ERASED.into()),
                None => ERASED.into(),
            },
            Sealed::Body {
                day,
                channel,
                country,
                generation,
                blob,
            } => {
                let Some(dk) = keys.get(generation) else {
                    return Ok(ERASED.into());
                };
                let ck = keys::body_ck(day, channel, country);
                let Some(bk) = self.body_key(tenant, &ck, false).await? else {
                    return Ok(REDACTED.into());
                };
                let cipher = body_cipher(dk, &bk);
                decrypt(&cipher, b"pb1", blob).unwrap_or_else(|| REDACTED.into())
            }
        })
    }

    /// Opens a stored profile's personal fields in place (the profile rows
    /// hold the `SubscriberUpserted` as logged).
    pub async fn open_profile(
        &self,
        tenant: &TenantId,
        p: &mut clarion_proto::events::SubscriberUpserted,
    ) -> Result<(), PersonalError> {
        let id = p.subscriber_id.clone();
        for f in [
            &mut p.email,
            &mut p.phone,
            &mut p.attributes_json,
            &mut p.webhook_url,
        ] {
            if is_sealed(f) {
                *f = self.open(tenant, &id, f).await?;
            }
        }
        Ok(())
    }

    /// Opens the sealed string values inside a JSON text.
    async fn open_json(
        &self,
        tenant: &TenantId,
        subscriber: &str,
        json: &str,
    ) -> Result<String, PersonalError> {
        let Ok(mut v) = serde_json::from_str::<Value>(json) else {
            return Ok(json.to_string());
        };
        let mut sealed = Vec::new();
        collect_sealed(&mut v, &mut sealed);
        for s in sealed {
            *s = Value::String(
                self.open(tenant, subscriber, s.as_str().unwrap_or(""))
                    .await?,
            );
        }
        Ok(v.to_string())
    }

    /// Destroys the subscriber's data keys (every generation).
    pub async fn erase_subscriber(
        &self,
        tenant: &TenantId,
        subscriber: &str,
    ) -> Result<KeysDestroyed, PersonalError> {
        let generations =
            keys::destroy_subscriber(&*self.store, tenant.as_str(), subscriber).await?;
        self.forget(tenant.as_str(), subscriber);
        Ok(KeysDestroyed {
            subscriber: subscriber.to_string(),
            generations,
        })
    }

    /// Destroys the tenant's body keys of `day` for the channel and country
    /// ("*" for any); returns how many were destroyed.
    pub async fn redact_bodies(
        &self,
        tenant: &TenantId,
        day: NaiveDate,
        channel: &str,
        country: &str,
    ) -> Result<u64, PersonalError> {
        let n = keys::destroy_bodies(
            &*self.store,
            tenant.as_str(),
            day_number(day),
            channel,
            country,
        )
        .await?;
        self.bodies
            .lock()
            .expect("body key cache")
            .retain(|(t, _), _| t != tenant.as_str());
        Ok(n)
    }

    /// The days, channels and countries that still have a body key, oldest
    /// day first.
    pub async fn body_key_days(
        &self,
        tenant: &TenantId,
    ) -> Result<Vec<(NaiveDate, String, String)>, PersonalError> {
        let rows = keys::list_bodies(&*self.store, tenant.as_str(), None).await?;
        Ok(rows
            .into_iter()
            .filter(|(_, v)| !v.is_empty())
            .filter_map(|(ck, _)| {
                let (day, channel, country) = keys::split_body_ck(&ck)?;
                Some((from_day_number(day)?, channel, country))
            })
            .collect())
    }

    /// Drops what this process cached of a subscriber's keys.
    pub fn forget(&self, tenant: &str, subscriber: &str) {
        self.subscribers
            .lock()
            .expect("data key cache")
            .remove(&(tenant.to_string(), subscriber.to_string()));
    }

    /// Seals the values at `paths` inside a JSON payload under the
    /// subscriber's data key (`personal::paths`). A trigger's payload is
    /// copied into each recipient's event, so each copy is sealed under its
    /// own recipient's key: erasing one recipient leaves the others' intact.
    pub async fn seal_paths(
        &self,
        tenant: &str,
        subscriber: &str,
        json: &str,
        paths: &[String],
    ) -> Result<String, PersonalError> {
        let Ok(mut v) = serde_json::from_str::<Value>(json) else {
            return Ok(json.to_string()); // validated at the door; nothing to reach
        };
        let (generation, key) = self.current_key(tenant, subscriber).await?;
        let n = personal::paths::seal_in_place(&mut v, paths, &is_sealed, &mut |text| {
            Sealed::field(generation, &encrypt(&key.cipher, b"pd1", text))
        });
        Ok(if n == 0 {
            json.to_string()
        } else {
            v.to_string()
        })
    }

    async fn seal_field(
        &self,
        tenant: &str,
        subscriber: &str,
        value: &str,
    ) -> Result<String, PersonalError> {
        let (generation, key) = self.current_key(tenant, subscriber).await?;
        Ok(Sealed::field(
            generation,
            &encrypt(&key.cipher, b"pd1", value),
        ))
    }

    async fn seal_body(
        &self,
        tenant: &str,
        owner: &Owner,
        day: u32,
        value: &str,
    ) -> Result<String, PersonalError> {
        let channel = if owner.channel.is_empty() {
            "*"
        } else {
            &owner.channel
        };
        let ck = keys::body_ck(day, channel, &owner.country);
        let Some(bk) = self.body_key(tenant, &ck, true).await? else {
            // The day was redacted already: a late message is kept redacted.
            return Ok(REDACTED.into());
        };
        let (generation, dk) = self.current_key(tenant, &owner.subscriber).await?;
        let cipher = body_cipher(&dk, &bk);
        Ok(Sealed::body(
            day,
            channel,
            &owner.country,
            generation,
            &encrypt(&cipher, b"pb1", value),
        ))
    }

    /// The subscriber's current data key, made when there is none.
    async fn current_key(
        &self,
        tenant: &str,
        subscriber: &str,
    ) -> Result<(u32, Arc<Key>), PersonalError> {
        for _ in 0..3 {
            let keys = self.subscriber_keys(tenant, subscriber).await?;
            if let Some((g, k)) = keys.current() {
                return Ok((g, k.clone()));
            }
            let next = keys.highest + 1;
            keys::create_subscriber_key(&*self.store, &self.ring, tenant, subscriber, next).await?;
            self.forget(tenant, subscriber);
        }
        Err(PersonalError::Keyring(KeyringError::Malformed))
    }

    async fn subscriber_keys(
        &self,
        tenant: &str,
        subscriber: &str,
    ) -> Result<Arc<SubscriberKeys>, PersonalError> {
        let id = (tenant.to_string(), subscriber.to_string());
        if let Some((at, k)) = self.subscribers.lock().expect("data key cache").get(&id) {
            if at.elapsed() < KEY_TTL {
                return Ok(k.clone());
            }
        }
        let keys =
            Arc::new(keys::load_subscriber(&*self.store, &self.ring, tenant, subscriber).await?);
        let mut cache = self.subscribers.lock().expect("data key cache");
        if cache.len() >= CACHE_MAX {
            cache.clear();
        }
        cache.insert(id, (Instant::now(), keys.clone()));
        Ok(keys)
    }

    async fn body_key(
        &self,
        tenant: &str,
        ck: &str,
        create: bool,
    ) -> Result<Option<Arc<Key>>, PersonalError> {
        let id = (tenant.to_string(), ck.to_string());
        if let Some((at, k)) = self.bodies.lock().expect("body key cache").get(&id) {
            if at.elapsed() < KEY_TTL && (k.is_some() || !create) {
                return Ok(k.clone());
            }
        }
        let k = keys::body_key(&*self.store, &self.ring, tenant, ck, create).await?;
        let mut cache = self.bodies.lock().expect("body key cache");
        if cache.len() >= CACHE_MAX {
            cache.clear();
        }
        cache.insert(id, (Instant::now(), k.clone()));
        Ok(k)
    }
}

/// The string values of `v` that are sealed.
fn collect_sealed<'v>(v: &'v mut Value, out: &mut Vec<&'v mut Value>) {
    match v {
        Value::String(s) if is_sealed(s) => out.push(v),
        Value::Array(items) => items.iter_mut().for_each(|i| collect_sealed(i, out)),
        Value::Object(map) => map.values_mut().for_each(|i| collect_sealed(i, out)),
        _ => {}
    }
}

/// The cipher of a body: a key only both the subscriber's data key and the
/// day's body key give (HMAC-SHA256 keyed by one over the other).
fn body_cipher(dk: &Key, bk: &Key) -> Aes256Gcm {
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(&bk.raw).expect("any key length");
    mac.update(b"clarion body key v1");
    mac.update(&dk.raw);
    let derived: [u8; 32] = mac.finalize().into_bytes().into();
    Aes256Gcm::new(&derived.into())
}

fn encrypt(cipher: &Aes256Gcm, aad: &[u8], plaintext: &str) -> String {
    let nonce: [u8; 12] = rand::random();
    let ct = cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            AeadPayload {
                msg: plaintext.as_bytes(),
                aad,
            },
        )
        .expect("AES-GCM encrypts any length a field has");
    let mut blob = Vec::with_capacity(12 + ct.len());
    blob.extend_from_slice(&nonce);
    blob.extend_from_slice(&ct);
    B64.encode(blob)
}

fn decrypt(cipher: &Aes256Gcm, aad: &[u8], blob: &str) -> Option<String> {
    let bytes = B64.decode(blob).ok()?;
    if bytes.len() < 12 + 16 {
        return None;
    }
    let (nonce, ct) = bytes.split_at(12);
    let pt = cipher
        .decrypt(Nonce::from_slice(nonce), AeadPayload { msg: ct, aad })
        .ok()?;
    String::from_utf8(pt).ok()
}

/// `yyyymmdd` of the UTC day of a time in ms.
fn utc_day(ms: i64) -> u32 {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| day_number(t.date_naive()))
        .unwrap_or(19700101)
}

fn day_number(d: NaiveDate) -> u32 {
    d.year() as u32 * 10_000 + d.month() * 100 + d.day()
}

fn from_day_number(n: u32) -> Option<NaiveDate> {
    NaiveDate::from_ymd_opt((n / 10_000) as i32, (n / 100) % 100, n % 100)
}

#[cfg(test)]
mod tests;

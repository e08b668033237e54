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

mod cache;
mod keys;

use std::sync::{Arc, Mutex};
use std::time::Duration;

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
use cache::KeyCache;
use keys::{Key, SubscriberKeys};

/// How long a process trusts its cached keys.
pub const KEY_TTL: Duration = Duration::from_secs(30);

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

/// The sealing and opening service of one process.
pub struct Personal {
    store: Arc<dyn Store>,
    ring: Arc<Keyring>,
    /// Data keys by tenant and subscriber.
    subscribers: Mutex<KeyCache<Arc<SubscriberKeys>>>,
    /// Body keys by tenant and ck (`None`: destroyed).
    bodies: Mutex<KeyCache<Option<Arc<Key>>>>,
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
    /// The keys are looked up once per event, not once per field: a
    /// dispatch's address, subject and body share them.
    pub async fn seal_event(&self, event: &mut Event) -> Result<(), PersonalError> {
        if !personal::has_fields(&event.payload) {
            return Ok(()); // most events: outcomes, timers, configuration
        }
        let tenant = event.tenant.as_str();
        let day = utc_day(event.occurred_at_ms);
        if let clarion_domain::Payload::Triggered(t) = &mut event.payload {
            if !t.personal_paths.is_empty() && !t.subscriber_id.is_empty() {
                t.payload_json = self
                    .seal_paths(tenant, &t.subscriber_id, &t.payload_json, &t.personal_paths)
                    .await?;
            }
        }
        let Some((owner, fields)) = personal::fields_mut(&mut event.payload) else {
            return Ok(());
        };
        if owner.subscriber.is_empty() {
            return Ok(()); // a send to a bare address: no subscriber to erase
        }
        let mut keys = SealKeys::default();
        for (kind, value) in fields {
            if value.is_empty() || is_sealed(value) || kind == Kind::Json {
                continue;
            }
            *value = match kind {
                Kind::Field => {
                    let (generation, key) = keys.data(self, tenant, &owner.subscriber).await?;
                    Sealed::field(generation, &encrypt(&key.cipher, b"pd1", value))
                }
                _ => match keys.body(self, tenant, &owner, day).await? {
                    Some((generation, channel, cipher)) => Sealed::body(
                        day,
                        channel,
                        &owner.country,
                        generation,
                        &encrypt(cipher, b"pb1", value),
                    ),
                    // The day was redacted already: a late message is kept redacted.
                    None => REDACTED.into(),
                },
            };
        }
        Ok(())
    }

    /// Opens in place every sealed personal field of the event.
    pub async fn open_event(&self, event: &mut Event) -> Result<(), PersonalError> {
        let tenant = event.tenant.as_str();
        let Some((owner, fields)) = personal::fields_mut(&mut event.payload) else {
            return Ok(());
        };
        let mut opener = Opener::new(self, tenant, &owner.subscriber);
        for (kind, value) in fields {
            match kind {
                Kind::Json if personal::json_may_hold_sealed(value) => {
                    *value = opener.open_json(value).await?;
                }
                _ if is_sealed(value) => *value = opener.open(value).await?,
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
        let (generation, key) = self.current_key(tenant.as_str(), subscriber).await?;
        Ok(Sealed::field(
            generation,
            &encrypt(&key.cipher, b"pd1", value),
        ))
    }

    /// Opens one value: plain values come back unchanged; destroyed keys
    /// give [`ERASED`] / [`REDACTED`].
    pub async fn open(
        &self,
        tenant: &TenantId,
        subscriber: &str,
        value: &str,
    ) -> Result<String, PersonalError> {
        Opener::new(self, tenant.as_str(), subscriber)
            .open(value)
            .await
    }

    /// Opens a stored profile's personal fields in place (the profile rows
    /// hold the `SubscriberUpserted` as logged).
    pub async fn open_profile(
        &self,
        tenant: &TenantId,
        p: &mut clarion_proto::events::SubscriberUpserted,
    ) -> Result<(), PersonalError> {
        let id = std::mem::take(&mut p.subscriber_id);
        let mut opener = Opener::new(self, tenant.as_str(), &id);
        for f in [
            &mut p.email,
            &mut p.phone,
            &mut p.attributes_json,
            &mut p.webhook_url,
        ] {
            if is_sealed(f) {
                *f = opener.open(f).await?;
            }
        }
        drop(opener);
        p.subscriber_id = id;
        Ok(())
    }

    /// Opens the sealed string values inside a JSON value, in place.
    pub async fn open_json_value(
        &self,
        tenant: &TenantId,
        subscriber: &str,
        v: &mut Value,
    ) -> Result<(), PersonalError> {
        Opener::new(self, tenant.as_str(), subscriber)
            .open_value(v)
            .await
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
            .forget_tenant(tenant.as_str());
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
            .remove(tenant, subscriber);
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
        Ok(
            if self
                .seal_paths_in(tenant, subscriber, &mut v, paths)
                .await?
                == 0
            {
                json.to_string()
            } else {
                v.to_string()
            },
        )
    }

    /// [`Personal::seal_paths`] on a parsed value, in place; returns how
    /// many values it sealed.
    pub async fn seal_paths_in(
        &self,
        tenant: &str,
        subscriber: &str,
        v: &mut Value,
        paths: &[String],
    ) -> Result<usize, PersonalError> {
        if paths.is_empty() {
            return Ok(0);
        }
        let (generation, key) = self.current_key(tenant, subscriber).await?;
        Ok(personal::paths::seal_in_place(
            v,
            paths,
            &is_sealed,
            &mut |text| Sealed::field(generation, &encrypt(&key.cipher, b"pd1", text)),
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
        let cached = self
            .subscribers
            .lock()
            .expect("data key cache")
            .get(tenant, subscriber, KEY_TTL);
        if let Some(k) = cached {
            return Ok(k);
        }
        let keys =
            Arc::new(keys::load_subscriber(&*self.store, &self.ring, tenant, subscriber).await?);
        self.subscribers
            .lock()
            .expect("data key cache")
            .insert(tenant, subscriber, keys.clone());
        Ok(keys)
    }

    async fn body_key(
        &self,
        tenant: &str,
        ck: &str,
        create: bool,
    ) -> Result<Option<Arc<Key>>, PersonalError> {
        let cached = self
            .bodies
            .lock()
            .expect("body key cache")
            .get(tenant, ck, KEY_TTL);
        if let Some(k) = cached {
            if k.is_some() || !create {
                return Ok(k);
            }
        }
        let k = keys::body_key(&*self.store, &self.ring, tenant, ck, create).await?;
        self.bodies
            .lock()
            .expect("body key cache")
            .insert(tenant, ck, k.clone());
        Ok(k)
    }
}

/// The keys one event's fields are sealed under, looked up on first need.
#[derive(Default)]
struct SealKeys {
    data: Option<(u32, Arc<Key>)>,
    /// The body cipher (generation, channel as filed); `Some(None)`: the
    /// day's body key was destroyed.
    body: Option<Option<(u32, String, Aes256Gcm)>>,
}

impl SealKeys {
    async fn data(
        &mut self,
        p: &Personal,
        tenant: &str,
        subscriber: &str,
    ) -> Result<(u32, Arc<Key>), PersonalError> {
        if let Some(k) = &self.data {
            return Ok(k.clone());
        }
        let k = p.current_key(tenant, subscriber).await?;
        self.data = Some(k.clone());
        Ok(k)
    }

    /// The cipher of the owner's bodies of `day`: `None` when the day was
    /// redacted already.
    async fn body(
        &mut self,
        p: &Personal,
        tenant: &str,
        owner: &Owner,
        day: u32,
    ) -> Result<Option<(u32, &str, &Aes256Gcm)>, PersonalError> {
        if self.body.is_none() {
            let channel = if owner.channel.is_empty() {
                "*"
            } else {
                &owner.channel
            };
            let ck = keys::body_ck(day, channel, &owner.country);
            let made = match p.body_key(tenant, &ck, true).await? {
                None => None,
                Some(bk) => {
                    let (generation, dk) = self.data(p, tenant, &owner.subscriber).await?;
                    Some((generation, channel.to_string(), body_cipher(&dk, &bk)))
                }
            };
            self.body = Some(made);
        }
        Ok(self
            .body
            .as_ref()
            .and_then(|b| b.as_ref())
            .map(|(g, ch, c)| (*g, ch.as_str(), c)))
    }
}

/// Opens the sealed values of one subscriber, looking their keys up once
/// (and a body's cipher once per day, channel and country).
struct Opener<'a> {
    p: &'a Personal,
    tenant: &'a str,
    subscriber: &'a str,
    keys: Option<Arc<SubscriberKeys>>,
    /// The last body cipher made: its ck and generation, and the cipher
    /// (`None`: the body key was destroyed).
    body: Option<(String, u32, Option<Aes256Gcm>)>,
}

impl<'a> Opener<'a> {
    fn new(p: &'a Personal, tenant: &'a str, subscriber: &'a str) -> Opener<'a> {
        Opener {
            p,
            tenant,
            subscriber,
            keys: None,
            body: None,
        }
    }

    async fn keys(&mut self) -> Result<Arc<SubscriberKeys>, PersonalError> {
        if let Some(k) = &self.keys {
            return Ok(k.clone());
        }
        let k = self.p.subscriber_keys(self.tenant, self.subscriber).await?;
        self.keys = Some(k.clone());
        Ok(k)
    }

    async fn open(&mut self, value: &str) -> Result<String, PersonalError> {
        let Some(sealed) = Sealed::parse(value) else {
            return Ok(value.to_string());
        };
        let keys = self.keys().await?;
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
                let known = matches!(&self.body, Some((c, g, _)) if *c == ck && *g == generation);
                if !known {
                    let cipher = self
                        .p
                        .body_key(self.tenant, &ck, false)
                        .await?
                        .map(|bk| body_cipher(dk, &bk));
                    self.body = Some((ck, generation, cipher));
                }
                match self.body.as_ref().and_then(|(_, _, c)| c.as_ref()) {
                    Some(cipher) => {
                        decrypt(cipher, b"pb1", blob).unwrap_or_else(|| REDACTED.into())
                    }
                    None => REDACTED.into(),
                }
            }
        })
    }

    /// Opens the sealed string values inside a JSON text.
    async fn open_json(&mut self, json: &str) -> Result<String, PersonalError> {
        let Ok(mut v) = serde_json::from_str::<Value>(json) else {
            return Ok(json.to_string());
        };
        self.open_value(&mut v).await?;
        Ok(v.to_string())
    }

    async fn open_value(&mut self, v: &mut Value) -> Result<(), PersonalError> {
        let mut sealed = Vec::new();
        collect_sealed(v, &mut sealed);
        for s in sealed {
            *s = Value::String(self.open(s.as_str().unwrap_or("")).await?);
        }
        Ok(())
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

//! The device registry's operations (docs/push.md), whatever the door:
//! register, list, rotate and revoke a subscriber's devices.
//!
//! A change is an event on the subscriber's stream (`DeviceRegistered`,
//! `DeviceTokenRotated`, `DeviceRevoked`), so the router holds each
//! subscriber's devices in its own state and applies changes in order with
//! the sends; the router writes the rows these operations read
//! (`Table::Devices`, `Table::DeviceTokens`). A change answers once the
//! router applied it; should it not have within the wait, the answer is
//! the change as accepted (it is durable in the log either way).
//!
//! A token arrives in clear and leaves this module only sealed
//! (`clarion_dispatch::device_token`); no answer, error or log line
//! carries it, only its fingerprint.

use clarion_dispatch::device_token;
use clarion_domain::error::quote;
use clarion_domain::event::token_fingerprint;
use clarion_domain::push::{Platform, PushProvider, MAX_TOKEN_BYTES};
use clarion_domain::subscriber::{validate_contact, validate_subscriber_id, Contact};
use clarion_domain::workflow::validate_id;
use clarion_domain::{Id, Payload, Violations};
use clarion_proto::api;
use clarion_proto::events as pb;
use clarion_store::{RowKey, Scan, Table};
use prost::Message;

use crate::apps;
use crate::error::ApiError;
use crate::preferences::{profile, to_subscriber, Who};
use crate::state::GatewayState;

/// Most devices one list returns (a subscriber has a handful).
pub const MAX_LISTED: usize = 1000;
const MAX_APP_VERSION_BYTES: usize = 64;

pub const ACTIVE: &str = "active";
pub const REVOKED: &str = "revoked";
pub const EXPIRED: &str = "expired";

/// A device as the APIs show it: never its token, only the fingerprint;
/// `expired` when neither seen nor given a new token for
/// `expiry` (the operator's `devices.expire-after-days`, default
/// [`DEFAULT_DEVICE_EXPIRY_DAYS`]) by `now_ms` (the router's rule).
pub fn to_api(r: &pb::DeviceRecord, now_ms: i64, expiry: std::time::Duration) -> api::Device {
    let expiry_ms = i64::try_from(expiry.as_millis()).unwrap_or(i64::MAX);
    let last = r.last_seen_at_ms.max(r.token_registered_at_ms);
    let status = if r.status == REVOKED {
        REVOKED
    } else if now_ms.saturating_sub(last) > expiry_ms {
        EXPIRED
    } else {
        ACTIVE
    };
    api::Device {
        device_id: r.device_id.clone(),
        subscriber_id: r.subscriber_id.clone(),
        app_id: r.app_id.clone(),
        platform: r.platform.clone(),
        provider: r.provider.clone(),
        locale: r.locale.clone(),
        timezone: r.timezone.clone(),
        app_version: r.app_version.clone(),
        registered_at_ms: r.registered_at_ms,
        last_seen_at_ms: r.last_seen_at_ms,
        status: status.into(),
        revoked_reason: r.revoked_reason.clone(),
        revoked_detail: r.revoked_detail.clone(),
        revoked_at_ms: r.revoked_at_ms,
        token_fingerprint: token_fingerprint(r.token.as_ref().map_or(&[][..], |t| &t.hash)),
    }
}

/// Checks a token's shape without ever quoting it: present, within
/// [`MAX_TOKEN_BYTES`], visible ASCII; an APNs token is hexadecimal (it
/// goes into the request path).
fn check_token(v: &mut Violations, field: &str, token: &str, provider: Option<PushProvider>) {
    if token.is_empty() {
        v.push(field, "is required");
    } else if token.len() > MAX_TOKEN_BYTES {
        v.push(
            field,
            format!(
                "is {} bytes, over the limit of {MAX_TOKEN_BYTES} bytes",
                token.len()
            ),
        );
    } else if !token.bytes().all(|b| b.is_ascii_graphic()) {
        v.push(
            field,
            "must be visible ASCII: no spaces or control characters",
        );
    } else if provider == Some(PushProvider::Apns) && !token.bytes().all(|b| b.is_ascii_hexdigit())
    {
        v.push(field, "an APNs device token is hexadecimal");
    }
}

/// The platform and provider of a registration, every field checked at
/// once.
fn check_registration(
    r: &api::RegisterDeviceRequest,
) -> Result<(Platform, PushProvider), ApiError> {
    let mut v = Violations::default();
    validate_subscriber_id(&mut v, "subscriber_id", &r.subscriber_id);
    validate_id(&mut v, "app_id", &r.app_id);
    let platform = r
        .platform
        .parse::<Platform>()
        .map_err(|e| v.push("platform", e))
        .ok();
    let provider = match (r.provider.as_str(), platform) {
        ("", p) => p.map(Platform::default_provider),
        (name, p) => match name.parse::<PushProvider>() {
            Ok(PushProvider::Apns) if p.is_some_and(|p| p != Platform::Ios) => {
                v.push("provider", "apns delivers to ios devices only");
                None
            }
            Ok(provider) => Some(provider),
            Err(e) => {
                v.push("provider", e);
                None
            }
        },
    };
    check_token(&mut v, "token", &r.token, provider);
    let contact = Contact {
        locale: &r.locale,
        timezone: &r.timezone,
        ..Contact::default()
    };
    validate_contact(&mut v, "", contact);
    clarion_domain::limits::check_len(&mut v, "app_version", &r.app_version, MAX_APP_VERSION_BYTES);
    v.into_result()?;
    Ok((platform.expect("checked"), provider.expect("checked")))
}

fn device_key(who: &Who, subscriber_id: &str, device_id: &str) -> RowKey {
    RowKey::new(
        Table::Devices,
        who.tenant.as_str(),
        subscriber_id,
        device_id.as_bytes().to_vec(),
    )
}

/// A subscriber's device as the router last wrote it.
async fn record(
    s: &GatewayState,
    who: &Who,
    subscriber_id: &str,
    device_id: &str,
) -> Result<Option<pb::DeviceRecord>, ApiError> {
    match s
        .store
        .get(&device_key(who, subscriber_id, device_id))
        .await?
    {
        Some(b) => pb::DeviceRecord::decode(&b[..])
            .map(Some)
            .map_err(|e| ApiError::Internal(format!("stored device: {e}"))),
        None => Ok(None),
    }
}

/// A token as stored: its keyed hash (for lookups) and the token sealed
/// under the subscriber's data key, so an erasure shreds it (issue #32).
async fn seal_token(
    s: &GatewayState,
    tenant: &clarion_domain::TenantId,
    subscriber: &str,
    token: &str,
) -> Result<pb::SealedToken, ApiError> {
    let mut sealed = device_token::hashed(&s.keyring, tenant.as_str(), token);
    sealed.personal = s
        .personal
        .seal_value(tenant, subscriber, token)
        .await
        .map_err(|e| ApiError::Unavailable(format!("personal-data keys: {e}")))?;
    Ok(sealed)
}

/// The device of the tenant that holds `token` now, if one does (looked up
/// by its keyed hash under every master key; a stale index row, whose
/// device has another token since, does not count).
async fn holder(
    s: &GatewayState,
    who: &Who,
    token: &str,
) -> Result<Option<pb::DeviceRecord>, ApiError> {
    let tenant = who.tenant.as_str();
    for (_, hash) in device_token::hashes(&s.keyring, tenant, token) {
        let key = RowKey::new(Table::DeviceTokens, tenant, &hex::encode(hash), Vec::new());
        let Some(b) = s.store.get(&key).await? else {
            continue;
        };
        let r = pb::DeviceRef::decode(&b[..])
            .map_err(|e| ApiError::Internal(format!("stored device ref: {e}")))?;
        let Some(rec) = record(s, who, &r.subscriber_id, &r.device_id).await? else {
            continue;
        };
        let holds = rec
            .token
            .as_ref()
            .is_some_and(|t| device_token::matches(&s.keyring, tenant, token, t));
        if holds {
            return Ok(Some(rec));
        }
    }
    Ok(None)
}

/// Revokes the device that held a token now registered elsewhere (an app
/// reinstalled under another user: the old user no longer gets its pushes).
async fn revoke_moved(
    s: &GatewayState,
    who: &Who,
    held: &pb::DeviceRecord,
) -> Result<(), ApiError> {
    if held.status == REVOKED {
        return Ok(());
    }
    let revoked = pb::DeviceRevoked {
        subscriber_id: held.subscriber_id.clone(),
        device_id: held.device_id.clone(),
        reason: "moved".into(),
        origin: Some(who.origin()),
    };
    to_subscriber(s, who, &held.subscriber_id, Payload::DeviceRevoked(revoked)).await
}

/// The id of a new device: derived from what makes it (so a repeated
/// registration the router has not applied yet gets the same id), unless
/// that id is taken by a device holding another token.
async fn new_device_id(
    s: &GatewayState,
    who: &Who,
    r: &api::RegisterDeviceRequest,
    sealed: &pb::SealedToken,
) -> Result<String, ApiError> {
    let derived = Id::derive(&[
        b"device",
        who.tenant.as_str().as_bytes(),
        r.subscriber_id.as_bytes(),
        r.app_id.as_bytes(),
        &sealed.hash,
    ])
    .to_hex();
    match record(s, who, &r.subscriber_id, &derived).await? {
        Some(rec) if rec.token.as_ref().map(|t| &t.hash) != Some(&sealed.hash) => {
            Ok(Id(rand::random()).to_hex())
        }
        _ => Ok(derived),
    }
}

/// Registers a device, or registers it again (the same token on the same
/// subscriber keeps its device id and is refreshed). A token registered to
/// another subscriber of the tenant moves: that device is revoked.
pub async fn register(
    s: &GatewayState,
    who: &Who,
    r: &api::RegisterDeviceRequest,
) -> Result<api::Device, ApiError> {
    let (platform, provider) = check_registration(r)?;
    who.reach("subscriber_id", &r.subscriber_id)?;
    profile(s, who, &r.subscriber_id).await?;
    let app = apps::find(s, &who.tenant, &r.app_id)
        .await?
        .ok_or_else(|| Violations::single("app_id", format!("unknown app {}", quote(&r.app_id))))?;
    if !app.platforms.contains(&platform) {
        let on: Vec<&str> = app.platforms.iter().map(|p| p.as_str()).collect();
        return Err(Violations::single(
            "platform",
            format!(
                "app {} is not on {platform} (it is on {})",
                quote(&app.app_id),
                on.join(", ")
            ),
        )
        .into());
    }
    let sealed = seal_token(s, &who.tenant, &r.subscriber_id, &r.token).await?;
    let held = holder(s, who, &r.token).await?;
    let (device_id, registered_at) = match held {
        Some(h) if h.subscriber_id == r.subscriber_id => (h.device_id, h.registered_at_ms),
        other => {
            if let Some(h) = other {
                revoke_moved(s, who, &h).await?;
            }
            (new_device_id(s, who, r, &sealed).await?, s.clock.now_ms())
        }
    };
    let event = pb::DeviceRegistered {
        subscriber_id: r.subscriber_id.clone(),
        device_id: device_id.clone(),
        platform: platform.as_str().into(),
        provider: provider.as_str().into(),
        app_id: r.app_id.clone(),
        token: Some(sealed.clone()),
        locale: r.locale.clone(),
        timezone: r.timezone.clone(),
        app_version: r.app_version.clone(),
        origin: Some(who.origin()),
    };
    to_subscriber(s, who, &r.subscriber_id, Payload::DeviceRegistered(event)).await?;
    let now = s.clock.now_ms();
    let applied = record(s, who, &r.subscriber_id, &device_id)
        .await?
        .filter(|rec| rec.status == ACTIVE && holds_sealed(rec, &sealed));
    let rec = applied.unwrap_or_else(|| pb::DeviceRecord {
        device_id,
        subscriber_id: r.subscriber_id.clone(),
        platform: platform.as_str().into(),
        provider: provider.as_str().into(),
        app_id: r.app_id.clone(),
        token: Some(sealed),
        token_registered_at_ms: now,
        registered_at_ms: registered_at,
        last_seen_at_ms: now,
        locale: r.locale.clone(),
        timezone: r.timezone.clone(),
        app_version: r.app_version.clone(),
        status: ACTIVE.into(),
        ..Default::default()
    });
    Ok(to_api(&rec, now, s.device_expiry))
}

fn holds_sealed(rec: &pb::DeviceRecord, sealed: &pb::SealedToken) -> bool {
    rec.token.as_ref().is_some_and(|t| t.hash == sealed.hash)
}

/// A subscriber's devices, oldest registration first; revoked and expired
/// ones only when asked for.
pub async fn list(
    s: &GatewayState,
    who: &Who,
    subscriber_id: &str,
    include_inactive: bool,
) -> Result<Vec<api::Device>, ApiError> {
    who.reach("subscriber_id", subscriber_id)?;
    profile(s, who, subscriber_id).await?;
    let scan = Scan::partition(
        Table::Devices,
        who.tenant.as_str(),
        subscriber_id,
        MAX_LISTED,
    );
    let now = s.clock.now_ms();
    let mut out = Vec::new();
    for (_, b) in s.store.scan(&scan).await? {
        let rec = pb::DeviceRecord::decode(&b[..])
            .map_err(|e| ApiError::Internal(format!("stored device: {e}")))?;
        let d = to_api(&rec, now, s.device_expiry);
        if include_inactive || d.status == ACTIVE {
            out.push(d);
        }
    }
    out.sort_by(|a, b| (a.registered_at_ms, &a.device_id).cmp(&(b.registered_at_ms, &b.device_id)));
    Ok(out)
}

/// The subscriber's device named by a request (ids checked first).
async fn existing(
    s: &GatewayState,
    who: &Who,
    subscriber_id: &str,
    device_id: &str,
    more: Violations,
) -> Result<pb::DeviceRecord, ApiError> {
    let mut v = Violations::default();
    validate_subscriber_id(&mut v, "subscriber_id", subscriber_id);
    validate_id(&mut v, "device_id", device_id);
    v.0.extend(more.0);
    v.into_result()?;
    who.reach("subscriber_id", subscriber_id)?;
    profile(s, who, subscriber_id).await?;
    record(s, who, subscriber_id, device_id)
        .await?
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "no device {} for subscriber {}",
                quote(device_id),
                quote(subscriber_id)
            ))
        })
}

/// Replaces a device's token (the app got a new one); the device keeps its
/// id. A revoked device is registered again instead.
pub async fn rotate(
    s: &GatewayState,
    who: &Who,
    subscriber_id: &str,
    device_id: &str,
    new_token: &str,
) -> Result<api::Device, ApiError> {
    let mut v = Violations::default();
    check_token(&mut v, "new_token", new_token, None);
    let rec = existing(s, who, subscriber_id, device_id, v).await?;
    let mut v = Violations::default();
    check_token(&mut v, "new_token", new_token, rec.provider.parse().ok());
    if rec.status == REVOKED {
        v.push(
            "device_id",
            "the device is revoked: register it again with its new token",
        );
    }
    v.into_result()?;
    let tenant = who.tenant.as_str();
    let now = s.clock.now_ms();
    let current = rec.token.as_ref();
    if current.is_some_and(|t| device_token::matches(&s.keyring, tenant, new_token, t)) {
        return Ok(to_api(&rec, now, s.device_expiry));
    }
    if let Some(h) = holder(s, who, new_token).await? {
        revoke_moved(s, who, &h).await?;
    }
    let sealed = seal_token(s, &who.tenant, subscriber_id, new_token).await?;
    let rotated = pb::DeviceTokenRotated {
        subscriber_id: subscriber_id.into(),
        device_id: device_id.into(),
        token: Some(sealed.clone()),
        origin: Some(who.origin()),
    };
    to_subscriber(s, who, subscriber_id, Payload::DeviceTokenRotated(rotated)).await?;
    let now = s.clock.now_ms();
    let applied = record(s, who, subscriber_id, device_id)
        .await?
        .filter(|r| holds_sealed(r, &sealed));
    let after = applied.unwrap_or(pb::DeviceRecord {
        token: Some(sealed),
        token_registered_at_ms: now,
        ..rec
    });
    Ok(to_api(&after, now, s.device_expiry))
}

/// Revokes a device: by its user (a subscriber token) or by an operator
/// (an API key). Revoking a revoked device changes nothing.
pub async fn revoke(
    s: &GatewayState,
    who: &Who,
    subscriber_id: &str,
    device_id: &str,
) -> Result<api::Device, ApiError> {
    let rec = existing(s, who, subscriber_id, device_id, Violations::default()).await?;
    if rec.status == REVOKED {
        return Ok(to_api(&rec, s.clock.now_ms(), s.device_expiry));
    }
    let reason = if who.subscriber.is_some() {
        "user"
    } else {
        "operator"
    };
    let origin = who.origin();
    let revoked = pb::DeviceRevoked {
        subscriber_id: subscriber_id.into(),
        device_id: device_id.into(),
        reason: reason.into(),
        origin: Some(origin.clone()),
    };
    to_subscriber(s, who, subscriber_id, Payload::DeviceRevoked(revoked)).await?;
    let now = s.clock.now_ms();
    let applied = record(s, who, subscriber_id, device_id)
        .await?
        .filter(|r| r.status == REVOKED);
    let after = applied.unwrap_or(pb::DeviceRecord {
        status: REVOKED.into(),
        revoked_reason: reason.into(),
        revoked_detail: origin.actor,
        revoked_at_ms: now,
        ..rec
    });
    Ok(to_api(&after, now, s.device_expiry))
}

#[cfg(test)]
mod tests {
    use clarion_domain::push::DEFAULT_DEVICE_EXPIRY_DAYS;

    const DAY_MS: i64 = 24 * 3600 * 1000;
    const EXPIRY: std::time::Duration =
        std::time::Duration::from_secs(DEFAULT_DEVICE_EXPIRY_DAYS as u64 * 86_400);
    use super::*;

    fn fields(r: &api::RegisterDeviceRequest) -> Vec<String> {
        match check_registration(r) {
            Err(ApiError::Invalid(v)) => v.0.into_iter().map(|f| f.field).collect(),
            other => panic!("{other:?}"),
        }
    }

    fn request() -> api::RegisterDeviceRequest {
        api::RegisterDeviceRequest {
            subscriber_id: "s1".into(),
            app_id: "fieldapp".into(),
            platform: "ios".into(),
            token: "ab".repeat(32),
            ..Default::default()
        }
    }

    #[test]
    fn a_registration_defaults_its_provider_by_platform() {
        assert_eq!(
            check_registration(&request()).unwrap(),
            (Platform::Ios, PushProvider::Apns)
        );
        let android = api::RegisterDeviceRequest {
            platform: "android".into(),
            token: "f1:APA91b-x_y".into(),
            ..request()
        };
        assert_eq!(
            check_registration(&android).unwrap(),
            (Platform::Android, PushProvider::Fcm)
        );
    }

    #[test]
    fn bad_registrations_name_their_fields_and_never_quote_the_token() {
        let secret = "secret token with spaces";
        let r = api::RegisterDeviceRequest {
            subscriber_id: "a/b".into(),
            app_id: String::new(),
            platform: "symbian".into(),
            token: secret.into(),
            provider: "wns".into(),
            locale: "not a locale".into(),
            app_version: "v".repeat(65),
            ..Default::default()
        };
        let e = check_registration(&r).unwrap_err();
        assert!(!e.to_string().contains(secret), "{e}");
        assert_eq!(
            fields(&r),
            [
                "subscriber_id",
                "app_id",
                "platform",
                "provider",
                "token",
                "locale",
                "app_version"
            ]
        );
        for (token, why) in [
            (String::new(), "is required"),
            ("a".repeat(MAX_TOKEN_BYTES + 1), "over the limit"),
            ("zz-not-hex".to_string(), "hexadecimal"),
        ] {
            let r = api::RegisterDeviceRequest {
                token: token.clone(),
                ..request()
            };
            match check_registration(&r) {
                Err(ApiError::Invalid(v)) => {
                    assert_eq!(v.0[0].field, "token");
                    assert!(v.0[0].description.contains(why), "{v}");
                }
                other => panic!("{other:?}"),
            }
        }
        let apns_on_android = api::RegisterDeviceRequest {
            platform: "android".into(),
            provider: "apns".into(),
            ..request()
        };
        assert_eq!(fields(&apns_on_android), ["provider"]);
    }

    #[test]
    fn a_device_not_seen_for_the_expiry_is_expired_and_no_view_has_a_token() {
        let now = 1_000 * DAY_MS;
        let rec = pb::DeviceRecord {
            device_id: "d1".into(),
            status: ACTIVE.into(),
            last_seen_at_ms: now - 270 * DAY_MS,
            token: Some(pb::SealedToken {
                sealed: b"sealed".to_vec(),
                hash: vec![1, 2, 3, 0xab, 0xcd, 0xef],
                hash_key_id: "k1".into(),
                personal: String::new(),
            }),
            ..Default::default()
        };
        let d = to_api(&rec, now, EXPIRY);
        assert_eq!(
            (d.status.as_str(), d.token_fingerprint.as_str()),
            (ACTIVE, "abcdef")
        );
        assert_eq!(to_api(&rec, now + 1, EXPIRY).status, EXPIRED);
        let revoked = pb::DeviceRecord {
            status: REVOKED.into(),
            ..rec
        };
        assert_eq!(to_api(&revoked, now, EXPIRY).status, REVOKED);
    }
}

//! Subscribers' devices: the push registry as the router holds it.
//!
//! Every change of a device is an event on its subscriber's stream
//! (`DeviceRegistered`, `DeviceTokenRotated`, `DeviceRevoked`, `DeviceSeen`,
//! and the dispatcher's `PushRejected`), applied in order with that
//! subscriber's triggers, so a push fans out to the devices as they stood
//! when it was sent. [`decide`] is the rule for one event: the device as it
//! is after it (a `DeviceRecord`, the row the router writes), or why
//! nothing changes.
//!
//! Repeats change nothing. A request retried by its client may append its
//! event twice; applying an event again is a no-op because each decision
//! either sets what the event says (the same result twice) or is refused
//! for an event older than the device's current token (a repeat of a
//! registration or revocation that a later change overtook).
//!
//! Tokens stay sealed throughout; decisions compare their keyed hashes and
//! no reason given here names a token.

use clarion_proto::events as pb;

use super::{Map, Pair};
use crate::push::Platform;

/// A device's `status` while it receives pushes.
pub const ACTIVE: &str = "active";
/// A device's `status` once revoked (by the user, an operator, a provider).
pub const REVOKED: &str = "revoked";
/// The status a view shows for an active device not seen for the expiry
/// time (computed, never stored: the device comes back when seen again).
pub const EXPIRED: &str = "expired";

/// Devices by `(tenant, subscriber)`, sorted by device id; an empty list:
/// known to have none.
#[derive(Debug, Default)]
pub struct Known {
    map: Map<(String, String), Vec<pb::DeviceRecord>>,
}

/// A device after a change (written as the subscriber's device row).
#[derive(Clone, Debug, PartialEq)]
pub struct Changed {
    pub tenant: String,
    pub subscriber: String,
    pub device: pb::DeviceRecord,
}

impl Known {
    /// What is known of a subscriber's devices: `None` when not loaded yet.
    pub fn get(&self, tenant: &str, subscriber: &str) -> Option<&[pb::DeviceRecord]> {
        self.map.get(&Pair(tenant, subscriber)).map(Vec::as_slice)
    }

    /// Remembers what the store holds for a subscriber.
    pub fn load(&mut self, tenant: &str, subscriber: &str, mut stored: Vec<pb::DeviceRecord>) {
        stored.sort_by(|a, b| a.device_id.cmp(&b.device_id));
        self.map
            .insert((tenant.to_string(), subscriber.to_string()), stored);
    }

    pub(super) fn evolve(&mut self, e: Changed) {
        let devices = self.map.entry((e.tenant, e.subscriber)).or_default();
        match devices.binary_search_by(|d| d.device_id.cmp(&e.device.device_id)) {
            Ok(i) => devices[i] = e.device,
            Err(i) => devices.insert(i, e.device),
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Forgets everything (the runtime's bound on memory; the store keeps
    /// every device).
    pub fn clear(&mut self) {
        self.map.clear();
    }
}

/// A device event, with what the rule needs from its envelope.
#[derive(Clone, Copy, Debug)]
pub enum Input<'a> {
    Registered(&'a pb::DeviceRegistered),
    Rotated(&'a pb::DeviceTokenRotated),
    /// `actor`: who revoked it (the origin's actor), the revocation's detail.
    Revoked {
        event: &'a pb::DeviceRevoked,
        actor: &'a str,
    },
    Seen(&'a pb::DeviceSeen),
    Rejected(&'a pb::PushRejected),
}

/// What one event does to a subscriber's devices.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// Nothing changes, and why (for a debug log; names no token).
    Unchanged(String),
    /// Boxed: a device record is several hundred bytes, the other variant
    /// a string.
    Changed(Box<Change>),
}

/// A device as it is after an event, and the token lookups to update.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    pub device: pb::DeviceRecord,
    /// The device holds this token (by keyed hash) now: its lookup row
    /// names the device.
    pub token_added: Option<Vec<u8>>,
    /// The device no longer holds this token: its lookup row goes, if it
    /// still names the device.
    pub token_dropped: Option<Vec<u8>>,
}

/// Applies one event, which happened at `at_ms`, to a subscriber's
/// `devices` (every device the subscriber has).
pub fn decide(devices: &[pb::DeviceRecord], input: Input<'_>, at_ms: i64) -> Decision {
    match input {
        Input::Registered(e) => registered(devices, e, at_ms),
        Input::Rotated(e) => rotated(devices, e, at_ms),
        Input::Revoked { event, actor } => revoked(devices, event, actor, at_ms),
        Input::Seen(e) => seen(devices, e, at_ms),
        Input::Rejected(e) => rejected(devices, e, at_ms),
    }
}

fn hash_of(token: Option<&pb::SealedToken>) -> &[u8] {
    token.map_or(&[][..], |t| &t.hash)
}

fn find<'a>(devices: &'a [pb::DeviceRecord], id: &str) -> Option<&'a pb::DeviceRecord> {
    devices.iter().find(|d| d.device_id == id)
}

fn unchanged(why: impl Into<String>) -> Decision {
    Decision::Unchanged(why.into())
}

/// A device whose current token came after `at_ms` was changed by a later
/// event: an older one arriving now is a repeat, and does nothing.
fn overtaken(d: &pb::DeviceRecord, at_ms: i64) -> bool {
    at_ms < d.token_registered_at_ms || (d.status == REVOKED && at_ms < d.revoked_at_ms)
}

/// A registration: the same app and token on the subscriber is the same
/// device (its details refreshed, revived if it was revoked); the same
/// device id with another token is a re-registration; else a new device.
fn registered(devices: &[pb::DeviceRecord], e: &pb::DeviceRegistered, at_ms: i64) -> Decision {
    let hash = hash_of(e.token.as_ref());
    if hash.is_empty() {
        return unchanged("a registration without a token");
    }
    let existing = devices
        .iter()
        .find(|d| d.app_id == e.app_id && hash_of(d.token.as_ref()) == hash)
        .or_else(|| find(devices, &e.device_id));
    if let Some(d) = existing {
        if overtaken(d, at_ms) {
            return unchanged("a registration older than the device's last change");
        }
    }
    let provider = match (e.provider.is_empty(), e.platform.parse::<Platform>()) {
        (true, Ok(p)) => p.default_provider().as_str().to_string(),
        _ => e.provider.clone(),
    };
    let device = pb::DeviceRecord {
        device_id: existing.map_or(&e.device_id, |d| &d.device_id).clone(),
        subscriber_id: e.subscriber_id.clone(),
        platform: e.platform.clone(),
        provider,
        app_id: e.app_id.clone(),
        token: e.token.clone(),
        token_registered_at_ms: at_ms,
        registered_at_ms: existing.map_or(at_ms, |d| d.registered_at_ms),
        last_seen_at_ms: existing.map_or(at_ms, |d| d.last_seen_at_ms.max(at_ms)),
        locale: e.locale.clone(),
        timezone: e.timezone.clone(),
        app_version: e.app_version.clone(),
        status: ACTIVE.into(),
        ..Default::default()
    };
    let old = existing.map(|d| hash_of(d.token.as_ref()));
    Decision::Changed(Box::new(Change {
        device,
        token_added: Some(hash.to_vec()),
        token_dropped: old
            .filter(|o| *o != hash && !o.is_empty())
            .map(<[u8]>::to_vec),
    }))
}

/// A new token for a device that keeps its id.
fn rotated(devices: &[pb::DeviceRecord], e: &pb::DeviceTokenRotated, at_ms: i64) -> Decision {
    let hash = hash_of(e.token.as_ref());
    let Some(d) = find(devices, &e.device_id) else {
        return unchanged("a rotation of an unknown device");
    };
    if hash.is_empty() {
        return unchanged("a rotation without a token");
    }
    if d.status == REVOKED {
        return unchanged("a rotation of a revoked device (it must register again)");
    }
    if overtaken(d, at_ms) {
        return unchanged("a rotation older than the device's current token");
    }
    let old = hash_of(d.token.as_ref()).to_vec();
    let device = pb::DeviceRecord {
        token: e.token.clone(),
        token_registered_at_ms: at_ms,
        last_seen_at_ms: d.last_seen_at_ms.max(at_ms),
        ..d.clone()
    };
    Decision::Changed(Box::new(Change {
        device,
        token_added: Some(hash.to_vec()),
        token_dropped: (old != hash && !old.is_empty()).then_some(old),
    }))
}

/// The user or an operator revoked the device, or its token moved to
/// another subscriber (whose device the token's lookup row names now, so it
/// stays).
fn revoked(
    devices: &[pb::DeviceRecord],
    e: &pb::DeviceRevoked,
    actor: &str,
    at_ms: i64,
) -> Decision {
    let Some(d) = find(devices, &e.device_id) else {
        return unchanged("a revocation of an unknown device");
    };
    if d.status == REVOKED {
        return unchanged("the device is revoked already");
    }
    if overtaken(d, at_ms) {
        return unchanged("a revocation older than the device's current token");
    }
    let reason = if e.reason.is_empty() {
        "user"
    } else {
        &e.reason
    };
    let dropped = (reason != "moved").then(|| hash_of(d.token.as_ref()).to_vec());
    Decision::Changed(Box::new(Change {
        device: revoke(d, reason, actor.to_string(), at_ms),
        token_added: None,
        token_dropped: dropped.filter(|h| !h.is_empty()),
    }))
}

fn revoke(d: &pb::DeviceRecord, reason: &str, detail: String, at_ms: i64) -> pb::DeviceRecord {
    pb::DeviceRecord {
        status: REVOKED.into(),
        revoked_reason: reason.into(),
        revoked_detail: detail,
        revoked_at_ms: at_ms,
        ..d.clone()
    }
}

/// The app reported in: last seen, and the details it gave.
fn seen(devices: &[pb::DeviceRecord], e: &pb::DeviceSeen, at_ms: i64) -> Decision {
    let Some(d) = find(devices, &e.device_id) else {
        return unchanged("a report of an unknown device");
    };
    if at_ms < d.last_seen_at_ms {
        return unchanged("a report older than the device's last one");
    }
    let pick = |given: &str, had: &str| if given.is_empty() { had } else { given }.to_string();
    let device = pb::DeviceRecord {
        last_seen_at_ms: at_ms,
        locale: pick(&e.locale, &d.locale),
        timezone: pick(&e.timezone, &d.timezone),
        app_version: pick(&e.app_version, &d.app_version),
        ..d.clone()
    };
    if device == *d {
        return unchanged("nothing new");
    }
    Decision::Changed(Box::new(Change {
        device,
        token_added: None,
        token_dropped: None,
    }))
}

/// A provider refused a token: the device is revoked only if that token is
/// still its token and, for an APNs 410 with a timestamp, the token was
/// registered before the provider saw it unregistered (a registration after
/// it is the app back on the device, and valid).
fn rejected(devices: &[pb::DeviceRecord], e: &pb::PushRejected, at_ms: i64) -> Decision {
    let by_id = find(devices, &e.device_id);
    let Some(d) = by_id.or_else(|| {
        devices
            .iter()
            .find(|d| !e.token_hash.is_empty() && hash_of(d.token.as_ref()) == e.token_hash)
    }) else {
        return unchanged("a rejection for an unknown device");
    };
    if d.status == REVOKED {
        return unchanged("the device is revoked already");
    }
    if e.token_hash.is_empty() || hash_of(d.token.as_ref()) != e.token_hash {
        return unchanged("the rejected token is no longer the device's token (rotated since)");
    }
    if e.unregistered_at_ms != 0 && d.token_registered_at_ms >= e.unregistered_at_ms {
        return unchanged(
            "the token was registered again after the provider's unregistration time",
        );
    }
    let mut detail = format!("{}: {}", e.provider, e.reason);
    if !e.detail.is_empty() {
        detail = format!("{detail} ({})", e.detail);
    }
    Decision::Changed(Box::new(Change {
        device: revoke(d, rejection_reason(&e.reason), detail, at_ms),
        token_added: None,
        token_dropped: Some(e.token_hash.clone()),
    }))
}

/// The revocation reason of a provider's rejection: the app is gone from
/// the device (`unregistered`), or the token is not one (`bad_token`).
pub fn rejection_reason(provider_reason: &str) -> &'static str {
    const GONE: [&str; 3] = ["unregistered", "expiredtoken", "not_found"];
    if GONE.iter().any(|g| provider_reason.eq_ignore_ascii_case(g)) {
        "unregistered"
    } else {
        "bad_token"
    }
}

/// Whether an active device has gone unseen (and without a new token) for
/// longer than `expiry_ms` at `now_ms`.
pub fn expired(d: &pb::DeviceRecord, now_ms: i64, expiry_ms: i64) -> bool {
    let last = d.last_seen_at_ms.max(d.token_registered_at_ms);
    now_ms.saturating_sub(last) > expiry_ms
}

/// A device's status as views show it: `active`, `revoked` or `expired`.
pub fn status(d: &pb::DeviceRecord, now_ms: i64, expiry_ms: i64) -> &'static str {
    if d.status == REVOKED {
        REVOKED
    } else if expired(d, now_ms, expiry_ms) {
        EXPIRED
    } else {
        ACTIVE
    }
}

/// Where a push of `app_id` goes: every active, unexpired device of that
/// app, in device-id order.
pub fn push_targets(
    devices: &[pb::DeviceRecord],
    app_id: &str,
    now_ms: i64,
    expiry_ms: i64,
) -> Vec<pb::PushTarget> {
    devices
        .iter()
        .filter(|d| d.app_id == app_id && status(d, now_ms, expiry_ms) == ACTIVE)
        .filter(|d| !hash_of(d.token.as_ref()).is_empty())
        .map(|d| pb::PushTarget {
            device_id: d.device_id.clone(),
            platform: d.platform.clone(),
            provider: d.provider.clone(),
            token: d.token.clone(),
            token_registered_at_ms: d.token_registered_at_ms,
        })
        .collect()
}

/// The expiry time in milliseconds of a number of days.
pub fn expiry_ms_of_days(days: u32) -> i64 {
    i64::from(days) * 86_400_000
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_700_000_000_000;
    const DAY: i64 = 86_400_000;

    fn token(hash: u8) -> Option<pb::SealedToken> {
        Some(pb::SealedToken {
            sealed: vec![0xA0, hash],
            hash: vec![hash; 32],
            hash_key_id: "k1".into(),
            personal: String::new(),
        })
    }

    fn register(id: &str, app: &str, hash: u8) -> pb::DeviceRegistered {
        pb::DeviceRegistered {
            subscriber_id: "sub-1".into(),
            device_id: id.into(),
            platform: "ios".into(),
            app_id: app.into(),
            token: token(hash),
            locale: "fr-CA".into(),
            ..Default::default()
        }
    }

    /// Applies a decision as the router does.
    fn apply(devices: &mut Vec<pb::DeviceRecord>, input: Input<'_>, at: i64) -> Decision {
        let d = decide(devices, input, at);
        if let Decision::Changed(c) = &d {
            match devices
                .iter_mut()
                .find(|x| x.device_id == c.device.device_id)
            {
                Some(x) => *x = c.device.clone(),
                None => devices.push(c.device.clone()),
            }
        }
        d
    }

    fn changed(d: Decision) -> Change {
        match d {
            Decision::Changed(c) => *c,
            Decision::Unchanged(why) => panic!("unchanged: {why}"),
        }
    }

    fn rejection(id: &str, hash: u8, reason: &str, unregistered_at: i64) -> pb::PushRejected {
        pb::PushRejected {
            subscriber_id: "sub-1".into(),
            device_id: id.into(),
            token_hash: vec![hash; 32],
            provider: "apns".into(),
            reason: reason.into(),
            detail: "410".into(),
            unregistered_at_ms: unregistered_at,
            ..Default::default()
        }
    }

    #[test]
    fn a_registration_makes_an_active_device_and_the_same_token_is_the_same_device() {
        let mut devices = Vec::new();
        let c = changed(apply(
            &mut devices,
            Input::Registered(&register("d1", "field", 1)),
            T,
        ));
        assert_eq!(c.device.status, ACTIVE);
        assert_eq!(c.device.provider, "apns", "ios defaults to APNs");
        assert_eq!(
            (
                c.device.registered_at_ms,
                c.device.token_registered_at_ms,
                c.device.last_seen_at_ms
            ),
            (T, T, T)
        );
        assert_eq!((c.token_added, c.token_dropped), (Some(vec![1; 32]), None));

        // The app registers the same token again under a new id: same device.
        let mut again = register("d9", "field", 1);
        again.locale = "en".into();
        let c = changed(apply(&mut devices, Input::Registered(&again), T + 5));
        assert_eq!(c.device.device_id, "d1");
        assert_eq!(c.device.locale, "en");
        assert_eq!(c.device.registered_at_ms, T);
        assert_eq!(c.device.token_registered_at_ms, T + 5);
        assert_eq!(devices.len(), 1);

        // The same token in another app is another device.
        let c = changed(apply(
            &mut devices,
            Input::Registered(&register("d2", "shop", 1)),
            T + 6,
        ));
        assert_eq!(c.device.device_id, "d2");
        assert_eq!(devices.len(), 2);

        // A repeat of the first registration after the second: overtaken.
        let repeat = decide(&devices, Input::Registered(&register("d1", "field", 1)), T);
        assert!(matches!(repeat, Decision::Unchanged(_)), "{repeat:?}");
    }

    #[test]
    fn a_rotation_keeps_the_device_and_replaces_its_token() {
        let mut devices = Vec::new();
        apply(
            &mut devices,
            Input::Registered(&register("d1", "field", 1)),
            T,
        );
        let rot = pb::DeviceTokenRotated {
            subscriber_id: "sub-1".into(),
            device_id: "d1".into(),
            token: token(2),
            origin: None,
        };
        let c = changed(apply(&mut devices, Input::Rotated(&rot), T + 10));
        assert_eq!(c.device.device_id, "d1");
        assert_eq!(c.device.token_registered_at_ms, T + 10);
        assert_eq!(c.device.registered_at_ms, T);
        assert_eq!(c.token_added, Some(vec![2; 32]));
        assert_eq!(c.token_dropped, Some(vec![1; 32]));
        // Applied again: the same device, nothing new to drop.
        let c = changed(apply(&mut devices, Input::Rotated(&rot), T + 10));
        assert_eq!(c.token_dropped, None);
        // Unknown device: nothing.
        let other = pb::DeviceTokenRotated {
            device_id: "nope".into(),
            ..rot
        };
        assert!(matches!(
            decide(&devices, Input::Rotated(&other), T + 11),
            Decision::Unchanged(_)
        ));
    }

    #[test]
    fn a_revocation_names_reason_and_actor_and_a_repeat_after_a_new_registration_is_ignored() {
        let mut devices = Vec::new();
        apply(
            &mut devices,
            Input::Registered(&register("d1", "field", 1)),
            T,
        );
        let rev = pb::DeviceRevoked {
            subscriber_id: "sub-1".into(),
            device_id: "d1".into(),
            reason: "operator".into(),
            origin: None,
        };
        let revoke = Input::Revoked {
            event: &rev,
            actor: "operator:ops",
        };
        let c = changed(apply(&mut devices, revoke, T + 1));
        assert_eq!(
            (
                c.device.status.as_str(),
                c.device.revoked_reason.as_str(),
                c.device.revoked_detail.as_str()
            ),
            (REVOKED, "operator", "operator:ops")
        );
        assert_eq!(c.token_dropped, Some(vec![1; 32]));
        assert!(push_targets(&devices, "field", T + 2, 270 * DAY).is_empty());
        assert!(matches!(
            decide(&devices, revoke, T + 1),
            Decision::Unchanged(_)
        ));

        // Registered again (the app is back): active, revocation cleared.
        let c = changed(apply(
            &mut devices,
            Input::Registered(&register("d1", "field", 1)),
            T + 2,
        ));
        assert_eq!(
            (c.device.status.as_str(), c.device.revoked_reason.as_str()),
            (ACTIVE, "")
        );
        // The old revocation appended again: older than the new token.
        assert!(matches!(
            decide(&devices, revoke, T + 1),
            Decision::Unchanged(_)
        ));

        // A token that moved to another subscriber keeps its lookup row.
        let moved = pb::DeviceRevoked {
            reason: "moved".into(),
            ..rev.clone()
        };
        let c = changed(decide(
            &devices,
            Input::Revoked {
                event: &moved,
                actor: "api_key:k1",
            },
            T + 3,
        ));
        assert_eq!(
            (c.device.revoked_reason.as_str(), c.token_dropped),
            ("moved", None)
        );
    }

    #[test]
    fn seen_refreshes_last_seen_and_the_details_given() {
        let mut devices = Vec::new();
        apply(
            &mut devices,
            Input::Registered(&register("d1", "field", 1)),
            T,
        );
        let seen = pb::DeviceSeen {
            subscriber_id: "sub-1".into(),
            device_id: "d1".into(),
            app_version: "2.1".into(),
            ..Default::default()
        };
        let c = changed(apply(&mut devices, Input::Seen(&seen), T + 100 * DAY));
        assert_eq!(c.device.last_seen_at_ms, T + 100 * DAY);
        assert_eq!(
            (c.device.app_version.as_str(), c.device.locale.as_str()),
            ("2.1", "fr-CA")
        );
        assert!(matches!(
            decide(&devices, Input::Seen(&seen), T + 100 * DAY),
            Decision::Unchanged(_)
        ));
        assert!(matches!(
            decide(&devices, Input::Seen(&seen), T + DAY),
            Decision::Unchanged(_)
        ));
    }

    #[test]
    fn an_apns_410_revokes_only_a_token_registered_before_its_timestamp() {
        let mut devices = Vec::new();
        apply(
            &mut devices,
            Input::Registered(&register("d1", "field", 1)),
            T,
        );
        // Unregistered at T - 1: the token was registered after it (valid).
        let early = rejection("d1", 1, "Unregistered", T - 1);
        assert!(matches!(
            decide(&devices, Input::Rejected(&early), T + 5),
            Decision::Unchanged(_)
        ));
        let same = rejection("d1", 1, "Unregistered", T);
        assert!(matches!(
            decide(&devices, Input::Rejected(&same), T + 5),
            Decision::Unchanged(_)
        ));
        // Unregistered after the registration: revoked.
        let late = rejection("d1", 1, "Unregistered", T + 1);
        let c = changed(apply(&mut devices, Input::Rejected(&late), T + 5));
        assert_eq!(c.device.status, REVOKED);
        assert_eq!(c.device.revoked_reason, "unregistered");
        assert_eq!(c.device.revoked_detail, "apns: Unregistered (410)");
        assert_eq!(c.token_dropped, Some(vec![1; 32]));
    }

    #[test]
    fn a_rejection_without_timestamp_revokes_and_maps_the_reason() {
        for (reason, want) in [
            ("UNREGISTERED", "unregistered"),
            ("NOT_FOUND", "unregistered"),
            ("ExpiredToken", "unregistered"),
            ("BadDeviceToken", "bad_token"),
            ("INVALID_ARGUMENT", "bad_token"),
        ] {
            let mut devices = Vec::new();
            apply(
                &mut devices,
                Input::Registered(&register("d1", "field", 1)),
                T,
            );
            let c = changed(decide(
                &devices,
                Input::Rejected(&rejection("d1", 1, reason, 0)),
                T,
            ));
            assert_eq!(c.device.revoked_reason, want, "{reason}");
        }
    }

    #[test]
    fn a_rejection_of_an_old_token_after_rotation_does_not_revoke() {
        let mut devices = Vec::new();
        apply(
            &mut devices,
            Input::Registered(&register("d1", "field", 1)),
            T,
        );
        let rot = pb::DeviceTokenRotated {
            subscriber_id: "sub-1".into(),
            device_id: "d1".into(),
            token: token(2),
            origin: None,
        };
        apply(&mut devices, Input::Rotated(&rot), T + 10);
        let old = rejection("d1", 1, "BadDeviceToken", 0);
        let d = decide(&devices, Input::Rejected(&old), T + 20);
        assert!(
            matches!(&d, Decision::Unchanged(why) if why.contains("rotated")),
            "{d:?}"
        );
        assert_eq!(push_targets(&devices, "field", T + 20, 270 * DAY).len(), 1);
        // The new token's rejection does.
        let new = rejection("d1", 2, "BadDeviceToken", 0);
        changed(apply(&mut devices, Input::Rejected(&new), T + 21));
        assert!(push_targets(&devices, "field", T + 21, 270 * DAY).is_empty());
    }

    #[test]
    fn pushes_go_to_the_apps_active_unexpired_devices() {
        let mut devices = Vec::new();
        apply(
            &mut devices,
            Input::Registered(&register("d1", "field", 1)),
            T,
        );
        apply(
            &mut devices,
            Input::Registered(&register("d2", "field", 2)),
            T,
        );
        apply(
            &mut devices,
            Input::Registered(&register("d3", "shop", 3)),
            T,
        );
        let seen = pb::DeviceSeen {
            subscriber_id: "sub-1".into(),
            device_id: "d2".into(),
            ..Default::default()
        };
        apply(&mut devices, Input::Seen(&seen), T + 100 * DAY);
        let expiry = expiry_ms_of_days(crate::push::DEFAULT_DEVICE_EXPIRY_DAYS);
        let ids = |now: i64| -> Vec<String> {
            push_targets(&devices, "field", now, expiry)
                .into_iter()
                .map(|t| t.device_id)
                .collect()
        };
        assert_eq!(ids(T + 270 * DAY), ["d1", "d2"]);
        assert_eq!(ids(T + 270 * DAY + 1), ["d2"], "d1 unseen for 270 days");
        assert_eq!(status(&devices[0], T + 271 * DAY, expiry), EXPIRED);
        assert_eq!(ids(T + 371 * DAY), Vec::<String>::new());
        let t = &push_targets(&devices, "field", T, expiry)[0];
        assert_eq!((t.platform.as_str(), t.provider.as_str()), ("ios", "apns"));
        assert_eq!(t.token_registered_at_ms, T);
    }

    #[test]
    fn known_devices_stay_sorted_by_id() {
        let mut k = Known::default();
        assert!(k.get("acme", "s").is_none());
        k.load("acme", "s", Vec::new());
        assert_eq!(k.get("acme", "s").map(<[_]>::len), Some(0));
        for id in ["d2", "d1", "d3", "d1"] {
            k.evolve(Changed {
                tenant: "acme".into(),
                subscriber: "s".into(),
                device: pb::DeviceRecord {
                    device_id: id.into(),
                    ..Default::default()
                },
            });
        }
        let ids: Vec<_> = k
            .get("acme", "s")
            .unwrap()
            .iter()
            .map(|d| &d.device_id)
            .collect();
        assert_eq!(ids, ["d1", "d2", "d3"]);
        assert!(k.get("globex", "s").is_none());
    }
}

//! Push and in-app vocabulary shared by the gateway, the router and the
//! dispatcher: platforms, a tenant's apps with their deep-link patterns, and
//! what a workflow step says about a push (`push:`, `link:`).
//!
//! Deep links are typed (the apps open an appointment, a job card, an
//! approval, an inbox item) so a workflow names *what* to open and the
//! tenant decides per app *how* (`fieldapp://jobs/{id}` or a universal
//! link). A step's link is checked when the workflow is published: an
//! unknown type, a type its app has no pattern for, or a missing id is
//! refused then, not discovered at send time.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use clarion_proto::events as pb;
use serde::{Deserialize, Serialize};

use crate::error::{quote, Violations};
use crate::workflow::validate_id;

/// The longest device token accepted (APNs tokens are 64 hex digits, FCM
/// registration tokens a few hundred characters).
pub const MAX_TOKEN_BYTES: usize = 4096;

/// A device not seen for this long stops receiving pushes (and is shown
/// `expired`), unless configured otherwise.
pub const DEFAULT_DEVICE_EXPIRY_DAYS: u32 = 270;

/// Where an app runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Platform {
    Ios,
    Android,
    Web,
}

impl Platform {
    pub const ALL: [Platform; 3] = [Platform::Ios, Platform::Android, Platform::Web];

    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Ios => "ios",
            Platform::Android => "android",
            Platform::Web => "web",
        }
    }

    /// The provider a platform's tokens belong to when none is named: APNs
    /// for iOS, FCM for Android and web.
    pub fn default_provider(self) -> PushProvider {
        match self {
            Platform::Ios => PushProvider::Apns,
            Platform::Android | Platform::Web => PushProvider::Fcm,
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Platform {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Platform::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown platform {} (expected ios, android or web)",
                    quote(s)
                )
            })
    }
}

/// A push provider.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PushProvider {
    Apns,
    Fcm,
}

impl PushProvider {
    pub fn as_str(self) -> &'static str {
        match self {
            PushProvider::Apns => "apns",
            PushProvider::Fcm => "fcm",
        }
    }
}

impl FromStr for PushProvider {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "apns" => Ok(PushProvider::Apns),
            "fcm" => Ok(PushProvider::Fcm),
            other => Err(format!(
                "unknown push provider {} (expected apns or fcm)",
                quote(other)
            )),
        }
    }
}

/// What a deep link opens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkType {
    Appointment,
    JobCard,
    Approval,
    InboxItem,
    /// A free URL: given whole by the step, no pattern.
    Url,
}

impl LinkType {
    pub const ALL: [LinkType; 5] = [
        LinkType::Appointment,
        LinkType::JobCard,
        LinkType::Approval,
        LinkType::InboxItem,
        LinkType::Url,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LinkType::Appointment => "appointment",
            LinkType::JobCard => "job_card",
            LinkType::Approval => "approval",
            LinkType::InboxItem => "inbox_item",
            LinkType::Url => "url",
        }
    }
}

impl FromStr for LinkType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        LinkType::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown deep-link type {} (expected appointment, job_card, approval, inbox_item or url)",
                    quote(s)
                )
            })
    }
}

/// The longest deep-link pattern or resolved link.
pub const MAX_LINK_BYTES: usize = 2048;

/// A tenant's app, as configured (the latest `AppConfigured`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct App {
    pub app_id: String,
    pub name: String,
    pub platforms: Vec<Platform>,
    pub ios_bundle_id: String,
    /// `sandbox` or `production`.
    pub apns_environment: String,
    /// Pattern per link type, each with one `{id}`.
    pub deep_links: BTreeMap<LinkType, String>,
    pub version: u32,
}

impl App {
    /// Validates an app definition; problems name the event's fields.
    pub fn from_event(e: &pb::AppConfigured) -> Result<App, Violations> {
        let mut v = Violations::default();
        validate_id(&mut v, "app_id", &e.app_id);
        let mut platforms = Vec::new();
        for (i, p) in e.platforms.iter().enumerate() {
            match p.parse::<Platform>() {
                Ok(p) if !platforms.contains(&p) => platforms.push(p),
                Ok(_) => v.push(
                    format!("platforms[{i}]"),
                    format!("{} listed twice", quote(p)),
                ),
                Err(err) => v.push(format!("platforms[{i}]"), err),
            }
        }
        if platforms.is_empty() && e.platforms.is_empty() {
            v.push("platforms", "at least one of ios, android, web is required");
        }
        if platforms.contains(&Platform::Ios) && e.ios_bundle_id.trim().is_empty() {
            v.push(
                "ios_bundle_id",
                "an app on ios needs its bundle id (the APNs topic)",
            );
        }
        let environment = match e.apns_environment.as_str() {
            "" | "production" => "production",
            "sandbox" => "sandbox",
            other => {
                v.push(
                    "apns_environment",
                    format!(
                        "unknown APNs environment {} (expected sandbox or production)",
                        quote(other)
                    ),
                );
                "production"
            }
        };
        let mut deep_links = BTreeMap::new();
        for (ty, pattern) in &e.deep_links {
            let field = format!("deep_links.{ty}");
            match ty.parse::<LinkType>() {
                Ok(LinkType::Url) => v.push(
                    field,
                    "the url type takes the whole URL from the step; it has no pattern",
                ),
                Ok(t) => match check_pattern(pattern) {
                    Ok(()) => {
                        deep_links.insert(t, pattern.clone());
                    }
                    Err(err) => v.push(field, err),
                },
                Err(err) => v.push(field, err),
            }
        }
        if !v.is_empty() {
            return Err(v);
        }
        Ok(App {
            app_id: e.app_id.clone(),
            name: e.name.clone(),
            platforms,
            ios_bundle_id: e.ios_bundle_id.clone(),
            apns_environment: environment.to_string(),
            deep_links,
            version: e.version,
        })
    }

    /// Whether a step may link to `ty` in this app.
    pub fn links_to(&self, ty: LinkType) -> bool {
        ty == LinkType::Url || self.deep_links.contains_key(&ty)
    }

    /// The link of `ty` for `id` (a URL for [`LinkType::Url`]). The id is
    /// percent-encoded into the pattern, so an id cannot change the link's
    /// shape (`../`, `?x=`).
    pub fn link(&self, ty: LinkType, id: &str) -> Result<String, String> {
        if id.is_empty() {
            return Err(format!("the {} link has an empty id", ty.as_str()));
        }
        let link = if ty == LinkType::Url {
            check_url(id)?;
            id.to_string()
        } else {
            let pattern = self.deep_links.get(&ty).ok_or_else(|| {
                format!(
                    "app {} has no {} link pattern",
                    quote(&self.app_id),
                    ty.as_str()
                )
            })?;
            pattern.replace("{id}", &percent_encode(id))
        };
        if link.len() > MAX_LINK_BYTES {
            return Err(format!("the link is longer than {MAX_LINK_BYTES} bytes"));
        }
        Ok(link)
    }
}

fn check_pattern(pattern: &str) -> Result<(), String> {
    if pattern.len() > MAX_LINK_BYTES {
        return Err(format!("longer than {MAX_LINK_BYTES} bytes"));
    }
    if pattern.matches("{id}").count() != 1 {
        return Err("a pattern holds {id} exactly once".into());
    }
    check_url(&pattern.replace("{id}", "x"))
}

/// A link an app can open: `scheme:` then something, no whitespace or
/// control characters.
fn check_url(s: &str) -> Result<(), String> {
    let Some((scheme, rest)) = s.split_once(':') else {
        return Err(format!("{} is not a URL (no scheme)", quote(s)));
    };
    let scheme_ok = scheme
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
    if !scheme_ok || rest.is_empty() || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("{} is not a URL", quote(s)));
    }
    Ok(())
}

/// RFC 3986 unreserved characters stay, every other byte is %XX.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A step's deep link (`link:` on a push or in_app send).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkSpec {
    #[serde(rename = "type")]
    pub link_type: String,
    /// Where the id (or, for `url`, the URL) comes from: a path into the
    /// trigger payload or the subscriber (`payload.job_id`). Left out, it is
    /// empty, and refused naming `link.id` (not as a YAML error).
    #[serde(default)]
    pub id: String,
}

/// What a push step says besides channel and template (`push:`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PushSpec {
    /// alert (default) | background | voip | complication | fileprovider | mdm | location | liveactivity | pushtotalk
    #[serde(skip_serializing_if = "Option::is_none")]
    pub push_type: Option<String>,
    /// high | normal
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<String>,
    /// How long the provider keeps an undelivered push (`1h`, `30m`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub collapse_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sound: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub badge: Option<u32>,
    /// Android notification channel id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub android_channel_id: Option<String>,
    /// Client-side localization: the app's string keys, and paths into the
    /// payload or subscriber for their arguments.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title_loc_key: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub title_loc_args: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body_loc_key: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub body_loc_args: Vec<String>,
}

/// The APNs push types (`apns-push-type`).
pub const PUSH_TYPES: &[&str] = &[
    "alert",
    "background",
    "voip",
    "complication",
    "fileprovider",
    "mdm",
    "location",
    "liveactivity",
    "pushtotalk",
];

/// Finds a tenant's app by id (publication's view of the tenant's apps).
pub type AppLookup<'a> = &'a dyn Fn(&str) -> Option<App>;

/// Checks a push step's options and link (`field` is the step's path, e.g.
/// `steps[2].send`). `app` is the step's app when it names one; `apps`
/// finds a tenant's app: given (publishing), the app must exist and have a
/// pattern for the link's type; absent, only the shape is checked.
pub fn check_step(
    v: &mut Violations,
    field: &str,
    app: Option<&str>,
    link: Option<&LinkSpec>,
    push: Option<&PushSpec>,
    apps: Option<AppLookup>,
) {
    let found = match apps {
        Some(apps) => app.map(|a| (a, apps(a))),
        None => None,
    };
    if let Some((a, None)) = &found {
        v.push(format!("{field}.app"), format!("unknown app {}", quote(a)));
    }
    if let Some(l) = link {
        match l.link_type.parse::<LinkType>() {
            Err(e) => v.push(format!("{field}.link.type"), e),
            Ok(t) => {
                if t != LinkType::Url && app.is_none() {
                    v.push(
                        format!("{field}.app"),
                        format!(
                            "a {} link needs the step's app (whose pattern builds it)",
                            t.as_str()
                        ),
                    );
                }
                if let Some((a, Some(app))) = &found {
                    if !app.links_to(t) {
                        v.push(
                            format!("{field}.link.type"),
                            format!("app {} has no {} link pattern", quote(a), t.as_str()),
                        );
                    }
                }
            }
        }
        if l.id.trim().is_empty() {
            v.push(
                format!("{field}.link.id"),
                "a link needs its id (a path such as payload.job_id)",
            );
        } else if !(l.id.starts_with("payload.") || l.id.starts_with("subscriber.")) {
            v.push(
                format!("{field}.link.id"),
                "must be a path starting with payload. or subscriber.",
            );
        }
    }
    if let Some(p) = push {
        if let Some(t) = &p.push_type {
            if !PUSH_TYPES.contains(&t.as_str()) {
                v.push(
                    format!("{field}.push.push_type"),
                    format!(
                        "unknown push type {} (expected one of {})",
                        quote(t),
                        PUSH_TYPES.join(", ")
                    ),
                );
            }
        }
        if let Some(ttl) = &p.ttl {
            // APNs and FCM keep an undelivered push at most four weeks.
            match crate::flow::duration::parse_ms(ttl) {
                Ok(ms) if ms <= 28 * 24 * 3_600_000 => {}
                Ok(_) => v.push(
                    format!("{field}.push.ttl"),
                    "at most 28d (the providers' limit)",
                ),
                Err(e) => v.push(format!("{field}.push.ttl"), e),
            }
        }
        if let Some(pr) = &p.priority {
            if pr != "high" && pr != "normal" {
                v.push(format!("{field}.push.priority"), "expected high or normal");
            }
        }
        for (name, args) in [
            ("title_loc_args", &p.title_loc_args),
            ("body_loc_args", &p.body_loc_args),
        ] {
            for (i, a) in args.iter().enumerate() {
                if !(a.starts_with("payload.") || a.starts_with("subscriber.")) {
                    v.push(
                        format!("{field}.push.{name}[{i}]"),
                        "must be a path starting with payload. or subscriber.",
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app() -> App {
        App::from_event(&pb::AppConfigured {
            app_id: "fieldapp".into(),
            platforms: vec!["ios".into(), "android".into()],
            ios_bundle_id: "com.acme.field".into(),
            deep_links: [("job_card".to_string(), "fieldapp://jobs/{id}".to_string())].into(),
            ..Default::default()
        })
        .unwrap()
    }

    #[test]
    fn links_are_built_from_the_apps_pattern_with_the_id_encoded() {
        let a = app();
        assert_eq!(
            a.link(LinkType::JobCard, "J-42").unwrap(),
            "fieldapp://jobs/J-42"
        );
        assert_eq!(
            a.link(LinkType::JobCard, "../x?y=1").unwrap(),
            "fieldapp://jobs/..%2Fx%3Fy%3D1"
        );
        assert!(a
            .link(LinkType::Approval, "1")
            .unwrap_err()
            .contains("no approval"));
        assert!(a.link(LinkType::JobCard, "").is_err());
        assert_eq!(
            a.link(LinkType::Url, "https://x.test/a").unwrap(),
            "https://x.test/a"
        );
        assert!(a.link(LinkType::Url, "not a url").is_err());
    }

    #[test]
    fn bad_apps_are_refused_naming_the_field() {
        let e = App::from_event(&pb::AppConfigured {
            app_id: "a".into(),
            platforms: vec!["ios".into(), "symbian".into()],
            deep_links: [
                ("job_card".to_string(), "fieldapp://jobs".to_string()),
                ("ticket".to_string(), "x://{id}".to_string()),
            ]
            .into(),
            apns_environment: "staging".into(),
            ..Default::default()
        })
        .unwrap_err();
        let fields: Vec<_> = e.0.iter().map(|f| f.field.as_str()).collect();
        for f in [
            "platforms[1]",
            "ios_bundle_id",
            "apns_environment",
            "deep_links.job_card",
            "deep_links.ticket",
        ] {
            assert!(fields.contains(&f), "{f} missing in {fields:?}");
        }
    }

    #[test]
    fn a_steps_link_is_checked_against_its_app() {
        let apps = |id: &str| (id == "fieldapp").then(app);
        let mut v = Violations::default();
        let link = |t: &str, id: &str| LinkSpec {
            link_type: t.into(),
            id: id.into(),
        };
        let apps: Option<AppLookup> = Some(&apps);
        check_step(
            &mut v,
            "s",
            Some("fieldapp"),
            Some(&link("job_card", "payload.job")),
            None,
            apps,
        );
        assert!(v.is_empty(), "{v:?}");
        check_step(
            &mut v,
            "s",
            Some("fieldapp"),
            Some(&link("approval", "payload.a")),
            None,
            apps,
        );
        check_step(
            &mut v,
            "t",
            Some("nope"),
            Some(&link("ticket", "")),
            None,
            apps,
        );
        let fields: Vec<_> = v.0.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(fields, ["s.link.type", "t.app", "t.link.type", "t.link.id"]);
    }
}

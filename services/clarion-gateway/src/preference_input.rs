//! What every door of the preference center shares before calling
//! [`crate::preferences`]: who is asking (an API key or a subscriber token,
//! and the interface the audit trail records) and setting values as text.

use clarion_domain::preferences::{Requested, Value};
use clarion_domain::Violations;
use tonic::metadata::MetadataMap;

use crate::auth;
use crate::error::ApiError;
use crate::preferences::{Interface, Who};
use crate::state::GatewayState;

/// The request header a client sets to record the interface it is: only
/// `cli` and `console` may be claimed (they are Clarion's own clients); any
/// other value, or none, records the door the request came through.
pub const INTERFACE_HEADER: &str = "x-clarion-interface";

/// The interface to record for a request that came through `door`.
pub fn claimed_interface(md: &MetadataMap, door: Interface) -> Interface {
    match md.get(INTERFACE_HEADER).and_then(|v| v.to_str().ok()) {
        Some("cli") => Interface::Cli,
        Some("console") => Interface::Console,
        _ => door,
    }
}

/// Authenticates the caller (an API key or a subscriber token) as a [`Who`].
pub async fn who(s: &GatewayState, md: &MetadataMap, door: Interface) -> Result<Who, ApiError> {
    let caller = auth::tenant_or_subscriber(s, md).await?;
    Ok(Who {
        tenant: caller.tenant,
        actor: caller.actor,
        interface: claimed_interface(md, door),
        subscriber: caller.subscriber,
    })
}

/// A setting's value as text: `on`, `off` or `inherit`.
pub fn value_name(v: Value) -> &'static str {
    match v {
        Some(true) => "on",
        Some(false) => "off",
        None => "inherit",
    }
}

/// Parses `on`, `off` or `inherit`.
pub fn parse_value(s: &str) -> Option<Value> {
    match s {
        "on" => Some(Some(true)),
        "off" => Some(Some(false)),
        "inherit" => Some(None),
        _ => None,
    }
}

/// Requested changes from (path, value) pairs; a bad value is named
/// `<field>[i].value`, every one of them at once.
pub fn requested<'a>(
    field: &str,
    changes: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<Vec<Requested>, Violations> {
    let mut v = Violations::default();
    let mut out = Vec::new();
    for (i, (path, value)) in changes.into_iter().enumerate() {
        match parse_value(value) {
            Some(value) => out.push(Requested {
                path: path.to_string(),
                value,
            }),
            None => v.push(
                format!("{field}[{i}].value"),
                format!(
                    "must be on, off or inherit, got {}",
                    clarion_domain::error::quote(value)
                ),
            ),
        }
    }
    v.into_result()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_parse_and_bad_ones_name_their_index() {
        let r = requested(
            "changes",
            [("channels.sms", "off"), ("marketing", "inherit")],
        )
        .unwrap();
        assert_eq!(r[0].value, Some(false));
        assert_eq!(r[1].value, None);
        let v = requested("changes", [("channels.sms", "on"), ("marketing", "maybe")]).unwrap_err();
        assert_eq!(v.0[0].field, "changes[1].value");
        for x in [Some(true), Some(false), None] {
            assert_eq!(parse_value(value_name(x)), Some(x));
        }
    }

    #[test]
    fn only_clarion_clients_can_be_claimed() {
        let mut md = MetadataMap::new();
        assert_eq!(claimed_interface(&md, Interface::Grpc), Interface::Grpc);
        md.insert(INTERFACE_HEADER, "cli".parse().unwrap());
        assert_eq!(claimed_interface(&md, Interface::Grpc), Interface::Cli);
        md.insert(INTERFACE_HEADER, "console".parse().unwrap());
        assert_eq!(claimed_interface(&md, Interface::Rest), Interface::Console);
        md.insert(INTERFACE_HEADER, "graphql".parse().unwrap());
        assert_eq!(claimed_interface(&md, Interface::Rest), Interface::Rest);
    }
}

//! The SSRF guard: every URL a tenant controls passes it before Clarion
//! connects.
//!
//! A tenant names a destination (a subscriber's `webhook_url`, a `to:` path
//! that resolves to a URL); Clarion connects from inside the operator's
//! network. Without a guard a tenant reaches what only the deployment should:
//! loopback services, the cloud metadata endpoint, private networks. So:
//!
//! * a URL whose host is an IP literal is checked before anything is sent;
//! * a host name is checked **at connect time**: the HTTP client resolves
//!   through [`GuardedResolver`], which refuses the name if any of its
//!   addresses is forbidden. The addresses checked are the ones connected
//!   to, so a name that re-resolves to `127.0.0.1` after a first harmless
//!   answer (DNS rebinding) is refused too;
//! * no redirect is followed (the client's policy is `none`; a 3xx answer
//!   is a failed send naming the status), so a public URL cannot bounce the
//!   request inward;
//! * the operator may allow destinations (`outbound.allow`: CIDRs, addresses
//!   or host names), e.g. an internal webhook receiver or, in tests, loopback.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// `outbound` configuration: destinations the guard lets through although
/// they are internal.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct OutboundConfig {
    /// CIDRs (`10.1.0.0/16`, `::1/128`), single addresses (`127.0.0.1`) or
    /// host names (`hooks.internal`, matched exactly, case-insensitive).
    pub allow: Vec<String>,
}

/// Why a destination was refused. Tenant-readable: it names the host and
/// the kind of address, never more.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("destination {host} refused: {why} (the operator may allow it in outbound.allow)")]
pub struct Refused {
    pub host: String,
    pub why: String,
}

/// Why `ip` is not a public unicast address, or `None` if it is.
pub fn forbidden(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => {
            // IPv4-mapped (::ffff:a.b.c.d) and IPv4-compatible forms reach the
            // IPv4 address: judge that.
            if let Some(v4) = v6.to_ipv4_mapped() {
                return forbidden_v4(v4);
            }
            forbidden_v6(v6)
        }
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let o = ip.octets();
    if ip == Ipv4Addr::new(169, 254, 169, 254) {
        Some("a cloud metadata address")
    } else if ip.is_loopback() {
        Some("a loopback address")
    } else if ip.is_unspecified() || o[0] == 0 {
        Some("an unspecified address")
    } else if ip.is_private() {
        Some("a private address")
    } else if ip.is_link_local() {
        Some("a link-local address")
    } else if ip.is_multicast() || ip.is_broadcast() {
        Some("a multicast or broadcast address")
    } else if o[0] == 100 && (o[1] & 0xc0) == 64 {
        Some("a carrier-grade NAT address")
    } else if o[0] >= 240
        || (o[0] == 192 && o[1] == 0 && o[2] == 0)
        || (o[0] == 198 && (o[1] & 0xfe) == 18)
    {
        Some("a reserved address")
    } else {
        None
    }
}

fn forbidden_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    if ip == Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254) {
        Some("a cloud metadata address")
    } else if ip.is_loopback() {
        Some("a loopback address")
    } else if ip.is_unspecified() {
        Some("an unspecified address")
    } else if ip.is_multicast() {
        Some("a multicast address")
    } else if (s[0] & 0xffc0) == 0xfe80 {
        Some("a link-local address")
    } else if (s[0] & 0xfe00) == 0xfc00 {
        Some("a private (unique local) address")
    } else if (s[0] & 0xffc0) == 0xfec0 {
        Some("a site-local address")
    } else if s[0] == 0 && s[1] == 0 && s[2] == 0 && s[3] == 0 && s[4] == 0 && s[5] == 0 {
        // IPv4-compatible (::a.b.c.d, deprecated): reaches the IPv4 address.
        forbidden_v4(Ipv4Addr::new(
            (s[6] >> 8) as u8,
            s[6] as u8,
            (s[7] >> 8) as u8,
            s[7] as u8,
        ))
    } else if s[0] == 0x0064 && s[1] == 0xff9b {
        // NAT64: the embedded IPv4 address is what is reached.
        forbidden_v4(Ipv4Addr::new(
            (s[6] >> 8) as u8,
            s[6] as u8,
            (s[7] >> 8) as u8,
            s[7] as u8,
        ))
    } else {
        None
    }
}

/// The guard's decisions, shared by the checks before a send and the
/// resolver the HTTP client connects through.
#[derive(Debug, Default)]
pub struct Guard {
    nets: Vec<IpNet>,
    hosts: HashSet<String>,
}

impl Guard {
    pub fn new(cfg: &OutboundConfig) -> Result<Guard, String> {
        let mut g = Guard::default();
        for (i, entry) in cfg.allow.iter().enumerate() {
            let e = entry.trim();
            if let Ok(net) = e.parse::<IpNet>() {
                g.nets.push(net);
            } else if let Ok(ip) = e.parse::<IpAddr>() {
                g.nets.push(IpNet::from(ip));
            } else if !e.is_empty()
                && e.len() <= 253
                && e.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
            {
                g.hosts.insert(e.to_ascii_lowercase());
            } else {
                return Err(format!(
                    "outbound.allow[{i}]: {entry:?} is neither a CIDR, an address nor a host name"
                ));
            }
        }
        Ok(g)
    }

    fn host_allowed(&self, host: &str) -> bool {
        self.hosts.contains(&host.to_ascii_lowercase())
    }

    /// Refuses `ip` unless it is public or the operator allowed it.
    pub fn check_ip(&self, host: &str, ip: IpAddr) -> Result<(), Refused> {
        let Some(why) = forbidden(ip) else {
            return Ok(());
        };
        if self.nets.iter().any(|n| n.contains(&ip)) || self.host_allowed(host) {
            return Ok(());
        }
        Err(Refused {
            host: excerpt(host, 100),
            why: if host == ip.to_string() {
                format!("it is {why}")
            } else {
                format!("it resolves to {ip}, {why}")
            },
        })
    }

    /// Checks a URL before sending: http(s) only, and a host that is an IP
    /// literal must pass [`Guard::check_ip`] (the client connects to a
    /// literal without resolving it, so the resolver never sees it). Names
    /// are checked when the client resolves them.
    pub fn check_url(&self, url: &str) -> Result<reqwest::Url, Refused> {
        let refuse = |why: &str| Refused {
            host: excerpt(url, 100),
            why: why.into(),
        };
        let u = reqwest::Url::parse(url).map_err(|e| refuse(&format!("not a valid URL ({e})")))?;
        if u.scheme() != "http" && u.scheme() != "https" {
            return Err(refuse("only http and https URLs are allowed"));
        }
        if !u.username().is_empty() || u.password().is_some() {
            return Err(refuse("URLs with credentials are not allowed"));
        }
        let Some(host) = u.host_str() else {
            return Err(refuse("the URL has no host"));
        };
        // The URL parser normalizes numeric hosts (`2130706433`, `0x7f.1`)
        // to dotted form and keeps IPv6 literals in brackets.
        let literal = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = literal.parse::<IpAddr>() {
            self.check_ip(literal, ip)?;
        }
        Ok(u)
    }
}

/// A DNS resolver for the HTTP client that refuses a name if any address
/// it resolves to is forbidden: the check happens on the addresses the
/// client is about to connect to.
pub struct GuardedResolver {
    guard: Arc<Guard>,
}

impl GuardedResolver {
    pub fn new(guard: Arc<Guard>) -> GuardedResolver {
        GuardedResolver { guard }
    }
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let guard = self.guard.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            // One forbidden address refuses the name: connecting only to the
            // others would let a name that mixes them probe by timing.
            for a in &addrs {
                guard.check_ip(&host, a.ip())?;
            }
            let it: reqwest::dns::Addrs = Box::new(addrs.into_iter());
            Ok(it)
        })
    }
}

/// The [`Refused`] somewhere in an HTTP client error's sources, if the
/// guard caused it.
pub fn refused_in<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a Refused> {
    let mut cur: Option<&'a (dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(r) = e.downcast_ref::<Refused>() {
            return Some(r);
        }
        cur = e.source();
    }
    None
}

/// At most `max` bytes of `text` (cut at a character boundary), control
/// characters replaced: what of a provider's or tenant's text may be quoted
/// in a tenant-readable reason.
pub fn excerpt(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let mut out: String = text[..end]
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if end < text.len() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn internal_addresses_are_forbidden_and_public_ones_are_not() {
        for bad in [
            "127.0.0.1",
            "127.8.9.10",
            "10.0.0.1",
            "172.16.5.4",
            "192.168.1.1",
            "169.254.169.254",
            "169.254.1.1",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fe80::1",
            "fc00::1",
            "fd00:ec2::254",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
        ] {
            assert!(forbidden(ip(bad)).is_some(), "{bad} must be forbidden");
        }
        for good in [
            "93.184.216.34",
            "8.8.8.8",
            "2606:4700::1111",
            "100.128.0.1",
            "::ffff:8.8.8.8",
        ] {
            assert_eq!(forbidden(ip(good)), None, "{good} is public");
        }
        assert_eq!(
            forbidden(ip("169.254.169.254")),
            Some("a cloud metadata address")
        );
        assert_eq!(
            forbidden(ip("fd00:ec2::254")),
            Some("a cloud metadata address")
        );
    }

    #[test]
    fn the_allow_list_opens_cidrs_addresses_and_hosts_only() {
        let g = Guard::new(&OutboundConfig {
            allow: vec!["127.0.0.0/8".into(), "::1".into(), "hooks.internal".into()],
        })
        .unwrap();
        assert!(g.check_ip("127.0.0.1", ip("127.0.0.1")).is_ok());
        assert!(g.check_ip("::1", ip("::1")).is_ok());
        assert!(g.check_ip("hooks.internal", ip("10.1.2.3")).is_ok());
        let r = g.check_ip("evil.test", ip("10.1.2.3")).unwrap_err();
        assert!(
            r.to_string()
                .contains("resolves to 10.1.2.3, a private address"),
            "{r}"
        );
        assert!(g.check_ip("x", ip("169.254.169.254")).is_err());
        assert!(Guard::new(&OutboundConfig {
            allow: vec!["not a host!".into()]
        })
        .is_err());
    }

    #[test]
    fn urls_are_checked_for_scheme_credentials_and_literal_addresses() {
        let g = Guard::default();
        assert!(g.check_url("https://example.com/hook").is_ok());
        for bad in [
            "http://127.0.0.1:8080/internal",
            "http://[::1]/x",
            "http://169.254.169.254/latest/meta-data/",
            "http://[::ffff:127.0.0.1]/",
            "http://2130706433/",
            "http://0x7f.1/",
            "ftp://example.com/",
            "http://user:pw@example.com/",
            "not a url",
        ] {
            assert!(g.check_url(bad).is_err(), "{bad} must be refused");
        }
    }

    #[test]
    fn excerpts_are_bounded_and_printable() {
        assert_eq!(excerpt("ab\ncd", 10), "ab cd");
        assert_eq!(excerpt("ééé", 3), "é…");
        assert_eq!(excerpt(&"x".repeat(500), 200).len(), 200 + '…'.len_utf8());
    }
}

//! Outbound URL guard: only http(s), and no loopback, private, link-local or metadata
//! addresses unless the operator allows private targets. Checked when a URL is accepted and
//! again when it is used, since DNS can change in between.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use url::Url;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GuardError {
    #[error("not a valid URL: {0}")]
    Invalid(String),
    #[error("only http and https URLs are allowed")]
    Scheme,
    #[error("the host {0} could not be resolved")]
    Unresolvable(String),
    #[error("the URL points at a private or reserved address ({0}); set CONVEYOR_ALLOW_PRIVATE_TARGETS=true to allow it")]
    Private(IpAddr),
}

/// Parses and checks the form of a URL (no DNS).
pub fn parse(raw: &str) -> Result<Url, GuardError> {
    let url = Url::parse(raw).map_err(|e| GuardError::Invalid(e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(GuardError::Scheme);
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(GuardError::Invalid("the URL has no host".into()));
    }
    Ok(url)
}

/// Parses the URL and, unless private targets are allowed, refuses a host that is a
/// non-public address literal or `localhost` (no DNS: names are checked when used).
pub fn check_literal(raw: &str, allow_private: bool) -> Result<Url, GuardError> {
    let url = parse(raw)?;
    if allow_private {
        return Ok(url);
    }
    match url.host() {
        Some(url::Host::Ipv4(ip)) if !is_public(IpAddr::V4(ip)) => {
            Err(GuardError::Private(IpAddr::V4(ip)))
        }
        Some(url::Host::Ipv6(ip)) if !is_public(IpAddr::V6(ip)) => {
            Err(GuardError::Private(IpAddr::V6(ip)))
        }
        Some(url::Host::Domain(d))
            if d.eq_ignore_ascii_case("localhost")
                || d.to_ascii_lowercase().ends_with(".localhost") =>
        {
            Err(GuardError::Private(IpAddr::V4(Ipv4Addr::LOCALHOST)))
        }
        _ => Ok(url),
    }
}

/// Parses the URL and, unless private targets are allowed, resolves its host and refuses it
/// when any of its addresses is not public.
pub async fn check(raw: &str, allow_private: bool) -> Result<Url, GuardError> {
    let url = parse(raw)?;
    if allow_private {
        return Ok(url);
    }
    let host = url
        .host_str()
        .unwrap_or_default()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = url.port_or_known_default().unwrap_or(80);
    let addrs: Vec<IpAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) => tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|_| GuardError::Unresolvable(host.clone()))?
            .map(|a| a.ip())
            .collect(),
    };
    if addrs.is_empty() {
        return Err(GuardError::Unresolvable(host));
    }
    if let Some(bad) = addrs.into_iter().find(|ip| !is_public(*ip)) {
        return Err(GuardError::Private(bad));
    }
    Ok(url)
}

pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(v6),
        },
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    !(ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local() // includes 169.254.169.254, the cloud metadata address
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_documentation()
        || ip.is_multicast()
        || o[0] == 0
        || (o[0] == 100 && (o[1] & 0xc0) == 64) // 100.64.0.0/10, carrier-grade NAT
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // 192.0.0.0/24, IETF protocol assignments
        || (o[0] == 192 && o[1] == 88 && o[2] == 99) // 192.88.99.0/24, 6to4 relays
        || (o[0] == 198 && (o[1] & 0xfe) == 18) // 198.18.0.0/15, benchmarking
        || o[0] >= 240)
}

/// Only global unicast (2000::/3) is public, less the blocks inside it that are not routed
/// to a host of their own or that tunnel to an IPv4 address the guard never saw: 2001::/23
/// (IETF protocol assignments, Teredo among them), 2001:db8::/32 and 3fff::/20
/// (documentation), 2002::/16 (6to4: 2002:7f00:1:: is 127.0.0.1). Everything outside
/// 2000::/3 is refused by construction, so forms nobody listed cannot slip through:
/// IPv4-compatible `::a.b.c.d`, site-local fec0::/10, unique local, link-local, NAT64
/// 64:ff9b::/96, discard 100::/64, multicast.
fn is_public_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    let global_unicast = (s[0] & 0xe000) == 0x2000;
    // 2001::/23 and 2001:db8::/32; 2002::/16; 3fff::/20.
    let special = (s[0] == 0x2001 && (s[1] < 0x0200 || s[1] == 0x0db8))
        || s[0] == 0x2002
        || (s[0] == 0x3fff && s[1] < 0x1000);
    global_unicast && !special
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn refuses_private_targets_unless_allowed() {
        for url in [
            "http://127.0.0.1/",
            "http://10.0.0.1/",
            "http://169.254.169.254/latest/meta-data",
            "http://[::1]/",
            "http://localhost:8080/",
            "http://192.168.1.1/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:10.0.0.1]/",
            // Every IPv6 form of a private or loopback address the audit tried.
            "http://[::127.0.0.1]/",         // IPv4-compatible
            "http://[2002:7f00:1::1]/",      // 6to4 of 127.0.0.1
            "http://[fec0::1]/",             // site-local
            "http://[2001:0:4136:e378::1]/", // Teredo
            "http://[64:ff9b::7f00:1]/",     // NAT64 of 127.0.0.1
            "http://[100::1]/",              // discard
            "http://[fd00::1]/",             // unique local
            "http://[fe80::1]/",             // link-local
            "http://[2001:db8::1]/",         // documentation
            "http://[3fff::1]/",             // documentation
            "http://[ff02::1]/",             // multicast
            "http://[::]/",
            "http://192.88.99.1/",
        ] {
            assert!(
                matches!(
                    check(url, false).await,
                    Err(GuardError::Private(_) | GuardError::Unresolvable(_))
                ),
                "{url}"
            );
            assert!(check(url, true).await.is_ok(), "{url} allowed");
        }
        assert_eq!(
            check("file:///etc/passwd", true).await,
            Err(GuardError::Scheme)
        );
        assert!(matches!(
            check("not a url", false).await,
            Err(GuardError::Invalid(_))
        ));
        assert!(check("https://93.184.215.14/", false).await.is_ok());
        assert!(check("https://[2606:4700:4700::1111]/", false)
            .await
            .is_ok());
        assert!(check("https://[2a00:1450:4001:80b::200e]/", false)
            .await
            .is_ok());
        for url in [
            "http://127.0.0.1/",
            "http://[::1]/",
            "http://10.0.0.1/",
            "http://169.254.169.254/",
            "http://LOCALHOST:1/",
            "http://[::127.0.0.1]/",
            "http://[2002:a00:1::]/",
            "http://[fec0::1]/",
            "http://[2001::1]/",
        ] {
            assert!(
                matches!(check_literal(url, false), Err(GuardError::Private(_))),
                "{url}"
            );
            assert!(check_literal(url, true).is_ok());
        }
        assert!(check_literal("https://example.com/", false).is_ok());
    }
}

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
        || (o[0] == 198 && (o[1] & 0xfe) == 18) // 198.18.0.0/15, benchmarking
        || o[0] >= 240)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (s[0] & 0xfe00) == 0xfc00 // unique local
        || (s[0] & 0xffc0) == 0xfe80 // link-local
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
        || (s[0] == 0x64 && s[1] == 0xff9b)) // NAT64 can reach private v4 space
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
        for url in [
            "http://127.0.0.1/",
            "http://[::1]/",
            "http://10.0.0.1/",
            "http://169.254.169.254/",
            "http://LOCALHOST:1/",
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

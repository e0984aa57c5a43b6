//! Calls out (webhooks, callbacks, `http` jobs): one HTTP client setup with the SSRF guard at
//! connection time, and one way to describe a failed call that never repeats its URL.

use std::{sync::Arc, time::Duration};

use crate::guarded_dns::GuardedResolver;

/// A client that follows no redirect (a redirect could lead past the URL guard) and resolves
/// names through the guard, so the address connected to is the address checked.
pub fn guarded_client(
    user_agent: &str,
    allow_private_targets: bool,
    connect_timeout: Duration,
    timeout: Option<Duration>,
) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(connect_timeout)
        .dns_resolver(Arc::new(GuardedResolver::new(allow_private_targets)))
        .user_agent(user_agent);
    if let Some(t) = timeout {
        builder = builder.timeout(t);
    }
    builder.build().expect("building the HTTP client")
}

/// The error and its causes, without the URL: a URL may carry a token in its query or
/// credentials before its host, and this text is stored with the attempt and logged.
pub fn describe(e: &reqwest::Error) -> String {
    let mut out = if e.is_timeout() {
        "timed out".to_owned()
    } else if e.is_connect() {
        "could not connect".to_owned()
    } else if e.is_body() || e.is_decode() {
        "reading the response failed".to_owned()
    } else {
        "request failed".to_owned()
    };
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out.replace('\0', "\u{FFFD}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_failed_call_is_described_without_its_url() {
        let client = guarded_client("test", true, Duration::from_secs(2), None);
        // Nothing listens on port 9.
        let url = "http://user:hunter2@127.0.0.1:9/path?token=s3cr3t";
        let e = client.get(url).send().await.unwrap_err();
        assert!(
            e.to_string().contains("s3cr3t"),
            "reqwest itself names the URL"
        );
        let said = describe(&e);
        assert!(said.starts_with("could not connect"), "{said}");
        for secret in ["s3cr3t", "hunter2", "/path", "token"] {
            assert!(!said.contains(secret), "{said}");
        }
    }
}

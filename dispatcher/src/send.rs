//! One delivery attempt: sign the stored body, POST it, and read what the receiver said.

use std::time::{Duration, Instant};

use chrono::Utc;
use conveyor_core::{
    outbound,
    signing::{signature_header, Secret},
    store::ClaimedDelivery,
    urlguard,
};

/// How much of a response body is kept with the attempt.
const RESPONSE_SNIPPET: usize = 1024;

/// What one attempt found.
#[derive(Debug, Default)]
pub struct Attempted {
    pub status_code: Option<u16>,
    pub latency: Duration,
    pub response: Option<String>,
    pub error: Option<String>,
    /// The receiver asked for a pause (`Retry-After` on 429 or 503).
    pub retry_after: Option<Duration>,
    /// Sending again cannot help (the URL is refused by the guard).
    pub permanent: bool,
}

impl Attempted {
    pub fn succeeded(&self) -> bool {
        self.status_code.is_some_and(|s| (200..300).contains(&s))
    }
}

/// Sends the delivery's body, signed with every live secret of its endpoint (or tenant,
/// for callbacks). The body is the stored text, moved into the request untouched: the bytes
/// signed are the bytes sent.
pub async fn send(
    http: &reqwest::Client,
    allow_private: bool,
    d: &ClaimedDelivery,
    body: String,
) -> Attempted {
    if let Err(e) = urlguard::check_literal(&d.url, allow_private) {
        return Attempted {
            error: Some(e.to_string()),
            permanent: true,
            ..Default::default()
        };
    }
    let secrets: Vec<Secret> = std::iter::once(&d.secret)
        .chain(d.previous_secret.as_ref())
        .filter_map(|s| Secret::parse(s).ok())
        .collect();
    if secrets.is_empty() {
        return Attempted {
            error: Some("no valid signing secret".into()),
            ..Default::default()
        };
    }
    let msg_id = d.message_id.to_string();
    let timestamp = Utc::now().timestamp();
    let signature = signature_header(&secrets, &msg_id, timestamp, body.as_bytes());
    let started = Instant::now();
    let mut request = http
        .post(&d.url)
        .header("content-type", "application/json")
        .header("webhook-id", &msg_id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature);
    if let Some(tp) = &d.traceparent {
        // The job's trace, with this attempt as the parent: the receiver can join it.
        let span = tracing::Span::current();
        request = request.header("traceparent", conveyor_core::trace::outgoing(&span, tp));
    }
    let sent = request.body(body).send().await;
    let mut resp = match sent {
        Ok(r) => r,
        Err(e) => {
            return Attempted {
                latency: started.elapsed(),
                error: Some(outbound::describe(&e)),
                ..Default::default()
            }
        }
    };
    let status = resp.status();
    let retry_after = match status.as_u16() {
        429 | 503 => resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after),
        _ => None,
    };
    // Read the start of the body; a receiver streaming forever cannot hold the attempt
    // past the client's total timeout.
    let mut snippet = Vec::new();
    let mut error = None;
    while snippet.len() < RESPONSE_SNIPPET {
        match resp.chunk().await {
            Ok(Some(chunk)) => snippet.extend_from_slice(&chunk),
            Ok(None) => break,
            Err(e) => {
                error = Some(outbound::describe(&e));
                break;
            }
        }
    }
    snippet.truncate(RESPONSE_SNIPPET);
    let latency = started.elapsed();
    if error.is_none() && !status.is_success() {
        error = Some(format!("the receiver answered {status}"));
    }
    Attempted {
        status_code: Some(status.as_u16()),
        latency,
        response: (!snippet.is_empty()).then(|| clean_text(&String::from_utf8_lossy(&snippet))),
        error,
        retry_after,
        permanent: false,
    }
}

/// `Retry-After`: delay-seconds or an HTTP date.
fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    (at.with_timezone(&Utc) - Utc::now()).to_std().ok()
}

/// PostgreSQL text cannot hold NUL.
fn clean_text(s: &str) -> String {
    s.replace('\0', "\u{FFFD}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after(" 0 "), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon"), None);
        let later = (Utc::now() + chrono::Duration::seconds(120)).to_rfc2822();
        let d = parse_retry_after(&later).unwrap();
        assert!(
            d > Duration::from_secs(100) && d <= Duration::from_secs(120),
            "{d:?}"
        );
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT"), None); // past
    }
}

//! What every request goes through: its span, its count and latency, its deadline.

use std::time::Duration;

use axum::response::{IntoResponse, Response};

use super::problem::Problem;

/// A span per request, in the trace of the request's `traceparent` when it has one. The
/// route, status and tenant are recorded on it once known (`count_request`, `Auth`).
pub fn request_span(req: &axum::http::Request<axum::body::Body>) -> tracing::Span {
    let span = tracing::info_span!("request", method = method_label(req.method()), path = %req.uri().path(),
        otel.kind = "server", http.route = tracing::field::Empty,
        http.response.status_code = tracing::field::Empty, tenant_id = tracing::field::Empty,
        otel.status_code = tracing::field::Empty);
    let traceparent = req
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok());
    conveyor_core::trace::adopt(&span, traceparent);
    span
}

/// Counts every request by its route's pattern (not its path: ids would make a series each)
/// and status, with its latency.
pub async fn count_request(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let started = std::time::Instant::now();
    let method = method_label(req.method());
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_owned();
    let resp = next.run(req).await;
    let span = tracing::Span::current();
    conveyor_core::trace::rename(&span, format!("{method} {route}"));
    span.record("http.route", route.as_str());
    span.record("http.response.status_code", resp.status().as_u16());
    if resp.status().is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    conveyor_core::metrics::http_request(method, &route, resp.status().as_u16(), started.elapsed());
    resp
}

/// A method as a metric label or span name: the standard methods by name, anything else
/// `OTHER`. A client chooses the method freely, so a name per method would let anyone grow
/// `/metrics` (and the span names) without bound.
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    const STANDARD: [Method; 9] = [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
        Method::OPTIONS,
        Method::CONNECT,
        Method::TRACE,
    ];
    STANDARD
        .iter()
        .find(|m| *m == method)
        .map_or("OTHER", |m| m.as_str())
}

/// Answers 503 when a request takes longer than `timeout`: a stuck dependency or a client
/// that sends its body too slowly must not hold a connection and a task forever. A long-poll
/// (`?wait=N`) gets its N seconds on top, so it is never cut short; a lease request the most
/// its `wait_seconds` may be.
pub async fn with_deadline(
    timeout: Duration,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    // A lease request's wait is in its body; the handler holds it to that, at most 60 s.
    let lease_wait = req.uri().path() == "/v1/workers/lease";
    let wait = req
        .uri()
        .query()
        .and_then(|q| {
            form_urlencoded::parse(q.as_bytes())
                .find(|(k, _)| k == "wait")
                .and_then(|(_, v)| v.parse::<u64>().ok())
        })
        .unwrap_or(0)
        .min(u64::from(conveyor_types::jobs::MAX_WAIT_SECONDS));
    let wait = if lease_wait {
        u64::from(conveyor_types::jobs::MAX_WAIT_SECONDS)
    } else {
        wait
    };
    let limit = timeout + Duration::from_secs(wait);
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => {
            tracing::warn!(timeout = ?limit, "a request timed out");
            let mut p = Problem::unavailable(format!(
                "the request took longer than {} s; a submission may still have been stored, \
                 so retry it with the same Idempotency-Key",
                limit.as_secs_f64()
            ));
            p.retry_after = Some(1);
            p.into_response()
        }
    }
}

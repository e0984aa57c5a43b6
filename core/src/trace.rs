//! W3C trace context (`traceparent: 00-<trace-id>-<parent-id>-<flags>`): taken from a
//! submission, or made for it, and passed on at each hop with the same trace id.
//!
//! When spans are exported (OpenTelemetry, see the binary's `telemetry`), each hop's span is
//! made a child of the `traceparent` it received ([`adopt`]) and passes on its own context
//! ([`of_span`]), so the exported spans form one tree. Without the export these are no-ops
//! and the hops pass the trace on with parent ids of their own ([`child`]).

use crate::token::random_hex;
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The header's value when it is well formed (version 00, ids not all zeros), else `None`.
pub fn parse(value: &str) -> Option<String> {
    let v = value.trim().to_ascii_lowercase();
    let parts: Vec<&str> = v.split('-').collect();
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    let zeros = |s: &str| s.bytes().all(|b| b == b'0');
    match parts.as_slice() {
        [ver, trace, parent, flags]
            if *ver == "00"
                && hex(trace, 32)
                && hex(parent, 16)
                && hex(flags, 2)
                && !zeros(trace)
                && !zeros(parent) =>
        {
            Some(v)
        }
        _ => None,
    }
}

/// A new trace (sampled), for a submission that came without one.
pub fn new_trace() -> String {
    format!("00-{}-{}-01", random_hex(16), random_hex(8))
}

/// The same trace, with a parent id of this hop's own.
fn child(traceparent: &str) -> String {
    let mut parts = traceparent.splitn(4, '-');
    let (ver, trace, _, flags) = (parts.next(), parts.next(), parts.next(), parts.next());
    match (ver, trace, flags) {
        (Some(v), Some(t), Some(f)) => format!("{v}-{t}-{}-{f}", random_hex(8)),
        _ => new_trace(),
    }
}

/// Makes `span` (not yet entered) a child of the remote `traceparent`, for the export. A
/// missing or malformed one leaves the span a root of its own trace.
pub fn adopt(span: &tracing::Span, traceparent: Option<&str>) {
    let Some(context) = traceparent.and_then(span_context) else {
        return;
    };
    // Fails only when nothing is exported (no OpenTelemetry layer) or the span is filtered
    // out: then there is no exported span to place.
    let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(context));
}

fn span_context(traceparent: &str) -> Option<SpanContext> {
    let tp = parse(traceparent)?;
    let mut parts = tp.split('-').skip(1);
    let trace_id = TraceId::from_hex(parts.next()?).ok()?;
    let span_id = SpanId::from_hex(parts.next()?).ok()?;
    let flags = u8::from_str_radix(parts.next()?, 16).ok()?;
    Some(SpanContext::new(
        trace_id,
        span_id,
        TraceFlags::new(flags),
        true,
        TraceState::default(),
    ))
}

/// The `traceparent` naming `span` as the parent, when spans are exported; else `None`.
pub fn of_span(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| {
        format!(
            "00-{}-{}-{:02x}",
            sc.trace_id(),
            sc.span_id(),
            sc.trace_flags().to_u8()
        )
    })
}

/// Names `span` for the export once its name is known (a request's route is known only after
/// routing, when the span has started). A no-op without the export.
pub fn rename(span: &tracing::Span, name: String) {
    span.context().span().update_name(name);
}

/// What a hop sends on: its own span's context when spans are exported, else the trace it
/// received with a parent id of its own.
pub fn outgoing(span: &tracing::Span, received: &str) -> String {
    of_span(span).unwrap_or_else(|| child(received))
}

/// The trace id, for logs.
pub fn trace_id(traceparent: &str) -> &str {
    traceparent.split('-').nth(1).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_specs_example_and_refuses_malformed_ones() {
        let ex = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(parse(ex).as_deref(), Some(ex));
        assert_eq!(parse(&ex.to_uppercase()).as_deref(), Some(ex));
        for bad in [
            "",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4bf92f3577b34da6a3ce929d0e0e473z-00f067aa0ba902b7-01",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_child_keeps_the_trace_and_changes_the_parent() {
        let ex = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let c = child(ex);
        assert!(parse(&c).is_some());
        assert_eq!(trace_id(&c), trace_id(ex));
        assert_ne!(c, ex);
        assert!(parse(&new_trace()).is_some());
    }

    #[test]
    fn without_an_export_spans_have_no_context_and_outgoing_makes_a_child() {
        let ex = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let span = tracing::info_span!("hop");
        adopt(&span, Some(ex));
        assert_eq!(of_span(&span), None);
        let out = outgoing(&span, ex);
        assert_eq!(trace_id(&out), trace_id(ex));
        assert_ne!(out, ex);
        let sc = span_context(ex).unwrap();
        assert_eq!(sc.trace_id().to_string(), trace_id(ex));
        assert_eq!(sc.span_id().to_string(), "00f067aa0ba902b7");
        assert!(sc.is_sampled() && sc.is_remote());
        assert!(span_context("nonsense").is_none());
    }
}

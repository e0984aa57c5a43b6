//! W3C trace context (`traceparent: 00-<trace-id>-<parent-id>-<flags>`): taken from a
//! submission, or made for it, and passed on at each hop with the same trace id and a parent
//! id of that hop's own.

use rand::RngCore;

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

fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand::rngs::OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

/// A new trace (sampled), for a submission that came without one.
pub fn new_trace() -> String {
    format!("00-{}-{}-01", random_hex(16), random_hex(8))
}

/// The same trace, with a parent id of this hop's own.
pub fn child(traceparent: &str) -> String {
    let mut parts = traceparent.splitn(4, '-');
    let (ver, trace, _, flags) = (parts.next(), parts.next(), parts.next(), parts.next());
    match (ver, trace, flags) {
        (Some(v), Some(t), Some(f)) => format!("{v}-{t}-{}-{f}", random_hex(8)),
        _ => new_trace(),
    }
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
}

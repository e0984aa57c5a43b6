//! Webhook domain types: endpoints, events and deliveries as the API shows them.

pub use conveyor_types::webhooks::{
    is_reserved_event_type, Delivery, DeliveryAttempt, DeliveryKind, DeliveryStatus, Endpoint,
    CONVEYOR_EVENT_TYPES, RESERVED_EVENT_PREFIXES,
};

/// Events about deliveries themselves: their own failures raise nothing more, so a failing
/// endpoint subscribed to them cannot feed a loop.
pub const OPERATIONAL_EVENT_TYPES: [&str; 3] = [
    "endpoint.disabled",
    "delivery.exhausted",
    "delivery.recovered",
];

/// Event type names: lowercase letters, digits, `_`, `-` and `.`, 1 to 100 characters.
pub fn valid_event_type(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 100
        && t.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-.".contains(&b))
        && t.as_bytes()[0].is_ascii_alphanumeric()
}

/// A validated endpoint creation.
#[derive(Debug, Clone)]
pub struct NewEndpoint {
    pub url: String,
    pub description: String,
    pub event_types: Vec<String>,
    pub rate_limit_per_second: Option<i32>,
}

/// A validated change: `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct EndpointPatch {
    pub url: Option<String>,
    pub description: Option<String>,
    pub event_types: Option<Vec<String>>,
    /// `Some(None)` removes the limit.
    pub rate_limit_per_second: Option<Option<i32>>,
    pub enabled: Option<bool>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_type_names() {
        assert!(valid_event_type("invoice.paid"));
        assert!(valid_event_type("a-b_c.1"));
        assert!(!valid_event_type(""));
        assert!(!valid_event_type(".x"));
        assert!(!valid_event_type("Invoice.Paid"));
        assert!(!valid_event_type(&"a".repeat(101)));
        assert!(CONVEYOR_EVENT_TYPES
            .iter()
            .all(|t| valid_event_type(t) && is_reserved_event_type(t)));
        assert!(!is_reserved_event_type("jobs.custom"));
    }
}

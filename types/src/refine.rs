//! The rules a derived schema cannot state, added to it by name: exclusions between fields,
//! "at least one of", unique items, reserved names. Kept here, beside the types, so that the
//! schema the server validates against is the one this crate describes.

use serde_json::{json, Map, Value};

/// Fields that exclude each other, by schema: the second must be left out (or `null`) when
/// the first is given.
const EXCLUSIONS: [(&str, &str, &str); 1] = [("SubmitJob", "run_at", "delay_seconds")];

/// The field whose presence excludes `field`, if one does.
pub fn excluded_by(field: Option<&str>) -> Option<&'static str> {
    EXCLUSIONS
        .iter()
        .find(|(_, _, second)| Some(*second) == field)
        .map(|(_, first, _)| *first)
}

/// Adds to `schemas` (the document's `components.schemas`) what the derives cannot say.
pub fn refine_schemas(schemas: &mut Map<String, Value>) {
    let mut set = |name: &str, edit: &dyn Fn(&mut Value)| {
        if let Some(schema) = schemas.get_mut(name) {
            edit(schema);
        }
    };
    // A time, or a delay from now: not both.
    for (schema, first, second) in EXCLUSIONS {
        set(schema, &|s| {
            s["if"] =
                json!({"required": [first], "properties": {first: {"not": {"type": "null"}}}});
            s["then"] = json!({"properties": {second: {"type": "null"}}});
        });
    }
    // Conveyor's own event types are raised by Conveyor only.
    set("PublishEvent", &|s| {
        s["properties"]["type"]["not"] = json!({"pattern": "^(job|saga|endpoint|delivery)\\."});
    });
    // A replay of every dead job is asked for by naming a filter.
    set("ReplayDeadLetters", &|s| {
        s["anyOf"] = Value::Array(
            ["queue", "type", "since", "ids"]
                .iter()
                .map(|f| json!({"required": [f], "properties": {*f: {"not": {"type": "null"}}}}))
                .collect(),
        );
    });
    set("CreateKey", &|s| {
        s["properties"]["scopes"]["uniqueItems"] = Value::Bool(true);
    });
}

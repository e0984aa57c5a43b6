//! The contract, enforced: every request body and query is checked against the schema the
//! document publishes for it (compiled once per type, from the document's own components),
//! and every way it breaks that schema is named at once, field by field. Only then is it
//! parsed into its type. So what the document says a field takes is, by construction, what
//! the API takes; a handler adds only what a schema cannot say (a job type this deployment
//! runs, a URL that resolves to a public address).

use std::{
    any::TypeId,
    collections::HashMap,
    sync::{Arc, RwLock},
};

use conveyor_types::FieldError;
use jsonschema::{error::ValidationErrorKind, paths::LocationSegment, ValidationError, Validator};
use serde_json::{json, Map, Value};
use utoipa::{
    openapi::{path::ParameterIn, RefOr, Schema},
    IntoParams, ToSchema,
};

/// Compiled checkers by request type, made on first use from the document's components.
pub struct Contract {
    /// The document's `components`: the targets of every `$ref` a checker follows.
    components: Value,
    checkers: RwLock<HashMap<TypeId, Arc<Checker>>>,
}

/// One type's schema, compiled, with its fields in declaration order (errors are reported
/// in that order, whatever order the validator finds them in).
pub struct Checker {
    validator: Validator,
    fields: Vec<String>,
    /// Query parameters by name, with the type their text is read as.
    params: HashMap<String, ParamKind>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ParamKind {
    Integer,
    Number,
    Boolean,
    Text,
}

impl Contract {
    pub fn new(document: &Value) -> Self {
        Self {
            components: document["components"].clone(),
            checkers: RwLock::default(),
        }
    }

    /// The checker of a request body type (a component of the document).
    pub fn body<T: ToSchema + 'static>(&self) -> Arc<Checker> {
        self.checker::<T>(|| {
            let schema = json!({"$ref": format!("#/components/schemas/{}", T::name())});
            let fields = match T::schema() {
                RefOr::T(Schema::Object(o)) => o.properties.keys().cloned().collect(),
                _ => Vec::new(),
            };
            (schema, fields, HashMap::new())
        })
    }

    /// Every way a value the server built itself (from a console form, say) breaks its type's
    /// schema: such a value is held to the same contract as a body sent to the API.
    pub fn check_value<T: ToSchema + serde::Serialize + 'static>(
        &self,
        value: &T,
    ) -> Vec<FieldError> {
        let as_json = serde_json::to_value(value).unwrap_or(Value::Null);
        self.body::<T>().check(&as_json)
    }

    /// The checker of a query type: its parameters as the properties of one object, none
    /// but them allowed.
    pub fn query<T: IntoParams + 'static>(&self) -> Arc<Checker> {
        self.checker::<T>(|| {
            let params = T::into_params(|| Some(ParameterIn::Query));
            let mut properties = Map::new();
            let mut required = Vec::new();
            let mut kinds = HashMap::new();
            let mut fields = Vec::new();
            for p in params {
                let schema = p
                    .schema
                    .map(|s| serde_json::to_value(s).expect("a schema serialises"))
                    .unwrap_or(Value::Bool(true));
                kinds.insert(p.name.clone(), param_kind(&schema, &self.components));
                if p.required == utoipa::openapi::Required::True {
                    required.push(Value::from(p.name.clone()));
                }
                fields.push(p.name.clone());
                properties.insert(p.name, schema);
            }
            let schema = json!({
                "type": "object",
                "properties": properties,
                "required": required,
                "additionalProperties": false,
            });
            (schema, fields, kinds)
        })
    }

    fn checker<T: 'static>(
        &self,
        make: impl FnOnce() -> (Value, Vec<String>, HashMap<String, ParamKind>),
    ) -> Arc<Checker> {
        if let Some(c) = self.checkers.read().unwrap().get(&TypeId::of::<T>()) {
            return c.clone();
        }
        let (mut schema, fields, params) = make();
        schema["components"] = self.components.clone();
        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .should_validate_formats(true)
            .build(&schema)
            .unwrap_or_else(|e| {
                panic!("the schema of {} compiles: {e}", std::any::type_name::<T>())
            });
        let checker = Arc::new(Checker {
            validator,
            fields,
            params,
        });
        self.checkers
            .write()
            .unwrap()
            .insert(TypeId::of::<T>(), checker.clone());
        checker
    }
}

impl Checker {
    /// Every way `instance` breaks the schema, each naming its field (`jobs[2].type`, or
    /// `body` for the whole), in the type's field order.
    pub fn check(&self, instance: &Value) -> Vec<FieldError> {
        let mut out = Vec::new();
        for e in self.validator.iter_errors(instance) {
            describe(&e, &mut out);
        }
        let rank = |field: &str| {
            let top = field.split(['.', '[']).next().unwrap_or(field);
            self.fields
                .iter()
                .position(|f| f == top)
                .unwrap_or(usize::MAX)
        };
        out.sort_by_key(|e| rank(&e.field));
        out.dedup();
        out
    }

    /// A query string's pairs as the object its schema describes: each value read as its
    /// parameter's type (text that is not a number stays text, and fails as one). A name
    /// given twice is an error of its own.
    pub fn query_object(&self, pairs: Vec<(String, String)>) -> Result<Value, Vec<FieldError>> {
        let mut object = Map::new();
        let mut errors = Vec::new();
        for (name, text) in pairs {
            let value = match self.params.get(&name) {
                Some(ParamKind::Integer) => text
                    .parse::<i64>()
                    .map(Value::from)
                    .unwrap_or(Value::String(text)),
                Some(ParamKind::Number) => text
                    .parse::<f64>()
                    .ok()
                    .and_then(serde_json::Number::from_f64)
                    .map(Value::Number)
                    .unwrap_or(Value::String(text)),
                Some(ParamKind::Boolean) => match text.as_str() {
                    "true" => Value::Bool(true),
                    "false" => Value::Bool(false),
                    _ => Value::String(text),
                },
                Some(ParamKind::Text) | None => Value::String(text),
            };
            if object.insert(name.clone(), value).is_some() {
                errors.push(FieldError::new(name, "is given more than once"));
            }
        }
        if errors.is_empty() {
            Ok(Value::Object(object))
        } else {
            Err(errors)
        }
    }
}

/// Every way `instance` breaks a schema of a tenant's own (a declared job type's payload
/// schema), each naming its field under `under` (`payload.items[2].sku`).
pub(crate) fn check_against(
    validator: &Validator,
    instance: &Value,
    under: &str,
) -> Vec<FieldError> {
    let mut out = Vec::new();
    for e in validator.iter_errors(instance) {
        describe(&e, &mut out);
    }
    for e in &mut out {
        e.field = match e.field.as_str() {
            "body" => under.to_owned(),
            f if f.starts_with('[') => format!("{under}{f}"),
            f => format!("{under}.{f}"),
        };
    }
    out.dedup();
    out
}

/// A tenant's JSON Schema, compiled; the error says why it is not one (for a 422 naming
/// `payload_schema`). Draft 2020-12 unless the schema's `$schema` says otherwise; no remote
/// `$ref` is fetched (the build has no HTTP resolver).
pub(crate) fn compile_tenant_schema(schema: &Value) -> Result<Validator, String> {
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .build(schema)
        .map_err(|e| e.to_string())
}

/// What a query parameter's text is read as: its schema's type, through a `$ref`.
fn param_kind(schema: &Value, components: &Value) -> ParamKind {
    let mut s = schema;
    if let Some(r) = s["$ref"].as_str() {
        let name = r.rsplit('/').next().unwrap_or_default();
        s = &components["schemas"][name];
    }
    if let Some(one_of) = s["oneOf"].as_array() {
        if let Some(inner) = one_of.iter().find(|b| b["type"] != "null") {
            return param_kind(inner, components);
        }
    }
    let types: Vec<&str> = match &s["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if types.contains(&"integer") {
        ParamKind::Integer
    } else if types.contains(&"number") {
        ParamKind::Number
    } else if types.contains(&"boolean") {
        ParamKind::Boolean
    } else {
        ParamKind::Text
    }
}

/// `a.b[2].c` for the instance location `/a/b/2/c`; `body` for the root.
fn field_path(segments: impl IntoIterator<Item = String>) -> String {
    let path = segments.into_iter().fold(String::new(), |mut path, s| {
        if s.starts_with('[') || path.is_empty() {
            path.push_str(&s);
        } else {
            path.push('.');
            path.push_str(&s);
        }
        path
    });
    if path.is_empty() {
        "body".to_owned()
    } else {
        path
    }
}

fn segments(e: &ValidationError<'_>) -> Vec<String> {
    e.instance_path()
        .iter()
        .map(|s| match s {
            LocationSegment::Property(p) => p.into_owned(),
            LocationSegment::Index(i) => format!("[{i}]"),
        })
        .collect()
}

/// Adds the field errors one validation error stands for.
fn describe(e: &ValidationError<'_>, out: &mut Vec<FieldError>) {
    let at = segments(e);
    let here = || field_path(at.clone());
    let under = |name: &str| {
        let mut s = at.clone();
        s.push(name.to_owned());
        field_path(s)
    };
    let message = match e.kind() {
        ValidationErrorKind::Required { property } => {
            out.push(FieldError::new(
                under(property.as_str().unwrap_or_default()),
                "is required",
            ));
            return;
        }
        ValidationErrorKind::AdditionalProperties { unexpected } => {
            for name in unexpected {
                out.push(FieldError::new(under(name), "unknown field"));
            }
            return;
        }
        // A nullable field (`null`, or its schema): the error is the one of the branch the
        // value was meant for, not "null was expected".
        ValidationErrorKind::OneOfNotValid { context } | ValidationErrorKind::AnyOf { context }
            if is_nullable_choice(context) =>
        {
            for err in context
                .iter()
                .flatten()
                .filter(|err| !expects_only_null(err))
            {
                describe(err, out);
            }
            return;
        }
        ValidationErrorKind::AnyOf { context } => {
            let mut names: Vec<String> = context
                .iter()
                .flatten()
                .filter_map(|err| match err.kind() {
                    ValidationErrorKind::Required { property } => {
                        property.as_str().map(str::to_owned)
                    }
                    _ => segments(err).last().cloned(),
                })
                .collect();
            names.dedup();
            format!("give at least one of {}", names.join(", "))
        }
        ValidationErrorKind::Type { kind } => {
            let names: Vec<String> = match kind {
                jsonschema::error::TypeKind::Single(t) => vec![t.to_string()],
                jsonschema::error::TypeKind::Multiple(ts) => {
                    ts.iter().map(|t| t.to_string()).collect()
                }
            };
            if names == ["null"] {
                match conveyor_types::refine::excluded_by(at.last().map(String::as_str)) {
                    Some(other) => format!(
                        "give {other} or {}, not both",
                        at.last().cloned().unwrap_or_default()
                    ),
                    None => "must be left out here".to_owned(),
                }
            } else {
                let names: Vec<&str> = names.iter().map(|n| a_type(n)).collect();
                format!("must be {}", names.join(" or "))
            }
        }
        ValidationErrorKind::Minimum { limit } => format!("must be at least {limit}"),
        ValidationErrorKind::Maximum { limit } => format!("must be at most {limit}"),
        ValidationErrorKind::ExclusiveMinimum { limit } => format!("must be more than {limit}"),
        ValidationErrorKind::ExclusiveMaximum { limit } => format!("must be less than {limit}"),
        ValidationErrorKind::MinLength { limit } => {
            format!("must be at least {limit} character{}", plural(*limit))
        }
        ValidationErrorKind::MaxLength { limit } => {
            format!("must be at most {limit} character{}", plural(*limit))
        }
        ValidationErrorKind::MinItems { limit } => {
            format!("must hold at least {limit} item{}", plural(*limit))
        }
        ValidationErrorKind::MaxItems { limit } => {
            format!("must hold at most {limit} item{}", plural(*limit))
        }
        // Named at the second of the two, as a reader looks for it.
        ValidationErrorKind::UniqueItems => {
            let items = e.instance().as_array().cloned().unwrap_or_default();
            let again = (1..items.len()).find(|&j| items[..j].contains(&items[j]));
            let mut at = at.clone();
            if let Some(j) = again {
                at.push(format!("[{j}]"));
            }
            out.push(FieldError::new(field_path(at), "repeats an earlier item"));
            return;
        }
        ValidationErrorKind::Pattern { pattern } => match pattern.as_str() {
            r"^[^\x00]*$" => "must not contain the NUL character (\\u0000)".to_owned(),
            p if p.starts_with(r"^[^\x00]*[^\s\x00]") => {
                "must not be blank, nor contain the NUL character (\\u0000)".to_owned()
            }
            p => format!("must match {p}"),
        },
        ValidationErrorKind::Not { schema } => match schema["pattern"].as_str() {
            Some(p) => format!("must not match {p}"),
            None => "is not allowed".to_owned(),
        },
        ValidationErrorKind::Enum { options } => {
            let names: Vec<String> = options
                .as_array()
                .map(|o| {
                    o.iter()
                        .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            format!("must be one of {}", names.join(", "))
        }
        ValidationErrorKind::Format { format } => match format.as_str() {
            "date-time" => "must be an RFC 3339 time (2026-12-01T09:30:00Z)".to_owned(),
            "date" => "must be a date (YYYY-MM-DD)".to_owned(),
            "uuid" => "must be a UUID".to_owned(),
            f => format!("must be a valid {f}"),
        },
        _ => e.to_string(),
    };
    out.push(FieldError::new(here(), message));
}

/// A `oneOf`/`anyOf` of `null` and one schema: what `Option<T>` of a named type becomes.
fn is_nullable_choice(context: &[Vec<ValidationError<'static>>]) -> bool {
    context.len() == 2
        && context
            .iter()
            .any(|branch| branch.iter().all(expects_only_null))
}

fn expects_only_null(e: &ValidationError<'_>) -> bool {
    matches!(e.kind(), ValidationErrorKind::Type { kind: jsonschema::error::TypeKind::Single(t) }
        if t.to_string() == "null")
}

fn a_type(name: &str) -> &str {
    match name {
        "string" => "a string",
        "integer" => "an integer",
        "number" => "a number",
        "boolean" => "a boolean",
        "object" => "an object",
        "array" => "an array",
        "null" => "null",
        other => other,
    }
}

fn plural(n: u64) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

#[cfg(test)]
mod tests {
    use conveyor_types::{
        jobs::{ListJobs, SubmitJob, SubmitJobBatch},
        keys::CreateKey,
        webhooks::{CreateEndpoint, PublishEvent},
        FieldError,
    };
    use serde_json::json;

    use super::*;

    fn contract() -> Contract {
        Contract::new(&crate::openapi::document(
            crate::api_routes().into_openapi(),
            &crate::openapi::Deployment {
                job_types: &["echo"],
                queues: &["default".to_owned()],
            },
        ))
    }

    fn fields(errors: &[FieldError]) -> Vec<&str> {
        errors.iter().map(|e| e.field.as_str()).collect()
    }

    #[test]
    fn every_bad_field_is_named_at_once_in_the_types_order() {
        let c = contract();
        let errs = c.body::<CreateEndpoint>().check(&json!({
            "url": 5, "event_types": ["ok", "Not OK"], "rate_limit_per_second": 0,
            "description": 1, "enabled": true, "secret": "x"
        }));
        assert_eq!(
            fields(&errs),
            [
                "url",
                "description",
                "event_types[1]",
                "rate_limit_per_second",
                "enabled",
                "secret"
            ],
            "{errs:?}"
        );
        assert!(errs.iter().all(|e| !e.message.is_empty()));
        let errs = c.body::<CreateEndpoint>().check(&json!({}));
        assert_eq!(fields(&errs), ["url"]);
        assert_eq!(errs[0].message, "is required");
        assert!(c
            .body::<CreateEndpoint>()
            .check(&json!({"url": "https://example.com/hook", "event_types": null}))
            .is_empty());
    }

    #[test]
    fn fields_deep_in_a_batch_are_named_by_their_path() {
        let errs = contract().body::<SubmitJobBatch>().check(&json!({"jobs": [
            {"type": "echo"},
            {"type": "echo"},
            {"type": "", "queue": "Bad Queue", "max_attempts": 0, "timeout_seconds": "x",
             "run_at": "yesterday", "metadata": [], "extra": 1}
        ]}));
        let fields = fields(&errs);
        for f in [
            "jobs[2].type",
            "jobs[2].queue",
            "jobs[2].max_attempts",
            "jobs[2].timeout_seconds",
            "jobs[2].run_at",
            "jobs[2].metadata",
            "jobs[2].extra",
        ] {
            assert!(fields.contains(&f), "{f} missing from {fields:?}");
        }
        assert!(!fields.iter().any(|f| f.starts_with("jobs[0]")));
    }

    #[test]
    fn a_repeated_item_is_named_where_it_repeats() {
        let errs = contract()
            .body::<CreateKey>()
            .check(&json!({"name": "x", "scopes": ["jobs:read", "admin", "jobs:read"]}));
        assert_eq!(fields(&errs), ["scopes[2]"], "{errs:?}");
    }

    #[test]
    fn exclusions_and_reserved_names_are_explained() {
        let c = contract();
        let errs = c.body::<SubmitJob>().check(&json!({
            "type": "echo", "run_at": "2030-01-01T00:00:00Z", "delay_seconds": 5
        }));
        assert_eq!(fields(&errs), ["delay_seconds"], "{errs:?}");
        assert!(errs[0].message.contains("not both"), "{errs:?}");
        let errs = c
            .body::<PublishEvent>()
            .check(&json!({"type": "job.succeeded", "payload": {}, "extra": 1}));
        assert_eq!(fields(&errs), ["type", "extra"], "{errs:?}");
    }

    #[test]
    fn a_query_is_read_as_its_parameters_types() {
        let c = contract();
        let q = c.query::<ListJobs>();
        let pairs = |p: &[(&str, &str)]| {
            p.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>()
        };
        let ok = q
            .query_object(pairs(&[("limit", "20"), ("status", "queued")]))
            .unwrap();
        assert_eq!(ok, json!({"limit": 20, "status": "queued"}));
        assert!(q.check(&ok).is_empty());
        let bad = q
            .query_object(pairs(&[("limit", "x"), ("colour", "red")]))
            .unwrap();
        assert_eq!(fields(&q.check(&bad)), ["limit", "colour"]);
        let twice = q
            .query_object(pairs(&[("limit", "1"), ("limit", "2")]))
            .unwrap_err();
        assert_eq!(fields(&twice), ["limit"]);
    }
}

//! `GET /docs`: the OpenAPI document as a page a person reads. Rendered here, from the same
//! document `/openapi.json` serves, with no script and nothing fetched from elsewhere, so it
//! works on a machine with no internet access and cannot drift from the contract.

use axum::{
    extract::State,
    http::{header, HeaderMap},
    response::{Html, IntoResponse, Response},
};
use maud::{html, Markup, PreEscaped, DOCTYPE};
use serde_json::{Map, Value};

use crate::AppState;

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

const STYLE: &str = "
body { font: 15px/1.45 system-ui, sans-serif; margin: 0; color: #1d2330; }
nav { position: fixed; top: 0; bottom: 0; width: 15rem; overflow-y: auto; padding: 1rem;
      background: #f4f6fa; border-right: 1px solid #dde2eb; font-size: 14px; }
nav a { display: block; color: #1d2330; text-decoration: none; padding: .1rem 0; }
nav a:hover { text-decoration: underline; }
main { margin-left: 17rem; padding: 1rem 2rem 4rem; max-width: 62rem; }
h2 { border-bottom: 1px solid #dde2eb; padding-bottom: .2rem; margin-top: 2.5rem; }
h3 { margin-bottom: .3rem; }
.op { border: 1px solid #dde2eb; border-radius: 6px; padding: .5rem 1rem; margin: 1rem 0; }
.method { display: inline-block; min-width: 4rem; font-weight: 600; text-transform: uppercase; }
.get { color: #1f6f3f; } .post { color: #3b5bd8; } .patch, .put { color: #8a5a00; }
.delete { color: #b42318; }
code { font: 13px ui-monospace, monospace; background: #f1f3f7; padding: 0 .2rem; }
table { border-collapse: collapse; margin: .4rem 0; width: 100%; }
th, td { text-align: left; vertical-align: top; padding: .25rem .5rem; border-bottom: 1px solid #eef0f4; }
th { font-weight: 600; font-size: 13px; color: #4a5468; }
.muted { color: #5c6577; }
";

/// The reference page, with this server's address as the base URL.
pub(crate) async fn get_docs(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let page = render(&state.openapi, &state.public_url(&headers));
    (
        [
            (header::CACHE_CONTROL, "no-cache"),
            (header::VARY, "host, x-forwarded-proto"),
        ],
        Html(page.into_string()),
    )
        .into_response()
}

fn render(doc: &Value, base_url: &str) -> Markup {
    let title = doc["info"]["title"].as_str().unwrap_or("API");
    let version = doc["info"]["version"].as_str().unwrap_or_default();
    let tags: Vec<&str> = doc["tags"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["name"].as_str())
        .collect();
    let schemas = doc["components"]["schemas"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let webhooks = doc["webhooks"].as_object().cloned().unwrap_or_default();
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " API reference" }
                style { (PreEscaped(STYLE)) }
            }
            body {
                nav {
                    strong { (title) " " (version) }
                    @for tag in &tags { a href={"#tag-" (tag)} { (tag) } }
                    a href="#webhooks" { "webhooks Conveyor sends" }
                    a href="#schemas" { "schemas" }
                    hr;
                    a href="/openapi.json" { "openapi.json" }
                }
                main {
                    h1 { (title) " API reference" }
                    p.desc { (doc["info"]["description"].as_str().unwrap_or_default()) }
                    p { "Base URL: " code #base-url { (base_url) } ". The machine-readable contract: "
                        a href="/openapi.json" { code { "/openapi.json" } } " (OpenAPI 3.1)." }
                    @for tag in &tags {
                        h2 id={"tag-" (tag)} { (tag) }
                        p.muted { (tag_description(doc, tag)) }
                        @for (method, path, op) in operations(doc, tag) { (operation(method, path, op)) }
                    }
                    h2 #webhooks { "Webhooks Conveyor sends" }
                    p.muted { "Signed per Standard Webhooks (" code { "webhook-id" } ", "
                        code { "webhook-timestamp" } ", " code { "webhook-signature" } ")." }
                    table {
                        tr { th { "event" } th { "body" } th { "what it means" } }
                        @for (name, item) in &webhooks {
                            @let op = &item["post"];
                            tr {
                                td { code { (name) } }
                                td { (body_schema(&op["requestBody"])) }
                                td.desc { (op["summary"].as_str().or(op["description"].as_str()).unwrap_or_default()) }
                            }
                        }
                    }
                    h2 #schemas { "Schemas" }
                    @for (name, schema) in &schemas { (schema_section(name, schema)) }
                }
            }
        }
    }
}

fn tag_description<'a>(doc: &'a Value, tag: &str) -> &'a str {
    doc["tags"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| t["name"] == tag)
        .and_then(|t| t["description"].as_str())
        .unwrap_or_default()
}

/// The tag's operations, in the document's order of paths.
fn operations<'a>(doc: &'a Value, tag: &str) -> Vec<(&'static str, &'a str, &'a Value)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().into_iter().flatten() {
        for method in METHODS {
            let op = &item[method];
            let tagged = op["tags"]
                .as_array()
                .is_some_and(|t| t.iter().any(|t| t == tag));
            if tagged {
                out.push((method, path.as_str(), op));
            }
        }
    }
    out
}

fn operation(method: &str, path: &str, op: &Value) -> Markup {
    let id = op["operationId"].as_str().unwrap_or_default();
    let params: Vec<&Value> = op["parameters"].as_array().into_iter().flatten().collect();
    let responses = op["responses"].as_object().cloned().unwrap_or_default();
    html! {
        section.op id=(id) {
            h3 { span class={"method " (method)} { (method) } " " code { (path) } }
            p.muted { "operation " code { (id) } }
            @if let Some(s) = op["summary"].as_str() { p { strong { (s) } } }
            @if let Some(d) = op["description"].as_str() { p.desc { (d) } }
            @if !params.is_empty() {
                table {
                    tr { th { "parameter" } th { "in" } th { "type" } th { "" } th { "description" } }
                    @for p in &params {
                        tr {
                            td { code { (p["name"].as_str().unwrap_or_default()) } }
                            td { (p["in"].as_str().unwrap_or_default()) }
                            td { (type_of(&p["schema"])) }
                            td { @if p["required"] == true { "required" } }
                            td.desc { (p["description"].as_str().unwrap_or_default()) }
                        }
                    }
                }
            }
            @if !op["requestBody"].is_null() {
                p { "Body: " (body_schema(&op["requestBody"]))
                    @if op["requestBody"]["required"] != true { " (optional)" } }
            }
            table {
                tr { th { "status" } th { "answer" } th { "description" } }
                @for (status, r) in &responses {
                    tr {
                        td { code { (status) } }
                        td { (body_schema(r)) }
                        td.desc { (r["description"].as_str().unwrap_or_default()) }
                    }
                }
            }
        }
    }
}

/// The schema of a request or response body (its first content type's).
fn body_schema(body: &Value) -> Markup {
    match body["content"].as_object().and_then(|c| c.values().next()) {
        Some(media) => type_of(&media["schema"]),
        None => html! {},
    }
}

fn schema_section(name: &str, schema: &Value) -> Markup {
    let required: Vec<&str> = schema["required"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let properties = schema["properties"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    html! {
        section id={"schema-" (name)} {
            h3 { (name) }
            @if let Some(d) = schema["description"].as_str() { p.desc { (d) } }
            @if properties.is_empty() {
                p { (type_of(schema)) (constraints(schema)) }
            } @else {
                table {
                    tr { th { "field" } th { "type" } th { "" } th { "description" } }
                    @for (field, s) in &properties {
                        tr {
                            td { code { (field) } }
                            td { (type_of(s)) (constraints(s)) }
                            td { @if required.contains(&field.as_str()) { "required" } }
                            td.desc { (s["description"].as_str().unwrap_or_default()) }
                        }
                    }
                }
                @if schema["additionalProperties"] == false { p.muted { "No other field is taken." } }
            }
        }
    }
}

/// A schema in a few words, with links to the components it names.
fn type_of(s: &Value) -> Markup {
    if let Some(r) = s["$ref"].as_str() {
        let name = r.rsplit('/').next().unwrap_or_default();
        return html! { a href={"#schema-" (name)} { (name) } };
    }
    for choice in ["oneOf", "anyOf"] {
        if let Some(branches) = s[choice].as_array() {
            return html! {
                @for (i, b) in branches.iter().enumerate() {
                    @if i > 0 { " or " } (type_of(b))
                }
            };
        }
    }
    if let Some(values) = s["enum"].as_array() {
        return html! {
            "one of "
            @for (i, v) in values.iter().enumerate() {
                @if i > 0 { ", " } code { (v.as_str().map_or_else(|| v.to_string(), str::to_owned)) }
            }
        };
    }
    let types: Vec<&str> = match &s["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if types.is_empty() {
        return html! { "any JSON" };
    }
    html! {
        @for (i, t) in types.iter().enumerate() {
            @if i > 0 { " or " }
            @match *t {
                "array" => { "array of " (type_of(&s["items"])) },
                "object" if s["additionalProperties"].is_object() => {
                    "object of " (type_of(&s["additionalProperties"]))
                },
                "null" => { "null" },
                t => { (t) @if let Some(f) = s["format"].as_str() { " (" (f) ")" } },
            }
        }
    }
}

/// Patterns, lengths and ranges, as the schema states them.
fn constraints(s: &Value) -> Markup {
    let o = s.as_object().cloned().unwrap_or_else(Map::new);
    let mut said = Vec::new();
    for (key, words) in [
        ("minLength", "at least {} characters"),
        ("maxLength", "at most {} characters"),
        ("minimum", "at least {}"),
        ("maximum", "at most {}"),
        ("minItems", "at least {} items"),
        ("maxItems", "at most {} items"),
        ("default", "default {}"),
    ] {
        if let Some(v) = o.get(key) {
            said.push(words.replace("{}", &v.to_string()));
        }
    }
    if o.get("uniqueItems") == Some(&Value::Bool(true)) {
        said.push("no item twice".to_owned());
    }
    let pattern = o.get("pattern").and_then(Value::as_str);
    html! {
        @if !said.is_empty() { span.muted { "; " (said.join(", ")) } }
        @if let Some(p) = pattern { span.muted { "; matches " code { (p) } } }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_and_schema_is_on_the_page_and_nothing_comes_from_elsewhere() {
        let doc = crate::openapi::document(
            crate::api_routes().into_openapi(),
            &crate::openapi::Deployment {
                job_types: &["echo"],
                queues: &["default".to_owned()],
            },
        );
        let page = render(&doc, "http://127.0.0.1:8080").into_string();
        for item in doc["paths"].as_object().unwrap().values() {
            for op in item.as_object().unwrap().values() {
                let id = op["operationId"].as_str().unwrap();
                assert!(
                    page.contains(&format!("id=\"{id}\"")),
                    "{id} is not on the page"
                );
            }
        }
        for name in doc["components"]["schemas"].as_object().unwrap().keys() {
            assert!(page.contains(&format!("id=\"schema-{name}\"")), "{name}");
        }
        assert!(page.contains("job.succeeded"));
        // Every link is within the page or this server; no script at all.
        assert!(!page.contains("<script"));
        for attr in ["src=\"", "href=\""] {
            for (i, _) in page.match_indices(attr) {
                let target = &page[i + attr.len()..];
                assert!(
                    target.starts_with('#') || target.starts_with('/'),
                    "a link out of the page: {}",
                    &target[..target.len().min(60)]
                );
            }
        }
    }
}

//! Built-in job types (API.md "Built-in job types").

use std::{sync::Arc, time::Duration};

use conveyor_core::catalog::{CheckContext, PayloadCheck};

use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::handler::{JobContext, JobError, Registry};

pub fn register(r: &mut Registry) {
    r.register("echo", echo);
    r.register_checked("sleep", sleep, check_as::<SleepArgs>());
    r.register_checked("fail", fail, check_as::<FailArgs>());
    r.register_checked("http", http, Arc::new(check_http));
}

/// A payload check that tries to read the payload as the handler will.
pub fn check_as<T: for<'de> Deserialize<'de>>() -> PayloadCheck {
    Arc::new(|payload: &Value, _: &CheckContext| {
        match serde_json::from_value::<T>(payload.clone()) {
            Ok(_) => Vec::new(),
            Err(e) => vec![("payload".to_owned(), e.to_string())],
        }
    })
}

/// The result is the payload.
async fn echo(ctx: JobContext) -> Result<Value, JobError> {
    Ok(ctx.payload)
}

fn parse<T: for<'de> Deserialize<'de>>(payload: &Value) -> Result<T, JobError> {
    serde_json::from_value(payload.clone())
        .map_err(|e| JobError::permanent(format!("invalid payload: {e}")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SleepArgs {
    ms: u64,
}

/// `{"ms": n}`: waits n milliseconds.
async fn sleep(ctx: JobContext) -> Result<Value, JobError> {
    let args: SleepArgs = parse(&ctx.payload)?;
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_millis(args.ms)) => Ok(json!({"slept_ms": args.ms})),
        _ = ctx.cancel.cancelled() => Err(JobError::retryable("cancelled")),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FailArgs {
    #[serde(default)]
    times: i32,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    permanent: bool,
}

/// `{"times": n, "message": "…", "permanent": false}`: fails its first n attempts.
async fn fail(ctx: JobContext) -> Result<Value, JobError> {
    let args: FailArgs = parse(&ctx.payload)?;
    if ctx.attempt <= args.times {
        let message = args
            .message
            .unwrap_or_else(|| format!("failing attempt {} of {}", ctx.attempt, args.times));
        return Err(if args.permanent {
            JobError::permanent(message)
        } else {
            JobError::retryable(message)
        });
    }
    Ok(json!({"succeeded_on_attempt": ctx.attempt}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpArgs {
    #[serde(default = "default_method")]
    method: String,
    url: String,
    #[serde(default)]
    headers: Map<String, Value>,
    #[serde(default)]
    body: Option<Value>,
    #[serde(default = "default_timeout_ms")]
    timeout_ms: u64,
    #[serde(default = "default_expect")]
    expect_status: Vec<u16>,
}

fn default_method() -> String {
    "GET".into()
}
fn default_timeout_ms() -> u64 {
    10_000
}
fn default_expect() -> Vec<u16> {
    vec![200]
}

/// Largest response body kept in the result.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// Calls a URL; the result is `{status, headers, body}`. Private addresses are refused
/// unless the operator allowed them.
async fn http(ctx: JobContext) -> Result<Value, JobError> {
    let args: HttpArgs = parse(&ctx.payload)?;
    let method = reqwest::Method::from_bytes(args.method.to_ascii_uppercase().as_bytes())
        .map_err(|_| JobError::permanent(format!("invalid method {:?}", args.method)))?;
    // Resolve and check now, for a clear permanent failure; the worker's resolver checks
    // again at connection time, so a DNS answer that changes in between cannot get through.
    let url = conveyor_core::urlguard::check(&args.url, ctx.allow_private_targets)
        .await
        .map_err(|e| JobError::permanent(e.to_string()))?;
    let mut req = ctx
        .http
        .request(method, url)
        .timeout(Duration::from_millis(args.timeout_ms));
    for (k, v) in &args.headers {
        let v = v
            .as_str()
            .ok_or_else(|| JobError::permanent(format!("header {k} must be a string")))?;
        req = req.header(k, v);
    }
    // The job's trace goes along, unless the payload sets its own.
    let own_trace = args
        .headers
        .keys()
        .any(|k| k.eq_ignore_ascii_case("traceparent"));
    if let (Some(tp), false) = (&ctx.traceparent, own_trace) {
        req = req.header("traceparent", tp);
    }
    if let Some(body) = &args.body {
        req = match body {
            Value::String(s) => req.body(s.clone()),
            other => req.json(other),
        };
    }
    let resp = req
        .send()
        .await
        .map_err(|e| JobError::retryable(conveyor_core::outbound::describe(&e)))?;
    let status = resp.status().as_u16();
    let headers: Map<String, Value> = resp
        .headers()
        .iter()
        .filter_map(|(k, v)| Some((k.to_string(), Value::String(v.to_str().ok()?.to_owned()))))
        .collect();
    let mut body = Vec::new();
    let mut resp = resp;
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| JobError::retryable(conveyor_core::outbound::describe(&e)))?
    {
        body.extend_from_slice(&chunk);
        if body.len() >= MAX_RESPONSE_BYTES {
            body.truncate(MAX_RESPONSE_BYTES);
            break;
        }
    }
    let body = match serde_json::from_slice::<Value>(&body) {
        Ok(v) => v,
        Err(_) => Value::String(String::from_utf8_lossy(&body).into_owned()),
    };
    let result = json!({"status": status, "headers": headers, "body": body});
    if !args.expect_status.contains(&status) {
        let msg = format!(
            "unexpected status {status} (expected one of {:?})",
            args.expect_status
        );
        // A 4xx other than 408/429 will not change on retry.
        let retryable = status >= 500 || status == 408 || status == 429;
        return Err(JobError {
            message: msg,
            retryable,
        });
    }
    Ok(result)
}

fn check_http(payload: &Value, ctx: &CheckContext) -> Vec<(String, String)> {
    match serde_json::from_value::<HttpArgs>(payload.clone()) {
        Err(e) => vec![("payload".into(), e.to_string())],
        Ok(args) => {
            let mut errs = Vec::new();
            if reqwest::Method::from_bytes(args.method.to_ascii_uppercase().as_bytes()).is_err() {
                errs.push(("payload.method".into(), "not an HTTP method".into()));
            }
            if let Err(e) =
                conveyor_core::urlguard::check_literal(&args.url, ctx.allow_private_targets)
            {
                errs.push(("payload.url".into(), e.to_string()));
            }
            for (name, value) in &args.headers {
                let ok = reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_ok()
                    && value
                        .as_str()
                        .is_some_and(|v| reqwest::header::HeaderValue::from_str(v).is_ok());
                if !ok {
                    errs.push((
                        format!("payload.headers.{name}"),
                        "must be a valid header name with a string value".into(),
                    ));
                }
            }
            errs
        }
    }
}

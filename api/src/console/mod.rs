//! The operators' web console at `/ui`: plain server-rendered HTML (maud escapes everything
//! it prints), no JavaScript, nothing fetched from elsewhere. Sign-in takes an API key and
//! opens a server-side session (see `session`); every page checks it like the API checks a
//! bearer key, with the same scopes and rate limit. Actions are forms that POST, carry the
//! session's CSRF token, and redirect.

mod keys;
mod pages;
mod session;

use std::collections::HashMap;

use axum::{
    http::header,
    response::{Html, IntoResponse, Redirect, Response},
    routing::{get, post},
    Router,
};
use chrono::{DateTime, Utc};
use conveyor_core::{store::StoreError, Principal};
use maud::{html, Markup, DOCTYPE};
use serde_json::Value;

use crate::{http::problem::Problem, AppState};

use session::Operator;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/ui", get(pages::queues_page))
        .route("/ui/login", get(session::login_page).post(session::login))
        .route("/ui/logout", post(session::logout))
        .route("/ui/queues/{name}/pause", post(pages::pause))
        .route("/ui/queues/{name}/resume", post(pages::resume))
        .route("/ui/jobs", get(pages::jobs_page))
        .route("/ui/jobs/{id}", get(pages::job_page))
        .route("/ui/jobs/{id}/replay", post(pages::replay))
        .route("/ui/dead-letters", get(pages::dead_page))
        .route("/ui/dead-letters/replay", post(pages::bulk_replay))
        .route("/ui/endpoints", get(pages::endpoints_page))
        .route("/ui/endpoints/{id}", get(pages::endpoint_page))
        .route("/ui/deliveries/{id}", get(pages::delivery_page))
        .route("/ui/schedules", get(pages::schedules_page))
        .route("/ui/sagas", get(pages::sagas_page))
        .route("/ui/workers", get(pages::workers_page))
        .route("/ui/sagas/{id}", get(pages::saga_page))
        .route("/ui/keys", get(keys::keys_page).post(keys::create))
        .route("/ui/keys/{id}/revoke", post(keys::revoke))
        .layer(axum::middleware::map_response(session::security_headers))
}

/// What a console handler answers: a page, a redirect, or a problem shown as a page.
type UiResult = Result<Response, UiError>;

pub struct UiError(Box<Response>);

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        *self.0
    }
}

impl From<Problem> for UiError {
    fn from(p: Problem) -> Self {
        let status = p.status;
        let retry_after = p.retry_after;
        let body = html! {
            h1 { (p.title) }
            p.error id="problem" { (p.detail) }
            @for e in &p.errors { p.error { code { (e.field) } ": " (e.message) } }
            p { a href="/ui" { "Back to the console" } }
        };
        let mut resp = (status, Html(layout("Error", None, body).into_string())).into_response();
        if let Some(secs) = retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from(secs));
        }
        UiError(Box::new(resp))
    }
}

impl From<StoreError> for UiError {
    fn from(e: StoreError) -> Self {
        Problem::from(e).into()
    }
}

fn query(q: &Query) -> HashMap<String, String> {
    q.0.as_deref()
        .map(|s| form_urlencoded::parse(s.as_bytes()).into_owned().collect())
        .unwrap_or_default()
}

type Query = axum::extract::RawQuery;

const STYLE: &str = "
body{font-family:system-ui,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
nav{background:#1d2330;padding:.6rem 1rem;display:flex;gap:1rem;align-items:center}
nav a{color:#dfe4ee;text-decoration:none}nav a:hover{color:#fff}nav .brand{font-weight:700;color:#fff}
nav form{margin-left:auto}main{padding:1rem 1.5rem;max-width:1200px}
table{border-collapse:collapse;width:100%;background:#fff;margin:.5rem 0 1rem}
th,td{border-bottom:1px solid #e3e6eb;padding:.35rem .5rem;text-align:left;font-size:.9rem;vertical-align:top}
th{background:#eef1f5}pre{background:#fff;border:1px solid #e3e6eb;padding:.5rem;overflow:auto;max-height:20rem}
.status{padding:.1rem .4rem;border-radius:.3rem;background:#e3e6eb}.status.dead,.status.failed{background:#f8d4d4}
.status.succeeded,.status.completed{background:#d4f1dc}.status.running,.status.queued{background:#dbe7fb}
.error{color:#a11}.notice{background:#fff7d1;padding:.5rem;border:1px solid #eadb8a}
form.inline{display:inline}button{cursor:pointer}input,select,textarea{font:inherit}
.chart{background:#fff;border:1px solid #e3e6eb}.muted{color:#6b7383}
";

/// A page; `who` (the signed-in operator) adds the navigation, with a sign-out form carrying
/// the session's CSRF token.
fn layout(title: &str, who: Option<(&Principal, &str)>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { (title) " · Conveyor" }
                style { (maud::PreEscaped(STYLE)) }
            }
            body {
                @if let Some((p, csrf)) = who {
                    nav {
                        a.brand href="/ui" { "Conveyor" }
                        a href="/ui" { "Queues" }
                        a href="/ui/jobs" { "Jobs" }
                        a href="/ui/dead-letters" { "Dead letters" }
                        a href="/ui/endpoints" { "Endpoints" }
                        a href="/ui/schedules" { "Schedules" }
                        a href="/ui/sagas" { "Sagas" }
                        a href="/ui/workers" { "Workers" }
                        @if p.has(conveyor_core::Scope::Admin) { a href="/ui/keys" { "Keys" } }
                        form method="post" action="/ui/logout" { (csrf_field(csrf)) button id="logout" { "Sign out" } }
                    }
                }
                main { (body) }
            }
        }
    }
}

fn page(title: &str, op: &Operator, notice: Option<&String>, body: Markup) -> UiResult {
    let body = html! {
        @if let Some(n) = notice { p.notice id="notice" { (n) } }
        (body)
    };
    Ok(Html(layout(title, Some((&op.principal, &op.csrf)), body).into_string()).into_response())
}

fn back_to(path: &str, notice: &str) -> UiResult {
    let q = form_urlencoded::Serializer::new(String::new())
        .append_pair("notice", notice)
        .finish();
    Ok(Redirect::to(&format!("{path}?{q}")).into_response())
}

fn when(t: Option<DateTime<Utc>>) -> String {
    t.map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

/// The hidden field every form that changes something carries: the session's CSRF token.
fn csrf_field(token: &str) -> Markup {
    html! { input type="hidden" name="csrf" value=(token); }
}

/// A status or outcome (any of the contract's enums, or text), as a labelled span.
fn status<S: serde::Serialize + ?Sized>(s: &S) -> Markup {
    let s = match serde_json::to_value(s) {
        Ok(Value::String(s)) => s,
        _ => String::new(),
    };
    html! { span class={"status " (s)} { (s) } }
}

//! Signing in and out of the console, and what guards every page and form.
//!
//! - The cookie holds a random session id (`conveyor_session`), never the API key: the key is
//!   looked up server-side through the session, so signing out (or revoking the key) ends it.
//!   HttpOnly, SameSite=Strict, scoped to `/ui`, `Secure` when served over TLS (as a proxy's
//!   `X-Forwarded-Proto` says) or when `CONVEYOR_SECURE_COOKIES` is set.
//! - Every form that changes something carries the session's CSRF token and is refused
//!   without it; the sign-in form carries a token of its own (a cookie set with the form, the
//!   double-submit pattern), so no other site can sign a browser in either. A POST whose
//!   `Origin` is another site's is refused before that.
//! - Pages may not be framed (`frame-ancestors 'none'`), and the key's rate limit applies.

use std::collections::HashMap;

use axum::{
    body::Body,
    extract::{FromRequest, FromRequestParts, Request, State},
    http::{header, request::Parts, HeaderMap, HeaderValue},
    response::{Html, IntoResponse, Redirect, Response},
};
use conveyor_core::{
    token::{random_hex, same},
    Principal, Scope,
};
use maud::html;

use super::{layout, query, Query, UiError, UiResult};
use crate::{problem::Problem, AppState};

const SESSION_COOKIE: &str = "conveyor_session";
const LOGIN_COOKIE: &str = "conveyor_login";
/// How long a session lasts.
const SESSION_TTL: std::time::Duration = std::time::Duration::from_secs(12 * 3600);

/// The signed-in operator: the principal of the session's key, and the token its forms carry.
/// Without a live session, a page request is sent to the sign-in page.
pub struct Operator {
    pub principal: Principal,
    pub csrf: String,
}

impl FromRequestParts<AppState> for Operator {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let session = match cookie(&parts.headers, SESSION_COOKIE) {
            Some(id) if is_token(&id) => state
                .store
                .session(&id)
                .await
                .map_err(|e| UiError::from(e).into_response())?,
            _ => None,
        };
        let Some(session) = session else {
            return Err(Redirect::to("/ui/login").into_response());
        };
        let principal = session.principal;
        tracing::Span::current().record("tenant_id", tracing::field::display(principal.tenant_id));
        // The console is the API in another form: the key's request rate holds here too.
        state
            .rate_limits
            .check(&principal)
            .map_err(|p| UiError::from(p).into_response())?;
        Ok(Operator {
            principal,
            csrf: session.csrf_token,
        })
    }
}

impl Operator {
    pub fn require(&self, scope: Scope) -> Result<&Principal, UiError> {
        if self.principal.has(scope) {
            Ok(&self.principal)
        } else {
            Err(Problem::forbidden(scope.as_str()).into())
        }
    }
}

/// A form that changes something, posted by a signed-in operator: from this origin, with
/// the session's CSRF token.
pub struct Action {
    pub op: Operator,
    pub form: Form,
}

impl FromRequest<AppState> for Action {
    type Rejection = Response;

    async fn from_request(req: Request<Body>, state: &AppState) -> Result<Self, Response> {
        let (mut parts, body) = req.into_parts();
        let op = Operator::from_request_parts(&mut parts, state).await?;
        let form = Form::from_request(Request::from_parts(parts, body), state)
            .await
            .map_err(IntoResponse::into_response)?;
        if !same(form.get("csrf").unwrap_or_default(), &op.csrf) {
            return Err(UiError::from(forged()).into_response());
        }
        Ok(Action { op, form })
    }
}

/// A submitted form, from this origin only (a cross-site POST is refused by its `Origin`).
pub struct Form(HashMap<String, String>);

impl FromRequest<AppState> for Form {
    type Rejection = UiError;

    async fn from_request(req: Request<Body>, state: &AppState) -> Result<Self, UiError> {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok());
        let origin = req
            .headers()
            .get(header::ORIGIN)
            .and_then(|o| o.to_str().ok());
        if let (Some(origin), Some(host)) = (origin, host) {
            let origin_host = origin.split_once("://").map(|(_, h)| h).unwrap_or(origin);
            if origin_host != host {
                return Err(
                    Problem::forbidden("a form of this console (cross-origin POST)").into(),
                );
            }
        }
        let bytes = crate::http::extract::read_body(req, state.max_body_bytes).await?;
        Ok(Form(form_urlencoded::parse(&bytes).into_owned().collect()))
    }
}

impl Form {
    pub fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(|v| v.trim()).filter(|v| !v.is_empty())
    }

    /// Whether a checkbox was ticked (each has a name of its own: a map keeps one value
    /// per name).
    pub fn checked(&self, k: &str) -> bool {
        self.get(k).is_some()
    }
}

fn forged() -> Problem {
    Problem::forbidden("a form of this console (its token is missing or stale: reload the page)")
}

/// Session ids and tokens are 64 hex digits: anything else is not one.
fn is_token(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

/// A console cookie: HttpOnly, SameSite=Strict, scoped to `/ui`; `Secure` over TLS.
fn set_cookie(
    state: &AppState,
    headers: &HeaderMap,
    name: &str,
    value: &str,
    max_age: u64,
) -> String {
    let tls = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|p| p.eq_ignore_ascii_case("https"));
    let secure = if tls || state.secure_cookies {
        "; Secure"
    } else {
        ""
    };
    format!("{name}={value}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}")
}

/// The headers every console answer carries: no framing, nothing loaded from elsewhere, no
/// caching of pages that show a tenant's data.
pub async fn security_headers(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

pub async fn login_page(State(state): State<AppState>, headers: HeaderMap, q: Query) -> Response {
    let q = query(&q);
    // The sign-in form's own token, also set as a cookie: a form posted from elsewhere
    // cannot know it.
    let token = random_hex(32);
    let body = html! {
        h1 { "Conveyor" }
        p { "Sign in with an API key (" code { "conveyor keys create" } ")." }
        @if let Some(e) = q.get("error") { p.error id="error" { (e) } }
        form method="post" action="/ui/login" {
            (super::csrf_field(&token))
            input id="key" type="password" name="key" placeholder="API key" size="60" autofocus;
            " " button id="sign-in" { "Sign in" }
        }
    };
    let cookie = set_cookie(&state, &headers, LOGIN_COOKIE, &token, 3600);
    (
        [(header::SET_COOKIE, cookie)],
        Html(layout("Sign in", None, body).into_string()),
    )
        .into_response()
}

pub async fn login(State(state): State<AppState>, headers: HeaderMap, form: Form) -> UiResult {
    let expected = cookie(&headers, LOGIN_COOKIE).unwrap_or_default();
    if expected.is_empty() || !same(form.get("csrf").unwrap_or_default(), &expected) {
        return Err(forged().into());
    }
    let key = form.get("key").unwrap_or_default();
    let Some(p) = state.keys.verify(&state.store, key).await? else {
        return Ok(Redirect::to("/ui/login?error=unknown+or+revoked+API+key").into_response());
    };
    let session = state.store.open_session(p.key_id, SESSION_TTL).await?;
    let cookies = [
        set_cookie(
            &state,
            &headers,
            SESSION_COOKIE,
            &session.id,
            SESSION_TTL.as_secs(),
        ),
        set_cookie(&state, &headers, LOGIN_COOKIE, "", 0),
    ];
    let mut resp = Redirect::to("/ui").into_response();
    for c in cookies {
        if let Ok(v) = HeaderValue::from_str(&c) {
            resp.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    Ok(resp)
}

/// Ends the session server-side: its id is worthless from now on, wherever it was copied.
pub async fn logout(State(state): State<AppState>, headers: HeaderMap, _: Action) -> UiResult {
    if let Some(id) = cookie(&headers, SESSION_COOKIE) {
        state.store.close_session(&id).await?;
    }
    let gone = set_cookie(&state, &headers, SESSION_COOKIE, "", 0);
    Ok(([(header::SET_COOKIE, gone)], Redirect::to("/ui/login")).into_response())
}

//! Extractors that answer bad input with our problem+json, never the framework's plain text.

use axum::{
    body::{Body, Bytes},
    extract::{FromRequest, FromRequestParts, Path, Request},
    http::{header, request::Parts, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use serde_json::Value;

use crate::{
    auth::Auth,
    problem::{FieldError, Problem},
    AppState,
};

/// The `Idempotency-Key` header, if any (its length is checked with the request's fields).
pub fn idempotency_header(headers: &HeaderMap) -> Result<Option<&str>, Problem> {
    match headers.get("idempotency-key") {
        Some(v) => v.to_str().map(Some).map_err(|_| {
            Problem::validation(vec![FieldError::new(
                "Idempotency-Key",
                "must be visible ASCII",
            )])
        }),
        None => Ok(None),
    }
}

/// A created (or found) resource with its `Location`.
pub fn located(status: StatusCode, location: String, body: impl serde::Serialize) -> Response {
    (status, [(header::LOCATION, location)], Json(body)).into_response()
}

/// The whole body, at most `limit` bytes: over it, 413; a body that cannot be read (the
/// client went away mid-body), 400.
pub(crate) async fn read_body(req: Request<Body>, limit: usize) -> Result<Bytes, Problem> {
    axum::body::to_bytes(req.into_body(), limit)
        .await
        .map_err(|e| {
            if std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
            {
                Problem::too_large(limit)
            } else {
                Problem::bad_request("could not read the request body")
            }
        })
}

/// A JSON body: `application/json` (415 otherwise), within the size limit (413), well-formed
/// (400). Kept as a `Value` so validation can name every bad field at once (422).
pub struct JsonBody(pub Value);

impl FromRequest<AppState> for JsonBody {
    type Rejection = Problem;

    async fn from_request(req: Request<Body>, state: &AppState) -> Result<Self, Problem> {
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let mime = content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if !(mime == "application/json"
            || (mime.starts_with("application/") && mime.ends_with("+json")))
        {
            return Err(Problem::unsupported_media_type());
        }
        let bytes = read_body(req, state.max_body_bytes).await?;
        let value: Value =
            serde_json::from_slice(&bytes).map_err(|e| Problem::malformed_json(e.to_string()))?;
        Ok(JsonBody(value))
    }
}

/// A JSON body parsed into a request type: besides `JsonBody`'s answers, a body of the wrong
/// shape is a 422 naming the field (its path, `scopes[1]`) and what was expected there. The
/// type's own rules are checked by its handler, which can name every bad field at once.
pub struct Typed<T>(pub T);

impl<T: serde::de::DeserializeOwned> FromRequest<AppState> for Typed<T> {
    type Rejection = Problem;

    async fn from_request(req: Request<Body>, state: &AppState) -> Result<Self, Problem> {
        let JsonBody(value) = JsonBody::from_request(req, state).await?;
        serde_path_to_error::deserialize(value)
            .map(Typed)
            .map_err(|e| {
                let path = e.path().to_string();
                let field = if path == "." { "body".to_owned() } else { path };
                Problem::validation(vec![FieldError::new(field, e.into_inner().to_string())])
            })
    }
}

/// A JSON body that may be left out: no body at all is `None`; one that is there is read
/// as `JsonBody` reads it.
pub struct OptionalJsonBody(pub Option<Value>);

impl FromRequest<AppState> for OptionalJsonBody {
    type Rejection = Problem;

    async fn from_request(req: Request<Body>, state: &AppState) -> Result<Self, Problem> {
        if req.headers().contains_key(header::CONTENT_TYPE) {
            return JsonBody::from_request(req, state)
                .await
                .map(|JsonBody(v)| OptionalJsonBody(Some(v)));
        }
        let bytes = read_body(req, state.max_body_bytes).await?;
        if bytes.is_empty() {
            Ok(OptionalJsonBody(None))
        } else {
            Err(Problem::unsupported_media_type())
        }
    }
}

/// The id in the path: a bad one (not a UUID, not UTF-8) is a 400 problem.
pub struct PathId(pub uuid::Uuid);

impl<S: Send + Sync> FromRequestParts<S> for PathId {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| Problem::bad_request("the id in the path is not valid text"))?;
        uuid::Uuid::parse_str(&raw)
            .map(PathId)
            .map_err(|_| Problem::bad_request(format!("{raw:?} is not a valid id (a UUID)")))
    }
}

/// A name in the path (a queue's): text that is not valid is a 400 problem.
pub struct PathName(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathName {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        Path::<String>::from_request_parts(parts, state)
            .await
            .map(|Path(name)| PathName(name))
            .map_err(|_| Problem::bad_request("the name in the path is not valid text"))
    }
}

/// The query string as pairs; malformed encoding is a 400.
pub struct QueryPairs(pub Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for QueryPairs {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Problem> {
        let q = parts.uri.query().unwrap_or("");
        let pairs = form_urlencoded::parse(q.as_bytes()).into_owned().collect();
        Ok(QueryPairs(pairs))
    }
}

impl FromRequestParts<AppState> for Auth {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Problem> {
        let header = parts.headers.get(header::AUTHORIZATION).ok_or_else(|| {
            Problem::unauthorized("send an API key as Authorization: Bearer <key>")
        })?;
        let key = header
            .to_str()
            .ok()
            .and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .ok_or_else(|| {
                Problem::unauthorized("the Authorization header must be Bearer <key>")
            })?;
        let principal = state
            .keys
            .verify(&state.store, key)
            .await?
            .ok_or_else(|| Problem::unauthorized("unknown or revoked API key"))?;
        // On the request's span (see `request_span`): the tenant, never the key.
        tracing::Span::current().record("tenant_id", tracing::field::display(principal.tenant_id));
        state.rate_limits.check(&principal)?;
        if let Some(route) = parts.extensions.get::<axum::extract::MatchedPath>() {
            state.usage.count(&principal, route.as_str());
        }
        Ok(Auth(principal))
    }
}

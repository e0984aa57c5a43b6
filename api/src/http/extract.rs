//! Extractors: each turns part of a request into a typed value, or into our problem+json
//! (never the framework's plain text). Bodies and queries are checked against their
//! published schema first (see `contract`), so a `422` names every bad field at once.

use axum::{
    body::{Body, Bytes},
    extract::{FromRequest, FromRequestParts, Path, Request},
    http::{header, request::Parts, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use conveyor_types::FieldError;
use serde::de::DeserializeOwned;
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::problem::Problem;
use crate::AppState;

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

/// A JSON body as a value: `application/json` (415 otherwise), within the size limit (413),
/// well-formed (400).
async fn json_value(req: Request<Body>, state: &AppState) -> Result<Value, Problem> {
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
    serde_json::from_slice(&bytes).map_err(|e| Problem::malformed_json(e.to_string()))
}

/// A JSON body of a request type: besides `json_value`'s answers, a body that breaks the
/// type's schema is a `422` naming every bad field.
pub struct Typed<T>(pub T);

impl<T: DeserializeOwned + ToSchema + 'static> FromRequest<AppState> for Typed<T> {
    type Rejection = Problem;

    async fn from_request(req: Request<Body>, state: &AppState) -> Result<Self, Problem> {
        let value = json_value(req, state).await?;
        parse_checked(state, value).map(Typed)
    }
}

fn parse_checked<T: DeserializeOwned + ToSchema + 'static>(
    state: &AppState,
    mut value: Value,
) -> Result<T, Problem> {
    let errors = state.contract.body::<T>().check(&value);
    if !errors.is_empty() {
        return Err(Problem::validation(errors));
    }
    // The schema held, so this parse holds too; should it not, the field is still named.
    loop {
        let e = match serde_path_to_error::deserialize(&value) {
            Ok(parsed) => return Ok(parsed),
            Err(e) => e,
        };
        // JSON Schema counts `5.0` as an integer, and serde does not: an integer field given
        // so is read as the integer (only where an integer was wanted, so free JSON keeps its
        // numbers as sent).
        if as_integer_at(&mut value, e.path()) {
            continue;
        }
        let path = e.path().to_string();
        let field = if path == "." { "body".to_owned() } else { path };
        tracing::warn!(%field, "a body its schema allows did not parse");
        return Err(Problem::validation(vec![FieldError::new(
            field,
            e.into_inner().to_string(),
        )]));
    }
}

/// Rewrites the number at `path` as an integer when it is a float with no fraction; whether
/// it did.
fn as_integer_at(value: &mut Value, path: &serde_path_to_error::Path) -> bool {
    use serde_path_to_error::Segment;
    let mut at = value;
    for segment in path.iter() {
        at = match (segment, at) {
            (Segment::Seq { index }, Value::Array(items)) => match items.get_mut(*index) {
                Some(item) => item,
                None => return false,
            },
            (Segment::Map { key }, Value::Object(map)) => match map.get_mut(key) {
                Some(item) => item,
                None => return false,
            },
            _ => return false,
        };
    }
    let integral = match at {
        Value::Number(n) if !n.is_i64() && !n.is_u64() => n
            .as_f64()
            .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
            .map(|f| f as i64),
        _ => None,
    };
    match integral {
        Some(i) => {
            *at = Value::from(i);
            true
        }
        None => false,
    }
}

/// A typed body that may be left out: no body at all is `None`.
pub struct OptionalTyped<T>(pub Option<T>);

impl<T: DeserializeOwned + ToSchema + 'static> FromRequest<AppState> for OptionalTyped<T> {
    type Rejection = Problem;

    async fn from_request(req: Request<Body>, state: &AppState) -> Result<Self, Problem> {
        if req.headers().contains_key(header::CONTENT_TYPE) {
            return Typed::<T>::from_request(req, state)
                .await
                .map(|Typed(v)| OptionalTyped(Some(v)));
        }
        let bytes = read_body(req, state.max_body_bytes).await?;
        if bytes.is_empty() {
            Ok(OptionalTyped(None))
        } else {
            Err(Problem::unsupported_media_type())
        }
    }
}

/// The query string as a query type: a `400` names every parameter that breaks its schema,
/// and every one the route does not take.
pub struct Query<T>(pub T);

impl<T: DeserializeOwned + IntoParams + 'static> FromRequestParts<AppState> for Query<T> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Problem> {
        let q = parts.uri.query().unwrap_or("");
        let pairs = form_urlencoded::parse(q.as_bytes()).into_owned().collect();
        let checker = state.contract.query::<T>();
        let object = checker.query_object(pairs).map_err(Problem::bad_query)?;
        let errors = checker.check(&object);
        if !errors.is_empty() {
            return Err(Problem::bad_query(errors));
        }
        serde_path_to_error::deserialize(object)
            .map(Query)
            .map_err(|e| {
                let field = e.path().to_string();
                Problem::bad_query(vec![FieldError::new(field, e.into_inner().to_string())])
            })
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

/// A name as the path's id (a queue's): text that is not valid is a 400 problem.
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

//! Errors as RFC 9457 problem+json. Only this module knows how errors look on the wire; the
//! real cause of a 5xx is logged inside the request's span and never sent to the client.

use axum::{
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};

use conveyor_core::store::StoreError;
pub use conveyor_types::FieldError;

/// An error on its way out: its status and headers besides its body.
#[derive(Debug)]
pub struct Problem {
    pub status: StatusCode,
    pub kind: &'static str,
    pub title: &'static str,
    pub detail: String,
    pub errors: Vec<FieldError>,
    pub retry_after: Option<u64>,
    /// For a 429: the limit, for the `RateLimit-*` headers.
    pub rate_limit: Option<u32>,
}

impl Problem {
    fn new(
        status: StatusCode,
        kind: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            status,
            kind,
            title,
            detail: detail.into(),
            errors: Vec::new(),
            retry_after: None,
            rate_limit: None,
        }
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "bad-request",
            "Bad request",
            detail,
        )
    }
    pub fn malformed_json(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "malformed-json",
            "Malformed JSON",
            detail,
        )
    }
    pub fn bad_query(errors: Vec<FieldError>) -> Self {
        let mut p = Self::new(
            StatusCode::BAD_REQUEST,
            "invalid-query",
            "Invalid query parameters",
            "one or more query parameters are invalid",
        );
        p.errors = errors;
        p
    }
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Unauthorized",
            detail,
        )
    }
    pub fn forbidden(scope: &str) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "Forbidden",
            format!("this key lacks the {scope} scope"),
        )
    }
    /// A key asked to grant a scope it does not hold itself.
    pub fn forbidden_to_grant(scope: &str) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "Forbidden",
            format!("this key lacks the {scope} scope, so it cannot grant it"),
        )
    }
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", "Not found", detail)
    }
    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method-not-allowed",
            "Method not allowed",
            "this route does not take that method",
        )
    }
    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", "Conflict", detail)
    }
    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body-too-large",
            "Request body too large",
            format!("the body exceeds {limit} bytes"),
        )
    }
    pub fn unsupported_media_type() -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "Unsupported media type",
            "send the body as application/json",
        )
    }
    pub fn validation(errors: Vec<FieldError>) -> Self {
        let mut p = Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation",
            "Invalid request",
            "one or more fields are invalid",
        );
        p.errors = errors;
        p
    }
    pub fn unavailable(detail: impl Into<String>) -> Self {
        let mut p = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "Service unavailable",
            detail,
        );
        p.retry_after = Some(5);
        p
    }
    /// Over the key's request rate: come back after `wait`.
    pub fn rate_limited(limit: u32, wait: std::time::Duration) -> Self {
        let mut p = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate-limited",
            "Too many requests",
            format!("this key may make {limit} requests per second"),
        );
        // Whole seconds, rounded up: `Retry-After` has no fractions.
        p.retry_after = Some(wait.as_secs() + u64::from(wait.subsec_nanos() > 0));
        p.rate_limit = Some(limit);
        p
    }

    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal error",
            "something went wrong on our side; it has been logged",
        )
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = conveyor_types::Problem {
            kind: format!("urn:conveyor:problem:{}", self.kind),
            title: self.title.to_owned(),
            status: self.status.as_u16(),
            detail: self.detail,
            errors: self.errors,
        };
        let mut resp = (self.status, axum::Json(body)).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Some(limit) = self.rate_limit {
            let h = resp.headers_mut();
            h.insert("ratelimit-limit", HeaderValue::from(limit));
            h.insert("ratelimit-remaining", HeaderValue::from(0));
            h.insert(
                "ratelimit-reset",
                HeaderValue::from(self.retry_after.unwrap_or(1)),
            );
        }
        resp
    }
}

/// A failure of the store, answered by its class: an outage is a 503 to retry; contention
/// (a deadlock, a serialization failure) a 503 to retry at once; a value PostgreSQL cannot hold
/// the client's 400, a safety net behind validation; anything else is ours, a 500. The cause
/// goes to the log only.
impl From<StoreError> for Problem {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(_) => {
                tracing::warn!(error = %e, "PostgreSQL unavailable");
                Problem::unavailable("the database is unavailable; try again shortly")
            }
            StoreError::Conflict(_) => {
                tracing::warn!(error = %e, "a statement met concurrent work; the client may retry");
                let mut p = Problem::unavailable("the request met concurrent work; try it again");
                p.retry_after = Some(1);
                p
            }
            StoreError::Rejected(_) => {
                tracing::info!(error = %e, "input PostgreSQL cannot store");
                Problem::bad_request("a value in the request cannot be stored (invalid data)")
            }
            StoreError::Unsealable(_) | StoreError::Failed(_) => {
                tracing::error!(error = %e, "database error");
                Problem::internal()
            }
        }
    }
}

pub type ApiResult<T> = Result<T, Problem>;

//! What can go wrong in the store, said in the terms its callers act on. The roles never
//! look inside a `sqlx::Error`: the store classifies each failure once, here, and a role
//! answers the class (retry, tell the client, log a bug).

use crate::sealing::SealError;

/// A failure of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// PostgreSQL could not be reached, went away, or refused new connections (it is
    /// starting, shutting down, or full). Worth trying again as is, later.
    #[error("PostgreSQL is unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    /// The statement met concurrent work (a deadlock, a serialization failure): the same call
    /// alone would succeed, so it may be tried again at once.
    #[error("the statement met concurrent work: {0}")]
    Conflict(#[source] sqlx::Error),
    /// PostgreSQL refused a value it cannot hold (SQLSTATE class 22, data exception): the
    /// caller's input, which validation should have caught. Trying again refuses it again.
    #[error("PostgreSQL refused a value: {0}")]
    Rejected(#[source] sqlx::Error),
    /// A sealed secret cannot be opened: the deployment lacks the key that sealed it.
    #[error("a stored secret cannot be opened: {0}")]
    Unsealable(#[source] SealError),
    /// Anything else: a bug, or a database whose schema is not the one this build expects.
    #[error("database error: {0}")]
    Failed(#[source] sqlx::Error),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// A call on one of a tenant's resources found nothing under that id for that tenant (another
/// tenant's resource included: it is not told apart).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotFound;

/// A batch reused an idempotency key with a different request: nothing of it was kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdempotencyConflict;

impl StoreError {
    /// Whether the same call may succeed if made again unchanged (an outage or contention),
    /// as opposed to a refusal that will recur.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::Conflict(_))
    }

    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        if crate::db::is_unreachable(&e) {
            return Self::Unavailable(e);
        }
        let code = e.as_database_error().and_then(|d| d.code());
        match code.as_deref() {
            Some("40P01" | "40001") => Self::Conflict(e),
            Some(c) if c.starts_with("22") => Self::Rejected(e),
            _ => Self::Failed(e),
        }
    }
}

impl From<SealError> for StoreError {
    fn from(e: SealError) -> Self {
        Self::Unsealable(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_is_unavailable_and_retryable() {
        let e = StoreError::from(sqlx::Error::PoolTimedOut);
        assert!(matches!(e, StoreError::Unavailable(_)), "{e:?}");
        assert!(e.is_retryable());
    }

    #[test]
    fn a_decoding_failure_is_ours_and_not_retryable() {
        let e = StoreError::from(sqlx::Error::RowNotFound);
        assert!(matches!(e, StoreError::Failed(_)), "{e:?}");
        assert!(!e.is_retryable());
    }
}

//! API usage per key: requests per UTC day and route class, counted in memory by each API
//! process and added to PostgreSQL every few seconds (and at shutdown), so that counting costs
//! a request nothing but a mutex. `GET /v1/usage` (admin) reads it.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use axum::{extract::State, Json};
use chrono::{Datelike, NaiveDate, Utc};
use conveyor_core::{
    store::{UsageKey, UsageRow},
    Principal, Scope, Store,
};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{
    auth::Auth,
    extract::QueryPairs,
    problem::{ApiResult, FieldError, Problem},
    AppState,
};

const FLUSH_EVERY: Duration = Duration::from_secs(5);
const DEFAULT_DAYS: i64 = 30;
const MAX_DAYS: i64 = 366;

/// What a request is, for usage: the resource family its route belongs to.
pub fn route_class(route: &str) -> &'static str {
    let rest = route.strip_prefix("/v1/").unwrap_or("");
    let first = rest.split('/').next().unwrap_or("");
    match first {
        "jobs" if rest.ends_with("/replay") => "operators",
        "jobs" => "jobs",
        "sagas" => "sagas",
        "schedules" => "schedules",
        "endpoints" | "events" | "deliveries" | "callback-secret" => "webhooks",
        "dead-letters" | "audit-log" | "queues" => "operators",
        "usage" => "usage",
        "keys" => "keys",
        _ => "other",
    }
}

#[derive(Default)]
pub struct UsageCounter {
    counts: Mutex<HashMap<UsageKey, u64>>,
}

impl UsageCounter {
    pub fn count(&self, p: &Principal, route: &str) {
        let key = UsageKey {
            tenant_id: p.tenant_id,
            key_id: p.key_id,
            day: Utc::now().date_naive(),
            route_class: route_class(route),
        };
        *self.counts.lock().unwrap().entry(key).or_default() += 1;
    }

    /// Adds what was counted to the store; on failure keeps it for the next flush.
    pub async fn flush(&self, store: &Store) -> Result<(), sqlx::Error> {
        let taken: Vec<(UsageKey, u64)> = self.counts.lock().unwrap().drain().collect();
        // The keys used since the last flush were used by now: `last_used_at`, without a
        // write per request.
        let mut used: Vec<Uuid> = taken.iter().map(|(k, _)| k.key_id).collect();
        used.sort_unstable();
        used.dedup();
        if let Err(e) = store.touch_keys(&used).await {
            tracing::warn!(error = %e, "could not note when keys were last used");
        }
        if let Err(e) = store.add_usage(&taken).await {
            let mut counts = self.counts.lock().unwrap();
            for (k, n) in taken {
                *counts.entry(k).or_default() += n;
            }
            return Err(e);
        }
        Ok(())
    }

    /// Flushes every few seconds until `shutdown`, then once more.
    pub async fn run(&self, store: Store, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(FLUSH_EVERY) => {}
                _ = shutdown.cancelled() => break,
            }
            if let Err(e) = self.flush(&store).await {
                tracing::warn!(error = %e, "could not store API usage; kept for the next try");
            }
        }
        if let Err(e) = self.flush(&store).await {
            tracing::warn!(error = %e, "could not store API usage at shutdown");
        }
    }
}

/// `GET /v1/usage?from=&to=&key_id=`: the tenant's requests per key, day and route class.
#[utoipa::path(
    get,
    operation_id = "getUsage",
    path = "/v1/usage",
    tag = "usage",
    params(
        ("from" = Option<NaiveDate>, Query, description = "First day (UTC), default 29 days before `to`"),
        ("to" = Option<NaiveDate>, Query, description = "Last day (UTC), default today; at most 366 days after `from`"),
        ("key_id" = Option<Uuid>, Query, description = "One key only"),
    ),
    responses(
        (status = 200, description = "Requests per key, day and route class, newest day first", body = crate::openapi::Listed<UsageRow>),
    ),
)]
pub(crate) async fn usage(
    State(state): State<AppState>,
    auth: Auth,
    QueryPairs(q): QueryPairs,
) -> ApiResult<Json<crate::openapi::Listed<UsageRow>>> {
    let p = auth.require(Scope::Admin)?;
    let (mut from, mut to, mut key) = (None, None, None);
    let mut errors = Vec::new();
    for (k, v) in &q {
        // Years 1 to 9999 only: chrono parses signed years that date arithmetic (and
        // PostgreSQL) cannot take.
        let day = || {
            NaiveDate::parse_from_str(v, "%Y-%m-%d")
                .ok()
                .filter(|d| (1..=9999).contains(&d.year()))
        };
        let must = "must be a date, YYYY-MM-DD, in years 1 to 9999";
        match k.as_str() {
            "from" => from = day().or_else(|| bad(&mut errors, k, must)),
            "to" => to = day().or_else(|| bad(&mut errors, k, must)),
            "key_id" => {
                key = Uuid::parse_str(v)
                    .ok()
                    .or_else(|| bad(&mut errors, k, "must be a key id (a UUID)"))
            }
            other => errors.push(FieldError::new(other, "unknown query parameter")),
        }
    }
    let to = to.unwrap_or_else(|| Utc::now().date_naive());
    let from = from.unwrap_or(to - chrono::Duration::days(DEFAULT_DAYS - 1));
    let days = (to - from).num_days();
    if errors.is_empty() && !(0..=MAX_DAYS).contains(&days) {
        errors.push(FieldError::new(
            "from",
            format!("must be on or before `to`, and at most {MAX_DAYS} days before it"),
        ));
    }
    if !errors.is_empty() {
        return Err(Problem::bad_query(errors));
    }
    // This process's latest counts first, so that the answer includes them.
    if let Err(e) = state.usage.flush(&state.store).await {
        tracing::warn!(error = %e, "could not store API usage before reading it");
    }
    let data = state.store.usage(p.tenant_id, from, to, key).await?;
    Ok(Json(crate::openapi::Listed { data }))
}

fn bad<T>(errors: &mut Vec<FieldError>, field: &str, message: &str) -> Option<T> {
    errors.push(FieldError::new(field, message));
    None
}

#[cfg(test)]
mod tests {
    use super::route_class;

    #[test]
    fn routes_fall_into_classes() {
        assert_eq!(route_class("/v1/jobs"), "jobs");
        assert_eq!(route_class("/v1/jobs/{id}/attempts"), "jobs");
        assert_eq!(route_class("/v1/jobs/{id}/replay"), "operators");
        assert_eq!(route_class("/v1/dead-letters/replay"), "operators");
        assert_eq!(route_class("/v1/events"), "webhooks");
        assert_eq!(route_class("/v1/callback-secret/rotate"), "webhooks");
        assert_eq!(route_class("/v1/sagas/{id}"), "sagas");
        assert_eq!(route_class("/v1/usage"), "usage");
        assert_eq!(route_class("/ui/jobs"), "other");
    }
}

//! The dispatcher's side of deliveries: claim due ones within each endpoint's limits, record
//! outcomes with the endpoint's health, and take back deliveries whose dispatcher was lost.

use std::{collections::HashMap, time::Duration};

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use uuid::Uuid;

use super::{millis, webhooks::fail_pending_of, Store, StoreResult};
use crate::webhook::OPERATIONAL_EVENT_TYPES;

/// Claims are serialised across dispatchers under this transaction lock, so each claim sees
/// every earlier one's deliveries in flight: per-endpoint limits hold globally.
const CLAIM_LOCK: i64 = 0x636f_6e76_6469_7370; // "convdisp"

/// Limits a claim respects.
#[derive(Debug, Clone, Copy)]
pub struct ClaimLimits {
    /// Deliveries in flight to one endpoint (or one tenant's callback host), across every
    /// dispatcher.
    pub endpoint_concurrency: i32,
    /// Deliveries in flight for one tenant, over all its endpoints and callback hosts,
    /// across every dispatcher.
    pub tenant_concurrency: i32,
    /// Consecutive failures at which an endpoint's circuit opens; past its cooldown an open
    /// circuit lets one probe through at a time.
    pub circuit_threshold: i32,
    /// How long a claim owns its deliveries before another dispatcher may take them back.
    pub lease: Duration,
}

/// A delivery a dispatcher now owns, with everything needed to send it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ClaimedDelivery {
    pub id: Uuid,
    pub lease_token: Uuid,
    pub tenant_id: Uuid,
    pub message_id: Uuid,
    pub kind: String,
    pub endpoint_id: Option<Uuid>,
    pub event_type: String,
    /// The number of this attempt (1 for the first).
    pub attempt: i32,
    /// The attempts allowed; `None`: the retry schedule's length.
    pub max_attempts: Option<i32>,
    pub url: String,
    /// The exact bytes to sign and send.
    pub body: String,
    /// False when the endpoint was disabled after the delivery was made: it is not sent.
    pub endpoint_enabled: bool,
    pub secret: String,
    /// The rotated-out secret, while it still signs.
    pub previous_secret: Option<String>,
    /// The trace of the job that raised it, if any.
    pub traceparent: Option<String>,
    /// Its signing secret does not open: the key that sealed it is missing here. Nothing is
    /// sent; the attempt takes its place in the retry schedule but counts nothing against the
    /// endpoint's health (it is not the receiver's doing).
    #[sqlx(skip)]
    pub unopenable: bool,
}

/// What to do with a delivery after an attempt.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum NextStep {
    Succeeded,
    RetryIn(Duration),
    /// No more attempts. `exhausted` when it used its whole schedule (this raises
    /// `delivery.exhausted`), not when the endpoint is gone or disabled.
    Failed {
        exhausted: bool,
    },
}

/// The outcome of one attempt.
#[derive(Debug, Clone)]
pub struct DeliveryOutcome {
    pub id: Uuid,
    pub lease_token: Uuid,
    pub endpoint_id: Option<Uuid>,
    pub started_at: DateTime<Utc>,
    pub status_code: Option<i32>,
    pub latency_ms: Option<i32>,
    pub response: Option<String>,
    pub error: Option<String>,
    pub next: NextStep,
    /// Whether the attempt reached the receiver and counts for the endpoint's health: a
    /// success heals it, a failure counts against it. An attempt not made (the endpoint was
    /// disabled) counts for nothing.
    pub counts: bool,
    /// The receiver answered 410 Gone: disable the endpoint now.
    pub gone: bool,
}

/// How endpoint health is judged.
#[derive(Debug, Clone, Copy)]
pub struct HealthRules {
    pub circuit_threshold: i32,
    pub circuit_cooldown: Duration,
    pub disable_after: Duration,
}

impl Store {
    /// Claims up to `limit` due deliveries of one lane (first attempts, or retries), keeping
    /// every endpoint within its concurrency, rate limit and circuit. Deliveries of an endpoint
    /// with no room are parked (taken out of the time-ordered queue into their endpoint's own),
    /// not waited on, so they never hold up other endpoints; they are claimed from there, oldest
    /// first, once their endpoint has room again.
    pub async fn claim_deliveries(
        &self,
        first_attempts: bool,
        limit: i64,
        limits: ClaimLimits,
    ) -> StoreResult<Vec<ClaimedDelivery>> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(CLAIM_LOCK)
            .execute(&mut *tx)
            .await?;
        index_scans_only(&mut tx).await?;
        // This statement's snapshot is taken after the lock: it sees every earlier claim.
        // Each lane has its own partial index; the condition must be literal to match it.
        let lane = if first_attempts { "= 0" } else { "> 0" };
        let sql = format!(
            "WITH RECURSIVE
             -- Endpoints with parked deliveries (a loose index scan: one probe per endpoint).
             parked_eps(id) AS (
               (SELECT endpoint_id FROM deliveries WHERE status = 'parked'
                ORDER BY endpoint_id LIMIT 1)
               UNION ALL
               SELECT (SELECT d.endpoint_id FROM deliveries d
                       WHERE d.status = 'parked' AND d.endpoint_id > p.id
                       ORDER BY d.endpoint_id LIMIT 1)
               FROM parked_eps p WHERE p.id IS NOT NULL),
             inflight AS (
               SELECT endpoint_id, count(*)::int AS n FROM deliveries
               WHERE status = 'delivering' AND endpoint_id IS NOT NULL GROUP BY endpoint_id),
             cand AS (
               SELECT d.id, d.endpoint_id, d.next_attempt_at FROM deliveries d
               WHERE d.status = 'pending' AND d.next_attempt_at <= now() AND d.attempts {lane}
               ORDER BY d.next_attempt_at LIMIT $1 * 4),
             -- What each endpoint can take now: its concurrency left (one probe when its
             -- circuit is half-open, none while open), within its token bucket.
             room AS (
               SELECT e.id, e.tenant_id, e.enabled,
                 LEAST(CASE WHEN e.circuit_open_until > now() THEN 0
                            WHEN e.consecutive_failures >= $3 THEN 1
                            ELSE $2 END - COALESCE(i.n, 0),
                       CASE WHEN e.rate_limit_per_second IS NULL THEN 2147483647
                            ELSE floor(LEAST(e.rate_limit_per_second::float8, e.rate_tokens
                              + e.rate_limit_per_second * extract(epoch FROM now() - e.rate_refilled_at)))::int
                       END) AS room
               FROM endpoints e LEFT JOIN inflight i ON i.endpoint_id = e.id
               WHERE e.id IN (SELECT endpoint_id FROM cand UNION SELECT id FROM parked_eps)),
             -- What each of their tenants can take now: a tenant's deliveries in flight,
             -- over all its endpoints and callback hosts, stay within $6, so one tenant's
             -- slow receivers never hold every slot.
             tenant_inflight AS (
               SELECT e.tenant_id, sum(i.n)::int AS n
               FROM inflight i JOIN endpoints e ON e.id = i.endpoint_id GROUP BY e.tenant_id),
             tenant_room AS (
               SELECT t.tenant_id, $6 - COALESCE(ti.n, 0) AS room
               FROM (SELECT DISTINCT tenant_id FROM room) t
                 LEFT JOIN tenant_inflight ti ON ti.tenant_id = t.tenant_id),
             unparked AS (
               SELECT x.id, x.endpoint_id, x.next_attempt_at
               FROM room JOIN tenant_room tr ON tr.tenant_id = room.tenant_id
               CROSS JOIN LATERAL (
                 SELECT d.id, d.endpoint_id, d.next_attempt_at FROM deliveries d
                 WHERE d.status = 'parked' AND d.endpoint_id = room.id AND d.attempts {lane}
                 ORDER BY d.next_attempt_at LIMIT LEAST(room.room, tr.room)) x
               WHERE room.room > 0 AND tr.room > 0 AND room.enabled),
             ranked AS (
               SELECT c.id, c.endpoint_id, c.next_attempt_at,
                 row_number() OVER (PARTITION BY c.endpoint_id ORDER BY c.next_attempt_at, c.id) AS rn
               FROM (SELECT * FROM unparked UNION ALL SELECT * FROM cand) c),
             -- Within their endpoints' room first, then their tenants'.
             fits AS (
               SELECT r.id, r.next_attempt_at, room.tenant_id, room.enabled,
                 row_number() OVER (PARTITION BY room.tenant_id, room.enabled
                                    ORDER BY r.next_attempt_at, r.id) AS trn
               FROM ranked r LEFT JOIN room ON room.id = r.endpoint_id
               -- A disabled endpoint's deliveries are taken at once, to be failed unsent.
               WHERE r.endpoint_id IS NULL OR NOT room.enabled OR r.rn <= room.room),
             pick AS (
               SELECT f.id FROM fits f LEFT JOIN tenant_room tr ON tr.tenant_id = f.tenant_id
               WHERE f.tenant_id IS NULL OR NOT f.enabled OR f.trn <= tr.room
               ORDER BY f.next_attempt_at LIMIT $1),
             -- Due deliveries of endpoints (or tenants) that can take nothing now leave the
             -- time-ordered queue, so later claims do not walk over them again.
             park AS (
               UPDATE deliveries d SET status = 'parked'
               WHERE d.id = ANY (ARRAY(
                   SELECT cand.id FROM cand JOIN room ON room.id = cand.endpoint_id
                     JOIN tenant_room tr ON tr.tenant_id = room.tenant_id
                   WHERE room.enabled AND (room.room <= 0 OR tr.room <= 0)))
                 AND d.status = 'pending'),
             claimed AS (
               UPDATE deliveries d SET status = 'delivering', attempts = d.attempts + 1,
                 lease_token = $4, lease_expires_at = now() + $5 * interval '1 millisecond'
               -- `= ANY (ARRAY(…))`: an index probe per id whatever the statistics say.
               WHERE d.id = ANY (ARRAY(SELECT id FROM pick)) AND d.status IN ('pending', 'parked')
               RETURNING d.*),
             spent AS (
               UPDATE endpoints e SET rate_refilled_at = now(),
                 rate_tokens = LEAST(e.rate_limit_per_second::float8, e.rate_tokens
                   + e.rate_limit_per_second * extract(epoch FROM now() - e.rate_refilled_at)) - s.n
               FROM (SELECT endpoint_id, count(*) AS n FROM claimed GROUP BY endpoint_id) s
               WHERE e.id = s.endpoint_id AND e.rate_limit_per_second IS NOT NULL)
             SELECT c.id, c.lease_token, c.tenant_id, c.message_id, c.kind, c.endpoint_id,
               m.event_type, c.attempts AS attempt, c.max_attempts,
               -- A callback goes to its own URL; its endpoint row stands for its host.
               CASE WHEN c.kind = 'webhook' THEN e.url ELSE c.url END AS url, m.body,
               COALESCE(e.enabled, true) AS endpoint_enabled,
               CASE WHEN c.kind = 'webhook' THEN e.secret ELSE t.callback_secret END AS secret,
               CASE WHEN c.kind = 'webhook'
                    THEN CASE WHEN e.previous_secret_expires_at > now() THEN e.previous_secret END
                    ELSE CASE WHEN t.callback_previous_expires_at > now() THEN t.callback_previous_secret END
               END AS previous_secret, m.traceparent
             FROM claimed c JOIN messages m ON m.id = c.message_id
               JOIN tenants t ON t.id = c.tenant_id
               LEFT JOIN endpoints e ON e.id = c.endpoint_id"
        );
        let mut rows: Vec<ClaimedDelivery> = sqlx::query_as(&sql)
            .bind(limit)
            .bind(limits.endpoint_concurrency)
            .bind(limits.circuit_threshold)
            .bind(Uuid::new_v4())
            .bind(millis(limits.lease))
            .bind(limits.tenant_concurrency)
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        // Opened here, held only as long as the attempt. One that does not open (its key is
        // missing) sends nothing and is tried again on its schedule.
        for d in &mut rows {
            d.secret = self.keyring.open(&d.secret).unwrap_or_else(|e| {
                tracing::error!(delivery = %d.id, error = %e, "a signing secret does not open");
                d.unopenable = true;
                String::new()
            });
            d.previous_secret = d
                .previous_secret
                .as_deref()
                .and_then(|s| self.keyring.open(s).ok());
        }
        Ok(rows)
    }

    /// Records attempt outcomes, each only while its delivery is still claimed under its
    /// token, with the endpoints' health (circuit, disabling) and the events they raise, in
    /// one transaction. Returns the ids recorded.
    pub async fn finish_deliveries(
        &self,
        outcomes: &[DeliveryOutcome],
        rules: HealthRules,
    ) -> StoreResult<Vec<Uuid>> {
        let status = |o: &DeliveryOutcome| match o.next {
            NextStep::Succeeded => "succeeded",
            NextStep::RetryIn(_) => "pending",
            NextStep::Failed { .. } => "failed",
        };
        let delay = |o: &DeliveryOutcome| match o.next {
            NextStep::RetryIn(d) => millis(d),
            _ => 0,
        };
        let mut tx = self.pool.begin().await?;
        index_scans_only(&mut tx).await?;
        #[derive(sqlx::FromRow)]
        struct Applied {
            id: Uuid,
            tenant_id: Uuid,
            message_id: Uuid,
            endpoint_id: Option<Uuid>,
            kind: String,
            event_type: String,
            attempts: i32,
        }
        let applied: Vec<Applied> = sqlx::query_as(
            "WITH o AS (SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::bigint[],
                          $5::int4[], $6::int4[], $7::text[], $8::text[], $9::timestamptz[])
                        AS o(id, token, status, delay_ms, status_code, latency_ms, response, error, started_at)),
             upd AS (
               UPDATE deliveries d SET status = o.status,
                 next_attempt_at = CASE WHEN o.status = 'pending'
                   THEN now() + o.delay_ms * interval '1 millisecond' ELSE d.next_attempt_at END,
                 finished_at = CASE WHEN o.status <> 'pending' THEN now() END,
                 last_status_code = o.status_code, last_error = o.error,
                 lease_token = NULL, lease_expires_at = NULL
               FROM o WHERE d.id = o.id AND d.id = ANY ($1)
                 AND d.status = 'delivering' AND d.lease_token = o.token
               RETURNING d.id, d.tenant_id, d.message_id, d.endpoint_id, d.kind, d.attempts),
             att AS (
               INSERT INTO delivery_attempts
                 (delivery_id, attempt, started_at, status_code, latency_ms, response, error)
               SELECT upd.id, upd.attempts, o.started_at, o.status_code, o.latency_ms, o.response, o.error
               FROM upd JOIN o ON o.id = upd.id
               ON CONFLICT (delivery_id, attempt) DO NOTHING)
             SELECT upd.*, m.event_type FROM upd JOIN messages m ON m.id = upd.message_id",
        )
        .bind(outcomes.iter().map(|o| o.id).collect::<Vec<_>>())
        .bind(outcomes.iter().map(|o| o.lease_token).collect::<Vec<_>>())
        .bind(outcomes.iter().map(status).collect::<Vec<_>>())
        .bind(outcomes.iter().map(delay).collect::<Vec<_>>())
        .bind(outcomes.iter().map(|o| o.status_code).collect::<Vec<_>>())
        .bind(outcomes.iter().map(|o| o.latency_ms).collect::<Vec<_>>())
        .bind(outcomes.iter().map(|o| o.response.as_deref()).collect::<Vec<_>>())
        .bind(outcomes.iter().map(|o| o.error.as_deref()).collect::<Vec<_>>())
        .bind(outcomes.iter().map(|o| o.started_at).collect::<Vec<_>>())
        .fetch_all(&mut *tx)
        .await?;
        let by_id: HashMap<Uuid, &DeliveryOutcome> = outcomes.iter().map(|o| (o.id, o)).collect();
        let mut events = Events::default();

        // Endpoint health, from the recorded outcomes in the order they happened.
        let mut healed: Vec<Uuid> = Vec::new();
        let mut failing: HashMap<Uuid, (i32, bool)> = HashMap::new(); // failures since the last success, gone
        for a in &applied {
            let (Some(endpoint), Some(o)) = (a.endpoint_id, by_id.get(&a.id)) else {
                continue;
            };
            if !o.counts {
                continue;
            }
            if o.next == NextStep::Succeeded {
                healed.push(endpoint);
                failing.remove(&endpoint);
            } else {
                let f = failing.entry(endpoint).or_default();
                f.0 += 1;
                f.1 |= o.gone;
            }
            if let NextStep::Failed { exhausted: true } = o.next {
                if !OPERATIONAL_EVENT_TYPES.contains(&a.event_type.as_str()) {
                    events.push(
                        a.tenant_id,
                        "delivery.exhausted",
                        json!({
                            "delivery_id": a.id, "message_id": a.message_id, "kind": a.kind,
                            // A callback host's row is Conveyor's own, never shown.
                            "endpoint_id": (a.kind == "webhook").then_some(a.endpoint_id).flatten(),
                            "event_type": a.event_type,
                            "attempts": a.attempts, "last_status_code": o.status_code,
                            "last_error": o.error,
                        }),
                    );
                }
            }
        }
        if !healed.is_empty() {
            let recovered: Vec<(Uuid, Uuid, String, String)> = sqlx::query_as(
                "WITH old AS (
                   SELECT id, failing_since FROM endpoints
                   WHERE id = ANY ($1) AND (consecutive_failures > 0 OR failing_since IS NOT NULL)
                   FOR UPDATE)
                 UPDATE endpoints e SET consecutive_failures = 0, failing_since = NULL,
                   circuit_open_until = NULL, updated_at = now()
                 FROM old WHERE e.id = old.id AND e.enabled
                 RETURNING e.id, e.tenant_id, e.url, e.kind",
            )
            .bind(&healed)
            .fetch_all(&mut *tx)
            .await?;
            // A callback host is Conveyor's own: its tenant hears of no endpoint it never made.
            for (id, tenant_id, url, _) in recovered.into_iter().filter(|r| r.3 == "webhook") {
                events.push(
                    tenant_id,
                    "delivery.recovered",
                    json!({"endpoint_id": id, "url": url}),
                );
            }
        }
        if !failing.is_empty() {
            let ids: Vec<Uuid> = failing.keys().copied().collect();
            let counts: Vec<i32> = ids.iter().map(|i| failing[i].0).collect();
            let gone: Vec<bool> = ids.iter().map(|i| failing[i].1).collect();
            let disabled: Vec<(Uuid, Uuid, String, String)> = sqlx::query_as(
                "WITH f AS (SELECT * FROM unnest($1::uuid[], $2::int4[], $3::bool[]) AS f(id, n, gone)),
                 old AS (
                   SELECT e.id, e.enabled,
                     -- A callback host is never disabled: each job names its URL anew.
                     CASE WHEN e.kind = 'callback' THEN NULL
                          WHEN f.gone THEN 'the endpoint answered 410 Gone'
                          WHEN COALESCE(e.failing_since, now()) <= now() - $6 * interval '1 millisecond'
                          THEN 'every delivery failed for ' || $7
                     END AS reason
                   FROM endpoints e JOIN f ON f.id = e.id FOR UPDATE OF e)
                 UPDATE endpoints e SET
                   consecutive_failures = e.consecutive_failures + f.n,
                   failing_since = COALESCE(e.failing_since, now()),
                   circuit_open_until = CASE WHEN e.consecutive_failures + f.n >= $4
                     THEN now() + $5 * interval '1 millisecond' ELSE e.circuit_open_until END,
                   enabled = e.enabled AND old.reason IS NULL,
                   disabled_reason = CASE WHEN e.enabled AND old.reason IS NOT NULL
                     THEN old.reason ELSE e.disabled_reason END,
                   updated_at = now()
                 FROM f, old WHERE e.id = f.id AND old.id = f.id
                 RETURNING e.id, e.tenant_id, e.url, CASE WHEN old.enabled THEN old.reason END",
            )
            .bind(&ids)
            .bind(&counts)
            .bind(&gone)
            .bind(rules.circuit_threshold)
            .bind(millis(rules.circuit_cooldown))
            .bind(millis(rules.disable_after))
            .bind(humantime::format_duration(rules.disable_after).to_string())
            .fetch_all(&mut *tx)
            .await
            .map(|rows: Vec<(Uuid, Uuid, String, Option<String>)>| {
                rows.into_iter()
                    .filter_map(|(id, t, url, reason)| reason.map(|r| (id, t, url, r)))
                    .collect()
            })?;
            if !disabled.is_empty() {
                let ids: Vec<Uuid> = disabled.iter().map(|d| d.0).collect();
                fail_pending_of(&mut tx, &ids, "the endpoint was disabled").await?;
                for (id, tenant_id, url, reason) in disabled {
                    tracing::warn!(endpoint = %id, %reason, "endpoint disabled");
                    events.push(
                        tenant_id,
                        "endpoint.disabled",
                        json!({"endpoint_id": id, "url": url, "reason": reason}),
                    );
                }
            }
        }
        events.raise(&mut tx).await?;
        tx.commit().await?;
        Ok(applied.into_iter().map(|a| a.id).collect())
    }

    /// Takes back deliveries whose lease expired (their dispatcher died mid-send): due again
    /// now, with one more attempt allowed, since the lost one may never have been sent.
    pub async fn rescue_deliveries(&self, schedule_len: i32, limit: i64) -> StoreResult<u64> {
        self.requeue_in_flight(
            "SELECT id FROM deliveries WHERE status = 'delivering' AND lease_expires_at < now()
             ORDER BY lease_expires_at LIMIT $4 FOR UPDATE SKIP LOCKED",
            "lost: the dispatcher stopped before recording an outcome",
            schedule_len,
            &[],
            &[],
            limit,
        )
        .await
    }

    /// Hands back deliveries a stopping dispatcher could not finish, so another sends them
    /// at once instead of after their lease.
    pub async fn release_deliveries(
        &self,
        claims: &[(Uuid, Uuid)],
        schedule_len: i32,
    ) -> StoreResult<u64> {
        let ids: Vec<Uuid> = claims.iter().map(|c| c.0).collect();
        let tokens: Vec<Uuid> = claims.iter().map(|c| c.1).collect();
        self.requeue_in_flight(
            "SELECT d.id FROM deliveries d JOIN unnest($1::uuid[], $2::uuid[]) AS r(id, token)
               ON d.id = r.id AND d.lease_token = r.token
             WHERE d.status = 'delivering' FOR UPDATE OF d",
            "interrupted: the dispatcher shut down during the attempt",
            schedule_len,
            &ids,
            &tokens,
            i64::MAX,
        )
        .await
    }

    async fn requeue_in_flight(
        &self,
        select: &str,
        reason: &str,
        schedule_len: i32,
        ids: &[Uuid],
        tokens: &[Uuid],
        limit: i64,
    ) -> StoreResult<u64> {
        let sql = format!(
            "WITH lost AS ({select}),
             r AS (
               UPDATE deliveries d SET status = 'pending', next_attempt_at = now(),
                 lease_token = NULL, lease_expires_at = NULL, last_error = $3,
                 max_attempts = COALESCE(d.max_attempts, $5) + 1
               FROM lost WHERE d.id = lost.id
               RETURNING d.id, d.attempts),
             a AS (
               INSERT INTO delivery_attempts (delivery_id, attempt, started_at, error)
               SELECT id, attempts, now(), $3 FROM r ON CONFLICT (delivery_id, attempt) DO NOTHING)
             SELECT count(*) FROM r"
        );
        let mut tx = self.pool.begin().await?;
        let n: i64 = sqlx::query_scalar(&sql)
            .bind(ids)
            .bind(tokens)
            .bind(reason)
            .bind(limit)
            .bind(schedule_len)
            .fetch_one(&mut *tx)
            .await?;
        if n > 0 {
            super::webhooks::notify_deliveries(&mut tx).await?;
        }
        tx.commit().await?;
        Ok(n as u64)
    }
}

/// Deliveries is a queue table: it can be analysed while nearly empty and hold a hundred
/// thousand due rows a minute later. Planned from such statistics (worse: as a generic plan,
/// cached), the claim's joins became nested loops over whole-table scans, seconds per claim
/// (measured). Every access these statements make has an index, so forbid sequential scans
/// and plan each execution with its own parameters.
async fn index_scans_only(tx: &mut sqlx::Transaction<'_, sqlx::Postgres>) -> StoreResult<()> {
    for setting in [
        "SET LOCAL enable_seqscan = off",
        "SET LOCAL plan_cache_mode = force_custom_plan",
    ] {
        sqlx::query(setting).execute(&mut **tx).await?;
    }
    Ok(())
}

/// Events raised while recording outcomes, raised together at the end.
#[derive(Default)]
struct Events {
    tenants: Vec<Uuid>,
    types: Vec<&'static str>,
    data: Vec<Value>,
}

impl Events {
    fn push(&mut self, tenant_id: Uuid, event_type: &'static str, data: Value) {
        self.tenants.push(tenant_id);
        self.types.push(event_type);
        self.data.push(data);
    }

    async fn raise(self, tx: &mut sqlx::Transaction<'_, sqlx::Postgres>) -> StoreResult<()> {
        if self.tenants.is_empty() {
            return Ok(());
        }
        sqlx::query("SELECT conveyor_raise_events($1, $2, $3)")
            .bind(&self.tenants)
            .bind(&self.types)
            .bind(&self.data)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }
}

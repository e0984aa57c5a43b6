//! The lease fence, at the store: every transition out of `running` is guarded by the
//! attempt's token, so a late worker can never overwrite what a rescue or another worker did;
//! and two schedulers promoting at once never take the same job twice.

use std::time::Duration;

use conveyor_core::{
    store::{Claim, Finish},
    AttemptOutcome, JobStatus, NewJob, Store,
};
use serde_json::json;
use uuid::Uuid;

use crate::harness::{drop_database, fresh_database};

fn new_job(run_at: Option<chrono::DateTime<chrono::Utc>>) -> NewJob {
    NewJob {
        traceparent: None,
        id: Uuid::now_v7(),
        job_type: "echo".into(),
        queue: "default".into(),
        priority: 0,
        payload: json!({}),
        run_at,
        max_attempts: 3,
        timeout_seconds: 60,
        callback_url: None,
        metadata: json!({}),
        idempotency_key: None,
        request_hash: vec![0; 32],
    }
}

fn success(job_id: Uuid, token: Uuid) -> Finish {
    Finish {
        job_id,
        token,
        status: JobStatus::Succeeded,
        result: Some(json!("done")),
        error: None,
        retry_in: Duration::ZERO,
        outcome: AttemptOutcome::Succeeded,
    }
}

async fn expire_leases(store: &Store) {
    sqlx::query(
        "UPDATE jobs SET lease_expires_at = now() - interval '1 second' WHERE status = 'running'",
    )
    .execute(store.pool())
    .await
    .unwrap();
}

#[tokio::test]
async fn a_late_worker_cannot_overwrite_a_rescued_or_finished_job() {
    let (name, url) = fresh_database().await;
    let store = Store::development(conveyor_core::db::connect(&url, 4).await.unwrap());
    let tenant = store.ensure_tenant("t").await.unwrap();
    let job = new_job(None);
    store
        .insert_jobs(tenant, std::slice::from_ref(&job))
        .await
        .unwrap()
        .unwrap();
    let lease = Duration::from_secs(30);

    // Worker A claims; a second claim of the same job (a duplicate message) gets nothing.
    let a = Claim {
        job_id: job.id,
        token: Uuid::new_v4(),
    };
    assert_eq!(
        store
            .claim_jobs(&[a], "worker-a", lease)
            .await
            .unwrap()
            .len(),
        1
    );
    // A retried claim with the same token (its answer was lost) gets the job again, with no
    // second attempt.
    let again = store.claim_jobs(&[a], "worker-a", lease).await.unwrap();
    assert_eq!((again.len(), again[0].job.attempts), (1, 1));
    let dup = Claim {
        job_id: job.id,
        token: Uuid::new_v4(),
    };
    assert!(store
        .claim_jobs(&[dup], "worker-dup", lease)
        .await
        .unwrap()
        .is_empty());

    // A's lease runs out; the reaper rescues the job and worker B claims it.
    expire_leases(&store).await;
    assert_eq!(store.rescue_expired(100).await.unwrap(), 1);
    let b = Claim {
        job_id: job.id,
        token: Uuid::new_v4(),
    };
    assert_eq!(
        store
            .claim_jobs(&[b], "worker-b", lease)
            .await
            .unwrap()
            .len(),
        1
    );

    // A wakes up late: its heartbeat and its outcome are both refused.
    assert!(store.heartbeat(&[a], lease).await.unwrap().is_empty());
    assert!(store
        .finish_jobs(&[success(job.id, a.token)])
        .await
        .unwrap()
        .is_empty());
    // B's are accepted.
    assert_eq!(store.heartbeat(&[b], lease).await.unwrap(), vec![job.id]);
    assert_eq!(
        store
            .finish_jobs(&[success(job.id, b.token)])
            .await
            .unwrap(),
        vec![b]
    );

    // A rescue after completion changes nothing.
    expire_leases(&store).await;
    assert_eq!(store.rescue_expired(100).await.unwrap(), 0);
    let done = store.get_job(tenant, job.id).await.unwrap().unwrap();
    assert_eq!(done.status, JobStatus::Succeeded);
    assert_eq!(done.attempts, 2);
    let outcomes: Vec<String> =
        sqlx::query_scalar("SELECT outcome FROM job_attempts WHERE job_id = $1 ORDER BY attempt")
            .bind(job.id)
            .fetch_all(store.pool())
            .await
            .unwrap();
    assert_eq!(outcomes, ["lost", "succeeded"]);

    store.pool().close().await;
    drop_database(&name).await;
}

#[tokio::test]
async fn two_schedulers_promote_each_due_job_exactly_once() {
    let (name, url) = fresh_database().await;
    let one = Store::development(conveyor_core::db::connect(&url, 4).await.unwrap());
    let two = Store::development(conveyor_core::db::connect(&url, 4).await.unwrap());
    let tenant = one.ensure_tenant("t").await.unwrap();
    let soon = chrono::Utc::now() + chrono::TimeDelta::milliseconds(300);
    let jobs: Vec<NewJob> = (0..600).map(|_| new_job(Some(soon))).collect();
    one.insert_jobs(tenant, &jobs).await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;

    // Both promote in small batches at the same time until nothing is left.
    let run = |s: Store| async move {
        let mut total = 0;
        loop {
            let n = s.promote_due(50).await.unwrap();
            if n == 0 {
                return total;
            }
            total += n;
        }
    };
    let (a, b) = tokio::join!(run(one.clone()), run(two.clone()));
    assert_eq!(a + b, 600);
    assert!(
        a > 0 && b > 0,
        "both schedulers should have taken part ({a}, {b})"
    );
    let outbox: i64 = sqlx::query_scalar("SELECT count(DISTINCT job_id) FROM outbox")
        .fetch_one(one.pool())
        .await
        .unwrap();
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(one.pool())
        .await
        .unwrap();
    assert_eq!((outbox, rows), (600, 600));

    one.pool().close().await;
    two.pool().close().await;
    drop_database(&name).await;
}

#[tokio::test]
async fn maintenance_vacuums_a_bloated_outbox_once() {
    let (name, url) = fresh_database().await;
    let store = Store::development(conveyor_core::db::connect(&url, 4).await.unwrap());
    sqlx::query("INSERT INTO outbox (kind, routing_key, job_id) SELECT 'job', 'default', gen_random_uuid() FROM generate_series(1, 8000)")
        .execute(store.pool())
        .await
        .unwrap();
    sqlx::query("DELETE FROM outbox")
        .execute(store.pool())
        .await
        .unwrap();
    // Table statistics reach pg_stat_user_tables within a second or so.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let vacuumed = loop {
        let (a, b) = tokio::join!(store.maintain(), store.maintain());
        let (a, b) = (a.unwrap(), b.unwrap());
        if !a.is_empty() || !b.is_empty() {
            // The try-lock lets one of two concurrent callers do the work.
            assert!(a.is_empty() || b.is_empty(), "both vacuumed: {a:?} {b:?}");
            break [a, b].concat();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the outbox was never vacuumed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(vacuumed.contains(&"outbox".to_owned()), "{vacuumed:?}");
    let dead: i64 =
        sqlx::query_scalar("SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = 'outbox'")
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert!(dead < 5000, "{dead} dead tuples left");
    store.pool().close().await;
    drop_database(&name).await;
}

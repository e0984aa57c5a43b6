//! Two tenants on one `conveyor all` process: a calm tenant's submissions and deliveries keep
//! their latency while the other tenant, all at once, pauses the shared queue, fills its
//! backlog to the bound, has slow receivers and callbacks, and floods the API with made-up
//! keys. Figures are printed (`--nocapture`); the bounds asserted are loose on purpose: this
//! machine is shared, and what matters is the absence of a stall of seconds.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;

use crate::{
    harness::TestApp,
    receiver::{Behave, Receiver},
};

/// Submit latency of `n` echo jobs one after another, and the latency of `n` events from
/// publish to receipt: (p50, p99) of each, in ms.
async fn calm_tenant(
    base: &str,
    key: &str,
    rx: &Receiver,
    path: &str,
    n: usize,
) -> [(f64, f64); 2] {
    let http = reqwest::Client::new();
    let mut submits = Vec::with_capacity(n);
    let mut deliveries = Vec::with_capacity(n);
    for i in 0..n {
        let started = Instant::now();
        let resp = http
            .post(format!("{base}/v1/jobs"))
            .bearer_auth(key)
            .json(&json!({"type": "echo", "payload": i}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::ACCEPTED);
        submits.push(started.elapsed().as_secs_f64() * 1000.0);
        let before = rx.received(path).len();
        let started = Instant::now();
        let resp = http
            .post(format!("{base}/v1/events"))
            .bearer_auth(key)
            .json(&json!({"type": "calm.event", "payload": {"i": i}}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::ACCEPTED);
        rx.wait_for(path, before + 1, 30).await;
        deliveries.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    [percentiles(&mut submits), percentiles(&mut deliveries)]
}

fn percentiles(v: &mut [f64]) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1];
    (at(0.5), at(0.99))
}

#[tokio::test]
async fn a_noisy_tenant_leaves_a_calm_ones_latency_alone() {
    let app = TestApp::start_with(conveyor::app::Roles::API, |_| {}).await;
    let conveyor = app
        .spawn_conveyor(
            "all",
            &[
                ("CONVEYOR_QUEUE_MAX_BACKLOG", "500"),
                ("CONVEYOR_WORKER_CONCURRENCY", "16"),
                ("CONVEYOR_ENDPOINT_CONCURRENCY", "8"),
                ("CONVEYOR_TENANT_DELIVERY_CONCURRENCY", "32"),
                ("CONVEYOR_DISPATCHER_CONCURRENCY", "64"),
            ],
        )
        .await;
    let base = conveyor.base.clone();
    let http = reqwest::Client::new();
    let noisy = app.key.clone();
    let calm = app.key_for("calm", &[conveyor_core::Scope::Admin]).await;
    let calm_rx = Receiver::start().await;
    let resp = http
        .post(format!("{base}/v1/endpoints"))
        .bearer_auth(&calm)
        .json(&json!({"url": calm_rx.url("hook"), "event_types": ["calm.event"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);

    let before = calm_tenant(&base, &calm, &calm_rx, "hook", 40).await;

    // The noisy tenant: its own pause of the shared queue, a backlog at its bound (held by
    // the pause), slow receivers and slow callbacks, and a flood of made-up keys.
    let slow = Receiver::start().await;
    slow.set("hook", Behave::Sleep(Duration::from_secs(5)));
    slow.set("callback", Behave::Sleep(Duration::from_secs(5)));
    for _ in 0..4 {
        let resp = http
            .post(format!("{base}/v1/endpoints"))
            .bearer_auth(&noisy)
            .json(&json!({"url": slow.url("hook"), "event_types": ["noisy.event"]}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::CREATED);
    }
    // Callbacks first, before the pause holds its jobs.
    let callbacks: Vec<_> = (0..200)
        .map(|i| json!({"type": "echo", "payload": i, "callback_url": slow.url("callback")}))
        .collect();
    let resp = http
        .post(format!("{base}/v1/jobs/batch"))
        .bearer_auth(&noisy)
        .json(&json!({"jobs": callbacks}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    for i in 0..100 {
        http.post(format!("{base}/v1/events"))
            .bearer_auth(&noisy)
            .json(&json!({"type": "noisy.event", "payload": {"i": i}}))
            .send()
            .await
            .unwrap();
    }
    let resp = http
        .post(format!("{base}/v1/queues/default/pause"))
        .bearer_auth(&noisy)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let backlog: Vec<_> = (0..500)
        .map(|i| json!({"type": "echo", "payload": i}))
        .collect();
    let resp = http
        .post(format!("{base}/v1/jobs/batch"))
        .bearer_auth(&noisy)
        .json(&json!({"jobs": backlog}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let flood = {
        let (http, base, sent) = (http.clone(), base.clone(), sent.clone());
        tokio::spawn(async move {
            use futures_util::StreamExt;
            futures_util::stream::iter(0..usize::MAX)
                .for_each_concurrent(16, |_| {
                    let key = conveyor_core::store::generate_key();
                    let req = http.get(format!("{base}/v1/jobs")).bearer_auth(key);
                    let sent = sent.clone();
                    async move {
                        if let Ok(r) = req.send().await {
                            assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
                        }
                        sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                })
                .await;
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let flood_started = Instant::now();
    let at_start = sent.load(std::sync::atomic::Ordering::Relaxed);
    let during = calm_tenant(&base, &calm, &calm_rx, "hook", 40).await;
    let bad_keys_per_s = (sent.load(std::sync::atomic::Ordering::Relaxed) - at_start) as f64
        / flood_started.elapsed().as_secs_f64();
    flood.abort();

    let (_, callback_max) = slow.completed_and_max_in_flight("callback");
    println!(
        "calm tenant, submit p50/p99 ms: {:.1}/{:.1} alone, {:.1}/{:.1} beside the noisy one; \
         delivery p50/p99 ms: {:.1}/{:.1} alone, {:.1}/{:.1} beside it; \
         made-up keys {bad_keys_per_s:.0}/s; noisy callbacks in flight at most \
         {callback_max}, its deliveries {}",
        before[0].0,
        before[0].1,
        during[0].0,
        during[0].1,
        before[1].0,
        before[1].1,
        during[1].0,
        during[1].1,
        slow.max_in_flight_total(),
    );
    // No stall: a held slot, a global backlog count or a key lookup queue would show as
    // seconds here.
    assert!(during[0].1 < 500.0, "submit p99 {:.1} ms", during[0].1);
    assert!(during[1].1 < 1000.0, "delivery p99 {:.1} ms", during[1].1);
    assert!(callback_max <= 8 && slow.max_in_flight_total() <= 32);
    // The calm tenant's jobs ran although the noisy one paused the queue.
    let resp: serde_json::Value = http
        .get(format!("{base}/v1/queues"))
        .bearer_auth(&calm)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(resp["data"][0]["paused"], false, "{resp}");
    conveyor.stop().await;
    app.stop().await;
}

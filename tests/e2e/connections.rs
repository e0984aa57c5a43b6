//! Connection limits on a `conveyor api` process of its own: thousands of connections that
//! send part of a request and then nothing (a slowloris) neither stop another client's
//! requests nor stay open past the header timeout, and memory comes back after them; past
//! the connection cap a new connection is closed at once.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::harness::TestApp;

/// Opens `n` connections that each send a request line and one header, and nothing more.
async fn idle_connections(base: &str, n: usize) -> Vec<TcpStream> {
    use futures_util::StreamExt;
    let addr = base.trim_start_matches("http://").to_owned();
    futures_util::stream::iter(0..n)
        .map(|_| {
            let addr = addr.clone();
            async move {
                let mut s = TcpStream::connect(&addr).await.expect("connecting");
                s.write_all(b"GET /v1/jobs HTTP/1.1\r\nHost: conveyor\r\n")
                    .await
                    .unwrap();
                s
            }
        })
        .buffer_unordered(50)
        .collect()
        .await
}

/// Waits (at most `limit`) for the server to close each connection; how many it closed.
async fn closed_by_server(conns: Vec<TcpStream>, limit: Duration) -> usize {
    let reads = conns.into_iter().map(|mut s| async move {
        let mut buf = [0u8; 512];
        loop {
            match tokio::time::timeout(limit, s.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return true, // closed (perhaps after an answer)
                Ok(Ok(_)) => continue,                 // an answer (408): read on to EOF
                Err(_) => return false,                // still open
            }
        }
    });
    futures_util::future::join_all(reads)
        .await
        .into_iter()
        .filter(|closed| *closed)
        .count()
}

#[tokio::test]
async fn idle_connections_are_closed_and_hold_back_no_one() {
    let app = TestApp::start_with(conveyor::app::Roles::API, |_| {}).await;
    let api = app
        .spawn_conveyor("api", &[("CONVEYOR_HEADER_TIMEOUT", "3s")])
        .await;
    // A fresh connection per call: the server closes a kept-alive connection idle past the
    // header timeout, as it should, and a pooled one reused just then fails in the client
    // (`IncompleteMessage`, seen once in CI), which is not what this test is about.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let call = || {
        let req = http
            .get(format!("{}/v1/jobs?limit=1", api.base))
            .bearer_auth(&app.key);
        async move {
            let started = Instant::now();
            let status = req.send().await.unwrap().status();
            (status, started.elapsed())
        }
    };
    for _ in 0..20 {
        assert_eq!(call().await.0, StatusCode::OK);
    }
    let baseline = api.rss_kib();

    let opened = Instant::now();
    let idle = idle_connections(&api.base, 5000).await;
    let open_for = opened.elapsed();
    // Another client is served as usual meanwhile.
    let mut slowest = Duration::ZERO;
    for _ in 0..20 {
        let (status, took) = call().await;
        assert_eq!(status, StatusCode::OK);
        slowest = slowest.max(took);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let with_idle = api.rss_kib();
    assert!(
        slowest < Duration::from_secs(1),
        "a request took {slowest:?}"
    );

    // Every idle connection is closed by the server once the header timeout has passed.
    let closed = closed_by_server(idle, Duration::from_secs(15)).await;
    assert_eq!(closed, 5000, "connections the server left open");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = api.rss_kib();
    println!(
        "5,000 idle connections opened in {open_for:?}; slowest other request {slowest:?}; \
         RSS {baseline} KiB before, {with_idle} KiB with them, {after} KiB after"
    );
    assert!(
        after < baseline + 20 * 1024,
        "memory did not come back: {baseline} KiB before, {after} KiB after"
    );
    assert_eq!(call().await.0, StatusCode::OK);
    api.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn past_the_connection_cap_a_connection_is_closed_at_once() {
    let app = TestApp::start_with(conveyor::app::Roles::API, |_| {}).await;
    let api = app
        .spawn_conveyor(
            "api",
            &[
                ("CONVEYOR_MAX_CONNECTIONS", "200"),
                ("CONVEYOR_HEADER_TIMEOUT", "2s"),
            ],
        )
        .await;
    let idle = idle_connections(&api.base, 200).await;
    let extra = idle_connections(&api.base, 20).await;
    let started = Instant::now();
    assert_eq!(closed_by_server(extra, Duration::from_secs(1)).await, 20);
    assert!(started.elapsed() < Duration::from_secs(1));
    // The capped ones time out in turn, and the API serves again.
    assert_eq!(closed_by_server(idle, Duration::from_secs(10)).await, 200);
    let status = reqwest::Client::new()
        .get(format!("{}/healthz", api.base))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, StatusCode::OK);
    let metrics = reqwest::get(format!("{}/metrics", api.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("conveyor_http_connections_refused_total 20"),
        "{metrics}"
    );
    api.stop().await;
    app.stop().await;
}

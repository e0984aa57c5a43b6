//! A real webhook receiver on 127.0.0.1 for the tests, and an independent implementation of
//! the Standard Webhooks signature (HMAC-SHA256 written out from SHA-256 by hand, so it
//! shares no code with Conveyor's signing module).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    body::Bytes,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
    Router,
};
use base64::{engine::general_purpose::STANDARD, Engine};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// How a receiver path answers.
#[derive(Clone, Debug)]
pub enum Behave {
    Ok,
    /// Always this status.
    Status(u16),
    /// 500 for the first n requests of each webhook-id, then 200.
    FailFirst(usize),
    /// Sleeps, then 200.
    Sleep(Duration),
    /// 429 with `Retry-After: secs` on the first request of each webhook-id, then 200.
    RetryAfterFirst(u64),
    /// 500 at once on the first request of each webhook-id; later ones sleep, then 200.
    FailThenSleep(Duration),
}

#[derive(Clone, Debug)]
pub struct Received {
    pub id: String,
    pub timestamp: String,
    pub signatures: String,
    /// The W3C trace context header, empty when there was none.
    pub traceparent: String,
    pub body: Vec<u8>,
    pub at: Instant,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a webhook body is JSON")
    }

    pub fn event_type(&self) -> String {
        self.json()["type"].as_str().unwrap_or_default().to_owned()
    }
}

#[derive(Default)]
struct Route {
    behave: Option<Behave>,
    got: Vec<Received>,
    tries: HashMap<String, usize>,
    in_flight: usize,
    max_in_flight: usize,
    completed: usize,
}

#[derive(Clone, Default)]
pub struct Receiver {
    pub base: String,
    paths: Arc<Mutex<HashMap<String, Route>>>,
    /// Requests in flight over every path now, and the most at once.
    total: Arc<Mutex<(usize, usize)>>,
}

impl Receiver {
    pub async fn start() -> Self {
        let mut r = Receiver::default();
        let app = Router::new()
            .route("/{name}", post(handle))
            .with_state(r.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        r.base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        r
    }

    pub fn url(&self, name: &str) -> String {
        format!("{}/{name}", self.base)
    }

    pub fn set(&self, name: &str, behave: Behave) {
        self.paths
            .lock()
            .unwrap()
            .entry(name.into())
            .or_default()
            .behave = Some(behave);
    }

    pub fn received(&self, name: &str) -> Vec<Received> {
        self.paths
            .lock()
            .unwrap()
            .get(name)
            .map(|p| p.got.clone())
            .unwrap_or_default()
    }

    /// Requests that have been answered, and the most in flight at once.
    pub fn completed_and_max_in_flight(&self, name: &str) -> (usize, usize) {
        let paths = self.paths.lock().unwrap();
        paths
            .get(name)
            .map(|p| (p.completed, p.max_in_flight))
            .unwrap_or_default()
    }

    /// The most requests in flight at once over every path of this receiver.
    pub fn max_in_flight_total(&self) -> usize {
        self.total.lock().unwrap().1
    }

    /// Waits until `pred` holds for what the path received (at most `secs`).
    pub async fn wait_until(
        &self,
        name: &str,
        secs: u64,
        what: &str,
        pred: impl Fn(&[Received]) -> bool,
    ) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let got = self.received(name);
            if pred(&got) {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "{name}: {what} not seen after {secs}s; got {} requests",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for at least `n` requests.
    pub async fn wait_for(&self, name: &str, n: usize, secs: u64) -> Vec<Received> {
        self.wait_until(name, secs, &format!("{n} requests"), |g| g.len() >= n)
            .await
    }
}

async fn handle(
    State(r): State<Receiver>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let h = |k: &str| {
        headers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let got = Received {
        id: h("webhook-id"),
        timestamp: h("webhook-timestamp"),
        signatures: h("webhook-signature"),
        traceparent: h("traceparent"),
        body: body.to_vec(),
        at: Instant::now(),
    };
    let (behave, try_no) = {
        let mut paths = r.paths.lock().unwrap();
        let p = paths.entry(name.clone()).or_default();
        let t = p.tries.entry(got.id.clone()).or_default();
        *t += 1;
        let try_no = *t;
        p.got.push(got);
        p.in_flight += 1;
        p.max_in_flight = p.max_in_flight.max(p.in_flight);
        let mut total = r.total.lock().unwrap();
        total.0 += 1;
        total.1 = total.1.max(total.0);
        (p.behave.clone().unwrap_or(Behave::Ok), try_no)
    };
    let resp = match behave {
        Behave::Ok => (StatusCode::OK, "ok").into_response(),
        Behave::Status(s) => (StatusCode::from_u16(s).unwrap(), "no").into_response(),
        Behave::FailFirst(n) if try_no <= n => {
            (StatusCode::INTERNAL_SERVER_ERROR, "not yet").into_response()
        }
        Behave::FailFirst(_) => (StatusCode::OK, "ok").into_response(),
        Behave::Sleep(d) => {
            tokio::time::sleep(d).await;
            (StatusCode::OK, "slept").into_response()
        }
        Behave::RetryAfterFirst(secs) if try_no == 1 => (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", secs.to_string())],
            "slow down",
        )
            .into_response(),
        Behave::RetryAfterFirst(_) => (StatusCode::OK, "ok").into_response(),
        Behave::FailThenSleep(_) if try_no == 1 => {
            (StatusCode::INTERNAL_SERVER_ERROR, "not yet").into_response()
        }
        Behave::FailThenSleep(d) => {
            tokio::time::sleep(d).await;
            (StatusCode::OK, "slept").into_response()
        }
    };
    let mut paths = r.paths.lock().unwrap();
    let p = paths.get_mut(&name).unwrap();
    p.in_flight -= 1;
    p.completed += 1;
    r.total.lock().unwrap().0 -= 1;
    resp
}

/// HMAC-SHA256 (RFC 2104) from SHA-256 alone.
fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let ipad: Vec<u8> = block.iter().map(|b| b ^ 0x36).collect();
    let opad: Vec<u8> = block.iter().map(|b| b ^ 0x5c).collect();
    let inner = Sha256::new()
        .chain_update(&ipad)
        .chain_update(msg)
        .finalize();
    Sha256::new()
        .chain_update(&opad)
        .chain_update(inner)
        .finalize()
        .into()
}

/// The `v1,…` signature the spec gives for this secret and message.
pub fn expected_signature(secret: &str, id: &str, timestamp: &str, body: &[u8]) -> String {
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").expect("a whsec_ secret"))
        .unwrap();
    let mut signed = format!("{id}.{timestamp}.").into_bytes();
    signed.extend_from_slice(body);
    format!("v1,{}", STANDARD.encode(hmac_sha256(&key, &signed)))
}

/// Whether the request carries a valid signature by `secret`, and a fresh timestamp.
pub fn signed_by(r: &Received, secret: &str) -> bool {
    let ts: i64 = r.timestamp.parse().expect("webhook-timestamp is a number");
    let now = chrono::Utc::now().timestamp();
    let expected = expected_signature(secret, &r.id, &r.timestamp, &r.body);
    (now - ts).abs() < 300 && r.signatures.split(' ').any(|s| s == expected)
}

#[test]
fn the_independent_hmac_matches_the_spec_example() {
    assert_eq!(
        expected_signature(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            "1614265330",
            br#"{"test": 2432232314}"#
        ),
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    );
}

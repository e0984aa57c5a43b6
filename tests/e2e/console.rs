//! The web console in headless Chromium: sign in, see a dead job, replay it, see it succeed;
//! screenshots of the main pages go to `target/console-screenshots/`.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use conveyor_core::JobStatus;
use reqwest::{header, StatusCode};
use serde_json::json;

use crate::{browser::Browser, harness::TestApp};

fn screenshots() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshots")
}

#[tokio::test]
async fn an_operator_signs_in_sees_a_dead_job_replays_it_and_sees_it_succeed() {
    let app = TestApp::start().await;
    // Dies on its first attempt; a second one succeeds.
    let dead = app
        .submit(json!({"type": "fail", "payload": {"times": 1, "permanent": true, "message": "<b>boom</b>"}}))
        .await;
    assert_eq!(app.wait_terminal(dead.id, 30).await.status, JobStatus::Dead);
    // Something on the other pages.
    app.submit(json!({"type": "echo", "payload": {"hello": "console"}}))
        .await;
    let (s, _) = app
        .post(
            "/v1/schedules",
            &json!({"name": "nightly", "cron": "0 0 3 * * *", "job": {"type": "echo"}}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, _) = app
        .post(
            "/v1/sagas",
            &json!({"name": "order", "steps": [{"name": "a", "job": {"type": "echo"}}]}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let (s, _) = app
        .post(
            "/v1/endpoints",
            &json!({"url": "http://127.0.0.1:9/hooks", "event_types": ["job.dead"]}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);

    let shots = screenshots();
    let b = Browser::start().await;
    // Signed out, every page leads to the sign-in page; a wrong key is refused.
    b.goto(&format!("{}/ui/dead-letters", app.url)).await;
    assert!(b.url().await.ends_with("/ui/login"), "{}", b.url().await);
    b.type_into("#key", "cvk_not_a_key").await;
    b.click("#sign-in").await;
    b.wait_url("/ui/login?error=unknown+or+revoked+API+key")
        .await;
    assert!(b.text("#error").await.contains("unknown or revoked"));
    b.screenshot(&shots, "01-sign-in").await;

    b.type_into("#key", &app.key).await;
    b.click("#sign-in").await;
    b.wait_url("/ui").await;
    // The browser holds a session id, never the key.
    let cookies = b.cookies().await;
    assert!(
        cookies.iter().all(|(_, v, _)| !v.contains(&app.key[4..])),
        "{cookies:?}"
    );
    assert!(
        cookies
            .iter()
            .any(|(n, _, http_only)| n == "conveyor_session" && *http_only),
        "{cookies:?}"
    );
    let queues = b.text("#queues").await;
    assert!(queues.contains("default"), "{queues}");
    b.screenshot(&shots, "02-queues").await;

    b.goto(&format!("{}/ui/dead-letters", app.url)).await;
    let dead_list = b.text("#dead").await;
    assert!(dead_list.contains(&dead.id.to_string()), "{dead_list}");
    // The error text is shown as text: the markup in it is escaped, not rendered.
    assert!(dead_list.contains("<b>boom</b>"), "{dead_list}");
    b.screenshot(&shots, "03-dead-letters").await;

    b.click(&format!("button.replay[data-job=\"{}\"]", dead.id))
        .await;
    b.wait_url("?notice=replayed%3A+the+job+is+queued+again")
        .await;
    assert!(b.text("#notice").await.contains("replayed"));
    assert_eq!(
        app.wait_terminal(dead.id, 30).await.status,
        JobStatus::Succeeded
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        b.goto(&format!("{}/ui/jobs/{}", app.url, dead.id)).await;
        if b.text("#status").await == "succeeded" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the job page never showed success"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let attempts = b.text("#attempts").await;
    assert!(
        attempts.contains("failed") && attempts.contains("succeeded"),
        "{attempts}"
    );
    b.screenshot(&shots, "04-job-replayed").await;

    // A remote worker of a declared type, seen by its first lease.
    app.api
        .declare_job_type("render-pdf", &Default::default())
        .await
        .unwrap();
    let (status, _) = app
        .post(
            "/v1/workers/lease",
            &json!({"worker": "pdf-worker-7", "types": ["render-pdf"]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    for (path, name, marker) in [
        ("/ui/jobs", "05-jobs", "echo"),
        ("/ui/endpoints", "06-endpoints", "127.0.0.1:9/hooks"),
        ("/ui/schedules", "07-schedules", "nightly"),
        ("/ui/sagas", "08-sagas", "order"),
        ("/ui/workers", "09-workers", "pdf-worker-7"),
    ] {
        b.goto(&format!("{}{path}", app.url)).await;
        let html = b.source().await;
        assert!(html.contains(marker), "{path} should show {marker}");
        b.screenshot(&shots, name).await;
    }
    // Keys: a form without a name or a scope is refused, naming both, and makes nothing.
    let keys_before = app.count("SELECT count(*) FROM api_keys").await;
    b.goto(&format!("{}/ui/keys", app.url)).await;
    b.click("#create-key").await;
    // The refusal comes back at the same URL: wait for its page, not for an address (the
    // click may return before the answer has replaced the form, seen once in CI).
    let deadline = Instant::now() + Duration::from_secs(10);
    let refused = loop {
        let page = b.source().await;
        if page.contains(r#"id="problem""#) || Instant::now() > deadline {
            break page;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for field in ["<code>name</code>", "<code>scopes</code>"] {
        assert!(refused.contains(field), "no {field} in the refusal");
    }
    assert_eq!(
        app.count("SELECT count(*) FROM api_keys").await,
        keys_before
    );
    // Then make one (shown once, on the page), and revoke it.
    b.goto(&format!("{}/ui/keys", app.url)).await;
    b.type_into("#new-key-form input[name=name]", "console-made")
        .await;
    b.click("input[name=\"scope:jobs:read\"]").await;
    b.click("#create-key").await;
    let made = b.text("#key-value").await;
    assert!(
        conveyor_core::store::looks_like_key(made.trim()),
        "{made:?}"
    );
    b.screenshot(&shots, "09-keys").await;
    let resp = app
        .client
        .get(format!("{}/v1/jobs", app.url))
        .bearer_auth(made.trim())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "the new key works");
    let (_, listed) = app.get("/v1/keys").await;
    let made_id = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "console-made")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    b.goto(&format!("{}/ui/keys", app.url)).await;
    b.click(&format!("button.revoke[data-key=\"{made_id}\"]"))
        .await;
    b.wait_url("+revoked").await;
    let resp = app
        .client
        .get(format!("{}/v1/jobs", app.url))
        .bearer_auth(made.trim())
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::UNAUTHORIZED,
        "revoked from the console"
    );

    b.click("#logout").await;
    b.wait_url("/ui/login").await;
    b.quit().await;
    app.stop().await;
}

/// A console session over plain HTTP, as a browser would hold it.
struct Session {
    cookie: String,
    csrf: String,
}

/// The hidden CSRF field's value in a page.
fn csrf_in(html: &str) -> String {
    let needle = "name=\"csrf\" value=\"";
    let at = html.find(needle).expect("a CSRF field") + needle.len();
    html[at..at + 64].to_owned()
}

async fn sign_in(app: &TestApp, key: &str) -> Session {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let page = http
        .get(format!("{}/ui/login", app.url))
        .send()
        .await
        .unwrap();
    let login_cookie = page.headers()[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let token = csrf_in(&page.text().await.unwrap());
    let resp = http
        .post(format!("{}/ui/login", app.url))
        .header(header::COOKIE, &login_cookie)
        .form(&[("key", key), ("csrf", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER, "signing in");
    let cookie = resp
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned())
        .find(|c| c.starts_with("conveyor_session=") && c.len() > "conveyor_session=".len())
        .expect("a session cookie");
    let home = http
        .get(format!("{}/ui", app.url))
        .header(header::COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(home.status(), StatusCode::OK);
    Session {
        csrf: csrf_in(&home.text().await.unwrap()),
        cookie,
    }
}

/// The console's cookie holds a session id that signing out (or revoking the key) ends, not
/// the API key; every form needs the session's token (a POST without `Origin` and token used
/// to pass); pages cannot be framed; and the key's rate limit applies to pages.
#[tokio::test]
async fn console_sessions_end_on_sign_out_and_forms_need_their_token() {
    let app = TestApp::start_with(conveyor::app::Roles::API, |_| {}).await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let s = sign_in(&app, &app.key).await;
    assert!(!s.cookie.contains(&app.key[4..]), "{}", s.cookie);
    let get = |path: &str, cookie: &str| {
        http.get(format!("{}{path}", app.url))
            .header(header::COOKIE, cookie)
            .send()
    };
    let page = get("/ui/jobs", &s.cookie).await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let csp = page.headers()[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap();
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(page.headers()[header::X_FRAME_OPTIONS], "DENY");

    // A form without the token is refused, with or without an Origin; with it, it works.
    let pause = format!("{}/ui/queues/default/pause", app.url);
    for origin in [None, Some(app.url.as_str())] {
        for token in [
            "",
            "0000000000000000000000000000000000000000000000000000000000000000",
        ] {
            let mut req = http
                .post(&pause)
                .header(header::COOKIE, &s.cookie)
                .form(&[("csrf", token)]);
            if let Some(o) = origin {
                req = req.header(header::ORIGIN, o);
            }
            assert_eq!(req.send().await.unwrap().status(), StatusCode::FORBIDDEN);
        }
    }
    let (_, queues) = app.get("/v1/queues").await;
    assert_eq!(
        queues["data"][0]["paused"], false,
        "a refused form changed something"
    );
    let ok = http
        .post(&pause)
        .header(header::COOKIE, &s.cookie)
        .form(&[("csrf", s.csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::SEE_OTHER);
    let (_, queues) = app.get("/v1/queues").await;
    assert_eq!(queues["data"][0]["paused"], true);
    // From another origin, even with the token.
    let resp = http
        .post(format!("{}/ui/queues/default/resume", app.url))
        .header(header::COOKIE, &s.cookie)
        .header(header::ORIGIN, "http://evil.example")
        .form(&[("csrf", s.csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    // A sign-in posted without the sign-in page's own token is refused too.
    let resp = http
        .post(format!("{}/ui/login", app.url))
        .form(&[("key", app.key.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);

    // Signing out ends the session wherever its id was copied.
    let out = http
        .post(format!("{}/ui/logout", app.url))
        .header(header::COOKIE, &s.cookie)
        .form(&[("csrf", s.csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    let after = get("/ui/jobs", &s.cookie).await.unwrap();
    assert_eq!(after.status(), StatusCode::SEE_OTHER);
    assert_eq!(after.headers()[header::LOCATION], "/ui/login");

    // Revoking the key ends its sessions; a slow key's rate holds on pages.
    let (_, made) = app
        .post(
            "/v1/keys",
            &json!({"name": "slow reader", "scopes": ["jobs:read"], "rate_limit_per_second": 1}),
        )
        .await;
    let slow = sign_in(&app, made["key"].as_str().unwrap()).await;
    let mut limited = false;
    for _ in 0..5 {
        if get("/ui/jobs", &slow.cookie).await.unwrap().status() == StatusCode::TOO_MANY_REQUESTS {
            limited = true;
            break;
        }
    }
    assert!(limited, "five pages at once passed a key limited to 1/s");
    let (status, _) = app
        .request(
            reqwest::Method::DELETE,
            &format!("/v1/keys/{}", made["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let after = get("/ui/jobs", &slow.cookie).await.unwrap();
    assert_eq!(
        after.status(),
        StatusCode::SEE_OTHER,
        "a revoked key's session lives on"
    );
    app.stop().await;
}

/// `/docs`: the document as a page to read, in Chromium, with nothing from elsewhere (the
/// browser would wait on a fetch it could not make; this machine has no internet either).
#[tokio::test]
async fn the_api_reference_at_docs_reads_in_a_browser() {
    let app = TestApp::start().await;
    let b = Browser::start().await;
    b.goto(&format!("{}/docs", app.url)).await;
    assert_eq!(b.text("#base-url").await, app.url);
    let heading = b.text("#submit_job h3").await;
    assert!(heading.contains("/v1/jobs"), "{heading}");
    let source = b.source().await;
    for needle in [
        "id=\"schema-SubmitJob\"",
        "id=\"list_jobs\"",
        "job.succeeded",
        "This deployment runs",
    ] {
        assert!(source.contains(needle), "no {needle} on /docs");
    }
    b.goto(&format!("{}/docs#schema-Job", app.url)).await;
    b.screenshot(&screenshots(), "20-api-reference").await;
    b.quit().await;
    app.stop().await;
}

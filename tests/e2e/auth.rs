//! Keys: missing or unknown → 401, wrong scope → 403, another tenant's job → 404.

use conveyor_core::Scope;
use reqwest::StatusCode;
use serde_json::json;

use crate::harness::{echo, TestApp};

#[tokio::test]
async fn keys_scopes_and_tenant_isolation() {
    let app = TestApp::start_with(conveyor::app::Roles::API, |_| {}).await;
    let job = app.submit(echo(json!({"secret": "acme's"}))).await;
    let url = |p: &str| format!("{}{p}", app.url);

    // No key, a malformed header, an unknown key.
    let resp = app.client.get(url("/v1/jobs")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    let resp = app
        .client
        .get(url("/v1/jobs"))
        .header("authorization", "Basic Zm9vOmJhcg==")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let resp = app
        .client
        .get(url("/v1/jobs"))
        .bearer_auth("cvy_0000")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);

    // A read-only key cannot submit or cancel, but can read.
    let reader = app.key_for("acme", &[Scope::JobsRead]).await;
    let resp = app
        .client
        .post(url("/v1/jobs"))
        .bearer_auth(&reader)
        .json(&echo(json!(1)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let resp = app
        .client
        .post(url(&format!("/v1/jobs/{}/cancel", job.id)))
        .bearer_auth(&reader)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let resp = app
        .client
        .get(url(&format!("/v1/jobs/{}", job.id)))
        .bearer_auth(&reader)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    // A write-only key cannot read.
    let writer = app.key_for("acme", &[Scope::JobsWrite]).await;
    let resp = app
        .client
        .get(url("/v1/jobs"))
        .bearer_auth(&writer)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);

    // Another tenant sees none of acme's jobs, by id or by listing, and cannot cancel them.
    let other = app.key_for("globex", &[Scope::Admin]).await;
    for path in [
        format!("/v1/jobs/{}", job.id),
        format!("/v1/jobs/{}/attempts", job.id),
    ] {
        let resp = app
            .client
            .get(url(&path))
            .bearer_auth(&other)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{path}");
    }
    let resp = app
        .client
        .post(url(&format!("/v1/jobs/{}/cancel", job.id)))
        .bearer_auth(&other)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let list: serde_json::Value = app
        .client
        .get(url("/v1/jobs"))
        .bearer_auth(&other)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["data"].as_array().unwrap().len(), 0);
    // The same idempotency key in two tenants makes two jobs.
    for key in [&app.key, &other] {
        let resp = app
            .client
            .post(url("/v1/jobs"))
            .bearer_auth(key)
            .header("Idempotency-Key", "shared")
            .json(&echo(json!(1)))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::ACCEPTED);
    }

    // Keys are stored hashed: the clear key is nowhere in the table.
    let stored: Vec<Vec<u8>> = sqlx::query_scalar("SELECT key_hash FROM api_keys")
        .fetch_all(app.store.pool())
        .await
        .unwrap();
    assert!(stored
        .iter()
        .all(|h| h.len() == 32 && h.as_slice() != app.key.as_bytes()));
    app.stop().await;
}

/// Keys over the API: made (never with more than the maker has), listed (never the key
/// itself), used (`last_used_at`), revoked (refused at once, never by itself), expired, and
/// every change in the audit log.
#[tokio::test]
async fn keys_are_made_listed_revoked_and_expire_over_the_api() {
    use reqwest::Method;
    let app = TestApp::start_with(conveyor::app::Roles::API, |_| {}).await;
    let (status, made) = app
        .post(
            "/v1/keys",
            &json!({"name": "billing service", "scopes": ["jobs:write", "jobs:read"],
                    "rate_limit_per_second": 50}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    let key = made["key"].as_str().unwrap().to_owned();
    let id = made["id"].as_str().unwrap().to_owned();
    assert!(key.starts_with(made["prefix"].as_str().unwrap()));
    assert_eq!(made["scopes"], json!(["jobs:write", "jobs:read"]));
    // It works, with its scopes only.
    let (status, _) = app
        .request_as(&key, Method::POST, "/v1/jobs", Some(&echo(json!(1))))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, _) = app.request_as(&key, Method::GET, "/v1/keys", None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Listed without the key; its last use shows once usage is stored (every 5 s).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let listed = loop {
        let (status, page) = app.get("/v1/keys").await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let k = page["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["id"] == id.as_str())
            .cloned()
            .unwrap();
        if !k["last_used_at"].is_null() {
            break page;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "last_used_at never set: {k}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    };
    assert!(
        !listed.to_string().contains(&key[4..]),
        "the key itself is listed"
    );
    assert_eq!(listed["data"].as_array().unwrap().len(), 2, "{listed}");

    // Never more than the maker: the operator scope, a rate above its own.
    let (status, p) = app
        .post("/v1/keys", &json!({"name": "x", "scopes": ["operator"]}))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{p}");
    let limited = made["key"].as_str().unwrap();
    let admin50 = {
        let (_, k) = app
            .post(
                "/v1/keys",
                &json!({"name": "limited admin", "scopes": ["admin"], "rate_limit_per_second": 50}),
            )
            .await;
        k["key"].as_str().unwrap().to_owned()
    };
    let (status, p) = app
        .request_as(
            &admin50,
            Method::POST,
            "/v1/keys",
            Some(&json!({"name": "faster", "scopes": ["jobs:read"], "rate_limit_per_second": 51})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{p}");
    assert_eq!(p["errors"][0]["field"], "rate_limit_per_second");
    // Without a rate of its own, it inherits its maker's.
    let (_, inherited) = app
        .request_as(
            &admin50,
            Method::POST,
            "/v1/keys",
            Some(&json!({"name": "inherits", "scopes": ["jobs:read"]})),
        )
        .await;
    assert_eq!(inherited["rate_limit_per_second"], 50, "{inherited}");
    for (body, field) in [
        (json!({"name": "", "scopes": ["jobs:read"]}), "name"),
        (json!({"name": "x", "scopes": []}), "scopes"),
        (json!({"name": "x", "scopes": ["root"]}), "scopes[0]"),
        (
            json!({"name": "x", "scopes": ["jobs:read", "jobs:read"]}),
            "scopes[1]",
        ),
        (
            json!({"name": "x", "scopes": ["jobs:read"], "expires_at": "2001-01-01T00:00:00Z"}),
            "expires_at",
        ),
        (
            json!({"name": "x", "scopes": ["jobs:read"], "expires_at": "soon"}),
            "expires_at",
        ),
        (json!({"name": "x", "scopes": "jobs:read"}), "scopes"),
        (
            json!({"name": "x", "scopes": ["jobs:read"], "owner": "me"}),
            "owner",
        ),
    ] {
        app.assert_rejects(Method::POST, "/v1/keys", &body, field)
            .await;
    }

    // Revoked: refused from the answer on, by this process at once.
    let (status, p) = app
        .request(
            Method::DELETE,
            &format!("/v1/keys/{}", key_id(&app).await),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "a key revoking itself: {p}");
    let (status, revoked) = app
        .request(Method::DELETE, &format!("/v1/keys/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{revoked}");
    assert!(!revoked["revoked_at"].is_null());
    let (status, _) = app.request_as(limited, Method::GET, "/v1/jobs", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let other = app.key_for("globex", &[Scope::Admin]).await;
    let (status, _) = app
        .request_as(&other, Method::DELETE, &format!("/v1/keys/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "another tenant's key");

    // Expired: refused once its time has come.
    let soon = (chrono::Utc::now() + chrono::Duration::milliseconds(1500)).to_rfc3339();
    let (_, short) = app
        .post(
            "/v1/keys",
            &json!({"name": "short", "scopes": ["jobs:read"], "expires_at": soon}),
        )
        .await;
    let short = short["key"].as_str().unwrap().to_owned();
    assert_eq!(
        app.request_as(&short, Method::GET, "/v1/jobs", None)
            .await
            .0,
        StatusCode::OK
    );
    tokio::time::sleep(std::time::Duration::from_millis(1700)).await;
    assert_eq!(
        app.request_as(&short, Method::GET, "/v1/jobs", None)
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );

    let (_, audit) = app.get("/v1/audit-log").await;
    let actions: Vec<&str> = audit["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions.iter().filter(|a| **a == "key.created").count(),
        4,
        "{actions:?}"
    );
    assert_eq!(actions.iter().filter(|a| **a == "key.revoked").count(), 1);
    app.stop().await;
}

/// The id of the app's own key.
async fn key_id(app: &TestApp) -> String {
    sqlx::query_scalar::<_, uuid::Uuid>("SELECT id FROM api_keys WHERE key_hash = $1")
        .bind(conveyor_core::store::hash_key(&app.key))
        .fetch_one(app.store.pool())
        .await
        .unwrap()
        .to_string()
}

/// A key revoked through one API process is refused by another within a second, although
/// the other had it cached (for up to 30 s, before revocations were announced).
#[tokio::test]
async fn a_revoked_key_is_refused_by_every_api_process_within_a_second() {
    use reqwest::Method;
    let app = TestApp::start_with(conveyor::app::Roles::API, |_| {}).await;
    let one = app.spawn_conveyor("api", &[]).await;
    let two = app.spawn_conveyor("api", &[]).await;
    let http = reqwest::Client::new();
    let (_, made) = app
        .post(
            "/v1/keys",
            &json!({"name": "doomed", "scopes": ["jobs:read"]}),
        )
        .await;
    let doomed = made["key"].as_str().unwrap().to_owned();
    // Both processes verify (and cache) it.
    for base in [&one.base, &two.base] {
        let status = http
            .get(format!("{base}/v1/jobs"))
            .bearer_auth(&doomed)
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, StatusCode::OK);
    }
    let resp = http
        .delete(format!(
            "{}/v1/keys/{}",
            one.base,
            made["id"].as_str().unwrap()
        ))
        .bearer_auth(&app.key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let revoked_at = std::time::Instant::now();
    assert_eq!(
        app.request_as(&doomed, Method::GET, "/v1/jobs", None)
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    loop {
        let status = http
            .get(format!("{}/v1/jobs", two.base))
            .bearer_auth(&doomed)
            .send()
            .await
            .unwrap()
            .status();
        if status == StatusCode::UNAUTHORIZED {
            break;
        }
        assert!(
            revoked_at.elapsed() < std::time::Duration::from_secs(1),
            "still accepted {:?} after the revocation",
            revoked_at.elapsed()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    println!(
        "refused by the other process after {:?}",
        revoked_at.elapsed()
    );
    one.stop().await;
    two.stop().await;
    app.stop().await;
}

/// A key revoked while an API process's notification listener was disconnected (so the
/// announcement never reached it) is still refused within moments: a lost connection empties
/// the key cache. (sqlx's `recv` used to reconnect silently, keeping keys cached for 30 s.)
#[tokio::test]
async fn a_revocation_missed_while_the_listener_reconnects_still_holds() {
    let app = TestApp::start_with(conveyor::app::Roles::API, |_| {}).await;
    let api = app.spawn_conveyor("api", &[]).await;
    let key = app.key_for("acme", &[Scope::JobsRead]).await;
    let http = reqwest::Client::new();
    let status = |k: String| {
        let req = http.get(format!("{}/v1/jobs", api.base)).bearer_auth(k);
        async move { req.send().await.unwrap().status() }
    };
    assert_eq!(status(key.clone()).await, StatusCode::OK); // cached now
                                                           // Cut every listener's connection, and revoke with no announcement at all.
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = current_database() AND query ILIKE 'LISTEN%'",
    )
    .execute(app.store.pool())
    .await
    .unwrap();
    sqlx::query("UPDATE api_keys SET revoked_at = now() WHERE key_hash = $1")
        .bind(conveyor_core::store::hash_key(&key))
        .execute(app.store.pool())
        .await
        .unwrap();
    let revoked = std::time::Instant::now();
    while status(key.clone()).await != StatusCode::UNAUTHORIZED {
        assert!(
            revoked.elapsed() < std::time::Duration::from_secs(3),
            "a revoked key still accepted after {:?}",
            revoked.elapsed()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    api.stop().await;
    app.stop().await;
}

/// No key outlives the key that made it, and operator keys have a lifecycle too: an operator
/// key lists, makes (with an expiry) and revokes operator keys over the API, and grants no
/// tenant's scope.
#[tokio::test]
async fn keys_expire_no_later_than_their_maker_and_operator_keys_have_a_lifecycle() {
    use reqwest::Method;
    let app = TestApp::start_with(conveyor::app::Roles::API, |_| {}).await;
    let tomorrow = chrono::Utc::now() + chrono::Duration::days(1);
    let (_, maker) = app
        .post(
            "/v1/keys",
            &json!({"name": "temporary admin", "scopes": ["admin"], "expires_at": tomorrow.to_rfc3339()}),
        )
        .await;
    let maker = maker["key"].as_str().unwrap().to_owned();
    let (status, made) = app
        .request_as(
            &maker,
            Method::POST,
            "/v1/keys",
            Some(&json!({"name": "child", "scopes": ["jobs:read"]})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    let inherited: chrono::DateTime<chrono::Utc> =
        made["expires_at"].as_str().unwrap().parse().unwrap();
    assert!((inherited - tomorrow).num_seconds().abs() <= 1, "{made}");
    let later = (tomorrow + chrono::Duration::days(30)).to_rfc3339();
    let (status, p) = app
        .request_as(
            &maker,
            Method::POST,
            "/v1/keys",
            Some(&json!({"name": "outliver", "scopes": ["jobs:read"], "expires_at": later})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{p}");
    assert_eq!(p["errors"][0]["field"], "expires_at");

    let operator = app.operator_key().await;
    let (status, other_op) = app
        .request_as(
            &operator,
            Method::POST,
            "/v1/keys",
            Some(&json!({"name": "night shift", "scopes": ["operator"], "expires_at": tomorrow.to_rfc3339()})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{other_op}");
    let (status, _) = app
        .request_as(
            &operator,
            Method::POST,
            "/v1/keys",
            Some(&json!({"name": "sneaky", "scopes": ["admin"]})),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "an operator grants no tenant's scope"
    );
    let (status, listed) = app
        .request_as(&operator, Method::GET, "/v1/keys", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<&str> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"night shift"), "{listed}");
    assert!(
        !names.contains(&"temporary admin"),
        "a tenant's key listed to the operator"
    );
    let (status, _) = app
        .request_as(
            &operator,
            Method::DELETE,
            &format!("/v1/keys/{}", other_op["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = app
        .request_as(
            other_op["key"].as_str().unwrap(),
            Method::GET,
            "/v1/queues",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    app.stop().await;
}

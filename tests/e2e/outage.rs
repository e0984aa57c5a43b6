//! RabbitMQ outages: jobs submitted while the broker is down are accepted (the outbox holds
//! them) and run once it is back. The broker here is a throwaway node on its own port.

use std::{path::PathBuf, process::Command, time::Duration};

use conveyor::app::Roles;
use conveyor_core::JobStatus;
use reqwest::StatusCode;
use serde_json::json;
use uuid::Uuid;

use crate::harness::{echo, TestApp};

/// A RabbitMQ node of its own: own node name, port, data directory (owned by `rabbitmq`).
struct ThrowawayRabbit {
    node: String,
    port: u16,
    dir: PathBuf,
}

impl ThrowawayRabbit {
    fn new() -> Self {
        let port = free_port();
        let node = format!(
            "cvytest{}@localhost",
            &Uuid::new_v4().simple().to_string()[..8]
        );
        let dir = std::env::temp_dir().join(format!("conveyor-rabbit-{port}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("mnesia")).unwrap();
        std::fs::create_dir_all(dir.join("log")).unwrap();
        std::fs::write(dir.join("enabled_plugins"), "[].\n").unwrap();
        std::fs::write(
            dir.join("rabbitmq.conf"),
            format!("listeners.tcp.local = 127.0.0.1:{port}\n"),
        )
        .unwrap();
        let ok = Command::new("chown")
            .args(["-R", "rabbitmq:rabbitmq"])
            .arg(&dir)
            .status()
            .unwrap();
        assert!(
            ok.success(),
            "chown of the throwaway RabbitMQ's directory failed"
        );
        Self { node, port, dir }
    }

    fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    fn pid_file(&self) -> PathBuf {
        self.dir.join("node.pid")
    }

    async fn start(&self) {
        let d = |p: &str| self.dir.join(p).display().to_string();
        let status = Command::new("runuser")
            .args(["-u", "rabbitmq", "--", "env", "HOME=/var/lib/rabbitmq"])
            .arg(format!("RABBITMQ_NODENAME={}", self.node))
            .arg(format!("RABBITMQ_NODE_PORT={}", self.port))
            .arg(format!("RABBITMQ_DIST_PORT={}", self.port as u32 + 20000))
            .arg(format!("RABBITMQ_MNESIA_BASE={}", d("mnesia")))
            .arg(format!("RABBITMQ_LOG_BASE={}", d("log")))
            .arg(format!("RABBITMQ_PID_FILE={}", self.pid_file().display()))
            .arg(format!(
                "RABBITMQ_ENABLED_PLUGINS_FILE={}",
                d("enabled_plugins")
            ))
            .arg(format!("RABBITMQ_CONFIG_FILE={}", d("rabbitmq.conf")))
            .args(["/usr/lib/rabbitmq/bin/rabbitmq-server", "-detached"])
            .status()
            .expect("starting a throwaway RabbitMQ");
        assert!(status.success());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
        while conveyor_core::broker::connect(&self.url(), "probe")
            .await
            .is_err()
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "throwaway RabbitMQ on {} did not start; see {}",
                self.port,
                d("log")
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn stop(&self) {
        let Some(pid) = std::fs::read_to_string(self.pid_file())
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
        else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while std::path::Path::new(&format!("/proc/{pid}")).exists() {
            if tokio::time::Instant::now() > deadline {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for ThrowawayRabbit {
    fn drop(&mut self) {
        if let Some(pid) = std::fs::read_to_string(self.pid_file())
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
        {
            if std::path::Path::new(&format!("/proc/{pid}")).exists() {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    // Ask the kernel for a free port in the ephemeral range; RabbitMQ binds it moments later.
    // The distribution port (port + 20000) must fit too.
    loop {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        if port < 45000 {
            return port;
        }
    }
}

async fn outbox_rows(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(app.store.pool())
        .await
        .unwrap()
}

#[tokio::test]
async fn jobs_accepted_while_rabbitmq_is_down_run_when_it_is_back() {
    let rabbit = ThrowawayRabbit::new();
    rabbit.start().await;
    let app = TestApp::start_with(Roles::ALL, |c| c.amqp_url = rabbit.url()).await;
    let before = app.submit(echo(json!("before"))).await;
    assert_eq!(
        app.wait_terminal(before.id, 30).await.status,
        JobStatus::Succeeded
    );

    rabbit.stop().await;
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(app.submit(echo(json!({"during": i}))).await.id);
    }
    // Nothing could be published: every job waits in the outbox, and the API says it is not ready.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(outbox_rows(&app).await, 20);
    let ready = app
        .client
        .get(format!("{}/readyz", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);

    rabbit.start().await;
    for id in &ids {
        let done = app.wait_terminal(*id, 90).await;
        assert_eq!(done.status, JobStatus::Succeeded, "job {id}");
        assert_eq!(done.attempts, 1);
    }
    assert_eq!(outbox_rows(&app).await, 0);
    // And the worker consumes again after the restart, not only the relay.
    let after = app.submit(echo(json!("after"))).await;
    assert_eq!(
        app.wait_terminal(after.id, 30).await.status,
        JobStatus::Succeeded
    );

    app.stop().await;
    rabbit.stop().await;
}

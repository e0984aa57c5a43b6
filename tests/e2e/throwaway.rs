//! Servers a test may stop and start: a RabbitMQ node and a PostgreSQL cluster of its own, on
//! their own ports and data directories, never the shared ones.

use std::{path::PathBuf, process::Command, time::Duration};

use uuid::Uuid;

/// A RabbitMQ node of its own: own node name, port, data directory (owned by `rabbitmq`).
pub struct ThrowawayRabbit {
    node: String,
    port: u16,
    dir: PathBuf,
}

impl ThrowawayRabbit {
    pub fn new() -> Self {
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
        chown(&dir, "rabbitmq");
        Self { node, port, dir }
    }

    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    fn pid_file(&self) -> PathBuf {
        self.dir.join("node.pid")
    }

    pub async fn start(&self) {
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

    pub async fn stop(&self) {
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

/// A PostgreSQL cluster of its own, made with `initdb` and run with `pg_ctl` as `postgres`.
pub struct ThrowawayPostgres {
    port: u16,
    dir: PathBuf,
    bin: PathBuf,
}

impl ThrowawayPostgres {
    pub fn new() -> Self {
        let version = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL's binaries in /usr/lib/postgresql")
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .max()
            .expect("a PostgreSQL version");
        let bin = PathBuf::from(format!("/usr/lib/postgresql/{version}/bin"));
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("conveyor-pg-{port}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        chown(&dir, "postgres");
        let data = dir.join("data");
        let ok = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(bin.join("initdb"))
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
            .arg(&data)
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(ok.success(), "initdb failed");
        Self { port, dir, bin }
    }

    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    fn pg_ctl(&self, args: &[&str]) -> bool {
        Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(args)
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap()
            .success()
    }

    pub fn start(&self) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("log").display().to_string();
        assert!(
            self.pg_ctl(&["-w", "-t", "60", "-o", &opts, "-l", &log, "start"]),
            "pg_ctl start failed; see {log}"
        );
    }

    pub fn stop(&self) {
        // `fast`: like a crash from the clients' side, every connection is cut.
        self.pg_ctl(&["-w", "-m", "fast", "stop"]);
    }
}

impl Drop for ThrowawayPostgres {
    fn drop(&mut self) {
        self.pg_ctl(&["-w", "-m", "immediate", "stop"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn chown(dir: &std::path::Path, user: &str) {
    let ok = Command::new("chown")
        .args(["-R", &format!("{user}:{user}")])
        .arg(dir)
        .status()
        .unwrap();
    assert!(ok.success(), "chown {user} {} failed", dir.display());
}

//! RabbitMQ: topology, connections and a publisher with confirms. Messages carry only a job
//! id; PostgreSQL holds the job, so a message is a wake-up call, never the state.

use std::{collections::HashSet, time::Duration};

use anyhow::Context;
use lapin::{
    options::{
        BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
        QueueDeclareOptions,
    },
    types::{AMQPValue, FieldTable},
    BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Exchange and queue names under one prefix.
#[derive(Debug, Clone)]
pub struct Topology {
    prefix: String,
    queue_type: QueueType,
}

/// The kind of RabbitMQ queue Conveyor declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum QueueType {
    /// Replicated (Raft); survives the loss of a cluster node. Falls back to classic where
    /// the broker has no quorum queues.
    Quorum,
    /// One node's durable queue: cheaper on a single-node broker.
    Classic,
}

impl Topology {
    /// Quorum queues under `prefix`.
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
            queue_type: QueueType::Quorum,
        }
    }

    pub fn from_config(cfg: &crate::Config) -> Self {
        Self {
            prefix: cfg.amqp_prefix.clone(),
            queue_type: cfg.queue_type,
        }
    }

    /// Direct exchange; the routing key is the job's queue name.
    pub fn jobs_exchange(&self) -> String {
        format!("{}.jobs", self.prefix)
    }

    /// Fanout exchange in front of the dead-letter queue.
    pub fn dead_letter_exchange(&self) -> String {
        format!("{}.dlx", self.prefix)
    }

    pub fn dead_letter_queue(&self) -> String {
        format!("{}.dead-letters", self.prefix)
    }

    pub fn job_queue(&self, queue: &str) -> String {
        format!("{}.q.{}", self.prefix, queue)
    }
}

/// The body of every job message.
#[derive(Debug, Serialize, Deserialize)]
pub struct JobMessage {
    pub job_id: Uuid,
}

pub async fn connect(url: &str, name: &str) -> anyhow::Result<Connection> {
    let props = ConnectionProperties::default().with_connection_name(name.into());
    Connection::connect(url, props)
        .await
        .context("connecting to RabbitMQ")
}

/// Declares the exchanges and the dead-letter queue. Idempotent.
pub async fn declare_base(conn: &Connection, topo: &Topology) -> anyhow::Result<()> {
    let ch = conn.create_channel().await?;
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    ch.exchange_declare(
        topo.jobs_exchange().into(),
        ExchangeKind::Direct,
        durable,
        FieldTable::default(),
    )
    .await?;
    ch.exchange_declare(
        topo.dead_letter_exchange().into(),
        ExchangeKind::Fanout,
        durable,
        FieldTable::default(),
    )
    .await?;
    let dlq = topo.dead_letter_queue();
    declare_durable_queue(conn, topo, &dlq, FieldTable::default()).await?;
    ch.queue_bind(
        dlq.into(),
        topo.dead_letter_exchange().into(),
        "".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await?;
    let _ = ch.close(200, "declared".into()).await;
    Ok(())
}

/// Declares a job queue bound to the jobs exchange. Messages it rejects go to the dead-letter
/// exchange.
pub async fn declare_job_queue(
    conn: &Connection,
    topo: &Topology,
    queue: &str,
) -> anyhow::Result<()> {
    let name = topo.job_queue(queue);
    let mut args = FieldTable::default();
    args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(topo.dead_letter_exchange().into()),
    );
    declare_durable_queue(conn, topo, &name, args).await?;
    let ch = conn.create_channel().await?;
    ch.queue_bind(
        name.into(),
        topo.jobs_exchange().into(),
        queue.into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await?;
    let _ = ch.close(200, "declared".into()).await;
    Ok(())
}

/// A quorum queue (replicated, safe on a cluster) where the broker supports it; otherwise,
/// or when the queue already exists as a classic queue, a durable classic queue.
async fn declare_durable_queue(
    conn: &Connection,
    topo: &Topology,
    name: &str,
    args: FieldTable,
) -> anyhow::Result<()> {
    let opts = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    let mut quorum = args.clone();
    quorum.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    // The configured type first; the other when the queue already exists as that (or, for
    // quorum, when the broker has none).
    let tries = match topo.queue_type {
        QueueType::Quorum => [quorum, args],
        QueueType::Classic => [args, quorum],
    };
    let mut last = None;
    for arguments in tries {
        // A refused declaration closes its channel, so each try gets its own.
        let ch = conn.create_channel().await?;
        match ch.queue_declare(name.into(), opts, arguments).await {
            Ok(_) => {
                let _ = ch.close(200, "declared".into()).await;
                return Ok(());
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.expect("two tries")).with_context(|| format!("declaring queue {name}"))
}

/// Where an outbox row goes.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// `job` (to its queue) or `dead` (to the dead-letter queue).
    pub kind: String,
    pub routing_key: String,
    pub job_id: Uuid,
    /// The job's trace, sent as the `traceparent` header: the relay has no span of its own,
    /// so the worker's attempt is a child of the span that stored the job.
    pub traceparent: Option<String>,
}

/// Publishes with confirms over one connection, made on first use and dropped on any error so
/// that the next call starts from a clean connection (broker restarts heal this way).
pub struct Publisher {
    url: String,
    topo: Topology,
    link: Option<(Connection, Channel)>,
    declared: HashSet<String>,
}

impl Publisher {
    pub fn new(url: impl Into<String>, topo: Topology) -> Self {
        Self {
            url: url.into(),
            topo,
            link: None,
            declared: HashSet::new(),
        }
    }

    pub fn is_connected(&self) -> bool {
        self.link
            .as_ref()
            .is_some_and(|(c, ch)| c.status().connected() && ch.status().connected())
    }

    /// Drops the connection; the next call makes a new one.
    pub fn disconnect(&mut self) {
        self.link = None;
    }

    pub async fn ensure_connected(&mut self) -> anyhow::Result<()> {
        if self.is_connected() {
            return Ok(());
        }
        self.link = None;
        self.declared.clear();
        let conn = tokio::time::timeout(
            Duration::from_secs(30),
            connect(&self.url, "conveyor-publisher"),
        )
        .await
        .context("timed out connecting to RabbitMQ")??;
        declare_base(&conn, &self.topo).await?;
        let ch = conn.create_channel().await?;
        ch.confirm_select(ConfirmSelectOptions::default()).await?;
        self.link = Some((conn, ch));
        Ok(())
    }

    /// Publishes every message persistently and waits for RabbitMQ's confirms. Answers, per
    /// message, whether RabbitMQ confirmed it: a queue that cannot be declared, a nack or an
    /// unroutable message fails only its own messages. An error means the connection failed
    /// and none can be counted on; the caller keeps them all to retry.
    pub async fn publish(&mut self, msgs: &[Outgoing]) -> anyhow::Result<Vec<bool>> {
        let res = self.try_publish(msgs).await;
        if res.is_err() {
            self.link = None;
        }
        res
    }

    async fn try_publish(&mut self, msgs: &[Outgoing]) -> anyhow::Result<Vec<bool>> {
        self.ensure_connected().await?;
        let (conn, ch) = self.link.as_ref().expect("connected above");
        // A message to a queue nobody declared would be dropped by the exchange, so the
        // publisher declares each job queue before its first message. Declarations use their
        // own channels: one refused leaves the publishing channel open.
        let mut undeclarable = HashSet::new();
        for m in msgs.iter().filter(|m| m.kind == "job") {
            if self.declared.contains(&m.routing_key) || undeclarable.contains(&m.routing_key) {
                continue;
            }
            match declare_job_queue(conn, &self.topo, &m.routing_key).await {
                Ok(()) => {
                    self.declared.insert(m.routing_key.clone());
                }
                Err(e) if conn.status().connected() => {
                    tracing::error!(queue = %m.routing_key, error = %format!("{e:#}"), "cannot declare queue; its messages wait in the outbox");
                    undeclarable.insert(m.routing_key.clone());
                }
                Err(e) => return Err(e),
            }
        }
        let mut confirms = Vec::with_capacity(msgs.len());
        for m in msgs {
            if m.kind == "job" && undeclarable.contains(&m.routing_key) {
                confirms.push(None);
                continue;
            }
            let exchange = match m.kind.as_str() {
                "dead" => self.topo.dead_letter_exchange(),
                _ => self.topo.jobs_exchange(),
            };
            let body = serde_json::to_vec(&JobMessage { job_id: m.job_id })?;
            let mut props = BasicProperties::default()
                .with_delivery_mode(2)
                .with_content_type("application/json".into())
                .with_message_id(m.job_id.to_string().into());
            if let Some(tp) = &m.traceparent {
                let mut headers = FieldTable::default();
                headers.insert(
                    "traceparent".into(),
                    AMQPValue::LongString(tp.as_str().into()),
                );
                props = props.with_headers(headers);
            }
            let confirm = ch
                .basic_publish(
                    exchange.into(),
                    m.routing_key.clone().into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..Default::default()
                    },
                    &body,
                    props,
                )
                .await?;
            confirms.push(Some(confirm));
        }
        let mut confirmed = Vec::with_capacity(msgs.len());
        for (m, confirm) in msgs.iter().zip(confirms) {
            let Some(confirm) = confirm else {
                confirmed.push(false);
                continue;
            };
            let confirmation = tokio::time::timeout(Duration::from_secs(30), confirm)
                .await
                .context("timed out waiting for a publisher confirm")??;
            let ok = confirmation.is_ack() && confirmation.take_message().is_none();
            if !ok {
                tracing::error!(job_id = %m.job_id, routing_key = %m.routing_key, "RabbitMQ refused or returned a message; it waits in the outbox");
            }
            confirmed.push(ok);
        }
        Ok(confirmed)
    }
}

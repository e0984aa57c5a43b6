//! Logs, and the optional OpenTelemetry export of spans.
//!
//! Logs go to stderr, pretty or JSON, filtered by `RUST_LOG`. When an OTLP endpoint is
//! configured (`OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, the
//! standard variables), the spans of requests, job attempts and deliveries are also sent
//! there over OTLP/HTTP (protobuf), in the trace of the `traceparent` they carry. The
//! exporter's other standard variables (`OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_SERVICE_NAME`,
//! `OTEL_TRACES_SAMPLER`, `OTEL_BSP_*`, …) apply as the SDK reads them.

use std::{fmt, io::IsTerminal, time::Duration};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::{trace::SdkTracerProvider, Resource};
use tracing::{field::Field, Level};
use tracing_subscriber::{
    filter::Targets,
    fmt::{format::Writer, FormatFields},
    layer::SubscriberExt,
    util::SubscriberInitExt,
    EnvFilter, Layer, Registry,
};

/// The span export, when there is one. Call [`Telemetry::shutdown`] at the end: it sends the
/// spans still batched.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

/// The environment variables that switch the export on.
const ENDPOINT_VARS: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
];

/// How long one export may take (the OTLP default).
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// Installs the global subscriber: logs in `format`, and the span export when `export` is
/// wanted and an endpoint is configured. Must run inside the Tokio runtime: exports are sent
/// on it.
pub fn init(format: &str, export: bool) -> anyhow::Result<Telemetry> {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx::postgres::notice=warn"));
    // Colours only on a terminal: a log file gets no escape codes of ours, so any it held
    // would stand out (and there are none: see `EscapedFields`).
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let logs: Box<dyn Layer<Registry> + Send + Sync> = if format == "json" {
        // JSON strings escape control characters already.
        fmt.json().with_filter(filter).boxed()
    } else {
        fmt.fmt_fields(EscapedFields).with_filter(filter).boxed()
    };
    let configured = ENDPOINT_VARS
        .iter()
        .any(|v| std::env::var(v).is_ok_and(|s| !s.trim().is_empty()));
    let provider = if export && configured {
        Some(provider()?)
    } else {
        None
    };
    // Spans are exported whatever RUST_LOG says: the log level must not decide what a
    // tracing backend sees. Info and above, without the libraries' own chatter.
    let spans = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("conveyor"))
            .with_filter(
                Targets::new()
                    .with_default(Level::INFO)
                    .with_target("sqlx", Level::WARN)
                    .with_target("lapin", Level::WARN)
                    .with_target("opentelemetry", Level::WARN),
            )
    });
    tracing_subscriber::registry().with(logs).with(spans).init();
    if provider.is_some() {
        tracing::info!("exporting spans over OTLP");
    }
    Ok(Telemetry { provider })
}

fn provider() -> anyhow::Result<SdkTracerProvider> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_timeout(EXPORT_TIMEOUT)
        .with_http_client(ReqwestOnTokio {
            client: reqwest::Client::builder().timeout(EXPORT_TIMEOUT).build()?,
            runtime: tokio::runtime::Handle::current(),
        })
        .build()?;
    let mut resource = Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name("conveyor");
    }
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build())
}

impl Telemetry {
    /// Sends the spans still batched and stops the export. Blocks, so it runs off the
    /// runtime's workers, which must keep sending meanwhile.
    pub async fn shutdown(self) {
        if let Some(p) = self.provider {
            let done = tokio::task::spawn_blocking(move || p.shutdown()).await;
            if let Ok(Err(e)) = done {
                tracing::warn!(error = %e, "could not send the last spans");
            }
        }
    }
}

/// The exporter's HTTP client: the SDK exports from its own thread, outside the runtime,
/// so each request is spawned onto the runtime and awaited from there.
#[derive(Debug)]
struct ReqwestOnTokio {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for ReqwestOnTokio {
    async fn send_bytes(
        &self,
        request: http::Request<bytes::Bytes>,
    ) -> Result<http::Response<bytes::Bytes>, opentelemetry_http::HttpError> {
        let (parts, body) = request.into_parts();
        // Built here, sent there: even creating the send future needs the runtime (its
        // timeout is a Tokio timer).
        let client = self.client.clone();
        let request = client
            .request(parts.method, parts.uri.to_string())
            .headers(parts.headers)
            .body(body)
            .build()?;
        let response = self
            .runtime
            .spawn(async move {
                let r = client.execute(request).await?;
                let mut out = http::Response::builder().status(r.status());
                if let Some(h) = out.headers_mut() {
                    *h = r.headers().clone();
                }
                let body = r.bytes().await?;
                Ok::<_, reqwest::Error>(out.body(body))
            })
            .await??;
        Ok(response?)
    }
}

/// Formats event and span fields as the default formatter does (`message` first, then
/// `name=value`), with every control character escaped: a value that comes from a user (a
/// job's error, a URL, a receiver's answer) can neither start a forged log line with a
/// newline nor recolour the terminal with an escape sequence, whatever the call site wrote.
/// A value with a space, `=` or `"` in it is quoted, so it cannot pass for fields of its own
/// (`error=boom tenant_id=…`) either.
struct EscapedFields;

impl<'w> FormatFields<'w> for EscapedFields {
    fn format_fields<R: tracing_subscriber::field::RecordFields>(
        &self,
        writer: Writer<'w>,
        fields: R,
    ) -> fmt::Result {
        let mut visitor = EscapingVisitor {
            writer,
            empty: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct EscapingVisitor<'w> {
    writer: Writer<'w>,
    empty: bool,
    result: fmt::Result,
}

impl tracing::field::Visit for EscapingVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.write(field, value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.write(field, &format!("{value:?}"));
    }

    /// An error with its causes, as the default formatter writes it.
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        let mut text = value.to_string();
        let mut source = value.source();
        while let Some(s) = source {
            text.push_str(": ");
            text.push_str(&s.to_string());
            source = s.source();
        }
        self.write(field, &text);
    }
}

impl EscapingVisitor<'_> {
    fn write(&mut self, field: &Field, value: &str) {
        if self.result.is_err() || field.name().starts_with("log.") {
            return;
        }
        let sep = if std::mem::take(&mut self.empty) {
            ""
        } else {
            " "
        };
        let name = field.name().trim_start_matches("r#");
        let quote = name != "message"
            && (value.is_empty()
                || value.contains(|c: char| c.is_whitespace() || c == '=' || c == '"'));
        self.result = match (name, quote) {
            ("message", _) => write!(self.writer, "{sep}{}", Escaped(value)),
            // Debug quotes, and escapes the quotes and backslashes inside.
            (_, true) => write!(
                self.writer,
                "{sep}{name}={}",
                Escaped(&format!("{value:?}"))
            ),
            (_, false) => write!(self.writer, "{sep}{name}={}", Escaped(value)),
        };
    }
}

/// Text with its control characters written as escapes (`\n`, `\u{1b}`).
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use fmt::Write;
        for c in self.0.chars() {
            match c {
                '\n' => f.write_str("\\n")?,
                '\r' => f.write_str("\\r")?,
                '\t' => f.write_str("\\t")?,
                c if c.is_control() => write!(f, "\\u{{{:x}}}", c as u32)?,
                c => f.write_char(c)?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Escaped;

    #[test]
    fn control_characters_are_escaped() {
        let forged = "boom\n2026-12-01T00:00:00Z  INFO forged \u{1b}[31mred\r\u{85}";
        let out = Escaped(forged).to_string();
        assert_eq!(
            out,
            "boom\\n2026-12-01T00:00:00Z  INFO forged \\u{1b}[31mred\\r\\u{85}"
        );
        assert!(!out.chars().any(char::is_control));
        assert_eq!(Escaped("plain: é ✓").to_string(), "plain: é ✓");
    }

    #[test]
    fn a_value_cannot_pass_for_fields_of_its_own() {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Buffer(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buffer {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buffer = Buffer::default();
        let out = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .fmt_fields(super::EscapedFields)
            .with_ansi(false)
            .with_writer(move || buffer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let e = "boom tenant_id=someone-else";
            tracing::info!(error = %e, plain = "ok", "attempt failed");
        });
        let line = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        assert!(
            line.contains(r#"attempt failed error="boom tenant_id=someone-else" plain=ok"#),
            "{line}"
        );
    }
}

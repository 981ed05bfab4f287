//! Logs, traces and metrics. Logs are text for development or JSON for production; traces go to
//! an OTLP collector when the standard `OTEL_EXPORTER_OTLP_*` variables name one (and nowhere
//! otherwise); metrics are rendered in the Prometheus text format. Every RPC gets one `rpc` span
//! (OpenTelemetry's `rpc.*` attributes, caller kind, organization, gRPC code, and the trace and
//! span ids its log lines carry), a request counter and a latency histogram.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::Instant;

use http::{Request, Response};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::field::Empty;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::settings::LogFormat;

/// Flushes and stops trace export when dropped (or on [`Telemetry::shutdown`]).
#[derive(Default)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports what is buffered now.
    pub fn flush(&self) {
        if let Some(p) = &self.provider {
            let _ = p.force_flush();
        }
    }

    /// Flushes and stops the exporter.
    pub fn shutdown(mut self) {
        if let Some(p) = self.provider.take() {
            let _ = p.shutdown();
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take() {
            let _ = p.shutdown();
        }
    }
}

/// Whether the environment names an OTLP endpoint for traces.
pub fn otlp_configured() -> bool {
    ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]
        .iter()
        .any(|v| std::env::var(v).is_ok_and(|s| !s.trim().is_empty()))
}

/// Installs the global subscriber: `RUST_LOG` filter (default `info`), text or JSON logs to
/// stderr, and OTLP trace export when configured. Later calls do nothing.
pub fn init(format: LogFormat) -> Telemetry {
    init_with_writer(format, std::io::stderr)
}

/// As [`init`], writing logs to `writer` (tests capture logs this way).
pub fn init_with_writer<W>(format: LogFormat, writer: W) -> Telemetry
where
    W: for<'a> tracing_subscriber::fmt::MakeWriter<'a> + Send + Sync + 'static,
{
    opentelemetry::global::set_text_map_propagator(opentelemetry_sdk::propagation::TraceContextPropagator::new());
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let (provider, otel) = if otlp_configured() {
        match opentelemetry_otlp::SpanExporter::builder().with_tonic().build() {
            Ok(exporter) => {
                let service = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| "lanyard".to_owned());
                let provider = SdkTracerProvider::builder()
                    .with_batch_exporter(exporter)
                    .with_resource(opentelemetry_sdk::Resource::builder().with_service_name(service).build())
                    .build();
                let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("lanyard"));
                EXPORTING.store(true, Ordering::Relaxed);
                (Some(provider), Some(layer))
            }
            Err(e) => {
                eprintln!("warning: OTLP trace export disabled: {e}");
                (None, None)
            }
        }
    } else {
        (None, None)
    };
    let registry = tracing_subscriber::registry().with(filter).with(otel);
    let installed = match format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer().json().flatten_event(true).with_current_span(true).with_writer(writer),
            )
            .try_init(),
        LogFormat::Text => registry.with(tracing_subscriber::fmt::layer().with_writer(writer)).try_init(),
    };
    if installed.is_err() {
        // A subscriber was already installed (tests start many servers in one process).
        return Telemetry::default();
    }
    Telemetry { provider }
}

/// Whether spans are exported (an OTLP endpoint is configured): only then does a span have ids
/// of its own to put into its log lines.
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// The process's Prometheus recorder, installed on first use.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Suffix("_seconds".into()),
                    &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0],
                )
                .expect("static buckets are valid")
                .build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics shows only this one");
            }
            crate::metrics::describe();
            handle
        })
        .clone()
}

/// `GET /metrics` (Prometheus text format), served on the metrics address by the same accept
/// loop as the HTTP listener (its connection cap, header deadline and TLS).
pub fn metrics_router() -> axum::Router {
    let handle = metrics_handle();
    axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let handle = handle.clone();
            async move {
                handle.run_upkeep();
                let mut text = handle.render();
                crate::metrics::render_process(&mut text);
                ([(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
            }
        }),
    )
}

/// A layer that opens one `rpc` span per request, continuing the caller's trace when the request
/// carries W3C trace context, and counts and times every RPC. Handlers fill in `caller` and `org`.
#[derive(Clone, Copy, Debug, Default)]
pub struct RpcTraceLayer;

impl<S> tower::Layer<S> for RpcTraceLayer {
    type Service = RpcTrace<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RpcTrace { inner }
    }
}

/// The service [`RpcTraceLayer`] makes.
#[derive(Clone, Debug)]
pub struct RpcTrace<S> {
    inner: S,
}

/// Splits `/pkg.Service/Method` into its service and method (bounded label values: only paths
/// the router knows reach a handler; anything else is labelled `unknown`).
fn route(path: &str) -> (String, String) {
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    match (parts.next(), parts.next()) {
        (Some(service), Some(method)) if service.starts_with("lanyard.") || service.starts_with("grpc.") => {
            (service.to_owned(), method.to_owned())
        }
        _ => ("unknown".to_owned(), "unknown".to_owned()),
    }
}

impl<S, B, RB> tower::Service<Request<B>> for RpcTrace<S>
where
    S: tower::Service<Request<B>, Response = Response<RB>> + Send,
    S::Future: Send + 'static,
    S::Error: std::fmt::Display,
{
    type Response = Response<RB>;
    type Error = S::Error;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let (service, method) = route(req.uri().path());
        // OpenTelemetry's semantic conventions for RPC server spans (rpc.*); `code` is the same
        // status by its canonical name, for people reading logs.
        let span = tracing::info_span!(
            "rpc",
            otel.name = %req.uri().path(),
            otel.kind = "server",
            otel.status_code = Empty,
            rpc.system = "grpc",
            rpc.service = service.as_str(),
            rpc.method = method.as_str(),
            rpc.grpc.status_code = Empty,
            caller = Empty,
            org = Empty,
            code = Empty,
            trace_id = Empty,
            span_id = Empty,
        );
        lanyard_core::trace::set_parent_from(&span, req.headers());
        record_trace_ids(&span, req.headers());
        let started = Instant::now();
        let fut = {
            let _enter = span.enter();
            self.inner.call(req)
        };
        let record = span.clone();
        Box::pin(
            async move {
                let result = fut.await;
                let elapsed = started.elapsed();
                let code = match &result {
                    Ok(response) => {
                        // Errors are trailers-only responses: their status is in the headers.
                        let code = response
                            .headers()
                            .get("grpc-status")
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.parse::<i32>().ok())
                            .map_or(tonic::Code::Ok, tonic::Code::from);
                        record.record("rpc.grpc.status_code", code as i32);
                        record.record("code", code_name(code));
                        if is_server_error(code) {
                            record.record("otel.status_code", "ERROR");
                        }
                        // Per call, so DEBUG: at the authorization fast path's rates an INFO line per
                        // call costs more than the call. Metrics and the span carry the same facts.
                        tracing::debug!(elapsed_us = elapsed.as_micros() as u64, "rpc finished");
                        code_name(code)
                    }
                    Err(e) => {
                        record.record("otel.status_code", "ERROR");
                        record.record("code", "TRANSPORT");
                        tracing::warn!(error = %e, "rpc failed in transport");
                        "TRANSPORT"
                    }
                };
                metrics::counter!("lanyard_rpc_requests_total", "service" => service.clone(), "method" => method.clone(), "code" => code).increment(1);
                metrics::histogram!("lanyard_rpc_duration_seconds", "service" => service, "method" => method, "code" => code)
                    .record(elapsed.as_secs_f64());
                result
            }
            .instrument(span),
        )
    }
}

/// Puts the trace and span ids into the span, so that every log line inside it names them. When
/// spans are exported they are the span's own; otherwise the caller's trace id, if it sent a
/// W3C `traceparent` (its bytes as sent: nothing is allocated), so logs still join up across
/// services.
fn record_trace_ids(span: &tracing::Span, headers: &http::HeaderMap) {
    if EXPORTING.load(Ordering::Relaxed) {
        let context = span.context();
        let ids = opentelemetry::trace::TraceContextExt::span(&context).span_context().clone();
        if ids.is_valid() {
            span.record("trace_id", tracing::field::display(ids.trace_id()));
            span.record("span_id", tracing::field::display(ids.span_id()));
        }
    } else if let Some(trace_id) = headers.get("traceparent").and_then(|v| v.to_str().ok()).and_then(traceparent_id) {
        span.record("trace_id", trace_id);
    }
}

/// The trace id of a version-00 W3C `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`), unless it is
/// malformed or all zeros (invalid by the specification).
fn traceparent_id(value: &str) -> Option<&str> {
    let parts: [&str; 4] = {
        let mut it = value.split('-');
        [it.next()?, it.next()?, it.next()?, it.next()?]
    };
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let ok = parts[0] == "00" && hex(parts[1], 32) && hex(parts[2], 16) && hex(parts[3], 2);
    (ok && parts[1].bytes().any(|b| b != b'0')).then_some(parts[1])
}

/// A gRPC code by its canonical name (`OK`, `NOT_FOUND`), as the gRPC specification and
/// OpenTelemetry spell it: the `code` label of the RPC metrics and the span's `code`.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Whether a server span with this code is an error, by OpenTelemetry's gRPC conventions: the
/// codes that say the server failed; a refusal of the caller's request is the server working.
fn is_server_error(code: tonic::Code) -> bool {
    use tonic::Code::*;
    matches!(code, Unknown | DeadlineExceeded | Unimplemented | Internal | Unavailable | DataLoss)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_bounded_labels() {
        assert_eq!(
            route("/lanyard.tenancy.v1.TenancyService/AddMember"),
            ("lanyard.tenancy.v1.TenancyService".into(), "AddMember".into())
        );
        assert_eq!(route("/grpc.health.v1.Health/Check").1, "Check");
        assert_eq!(route("/evil/path"), ("unknown".into(), "unknown".into()));
        assert_eq!(route("/"), ("unknown".into(), "unknown".into()));
    }

    #[test]
    fn codes_have_their_canonical_names() {
        assert_eq!(code_name(tonic::Code::Ok), "OK");
        assert_eq!(code_name(tonic::Code::NotFound), "NOT_FOUND");
        assert_eq!(code_name(tonic::Code::ResourceExhausted), "RESOURCE_EXHAUSTED");
        for c in 0..=16 {
            let name = code_name(tonic::Code::from(c));
            assert!(name.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'), "{name}");
        }
        assert!(is_server_error(tonic::Code::Internal) && !is_server_error(tonic::Code::NotFound));
    }

    #[test]
    fn traceparent_trace_ids_are_read_only_when_well_formed() {
        let id = "4bf92f3577b34da6a3ce929d0e0e4736";
        assert_eq!(traceparent_id(&format!("00-{id}-00f067aa0ba902b7-01")), Some(id));
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736\n-00f067aa0ba902b7-01",
        ] {
            assert_eq!(traceparent_id(bad), None, "{bad:?}");
        }
    }
}

//! Logs, traces and metrics. Logs are text for development or JSON for production; traces go to
//! an OTLP collector when the standard `OTEL_EXPORTER_OTLP_*` variables name one (and nowhere
//! otherwise); metrics are rendered in the Prometheus text format. Every RPC gets one `rpc` span
//! (method, caller kind, organization, gRPC code), a request counter and a latency histogram.

use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::Instant;

use http::{Request, Response};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::field::Empty;
use tracing::Instrument;
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
            describe_metrics();
            handle
        })
        .clone()
}

fn describe_metrics() {
    metrics::describe_counter!("lanyard_rpc_requests_total", "RPCs handled, by service, method and gRPC code.");
    metrics::describe_histogram!(
        "lanyard_rpc_duration_seconds",
        metrics::Unit::Seconds,
        "RPC latency from request to response headers, by service and method."
    );
    metrics::describe_counter!("lanyard_database_errors_total", "Database errors, by service and kind.");
    metrics::describe_gauge!("lanyard_org_seats", "Seats of an organization by state (limit, active, reserved).");
    metrics::describe_counter!(
        "lanyard_tls_reloads_total",
        "Checks that found new TLS certificate and key files, by result: ok (now served) or error (kept the previous)."
    );
    metrics::describe_counter!(
        "lanyard_tls_handshake_failures_total",
        "TLS handshakes that failed or missed the handshake deadline, by listener."
    );
    metrics::describe_gauge!(
        "lanyard_redis_up",
        "Whether the shared cache (Redis) answered its last check: 1 or 0. Readiness does not follow it."
    );
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
                ([(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], handle.render())
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
        let span = tracing::info_span!(
            "rpc",
            otel.name = %req.uri().path(),
            otel.kind = "server",
            method = %req.uri().path(),
            caller = Empty,
            org = Empty,
            code = Empty,
        );
        lanyard_core::trace::set_parent_from(&span, req.headers());
        let (service, method) = route(req.uri().path());
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
                match &result {
                    Ok(response) => {
                        // Errors are trailers-only responses: their status is in the headers.
                        let code = response
                            .headers()
                            .get("grpc-status")
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.parse::<i32>().ok())
                            .map(|c| format!("{:?}", tonic::Code::from(c)))
                            .unwrap_or_else(|| "Ok".to_owned());
                        record.record("code", code.as_str());
                        metrics::counter!("lanyard_rpc_requests_total", "service" => service.clone(), "method" => method.clone(), "code" => code).increment(1);
                        // Per call, so DEBUG: at the authorization fast path's rates an INFO line per
                        // call costs more than the call. Metrics and the span carry the same facts.
                        tracing::debug!(elapsed_us = elapsed.as_micros() as u64, "rpc finished");
                    }
                    Err(e) => {
                        metrics::counter!("lanyard_rpc_requests_total", "service" => service.clone(), "method" => method.clone(), "code" => "Transport").increment(1);
                        tracing::warn!(error = %e, "rpc failed in transport");
                    }
                }
                metrics::histogram!("lanyard_rpc_duration_seconds", "service" => service, "method" => method)
                    .record(elapsed.as_secs_f64());
                result
            }
            .instrument(span),
        )
    }
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
}

//! W3C trace context across the services' gRPC calls: each outgoing call gets a CLIENT span
//! whose context goes into `traceparent`, servers extract it, so one request that crosses
//! services is one trace.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tracing::field::Empty;
use tracing::Instrument;

use opentelemetry::propagation::{Extractor, Injector};
use tracing_opentelemetry::OpenTelemetrySpanExt;

struct HeaderInjector<'a>(&'a mut http::HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) =
            (http::HeaderName::from_bytes(key.as_bytes()), http::HeaderValue::from_str(&value))
        {
            self.0.insert(name, value);
        }
    }
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// Makes `span` a child of the trace context carried by `headers`, if any.
pub fn set_parent_from(span: &tracing::Span, headers: &http::HeaderMap) {
    let parent = opentelemetry::global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(headers)));
    let _ = span.set_parent(parent);
}

/// Writes the current span's trace context into `headers`.
pub fn inject_current(headers: &mut http::HeaderMap) {
    inject_from(&tracing::Span::current(), headers);
}

/// Writes `span`'s trace context into `headers`.
fn inject_from(span: &tracing::Span, headers: &mut http::HeaderMap) {
    let context = span.context();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&context, &mut HeaderInjector(headers)));
}

/// A client layer that opens a CLIENT span for every outgoing call (OpenTelemetry's `rpc.*`
/// attributes; the gRPC code and an error status when the answer carries its status in its
/// headers, as every refusal does) and sends its trace context with the request.
#[derive(Clone, Copy, Debug, Default)]
pub struct PropagateTraceLayer;

impl<S> tower::Layer<S> for PropagateTraceLayer {
    type Service = PropagateTrace<S>;
    fn layer(&self, inner: S) -> Self::Service {
        PropagateTrace { inner }
    }
}

/// The service [`PropagateTraceLayer`] makes.
#[derive(Clone, Debug)]
pub struct PropagateTrace<S> {
    inner: S,
}

impl<S, B, RB> tower::Service<http::Request<B>> for PropagateTrace<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let span = {
            let path = req.uri().path();
            let (service, method) = path.trim_start_matches('/').split_once('/').unwrap_or(("unknown", "unknown"));
            tracing::info_span!(
                "rpc.client",
                otel.name = %path,
                otel.kind = "client",
                otel.status_code = Empty,
                rpc.system = "grpc",
                rpc.service = service,
                rpc.method = method,
                rpc.grpc.status_code = Empty,
            )
        };
        inject_from(&span, req.headers_mut());
        let call = self.inner.call(req);
        let record = span.clone();
        Box::pin(
            async move {
                let result = call.await;
                let code = match &result {
                    // A trailers-only answer (every refusal): its status is in the headers.
                    Ok(response) => {
                        response.headers().get("grpc-status").and_then(|v| v.to_str().ok()?.parse::<i32>().ok())
                    }
                    Err(_) => Some(14), // UNAVAILABLE: the transport failed
                };
                if let Some(code) = code {
                    record.record("rpc.grpc.status_code", code);
                    if code != 0 {
                        record.record("otel.status_code", "ERROR");
                    }
                }
                result
            }
            .instrument(span),
        )
    }
}

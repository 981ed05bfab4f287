//! W3C trace context across the services' gRPC calls: clients inject `traceparent` from the
//! current span, servers extract it, so one request that crosses services is one trace.

use std::task::{Context, Poll};

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
    let context = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&context, &mut HeaderInjector(headers)));
}

/// A client layer that adds the caller's trace context to every outgoing request.
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

impl<S, B> tower::Service<http::Request<B>> for PropagateTrace<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        inject_current(req.headers_mut());
        self.inner.call(req)
    }
}

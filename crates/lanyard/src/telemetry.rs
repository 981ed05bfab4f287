//! Logging and the per-RPC tracing span (method, caller kind, organization, gRPC code).

use std::task::{Context, Poll};

use http::{Request, Response};
use tracing::field::Empty;
use tracing::Instrument;

use crate::settings::LogFormat;

/// Installs the global subscriber: text for development, JSON for production; the filter comes
/// from `RUST_LOG` (default `info`). Safe to call more than once (later calls do nothing).
pub fn init(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// A layer that opens one `rpc` span per request. Handlers fill in `caller` and `org`; the code
/// is recorded when the response (or its trailers) is known.
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
        let span = tracing::info_span!("rpc", method = %req.uri().path(), caller = Empty, org = Empty, code = Empty);
        let started = std::time::Instant::now();
        let fut = {
            let _enter = span.enter();
            self.inner.call(req)
        };
        let record = span.clone();
        Box::pin(
            async move {
                let result = fut.await;
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
                        tracing::info!(elapsed_us = started.elapsed().as_micros() as u64, "rpc finished");
                    }
                    Err(e) => tracing::warn!(error = %e, "rpc failed in transport"),
                }
                result
            }
            .instrument(span),
        )
    }
}

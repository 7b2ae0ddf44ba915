//! gRPC server plumbing shared by every service: standard health checking (NOT_SERVING
//! while a part of the service is stalled, see `readiness`, and as soon as shutdown
//! starts), server reflection, per-call trace spans, and
//! graceful shutdown that drains in-flight calls; the bounds every call keeps (request and
//! response sizes, a per-call timeout, the per-caller write limit of `guard` and `rate`).

use std::{convert::Infallible, time::Duration};

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::{server::NamedService, transport::Server};
use tonic_health::ServingStatus;

use crate::{readiness::Readiness, telemetry::GrpcTraceLayer};

mod guard;
pub mod rate;
mod writes;

pub use guard::Guarded;

/// Largest request a service accepts (bounded request sizes; see ARCHITECTURE.md, security):
/// a larger one is `ResourceExhausted` before it is decoded.
pub const MAX_REQUEST_BYTES: usize = 1024 * 1024;
/// Largest response a service sends: far above the largest page (`page::MAX_PAGE_SIZE`
/// rows), so reaching it is a bug, which fails the call instead of the process.
pub const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;
/// How long a call may take until its response starts before it is cancelled (a stream,
/// once started, runs on).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves `service` (plus health and reflection) on `listener` until `shutdown`; health
/// follows `readiness`.
pub async fn serve<S>(
    listener: TcpListener,
    service: S,
    readiness: Readiness,
    shutdown: CancellationToken,
) -> anyhow::Result<()>
where
    S: tower::Service<http::Request<tonic::body::Body>, Error = Infallible>
        + NamedService
        + Clone
        + Send
        + Sync
        + 'static,
    S::Response: axum::response::IntoResponse,
    S::Future: Send + 'static,
{
    let (reporter, health_service) = tonic_health::server::health_reporter();
    reporter.set_service_status(S::NAME, ServingStatus::Serving).await;
    reporter.set_service_status("", ServingStatus::Serving).await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(mesh_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;

    // One task sets every status, so none lands after NOT_SERVING at shutdown.
    let mut stalled = readiness.watch();
    let health = tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                changed = stalled.changed() => if changed.is_err() { break },
            }
            let parts = stalled.borrow_and_update().clone();
            let status = if parts.is_empty() {
                ServingStatus::Serving
            } else {
                tracing::warn!(stalled = ?parts, "not ready: reporting NOT_SERVING");
                ServingStatus::NotServing
            };
            reporter.set_service_status(S::NAME, status).await;
            reporter.set_service_status("", status).await;
        }
        shutdown.cancelled().await;
        // Load balancers and probes see NOT_SERVING before the listener closes.
        reporter
            .set_service_status(S::NAME, ServingStatus::NotServing)
            .await;
        reporter.set_service_status("", ServingStatus::NotServing).await;
    });
    let stopping = async move {
        if let Err(error) = health.await {
            tracing::error!(error = %error, "health reporting failed");
        }
        tracing::info!("grpc server draining");
    };
    Server::builder()
        .layer(GrpcTraceLayer)
        .timeout(CALL_TIMEOUT)
        .add_service(health_service)
        .add_service(reflection)
        .add_service(service)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), stopping)
        .await?;
    Ok(())
}

/// A token cancelled on SIGINT or SIGTERM: the one shutdown signal every task watches.
pub fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let trigger = token.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        let terminate = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut signal) => {
                    signal.recv().await;
                }
                Err(error) => {
                    tracing::error!(error = %error, "cannot listen for SIGTERM");
                    std::future::pending::<()>().await;
                }
            }
        };
        #[cfg(not(unix))]
        let terminate = std::future::pending::<()>();
        tokio::select! {
            _ = ctrl_c => {}
            _ = terminate => {}
        }
        tracing::info!("shutdown requested");
        trigger.cancel();
    });
    token
}

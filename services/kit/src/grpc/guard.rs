//! The guard between the token interceptor and a service's handlers: it applies the
//! caller's write limit before the request body is even read, and gives a request over
//! [`MAX_REQUEST_BYTES`](super::MAX_REQUEST_BYTES) the code that says so.
//!
//! tonic refuses an over-size message itself, before decoding it, but as `OutOfRange`;
//! the mesh's handlers never answer `OutOfRange` (`ServiceError` has no such kind), so the
//! guard turns that answer into `ResourceExhausted`. (Undecodable bodies are the codec's
//! business: `mesh_proto::codec`.)

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use tonic::{Code, Status, body::Body, server::NamedService};

use super::{MAX_REQUEST_BYTES, rate::WriteLimiter, writes::Writes};
use crate::auth::Caller;

/// A generated gRPC server behind the write limit and the size rule.
#[derive(Debug, Clone)]
pub struct Guarded<S> {
    inner: S,
    writes: &'static Writes,
    limiter: Option<Arc<WriteLimiter>>,
}

impl<S> Guarded<S> {
    /// `inner` with writes limited by `limiter` (none: unlimited). Must sit inside the token
    /// interceptor, which puts the [`Caller`] the limit is keyed by into the request.
    pub fn new(inner: S, limiter: Option<Arc<WriteLimiter>>) -> Self {
        Self {
            inner,
            writes: Writes::mesh(),
            limiter,
        }
    }

    /// Why `request` may not go on: its caller is over the write limit.
    fn refusal(&self, request: &http::Request<Body>) -> Option<Status> {
        let limiter = self.limiter.as_ref()?;
        if !self.writes.contains(request.uri().path()) {
            return None;
        }
        let caller = request.extensions().get::<Caller>()?;
        limiter.check(caller).err()
    }
}

impl<S: NamedService> NamedService for Guarded<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> tower::Service<http::Request<Body>> for Guarded<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<http::Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        if let Some(status) = self.refusal(&request) {
            return Box::pin(std::future::ready(Ok(status.into_http())));
        }
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            Ok(if is_out_of_range(&response) {
                Status::resource_exhausted(format!(
                    "request larger than the limit of {MAX_REQUEST_BYTES} bytes"
                ))
                .into_http()
            } else {
                response
            })
        })
    }
}

/// Whether `response` is a call refused with `OutOfRange` before any reply (a status in the
/// headers, "trailers-only"): what tonic answers to a message over the size limit.
fn is_out_of_range(response: &http::Response<Body>) -> bool {
    response
        .headers()
        .get("grpc-status")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<i32>().ok())
        .is_some_and(|code| Code::from(code) == Code::OutOfRange)
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use tower::{Service, ServiceExt};

    use super::*;
    use crate::{auth::Role, grpc::rate::WriteRate};

    /// Stands in for a generated server: answers every call with `status` (OK if none).
    fn server(
        status: Option<Code>,
    ) -> impl tower::Service<
        http::Request<Body>,
        Response = http::Response<Body>,
        Error = Infallible,
        Future: Send + 'static,
    > + Clone {
        tower::service_fn(move |_request: http::Request<Body>| async move {
            Ok::<_, Infallible>(match status {
                Some(code) => Status::new(code, "refused").into_http(),
                None => http::Response::new(Body::empty()),
            })
        })
    }

    fn call(path: &str, subject: &str) -> http::Request<Body> {
        let mut request = http::Request::builder()
            .uri(format!("http://mesh{path}"))
            .body(Body::empty())
            .expect("request");
        request.extensions_mut().insert(Caller::new(
            subject,
            Role::Officer,
            Some("620702001"),
            Some("620702"),
        ));
        request
    }

    fn code(response: &http::Response<Body>) -> Option<Code> {
        let value = response.headers().get("grpc-status")?.to_str().ok()?;
        Some(Code::from(value.parse::<i32>().ok()?))
    }

    const WRITE: &str = "/mesh.checkin.v1.CheckinService/RecordCheckin";
    const READ: &str = "/mesh.checkin.v1.CheckinService/ListCheckins";

    #[tokio::test]
    async fn a_caller_over_its_write_limit_is_refused_and_nobody_else() {
        let limiter = WriteLimiter::new(WriteRate {
            per_second: NonZeroU32::MIN,
            burst: NonZeroU32::new(2).expect("non-zero"),
        });
        let mut guarded = Guarded::new(server(None), Some(Arc::new(limiter)));
        let mut send = async |path: &str, subject: &str| {
            let response = guarded
                .ready()
                .await
                .expect("ready")
                .call(call(path, subject))
                .await;
            code(&response.expect("infallible"))
        };
        assert_eq!(send(WRITE, "officer-a").await, None);
        assert_eq!(send(WRITE, "officer-a").await, None);
        assert_eq!(send(WRITE, "officer-a").await, Some(Code::ResourceExhausted));
        // Reads are never limited, and another caller has a bucket of its own.
        assert_eq!(send(READ, "officer-a").await, None);
        assert_eq!(send(WRITE, "officer-b").await, None);
    }

    #[tokio::test]
    async fn an_over_size_refusal_becomes_resource_exhausted() {
        let mut guarded = Guarded::new(server(Some(Code::OutOfRange)), None);
        let response = guarded.ready().await.expect("ready").call(call(READ, "a")).await;
        let response = response.expect("infallible");
        assert_eq!(code(&response), Some(Code::ResourceExhausted));
        let status = Status::from_header_map(response.headers()).expect("a status");
        assert_eq!(status.message(), "request larger than the limit of 1048576 bytes");
        // Other refusals pass as they are.
        let mut guarded = Guarded::new(server(Some(Code::InvalidArgument)), None);
        let response = guarded.ready().await.expect("ready").call(call(READ, "a")).await;
        assert_eq!(code(&response.expect("infallible")), Some(Code::InvalidArgument));
    }
}

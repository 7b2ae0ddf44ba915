//! One telemetry setup for every binary: JSON logs filtered by `RUST_LOG`, OpenTelemetry
//! spans (exported over OTLP/HTTP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set), OTLP metrics,
//! and W3C trace-context propagation through gRPC metadata and Kafka headers so one trace
//! spans app → service → Kafka → consumer.

use std::{collections::HashMap, task::Poll};

use opentelemetry::{KeyValue, global, propagation::TextMapPropagator, trace::TracerProvider as _};
use opentelemetry_sdk::{
    Resource, metrics::SdkMeterProvider, propagation::TraceContextPropagator, trace::SdkTracerProvider,
};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{EnvFilter, layer::SubscriberExt, util::SubscriberInitExt};

/// Flushes and shuts down the exporters when dropped (at the end of `main`), so the last
/// spans of a shutdown are not lost.
#[must_use = "dropping the guard shuts telemetry down"]
pub struct TelemetryGuard {
    tracer_provider: SdkTracerProvider,
    meter_provider: Option<SdkMeterProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Err(error) = self.tracer_provider.shutdown() {
            eprintln!("telemetry: tracer shutdown failed: {error}");
        }
        if let Some(meter_provider) = &self.meter_provider
            && let Err(error) = meter_provider.shutdown()
        {
            eprintln!("telemetry: meter shutdown failed: {error}");
        }
    }
}

/// Installs logging and tracing for `service_name`. Call once, first thing in `main`.
pub fn init(service_name: &'static str) -> anyhow::Result<TelemetryGuard> {
    global::set_text_map_propagator(TraceContextPropagator::new());
    let resource = Resource::builder().with_service_name(service_name).build();
    let endpoint = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT")
        .ok()
        .filter(|v| !v.is_empty());

    // Spans always get real ids (so trace context propagates even without a collector); they
    // are exported only when an endpoint is configured.
    let mut tracer_builder = SdkTracerProvider::builder().with_resource(resource.clone());
    let mut meter_provider = None;
    if endpoint.is_some() {
        let exporter = opentelemetry_otlp::SpanExporter::builder().with_http().build()?;
        tracer_builder = tracer_builder.with_batch_exporter(exporter);
        let metric_exporter = opentelemetry_otlp::MetricExporter::builder()
            .with_http()
            .build()?;
        let provider = SdkMeterProvider::builder()
            .with_resource(resource)
            .with_periodic_exporter(metric_exporter)
            .build();
        global::set_meter_provider(provider.clone());
        meter_provider = Some(provider);
    }
    let tracer_provider = tracer_builder.build();
    let tracer = tracer_provider.tracer(service_name);
    global::set_tracer_provider(tracer_provider.clone());

    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .json()
                .with_current_span(true)
                .with_span_list(false),
        )
        .with(tracing_opentelemetry::layer().with_tracer(tracer))
        .try_init()?;
    tracing::info!(
        service = service_name,
        otlp = endpoint.is_some(),
        "telemetry ready"
    );
    Ok(TelemetryGuard {
        tracer_provider,
        meter_provider,
    })
}

/// The current span's trace context as W3C headers (`traceparent`, `tracestate`).
pub fn current_trace_headers() -> HashMap<String, String> {
    let context = tracing::Span::current().context();
    let mut headers = HashMap::new();
    TraceContextPropagator::new().inject_context(&context, &mut headers);
    headers
}

/// Makes `span` a child of the trace context found in `headers` (if any).
pub fn set_parent_from_headers(span: &tracing::Span, headers: &HashMap<String, String>) {
    let parent = TraceContextPropagator::new().extract(headers);
    let _ = span.set_parent(parent);
}

/// A meter for the mesh's own metrics.
pub fn meter() -> opentelemetry::metrics::Meter {
    global::meter("mesh")
}

/// A `KeyValue` attribute (re-exported for metric call sites).
pub fn attribute(key: &'static str, value: impl Into<opentelemetry::Value>) -> KeyValue {
    KeyValue::new(key, value)
}

/// Tower layer for the gRPC server: one span per call, child of the caller's `traceparent`.
#[derive(Debug, Clone, Copy, Default)]
pub struct GrpcTraceLayer;

impl<S> tower::Layer<S> for GrpcTraceLayer {
    type Service = GrpcTrace<S>;
    fn layer(&self, inner: S) -> Self::Service {
        GrpcTrace { inner }
    }
}

/// See [`GrpcTraceLayer`].
#[derive(Debug, Clone)]
pub struct GrpcTrace<S> {
    inner: S,
}

impl<S, B> tower::Service<http::Request<B>> for GrpcTrace<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = tracing::instrument::Instrumented<S::Future>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let headers: HashMap<String, String> = ["traceparent", "tracestate"]
            .into_iter()
            .filter_map(|name| {
                let value = request.headers().get(name)?.to_str().ok()?;
                Some((name.to_owned(), value.to_owned()))
            })
            .collect();
        let span = tracing::info_span!("grpc", rpc.method = %request.uri().path(), otel.kind = "server");
        set_parent_from_headers(&span, &headers);
        self.inner.call(request).instrument(span)
    }
}

/// Client-side interceptor that sends the current trace context with each call.
pub fn inject_trace_context(mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
    for (name, value) in current_trace_headers() {
        if let (Ok(key), Ok(value)) = (
            tonic::metadata::MetadataKey::from_bytes(name.as_bytes()),
            tonic::metadata::MetadataValue::try_from(value.as_str()),
        ) {
            request.metadata_mut().insert(key, value);
        }
    }
    Ok(request)
}

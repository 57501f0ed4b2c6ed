//! OpenTelemetry traces of delivery attempts, on only with `[tracing]`: one span per
//! HTTP attempt, a child of the W3C trace context the NATS message carried, whose own
//! context the request carries on (`traceparent` with the attempt span's id), so a
//! receiver's spans hang under the attempt that reached it.
//!
//! Without `[tracing]` nothing here runs: no tracer exists, the delivery path creates
//! nothing per attempt, and trace headers are forwarded exactly as received.
//!
//! Spans are exported in batches by the SDK's batch processor on its own thread, over
//! OTLP/HTTP (protobuf) through natshook's hyper client (`export`). A slow or down
//! collector never slows a delivery: ending a span only queues it, the queue is
//! bounded (`max_queue`), and what does not fit is dropped, counted in
//! `natshook_tracing_spans_dropped_total` and logged at most once a minute.

mod export;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::header::{HeaderName, HeaderValue};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{
    Span as _, SpanKind, Status, TraceContextExt, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue, StringValue, Value};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracer, SdkTracerProvider,
};
use opentelemetry_sdk::Resource;

use self::export::{Bounded, Counted, Drops};
use crate::settings::TracingSettings;

/// The span name of one delivery attempt.
const SPAN_NAME: &str = "deliver";
/// How often spans are exported while fewer than a batch are waiting.
const EXPORT_EVERY: Duration = Duration::from_secs(2);
/// Spans in one export request at most.
const BATCH_SIZE: usize = 512;
/// The longest shutdown waits for the last export: a hanging collector must not eat
/// into the time Kubernetes grants between SIGTERM and SIGKILL.
const FLUSH_WAIT: Duration = Duration::from_secs(5);

/// Why tracing could not start.
#[derive(Debug, thiserror::Error)]
pub enum TracingError {
    #[error("tracing: cannot build the OTLP exporter: {0}")]
    Exporter(String),
    #[error("tracing: must start inside the tokio runtime that runs the exports")]
    NoRuntime,
}

/// The running trace pipeline: the SDK provider (sampler, batch processor, exporter),
/// kept to flush it at shutdown.
pub struct Tracing {
    provider: SdkTracerProvider,
    tracer: AttemptTracer,
    timeout: Duration,
    drops: Arc<Drops>,
}

impl Tracing {
    /// Starts the pipeline for `settings`. Exports run on the current tokio runtime,
    /// which must outlive [`Tracing::shutdown`]. `dropped` counts spans lost, by reason.
    pub fn start(
        settings: &TracingSettings,
        dropped: prometheus::IntCounterVec,
    ) -> Result<Self, TracingError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| TracingError::NoRuntime)?;
        let drops = Arc::new(Drops::new(settings.max_queue, dropped));
        let exporter = export::exporter(settings, runtime)
            .map_err(|e| TracingError::Exporter(e.to_string()))?;
        // The SDK's queue is one span larger than natshook's own bound (`Bounded`), so
        // every drop is natshook's and is counted.
        let batch = BatchConfigBuilder::default()
            .with_max_queue_size(settings.max_queue + 1)
            .with_max_export_batch_size(BATCH_SIZE.min(settings.max_queue))
            .with_scheduled_delay(EXPORT_EVERY)
            .build();
        let processor = Bounded::new(
            BatchSpanProcessor::new(Counted::new(exporter, drops.clone()), batch),
            drops.clone(),
        );
        let resource = Resource::builder()
            .with_service_name(settings.service_name.clone())
            .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                settings.sample_ratio,
            ))))
            .with_resource(resource)
            .build();
        let tracer = AttemptTracer {
            tracer: provider.tracer("natshook"),
        };
        Ok(Self {
            provider,
            tracer,
            timeout: settings.timeout,
            drops,
        })
    }

    pub fn tracer(&self) -> AttemptTracer {
        self.tracer.clone()
    }

    /// Exports what is still queued (within the export timeout, at most
    /// [`FLUSH_WAIT`]) and stops the pipeline; logs losses not logged yet. The SDK's shutdown blocks, so it runs off the runtime's
    /// worker threads, while the runtime still serves the export requests.
    pub async fn shutdown(self) {
        let provider = self.provider;
        let wait = self.timeout.min(FLUSH_WAIT);
        let flushed =
            tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(wait)).await;
        match flushed {
            Ok(Ok(())) => tracing::debug!("trace export flushed"),
            Ok(Err(e)) => tracing::warn!(error = %e, "trace export not flushed at shutdown"),
            Err(e) => tracing::warn!(error = %e, "trace export not flushed at shutdown"),
        }
        self.drops.log_unreported();
    }
}

/// Starts attempt spans; cheap to clone (the SDK tracer is an `Arc`).
#[derive(Clone, Debug)]
pub struct AttemptTracer {
    tracer: SdkTracer,
}

/// What identifies an attempt on its span.
pub struct AttemptFacts<'a> {
    /// The endpoint's name, shared by all its spans.
    pub endpoint: &'a StringValue,
    pub event: &'a str,
    pub id: &'a str,
    pub attempt: u32,
}

impl AttemptTracer {
    /// Starts the span of one attempt as a child of the trace context among
    /// `forwarded` (the message's `traceparent` and `tracestate`, a new trace without
    /// one), and replaces that context there with the new span's own, which the request
    /// then carries.
    pub fn start(
        &self,
        facts: &AttemptFacts<'_>,
        forwarded: &mut Vec<(HeaderName, HeaderValue)>,
    ) -> AttemptSpan {
        let propagator = TraceContextPropagator::new();
        let parent = propagator.extract_with_context(&Context::new(), &Forwarded(forwarded));
        forwarded.retain(|(name, _)| !is_trace_header(name));
        let started = SystemTime::now();
        let mut span = self
            .tracer
            .span_builder(SPAN_NAME)
            .with_kind(SpanKind::Client)
            .with_start_time(started)
            .start_with_context(&self.tracer, &parent);
        let own = Context::new().with_remote_span_context(span.span_context().clone());
        propagator.inject_context(&own, &mut Injected(forwarded));
        if span.is_recording() {
            span.set_attributes([
                KeyValue::new("natshook.endpoint", Value::String(facts.endpoint.clone())),
                KeyValue::new("natshook.event", facts.event.to_string()),
                KeyValue::new("natshook.id", facts.id.to_string()),
                KeyValue::new("natshook.attempt", i64::from(facts.attempt)),
                KeyValue::new("http.request.method", "POST"),
            ]);
        }
        AttemptSpan { span, started }
    }
}

/// The span of one attempt in flight.
pub struct AttemptSpan {
    span: opentelemetry_sdk::trace::Span,
    started: SystemTime,
}

/// How an attempt ended, as its span records it.
pub struct AttemptEnd<'a> {
    /// The HTTP status, or `timeout` / `connect_error` (the attempt metric's label).
    pub status: Cow<'a, str>,
    pub http_status: Option<u16>,
    pub success: bool,
    pub error: Option<&'a str>,
    pub duration: Duration,
}

impl AttemptSpan {
    /// Records the outcome and ends the span when the attempt ended, so its length is
    /// the attempt's; the span is queued for export, never exported here.
    pub fn end(mut self, end: AttemptEnd<'_>) {
        if self.span.is_recording() {
            let mut attrs = vec![
                KeyValue::new("natshook.status", end.status.into_owned()),
                KeyValue::new("natshook.duration_ms", end.duration.as_secs_f64() * 1000.0),
            ];
            if let Some(s) = end.http_status {
                attrs.push(KeyValue::new("http.response.status_code", i64::from(s)));
            }
            self.span.set_attributes(attrs);
            if !end.success {
                let description = match (end.error, end.http_status) {
                    (Some(e), _) => e.to_string(),
                    (None, Some(s)) => format!("HTTP {s}"),
                    (None, None) => "failed".to_string(),
                };
                self.span.set_status(Status::error(description));
            }
        }
        self.span.end_with_timestamp(self.started + end.duration);
    }
}

fn is_trace_header(name: &HeaderName) -> bool {
    name == "traceparent" || name == "tracestate"
}

/// The message's trace context among the forwarded headers.
struct Forwarded<'a>(&'a [(HeaderName, HeaderValue)]);

impl Extractor for Forwarded<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(name, _)| name.as_str().eq_ignore_ascii_case(key))
            .and_then(|(_, value)| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(name, _)| name.as_str()).collect()
    }
}

/// The new span's context, added to the forwarded headers.
struct Injected<'a>(&'a mut Vec<(HeaderName, HeaderValue)>);

impl Injector for Injected<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            self.0.push((name, value));
        }
    }
}

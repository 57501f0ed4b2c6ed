//! Getting spans to the collector: the OTLP/HTTP exporter over natshook's hyper
//! client, natshook's bound on the export queue, and the count of spans lost on the
//! way (queue full, export failed), logged at most once a minute.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use opentelemetry::Context;
use opentelemetry_http::{HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{BatchSpanProcessor, Span, SpanData, SpanExporter, SpanProcessor};
use opentelemetry_sdk::Resource;
use prometheus::IntCounterVec;

use crate::settings::TracingSettings;

/// The collector's answer is read up to this size (it is a small protobuf message).
const RESPONSE_LIMIT: usize = 64 * 1024;
/// Lost spans are logged at most this often.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// The OTLP/HTTP protobuf exporter for `settings`, sending through [`ExportClient`]
/// on `runtime`.
pub(super) fn exporter(
    settings: &TracingSettings,
    runtime: tokio::runtime::Handle,
) -> Result<opentelemetry_otlp::SpanExporter, opentelemetry_otlp::ExporterBuildError> {
    opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(ExportClient::new(settings.timeout, runtime))
        .with_endpoint(settings.traces_url.to_string())
        .with_protocol(Protocol::HttpBinary)
        .with_timeout(settings.timeout)
        .build()
}

/// Sends export requests through a hyper-util client on the tokio runtime that
/// started tracing. The SDK's batch processor runs exports on a thread of its own
/// (outside the runtime), so each request is spawned onto the runtime and awaited.
#[derive(Debug)]
struct ExportClient {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    runtime: tokio::runtime::Handle,
    timeout: Duration,
}

impl ExportClient {
    fn new(timeout: Duration, runtime: tokio::runtime::Handle) -> Self {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(timeout));
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map(|b| {
            b.with_root_certificates(crate::delivery::system_roots())
                .with_no_client_auth()
        });
        let builder = hyper_rustls::HttpsConnectorBuilder::new();
        let connector = match tls {
            Ok(config) => builder.with_tls_config(config),
            // ring supports the default versions; this arm is never expected.
            Err(_) => builder.with_tls_config(
                rustls::ClientConfig::builder()
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth(),
            ),
        }
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
        Self {
            client: Client::builder(TokioExecutor::new()).build(connector),
            runtime,
            timeout,
        }
    }
}

#[async_trait::async_trait]
impl HttpClient for ExportClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let client = self.client.clone();
        let request = request.map(Full::new);
        let exchange = async move {
            let response = client.request(request).await?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, RESPONSE_LIMIT)
                .collect()
                .await?
                .to_bytes();
            Ok::<_, HttpError>(Response::from_parts(parts, body))
        };
        let timeout = self.timeout;
        let task = self.runtime.spawn(async move {
            tokio::time::timeout(timeout, exchange)
                .await
                .unwrap_or_else(|_| Err(format!("no answer within {timeout:?}").into()))
        });
        task.await?
    }
}

/// Spans waiting for export and spans lost, shared by the processor (which admits
/// spans), the exporter (which takes them) and the log.
#[derive(Debug)]
pub(super) struct Drops {
    max_queue: usize,
    /// Admitted and not yet handed to the exporter.
    queued: AtomicUsize,
    queue_full: AtomicU64,
    export_failed: AtomicU64,
    /// Counts as of the last log line.
    logged_queue_full: AtomicU64,
    logged_export_failed: AtomicU64,
    /// When the last log line was written (ms since `epoch`), `u64::MAX` before any.
    last_log_ms: AtomicU64,
    /// Why the last export failed, for the next log line.
    last_error: Mutex<Option<String>>,
    epoch: Instant,
    metric: IntCounterVec,
}

impl Drops {
    pub(super) fn new(max_queue: usize, metric: IntCounterVec) -> Self {
        Self {
            max_queue,
            queued: AtomicUsize::new(0),
            queue_full: AtomicU64::new(0),
            export_failed: AtomicU64::new(0),
            logged_queue_full: AtomicU64::new(0),
            logged_export_failed: AtomicU64::new(0),
            last_log_ms: AtomicU64::new(u64::MAX),
            last_error: Mutex::new(None),
            epoch: Instant::now(),
            metric,
        }
    }

    /// Takes a place in the queue; `false` (and the span counted as dropped) when full.
    fn admit(&self) -> bool {
        let admitted = self
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| {
                (q < self.max_queue).then_some(q + 1)
            })
            .is_ok();
        if !admitted {
            self.queue_full.fetch_add(1, Ordering::Relaxed);
            self.metric.with_label_values(&["queue_full"]).inc();
            self.maybe_log();
        }
        admitted
    }

    /// `n` spans left the queue for an export.
    fn taken(&self, n: usize) {
        let _ = self
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| {
                Some(q.saturating_sub(n))
            });
    }

    fn export_failed(&self, n: usize, error: &dyn std::fmt::Display) {
        self.export_failed.fetch_add(n as u64, Ordering::Relaxed);
        self.metric
            .with_label_values(&["export_failed"])
            .inc_by(n as u64);
        if let Ok(mut last) = self.last_error.lock() {
            *last = Some(error.to_string());
        }
        self.maybe_log();
    }

    /// Logs the spans lost since the last line, at the first loss and then at most
    /// every [`LOG_EVERY`].
    fn maybe_log(&self) {
        let now = self.epoch.elapsed().as_millis() as u64;
        let last = self.last_log_ms.load(Ordering::Relaxed);
        let due = last == u64::MAX || now.saturating_sub(last) >= LOG_EVERY.as_millis() as u64;
        if due
            && self
                .last_log_ms
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            self.log();
        }
    }

    /// Logs the losses not logged yet, if any: at shutdown, so none goes unreported.
    pub(super) fn log_unreported(&self) {
        let full = self.queue_full.load(Ordering::Relaxed);
        let failed = self.export_failed.load(Ordering::Relaxed);
        if full > self.logged_queue_full.load(Ordering::Relaxed)
            || failed > self.logged_export_failed.load(Ordering::Relaxed)
        {
            self.log();
        }
    }

    fn log(&self) {
        let full = self.queue_full.load(Ordering::Relaxed);
        let failed = self.export_failed.load(Ordering::Relaxed);
        let full_new = full - self.logged_queue_full.swap(full, Ordering::Relaxed);
        let failed_new = failed - self.logged_export_failed.swap(failed, Ordering::Relaxed);
        let error = self
            .last_error
            .lock()
            .ok()
            .and_then(|mut e| e.take())
            .unwrap_or_default();
        tracing::warn!(
            queue_full = full_new,
            export_failed = failed_new,
            last_export_error = %error,
            "trace spans dropped (deliveries are not affected); further drops are logged at most once a minute"
        );
    }
}

/// The SDK's batch processor behind natshook's bound on waiting spans, so that every
/// span dropped is counted (the SDK only logs its first drop).
#[derive(Debug)]
pub(super) struct Bounded {
    inner: BatchSpanProcessor,
    drops: Arc<Drops>,
}

impl Bounded {
    pub(super) fn new(inner: BatchSpanProcessor, drops: Arc<Drops>) -> Self {
        Self { inner, drops }
    }
}

impl SpanProcessor for Bounded {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        if self.drops.admit() {
            self.inner.on_end(span);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// The exporter, counting the spans it takes from the queue and those whose export
/// failed.
#[derive(Debug)]
pub(super) struct Counted {
    inner: opentelemetry_otlp::SpanExporter,
    drops: Arc<Drops>,
}

impl Counted {
    pub(super) fn new(inner: opentelemetry_otlp::SpanExporter, drops: Arc<Drops>) -> Self {
        Self { inner, drops }
    }
}

impl SpanExporter for Counted {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let n = batch.len();
        self.drops.taken(n);
        let result = self.inner.export(batch).await;
        if let Err(e) = &result {
            self.drops.export_failed(n, e);
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

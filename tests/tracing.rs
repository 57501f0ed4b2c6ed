//! OpenTelemetry traces end to end: a real nats-server, a receiver, and an in-process
//! OTLP/HTTP collector (a `Receiver` taking `POST /v1/traces`, its protobuf decoded
//! with opentelemetry-proto). One span per attempt, a child of the message's
//! `traceparent`, carried on to the receiver; a collector that hangs costs deliveries
//! nothing and its lost spans are counted. (Without `[tracing]` the trace context is
//! forwarded unchanged: tests/security.rs `trace_context_and_listed_nats_headers_…`.)

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream;
use bytes::Bytes;
use common::*;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, status::StatusCode, Span};
use prost::Message;

/// Every span the collector got, with its resource's `service.name`.
fn exported_spans(collector: &Receiver) -> Vec<(String, Span)> {
    let mut spans = Vec::new();
    for r in collector.received() {
        assert_eq!(r.path, "/v1/traces");
        assert_eq!(r.header("content-type"), "application/x-protobuf");
        let req = ExportTraceServiceRequest::decode(r.body.clone()).expect("OTLP protobuf");
        for rs in req.resource_spans {
            let service = rs
                .resource
                .as_ref()
                .map(|res| attrs(&res.attributes))
                .and_then(|a| a.get("service.name").cloned())
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for s in ss.spans {
                    spans.push((service.clone(), s));
                }
            }
        }
    }
    spans
}

/// Attributes as text (ints and doubles formatted).
fn attrs(kvs: &[opentelemetry_proto::tonic::common::v1::KeyValue]) -> BTreeMap<String, String> {
    kvs.iter()
        .map(|kv| {
            let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(Value::StringValue(s)) => s.clone(),
                Some(Value::IntValue(i)) => i.to_string(),
                Some(Value::DoubleValue(d)) => d.to_string(),
                Some(Value::BoolValue(b)) => b.to_string(),
                other => format!("{other:?}"),
            };
            (kv.key.clone(), v)
        })
        .collect()
}

/// A W3C traceparent for message `i`: trace id and parent span id both derived from it.
fn traceparent(i: usize) -> (String, String, String) {
    let trace = format!(
        "{:032x}",
        0x4bf9_2f35_77b3_4da6_u128 << 64 | (i as u128 + 1)
    );
    let span = format!("{:016x}", 0x00f0_67aa_0ba9_0000_u64 + i as u64 + 1);
    (format!("00-{trace}-{span}-01"), trace, span)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_attempt_is_a_span_under_the_message_trace_and_the_request_carries_it() {
    let nats = NatsServer::start();
    // The first attempt of every message fails, so each has two attempts and spans.
    let rx = Receiver::with(|r| {
        if r.nth_for_id == 1 {
            Reply::status(500)
        } else {
            Reply::ok()
        }
    })
    .await;
    let collector = Receiver::start().await;
    let mut config = TestConfig::new(nats.url()).endpoint(
        "crm",
        &rx.url("/hook"),
        &["*"],
        "retry_schedule = [\"200ms\"]",
    );
    config.top = "[tracing]\nservice_name = \"natshook-test\"\n".into();
    // The collector comes from the environment, as a deployment would set it.
    let collector_url = format!("http://127.0.0.1:{}", collector.port);
    let natshook = Natshook::start_with(
        &config.render(),
        &[("NATSHOOK__TRACING__OTLP_ENDPOINT", collector_url.as_str())],
        &[],
    )
    .await;
    let js = jetstream::new(nats.client().await);
    const N: usize = 3;
    for i in 0..N {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("traceparent", traceparent(i).0.as_str());
        headers.insert("tracestate", "vendor=abc");
        headers.insert("Nats-Msg-Id", format!("tr-{i}").as_str());
        js.publish_with_headers("crm.lead.created", headers, Bytes::from_static(b"{}"))
            .await
            .unwrap()
            .await
            .unwrap();
    }
    rx.wait_for(Duration::from_secs(30), "two attempts each", |r| {
        r.received().iter().filter(|q| q.replied == 200).count() >= N
    })
    .await;
    collector
        .wait_for(Duration::from_secs(30), "a span per attempt", |c| {
            exported_spans(c).len() >= 2 * N
        })
        .await;
    let spans = exported_spans(&collector);
    assert_eq!(spans.len(), 2 * N, "one span per attempt, no more");
    let requests = rx.received();
    for i in 0..N {
        let (_, trace, parent) = traceparent(i);
        let id = format!("tr-{i}");
        let mut mine: Vec<(&String, &Span, BTreeMap<String, String>)> = spans
            .iter()
            .map(|(svc, s)| (svc, s, attrs(&s.attributes)))
            .filter(|(_, _, a)| a.get("natshook.id") == Some(&id))
            .collect();
        mine.sort_by_key(|(_, _, a)| a["natshook.attempt"].clone());
        assert_eq!(mine.len(), 2, "{id}: {mine:?}");
        for (n, (service, span, a)) in mine.iter().enumerate() {
            let attempt = n + 1;
            assert_eq!(*service, "natshook-test");
            assert_eq!(hex::encode(&span.trace_id), trace, "{id} trace id");
            assert_eq!(hex::encode(&span.parent_span_id), parent, "{id} parent");
            assert_eq!(span.kind, SpanKind::Client as i32);
            assert_eq!(a["natshook.endpoint"], "crm");
            assert_eq!(a["natshook.event"], "lead.created");
            assert_eq!(a["natshook.attempt"], attempt.to_string());
            let (status, code) = if attempt == 1 {
                ("500", StatusCode::Error)
            } else {
                ("200", StatusCode::Unset)
            };
            assert_eq!(a["natshook.status"], status, "{id} attempt {attempt}");
            assert_eq!(a["http.response.status_code"], status);
            assert_eq!(
                span.status.as_ref().map_or(0, |s| s.code),
                code as i32,
                "{id} attempt {attempt} span status"
            );
            let ms: f64 = a["natshook.duration_ms"].parse().unwrap();
            let span_ms = (span.end_time_unix_nano - span.start_time_unix_nano) as f64 / 1e6;
            assert!(ms > 0.0 && (ms - span_ms).abs() < 1.0, "{ms} vs {span_ms}");
            // The request of this attempt carries the attempt span's own context.
            let req = requests
                .iter()
                .find(|r| r.id() == id && r.header("x-webhook-attempt") == attempt.to_string())
                .unwrap_or_else(|| panic!("request {id} attempt {attempt}"));
            let span_id = hex::encode(&span.span_id);
            assert_ne!(span_id, parent);
            assert_eq!(
                req.header("traceparent"),
                format!("00-{trace}-{span_id}-01"),
                "{id} attempt {attempt}"
            );
            assert_eq!(req.header("tracestate"), "vendor=abc");
        }
    }
    let dropped = natshook
        .metric("natshook_tracing_spans_dropped_total{reason=\"queue_full\"}")
        .await;
    assert_eq!(dropped, Some(0.0));
}

/// A message without trace context starts a trace of its own; `sample_ratio = 0`
/// records none of those, yet a sampled parent is still followed, and every request
/// carries a traceparent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampling_follows_the_message_and_applies_the_ratio_to_new_traces() {
    let nats = NatsServer::start();
    let rx = Receiver::start().await;
    let collector = Receiver::start().await;
    let mut config = TestConfig::new(nats.url()).endpoint("crm", &rx.url("/hook"), &["*"], "");
    config.top = format!(
        "[tracing]\notlp_endpoint = \"http://127.0.0.1:{}/\"\nsample_ratio = 0\n",
        collector.port
    );
    let mut natshook = Natshook::start(&config.render()).await;
    let js = jetstream::new(nats.client().await);
    publish_all(&js, leads(5, "plain")).await;
    let mut headers = async_nats::HeaderMap::new();
    let (tp, trace, _) = traceparent(7);
    headers.insert("traceparent", tp.as_str());
    headers.insert("Nats-Msg-Id", "sampled");
    js.publish_with_headers("crm.lead.created", headers, Bytes::from_static(b"{}"))
        .await
        .unwrap()
        .await
        .unwrap();
    rx.wait_for(Duration::from_secs(30), "6 delivered", |r| r.count() >= 6)
        .await;
    // Shutdown flushes what is queued.
    assert!(natshook.terminate().await.success());
    let spans = exported_spans(&collector);
    assert_eq!(spans.len(), 1, "only the sampled parent's attempt");
    assert_eq!(hex::encode(&spans[0].1.trace_id), trace);
    for r in rx.received() {
        let parts: Vec<&str> = r.header("traceparent").split('-').collect();
        assert_eq!(parts.len(), 4, "{:?}", r.header("traceparent"));
        let sampled = if r.id() == "sampled" { "01" } else { "00" };
        assert_eq!(parts[3], sampled, "{}", r.id());
    }
}

/// A collector that never answers: deliveries go on at full speed, spans beyond the
/// queue are dropped and counted, failed exports too, and the loss is logged once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_collector_costs_deliveries_nothing() {
    let nats = NatsServer::start();
    let rx = Receiver::start().await;
    let collector = Receiver::with(|_| Reply::ok().delay(Duration::from_secs(60))).await;
    let mut config = TestConfig::new(nats.url()).endpoint("crm", &rx.url("/hook"), &["*"], "");
    config.top = format!(
        "[tracing]\notlp_endpoint = \"http://127.0.0.1:{}\"\ntimeout = \"1s\"\nmax_queue = 8\n",
        collector.port
    );
    let mut natshook = Natshook::start(&config.render()).await;
    let js = jetstream::new(nats.client().await);
    deliver_leads(&js, &rx, 200, "hang").await;
    natshook
        .wait_metric_at_least(
            "natshook_tracing_spans_dropped_total{reason=\"queue_full\"}",
            1.0,
            Duration::from_secs(20),
            "spans dropped while the queue is full",
        )
        .await;
    natshook
        .wait_metric_at_least(
            "natshook_tracing_spans_dropped_total{reason=\"export_failed\"}",
            1.0,
            Duration::from_secs(30),
            "an export timed out",
        )
        .await;
    let logs = natshook.logs();
    assert_eq!(
        logs.matches("trace spans dropped").count(),
        1,
        "logged once a minute at most:\n{logs}"
    );
    collector
        .wait_for(Duration::from_secs(20), "an export request", |c| {
            c.count() >= 1
        })
        .await;
    // Shutdown waits for the last export within `timeout`, then exits cleanly.
    let stopping = std::time::Instant::now();
    assert!(natshook.terminate().await.success());
    assert!(stopping.elapsed() < Duration::from_secs(15));
}

/// The commented `[tracing]` examples in config/, uncommented, pass `natshook check`,
/// and a `NATSHOOK__TRACING__…` variable overrides a key, named when it is wrong.
#[test]
fn the_commented_tracing_examples_pass_check_and_env_overrides_apply() {
    let root = env!("CARGO_MANIFEST_DIR");
    let dir = tempfile::tempdir().unwrap();
    for (name, start, prefix) in [
        ("natshook.example.toml", "# [tracing]", "# "),
        ("natshook.example.yaml", "# tracing:", "# "),
    ] {
        let text = std::fs::read_to_string(format!("{root}/config/{name}")).unwrap();
        let at = text.find(start).expect("tracing example");
        let end = at + text[at..].find("\n\n").expect("end of the example");
        let example: String = text[at..end]
            .lines()
            .map(|l| format!("{}\n", l.strip_prefix(prefix).unwrap_or(l)))
            .collect();
        let text = format!("{}{example}{}", &text[..at], &text[end..])
            .replace("/var/run/secrets/audit/current", "/etc/hostname")
            .replace("/var/run/secrets/audit/previous", "/etc/hostname");
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let check = |env: &[(&str, &str)]| {
            let out = std::process::Command::new(bin())
                .args(["check", "--config"])
                .arg(&path)
                .envs([("CRM_WEBHOOK_SECRET", "x"), ("CRM_API_KEY", "y")])
                .envs(env.iter().copied())
                .output()
                .unwrap();
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        };
        let (code, out, err) = check(&[]);
        assert_eq!(code, Some(0), "{name}: {err}");
        assert!(
            out.contains(
                "tracing: spans of natshook to http://127.0.0.1:4318/v1/traces (sample ratio 1)"
            ),
            "{name}: {out}"
        );
        let (code, out, err) = check(&[
            (
                "NATSHOOK__TRACING__OTLP_ENDPOINT",
                "https://otel.example.com/otlp/",
            ),
            ("NATSHOOK__TRACING__SAMPLE_RATIO", "0.25"),
        ]);
        assert_eq!(code, Some(0), "{name}: {err}");
        assert!(
            out.contains("to https://otel.example.com/otlp/v1/traces (sample ratio 0.25)"),
            "{name}: {out}"
        );
        let (code, _, err) = check(&[
            ("NATSHOOK__TRACING__SAMPLE_RATIO", "2"),
            ("NATSHOOK__TRACING__MAX_QUEUE", "none"),
        ]);
        assert_eq!(code, Some(2), "{name}: {err}");
        assert!(
            err.contains("tracing.sample_ratio: must be between 0 and 1 (got 2)"),
            "{name}: {err}"
        );
        assert!(err.contains("tracing.max_queue: "), "{name}: {err}");
    }
}

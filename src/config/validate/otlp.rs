//! `[tracing]`: where and how delivery attempts are exported as OpenTelemetry spans.
//! The section's presence turns tracing on, so a section without `otlp_endpoint` is a
//! problem rather than a silent no-op.

use std::time::Duration;

use super::super::defaults;
use super::super::raw::RawTracing;
use super::super::Problems;
use crate::settings::TracingSettings;

/// The OTLP/HTTP path of traces under a collector's base URL.
const TRACES_PATH: &str = "/v1/traces";

/// `Some(None)` without `[tracing]`; `None` when a key is invalid.
pub(super) fn validate(
    raw: Option<&RawTracing>,
    p: &mut Problems,
) -> Option<Option<TracingSettings>> {
    let Some(raw) = raw else {
        return Some(None);
    };
    let before = p.len();
    let traces_url = match raw.otlp_endpoint.as_deref() {
        None => {
            p.add(
                "tracing.otlp_endpoint",
                "required in [tracing] (the collector's OTLP/HTTP address, e.g. \"http://127.0.0.1:4318\"); remove [tracing] to turn tracing off",
            );
            None
        }
        Some(text) => traces_url(text, p),
    };
    let service_name = raw
        .service_name
        .as_deref()
        .unwrap_or(defaults::TRACING_SERVICE_NAME);
    if service_name.trim().is_empty() {
        p.add("tracing.service_name", "must not be empty");
    }
    let sample_ratio = raw.sample_ratio.unwrap_or(defaults::TRACING_SAMPLE_RATIO);
    if !(0.0..=1.0).contains(&sample_ratio) {
        p.add(
            "tracing.sample_ratio",
            format_args!("must be between 0 and 1 (got {sample_ratio})"),
        );
    }
    let timeout = match raw.timeout.as_deref() {
        None => Some(defaults::TRACING_TIMEOUT),
        Some(text) => p.duration("tracing.timeout", text),
    };
    let max_queue = p.positive(
        "tracing.max_queue",
        raw.max_queue.unwrap_or(defaults::TRACING_MAX_QUEUE),
        1,
    );
    if p.len() > before {
        return None;
    }
    Some(Some(TracingSettings {
        traces_url: traces_url?,
        service_name: service_name.to_string(),
        sample_ratio,
        timeout: timeout.unwrap_or(Duration::ZERO),
        max_queue: max_queue? as usize,
    }))
}

/// The traces URL under the collector's base URL `text`, as OTLP's
/// `OTEL_EXPORTER_OTLP_ENDPOINT` is read: `http://host:4318` and `http://host:4318/`
/// both export to `http://host:4318/v1/traces`.
fn traces_url(text: &str, p: &mut Problems) -> Option<http::Uri> {
    const KEY: &str = "tracing.otlp_endpoint";
    let uri = match text.trim().parse::<http::Uri>() {
        Ok(u) => u,
        Err(e) => {
            p.add(KEY, format_args!("'{text}' is not a URL ({e})"));
            return None;
        }
    };
    let scheme_ok = matches!(uri.scheme_str(), Some("http" | "https"));
    if !scheme_ok || uri.host().is_none_or(str::is_empty) {
        p.add(
            KEY,
            format_args!("'{text}' must be an http:// or https:// URL with a host, e.g. \"http://127.0.0.1:4318\""),
        );
        return None;
    }
    if uri.query().is_some() {
        p.add(KEY, format_args!("'{text}' must not have a query"));
        return None;
    }
    // The URL is logged at start-up; credentials belong in OTEL_EXPORTER_OTLP_HEADERS.
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        p.add(
            KEY,
            "must not carry credentials (user@host); send them as headers with OTEL_EXPORTER_OTLP_HEADERS",
        );
        return None;
    }
    if let Some(problem) = super::url::port_problem(&uri) {
        p.add(KEY, format_args!("'{text}': {problem}"));
        return None;
    }
    let path = format!("{}{TRACES_PATH}", uri.path().trim_end_matches('/'));
    let mut parts = uri.into_parts();
    match path.parse() {
        Ok(pq) => parts.path_and_query = Some(pq),
        Err(e) => {
            p.add(KEY, format_args!("'{text}': {e}"));
            return None;
        }
    }
    match http::Uri::from_parts(parts) {
        Ok(u) => Some(u),
        Err(e) => {
            p.add(KEY, format_args!("'{text}': {e}"));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn problems(toml: &str) -> Vec<String> {
        match Config::from_str(toml, "toml") {
            Ok(_) => Vec::new(),
            Err(e) => e.problems.iter().map(|p| p.to_string()).collect(),
        }
    }

    const BASE: &str = r#"
[nats]
stream = "EVENTS"
[[events]]
subject = "a.b"
event = "a.b"
[[endpoints]]
name = "crm"
url = "http://127.0.0.1:9/hook"
events = ["*"]
secret = { value = "s3cret-s3cret" }
allow_http = true
allow_private = true
"#;

    #[test]
    fn tracing_is_off_without_the_section() {
        let c = Config::from_str(BASE, "toml").unwrap();
        assert_eq!(c.tracing, None);
    }

    #[test]
    fn the_section_takes_its_defaults_and_builds_the_traces_url() {
        for (written, url) in [
            ("http://127.0.0.1:4318", "http://127.0.0.1:4318/v1/traces"),
            ("http://127.0.0.1:4318/", "http://127.0.0.1:4318/v1/traces"),
            (
                "https://otel.example.com/otlp",
                "https://otel.example.com/otlp/v1/traces",
            ),
        ] {
            let text = format!("{BASE}\n[tracing]\notlp_endpoint = \"{written}\"\n");
            let t = Config::from_str(&text, "toml").unwrap().tracing.unwrap();
            assert_eq!(t.traces_url.to_string(), url);
            assert_eq!(t.service_name, "natshook");
            assert_eq!(t.sample_ratio, 1.0);
            assert_eq!(t.timeout, std::time::Duration::from_secs(10));
            assert_eq!(t.max_queue, 2048);
        }
    }

    #[test]
    fn every_bad_key_is_named() {
        let text = format!(
            "{BASE}\n[tracing]\notlp_endpoint = \"grpc://x:4317\"\nservice_name = \" \"\nsample_ratio = 1.5\ntimeout = \"soon\"\nmax_queue = 0\nendpoint = \"x\"\n"
        );
        let got = problems(&text);
        for key in [
            "tracing.otlp_endpoint: ",
            "tracing.service_name: ",
            "tracing.sample_ratio: must be between 0 and 1",
            "tracing.timeout: ",
            "tracing.max_queue: ",
            "tracing.endpoint: unknown key",
        ] {
            assert!(got.iter().any(|p| p.starts_with(key)), "{key} in {got:?}");
        }
        let got = problems(&format!("{BASE}\n[tracing]\nsample_ratio = 0.5\n"));
        assert!(
            got.iter()
                .any(|p| p.starts_with("tracing.otlp_endpoint: required")),
            "{got:?}"
        );
        for bad in [
            "http://c:4318/?a=1",
            "http://c:99999",
            "http://u:secret@c:4318",
            "127.0.0.1:4318",
        ] {
            let got = problems(&format!("{BASE}\n[tracing]\notlp_endpoint = \"{bad}\"\n"));
            assert!(
                got.iter().any(|p| p.starts_with("tracing.otlp_endpoint: ")),
                "{bad}: {got:?}"
            );
            assert!(!got.iter().any(|p| p.contains("secret")), "{got:?}");
        }
    }
}

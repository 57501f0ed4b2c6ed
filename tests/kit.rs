//! The operations kit in examples/: Prometheus rules (promtool), the PrometheusRule
//! copy, the Grafana dashboard (contract metrics only), Kubernetes manifests and the
//! compose config (valid natshook configs, grace periods that fit).

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use figment::providers::{Format, Yaml};
use figment::Figment;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn read(rel: &str) -> String {
    std::fs::read_to_string(Path::new(ROOT).join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn yaml(text: &str) -> serde_json::Value {
    Figment::from(Yaml::string(text))
        .extract()
        .expect("valid YAML")
}

/// Metric names the contract defines: every `natshook_…` in backticks from the
/// Metrics section on (its list, and later sections' own metrics such as ingress's).
fn contract_metrics() -> BTreeSet<String> {
    let contract = read("docs/CONTRACT.md");
    let section = &contract[contract.find("## Metrics").expect("Metrics section")..];
    section
        .split('`')
        .skip(1)
        .step_by(2)
        .filter_map(|code| code.split(['{', ' ']).next())
        .filter(|n| n.starts_with("natshook_"))
        .map(str::to_string)
        .collect()
}

#[test]
fn the_contract_copy_in_docs_matches_the_shared_spec() {
    let shared = Path::new(ROOT).join("../shared/spec/CONTRACT.md");
    if let Ok(spec) = std::fs::read_to_string(shared) {
        assert_eq!(
            read("docs/CONTRACT.md"),
            spec,
            "docs/CONTRACT.md is out of date"
        );
    }
    assert_eq!(contract_metrics().len(), 14);
}

#[test]
fn prometheus_rules_pass_promtool_check_and_unit_tests() {
    let promtool = common::tool("promtool");
    let dir = Path::new(ROOT).join("examples/prometheus");
    let check = Command::new(&promtool)
        .args(["check", "rules", "natshook-rules.yml"])
        .current_dir(&dir)
        .output();
    let check = match check {
        Ok(out) => out,
        Err(e) if std::env::var_os("CI").is_none() => {
            eprintln!("promtool not installed ({e}); scripts/setup-tools.sh installs it as root. Skipped outside CI.");
            return;
        }
        Err(e) => panic!("promtool is required in CI: {e}"),
    };
    assert!(
        check.status.success(),
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    let test = Command::new(&promtool)
        .args(["test", "rules", "natshook-rules.test.yml"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(
        test.status.success(),
        "{}{}",
        String::from_utf8_lossy(&test.stdout),
        String::from_utf8_lossy(&test.stderr)
    );
}

#[test]
fn prometheus_rule_resource_holds_the_same_groups() {
    let plain = yaml(&read("examples/prometheus/natshook-rules.yml"));
    let resource = yaml(&read("examples/kubernetes/prometheusrule.yaml"));
    assert_eq!(resource["kind"], "PrometheusRule");
    assert_eq!(resource["spec"]["groups"], plain["groups"]);
    let names: Vec<&str> = plain["groups"][0]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["alert"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "NatshookEndpointPaused",
            "NatshookDeadLettersIncreasing",
            "NatshookFailureRatioHigh",
            "NatshookConsumerLagGrowing",
            "NatshookNatsDisconnected",
            "NatshookIngressVerificationFailing",
            "NatshookIngressNotStored"
        ]
    );
    for rule in plain["groups"][0]["rules"].as_array().unwrap() {
        assert!(
            rule["annotations"]["runbook"]
                .as_str()
                .is_some_and(|r| r.len() > 20),
            "{rule}"
        );
        assert_only_contract_metrics(rule["expr"].as_str().unwrap());
    }
}

/// PromQL words that are not metric names.
const PROMQL_WORDS: &[&str] = &[
    "sum",
    "max",
    "min",
    "avg",
    "count",
    "by",
    "without",
    "on",
    "ignoring",
    "and",
    "or",
    "unless",
    "rate",
    "irate",
    "increase",
    "deriv",
    "delta",
    "histogram_quantile",
    "label_values",
    "le",
    "bool",
    "offset",
    "topk",
    "bottomk",
    "clamp_min",
    "abs",
];

/// Every identifier in a query is a contract metric (with _bucket/_sum/_count for
/// histograms), a PromQL word, a label in a matcher or grouping, or a variable.
fn assert_only_contract_metrics(expr: &str) {
    let metrics = contract_metrics();
    // Drop quoted strings, label matchers and grouping lists first.
    let mut cleaned = String::new();
    let (mut depth_brace, mut in_quote, mut group_paren) = (0, false, 0);
    let mut last_word = String::new();
    let mut prev_c = ' ';
    for c in expr.chars() {
        match c {
            '"' => in_quote = !in_quote,
            _ if in_quote => {}
            '{' => depth_brace += 1,
            '}' => depth_brace -= 1,
            '(' if matches!(last_word.as_str(), "by" | "without" | "on" | "ignoring") => {
                group_paren += 1
            }
            ')' if group_paren > 0 => group_paren -= 1,
            _ if depth_brace > 0 || group_paren > 0 => {}
            _ => cleaned.push(c),
        }
        let word_char = |ch: char| ch.is_alphanumeric() || ch == '_';
        if word_char(c) {
            if !word_char(prev_c) {
                last_word.clear();
            }
            if !in_quote && depth_brace == 0 {
                last_word.push(c);
            }
        } else if !c.is_whitespace() {
            last_word.clear();
        }
        prev_c = c;
    }
    let mut word = String::new();
    let mut prev = ' ';
    for c in cleaned.chars().chain(std::iter::once(' ')) {
        if c.is_alphanumeric() || c == '_' || c == '$' {
            word.push(c);
            continue;
        }
        if !word.is_empty() {
            let w = std::mem::take(&mut word);
            let starts_digit = w.starts_with(|ch: char| ch.is_ascii_digit());
            let variable = w.starts_with('$') || prev == '$';
            if !starts_digit && !variable && !PROMQL_WORDS.contains(&w.as_str()) {
                let base = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| w.strip_suffix(s))
                    .filter(|b| metrics.contains(*b))
                    .unwrap_or(&w);
                assert!(
                    metrics.contains(base),
                    "'{w}' in `{expr}` is not a contract metric"
                );
            }
        }
        prev = c;
    }
}

#[test]
fn grafana_dashboard_queries_name_only_contract_metrics() {
    let dash: serde_json::Value =
        serde_json::from_str(&read("examples/grafana/natshook-dashboard.json")).unwrap();
    let mut exprs = Vec::new();
    for panel in dash["panels"].as_array().unwrap() {
        for t in panel["targets"].as_array().unwrap() {
            exprs.push(t["expr"].as_str().unwrap().to_string());
        }
    }
    for v in dash["templating"]["list"].as_array().unwrap() {
        if let Some(def) = v["definition"].as_str() {
            exprs.push(def.replace("label_values(", "").replace(", endpoint)", ""));
        }
    }
    assert!(exprs.len() >= 12);
    let metrics = contract_metrics();
    let mut used = BTreeSet::new();
    for e in &exprs {
        assert_only_contract_metrics(e);
        for m in &metrics {
            if e.contains(m.as_str()) {
                used.insert(m.clone());
            }
        }
    }
    for needed in [
        "natshook_deliveries_total",
        "natshook_end_to_end_seconds",
        "natshook_consumer_pending",
        "natshook_endpoint_paused",
        "natshook_dead_letters_total",
    ] {
        assert!(used.contains(needed), "dashboard lacks {needed}");
    }
}

#[test]
fn the_metric_check_catches_strangers() {
    let r =
        std::panic::catch_unwind(|| assert_only_contract_metrics("rate(http_requests_total[5m])"));
    assert!(r.is_err());
    let r = std::panic::catch_unwind(|| assert_only_contract_metrics("natshook_made_up_total"));
    assert!(r.is_err());
    assert_only_contract_metrics("sum by (le) (rate(natshook_end_to_end_seconds_bucket{endpoint=~\"$endpoint\"}[$__rate_interval]))");
}

/// Runs `natshook check` on a config embedded in a manifest; only problems about
/// secrets that exist in the cluster (files, env, the NATS credentials) are expected.
fn check_embedded(config: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("natshook.toml");
    std::fs::write(&path, config).unwrap();
    let out = common::natshook_command()
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    for line in err.lines().skip(1) {
        assert!(
            line.contains("cannot read secret file")
                || line.contains("is not set")
                || line.contains("nats.creds_file: cannot read"),
            "unexpected problem in an example config: {line}"
        );
    }
}

#[test]
fn kubernetes_manifests_carry_valid_configs_and_fitting_grace_periods() {
    for file in [
        "examples/kubernetes/sidecar.yaml",
        "examples/kubernetes/standalone.yaml",
    ] {
        let text = read(file);
        let docs: Vec<serde_json::Value> = text.split("\n---\n").map(yaml).collect();
        let config = docs
            .iter()
            .find(|d| d["kind"] == "ConfigMap")
            .and_then(|d| d["data"]["natshook.toml"].as_str())
            .unwrap_or_else(|| panic!("{file}: no ConfigMap with natshook.toml"))
            .to_string();
        check_embedded(&config);
        let deployment = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
        let spec = &deployment["spec"]["template"]["spec"];
        let grace = spec["terminationGracePeriodSeconds"].as_u64().unwrap();
        let shutdown: u64 = config
            .lines()
            .find_map(|l| l.trim().strip_prefix("shutdown_grace = \""))
            .and_then(|v| v.trim_end_matches("s\"").parse().ok())
            .unwrap();
        assert!(
            grace > shutdown,
            "{file}: terminationGracePeriodSeconds {grace} <= shutdown_grace {shutdown}"
        );
        let natshook = spec["containers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "natshook")
            .unwrap();
        assert_eq!(natshook["livenessProbe"]["httpGet"]["path"], "/healthz");
        assert_eq!(natshook["readinessProbe"]["httpGet"]["path"], "/readyz");
        assert!(natshook["resources"]["limits"]["memory"].is_string());
    }
}

/// Both ways to scale target standalone.yaml's Deployment, and the KEDA query takes
/// the max per endpoint (every replica reports the same consumers) of a contract metric.
#[test]
fn autoscaling_targets_the_shared_deployment_on_its_backlog() {
    let standalone: Vec<serde_json::Value> = read("examples/kubernetes/standalone.yaml")
        .split("\n---\n")
        .map(yaml)
        .collect();
    let deployment = standalone
        .iter()
        .find(|d| d["kind"] == "Deployment")
        .unwrap();
    let name = &deployment["metadata"]["name"];
    let docs: Vec<serde_json::Value> = read("examples/kubernetes/autoscaling.yaml")
        .split("\n---\n")
        .map(yaml)
        .collect();
    let keda = docs.iter().find(|d| d["kind"] == "ScaledObject").unwrap();
    assert_eq!(&keda["spec"]["scaleTargetRef"]["name"], name);
    let trigger = &keda["spec"]["triggers"][0];
    assert_eq!(trigger["type"], "prometheus");
    let query = trigger["metadata"]["query"].as_str().unwrap();
    assert_only_contract_metrics(query);
    assert!(
        query.contains("max by (endpoint) (natshook_consumer_pending"),
        "{query}"
    );
    let hpa = docs
        .iter()
        .find(|d| d["kind"] == "HorizontalPodAutoscaler")
        .unwrap();
    assert_eq!(&hpa["spec"]["scaleTargetRef"]["name"], name);
    assert_eq!(hpa["spec"]["scaleTargetRef"]["kind"], "Deployment");
    let metric = &hpa["spec"]["metrics"][0]["external"];
    assert_eq!(metric["target"]["type"], "AverageValue");
    assert_eq!(
        keda["spec"]["minReplicaCount"], hpa["spec"]["minReplicas"],
        "the two ways differ"
    );
}

#[test]
fn compose_file_and_its_config() {
    let compose = yaml(&read("examples/compose.yaml"));
    for service in ["nats", "receiver", "natshook"] {
        assert!(
            compose["services"][service].is_object(),
            "compose lacks {service}"
        );
    }
    let out = common::natshook_command()
        .args(["check", "--config"])
        .arg(Path::new(ROOT).join("examples/compose-natshook.toml"))
        .env("CRM_WEBHOOK_SECRET", "x")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

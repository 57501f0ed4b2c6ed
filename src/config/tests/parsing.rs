//! Reading the file: YAML and TOML alike, their syntax errors, repeated keys and
//! the nesting limit that keeps a hostile config from stalling the parser.

use super::*;

#[test]
fn yaml_twin_parses() {
    let yaml = r#"
nats:
  stream: EVENTS
events:
  - subject: crm.lead.created
    event: lead.created
endpoints:
  - name: crm
    url: https://crm.example.com/hooks
    events: ["*"]
    secret: { value: s3cret }
    envelope: raw
"#;
    let c = Config::from_str(yaml, "yaml").unwrap();
    assert_eq!(c.endpoints[0].envelope, Envelope::Raw);
}

#[test]
fn a_repeated_yaml_key_is_an_error_named_by_its_path() {
    let text = format!(
            "{GOOD_YAML}    allow_private: false\n    allow_private: true\n    headers: {{ X-A: a, \"X-A\": b }}\n    envelope_fields:\n      env: prod\n      nested: {{ k: 1, k: 2 }}\n      env: dev\n    timeout: fast\n"
        );
    let got = problems_in(&text, "yaml");
    for needle in [
        "endpoints[0].allow_private: repeated key (lines 11 and 12)",
        "endpoints[0].headers.X-A: repeated key (twice on line 13)",
        "endpoints[0].envelope_fields.nested.k: repeated key (twice on line 16)",
        "endpoints[0].envelope_fields.env: repeated key (lines 15 and 17)",
        // The rest is still validated.
        "endpoints[0].timeout: 'fast' is not a duration",
    ] {
        assert!(
            got.iter().any(|g| g.starts_with(needle)),
            "missing {needle:?} in {got:#?}"
        );
    }
    assert_eq!(got.len(), 5, "{got:#?}");
    // The same key in different mappings, or a value repeated, is fine.
    let text =
        format!("{GOOD_YAML}    envelope_fields: {{ a: {{ x: 1 }}, b: {{ x: 1 }}, c: [x, x] }}\n");
    assert!(Config::from_str(&text, "yaml").is_ok());
}

#[test]
fn deep_nesting_is_refused_at_once() {
    let n = 100_000;
    for (format, text) in [
        ("yaml", format!("a: {}{}\n", "[".repeat(n), "]".repeat(n))),
        (
            "yaml",
            format!("a: {}1{}\n", "{a: ".repeat(n), "}".repeat(n)),
        ),
        ("yaml", format!("a:\n{}x\n", "- ".repeat(n))),
        ("toml", format!("a = {}{}\n", "[".repeat(n), "]".repeat(n))),
        // toml_edit's limits (80 levels, 80-part keys) multiply: 79 x 79 deep.
        (
            "toml",
            format!(
                "a = {}1{}\n",
                format!("{{ {} = ", ["k"; 79].join(".")).repeat(79),
                "}".repeat(79)
            ),
        ),
    ] {
        let started = std::time::Instant::now();
        let got = problems_in(&text, format);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{format}: {:?}",
            started.elapsed()
        );
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(
            got[0].starts_with("config: nests deeper than 64 levels"),
            "{got:?}"
        );
    }
}

#[test]
fn a_toml_syntax_error_is_one_line_with_its_place() {
    assert_eq!(
            problems("a = 1\n[nats\n"),
            vec!["config: TOML syntax error at line 2, column 6: invalid table header; expected `.`, `]`"]
        );
}

#[test]
fn nesting_up_to_the_limit_passes_and_brackets_in_strings_do_not_count() {
    // The top-level table, endpoints and the endpoint are 3 levels.
    let nested = |levels: usize| "{ a = ".repeat(levels) + "1" + &" }".repeat(levels);
    let at = |levels: usize| format!("{GOOD}envelope_fields = {}\n", nested(levels));
    assert!(Config::from_str(&at(61), "toml").is_ok());
    let got = problems(&at(62));
    assert!(
        got[0].starts_with(
            "config: nests deeper than 64 levels (under endpoints[0].envelope_fields.a.a"
        ),
        "{got:?}"
    );
    let yaml = |levels: usize| {
        format!(
            "{GOOD_YAML}    envelope_fields: {}\n",
            nested(levels).replace(" =", ":")
        )
    };
    assert!(Config::from_str(&yaml(61), "yaml").is_ok());
    let got = problems_in(&yaml(62), "yaml");
    assert!(
        got[0].starts_with("config: nests deeper than 64 levels at line 11, column "),
        "{got:?}"
    );

    let brackets = "[{".repeat(5000);
    let text = format!(
            "{GOOD_YAML}    envelope_fields:\n      quoted: \"{brackets}\"\n      single: '{brackets}'\n      plain: a{brackets}\n      block: |\n        {brackets}\n    # {brackets}\n"
        );
    assert!(Config::from_str(&text, "yaml").is_ok());
    let text = format!(
            "{GOOD}envelope_fields = {{ basic = \"{brackets}\", literal = '{brackets}', multi = \"\"\"\n{brackets}\"\"\" }}\n# {brackets}\n"
        );
    assert!(Config::from_str(&text, "toml").is_ok());
}

/// Aliases repeat a collection inside another: the merged config is checked too.
#[test]
fn nesting_through_yaml_aliases_is_refused() {
    let text = format!(
        "{GOOD_YAML}    envelope_fields:\n      a: &deep {}1{}\n      b: {}*deep{}\n",
        "[".repeat(40),
        "]".repeat(40),
        "[".repeat(40),
        "]".repeat(40)
    );
    let got = problems_in(&text, "yaml");
    assert!(
        got[0].starts_with(
            "config: nests deeper than 64 levels (under endpoints[0].envelope_fields.b[0]"
        ),
        "{got:?}"
    );
}

#[test]
fn env_values_figment_would_parse_too_deep_are_refused() {
    let deep = "[".repeat(65) + &"]".repeat(65);
    let err = shape::check_env_value("NATSHOOK__X", &deep).unwrap_err();
    assert_eq!(
        err.problems[0].to_string(),
        "NATSHOOK__X: nests deeper than 64 levels"
    );
    let deep_dict = "{a=".repeat(65) + "1" + &"}".repeat(65);
    assert!(shape::check_env_value("NATSHOOK__X", &deep_dict).is_err());
    for fine in [
        "[".repeat(64) + &"]".repeat(64),
        format!("\"{}\"", "[".repeat(1000)),
        format!("[\"\\\"{}\", 1]", "[".repeat(1000)),
        "['[', ']', '{'],".repeat(100),
        format!("secret{}", "[".repeat(1000)),
        format!("{{\"{}\" = 1}}", "{".repeat(1000)),
        "[[[[]]]],".repeat(1000),
    ] {
        assert!(
            shape::check_env_value("NATSHOOK__X", &fine).is_ok(),
            "{fine}"
        );
    }
}

//! How a change (`PATCH`) applies to a stored record, key by key.

use serde_json::{Map, Value};

/// Applies a change's `key` to a stored record. `headers` and `signature` merge key by
/// key, as a JSON merge patch merges objects (`null` removes one): `GET` never shows a
/// header's value, so a change to one must keep the others. Header names match
/// whatever their case. Any other key is replaced, objects included (a `filter` or
/// `envelope_fields` is one setting, not a set of them).
pub(super) fn apply(record: &mut Map<String, Value>, key: String, value: Value) {
    let merged = matches!(key.as_str(), "headers" | "signature");
    let Value::Object(change) = value else {
        record.insert(key, value);
        return;
    };
    if !merged {
        record.insert(key, Value::Object(change));
        return;
    }
    if !record.get(&key).is_some_and(Value::is_object) {
        let set = change.into_iter().filter(|(_, v)| !v.is_null()).collect();
        record.insert(key, Value::Object(set));
        return;
    }
    let Some(Value::Object(stored)) = record.get_mut(&key) else {
        return;
    };
    let to_standard = key == "signature"
        && change.get("scheme").and_then(Value::as_str) == Some("standard")
        && !change.contains_key("header");
    for (name, v) in change {
        match key.as_str() {
            "headers" => stored.retain(|k, _| !k.eq_ignore_ascii_case(&name)),
            _ => {
                stored.remove(&name);
            }
        }
        if !v.is_null() {
            stored.insert(name, v);
        }
    }
    // `standard` has headers of its own: the one a `hex` or `sha256` endpoint named
    // goes with the scheme it belonged to.
    if to_standard {
        stored.remove("header");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn changed(record: Value, change: Value) -> Value {
        let (Value::Object(mut record), Value::Object(change)) = (record, change) else {
            panic!("objects");
        };
        for (key, value) in change {
            apply(&mut record, key, value);
        }
        Value::Object(record)
    }

    /// `headers` and `signature` merge key by key (header names in any case, `null`
    /// removing one), everything else is replaced.
    #[test]
    fn a_change_merges_headers_and_signature_and_replaces_the_rest() {
        let record = serde_json::json!({
            "headers": {"X-Key": "k", "X-Team": "t"},
            "signature": {"scheme": "hex", "header": "X-Sig"},
            "filter": {"status": "paid"},
            "events": ["a", "b"],
            "secret": ["new", "old"],
        });
        let change = serde_json::json!({
            "headers": {"X-New": "v", "x-team": null, "x-key": "k2"},
            "signature": {"header": "X-Other"},
            "filter": {"kind": "order"},
            "envelope_fields": {"a": "x", "b": null},
            "events": ["c"],
            "secret": "only",
        });
        assert_eq!(
            changed(record.clone(), change),
            serde_json::json!({
                "headers": {"x-key": "k2", "X-New": "v"},
                "signature": {"scheme": "hex", "header": "X-Other"},
                "filter": {"kind": "order"},
                "envelope_fields": {"a": "x", "b": null},
                "events": ["c"],
                "secret": "only",
            })
        );
        // Switching to `standard` drops the header of the scheme it leaves.
        let to_standard = serde_json::json!({"signature": {"scheme": "standard"}});
        assert_eq!(
            changed(record, to_standard)["signature"],
            serde_json::json!({"scheme": "standard"})
        );
    }
}

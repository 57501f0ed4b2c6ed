//! Payload filters (`filter` of an endpoint): deliver only messages whose JSON payload
//! has one of the allowed values at each configured path.
//!
//! A message is matched in one pass over its bytes: a `DeserializeSeed` follows the
//! configured paths (all of them at once, as a tree) and skips everything else with
//! `IgnoredAny`, so no tree of the payload is built and nothing of it is copied but
//! the strings it compares. The pass reads the whole payload, so a payload that is not
//! JSON never matches, even when the paths come before the broken part.

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// Keys start with this: `data` is the payload, as the envelope names it.
pub const ROOT: &str = "data";

/// At most this many keys per filter: each key is one bit of a match.
pub const MAX_KEYS: usize = 64;

/// A JSON scalar a filter allows.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    Null,
    Bool(bool),
    /// Any integer JSON holds (i64 and u64 alike).
    Int(i128),
    Float(f64),
    String(String),
}

impl Scalar {
    /// The scalar a config value is, if it is one.
    pub fn from_json(v: &serde_json::Value) -> Option<Self> {
        Some(match v {
            serde_json::Value::Null => Scalar::Null,
            serde_json::Value::Bool(b) => Scalar::Bool(*b),
            serde_json::Value::Number(n) => match (n.as_i64(), n.as_u64()) {
                (Some(i), _) => Scalar::Int(i128::from(i)),
                (None, Some(u)) => Scalar::Int(i128::from(u)),
                (None, None) => Scalar::Float(n.as_f64()?),
            },
            serde_json::Value::String(s) => Scalar::String(s.clone()),
            serde_json::Value::Array(_) | serde_json::Value::Object(_) => return None,
        })
    }

    /// Numbers compare by value, so `1` and `1.0` are equal; other types only equal
    /// themselves (`"1"` is not `1`).
    fn equals(&self, v: Seen<'_>) -> bool {
        match (self, v) {
            (Scalar::Null, Seen::Null) => true,
            (Scalar::Bool(a), Seen::Bool(b)) => *a == b,
            (Scalar::Int(a), Seen::Int(b)) => *a == b,
            (Scalar::Int(a), Seen::Float(b)) => *a as f64 == b,
            (Scalar::Float(a), Seen::Int(b)) => *a == b as f64,
            (Scalar::Float(a), Seen::Float(b)) => *a == b,
            (Scalar::String(a), Seen::Str(b)) => a == b,
            _ => false,
        }
    }
}

/// A scalar read from a payload, borrowed for the comparison.
#[derive(Clone, Copy)]
enum Seen<'a> {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(&'a str),
}

/// Why a filter key or value is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("must be `data` or start with `data.` (a dotted path into the payload)")]
    NotData,
    #[error("has an empty path segment")]
    EmptySegment,
    #[error("needs at least one allowed value")]
    NoValues,
    #[error("at most {MAX_KEYS} keys")]
    TooManyKeys,
}

/// One position in the payload that some keys go through or end at.
#[derive(Debug, Clone, Default, PartialEq)]
struct Node {
    /// The key that ends here: its bit and its allowed values.
    rule: Option<(u32, Vec<Scalar>)>,
    children: Vec<Child>,
}

#[derive(Debug, Clone, PartialEq)]
struct Child {
    name: String,
    /// The name as an array index, for paths through arrays (`data.items.0`).
    index: Option<usize>,
    node: Node,
}

impl Node {
    fn child(&self, name: &str) -> Option<&Node> {
        self.children
            .iter()
            .find(|c| c.name == name)
            .map(|c| &c.node)
    }

    fn element(&self, i: usize) -> Option<&Node> {
        self.children
            .iter()
            .find(|c| c.index == Some(i))
            .map(|c| &c.node)
    }

    fn child_mut(&mut self, name: &str) -> &mut Node {
        let at = match self.children.iter().position(|c| c.name == name) {
            Some(at) => at,
            None => {
                self.children.push(Child {
                    name: name.to_string(),
                    index: index_of(name),
                    node: Node::default(),
                });
                self.children.len() - 1
            }
        };
        &mut self.children[at].node
    }
}

/// `0`, `1`, …: digits without a leading zero.
fn index_of(segment: &str) -> Option<usize> {
    if segment.len() > 1 && segment.starts_with('0') {
        return None;
    }
    segment
        .bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| segment.parse().ok())
        .flatten()
}

/// An endpoint's payload filter; the empty filter lets everything through.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PayloadFilter {
    root: Node,
    /// One bit per key: a message matches when every bit is set.
    all: u64,
}

impl PayloadFilter {
    /// Checks one key (a dotted path) on its own; values are checked by the caller.
    pub fn check_key(key: &str) -> Result<Vec<&str>, FilterError> {
        let mut segments = key.split('.');
        if segments.next() != Some(ROOT) {
            return Err(FilterError::NotData);
        }
        let rest: Vec<&str> = segments.collect();
        if rest.iter().any(|s| s.is_empty()) {
            return Err(FilterError::EmptySegment);
        }
        Ok(rest)
    }

    /// The filter of `keys` (path → allowed values): every key must match (AND), and
    /// a key matches when its value is one of its values (OR).
    pub fn new<'a>(
        keys: impl IntoIterator<Item = (&'a str, Vec<Scalar>)>,
    ) -> Result<Self, (String, FilterError)> {
        let mut filter = PayloadFilter::default();
        for (bit, (key, values)) in keys.into_iter().enumerate() {
            let fail = |e| (key.to_string(), e);
            if bit >= MAX_KEYS {
                return Err(fail(FilterError::TooManyKeys));
            }
            if values.is_empty() {
                return Err(fail(FilterError::NoValues));
            }
            let path = Self::check_key(key).map_err(fail)?;
            let node = path
                .into_iter()
                .fold(&mut filter.root, |node, segment| node.child_mut(segment));
            // `bit` < 64, checked above.
            node.rule = Some((bit as u32, values));
            filter.all |= 1 << bit;
        }
        Ok(filter)
    }

    pub fn is_empty(&self) -> bool {
        self.all == 0
    }

    /// True when `payload` is JSON and has an allowed value at every key.
    pub fn matches(&self, payload: &[u8]) -> bool {
        if self.is_empty() {
            return true;
        }
        let mut hits = 0u64;
        let mut de = serde_json::Deserializer::from_slice(payload);
        let walked = At {
            node: &self.root,
            hits: &mut hits,
        }
        .deserialize(&mut de)
        .and_then(|()| de.end());
        walked.is_ok() && hits == self.all
    }
}

/// Reads one JSON value at `node`: compares it when a key ends here, descends into
/// the children the filter has, and skips the rest.
struct At<'f, 'h> {
    node: &'f Node,
    hits: &'h mut u64,
}

impl At<'_, '_> {
    /// With repeated keys in a payload, the last value at a path decides.
    fn scalar(self, v: Seen<'_>) {
        if let Some((bit, allowed)) = &self.node.rule {
            if allowed.iter().any(|a| a.equals(v)) {
                *self.hits |= 1 << bit;
            } else {
                *self.hits &= !(1 << bit);
            }
        }
    }

    /// An object or an array where a key ends is no scalar: no match there.
    fn not_scalar(&mut self) {
        if let Some((bit, _)) = &self.node.rule {
            *self.hits &= !(1 << bit);
        }
    }
}

impl<'de> DeserializeSeed<'de> for At<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for At<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        self.scalar(Seen::Null);
        Ok(())
    }

    fn visit_bool<E>(self, v: bool) -> Result<(), E> {
        self.scalar(Seen::Bool(v));
        Ok(())
    }

    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        self.scalar(Seen::Int(i128::from(v)));
        Ok(())
    }

    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        self.scalar(Seen::Int(i128::from(v)));
        Ok(())
    }

    fn visit_f64<E>(self, v: f64) -> Result<(), E> {
        self.scalar(Seen::Float(v));
        Ok(())
    }

    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        self.scalar(Seen::Str(v));
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        self.not_scalar();
        while let Some(child) = map.next_key_seed(Key(self.node))? {
            match child {
                Some(node) => map.next_value_seed(At {
                    node,
                    hits: &mut *self.hits,
                })?,
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        self.not_scalar();
        let mut i = 0usize;
        loop {
            let more = match self.node.element(i) {
                Some(node) => seq
                    .next_element_seed(At {
                        node,
                        hits: &mut *self.hits,
                    })?
                    .is_some(),
                None => seq.next_element::<IgnoredAny>()?.is_some(),
            };
            if !more {
                return Ok(());
            }
            i = i.saturating_add(1);
        }
    }
}

/// Reads an object key (escapes resolved by serde_json) and finds the child it names.
struct Key<'f>(&'f Node);

impl<'de, 'f> DeserializeSeed<'de> for Key<'f> {
    type Value = Option<&'f Node>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de, 'f> Visitor<'de> for Key<'f> {
    type Value = Option<&'f Node>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(self.0.child(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn filter(keys: serde_json::Value) -> PayloadFilter {
        let keys: Vec<(String, Vec<Scalar>)> = keys
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| {
                let values = v
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| Scalar::from_json(v).unwrap())
                    .collect();
                (k.clone(), values)
            })
            .collect();
        PayloadFilter::new(keys.iter().map(|(k, v)| (k.as_str(), v.clone()))).unwrap()
    }

    fn m(f: &PayloadFilter, payload: &str) -> bool {
        f.matches(payload.as_bytes())
    }

    #[test]
    fn one_key_ors_its_values_and_keys_and_together() {
        let f = filter(json!({"data.priority": ["high", "urgent"], "data.region": ["eu"]}));
        assert!(m(&f, r#"{"priority":"high","region":"eu"}"#));
        assert!(m(
            &f,
            r#"{"region":"eu","x":[1,{"a":2}],"priority":"urgent"}"#
        ));
        assert!(!m(&f, r#"{"priority":"low","region":"eu"}"#));
        assert!(!m(&f, r#"{"priority":"high","region":"us"}"#));
        assert!(!m(&f, r#"{"priority":"high"}"#), "a missing field");
        assert!(
            !m(&f, r#"{"priority":"HIGH","region":"eu"}"#),
            "case matters"
        );
    }

    #[test]
    fn nested_objects_and_escaped_strings_and_keys() {
        let f = filter(json!({"data.lead.owner.team": ["sales \"EU\"/é"]}));
        assert!(m(
            &f,
            r#"{"lead":{"owner":{"team":"sales \"EU\"\/\u00e9"}}}"#
        ));
        assert!(m(
            &f,
            r#"{"le\u0061d":{"owner":{"team":"sales \"EU\"/é"}}}"#
        ));
        assert!(!m(&f, r#"{"lead":{"owner":{"team":"sales"}}}"#));
        assert!(!m(&f, r#"{"lead":{"owner":"sales \"EU\"/é"}}"#));
        assert!(!m(&f, r#"{"team":"sales \"EU\"/é"}"#), "only at its path");
    }

    #[test]
    fn numbers_compare_by_value_and_types_do_not_mix() {
        let f = filter(json!({"data.n": [1]}));
        assert!(m(&f, r#"{"n":1}"#));
        assert!(m(&f, r#"{"n":1.0}"#));
        assert!(m(&f, r#"{"n":1e0}"#));
        assert!(!m(&f, r#"{"n":"1"}"#));
        assert!(!m(&f, r#"{"n":true}"#));
        assert!(!m(&f, r#"{"n":-1}"#));
        let f = filter(json!({"data.n": [2.5, 18446744073709551615u64]}));
        assert!(m(&f, r#"{"n":2.5}"#));
        assert!(m(&f, r#"{"n":18446744073709551615}"#));
        assert!(!m(&f, r#"{"n":18446744073709551614}"#));
        let f = filter(json!({"data.ok": [true, null]}));
        assert!(m(&f, r#"{"ok":true}"#));
        assert!(m(&f, r#"{"ok":null}"#));
        assert!(!m(&f, r#"{"ok":false}"#));
        assert!(!m(&f, r#"{"ok":"true"}"#));
    }

    #[test]
    fn arrays_are_indexed_by_number_and_objects_are_no_scalars() {
        let f = filter(json!({"data.items.1.sku": ["b"]}));
        assert!(m(&f, r#"{"items":[{"sku":"a"},{"sku":"b"}]}"#));
        assert!(!m(&f, r#"{"items":[{"sku":"b"},{"sku":"a"}]}"#));
        assert!(m(&f, r#"{"items":{"1":{"sku":"b"}}}"#), "an object key `1`");
        let f = filter(json!({"data.tags": ["x"]}));
        assert!(
            !m(&f, r#"{"tags":["x"]}"#),
            "a list does not match its element"
        );
        assert!(!m(&f, r#"{"tags":{"x":1}}"#));
    }

    #[test]
    fn a_payload_that_is_not_json_never_matches() {
        let f = filter(json!({"data.a": ["x"]}));
        assert!(!m(&f, r#"{"a":"x""#));
        assert!(!m(&f, r#"{"a":"x"} trailing"#));
        assert!(!m(&f, "a=x"));
        assert!(!m(&f, ""));
        assert!(!f.matches(&[0xff, 0xfe]));
        assert!(m(&f, " {\"a\":\"x\"}\n"));
        let whole = filter(json!({"data": ["ping"]}));
        assert!(m(&whole, r#""ping""#));
        assert!(!m(&whole, "ping"), "text is not JSON");
    }

    #[test]
    fn the_last_of_repeated_keys_decides_and_paths_share_prefixes() {
        let f = filter(json!({"data.a": ["x"]}));
        assert!(m(&f, r#"{"a":"y","a":"x"}"#));
        assert!(!m(&f, r#"{"a":"x","a":"y"}"#));
        let f = filter(json!({"data.o.a": [1], "data.o.b": [2], "data.o": [3]}));
        assert!(
            !m(&f, r#"{"o":{"a":1,"b":2}}"#),
            "data.o is an object, not 3"
        );
        let f = filter(json!({"data.o.a": [1], "data.o.b": [2]}));
        assert!(m(&f, r#"{"o":{"b":2,"a":1}}"#));
    }

    #[test]
    fn empty_filter_lets_everything_through_and_keys_are_checked() {
        assert!(PayloadFilter::default().matches(b"not json"));
        assert_eq!(
            PayloadFilter::check_key("payload.x"),
            Err(FilterError::NotData)
        );
        assert_eq!(
            PayloadFilter::check_key("database"),
            Err(FilterError::NotData)
        );
        assert_eq!(
            PayloadFilter::check_key("data..x"),
            Err(FilterError::EmptySegment)
        );
        assert_eq!(
            PayloadFilter::check_key("data.x."),
            Err(FilterError::EmptySegment)
        );
        assert_eq!(PayloadFilter::check_key("data.a.0"), Ok(vec!["a", "0"]));
        assert_eq!(
            PayloadFilter::new([("data.x", vec![])]),
            Err(("data.x".into(), FilterError::NoValues))
        );
        let many: Vec<String> = (0..65).map(|i| format!("data.k{i}")).collect();
        let err = PayloadFilter::new(many.iter().map(|k| (k.as_str(), vec![Scalar::Null])));
        assert_eq!(err, Err(("data.k64".into(), FilterError::TooManyKeys)));
        assert_eq!(index_of("01"), None);
        assert_eq!(index_of("10"), Some(10));
    }
}

//! The config's raw shapes, as written. Types are lenient (durations and URLs are
//! strings) so that one wrong value does not hide the others: validation reports them
//! all. Each struct is also its section's list of allowed keys ([`field_names`]), so a
//! new key is one field here.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::de::{self, DeserializeOwned, Deserializer, Visitor};
use serde::Deserialize;

use crate::secret::{SecretList, SecretRef};

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawConfig {
    pub nats: Option<RawNats>,
    #[serde(default)]
    pub http: RawHttp,
    #[serde(default)]
    pub defaults: RawSettings,
    #[serde(default)]
    pub events: Vec<RawEvent>,
    #[serde(default)]
    pub endpoints: Vec<RawEndpoint>,
    #[serde(default)]
    pub delivery: RawDelivery,
    #[serde(default)]
    pub dead_letter: RawDeadLetter,
    #[serde(default)]
    pub delivery_log: RawDeliveryLog,
    #[serde(default)]
    pub admin: RawAdmin,
    pub shutdown_grace: Option<String>,
    #[serde(default)]
    pub ingress: RawIngress,
    /// `None` when the section is absent: tracing is off.
    pub tracing: Option<RawTracing>,
    #[serde(default)]
    pub registry: RawRegistry,
}

/// `[registry]`: endpoints created at runtime, kept in a JetStream KV bucket.
#[derive(Debug, Default, Deserialize)]
pub(super) struct RawRegistry {
    pub enabled: Option<bool>,
    pub replicas: Option<i64>,
    pub history: Option<i64>,
    pub allow_network_keys: Option<bool>,
    pub max_timeout: Option<String>,
    pub max_concurrency: Option<i64>,
    pub min_retry_delay: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawTracing {
    pub otlp_endpoint: Option<String>,
    pub service_name: Option<String>,
    pub sample_ratio: Option<f64>,
    pub timeout: Option<String>,
    pub max_queue: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawDelivery {
    pub max_inflight: Option<i64>,
    pub fan_out: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawDeliveryLog {
    pub enabled: Option<bool>,
    pub max_per_endpoint: Option<i64>,
    pub max_age: Option<String>,
    pub max_successes_per_second: Option<i64>,
    pub max_successes_per_second_total: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawAdmin {
    pub enabled: Option<bool>,
    pub token: Option<SecretRef>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawNats {
    pub url: Option<String>,
    pub stream: Option<String>,
    pub create_stream: Option<bool>,
    pub replicas: Option<i64>,
    pub consumer_prefix: Option<String>,
    pub creds_file: Option<PathBuf>,
    pub token: Option<SecretRef>,
    pub user: Option<String>,
    pub password: Option<SecretRef>,
    pub tls: Option<RawTls>,
}

/// TLS files: `[nats] tls`, and an endpoint's (written among its settings).
#[derive(Debug, Default, Clone, Deserialize)]
pub(super) struct RawTls {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawHttp {
    pub listen: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawDeadLetter {
    pub max_age: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawEvent {
    pub subject: Option<String>,
    pub event: Option<String>,
    pub tenant: Option<String>,
    pub tenant_header: Option<String>,
}

/// Keys allowed both in `[defaults]` and on an endpoint.
#[derive(Debug, Default, Clone, Deserialize)]
pub(super) struct RawSettings {
    pub timeout: Option<String>,
    pub retry_schedule: Option<Vec<String>>,
    pub max_attempts: Option<i64>,
    pub disable_after_failures: Option<i64>,
    pub concurrency: Option<i64>,
    pub signature: Option<RawSignature>,
    pub envelope: Option<String>,
    pub envelope_fields: Option<serde_json::Map<String, serde_json::Value>>,
    pub tenant_field: Option<String>,
    pub ordered: Option<bool>,
    pub max_body: Option<i64>,
    pub probe_interval: Option<String>,
    pub probe_max_interval: Option<String>,
    pub rate_limit: Option<String>,
    pub allow_http: Option<bool>,
    pub allow_private: Option<bool>,
    pub allow_cidrs: Option<Vec<String>>,
    pub headers: Option<BTreeMap<String, SecretRef>>,
    pub forward_headers: Option<Vec<String>>,
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub proxy: Option<RawProxy>,
}

/// `proxy = "http://proxy:3128"`, `proxy = "none"` or `false` (no proxy, not even the
/// environment's), or the table with credentials. A hand-written `Deserialize`, so a
/// wrong type is reported in these words rather than as "no variant matched".
#[derive(Debug, Clone)]
pub(super) enum RawProxy {
    Url(String),
    Flag(bool),
    Table(RawProxyTable),
}

#[derive(Debug, Default, Clone, Deserialize)]
pub(super) struct RawProxyTable {
    pub url: Option<String>,
    pub username: Option<String>,
    pub password: Option<SecretRef>,
}

impl<'de> Deserialize<'de> for RawProxy {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ProxyVisitor;
        impl<'de> Visitor<'de> for ProxyVisitor {
            type Value = RawProxy;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a proxy URL, \"none\", false, or a table { url, username, password }")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawProxy, E> {
                Ok(RawProxy::Url(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<RawProxy, E> {
                Ok(RawProxy::Flag(v))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<RawProxy, A::Error> {
                RawProxyTable::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(RawProxy::Table)
            }
        }
        d.deserialize_any(ProxyVisitor)
    }
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(expecting = "a table { scheme = \"…\", header = \"…\" }")]
pub(super) struct RawSignature {
    pub scheme: Option<String>,
    pub header: Option<String>,
}

/// An endpoint's own keys. Its settings ([`RawSettings`]) are written beside them and
/// read from the same table on their own, so that a type error among them is named by
/// its key (serde's `flatten` would lose it).
#[derive(Debug, Default, Deserialize)]
pub(super) struct RawEndpoint {
    pub name: Option<String>,
    pub url: Option<String>,
    pub events: Option<Vec<String>>,
    pub secret: Option<SecretList>,
    pub tenant: Option<String>,
    /// Payload path → allowed values; the endpoint's own, never in `[defaults]`: what
    /// an endpoint wants is no default for others.
    pub filter: Option<BTreeMap<String, serde_json::Value>>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawIngress {
    pub listen: Option<String>,
    pub publish_timeout: Option<String>,
    #[serde(default)]
    pub routes: Vec<RawRoute>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawRoute {
    pub path: Option<String>,
    pub subject: Option<String>,
    pub verify: Option<RawVerify>,
    pub id_header: Option<String>,
    pub max_body: Option<i64>,
    pub forward_headers: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawVerify {
    pub scheme: Option<String>,
    pub secret: Option<SecretList>,
    pub header: Option<String>,
}

/// The keys of a struct that derives `Deserialize`: the field names serde's derive
/// passes to `deserialize_struct`, recorded by a deserializer that reads nothing else.
/// A struct with a `#[serde(flatten)]` field is read as a map and has no such list:
/// it yields none, which the unit tests below catch for every raw shape.
pub fn field_names<T: DeserializeOwned>() -> &'static [&'static str] {
    let mut names: &'static [&'static str] = &[];
    let _ = T::deserialize(FieldNames(&mut names));
    names
}

struct FieldNames<'a>(&'a mut &'static [&'static str]);

impl<'de> Deserializer<'de> for FieldNames<'_> {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("not a struct"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Self::Error> {
        *self.0 = fields;
        Err(de::Error::custom("field names recorded"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
        byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
        identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_raw_shape_lists_its_keys() {
        let lists = [
            field_names::<RawConfig>(),
            field_names::<RawNats>(),
            field_names::<RawTls>(),
            field_names::<RawHttp>(),
            field_names::<RawDeadLetter>(),
            field_names::<RawDelivery>(),
            field_names::<RawDeliveryLog>(),
            field_names::<RawAdmin>(),
            field_names::<RawRegistry>(),
            field_names::<RawEvent>(),
            field_names::<RawSettings>(),
            field_names::<RawSignature>(),
            field_names::<RawProxyTable>(),
            field_names::<RawEndpoint>(),
            field_names::<RawIngress>(),
            field_names::<RawRoute>(),
            field_names::<RawVerify>(),
            field_names::<RawTracing>(),
            field_names::<crate::secret::SecretRefTable>(),
        ];
        for list in lists {
            assert!(!list.is_empty());
        }
        assert_eq!(
            field_names::<RawTls>(),
            ["ca_file", "cert_file", "key_file"]
        );
        assert_eq!(
            field_names::<RawEndpoint>(),
            ["name", "url", "events", "secret", "tenant", "filter"]
        );
        assert_eq!(
            field_names::<crate::secret::SecretRefTable>(),
            ["env", "file", "value"]
        );
        assert!(field_names::<RawSettings>().contains(&"probe_max_interval"));
    }
}

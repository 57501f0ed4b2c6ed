//! `[nats]`: servers, stream, authentication and TLS.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use super::super::defaults;
use super::super::model::{NatsAuth, NatsConfig, TlsFiles};
use super::super::raw::{RawNats, RawTls};
use super::super::Problems;
use super::tls::{tls_files, TlsPaths};
use super::{JS_MAX_NAME_LEN, MAX_NAME_LEN, MAX_PREFIX_LEN};
use crate::secret::SecretRef;
use crate::store::work_stream::WorkStream;

pub(super) fn validate_nats(raw: Option<RawNats>, p: &mut Problems) -> Option<NatsConfig> {
    let Some(raw) = raw else {
        p.add(
            "nats",
            "required: the [nats] section with at least `stream`",
        );
        return None;
    };
    let urls = urls(raw.url.as_deref().unwrap_or(defaults::NATS_URL), p);
    let stream = match raw.stream {
        Some(s) if s.len() > JS_MAX_NAME_LEN => {
            p.add(
                "nats.stream",
                format_args!(
                    "{} bytes, at most {JS_MAX_NAME_LEN} allowed (JetStream's limit on names)",
                    s.len()
                ),
            );
            None
        }
        Some(s) if valid_stream_name(&s) => Some(s),
        Some(s) => {
            p.add(
                "nats.stream",
                format_args!("'{s}' is not a valid stream name (no spaces, '.', '*', '>', '/')"),
            );
            None
        }
        None => {
            p.add("nats.stream", "required: the JetStream stream to consume");
            None
        }
    };
    let consumer_prefix = raw
        .consumer_prefix
        .unwrap_or_else(|| defaults::CONSUMER_PREFIX.into());
    if !valid_stream_name(&consumer_prefix) {
        p.add(
            "nats.consumer_prefix",
            format_args!("'{consumer_prefix}' is not a valid consumer name prefix"),
        );
    } else if consumer_prefix.len() > MAX_PREFIX_LEN {
        p.add(
            "nats.consumer_prefix",
            format_args!(
                "{} bytes, at most {MAX_PREFIX_LEN} allowed: a consumer is named \
                 <prefix>-<endpoint name>, endpoint names have up to {MAX_NAME_LEN} \
                 characters and JetStream names at most {JS_MAX_NAME_LEN} bytes",
                consumer_prefix.len()
            ),
        );
    }
    let replicas = match raw.replicas {
        None => defaults::REPLICAS,
        Some(n @ 1..=5) => n as usize,
        Some(n) => {
            p.add(
                "nats.replicas",
                format_args!("{n} is out of range: JetStream keeps 1 to 5 replicas"),
            );
            defaults::REPLICAS
        }
    };
    let auth = auth(raw.creds_file, raw.token, raw.user, raw.password, p);
    let tls = raw.tls.map(|t| tls(t, p));
    Some(NatsConfig {
        urls,
        auth: auth?,
        tls,
        stream: stream?,
        create_stream: raw.create_stream.unwrap_or(defaults::CREATE_STREAM),
        replicas,
        consumer_prefix,
    })
}

/// With `delivery.fan_out`, natshook creates streams named after the source stream
/// and the prefix (`<stream>_<prefix>_WORK_<n>`, `<stream>_<prefix>_LANE`): together
/// they must leave those names within JetStream's limit.
pub(super) fn work_stream_names(nats: &NatsConfig, p: &mut Problems) {
    let work = WorkStream::new(nats);
    let longest = work
        .names()
        .iter()
        .map(String::as_str)
        .chain([work.lane_name()])
        .max_by_key(|name| name.len())
        .unwrap_or_default();
    if longest.len() > JS_MAX_NAME_LEN {
        let room =
            JS_MAX_NAME_LEN - (longest.len() - nats.stream.len() - nats.consumer_prefix.len());
        p.add(
            "nats.consumer_prefix",
            format_args!(
                "with delivery.fan_out natshook creates the stream {longest}, {} bytes, \
                 and JetStream names have at most {JS_MAX_NAME_LEN}: nats.stream and \
                 nats.consumer_prefix together may have at most {room}",
                longest.len()
            ),
        );
    }
}

/// `nats.url`: one server or a comma-separated list.
fn urls(text: &str, p: &mut Problems) -> Vec<String> {
    let mut urls = Vec::new();
    if text.trim().is_empty() {
        p.add(
            "nats.url",
            "must name at least one server (e.g. nats://127.0.0.1:4222)",
        );
        return urls;
    }
    for u in text.split(',').map(str::trim) {
        match check_nats_url(u) {
            Ok(()) => urls.push(u.to_string()),
            Err(why) => p.add("nats.url", why),
        }
    }
    urls
}

/// At most one kind of authentication.
fn auth(
    creds_file: Option<PathBuf>,
    token: Option<SecretRef>,
    user: Option<String>,
    password: Option<SecretRef>,
    p: &mut Problems,
) -> Option<NatsAuth> {
    let mut resolve =
        |path: &str, r: &SecretRef| r.resolve().map_err(|e| p.add(path.to_string(), e)).ok();
    match (creds_file, token, user, password) {
        (None, None, None, None) => Some(NatsAuth::None),
        // Checked here like the TLS files: async-nats reads it only on connect.
        (Some(f), None, None, None) => match readable("nats.creds_file", &f) {
            Ok(()) => Some(NatsAuth::CredsFile(f)),
            Err(e) => {
                p.add("nats.creds_file", e);
                None
            }
        },
        (None, Some(t), None, None) => resolve("nats.token", &t).map(NatsAuth::Token),
        (None, None, Some(u), Some(pw)) => {
            resolve("nats.password", &pw).map(|pw| NatsAuth::UserPassword(u, pw))
        }
        (None, None, Some(_), None) => {
            p.add("nats.password", "required when nats.user is set");
            None
        }
        (None, None, None, Some(_)) => {
            p.add("nats.user", "required when nats.password is set");
            None
        }
        _ => {
            p.add(
                "nats",
                "set at most one of creds_file, token, or user + password",
            );
            None
        }
    }
}

/// NATS TLS files are checked for being readable; async-nats loads them on connect.
fn tls(t: RawTls, p: &mut Problems) -> TlsFiles {
    let at = TlsPaths {
        ca_file: "nats.tls.ca_file".into(),
        cert_file: "nats.tls.cert_file".into(),
        key_file: "nats.tls.key_file".into(),
        pair: "nats.tls".into(),
    };
    tls_files(t, &at, readable, p)
}

/// A file async-nats reads only on connect (credentials, TLS files) exists and can be
/// looked at: a typo in its path is then a problem at start-up, not on connect.
fn readable(_key: &str, f: &Path) -> Result<(), String> {
    std::fs::metadata(f)
        .map(drop)
        .map_err(|e| format!("cannot read {}: {e}", f.display()))
}

fn valid_stream_name(s: &str) -> bool {
    !s.is_empty()
        && !s
            .chars()
            .any(|c| c.is_whitespace() || matches!(c, '.' | '*' | '>' | '/' | '\\'))
}

/// One server of `nats.url`. async-nats takes nearly any text (`x`, `nats://`, a host
/// with control characters) and only fails at run time, sending the name to the
/// resolver again on every reconnect; so its parse is one step here, and the address
/// must also have a host name or IP address and a port in range. Without a scheme
/// async-nats reads `host:port` as `nats://host:port`; a bare word without a port is
/// refused, being more likely a typo than a server.
fn check_nats_url(u: &str) -> Result<(), String> {
    let shown = u.escape_debug();
    if u.is_empty() {
        return Err(
            "an entry is empty (a list is comma-separated, e.g. nats://a:4222,nats://b:4222)"
                .into(),
        );
    }
    if u.chars().any(char::is_control) {
        return Err(format!("'{shown}' contains a control character"));
    }
    let addr = u
        .parse::<async_nats::ServerAddr>()
        .map_err(|e| format!("'{shown}' is not a NATS URL: {e}"))?;
    let url = addr.clone().into_inner();
    let host = addr.host();
    if host.is_empty() {
        return Err(format!(
            "'{shown}' has no host (e.g. nats://127.0.0.1:4222)"
        ));
    }
    if !u.contains("://") && url.port().is_none() {
        // A bare host gets its own URL as the example; anything else (a scheme
        // missing its colon, a path) would make a wrong one.
        let example = match u.contains([':', '/']) {
            false => format!("nats://{shown}:4222"),
            true => "nats://127.0.0.1:4222".to_string(),
        };
        return Err(format!(
            "'{shown}' is neither a URL nor host:port (e.g. {example})"
        ));
    }
    let valid_name = host.len() <= 253
        && host.trim_end_matches('.').split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if !valid_name && host.parse::<IpAddr>().is_err() {
        return Err(format!(
            "'{shown}': '{}' is not a host name or IP address",
            host.escape_debug()
        ));
    }
    if url.port() == Some(0) {
        return Err(format!(
            "'{shown}': port 0 is not a port a server listens on"
        ));
    }
    Ok(())
}

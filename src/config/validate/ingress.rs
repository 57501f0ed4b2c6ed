//! `[ingress]` and `[[ingress.routes]]`: the typed routes from their raw shapes. Problems
//! are named by key path (`ingress.routes[0].verify.scheme`) and collected with the
//! rest of the config's, so `natshook check` lists them all.

use std::collections::HashSet;
use std::net::SocketAddr;

use http::header::HeaderName;

use super::super::defaults;
use super::super::model::{CopiedHeader, IngressConfig, Route, Verify};
use super::super::raw::{RawIngress, RawRoute, RawVerify};
use super::super::Problems;
use crate::route_path::RoutePath;
use crate::secret::SecretRef;
use crate::signing::{Scheme, Signer, WEBHOOK_ID, WEBHOOK_SIGNATURE, WEBHOOK_TIMESTAMP};
use crate::subject_template::SubjectTemplate;

/// The largest `max_body` of a route: NATS's largest `max_payload` (64 MiB).
const MAX_BODY_LIMIT: i64 = 64 * 1024 * 1024;

/// Whether listeners on `a` and `b` would take the same port: an unspecified address
/// (`0.0.0.0`, `[::]`, which also takes IPv4) covers every address of its port.
fn same_port(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port()
        && a.port() != 0
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

/// Validates `[ingress]`; `http_listen` is the `[http]` listener (when valid), which
/// a separate ingress listener may not share.
pub(super) fn validate(
    raw: RawIngress,
    http_listen: Option<SocketAddr>,
    p: &mut Problems,
) -> Option<IngressConfig> {
    let before = p.len();
    let listen = match raw.listen.as_deref() {
        None => None,
        Some(text) => match text.parse::<SocketAddr>() {
            Ok(a) => match http_listen {
                Some(h) if h == a => {
                    p.add(
                        "ingress.listen",
                        format_args!("'{text}' is the [http] listener; leave ingress.listen out to serve the routes there"),
                    );
                    None
                }
                Some(h) if same_port(h, a) => {
                    p.add(
                        "ingress.listen",
                        format_args!("'{text}' takes the port of the [http] listener ({h}); one of the two could not listen"),
                    );
                    None
                }
                _ => Some(a),
            },
            Err(_) => {
                p.add(
                    "ingress.listen",
                    format_args!("'{text}' is not an address:port such as 0.0.0.0:9465"),
                );
                None
            }
        },
    };
    let publish_timeout = match raw.publish_timeout.as_deref() {
        None => defaults::INGRESS_PUBLISH_TIMEOUT,
        Some(text) => p
            .duration("ingress.publish_timeout", text)
            .unwrap_or(defaults::INGRESS_PUBLISH_TIMEOUT),
    };
    let mut routes: Vec<Route> = Vec::new();
    for (i, r) in raw.routes.into_iter().enumerate() {
        let at = format!("ingress.routes[{i}]");
        if let Some(route) = validate_route(r, &at, p) {
            if let Some(j) = routes.iter().position(|o| o.path.overlaps(&route.path)) {
                p.add(
                    format!("{at}.path"),
                    format_args!(
                        "'{}' also matches the path of ingress.routes[{j}] ('{}'); each request must have one route",
                        route.path, routes[j].path
                    ),
                );
                continue;
            }
            routes.push(route);
        }
    }
    (p.len() == before).then_some(IngressConfig {
        listen,
        publish_timeout,
        routes,
    })
}

fn validate_route(r: RawRoute, at: &str, p: &mut Problems) -> Option<Route> {
    let key = |k: &str| format!("{at}.{k}");
    let path = match r.path.as_deref() {
        None => {
            p.add(key("path"), "required: the URL path senders post to");
            None
        }
        Some(text) => match RoutePath::parse(text) {
            Err(e) => {
                p.add(key("path"), e);
                None
            }
            Ok(rp) if rp.collides_with_own() => {
                p.add(
                    key("path"),
                    format_args!("'{text}' collides with natshook's own /metrics, /healthz, /readyz or /api/"),
                );
                None
            }
            Ok(rp) => Some(rp),
        },
    };
    let subject = match (r.subject.as_deref(), &path) {
        (None, _) => {
            p.add(
                key("subject"),
                "required: the NATS subject to store requests on",
            );
            None
        }
        (Some(text), path) => {
            // Without a valid path, {path:N} is checked against no bound at all.
            let segments = path.as_ref().map_or(usize::MAX, RoutePath::segment_count);
            match SubjectTemplate::parse(text, segments) {
                Ok(t) => Some(t),
                Err(e) => {
                    p.add(key("subject"), e);
                    None
                }
            }
        }
    };
    let verify = validate_verify(r.verify.as_ref(), at, p);
    // Any header is allowed: `standard` signs only `webhook-id`, so another one is a
    // warning ([`crate::ingress::warnings`]), not a problem, since a sender may well
    // put its own delivery id elsewhere.
    let id_text = r
        .id_header
        .as_deref()
        .unwrap_or(defaults::INGRESS_ID_HEADER);
    let id_header = p.header_name(key("id_header"), id_text);
    let max_body = match r.max_body {
        None => Some(defaults::INGRESS_MAX_BODY),
        // NATS carries at most 64 MiB in a message (its largest `max_payload`), and
        // the ingress holds at most that much of request bodies at once.
        Some(n) if n > MAX_BODY_LIMIT => {
            p.add(
                key("max_body"),
                format_args!("{n} is more than NATS can carry in a message (at most {MAX_BODY_LIMIT}, 64 MiB)"),
            );
            None
        }
        Some(n) => p.positive(&key("max_body"), n, 1).map(|n| n as usize),
    };
    let signature_headers = verify
        .as_ref()
        .map(|(_, _, headers)| headers.clone())
        .unwrap_or_default();
    let forward = r.forward_headers.unwrap_or_default();
    let copy_headers = copy_headers(signature_headers, &forward, at, p);
    let (verify, secret_refs, _) = verify?;
    Some(Route {
        path: path?,
        subject: subject?,
        verify,
        id_header: id_header?,
        max_body: max_body?,
        copy_headers,
        secret_refs,
    })
}

/// The headers copied into the NATS message: the scheme's signature headers, then
/// `forward_headers` (each once).
fn copy_headers(
    mut copied: Vec<CopiedHeader>,
    forward: &[String],
    at: &str,
    p: &mut Problems,
) -> Vec<CopiedHeader> {
    let mut seen: HashSet<HeaderName> = copied.iter().map(|h| h.name.clone()).collect();
    for (j, name) in forward.iter().enumerate() {
        let path = format!("{at}.forward_headers[{j}]");
        match p.header_name(&path, name) {
            None => {}
            Some(h) if h.as_str().starts_with("nats-") => p.add(
                path,
                format_args!("'{name}': Nats-* headers steer JetStream (dedupe, expected sequence) and cannot come from senders"),
            ),
            Some(h) if seen.insert(h.clone()) => copied.push(CopiedHeader {
                name: h,
                written: name.clone(),
                first_only: false,
            }),
            Some(_) => {} // copied already

        }
    }
    copied
}

/// The verifier, its secret references, and the signature headers a consumer needs to
/// verify the stored body again.
fn validate_verify(
    raw: Option<&RawVerify>,
    at: &str,
    p: &mut Problems,
) -> Option<(Verify, Vec<SecretRef>, Vec<CopiedHeader>)> {
    let key = |k: &str| format!("{at}.verify.{k}");
    let Some(v) = raw else {
        p.add(
            format!("{at}.verify"),
            "required: { scheme = \"hex\" | \"sha256\" | \"standard\", secret = … }, or { scheme = \"none\" } to accept unsigned requests",
        );
        return None;
    };
    let scheme_text = match v.scheme.as_deref() {
        Some(s) => s,
        None => {
            p.add(
                key("scheme"),
                "required: hex, sha256, standard, or none (written out, to accept unsigned requests)",
            );
            return None;
        }
    };
    if scheme_text == "none" {
        return verify_none(v, at, p);
    }
    let Ok(scheme) = scheme_text.parse::<Scheme>() else {
        p.add(
            key("scheme"),
            format_args!("'{scheme_text}' is not one of hex, sha256, standard, none"),
        );
        return None;
    };
    let header_text = match (scheme, v.header.as_deref()) {
        (Scheme::Standard, Some(_)) => {
            p.add(
                key("header"),
                "standard uses the webhook-id, webhook-timestamp and webhook-signature headers; header applies to hex and sha256",
            );
            return None;
        }
        (_, h) => h.unwrap_or(defaults::INGRESS_SIGNATURE_HEADER),
    };
    let header = p.header_name(key("header"), header_text)?;
    let Some(list) = &v.secret else {
        p.add(
            key("secret"),
            "required: { env = \"…\" }, { file = \"…\" } or { value = \"…\" }, or a list of them (newest first) while rotating",
        );
        return None;
    };
    let refs = list.refs();
    let secrets = p.secrets(list, &key("secret"));
    if refs.is_empty() || secrets.len() != refs.len() {
        return None;
    }
    let secrets = secrets.into_iter().map(|(_, s)| s).collect();
    // A verifier also takes `whpk_` public keys: a sender signing with Ed25519 (`v1a`)
    // hands out only those.
    let signer = Signer::verifier(scheme, header.clone(), secrets)
        .map_err(|e| p.add(key("secret"), e))
        .ok()?;
    Some((
        Verify::Signed(signer),
        refs.into_iter().cloned().collect(),
        signature_headers(scheme, header, header_text),
    ))
}

/// `scheme = "none"`: no secret and no header, which would suggest a check.
fn verify_none(
    v: &RawVerify,
    at: &str,
    p: &mut Problems,
) -> Option<(Verify, Vec<SecretRef>, Vec<CopiedHeader>)> {
    let mut ok = true;
    if v.secret.is_some() {
        p.add(
            format!("{at}.verify.secret"),
            "scheme none checks no signature; remove the secret (or pick a scheme)",
        );
        ok = false;
    }
    if v.header.is_some() {
        p.add(
            format!("{at}.verify.header"),
            "scheme none checks no signature header",
        );
        ok = false;
    }
    ok.then_some((Verify::None, Vec::new(), Vec::new()))
}

/// The headers a consumer needs to verify the stored body again.
fn signature_headers(scheme: Scheme, header: HeaderName, written: &str) -> Vec<CopiedHeader> {
    match scheme {
        Scheme::Standard => [WEBHOOK_ID, WEBHOOK_TIMESTAMP, WEBHOOK_SIGNATURE]
            .into_iter()
            .map(|h| CopiedHeader {
                written: h.as_str().to_string(),
                name: h,
                first_only: true,
            })
            .collect(),
        Scheme::Hex | Scheme::Sha256 => vec![CopiedHeader {
            name: header,
            written: written.to_string(),
            first_only: true,
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    const BASE: &str = r#"
        [nats]
        stream = "EVENTS"
        [[events]]
        subject = "crm.lead.created"
        event = "lead.created"
        [[endpoints]]
        name = "crm"
        url = "https://crm.example.com/hooks"
        events = ["*"]
        secret = "s"
    "#;

    fn problems(ingress: &str) -> Vec<String> {
        match Config::from_str(&format!("{ingress}\n{BASE}"), "toml") {
            Ok(_) => vec![],
            Err(e) => e.problems.iter().map(|p| p.to_string()).collect(),
        }
    }

    #[test]
    fn an_ingress_listener_on_the_http_listener_s_port_is_refused() {
        let route = "[[ingress.routes]]\npath = \"/in/a\"\nsubject = \"in.a\"\nverify = { scheme = \"none\" }";
        for (http, ingress) in [
            ("0.0.0.0:19470", "127.0.0.1:19470"),
            ("127.0.0.1:19470", "0.0.0.0:19470"),
            ("[::]:19470", "127.0.0.1:19470"),
        ] {
            let got = problems(&format!(
                "[http]\nlisten = \"{http}\"\n[ingress]\nlisten = \"{ingress}\"\n{route}"
            ));
            assert!(
                got.iter()
                    .any(|g| g.contains("takes the port of the [http] listener")),
                "{http} {ingress}: {got:#?}"
            );
        }
        for (http, ingress) in [
            ("127.0.0.1:19470", "127.0.0.2:19470"),
            ("0.0.0.0:19470", "0.0.0.0:19471"),
        ] {
            let got = problems(&format!(
                "[http]\nlisten = \"{http}\"\n[ingress]\nlisten = \"{ingress}\"\n{route}"
            ));
            assert_eq!(got, Vec::<String>::new(), "{http} {ingress}");
        }
    }

    #[test]
    fn a_valid_ingress_section_parses_with_the_contract_defaults() {
        let text = r#"
            [ingress]
            listen = "0.0.0.0:9465"
            [[ingress.routes]]
            path = "/in/sendgrid"
            subject = "inbound.sendgrid.{header:X-Event-Type}"
            verify = { scheme = "standard", secret = { value = "whsec_c2VjcmV0" } }
            [[ingress.routes]]
            path = "/in/*/github"
            subject = "inbound.github.{path:2}.{json:action}"
            verify = { scheme = "sha256", header = "X-Hub-Signature-256", secret = ["new", "old"] }
            id_header = "X-GitHub-Delivery"
            forward_headers = ["X-GitHub-Event"]
            max_body = 4096
        "#;
        let c = Config::from_str(&format!("{text}\n{BASE}"), "toml").unwrap();
        let i = &c.ingress;
        assert_eq!(i.listen, Some("0.0.0.0:9465".parse().unwrap()));
        assert_eq!(i.publish_timeout, defaults::INGRESS_PUBLISH_TIMEOUT);
        let sendgrid = &i.routes[0];
        assert_eq!(sendgrid.max_body, 1024 * 1024);
        assert_eq!(sendgrid.id_header.as_str(), "webhook-id");
        let copied: Vec<&str> = sendgrid
            .copy_headers
            .iter()
            .map(|h| h.written.as_str())
            .collect();
        assert_eq!(
            copied,
            ["webhook-id", "webhook-timestamp", "webhook-signature"]
        );
        let github = &i.routes[1];
        assert_eq!(github.subject.pattern().as_str(), "inbound.github.*.*");
        let copied: Vec<&str> = github
            .copy_headers
            .iter()
            .map(|h| h.written.as_str())
            .collect();
        assert_eq!(copied, ["X-Hub-Signature-256", "X-GitHub-Event"]);
        assert!(matches!(&github.verify, Verify::Signed(s) if s.scheme() == Scheme::Sha256));
    }

    /// An id header `standard` does not sign is warned about, not refused; the signed
    /// `webhook-id` (the default, or written out) and the other schemes are not.
    #[test]
    fn a_standard_route_deduping_on_an_unsigned_id_header_is_warned_about() {
        let route = |verify: &str, id: &str| {
            format!("[[ingress.routes]]\npath = \"/in/a\"\nsubject = \"in.a\"\nverify = {verify}\n{id}\n{BASE}")
        };
        let std = "{ scheme = \"standard\", secret = { value = \"whsec_c2VjcmV0\" } }";
        let hex = "{ scheme = \"hex\", secret = \"s\" }";
        let warnings = |text: String| -> Vec<String> {
            let c = Config::from_str(&text, "toml").unwrap();
            c.ingress
                .routes
                .iter()
                .flat_map(crate::ingress::warnings)
                .collect()
        };
        let got = warnings(route(std, "id_header = \"X-Delivery-Id\""));
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(
            got[0].starts_with("/in/a: id_header x-delivery-id is not signed (scheme standard signs webhook-id only)"),
            "{got:?}"
        );
        for (verify, id) in [
            (std, ""),
            (std, "id_header = \"Webhook-Id\""),
            (hex, "id_header = \"X-Delivery-Id\""),
        ] {
            assert_eq!(
                warnings(route(verify, id)),
                Vec::<String>::new(),
                "{verify} {id}"
            );
        }
    }

    #[test]
    fn every_ingress_problem_is_named_by_its_key_path() {
        let got = problems(
            r#"
            [ingress]
            listen = "0.0.0.0:9464"
            publish_timeout = "soon"
            lisen = "x"
            [[ingress.routes]]
            path = "/metrics"
            subject = "in.x"
            verify = { scheme = "md5", secret = "x" }
            [[ingress.routes]]
            path = "/in/a"
            subject = "in.a"
            verify = { scheme = "hex", secret = { env = "NATSHOOK_TEST_UNSET_INGRESS" }, secrte = 1 }
            max_body = 0
            forward_headers = ["Nats-Msg-Id", "bad header"]
            [[ingress.routes]]
            path = "/in/*"
            subject = "in.{path:3}"
            verify = { scheme = "none", secret = "x" }
            [[ingress.routes]]
            path = "/in/c"
            subject = "in.c"
            id_header = "bad id"
            max_body = 67108865
            "#,
        );
        let expect = [
            "ingress.listen: '0.0.0.0:9464' is the [http] listener",
            "ingress.publish_timeout: 'soon' is not a duration",
            "ingress.lisen: unknown key",
            "ingress.routes[0].path: '/metrics' collides with natshook's own",
            "ingress.routes[3].max_body: 67108865 is more than NATS can carry in a message",
            "ingress.routes[2].subject: {path:3} is out of range: the route's path has 2 segment(s)",
            "ingress.routes[0].verify.scheme: 'md5' is not one of hex, sha256, standard, none",
            "ingress.routes[1].verify.secrte: unknown key",
            "ingress.routes[1].verify.secret: environment variable NATSHOOK_TEST_UNSET_INGRESS is not set",
            "ingress.routes[1].max_body: must be at least 1",
            "ingress.routes[1].forward_headers[0]: 'Nats-Msg-Id': Nats-* headers",
            "ingress.routes[1].forward_headers[1]: 'bad header' is not a valid header name",
            "ingress.routes[2].verify.secret: scheme none checks no signature",
            "ingress.routes[3].verify: required",
            "ingress.routes[3].id_header: 'bad id' is not a valid header name",
        ];
        for e in expect {
            assert!(
                got.iter().any(|g| g.starts_with(e)),
                "missing {e:?} in {got:#?}"
            );
        }
        // /in/* and /in/a overlap, but /in/a was refused for its own problems first.
        let got = problems(
            r#"
            [[ingress.routes]]
            path = "/in/a"
            subject = "in.a"
            verify = { scheme = "none" }
            [[ingress.routes]]
            path = "/in/*"
            subject = "in.b"
            verify = { scheme = "none" }
            "#,
        );
        assert!(
            got.iter().any(|g| g.starts_with(
                "ingress.routes[1].path: '/in/*' also matches the path of ingress.routes[0]"
            )),
            "{got:?}"
        );
    }
}

//! `proxy`: the HTTP proxy an endpoint connects through. Written in the config, it
//! applies whatever the environment says; left out, the environment's proxy for the
//! endpoint's URL applies (`HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY` and `NO_PROXY`, in
//! either case, read as curl reads them); `"none"` or `false` connects directly even
//! when the environment names a proxy.

use base64::Engine;
use http::header::HeaderValue;
use http::Uri;
use hyper_util::client::proxy::matcher::Matcher;

use super::super::model::Proxy;
use super::super::raw::{RawProxy, RawProxyTable};
use super::super::Problems;

/// The proxy for an endpoint whose URL is `receiver` (`None` when the URL itself is
/// invalid). `path` names the key (`endpoints[1].proxy` or `defaults.proxy`). The
/// outer `None` means a problem was reported.
pub(super) fn proxy(
    raw: Option<RawProxy>,
    path: &str,
    receiver: Option<&Uri>,
    env: &Matcher,
    p: &mut Problems,
) -> Option<Option<Proxy>> {
    match raw {
        None => from_env(receiver, env, path, p),
        Some(RawProxy::Flag(false)) => Some(None),
        Some(RawProxy::Url(text)) if text == "none" => Some(None),
        Some(RawProxy::Flag(true)) => {
            p.add(
                path,
                "true names no proxy: give the proxy's URL (http://host:port), or \"none\" or false for none",
            );
            None
        }
        Some(RawProxy::Url(text)) => proxy_url(&text)
            .map_err(|m| p.add(path, m))
            .ok()
            .map(|uri| {
                Some(Proxy {
                    uri,
                    authorization: None,
                    from_env: false,
                })
            }),
        Some(RawProxy::Table(table)) => {
            let url_path = format!("{path}.url");
            let uri = match &table.url {
                None => {
                    p.add(
                        url_path,
                        "required: the proxy's URL, e.g. http://proxy.internal:3128",
                    );
                    None
                }
                Some(text) => proxy_url(text).map_err(|m| p.add(url_path, m)).ok(),
            };
            let authorization = credentials(&table, path, p);
            Some(Some(Proxy {
                uri: uri?,
                authorization: authorization?,
                from_env: false,
            }))
        }
    }
}

/// The environment's proxy for `receiver`, if any. hyper-util's matcher drops the
/// credentials from the URI it returns and keeps them as the Basic header.
fn from_env(
    receiver: Option<&Uri>,
    env: &Matcher,
    path: &str,
    p: &mut Problems,
) -> Option<Option<Proxy>> {
    let Some(intercept) = receiver.and_then(|u| env.intercept(u)) else {
        return Some(None);
    };
    let uri = intercept.uri().clone();
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        p.add(
            path,
            format_args!(
                "the environment's proxy for this endpoint ({uri}) is not an http:// or https:// proxy; set proxy = \"none\" to connect directly, or proxy = \"http://host:port\""
            ),
        );
        return None;
    }
    Some(Some(Proxy {
        uri,
        authorization: intercept.basic_auth().cloned(),
        from_env: true,
    }))
}

/// A configured proxy URL: `http` or `https`, a host and a port, nothing else. A URL
/// with credentials is not repeated in the message, and is refused: they belong in
/// `username` and `password`, where the password can be a secret reference.
fn proxy_url(text: &str) -> Result<Uri, String> {
    let shown = if text.contains('@') {
        "the URL".to_string()
    } else {
        format!("'{text}'")
    };
    let uri: Uri = text
        .parse()
        .map_err(|e| format!("{shown} is not a URL: {e}"))?;
    let scheme = match uri.scheme_str() {
        Some("http" | "https") => uri.scheme().cloned(),
        Some(other) => {
            return Err(format!(
                "scheme {other} is not supported: the proxy URL must start with http:// or https://"
            ))
        }
        None => {
            return Err(format!(
                "{shown} must start with http:// or https:// (e.g. http://proxy.internal:3128)"
            ))
        }
    };
    let authority = uri
        .authority()
        .ok_or_else(|| format!("{shown} has no host"))?;
    if authority.as_str().contains('@') {
        return Err("credentials do not belong in the URL: use proxy = { url = \"http://host:port\", username = \"…\", password = { env = \"…\" } }".into());
    }
    if authority.host().is_empty() {
        return Err(format!("{shown} has no host"));
    }
    match uri.port_u16() {
        None => {
            return Err(format!(
                "{shown} must name the port, a number (e.g. http://proxy.internal:3128)"
            ))
        }
        Some(0) => return Err(format!("{shown}: port 0 is not a port")),
        Some(_) => {}
    }
    if uri.path_and_query().is_some_and(|pq| pq.as_str() != "/") {
        return Err(format!("{shown} must not have a path or query"));
    }
    let mut parts = http::uri::Parts::default();
    parts.scheme = scheme;
    parts.authority = Some(authority.clone());
    parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
    Uri::from_parts(parts).map_err(|e| format!("{shown}: {e}"))
}

/// `username` and `password` as the `Proxy-Authorization: Basic` value.
fn credentials(table: &RawProxyTable, path: &str, p: &mut Problems) -> Option<Option<HeaderValue>> {
    let username = match (&table.username, &table.password) {
        (None, None) => return Some(None),
        (None, Some(_)) => {
            p.add(format!("{path}.username"), "required when password is set");
            return None;
        }
        (Some(u), _) if u.is_empty() || u.contains(':') || u.chars().any(char::is_control) => {
            p.add(
                format!("{path}.username"),
                "must be non-empty, without ':' or control characters (Basic authentication cannot carry them)",
            );
            return None;
        }
        (Some(u), _) => u,
    };
    let mut token = username.as_bytes().to_vec();
    token.push(b':');
    if let Some(password) = &table.password {
        match password.resolve() {
            Ok(secret) => token.extend_from_slice(secret.expose()),
            Err(e) => {
                p.add(format!("{path}.password"), e);
                return None;
            }
        }
    }
    let encoded = base64::engine::general_purpose::STANDARD.encode(&token);
    let mut value = HeaderValue::try_from(format!("Basic {encoded}")).ok()?;
    value.set_sensitive(true);
    Some(Some(value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::{SecretRef, SecretRefTable};

    fn check(raw: RawProxy) -> Result<Option<Proxy>, Vec<String>> {
        let mut p = Problems::default();
        let receiver: Uri = "https://hooks.example.com/in".parse().unwrap();
        match proxy(
            Some(raw),
            "endpoints[0].proxy",
            Some(&receiver),
            &Matcher::builder().build(),
            &mut p,
        ) {
            Some(proxy) if p.is_empty() => Ok(proxy),
            _ => Err(p.0.into_iter().map(|x| x.to_string()).collect()),
        }
    }

    fn url(text: &str) -> RawProxy {
        RawProxy::Url(text.into())
    }

    #[test]
    fn a_proxy_url_needs_an_http_scheme_a_host_and_a_port() {
        let ok = check(url("http://proxy.internal:3128")).unwrap().unwrap();
        assert_eq!(ok.uri, "http://proxy.internal:3128/");
        assert!(ok.authorization.is_none() && !ok.from_env);
        assert!(check(url("https://10.0.0.5:8443/")).unwrap().is_some());
        assert!(check(url("none")).unwrap().is_none());
        assert!(check(RawProxy::Flag(false)).unwrap().is_none());
        for (text, words) in [
            ("proxy.internal:3128", "must start with http:// or https://"),
            ("socks5://proxy:1080", "scheme socks5 is not supported"),
            ("http://proxy.internal", "must name the port"),
            ("http://proxy.internal:0", "port 0"),
            ("http://proxy:3128/path", "must not have a path"),
            ("http://proxy:port", "must name the port"),
            ("", "is not a URL"),
        ] {
            let problems = check(url(text)).unwrap_err();
            assert!(
                problems[0].starts_with("endpoints[0].proxy: ") && problems[0].contains(words),
                "{text}: {problems:?}"
            );
        }
        let problems = check(RawProxy::Flag(true)).unwrap_err();
        assert!(problems[0].contains("names no proxy"), "{problems:?}");
    }

    #[test]
    fn credentials_in_the_url_are_refused_without_repeating_them() {
        for text in [
            "http://user:hunter2@proxy:3128",
            "http://user:hunter2@proxy",
        ] {
            let problems = check(url(text)).unwrap_err();
            assert!(problems[0].contains("credentials"), "{problems:?}");
            assert!(!problems[0].contains("hunter2"), "{problems:?}");
        }
        let problems = check(url("http://user:hunter2@[bad")).unwrap_err();
        assert!(!problems[0].contains("hunter2"), "{problems:?}");
    }

    #[test]
    fn username_and_password_become_a_sensitive_basic_header() {
        let table = RawProxyTable {
            url: Some("http://proxy:3128".into()),
            username: Some("Aladdin".into()),
            password: Some(SecretRef::Ref(SecretRefTable {
                value: Some("open sesame".into()),
                ..Default::default()
            })),
        };
        let proxy = check(RawProxy::Table(table.clone())).unwrap().unwrap();
        let auth = proxy.authorization.clone().unwrap();
        assert_eq!(auth, "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==");
        assert!(auth.is_sensitive());
        let debug = format!("{proxy:?}");
        assert!(
            !debug.contains("QWxh") && debug.contains("<redacted>"),
            "{debug}"
        );

        let missing_env = RawProxyTable {
            password: Some(SecretRef::Ref(SecretRefTable {
                env: Some("NATSHOOK_TEST_UNSET_PROXY_PASSWORD".into()),
                ..Default::default()
            })),
            ..table.clone()
        };
        let problems = check(RawProxy::Table(missing_env)).unwrap_err();
        assert_eq!(
            problems,
            ["endpoints[0].proxy.password: environment variable NATSHOOK_TEST_UNSET_PROXY_PASSWORD is not set"]
        );
        let no_user = RawProxyTable {
            username: None,
            ..table.clone()
        };
        let problems = check(RawProxy::Table(no_user)).unwrap_err();
        assert_eq!(
            problems,
            ["endpoints[0].proxy.username: required when password is set"]
        );
        let colon = RawProxyTable {
            username: Some("a:b".into()),
            url: None,
            ..table
        };
        let problems = check(RawProxy::Table(colon)).unwrap_err();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].starts_with("endpoints[0].proxy.url: required"));
        assert!(problems[1].starts_with("endpoints[0].proxy.username: must be"));
    }

    #[test]
    fn the_environments_proxy_applies_unless_no_proxy_names_the_host() {
        let env = Matcher::builder()
            .https("http://user:pa%3Ass@127.0.0.1:3128")
            .http("socks5://127.0.0.1:1080")
            .no("internal.example.com, 10.0.0.0/8")
            .build();
        let mut p = Problems::default();
        let via = |url: &str, p: &mut Problems| {
            let url: Uri = url.parse().unwrap();
            proxy(None, "endpoints[0].proxy", Some(&url), &env, p)
        };
        let proxy = via("https://hooks.example.com/", &mut p).unwrap().unwrap();
        assert_eq!(proxy.uri, "http://127.0.0.1:3128/");
        assert!(proxy.from_env);
        // user:pa:ss, percent-decoded before encoding.
        assert_eq!(proxy.authorization.unwrap(), "Basic dXNlcjpwYTpzcw==");
        assert!(via("https://a.internal.example.com/", &mut p)
            .unwrap()
            .is_none());
        assert!(via("https://10.1.2.3/", &mut p).unwrap().is_none());
        assert!(p.is_empty());
        assert!(via("http://hooks.example.com/", &mut p).is_none());
        let problems: Vec<String> = p.0.into_iter().map(|x| x.to_string()).collect();
        assert!(
            problems[0].contains("(socks5://127.0.0.1:1080/) is not an http:// or https:// proxy"),
            "{problems:?}"
        );
    }
}

//! URL checks shared by the settings that name a server natshook sends to: an
//! endpoint's `url` and `tracing.otlp_endpoint`. `http::Uri` parses more than a
//! client can use (a port past 65535 reads as no port, userinfo is never sent), so
//! what it lets through is refused here, by key, at start-up.

use crate::ssrf::TargetPolicy;

/// What is wrong with the port of `uri`, if anything: a port past 65535 parses, reads
/// as no port, and the scheme's default port would be used; port 0 is no port a
/// server listens on. Credentials in the authority are checked before this.
pub(super) fn port_problem(uri: &http::Uri) -> Option<String> {
    let authority = uri.authority()?.as_str();
    let after_host = &authority[authority.rfind(']').map_or(0, |i| i + 1)..];
    let (_, port) = after_host.rsplit_once(':')?;
    match port.parse::<u16>() {
        Ok(0) => Some("port 0 is not a port a server listens on".into()),
        Ok(_) => None,
        Err(_) => Some(format!("'{port}' is not a port (1 to 65535)")),
    }
}

/// How to send a URL's credentials instead, as a config file says it (the admin API
/// words it for a JSON body: `config::api`).
pub const CREDENTIALS_AS_HEADER: &str =
    "send them as a header (headers = { Authorization = { env = \"…\" } })";

/// URL text as logs show it: scheme and host as written, a path other than `/` only
/// as `/…`, a query only as `?…`, and credentials before the host as `…@`. Receivers
/// take tokens in the query (`?token=…`) and in the path (Slack's
/// `/services/T…/B…/<token>`, Discord's `/api/webhooks/<id>/<token>`, Make's
/// `/<token>`), and logs travel further than the endpoint's record, which shows the
/// whole URL. Works on text that does not parse as a URL too.
pub fn for_logs(text: &str) -> String {
    // A scheme only before any path, query or fragment: `://` later is their text.
    let scheme_end = text
        .find("://")
        .filter(|&i| !text[..i].contains(['/', '?', '#']))
        .map_or(0, |i| i + 3);
    let (scheme, after) = text.split_at(scheme_end);
    let (authority, rest) = after.split_at(after.find(['/', '?', '#']).unwrap_or(after.len()));
    let (path, tail) = rest.split_at(rest.find(['?', '#']).unwrap_or(rest.len()));
    let host = match authority.rfind('@') {
        Some(at) => format!("…@{}", &authority[at + 1..]),
        // Credentials that hold `/`, `?` or `#` end the authority early, and their
        // `@` comes later: what is left of them is no host and port.
        None if rest.contains('@') && !looks_like_host(authority) => "…".to_string(),
        None => authority.to_string(),
    };
    let path = match path {
        "" | "/" => path,
        _ => "/…",
    };
    let tail = match tail.chars().next() {
        Some('?') => "?…",
        Some(_) => "#…",
        None => "",
    };
    format!("{scheme}{host}{path}{tail}")
}

/// Whether `authority` reads as a host with an optional port: a name or address, or a
/// bracketed IPv6 address, then `:` and digits only.
fn looks_like_host(authority: &str) -> bool {
    let port_from = match authority.strip_prefix('[') {
        Some(v6) => v6.find(']').map(|i| i + 2),
        None => Some(0),
    };
    let Some(port_from) = port_from else {
        return false;
    };
    match authority[port_from.min(authority.len())..].rsplit_once(':') {
        Some((host, port)) => {
            port.bytes().all(|b| b.is_ascii_digit()) && (port_from > 0 || !host.contains(':'))
        }
        None => true,
    }
}

/// Checks the URL text with the guard's own policy: an address, in any spelling the
/// resolver reads as one (`127.1`, `0x7f000001`), is refused here for the reason it
/// would be refused at connect time; names are checked again on every resolved
/// address at connect time.
pub(super) fn endpoint_url(
    text: &str,
    allow_http: bool,
    target: &TargetPolicy,
) -> Result<http::Uri, String> {
    // Problems are logged (a stored record that fails its check).
    let shown = for_logs(text);
    let uri: http::Uri = text
        .parse()
        .map_err(|e| format!("'{shown}' is not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("https") => {}
        Some("http") if allow_http => {}
        Some("http") => {
            return Err("scheme must be https (set allow_http = true to permit http)".into())
        }
        _ => return Err(format!("'{shown}' must be an absolute http(s) URL")),
    }
    let authority = uri.authority().map_or("", |a| a.as_str());
    if authority.contains('@') {
        // hyper never sends userinfo, so the receiver would see no credentials.
        return Err(format!(
            "credentials do not belong in the URL: {CREDENTIALS_AS_HEADER}"
        ));
    }
    let host = uri
        .host()
        .filter(|h| !h.trim_matches('.').is_empty())
        .ok_or_else(|| format!("'{shown}' has no host"))?;
    if let Some(problem) = port_problem(&uri) {
        return Err(format!("'{shown}': {problem}"));
    }
    target
        .check_host(host)
        .map_err(|refusal| refusal.to_string())?;
    Ok(uri)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An endpoint's URL as the logs show it when it starts: where it goes (scheme,
    /// host, port), not the path or query where receivers take tokens.
    #[test]
    fn a_logged_url_keeps_its_path_and_query_out() {
        for (url, shown) in [
            (
                "https://hooks.example.com:8443/in?token=QUERYTOKEN",
                "https://hooks.example.com:8443/…?…",
            ),
            (
                "https://hooks.slack.com:443/services/T0001/B0001/PATHTOKEN",
                "https://hooks.slack.com:443/…",
            ),
            ("http://127.0.0.1:9000/", "http://127.0.0.1:9000/"),
            ("http://[::1]:9000/?a=b", "http://[::1]:9000/?…"),
        ] {
            let uri: http::Uri = url.parse().unwrap();
            assert_eq!(for_logs(&uri.to_string()), shown);
        }
        assert_eq!(for_logs("hooks.example.com/TOKEN"), "hooks.example.com/…");
        assert_eq!(
            for_logs("hooks.slack.com/services/T/B/TOKEN?next=https://x"),
            "hooks.slack.com/…?…"
        );
        assert_eq!(
            for_logs("https://user:pa?ss#w@hooks.example.com/in"),
            "https://…?…"
        );
        // An `@` in the query, no path: the host is the host.
        assert_eq!(
            for_logs("https://hooks.example.com:99999?to=ops@example.com&token=S3CRET"),
            "https://hooks.example.com:99999?…"
        );
        assert_eq!(for_logs("https://h:0#x@tail"), "https://h:0#…");
        // A password with `/` in it.
        assert_eq!(
            for_logs("https://user:ab/cd+ef@hooks.example.com/in"),
            "https://…/…"
        );
        assert_eq!(for_logs("https://[::1]:8443/x@y"), "https://[::1]:8443/…");
        assert_eq!(for_logs(""), "");
        assert_eq!(for_logs("https://"), "https://");
        assert_eq!(
            for_logs("ftp://user:pw@hooks.example.com/in#TOKEN"),
            "ftp://…@hooks.example.com/…#…"
        );
    }

    /// A refused URL's problem, which is logged for a stored record, names it without
    /// its query, where receivers take tokens.
    #[test]
    fn a_refused_url_is_named_without_its_query() {
        let policy = TargetPolicy::default();
        for text in [
            "ftp://hooks.example.com/in?token=SECRET",
            "https://hooks.example.com:0/in?token=SECRET",
            "/in?token=SECRET",
        ] {
            let problem = endpoint_url(text, false, &policy).unwrap_err();
            assert!(!problem.contains("SECRET"), "{problem}");
            assert!(problem.contains("/…?…"), "{problem}");
        }
        let problem =
            endpoint_url("ftp://user:SECRET@hooks.example.com/in", false, &policy).unwrap_err();
        assert!(!problem.contains("SECRET"), "{problem}");
        assert!(problem.contains("ftp://…@hooks.example.com/…"), "{problem}");
    }
}

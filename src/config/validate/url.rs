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
        .map(|i| i + 3);
    let host_from = scheme_end.unwrap_or(0);
    // Credentials end at the last `@` before the path, whatever they hold.
    let path_from = text[host_from..]
        .find('/')
        .map_or(text.len(), |i| host_from + i);
    let (userinfo, host_from) = match text[host_from..path_from].rfind('@') {
        Some(at) => (true, host_from + at + 1),
        None => (false, host_from),
    };
    let authority_end = text[host_from..]
        .find(['/', '?', '#'])
        .map_or(text.len(), |i| host_from + i);
    let mut shown = match userinfo {
        true => format!("{}…@", &text[..scheme_end.unwrap_or(0)]),
        false => text[..host_from].to_string(),
    };
    shown.push_str(&text[host_from..authority_end]);
    let rest = &text[authority_end..];
    let (path, query) = match rest.split_once('?') {
        Some((path, _)) => (path, "?…"),
        None => (rest, ""),
    };
    let path = path.split('#').next().unwrap_or_default();
    shown.push_str(match path {
        "" => "",
        "/" => "/",
        _ => "/…",
    });
    shown.push_str(query);
    shown
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
            "https://…@hooks.example.com/…"
        );
        assert_eq!(
            for_logs("ftp://user:pw@hooks.example.com/in#TOKEN"),
            "ftp://…@hooks.example.com/…"
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

//! How an endpoint's connections reach the receiver: straight (names resolved through
//! the SSRF guard) or through an HTTP proxy with a CONNECT tunnel (hyper-util's
//! `Tunnel`), for `https` and plain `http` receivers alike. A tunnel keeps the request
//! as natshook wrote it (origin-form, TLS end to end for `https`), and one code path
//! serves both schemes; the cost is that the proxy must allow CONNECT to the port of
//! a plain-http receiver (squid's default `SSL_ports` rule allows only 443).
//!
//! Through a proxy the proxy resolves the receiver's name, so the SSRF guard can judge
//! only what the URL says: an address literal (in any spelling) and an internal name
//! are refused here as at config load, a name that resolves to a private address is
//! the proxy's to refuse. The proxy's own address is the operator's choice and is not
//! checked.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::Uri;
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tower_service::Service;

use crate::config::Proxy;
use crate::ssrf::{GuardedResolver, TargetPolicy};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A connection to the receiver, or a tunnel to it through a plain or TLS connection
/// to the proxy; the endpoint's TLS (for `https`) goes on top.
pub(super) type Stream = MaybeHttpsStream<TokioIo<TcpStream>>;

/// The connector under the endpoint's TLS layer.
#[derive(Clone)]
pub(super) enum Route {
    Direct(HttpConnector<GuardedResolver>),
    Tunnel {
        /// Boxed: the tunnel with its TLS set-up is large beside a direct connector.
        tunnel: Box<Tunnel<HttpsConnector<HttpConnector>>>,
        /// The endpoint's SSRF policy, applied to the receiver's host as written.
        policy: Arc<TargetPolicy>,
        /// The proxy, for error messages (never with credentials).
        proxy: Arc<str>,
    },
}

impl Route {
    pub(super) fn direct(http: HttpConnector<GuardedResolver>) -> Self {
        Route::Direct(http)
    }

    /// A tunnel through `proxy`; `to_proxy` connects to it (TLS when its URL is
    /// `https`), with hyper's own resolver: the guard is for receivers.
    pub(super) fn tunnel(
        proxy: &Proxy,
        to_proxy: HttpsConnector<HttpConnector>,
        policy: TargetPolicy,
    ) -> Self {
        let mut tunnel = Tunnel::new(proxy.uri.clone(), to_proxy);
        if let Some(auth) = &proxy.authorization {
            tunnel = tunnel.with_auth(auth.clone());
        }
        let shown = proxy.uri.to_string();
        Route::Tunnel {
            tunnel: Box::new(tunnel),
            policy: Arc::new(policy),
            proxy: shown.trim_end_matches('/').into(),
        }
    }
}

/// Why a tunnel failed, naming the proxy (its URL holds no credentials). The
/// reason is the source, which error chains print after this.
#[derive(Debug, thiserror::Error)]
#[error("through proxy {proxy}")]
pub(super) struct ProxyError {
    proxy: Arc<str>,
    /// hyper-util's `TunnelError` (not exported by name).
    #[source]
    source: BoxError,
}

impl Service<Uri> for Route {
    type Response = Stream;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Stream, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        match self {
            Route::Direct(http) => http.poll_ready(cx).map_err(Into::into),
            Route::Tunnel { tunnel, .. } => tunnel.poll_ready(cx).map_err(Into::into),
        }
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        match self {
            Route::Direct(http) => {
                let connecting = http.call(dst);
                Box::pin(async move { Ok(MaybeHttpsStream::Http(connecting.await?)) })
            }
            Route::Tunnel {
                tunnel,
                policy,
                proxy,
            } => {
                let target = match tunnel_target(&dst, policy) {
                    Ok(target) => target,
                    Err(e) => return Box::pin(async move { Err(e.into()) }),
                };
                let tunnelling = tunnel.call(target);
                let proxy = proxy.clone();
                Box::pin(async move {
                    tunnelling.await.map_err(|source| {
                        ProxyError {
                            proxy,
                            source: source.into(),
                        }
                        .into()
                    })
                })
            }
        }
    }
}

/// The receiver's `host:port` for CONNECT after the SSRF policy's look at the host.
/// The port is written out because `Tunnel` takes a missing one for 443, which is
/// wrong for `http`.
fn tunnel_target(dst: &Uri, policy: &TargetPolicy) -> io::Result<Uri> {
    let host = dst
        .host()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "URL has no host"))?;
    policy.check_unresolved_host(host)?;
    if dst.port().is_some() {
        return Ok(dst.clone());
    }
    let port = if dst.scheme() == Some(&http::uri::Scheme::HTTPS) {
        443
    } else {
        80
    };
    Uri::builder()
        .scheme(dst.scheme_str().unwrap_or("http"))
        .authority(format!("{host}:{port}"))
        .path_and_query("/")
        .build()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tunnel_names_the_port_and_refuses_what_the_url_shows_is_private() {
        let policy = TargetPolicy::default();
        let t = |url: &str| tunnel_target(&url.parse().unwrap(), &policy);
        assert_eq!(
            t("http://hooks.example.com/in")
                .unwrap()
                .authority()
                .unwrap(),
            "hooks.example.com:80"
        );
        assert_eq!(
            t("https://hooks.example.com/in")
                .unwrap()
                .authority()
                .unwrap(),
            "hooks.example.com:443"
        );
        assert_eq!(
            t("https://[2606:4700::1111]/")
                .unwrap()
                .authority()
                .unwrap(),
            "[2606:4700::1111]:443"
        );
        assert_eq!(
            t("https://hooks.example.com:8443/").unwrap().port_u16(),
            Some(8443)
        );
        for private in [
            "https://10.0.0.1/",
            "https://0x7f000001/",
            "https://[::1]:8443/",
            "https://metadata.google.internal/",
            "https://localhost/",
        ] {
            let err = t(private).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::PermissionDenied, "{private}");
            assert!(err.to_string().starts_with("refused: "), "{err}");
        }
        let open = TargetPolicy {
            allow_private: true,
            allow_cidrs: vec![],
        };
        assert!(tunnel_target(&"https://10.0.0.1/".parse().unwrap(), &open).is_ok());
    }
}

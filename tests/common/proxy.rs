//! A CONNECT proxy on loopback for the outbound-proxy tests: hyper serves the CONNECT
//! request, an upgraded connection is copied both ways to the target. It checks
//! `Proxy-Authorization` (Basic) when given credentials, answering 407 otherwise,
//! counts the tunnels it opens and may map host names to loopback addresses, so a
//! receiver can be named by a host nobody resolves but the proxy.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use base64::Engine;
use bytes::Bytes;
use http::{Method, Response, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

#[derive(Default)]
struct State {
    /// The `Proxy-Authorization` value expected; `None` accepts any request.
    expected: RwLock<Option<String>>,
    /// Host → the address the proxy connects to instead (`host:port` keeps its port).
    aliases: RwLock<HashMap<String, String>>,
    tunnels: AtomicUsize,
    refused: AtomicUsize,
    /// The `host:port` of every CONNECT that was answered 200.
    targets: Mutex<Vec<String>>,
}

pub struct ConnectProxy {
    pub port: u16,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl ConnectProxy {
    /// A proxy that asks for no credentials.
    pub async fn start() -> Self {
        Self::serve(None).await
    }

    /// A proxy that requires these Basic credentials.
    pub async fn with_credentials(user: &str, password: &str) -> Self {
        let p = Self::serve(None).await;
        p.set_credentials(user, password);
        p
    }

    /// A proxy reached over TLS (an `https://` proxy URL).
    pub async fn start_tls(config: rustls::ServerConfig) -> Self {
        Self::serve(Some(tokio_rustls::TlsAcceptor::from(Arc::new(config)))).await
    }

    async fn serve(tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("proxy bind");
        let port = listener.local_addr().expect("addr").port();
        let state = Arc::new(State::default());
        let shared = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (state, tls) = (shared.clone(), tls.clone());
                tokio::spawn(async move {
                    match tls {
                        None => serve_connection(tcp, state).await,
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(tcp).await {
                                serve_connection(stream, state).await
                            }
                        }
                    }
                });
            }
        });
        Self { port, state, task }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn set_credentials(&self, user: &str, password: &str) {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        *self.state.expected.write().unwrap() = Some(format!("Basic {token}"));
    }

    /// CONNECTs to `host` (any port) go to `address` instead.
    pub fn alias(&self, host: &str, address: &str) {
        self.state
            .aliases
            .write()
            .unwrap()
            .insert(host.to_string(), address.to_string());
    }

    /// Tunnels opened (CONNECT answered 200).
    pub fn tunnels(&self) -> usize {
        self.state.tunnels.load(Ordering::SeqCst)
    }

    /// CONNECTs answered 407.
    pub fn refused(&self) -> usize {
        self.state.refused.load(Ordering::SeqCst)
    }

    /// The `host:port` of each tunnel opened.
    pub fn targets(&self) -> Vec<String> {
        self.state.targets.lock().unwrap().clone()
    }
}

impl Drop for ConnectProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_connection<S>(stream: S, state: Arc<State>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| {
        let state = state.clone();
        async move { Ok::<_, Infallible>(connect(req, state).await) }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades()
        .await;
}

fn reply(status: StatusCode) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = status;
    r
}

/// One CONNECT: credentials, then a connection to the target, then 200 and the copy.
async fn connect(
    req: hyper::Request<hyper::body::Incoming>,
    state: Arc<State>,
) -> Response<Full<Bytes>> {
    if req.method() != Method::CONNECT {
        return reply(StatusCode::METHOD_NOT_ALLOWED);
    }
    let expected = state.expected.read().unwrap().clone();
    if let Some(expected) = expected {
        let given = req
            .headers()
            .get(http::header::PROXY_AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if given != Some(expected.as_str()) {
            state.refused.fetch_add(1, Ordering::SeqCst);
            let mut r = reply(StatusCode::PROXY_AUTHENTICATION_REQUIRED);
            r.headers_mut().insert(
                http::header::PROXY_AUTHENTICATE,
                http::HeaderValue::from_static("Basic realm=\"test\""),
            );
            return r;
        }
    }
    let Some(authority) = req.uri().authority().cloned() else {
        return reply(StatusCode::BAD_REQUEST);
    };
    let host = authority.host().to_string();
    let port = authority.port_u16().unwrap_or(443);
    let address = match state.aliases.read().unwrap().get(&host) {
        Some(a) => format!("{a}:{port}"),
        None => format!("{host}:{port}"),
    };
    // Loopback only: a name this proxy was not told about is not looked up.
    if !(address.starts_with("127.0.0.1:") || address.starts_with("[::1]:")) {
        return reply(StatusCode::FORBIDDEN);
    }
    let Ok(mut upstream) = tokio::net::TcpStream::connect(&address).await else {
        return reply(StatusCode::BAD_GATEWAY);
    };
    state.tunnels.fetch_add(1, Ordering::SeqCst);
    state.targets.lock().unwrap().push(authority.to_string());
    tokio::spawn(async move {
        if let Ok(upgraded) = hyper::upgrade::on(req).await {
            let mut client = TokioIo::new(upgraded);
            let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
        }
    });
    reply(StatusCode::OK)
}

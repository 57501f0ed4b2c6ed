//! Test harness: a real nats-server (JetStream, free port, temp store), a real HTTP
//! receiver (hyper, in-process) that records every request, and the natshook binary
//! run as a child process. Nothing is mocked.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::{TcpListener as StdListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::task::JoinSet;

mod proxy;
// Each test binary compiles common/ on its own; most use no proxy.
#[allow(unused_imports)]
pub use proxy::ConnectProxy;

/// The proxy variables natshook reads (curl's, in both cases). A CI machine may set
/// them; each test starts natshook without them unless it sets them itself.
pub const PROXY_VARIABLES: &[&str] = &[
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// Runs `command` with `stdin` written to its standard input, which is then closed,
/// and its output captured. A command that fails before it reads its input (a usage
/// error) may exit first: the pipe it closed is no failure of the test, whose
/// assertions are on the command's answer.
pub fn output_with_stdin(mut command: Command, stdin: &[u8]) -> std::process::Output {
    use std::io::Write;
    let mut child = command
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run natshook");
    if let Some(mut input) = child.stdin.take() {
        if let Err(e) = input.write_all(stdin) {
            assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "write stdin: {e}");
        }
    }
    child.wait_with_output().expect("natshook output")
}

/// Runs the natshook binary with `args`, `stdin` and the extra environment `env`:
/// (exit code, stdout, stderr).
pub fn run_natshook(args: &[&str], stdin: &[u8], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut command = natshook_command();
    command.args(args).envs(env.iter().copied());
    let out = output_with_stdin(command, stdin);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A command running the natshook binary, without the environment's proxy variables.
pub fn natshook_command() -> Command {
    let mut cmd = Command::new(bin());
    for name in PROXY_VARIABLES {
        cmd.env_remove(name);
    }
    cmd
}

/// Sends `sig` (a name such as `TERM` or `STOP`) to process `pid`.
pub fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success(), "kill -{sig} {pid}");
}

pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Where the test tools live: `.venv/bin` (made by scripts/test.sh) or PATH.
pub fn tool(name: &str) -> PathBuf {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(".venv/bin")
        .join(name);
    if venv.exists() {
        return venv;
    }
    PathBuf::from(name)
}

pub fn python() -> PathBuf {
    tool("python3")
}

/// Waits until nothing accepts connections on `port` any more.
fn wait_port_closed(port: u16, within: Duration) {
    let deadline = Instant::now() + within;
    while TcpStream::connect(("127.0.0.1", port)).is_ok() {
        assert!(Instant::now() < deadline, "port {port} never closed");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// True when a NATS server answers on `port`: it greets every new connection with
/// `INFO`, which another test's HTTP listener on a reused port does not.
fn nats_greets(port: u16) -> bool {
    let Ok(mut conn) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = conn.set_read_timeout(Some(Duration::from_secs(1)));
    let mut greeting = [0u8; 4];
    std::io::Read::read_exact(&mut conn, &mut greeting).is_ok() && &greeting == b"INFO"
}

/// A nats-server with JetStream on a free port and a temp store dir.
pub struct NatsServer {
    child: Option<Child>,
    pub port: u16,
    /// The route listener's port, for a node of a [`NatsCluster`].
    cluster_port: Option<u16>,
    /// The route ports of the nodes started before this one.
    peers: Vec<u16>,
    store: tempfile::TempDir,
    extra: Vec<String>,
}

impl NatsServer {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts with extra nats-server arguments (e.g. `--auth TOKEN`).
    pub fn start_with(extra: &[&str]) -> Self {
        Self::start_listening(extra, None)
    }

    /// Starts a server that, given `peers`, also listens for routes and routes to
    /// those ports (other nodes' route listeners).
    fn start_listening(extra: &[&str], peers: Option<Vec<u16>>) -> Self {
        let routes = peers.is_some();
        let store = tempfile::tempdir().expect("tempdir");
        let mut s = Self {
            child: None,
            port: free_port(),
            cluster_port: routes.then(free_port),
            peers: peers.unwrap_or_default(),
            store,
            extra: extra.iter().map(|a| a.to_string()).collect(),
        };
        // A port free when picked may be taken by a parallel test's listener before
        // the server binds it; the server then exits, and fresh ports are tried.
        for _ in 0..5 {
            if s.try_spawn() {
                return s;
            }
            s.port = free_port();
            s.cluster_port = routes.then(free_port);
        }
        panic!("nats-server did not start on five free ports in a row");
    }

    /// Starts the (killed) server again on the same port with the same store.
    pub fn spawn(&mut self) {
        assert!(
            self.try_spawn(),
            "nats-server could not start again on port {} (taken meanwhile?)",
            self.port
        );
    }

    /// Spawns the server and waits until it greets on its port; false when it exited
    /// first (its port was taken).
    fn try_spawn(&mut self) -> bool {
        let bin = tool("nats-server");
        let port = self.port.to_string();
        // A JetStream node needs routes to start, so the first one routes to itself,
        // which nats-server recognises and skips.
        let cluster = self
            .cluster_port
            .map(|own| {
                let routes = (self.peers.iter().chain([&own]))
                    .map(|p| format!("nats://127.0.0.1:{p}"))
                    .collect::<Vec<_>>()
                    .join(",");
                let listen = format!("nats://127.0.0.1:{own}");
                vec!["--cluster".into(), listen, "--routes".into(), routes]
            })
            .unwrap_or_default();
        let child = Command::new(&bin)
            .args(["-js", "-a", "127.0.0.1", "-p", &port, "-sd"])
            .arg(self.store.path())
            .args(&cluster)
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {} ({e}); run scripts/test.sh, which installs it",
                    bin.display()
                )
            });
        // Held in `self` while waiting, so a failed wait's panic still kills it on drop.
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let exited = (self.child.as_mut()).is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))));
            if exited {
                self.child = None;
                return false;
            }
            // The route listener opens after the client one, and a taken route port
            // makes the server exit then; so both must greet.
            if nats_greets(self.port) && self.cluster_port.is_none_or(nats_greets) {
                return true;
            }
            assert!(
                Instant::now() < deadline,
                "nats-server never answered on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends `sig` to the running server, e.g. `STOP` to freeze it.
    pub fn signal(&self, sig: &str) {
        signal(self.pid().expect("nats-server runs"), sig);
    }

    /// Kills the server hard (SIGKILL), keeping the store.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        wait_port_closed(self.port, Duration::from_secs(10));
    }

    /// Starts it again on the same port with the same store.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    pub async fn client(&self) -> async_nats::Client {
        async_nats::connect(self.url())
            .await
            .expect("connect to test nats")
    }

    /// Creates a stream over `subjects`.
    pub async fn create_stream(&self, name: &str, subjects: &[&str]) {
        let js = jetstream::new(self.client().await);
        js.create_stream(jetstream::stream::Config {
            name: name.to_string(),
            subjects: subjects.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        })
        .await
        .expect("create stream");
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Publishes `(subject, payload, msg_id)` messages and waits for every JetStream ack.
pub async fn publish_all(js: &jetstream::Context, messages: Vec<(String, Bytes, Option<String>)>) {
    let messages = messages.into_iter().map(|(subject, payload, id)| {
        let mut headers = async_nats::HeaderMap::new();
        if let Some(id) = id {
            headers.insert(async_nats::header::NATS_MESSAGE_ID, id.as_str());
        }
        (subject, payload, headers)
    });
    publish_with_headers(js, messages).await;
}

/// Publishes `(subject, payload, headers)` messages and waits for every JetStream ack.
pub async fn publish_with_headers(
    js: &jetstream::Context,
    messages: impl IntoIterator<Item = (String, Bytes, async_nats::HeaderMap)>,
) {
    let mut acks = Vec::new();
    for (subject, payload, headers) in messages {
        let ack = js
            .publish_with_headers(subject, headers, payload)
            .await
            .expect("publish");
        acks.push(ack);
        if acks.len() >= 256 {
            for a in acks.drain(..) {
                a.await.expect("publish ack");
            }
        }
    }
    for a in acks {
        a.await.expect("publish ack");
    }
}

/// The durable consumer `name` of `stream`, as JetStream reports it (filters, what it
/// delivered and what is still unacked).
pub async fn consumer_info(
    js: &jetstream::Context,
    stream: &str,
    name: &str,
) -> jetstream::consumer::Info {
    js.get_stream(stream)
        .await
        .expect("stream")
        .consumer_info(name)
        .await
        .expect("consumer info")
}

/// What the receiver answers.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub delay: Duration,
}

impl Reply {
    pub fn status(status: u16) -> Self {
        Self {
            status,
            headers: vec![],
            body: String::new(),
            delay: Duration::ZERO,
        }
    }
    pub fn ok() -> Self {
        Self::status(200)
    }
    pub fn header(mut self, k: &str, v: &str) -> Self {
        self.headers.push((k.into(), v.into()));
        self
    }
    pub fn body(mut self, b: impl Into<String>) -> Self {
        self.body = b.into();
        self
    }
    pub fn delay(mut self, d: Duration) -> Self {
        self.delay = d;
        self
    }
}

/// One request the receiver got.
#[derive(Clone, Debug)]
pub struct Received {
    pub path: String,
    pub version: http::Version,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub at: Instant,
    /// Wall-clock time the request head arrived (before its body was read).
    pub wall: std::time::SystemTime,
    /// 1 for the first request with this X-Webhook-Id, 2 for the second, …
    pub nth_for_id: usize,
    pub replied: u16,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
    pub fn id(&self) -> &str {
        self.header("x-webhook-id")
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("body is JSON")
    }
}

type Behaviour = Arc<dyn Fn(&Received) -> Reply + Send + Sync>;

#[derive(Default)]
struct Log {
    all: Vec<Received>,
    per_id: HashMap<String, usize>,
}

/// An in-process hyper receiver. Behaviour can be swapped while it runs.
pub struct Receiver {
    pub port: u16,
    log: Arc<Mutex<Log>>,
    behaviour: Arc<RwLock<Behaviour>>,
    tasks: Option<tokio::task::JoinHandle<()>>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    /// TLS handshakes that failed (e.g. no client certificate).
    pub tls_failures: Arc<std::sync::atomic::AtomicUsize>,
}

impl Receiver {
    pub async fn start() -> Self {
        Self::start_on(0, |_| Reply::ok()).await
    }

    pub async fn with(f: impl Fn(&Received) -> Reply + Send + Sync + 'static) -> Self {
        Self::start_on(0, f).await
    }

    pub async fn start_on(
        port: u16,
        f: impl Fn(&Received) -> Reply + Send + Sync + 'static,
    ) -> Self {
        let mut r = Self {
            port,
            log: Arc::default(),
            behaviour: Arc::new(RwLock::new(Arc::new(f))),
            tasks: None,
            tls: None,
            tls_failures: Arc::default(),
        };
        r.listen().await;
        r
    }

    /// An https receiver with the given rustls server config.
    pub async fn start_tls(config: rustls::ServerConfig) -> Self {
        let mut r = Self {
            port: 0,
            log: Arc::default(),
            behaviour: Arc::new(RwLock::new(Arc::new(|_: &Received| Reply::ok()))),
            tasks: None,
            tls: Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))),
            tls_failures: Arc::default(),
        };
        r.listen().await;
        r
    }

    pub fn https_url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    async fn listen(&mut self) {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port))
            .await
            .expect("receiver bind");
        self.port = listener.local_addr().expect("addr").port();
        let log = self.log.clone();
        let behaviour = self.behaviour.clone();
        let tls = self.tls.clone();
        let tls_failures = self.tls_failures.clone();
        self.tasks = Some(tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let log = log.clone();
                let behaviour = behaviour.clone();
                let tls = tls.clone();
                let tls_failures = tls_failures.clone();
                conns.spawn(async move {
                    let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let log = log.clone();
                        let behaviour = behaviour.clone();
                        async move {
                            let wall = std::time::SystemTime::now();
                            let path = req.uri().path().to_string();
                            let version = req.version();
                            let headers = req.headers().clone();
                            let body = req
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let id = headers
                                .get("x-webhook-id")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("")
                                .to_string();
                            let mut rec = Received {
                                path,
                                version,
                                headers,
                                body,
                                at: Instant::now(),
                                wall,
                                nth_for_id: 0,
                                replied: 0,
                            };
                            {
                                let mut l = log.lock().unwrap();
                                let n = l.per_id.entry(id).or_insert(0);
                                *n += 1;
                                rec.nth_for_id = *n;
                            }
                            let f = behaviour.read().unwrap().clone();
                            let reply = f(&rec);
                            // Logged on arrival; counted as answered only once the
                            // (possibly delayed) reply is actually sent.
                            let idx = {
                                let mut l = log.lock().unwrap();
                                l.all.push(rec);
                                l.all.len() - 1
                            };
                            if !reply.delay.is_zero() {
                                tokio::time::sleep(reply.delay).await;
                            }
                            log.lock().unwrap().all[idx].replied = reply.status;
                            let mut resp = Response::new(Full::new(Bytes::from(reply.body)));
                            *resp.status_mut() = StatusCode::from_u16(reply.status).unwrap();
                            for (k, v) in reply.headers {
                                resp.headers_mut().insert(
                                    http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                                    http::HeaderValue::from_str(&v).unwrap(),
                                );
                            }
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    match tls {
                        None => {
                            let _ = auto::Builder::new(TokioExecutor::new())
                                .serve_connection(TokioIo::new(tcp), svc)
                                .await;
                        }
                        Some(acceptor) => match acceptor.accept(tcp).await {
                            Ok(stream) => {
                                let _ = auto::Builder::new(TokioExecutor::new())
                                    .serve_connection(TokioIo::new(stream), svc)
                                    .await;
                            }
                            Err(_) => {
                                tls_failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            }
                        },
                    }
                });
                while conns.try_join_next().is_some() {}
            }
        }));
    }

    /// Closes the listener and every open connection: connections are then refused.
    pub async fn stop(&mut self) {
        if let Some(t) = self.tasks.take() {
            t.abort();
            let _ = t.await;
        }
    }

    /// Listens again on the same port.
    pub async fn resume(&mut self) {
        self.listen().await;
    }

    /// Serves TLS with `config` from the next [`Receiver::resume`] on (a receiver whose
    /// certificates were renewed).
    pub fn set_tls(&mut self, config: rustls::ServerConfig) {
        self.tls = Some(tokio_rustls::TlsAcceptor::from(Arc::new(config)));
    }

    pub fn set(&self, f: impl Fn(&Received) -> Reply + Send + Sync + 'static) {
        *self.behaviour.write().unwrap() = Arc::new(f);
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn received(&self) -> Vec<Received> {
        self.log.lock().unwrap().all.clone()
    }

    pub fn count(&self) -> usize {
        self.log.lock().unwrap().all.len()
    }

    /// Distinct ids that got a 2xx.
    pub fn delivered_ids(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for r in self.log.lock().unwrap().all.iter() {
            if (200..300).contains(&r.replied) {
                *out.entry(r.id().to_string()).or_insert(0) += 1;
            }
        }
        out
    }

    /// Waits until `pred` holds for the log, or panics after `within`.
    pub async fn wait_for(&self, within: Duration, what: &str, pred: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + within;
        while !pred(self) {
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting for {what}: receiver has {} request(s), {} delivered id(s)",
                    self.count(),
                    self.delivered_ids().len()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(t) = self.tasks.take() {
            t.abort();
        }
    }
}

/// The natshook binary, run with a config file.
pub struct Natshook {
    child: Option<Child>,
    pub http_port: u16,
    pub dir: tempfile::TempDir,
    config: PathBuf,
    runs: usize,
    /// Environment and arguments before `run` (e.g. `--log-format json`).
    env: Vec<(String, String)>,
    global_args: Vec<String>,
}

/// The natshook binary under test: cargo's build, or `NATSHOOK_BIN` (CI runs the
/// end-to-end tests once more against the statically linked release binary).
pub fn bin() -> &'static str {
    static BIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        std::env::var("NATSHOOK_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_natshook").into())
    })
}

impl Natshook {
    /// Writes the config (with `{http_port}` substituted) and starts natshook, waiting
    /// for /readyz.
    pub async fn start(config: &str) -> Self {
        Self::start_with(config, &[], &[]).await
    }

    /// Like `start`, with extra environment variables and global arguments.
    pub async fn start_with(config: &str, env: &[(&str, &str)], global_args: &[&str]) -> Self {
        Self::start_ready_within(config, env, global_args, Duration::from_secs(30)).await
    }

    /// Like `start_with`, waiting up to `within` for /readyz (many endpoints on a
    /// cluster take longer to bind).
    pub async fn start_ready_within(
        config: &str,
        env: &[(&str, &str)],
        global_args: &[&str],
        within: Duration,
    ) -> Self {
        let mut n = Self::unstarted(config, env, global_args);
        n.spawn_ready_within(within).await;
        n
    }

    /// Like `start`, waiting only until the listener answers `/healthz`, not for
    /// readiness: for a start that cannot finish (NATS unreachable).
    pub async fn start_listening(config: &str) -> Self {
        let mut n = Self::unstarted(config, &[], &[]);
        n.launch();
        wait_until(Duration::from_secs(10), "the listener", || async {
            matches!(n.get("/healthz").await, Ok((200, _)))
        })
        .await;
        n
    }

    fn unstarted(config: &str, env: &[(&str, &str)], global_args: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let http_port = free_port();
        let path = dir.path().join("natshook.toml");
        std::fs::write(&path, config.replace("{http_port}", &http_port.to_string()))
            .expect("write config");
        Self {
            child: None,
            http_port,
            dir,
            config: path,
            runs: 0,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            global_args: global_args.iter().map(|a| a.to_string()).collect(),
        }
    }

    pub fn config_path(&self) -> &Path {
        &self.config
    }

    pub fn log_path(&self, run: usize) -> PathBuf {
        self.dir.path().join(format!("natshook-{run}.log"))
    }

    /// Every log line so far, all runs.
    pub fn logs(&self) -> String {
        (1..=self.runs)
            .map(|i| std::fs::read_to_string(self.log_path(i)).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("")
    }

    pub async fn spawn(&mut self) {
        self.spawn_ready_within(Duration::from_secs(30)).await;
    }

    pub async fn spawn_ready_within(&mut self, within: Duration) {
        self.launch();
        self.wait_ready(within).await;
    }

    fn launch(&mut self) {
        self.runs += 1;
        let log = std::fs::File::create(self.log_path(self.runs)).expect("log file");
        let child = natshook_command()
            .args(&self.global_args)
            .args(["run", "--config"])
            .arg(&self.config)
            .env("RUST_LOG", "natshook=debug,info")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn natshook");
        self.child = Some(child);
    }

    pub async fn wait_ready(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            if let Ok((200, _)) = self.get("/readyz").await {
                return;
            }
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    panic!("natshook exited early with {status}:\n{}", self.logs());
                }
            }
            assert!(
                Instant::now() < deadline,
                "natshook never became ready:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn get(&self, path: &str) -> Result<(u16, String), String> {
        http_get(&format!("http://127.0.0.1:{}{path}", self.http_port)).await
    }

    pub async fn metrics(&self) -> String {
        self.get("/metrics")
            .await
            .map(|(_, b)| b)
            .unwrap_or_default()
    }

    /// The value of one metric series, e.g. `natshook_endpoint_paused{endpoint="a"}`.
    pub async fn metric(&self, series: &str) -> Option<f64> {
        let text = self.metrics().await;
        text.lines()
            .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
            .and_then(|l| l[series.len()..].trim().parse().ok())
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn signal(&self, sig: &str) {
        signal(self.pid(), sig);
    }

    /// SIGTERM and wait for exit.
    pub async fn terminate(&mut self) -> ExitStatus {
        self.signal("TERM");
        self.wait_exit(Duration::from_secs(60)).await
    }

    pub async fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        let child = self.child.as_mut().expect("running");
        loop {
            if let Ok(Some(s)) = child.try_wait() {
                self.child = None;
                return s;
            }
            assert!(Instant::now() < deadline, "natshook did not exit");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Replaces the config file (with `{http_port}` substituted), e.g. for reload.
    pub fn rewrite_config(&self, config: &str) {
        let tmp = self.config.with_extension("tmp");
        std::fs::write(
            &tmp,
            config.replace("{http_port}", &self.http_port.to_string()),
        )
        .expect("write config");
        std::fs::rename(&tmp, &self.config).expect("swap config");
    }

    /// An admin API call: (status, JSON body).
    pub async fn api(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> (u16, serde_json::Value) {
        let auth = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("authorization", a.as_str())).collect();
        self.api_with(method, path, &headers, body).await.0
    }

    /// An admin API request with the given headers; the status, the body (as JSON when
    /// it is JSON, else as a string) and the response headers.
    pub async fn api_with(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> ((u16, serde_json::Value), http::HeaderMap) {
        let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .build_http::<Full<Bytes>>();
        let mut req = http::Request::builder()
            .method(method)
            .uri(format!("http://127.0.0.1:{}{path}", self.http_port));
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or("").to_string())))
            .unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(30), client.request(req))
            .await
            .expect("admin API timed out")
            .expect("admin API request");
        let status = resp.status().as_u16();
        let response_headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let value = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
            serde_json::Value::String(String::from_utf8_lossy(&bytes).into_owned())
        });
        ((status, value), response_headers)
    }

    /// Runs another natshook command against the same config file.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        let mut cmd = natshook_command();
        // At the commands' own log level, as a user runs them.
        cmd.args(args)
            .arg("--config")
            .arg(&self.config)
            .env_remove("RUST_LOG");
        cmd.output().expect("run natshook")
    }

    /// Like [`Natshook::cli`], with `stdin` written to the command's standard input.
    pub fn cli_with_stdin(&self, args: &[&str], stdin: &[u8]) -> std::process::Output {
        let mut command = natshook_command();
        command.args(args).arg("--config").arg(&self.config);
        output_with_stdin(command, stdin)
    }

    /// The dead-letter records of `endpoint`, via `natshook dlq list`.
    pub fn dead_letters(&self, endpoint: &str) -> Vec<serde_json::Value> {
        self.try_dead_letters(endpoint)
            .unwrap_or_else(|e| panic!("dlq list failed: {e}"))
    }

    fn try_dead_letters(&self, endpoint: &str) -> Result<Vec<serde_json::Value>, String> {
        let out = self.cli(&["dlq", "list", "--endpoint", endpoint, "--limit", "100000"]);
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).expect("dlq record is JSON"))
            .collect())
    }

    /// Waits until `endpoint` has at least `n` dead letters (or `within` passed) and
    /// returns them; a moment where the list fails (stream being re-created) is retried.
    pub async fn wait_dead_letters(
        &self,
        endpoint: &str,
        n: usize,
        within: Duration,
    ) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + within;
        loop {
            let got = self.try_dead_letters(endpoint);
            match got {
                Ok(d) if d.len() >= n || Instant::now() > deadline => return d,
                Err(e) if Instant::now() > deadline => panic!("dlq list failed: {e}"),
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Waits for `endpoint`'s one dead letter and asserts it is message `id`'s, written
    /// because the copy for the endpoint would exceed the server's `max_payload`.
    pub async fn wait_uncopied_dead_letter(&self, endpoint: &str, id: &str) {
        let dead = self
            .wait_dead_letters(endpoint, 1, Duration::from_secs(20))
            .await;
        assert_eq!(dead.len(), 1, "{dead:?}");
        assert_eq!(dead[0]["id"], id);
        let reason = dead[0]["reason"].as_str().unwrap_or_default();
        assert!(reason.contains("max_payload"), "{}", dead[0]);
    }

    /// Waits until a metric series has `want`, or panics with `what`.
    pub async fn wait_metric(&self, series: &str, want: f64, within: Duration, what: &str) {
        let deadline = Instant::now() + within;
        while self.metric(series).await != Some(want) {
            assert!(Instant::now() < deadline, "{what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until a metric series reaches at least `min`, or panics with `what`.
    pub async fn wait_metric_at_least(&self, series: &str, min: f64, within: Duration, what: &str) {
        let deadline = Instant::now() + within;
        while self.metric(series).await.is_none_or(|v| v < min) {
            assert!(Instant::now() < deadline, "{what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn sigkill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Natshook {
    fn drop(&mut self) {
        self.sigkill();
        if std::thread::panicking() {
            eprintln!("---- natshook logs ----\n{}", self.logs());
        }
    }
}

/// A plain GET with hyper's client.
pub async fn http_get(url: &str) -> Result<(u16, String), String> {
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let uri: http::Uri = url.parse().map_err(|e| format!("{e}"))?;
    let resp = tokio::time::timeout(Duration::from_secs(5), client.get(uri))
        .await
        .map_err(|_| "timeout".to_string())?
        .map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// A config for tests: receivers on loopback over http.
pub struct TestConfig {
    pub nats_url: String,
    pub stream: String,
    pub create_stream: bool,
    pub events: Vec<(String, String)>,
    /// `[[events]]` tables with keys beyond subject and event, after `events`.
    pub mappings: Vec<String>,
    pub endpoints: Vec<String>,
    pub top: String,
    /// Raw TOML lines for the `[nats]` section (auth, TLS).
    pub nats_extra: String,
}

impl TestConfig {
    pub fn new(nats_url: String) -> Self {
        Self {
            nats_url,
            stream: "EVENTS".into(),
            create_stream: true,
            events: vec![
                ("crm.lead.created".into(), "lead.created".into()),
                ("helpdesk.ticket.*".into(), "ticket.{3}".into()),
            ],
            mappings: vec![],
            endpoints: vec![],
            top: String::new(),
            nats_extra: String::new(),
        }
    }

    /// Adds raw TOML lines to `[nats]` (auth, TLS); a `[nats.tls]` table may follow.
    pub fn nats(mut self, extra: &str) -> Self {
        self.nats_extra.push_str(extra);
        self.nats_extra.push('\n');
        self
    }

    /// Adds an `[[events]]` mapping; `extra` is raw TOML lines for it (e.g. its
    /// tenant).
    pub fn mapping(mut self, subject: &str, event: &str, extra: &str) -> Self {
        self.mappings.push(format!(
            "[[events]]\nsubject = \"{subject}\"\nevent = \"{event}\"\n{extra}\n"
        ));
        self
    }

    /// Adds an endpoint; `extra` is raw TOML lines for it.
    pub fn endpoint(mut self, name: &str, url: &str, events: &[&str], extra: &str) -> Self {
        let events = events
            .iter()
            .map(|e| format!("\"{e}\""))
            .collect::<Vec<_>>()
            .join(", ");
        self.endpoints.push(format!(
            "[[endpoints]]\nname = \"{name}\"\nurl = \"{url}\"\nevents = [{events}]\nsecret = {{ value = \"secret-{name}\" }}\nallow_http = true\nallow_private = true\n{extra}\n"
        ));
        self
    }

    pub fn render(&self) -> String {
        let mut s = String::new();
        s.push_str(&self.top);
        s.push_str(&format!(
            "\n[nats]\nurl = \"{}\"\nstream = \"{}\"\ncreate_stream = {}\n{}\n[http]\nlisten = \"127.0.0.1:{{http_port}}\"\n\n",
            self.nats_url, self.stream, self.create_stream, self.nats_extra
        ));
        for (subject, event) in &self.events {
            s.push_str(&format!(
                "[[events]]\nsubject = \"{subject}\"\nevent = \"{event}\"\n"
            ));
        }
        for m in &self.mappings {
            s.push_str(m);
        }
        for e in &self.endpoints {
            s.push('\n');
            s.push_str(e);
        }
        s
    }
}

/// Polls `f` every 50 ms until it holds, or panics after `within`.
pub async fn wait_until<F: std::future::Future<Output = bool>>(
    within: Duration,
    what: &str,
    mut f: impl FnMut() -> F,
) {
    let deadline = Instant::now() + within;
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Rewrites the config, sends SIGHUP and waits until the log shows `logged`.
pub async fn reload(natshook: &Natshook, config: &str, logged: &str, what: &str) {
    natshook.rewrite_config(config);
    natshook.signal("HUP");
    wait_until(Duration::from_secs(10), what, || {
        let logs = natshook.logs();
        async move { logs.contains(logged) }
    })
    .await;
}

/// The ids of `received` in the order of each one's first 2xx: what an ordered
/// endpoint must show in the source's order, whatever failed or came twice.
pub fn first_successes(received: &[Received]) -> Vec<String> {
    received
        .iter()
        .filter(|r| (200..300).contains(&r.replied))
        .map(|r| r.id().to_string())
        .fold(Vec::new(), |mut seen, id| {
            if !seen.contains(&id) {
                seen.push(id);
            }
            seen
        })
}

/// The admin API token [`with_admin`] configures.
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// `config` with the admin API on, behind [`ADMIN_TOKEN`].
pub fn with_admin(mut config: TestConfig) -> TestConfig {
    config.top = format!(
        "{}\n[admin]\nenabled = true\ntoken = {{ value = \"{ADMIN_TOKEN}\" }}\n",
        config.top
    );
    config
}

/// Publishes `n` leads and waits (up to 20 s) until the receiver holds `n` distinct ids.
pub async fn deliver_leads(js: &jetstream::Context, rx: &Receiver, n: usize, prefix: &str) {
    publish_all(js, leads(n, prefix)).await;
    rx.wait_for(Duration::from_secs(20), &format!("{n} delivered"), |r| {
        r.delivered_ids().len() >= n
    })
    .await;
}

/// `n` lead.created messages with JSON payloads and distinct `Nats-Msg-Id`s.
pub fn leads(n: usize, prefix: &str) -> Vec<(String, Bytes, Option<String>)> {
    (0..n)
        .map(|i| {
            (
                "crm.lead.created".to_string(),
                Bytes::from(format!("{{\"lead\":{i},\"name\":\"lead {i}\"}}")),
                Some(format!("{prefix}-{i}")),
            )
        })
        .collect()
}

/// A private CA (ca.pem), a server certificate for 127.0.0.1 (server.pem,
/// server-key.pem) and a client certificate (client.pem, client-key.pem) in `dir`,
/// plus a rustls server config that requires the client certificate and offers HTTP/2.
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub ca_pem: String,
    pub server: rustls::ServerConfig,
    /// The same certificate without asking for a client's (a TLS proxy).
    pub server_any_client: rustls::ServerConfig,
}

impl Pki {
    pub fn path(&self, file: &str) -> String {
        self.dir.path().join(file).display().to_string()
    }
}

pub fn pki() -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let server_key = KeyPair::generate().unwrap();
    let server_cert =
        CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .unwrap()
            .signed_by(&server_key, &ca)
            .unwrap();
    let client_key = KeyPair::generate().unwrap();
    let client_cert = CertificateParams::new(vec!["natshook".to_string()])
        .unwrap()
        .signed_by(&client_key, &ca)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: String| std::fs::write(dir.path().join(name), text).unwrap();
    write("ca.pem", ca.pem());
    write("server.pem", server_cert.pem());
    write("server-key.pem", server_key.serialize_pem());
    write("client.pem", client_cert.pem());
    write("client-key.pem", client_key.serialize_pem());

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der().clone()).unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let key = rustls::pki_types::PrivateKeyDer::try_from(server_key.serialize_der()).unwrap();
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![server_cert.der().clone()], key)
        .unwrap();
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let key = rustls::pki_types::PrivateKeyDer::try_from(server_key.serialize_der()).unwrap();
    let server_any_client = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![server_cert.der().clone()], key)
    .unwrap();
    Pki {
        dir,
        ca_pem: ca.pem(),
        server,
        server_any_client,
    }
}

/// Runs `natshook check` on config text (TOML): (exit code, stderr).
pub fn check_config(toml: &str) -> (i32, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("natshook.toml");
    std::fs::write(&path, toml).expect("write config");
    let out = natshook_command()
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .expect("run natshook check");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A config with one mapping and one endpoint `x`; `endpoint` is appended to the
/// endpoint's table (its url, events, secret, …).
pub fn one_endpoint(endpoint: &str) -> String {
    format!("[nats]\nstream = \"E\"\n[[events]]\nsubject = \"a\"\nevent = \"a\"\n[[endpoints]]\nname = \"x\"\n{endpoint}")
}

/// Runs the Python `script` with a JSON file holding `items` as `argv[1]` and `args`
/// after it, and returns what it printed: the independent verifiers of the signature
/// tests read requests this way.
pub fn python_over_json(script: &str, items: &impl serde::Serialize, args: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("items.json");
    std::fs::write(&path, serde_json::to_vec(items).unwrap()).unwrap();
    let out = Command::new(python())
        .args(["-c", script])
        .arg(&path)
        .args(args)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Two counts printed as `ok bad`.
pub fn two_counts(text: &str) -> (usize, usize) {
    let mut it = text.split_whitespace().map(|n| n.parse::<usize>().unwrap());
    (it.next().unwrap(), it.next().unwrap())
}

/// Verifies each (body, headers) with the official `standardwebhooks` package (PyPI):
/// (verified, not verified).
pub fn standardwebhooks_verify(
    secret: &str,
    items: &[(&[u8], BTreeMap<String, String>)],
) -> (usize, usize) {
    let items: Vec<serde_json::Value> = items
        .iter()
        .map(|(body, headers)| {
            serde_json::json!({ "body": String::from_utf8_lossy(body), "headers": headers })
        })
        .collect();
    let script = r#"
import json, sys
from standardwebhooks import Webhook
wh = Webhook(sys.argv[2])
ok = bad = 0
for item in json.load(open(sys.argv[1])):
    try:
        wh.verify(item["body"], item["headers"])
        ok += 1
    except Exception as e:
        print(e, file=sys.stderr)
        bad += 1
print(ok, bad)
"#;
    two_counts(&python_over_json(script, &items, &[secret]))
}

/// Several nats-servers with JetStream on loopback, routed to each other as one
/// cluster (own client and cluster ports, own store directories).
pub struct NatsCluster {
    pub nodes: Vec<NatsServer>,
}

impl NatsCluster {
    /// Starts `n` nodes and waits until JetStream can place a stream with `n` replicas.
    ///
    /// Each node routes to the nodes started before it, whose route ports are known to
    /// be theirs by then; the servers' gossip completes the mesh. So a node that has
    /// to retry on other ports leaves no route pointing at a port it never held.
    pub async fn start(n: usize) -> Self {
        let mut nodes: Vec<NatsServer> = Vec::with_capacity(n);
        for i in 0..n {
            let peers = nodes.iter().filter_map(|node| node.cluster_port).collect();
            let name = format!("node-{i}");
            let args = ["--cluster_name", "natshook-test", "-n", &name];
            nodes.push(NatsServer::start_listening(&args, Some(peers)));
        }
        let cluster = Self { nodes };
        cluster.wait_for_jetstream(n).await;
        cluster
    }

    /// Every node's client URL, comma-separated (as `nats.url` takes them).
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(NatsServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// A client that may connect to any node and reconnects to the survivors.
    pub async fn client(&self) -> async_nats::Client {
        let addrs: Vec<async_nats::ServerAddr> = self
            .nodes
            .iter()
            .map(|n| n.url().parse().expect("node URL"))
            .collect();
        async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .connect(addrs.as_slice())
            .await
            .expect("connect to the test cluster")
    }

    /// JetStream answers once the nodes have elected a meta leader; until then
    /// creating a replicated stream fails.
    async fn wait_for_jetstream(&self, replicas: usize) {
        let js = jetstream::new(self.client().await);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let probe = js
                .create_stream(jetstream::stream::Config {
                    name: "CLUSTER_PROBE".into(),
                    subjects: vec!["cluster-probe.>".into()],
                    num_replicas: replicas,
                    ..Default::default()
                })
                .await;
            match probe {
                Ok(_) => {
                    let _ = js.delete_stream("CLUSTER_PROBE").await;
                    return;
                }
                Err(e) => {
                    assert!(
                        Instant::now() < deadline,
                        "the test cluster never offered JetStream with {replicas} replicas: {e}"
                    );
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
        }
    }
}

/// Verifies each request with the official `standardwebhooks` package (PyPI).
/// A `hex` signer on `X-Webhook-Signature` with `secret`, to verify what a receiver got.
pub fn hex_signer(secret: &str) -> natshook::signing::Signer {
    natshook::signing::Signer::new(
        natshook::signing::Scheme::Hex,
        http::HeaderName::from_static("x-webhook-signature"),
        vec![natshook::secret::Secret::new(secret.as_bytes())],
    )
    .expect("a hex signer")
}

pub fn verify_received(secret: &str, requests: &[Received]) -> (usize, usize) {
    let items: Vec<(&[u8], BTreeMap<String, String>)> = requests
        .iter()
        .map(|r| {
            let headers = ["webhook-id", "webhook-timestamp", "webhook-signature"]
                .iter()
                .map(|h| (h.to_string(), r.header(h).to_string()))
                .collect();
            (&r.body[..], headers)
        })
        .collect();
    standardwebhooks_verify(secret, &items)
}

/// Operator events natshook publishes on `natshook.events.>`, collected in the order
/// they arrive as (subject, raw body).
pub struct EventWatch {
    seen: Arc<Mutex<Vec<(String, Bytes)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl EventWatch {
    /// Subscribes before returning, so no event published afterwards is missed.
    pub async fn start(nats: &NatsServer) -> Self {
        use futures_util::StreamExt;
        let client = nats.client().await;
        let mut sub = client
            .subscribe("natshook.events.>")
            .await
            .expect("subscribe to operator events");
        client.flush().await.expect("flush subscription");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&seen);
        let task = tokio::spawn(async move {
            let _client = client;
            while let Some(m) = sub.next().await {
                sink.lock()
                    .unwrap()
                    .push((m.subject.to_string(), m.payload));
            }
        });
        Self { seen, task }
    }

    pub fn all(&self) -> Vec<(String, Bytes)> {
        self.seen.lock().unwrap().clone()
    }

    /// The bodies of the events on `subject` whose `endpoint` is `endpoint`.
    pub fn of(&self, subject: &str, endpoint: &str) -> Vec<serde_json::Value> {
        self.all()
            .into_iter()
            .filter(|(s, _)| s == subject)
            .map(|(_, b)| serde_json::from_slice::<serde_json::Value>(&b).expect("event is JSON"))
            .filter(|v| v["endpoint"] == endpoint)
            .collect()
    }

    /// Waits (up to `within`) for the first event on `subject` for `endpoint`.
    pub async fn wait(&self, within: Duration, subject: &str, endpoint: &str) -> serde_json::Value {
        let deadline = Instant::now() + within;
        loop {
            if let Some(v) = self.of(subject, endpoint).into_iter().next() {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "no {subject} event for {endpoint}; events so far: {:?}",
                self.all()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for EventWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The admin API of `n` behind [`ADMIN_TOKEN`]: its status and JSON body.
pub async fn admin_api(
    n: &Natshook,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> (u16, serde_json::Value) {
    n.api(method, path, Some(ADMIN_TOKEN), body).await
}

/// Waits until endpoint `name` runs on `n` with its consumer bound.
pub async fn wait_bound(n: &Natshook, name: &str) {
    wait_until(
        Duration::from_secs(20),
        &format!("{name} bound"),
        || async {
            admin_api(n, "GET", &format!("/api/endpoints/{name}"), None)
                .await
                .1["bound"]
                == true
        },
    )
    .await;
}

/// `n` leads of `tenant` (on `events.<tenant>.lead.created`), ids `<prefix>-<i>`.
pub fn tenant_leads(tenant: &str, n: usize, prefix: &str) -> Vec<(String, Bytes, Option<String>)> {
    leads(n, prefix)
        .into_iter()
        .map(|(_, payload, id)| (format!("events.{tenant}.lead.created"), payload, id))
        .collect()
}

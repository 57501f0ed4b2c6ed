//! Command-line interface (see the contract's CLI section). Exit codes: 0 ok,
//! 1 runtime failure, 2 bad config or usage.
//!
//! `dlq` (dead letters) and `endpoints` (runtime endpoints in the registry) have
//! modules of their own.

mod dlq;
mod endpoints;
mod warnings;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use anyhow::anyhow;
use clap::{Args, Parser, Subcommand, ValueEnum};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use tokio_util::sync::CancellationToken;

use crate::app::runtime::Scheduler;
use crate::config::{Config, ConfigError};
use crate::secret::Secret;
use crate::signing::{Scheme, Signer};

#[derive(Parser, Debug)]
#[command(
    name = "natshook",
    version,
    about = "NATS JetStream messages in, signed webhooks out"
)]
pub struct Cli {
    /// Log format on stderr; the level comes from RUST_LOG (default info for run, warn
    /// for the other commands).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Json,
    Text,
}

#[derive(Args, Debug, Clone)]
pub struct ConfigArg {
    /// Config file (.toml, .yaml or .yml).
    #[arg(long, short = 'c', env = "NATSHOOK_CONFIG")]
    pub config: PathBuf,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the bridge.
    Run(ConfigArg),
    /// Validate the config (and resolve secrets) without connecting.
    Check(ConfigArg),
    /// Print the headers a receiver would get for the body on stdin.
    Sign(SignArgs),
    /// Check a signature for the body on stdin.
    Verify(VerifyArgs),
    /// Print a new Ed25519 key pair for the standard scheme.
    ///
    /// Line 1 is the whsk_ secret key (the endpoint's secret), line 2 the whpk_ public
    /// key that receivers verify with.
    Keygen(KeygenArgs),
    /// Inspect and replay dead letters.
    #[command(subcommand)]
    Dlq(dlq::DlqCommand),
    /// Manage runtime endpoints in the registry bucket the config names ([registry]).
    ///
    /// Works on the bucket directly (no natshook process needs to run) with the checks
    /// of the admin API and `check`. Exit 2 when what was asked cannot be done (an
    /// invalid endpoint, every problem listed; a config-file endpoint; an unknown or
    /// taken name), 1 when the registry cannot be reached or another writer changed
    /// the endpoint meanwhile.
    #[command(subcommand)]
    Endpoints(endpoints::EndpointsCommand),
}

#[derive(Args, Debug)]
pub struct KeyArgs {
    /// Take scheme and secrets from this endpoint of --config.
    #[arg(long, requires = "config")]
    pub endpoint: Option<String>,
    #[arg(long, short = 'c', env = "NATSHOOK_CONFIG")]
    pub config: Option<PathBuf>,
    /// Signature scheme when no --endpoint is given.
    #[arg(long, default_value = "hex")]
    pub scheme: String,
    /// Secret when no --endpoint is given (repeat for rotation, newest first). `verify`
    /// also takes a whpk_ public key.
    #[arg(long, env = "NATSHOOK_SECRET")]
    pub secret: Vec<String>,
    /// Signature header for hex/sha256.
    #[arg(long, default_value = "X-Webhook-Signature")]
    pub header: String,
}

#[derive(Args, Debug)]
pub struct SignArgs {
    #[command(flatten)]
    pub key: KeyArgs,
    /// Message id (webhook-id / X-Webhook-Id).
    #[arg(long, default_value = "msg_test")]
    pub id: String,
    /// Unix seconds; default now.
    #[arg(long)]
    pub timestamp: Option<u64>,
}

#[derive(Args, Debug)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub key: KeyArgs,
    /// A received header, "Name: value" (repeat).
    #[arg(long = "header-value", short = 'H')]
    pub headers: Vec<String>,
}

#[derive(Args, Debug)]
pub struct KeygenArgs {
    /// Read a whsk_ secret key from stdin and print only its whpk_ public key.
    #[arg(long)]
    pub public: bool,
}

/// Parses the command line. A missing `--config` also names `NATSHOOK_CONFIG`, which
/// clap's message leaves out.
pub fn parse() -> Cli {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    Cli::try_parse().unwrap_or_else(|mut e| {
        let config_missing = e.kind() == ErrorKind::MissingRequiredArgument
            && matches!(e.get(ContextKind::InvalidArg),
                Some(ContextValue::Strings(args)) if args.iter().any(|a| a.starts_with("--config")));
        if config_missing {
            e.insert(
                ContextKind::Suggested,
                ContextValue::StyledStrs(vec!["or set NATSHOOK_CONFIG=FILE".into()]),
            );
        }
        e.exit()
    })
}

/// Runtime failures (exit 1) versus config and usage problems (exit 2).
pub enum Failure {
    Config(ConfigError),
    Usage(anyhow::Error),
    Runtime(anyhow::Error),
}

impl From<ConfigError> for Failure {
    fn from(e: ConfigError) -> Self {
        Failure::Config(e)
    }
}

impl Failure {
    pub fn report(self) -> ExitCode {
        match self {
            Failure::Config(e) => {
                let _ = write!(std::io::stderr(), "natshook: {e}");
                ExitCode::from(2)
            }
            Failure::Usage(e) => {
                to_stderr(format_args!("natshook: {e:#}"));
                ExitCode::from(2)
            }
            Failure::Runtime(e) => {
                to_stderr(format_args!("natshook: {e:#}"));
                ExitCode::from(1)
            }
        }
    }
}

impl Command {
    /// The log level without `RUST_LOG`: the bridge reports what it does; a command
    /// that prints its answer only what went wrong, so that the NATS client's
    /// connection lines do not land among its output.
    pub fn default_log_level(&self) -> &'static str {
        match self {
            Command::Run(_) => "info",
            _ => "warn",
        }
    }
}

pub fn init_logging(format: LogFormat, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    // Colours only on a terminal: escape codes in Kubernetes logs or files get in
    // the way of grep and log shippers.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(|| LogSink);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// Set once stderr turned out to be a pipe nobody reads any more; it cannot come back.
static STDERR_GONE: AtomicBool = AtomicBool::new(false);

/// stderr for the log, where a failed write is dropped: a log sink that goes away
/// (the reader of a pipe exits) must not stop deliveries. With `std::io::stderr`
/// tracing-subscriber reports the failed write with `eprintln!`, which panics on the
/// same closed stderr.
struct LogSink;

impl Write for LogSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if !STDERR_GONE.load(Ordering::Relaxed) {
            if let Err(e) = std::io::stderr().write_all(buf) {
                if e.kind() == std::io::ErrorKind::BrokenPipe {
                    STDERR_GONE.store(true, Ordering::Relaxed);
                }
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A line on stderr; unlike `eprintln!`, a closed stderr is not a panic (that would
/// turn exit code 1 or 2 into 101).
pub fn to_stderr(line: std::fmt::Arguments) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// A line on stdout; unlike `println!`, a reader that went away (`| head`) is not a
/// panic.
fn to_stdout(line: std::fmt::Arguments) {
    let _ = writeln!(std::io::stdout(), "{line}");
}

fn read_stdin() -> Result<Vec<u8>, Failure> {
    let mut body = Vec::new();
    std::io::stdin()
        .read_to_end(&mut body)
        .map_err(|e| Failure::Runtime(anyhow!("cannot read stdin: {e}")))?;
    Ok(body)
}

/// The endpoint's signer, or one from --scheme/--secret; `verify_only` also admits
/// `whpk_` public keys.
fn signer_for(key: &KeyArgs, verify_only: bool) -> Result<Signer, Failure> {
    if let Some(name) = &key.endpoint {
        let path = key
            .config
            .as_deref()
            .ok_or_else(|| Failure::Usage(anyhow!("--endpoint needs --config")))?;
        let ep = Config::load_endpoint(path, name)?;
        return Ok(Signer::clone(&ep.signer));
    }
    if key.secret.is_empty() {
        return Err(Failure::Usage(anyhow!(
            "give --secret (or NATSHOOK_SECRET), or --config with --endpoint"
        )));
    }
    let scheme: Scheme = key
        .scheme
        .parse()
        .map_err(|()| Failure::Usage(anyhow!("--scheme must be hex, sha256 or standard")))?;
    let header = HeaderName::from_bytes(key.header.as_bytes())
        .map_err(|_| Failure::Usage(anyhow!("--header is not a valid header name")))?;
    let secrets = key
        .secret
        .iter()
        .map(|s| Secret::new(s.as_bytes()))
        .collect();
    let signer = if verify_only {
        Signer::verifier(scheme, header, secrets)
    } else {
        Signer::new(scheme, header, secrets)
    };
    signer.map_err(|e| Failure::Usage(anyhow!("--secret: {e}")))
}

fn sign(args: SignArgs) -> Result<(), Failure> {
    let signer = signer_for(&args.key, false)?;
    let body = read_stdin()?;
    let ts = args
        .timestamp
        .unwrap_or_else(|| crate::time::unix_secs(SystemTime::now()));
    let mut headers = HeaderMap::new();
    signer.sign_into(&args.id, ts, &body, &mut headers);
    let mut out = std::io::stdout().lock();
    for (name, value) in &headers {
        let _ = writeln!(out, "{}: {}", name, value.to_str().unwrap_or(""));
    }
    Ok(())
}

fn verify(args: VerifyArgs) -> Result<ExitCode, Failure> {
    let signer = signer_for(&args.key, true)?;
    let mut headers = HeaderMap::new();
    for h in &args.headers {
        let (name, value) = h
            .split_once(':')
            .ok_or_else(|| Failure::Usage(anyhow!("-H '{h}': expected \"Name: value\"")))?;
        let name = HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| Failure::Usage(anyhow!("-H '{h}': bad header name")))?;
        let value = HeaderValue::from_str(value.trim())
            .map_err(|_| Failure::Usage(anyhow!("-H '{h}': bad header value")))?;
        headers.append(name, value);
    }
    let body = read_stdin()?;
    match signer.verify(&body, &headers) {
        Ok(()) => {
            to_stdout(format_args!("valid"));
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            to_stdout(format_args!("invalid: {e}"));
            Ok(ExitCode::from(1))
        }
    }
}

/// Secret keys go through stdin, never argv, so they stay out of `ps` and shell history.
fn keygen(args: KeygenArgs) -> Result<(), Failure> {
    if args.public {
        let input = read_stdin()?;
        let secret = Secret::new(input.trim_ascii());
        let public = crate::signing::ed25519_public_key(&secret)
            .map_err(|e| Failure::Usage(anyhow!("stdin: {e}")))?;
        to_stdout(format_args!("{public}"));
        return Ok(());
    }
    let (secret, public) = crate::signing::generate_ed25519()
        .map_err(|e| Failure::Runtime(anyhow!("no OS randomness: {e}")))?;
    to_stdout(format_args!("{secret}\n{public}"));
    Ok(())
}

fn check(path: &Path) -> Result<(), Failure> {
    let config = Config::load(path)?;
    to_stdout(format_args!(
        "config OK: stream {}, {} mapping(s), {} endpoint(s)",
        config.nats.stream,
        config.router.rules().len(),
        config.endpoints.len()
    ));
    for e in &config.endpoints {
        let subjects = match config
            .router
            .filter_subjects(&e.events, e.tenant.as_deref())
        {
            Some(s) => s.join(", "),
            None => "(whole stream)".to_string(),
        };
        let tenant = e
            .tenant
            .as_deref()
            .map(|t| format!("tenant {t}; "))
            .unwrap_or_default();
        let rate = e
            .rate_limit
            .map(|r| format!("; rate_limit {r}"))
            .unwrap_or_default();
        to_stdout(format_args!(
            "  {} -> {} [{} signature{rate}; {tenant}subjects: {}]",
            e.name,
            e.url,
            e.signer.scheme(),
            subjects
        ));
    }
    let text = std::fs::read_to_string(path).unwrap_or_default();
    for warning in warnings::of(&config, &text) {
        to_stdout(format_args!("warning: {warning}"));
    }
    if let Some(t) = &config.tracing {
        to_stdout(format_args!(
            "tracing: spans of {} to {} (sample ratio {})",
            t.service_name, t.traces_url, t.sample_ratio
        ));
    }
    let ingress = &config.ingress;
    if !ingress.routes.is_empty() {
        let listener = ingress
            .listen
            .map_or_else(|| format!("{} ([http])", config.listen), |a| a.to_string());
        to_stdout(format_args!("ingress on {listener}:"));
        for r in &ingress.routes {
            let verify = match &r.verify {
                crate::ingress::Verify::None => "no verification".to_string(),
                crate::ingress::Verify::Signed(s) => format!("{} verification", s.scheme()),
            };
            to_stdout(format_args!(
                "  POST {} -> {} [{verify}; dedupe on {}; stream must capture {}]",
                r.path,
                r.subject,
                r.id_header,
                r.subject.pattern()
            ));
            // A sender rotating its key signs with two; past 8 keys the route refuses that.
            if let crate::ingress::Verify::Signed(s) = &r.verify {
                if let Some(n) = s.v1a_entries_allowed().filter(|n| *n < 2) {
                    to_stdout(format_args!(
                        "  warning: {} has {} Ed25519 keys, so a request may carry {n} v1a signature(s); a request with more gets 401 unchecked (at most {} signature checks each)",
                        r.path,
                        s.ed25519_keys(),
                        crate::signing::MAX_SIGNATURES
                    ));
                }
            }
            for warning in crate::ingress::warnings(r) {
                to_stdout(format_args!("  warning: {warning}"));
            }
        }
        if !config.nats.create_stream {
            to_stdout(format_args!(
                "  (natshook checks at start that a stream captures these subjects)"
            ));
        }
    }
    Ok(())
}

/// Runs the parsed command; returns the process exit code. The commands that talk to
/// NATS get a runtime of their own; `run` sizes its runtime from the config it loads.
pub fn execute(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Run(a) => run(&a.config),
        Command::Check(a) => check(&a.config),
        Command::Sign(a) => sign(a),
        Command::Verify(a) => match verify(a) {
            Ok(code) => return code,
            Err(f) => Err(f),
        },
        Command::Keygen(a) => keygen(a),
        Command::Dlq(cmd) => on_runtime(Scheduler::MultiThread, dlq::run(cmd)),
        Command::Endpoints(cmd) => on_runtime(Scheduler::MultiThread, endpoints::run(cmd)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => f.report(),
    }
}

fn on_runtime(
    scheduler: Scheduler,
    work: impl std::future::Future<Output = Result<(), Failure>>,
) -> Result<(), Failure> {
    let runtime = scheduler
        .build()
        .map_err(|e| Failure::Runtime(anyhow!("cannot start the runtime: {e}")))?;
    let result = runtime.block_on(work);
    // Dropped, the runtime would wait for every blocking task: a file read hung on a
    // stuck mount would keep the process from exiting after its drain.
    runtime.shutdown_timeout(BLOCKING_AT_EXIT);
    result
}

/// How long the exit waits for blocking tasks still running (file reads, a config
/// parse) once the work is done.
const BLOCKING_AT_EXIT: std::time::Duration = std::time::Duration::from_secs(2);

fn run(path: &Path) -> Result<(), Failure> {
    let watched = crate::app::WatchedConfig::before_load(path);
    let config = Config::load(path)?;
    let scheduler = Scheduler::for_config(&config);
    on_runtime(scheduler, async move {
        if scheduler == Scheduler::OneThread {
            let why = if config.fan_out {
                "fan_out delivers through one consumer and its lane"
            } else {
                "one endpoint"
            };
            tracing::info!(
                endpoints = config.endpoints.len(),
                "running on one thread: {why}, no registry, no ingress routes \
                 (TOKIO_WORKER_THREADS=N for N worker threads)"
            );
        }
        let text = std::fs::read_to_string(path).unwrap_or_default();
        for warning in warnings::of(&config, &text) {
            tracing::warn!("{warning}");
        }
        let shutdown = CancellationToken::new();
        let trigger = shutdown.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            trigger.cancel();
            // A second signal is someone who will not wait for the drain: what is
            // unacked comes back after `ack_wait`, as after a crash.
            wait_for_signal().await;
            tracing::warn!("second signal: exiting now, without draining; unacked messages come back after ack_wait");
            std::process::exit(1);
        });
        crate::app::run(config, Some(watched), shutdown)
            .await
            .map_err(|e| Failure::Runtime(e.into()))
    })
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM received"),
                    _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    // Keep the unused-import lint quiet on platforms without SIGTERM.
    let _ = Duration::ZERO;
}

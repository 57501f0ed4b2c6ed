//! natshook: a sidecar that consumes NATS JetStream subjects and delivers them as
//! signed webhooks. JetStream is the queue, the retry timer and the dead-letter store,
//! so natshook keeps no database of its own.
//!
//! The user-facing contract (CLI, config, request format, metrics) is in
//! `docs/CONTRACT.md`; `docs/architecture.md` explains the parts and the design.
//!
//! # Layout
//!
//! * `cli`: the commands (`run`, `check`, `sign`, `verify`, `dlq`) and exit codes.
//! * `config`: loading the config file (TOML or YAML, `NATSHOOK__…` variables over it, single
//!   `[[endpoints]]`/`[[events]]` entries too) and validating every key at once.
//! * `secret`: secret references (`{ env }`, `{ file }`, `{ value }`), resolved at start-up.
//! * `bridge`: `natshook run` wired together; its `Supervisor` runs, reloads and stops workers.
//! * `consumer`: one endpoint's `Worker`: fetch, hold while paused, probe, ack/NAK/dead-letter.
//! * `breaker`: when an endpoint pauses (consecutive failures, `410 Gone`, by hand) and resumes.
//! * `routing`: subject → event name, endpoint event filters, consumer filter subjects.
//! * `envelope`: the request body and the message id receivers deduplicate on.
//! * `signing`: `hex`, `sha256` and Standard Webhooks signatures, with rotation.
//! * `delivery`: one HTTP attempt: pooled client, TLS, headers, timeout, result.
//! * `guard`: the SSRF policy, applied to every resolved address at connect time.
//! * `dead_letter`: the `NATSHOOK_DLQ` stream: records, listing, replay.
//! * `delivery_log`: the `NATSHOOK_LOG` stream: recent attempts per endpoint.
//! * `server`: natshook's own HTTP listener: `/metrics`, `/healthz`, `/readyz`.
//! * `admin`: the admin API under `/api/`, behind a bearer token.
//! * `ingress`: incoming webhooks: verified requests stored in JetStream before the 2xx.
//! * `metrics`: the contract's Prometheus metrics.
//! * `allocator`: jemalloc as the global allocator (feature `jemalloc`).
//!
//! # The path of one message
//!
//! A `consumer::Worker` fetches the message from its endpoint's durable consumer,
//! `routing` names its event, `envelope` builds the body, `delivery` signs it
//! (`signing`) and POSTs it through the `guard`. A 2xx is acked; a failure is NAKed
//! with the delay for that attempt, so JetStream redelivers it later; after
//! `max_attempts` it goes to `dead_letter` and only then is acked.

pub mod admin;
#[cfg(feature = "jemalloc")]
mod allocator;
pub mod backoff;
pub mod breaker;
pub mod bridge;
pub mod cli;
pub mod config;
pub mod consumer;
pub mod delivery;
pub mod envelope;
pub mod guard;
pub mod ingress;
pub mod metrics;
pub mod pem;
pub mod rate_limit;
pub mod routing;
pub mod secret;
pub mod server;
pub mod settings;
pub mod signing;
pub mod store;
pub mod time;

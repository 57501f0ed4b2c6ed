//! natshook: a sidecar that consumes NATS JetStream subjects and delivers them as
//! signed webhooks. JetStream is the queue, the retry timer and the dead-letter store,
//! so natshook keeps no database of its own.
//!
//! The user-facing contract (CLI, config, request format, metrics) is in
//! `docs/CONTRACT.md`; `docs/architecture.md` explains the parts and the design.
//!
//! # Layout
//!
//! From the top down; a module imports only from modules below it.
//!
//! * `cli`: the commands (`run`, `check`, `sign`, `verify`, `keygen`, `dlq`, `endpoints`)
//!   and exit codes.
//! * `app`: `natshook run` wired together, with its start-up and shutdown order;
//!   `supervisor` (the `Supervisor`: applies, reloads, starts and stops workers),
//!   `nats` (connect, auth, TLS, stream checks), `watch` (SIGHUP and file changes),
//!   `runtime` (the tokio scheduler chosen from the config: one thread for one endpoint).
//! * `ingress`: incoming webhooks: verified requests stored in JetStream before the 2xx.
//! * `http`: natshook's own HTTP server, reading the app through `http::AppView`:
//!   `listener` (accept loop, connection limits), `routes` (`/metrics`, `/healthz`,
//!   `/readyz`), `admin` (the admin API under `/api/`, behind a bearer token).
//! * `registrar`: the operations on runtime endpoints (create, change, delete, rotate a
//!   secret), shared by the admin API and `natshook endpoints`.
//! * `worker`: one endpoint's `Worker`: bind, fetch, hold while paused, probe; `message`
//!   (one message: route, deliver, settle), `outcome` (ack, NAK, pause or dead letter,
//!   as a pure function), `breaker` (when an endpoint pauses and resumes), `unmapped`
//!   (the count of messages no mapping matches).
//! * `store`: natshook's JetStream streams: `dead_letters` (`NATSHOOK_DLQ`: records,
//!   listing, replay) and `delivery_log` (`NATSHOOK_LOG`: recent attempts per endpoint).
//! * `delivery`: one `deliver` (body, headers, signature, one HTTP attempt, its result);
//!   `client` (pooled client, TLS, resolving through `ssrf`), `headers`.
//! * `config`: loading the config file (TOML or YAML, `NATSHOOK__…` variables over it, single
//!   `[[endpoints]]`/`[[events]]` entries too) and validating every key at once.
//! * `routing`: subject → event name, endpoint event filters, consumer filter subjects.
//! * `payload_filter`: an endpoint's `filter`: allowed values at paths in the JSON payload.
//! * `subject_template`: an ingress route's subject template, rendered from a request.
//! * `route_path`: an ingress route's URL path, matched against request paths.
//! * `envelope`: the request body and the message id receivers deduplicate on.
//! * `events`: operator events (`natshook.events.…`): endpoint pauses, resumes and dead
//!   letters, published without waiting.
//! * `signing`: `hex`, `sha256` and Standard Webhooks signatures, with rotation.
//! * `secret`: secret references (`{ env }`, `{ file }`, `{ value }`), resolved at start-up.
//! * `ssrf`: the SSRF policy, applied to every resolved address at connect time.
//! * `metrics`: the contract's Prometheus metrics.
//! * Leaves: `backoff` (the one retry back-off), `rate_limit`, `time` (epoch and RFC 3339),
//!   `pem` (endpoint TLS files), `settings` (settings the config owns, e.g. the delivery
//!   log's), `file_read` (repeated file reads, on the blocking pool, a few at a time),
//!   `name_marks` (names marked while work on them runs),
//!   `allocator` (jemalloc as the global allocator, feature `jemalloc`).
//!
//! # The path of one message
//!
//! A `worker::Worker` fetches the message from its endpoint's durable consumer,
//! `routing` names its event, `delivery` builds the body (`envelope`), signs it
//! (`signing`) and POSTs it, every resolved address checked by `ssrf`. A 2xx is
//! acked; a failure is NAKed with the delay for that attempt, so JetStream
//! redelivers it later; after `max_attempts` it goes to `store::dead_letters` and
//! only then is acked.

#[cfg(feature = "jemalloc")]
mod allocator;
pub mod app;
pub mod backoff;
pub mod cli;
pub mod config;
pub mod delivery;
pub mod envelope;
pub mod events;
pub mod fanout;
pub mod file_read;
pub mod http;
pub mod ingress;
pub mod metrics;
pub mod name_marks;
pub mod otel;
pub mod payload_filter;
pub mod pem;
pub mod rate_limit;
pub mod registrar;
pub mod retirement;
pub mod route_path;
pub mod routing;
pub mod secret;
pub mod settings;
pub mod signing;
pub mod ssrf;
pub mod store;
pub mod subject_template;
pub mod time;
pub mod worker;

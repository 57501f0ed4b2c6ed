//! natshook: a sidecar that consumes NATS JetStream subjects and delivers them as
//! signed webhooks. JetStream is the queue, the retry timer and the dead-letter store,
//! so natshook keeps no database of its own.
//!
//! The user-facing contract (CLI, config, request format, metrics) is in
//! `docs/CONTRACT.md`.

pub mod admin;
#[cfg(feature = "jemalloc")]
mod allocator;
pub mod breaker;
pub mod bridge;
pub mod cli;
pub mod config;
pub mod consumer;
pub mod dead_letter;
pub mod delivery;
pub mod delivery_log;
pub mod env_override;
pub mod envelope;
pub mod guard;
pub mod metrics;
pub mod routing;
pub mod secret;
pub mod server;
pub mod signing;

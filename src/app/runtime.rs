//! The tokio runtime `natshook run` works on, chosen from the config it serves.
//!
//! A delivery is a chain of hand-offs (the fetch loop, the delivery, hyper's
//! connection task, the ack through the NATS client's task). On two worker threads
//! most of those hand-offs cross threads: each wakes the other thread through the
//! kernel and moves shared reference counts between caches. Where every delivery
//! passes through one such chain, that costs more CPU than the second thread gives
//! back, so natshook runs on one thread, tokio's current-thread scheduler: one endpoint
//! from the file, or any number of file endpoints with `[delivery] fan_out`, whose
//! fan-out consumer and lane carry every endpoint that keeps up. Endpoints with
//! consumers of their own (several in the file without `fan_out`) fetch side by side,
//! and ingress routes serve requests side by side; a registry applies a change by
//! checking its records in bulk, which on one thread would hold up every delivery for
//! the length of the check (a reload with 10,000 records takes 0.2 s). Those run the
//! multi-threaded scheduler with one worker thread per CPU the process may use.
//! `TOKIO_WORKER_THREADS`, when set, chooses the multi-threaded scheduler with that
//! many threads, as it does for any tokio program.

use std::io;

use tokio::runtime::Runtime;

use crate::config::Config;

/// The most endpoints with consumers of their own a config may have and still run on
/// one thread. With one endpoint one thread spends 7-10 % less CPU per delivery than
/// two; with four it spends the same and drains 11-24 % slower. Through the fan-out's
/// lane, 50 or 1,000 busy endpoints on one thread spend 12-16 % less at the same rate
/// (docs/performance.md, Worker threads).
const ONE_THREAD_UP_TO: usize = 1;

/// The variable tokio reads for its worker threads; set, it decides.
const WORKER_THREADS_VAR: &str = "TOKIO_WORKER_THREADS";

/// Which tokio scheduler a command runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheduler {
    /// Every task on the thread that drives the runtime: no synchronised queues, no
    /// wake-ups of another thread. What natshook does there without yielding is short
    /// (log lines, the config file and `{ file }` secrets read every 2 s, a reload's
    /// comparison of the endpoints); parsing a reloaded config, encoding `/metrics` and
    /// the trace SDK's blocking shutdown run on the blocking pool.
    OneThread,
    /// tokio's multi-threaded scheduler: `TOKIO_WORKER_THREADS`, else one worker
    /// thread per CPU the process may use (a cgroup CPU limit included).
    MultiThread,
}

impl Scheduler {
    /// The scheduler for serving `config`, chosen once at start: a reload that adds
    /// endpoints, or switches `fan_out`, keeps it until the next start.
    pub fn for_config(config: &Config) -> Self {
        let env_decides = std::env::var_os(WORKER_THREADS_VAR).is_some();
        if !env_decides && delivers_through_one_chain(config) {
            Scheduler::OneThread
        } else {
            Scheduler::MultiThread
        }
    }

    pub fn build(self) -> io::Result<Runtime> {
        let mut builder = match self {
            Scheduler::OneThread => tokio::runtime::Builder::new_current_thread(),
            Scheduler::MultiThread => tokio::runtime::Builder::new_multi_thread(),
        };
        builder.enable_all().build()
    }
}

fn delivers_through_one_chain(config: &Config) -> bool {
    config.ingress.routes.is_empty()
        && config.registry.is_none()
        && (config.fan_out || config.endpoints.len() <= ONE_THREAD_UP_TO)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(endpoints: usize, extra: &str) -> Config {
        let mut text =
            String::from("[nats]\nstream = \"E\"\n[[events]]\nsubject = \"a\"\nevent = \"a\"\n");
        for i in 0..endpoints {
            text.push_str(&format!(
                "[[endpoints]]\nname = \"e{i}\"\nurl = \"https://example.com/\"\nevents = [\"*\"]\nsecret = {{ value = \"s\" }}\n"
            ));
        }
        text.push_str(extra);
        match Config::from_str(&text, "toml") {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        }
    }

    const REGISTRY: &str = "[registry]\nenabled = true\n";
    const FAN_OUT: &str = "[delivery]\nfan_out = true\n";
    const INGRESS: &str = "[[ingress.routes]]\npath = \"/in/x\"\nsubject = \"in.x\"\nverify = { scheme = \"none\" }\n";

    #[test]
    fn one_file_endpoint_runs_on_one_thread_and_more_on_the_default() {
        assert!(delivers_through_one_chain(&config(ONE_THREAD_UP_TO, "")));
        assert!(!delivers_through_one_chain(&config(
            ONE_THREAD_UP_TO + 1,
            ""
        )));
    }

    #[test]
    fn a_registry_or_ingress_routes_keep_the_default_threads() {
        assert!(!delivers_through_one_chain(&config(1, REGISTRY)));
        assert!(!delivers_through_one_chain(&config(1, INGRESS)));
    }

    #[test]
    fn fan_out_runs_on_one_thread_with_any_number_of_file_endpoints() {
        assert!(delivers_through_one_chain(&config(50, FAN_OUT)));
        let platform = format!("{FAN_OUT}{REGISTRY}");
        assert!(!delivers_through_one_chain(&config(3, &platform)));
        assert!(!delivers_through_one_chain(&config(
            3,
            &format!("{FAN_OUT}{INGRESS}")
        )));
    }
}

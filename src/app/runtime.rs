//! The tokio runtime `natshook run` works on, sized from the config it serves.
//!
//! One endpoint's deliveries are a chain of hand-offs (the fetch loop, the delivery,
//! hyper's connection task, the ack through the NATS client's task). On two worker
//! threads most of those hand-offs cross threads: each wakes the other thread through
//! the kernel and moves shared reference counts between caches. With a few endpoints
//! that is more CPU than the second thread gives back, so a sidecar serving a few
//! endpoints from its file runs one worker thread. A registry (endpoints by the
//! thousand, added at run time) or ingress routes (a server's work) keep one thread
//! per CPU the process may use, tokio's default. `TOKIO_WORKER_THREADS` overrides
//! both, as it does for any tokio program.

use std::io;

use tokio::runtime::Runtime;

use crate::config::Config;

/// The most endpoints a config may have and still run on one worker thread. With one
/// endpoint one thread delivers at the rate of two for ~18 % less CPU per delivery;
/// with 50 it is ~18 % slower (docs/performance.md, Worker threads).
pub const ONE_THREAD_UP_TO: usize = 4;

/// The variable tokio reads for its worker threads; set, it decides.
const WORKER_THREADS_VAR: &str = "TOKIO_WORKER_THREADS";

/// Worker threads for serving `config`: `Some(1)` for a few file endpoints, `None` for
/// tokio's default (the variable, else one per CPU the process may use, a cgroup CPU
/// limit included).
pub fn worker_threads(config: &Config) -> Option<usize> {
    let env_decides = std::env::var_os(WORKER_THREADS_VAR).is_some();
    (!env_decides && serves_few_endpoints(config)).then_some(1)
}

/// The config is sized once, at start: a reload that adds endpoints keeps the thread
/// count until the next start.
fn serves_few_endpoints(config: &Config) -> bool {
    config.registry.is_none()
        && config.ingress.routes.is_empty()
        && config.endpoints.len() <= ONE_THREAD_UP_TO
}

/// A multi-threaded runtime (also with one worker thread, so nothing natshook runs
/// depends on the count) with `worker_threads`, or tokio's default for `None`.
pub fn build(worker_threads: Option<usize>) -> io::Result<Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Some(n) = worker_threads {
        builder.worker_threads(n);
    }
    builder.build()
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

    #[test]
    fn a_few_file_endpoints_run_on_one_thread_and_more_on_the_default() {
        assert!(serves_few_endpoints(&config(1, "")));
        assert!(serves_few_endpoints(&config(ONE_THREAD_UP_TO, "")));
        assert!(!serves_few_endpoints(&config(ONE_THREAD_UP_TO + 1, "")));
    }

    #[test]
    fn a_registry_or_ingress_routes_keep_the_default_threads() {
        let registry = "[registry]\nenabled = true\n";
        assert!(!serves_few_endpoints(&config(1, registry)));
        let ingress = "[[ingress.routes]]\npath = \"/in/x\"\nsubject = \"in.x\"\nverify = { scheme = \"none\" }\n";
        assert!(!serves_few_endpoints(&config(1, ingress)));
    }
}

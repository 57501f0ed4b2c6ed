//! Reads of files that natshook repeats while it runs: the config file's digest and
//! `{ file }` secrets, every 2 s.

use tokio::runtime::{Handle, RuntimeFlavor};

/// Runs `read` where a hang stops no delivery. On the one-thread scheduler that thread
/// carries every delivery, so the read goes to the blocking pool. On the multi-threaded
/// scheduler it runs in place: a hung read holds one worker thread of several, while
/// thousands of endpoints polling their secret files would each take a blocking-pool
/// thread. `None` when the blocking task failed (it panicked or the runtime is
/// shutting down).
pub async fn repeated_read<T, F>(read: F) -> Option<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    match Handle::current().runtime_flavor() {
        RuntimeFlavor::CurrentThread => tokio::task::spawn_blocking(read).await.ok(),
        _ => Some(read()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn one_thread_reads_on_the_blocking_pool() {
        let here = std::thread::current().id();
        let there = repeated_read(move || std::thread::current().id()).await;
        assert!(there.is_some_and(|t| t != here));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn several_threads_read_in_place() {
        let here = std::thread::current().id();
        let there = repeated_read(move || std::thread::current().id()).await;
        assert_eq!(there, Some(here));
    }
}

//! Reads of files that natshook repeats while it runs: the config file's digest and
//! `{ file }` secrets, every 2 s.

use tokio::sync::Semaphore;

/// Repeated reads running at once, process-wide. Thousands of endpoints whose secret
/// files sit on one mount would otherwise each take a thread when it hangs.
const AT_ONCE: usize = 4;

static READS: Semaphore = Semaphore::const_new(AT_ONCE);

/// Runs `read` on tokio's blocking pool, at most [`AT_ONCE`] at a time. A read that
/// hangs (a stuck mount) holds a blocking-pool thread, not a runtime thread: on the
/// one-thread scheduler that thread carries every delivery, and on the multi-threaded
/// one every endpoint's poll would take a worker thread in turn. `None` when the read
/// task failed (it panicked, or the runtime is shutting down).
pub async fn repeated_read<T, F>(read: F) -> Option<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    // The permit goes with the read: a caller that stops waiting leaves it held until
    // the read returns, so hung reads never take more than AT_ONCE threads.
    let permit = READS.acquire().await.ok()?;
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        read()
    })
    .await
    .ok()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn a_hung_read_stops_neither_the_runtime_nor_other_reads() {
        let (release, hung) = std::sync::mpsc::channel::<()>();
        let stuck = tokio::spawn(repeated_read(move || hung.recv().is_ok()));
        // The runtime's one thread goes on: a timer fires, another read completes.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let here = std::thread::current().id();
        let there = repeated_read(move || std::thread::current().id()).await;
        assert!(there.is_some_and(|t| t != here));
        release.send(()).unwrap();
        assert_eq!(stuck.await.unwrap(), Some(true));
    }
}

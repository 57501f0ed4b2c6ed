//! Reads of files that natshook repeats while it runs: the config file's digest,
//! `{ file }` secrets and endpoint TLS files, every 2 s.

use tokio::sync::Semaphore;

/// What is read. Each has permits of its own, so secret files on a hung mount never
/// hold up the config file's reads (reloads), nor the other way round.
#[derive(Debug, Clone, Copy)]
pub enum Reading {
    /// The config file, by its one watcher.
    Config,
    /// `{ file }` secrets, by every endpoint and ingress route that has one, and the
    /// endpoints' TLS files.
    Secrets,
}

/// Secret reads running at once, process-wide. Thousands of endpoints whose secret
/// files sit on one mount would otherwise each take a thread when it hangs.
const SECRETS_AT_ONCE: usize = 4;

static CONFIG_READS: Semaphore = Semaphore::const_new(1);
static SECRET_READS: Semaphore = Semaphore::const_new(SECRETS_AT_ONCE);

/// Runs `read` on tokio's blocking pool, one config read and up to
/// [`SECRETS_AT_ONCE`] secret reads at a time. A read that hangs (a stuck mount) holds
/// a blocking-pool thread, not a runtime thread: on the one-thread scheduler that
/// thread carries every delivery, and on the multi-threaded one every endpoint's poll
/// would take a worker thread in turn. `None` when the read task failed (it panicked,
/// or the runtime is shutting down).
pub async fn repeated_read<T, F>(reading: Reading, read: F) -> Option<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let permits = match reading {
        Reading::Config => &CONFIG_READS,
        Reading::Secrets => &SECRET_READS,
    };
    // The permit goes with the read: a caller that stops waiting leaves it held until
    // the read returns, so hung reads never take more threads than there are permits.
    let permit = permits.acquire().await.ok()?;
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
        let stuck = tokio::spawn(repeated_read(Reading::Secrets, move || hung.recv().is_ok()));
        // The runtime's one thread goes on: a timer fires, another read completes.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let here = std::thread::current().id();
        let there = repeated_read(Reading::Secrets, move || std::thread::current().id()).await;
        assert!(there.is_some_and(|t| t != here));
        release.send(()).unwrap();
        assert_eq!(stuck.await.unwrap(), Some(true));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn hung_secret_reads_leave_the_config_read_its_own_permit() {
        let mut releases = Vec::new();
        let mut stuck = Vec::new();
        for _ in 0..SECRETS_AT_ONCE {
            let (release, hung) = std::sync::mpsc::channel::<()>();
            releases.push(release);
            stuck.push(tokio::spawn(repeated_read(Reading::Secrets, move || {
                hung.recv().is_ok()
            })));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        let config = tokio::time::timeout(
            Duration::from_secs(5),
            repeated_read(Reading::Config, || "read"),
        )
        .await;
        assert_eq!(config.ok().flatten(), Some("read"));
        for release in releases {
            release.send(()).unwrap();
        }
        for s in stuck {
            assert_eq!(s.await.unwrap(), Some(true));
        }
    }
}

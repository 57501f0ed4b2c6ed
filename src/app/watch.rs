//! The config watcher: SIGHUP or a change of the config file reloads it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use super::supervisor::Supervisor;
use crate::file_read::Reading;

/// How often the config file is checked for changes (besides SIGHUP).
const CONFIG_POLL: Duration = Duration::from_secs(2);

/// What tells a changed config file: its digest, not its text, which with thousands
/// of endpoints is megabytes kept for the life of the process.
fn fingerprint(path: &Path) -> Option<[u8; 32]> {
    std::fs::read(path)
        .ok()
        .map(|text| Sha256::digest(text).into())
}

async fn read_fingerprint(path: &Path) -> Option<Option<[u8; 32]>> {
    let path = path.to_path_buf();
    crate::file_read::repeated_read(Reading::Config, move || fingerprint(&path)).await
}

/// Watches for SIGHUP and config file changes and reloads.
pub(super) async fn watch_config(sup: Arc<Supervisor>, path: PathBuf, stop: CancellationToken) {
    let mut last = tokio::select! {
        _ = stop.cancelled() => return,
        read = read_fingerprint(&path) => read.flatten(),
    };
    #[cfg(unix)]
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    loop {
        #[cfg(unix)]
        let hup_recv = async {
            match hup.as_mut() {
                Some(h) => {
                    h.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let hup_recv = std::future::pending::<()>();
        let by_signal = tokio::select! {
            _ = stop.cancelled() => return,
            _ = hup_recv => true,
            _ = tokio::time::sleep(CONFIG_POLL) => false,
        };
        let read = tokio::select! {
            _ = stop.cancelled() => return,
            read = read_fingerprint(&path) => read,
        };
        let now = match read {
            Some(now) => now,
            // The read itself failed: no news about the file.
            None if by_signal => last,
            None => continue,
        };
        if by_signal || now != last {
            tracing::info!(path = %path.display(), trigger = if by_signal { "SIGHUP" } else { "file changed" }, "reloading config");
            last = now;
            sup.reload(&path).await;
        }
    }
}

//! The config watcher: SIGHUP or a change of the config file reloads it, and a file
//! that was refused is tried again until it is accepted.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use super::supervisor::{ReloadRefused, Supervisor};
use crate::file_read::Reading;

/// How often the config file is checked for changes (besides SIGHUP).
const CONFIG_POLL: Duration = Duration::from_secs(2);

/// How long a refused config file waits before it is tried again unchanged: what it
/// refers to may appear meanwhile (a Secret mounted after the ConfigMap that names
/// its file, a CA bundle written after the config).
const REFUSED_RETRY: Duration = Duration::from_secs(10);

/// What tells a changed config file: its digest, not its text, which with thousands
/// of endpoints is megabytes kept for the life of the process.
type Fingerprint = Option<[u8; 32]>;

fn fingerprint(path: &Path) -> Fingerprint {
    std::fs::read(path)
        .ok()
        .map(|text| Sha256::digest(text).into())
}

async fn read_fingerprint(path: &Path) -> Option<Fingerprint> {
    let path = path.to_path_buf();
    crate::file_read::repeated_read(Reading::Config, move || fingerprint(&path)).await
}

/// The config file `natshook run` serves, from the moment it is read.
pub struct WatchedConfig {
    path: PathBuf,
    /// The file's digest taken just *before* the config was loaded from it: an edit
    /// made while the process starts (NATS unreachable for minutes, say) then differs
    /// from it and is reloaded, rather than taken for what is running.
    loaded: Fingerprint,
    /// SIGHUPs from the start of the runtime on: without a handler a SIGHUP ends the
    /// process, and one sent while it starts is a reload asked for.
    #[cfg(unix)]
    hangups: Option<tokio::signal::unix::Signal>,
}

impl WatchedConfig {
    /// Call before loading the config from `path`.
    pub fn before_load(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
            loaded: fingerprint(path),
            #[cfg(unix)]
            hangups: None,
        }
    }

    /// Catches SIGHUP from now on; needs the runtime.
    pub(super) fn catching_hangups(mut self) -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            self.hangups = signal(SignalKind::hangup()).ok();
        }
        self
    }
}

/// Watches for SIGHUP and config file changes and reloads.
pub(super) async fn watch_config(
    sup: Arc<Supervisor>,
    file: WatchedConfig,
    stop: CancellationToken,
) {
    #[cfg(unix)]
    let mut hangups = file.hangups;
    let (path, mut last) = (file.path, file.loaded);
    let successful = sup.metrics().config_reload_successful().clone();
    successful.set(1);
    let mut refused: Option<(ReloadRefused, Instant)> = None;
    loop {
        #[cfg(unix)]
        let hup_recv = async {
            match hangups.as_mut() {
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
        let asked = by_signal || now != last;
        let retry = refused
            .as_ref()
            .is_some_and(|(_, at)| at.elapsed() >= REFUSED_RETRY);
        if !asked && !retry {
            continue;
        }
        if asked {
            tracing::info!(path = %path.display(), trigger = if by_signal { "SIGHUP" } else { "file changed" }, "reloading config");
        } else {
            tracing::debug!(path = %path.display(), "trying the refused config again");
        }
        last = now;
        match sup.reload(&path).await {
            Ok(()) => {
                successful.set(1);
                if !asked && refused.is_some() {
                    tracing::info!(path = %path.display(), "the config refused before is now applied");
                }
                refused = None;
            }
            Err(why) => {
                successful.set(0);
                // The same refusal of the same file again is not news.
                let news = asked || refused.as_ref().is_none_or(|(before, _)| *before != why);
                if news {
                    why.log();
                }
                refused = Some((why, Instant::now()));
            }
        }
    }
}

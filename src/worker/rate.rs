//! The endpoint's `rate_limit` as its worker applies it: changed in place by a reload
//! (no restart, so nothing fetched is redelivered), split between the replicas that
//! serve the endpoint, and taken token by token before each delivery.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::throttle::Throttle;
use super::Worker;
use crate::config::Rate;

/// The endpoint's throttle at `rate`, split between `replicas`, continuing from
/// `previous` when it replaces one.
pub(super) fn throttle(
    rate: Option<Rate>,
    replicas: usize,
    previous: Option<&Throttle>,
) -> Option<Arc<Throttle>> {
    let replicas = u32::try_from(replicas).unwrap_or(u32::MAX);
    rate.map(|r| {
        Arc::new(match previous {
            Some(p) => Throttle::following(r, replicas, p),
            None => Throttle::new(r, replicas),
        })
    })
}

impl Worker {
    /// The `rate_limit` in force.
    pub fn rate_limit(&self) -> Option<Rate> {
        self.throttle.load().as_ref().map(|t| t.rate())
    }

    /// Applies a new `rate_limit` without a restart: the next token comes at the new
    /// rate, and the consumer's window follows (the pull stream and the messages
    /// already fetched stay, so none of them is redelivered or costs an attempt). The
    /// window's update ends when `stopped` fires: a successor may be binding by then.
    pub fn set_rate_limit(self: &Arc<Self>, rate: Option<Rate>, stopped: CancellationToken) {
        let replicas = *self.shared.replicas.borrow();
        self.throttle
            .rcu(|t| throttle(rate, replicas, t.as_deref()));
        self.shared.throttles.send_modify(|()| {});
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let updated = tokio::select! {
                _ = stopped.cancelled() => return,
                updated = this.follow_window() => updated,
            };
            let rate_limit = rate.map(|r| r.to_string());
            match updated {
                Ok(()) => {
                    tracing::info!(endpoint = %this.endpoint.name, ?rate_limit, "rate limit changed")
                }
                Err(e) => {
                    tracing::warn!(endpoint = %this.endpoint.name, ?rate_limit, error = %e, "rate limit changed; the consumer window follows at the next bind")
                }
            }
        });
    }

    /// Takes this replica's share of the rate limit among `replicas` live ones; the
    /// next token comes a period of the new pace after the last. The consumer's
    /// window stays: it is the endpoint's, shared by all replicas.
    pub fn split_rate(&self, replicas: usize) {
        let n = replicas.max(1);
        let differs = |t: &Option<Arc<Throttle>>| {
            t.as_ref()
                .is_some_and(|current| current.replicas() as usize != n)
        };
        if !differs(&self.throttle.load()) {
            return;
        }
        let mut changed = false;
        self.throttle.rcu(|t| {
            changed = differs(t);
            if changed {
                throttle(t.as_ref().map(|c| c.rate()), n, t.as_deref())
            } else {
                t.clone()
            }
        });
        if changed {
            self.shared.throttles.send_modify(|()| {});
        }
    }

    /// The throttle at this replica's current share: a worker started while the
    /// count changed catches up before its next token.
    pub(super) fn current_throttle(&self) -> Option<Arc<Throttle>> {
        self.split_rate(*self.shared.replicas.borrow());
        self.throttle.load_full()
    }

    /// Waits (at most `max_wait`) for a token of the endpoint's rate limit, for a
    /// request outside the fetch loop (the admin API's test event); `Err` is how long
    /// until one is free.
    pub async fn take_token_within(&self, max_wait: Duration) -> Result<(), Duration> {
        match self.current_throttle() {
            Some(t) => t.take_within(max_wait).await,
            None => Ok(()),
        }
    }
}

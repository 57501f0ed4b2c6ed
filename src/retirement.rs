//! The end of a removed endpoint's effects on shared state. A worker's drain waits for
//! its own deliveries, but a part of it can still act afterwards (a delivery the
//! fan-out's lane started, the breaker answering it): once the endpoint is retired,
//! such late work neither brings its metric series back nor pauses an endpoint
//! created later under its name.

use std::sync::{Arc, RwLock};

/// Shared by the parts of one worker; cheap to clone.
#[derive(Clone, Default)]
pub struct Retirement(Arc<RwLock<bool>>);

impl Retirement {
    /// Runs `f` unless retired. [`Retirement::retire`] waits for a running `f`, so
    /// what `f` does lands before what follows the retirement.
    pub fn unless_retired<R>(&self, f: impl FnOnce() -> R) -> Option<R> {
        let retired = self.0.read().ok()?;
        (!*retired).then(f)
    }

    /// Retires, then runs `then` while no [`Retirement::unless_retired`] runs.
    pub fn retire(&self, then: impl FnOnce()) {
        let mut retired = match self.0.write() {
            Ok(r) => r,
            Err(poisoned) => poisoned.into_inner(),
        };
        *retired = true;
        then();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_runs_once_retired() {
        let r = Retirement::default();
        assert_eq!(r.unless_retired(|| 1), Some(1));
        let mut ran = false;
        r.clone().retire(|| ran = true);
        assert!(ran);
        assert_eq!(r.unless_retired(|| 1), None);
    }
}

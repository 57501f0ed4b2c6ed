//! Writes that name no revision (no `If-Match`): tried again over a concurrent
//! change, a bounded number of times.

use super::RegistrarError;
use crate::store::registry::RegistryError;

/// How many times a write without `If-Match` is tried again after another change
/// landed between its read and its write.
const STALE_RETRIES: usize = 8;

/// Runs `write` again while the record changed between its read and its write, when
/// the caller named no revision: a request without `If-Match` asks for the change
/// whatever the record is now, so a concurrent change is no reason to refuse it
/// (`412` is for a caller that named the revision it read).
pub(super) async fn retrying_stale<T, F, Fut>(
    if_match: Option<u64>,
    mut write: F,
) -> Result<T, RegistrarError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, RegistrarError>>,
{
    let mut left = STALE_RETRIES;
    loop {
        match write().await {
            Err(RegistrarError::Registry(RegistryError::Stale(_))) if if_match.is_none() => {
                if left == 0 {
                    return Err(RegistrarError::Contended);
                }
                left -= 1
            }
            done => return done,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_write_without_if_match_that_keeps_losing_is_contended_not_stale() {
        let stale = || async { Err::<(), _>(RegistryError::Stale(1).into()) };
        let calls = std::sync::atomic::AtomicUsize::new(0);
        let counted = || {
            calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            stale()
        };
        let lost = retrying_stale(None, counted).await;
        assert!(matches!(lost, Err(RegistrarError::Contended)), "{lost:?}");
        assert_eq!(calls.into_inner(), STALE_RETRIES + 1);
        let named = retrying_stale(Some(1), stale).await;
        assert!(
            matches!(
                named,
                Err(RegistrarError::Registry(RegistryError::Stale(1)))
            ),
            "{named:?}"
        );
    }
}

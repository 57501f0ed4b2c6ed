//! The source stream's consumers as listed with fan-out (at start, then by each
//! pending poll), which tell a fan-out endpoint whether it still has a former
//! consumer there: one from when it was `ordered`, or `fan_out` was off.
//!
//! Listings are numbered when their fetch begins, and a note is made under the
//! number begun last: only a listing begun after the note settles it, so a fetch
//! that was under way when a worker started (before its former consumer existed,
//! perhaps) cannot clear it. A note settled this way needs no one to visit every
//! worker after each listing; the worker asks when it reads its note.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;

/// Listings of the source stream's consumers, the last one recorded kept.
#[derive(Default)]
pub struct SourceListings {
    begun: AtomicU64,
    /// The number of the listing recorded last, read without the lock.
    recorded: AtomicU64,
    last: RwLock<HashSet<String>>,
}

/// What a note still says once a later listing is recorded.
#[derive(Debug, PartialEq, Eq)]
pub enum Settled {
    /// No listing begun after the note has been recorded.
    Open,
    /// The listing holds the consumer: noted again under that listing's number.
    Holds(u64),
    /// The listing does not hold it: the former consumer is gone.
    Gone,
}

impl SourceListings {
    /// Numbers a listing about to be fetched.
    pub fn begin(&self) -> u64 {
        self.begun.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// Keeps listing `id`'s consumer names, unless a later listing is kept already.
    pub fn record(&self, id: u64, names: HashSet<String>) {
        let mut last = self.last.write().unwrap_or_else(|p| p.into_inner());
        if id > self.recorded.load(Ordering::Acquire) {
            *last = names;
            self.recorded.store(id, Ordering::Release);
        }
    }

    /// The number to make a note under now.
    pub fn current(&self) -> u64 {
        self.begun.load(Ordering::Acquire)
    }

    /// Whether the last listing kept holds consumer `name`.
    pub fn holds(&self, name: &str) -> bool {
        self.last
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(name)
    }

    /// What a note of consumer `name` made under `noted` says now.
    pub fn settle(&self, noted: u64, name: &str) -> Settled {
        if self.recorded.load(Ordering::Acquire) <= noted {
            return Settled::Open;
        }
        let last = self.last.read().unwrap_or_else(|p| p.into_inner());
        let recorded = self.recorded.load(Ordering::Acquire);
        match last.contains(name) {
            true => Settled::Holds(recorded),
            false => Settled::Gone,
        }
    }
}

/// A fan-out endpoint's note that it still has a former consumer: the number of the
/// listing it was noted under, or [`FormerNote::NONE`].
pub struct FormerNote(AtomicU64);

impl FormerNote {
    const NONE: u64 = u64::MAX;

    /// A note for a new worker: set when the last listing holds its consumer.
    pub fn new(listings: &SourceListings, fans_out: bool, consumer: &str) -> Self {
        let note = Self(AtomicU64::new(Self::NONE));
        note.set(listings, fans_out && listings.holds(consumer));
        note
    }

    /// Notes that the consumer exists (`true`) or not, as of the listing begun last.
    pub fn set(&self, listings: &SourceListings, exists: bool) {
        let noted = match exists {
            true => listings.current(),
            false => Self::NONE,
        };
        self.0.store(noted, Ordering::Relaxed);
    }

    /// Whether the former consumer is there still, as the note and any listing begun
    /// after it say. A settled note is updated (unless noted again meanwhile), so the
    /// next read takes no lock.
    pub fn holds(&self, listings: &SourceListings, consumer: &str) -> bool {
        let noted = self.0.load(Ordering::Relaxed);
        if noted == Self::NONE {
            return false;
        }
        let (now, holds) = match listings.settle(noted, consumer) {
            Settled::Open => return true,
            Settled::Holds(listing) => (listing, true),
            Settled::Gone => (Self::NONE, false),
        };
        let _ = (self.0).compare_exchange(noted, now, Ordering::Relaxed, Ordering::Relaxed);
        holds
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> HashSet<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    /// A listing under way when the note is made does not settle it; the next one
    /// does, either way.
    #[test]
    fn only_a_listing_begun_after_a_note_settles_it() {
        let listings = SourceListings::default();
        assert_eq!(listings.settle(listings.current(), "c"), Settled::Open);
        let before = listings.begin();
        let noted = listings.current();
        listings.record(before, names(&[]));
        assert_eq!(listings.settle(noted, "c"), Settled::Open);
        let after = listings.begin();
        listings.record(after, names(&["c"]));
        assert_eq!(listings.settle(noted, "c"), Settled::Holds(after));
        assert_eq!(listings.settle(after, "c"), Settled::Open);
        let next = listings.begin();
        listings.record(next, names(&["d"]));
        assert_eq!(listings.settle(after, "c"), Settled::Gone);
        assert!(listings.holds("d") && !listings.holds("c"));
    }

    /// Listings fetched at once may finish out of order: the later one is kept.
    #[test]
    fn an_older_listing_finishing_last_is_not_kept() {
        let listings = SourceListings::default();
        let first = listings.begin();
        let second = listings.begin();
        listings.record(second, names(&["new"]));
        listings.record(first, names(&["old"]));
        assert!(listings.holds("new") && !listings.holds("old"));
    }

    /// A note holds until a listing begun after it lacks the consumer, then stays
    /// cleared; a note made while that listing was under way survives it.
    #[test]
    fn a_former_note_clears_on_the_first_later_listing_without_the_consumer() {
        let listings = SourceListings::default();
        let first = listings.begin();
        listings.record(first, names(&["c"]));
        let note = FormerNote::new(&listings, true, "c");
        assert!(note.holds(&listings, "c"));
        assert!(!FormerNote::new(&listings, false, "c").holds(&listings, "c"));
        let under_way = listings.begin();
        note.set(&listings, true);
        listings.record(under_way, names(&[]));
        assert!(
            note.holds(&listings, "c"),
            "a listing begun before the note"
        );
        let later = listings.begin();
        listings.record(later, names(&[]));
        assert!(!note.holds(&listings, "c"));
        let again = listings.begin();
        listings.record(again, names(&["c"]));
        assert!(!note.holds(&listings, "c"), "cleared until noted again");
    }
}

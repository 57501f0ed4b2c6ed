//! The process-wide bound on deliveries in flight (`[delivery] max_inflight`), shared
//! fairly between endpoints.
//!
//! Each endpoint's `concurrency` bounds that endpoint alone, so many endpoints could
//! together hold thousands of requests and their connections; the process-wide bound
//! caps the sum. A plain shared semaphore would let an endpoint whose receiver hangs
//! fill it and stall every healthy endpoint, so permits are shared: an endpoint that
//! holds or waits for permits (an *active* one) holds at most
//! `max(1, max_inflight / active endpoints)`. A hanging endpoint therefore keeps only its
//! share, each of its attempts bounded by its `timeout`, and a paused or idle endpoint
//! holds none and counts for nothing. A released permit goes to the first waiting
//! endpoint in arrival order that is below its share, so with more active endpoints
//! than permits they take turns.
//!
//! A claim that feeds many endpoints (the fan-out's lane) counts as as many endpoints
//! as it has deliveries under way for ([`Share::set_weight`]), and may hold that many
//! shares.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use prometheus::IntGauge;
use tokio::sync::Notify;

/// The bound every worker of the process shares.
#[derive(Clone)]
pub struct InflightLimit {
    inner: Arc<Inner>,
}

struct Inner {
    max: usize,
    state: Mutex<State>,
    /// `natshook_inflight_total`: permits in use.
    gauge: IntGauge,
}

#[derive(Default)]
struct State {
    used: usize,
    /// Endpoints that hold or wait for permits, each counted by its weight.
    active: usize,
    next_id: u64,
    shares: HashMap<u64, ShareState>,
    /// Waiting endpoints in arrival order; each at most once.
    waiters: VecDeque<u64>,
}

struct ShareState {
    /// Permits held, those granted but not yet picked up included.
    held: usize,
    waiting: bool,
    /// Permits handed to this endpoint while it waited, not yet picked up.
    granted: usize,
    notify: Arc<Notify>,
    /// The worker is gone; the entry goes once its last delivery ends.
    closed: bool,
    /// How many endpoints this claim counts as (1 but for the lane).
    weight: usize,
    /// Counts as active even while it neither holds nor waits (the lane: between two
    /// copies it is neither, and a permit freed then would go to the others).
    pinned: bool,
}

impl ShareState {
    fn active(&self) -> bool {
        self.held > 0 || self.waiting || self.pinned
    }
}

impl State {
    fn share(&self, max: usize) -> usize {
        (max / self.active.max(1)).max(1)
    }

    /// Applies `change` to one endpoint's state, keeping the count of active ones.
    fn update(&mut self, id: u64, change: impl FnOnce(&mut ShareState)) {
        let Some(s) = self.shares.get_mut(&id) else {
            return;
        };
        let before = s.active().then_some(s.weight);
        change(s);
        let after = s.active().then_some(s.weight);
        self.active = self.active - before.unwrap_or(0) + after.unwrap_or(0);
    }

    fn eligible(&self, id: u64, max: usize) -> bool {
        self.used < max
            && self
                .shares
                .get(&id)
                .is_some_and(|s| s.held < self.share(max) * s.weight)
    }

    /// Hands free permits to waiting endpoints below their share, first come first.
    fn dispatch(&mut self, max: usize) {
        let mut i = 0;
        while self.used < max && i < self.waiters.len() {
            let id = self.waiters[i];
            if !self.eligible(id, max) {
                i += 1;
                continue;
            }
            self.waiters.remove(i);
            self.used += 1;
            self.update(id, |s| {
                s.held += 1;
                s.granted += 1;
                s.waiting = false;
                s.notify.notify_one();
            });
        }
    }
}

impl InflightLimit {
    pub fn new(max: usize, gauge: IntGauge) -> Self {
        Self {
            inner: Arc::new(Inner {
                max,
                state: Mutex::new(State::default()),
                gauge,
            }),
        }
    }

    pub fn max(&self) -> usize {
        self.inner.max
    }

    /// One endpoint's claim on the bound, for as long as its worker runs.
    pub fn share(&self) -> Share {
        let mut state = self.inner.lock();
        let id = state.next_id;
        state.next_id += 1;
        let notify = Arc::new(Notify::new());
        state.shares.insert(
            id,
            ShareState {
                held: 0,
                waiting: false,
                granted: 0,
                notify: Arc::clone(&notify),
                closed: false,
                weight: 1,
                pinned: false,
            },
        );
        Share {
            inner: Arc::clone(&self.inner),
            id,
            notify,
        }
    }

    /// Permits in use, for tests and the admin view.
    pub fn in_use(&self) -> usize {
        self.inner.lock().used
    }
}

impl Inner {
    /// The state stays consistent at every step, so a poisoned lock is still usable.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One endpoint's access to the shared bound.
pub struct Share {
    inner: Arc<Inner>,
    id: u64,
    notify: Arc<Notify>,
}

impl Share {
    /// Waits for a permit within this endpoint's share. Cancel-safe: a permit handed
    /// over while the caller stopped waiting goes back to the others.
    pub async fn acquire(&self) -> Permit {
        {
            let mut state = self.inner.lock();
            if !state.waiters.contains(&self.id) && state.eligible(self.id, self.inner.max) {
                state.used += 1;
                state.update(self.id, |s| s.held += 1);
                self.inner.gauge.set(state.used as i64);
                return self.permit();
            }
            if !state.waiters.contains(&self.id) {
                state.waiters.push_back(self.id);
                state.update(self.id, |s| s.waiting = true);
                // This endpoint's arrival lowers every share, and the others' permits
                // come back as they finish; meanwhile free permits may already fit.
                state.dispatch(self.inner.max);
                self.inner.gauge.set(state.used as i64);
            }
        }
        let waiting = Waiting { share: self };
        loop {
            if waiting.take_granted() {
                std::mem::forget(waiting);
                return self.permit();
            }
            self.notify.notified().await;
        }
    }

    /// One endpoint's share of the bound now: `max(1, bound / active endpoints)`.
    pub fn fair_share(&self) -> usize {
        self.inner.lock().share(self.inner.max)
    }

    /// Counts this claim as active for as long as it lives, whether it holds permits
    /// or not.
    pub fn pin(&self) {
        let mut state = self.inner.lock();
        state.update(self.id, |s| s.pinned = true);
        state.dispatch(self.inner.max);
    }

    /// Counts this claim as `weight` endpoints (at least 1) from now on.
    pub fn set_weight(&self, weight: usize) {
        let mut state = self.inner.lock();
        state.update(self.id, |s| s.weight = weight.max(1));
        state.dispatch(self.inner.max);
        self.inner.gauge.set(state.used as i64);
    }

    fn permit(&self) -> Permit {
        Permit {
            inner: Arc::clone(&self.inner),
            id: self.id,
        }
    }

    fn leave_queue(&self) {
        let mut state = self.inner.lock();
        state.waiters.retain(|w| *w != self.id);
        let mut returned = 0;
        state.update(self.id, |s| {
            s.waiting = false;
            returned = s.granted;
            s.held -= s.granted;
            s.granted = 0;
        });
        state.used -= returned;
        state.dispatch(self.inner.max);
        self.inner.gauge.set(state.used as i64);
    }
}

impl Drop for Share {
    /// Deliveries still running keep their permits until they end.
    fn drop(&mut self) {
        self.leave_queue();
        let mut state = self.inner.lock();
        state.update(self.id, |s| s.pinned = false);
        if state.shares.get(&self.id).is_some_and(|s| s.held == 0) {
            state.shares.remove(&self.id);
        } else {
            state.update(self.id, |s| s.closed = true);
        }
    }
}

/// Removes an abandoned wait from the queue.
struct Waiting<'a> {
    share: &'a Share,
}

impl Waiting<'_> {
    fn take_granted(&self) -> bool {
        let mut state = self.share.inner.lock();
        match state.shares.get_mut(&self.share.id) {
            Some(s) if s.granted > 0 => {
                s.granted -= 1;
                true
            }
            _ => false,
        }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.share.leave_queue();
    }
}

/// One delivery's place in the bound, released when the delivery ends.
pub struct Permit {
    inner: Arc<Inner>,
    id: u64,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut state = self.inner.lock();
        if state.shares.contains_key(&self.id) {
            state.update(self.id, |s| s.held -= 1);
            state.used -= 1;
            if state
                .shares
                .get(&self.id)
                .is_some_and(|s| s.closed && s.held == 0)
            {
                state.shares.remove(&self.id);
            }
        }
        state.dispatch(self.inner.max);
        self.inner.gauge.set(state.used as i64);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn limit(max: usize) -> InflightLimit {
        InflightLimit::new(max, IntGauge::new("t", "t").expect("gauge"))
    }

    async fn try_acquire(share: &Share) -> Option<Permit> {
        tokio::time::timeout(Duration::from_millis(20), share.acquire())
            .await
            .ok()
    }

    #[tokio::test]
    async fn one_active_endpoint_gets_the_whole_bound() {
        let l = limit(4);
        let a = l.share();
        let _b = l.share(); // idle: counts for nothing
        let mut held = Vec::new();
        for _ in 0..4 {
            held.push(try_acquire(&a).await.expect("within the bound"));
        }
        assert!(try_acquire(&a).await.is_none(), "the bound is full");
        assert_eq!(l.in_use(), 4);
        drop(held);
        assert_eq!(l.in_use(), 0);
    }

    #[tokio::test]
    async fn a_newcomer_gets_the_permits_a_greedy_endpoint_releases() {
        let l = limit(4);
        let (a, b) = (l.share(), l.share());
        let mut a_held = Vec::new();
        for _ in 0..4 {
            a_held.push(try_acquire(&a).await.expect("alone"));
        }
        // b waits; from now on the share is 2 each, so a's freed permits go to b
        // until b has its 2, even while a asks again.
        let waiter = tokio::spawn(async move {
            let p1 = b.acquire().await;
            let p2 = b.acquire().await;
            (b, p1, p2)
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        a_held.pop();
        assert!(try_acquire(&a).await.is_none(), "a is over its share");
        a_held.pop();
        let (_b, _p1, _p2) = waiter.await.expect("b got two");
        assert_eq!(l.in_use(), 4);
        assert!(try_acquire(&a).await.is_none(), "a holds its share of 2");
    }

    #[tokio::test]
    async fn a_claim_of_weight_three_holds_three_shares() {
        let l = limit(8);
        let (lane, b) = (l.share(), l.share());
        lane.set_weight(3);
        let _b1 = try_acquire(&b).await.expect("b is below its share");
        // 4 endpoints' worth are active: 2 permits each, 6 for the lane.
        let mut held = Vec::new();
        for _ in 0..6 {
            held.push(try_acquire(&lane).await.expect("within the lane's shares"));
        }
        assert!(
            try_acquire(&lane).await.is_none(),
            "the lane holds its 3 shares"
        );
        let _b2 = try_acquire(&b).await.expect("b gets its second");
        lane.set_weight(1);
        held.truncate(1);
        assert!(
            try_acquire(&lane).await.is_some(),
            "weight 1: 4 each of 2 claims"
        );
    }

    #[tokio::test]
    async fn an_abandoned_wait_returns_its_permit_and_an_ended_worker_its_place() {
        let l = limit(1);
        let (a, b) = (l.share(), l.share());
        let p = try_acquire(&a).await.expect("free");
        assert!(try_acquire(&b).await.is_none());
        drop(p);
        assert_eq!(l.in_use(), 0, "the cancelled wait took nothing");
        let p = try_acquire(&b).await.expect("free again");
        drop(b); // the worker ends while its delivery runs
        assert_eq!(l.in_use(), 1);
        drop(p);
        assert_eq!(l.in_use(), 0);
        assert!(try_acquire(&a).await.is_some());
    }
}

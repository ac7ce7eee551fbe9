//! The recent event batches of a manager, for Watch streams: a watcher names the revision it has
//! and gets every later batch in order, then live ones, with nothing missed between the two
//! (subscribing and reading the backlog happen under one lock). A watcher whose revision fell out
//! of the window first gets the whole state.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;
use weft_state::{State, pb};

/// How many batches a manager keeps for watchers that reconnect.
pub const HISTORY_LEN: usize = 65_536;

/// Where a watcher starts.
#[derive(Debug)]
pub enum WatchStart {
    /// Its revision is in the window: these batches follow it.
    Batches(Vec<Arc<pb::EventBatch>>),
    /// Its revision is not: the state, then these batches.
    Snapshot(Arc<State>, Vec<Arc<pb::EventBatch>>),
}

struct Inner {
    /// Revision just before the first kept batch.
    base: u64,
    batches: VecDeque<Arc<pb::EventBatch>>,
    /// The state as last published by the driver.
    published: Arc<State>,
}

/// Shared between the raft driver (writer) and Watch handlers (readers).
pub struct History {
    inner: Mutex<Inner>,
    live: broadcast::Sender<Arc<pb::EventBatch>>,
}

impl History {
    /// A history that starts at `state`.
    pub fn new(state: Arc<State>) -> History {
        let (live, _) = broadcast::channel(4096);
        History {
            inner: Mutex::new(Inner { base: state.revision(), batches: VecDeque::new(), published: state }),
            live,
        }
    }

    /// The state was replaced wholesale (a snapshot was installed): the window starts over.
    pub(crate) fn reset(&self, state: Arc<State>) {
        let mut inner = self.inner.lock().unwrap();
        inner.base = state.revision();
        inner.batches.clear();
        inner.published = state;
    }

    /// Records the batch of the next revision and hands it to live watchers.
    pub(crate) fn push(&self, batch: pb::EventBatch) {
        let batch = Arc::new(batch);
        let mut inner = self.inner.lock().unwrap();
        inner.batches.push_back(batch.clone());
        if inner.batches.len() > HISTORY_LEN
            && let Some(old) = inner.batches.pop_front()
        {
            inner.base = old.revision;
        }
        let _ = self.live.send(batch);
    }

    /// Records the state the driver just published.
    pub(crate) fn publish(&self, state: Arc<State>) {
        self.inner.lock().unwrap().published = state;
    }

    /// Where a watcher that has `from` starts, and the receiver of every batch after those.
    pub fn subscribe(&self, from: u64) -> (WatchStart, broadcast::Receiver<Arc<pb::EventBatch>>) {
        let inner = self.inner.lock().unwrap();
        let rx = self.live.subscribe();
        let last = inner.batches.back().map_or(inner.base, |b| b.revision);
        let start = if from >= inner.base && from <= last {
            WatchStart::Batches(inner.batches.iter().filter(|b| b.revision > from).cloned().collect())
        } else {
            let state = inner.published.clone();
            let after = state.revision();
            let rest = inner.batches.iter().filter(|b| b.revision > after).cloned().collect();
            WatchStart::Snapshot(state, rest)
        };
        (start, rx)
    }
}

//! raft-rs storage on raft-engine: entries, hard state, conf state and the last snapshot, made
//! durable (fsync) in one write batch per ready.

use std::path::Path;
use std::sync::{Arc, RwLock};

use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, StorageError};
use raft_engine::{Config, Engine, LogBatch, MessageExt};

use crate::RaftError;

/// The single raft group weft runs.
const REGION: u64 = 1;
const HARD_STATE: &[u8] = b"hard_state";
const CONF_STATE: &[u8] = b"conf_state";
const SNAPSHOT: &[u8] = b"snapshot";
/// Index of the log entry the stored conf state reflects: conf changes up to it are not applied
/// again when committed entries are replayed after a restart.
const CONF_INDEX: &[u8] = b"conf_index";

#[derive(Clone)]
struct EntryExt;

impl MessageExt for EntryExt {
    type Entry = Entry;

    fn index(e: &Entry) -> u64 {
        e.index
    }
}

/// Durable raft storage. Cheap to clone; clones share the engine.
#[derive(Clone)]
pub struct EngineStorage {
    engine: Arc<Engine>,
    cache: Arc<RwLock<Cached>>,
}

#[derive(Default)]
struct Cached {
    hard: HardState,
    conf: ConfState,
    conf_index: u64,
    snapshot: Snapshot,
}

/// Whether a write of `entries` and `hard` (after `stored`) must reach the disk before raft may
/// act on it: entries are acknowledged to the leader, and a term or vote must never be forgotten
/// (a node could vote twice in a term). The commit index alone may lag on disk.
pub(crate) fn must_sync(stored: &HardState, entries: &[Entry], hard: Option<&HardState>) -> bool {
    !entries.is_empty() || hard.is_some_and(|h| h.term != stored.term || h.vote != stored.vote)
}

fn engine_err(e: raft_engine::Error) -> raft::Error {
    raft::Error::Store(StorageError::Other(Box::new(e)))
}

impl EngineStorage {
    /// Opens (or creates) the log under `dir`.
    pub fn open(dir: &Path) -> Result<EngineStorage, RaftError> {
        std::fs::create_dir_all(dir).map_err(|e| RaftError::Storage(format!("{}: {e}", dir.display())))?;
        let cfg = Config { dir: dir.display().to_string(), ..Config::default() };
        let engine = Engine::open(cfg).map_err(|e| RaftError::Storage(e.to_string()))?;
        let hard = engine
            .get_message::<HardState>(REGION, HARD_STATE)
            .map_err(|e| RaftError::Storage(e.to_string()))?
            .unwrap_or_default();
        let conf = engine
            .get_message::<ConfState>(REGION, CONF_STATE)
            .map_err(|e| RaftError::Storage(e.to_string()))?
            .unwrap_or_default();
        let snapshot = engine
            .get_message::<Snapshot>(REGION, SNAPSHOT)
            .map_err(|e| RaftError::Storage(e.to_string()))?
            .unwrap_or_default();
        let conf_index = engine
            .get(REGION, CONF_INDEX)
            .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
            .map_or(0, u64::from_be_bytes);
        Ok(EngineStorage {
            engine: Arc::new(engine),
            cache: Arc::new(RwLock::new(Cached { hard, conf, conf_index, snapshot })),
        })
    }

    /// Whether the log holds any state (a node that has run before).
    pub fn is_initialized(&self) -> bool {
        let c = self.cache.read().expect("lock");
        !c.conf.voters.is_empty() || c.snapshot.get_metadata().index > 0
    }

    /// Index of the entry the stored conf state reflects.
    pub fn conf_index(&self) -> u64 {
        self.cache.read().expect("lock").conf_index
    }

    /// Persists the conf state produced by the conf change at `index` (fsynced).
    pub fn persist_conf(&self, conf: &ConfState, index: u64) -> Result<(), RaftError> {
        let err = |e: raft_engine::Error| RaftError::Storage(e.to_string());
        let mut batch = LogBatch::default();
        batch.put_message(REGION, CONF_STATE.to_vec(), conf).map_err(err)?;
        batch.put(REGION, CONF_INDEX.to_vec(), index.to_be_bytes().to_vec()).map_err(err)?;
        self.engine.write(&mut batch, true).map_err(err)?;
        let mut cache = self.cache.write().expect("lock");
        cache.conf = conf.clone();
        cache.conf_index = index;
        Ok(())
    }

    /// The last snapshot (its data is a weft-state snapshot).
    pub fn snapshot_data(&self) -> Snapshot {
        self.cache.read().expect("lock").snapshot.clone()
    }

    /// Persists, in one batch, new entries (overwriting a conflicting tail) and the hard state.
    /// The batch is fsynced when raft's safety needs it (etcd's rule): new entries, or a new term
    /// or vote. A hard state that only moves the commit index is written without fsync: a commit
    /// index lost in a crash is learned again from the leader, and the next synced write of the
    /// same log makes it durable anyway. Returns whether it synced.
    pub fn persist(&self, entries: &[Entry], hard: Option<&HardState>) -> Result<bool, RaftError> {
        let mut batch = LogBatch::default();
        let err = |e: raft_engine::Error| RaftError::Storage(e.to_string());
        if !entries.is_empty() {
            batch.add_entries::<EntryExt>(REGION, entries).map_err(err)?;
        }
        if let Some(h) = hard {
            batch.put_message(REGION, HARD_STATE.to_vec(), h).map_err(err)?;
        }
        let sync = {
            let cached = &self.cache.read().expect("lock").hard;
            must_sync(cached, entries, hard)
        };
        if !batch.is_empty() {
            self.engine.write(&mut batch, sync).map_err(err)?;
        }
        if let Some(h) = hard {
            self.cache.write().expect("lock").hard = h.clone();
        }
        Ok(sync)
    }

    /// Installs a snapshot: records it, its conf state and a hard state at least as new, and
    /// drops the log it covers.
    pub fn install_snapshot(&self, snapshot: &Snapshot) -> Result<(), RaftError> {
        let meta = snapshot.get_metadata();
        let mut batch = LogBatch::default();
        let err = |e: raft_engine::Error| RaftError::Storage(e.to_string());
        let mut hard = self.cache.read().expect("lock").hard.clone();
        hard.term = hard.term.max(meta.term);
        hard.commit = hard.commit.max(meta.index);
        batch.put_message(REGION, SNAPSHOT.to_vec(), snapshot).map_err(err)?;
        batch.put_message(REGION, CONF_STATE.to_vec(), meta.get_conf_state()).map_err(err)?;
        batch.put(REGION, CONF_INDEX.to_vec(), meta.index.to_be_bytes().to_vec()).map_err(err)?;
        batch.put_message(REGION, HARD_STATE.to_vec(), &hard).map_err(err)?;
        self.engine.write(&mut batch, true).map_err(err)?;
        self.engine.compact_to(REGION, meta.index + 1);
        let mut cache = self.cache.write().expect("lock");
        cache.snapshot = snapshot.clone();
        cache.conf = meta.get_conf_state().clone();
        cache.conf_index = cache.conf_index.max(meta.index);
        cache.hard = hard;
        Ok(())
    }

    /// Records a snapshot the local node took of its own state at `index`, and compacts the log
    /// up to it.
    pub fn compact_with(&self, snapshot: &Snapshot) -> Result<(), RaftError> {
        let mut batch = LogBatch::default();
        batch
            .put_message(REGION, SNAPSHOT.to_vec(), snapshot)
            .map_err(|e| RaftError::Storage(e.to_string()))?;
        self.engine.write(&mut batch, true).map_err(|e| RaftError::Storage(e.to_string()))?;
        self.engine.compact_to(REGION, snapshot.get_metadata().index + 1);
        self.cache.write().expect("lock").snapshot = snapshot.clone();
        Ok(())
    }

    fn snap_index(&self) -> (u64, u64) {
        let c = self.cache.read().expect("lock");
        (c.snapshot.get_metadata().index, c.snapshot.get_metadata().term)
    }
}

impl raft::Storage for EngineStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        let c = self.cache.read().expect("lock");
        Ok(RaftState { hard_state: c.hard.clone(), conf_state: c.conf.clone() })
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        let first = self.first_index()?;
        if low < first {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last_index()? + 1 {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let mut out = Vec::with_capacity((high - low) as usize);
        let max = max_size.into().map(|m| m as usize);
        self.engine.fetch_entries_to::<EntryExt>(REGION, low, high, max, &mut out).map_err(engine_err)?;
        if out.is_empty() && low < high {
            // raft-rs wants at least one entry even when it exceeds max_size.
            self.engine
                .fetch_entries_to::<EntryExt>(REGION, low, low + 1, None, &mut out)
                .map_err(engine_err)?;
        }
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        let (snap_index, snap_term) = self.snap_index();
        if idx == snap_index {
            return Ok(snap_term);
        }
        if idx < self.first_index()? {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if idx > self.last_index()? {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        match self.engine.get_entry::<EntryExt>(REGION, idx).map_err(engine_err)? {
            Some(e) => Ok(e.term),
            None => Err(raft::Error::Store(StorageError::Unavailable)),
        }
    }

    fn first_index(&self) -> raft::Result<u64> {
        let (snap_index, _) = self.snap_index();
        Ok(self.engine.first_index(REGION).map_or(snap_index + 1, |f| f.max(snap_index + 1)))
    }

    fn last_index(&self) -> raft::Result<u64> {
        let (snap_index, _) = self.snap_index();
        Ok(self.engine.last_index(REGION).map_or(snap_index, |l| l.max(snap_index)))
    }

    fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<Snapshot> {
        // A peer refuses a snapshot whose configuration does not name it, and the leader would
        // then wait for it forever; so such a snapshot, or one older than asked for, is reported
        // as not ready yet (raft-rs retries) until the driver has taken a newer one.
        let snapshot = self.cache.read().expect("lock").snapshot.clone();
        let conf = snapshot.get_metadata().get_conf_state();
        let names_peer = conf.voters.contains(&to) || conf.learners.contains(&to);
        if !names_peer || snapshot.get_metadata().index < request_index {
            return Err(raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable));
        }
        Ok(snapshot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hard(term: u64, vote: u64, commit: u64) -> HardState {
        HardState { term, vote, commit, ..Default::default() }
    }

    fn entry(index: u64, term: u64) -> Entry {
        Entry { index, term, data: vec![1, 2, 3].into(), ..Default::default() }
    }

    #[test]
    fn only_entries_terms_and_votes_are_synced() {
        let stored = hard(3, 1, 10);
        assert!(!must_sync(&stored, &[], None));
        assert!(!must_sync(&stored, &[], Some(&hard(3, 1, 12))), "a commit index alone lags on disk");
        assert!(must_sync(&stored, &[], Some(&hard(4, 1, 10))), "a new term");
        assert!(must_sync(&stored, &[], Some(&hard(3, 2, 10))), "a new vote");
        assert!(must_sync(&stored, &[entry(11, 3)], None), "entries are acknowledged to the leader");
    }

    #[test]
    fn a_commit_written_without_sync_is_read_back_after_reopening() {
        let dir = std::env::temp_dir().join(format!("weft-raft-storage-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        {
            let storage = EngineStorage::open(&dir).unwrap();
            assert!(storage.persist(&[entry(1, 1), entry(2, 1)], Some(&hard(1, 1, 0))).unwrap());
            assert!(!storage.persist(&[], Some(&hard(1, 1, 2))).unwrap());
        }
        let storage = EngineStorage::open(&dir).unwrap();
        let state = raft::Storage::initial_state(&storage).unwrap();
        assert_eq!((state.hard_state.term, state.hard_state.vote, state.hard_state.commit), (1, 1, 2));
        assert_eq!(raft::Storage::last_index(&storage).unwrap(), 2);
        drop(storage);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

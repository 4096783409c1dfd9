//! The state of a Paxos acceptor, kept in memory as omnipaxos's `Storage` and readable as a
//! whole, so that a node that lost its memory can rebuild it from its peers.
//!
//! Two users share it: `replicate` in the standard library (a replicated agent's log) and the
//! replicated controller ([`crate::controller_group`]). Both recover the same way, told in
//! docs/replication.md: a restarted node takes no part in consensus until it holds the states
//! of f+1 peers other than itself, and adopts [`PaxosState::merge`] of them.

use std::sync::{Arc, Mutex, MutexGuard};

use omnipaxos::ballot_leader_election::Ballot;
use omnipaxos::storage::{Entry, NoSnapshot, StopSign, Storage, StorageOp, StorageResult};
use serde::{Deserialize, Serialize};

/// Everything a Paxos acceptor must remember: its promise, the round of its last acceptance, its
/// log and how much of it is decided. This is what a recovering replica rebuilds from its peers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaxosState<T> {
    /// The highest ballot promised.
    pub promise: Option<Ballot>,
    /// The ballot in which the log was last accepted.
    pub accepted_round: Option<Ballot>,
    /// The accepted log, from index `trimmed`.
    pub log: Vec<T>,
    /// How many entries (from 0) are decided.
    pub decided: usize,
    /// Entries before this index were trimmed (never, today: the log is not compacted).
    pub trimmed: usize,
    /// The compacted index omnipaxos keeps.
    pub compacted: usize,
    /// A reconfiguration stop sign (unused: replicate does not reconfigure).
    pub stopsign: Option<StopSign>,
}

impl<T> Default for PaxosState<T> {
    fn default() -> Self {
        PaxosState {
            promise: None,
            accepted_round: None,
            log: Vec::new(),
            decided: 0,
            trimmed: 0,
            compacted: 0,
            stopsign: None,
        }
    }
}

impl<T: Clone> PaxosState<T> {
    /// Whether this acceptor has never accepted anything (a promise alone does not count: a
    /// lone replica promises its own ballot before it has anyone to talk to).
    pub fn has_history(&self) -> bool {
        self.accepted_round.is_some_and(|b| b != Ballot::default())
            || !self.log.is_empty()
            || self.decided > 0
            || self.trimmed > 0
    }

    /// The state a recovering acceptor may adopt from the states of a read quorum of its peers
    /// (see docs/replication.md): the highest promise, and the log of the peer that accepted in
    /// the highest round (the longest among those), decided up to the highest decided index it
    /// covers. Exactly what a Paxos leader's prepare phase would compute from these promises.
    pub fn merge<'a>(states: impl IntoIterator<Item = &'a PaxosState<T>>) -> PaxosState<T>
    where
        T: 'a,
    {
        let states: Vec<&PaxosState<T>> = states.into_iter().collect();
        let promise = states.iter().filter_map(|s| s.promise).max();
        let decided = states.iter().map(|s| s.decided).max().unwrap_or(0);
        let best = states
            .iter()
            .max_by_key(|s| {
                (
                    s.accepted_round.unwrap_or_default(),
                    s.trimmed + s.log.len(),
                )
            })
            .copied()
            .cloned()
            .unwrap_or_default();
        let len = best.trimmed + best.log.len();
        PaxosState {
            promise,
            decided: decided.min(len),
            ..best
        }
    }
}

/// A `Storage` for omnipaxos whose state the proxy can also read.
#[derive(Debug, Clone)]
pub struct SharedStore<T>(Arc<Mutex<PaxosState<T>>>);

impl<T: Clone> SharedStore<T> {
    /// A store holding `state`.
    pub fn new(state: PaxosState<T>) -> Self {
        SharedStore(Arc::new(Mutex::new(state)))
    }

    fn lock(&self) -> MutexGuard<'_, PaxosState<T>> {
        // Only the proxy's task touches the store, one call at a time: a poisoned lock means a
        // panic in the middle of a write, and the agent is stopped anyway.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A copy of the whole state.
    pub fn state(&self) -> PaxosState<T> {
        self.lock().clone()
    }

    /// The number of entries in the log (as if never trimmed).
    pub fn log_len(&self) -> usize {
        let s = self.lock();
        s.trimmed + s.log.len()
    }
}

impl<T> Storage<T> for SharedStore<T>
where
    T: Entry<Snapshot = NoSnapshot>,
{
    fn write_atomically(&mut self, ops: Vec<StorageOp<T>>) -> StorageResult<()> {
        // In memory every operation succeeds, so doing them in order is atomic.
        for op in ops {
            match op {
                StorageOp::AppendEntry(e) => self.append_entry(e)?,
                StorageOp::AppendEntries(es) => self.append_entries(es)?,
                StorageOp::AppendOnPrefix(from, es) => self.append_on_prefix(from, es)?,
                StorageOp::SetPromise(b) => self.set_promise(b)?,
                StorageOp::SetDecidedIndex(i) => self.set_decided_idx(i)?,
                StorageOp::SetAcceptedRound(b) => self.set_accepted_round(b)?,
                StorageOp::SetCompactedIdx(i) => self.set_compacted_idx(i)?,
                StorageOp::Trim(i) => self.trim(i)?,
                StorageOp::SetStopsign(s) => self.set_stopsign(s)?,
                StorageOp::SetSnapshot(s) => self.set_snapshot(s)?,
            }
        }
        Ok(())
    }

    fn append_entry(&mut self, entry: T) -> StorageResult<()> {
        self.lock().log.push(entry);
        Ok(())
    }

    fn append_entries(&mut self, mut entries: Vec<T>) -> StorageResult<()> {
        self.lock().log.append(&mut entries);
        Ok(())
    }

    fn append_on_prefix(&mut self, from_idx: usize, mut entries: Vec<T>) -> StorageResult<()> {
        let mut s = self.lock();
        let keep = from_idx.saturating_sub(s.trimmed);
        s.log.truncate(keep);
        s.log.append(&mut entries);
        Ok(())
    }

    fn set_promise(&mut self, n_prom: Ballot) -> StorageResult<()> {
        self.lock().promise = Some(n_prom);
        Ok(())
    }

    fn set_decided_idx(&mut self, ld: usize) -> StorageResult<()> {
        self.lock().decided = ld;
        Ok(())
    }

    fn get_decided_idx(&self) -> StorageResult<usize> {
        Ok(self.lock().decided)
    }

    fn set_accepted_round(&mut self, na: Ballot) -> StorageResult<()> {
        self.lock().accepted_round = Some(na);
        Ok(())
    }

    fn get_accepted_round(&self) -> StorageResult<Option<Ballot>> {
        Ok(self.lock().accepted_round)
    }

    fn get_entries(&self, from: usize, to: usize) -> StorageResult<Vec<T>> {
        let s = self.lock();
        let (from, to) = (from.saturating_sub(s.trimmed), to.saturating_sub(s.trimmed));
        Ok(s.log.get(from..to).map(<[T]>::to_vec).unwrap_or_default())
    }

    fn get_log_len(&self) -> StorageResult<usize> {
        Ok(self.lock().log.len())
    }

    fn get_suffix(&self, from: usize) -> StorageResult<Vec<T>> {
        let s = self.lock();
        let from = from.saturating_sub(s.trimmed);
        Ok(s.log.get(from..).map(<[T]>::to_vec).unwrap_or_default())
    }

    fn get_promise(&self) -> StorageResult<Option<Ballot>> {
        Ok(self.lock().promise)
    }

    fn set_stopsign(&mut self, s: Option<StopSign>) -> StorageResult<()> {
        self.lock().stopsign = s;
        Ok(())
    }

    fn get_stopsign(&self) -> StorageResult<Option<StopSign>> {
        Ok(self.lock().stopsign.clone())
    }

    fn trim(&mut self, idx: usize) -> StorageResult<()> {
        let mut s = self.lock();
        let n = idx.saturating_sub(s.trimmed).min(s.log.len());
        s.log.drain(..n);
        s.trimmed = idx.max(s.trimmed);
        Ok(())
    }

    fn set_compacted_idx(&mut self, idx: usize) -> StorageResult<()> {
        self.lock().compacted = idx;
        Ok(())
    }

    fn get_compacted_idx(&self) -> StorageResult<usize> {
        Ok(self.lock().compacted)
    }

    fn set_snapshot(&mut self, _snapshot: Option<NoSnapshot>) -> StorageResult<()> {
        Ok(())
    }

    fn get_snapshot(&self) -> StorageResult<Option<NoSnapshot>> {
        Ok(None)
    }
}

//! The state of a Paxos acceptor, kept in memory as omnipaxos's `Storage` and readable as a
//! whole, so that a node that lost its memory can rebuild it from its peers.
//!
//! Two users share it: `replicate` in the standard library (a replicated agent's log) and the
//! replicated controller (`controller_group`). Both recover the same way, told in
//! docs/replication.md: a restarted node takes no part in consensus until it holds the states
//! of f+1 peers other than itself, and adopts [`PaxosState::merge`] of them.
//!
//! Unless it kept its state on disk. A [`SharedStore`] told to [`SharedStore::journal`]
//! records every change omnipaxos makes as a [`Record`]; [`SharedStore::flush`] appends them to
//! the agent's [`DurableLog`] and syncs it, and the owner calls it after every omnipaxos step,
//! before it sends the messages of that step (a promise, an acceptance, a decision must be on
//! disk before anyone hears of it). [`SharedStore::load`] replays the log into the state the
//! node had when it last flushed: with it, the node rejoins through omnipaxos's own
//! fail-recovery, with no question to its peers.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use omnipaxos::ballot_leader_election::Ballot;
use omnipaxos::storage::{Entry, NoSnapshot, StopSign, Storage, StorageOp, StorageResult};
use omnipaxos::{ClusterConfig, OmniPaxos, OmniPaxosConfig, ServerConfig};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::durable::DurableLog;
use crate::error::Error;

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

/// One change to an acceptor's state, as its durable log holds it (postcard-encoded, one per
/// log record). Only changes are appended; the whole state is written when the log is
/// compacted, or when the node starts keeping a log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Record<T> {
    /// The whole state (the first record of a compacted log).
    State(PaxosState<T>),
    /// The log from this index (as if never trimmed) is replaced by these entries.
    Append(usize, Vec<T>),
    /// A new promise.
    Promise(Ballot),
    /// A new accepted round.
    AcceptedRound(Ballot),
    /// A new decided index.
    Decided(usize),
    /// Entries before this index were trimmed.
    Trim(usize),
    /// A new compacted index.
    Compacted(usize),
    /// A new stop sign.
    StopSign(Option<StopSign>),
}

impl<T: Clone> PaxosState<T> {
    /// Applies one change, as [`SharedStore`] made it.
    pub fn apply(&mut self, record: Record<T>) {
        match record {
            Record::State(s) => *self = s,
            Record::Append(from, mut entries) => {
                let keep = from.saturating_sub(self.trimmed);
                self.log.truncate(keep);
                self.log.append(&mut entries);
            }
            Record::Promise(b) => self.promise = Some(b),
            Record::AcceptedRound(b) => self.accepted_round = Some(b),
            Record::Decided(i) => self.decided = i,
            Record::Trim(idx) => {
                let n = idx.saturating_sub(self.trimmed).min(self.log.len());
                self.log.drain(..n);
                self.trimmed = idx.max(self.trimmed);
            }
            Record::Compacted(i) => self.compacted = i,
            Record::StopSign(s) => self.stopsign = s,
        }
    }
}

/// What a [`SharedStore`] holds: the state, and the changes not yet flushed to its log.
#[derive(Debug)]
struct Inner<T> {
    state: PaxosState<T>,
    /// `None`: memory only. `Some`: changes since the last flush, oldest first.
    journal: Option<Vec<Record<T>>>,
}

/// A `Storage` for omnipaxos whose state the proxy can also read, kept in memory and, if
/// journaled, in a durable log (see the module docs).
#[derive(Debug, Clone)]
pub struct SharedStore<T>(Arc<Mutex<Inner<T>>>);

impl<T: Clone> SharedStore<T> {
    /// A store holding `state`, in memory only.
    pub fn new(state: PaxosState<T>) -> Self {
        SharedStore(Arc::new(Mutex::new(Inner {
            state,
            journal: None,
        })))
    }

    /// Starts journaling the changes for [`SharedStore::flush`]. `whole`: the log does not hold
    /// this state yet (a new log, or a state recovered from peers or from a snapshot), so the
    /// next flush rewrites the log with the whole state; otherwise the log holds it already
    /// (it was just loaded from there) and only changes are appended.
    pub fn journal(&self, whole: bool) {
        let mut inner = self.lock();
        let journal = if whole {
            vec![Record::State(inner.state.clone())]
        } else {
            Vec::new()
        };
        inner.journal = Some(journal);
    }

    fn lock(&self) -> MutexGuard<'_, Inner<T>> {
        // Only the proxy's task touches the store, one call at a time: a poisoned lock means a
        // panic in the middle of a write, and the agent is stopped anyway.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Changes the state and, if journaled, records the change.
    fn change(&self, record: Record<T>) {
        let mut inner = self.lock();
        if let Some(journal) = &mut inner.journal {
            journal.push(record.clone());
        }
        inner.state.apply(record);
    }

    /// A copy of the whole state.
    pub fn state(&self) -> PaxosState<T> {
        self.lock().state.clone()
    }

    /// The number of entries in the log (as if never trimmed).
    pub fn log_len(&self) -> usize {
        let s = self.lock();
        s.state.trimmed + s.state.log.len()
    }

    /// Whether changes wait for [`SharedStore::flush`].
    pub fn dirty(&self) -> bool {
        self.lock().journal.as_ref().is_some_and(|j| !j.is_empty())
    }

    /// Writes the changes made since the last flush to `log` and syncs it; rewrites the log as
    /// one record of the whole state when it has grown enough. Nothing to do for a store that
    /// is not journaled, or has no changes. On an error the changes stay journaled, and the
    /// caller must not send what depends on them.
    pub fn flush(&self, log: &mut DurableLog) -> Result<(), Error>
    where
        T: Serialize,
    {
        let mut inner = self.lock();
        let Some(journal) = &mut inner.journal else {
            return Ok(());
        };
        if journal.is_empty() {
            return Ok(());
        }
        let whole = matches!(journal.first(), Some(Record::State(_)));
        if whole || log.should_compact() {
            let bytes = encode(&Record::State(inner.state.clone()))?;
            log.rewrite([bytes.as_slice()])?;
        } else {
            for record in journal.iter() {
                log.append(&encode(record)?)?;
            }
            log.sync()?;
        }
        if let Some(journal) = &mut inner.journal {
            journal.clear();
        }
        Ok(())
    }

    /// The state `log` holds (`None` if it holds nothing: a new log, or a lost disk).
    pub fn load(log: &mut DurableLog) -> Result<Option<PaxosState<T>>, Error>
    where
        T: DeserializeOwned,
    {
        let records = log.read_all()?;
        if records.is_empty() {
            return Ok(None);
        }
        let mut state = PaxosState::default();
        for bytes in records {
            let record: Record<T> = postcard::from_bytes(&bytes).map_err(|e| {
                Error::Io(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("durable Paxos log: bad record: {e}"),
                ))
            })?;
            state.apply(record);
        }
        Ok(Some(state))
    }
}

/// Where a node sits in its group and how fast it acts: what omnipaxos is built from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeConfig {
    /// The group's size.
    pub n: usize,
    /// This node's index in it (its omnipaxos pid is `index + 1`).
    pub index: usize,
    /// Ticks without a leader's heartbeat before an election.
    pub election_ticks: u64,
    /// Ticks before a message omnipaxos is waiting on is sent again.
    pub resend_ticks: u64,
}

/// An omnipaxos node over a [`SharedStore`].
pub type Node<T> = OmniPaxos<T, SharedStore<T>>;

/// An omnipaxos node over `state`, and the store it shares with its owner. A state with a
/// promise makes omnipaxos start in its recovery phase (it asks the leader to prepare it again).
/// `journal`: `Some(whole)` records every change for a durable log, which must first be given
/// the whole state if `whole` (it came from peers or a snapshot, not from that log).
pub fn node<T>(
    state: PaxosState<T>,
    config: NodeConfig,
    journal: Option<bool>,
) -> Result<(Node<T>, SharedStore<T>), Error>
where
    T: Entry<Snapshot = NoSnapshot>,
{
    let store = SharedStore::new(state);
    if let Some(whole) = journal {
        // Before omnipaxos starts: whatever it writes while starting is journaled too.
        store.journal(whole);
    }
    let omni = OmniPaxosConfig {
        cluster_config: ClusterConfig {
            configuration_id: 1,
            nodes: (1..=config.n as u64).collect(),
            flexible_quorum: None,
        },
        server_config: ServerConfig {
            pid: config.index as u64 + 1,
            election_tick_timeout: config.election_ticks,
            resend_message_tick_timeout: config.resend_ticks,
            ..ServerConfig::default()
        },
    };
    let paxos = omni
        .build(store.clone())
        .map_err(|e| Error::Invalid(format!("omnipaxos configuration: {e}")))?;
    Ok((paxos, store))
}

/// What a node that lost its memory gathers from its peers until it may rejoin consensus:
/// their answers to this incarnation's question. docs/replication.md, *Recovery*, gives the
/// argument for the rule [`Recovery::state`] applies.
#[derive(Debug, Clone)]
pub struct Recovery<T> {
    /// This incarnation's number; answers must carry it.
    pub nonce: u64,
    /// Answers so far, by peer index (`None`: that peer is recovering too).
    pub answers: BTreeMap<usize, Option<PaxosState<T>>>,
    /// Whether some answer showed that the log has had entries (then this cannot be the
    /// group's first start).
    pub history: bool,
}

impl<T> Default for Recovery<T> {
    fn default() -> Self {
        Recovery {
            nonce: 0,
            answers: BTreeMap::new(),
            history: false,
        }
    }
}

impl<T: Clone> Recovery<T> {
    /// The peers to ask (again): every one but `me`, of `n`, that has not given a state.
    pub fn to_ask(&self, me: usize, n: usize) -> Vec<usize> {
        (0..n)
            .filter(|i| *i != me && !matches!(self.answers.get(i), Some(Some(_))))
            .collect()
    }

    /// Takes peer `from`'s answer to question `nonce`; `false` if it answers an earlier
    /// incarnation or does not come from a peer (of `n`, other than `me`).
    pub fn take(
        &mut self,
        nonce: u64,
        from: usize,
        me: usize,
        n: usize,
        state: Option<PaxosState<T>>,
        history: bool,
    ) -> bool {
        if nonce != self.nonce || from >= n || from == me {
            return false;
        }
        self.history |= history;
        self.answers.insert(from, state);
        true
    }

    /// The state to adopt, in a group of `n`: the merge of the states of f+1 peers; an empty
    /// state when every peer answered and none has accepted anything nor heard of one who has
    /// (the group's first start); `None` while it must wait.
    pub fn state(&self, n: usize) -> Option<PaxosState<T>> {
        let f = (n - 1) / 2;
        let states: Vec<&PaxosState<T>> = self.answers.values().flatten().collect();
        if states.len() > f {
            Some(PaxosState::merge(states))
        } else if self.answers.len() == n - 1 && !self.history {
            Some(PaxosState::default())
        } else {
            None
        }
    }
}

/// A node's answer to a recovering peer: its whole state if it takes part in consensus
/// (`store`), and whether it knows the log has had entries (`recovering_history` is what a node
/// still recovering has learnt).
pub fn answer<T: Clone>(
    store: Option<&SharedStore<T>>,
    recovering_history: bool,
) -> (Option<PaxosState<T>>, bool) {
    match store {
        Some(store) => {
            let state = store.state();
            let history = state.has_history();
            (Some(state), history)
        }
        None => (None, recovering_history),
    }
}

/// Whether `message` is an `AcceptSync` that would rewrite the log below `decided`, this
/// node's decided index: one that answered an older promise of this node and was overtaken.
///
/// A node in omnipaxos's fail-recovery asks the leader to prepare it again, and may ask more than
/// once; each promise it sends is answered with an `AcceptSync` computed from that promise. When
/// the answer to an early promise (made before it caught up) arrives after a later `Prepare` put
/// it back in the prepare phase, it would sync from an index below what it has since learnt is
/// decided, which omnipaxos asserts never happens. The answer to its latest promise follows, so
/// dropping the stale one loses nothing.
pub fn is_stale_accept_sync<T: Entry>(
    message: &omnipaxos::messages::Message<T>,
    decided: usize,
) -> bool {
    use omnipaxos::messages::Message;
    use omnipaxos::messages::sequence_paxos::{PaxosMessage, PaxosMsg};
    matches!(
        message,
        Message::SequencePaxos(PaxosMessage {
            msg: PaxosMsg::AcceptSync(sync),
            ..
        }) if sync.log_sync.sync_idx < decided
    )
}

fn encode<T: Serialize>(record: &Record<T>) -> Result<Vec<u8>, Error> {
    postcard::to_stdvec(record).map_err(|e| Error::Encode {
        name: "paxos::Record".into(),
        source: e,
    })
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
        let at = self.log_len();
        self.change(Record::Append(at, vec![entry]));
        Ok(())
    }

    fn append_entries(&mut self, entries: Vec<T>) -> StorageResult<()> {
        let at = self.log_len();
        self.change(Record::Append(at, entries));
        Ok(())
    }

    fn append_on_prefix(&mut self, from_idx: usize, entries: Vec<T>) -> StorageResult<()> {
        self.change(Record::Append(from_idx, entries));
        Ok(())
    }

    fn set_promise(&mut self, n_prom: Ballot) -> StorageResult<()> {
        self.change(Record::Promise(n_prom));
        Ok(())
    }

    fn set_decided_idx(&mut self, ld: usize) -> StorageResult<()> {
        self.change(Record::Decided(ld));
        Ok(())
    }

    fn get_decided_idx(&self) -> StorageResult<usize> {
        Ok(self.lock().state.decided)
    }

    fn set_accepted_round(&mut self, na: Ballot) -> StorageResult<()> {
        self.change(Record::AcceptedRound(na));
        Ok(())
    }

    fn get_accepted_round(&self) -> StorageResult<Option<Ballot>> {
        Ok(self.lock().state.accepted_round)
    }

    fn get_entries(&self, from: usize, to: usize) -> StorageResult<Vec<T>> {
        let guard = self.lock();
        let s = &guard.state;
        let (from, to) = (from.saturating_sub(s.trimmed), to.saturating_sub(s.trimmed));
        Ok(s.log.get(from..to).map(<[T]>::to_vec).unwrap_or_default())
    }

    fn get_log_len(&self) -> StorageResult<usize> {
        Ok(self.lock().state.log.len())
    }

    fn get_suffix(&self, from: usize) -> StorageResult<Vec<T>> {
        let guard = self.lock();
        let s = &guard.state;
        let from = from.saturating_sub(s.trimmed);
        Ok(s.log.get(from..).map(<[T]>::to_vec).unwrap_or_default())
    }

    fn get_promise(&self) -> StorageResult<Option<Ballot>> {
        Ok(self.lock().state.promise)
    }

    fn set_stopsign(&mut self, s: Option<StopSign>) -> StorageResult<()> {
        self.change(Record::StopSign(s));
        Ok(())
    }

    fn get_stopsign(&self) -> StorageResult<Option<StopSign>> {
        Ok(self.lock().state.stopsign.clone())
    }

    fn trim(&mut self, idx: usize) -> StorageResult<()> {
        self.change(Record::Trim(idx));
        Ok(())
    }

    fn set_compacted_idx(&mut self, idx: usize) -> StorageResult<()> {
        self.change(Record::Compacted(idx));
        Ok(())
    }

    fn get_compacted_idx(&self) -> StorageResult<usize> {
        Ok(self.lock().state.compacted)
    }

    fn set_snapshot(&mut self, _snapshot: Option<NoSnapshot>) -> StorageResult<()> {
        Ok(())
    }

    fn get_snapshot(&self) -> StorageResult<Option<NoSnapshot>> {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::durable::MemoryDisk;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct E(u32);

    impl Entry for E {
        type Snapshot = NoSnapshot;
    }

    fn ballot(n: u32, pid: u64) -> Ballot {
        Ballot {
            config_id: 1,
            n,
            priority: 0,
            pid,
        }
    }

    #[test]
    fn a_journaled_store_replays_to_the_same_state_after_flushes_and_compaction() {
        let disk = Arc::new(Mutex::new(MemoryDisk::default()));
        let mut log = DurableLog::memory(disk.clone()).compact_at_least(300);
        let mut store = SharedStore::new(PaxosState::<E>::default());
        store.journal(true);
        let mut compacted = false;
        for round in 0..40u32 {
            store.set_promise(ballot(round + 1, 2)).unwrap();
            store.set_accepted_round(ballot(round + 1, 2)).unwrap();
            store.append_entry(E(round)).unwrap();
            store
                .append_entries(vec![E(1000 + round), E(2000 + round)])
                .unwrap();
            // A new leader's log replaces an undecided suffix.
            let len = store.log_len();
            store
                .append_on_prefix(len - 1, vec![E(3000 + round)])
                .unwrap();
            store.set_decided_idx(len - 2).unwrap();
            let before = log.size();
            store.flush(&mut log).unwrap();
            compacted |= log.size() < before;
            assert!(!store.dirty());
            // Every flush is synced: a crash right now loses nothing.
            disk.lock().unwrap().crash();
            let loaded = SharedStore::<E>::load(&mut DurableLog::memory(disk.clone()))
                .unwrap()
                .expect("a state was written");
            assert_eq!(loaded, store.state(), "after round {round}");
        }
        assert!(compacted, "the log was rewritten at least once");
        assert_eq!(store.log_len(), 120);
    }

    #[test]
    fn unflushed_changes_are_lost_with_a_crash_and_an_empty_log_holds_nothing() {
        let disk = Arc::new(Mutex::new(MemoryDisk::default()));
        let mut log = DurableLog::memory(disk.clone());
        assert_eq!(SharedStore::<E>::load(&mut log).unwrap(), None);
        let mut store = SharedStore::new(PaxosState::<E>::default());
        store.journal(true);
        store.append_entry(E(1)).unwrap();
        store.flush(&mut log).unwrap();
        store.append_entry(E(2)).unwrap();
        assert!(store.dirty());
        disk.lock().unwrap().crash();
        let loaded = SharedStore::<E>::load(&mut DurableLog::memory(disk))
            .unwrap()
            .unwrap();
        assert_eq!(loaded.log, vec![E(1)]);
    }

    #[test]
    fn a_store_that_is_not_journaled_writes_nothing() {
        let disk = Arc::new(Mutex::new(MemoryDisk::default()));
        let mut log = DurableLog::memory(disk.clone());
        let mut store = SharedStore::new(PaxosState::<E>::default());
        store.append_entry(E(1)).unwrap();
        store.flush(&mut log).unwrap();
        assert_eq!(disk.lock().unwrap().synced_len(), 0);
    }
}

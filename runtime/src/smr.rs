//! The state-machine-replication driver: one node of a replicated log, as an agent runs it.
//!
//! Two agents replicate a log: `replicate`'s replica proxy (a replicated agent's requests) and
//! the replicated controller (`controller_group`: the controller's inputs). What they share is
//! here, once: the omnipaxos node and its storage, the recovery of a node that lost its memory
//! (it takes no part in consensus until f+1 peers gave it their states, see [`Recovery`]), the
//! durable store (every acceptor change on disk before the messages of the step that made it
//! are sent), and the pump that runs after anything that may have moved omnipaxos. The agents
//! add only what they replicate, how they apply a decided entry, and their own message types.

use std::collections::BTreeMap;

use omnipaxos::ballot_leader_election::Ballot;
use omnipaxos::messages::Message as OpMessage;
use omnipaxos::storage::{Entry, NoSnapshot};
use omnipaxos::util::LogEntry;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::context::Context;
use crate::error::Error;
use crate::paxos::{self, Node, NodeConfig, PaxosState, Recovery, SharedStore};

/// Where a node is in its life.
enum Mode<T: Entry<Snapshot = NoSnapshot>> {
    /// Rebuilding its acceptor state from its peers; takes no part in consensus.
    Recovering(Recovery<T>),
    /// A Paxos node.
    Active {
        /// The omnipaxos instance.
        paxos: Box<Node<T>>,
        /// Its storage, which the node reads too (to answer a recovering peer, to snapshot).
        store: SharedStore<T>,
    },
}

/// What one [`Driver::pump`] gives its agent to do.
pub struct Pumped<T: Entry> {
    /// The messages to send, by peer index.
    pub outgoing: BTreeMap<usize, Vec<OpMessage<T>>>,
    /// The entries decided since `applied`, in log order.
    pub decided: Vec<LogEntry<T>>,
    /// Whether this node leads now.
    pub leading: bool,
}

/// One node of a replicated log (see the module docs).
pub struct Driver<T: Entry<Snapshot = NoSnapshot>> {
    config: NodeConfig,
    /// Who the logs name (`KVS/ReplicaProxy0`, `controller replica 1`).
    name: String,
    mode: Mode<T>,
    /// The leader's ballot last seen, to propose again what waits when it changes.
    last_promise: Option<Ballot>,
    outgoing: Vec<OpMessage<T>>,
    /// Whether the node keeps its acceptor state in its context's durable store.
    durable: bool,
}

impl<T> Driver<T>
where
    T: Entry<Snapshot = NoSnapshot> + Serialize + DeserializeOwned,
{
    /// Node `config.index` of a group of `config.n`, recovering until it has a state.
    pub fn new(config: NodeConfig, name: impl Into<String>) -> Self {
        Driver {
            config,
            name: name.into(),
            mode: Mode::Recovering(Recovery::default()),
            last_promise: None,
            outgoing: Vec::new(),
            durable: false,
        }
    }

    /// The group's size.
    pub fn n(&self) -> usize {
        self.config.n
    }

    /// This node's index in its group.
    pub fn index(&self) -> usize {
        self.config.index
    }

    /// Whether the node takes part in consensus (it is not recovering).
    pub fn is_active(&self) -> bool {
        matches!(self.mode, Mode::Active { .. })
    }

    /// The index of the leader this node knows of.
    pub fn leader(&self) -> Option<u64> {
        match &self.mode {
            Mode::Active { paxos, .. } => paxos.get_current_leader().map(|(pid, _)| pid - 1),
            Mode::Recovering(_) => None,
        }
    }

    /// How many entries are decided, and how long the log is (0, 0 while recovering).
    pub fn progress(&self) -> (usize, usize) {
        match &self.mode {
            Mode::Active { paxos, store } => (paxos.get_decided_idx(), store.log_len()),
            Mode::Recovering(_) => (0, 0),
        }
    }

    /// The acceptor state, if the node takes part in consensus (what a snapshot keeps).
    pub fn state(&self) -> Option<PaxosState<T>> {
        match &self.mode {
            Mode::Active { store, .. } => Some(store.state()),
            Mode::Recovering(_) => None,
        }
    }

    /// Becomes a Paxos node over `state`; `whole`: the durable store does not hold `state`
    /// yet (it came from peers or a snapshot, not from that store), so it is written whole.
    pub fn activate(&mut self, state: PaxosState<T>, whole: bool) -> Result<(), Error> {
        let (paxos, store) = paxos::node(state, self.config, self.durable.then_some(whole))?;
        self.mode = Mode::Active {
            paxos: Box::new(paxos),
            store,
        };
        Ok(())
    }

    /// Starts the node in `ctx`: with its durable store's state if it has one (true), else
    /// recovering under this incarnation's `nonce` (false). A node restored from a snapshot
    /// is active already: its store is told to write its state whole.
    pub fn start(&mut self, ctx: &mut Context, nonce: u64) -> bool {
        self.durable = ctx.durable().is_some();
        if let Mode::Active { store, .. } = &self.mode {
            if self.durable {
                store.journal(true);
            }
            return true;
        }
        if let Some(state) = self.load(ctx) {
            tracing::info!(node = %self.name, entries = state.log.len(), decided = state.decided, "restored the Paxos state from the durable store");
            if let Err(e) = self.activate(state, false) {
                tracing::error!(node = %self.name, error = %e, "cannot start the Paxos node");
            }
            return true;
        }
        if let Mode::Recovering(r) = &mut self.mode {
            r.nonce = nonce;
        }
        false
    }

    /// The acceptor state in the durable store, if there is one and it holds a state. An
    /// unreadable store counts as a lost disk: the node recovers from its peers, then
    /// rewrites it.
    fn load(&self, ctx: &mut Context) -> Option<PaxosState<T>> {
        let log = ctx.durable()?;
        match SharedStore::load(log) {
            Ok(state) => state,
            Err(e) => {
                tracing::error!(node = %self.name, error = %e, "durable store unreadable; recovering from peers");
                None
            }
        }
    }

    /// While recovering: this incarnation's nonce, and the peers to ask (again) for their
    /// state.
    pub fn to_ask(&self) -> Option<(u64, Vec<usize>)> {
        match &self.mode {
            Mode::Recovering(r) => Some((r.nonce, r.to_ask(self.index(), self.n()))),
            Mode::Active { .. } => None,
        }
    }

    /// This node's answer to a recovering peer: its state if it has one, and whether it knows
    /// the log has had entries.
    pub fn answer(&self) -> (Option<PaxosState<T>>, bool) {
        match &self.mode {
            Mode::Active { store, .. } => paxos::answer(Some(store), false),
            Mode::Recovering(r) => paxos::answer(None, r.history),
        }
    }

    /// Takes peer `from`'s answer to question `nonce`, and joins consensus if the answers
    /// allow it (f+1 peers' states, or the group's first start); true if it just did.
    pub fn take_answer(
        &mut self,
        nonce: u64,
        from: usize,
        state: Option<PaxosState<T>>,
        history: bool,
    ) -> Result<bool, Error> {
        let (me, n) = (self.index(), self.n());
        let Mode::Recovering(r) = &mut self.mode else {
            return Ok(false);
        };
        if !r.take(nonce, from, me, n, state, history) {
            return Ok(false);
        }
        let Some(state) = r.state(n) else {
            return Ok(false);
        };
        tracing::info!(node = %self.name, entries = state.log.len(), decided = state.decided, "recovered the Paxos state from peers");
        self.activate(state, true)?;
        Ok(true)
    }

    /// Proposes `entry` (nothing while recovering: the agent proposes it again in the pump).
    pub fn append(&mut self, entry: T) {
        if let Mode::Active { paxos, .. } = &mut self.mode
            && let Err(e) = paxos.append(entry)
        {
            tracing::warn!(node = %self.name, error = ?e, "omnipaxos refused a proposal");
        }
    }

    /// Moves omnipaxos's clock.
    pub fn tick(&mut self) {
        if let Mode::Active { paxos, .. } = &mut self.mode {
            paxos.tick();
        }
    }

    /// Hands omnipaxos the messages a peer sent this node (stale syncs left out, see
    /// [`paxos::is_stale_accept_sync`]).
    pub fn handle(&mut self, messages: Vec<OpMessage<T>>) {
        let me = self.index() as u64 + 1;
        if let Mode::Active { paxos, .. } = &mut self.mode {
            for m in messages {
                if m.get_receiver() == me
                    && !paxos::is_stale_accept_sync(&m, paxos.get_decided_idx())
                {
                    paxos.handle_incoming(m);
                }
            }
        }
    }

    /// After anything that may have moved omnipaxos: on a leader change, proposes again what
    /// `pending` gives (what was proposed through the old leader may be lost; an entry is
    /// applied once, so duplicates are harmless); makes the step durable; then what to send
    /// and what was decided since `applied`. `None` while recovering, or if the step cannot be
    /// made durable: then nothing may be sent, and the node stops (as if its box had crashed).
    pub fn pump(
        &mut self,
        ctx: &mut Context,
        applied: usize,
        pending: impl FnOnce() -> Vec<T>,
    ) -> Option<Pumped<T>> {
        let Mode::Active { paxos, store } = &mut self.mode else {
            return None;
        };
        let promise = paxos.get_promise();
        if self.last_promise != Some(promise) {
            self.last_promise = Some(promise);
            for entry in pending() {
                let _ = paxos.append(entry);
            }
        }
        // What omnipaxos is about to send (a promise, an acceptance, a decision) must be on
        // disk before anyone hears of it.
        if let Some(log) = ctx.durable()
            && let Err(e) = store.flush(log)
        {
            tracing::error!(node = %self.name, error = %e, "cannot write the durable store; stopping");
            ctx.finish();
            return None;
        }
        paxos.take_outgoing_messages(&mut self.outgoing);
        let mut outgoing: BTreeMap<usize, Vec<OpMessage<T>>> = BTreeMap::new();
        for m in self.outgoing.drain(..) {
            if let Some(i) = (m.get_receiver() as usize).checked_sub(1) {
                outgoing.entry(i).or_default().push(m);
            }
        }
        let decided = if paxos.get_decided_idx() > applied {
            paxos.read_decided_suffix(applied).unwrap_or_default()
        } else {
            Vec::new()
        };
        let leading = paxos
            .get_current_leader()
            .is_some_and(|(pid, _)| pid == self.config.index as u64 + 1);
        Some(Pumped {
            outgoing,
            decided,
            leading,
        })
    }
}

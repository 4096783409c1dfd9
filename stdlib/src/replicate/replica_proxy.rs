//! `ReplicaProxy`: one Paxos node in front of one replica.
//!
//! It drives an omnipaxos instance as a pure state machine: requests from ingress proxies are
//! appended to the log, omnipaxos messages travel to the other replica proxies as
//! [`Paxos`] messages, a periodic timer calls `tick`, and every entry omnipaxos decides is
//! applied in log order by the [`Applier`], which forwards it to the replica tagged with its log
//! index. The replica's replies come back with that tag and go to the ingress proxy that asked.
//!
//! With a durable store ([`Context::durable`]: its box has a data directory, or it runs in the
//! simulator), the proxy writes every change of its acceptor state there, and syncs it, before
//! it sends the messages of each omnipaxos step. A proxy that restarts and finds a state there
//! takes it up and rejoins through omnipaxos's own fail-recovery.
//!
//! Otherwise a proxy that starts has lost its memory. It takes no part in consensus until it
//! has rebuilt an acceptor state from a read quorum of its peers — f+1 of them, not counting
//! itself — or until every peer has told it that nobody it knows of has accepted anything (the
//! system's first start); see docs/replication.md for why that is safe. From then on it keeps
//! that state in its durable store, if it has one.
//!
//! Either way it then replays the whole decided log into its replica, which started empty too.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use omnipaxos::OmniPaxos;
use omnipaxos::messages::Message as OpMessage;
use omnipaxos::util::LogEntry;
use ovid::paxos::{self, NodeConfig, Recovery};
use ovid::{Agent, Context, Error, Id, Payload};
use serde::{Deserialize, Serialize};

use super::apply::{Applier, Step};
use super::messages::{
    Command, Outcome, Paxos, RecoverQuery, RecoverState, ReplicaStatus, Reply, Status, Submit,
};
use super::storage::{PaxosState, SharedStore};
use crate::expansion::{Args, int};
use crate::proxy;

/// The proxy's kind, as the expansion names it.
pub const KIND: &str = "ReplicaProxy";

const TICK: &str = "replicate::tick";

/// How often a replica proxy acts on its own (defaults suit one machine or a LAN).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// The period of the timer that calls omnipaxos's `tick` (configuration `tick_ms`).
    pub tick: Duration,
    /// Ticks per heartbeat round of leader election (`election_ticks`).
    pub election_ticks: u64,
    /// Ticks before omnipaxos resends a message it thinks lost (`resend_ticks`).
    pub resend_ticks: u64,
    /// Ticks between two rounds of questions of a recovering proxy (`recover_ticks`).
    pub recover_ticks: u64,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            tick: Duration::from_millis(10),
            election_ticks: 10,
            resend_ticks: 50,
            recover_ticks: 10,
        }
    }
}

impl Timing {
    fn from_args(args: &Args) -> Self {
        let d = Timing::default();
        let pos = |name: &str, default: u64| {
            u64::try_from(int(args, name, default as i64))
                .ok()
                .filter(|v| *v > 0)
                .unwrap_or(default)
        };
        Timing {
            tick: Duration::from_millis(pos("tick_ms", d.tick.as_millis() as u64)),
            election_ticks: pos("election_ticks", d.election_ticks),
            resend_ticks: pos("resend_ticks", d.resend_ticks),
            recover_ticks: pos("recover_ticks", d.recover_ticks),
        }
    }
}

/// Where the proxy is in its life.
enum Mode {
    /// Rebuilding its acceptor state from its peers; takes no part in consensus.
    Recovering(Recovery<Command>),
    /// A Paxos node.
    Active {
        /// The omnipaxos instance.
        paxos: Box<OmniPaxos<Command, SharedStore>>,
        /// Its storage, which this proxy reads too.
        store: SharedStore,
    },
    /// `replicate(1)`: one replica, no consensus; requests are applied as they come.
    Solo,
}

/// What [`Agent::snapshot`] captures: the acceptor state and the applier.
#[derive(Serialize, Deserialize)]
struct Saved {
    paxos: Option<PaxosState>,
    applier: Applier,
}

/// The applied index in a snapshot of a replica proxy.
pub(crate) fn applied(snapshot: &[u8]) -> Result<u64, Error> {
    let saved: Saved =
        postcard::from_bytes(snapshot).map_err(|e| Error::Snapshot(e.to_string()))?;
    Ok(saved.applier.applied)
}

/// The consensus proxy in front of replica `index` (see the module docs).
pub struct ReplicaProxy {
    index: usize,
    peers: Vec<Id>,
    replica: Id,
    timing: Timing,
    me: Id,
    mode: Mode,
    applier: Applier,
    /// Requests submitted here and not yet answered: (client, seq) → (ingress proxy, command).
    waiting: BTreeMap<(String, u64), (Id, Command)>,
    /// The leader last seen, to propose again what waits here when it changes.
    last_promise: Option<omnipaxos::ballot_leader_election::Ballot>,
    ticks: u64,
    outgoing: Vec<OpMessage<Command>>,
    steps: Vec<Step>,
    /// Whether the proxy keeps its acceptor state in its context's durable store.
    durable: bool,
}

impl ReplicaProxy {
    /// A proxy from its configuration: `index`, `peers` (every replica proxy, itself included,
    /// by index), `targets` (its replica first), and optional timing (`tick_ms`,
    /// `election_ticks`, `resend_ticks`, `recover_ticks`).
    pub fn from_config(args: &Args) -> Result<Self, Error> {
        let peers: Vec<Id> = proxy::ids(args, "peers")
            .into_iter()
            .map(Id::from)
            .collect();
        let index = usize::try_from(int(args, "index", -1))
            .map_err(|_| Error::Invalid("ReplicaProxy: no `index`".into()))?;
        if index >= peers.len() {
            return Err(Error::Invalid(format!(
                "ReplicaProxy: index {index} is not among {} peers",
                peers.len()
            )));
        }
        let replica = proxy::ids(args, "targets")
            .into_iter()
            .next()
            .ok_or_else(|| Error::Invalid("ReplicaProxy: no replica in `targets`".into()))?;
        Ok(ReplicaProxy {
            index,
            me: peers[index].clone(),
            peers,
            replica: replica.into(),
            timing: Timing::from_args(args),
            mode: Mode::Recovering(Recovery::default()),
            applier: Applier::default(),
            waiting: BTreeMap::new(),
            last_promise: None,
            ticks: 0,
            outgoing: Vec::new(),
            steps: Vec::new(),
            durable: false,
        })
    }

    fn n(&self) -> usize {
        self.peers.len()
    }

    /// An omnipaxos node over `state` ([`ovid::paxos::node`]); `whole`: the durable store does
    /// not hold `state` yet (it came from peers or a snapshot), so it is written whole.
    fn build(&self, state: PaxosState, whole: bool) -> Result<Mode, Error> {
        let config = NodeConfig {
            n: self.n(),
            index: self.index,
            election_ticks: self.timing.election_ticks,
            resend_ticks: self.timing.resend_ticks,
        };
        let (paxos, store) = paxos::node(state, config, self.durable.then_some(whole))?;
        Ok(Mode::Active {
            paxos: Box::new(paxos),
            store,
        })
    }

    fn leader(&self) -> Option<u64> {
        match &self.mode {
            Mode::Active { paxos, .. } => paxos.get_current_leader().map(|(pid, _)| pid - 1),
            Mode::Solo => Some(self.index as u64),
            Mode::Recovering(_) => None,
        }
    }

    /// Asks every peer that has not yet answered with a state for its state.
    fn query(&self, ctx: &mut Context) {
        if let Mode::Recovering(r) = &self.mode {
            for i in r.to_ask(self.index, self.n()) {
                ctx.send_physical(&self.peers[i], RecoverQuery { nonce: r.nonce });
            }
        }
    }

    /// Joins consensus if the answers allow it (see the module docs).
    fn try_activate(&mut self, ctx: &mut Context) -> Result<(), Error> {
        let Mode::Recovering(r) = &self.mode else {
            return Ok(());
        };
        // f+1 peers' states, or the system's first start (see the module docs).
        let Some(state) = r.state(self.n()) else {
            return Ok(());
        };
        tracing::info!(proxy = %self.me, entries = state.log.len(), decided = state.decided, "replica proxy recovered its state from its peers");
        self.mode = self.build(state, true)?;
        self.pump(ctx);
        Ok(())
    }

    /// The acceptor state in the durable store, if there is one and it holds a state. An
    /// unreadable store counts as a lost disk: the proxy recovers from its peers, then
    /// rewrites it.
    fn load(&self, ctx: &mut Context) -> Option<PaxosState> {
        let log = ctx.durable()?;
        match SharedStore::load(log) {
            Ok(state) => state,
            Err(e) => {
                tracing::error!(proxy = %self.me, error = %e, "durable store unreadable; recovering from peers");
                None
            }
        }
    }

    /// Makes the acceptor's changes durable. False if they cannot be: then nothing that
    /// depends on them may be sent, and the proxy stops (as if its box had crashed).
    fn flush(&mut self, ctx: &mut Context) -> bool {
        let Mode::Active { store, .. } = &self.mode else {
            return true;
        };
        let Some(log) = ctx.durable() else {
            return true;
        };
        match store.flush(log) {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(proxy = %self.me, error = %e, "cannot write the durable store; stopping");
                ctx.finish();
                false
            }
        }
    }

    /// After anything that may have moved omnipaxos: propose again on a leader change, send
    /// what omnipaxos wants sent, apply what it decided.
    fn pump(&mut self, ctx: &mut Context) {
        if let Mode::Active { paxos, .. } = &mut self.mode {
            let promise = paxos.get_promise();
            if self.last_promise != Some(promise) {
                // A new leader (or the first): what was proposed through the old one may be
                // lost. Duplicates are harmless: the applier runs each request once.
                self.last_promise = Some(promise);
                for (key, (_, cmd)) in &self.waiting {
                    if !self.applier.seen(&key.0, key.1) {
                        let _ = paxos.append(cmd.clone());
                    }
                }
            }
        }
        // What omnipaxos is about to send (a promise, an acceptance, a decision) must be on
        // disk before anyone hears of it.
        if !self.flush(ctx) {
            return;
        }
        if let Mode::Active { paxos, .. } = &mut self.mode {
            paxos.take_outgoing_messages(&mut self.outgoing);
            let mut by_peer: BTreeMap<u64, Vec<OpMessage<Command>>> = BTreeMap::new();
            for m in self.outgoing.drain(..) {
                by_peer.entry(m.get_receiver()).or_default().push(m);
            }
            for (pid, messages) in by_peer {
                if let Some(peer) = (pid as usize)
                    .checked_sub(1)
                    .and_then(|i| self.peers.get(i))
                {
                    ctx.send_physical(peer, Paxos { messages });
                }
            }
            let decided = paxos.get_decided_idx() as u64;
            if decided > self.applier.applied {
                for entry in paxos
                    .read_decided_suffix(self.applier.applied as usize)
                    .unwrap_or_default()
                {
                    let index = self.applier.applied;
                    match entry {
                        LogEntry::Decided(cmd) | LogEntry::Undecided(cmd) => {
                            self.applier.apply(index, cmd, &mut self.steps)
                        }
                        // Never produced: replicate neither compacts nor reconfigures.
                        _ => self.applier.applied += 1,
                    }
                }
            }
        }
        self.run_steps(ctx);
    }

    /// Carries out what the applier decided.
    fn run_steps(&mut self, ctx: &mut Context) {
        let leader = self.leader();
        for step in std::mem::take(&mut self.steps) {
            match step {
                Step::Execute { tag, name, bytes } => {
                    let payload = Payload::Encoded {
                        name: name.into(),
                        bytes: Bytes::from(bytes),
                    };
                    ctx.forward(&self.replica, self.me.clone(), tag, payload);
                }
                Step::Done { client, seq, reply } => {
                    if let Some((ingress, _)) = self.waiting.remove(&(client.clone(), seq)) {
                        ctx.send_physical(
                            &ingress,
                            Outcome {
                                client,
                                seq,
                                reply,
                                leader,
                            },
                        );
                    }
                }
            }
        }
    }

    fn on_submit(&mut self, ctx: &mut Context, cmd: Command) {
        let Some(ingress) = ctx.sender_id() else {
            return;
        };
        if let Some(reply) = self.applier.known(&cmd.client, cmd.seq) {
            let leader = self.leader();
            ctx.send_physical(
                &ingress,
                Outcome {
                    client: cmd.client,
                    seq: cmd.seq,
                    reply,
                    leader,
                },
            );
            return;
        }
        let seen = self.applier.seen(&cmd.client, cmd.seq);
        self.waiting
            .insert((cmd.client.clone(), cmd.seq), (ingress, cmd.clone()));
        if seen {
            // Already in the decided log; its outcome comes when the replica replies.
            return;
        }
        match &mut self.mode {
            Mode::Active { paxos, .. } => {
                if let Err(e) = paxos.append(cmd) {
                    tracing::warn!(proxy = %self.me, error = ?e, "omnipaxos refused a proposal");
                }
                self.pump(ctx);
            }
            Mode::Solo => {
                let index = self.applier.applied;
                self.applier.apply(index, cmd, &mut self.steps);
                self.run_steps(ctx);
            }
            // Proposed once this proxy has recovered (`pump` proposes what waits).
            Mode::Recovering(_) => {}
        }
    }

    fn status(&self) -> ReplicaStatus {
        let (decided, log_len) = match &self.mode {
            Mode::Active { paxos, store } => {
                (paxos.get_decided_idx() as u64, store.log_len() as u64)
            }
            Mode::Solo => (self.applier.applied, self.applier.applied),
            Mode::Recovering(_) => (0, 0),
        };
        ReplicaStatus {
            index: self.index as u64,
            active: !matches!(self.mode, Mode::Recovering(_)),
            leader: self.leader(),
            decided,
            applied: self.applier.applied,
            executed: self.applier.executed,
            completed: self.applier.completed(),
            log_len,
        }
    }
}

impl Agent for ReplicaProxy {
    fn on_start(&mut self, ctx: &mut Context) {
        if self.n() == 1 {
            self.mode = Mode::Solo;
            return;
        }
        self.durable = ctx.durable().is_some();
        if let Mode::Active { store, .. } = &self.mode {
            // Restored from a snapshot: omnipaxos recovers from its own state, which the
            // durable store does not hold yet.
            if self.durable {
                store.journal(true);
            }
            self.pump(ctx);
        } else if let Some(state) = self.load(ctx) {
            tracing::info!(proxy = %self.me, entries = state.log.len(), decided = state.decided, "replica proxy restored its state from its durable store");
            match self.build(state, false) {
                Ok(mode) => self.mode = mode,
                Err(e) => {
                    tracing::error!(proxy = %self.me, error = %e, "replica proxy cannot start")
                }
            }
            self.pump(ctx);
        } else if let Mode::Recovering(r) = &mut self.mode {
            // A number for this incarnation that an earlier one is unlikely to have had.
            r.nonce = ctx.now_millis().rotate_left(20) ^ ctx.random(i64::MAX) as u64;
            self.query(ctx);
        }
        ctx.set_timer(TICK, self.timing.tick);
    }

    fn on_timer(&mut self, ctx: &mut Context, name: &str) {
        if name != TICK {
            return;
        }
        self.ticks += 1;
        match &mut self.mode {
            Mode::Active { paxos, .. } => {
                paxos.tick();
                self.pump(ctx);
            }
            Mode::Recovering(_) => {
                if self.ticks.is_multiple_of(self.timing.recover_ticks) {
                    self.query(ctx);
                }
            }
            Mode::Solo => return,
        }
        ctx.set_timer(TICK, self.timing.tick);
    }

    fn on_message(&mut self, ctx: &mut Context, message: Payload) -> Result<(), Error> {
        // From the replica, or from what it was transformed into (`X/Replica0 |> monitor`).
        if ovid::routing::is_refinement(&self.replica, ctx.sender()) {
            let reply = Reply {
                name: message.name().to_string(),
                bytes: message.to_bytes()?.to_vec(),
            };
            if !self.applier.reply(ctx.tag(), reply, &mut self.steps) {
                tracing::debug!(proxy = %self.me, tag = ctx.tag(), name = message.name(), "extra reply of the replica dropped");
            }
            self.run_steps(ctx);
        } else if message.is::<Paxos>() {
            let paxos_msg = message.decode::<Paxos>()?;
            if let Mode::Active { paxos, .. } = &mut self.mode {
                for m in paxos_msg.messages {
                    if m.get_receiver() == self.index as u64 + 1
                        && !ovid::paxos::is_stale_accept_sync(&m, paxos.get_decided_idx())
                    {
                        paxos.handle_incoming(m);
                    }
                }
                self.pump(ctx);
            }
        } else if message.is::<Submit>() {
            let submit = message.decode::<Submit>()?;
            self.on_submit(ctx, submit.command);
        } else if message.is::<RecoverQuery>() {
            let q = message.decode::<RecoverQuery>()?;
            let (state, history) = match &self.mode {
                Mode::Active { store, .. } => paxos::answer(Some(store), false),
                Mode::Recovering(r) => paxos::answer(None, r.history),
                Mode::Solo => (None, true),
            };
            ctx.reply(RecoverState {
                nonce: q.nonce,
                index: self.index as u64,
                state,
                history,
            });
        } else if message.is::<RecoverState>() {
            let answer = message.decode::<RecoverState>()?;
            let (n, me) = (self.n(), self.index);
            if let Mode::Recovering(r) = &mut self.mode
                && r.take(
                    answer.nonce,
                    answer.index as usize,
                    me,
                    n,
                    answer.state,
                    answer.history,
                )
            {
                self.try_activate(ctx)?;
            }
        } else if message.is::<Status>() {
            let status = self.status();
            ctx.reply(status);
        } else {
            return Err(Error::UnknownMessage {
                agent: self.me.to_string(),
                name: message.name().to_string(),
            });
        }
        Ok(())
    }

    fn accepts(&self) -> &'static [&'static str] {
        &[
            "replicate::Paxos",
            "replicate::Submit",
            "replicate::RecoverQuery",
            "replicate::RecoverState",
            "replicate::Status",
        ]
    }

    fn snapshot(&self) -> Result<Vec<u8>, Error> {
        let paxos = match &self.mode {
            Mode::Active { store, .. } => Some(store.state()),
            _ => None,
        };
        postcard::to_stdvec(&Saved {
            paxos,
            applier: self.applier.clone(),
        })
        .map_err(|e| Error::Snapshot(e.to_string()))
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<(), Error> {
        let saved: Saved =
            postcard::from_bytes(bytes).map_err(|e| Error::Snapshot(e.to_string()))?;
        self.applier = saved.applier;
        if let Some(state) = saved.paxos {
            // The acceptor's own state, captured while it was wedged: not an amnesiac restart,
            // so omnipaxos's own fail-recovery applies.
            self.mode = self.build(state, true)?;
        }
        Ok(())
    }
}

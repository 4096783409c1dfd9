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
use omnipaxos::util::LogEntry;
use ovid::paxos::NodeConfig;
use ovid::smr::Driver;
use ovid::{Agent, Context, Error, Id, Payload};
use serde::{Deserialize, Serialize};

use super::apply::{Applier, Step};
use super::messages::{
    Command, Outcome, Paxos, RecoverQuery, RecoverState, ReplicaStatus, Reply, Status, Submit,
};
use super::storage::PaxosState;
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
    /// Its node of the replicated log (unused by `replicate(1)`, which needs no consensus:
    /// requests are applied as they come).
    node: Driver<Command>,
    applier: Applier,
    /// Requests submitted here and not yet answered: (client, seq) → (ingress proxy, command).
    waiting: BTreeMap<(String, u64), (Id, Command)>,
    ticks: u64,
    steps: Vec<Step>,
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
        let timing = Timing::from_args(args);
        let config = NodeConfig {
            n: peers.len(),
            index,
            election_ticks: timing.election_ticks,
            resend_ticks: timing.resend_ticks,
        };
        Ok(ReplicaProxy {
            index,
            me: peers[index].clone(),
            node: Driver::new(config, peers[index].to_string()),
            peers,
            replica: replica.into(),
            timing,
            applier: Applier::default(),
            waiting: BTreeMap::new(),
            ticks: 0,
            steps: Vec::new(),
        })
    }

    fn n(&self) -> usize {
        self.peers.len()
    }

    /// Whether there is one replica: no consensus, requests applied as they come.
    fn solo(&self) -> bool {
        self.n() == 1
    }

    fn leader(&self) -> Option<u64> {
        if self.solo() {
            Some(self.index as u64)
        } else {
            self.node.leader()
        }
    }
    /// Asks every peer that has not yet answered with a state for its state.
    fn query(&self, ctx: &mut Context) {
        if let Some((nonce, peers)) = self.node.to_ask() {
            for i in peers {
                ctx.send_physical(&self.peers[i], RecoverQuery { nonce });
            }
        }
    }
    /// After anything that may have moved omnipaxos: send what it wants sent, apply what it
    /// decided (what waits here is proposed again when the leader changes).
    fn pump(&mut self, ctx: &mut Context) {
        let (waiting, applier) = (&self.waiting, &self.applier);
        let pending = || {
            waiting
                .iter()
                .filter(|(key, _)| !applier.seen(&key.0, key.1))
                .map(|(_, (_, cmd))| cmd.clone())
                .collect()
        };
        let Some(step) = self.node.pump(ctx, self.applier.applied as usize, pending) else {
            return;
        };
        for (i, messages) in step.outgoing {
            if let Some(peer) = self.peers.get(i) {
                ctx.send_physical(peer, Paxos { messages });
            }
        }
        for entry in step.decided {
            let index = self.applier.applied;
            match entry {
                LogEntry::Decided(cmd) | LogEntry::Undecided(cmd) => {
                    self.applier.apply(index, cmd, &mut self.steps)
                }
                // Never produced: replicate neither compacts nor reconfigures.
                _ => self.applier.applied += 1,
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
        if self.solo() {
            let index = self.applier.applied;
            self.applier.apply(index, cmd, &mut self.steps);
            self.run_steps(ctx);
        } else if self.node.is_active() {
            self.node.append(cmd);
            self.pump(ctx);
        }
        // Otherwise proposed once this proxy has recovered (`pump` proposes what waits).
    }

    fn status(&self) -> ReplicaStatus {
        let (decided, log_len) = if self.solo() {
            (self.applier.applied, self.applier.applied)
        } else {
            let (decided, log_len) = self.node.progress();
            (decided as u64, log_len as u64)
        };
        ReplicaStatus {
            index: self.index as u64,
            active: self.solo() || self.node.is_active(),
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
        if self.solo() {
            return;
        }
        // A number for this incarnation that an earlier one is unlikely to have had.
        let nonce = ctx.now_millis().rotate_left(20) ^ ctx.random(i64::MAX) as u64;
        if self.node.start(ctx, nonce) {
            self.pump(ctx);
        } else {
            self.query(ctx);
        }
        ctx.set_timer(TICK, self.timing.tick);
    }

    fn on_timer(&mut self, ctx: &mut Context, name: &str) {
        if name != TICK || self.solo() {
            return;
        }
        self.ticks += 1;
        if self.node.is_active() {
            self.node.tick();
            self.pump(ctx);
        } else if self.ticks.is_multiple_of(self.timing.recover_ticks) {
            self.query(ctx);
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
            if self.node.is_active() {
                self.node.handle(paxos_msg.messages);
                self.pump(ctx);
            }
        } else if message.is::<Submit>() {
            let submit = message.decode::<Submit>()?;
            self.on_submit(ctx, submit.command);
        } else if message.is::<RecoverQuery>() {
            let q = message.decode::<RecoverQuery>()?;
            let (state, history) = if self.solo() {
                (None, true)
            } else {
                self.node.answer()
            };
            ctx.reply(RecoverState {
                nonce: q.nonce,
                index: self.index as u64,
                state,
                history,
            });
        } else if message.is::<RecoverState>() {
            let answer = message.decode::<RecoverState>()?;
            let from = answer.index as usize;
            if self
                .node
                .take_answer(answer.nonce, from, answer.state, answer.history)?
            {
                self.pump(ctx);
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
        postcard::to_stdvec(&Saved {
            paxos: self.node.state(),
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
            self.node.activate(state, true)?;
        }
        Ok(())
    }
}

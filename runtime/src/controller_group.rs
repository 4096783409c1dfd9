//! The replicated controller: `controller |> replicate(n)`.
//!
//! One [`Controller`] is a single point of failure: when its box dies, nobody answers routing
//! misses, registers boxes or reconfigures. So the controller can run as a group of n = 2f+1
//! [`ControllerReplica`]s, one per controller box, and survive f crashed ones. It is state
//! machine replication, the same way `replicate(n)` replicates an agent, with omnipaxos driven as
//! a pure state machine inside the agent:
//!
//! * every replica runs under the identifier `controller` in its own box, so whatever a box sends
//!   to `controller` reaches the replica its BRT points at; each replica is also reachable as
//!   `controller/Replica{i}` ([`replica_id`]), which is how the replicas talk to each other.
//! * a replica does not handle what it receives: it proposes it, as an [`Input`] (sender, message
//!   name, bytes), to the omnipaxos log. omnipaxos forwards a follower's proposal to the leader.
//! * every replica applies the decided inputs, in log order, to its own [`Controller`], which it
//!   drives through a context of its own. The controller is deterministic, so every replica's
//!   controller goes through the same states.
//! * only the replica that believes it leads carries out what its controller asked for (answers,
//!   `StartAgent`, route broadcasts); the others drop it. Something may be lost when the leader
//!   dies between deciding and sending: askers retry (the box's router asks again, and fails over
//!   to another replica), and a replica that becomes leader starts again the placed agents whose
//!   start was not confirmed ([`Controller::reissue_starts`]).
//!
//! With a durable store (its box has a data directory), a replica keeps its acceptor state
//! there, written and synced before the messages of each omnipaxos step leave, like a replica
//! proxy of `replicate`; restarted, it takes that state up and rejoins through omnipaxos's own
//! fail-recovery. Without one, a restarted replica has lost its memory; it recovers like a
//! replica proxy (the acceptor state of f+1 peers, merged with [`PaxosState::merge`]). Either
//! way it then replays the decided log into a fresh controller. See docs/replication.md, "The
//! replicated controller".

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bytes::Bytes;
use omnipaxos::messages::Message as OpMessage;
use omnipaxos::storage::{Entry, NoSnapshot};
use omnipaxos::util::LogEntry;
use serde::{Deserialize, Serialize};

use crate::agent::Agent;
use crate::context::Context;
use crate::controller::Controller;
use crate::error::Error;
use crate::message::{Id, Message, Payload};
use crate::paxos::{NodeConfig, PaxosState};
use crate::protocol::{
    BrtAnswer, CONTROLLER, RegisterBox, Registered, ResolveBrt, system_messages,
};
pub use crate::protocol::{replica_box, replica_id};
use crate::smr::Driver;

const TICK: &str = "controller::tick";

/// How replica `index` of `n` builds its omnipaxos node.
fn node_config(index: usize, n: usize, timing: &Timing) -> NodeConfig {
    NodeConfig {
        n,
        index,
        election_ticks: timing.election_ticks,
        resend_ticks: timing.resend_ticks,
    }
}

/// One input of the controller, as the replicated log holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Input {
    /// The proposing replica's index and incarnation, and the input's number there: an input
    /// proposed again (after a leader change) is applied once.
    pub origin: (u64, u64, u64),
    /// Who sent it to the controller (where the controller's replies go).
    pub from: String,
    /// The message's type name.
    pub name: String,
    /// Its postcard encoding.
    pub bytes: Vec<u8>,
}

impl Entry for Input {
    type Snapshot = NoSnapshot;
}

/// Controller replica → controller replica: omnipaxos messages, in the order produced.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ControllerPaxos {
    /// The messages for the receiver.
    pub messages: Vec<OpMessage<Input>>,
}

/// Recovering controller replica → its peers: what is your Paxos state?
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControllerRecoverQuery {
    /// The asker's incarnation, so that an answer to an earlier life is not taken.
    pub nonce: u64,
    /// The asker's index (every replica is `controller` to the others: answers go by index).
    pub from: u64,
}

/// Controller replica → recovering peer: my Paxos state (`None`: I am recovering too).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControllerRecoverState {
    /// From the question.
    pub nonce: u64,
    /// The answering replica's index.
    pub index: u64,
    /// Its state, if it takes part in consensus.
    pub state: Option<PaxosState<Input>>,
    /// Whether it knows that the log has had entries (a first start needs every peer to say no).
    pub history: bool,
}

/// Anyone → controller replica: how are you? Answered with [`ControllerStatus`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetControllerStatus {
    /// Copied into the answer.
    pub req: u64,
}

/// Controller replica → asker: its view of the group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControllerStatus {
    /// From the question.
    pub req: u64,
    /// The replica's index.
    pub index: u64,
    /// Whether it takes part in consensus (false while it recovers its state from peers).
    pub active: bool,
    /// The index of the replica it believes leads.
    pub leader: Option<u64>,
    /// Log entries decided.
    pub decided: u64,
    /// Log entries applied to its controller.
    pub applied: u64,
}

/// The leading replica → the log: the controller's timer `name` fired. The controller's timers
/// (its failure detector's) run only at the leader and reach every replica through the log, so
/// that every replica's controller counts the same periods and declares the same boxes dead at
/// the same point of the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControllerTimer {
    /// The timer's name, as the controller set it.
    pub name: String,
}

system_messages!(
    ControllerTimer,
    ControllerPaxos,
    ControllerRecoverQuery,
    ControllerRecoverState,
    GetControllerStatus,
    ControllerStatus
);

/// How often a controller replica acts on its own; the defaults are those of `replicate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// The period of the timer that calls omnipaxos's `tick`.
    pub tick: Duration,
    /// Ticks per heartbeat round of leader election.
    pub election_ticks: u64,
    /// Ticks before omnipaxos resends a message it thinks lost.
    pub resend_ticks: u64,
    /// Ticks between two rounds of questions of a recovering replica.
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

/// One member of the replicated controller (see the module docs).
pub struct ControllerReplica {
    index: usize,
    peers: Vec<Id>,
    timing: Timing,
    /// Its node of the replicated log.
    node: Driver<Input>,
    /// The controller, fed the decided inputs in log order.
    controller: Controller,
    /// How many log entries were applied to `controller`.
    applied: usize,
    /// The origins of the inputs applied (a re-proposed input is applied once).
    seen: BTreeSet<(u64, u64, u64)>,
    /// Box name → (address, request) of the registration applied last: the same registration
    /// retried by the box is answered again, not taken for a restart of the box.
    registrations: BTreeMap<String, (String, u64)>,
    /// This incarnation's number (set in `on_start`), the first half of an input's origin.
    incarnation: u64,
    next_seq: u64,
    /// Inputs proposed here and not yet applied: proposed again when the leader changes.
    proposed: BTreeMap<(u64, u64, u64), Input>,
    /// Whether this replica led at the last step (to notice becoming leader).
    leading: bool,
    ticks: u64,
}

impl ControllerReplica {
    /// Replica `index` of a group of `n`, holding a controller for `controller`'s placement.
    /// Every replica of a group must start from the same controller.
    pub fn new(index: usize, n: usize, controller: Controller) -> Result<Self, Error> {
        if index >= n {
            return Err(Error::Invalid(format!(
                "controller replica {index} is not among {n}"
            )));
        }
        let timing = Timing::default();
        Ok(ControllerReplica {
            index,
            peers: (0..n).map(|i| Id::from(replica_id(i))).collect(),
            node: Driver::new(
                node_config(index, n, &timing),
                format!("controller replica {index}"),
            ),
            timing,
            controller,
            applied: 0,
            seen: BTreeSet::new(),
            registrations: BTreeMap::new(),
            incarnation: 0,
            next_seq: 0,
            proposed: BTreeMap::new(),
            leading: false,
            ticks: 0,
        })
    }

    /// Sets how often the replica acts on its own.
    pub fn timing(mut self, timing: Timing) -> Self {
        self.node = Driver::new(
            node_config(self.index, self.n(), &timing),
            format!("controller replica {}", self.index),
        );
        self.timing = timing;
        self
    }

    fn n(&self) -> usize {
        self.peers.len()
    }

    /// Asks every peer that has not yet answered with a state for its state.
    fn query(&self, ctx: &mut Context) {
        let Some((nonce, peers)) = self.node.to_ask() else {
            return;
        };
        for i in peers {
            ctx.send_physical(
                &self.peers[i],
                ControllerRecoverQuery {
                    nonce,
                    from: self.index as u64,
                },
            );
        }
    }

    /// The replica's index in its group.
    pub fn index(&self) -> usize {
        self.index
    }

    /// Takes an input for the log: proposed now, or once this replica has recovered.
    fn propose(&mut self, ctx: &mut Context, message: Payload) -> Result<(), Error> {
        let input = Input {
            origin: (self.index as u64, self.incarnation, self.next_seq),
            from: ctx.sender().to_string(),
            name: message.name().to_string(),
            bytes: message.to_bytes()?.to_vec(),
        };
        self.next_seq += 1;
        tracing::debug!(replica = self.index, from = %input.from, message = %input.name, active = self.node.is_active(), "controller input proposed");
        self.proposed.insert(input.origin, input.clone());
        if self.node.is_active() {
            self.node.append(input);
            self.pump(ctx);
        }
        Ok(())
    }
    /// The leader proposes that the controller's timer `name` fired. Not kept for proposing
    /// again: a tick lost in a leader change is made up by the next leader's own timer.
    fn propose_timer(&mut self, ctx: &mut Context, name: &str) {
        if !self.leading || !self.node.is_active() {
            return;
        }
        let bytes = match postcard::to_stdvec(&ControllerTimer { name: name.into() }) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(replica = self.index, error = %e, "cannot encode a timer input");
                return;
            }
        };
        let input = Input {
            origin: (self.index as u64, self.incarnation, self.next_seq),
            from: CONTROLLER.to_string(),
            name: ControllerTimer::NAME.to_string(),
            bytes,
        };
        self.next_seq += 1;
        self.node.append(input);
        self.pump(ctx);
    }
    /// After anything that may have moved omnipaxos: send what it wants sent, apply what it
    /// decided, and take over as leader if elected.
    fn pump(&mut self, ctx: &mut Context) {
        let proposed = &self.proposed;
        let Some(step) = self
            .node
            .pump(ctx, self.applied, || proposed.values().cloned().collect())
        else {
            return;
        };
        for (i, messages) in step.outgoing {
            if let Some(peer) = self.peers.get(i) {
                ctx.send_physical(peer, ControllerPaxos { messages });
            }
        }
        for entry in step.decided {
            self.applied += 1;
            if let LogEntry::Decided(input) = entry {
                self.apply(ctx, input, step.leading);
            }
        }
        if step.leading && !self.leading {
            tracing::info!(replica = self.index, "controller replica leads");
            // On the box's standard output too: `ovidc run` shows who leads, and its tests
            // read it to know which process to kill.
            ctx.print(format!("ovid: controller replica {} leads", self.index));
            // The old leader may have died before carrying out what it decided: start what
            // was placed but is not known to run (a box already running it says so again).
            let mut inner = Context::new(CONTROLLER);
            self.controller.reissue_starts(&mut inner);
            // The controller's timers run at the leader (see `ControllerTimer`).
            self.controller.on_start(&mut inner);
            for effect in inner.take_effects() {
                ctx.emit(effect);
            }
        }
        self.leading = step.leading;
    }
    /// Applies one decided input to the controller; `emit`: carry out what it asks.
    fn apply(&mut self, ctx: &mut Context, input: Input, emit: bool) {
        self.proposed.remove(&input.origin);
        tracing::debug!(replica = self.index, from = %input.from, message = %input.name, emit, "controller input decided");
        if !self.seen.insert(input.origin) {
            return;
        }
        if input.name == RegisterBox::NAME
            && let Ok(r) = postcard::from_bytes::<RegisterBox>(&input.bytes)
        {
            let key = (r.addr.clone(), r.req);
            if self.registrations.get(&r.name) == Some(&key) {
                // The box asked again (its first answer was lost): answer, do not restart it.
                if emit {
                    ctx.send_physical(&input.from, Registered { req: r.req });
                }
                return;
            }
            self.registrations.insert(r.name, key);
        }
        let mut inner = Context::new(CONTROLLER);
        // The controller never reads the clock; a fixed one keeps every replica identical.
        inner.begin(Some(Id::from(input.from.as_str())), 0);
        if input.name == ControllerTimer::NAME {
            match postcard::from_bytes::<ControllerTimer>(&input.bytes) {
                Ok(t) => self.controller.on_timer(&mut inner, &t.name),
                Err(e) => tracing::warn!(replica = self.index, error = %e, "bad timer input"),
            }
        } else {
            let payload = Payload::Encoded {
                name: Id::from(input.name.as_str()),
                bytes: Bytes::from(input.bytes),
            };
            if let Err(e) = self.controller.on_message(&mut inner, payload) {
                tracing::warn!(replica = self.index, from = %input.from, message = %input.name, error = %e, "controller input rejected");
            }
        }
        if emit {
            for effect in inner.take_effects() {
                ctx.emit(effect);
            }
        }
    }

    /// The answer to a BRT question about a box manager, from this replica's own state if it
    /// knows the box. Such answers need no log: a box manager's address changes only when its
    /// box restarts, and then every box learns the new one from the box's own traffic. It
    /// matters because every answer the leader sends to a box it has not talked to yet needs
    /// one (and, through the log, would wait for a decision in the middle of a failover).
    fn box_address(&self, message: &Payload) -> Option<BrtAnswer> {
        let q = message.peek::<ResolveBrt>()?;
        let name = q.id.strip_prefix("$box/")?;
        let addr = self.controller.box_addr(name)?;
        Some(BrtAnswer {
            req: q.req,
            id: q.id.to_string(),
            addr: Some(addr.to_string()),
        })
    }

    fn status(&self, req: u64) -> ControllerStatus {
        let decided = self.node.progress().0 as u64;
        ControllerStatus {
            req,
            index: self.index as u64,
            active: self.node.is_active(),
            leader: self.node.leader(),
            decided,
            applied: self.applied as u64,
        }
    }

    /// The controller this replica drives (its state is that of the applied log prefix).
    pub fn controller(&self) -> &Controller {
        &self.controller
    }
}

impl Agent for ControllerReplica {
    fn on_start(&mut self, ctx: &mut Context) {
        // A number for this incarnation that an earlier one is unlikely to have had.
        self.incarnation = ctx.now_millis().rotate_left(20) ^ ctx.random(i64::MAX) as u64;
        if self.node.start(ctx, self.incarnation) {
            self.pump(ctx);
        } else if self.n() == 1 {
            // A group of one has no peer to recover from: an empty log (every time, without a
            // durable store).
            match self.node.activate(PaxosState::default(), true) {
                Ok(()) => self.pump(ctx),
                Err(e) => tracing::error!(error = %e, "controller replica cannot start"),
            }
        } else {
            self.query(ctx);
        }
        ctx.set_timer(TICK, self.timing.tick);
    }

    fn on_timer(&mut self, ctx: &mut Context, name: &str) {
        if name != TICK {
            // One of the controller's own timers, set through the leader's effects.
            self.propose_timer(ctx, name);
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
        if message.is::<ControllerPaxos>() {
            let batch = message.decode::<ControllerPaxos>()?;
            if self.node.is_active() {
                self.node.handle(batch.messages);
                self.pump(ctx);
            }
        } else if message.is::<ControllerRecoverQuery>() {
            let q = message.decode::<ControllerRecoverQuery>()?;
            let (state, history) = self.node.answer();
            if let Some(peer) = self.peers.get(q.from as usize) {
                ctx.send_physical(
                    peer,
                    ControllerRecoverState {
                        nonce: q.nonce,
                        index: self.index as u64,
                        state,
                        history,
                    },
                );
            }
        } else if message.is::<ControllerRecoverState>() {
            let answer = message.decode::<ControllerRecoverState>()?;
            let from = answer.index as usize;
            if self
                .node
                .take_answer(answer.nonce, from, answer.state, answer.history)?
            {
                // What arrived while recovering is proposed in the pump.
                self.pump(ctx);
            }
        } else if message.is::<GetControllerStatus>() {
            let q = message.decode::<GetControllerStatus>()?;
            let status = self.status(q.req);
            ctx.reply(status);
        } else if let Some(answer) = self.box_address(&message) {
            ctx.reply(answer);
        } else {
            // Everything else is an input of the controller: it goes through the log.
            self.propose(ctx, message)?;
        }
        Ok(())
    }
}

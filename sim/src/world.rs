//! One simulated run: every physical agent of a target in one thread, driven by a seeded
//! scheduler over virtual time.
//!
//! The world is a queue of events ordered by (virtual time in microseconds, sequence number):
//! the delivery of the message at the head of a channel, a timer, a client starting its next
//! operation or giving up on one, a box restarting, a partition healing, a box resuming. Nothing
//! reads a wall clock, nothing iterates a `HashMap`, nothing runs on another thread, so the same
//! [`Scenario`] gives the same run.
//!
//! **Messages.** A channel is the pair (agent that emitted the message, receiving agent); it is a
//! FIFO queue, because the real runtime keeps that order (in-memory queues within a box, one
//! sequenced connection between boxes). Different channels are independent: with `reorder` and
//! `delay` their messages overtake each other. A message crossing boxes travels encoded (postcard
//! bytes), as it would over TCP. What an agent sends while handling a message carries that
//! message's correlation tag; a forward carries the sender and tag it names.
//!
//! **Faults.** A crash empties a box: its agents lose their state and timers; messages between
//! its own agents are lost; of the messages on their way into it, an arbitrary prefix had already
//! been accepted (and is lost with the box), the rest wait for it to come back (the sender's
//! transport retransmits); of the messages on their way out of it, a prefix had already reached
//! the other box, the rest is lost. What its agents synced to their durable stores survives (each
//! agent has a disk, [`MemoryDisk`], that outlives its incarnations), unless the faults include
//! `amnesia`; what they appended without syncing is lost. The restarted box makes its agents
//! afresh from their configuration and calls `on_start`, as the controller would. A partition holds the messages
//! across the cut at the head of their channels until it heals; a pause holds every message and
//! timer of a box until it resumes.
//!
//! **The controller's views.** Primary-backup proxies ask the controller for their views; here
//! the controller is the runtime's own [`ViewService`] in a box of its own (`$controller`, which
//! never crashes or pauses but can be cut off by a partition), fed what the real controller would
//! be: the proxies' messages, and, as its failure detector, a crashed box declared dead
//! [`DETECT_US`] after the crash if it is still down then (alive again once it restarts).
//!
//! **Clients.** Each sender of the target is replaced by workload clients under its identifier:
//! one operation outstanding each, a unique correlation tag per operation, done when a message
//! with that tag comes back. A client that waits too long gives up and is replaced by a fresh one
//! (the old operation stays pending: it may still take effect, or answer late).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};

use crate::scenario::{FaultEvent, FaultKind, Scenario};
use crate::setup::Setup;
use crate::{Property, Rng};
use ovid::agent::Agent;
use ovid::context::{Context, Effect};
use ovid::durable::{DurableLog, MemoryDisk};
use ovid::error::Error;
use ovid::message::{Id, Payload};
use ovid::routing::CONTROLLER;
use ovid::views::{AddBackup, JoinGroup, NewView, RemoveBackup, ViewService, WatchGroup};

/// What the clients' clocks read at virtual time 0: a plausible "now", in milliseconds.
pub(crate) const EPOCH_MS: u64 = 1_750_000_000_000;
/// How long a client waits for an answer before giving up (virtual microseconds).
const PATIENCE_US: u64 = 10_000_000;
/// After the faults heal: how long to wait at most for the last answers...
const SETTLE_MAX_US: u64 = 10_000_000;
/// ...and how long to let the agents' timers run once every operation is answered.
const SETTLE_TAIL_US: u64 = 500_000;
/// At most this many events in a run (a bound, not an expectation).
const MAX_EVENTS: u64 = 5_000_000;
/// At most this many deliveries while draining the network with timers stopped.
const MAX_DRAIN: u64 = 200_000;
/// Correlation tags of client operations: this plus the operation's number.
const TAG_BASE: u64 = 0x05a1_0000_0000_0000;
/// How long after a crash the simulated failure detector declares the box dead (virtual
/// microseconds): the real one's default, three periods of 100 ms.
pub(crate) const DETECT_US: u64 = 300_000;
/// The box the simulated controller lives in.
const CONTROLLER_BOX: &str = "$controller";
/// At most this many trace lines are kept.
const MAX_TRACE: usize = 200_000;

/// One operation of a client, as the checker sees it.
#[derive(Debug, Clone)]
pub(crate) struct Op {
    /// The logical client (process) that issued it.
    pub process: usize,
    /// The identifier it was sent from.
    pub sender: Id,
    /// Its correlation tag.
    pub tag: u64,
    /// The request's message name and postcard bytes.
    pub name: String,
    pub bytes: Vec<u8>,
    /// Position of the invocation in the history (a counter over invocations and returns).
    pub invoke: u64,
    /// Position of the return, if the answer came.
    pub ret: Option<u64>,
    /// The answer: message name and postcard bytes.
    pub reply: Option<(String, Vec<u8>)>,
    /// Virtual times, for the report.
    pub invoked_at: u64,
    pub returned_at: Option<u64>,
}

/// What a run left for the checker.
pub(crate) struct RunOutput {
    pub ops: Vec<Op>,
    pub processes: usize,
    /// Whether a box crashed (then an unanswered operation may have been lost).
    pub crashed: bool,
    /// Snapshot of every live agent at quiescence (or the error taking it).
    pub snapshots: BTreeMap<String, Result<Vec<u8>, String>>,
    /// A violation seen while running (a panic, a stray reply, no quiescence).
    pub violation: Option<(Property, String)>,
    pub trace: Vec<String>,
    /// Crashes, partitions and pauses that happened (events can be skipped: see `inject`).
    pub injected: [u64; 3],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotState {
    Running,
    /// Its box is down.
    Down,
    /// It finished or panicked: messages to it are dropped.
    Stopped,
}

struct Slot {
    in_box: String,
    agent: Option<Box<dyn Agent>>,
    ctx: Option<Context>,
    incarnation: u64,
    /// Armed timers: name → generation of the arming.
    timers: BTreeMap<String, u64>,
    state: SlotState,
}

struct Msg {
    from: Id,
    tag: u64,
    payload: Payload,
    ready: u64,
}

struct Channel {
    src_box: String,
    dst_box: String,
    queue: VecDeque<Msg>,
    /// A delivery event for the head is queued.
    scheduled: bool,
    /// The head waits for a partition to heal or a box to come back.
    blocked: bool,
}

#[derive(Default)]
struct BoxState {
    down: bool,
    generation: u64,
    /// Pause number and when it ends.
    paused: Option<(u64, u64)>,
}

struct Process {
    sender: Id,
    rng: Rng,
    waiting: Option<usize>,
    retired: bool,
}

enum Ev {
    Deliver(Id, Id),
    Timer {
        agent: Id,
        incarnation: u64,
        name: String,
        generation: u64,
    },
    Issue(usize),
    Timeout(usize, usize),
    Restart(String, u64),
    Heal(u64),
    Resume(String, u64),
    /// The failure detector's verdict on a crashed box (its crash generation).
    Detect(String, u64),
}

enum Call {
    Start,
    Message(Payload),
    Timer(String),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Workload,
    Settle,
    Drain,
}

struct World<'a> {
    setup: &'a Setup,
    scenario: &'a Scenario,
    now: u64,
    seq: u64,
    events_run: u64,
    queue: BTreeMap<(u64, u64), Ev>,
    agents: BTreeMap<Id, Slot>,
    /// Each agent's disk, which outlives its incarnations.
    disks: BTreeMap<Id, Arc<Mutex<MemoryDisk>>>,
    senders: BTreeMap<Id, String>,
    boxes: BTreeMap<String, BoxState>,
    channels: BTreeMap<(Id, Id), Channel>,
    partitions: BTreeMap<u64, BTreeSet<String>>,
    next_fault: u64,
    art: BTreeMap<(Id, Id), Option<Id>>,
    net: Rng,
    loss: Rng,
    processes: Vec<Process>,
    ops: Vec<Op>,
    by_tag: BTreeMap<u64, usize>,
    issued: usize,
    history: u64,
    faults: Vec<FaultEvent>,
    next_event: usize,
    timer_generation: u64,
    crashed: bool,
    /// (replica set, replica) that crashed in this run, for the `f` bound without `churn`.
    ever_crashed: BTreeSet<(usize, usize)>,
    injected: [u64; 3],
    phase: Phase,
    violation: Option<(Property, String)>,
    trace: Option<Vec<String>>,
    /// The controller's views of primary-backup groups.
    views: ViewService,
    /// Boxes the failure detector has declared dead.
    dead: BTreeSet<String>,
}

/// Mixes a seed and a stream number into the seed of an independent generator.
pub(crate) fn stream(seed: u64, n: u64) -> Rng {
    let mut r = Rng::new(seed ^ n.wrapping_mul(0xd134_2543_de82_ef95));
    r.next_u64();
    r
}

/// Runs `scenario` against the agents of `setup`; `trace` keeps a line per event.
pub(crate) fn run(setup: &Setup, scenario: &Scenario, trace: bool) -> Result<RunOutput, Error> {
    let mut w = World::new(setup, scenario, trace);
    w.start()?;
    w.workload()?;
    if w.violation.is_none() {
        w.heal_all()?;
        w.settle()?;
    }
    if w.violation.is_none() {
        w.drain()?;
    }
    Ok(w.finish())
}

impl<'a> World<'a> {
    fn new(setup: &'a Setup, scenario: &'a Scenario, trace: bool) -> Self {
        let mut faults = scenario.events.clone();
        faults.sort_by_key(|e| e.at_op);
        let boxes = setup
            .boxes
            .iter()
            .map(|b| (b.clone(), BoxState::default()))
            .collect();
        let senders = setup
            .senders
            .iter()
            .map(|(s, b)| (Id::from(s.as_str()), b.clone()))
            .collect();
        World {
            setup,
            scenario,
            now: 0,
            seq: 0,
            events_run: 0,
            queue: BTreeMap::new(),
            agents: BTreeMap::new(),
            disks: BTreeMap::new(),
            senders,
            boxes,
            channels: BTreeMap::new(),
            partitions: BTreeMap::new(),
            next_fault: 0,
            art: BTreeMap::new(),
            net: stream(scenario.seed, 1),
            loss: stream(scenario.seed, 2),
            processes: Vec::new(),
            ops: Vec::new(),
            by_tag: BTreeMap::new(),
            issued: 0,
            history: 0,
            faults,
            next_event: 0,
            timer_generation: 0,
            crashed: false,
            ever_crashed: BTreeSet::new(),
            injected: [0; 3],
            phase: Phase::Workload,
            violation: None,
            trace: trace.then(Vec::new),
            views: ViewService::new(),
            dead: BTreeSet::new(),
        }
    }

    fn note(&mut self, line: impl FnOnce() -> String) {
        if let Some(t) = &mut self.trace
            && t.len() < MAX_TRACE
        {
            t.push(format!(
                "{:>12} {}",
                super::scenario::millis(self.now),
                line()
            ));
        }
    }

    fn violate(&mut self, property: Property, detail: String) {
        if self.violation.is_none() {
            self.note(|| format!("VIOLATION {property}: {detail}"));
            self.violation = Some((property, detail));
        }
    }

    fn schedule(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        self.queue.insert((at.max(self.now), self.seq), ev);
    }

    // ----- setting up -------------------------------------------------------------------

    fn start(&mut self) -> Result<(), Error> {
        for a in &self.setup.agents {
            self.agents.insert(
                Id::from(a.id.as_str()),
                Slot {
                    in_box: a.in_box.clone(),
                    agent: None,
                    ctx: None,
                    incarnation: 0,
                    timers: BTreeMap::new(),
                    state: SlotState::Down,
                },
            );
        }
        let boxes = self.setup.boxes.clone();
        for b in &boxes {
            self.make_agents(b)?;
        }
        for b in &boxes {
            self.start_agents(b);
        }
        let n = self.scenario.clients.max(self.setup.senders.len()).max(1);
        for i in 0..n {
            let sender = Id::from(self.setup.senders[i % self.setup.senders.len()].0.as_str());
            self.spawn_process(sender);
        }
        Ok(())
    }

    /// Makes the agents of box `b` afresh, from their kind and configuration.
    fn make_agents(&mut self, b: &str) -> Result<(), Error> {
        for a in self.setup.agents.iter().filter(|a| a.in_box == b) {
            let agent = (a.factory)(&a.config).map_err(|e| {
                Error::Invalid(format!(
                    "cannot make agent `{}` of kind `{}`: {e}",
                    a.id, a.kind
                ))
            })?;
            let slot = self
                .agents
                .get_mut(a.id.as_str())
                .expect("every run agent has a slot");
            let disk = self
                .disks
                .entry(Id::from(a.id.as_str()))
                .or_default()
                .clone();
            let mut ctx = Context::new(a.id.as_str());
            ctx.set_durable(DurableLog::memory(disk));
            slot.agent = Some(agent);
            slot.ctx = Some(ctx);
            slot.incarnation += 1;
            slot.timers.clear();
            slot.state = SlotState::Running;
        }
        Ok(())
    }

    fn start_agents(&mut self, b: &str) {
        let ids: Vec<Id> = self
            .setup
            .agents
            .iter()
            .filter(|a| a.in_box == b)
            .map(|a| Id::from(a.id.as_str()))
            .collect();
        for id in ids {
            self.call(&id, None, 0, Call::Start);
        }
    }

    fn spawn_process(&mut self, sender: Id) {
        let p = self.processes.len();
        let rng = stream(self.scenario.seed, 1000 + p as u64);
        self.processes.push(Process {
            sender,
            rng,
            waiting: None,
            retired: false,
        });
        let think = self.processes[p].rng.below(2_000);
        self.schedule(self.now + think, Ev::Issue(p));
    }

    // ----- the phases -------------------------------------------------------------------

    fn workload_done(&self) -> bool {
        self.issued >= self.scenario.ops
            && self
                .processes
                .iter()
                .all(|p| p.retired || p.waiting.is_none())
    }

    fn pending(&self) -> usize {
        self.ops.iter().filter(|o| o.ret.is_none()).count()
    }

    /// Runs the next event; `false` if there is none.
    fn step(&mut self) -> Result<bool, Error> {
        let Some(((at, _), ev)) = self.queue.pop_first() else {
            return Ok(false);
        };
        self.now = at;
        self.events_run += 1;
        self.handle(ev)?;
        Ok(true)
    }

    fn over_budget(&mut self) -> bool {
        if self.events_run > MAX_EVENTS {
            let detail = format!(
                "the run did not end within {MAX_EVENTS} events ({} of {} operations issued, {} unanswered, virtual time {})",
                self.issued,
                self.scenario.ops,
                self.pending(),
                super::scenario::millis(self.now)
            );
            self.violate(Property::Quiescence, detail);
            return true;
        }
        false
    }

    fn workload(&mut self) -> Result<(), Error> {
        while !self.workload_done() && self.violation.is_none() {
            if !self.step()? || self.over_budget() {
                break;
            }
        }
        Ok(())
    }

    /// Ends every fault: restarts crashed boxes, heals partitions, resumes paused boxes.
    fn heal_all(&mut self) -> Result<(), Error> {
        self.phase = Phase::Settle;
        self.note(|| "workload done: ending every fault".to_string());
        let down: Vec<String> = self
            .boxes
            .iter()
            .filter(|(_, s)| s.down)
            .map(|(b, _)| b.clone())
            .collect();
        for b in &down {
            self.restart(b)?;
        }
        self.partitions.clear();
        for s in self.boxes.values_mut() {
            s.paused = None;
        }
        self.unblock();
        Ok(())
    }

    fn settle(&mut self) -> Result<(), Error> {
        let healed = self.now;
        let mut answered_at = None;
        while self.violation.is_none() {
            if answered_at.is_none() && self.pending() == 0 {
                answered_at = Some(self.now);
            }
            let deadline = match answered_at {
                Some(t) => (t + SETTLE_TAIL_US).min(healed + SETTLE_MAX_US),
                None => healed + SETTLE_MAX_US,
            };
            match self.queue.first_key_value() {
                Some(((at, _), _)) if *at <= deadline => {}
                _ => break,
            }
            if !self.step()? || self.over_budget() {
                break;
            }
        }
        Ok(())
    }

    /// Stops the timers and delivers what is in flight, until nothing is.
    fn drain(&mut self) -> Result<(), Error> {
        self.phase = Phase::Drain;
        self.note(|| "timers stopped: draining the network".to_string());
        let start = self.events_run;
        while self.violation.is_none() {
            if !self.step()? {
                break;
            }
            if self.events_run - start > MAX_DRAIN {
                let in_flight: usize = self.channels.values().map(|c| c.queue.len()).sum();
                self.violate(
                    Property::Quiescence,
                    format!("messages are still in flight ({in_flight}) after {MAX_DRAIN} deliveries with every timer stopped: the agents keep talking"),
                );
                break;
            }
        }
        Ok(())
    }

    fn finish(mut self) -> RunOutput {
        let mut snapshots = BTreeMap::new();
        for (id, slot) in &self.agents {
            if slot.state == SlotState::Running
                && let Some(agent) = &slot.agent
            {
                snapshots.insert(id.to_string(), agent.snapshot().map_err(|e| e.to_string()));
            }
        }
        RunOutput {
            ops: std::mem::take(&mut self.ops),
            processes: self.processes.len(),
            crashed: self.crashed,
            snapshots,
            violation: self.violation.take(),
            trace: self.trace.take().unwrap_or_default(),
            injected: self.injected,
        }
    }

    // ----- events -----------------------------------------------------------------------

    fn handle(&mut self, ev: Ev) -> Result<(), Error> {
        match ev {
            Ev::Deliver(src, dst) => self.deliver(src, dst)?,
            Ev::Timer {
                agent,
                incarnation,
                name,
                generation,
            } => {
                if self.phase == Phase::Drain {
                    return Ok(());
                }
                let Some(slot) = self.agents.get(&agent) else {
                    return Ok(());
                };
                if slot.state != SlotState::Running
                    || slot.incarnation != incarnation
                    || slot.timers.get(&name) != Some(&generation)
                {
                    return Ok(());
                }
                if let Some((_, until)) = self.boxes.get(&slot.in_box).and_then(|b| b.paused) {
                    self.schedule(
                        until,
                        Ev::Timer {
                            agent,
                            incarnation,
                            name,
                            generation,
                        },
                    );
                    return Ok(());
                }
                self.agents
                    .get_mut(&agent)
                    .expect("checked")
                    .timers
                    .remove(&name);
                self.note(|| format!("timer {name} fires at {agent}"));
                self.call(&agent, None, 0, Call::Timer(name));
            }
            Ev::Issue(p) => self.issue(p)?,
            Ev::Timeout(p, op) => {
                if self.phase != Phase::Workload {
                    return Ok(());
                }
                let proc = &mut self.processes[p];
                if proc.waiting == Some(op) && !proc.retired {
                    proc.retired = true;
                    let sender = proc.sender.clone();
                    self.note(|| {
                        format!(
                            "client {p} gives up on operation {op}; a new client takes its place"
                        )
                    });
                    self.spawn_process(sender);
                }
            }
            Ev::Restart(b, generation) => {
                if self
                    .boxes
                    .get(&b)
                    .is_some_and(|s| s.down && s.generation == generation)
                {
                    self.restart(&b)?;
                }
            }
            Ev::Heal(id) => {
                if self.partitions.remove(&id).is_some() {
                    self.note(|| format!("partition {id} heals"));
                    self.unblock();
                }
            }
            Ev::Detect(b, generation) => {
                if self
                    .boxes
                    .get(&b)
                    .is_some_and(|s| s.down && s.generation == generation)
                {
                    self.note(|| format!("the controller declares box {b} dead"));
                    self.dead.insert(b);
                    let is_dead = self.is_dead();
                    let out = self.views.failed(&is_dead);
                    self.send_from_controller(out);
                }
            }
            Ev::Resume(b, id) => {
                let s = self.boxes.get_mut(&b).expect("a known box");
                if s.paused.is_some_and(|(p, _)| p == id) {
                    s.paused = None;
                    self.note(|| format!("box {b} resumes"));
                    self.unblock();
                }
            }
        }
        Ok(())
    }

    fn issue(&mut self, p: usize) -> Result<(), Error> {
        if self.phase != Phase::Workload
            || self.processes[p].retired
            || self.processes[p].waiting.is_some()
        {
            return Ok(());
        }
        if self.issued >= self.scenario.ops {
            return Ok(());
        }
        while self.next_event < self.faults.len()
            && self.faults[self.next_event].at_op <= self.issued
        {
            let e = self.faults[self.next_event].clone();
            self.next_event += 1;
            self.inject(&e)?;
        }
        let index = self.ops.len();
        let tag = TAG_BASE + index as u64 + 1;
        let sender = self.processes[p].sender.clone();
        let payload = (self.setup.target.request)(&mut self.processes[p].rng);
        let name = payload.name().to_string();
        let bytes = payload.to_bytes()?.to_vec();
        self.history += 1;
        self.ops.push(Op {
            process: p,
            sender: sender.clone(),
            tag,
            name: name.clone(),
            bytes,
            invoke: self.history,
            ret: None,
            reply: None,
            invoked_at: self.now,
            returned_at: None,
        });
        self.by_tag.insert(tag, index);
        self.issued += 1;
        self.processes[p].waiting = Some(index);
        self.schedule(self.now + PATIENCE_US, Ev::Timeout(p, index));
        let target = Id::from(self.setup.target.id.as_str());
        self.note(|| {
            format!("client {p} ({sender}) starts operation {index}: {name}, tag {tag:#x}")
        });
        match self.resolve(&sender, &target) {
            Some(dst) => self.send(&sender, dst, sender.clone(), tag, payload),
            None => self.note(|| format!("{sender} cannot resolve {target}: request dropped")),
        }
        Ok(())
    }

    fn reply_to_client(&mut self, client: &Id, msg: Msg) {
        let Some(&index) = self.by_tag.get(&msg.tag) else {
            self.note(|| {
                format!(
                    "{client} ignores {} with unknown tag {:#x}",
                    msg.payload.name(),
                    msg.tag
                )
            });
            return;
        };
        let name = msg.payload.name().to_string();
        let bytes = match msg.payload.to_bytes() {
            Ok(b) => b.to_vec(),
            Err(e) => {
                self.note(|| format!("cannot encode a reply to {client}: {e}"));
                return;
            }
        };
        let op = &self.ops[index];
        if &op.sender != client {
            let detail = format!(
                "the reply {} to operation {index} (tag {:#x}, sent by {}) was delivered to {client}",
                super::check::show(&name, &bytes),
                op.tag,
                op.sender
            );
            self.violate(Property::OneReply, detail);
            return;
        }
        if let Some((first, first_bytes)) = &op.reply {
            let detail = format!(
                "operation {index} ({} from {client}, tag {:#x}) was answered twice: {} then {}",
                super::check::show(&op.name, &op.bytes),
                op.tag,
                super::check::show(first, first_bytes),
                super::check::show(&name, &bytes)
            );
            self.violate(Property::OneReply, detail);
            return;
        }
        self.history += 1;
        let op = &mut self.ops[index];
        op.ret = Some(self.history);
        op.returned_at = Some(self.now);
        op.reply = Some((name.clone(), bytes));
        let p = op.process;
        self.note(|| format!("client {p} ({client}) gets {name} for operation {index}"));
        let proc = &mut self.processes[p];
        if proc.waiting == Some(index) {
            proc.waiting = None;
            if !proc.retired {
                let think = proc.rng.below(2_000);
                self.schedule(self.now + think, Ev::Issue(p));
            }
        }
    }

    // ----- agents -----------------------------------------------------------------------

    fn call(&mut self, id: &Id, sender: Option<Id>, tag: u64, what: Call) {
        let Some(slot) = self.agents.get_mut(id) else {
            return;
        };
        if slot.state != SlotState::Running {
            return;
        }
        let (Some(mut agent), Some(mut ctx)) = (slot.agent.take(), slot.ctx.take()) else {
            return;
        };
        ctx.begin(sender, EPOCH_MS + self.now / 1000);
        ctx.set_tag(tag);
        let what_name = match &what {
            Call::Start => "on_start".to_string(),
            Call::Message(p) => format!("message {}", p.name()),
            Call::Timer(n) => format!("timer {n}"),
        };
        let result = super::in_agent(|| {
            std::panic::catch_unwind(AssertUnwindSafe(|| match what {
                Call::Start => {
                    agent.on_start(&mut ctx);
                    Ok(())
                }
                Call::Message(p) => agent.on_message(&mut ctx, p),
                Call::Timer(n) => {
                    agent.on_timer(&mut ctx, &n);
                    Ok(())
                }
            }))
        });
        let effects = ctx.take_effects();
        let finished = ctx.is_finished();
        let handled = ctx.tag();
        let slot = self.agents.get_mut(id).expect("still there");
        slot.agent = Some(agent);
        slot.ctx = Some(ctx);
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => self.note(|| format!("{id} rejects {what_name}: {e}")),
            Err(panic) => {
                let why = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "(no message)".to_string());
                self.agents.get_mut(id).expect("still there").state = SlotState::Stopped;
                self.violate(
                    Property::NoPanic,
                    format!("agent `{id}` panicked handling {what_name}: {why}"),
                );
            }
        }
        if finished {
            self.agents.get_mut(id).expect("still there").state = SlotState::Stopped;
            self.note(|| format!("{id} finished"));
        }
        self.apply(id, handled, effects);
    }

    fn apply(&mut self, me: &Id, tag: u64, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::Send { to, payload } => match self.resolve(me, &to) {
                    Some(dst) => self.send(me, dst, me.clone(), tag, payload),
                    None => self
                        .note(|| format!("{me} cannot resolve {to}: {} dropped", payload.name())),
                },
                Effect::SendPhysical { to, payload } => self.send(me, to, me.clone(), tag, payload),
                Effect::Forward {
                    to,
                    physical,
                    from,
                    tag,
                    payload,
                } => {
                    let dst = if physical {
                        Some(to.clone())
                    } else {
                        self.resolve(me, &to)
                    };
                    match dst {
                        Some(dst) => self.send(me, dst, from, tag, payload),
                        None => self.note(|| {
                            format!("{me} cannot resolve {to}: {} dropped", payload.name())
                        }),
                    }
                }
                Effect::SetTimer { name, after } => {
                    self.timer_generation += 1;
                    let generation = self.timer_generation;
                    let slot = self.agents.get_mut(me).expect("the emitter runs");
                    slot.timers.insert(name.clone(), generation);
                    let incarnation = slot.incarnation;
                    let at = self
                        .now
                        .saturating_add(u64::try_from(after.as_micros()).unwrap_or(u64::MAX));
                    self.schedule(
                        at,
                        Ev::Timer {
                            agent: me.clone(),
                            incarnation,
                            name,
                            generation,
                        },
                    );
                }
                Effect::CancelTimer { name } => {
                    if let Some(slot) = self.agents.get_mut(me) {
                        slot.timers.remove(&name);
                    }
                }
                Effect::Print(line) => self.note(|| format!("{me} prints: {line}")),
                Effect::Metric { .. } => {}
            }
        }
    }

    fn resolve(&mut self, agent: &Id, ident: &Id) -> Option<Id> {
        let key = (agent.clone(), ident.clone());
        if let Some(hit) = self.art.get(&key) {
            return hit.clone();
        }
        let answer = self
            .setup
            .resolve(agent, ident)
            .map(|p| Id::from(p.as_str()));
        self.art.insert(key, answer.clone());
        answer
    }

    fn box_of(&self, id: &str) -> Option<String> {
        if id == CONTROLLER {
            return Some(CONTROLLER_BOX.to_string());
        }
        self.agents
            .get(id)
            .map(|s| s.in_box.clone())
            .or_else(|| self.senders.get(id).cloned())
    }

    /// Puts a message on the channel (emitter → dst), with `from` as the sender the receiver sees.
    fn send(&mut self, emitter: &Id, dst: Id, from: Id, tag: u64, payload: Payload) {
        let Some(dst_box) = self.box_of(&dst) else {
            self.note(|| {
                format!(
                    "{emitter} → {dst}: {} dropped (not an agent of this target)",
                    payload.name()
                )
            });
            return;
        };
        let src_box = self.box_of(emitter).unwrap_or_default();
        let payload = if src_box != dst_box {
            match payload {
                Payload::Local(m) => {
                    let mut bytes = bytes::BytesMut::new();
                    match m.encode_into(&mut bytes) {
                        Ok(()) => Payload::Encoded {
                            name: m.name().into(),
                            bytes: bytes.freeze(),
                        },
                        Err(e) => {
                            self.note(|| format!("{emitter} → {dst}: cannot encode: {e}"));
                            return;
                        }
                    }
                }
                encoded => encoded,
            }
        } else {
            payload
        };
        let latency = self.latency(&src_box, &dst_box);
        let ready = self.now + latency;
        self.note(|| {
            format!(
                "{emitter} → {dst}: {} (from {from}, tag {tag:#x}) arrives in {}",
                payload.name(),
                super::scenario::millis(latency)
            )
        });
        let key = (emitter.clone(), dst.clone());
        let ch = self.channels.entry(key.clone()).or_insert_with(|| Channel {
            src_box,
            dst_box,
            queue: VecDeque::new(),
            scheduled: false,
            blocked: false,
        });
        ch.queue.push_back(Msg {
            from,
            tag,
            payload,
            ready,
        });
        if !ch.scheduled && !ch.blocked {
            ch.scheduled = true;
            let at = ch.queue.front().map(|m| m.ready).unwrap_or(ready);
            self.schedule(at, Ev::Deliver(key.0, key.1));
        }
    }

    fn latency(&mut self, a: &str, b: &str) -> u64 {
        let same = a == b;
        let f = self.scenario.faults;
        let mut l = match (f.reorder, same) {
            (true, true) => 1 + self.net.below(500),
            (true, false) => 100 + self.net.below(2_900),
            (false, true) => 20,
            (false, false) => 300,
        };
        if f.delay {
            let r = self.net.below(100);
            if r < 2 {
                l += 100_000 + self.net.below(1_400_000);
            } else if r < 15 {
                l += 1_000 + self.net.below(99_000);
            }
        }
        l
    }

    fn cut(&self, a: &str, b: &str) -> bool {
        a != b
            && self
                .partitions
                .values()
                .any(|side| side.contains(a) != side.contains(b))
    }

    fn deliverable(&self, src_box: &str, dst_box: &str) -> bool {
        let dst = self.boxes.get(dst_box);
        !self.cut(src_box, dst_box) && !dst.is_some_and(|s| s.down || s.paused.is_some())
    }

    fn deliver(&mut self, src: Id, dst: Id) -> Result<(), Error> {
        let key = (src, dst);
        let now = self.now;
        let (deliverable, head_ready) = {
            let Some(ch) = self.channels.get(&key) else {
                return Ok(());
            };
            let Some(head) = ch.queue.front() else {
                self.channels.get_mut(&key).expect("exists").scheduled = false;
                return Ok(());
            };
            (self.deliverable(&ch.src_box, &ch.dst_box), head.ready)
        };
        let ch = self.channels.get_mut(&key).expect("exists");
        ch.scheduled = false;
        if head_ready > now {
            ch.scheduled = true;
            self.schedule(head_ready, Ev::Deliver(key.0, key.1));
            return Ok(());
        }
        if !deliverable {
            ch.blocked = true;
            let (s, d) = (ch.src_box.clone(), ch.dst_box.clone());
            self.note(|| format!("{} → {}: held ({s} → {d} is cut off or down)", key.0, key.1));
            return Ok(());
        }
        let msg = ch.queue.pop_front().expect("a head");
        if let Some(next) = ch.queue.front() {
            ch.scheduled = true;
            let at = next.ready.max(now);
            self.schedule(at, Ev::Deliver(key.0.clone(), key.1.clone()));
        }
        let (_, dst) = key;
        if &*dst == CONTROLLER {
            self.controller_receives(msg);
            return Ok(());
        }
        if self.senders.contains_key(&dst) {
            self.reply_to_client(&dst, msg);
            return Ok(());
        }
        match self.agents.get(&dst).map(|s| s.state) {
            Some(SlotState::Running) => {
                self.note(|| {
                    format!(
                        "{dst} handles {} from {} (tag {:#x})",
                        msg.payload.name(),
                        msg.from,
                        msg.tag
                    )
                });
                self.call(&dst, Some(msg.from), msg.tag, Call::Message(msg.payload));
            }
            _ => self.note(|| format!("{dst} is not running: {} dropped", msg.payload.name())),
        }
        Ok(())
    }

    /// Whether an agent's box is declared dead, as the controller sees it.
    fn is_dead(&self) -> impl Fn(&str) -> bool + use<> {
        let dead = self.dead.clone();
        let boxes: BTreeMap<String, String> = self
            .agents
            .iter()
            .map(|(id, s)| (id.to_string(), s.in_box.clone()))
            .collect();
        move |id: &str| boxes.get(id).is_some_and(|b| dead.contains(b))
    }

    /// The controller handles a message: the view service's part of it (the simulator runs
    /// nothing else of the controller).
    fn controller_receives(&mut self, msg: Msg) {
        let from = msg.from.to_string();
        let is_dead = self.is_dead();
        let p = msg.payload;
        let name = p.name().to_string();
        let out = if p.is::<JoinGroup>() {
            p.decode::<JoinGroup>()
                .map(|j| self.views.join(&j, &is_dead))
        } else if p.is::<WatchGroup>() {
            p.decode::<WatchGroup>()
                .map(|w| self.views.watch(&w, &from))
        } else if p.is::<RemoveBackup>() {
            p.decode::<RemoveBackup>()
                .map(|r| self.views.remove_backup(&r, &from))
        } else if p.is::<AddBackup>() {
            p.decode::<AddBackup>()
                .map(|a| self.views.add_backup(&a, &from, &is_dead))
        } else {
            self.note(|| format!("the controller ignores {name} from {from}"));
            return;
        };
        match out {
            Ok(out) => {
                self.note(|| format!("the controller handles {name} from {from}"));
                self.send_from_controller(out);
            }
            Err(e) => self.note(|| format!("the controller cannot decode {name}: {e}")),
        }
    }

    /// Sends the view service's messages, from the controller.
    fn send_from_controller(&mut self, out: Vec<(String, NewView)>) {
        let controller = Id::from(CONTROLLER);
        for (to, view) in out {
            self.send(
                &controller,
                Id::from(to.as_str()),
                controller.clone(),
                0,
                Payload::new(view),
            );
        }
    }

    /// Schedules the held channels whose way is clear again.
    fn unblock(&mut self) {
        let keys: Vec<(Id, Id)> = self
            .channels
            .iter()
            .filter(|(_, c)| c.blocked)
            .map(|(k, _)| k.clone())
            .collect();
        for key in keys {
            let (src_box, dst_box) = {
                let c = &self.channels[&key];
                (c.src_box.clone(), c.dst_box.clone())
            };
            if !self.deliverable(&src_box, &dst_box) {
                continue;
            }
            let latency = self.latency(&src_box, &dst_box);
            let ch = self.channels.get_mut(&key).expect("exists");
            ch.blocked = false;
            if !ch.queue.is_empty() && !ch.scheduled {
                ch.scheduled = true;
                let at = self.now + latency;
                self.schedule(at, Ev::Deliver(key.0, key.1));
            }
        }
    }

    // ----- faults -----------------------------------------------------------------------

    fn inject(&mut self, e: &FaultEvent) -> Result<(), Error> {
        match &e.kind {
            FaultKind::Crash(b) => self.crash(b, e.duration_us),
            FaultKind::Partition(side) => {
                if self.setup.boxes.len() < 2 {
                    self.note(|| format!("{e} skipped: one box only"));
                    return Ok(());
                }
                self.next_fault += 1;
                let id = self.next_fault;
                self.partitions.insert(id, side.iter().cloned().collect());
                self.injected[1] += 1;
                self.note(|| {
                    format!(
                        "partition {id}: {} cut off from the other boxes",
                        side.join(", ")
                    )
                });
                self.schedule(self.now + e.duration_us, Ev::Heal(id));
            }
            FaultKind::Pause(b) => {
                let Some(s) = self.boxes.get(b) else {
                    self.note(|| format!("{e} skipped: no such box"));
                    return Ok(());
                };
                if s.down || s.paused.is_some() || !self.setup.pausable.contains(b) {
                    self.note(|| {
                        format!("{e} skipped: the box is down, paused already, or holds a client")
                    });
                    return Ok(());
                }
                self.next_fault += 1;
                let id = self.next_fault;
                let until = self.now + e.duration_us;
                self.boxes.get_mut(b).expect("checked").paused = Some((id, until));
                self.injected[2] += 1;
                self.note(|| format!("box {b} pauses until {}", super::scenario::millis(until)));
                self.schedule(until, Ev::Resume(b.clone(), id));
            }
        }
        Ok(())
    }

    fn crash(&mut self, b: &str, duration: u64) {
        if !self.setup.crashable.iter().any(|c| c == b) {
            self.note(|| format!("crash({b}) skipped: that box may not crash"));
            return;
        }
        if self.boxes.get(b).is_none_or(|s| s.down) {
            self.note(|| format!("crash({b}) skipped: already down"));
            return;
        }
        let setup = self.setup;
        let churn = self.scenario.faults.churn;
        let mut hit = Vec::new();
        for (k, set) in setup.replica_sets.iter().enumerate() {
            let box_of = |agent: &str| {
                self.agents
                    .get(agent)
                    .map(|s| s.in_box.clone())
                    .unwrap_or_default()
            };
            let here: BTreeSet<usize> = set
                .members
                .iter()
                .filter(|(a, _)| box_of(a) == b)
                .map(|(_, i)| *i)
                .collect();
            // Down at once (churn), or ever crashed in this run (the default).
            let mut counted: BTreeSet<usize> = set
                .members
                .iter()
                .filter(|(a, _)| self.boxes.get(&box_of(a)).is_some_and(|s| s.down))
                .map(|(_, i)| *i)
                .collect();
            if !churn || !set.churn {
                counted.extend(
                    self.ever_crashed
                        .iter()
                        .filter(|(s, _)| *s == k)
                        .map(|(_, i)| *i),
                );
            }
            counted.extend(here.iter().copied());
            if counted.len() > set.f {
                let (node, f) = (set.node.clone(), set.f);
                let how = if churn {
                    "down at once"
                } else {
                    "crashed in this run (churn allows more)"
                };
                self.note(|| format!("crash({b}) skipped: {} replicas of {node} would be {how}, it tolerates {f}", counted.len()));
                return;
            }
            hit.extend(here.into_iter().map(|i| (k, i)));
        }
        self.ever_crashed.extend(hit);
        self.crashed = true;
        self.injected[0] += 1;
        let state = self.boxes.get_mut(b).expect("checked");
        state.down = true;
        state.paused = None;
        state.generation += 1;
        let generation = state.generation;
        let amnesia = self.scenario.faults.amnesia;
        for (id, slot) in self.agents.iter_mut().filter(|(_, s)| s.in_box == b) {
            if let Some(disk) = self.disks.get(id) {
                let mut disk = disk.lock().unwrap_or_else(|p| p.into_inner());
                if amnesia {
                    *disk = MemoryDisk::default();
                } else {
                    disk.crash();
                }
            }
            slot.agent = None;
            slot.ctx = None;
            slot.timers.clear();
            slot.state = SlotState::Down;
        }
        let mut lost = 0usize;
        for ch in self.channels.values_mut() {
            let (from_here, to_here) = (ch.src_box == b, ch.dst_box == b);
            let before = ch.queue.len();
            if from_here && to_here {
                ch.queue.clear();
            } else if to_here {
                // Accepted by the crashed box before it died: lost with it; the rest waits.
                let accepted = self.loss.below(before as u64 + 1) as usize;
                ch.queue.drain(..accepted);
            } else if from_here {
                // Already handed to the other box: kept; still in the crashed box: lost.
                let sent = self.loss.below(before as u64 + 1) as usize;
                ch.queue.truncate(sent);
            }
            lost += before - ch.queue.len();
        }
        self.note(|| {
            format!(
                "box {b} crashes ({lost} messages lost); restarts in {}",
                super::scenario::millis(duration)
            )
        });
        self.schedule(self.now + duration, Ev::Restart(b.to_string(), generation));
        self.schedule(self.now + DETECT_US, Ev::Detect(b.to_string(), generation));
    }

    fn restart(&mut self, b: &str) -> Result<(), Error> {
        let state = self.boxes.get_mut(b).expect("a known box");
        state.down = false;
        state.generation += 1;
        self.dead.remove(b);
        self.note(|| format!("box {b} restarts"));
        self.make_agents(b)?;
        self.start_agents(b);
        self.unblock();
        Ok(())
    }
}

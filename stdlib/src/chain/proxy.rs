//! `ChainProxy`: in front of one copy, as the head, a middle member or the tail of the chain.
//!
//! The chain is the controller's view (`ovid::views`): head = the view's primary, then its
//! backups in the order the view lists them, tail = the last. Who stands where is the
//! controller's decision, never the proxies': each proxy joins its group (`JoinGroup`, with its
//! incarnation) and acts on the newest view it is sent (`NewView`). Every message between
//! proxies carries its view number and is dropped by a proxy in another view (one from a view
//! not installed yet is kept until it is), so a member cut out of the chain is not heard.
//!
//! * **Head.** It numbers every request it is given (its log), gives it to its copy and streams
//!   it to its successor ([`Entries`]). It never answers.
//! * **Every member** applies what its predecessor streams, in order, passes it on, and
//!   acknowledges it upstream ([`Ack`]: its own length, and the tail's, relayed).
//! * **Tail.** It answers the ingress proxy once its copy has replied. The tail has applied a
//!   prefix of every other member's log, so what it answers is acknowledged by the whole chain.
//! * **Failover** is the view service's: a member whose box is declared dead leaves the view.
//!   If it was the head, its successor (which holds everything any member downstream holds)
//!   heads the next view; if it was the tail, its predecessor (which holds everything the tail
//!   answered) is the tail and answers what it applied that nobody answered; if it was in the
//!   middle, its successor tells its new predecessor how much it holds and gets the rest.
//! * **A member outside the view** (restarted, or dropped) joins the head ([`Join`], with the
//!   length and digest of its log) and gets the committed entries ([`CatchUp`]: those the tail
//!   holds). Once it holds them all, the head stops taking writes (it holds them) until the
//!   chain has drained to the tail and the joiner holds the whole log, then asks the controller
//!   to add it (`AddBackup`). The view service places an added member by index, not always
//!   last, so draining first is what keeps every member's log a prefix of its predecessor's:
//!   at the moment of the change every member holds the same log. A head that was replaced
//!   while alive and applied writes nobody acknowledged is refused ([`Refused`]): its copy
//!   diverged, so it may not rejoin until it restarts.
//!
//! Every member runs the log through replicate's [`Applier`], so a retried request (which the
//! head logs again) runs once, and the tail answers the retry with the first execution's reply.
//!
//! (Over 600 lines because it is one state machine whose positions share the log, the applier
//! and the streams, and a member changes position with every view; the head's side of adding a
//! member is in `join`, the hand-driven tests in `tests`.)

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use ovid::views::{JoinGroup, View};
use ovid::{Agent, CONTROLLER, Context, Error, Id, Payload};
use serde::{Deserialize, Serialize};

use super::messages::{Ack, CatchUp, ChainStatus, Entries, Entry, Join, Position, Refused, Status};
use crate::expansion::{Args, int};
use crate::primary_backup::messages::digest;
use crate::proxy;
use crate::replicate::messages::{Command, Outcome, Reply, Submit};
use crate::replicate::{Applier, Step};
use crate::view_member::{self, Early, PeerMessage, ViewMember};

/// The proxy's kind, as the expansion names it.
pub const KIND: &str = "ChainProxy";

mod join;
#[cfg(test)]
mod tests;

use join::Head;

const TICK: &str = "chain::tick";

/// Ticks a stream waits for an acknowledgement before sending again what was not acknowledged
/// (it may have been dropped with a view change).
const RESEND_TICKS: u32 = 5;

/// At most this many writes are held while the head drains the chain to add a member (the
/// oldest go first; their ingress proxies submit them again).
const HELD_LIMIT: usize = 4096;

/// How often a proxy acts on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// The period of its timer (configuration `tick_ms`).
    pub tick: Duration,
    /// Ticks between two rounds of questions (to the controller or the head) and of
    /// acknowledgements to the predecessor that nothing prompted (`hello_ticks`).
    pub hello_ticks: u64,
    /// Ticks the head waits for the chain to drain before it gives up adding a member and takes
    /// writes again (`drain_ticks`).
    pub drain_ticks: u32,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            tick: Duration::from_millis(20),
            hello_ticks: 5,
            drain_ticks: 25,
        }
    }
}

/// A stream of log entries to one member: the successor, or (from the head) a joiner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stream {
    /// The receiving member's index.
    to: usize,
    /// Entries sent to it.
    sent: u64,
    /// Entries it acknowledged.
    acked: u64,
    /// Ticks since it last acknowledged while it lagged.
    silent: u32,
}

impl Stream {
    fn at(to: usize, len: u64) -> Self {
        Stream {
            to,
            sent: len,
            acked: len,
            silent: 0,
        }
    }

    /// An acknowledgement of `len` entries (of a log of `log_len`).
    fn acked(&mut self, len: u64, log_len: u64) {
        let len = len.min(log_len);
        // Only progress counts: a repeated acknowledgement (the periodic one) of a stream that
        // lost entries must not keep them from being sent again.
        if len > self.acked {
            self.acked = len;
            self.silent = 0;
        }
        self.sent = self.sent.max(self.acked);
    }

    /// A tick: true if what was not acknowledged should be sent again.
    fn tick(&mut self, target: u64) -> bool {
        if self.acked >= target {
            self.silent = 0;
            return false;
        }
        self.silent += 1;
        if self.silent.is_multiple_of(RESEND_TICKS) {
            self.sent = self.acked;
            return true;
        }
        false
    }
}

/// What a proxy is doing (see the module docs); the head's own state lives in `Head`.
#[derive(Debug, Clone)]
enum Role {
    Starting,
    Head(Head),
    /// In the view, after the head (a middle member or the tail).
    Link,
    Joining,
    Fenced,
}

/// What [`Agent::snapshot`] captures: enough to restore the proxy, and for the refinement
/// mapping to tell which member is the tail.
#[derive(Serialize, Deserialize)]
pub(crate) struct Saved {
    pub(crate) log: Vec<Command>,
    origins: Vec<String>,
    pub(crate) applier: Applier,
    pub(crate) view: Option<View>,
    pub(crate) nonce: u64,
}

/// The proxy in front of copy `index` (see the module docs).
pub struct ChainProxy {
    index: usize,
    peers: Vec<Id>,
    copy: Id,
    me: Id,
    /// The group's name at the controller: the virtual agent's identifier.
    group: String,
    timing: Timing,
    role: Role,
    /// This incarnation.
    nonce: u64,
    /// The newest view heard of.
    view: Option<View>,
    /// Peer messages of views not installed here yet.
    early: Early<Peer>,
    /// The log: requests, and (by the same index) the ingress proxy each came from.
    log: Vec<Command>,
    origins: Vec<String>,
    applier: Applier,
    steps: Vec<Step>,
    /// Requests this member would answer if it is (or becomes) the tail: (client, seq) →
    /// (ingress proxy, index of its latest entry). Off the tail, trimmed below `committed`.
    unanswered: BTreeMap<(String, u64), (Id, u64)>,
    /// The tail's log length as last heard up the chain.
    committed: u64,
    /// The stream to the successor, once it said how much it holds.
    down: Option<Stream>,
    ticks: u64,
}

impl ChainProxy {
    /// A proxy from its configuration: `index`, `peers` (every chain proxy, itself included, by
    /// index), `targets` (its copy first), and optional timing (`tick_ms`, `hello_ticks`,
    /// `drain_ticks`).
    pub fn from_config(args: &Args) -> Result<Self, Error> {
        let peers: Vec<Id> = proxy::ids(args, "peers")
            .into_iter()
            .map(Id::from)
            .collect();
        let index = usize::try_from(int(args, "index", -1))
            .map_err(|_| proxy::bad_config(KIND, "no `index`"))?;
        if index >= peers.len() {
            return Err(proxy::bad_config(
                KIND,
                format!("index {index} is not among {} peers", peers.len()),
            ));
        }
        let copy = proxy::ids(args, "targets")
            .into_iter()
            .next()
            .ok_or_else(|| proxy::bad_config(KIND, "no copy in `targets`"))?;
        let d = Timing::default();
        let pos = |name: &str, default: u64| {
            u64::try_from(int(args, name, default as i64))
                .ok()
                .filter(|v| *v > 0)
                .unwrap_or(default)
        };
        let timing = Timing {
            tick: Duration::from_millis(pos("tick_ms", d.tick.as_millis() as u64)),
            hello_ticks: pos("hello_ticks", d.hello_ticks),
            drain_ticks: u32::try_from(pos("drain_ticks", u64::from(d.drain_ticks)))
                .unwrap_or(d.drain_ticks),
        };
        let group = group_of(&peers[index]);
        Ok(ChainProxy {
            index,
            me: peers[index].clone(),
            peers,
            copy: copy.into(),
            group,
            timing,
            role: Role::Starting,
            nonce: 0,
            view: None,
            early: Early::default(),
            log: Vec::new(),
            origins: Vec::new(),
            applier: Applier::default(),
            steps: Vec::new(),
            unanswered: BTreeMap::new(),
            committed: 0,
            down: None,
            ticks: 0,
        })
    }

    fn len(&self) -> u64 {
        self.log.len() as u64
    }

    /// The member indices of the newest view, head first.
    fn chain(&self) -> Vec<usize> {
        self.view.as_ref().map_or_else(Vec::new, chain_of)
    }

    /// This incarnation's place in the chain of the newest view.
    fn place(&self) -> Option<usize> {
        let v = self.view.as_ref()?;
        let me = self.index as u64;
        if v.primary.index == me && v.primary.nonce == self.nonce {
            return Some(0);
        }
        v.backups
            .iter()
            .position(|m| m.index == me && m.nonce == self.nonce)
            .map(|p| p + 1)
    }

    fn neighbour(&self, offset: isize) -> Option<usize> {
        let place = self.place()?;
        let at = place.checked_add_signed(offset)?;
        self.chain().get(at).copied()
    }

    fn predecessor(&self) -> Option<usize> {
        self.neighbour(-1)
    }

    fn successor(&self) -> Option<usize> {
        self.neighbour(1)
    }

    fn is_tail(&self) -> bool {
        self.place().is_some() && self.successor().is_none()
    }

    /// The head of the newest view, if that is another proxy.
    fn head(&self) -> Option<usize> {
        let p = self.view.as_ref()?.primary.index as usize;
        (p != self.index && p < self.peers.len()).then_some(p)
    }

    fn join_head(&self, ctx: &mut Context) {
        if let Some(head) = self.head() {
            let join = Join {
                view: self.view_number(),
                len: self.len(),
                digest: digest(&self.log),
                nonce: self.nonce,
            };
            ctx.send_physical(&self.peers[head], join);
        }
    }

    /// Acknowledges to the predecessor what this member holds.
    fn ack_up(&self, ctx: &mut Context) {
        if let Some(p) = self.predecessor() {
            let committed = if self.is_tail() {
                self.len()
            } else {
                self.committed
            };
            let ack = Ack {
                view: self.view_number(),
                len: self.len(),
                committed,
            };
            ctx.send_physical(&self.peers[p], ack);
        }
    }

    /// The entries `from..to` of the log as they travel.
    fn entries(&self, from: u64, to: u64) -> Vec<Entry> {
        (from as usize..to as usize)
            .map(|i| Entry {
                command: self.log[i].clone(),
                ingress: self.origins[i].clone(),
            })
            .collect()
    }

    /// Appends entries to the log (from index `from`, skipping those it has) and gives them to
    /// the copy.
    fn append(&mut self, from: u64, entries: Vec<Entry>) {
        let joining = matches!(self.role, Role::Joining);
        for (i, entry) in entries.into_iter().enumerate() {
            let index = from + i as u64;
            if index < self.len() {
                continue;
            }
            if !joining {
                // A joiner gets only entries the tail holds, answered already.
                let key = (entry.command.client.clone(), entry.command.seq);
                self.unanswered
                    .insert(key, (Id::from(entry.ingress.as_str()), index));
            }
            self.log.push(entry.command.clone());
            self.origins.push(entry.ingress);
            self.applier.apply(index, entry.command, &mut self.steps);
        }
    }

    /// Streams to the successor what it lacks.
    fn send_down(&mut self, ctx: &mut Context) {
        let len = self.len();
        let view = self.view_number();
        let Some(s) = self.down else { return };
        if s.sent >= len {
            return;
        }
        let entries = self.entries(s.sent, len);
        ctx.send_physical(
            &self.peers[s.to],
            Entries {
                view,
                from: s.sent,
                entries,
            },
        );
        if let Some(s) = &mut self.down {
            s.sent = len;
        }
    }

    /// Carries out the applier's steps; on the tail, answers.
    fn run_steps(&mut self, ctx: &mut Context) {
        let tail = self.is_tail();
        for step in std::mem::take(&mut self.steps) {
            match step {
                Step::Execute { tag, name, bytes } => {
                    let payload = Payload::Encoded {
                        name: name.into(),
                        bytes: Bytes::from(bytes),
                    };
                    ctx.forward(&self.copy, self.me.clone(), tag, payload);
                }
                Step::Done { client, seq, reply } if tail => self.answer(ctx, client, seq, reply),
                Step::Done { .. } => {}
            }
        }
    }

    /// On the tail: the outcome of a request, to its ingress proxy (if it is waited for).
    fn answer(&mut self, ctx: &mut Context, client: String, seq: u64, reply: Option<Reply>) {
        let Some((ingress, _)) = self.unanswered.remove(&(client.clone(), seq)) else {
            return;
        };
        let leader = self.view.as_ref().map(|v| v.primary.index);
        let outcome = Outcome {
            client,
            seq,
            reply,
            leader,
        };
        ctx.send_physical(&ingress, outcome);
    }

    /// On becoming the tail: answers what it applied and nobody answered (the old tail may
    /// have died before answering); what its copy has not replied to is answered on the reply.
    fn answer_unanswered(&mut self, ctx: &mut Context) {
        let known: Vec<((String, u64), Option<Reply>)> = self
            .unanswered
            .keys()
            .filter_map(|(c, s)| Some(((c.clone(), *s), self.applier.known(c, *s)?)))
            .collect();
        for ((client, seq), reply) in known {
            self.answer(ctx, client, seq, reply);
        }
    }

    /// Off the tail: the tail holds `committed` entries; what is below is its to answer.
    fn set_committed(&mut self, committed: u64) {
        let committed = committed.min(self.len());
        if committed > self.committed {
            self.committed = committed;
            self.unanswered.retain(|_, (_, i)| *i >= committed);
        }
    }

    fn peer_index(&self, id: &str) -> Option<usize> {
        self.peers.iter().position(|p| &**p == id)
    }

    fn on_tick(&mut self, ctx: &mut Context) {
        let round = self.ticks.is_multiple_of(self.timing.hello_ticks);
        match &self.role {
            Role::Starting if round => self.join_group(ctx),
            Role::Joining if round => self.join_head(ctx),
            Role::Head(_) | Role::Link => {
                let len = self.len();
                if let Some(s) = &mut self.down
                    && s.tick(len)
                {
                    self.send_down(ctx);
                }
                if round {
                    self.ack_up(ctx);
                }
                self.on_head_tick(ctx);
            }
            _ => {}
        }
    }
}

/// The group of a proxy `X/ChainProxy{i}`: `X`.
fn group_of(proxy: &str) -> String {
    proxy
        .rsplit_once('/')
        .map_or(proxy, |(group, _)| group)
        .to_string()
}

/// The member indices of a view, head first: the primary, then the backups as listed.
pub(crate) fn chain_of(view: &View) -> Vec<usize> {
    std::iter::once(&view.primary)
        .chain(view.backups.iter())
        .map(|m| m.index as usize)
        .collect()
}

view_member::peer_messages!(
    /// The messages between proxies, each stamped with the sender's view.
    Peer { Entries, Ack, Join, CatchUp, Refused }
);

impl ViewMember for ChainProxy {
    type Peer = Peer;
    type Query = Status;
    type Status = ChainStatus;

    fn me(&self) -> &Id {
        &self.me
    }

    fn copy(&self) -> &Id {
        &self.copy
    }

    fn on_copy_reply(&mut self, ctx: &mut Context, tag: u64, reply: Reply) {
        self.applier.reply(tag, reply, &mut self.steps);
        self.run_steps(ctx);
    }

    fn on_submit(&mut self, ctx: &mut Context, ingress: Id, cmd: Command) {
        let Role::Head(head) = &mut self.role else {
            // Not for us: on to the head, as if the ingress proxy had sent it there (if there
            // is none yet, the ingress proxy retries).
            if let Some(h) = self.head() {
                let tag = ctx.tag();
                let payload = Payload::new(Submit { command: cmd });
                ctx.forward_physical(&self.peers[h], ingress, tag, payload);
            }
            return;
        };
        if head.adding.is_some() {
            if head.held.len() >= HELD_LIMIT {
                head.held.remove(0);
            }
            head.held.push((ingress, ctx.tag(), cmd));
            return;
        }
        // A retry is logged again: the applier runs it once, and the tail answers it with the
        // first execution's outcome once it gets there, behind everything logged before it.
        let len = self.len();
        let entry = Entry {
            command: cmd,
            ingress: ingress.to_string(),
        };
        self.append(len, vec![entry]);
        self.send_down(ctx);
        self.run_steps(ctx);
        if self.successor().is_none() {
            self.committed = self.len();
        }
    }

    /// A newer view: become what it says (see the module docs).
    fn on_view(&mut self, ctx: &mut Context, view: View) {
        if view.group != self.group {
            return;
        }
        if view.number == self.view_number() {
            // The controller's answer to an `AddBackup` it refused: take writes again, and
            // forget the joiner until it joins again (it does every `hello_ticks`), so that a
            // refusal does not make the head hold writes again at once.
            if let Role::Head(head) = &mut self.role
                && let Some(a) = head.adding.filter(|a| a.asked)
            {
                head.joiners.remove(&a.index);
                self.resume(ctx);
            }
            return;
        }
        if view.number < self.view_number() {
            return;
        }
        let was_tail = self.is_tail();
        let was = std::mem::replace(&mut self.role, Role::Starting);
        self.view = Some(view);
        self.down = None;
        let me = self.index as u64;
        self.role = match (self.place(), was) {
            (Some(0), Role::Head(mut head)) => {
                // Still head. Joiners now in the view are members; the add round is over.
                let v = self.view.as_ref().map_or_else(Vec::new, chain_of);
                head.joiners.retain(|i, _| !v.contains(i));
                Role::Head(head)
            }
            (Some(0), _) => {
                tracing::info!(proxy = %self.me, view = self.view_number(), entries = self.log.len(), "chain: head of a new view");
                Role::Head(Head::default())
            }
            (Some(_), _) => Role::Link,
            (None, Role::Fenced) => Role::Fenced,
            (None, _) if self.view.as_ref().is_some_and(|v| v.primary.index == me) => {
                // A view made for an earlier incarnation of this proxy: the controller has not
                // heard of this one yet, or no other member is left to take over.
                Role::Starting
            }
            (None, was) => {
                if matches!(was, Role::Head(_) | Role::Link) {
                    tracing::warn!(proxy = %self.me, view = self.view_number(), "chain: left out of the chain; joining the head");
                }
                Role::Joining
            }
        };
        match self.role {
            Role::Head(_) | Role::Link => {
                if self.successor().is_none() {
                    // The tail's log is what is committed; what it holds unanswered it answers.
                    self.committed = self.len();
                }
                self.ack_up(ctx);
                if self.is_tail() && !was_tail {
                    self.answer_unanswered(ctx);
                }
                self.resume(ctx);
            }
            Role::Joining => {
                self.unanswered.clear();
                self.join_head(ctx);
            }
            Role::Starting | Role::Fenced => self.unanswered.clear(),
        }
    }

    fn view_number(&self) -> u64 {
        self.view.as_ref().map_or(0, |v| v.number)
    }

    /// A message from peer `from`, stamped with a view this proxy has installed (an older one
    /// is dropped by the checks below).
    fn on_peer(&mut self, ctx: &mut Context, from: &str, m: Peer) {
        let peer = self.peer_index(from);
        let current = m.view() == self.view_number();
        match m {
            Peer::Entries(e) => {
                let in_chain = matches!(self.role, Role::Link | Role::Head(_));
                if in_chain && current && peer.is_some() && peer == self.predecessor() {
                    if e.from <= self.len() {
                        self.append(e.from, e.entries);
                        self.send_down(ctx);
                        self.run_steps(ctx);
                    }
                    if self.is_tail() {
                        self.committed = self.len();
                    }
                    self.ack_up(ctx);
                }
            }
            Peer::Ack(ack) => {
                if current && peer.is_some() && peer == self.successor() {
                    let len = self.len();
                    let down = self
                        .down
                        .get_or_insert(Stream::at(peer.unwrap_or(0), ack.len));
                    down.acked(ack.len, len);
                    self.set_committed(ack.committed);
                    self.send_down(ctx);
                    self.ack_up(ctx);
                    let joiners: Vec<usize> = match &self.role {
                        Role::Head(h) => h.joiners.keys().copied().collect(),
                        _ => Vec::new(),
                    };
                    for j in joiners {
                        self.send_catch_up(ctx, j);
                    }
                    self.progress_add(ctx);
                }
            }
            Peer::Join(join) => self.on_join(ctx, from, peer, join),
            Peer::CatchUp(c) => {
                let from_head = peer.is_some() && peer == self.head();
                if matches!(self.role, Role::Joining) && current && from_head {
                    if c.from <= self.len() {
                        self.append(c.from, c.entries);
                        self.run_steps(ctx);
                    }
                    self.join_head(ctx);
                }
            }
            Peer::Refused(_) => {
                let from_head = peer.is_some() && peer == self.head();
                if matches!(self.role, Role::Joining) && current && from_head {
                    tracing::error!(proxy = %self.me, "chain: this copy applied writes the head does not have; fenced until it restarts");
                    self.role = Role::Fenced;
                }
            }
        }
    }

    fn join_group(&self, ctx: &mut Context) {
        ctx.send_physical(
            CONTROLLER,
            JoinGroup {
                group: self.group.clone(),
                members: self.peers.iter().map(|p| p.to_string()).collect(),
                index: self.index as u64,
                nonce: self.nonce,
            },
        );
    }

    fn status(&self) -> ChainStatus {
        let position = match &self.role {
            Role::Starting => Position::Starting,
            Role::Head(_) if self.is_tail() => Position::Tail,
            Role::Head(_) => Position::Head,
            Role::Link if self.is_tail() => Position::Tail,
            Role::Link => Position::Middle,
            Role::Joining => Position::Joining,
            Role::Fenced => Position::Fenced,
        };
        let adding = match &self.role {
            Role::Head(h) => h.adding.map(|a| a.index as u64),
            _ => None,
        };
        ChainStatus {
            index: self.index as u64,
            position,
            view: self.view_number(),
            log_len: self.len(),
            committed: if self.is_tail() {
                self.len()
            } else {
                self.committed
            },
            executed: self.applier.executed,
            completed: self.applier.completed(),
            adding,
        }
    }

    fn early(&mut self) -> &mut Early<Peer> {
        &mut self.early
    }
}

impl Agent for ChainProxy {
    fn on_start(&mut self, ctx: &mut Context) {
        self.nonce = (ctx.now_millis().rotate_left(20) ^ ctx.random(i64::MAX) as u64) | 1;
        if self.peers.len() == 1 {
            // A chain of one: head and tail, no view service needed.
            self.role = Role::Head(Head::default());
            return;
        }
        self.join_group(ctx);
        ctx.set_timer(TICK, self.timing.tick);
    }

    fn on_timer(&mut self, ctx: &mut Context, name: &str) {
        if name != TICK {
            return;
        }
        self.ticks += 1;
        if matches!(self.role, Role::Fenced) {
            return;
        }
        self.on_tick(ctx);
        ctx.set_timer(TICK, self.timing.tick);
    }

    fn on_message(&mut self, ctx: &mut Context, message: Payload) -> Result<(), Error> {
        view_member::dispatch(self, ctx, message)
    }

    fn accepts(&self) -> &'static [&'static str] {
        &[
            "replicate::Submit",
            "ovid.NewView",
            "chain::Entries",
            "chain::Ack",
            "chain::Join",
            "chain::CatchUp",
            "chain::Refused",
            "chain::Status",
        ]
    }

    fn snapshot(&self) -> Result<Vec<u8>, Error> {
        postcard::to_stdvec(&Saved {
            log: self.log.clone(),
            origins: self.origins.clone(),
            applier: self.applier.clone(),
            view: self.view.clone(),
            nonce: self.nonce,
        })
        .map_err(|e| Error::Snapshot(e.to_string()))
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<(), Error> {
        let saved: Saved =
            postcard::from_bytes(bytes).map_err(|e| Error::Snapshot(e.to_string()))?;
        if saved.origins.len() != saved.log.len() {
            return Err(Error::Snapshot(
                "chain: a snapshot whose log and origins differ in length".into(),
            ));
        }
        self.log = saved.log;
        self.origins = saved.origins;
        self.applier = saved.applier;
        Ok(())
    }
}

/// A chain proxy's snapshot, decoded.
pub(crate) fn saved(snapshot: &[u8]) -> Result<Saved, Error> {
    postcard::from_bytes(snapshot).map_err(|e| Error::Snapshot(e.to_string()))
}

/// A snapshot of a proxy of incarnation `nonce` in `view` that applied `applied` entries, for
/// the refinement mapping's tests.
#[cfg(test)]
pub(crate) fn test_snapshot(view: Option<View>, nonce: u64, applied: u64) -> Vec<u8> {
    let saved = Saved {
        log: Vec::new(),
        origins: Vec::new(),
        applier: Applier {
            applied,
            ..Applier::default()
        },
        view,
        nonce,
    };
    postcard::to_stdvec(&saved).expect("a snapshot encodes")
}

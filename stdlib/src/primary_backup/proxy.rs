//! `PrimaryBackupProxy`: in front of one copy, as the primary of its view or as a backup.
//!
//! Who is primary is the controller's decision, never the proxies': each proxy joins its group
//! at the controller (`ovid::views::JoinGroup`, with its incarnation) and acts on the views it
//! is sent (`NewView`), newest first; every message between proxies carries its view number and
//! is dropped by a proxy in a newer view, so a replaced primary is not heard by the backups of
//! the newer view (a message of a view not installed yet is kept until it is).
//!
//! * **Primary.** It numbers every request it is given (its log), gives it to its own copy,
//!   streams it to its backups ([`Entries`]), and answers the ingress proxy once its copy has
//!   replied and **every backup of its view** (and every backup being added) has acknowledged the
//!   entry ([`Ack`]). A backup that lags too long is not dropped silently: the primary asks the
//!   controller for a view without it (`RemoveBackup`) and waits for it until that view comes.
//! * **A new primary** (a backup of the previous view) does not serve until it knows the log of
//!   every backup of its view ([`Hello`] / [`HelloState`], answered only by backups that are in
//!   that view, and so no longer listen to the old primary): it takes the longest (each is a
//!   prefix of the old primary's stream, and the acknowledged entries are in all of them),
//!   replays what it lacks into its copy, and streams to each backup what that one lacks.
//! * **Backups** apply the stream in order to their copy and forward requests that reach them to
//!   the primary of their view.
//! * **A proxy outside the view** (it restarted and lost its memory, it was dropped, or it was
//!   the primary and was replaced) joins the primary ([`Join`], with the length and digest of
//!   its log), gets what it lacks, and once it holds the whole log the primary asks the
//!   controller to add it (`AddBackup`); from that request on the primary waits for it too. A
//!   replaced primary whose log holds entries the new primary's does not is refused
//!   ([`Refused`]): its copy has applied them, so it may not back anyone up until it restarts.
//!
//! Both sides run the log through replicate's [`Applier`], so a retried request runs once and
//! each sender's requests run in its order.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use ovid::views::{AddBackup, JoinGroup, RemoveBackup, View};
use ovid::{Agent, CONTROLLER, Context, Error, Id, Payload};
use serde::{Deserialize, Serialize};

use super::messages::{
    Ack, Entries, Hello, HelloState, Join, PbStatus, Refused, Role, Status, digest,
};
use crate::expansion::{Args, int};
use crate::proxy;
use crate::replicate::messages::{Command, Outcome, Reply, Submit};
use crate::replicate::{Applier, Step};
use crate::view_member::{self, Early, ViewMember};

/// The proxy's kind, as the expansion names it.
pub const KIND: &str = "PrimaryBackupProxy";

/// The index of the first primary (the controller names the later ones).
pub const PRIMARY: usize = 0;

const TICK: &str = "primary_backup::tick";

/// How often a proxy acts on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// The period of its timer (configuration `tick_ms`).
    pub tick: Duration,
    /// Ticks between two rounds of questions (to the controller, the backups or the primary)
    /// that have not been answered (`hello_ticks`).
    pub hello_ticks: u64,
    /// Ticks a backup may lag without acknowledging before the primary asks the controller to
    /// drop it from the view (`drop_ticks`).
    pub drop_ticks: u32,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            tick: Duration::from_millis(20),
            hello_ticks: 5,
            drop_ticks: 25,
        }
    }
}

/// Ticks a lagging backup waits before the primary sends it again what it has not
/// acknowledged (in case they were lost with a view change).
const RESEND_TICKS: u32 = 5;

/// What the primary knows of one backup it streams to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Follower {
    /// Entries sent to it.
    sent: u64,
    /// Entries it acknowledged.
    acked: u64,
    /// Ticks since it last acknowledged while it lagged.
    silent: u32,
    /// Its incarnation, if it joined (backups of the view are known from the view).
    nonce: Option<u64>,
}

impl Follower {
    fn at(len: u64, nonce: Option<u64>) -> Self {
        Follower {
            sent: len,
            acked: len,
            silent: 0,
            nonce,
        }
    }
}

/// What [`Agent::snapshot`] captures.
#[derive(Serialize, Deserialize)]
struct Saved {
    log: Vec<Command>,
    applier: Applier,
}

/// The proxy in front of copy `index` (see the module docs).
pub struct PrimaryBackupProxy {
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
    /// While syncing: the backups' logs so far, by index.
    answers: BTreeMap<usize, Vec<Command>>,
    log: Vec<Command>,
    applier: Applier,
    steps: Vec<Step>,
    /// On the primary: the backups it streams to (of its view, or joining).
    followers: BTreeMap<usize, Follower>,
    /// On the primary: joined backups it asked the controller to add (index → incarnation);
    /// waited for like the backups of the view until the next view settles it.
    adding: BTreeMap<usize, u64>,
    /// On the primary: requests given to it, not yet complete: (client, seq) → (ingress proxy,
    /// log length the backups must acknowledge).
    waiting: BTreeMap<(String, u64), (Id, u64)>,
    /// On the primary: complete requests waiting for the backups' acknowledgements.
    ready: Vec<(Id, Outcome, u64)>,
    ticks: u64,
}

impl PrimaryBackupProxy {
    /// A proxy from its configuration: `index`, `peers` (every proxy, itself included, by
    /// index), `targets` (its copy first), and optional timing (`tick_ms`, `hello_ticks`,
    /// `drop_ticks`).
    pub fn from_config(args: &Args) -> Result<Self, Error> {
        let peers: Vec<Id> = proxy::ids(args, "peers")
            .into_iter()
            .map(Id::from)
            .collect();
        let index = usize::try_from(int(args, "index", -1))
            .map_err(|_| Error::Invalid("PrimaryBackupProxy: no `index`".into()))?;
        if index >= peers.len() {
            return Err(Error::Invalid(format!(
                "PrimaryBackupProxy: index {index} is not among {} peers",
                peers.len()
            )));
        }
        let copy = proxy::ids(args, "targets")
            .into_iter()
            .next()
            .ok_or_else(|| Error::Invalid("PrimaryBackupProxy: no copy in `targets`".into()))?;
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
            drop_ticks: pos("drop_ticks", u64::from(d.drop_ticks)) as u32,
        };
        let group = group_of(&peers[index]);
        Ok(PrimaryBackupProxy {
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
            answers: BTreeMap::new(),
            log: Vec::new(),
            applier: Applier::default(),
            steps: Vec::new(),
            followers: BTreeMap::new(),
            adding: BTreeMap::new(),
            waiting: BTreeMap::new(),
            ready: Vec::new(),
            ticks: 0,
        })
    }

    fn n(&self) -> usize {
        self.peers.len()
    }

    /// The primary of the newest view, if that is another proxy.
    fn primary(&self) -> Option<Id> {
        let v = self.view.as_ref()?;
        let p = v.primary.index as usize;
        (p != self.index && p < self.n()).then(|| self.peers[p].clone())
    }

    /// Whether this incarnation is a backup of the newest view.
    fn in_view(&self) -> bool {
        self.view
            .as_ref()
            .is_some_and(|v| v.is_backup(self.index as u64, self.nonce))
    }

    /// On the primary: the backups it must hear from before it answers.
    fn required(&self) -> Vec<usize> {
        let mut r: Vec<usize> = self
            .view
            .iter()
            .flat_map(|v| v.backups.iter().map(|m| m.index as usize))
            .collect();
        r.extend(self.adding.keys().copied());
        r.sort_unstable();
        r.dedup();
        r
    }

    fn join_primary(&self, ctx: &mut Context) {
        if let Some(primary) = self.primary() {
            ctx.send_physical(
                &primary,
                Join {
                    view: self.view_number(),
                    len: self.log.len() as u64,
                    digest: digest(&self.log),
                    nonce: self.nonce,
                },
            );
        }
    }

    fn ask_backups(&self, ctx: &mut Context) {
        let Some(v) = &self.view else { return };
        for m in &v.backups {
            let i = m.index as usize;
            if i < self.n() && !self.answers.contains_key(&i) {
                ctx.send_physical(&self.peers[i], Hello { view: v.number });
            }
        }
    }

    /// Appends entries to the log (from index `from`) and gives them to the copy.
    fn append(&mut self, from: u64, commands: Vec<Command>) {
        for (i, cmd) in commands.into_iter().enumerate() {
            let index = from + i as u64;
            if index < self.log.len() as u64 {
                continue;
            }
            self.log.push(cmd.clone());
            self.applier.apply(index, cmd, &mut self.steps);
        }
    }

    /// On the primary: the length of the log every required backup holds (entries up to it
    /// may be answered, and may be streamed to a backup that is only joining).
    fn committed(&self) -> u64 {
        let len = self.log.len() as u64;
        self.required()
            .iter()
            .map(|i| self.followers.get(i).map_or(0, |f| f.acked))
            .min()
            .unwrap_or(len)
            .min(len)
    }

    /// Streams to `backup` what it lacks: everything if the primary waits for it, else (a joiner)
    /// only committed entries, so that a joiner never applies an entry that a later primary
    /// might not have.
    fn send_entries(&mut self, ctx: &mut Context, backup: usize) {
        let limit = if self.required().contains(&backup) {
            self.log.len() as u64
        } else {
            self.committed()
        };
        let view = self.view_number();
        if let Some(f) = self.followers.get_mut(&backup)
            && f.sent < limit
        {
            let commands = self.log[f.sent as usize..limit as usize].to_vec();
            ctx.send_physical(
                &self.peers[backup],
                Entries {
                    view,
                    from: f.sent,
                    commands,
                },
            );
            f.sent = limit;
        }
    }

    /// Carries out the applier's steps; on the primary, completes requests.
    fn run_steps(&mut self, ctx: &mut Context) {
        for step in std::mem::take(&mut self.steps) {
            match step {
                Step::Execute { tag, name, bytes } => {
                    let payload = Payload::Encoded {
                        name: name.into(),
                        bytes: Bytes::from(bytes),
                    };
                    ctx.forward(&self.copy, self.me.clone(), tag, payload);
                }
                Step::Done { client, seq, reply } => self.done(client, seq, reply),
            }
        }
        self.release(ctx);
    }

    fn done(&mut self, client: String, seq: u64, reply: Option<Reply>) {
        if let Some((ingress, need)) = self.waiting.remove(&(client.clone(), seq)) {
            let leader = Some(self.index as u64);
            self.ready.push((
                ingress,
                Outcome {
                    client,
                    seq,
                    reply,
                    leader,
                },
                need,
            ));
        }
    }

    /// Answers the complete requests that every required backup has acknowledged.
    fn release(&mut self, ctx: &mut Context) {
        if self.role != Role::Primary || self.ready.is_empty() {
            return;
        }
        let floor = self.committed();
        let (go, wait): (Vec<_>, Vec<_>) = std::mem::take(&mut self.ready)
            .into_iter()
            .partition(|(_, _, need)| *need <= floor);
        self.ready = wait;
        for (ingress, outcome, _) in go {
            ctx.send_physical(&ingress, outcome);
        }
    }

    /// On the primary: a joined backup that holds the whole log is proposed to the controller.
    fn maybe_add(&mut self, ctx: &mut Context, i: usize) {
        let len = self.committed();
        let Some(f) = self.followers.get(&i) else {
            return;
        };
        let (Some(nonce), Some(v)) = (f.nonce, &self.view) else {
            return;
        };
        if f.acked < len || self.adding.contains_key(&i) || v.is_backup(i as u64, nonce) {
            return;
        }
        tracing::info!(proxy = %self.me, backup = %self.peers[i], entries = len, "primary_backup: backup caught up; asking the controller to add it");
        self.adding.insert(i, nonce);
        ctx.send_physical(
            CONTROLLER,
            AddBackup {
                group: self.group.clone(),
                view: v.number,
                index: i as u64,
                nonce,
            },
        );
    }

    /// While syncing: once every backup of the view has answered, serve.
    fn finish_sync(&mut self, ctx: &mut Context) {
        let Some(view) = self.view.clone() else {
            return;
        };
        if self.role != Role::Syncing
            || view
                .backups
                .iter()
                .any(|m| !self.answers.contains_key(&(m.index as usize)))
        {
            return;
        }
        let answers = std::mem::take(&mut self.answers);
        if let Some(log) = answers
            .values()
            .max_by_key(|l| l.len())
            .filter(|l| l.len() > self.log.len())
        {
            let from = self.log.len() as u64;
            self.append(from, log[from as usize..].to_vec());
        }
        self.role = Role::Primary;
        tracing::info!(proxy = %self.me, view = view.number, entries = self.log.len(), "primary_backup: serving as primary");
        for (i, log) in answers {
            self.followers
                .insert(i, Follower::at(log.len() as u64, None));
            self.send_entries(ctx, i);
        }
        self.run_steps(ctx);
    }

    fn peer_index(&self, id: &str) -> Option<usize> {
        self.peers.iter().position(|p| &**p == id)
    }

    fn on_primary_tick(&mut self, ctx: &mut Context) {
        let len = self.log.len() as u64;
        let committed = self.committed();
        let required = self.required();
        let drop_ticks = self.timing.drop_ticks;
        let mut lagging = Vec::new();
        for (i, f) in self.followers.iter_mut() {
            let target = if required.contains(i) { len } else { committed };
            if f.acked >= target {
                f.silent = 0;
                continue;
            }
            f.silent += 1;
            if f.silent.is_multiple_of(RESEND_TICKS) {
                // What it did not acknowledge may have been dropped (sent in a view it had not
                // heard of yet): send it again.
                f.sent = f.acked;
            }
            if f.silent >= drop_ticks && f.silent.is_multiple_of(drop_ticks) {
                lagging.push(*i);
            }
        }
        for i in self.followers.keys().copied().collect::<Vec<_>>() {
            self.send_entries(ctx, i);
        }
        let view = self.view_number();
        for i in lagging {
            if required.contains(&i) && !self.adding.contains_key(&i) {
                tracing::warn!(proxy = %self.me, backup = %self.peers[i], "primary_backup: backup does not keep up; asking the controller for a view without it");
                ctx.send_physical(
                    CONTROLLER,
                    RemoveBackup {
                        group: self.group.clone(),
                        view,
                        index: i as u64,
                    },
                );
            } else if !required.contains(&i) {
                // A joiner that went silent: it joins again if it comes back.
                self.followers.remove(&i);
            }
        }
    }
}

view_member::peer_messages!(
    /// The messages between proxies, each stamped with the sender's view.
    Peer { Entries, Ack, Join, Refused, Hello, HelloState }
);

/// The group of a proxy `X/PrimaryBackupProxy{i}`: `X`.
pub(crate) fn group_of(proxy: &str) -> String {
    proxy
        .rsplit_once('/')
        .map_or(proxy, |(group, _)| group)
        .to_string()
}

impl ViewMember for PrimaryBackupProxy {
    type Peer = Peer;
    type Query = Status;
    type Status = PbStatus;

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
        if self.role != Role::Primary {
            // Not for us: on to the primary, as if the ingress proxy had sent it there (if
            // there is none yet, the ingress proxy retries).
            if let Some(primary) = self.primary() {
                let tag = ctx.tag();
                ctx.forward_physical(
                    &primary,
                    ingress,
                    tag,
                    Payload::new(Submit { command: cmd }),
                );
            }
            return;
        }
        let key = (cmd.client.clone(), cmd.seq);
        let len = self.log.len() as u64;
        if let Some(reply) = self.applier.known(&cmd.client, cmd.seq) {
            self.ready.push((
                ingress,
                Outcome {
                    client: cmd.client,
                    seq: cmd.seq,
                    reply,
                    leader: Some(self.index as u64),
                },
                len,
            ));
            self.release(ctx);
            return;
        }
        if self.applier.seen(&cmd.client, cmd.seq) {
            self.waiting.insert(key, (ingress, len));
            return;
        }
        self.waiting.insert(key, (ingress, len + 1));
        self.append(len, vec![cmd]);
        let followers: Vec<usize> = self.followers.keys().copied().collect();
        for b in followers {
            self.send_entries(ctx, b);
        }
        self.run_steps(ctx);
    }

    /// A newer view: become what it says (see the module docs).
    fn on_view(&mut self, ctx: &mut Context, view: View) {
        if view.group != self.group {
            return;
        }
        if view.number == self.view_number() && self.role == Role::Primary {
            // The controller's answer to an `AddBackup` it refused: stop waiting for those
            // joiners. They join again (every `hello_ticks`), and are proposed again then.
            let refused: Vec<usize> = self
                .adding
                .keys()
                .copied()
                .filter(|i| !view.backups.iter().any(|m| m.index as usize == *i))
                .collect();
            for i in refused {
                self.adding.remove(&i);
                if let Some(f) = self.followers.get_mut(&i) {
                    f.nonce = None;
                }
            }
            self.release(ctx);
            return;
        }
        if view.number <= self.view_number() {
            return;
        }
        let was = self.role;
        let me = self.index as u64;
        let primary = view.primary;
        self.view = Some(view);
        self.adding.clear();
        if primary.index == me && primary.nonce == self.nonce {
            if was == Role::Primary {
                // Still primary; the set of backups it waits for changed. (A backup it has no
                // record of, which the controller only adds at its request, is assumed to hold
                // nothing: waiting for it is safe, assuming it holds the log is not.)
                for i in self.required() {
                    self.followers
                        .entry(i)
                        .or_insert_with(|| Follower::at(0, None));
                }
                self.release(ctx);
                for i in self.followers.keys().copied().collect::<Vec<_>>() {
                    self.maybe_add(ctx, i);
                }
            } else {
                tracing::info!(proxy = %self.me, view = self.view_number(), "primary_backup: primary of a new view; collecting the backups' logs");
                self.role = Role::Syncing;
                self.answers.clear();
                self.followers.clear();
                self.ask_backups(ctx);
                self.finish_sync(ctx);
            }
            return;
        }
        // Whatever this proxy was serving, it no longer may.
        self.waiting.clear();
        self.ready.clear();
        self.followers.clear();
        self.answers.clear();
        if primary.index == me {
            // A view made for an earlier incarnation of this proxy: the controller has not
            // heard of this one yet, or no backup is left to take over.
            self.role = Role::Starting;
            return;
        }
        if self.role == Role::Fenced {
            return;
        }
        if was == Role::Primary {
            tracing::warn!(proxy = %self.me, view = self.view_number(), "primary_backup: replaced as primary; joining the new primary as a backup");
        }
        self.role = Role::Backup;
        if !self.in_view() {
            self.join_primary(ctx);
        } else if let Some(primary) = self.primary() {
            let resync = Ack {
                view: self.view_number(),
                len: self.log.len() as u64,
                resync: true,
            };
            ctx.send_physical(&primary, resync);
        }
    }

    fn view_number(&self) -> u64 {
        self.view.as_ref().map_or(0, |v| v.number)
    }

    /// A message from peer `from`, stamped with a view this proxy has installed (an older one
    /// is dropped by the checks below).
    fn on_peer(&mut self, ctx: &mut Context, from: &str, m: Peer) {
        let from_primary = self.primary().is_some_and(|p| &*p == from);
        let peer = self.peer_index(from);
        match m {
            Peer::Entries(entries) => {
                if self.role == Role::Backup && entries.view == self.view_number() && from_primary {
                    let len = self.log.len() as u64;
                    if entries.from <= len {
                        self.append(entries.from, entries.commands);
                        self.run_steps(ctx);
                    }
                    let ack = Ack {
                        view: entries.view,
                        len: self.log.len() as u64,
                        resync: false,
                    };
                    ctx.send_physical(from, ack);
                }
            }
            Peer::Ack(ack) => {
                if let (Role::Primary, Some(i)) = (self.role, peer)
                    && ack.view == self.view_number()
                    && let Some(f) = self.followers.get_mut(&i)
                {
                    let acked = ack.len.min(self.log.len() as u64);
                    if ack.resync {
                        f.sent = f.sent.min(acked);
                    }
                    if acked >= f.acked {
                        f.acked = acked;
                        f.silent = 0;
                    }
                    if f.sent < f.acked {
                        f.sent = f.acked;
                    }
                    // The committed prefix may have grown: joiners get it.
                    for j in self.followers.keys().copied().collect::<Vec<_>>() {
                        self.send_entries(ctx, j);
                    }
                    for j in self.followers.keys().copied().collect::<Vec<_>>() {
                        self.maybe_add(ctx, j);
                    }
                    self.release(ctx);
                }
            }
            Peer::Join(join) => {
                if let (Role::Primary, Some(i)) = (self.role, peer)
                    && join.view == self.view_number()
                    && i != self.index
                {
                    let len = join.len as usize;
                    if len > self.log.len() || digest(&self.log[..len]) != join.digest {
                        tracing::warn!(proxy = %self.me, joiner = %self.peers[i], len, "primary_backup: a joiner's log is not a prefix of the primary's; refused");
                        ctx.send_physical(from, Refused { view: join.view });
                    } else {
                        let f = self
                            .followers
                            .entry(i)
                            .or_insert_with(|| Follower::at(join.len, Some(join.nonce)));
                        if f.nonce != Some(join.nonce) {
                            *f = Follower::at(join.len, Some(join.nonce));
                        }
                        // What was sent beyond its log may have been dropped (another view).
                        f.sent = f.sent.min(join.len);
                        self.send_entries(ctx, i);
                        self.maybe_add(ctx, i);
                    }
                }
            }
            Peer::Refused(refused) => {
                if self.role == Role::Backup && refused.view == self.view_number() && from_primary {
                    tracing::error!(proxy = %self.me, "primary_backup: this copy applied entries the primary does not have; fenced until it restarts");
                    self.role = Role::Fenced;
                }
            }
            Peer::Hello(hello) => {
                if self.role == Role::Backup
                    && self.in_view()
                    && hello.view == self.view_number()
                    && from_primary
                {
                    let state = HelloState {
                        view: hello.view,
                        index: self.index as u64,
                        log: self.log.clone(),
                    };
                    ctx.send_physical(from, state);
                }
            }
            Peer::HelloState(answer) => {
                let i = answer.index as usize;
                if self.role == Role::Syncing
                    && answer.view == self.view_number()
                    && peer == Some(i)
                {
                    self.answers.insert(i, answer.log);
                    self.finish_sync(ctx);
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

    fn status(&self) -> PbStatus {
        PbStatus {
            index: self.index as u64,
            role: self.role,
            view: self.view_number(),
            log_len: self.log.len() as u64,
            executed: self.applier.executed,
            completed: self.applier.completed(),
            live: if self.role == Role::Primary {
                self.required().into_iter().map(|i| i as u64).collect()
            } else {
                Vec::new()
            },
        }
    }

    fn early(&mut self) -> &mut Early<Peer> {
        &mut self.early
    }
}

impl Agent for PrimaryBackupProxy {
    fn on_start(&mut self, ctx: &mut Context) {
        self.nonce = (ctx.now_millis().rotate_left(20) ^ ctx.random(i64::MAX) as u64) | 1;
        if self.n() == 1 {
            self.role = Role::Primary;
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
        let round = self.ticks.is_multiple_of(self.timing.hello_ticks);
        match self.role {
            Role::Starting if round => self.join_group(ctx),
            Role::Syncing if round => self.ask_backups(ctx),
            Role::Backup if round && !self.in_view() => self.join_primary(ctx),
            Role::Primary => self.on_primary_tick(ctx),
            Role::Fenced => return,
            _ => {}
        }
        ctx.set_timer(TICK, self.timing.tick);
    }

    fn on_message(&mut self, ctx: &mut Context, message: Payload) -> Result<(), Error> {
        view_member::dispatch(self, ctx, message)
    }

    fn accepts(&self) -> &'static [&'static str] {
        &[
            "replicate::Submit",
            "ovid.NewView",
            "primary_backup::Entries",
            "primary_backup::Ack",
            "primary_backup::Join",
            "primary_backup::Refused",
            "primary_backup::Hello",
            "primary_backup::HelloState",
            "primary_backup::Status",
        ]
    }

    fn snapshot(&self) -> Result<Vec<u8>, Error> {
        postcard::to_stdvec(&Saved {
            log: self.log.clone(),
            applier: self.applier.clone(),
        })
        .map_err(|e| Error::Snapshot(e.to_string()))
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<(), Error> {
        let saved: Saved =
            postcard::from_bytes(bytes).map_err(|e| Error::Snapshot(e.to_string()))?;
        self.log = saved.log;
        self.applier = saved.applier;
        Ok(())
    }
}

/// The log length in a snapshot of a primary-backup proxy.
pub(crate) fn applied(snapshot: &[u8]) -> Result<u64, Error> {
    let saved: Saved =
        postcard::from_bytes(snapshot).map_err(|e| Error::Snapshot(e.to_string()))?;
    Ok(saved.applier.applied)
}

#[cfg(test)]
mod tests {
    //! Two proxies and their copies driven by hand, message by message, with the controller
    //! played by the test: a primary that has been replaced is refused.

    use std::collections::{BTreeSet, VecDeque};

    use ovid::Effect;
    use ovid::views::Member;
    use ovid::views::NewView;

    use super::*;
    use crate::expansion::Value;

    /// A copy that answers every request (what it answers does not matter here).
    struct Echo;

    impl Agent for Echo {
        fn on_message(&mut self, ctx: &mut Context, _message: Payload) -> Result<(), Error> {
            ctx.reply(Status);
            Ok(())
        }
    }

    /// Proxies and copies by identifier, a FIFO of messages (from, to, tag, payload), links
    /// that are cut, and what reached identifiers that are not agents (the ingress proxy, the
    /// controller).
    struct Net {
        proxies: BTreeMap<String, (PrimaryBackupProxy, Context)>,
        copies: BTreeMap<String, (Echo, Context)>,
        queue: VecDeque<(String, String, u64, Payload)>,
        cut: BTreeSet<(String, String)>,
        /// Sequence numbers answered to the ingress proxy, in order.
        answered: Vec<u64>,
        /// What the controller was asked to add.
        adds: Vec<AddBackup>,
    }

    const P0: &str = "KVS/PrimaryBackupProxy0";
    const P1: &str = "KVS/PrimaryBackupProxy1";
    const INGRESS: &str = "KVS/PrimaryBackupIngressProxy0";

    impl Net {
        fn new() -> Net {
            let mut net = Net {
                proxies: BTreeMap::new(),
                copies: BTreeMap::new(),
                queue: VecDeque::new(),
                cut: BTreeSet::new(),
                answered: Vec::new(),
                adds: Vec::new(),
            };
            for i in 0..2 {
                let args = Args::from([
                    ("index".to_string(), Value::Int(i)),
                    (
                        "peers".to_string(),
                        Value::List(vec![P0.to_string(), P1.to_string()]),
                    ),
                    (
                        "targets".to_string(),
                        Value::List(vec![format!("KVS/Copy{i}")]),
                    ),
                ]);
                let proxy = PrimaryBackupProxy::from_config(&args).unwrap();
                let id = [P0, P1][i as usize];
                net.proxies
                    .insert(id.to_string(), (proxy, Context::new(id)));
                let copy = format!("KVS/Copy{i}");
                net.copies
                    .insert(copy.clone(), (Echo, Context::new(copy.as_str())));
            }
            for id in [P0, P1] {
                net.call(id, None, 0, |a, ctx| {
                    a.on_start(ctx);
                    Ok(())
                });
            }
            net
        }

        fn call(
            &mut self,
            id: &str,
            from: Option<&str>,
            tag: u64,
            f: impl FnOnce(&mut dyn Agent, &mut Context) -> Result<(), Error>,
        ) {
            let (agent, ctx): (&mut dyn Agent, &mut Context) = match self.proxies.get_mut(id) {
                Some((p, ctx)) => (p, ctx),
                None => {
                    let (c, ctx) = self.copies.get_mut(id).unwrap();
                    (c, ctx)
                }
            };
            ctx.begin(from.map(Id::from), 1_000);
            ctx.set_tag(tag);
            f(agent, ctx).unwrap();
            let tag = ctx.tag();
            for effect in ctx.take_effects() {
                match effect {
                    Effect::SendPhysical { to, payload } | Effect::Send { to, payload } => self
                        .queue
                        .push_back((id.to_string(), to.to_string(), tag, payload)),
                    Effect::Forward {
                        to,
                        from,
                        tag,
                        payload,
                        ..
                    } => self
                        .queue
                        .push_back((from.to_string(), to.to_string(), tag, payload)),
                    _ => {}
                }
            }
        }

        /// Delivers everything in flight (dropping what crosses a cut link).
        fn run(&mut self) {
            while let Some((from, to, tag, payload)) = self.queue.pop_front() {
                if self.cut.contains(&(from.clone(), to.clone())) {
                    continue;
                }
                if self.proxies.contains_key(&to) || self.copies.contains_key(&to) {
                    self.call(&to, Some(&from), tag, |a, ctx| a.on_message(ctx, payload));
                } else if to == INGRESS && payload.is::<Outcome>() {
                    self.answered.push(payload.decode::<Outcome>().unwrap().seq);
                } else if to == CONTROLLER && payload.is::<AddBackup>() {
                    self.adds.push(payload.decode::<AddBackup>().unwrap());
                }
            }
        }

        /// The controller sends view `number` to `to`.
        fn view(&mut self, to: &[&str], number: u64, primary: u64, backups: &[u64]) {
            let nonce = |i: u64| self.status([P0, P1][i as usize]).1;
            let view = View {
                group: "KVS".into(),
                number,
                primary: Member {
                    index: primary,
                    nonce: nonce(primary),
                },
                backups: backups
                    .iter()
                    .map(|i| Member {
                        index: *i,
                        nonce: nonce(*i),
                    })
                    .collect(),
            };
            for id in to {
                let v = NewView { view: view.clone() };
                self.queue
                    .push_back((CONTROLLER.into(), id.to_string(), 0, Payload::new(v)));
            }
            self.run();
        }

        /// A request from the ingress proxy to `to`.
        fn submit(&mut self, to: &str, seq: u64) {
            let command = Command {
                client: "c@1".into(),
                seq,
                ack: seq,
                name: "Put".into(),
                bytes: vec![seq as u8],
            };
            self.queue.push_back((
                INGRESS.into(),
                to.into(),
                seq + 1,
                Payload::new(Submit { command }),
            ));
            self.run();
        }

        /// (status, incarnation) of a proxy.
        fn status(&self, id: &str) -> (PbStatus, u64) {
            let (p, _) = &self.proxies[id];
            (p.status(), p.nonce)
        }
    }

    #[test]
    fn a_replaced_primary_is_refused() {
        let mut net = Net::new();
        net.view(&[P0, P1], 1, 0, &[1]);
        assert_eq!(net.status(P0).0.role, Role::Primary);
        assert_eq!(net.status(P1).0.role, Role::Backup);
        net.submit(P0, 0);
        assert_eq!(net.answered, [0], "answered once the backup has it");

        // P0 is cut off from everyone (and the controller's news); the controller makes P1
        // the primary of view 2.
        net.cut.insert((P0.into(), P1.into()));
        net.view(&[P1], 2, 1, &[]);
        assert_eq!(net.status(P1).0.role, Role::Primary);
        net.cut.clear();
        // P0 still thinks it is primary of view 1: it takes a request, but P1 drops its
        // entries (view 1 is over), so it never answers it.
        net.submit(P0, 1);
        assert_eq!(net.status(P0).0.role, Role::Primary);
        assert_eq!(net.status(P1).0.log_len, 1, "view 1's entry not taken");
        assert_eq!(net.answered, [0]);

        // P0 hears of view 2: it is no longer primary, and its log (with the unanswered
        // request its copy applied) is not a prefix of P1's: it is fenced, not a backup.
        net.view(&[P0], 2, 1, &[]);
        assert_eq!(net.status(P0).0.role, Role::Fenced);
        // Requests that reach it (the ingress proxy's retry of 1, then 2) go to P1, which
        // answers them; P0's copy takes no more.
        net.submit(P0, 1);
        net.submit(P0, 2);
        assert_eq!(net.status(P0).0.log_len, 2);
        assert_eq!(net.answered, [0, 1, 2]);
        assert!(net.adds.is_empty());
    }

    #[test]
    fn a_replaced_primary_with_nothing_extra_rejoins_as_a_backup() {
        let mut net = Net::new();
        net.view(&[P0, P1], 1, 0, &[1]);
        net.submit(P0, 0);
        net.view(&[P0, P1], 2, 1, &[]);
        assert_eq!(net.status(P1).0.role, Role::Primary);
        assert_eq!(net.status(P0).0.role, Role::Backup);
        net.submit(P1, 1);
        assert_eq!(net.answered, [0, 1]);
        // P0 joined P1, caught up, and P1 asked the controller to add it.
        assert_eq!(net.status(P0).0.log_len, 2);
        let adds = &net.adds;
        assert_eq!(adds.len(), 1);
        assert_eq!((adds[0].view, adds[0].index), (2, 0));
        assert_eq!(net.status(P1).0.live, [0], "waited for from the request on");
        net.view(&[P0, P1], 3, 1, &[0]);
        assert_eq!(net.status(P1).0.live, [0]);
        net.submit(P1, 2);
        assert_eq!(net.answered, [0, 1, 2]);
        assert_eq!(net.status(P0).0.log_len, 3);
    }

    #[test]
    fn a_refused_addition_is_not_waited_for() {
        let mut net = Net::new();
        net.view(&[P0, P1], 1, 0, &[1]);
        net.view(&[P0, P1], 2, 1, &[]);
        net.submit(P1, 0);
        assert_eq!(net.adds.len(), 1, "P0 caught up and was proposed");
        assert_eq!(net.status(P1).0.live, [0]);
        // The controller refuses (say P0's box was declared dead): it answers with view 2.
        net.cut.insert((P1.into(), P0.into()));
        net.view(&[P1], 2, 1, &[]);
        assert!(net.status(P1).0.live.is_empty());
        net.submit(P1, 1);
        assert_eq!(net.answered, [0, 1], "answered without P0");
    }
}

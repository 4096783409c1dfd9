//! `PrimaryBackupProxy`: in front of one copy, as the primary (index 0) or as a backup.
//!
//! The primary numbers every request it is given (its log), gives it to its own copy, streams it
//! to every live backup ([`Entries`]), and answers the ingress proxy once its copy has replied
//! and every live backup has acknowledged the entry ([`Ack`]). A backup that stays silent too
//! long is dropped from the ones it waits for (never the last one), and taken back when it
//! acknowledges again. A
//! backup applies the stream in order to its copy and forwards requests that reach it to the
//! primary. Both run the log through replicate's [`Applier`], so a retried request runs once and
//! each sender's requests run in its order.
//!
//! A proxy that starts has lost its memory. It asks its peers ([`Hello`]): if a primary answers,
//! it joins it as a backup and gets the whole log, which it replays into its copy (which
//! restarted empty too). The primary's proxy, restarting, waits for every peer: on the first
//! start (nobody has a log, or has seen one) it starts empty; else it takes the longest log of
//! the backups, replays it, and streams to each backup what it lacks.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use ovid::{Agent, Context, Error, Id, Payload};
use serde::{Deserialize, Serialize};

use super::messages::{Ack, Entries, Hello, HelloState, Join, PbStatus, Role, Status};
use crate::expansion::{Args, int};
use crate::proxy;
use crate::replicate::messages::{Command, Outcome, Reply, Submit};
use crate::replicate::{Applier, Step};

/// The proxy's kind, as the expansion names it.
pub const KIND: &str = "PrimaryBackupProxy";

/// The index of the primary (there is no failover yet: see docs/replication.md).
pub const PRIMARY: usize = 0;

const TICK: &str = "primary_backup::tick";

/// How often a proxy acts on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// The period of its timer (configuration `tick_ms`).
    pub tick: Duration,
    /// Ticks between two rounds of questions of a starting proxy (`hello_ticks`).
    pub hello_ticks: u64,
    /// Ticks a backup may lag without acknowledging before the primary stops waiting for it
    /// (`drop_ticks`).
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

/// What the primary knows of one live backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Follower {
    /// Entries sent to it.
    sent: u64,
    /// Entries it acknowledged.
    acked: u64,
    /// Ticks since it last acknowledged while it lagged.
    silent: u32,
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
    timing: Timing,
    role: Role,
    nonce: u64,
    /// While starting: the answers so far, by peer index.
    answers: BTreeMap<usize, HelloState>,
    /// Whether this proxy knows that the log has had entries.
    history: bool,
    log: Vec<Command>,
    applier: Applier,
    steps: Vec<Step>,
    /// On the primary: the live backups.
    backups: BTreeMap<usize, Follower>,
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
        Ok(PrimaryBackupProxy {
            index,
            me: peers[index].clone(),
            peers,
            copy: copy.into(),
            timing,
            role: Role::Starting,
            nonce: 0,
            answers: BTreeMap::new(),
            history: false,
            log: Vec::new(),
            applier: Applier::default(),
            steps: Vec::new(),
            backups: BTreeMap::new(),
            waiting: BTreeMap::new(),
            ready: Vec::new(),
            ticks: 0,
        })
    }

    fn n(&self) -> usize {
        self.peers.len()
    }

    fn primary(&self) -> &Id {
        &self.peers[PRIMARY]
    }

    fn hello(&self, ctx: &mut Context) {
        for (i, peer) in self.peers.iter().enumerate() {
            if i != self.index {
                ctx.send_physical(peer, Hello { nonce: self.nonce });
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

    fn send_entries(&mut self, ctx: &mut Context, backup: usize) {
        let len = self.log.len() as u64;
        if let Some(f) = self.backups.get_mut(&backup)
            && f.sent < len
        {
            let commands = self.log[f.sent as usize..].to_vec();
            ctx.send_physical(
                &self.peers[backup],
                Entries {
                    from: f.sent,
                    commands,
                },
            );
            f.sent = len;
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
            let leader = Some(PRIMARY as u64);
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

    /// Answers the complete requests that every live backup has acknowledged.
    fn release(&mut self, ctx: &mut Context) {
        if self.role != Role::Primary || self.ready.is_empty() {
            return;
        }
        let floor = self
            .backups
            .values()
            .map(|f| f.acked)
            .min()
            .unwrap_or(u64::MAX);
        let (go, wait): (Vec<_>, Vec<_>) = std::mem::take(&mut self.ready)
            .into_iter()
            .partition(|(_, _, need)| *need <= floor);
        self.ready = wait;
        for (ingress, outcome, _) in go {
            ctx.send_physical(&ingress, outcome);
        }
    }

    fn on_submit(&mut self, ctx: &mut Context, ingress: Id, cmd: Command) {
        match self.role {
            Role::Primary => {}
            Role::Backup => {
                // Not for us: on to the primary, as if the ingress proxy had sent it there.
                let tag = ctx.tag();
                let primary = self.primary().clone();
                ctx.forward_physical(
                    &primary,
                    ingress,
                    tag,
                    Payload::new(Submit { command: cmd }),
                );
                return;
            }
            // The ingress proxy retries.
            Role::Starting => return,
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
                    leader: Some(PRIMARY as u64),
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
        let backups: Vec<usize> = self.backups.keys().copied().collect();
        for b in backups {
            self.send_entries(ctx, b);
        }
        self.run_steps(ctx);
    }

    /// While starting: decides, if the answers allow it, to be a backup or the primary.
    fn decide(&mut self, ctx: &mut Context) {
        if self.role != Role::Starting {
            return;
        }
        if self
            .answers
            .get(&PRIMARY)
            .is_some_and(|a| a.role == Role::Primary)
        {
            self.role = Role::Backup;
            let primary = self.primary().clone();
            ctx.send_physical(
                &primary,
                Join {
                    len: self.log.len() as u64,
                },
            );
            return;
        }
        if self.index != PRIMARY || self.answers.len() < self.n() - 1 {
            return;
        }
        let longest = self
            .answers
            .values()
            .filter_map(|a| a.log.as_ref())
            .max_by_key(|l| l.len());
        if self.history && longest.is_none() && self.log.is_empty() {
            // Every backup lost its memory too: the log is gone. Better stopped than empty.
            tracing::error!(proxy = %self.me, "primary_backup: no backup holds the log; not starting");
            return;
        }
        if let Some(log) = longest.filter(|l| l.len() > self.log.len()).cloned() {
            let from = self.log.len() as u64;
            self.append(from, log[from as usize..].to_vec());
        }
        self.role = Role::Primary;
        tracing::info!(proxy = %self.me, entries = self.log.len(), "primary_backup: primary started");
        for (i, answer) in std::mem::take(&mut self.answers) {
            let len = answer.log.as_ref().map_or(0, |l| l.len() as u64);
            self.backups.insert(
                i,
                Follower {
                    sent: len,
                    acked: len,
                    silent: 0,
                },
            );
            self.send_entries(ctx, i);
        }
        self.run_steps(ctx);
    }

    fn status(&self) -> PbStatus {
        PbStatus {
            index: self.index as u64,
            role: self.role,
            log_len: self.log.len() as u64,
            executed: self.applier.executed,
            completed: self.applier.completed(),
            live: self.backups.keys().map(|i| *i as u64).collect(),
        }
    }

    fn peer_index(&self, id: &str) -> Option<usize> {
        self.peers.iter().position(|p| &**p == id)
    }
}

impl Agent for PrimaryBackupProxy {
    fn on_start(&mut self, ctx: &mut Context) {
        if self.n() == 1 {
            self.role = Role::Primary;
            return;
        }
        self.nonce = ctx.now_millis().rotate_left(20) ^ ctx.random(i64::MAX) as u64;
        self.hello(ctx);
        ctx.set_timer(TICK, self.timing.tick);
    }

    fn on_timer(&mut self, ctx: &mut Context, name: &str) {
        if name != TICK {
            return;
        }
        self.ticks += 1;
        match self.role {
            Role::Starting => {
                if self.ticks.is_multiple_of(self.timing.hello_ticks) {
                    self.hello(ctx);
                }
            }
            Role::Primary => {
                let len = self.log.len() as u64;
                let drop_ticks = self.timing.drop_ticks;
                let mut dropped = Vec::new();
                for (i, f) in self.backups.iter_mut() {
                    if f.acked < len {
                        f.silent += 1;
                        if f.silent >= drop_ticks {
                            dropped.push(*i);
                        }
                    }
                }
                for i in dropped {
                    // Never the last one: an acknowledged request is always held by the primary
                    // and at least one backup, so the primary's crash cannot lose it.
                    if self.backups.len() <= 1 {
                        break;
                    }
                    tracing::warn!(proxy = %self.me, backup = %self.peers[i], "primary_backup: backup silent; no longer waited for");
                    self.backups.remove(&i);
                }
                self.release(ctx);
            }
            Role::Backup => return,
        }
        ctx.set_timer(TICK, self.timing.tick);
    }

    fn on_message(&mut self, ctx: &mut Context, message: Payload) -> Result<(), Error> {
        // From the copy, or from what it was transformed into (`X/Replica0 |> monitor`).
        if ovid::routing::is_refinement(&self.copy, ctx.sender()) {
            let reply = Reply {
                name: message.name().to_string(),
                bytes: message.to_bytes()?.to_vec(),
            };
            self.applier.reply(ctx.tag(), reply, &mut self.steps);
            self.run_steps(ctx);
        } else if message.is::<Submit>() {
            let submit = message.decode::<Submit>()?;
            let ingress = ctx
                .sender_id()
                .ok_or_else(|| Error::Invalid("a request without a sender".into()))?;
            self.on_submit(ctx, ingress, submit.command);
        } else if message.is::<Entries>() {
            let entries = message.decode::<Entries>()?;
            if self.role == Role::Backup && ctx.sender() == &**self.primary() {
                let len = self.log.len() as u64;
                if entries.from <= len {
                    self.append(entries.from, entries.commands);
                    self.run_steps(ctx);
                }
                let primary = self.primary().clone();
                ctx.send_physical(
                    &primary,
                    Ack {
                        len: self.log.len() as u64,
                    },
                );
            }
        } else if message.is::<Ack>() {
            let ack = message.decode::<Ack>()?;
            if let (Role::Primary, Some(i)) = (self.role, self.peer_index(ctx.sender())) {
                let len = self.log.len() as u64;
                let acked = ack.len.min(len);
                let f = self.backups.entry(i).or_insert(Follower {
                    sent: acked,
                    acked,
                    silent: 0,
                });
                if acked >= f.acked {
                    f.acked = acked;
                    f.silent = 0;
                }
                if f.sent < f.acked {
                    f.sent = f.acked;
                }
                self.send_entries(ctx, i);
                self.release(ctx);
            }
        } else if message.is::<Join>() {
            let join = message.decode::<Join>()?;
            if let (Role::Primary, Some(i)) = (self.role, self.peer_index(ctx.sender())) {
                let len = join.len.min(self.log.len() as u64);
                self.backups.insert(
                    i,
                    Follower {
                        sent: len,
                        acked: len,
                        silent: 0,
                    },
                );
                self.send_entries(ctx, i);
            }
        } else if message.is::<Hello>() {
            let hello = message.decode::<Hello>()?;
            let log = (self.role == Role::Backup).then(|| self.log.clone());
            let history = self.history || !self.log.is_empty();
            ctx.reply(HelloState {
                nonce: hello.nonce,
                index: self.index as u64,
                role: self.role,
                log,
                history,
            });
        } else if message.is::<HelloState>() {
            let answer = message.decode::<HelloState>()?;
            let from = answer.index as usize;
            if self.role == Role::Starting
                && answer.nonce == self.nonce
                && from < self.n()
                && from != self.index
            {
                self.history |=
                    answer.history || answer.log.as_ref().is_some_and(|l| !l.is_empty());
                self.answers.insert(from, answer);
                self.decide(ctx);
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
            "replicate::Submit",
            "primary_backup::Entries",
            "primary_backup::Ack",
            "primary_backup::Join",
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

//! `ReplicateIngressProxy`: stands in for the replicated agent towards one sender.
//!
//! Every request gets the next number of this proxy's client session and goes, as a
//! [`Submit`], to the replica proxy believed to lead. The first [`Outcome`] for a number is
//! passed back to the sender, with the request's own correlation tag, as if the agent had
//! replied; later ones are dropped. If no outcome comes for a while (the leader died, or the
//! proxy asked did), the proxy tries the next replica proxy with every request still open; the
//! replica proxies run each request once however often it is submitted.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use ovid::{Agent, Context, Error, Id, Payload};

use super::messages::{Command, Outcome, Submit};
use crate::expansion::{Args, int};
use crate::proxy;

/// The proxy's kind, as the expansion names it.
pub const KIND: &str = "ReplicateIngressProxy";

const RETRY: &str = "replicate::retry";

/// A request waiting for its outcome.
#[derive(Debug, Clone)]
struct Open {
    /// Who sent it (where the reply goes).
    to: Id,
    /// Its correlation tag.
    tag: u64,
    /// Its type name.
    name: String,
    /// Its postcard bytes.
    bytes: Vec<u8>,
}

/// The ingress proxy of `replicate` (see the module docs).
pub struct ReplicateIngressProxy {
    targets: Vec<Id>,
    /// The replica proxy requests go to.
    target: usize,
    me: Id,
    /// The client session: identifier and incarnation.
    client: String,
    next_seq: u64,
    open: BTreeMap<u64, Open>,
    /// Timer periods since the last outcome.
    silence: u32,
    /// Retries since the last outcome.
    retries: u32,
    armed: bool,
    /// The period of the retry timer (configuration `retry_tick_ms`).
    tick: Duration,
    /// Periods without an outcome before trying the next replica proxy (`retry_ticks`).
    retry_ticks: u32,
    /// Retries without an outcome before the open requests are given up (`give_up_after`).
    give_up_after: u32,
}

impl ReplicateIngressProxy {
    /// A proxy from its configuration: `targets` (the replica proxies, by index) and optional
    /// timing (`retry_tick_ms`, `retry_ticks`, `give_up_after`).
    pub fn from_config(args: &Args) -> Result<Self, Error> {
        let targets: Vec<Id> = proxy::ids(args, "targets")
            .into_iter()
            .map(Id::from)
            .collect();
        if targets.is_empty() {
            return Err(Error::Invalid(
                "ReplicateIngressProxy: no replica proxies in `targets`".into(),
            ));
        }
        let pos = |name: &str, default: i64| int(args, name, default).max(1);
        Ok(ReplicateIngressProxy {
            targets,
            target: 0,
            me: Id::from(""),
            client: String::new(),
            next_seq: 0,
            open: BTreeMap::new(),
            silence: 0,
            retries: 0,
            armed: false,
            tick: Duration::from_millis(pos("retry_tick_ms", 50) as u64),
            retry_ticks: pos("retry_ticks", 4) as u32,
            give_up_after: pos("give_up_after", 50) as u32,
        })
    }

    /// Every request numbered below this one has been answered.
    fn ack(&self) -> u64 {
        self.open.keys().next().copied().unwrap_or(self.next_seq)
    }

    fn submit(&self, ctx: &mut Context, seq: u64, open: &Open) {
        let command = Command {
            client: self.client.clone(),
            seq,
            ack: self.ack(),
            name: open.name.clone(),
            bytes: open.bytes.clone(),
        };
        ctx.send_physical(&self.targets[self.target], Submit { command });
    }

    fn arm(&mut self, ctx: &mut Context) {
        if !self.armed {
            self.armed = true;
            self.silence = 0;
            ctx.set_timer(RETRY, self.tick);
        }
    }

    /// Sends requests to replica proxy `target` from now on; if that is a change, submits the
    /// open requests there at once rather than after the retry timeout (someone who knows, such
    /// as the controller, said where the requests should go).
    pub(crate) fn point_at(&mut self, ctx: &mut Context, target: usize) {
        if target >= self.targets.len() || target == self.target {
            return;
        }
        self.target = target;
        self.silence = 0;
        for (seq, open) in &self.open {
            self.submit(ctx, *seq, open);
        }
    }

    /// The replica proxies, by index.
    pub(crate) fn targets(&self) -> &[Id] {
        &self.targets
    }

    fn on_outcome(&mut self, ctx: &mut Context, outcome: Outcome) {
        if outcome.client != self.client {
            return;
        }
        if let Some(leader) = outcome
            .leader
            .and_then(|l| usize::try_from(l).ok())
            .filter(|l| *l < self.targets.len())
        {
            self.target = leader;
        }
        let Some(open) = self.open.remove(&outcome.seq) else {
            return;
        };
        self.silence = 0;
        self.retries = 0;
        if let Some(reply) = outcome.reply {
            let payload = Payload::Encoded {
                name: reply.name.into(),
                bytes: Bytes::from(reply.bytes),
            };
            ctx.forward_physical(&open.to, self.me.clone(), open.tag, payload);
        }
    }

    fn on_request(&mut self, ctx: &mut Context, message: Payload) -> Result<(), Error> {
        let to = ctx
            .sender_id()
            .ok_or_else(|| Error::Invalid("a request without a sender".into()))?;
        let open = Open {
            to,
            tag: ctx.tag(),
            name: message.name().to_string(),
            bytes: message.to_bytes()?.to_vec(),
        };
        let seq = self.next_seq;
        self.next_seq += 1;
        // Open before it is submitted: the acknowledgement it carries must not cover it.
        self.open.insert(seq, open);
        self.submit(ctx, seq, &self.open[&seq]);
        self.arm(ctx);
        Ok(())
    }
}

impl Agent for ReplicateIngressProxy {
    fn on_start(&mut self, ctx: &mut Context) {
        self.me = ctx.me().into();
        // A new session per incarnation: a restarted proxy numbers its requests from 0 again.
        self.client = format!("{}@{:x}", ctx.me(), ctx.now_millis());
    }

    fn on_message(&mut self, ctx: &mut Context, message: Payload) -> Result<(), Error> {
        if message.is::<Outcome>() {
            let outcome = message.decode::<Outcome>()?;
            self.on_outcome(ctx, outcome);
            Ok(())
        } else {
            self.on_request(ctx, message)
        }
    }

    fn on_timer(&mut self, ctx: &mut Context, name: &str) {
        if name != RETRY {
            return;
        }
        self.armed = false;
        if self.open.is_empty() {
            return;
        }
        self.silence += 1;
        if self.silence >= self.retry_ticks {
            self.silence = 0;
            self.retries += 1;
            if self.retries > self.give_up_after {
                tracing::warn!(proxy = %self.me, open = self.open.len(), "no replica proxy answers: open requests given up");
                self.open.clear();
                self.retries = 0;
                return;
            }
            self.target = (self.target + 1) % self.targets.len();
            tracing::debug!(proxy = %self.me, target = %self.targets[self.target], open = self.open.len(), "no outcome: trying the next replica proxy");
            for (seq, open) in &self.open {
                self.submit(ctx, *seq, open);
            }
        }
        self.armed = true;
        ctx.set_timer(RETRY, self.tick);
    }
}

//! The task that runs one agent: its inbox, its timers, its routing table.
//!
//! One tokio task per agent, so an agent handles one message at a time and needs no lock.
//! The loop waits with `select!` on commands from the box (stop, snapshot, wedge), the inbox,
//! the agent's timers and the controller's answers to its ART misses. It stops when the box
//! drops its senders (that is how a box shuts its agents down: no broadcast receiver to poll on
//! the hot path), and holds the box's completion sender (`Shutdown`) until it has stopped. After each handler call it
//! carries out the effects the handler recorded in its [`Context`].
//!
//! An ART miss never blocks the agent: the message is parked, the question goes to the
//! controller, and the agent goes on handling other messages; when the answer arrives, every
//! message parked for that identifier is sent, in order.

use std::collections::{HashMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use rustc_hash::FxHashMap;
use tokio::sync::mpsc;
use tokio_util::time::{DelayQueue, delay_queue};

use crate::agent::Agent;
use crate::context::{Clock, Context, Effect};
use crate::error::Error;
use crate::message::{Envelope, Id, Payload};
use crate::metrics::Metrics;
use crate::protocol::RouteUpdate;
use crate::routing::{Art, Router};
use crate::shutdown::Shutdown;
pub(crate) use crate::slot::Control;

/// What the box does when an agent's task ends: given its identifier and whether to tell the
/// controller.
pub(crate) type OnExit = Box<dyn FnOnce(&Id, bool) + Send>;

/// A message waiting for the controller's answer to an ART miss: sender, tag, payload.
type Parked = (Id, u64, Payload);

type Resolving = Pin<Box<dyn Future<Output = (Id, Option<Id>)> + Send>>;

/// Everything one agent's task owns.
pub(crate) struct Runner {
    pub id: Id,
    pub agent: Box<dyn Agent>,
    pub router: Arc<Router>,
    pub art: Art,
    pub clock: Clock,
    /// A weak handle on the agent's own inbox, given to its context.
    pub inbox_tx: mpsc::WeakUnboundedSender<Envelope>,
    /// The agent's durable store, if the box has a data directory.
    pub durable: Option<crate::durable::DurableLog>,
    /// Called when the task ends, with the identifier and whether the controller should be
    /// told (the agent finished, crashed or was stopped, rather than the box shutting down).
    pub on_exit: OnExit,
}

impl Runner {
    /// Runs the agent until it finishes, is stopped, or the box shuts down.
    pub(crate) async fn run(
        mut self,
        mut inbox: mpsc::UnboundedReceiver<Envelope>,
        mut control: mpsc::UnboundedReceiver<Control>,
        _shutdown: Shutdown,
    ) {
        let mut ctx = Context::new(self.id.clone());
        ctx.set_inbox(self.inbox_tx.clone());
        if let Some(log) = self.durable.take() {
            ctx.set_durable(log);
        }
        let mut effects = Vec::new();
        let mut timers: DelayQueue<String> = DelayQueue::new();
        let mut timer_keys: HashMap<String, delay_queue::Key> = HashMap::new();
        let mut parked: FxHashMap<Id, VecDeque<Parked>> = FxHashMap::default();
        let mut resolving: FuturesUnordered<Resolving> = FuturesUnordered::new();
        let mut wedged = false;

        ctx.begin_with_clock(None, 0, self.clock);
        let mut alive = self.call(&mut ctx, |agent, ctx| {
            agent.on_start(ctx);
            Ok(())
        });
        self.apply(
            &mut ctx,
            &mut effects,
            &mut timers,
            &mut timer_keys,
            &mut parked,
            &mut resolving,
        );

        let mut shut_down = false;
        while alive && !ctx.is_finished() {
            tokio::select! {
                biased;
                cmd = control.recv() => match cmd {
                    Some(Control::Snapshot(tx)) => { let _ = tx.send(self.agent.snapshot()); }
                    Some(Control::Stop(tx)) => { let _ = tx.send(self.agent.snapshot()); break; }
                    Some(Control::Wedge) => wedged = true,
                    Some(Control::Unwedge) => wedged = false,
                    // The box dropped our senders: it is shutting down.
                    None => { shut_down = true; break }
                },
                Some((ident, answer)) = resolving.next(), if !resolving.is_empty() => {
                    self.resolved(ident, answer, &mut parked);
                }
                env = inbox.recv(), if !wedged => {
                    let Some(env) = env else { shut_down = true; break };
                    alive = self.handle(&mut ctx, env);
                }
                Some(expired) = timers.next(), if !wedged && !timers.is_empty() => {
                    let name = expired.into_inner();
                    timer_keys.remove(&name);
                    ctx.begin_with_clock(None, 0, self.clock);
                    alive = self.call(&mut ctx, |agent, ctx| {
                        agent.on_timer(ctx, &name);
                        Ok(())
                    });
                }
            }
            self.apply(
                &mut ctx,
                &mut effects,
                &mut timers,
                &mut timer_keys,
                &mut parked,
                &mut resolving,
            );
        }
        if ctx.is_finished() {
            tracing::info!(agent = %self.id, "agent finished");
        }
        (self.on_exit)(&self.id, !shut_down);
    }

    /// Delivers one envelope: runtime messages are handled here, the rest by the agent.
    fn handle(&mut self, ctx: &mut Context, env: Envelope) -> bool {
        if env.payload.is::<RouteUpdate>() {
            match env.payload.decode::<RouteUpdate>() {
                Ok(u) => match u.physical {
                    Some(p) => {
                        if let Err(e) = self.art.insert(u.ident.into(), p.into()) {
                            tracing::warn!(agent = %self.id, error = %e, "route update refused");
                        }
                    }
                    None => self.art.invalidate(&u.ident),
                },
                Err(e) => tracing::warn!(agent = %self.id, error = %e, "bad route update"),
            }
            return true;
        }
        ctx.begin_with_clock(Some(env.from), env.tag, self.clock);
        let payload = env.payload;
        self.call(ctx, move |agent, ctx| agent.on_message(ctx, payload))
    }

    /// Calls into the agent, turning a panic into a stopped agent rather than a dead box.
    fn call(
        &mut self,
        ctx: &mut Context,
        f: impl FnOnce(&mut dyn Agent, &mut Context) -> Result<(), Error>,
    ) -> bool {
        let agent = &mut *self.agent;
        match std::panic::catch_unwind(AssertUnwindSafe(|| f(agent, ctx))) {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                Metrics::inc(&self.router.metrics.rejections);
                tracing::warn!(agent = %self.id, error = %e, "message rejected by agent");
                true
            }
            Err(_) => {
                Metrics::inc(&self.router.metrics.rejections);
                tracing::error!(agent = %self.id, "agent panicked; it is stopped");
                false
            }
        }
    }

    /// Carries out what the last handler asked for.
    fn apply(
        &mut self,
        ctx: &mut Context,
        effects: &mut Vec<Effect>,
        timers: &mut DelayQueue<String>,
        timer_keys: &mut HashMap<String, delay_queue::Key>,
        parked: &mut FxHashMap<Id, VecDeque<Parked>>,
        resolving: &mut FuturesUnordered<Resolving>,
    ) {
        ctx.drain_effects_into(effects);
        let tag = ctx.tag();
        for effect in effects.drain(..) {
            match effect {
                Effect::Send { to, payload } => {
                    self.send(to, (self.id.clone(), tag, payload), parked, resolving)
                }
                Effect::Forward {
                    to,
                    physical: false,
                    from,
                    tag,
                    payload,
                } => self.send(to, (from, tag, payload), parked, resolving),
                Effect::Forward {
                    to,
                    physical: true,
                    from,
                    tag,
                    payload,
                } => {
                    Metrics::inc(&self.router.metrics.messages_out);
                    self.router.route(Envelope {
                        from,
                        to,
                        payload,
                        tag,
                    });
                }
                Effect::SendPhysical { to, payload } => {
                    Metrics::inc(&self.router.metrics.messages_out);
                    self.router.route(Envelope {
                        from: self.id.clone(),
                        to,
                        payload,
                        tag,
                    });
                }
                Effect::SetTimer { name, after } => match timer_keys.get(&name) {
                    Some(key) => timers.reset(key, after),
                    None => {
                        let key = timers.insert(name.clone(), after);
                        timer_keys.insert(name, key);
                    }
                },
                Effect::CancelTimer { name } => {
                    if let Some(key) = timer_keys.remove(&name) {
                        timers.remove(&key);
                    }
                }
                Effect::Print(line) => println!("{line}"),
                Effect::Metric { name, value } => self.router.metrics.set_gauge(name, value),
            }
        }
    }

    /// Sends through the ART, parking the message if the identifier is not cached yet.
    fn send(
        &mut self,
        to: Id,
        message: Parked,
        parked: &mut FxHashMap<Id, VecDeque<Parked>>,
        resolving: &mut FuturesUnordered<Resolving>,
    ) {
        Metrics::inc(&self.router.metrics.messages_out);
        if let Some(waiting) = parked.get_mut(&to) {
            // Behind earlier messages to the same identifier: keep the order.
            waiting.push_back(message);
        } else if let Some(physical) = self.art.get(&to) {
            let (from, tag, payload) = message;
            self.router.route(Envelope {
                from,
                to: physical.clone(),
                payload,
                tag,
            });
        } else {
            tracing::debug!(agent = %self.id, ident = %to, "ART miss: asking the controller");
            let answer = self.router.resolve_art(&self.id, &to);
            let ident = to.clone();
            resolving.push(Box::pin(async move { (ident, answer.await) }));
            parked.insert(to, VecDeque::from([message]));
        }
    }

    /// The controller answered an ART miss: cache it and send what was parked.
    fn resolved(
        &mut self,
        ident: Id,
        answer: Option<Id>,
        parked: &mut FxHashMap<Id, VecDeque<Parked>>,
    ) {
        let waiting = parked.remove(&ident).unwrap_or_default();
        let physical = answer.filter(|p| match self.art.insert(ident.clone(), p.clone()) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(agent = %self.id, error = %e, "controller answer refused");
                false
            }
        });
        for (from, tag, payload) in waiting {
            let env = Envelope {
                from,
                to: physical.clone().unwrap_or_else(|| ident.clone()),
                payload,
                tag,
            };
            match &physical {
                Some(_) => self.router.route(env),
                None => self
                    .router
                    .reject(&env, &Error::UnknownIdentifier(ident.to_string())),
            }
        }
    }
}

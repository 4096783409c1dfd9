//! The context: an agent's only window on the world.
//!
//! An agent never touches a socket or a clock. Everything it wants done — send a message,
//! reply, set a timer, print a line, stop — it asks of its [`Context`], which records the
//! request as an [`Effect`]. The box carries the effects out after the handler returns. That
//! is what makes an agent a pure state machine: a test or a simulator can build a `Context`,
//! call a handler and look at [`Context::take_effects`], with no box at all.

use rustc_hash::FxHashSet;
use std::time::Duration;

use crate::durable::DurableLog;
use crate::message::{Id, Message, Payload};

/// How the box's clock reads for agents: milliseconds since the epoch, advanced by tokio time
/// (so a test that pauses tokio time controls it).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    epoch_millis: u64,
    start: tokio::time::Instant,
}

impl Clock {
    /// A clock reading the system time now.
    pub(crate) fn new() -> Self {
        let epoch_millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Clock {
            epoch_millis,
            start: tokio::time::Instant::now(),
        }
    }

    /// Milliseconds since the Unix epoch.
    pub(crate) fn now_millis(&self) -> u64 {
        self.epoch_millis + self.start.elapsed().as_millis() as u64
    }
}

/// Something an agent asked for during one handler call.
#[derive(Debug)]
pub enum Effect {
    /// Send to an identifier the agent uses; the agent's routing table (ART) resolves it.
    Send {
        /// The identifier as the agent knows it (`KVS`).
        to: Id,
        /// The message.
        payload: Payload,
    },
    /// Send to a physical identifier, bypassing the ART; replies are sent this way.
    SendPhysical {
        /// The physical identifier (`KVS/Shard1`).
        to: Id,
        /// The message.
        payload: Payload,
    },
    /// Arm (or re-arm) the timer with this name.
    SetTimer {
        /// The timer's name, given back to `on_timer`.
        name: String,
        /// How long from now.
        after: Duration,
    },
    /// Disarm the timer with this name, if armed.
    CancelTimer {
        /// The timer's name.
        name: String,
    },
    /// Print a line on the box's standard output.
    Print(String),
    /// Publish a gauge in the box's counters (a monitor's counts, say).
    Metric {
        /// The gauge's name, e.g. `monitor.KVS/Monitor0.Put.messages`.
        name: String,
        /// Its value now.
        value: u64,
    },
    /// Pass a message on as if another agent sent it (proxies do this, so that the agent
    /// behind them sees, and replies to, the original sender).
    Forward {
        /// The identifier to send to; resolved by the ART unless `physical`.
        to: Id,
        /// Whether `to` is already a physical identifier.
        physical: bool,
        /// The sender the receiver sees (where its replies go).
        from: Id,
        /// The correlation tag the envelope carries.
        tag: u64,
        /// The message.
        payload: Payload,
    },
}

/// What an agent's handlers get to act on the world; see the module docs.
#[derive(Debug)]
pub struct Context {
    /// This agent's physical identifier.
    me: Id,
    /// The physical identifier of the sender of the message being handled, if any.
    sender: Option<Id>,
    /// The correlation tag of the message being handled (0 outside a message handler).
    tag: u64,
    /// Milliseconds since the Unix epoch, if given by whoever called `begin`...
    now_millis: Option<u64>,
    /// ...else read from the box's clock when the agent asks (most handlers never do).
    clock: Option<Clock>,
    /// State of a xorshift generator, seeded from the identifier: deterministic on replay.
    rng: u64,
    /// Identifiers seen before, so that sending to the same name twice allocates once.
    interned: FxHashSet<Id>,
    effects: Vec<Effect>,
    finished: bool,
    /// A weak handle on this agent's own inbox, for [`Context::outside`].
    inbox: Option<tokio::sync::mpsc::WeakUnboundedSender<crate::message::Envelope>>,
    /// The agent's durable store, if whoever runs it gives one (see [`Context::durable`]).
    durable: Option<DurableLog>,
}

/// A handle through which the world outside the box (a socket, a child process, a thread)
/// gives an agent input: as messages in its own inbox, handled one at a time like any other.
///
/// Gateways use it (an HTTP front end, the adapter of an external process); the agent stays a
/// state machine, and its I/O runs in the task that holds the handle. It does not keep the
/// agent alive: once the agent has stopped, [`Outside::deliver`] returns `false`.
#[derive(Debug, Clone)]
pub struct Outside {
    me: Id,
    inbox: tokio::sync::mpsc::WeakUnboundedSender<crate::message::Envelope>,
}

impl Outside {
    /// Puts `message` in the agent's inbox with correlation tag `tag` (the sender it sees is
    /// its own identifier); `false` if the agent has stopped.
    pub fn deliver<M: Message>(&self, message: M, tag: u64) -> bool {
        let Some(tx) = self.inbox.upgrade() else {
            return false;
        };
        let env = crate::message::Envelope {
            from: self.me.clone(),
            to: self.me.clone(),
            payload: Payload::new(message),
            tag,
        };
        tx.send(env).is_ok()
    }
}

impl Context {
    /// A context for the agent `me`, as a box or a test creates it.
    pub fn new(me: impl Into<Id>) -> Self {
        let me = me.into();
        // FNV-1a of the identifier: a different, repeatable random stream per agent.
        let seed = me.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
        });
        Context {
            me,
            sender: None,
            tag: 0,
            now_millis: None,
            clock: None,
            rng: seed | 1,
            interned: FxHashSet::default(),
            effects: Vec::new(),
            finished: false,
            inbox: None,
            durable: None,
        }
    }

    /// Gives the agent a durable store (a box with a data directory, the simulator, or a test
    /// does this before `on_start`).
    pub fn set_durable(&mut self, log: DurableLog) {
        self.durable = Some(log);
    }

    /// The agent's durable store: an append-only log that survives the agent's crash and
    /// restart (a file in the box's data directory, or the simulator's disk). `None` when the
    /// agent runs without one: then nothing it knows survives a crash. Writing to it is the one
    /// thing an agent does synchronously, in its handler, so that what it sends afterwards may
    /// depend on it (see [`crate::durable`]).
    pub fn durable(&mut self) -> Option<&mut DurableLog> {
        self.durable.as_mut()
    }

    /// Connects the context to the agent's inbox, for [`Context::outside`] (the box does this).
    pub(crate) fn set_inbox(
        &mut self,
        inbox: tokio::sync::mpsc::WeakUnboundedSender<crate::message::Envelope>,
    ) {
        self.inbox = Some(inbox);
    }

    /// A handle for feeding this agent input from outside the box (see [`Outside`]); `None`
    /// when the agent runs without a box (a test driving it by hand).
    pub fn outside(&self) -> Option<Outside> {
        self.inbox.clone().map(|inbox| Outside {
            me: self.me.clone(),
            inbox,
        })
    }

    /// Prepares the context for the next handler call (the box does this).
    pub fn begin(&mut self, sender: Option<Id>, now_millis: u64) {
        self.sender = sender;
        self.tag = 0;
        self.now_millis = Some(now_millis);
    }

    /// Prepares the context for a handler call that reads the box's clock only if asked.
    pub(crate) fn begin_with_clock(&mut self, sender: Option<Id>, tag: u64, clock: Clock) {
        self.sender = sender;
        self.tag = tag;
        self.now_millis = None;
        self.clock = Some(clock);
    }

    /// This agent's physical identifier.
    pub fn me(&self) -> &str {
        &self.me
    }

    /// The identifier of the agent as the system names it (`KVS`, `client[1]`): what every copy
    /// a transformation made of it stands for. A copy's physical identifier is under it
    /// (`KVS/Shard1`, `KVS/Shard1/Replica0`), so it is the first segment of [`Self::me`].
    /// The handler language's `me()`.
    pub fn identity(&self) -> &str {
        self.me.split('/').next().unwrap_or(&self.me)
    }

    /// The physical identifier of whoever sent the message being handled (`""` if none).
    pub fn sender(&self) -> &str {
        self.sender.as_deref().unwrap_or("")
    }

    /// Sets the correlation tag of the message being handled (a test or simulator driving an
    /// agent without a box does this after [`Context::begin`]).
    pub fn set_tag(&mut self, tag: u64) {
        self.tag = tag;
    }

    /// The correlation tag of the message being handled; what the handler sends carries it.
    pub fn tag(&self) -> u64 {
        self.tag
    }

    /// The physical identifier of the sender, shared (for proxies that remember it).
    pub fn sender_id(&self) -> Option<Id> {
        self.sender.clone()
    }

    /// Passes `payload` on to the identifier `to` (resolved by the ART) as if `from` sent it,
    /// with correlation tag `tag`: the receiver's replies go to `from`, not to this agent.
    pub fn forward(&mut self, to: &str, from: Id, tag: u64, payload: Payload) {
        let to = self.intern(to);
        self.effects.push(Effect::Forward {
            to,
            physical: false,
            from,
            tag,
            payload,
        });
    }

    /// Like [`Context::forward`] to a physical identifier, bypassing the ART.
    pub fn forward_physical(&mut self, to: &str, from: Id, tag: u64, payload: Payload) {
        let to = self.intern(to);
        self.effects.push(Effect::Forward {
            to,
            physical: true,
            from,
            tag,
            payload,
        });
    }

    /// Sends `message` to the identifier `to`, as this agent knows it (resolved by its ART).
    pub fn send<M: Message>(&mut self, to: &str, message: M) {
        self.send_payload(to, Payload::new(message));
    }

    /// Sends an already wrapped payload to the identifier `to`.
    pub fn send_payload(&mut self, to: &str, payload: Payload) {
        let to = self.intern(to);
        self.effects.push(Effect::Send { to, payload });
    }

    /// Sends `message` straight to a physical identifier, bypassing the ART.
    pub fn send_physical<M: Message>(&mut self, to: &str, message: M) {
        let to = self.intern(to);
        self.effects.push(Effect::SendPhysical {
            to,
            payload: Payload::new(message),
        });
    }

    /// Replies to the sender of the message being handled (at its physical identifier).
    ///
    /// Outside a message handler there is nobody to reply to; the reply is dropped with a
    /// warning.
    pub fn reply<M: Message>(&mut self, message: M) {
        match self.sender.clone() {
            Some(to) => self.effects.push(Effect::SendPhysical {
                to,
                payload: Payload::new(message),
            }),
            None => {
                tracing::warn!(agent = %self.me, message = M::NAME, "reply outside a message handler dropped")
            }
        }
    }

    /// Arms the timer `name` to fire `after` from now, replacing an armed timer of that name.
    pub fn set_timer(&mut self, name: impl Into<String>, after: Duration) {
        self.effects.push(Effect::SetTimer {
            name: name.into(),
            after,
        });
    }

    /// Disarms the timer `name`; nothing happens if it is not armed.
    pub fn cancel_timer(&mut self, name: impl Into<String>) {
        self.effects.push(Effect::CancelTimer { name: name.into() });
    }

    /// Prints a line on the box's standard output.
    pub fn print(&mut self, line: impl Into<String>) {
        self.effects.push(Effect::Print(line.into()));
    }

    /// Publishes `value` as the gauge `name` among the box's counters
    /// ([`crate::BoxHandle::gauges`]).
    pub fn set_metric(&mut self, name: impl Into<String>, value: u64) {
        self.effects.push(Effect::Metric {
            name: name.into(),
            value,
        });
    }

    /// Declares the agent done: the box stops it after this handler.
    pub fn finish(&mut self) {
        self.finished = true;
    }

    /// Whether the agent called [`Context::finish`].
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Milliseconds since the Unix epoch when the handler was called (from the box's clock,
    /// which a test can pause).
    pub fn now_millis(&self) -> u64 {
        match (self.now_millis, self.clock) {
            (Some(now), _) => now,
            (None, Some(clock)) => clock.now_millis(),
            (None, None) => 0,
        }
    }

    /// A pseudo-random number in `0..n` (`0` if `n` is 0), repeatable for a given agent.
    pub fn random_below(&mut self, n: u64) -> u64 {
        // xorshift64*: tiny, fast, and good enough for picking replicas or jitter.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let r = self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d);
        r.checked_rem(n).unwrap_or(0)
    }

    /// A number in `0..n` from the agent's random stream (0 if `n <= 0`): [`Self::random_below`]
    /// for signed bounds.
    pub fn random(&mut self, n: i64) -> i64 {
        match u64::try_from(n) {
            Ok(n) => self.random_below(n) as i64,
            Err(_) => 0,
        }
    }

    /// Records an effect that another context recorded: a wrapper agent that drives an inner
    /// agent through a context of its own (the replicated controller) carries out the inner
    /// agent's effects this way.
    pub fn emit(&mut self, effect: Effect) {
        self.effects.push(effect);
    }

    /// Takes the effects recorded so far, leaving none.
    pub fn take_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.effects)
    }

    /// Moves the recorded effects into `out` (keeps both allocations for reuse).
    pub fn drain_effects_into(&mut self, out: &mut Vec<Effect>) {
        out.append(&mut self.effects);
    }

    fn intern(&mut self, id: &str) -> Id {
        if let Some(found) = self.interned.get(id) {
            return found.clone();
        }
        let id: Id = id.into();
        // Bound the cache: an agent that sends to ever new names should not grow without end.
        if self.interned.len() > 4096 {
            self.interned.clear();
        }
        self.interned.insert(id.clone());
        id
    }
}

//! The box manager: the agent every box runs under the identifier `$box/<name>`.
//!
//! It is how the controller acts on a box: start an agent (of a kind the box knows, possibly
//! from a snapshot), stop one (answering with its snapshot), change the box routing table. It
//! also receives the controller's answers to the box's routing questions and hands them to
//! whoever waits for them.

use std::sync::{Arc, Weak};

use crate::agent::Agent;
use crate::context::Context;
use crate::error::Error;
use crate::message::{Id, Payload};
pub use crate::protocol::{
    AgentStarted, AgentStopped, GetMetrics, MetricsReport, StartAgent, StartFailed, StopAgent,
    UpdateBrt,
};
use crate::protocol::{ArtAnswer, BrtAnswer, Heartbeat, HeartbeatAck, Pong, Registered};
use crate::routing::{Art, Router};
use crate::runner::Control;

/// What the box manager needs of its box, and all it may do to it: start agents, send their
/// tasks commands, and reach the router (routing tables, answers to questions).
pub(crate) trait ManagedBox: Send + Sync + 'static {
    /// The box's router.
    fn router(&self) -> &Arc<Router>;
    /// Makes an agent of `kind` from `config` and starts it as `id`, with these ART entries
    /// and restored from `state` if given; the controller hears of it.
    fn start(
        self: Arc<Self>,
        id: Id,
        kind: &str,
        config: &[u8],
        art: Art,
        state: Option<Vec<u8>>,
    ) -> Result<(), Error>;
    /// Sends a command to the task of the running agent `id`.
    fn control(&self, id: &str, cmd: Control) -> Result<(), Error>;
}

/// The box manager agent (see the module docs).
pub(crate) struct BoxManager {
    /// The box; weak so that the manager's task does not keep it alive.
    core: Weak<dyn ManagedBox>,
}

impl BoxManager {
    pub(crate) fn new(core: Weak<dyn ManagedBox>) -> Self {
        BoxManager { core }
    }
}

impl Agent for BoxManager {
    fn on_message(&mut self, ctx: &mut Context, message: Payload) -> Result<(), Error> {
        let Some(core) = self.core.upgrade() else {
            return Err(Error::Closed);
        };
        let router = core.router();
        match message.name() {
            n if n == <ArtAnswer as crate::Message>::NAME => {
                let req = Payload::decode::<ArtAnswer>(message)?;
                router.answer(req.req, Payload::new(req));
            }
            n if n == <BrtAnswer as crate::Message>::NAME => {
                let a = message.decode::<BrtAnswer>()?;
                router.settle(a.req);
                router.brt_resolved(&a.id, a.addr.as_deref());
            }
            n if n == <Registered as crate::Message>::NAME => {
                let r = message.decode::<Registered>()?;
                router.answer(r.req, Payload::new(r));
            }
            n if n == <Pong as crate::Message>::NAME => {
                let p = message.decode::<Pong>()?;
                router.answer(p.req, Payload::new(p));
            }
            n if n == <StartAgent as crate::Message>::NAME => {
                let s = message.decode::<StartAgent>()?;
                let mut art = Art::new();
                let started = s
                    .art
                    .into_iter()
                    .try_for_each(|(k, v)| art.insert(k.into(), v.into()))
                    .and_then(|()| {
                        let id = Id::from(s.id.as_str());
                        core.clone().start(id, &s.kind, &s.config, art, s.state)
                    });
                if let Err(Error::AgentExists(_)) = started {
                    // Already running here: a controller that took over asks again for what
                    // its predecessor may not have started. Confirm instead of failing.
                    ctx.reply(AgentStarted {
                        id: s.id,
                        in_box: router.box_name.clone(),
                    });
                } else if let Err(e) = started {
                    tracing::warn!(box_name = %router.box_name, id = %s.id, error = %e, "cannot start agent");
                    ctx.reply(StartFailed {
                        id: s.id,
                        error: e.to_string(),
                    });
                }
            }
            n if n == <StopAgent as crate::Message>::NAME => {
                let s = message.decode::<StopAgent>()?;
                let (tx, rx) = tokio::sync::oneshot::channel();
                core.control(&s.id, Control::Stop(tx))?;
                // The agent answers from its own task; forward its snapshot when it does.
                let asker: Id = ctx.sender().into();
                let (router, manager, in_box) = (
                    router.clone(),
                    router.manager.clone(),
                    router.box_name.clone(),
                );
                tokio::spawn(async move {
                    let state = rx.await.ok().and_then(|r| r.ok());
                    // (The controller hears of the stop from the box itself, in any case.)
                    let stopped = AgentStopped {
                        id: s.id,
                        in_box,
                        state,
                    };
                    router.route(crate::Envelope::new(manager, asker, stopped));
                });
            }
            n if n == <Heartbeat as crate::Message>::NAME => {
                let h = message.decode::<Heartbeat>()?;
                ctx.reply(HeartbeatAck { seq: h.seq });
            }
            n if n == <UpdateBrt as crate::Message>::NAME => {
                for (id, addr) in message.decode::<UpdateBrt>()?.entries {
                    router.set_brt(&id, addr.as_deref());
                }
            }
            n if n == <GetMetrics as crate::Message>::NAME => {
                let q = message.decode::<GetMetrics>()?;
                ctx.reply(MetricsReport {
                    req: q.req,
                    box_name: router.box_name.clone(),
                    metrics: router.metrics.snapshot(),
                });
            }
            other => {
                return Err(Error::UnknownMessage {
                    agent: ctx.me().to_string(),
                    name: other.to_string(),
                });
            }
        }
        Ok(())
    }
}

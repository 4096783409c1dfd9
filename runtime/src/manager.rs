//! The box manager: the agent every box runs under the identifier `$box/<name>`.
//!
//! It is how the controller acts on a box: start an agent (of a kind the box knows, possibly
//! from a snapshot), stop one (answering with its snapshot), change the box routing table. It
//! also receives the controller's answers to the box's routing questions and hands them to
//! whoever waits for them.

use std::sync::Weak;

use serde::{Deserialize, Serialize};

use crate::agent::Agent;
use crate::context::Context;
use crate::controller::{Pong, Registered};
use crate::error::Error;
use crate::host::BoxCore;
use crate::message::{Id, Payload};
use crate::metrics::MetricsSnapshot;
use crate::routing::{Art, ArtAnswer, BrtAnswer, system_messages};
use crate::runner::Control;
use crate::views::{Heartbeat, HeartbeatAck};

/// Controller → box manager: start an agent here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartAgent {
    /// Its physical identifier.
    pub id: String,
    /// The kind registered with [`BoxBuilder::kind`](crate::BoxBuilder::kind).
    pub kind: String,
    /// Given to the kind's factory.
    pub config: Vec<u8>,
    /// Initial ART entries (identifier → physical identifier).
    pub art: Vec<(String, String)>,
    /// A snapshot to restore, when the agent moves or is re-instantiated.
    pub state: Option<Vec<u8>>,
}

/// Controller (or anyone) → box manager: stop an agent; answered with [`AgentStopped`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StopAgent {
    /// Its physical identifier.
    pub id: String,
}

/// Box manager → controller: an agent started here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentStarted {
    /// Its physical identifier.
    pub id: String,
    /// This box's name.
    pub in_box: String,
}

/// Box manager → controller: an agent could not be started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartFailed {
    /// Its physical identifier.
    pub id: String,
    /// Why.
    pub error: String,
}

/// Box manager → controller (and the asker of [`StopAgent`]): an agent stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentStopped {
    /// Its physical identifier.
    pub id: String,
    /// This box's name.
    pub in_box: String,
    /// Its last snapshot, if it was stopped on request.
    pub state: Option<Vec<u8>>,
}

/// Controller → box manager: set (`Some`) or invalidate (`None`) BRT entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateBrt {
    /// Physical identifier → box address.
    pub entries: Vec<(String, Option<String>)>,
}

/// Anyone → box manager: what are your counters? Answered with [`MetricsReport`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetMetrics {
    /// Copied into the answer.
    pub req: u64,
}

/// Box manager → asker: the box's counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetricsReport {
    /// From the question.
    pub req: u64,
    /// The box's name.
    pub box_name: String,
    /// The counters.
    pub metrics: MetricsSnapshot,
}

system_messages!(
    StartAgent,
    StopAgent,
    AgentStarted,
    StartFailed,
    AgentStopped,
    UpdateBrt,
    GetMetrics,
    MetricsReport
);

/// The box manager agent (see the module docs).
pub(crate) struct BoxManager {
    /// The box; weak so that the manager's task does not keep it alive.
    core: Weak<BoxCore>,
}

impl BoxManager {
    pub(crate) fn new(core: Weak<BoxCore>) -> Self {
        BoxManager { core }
    }
}

impl Agent for BoxManager {
    fn on_message(&mut self, ctx: &mut Context, message: Payload) -> Result<(), Error> {
        let Some(core) = self.core.upgrade() else {
            return Err(Error::Closed);
        };
        let router = &core.router;
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
                    .and_then(|()| core.make(&s.kind, &s.config))
                    .and_then(|agent| {
                        core.spawn_agent(Id::from(s.id.as_str()), agent, art, s.state, true)
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
                    core.router.clone(),
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

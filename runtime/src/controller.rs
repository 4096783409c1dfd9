//! The controller: the agent `controller`, which knows the whole system.
//!
//! It holds the LATT (what each agent was transformed into) and the placement (which box runs
//! which physical agent, what kind of agent it is, and the ART entries it starts with). Boxes
//! register with it when they start; it then starts, through each box's manager, the agents
//! placed there. It answers the routing questions of every box: ART misses (which physical agent
//! does this agent reach by that identifier?) and BRT misses (which box runs that physical
//! agent?). Routing tables are caches, so it can also invalidate their entries.
//!
//! It is an ordinary agent: it handles one message at a time, through its context, and can
//! itself run in any box. Other boxes reach it at a configured address.

use std::collections::BTreeMap;

use crate::agent::Agent;
use crate::context::Context;
pub use crate::deployment::{AgentPlan, Placement};
use crate::error::Error;
use crate::message::{Message, Payload};
use crate::protocol::{
    AgentStarted, AgentStopped, ArtAnswer, BrtAnswer, CONTROLLER, ResolveArt, ResolveBrt,
    RouteUpdate, StartAgent, StartFailed, UpdateBrt, manager_id,
};
pub use crate::protocol::{
    Describe, Invalidate, Picture, Ping, Place, Pong, RegisterBox, Registered, SetRoute,
};
use crate::routing::is_refinement;
use crate::views::{Failover, ViewService};

/// Where the controller thinks an identifier runs.
enum Location {
    /// At this box address.
    At(String),
    /// Placed, but its box has not registered or the agent has not started yet.
    NotYet,
    /// Unknown.
    Unknown,
}

/// The controller agent (see the module docs).
#[derive(Debug, Default)]
pub struct Controller {
    placement: Placement,
    /// Registered boxes: name → address.
    boxes: BTreeMap<String, String>,
    /// Running physical agents: identifier → box name.
    running: BTreeMap<String, String>,
    /// BRT questions about agents that will run but do not yet: (asker, req, id).
    waiting: Vec<(String, u64, String)>,
    /// The failure detector and the views of primary-backup groups (all in `views.rs`); boxed
    /// so that a `Controller` stays small to move.
    failover: Box<Failover>,
}

impl Controller {
    /// A controller for a placement.
    pub fn new(placement: Placement) -> Self {
        Controller {
            placement,
            ..Controller::default()
        }
    }

    /// The same controller with this failure detector: a heartbeat to every box every
    /// `period`, a box declared dead after `misses` periods without an answer (zero period:
    /// none). The default is 100 ms and 3.
    pub fn with_failure_detector(mut self, period: std::time::Duration, misses: u32) -> Self {
        self.failover = Box::new(Failover::new(period, misses));
        self
    }

    /// The views of primary-backup groups it keeps.
    pub fn views(&self) -> &ViewService {
        &self.failover.service
    }

    /// The placement it holds.
    pub fn placement(&self) -> &Placement {
        &self.placement
    }

    /// Which physical agent `agent` reaches by `ident`.
    pub fn resolve_art(&self, agent: &str, ident: &str) -> Option<String> {
        if let Some(p) = self.placement.routes.get(agent).and_then(|r| r.get(ident)) {
            return Some(p.clone());
        }
        if ident == CONTROLLER
            || ident.starts_with("$box/")
            || self.placement.agents.contains_key(ident)
            || self.running.contains_key(ident)
        {
            return Some(ident.to_string());
        }
        // A virtual agent: the first of its physical agents that is placed.
        let node = self.placement.latt.as_ref()?.find(ident)?;
        node.leaves()
            .into_iter()
            .find(|leaf| {
                is_refinement(ident, leaf)
                    && (self.placement.agents.contains_key(*leaf)
                        || self.running.contains_key(*leaf))
            })
            .map(str::to_string)
    }

    fn locate(&self, id: &str) -> Location {
        let in_box = if let Some(name) = id.strip_prefix("$box/") {
            Some(name)
        } else {
            self.running.get(id).map(String::as_str)
        };
        match in_box.and_then(|b| self.boxes.get(b)) {
            Some(addr) => Location::At(addr.clone()),
            None if self.placement.agents.contains_key(id) => Location::NotYet,
            None => Location::Unknown,
        }
    }

    /// The agents placed in box `name`, those that others in the box send to first: a box
    /// starts agents in this order, so a client's first message finds its proxy running.
    fn start_order(&self, name: &str) -> Vec<String> {
        let mut left: Vec<&String> = self
            .placement
            .agents
            .iter()
            .filter(|(_, p)| p.in_box == name)
            .map(|(id, _)| id)
            .collect();
        let mut order: Vec<String> = Vec::with_capacity(left.len());
        while !left.is_empty() {
            let ready = |id: &&String| {
                self.placement.routes.get(*id).is_none_or(|table| {
                    table
                        .values()
                        .all(|t| t == *id || order.contains(t) || !left.contains(&t))
                })
            };
            // A cycle of routes (rare): start the rest in identifier order.
            let next = left.iter().position(ready).unwrap_or(0);
            order.push(left.remove(next).clone());
        }
        order
    }

    /// Answers the BRT questions that were waiting, where it now can.
    fn retry_waiting(&mut self, ctx: &mut Context) {
        let waiting = std::mem::take(&mut self.waiting);
        for (asker, req, id) in waiting {
            match self.locate(&id) {
                Location::At(addr) => ctx.send_physical(
                    &asker,
                    BrtAnswer {
                        req,
                        id,
                        addr: Some(addr),
                    },
                ),
                Location::NotYet => self.waiting.push((asker, req, id)),
                Location::Unknown => ctx.send_physical(
                    &asker,
                    BrtAnswer {
                        req,
                        id,
                        addr: None,
                    },
                ),
            }
        }
    }

    fn start(&self, ctx: &mut Context, id: &str, plan: &AgentPlan, state: Option<Vec<u8>>) {
        let art = self
            .placement
            .routes
            .get(id)
            .map(|r| r.clone().into_iter().collect())
            .unwrap_or_default();
        let start = StartAgent {
            id: id.to_string(),
            kind: plan.kind.clone(),
            config: plan.config.clone(),
            art,
            state,
        };
        ctx.send_physical(&manager_id(&plan.in_box), start);
    }

    /// The address of the registered box `name`.
    pub(crate) fn box_addr(&self, name: &str) -> Option<&str> {
        self.boxes.get(name).map(String::as_str)
    }

    /// Starts again every agent placed in a registered box and not known to run there (a
    /// replicated controller's new leader does this: its predecessor may have died before
    /// sending the `StartAgent`). A box already running the agent reports it started again.
    pub(crate) fn reissue_starts(&self, ctx: &mut Context) {
        for name in self.boxes.keys() {
            for id in self.start_order(name) {
                if !self.running.contains_key(&id) {
                    self.start(ctx, &id, &self.placement.agents[&id], None);
                }
            }
        }
    }

    fn broadcast_brt(&self, ctx: &mut Context, entries: Vec<(String, Option<String>)>) {
        for name in self.boxes.keys() {
            ctx.send_physical(
                &manager_id(name),
                UpdateBrt {
                    entries: entries.clone(),
                },
            );
        }
    }
}

/// Dispatch helper: whether `payload` holds an `M`.
fn is<M: Message>(payload: &Payload) -> bool {
    payload.is::<M>()
}

impl Agent for Controller {
    fn on_start(&mut self, ctx: &mut Context) {
        self.failover.start(ctx);
    }

    fn on_timer(&mut self, ctx: &mut Context, name: &str) {
        self.failover
            .on_timer(ctx, name, &self.boxes, &self.running);
    }

    fn on_message(&mut self, ctx: &mut Context, message: Payload) -> Result<(), Error> {
        let Some(message) = self.failover.handle(ctx, message, &self.running)? else {
            return Ok(());
        };
        if is::<ResolveArt>(&message) {
            let q = message.decode::<ResolveArt>()?;
            let physical = self.resolve_art(&q.agent, &q.ident);
            if physical.is_none() {
                tracing::warn!(agent = %q.agent, ident = %q.ident, "ART miss for an unknown identifier");
            }
            ctx.reply(ArtAnswer {
                req: q.req,
                ident: q.ident,
                physical,
            });
        } else if is::<ResolveBrt>(&message) {
            let q = message.decode::<ResolveBrt>()?;
            match self.locate(&q.id) {
                Location::At(addr) => ctx.reply(BrtAnswer {
                    req: q.req,
                    id: q.id,
                    addr: Some(addr),
                }),
                Location::NotYet => self.waiting.push((ctx.sender().to_string(), q.req, q.id)),
                Location::Unknown => {
                    tracing::warn!(id = %q.id, "BRT miss for an unknown identifier");
                    ctx.reply(BrtAnswer {
                        req: q.req,
                        id: q.id,
                        addr: None,
                    });
                }
            }
        } else if is::<RegisterBox>(&message) {
            let r = message.decode::<RegisterBox>()?;
            tracing::info!(box_name = %r.name, addr = %r.addr, "box registered");
            if self.boxes.contains_key(&r.name) {
                // The box restarted (a box registers once per start): what ran there is gone,
                // and every BRT entry for it is stale.
                let lost: Vec<String> = self
                    .running
                    .iter()
                    .filter(|(_, b)| **b == r.name)
                    .map(|(id, _)| id.clone())
                    .collect();
                tracing::warn!(box_name = %r.name, agents = lost.len(), "box restarted; starting its agents again");
                for id in &lost {
                    self.running.remove(id);
                }
                self.broadcast_brt(ctx, lost.into_iter().map(|id| (id, None)).collect());
            }
            self.failover.registered(&r.name);
            self.boxes.insert(r.name.clone(), r.addr);
            self.running.insert(manager_id(&r.name), r.name.clone());
            if r.hosts_controller {
                self.running.insert(CONTROLLER.to_string(), r.name.clone());
            }
            for id in self.start_order(&r.name) {
                let plan = &self.placement.agents[&id];
                if !self.running.contains_key(&id) {
                    if r.kinds.contains(&plan.kind) {
                        self.start(ctx, &id, plan, None);
                    } else {
                        tracing::warn!(box_name = %r.name, %id, kind = %plan.kind, "box cannot start this kind of agent");
                    }
                }
            }
            ctx.reply(Registered { req: r.req });
            self.retry_waiting(ctx);
        } else if is::<AgentStarted>(&message) {
            let s = message.decode::<AgentStarted>()?;
            self.running.insert(s.id, s.in_box);
            self.retry_waiting(ctx);
        } else if is::<AgentStopped>(&message) {
            let s = message.decode::<AgentStopped>()?;
            if self.running.get(&s.id) == Some(&s.in_box) {
                self.running.remove(&s.id);
            }
            self.broadcast_brt(ctx, vec![(s.id, None)]);
        } else if is::<StartFailed>(&message) {
            let f = message.decode::<StartFailed>()?;
            tracing::error!(id = %f.id, error = %f.error, "agent failed to start");
        } else if is::<Ping>(&message) {
            let p = message.decode::<Ping>()?;
            ctx.reply(Pong { req: p.req });
        } else if is::<Place>(&message) {
            let p = message.decode::<Place>()?;
            if self.boxes.contains_key(&p.plan.in_box) {
                self.start(ctx, &p.id, &p.plan, p.state);
            }
            self.placement.agents.insert(p.id, p.plan);
        } else if is::<SetRoute>(&message) {
            let s = message.decode::<SetRoute>()?;
            if let Some(p) = &s.physical
                && !is_refinement(&s.ident, p)
            {
                return Err(Error::UnknownIdentifier(format!(
                    "route `{}` → `{p}`: the key is not a prefix",
                    s.ident
                )));
            }
            let routes = self.placement.routes.entry(s.agent.clone()).or_default();
            match &s.physical {
                Some(p) => routes.insert(s.ident.clone(), p.clone()),
                None => routes.remove(&s.ident),
            };
            ctx.send_physical(
                &s.agent,
                RouteUpdate {
                    ident: s.ident,
                    physical: s.physical,
                },
            );
        } else if is::<Invalidate>(&message) {
            let i = message.decode::<Invalidate>()?;
            self.broadcast_brt(ctx, vec![(i.id, None)]);
        } else if is::<Describe>(&message) {
            let d = message.decode::<Describe>()?;
            ctx.reply(Picture {
                req: d.req,
                boxes: self.boxes.clone(),
                running: self.running.clone(),
                placement: self.placement.clone(),
            });
        } else {
            return Err(Error::UnknownMessage {
                agent: CONTROLLER.to_string(),
                name: message.name().to_string(),
            });
        }
        Ok(())
    }
}

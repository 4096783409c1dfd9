//! What the simulator learns once per target from the system: which physical agents to run,
//! where they live, who sends to the target, which boxes may crash.
//!
//! * The agents run are the leaves of the target's LATT subtree, plus every placed agent whose
//!   identifier is under the target's (`KVS/client/BatchEncoder0`: the proxies of a transformed
//!   channel into `KVS` carry its name). Each is made by the factory its kind names, from the
//!   configuration bytes of the placement, exactly as a box would.
//! * The senders are the other agents whose routing table maps the target's identifier (or,
//!   for an agent that was not transformed, whose `uses` binding names it). The simulator runs
//!   workload clients under their identifiers instead of them.
//! * A node whose transformation has a fault model (the LATT carries it, as the transformation
//!   declared it) tolerates `tolerates` failed groups: each child the model names (and
//!   everything under it) belongs to its group. Without `churn`, the simulator crashes at most
//!   `tolerates` groups per run: a restarted group has lost its log until it has caught up, so
//!   a second crash meanwhile may take every holder of the log. A box may crash only if every
//!   agent of the target it holds belongs to a group and it holds no client.

use std::collections::{BTreeMap, BTreeSet};

use crate::System;
use crate::Target;
use ovid::controller::Controller;
use ovid::deployment::Deployment;
use ovid::error::Error;
use ovid::host::{BoxBuilder, Factory};
use ovid::latt::LattNode;
use ovid::routing::is_refinement;

/// One physical agent the simulator runs.
pub(crate) struct AgentSetup {
    pub id: String,
    pub in_box: String,
    pub kind: String,
    pub config: Vec<u8>,
    pub factory: Factory,
}

/// A node with a fault model: which agent belongs to which failure group, and how many may be
/// down.
#[derive(Debug)]
pub(crate) struct ReplicaSet {
    pub node: String,
    pub f: usize,
    /// Whether `churn` may crash more than `f` of them in a run (one at a time).
    pub churn: bool,
    /// Physical agent → replica index.
    pub members: BTreeMap<String, usize>,
}

/// Everything per target that does not change from seed to seed.
pub(crate) struct Setup {
    pub target: Target,
    /// The target's node of the LATT (what its refinement mapping walks).
    pub node: LattNode,
    pub controller: Controller,
    pub routes: BTreeMap<String, BTreeMap<String, String>>,
    /// The agents run, in deployment order (the order a box starts them).
    pub agents: Vec<AgentSetup>,
    /// The senders replaced by clients: identifier and box, in deployment order.
    pub senders: Vec<(String, String)>,
    /// Boxes that hold an agent run or a sender, in deployment order.
    pub boxes: Vec<String>,
    /// Boxes a crash may hit.
    pub crashable: Vec<String>,
    /// Boxes a pause may hit (those without clients).
    pub pausable: Vec<String>,
    pub replica_sets: Vec<ReplicaSet>,
    pub spec: Factory,
    /// Why some kinds of fault cannot happen to this target (said once in the report).
    pub notes: Vec<String>,
}

/// Every kind the system's boxes can make, by name, sorted.
pub(crate) fn factories(system: &System) -> BTreeMap<String, Factory> {
    let builder = (system.kinds)(BoxBuilder::new("sim"));
    builder
        .factories()
        .iter()
        .map(|(k, f)| (k.clone(), f.clone()))
        .collect()
}

impl Setup {
    /// Learns what to run for `target` (see the module docs).
    pub(crate) fn new(
        deployment: &Deployment,
        factories: &BTreeMap<String, Factory>,
        target: Target,
    ) -> Result<Self, Error> {
        let placement = deployment.placement();
        let tid = target.id.clone();

        let mut wanted: BTreeSet<String> = BTreeSet::new();
        let node = deployment.latt.find(&tid);
        if let Some(node) = node {
            wanted.extend(node.leaves().into_iter().map(str::to_string));
        }
        for a in &deployment.agents {
            if a.id == tid || is_refinement(&tid, &a.id) {
                wanted.insert(a.id.clone());
            }
        }

        let mut agents = Vec::new();
        for a in deployment.agents.iter().filter(|a| wanted.contains(&a.id)) {
            let plan = &placement.agents[&a.id];
            let factory = factories.get(&plan.kind).cloned().ok_or_else(|| {
                Error::Invalid(format!("target `{tid}`: agent `{}` is of kind `{}`, which the system's kinds do not make", a.id, plan.kind))
            })?;
            agents.push(AgentSetup {
                id: a.id.clone(),
                in_box: a.in_box.clone(),
                kind: plan.kind.clone(),
                config: plan.config.clone(),
                factory,
            });
        }
        if agents.is_empty() {
            return Err(Error::Invalid(format!(
                "target `{tid}`: no placed agent runs it (nothing under `{tid}` in the deployment)"
            )));
        }
        let run: BTreeSet<&str> = agents.iter().map(|a| a.id.as_str()).collect();

        let mut senders = Vec::new();
        for a in &deployment.agents {
            if run.contains(a.id.as_str()) {
                continue;
            }
            let routed = deployment
                .routes
                .get(&a.id)
                .is_some_and(|r| r.contains_key(&tid));
            let bound = a.bindings.values().any(|v| *v == tid);
            if routed || bound {
                senders.push((a.id.clone(), a.in_box.clone()));
            }
        }
        // A sender named in the routes but placed nowhere still gets a client, in a box of its own.
        for (agent, routes) in &deployment.routes {
            if routes.contains_key(&tid)
                && !run.contains(agent.as_str())
                && !senders.iter().any(|(s, _)| s == agent)
            {
                senders.push((agent.clone(), format!("outside:{agent}")));
            }
        }
        if senders.is_empty() {
            return Err(Error::Invalid(format!(
                "target `{tid}`: no agent of the system sends to it, so there is no sender to stand in for"
            )));
        }

        let mut boxes: Vec<String> = Vec::new();
        for b in agents
            .iter()
            .map(|a| &a.in_box)
            .chain(senders.iter().map(|(_, b)| b))
        {
            if !boxes.contains(b) {
                boxes.push(b.clone());
            }
        }

        let mut replica_sets = Vec::new();
        for r in node.map(LattNode::walk).unwrap_or_default() {
            let Some(model) = r.faults() else {
                continue;
            };
            let mut members = BTreeMap::new();
            for c in &r.children {
                if let Some(&i) = model.groups.get(&c.id) {
                    for l in c.leaves() {
                        members.insert(l.to_string(), i);
                    }
                }
            }
            replica_sets.push(ReplicaSet {
                node: r.id.clone(),
                f: model.tolerates,
                churn: model.churn,
                members,
            });
        }

        let client_boxes: BTreeSet<&str> = senders.iter().map(|(_, b)| b.as_str()).collect();
        let crashable: Vec<String> = boxes
            .iter()
            .filter(|b| !client_boxes.contains(b.as_str()))
            .filter(|b| {
                agents.iter().filter(|a| &a.in_box == *b).all(|a| {
                    replica_sets
                        .iter()
                        .any(|r| r.f > 0 && r.members.contains_key(&a.id))
                })
            })
            .cloned()
            .collect();
        let pausable: Vec<String> = boxes
            .iter()
            .filter(|b| !client_boxes.contains(b.as_str()))
            .cloned()
            .collect();

        let mut notes = Vec::new();
        if crashable.is_empty() {
            notes.push(if replica_sets.is_empty() {
                "no crashes: no box holds only members of a transformation that tolerates failures (replicas, copies)".to_string()
            } else {
                "no crashes: every box holding replicas also holds an agent that is not replicated, or a client".to_string()
            });
        }
        if boxes.len() < 2 {
            notes.push("no partitions: everything runs in one box".to_string());
        }

        let spec = factories.get(&target.spec_kind).cloned().ok_or_else(|| {
            Error::Invalid(format!(
                "target `{tid}`: its specification kind `{}` is not among the system's kinds",
                target.spec_kind
            ))
        })?;

        let node = node.cloned().ok_or_else(|| {
            Error::Invalid(format!(
                "target `{tid}`: the deployment's LATT has no node `{tid}`"
            ))
        })?;
        Ok(Setup {
            target,
            node,
            controller: Controller::new(placement),
            routes: deployment.routes.clone(),
            agents,
            senders,
            boxes,
            crashable,
            pausable,
            replica_sets,
            spec,
            notes,
        })
    }

    /// Which physical agent `agent` reaches by `ident`, as its ART (and the controller) would say.
    pub(crate) fn resolve(&self, agent: &str, ident: &str) -> Option<String> {
        if let Some(p) = self.routes.get(agent).and_then(|r| r.get(ident)) {
            return Some(p.clone());
        }
        self.controller.resolve_art(agent, ident)
    }
}

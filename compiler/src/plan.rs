//! `ovidc plan OLD NEW`: the difference between two versions of a system, as the ordered steps
//! that carry it out on a running system (docs/evolution.md). A plain function of the two
//! deployments (and their models, for what cannot change live), so it is snapshot-tested.
//!
//! The steps, each over every agent it concerns: start the boxes the new version adds; start
//! the new physical agents, unrouted; wedge the agents being replaced; capture their state;
//! map it (old physical → virtual by the old transformation's refinement mapping, virtual →
//! new physical by the new one's); restore it into the new agents; switch the routes; unwedge;
//! stop the old agents; stop the boxes the new version no longer has.

use std::collections::{BTreeMap, BTreeSet};

use ovid::deployment::{AgentSpec, Deployment};
use ovid::latt::{LattNode, NodeKind};
use serde::Serialize;

use crate::check::model::{AgentInfo, Model};
use crate::diagnostic::{Code, Diagnostic};
use crate::syntax::Program;

/// One version of a system, as the plan compares it.
pub struct Version<'a> {
    /// Its syntax tree (for the spans of refusals).
    pub program: &'a Program,
    /// Its checked model.
    pub model: &'a Model,
    /// Its deployment.
    pub deployment: &'a Deployment,
}

/// The plan: what to do, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// The system's name.
    pub system: String,
    /// The steps, in the order they run; none if nothing changes.
    pub steps: Vec<Step>,
}

/// A physical agent to start: where, and what it runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Started {
    /// Its identifier.
    pub id: String,
    /// Its box.
    #[serde(rename = "box")]
    pub in_box: String,
    /// The agent type or proxy kind it runs.
    pub kind: String,
}

/// One ART entry that changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouteChange {
    /// The physical agent whose table changes.
    pub agent: String,
    /// The identifier it uses.
    pub ident: String,
    /// What it reached before (none: a new entry).
    pub from: Option<String>,
    /// What it reaches after (none: the entry goes).
    pub to: Option<String>,
}

/// One step of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Step {
    /// Start box processes the new version declares.
    StartBoxes {
        /// Their names.
        boxes: Vec<String>,
    },
    /// Start the new physical agents, with no route to them yet.
    StartAgents {
        /// What to start.
        agents: Vec<Started>,
    },
    /// Stop these agents taking transitions: their messages queue, their timers wait.
    Wedge {
        /// The agents being replaced.
        agents: Vec<String>,
    },
    /// Snapshot the state of these (wedged) agents.
    Capture {
        /// The agents whose state moves.
        agents: Vec<String>,
    },
    /// Map the state of one virtual agent from its old physical agents to its new ones.
    MapState {
        /// The virtual agent.
        agent: String,
        /// How it was built (`shard(by: key, n: 2)`, or `as written`).
        from: String,
        /// How it is built now.
        to: String,
        /// The old physical agents that run its code.
        old: Vec<String>,
        /// The new ones.
        new: Vec<String>,
    },
    /// Restore the mapped states into the new agents.
    Restore {
        /// The agents that get a state.
        agents: Vec<String>,
    },
    /// Stop these wedged agents and start them again, under the same identifier, as the new
    /// version has them (their queued messages wait for the new one).
    Replace {
        /// What they become.
        agents: Vec<Started>,
    },
    /// Switch the routing tables, atomically, by raising the routing epoch.
    SwitchRoutes {
        /// Every entry that changes.
        changes: Vec<RouteChange>,
    },
    /// Let the wedged agents that stay take transitions again (what queued is delivered).
    Unwedge {
        /// The agents.
        agents: Vec<String>,
    },
    /// Stop the agents the new version no longer has.
    StopAgents {
        /// The agents.
        agents: Vec<String>,
    },
    /// Stop box processes the new version no longer has.
    StopBoxes {
        /// Their names.
        boxes: Vec<String>,
    },
}

impl Step {
    /// Whether the step concerns nothing (then the plan leaves it out).
    fn is_empty(&self) -> bool {
        match self {
            Step::StartBoxes { boxes } | Step::StopBoxes { boxes } => boxes.is_empty(),
            Step::StartAgents { agents } | Step::Replace { agents } => agents.is_empty(),
            Step::Wedge { agents }
            | Step::Capture { agents }
            | Step::Restore { agents }
            | Step::Unwedge { agents }
            | Step::StopAgents { agents } => agents.is_empty(),
            Step::SwitchRoutes { changes } => changes.is_empty(),
            Step::MapState { .. } => false,
        }
    }
}

/// How a node is built, as a plan says it.
fn built(node: Option<&LattNode>) -> String {
    match node.and_then(LattNode::transform) {
        Some(t) => ovid_stdlib::describe(t),
        None => "as written".to_string(),
    }
}

/// The leaves of `node` that run the agent's code (not proxies).
fn code_leaves(node: &LattNode) -> Vec<String> {
    node.walk()
        .into_iter()
        .filter(|n| matches!(n.kind, NodeKind::Agent { .. }))
        .map(|n| n.id.clone())
        .collect()
}

/// The plan from `old` to `new`, or why the change cannot be made live (diagnostics in NEW).
pub fn plan(old: &Version, new: &Version) -> Result<Plan, Vec<Diagnostic>> {
    refusals(old, new)?;
    let (od, nd) = (old.deployment, new.deployment);
    let olds: BTreeMap<&str, &AgentSpec> = od.agents.iter().map(|a| (a.id.as_str(), a)).collect();
    let news: BTreeMap<&str, &AgentSpec> = nd.agents.iter().map(|a| (a.id.as_str(), a)).collect();
    // An agent is kept if it runs the same thing in the same box.
    let kept = |id: &str| olds.get(id).zip(news.get(id)).is_some_and(|(o, n)| o == n);
    // Gone from the new version; new in it; in both but running something else (a proxy
    // with another configuration, an agent in another box): replaced under its identifier.
    let stopped: Vec<String> = od
        .agents
        .iter()
        .filter(|a| !news.contains_key(a.id.as_str()))
        .map(|a| a.id.clone())
        .collect();
    let started: Vec<&AgentSpec> = nd
        .agents
        .iter()
        .filter(|a| !olds.contains_key(a.id.as_str()))
        .collect();
    let replaced: Vec<&AgentSpec> = nd
        .agents
        .iter()
        .filter(|a| olds.contains_key(a.id.as_str()) && !kept(&a.id))
        .collect();

    let mut maps = Vec::new();
    let mut captured = Vec::new();
    let mut restored = Vec::new();
    for n in &nd.latt.children {
        let Some(o) = od.latt.children.iter().find(|o| o.id == n.id) else {
            continue;
        };
        if matches!(n.kind, NodeKind::Channel { .. }) {
            continue;
        }
        let (old_code, new_code) = (code_leaves(o), code_leaves(n));
        let moves = old_code.iter().chain(&new_code).any(|id| !kept(id));
        if !moves {
            continue;
        }
        captured.extend(old_code.iter().filter(|id| !kept(id)).cloned());
        restored.extend(new_code.iter().filter(|id| !kept(id)).cloned());
        maps.push(Step::MapState {
            agent: n.id.clone(),
            from: built(Some(o)),
            to: built(Some(n)),
            old: old_code,
            new: new_code,
        });
    }

    let mut changes = Vec::new();
    let tables: BTreeSet<&String> = od.routes.keys().chain(nd.routes.keys()).collect();
    // The agents that start (or restart) get their tables with them; those that stay change.
    for agent in tables {
        if !kept(agent) {
            continue;
        }
        let (ot, nt) = (od.routes.get(agent), nd.routes.get(agent));
        let idents: BTreeSet<&String> = ot.into_iter().chain(nt).flat_map(|t| t.keys()).collect();
        for ident in idents {
            let from = ot.and_then(|t| t.get(ident)).cloned();
            let to = nt.and_then(|t| t.get(ident)).cloned();
            if from != to {
                changes.push(RouteChange {
                    agent: agent.clone(),
                    ident: ident.clone(),
                    from,
                    to,
                });
            }
        }
    }

    let box_names =
        |d: &Deployment| -> BTreeSet<String> { d.boxes.iter().map(|b| b.name.clone()).collect() };
    let (ob, nb) = (box_names(od), box_names(nd));
    // The agents that stay but lose or gain routes are wedged too, so that nothing they send
    // is routed by a table half switched.
    let rerouted: BTreeSet<String> = changes
        .iter()
        .map(|c| c.agent.clone())
        .filter(|a| kept(a))
        .collect();
    let mut wedged: Vec<String> = stopped.clone();
    wedged.extend(replaced.iter().map(|a| a.id.clone()));
    wedged.extend(rerouted.iter().cloned());

    let added: Vec<String> = nb.difference(&ob).cloned().collect();
    let removed: Vec<String> = ob.difference(&nb).cloned().collect();
    let to_start = |agents: &[&AgentSpec]| -> Vec<Started> {
        agents
            .iter()
            .map(|a| Started {
                id: a.id.clone(),
                in_box: a.in_box.clone(),
                kind: match &a.runs {
                    ovid::deployment::Runs::Agent { agent } => agent.clone(),
                    ovid::deployment::Runs::Proxy { proxy, .. } => proxy.clone(),
                },
            })
            .collect()
    };
    let mut steps = vec![
        Step::StartBoxes { boxes: added },
        Step::StartAgents {
            agents: to_start(&started),
        },
        Step::Wedge { agents: wedged },
        Step::Capture { agents: captured },
    ];
    steps.extend(maps);
    steps.extend([
        Step::Restore { agents: restored },
        Step::Replace {
            agents: to_start(&replaced),
        },
        Step::SwitchRoutes { changes },
        Step::Unwedge {
            agents: rerouted.into_iter().collect(),
        },
        Step::StopAgents { agents: stopped },
        Step::StopBoxes { boxes: removed },
    ]);
    // A step with nothing to do is left out.
    steps.retain(|s| !s.is_empty());
    Ok(Plan {
        system: nd.system.clone(),
        steps,
    })
}

/// What makes the change impossible live, pointing into NEW.
fn refusals(old: &Version, new: &Version) -> Result<(), Vec<Diagnostic>> {
    let mut out = Vec::new();
    let (Some(os), Some(ns)) = (old.model.system.as_ref(), new.model.system.as_ref()) else {
        return Ok(());
    };
    let new_system = new.program.files.iter().flat_map(|f| &f.systems).next();
    if os.name != ns.name {
        if let Some(s) = new_system {
            out.push(
                Diagnostic::new(
                    Code::PlanOtherSystem,
                    format!(
                        "`{}` is not `{}`: a plan changes one system",
                        ns.name, os.name
                    ),
                    s.name.span,
                    "another system",
                )
                .help(format!(
                    "plan from a version of `{}`, or deploy `{}` as a system of its own",
                    os.name, ns.name
                )),
            );
        }
        return Err(out);
    }
    for inst in &ns.instances {
        let Some(was) = os.instances.iter().find(|i| i.name == inst.name) else {
            continue;
        };
        let span = new_system
            .and_then(|s| s.instances.iter().find(|i| i.name.name == inst.name))
            .map(|i| i.span);
        if was.agent != inst.agent {
            if let Some(span) = span {
                out.push(
                    Diagnostic::new(
                        Code::PlanAgentChanged,
                        format!(
                            "`{}` runs `{}` now, `{}` before: its state cannot be carried over",
                            inst.name, inst.agent, was.agent
                        ),
                        span,
                        "another agent type",
                    )
                    .help("keep the agent type of a running instance, or add a new instance for the new agent"),
                );
            }
            continue;
        }
        let (Some(oa), Some(na)) = (
            old.model.agents.get(&was.agent),
            new.model.agents.get(&inst.agent),
        ) else {
            continue;
        };
        if let Some(d) = state_change(oa, na) {
            out.push(d);
        }
    }
    if out.is_empty() { Ok(()) } else { Err(out) }
}

/// A state field of the new agent that the old state cannot fill: a new, retyped or removed
/// field (there are no migrations yet).
fn state_change(old: &AgentInfo, new: &AgentInfo) -> Option<Diagnostic> {
    let help =
        "keep the state fields as they are (a migration between state types is not supported yet)";
    for (i, s) in new.state.iter().enumerate() {
        let span = new.ast.state.get(i).map_or(new.ast.name.span, |d| d.span);
        match old.state.iter().find(|o| o.name == s.name) {
            Some(o) if o.ty == s.ty && o.keyed_by == s.keyed_by => {}
            Some(o) => {
                return Some(
                    Diagnostic::new(
                        Code::PlanStateChanged,
                        format!(
                            "state `{}` of `{}` was `{}`, now `{}`: the running state cannot be carried over",
                            s.name, new.ast.name.name, o.ty, s.ty
                        ),
                        span,
                        "changed state",
                    )
                    .help(help),
                );
            }
            None => {
                return Some(
                    Diagnostic::new(
                        Code::PlanStateChanged,
                        format!(
                            "state `{}` of `{}` is new: the running agents have no value for it",
                            s.name, new.ast.name.name
                        ),
                        span,
                        "new state",
                    )
                    .help(help),
                );
            }
        }
    }
    old.state
        .iter()
        .find(|o| !new.state.iter().any(|s| s.name == o.name))
        .map(|o| {
            Diagnostic::new(
                Code::PlanStateChanged,
                format!(
                    "state `{}` of `{}` is gone: the plan would drop it",
                    o.name, new.ast.name.name
                ),
                new.ast.name.span,
                "state removed",
            )
            .help(help)
        })
}

/// `id (kind in box), ...`.
fn started(agents: &[Started]) -> String {
    let list: Vec<String> = agents
        .iter()
        .map(|a| format!("{} ({} in {})", a.id, a.kind, a.in_box))
        .collect();
    list.join(", ")
}

/// The plan as text, a step a line, with its agents.
pub fn text(plan: &Plan) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    if plan.steps.is_empty() {
        let _ = writeln!(out, "{}: nothing changes", plan.system);
        return out;
    }
    let _ = writeln!(out, "plan for {}:", plan.system);
    for (i, step) in plan.steps.iter().enumerate() {
        let n = i + 1;
        let line = match step {
            Step::StartBoxes { boxes } => format!("start boxes: {}", boxes.join(", ")),
            Step::StartAgents { agents } => format!("start, unrouted: {}", started(agents)),
            Step::Replace { agents } => {
                format!("replace under the same identifier: {}", started(agents))
            }
            Step::Wedge { agents } => format!("wedge: {}", agents.join(", ")),
            Step::Capture { agents } => format!("capture the state of: {}", agents.join(", ")),
            Step::MapState {
                agent,
                from,
                to,
                old,
                new,
            } => format!(
                "map `{agent}`: {} → {agent} by {from} → {} by {to}",
                old.join(" + "),
                new.join(" + ")
            ),
            Step::Restore { agents } => format!("restore into: {}", agents.join(", ")),
            Step::SwitchRoutes { changes } => {
                let list: Vec<String> = changes
                    .iter()
                    .map(|c| match (&c.from, &c.to) {
                        (Some(f), Some(t)) => {
                            format!("{} reaches {} at {t} (was {f})", c.agent, c.ident)
                        }
                        (None, Some(t)) => format!("{} reaches {} at {t}", c.agent, c.ident),
                        (Some(f), None) => {
                            format!("{} no longer reaches {} (was {f})", c.agent, c.ident)
                        }
                        (None, None) => String::new(),
                    })
                    .collect();
                format!("switch routes (new epoch):\n     {}", list.join("\n     "))
            }
            Step::Unwedge { agents } => format!("unwedge: {}", agents.join(", ")),
            Step::StopAgents { agents } => format!("stop: {}", agents.join(", ")),
            Step::StopBoxes { boxes } => format!("stop boxes: {}", boxes.join(", ")),
        };
        let _ = writeln!(out, "{n:>2}. {line}");
    }
    out
}

//! The deployment description: boxes, the agents each runs, and the routes, as JSON. The
//! controller loads it; operators read it; tests snapshot it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::check::model::Model;
use crate::expand::{Expanded, LattNode, Runs};
use crate::place::BoxPlan;

/// A whole deployment.
#[derive(Debug, Clone, Serialize)]
pub struct Deployment {
    /// The system's name.
    pub system: String,
    /// Boxes, each with the agents it runs.
    pub boxes: Vec<BoxPlan>,
    /// Every physical agent.
    pub agents: Vec<AgentPlan>,
    /// Agent routing tables: physical agent → (identifier → physical agent).
    pub routes: BTreeMap<String, BTreeMap<String, String>>,
    /// The LATT.
    pub latt: LattNode,
    /// The agents that drive the system: copies of agent types that accept no requests.
    /// When all have finished, `ovidc run` stops the system.
    pub clients: Vec<String>,
    /// `controller |> replicate(n)`: the boxes of the controller's replicas, by replica index
    /// (none: one controller, as `ovidc run` starts it).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub controllers: Vec<BoxPlan>,
}

/// One physical agent of a deployment.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentPlan {
    /// Its identifier.
    pub id: String,
    /// The box it runs in.
    #[serde(rename = "box")]
    pub in_box: String,
    /// What it runs: `{"kind": "agent", "agent": "Client"}` or a proxy with its config.
    pub runs: serde_json::Value,
    /// `uses` name → identifier.
    #[serde(skip_serializing_if = "BTreeMap::is_empty", default)]
    pub bindings: BTreeMap<String, String>,
}

/// Builds the deployment of an expanded, placed system.
pub fn deployment(model: &Model, expanded: &Expanded, boxes: &[BoxPlan]) -> Deployment {
    let clients = expanded
        .agents
        .iter()
        .filter(|a| {
            runs_agent(&a.runs)
                .and_then(|t| model.agents.get(t))
                .is_some_and(|t| t.accepts.is_empty())
        })
        .map(|a| a.id.clone())
        .collect();
    let box_of: BTreeMap<&str, &str> = boxes
        .iter()
        .flat_map(|b| b.agents.iter().map(move |a| (a.as_str(), b.name.as_str())))
        .collect();
    let agents = expanded
        .agents
        .iter()
        .map(|a| AgentPlan {
            id: a.id.clone(),
            in_box: box_of
                .get(a.id.as_str())
                .map(|b| b.to_string())
                .unwrap_or_default(),
            runs: serde_json::to_value(&a.runs).unwrap_or_default(),
            bindings: a.bindings.clone(),
        })
        .collect();
    Deployment {
        system: expanded.system.clone(),
        boxes: boxes.to_vec(),
        agents,
        routes: expanded.routes.clone(),
        latt: expanded.latt.clone(),
        clients,
        controllers: controller_boxes(model),
    }
}

/// The boxes of a replicated controller: `controller0`, `controller1`, … (addresses chosen
/// when the system starts).
fn controller_boxes(model: &Model) -> Vec<BoxPlan> {
    let n = model
        .system
        .as_ref()
        .and_then(|s| s.controller_replicas)
        .unwrap_or(0);
    (0..n as usize)
        .map(|i| BoxPlan {
            name: ovid::controller_group::replica_box(i),
            address: None,
            agents: Vec::new(),
        })
        .collect()
}

/// Whether an agent of the deployment runs a declared agent's code (not a proxy).
pub fn runs_agent(runs: &Runs) -> Option<&str> {
    match runs {
        Runs::Agent { agent } => Some(agent),
        Runs::Proxy { .. } => None,
    }
}

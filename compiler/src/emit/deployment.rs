//! The deployment description (the runtime's [`Deployment`]): boxes, the agents each runs, the
//! routes and the LATT. The controller loads it; operators read it; tests snapshot it.

use std::collections::BTreeMap;

use ovid::deployment::{AgentSpec, BoxSpec, Deployment};

use crate::check::model::Model;
use crate::expand::Expanded;

/// Builds the deployment of an expanded, placed system.
pub fn deployment(model: &Model, expanded: &Expanded, boxes: &[BoxSpec]) -> Deployment {
    let clients = expanded
        .agents
        .iter()
        .filter(|a| {
            a.agent_type()
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
        .map(|a| AgentSpec {
            in_box: box_of
                .get(a.id.as_str())
                .map(|b| b.to_string())
                .unwrap_or_default(),
            ..a.clone()
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
fn controller_boxes(model: &Model) -> Vec<BoxSpec> {
    let n = model
        .system
        .as_ref()
        .and_then(|s| s.controller_replicas)
        .unwrap_or(0);
    (0..n as usize)
        .map(|i| BoxSpec {
            name: ovid::controller_group::replica_box(i),
            address: None,
            agents: Vec::new(),
        })
        .collect()
}

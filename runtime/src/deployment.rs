//! The deployment description (`deployment.json`): boxes with their addresses, the physical
//! agents with what each runs, the routes and the LATT. One set of types: `ovidc build` fills
//! and writes them, the controller and the simulator read them. [`Deployment::placement`]
//! turns it into the controller's [`Placement`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::latt::{Args, LattNode};

/// A whole deployment, as `ovidc build` writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployment {
    /// The system's name.
    pub system: String,
    /// The boxes.
    pub boxes: Vec<BoxSpec>,
    /// Every physical agent.
    pub agents: Vec<AgentSpec>,
    /// Agent routing tables: physical agent → (identifier it uses → physical identifier).
    #[serde(default)]
    pub routes: BTreeMap<String, BTreeMap<String, String>>,
    /// The LATT (extra fields of its nodes are ignored).
    pub latt: LattNode,
    /// The agents that drive the system (they accept no requests): when all have finished,
    /// the system is done.
    #[serde(default)]
    pub clients: Vec<String>,
    /// `controller |> replicate(n)`: the boxes of the controller's replicas, by replica index
    /// (empty: one controller).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub controllers: Vec<BoxSpec>,
}

/// One box of a deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BoxSpec {
    /// Its name.
    pub name: String,
    /// The address it listens on, if the system fixes one (else a free port is picked).
    pub address: Option<String>,
    /// The physical agents it runs.
    #[serde(default)]
    pub agents: Vec<String>,
}

/// One physical agent of a deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentSpec {
    /// Its identifier.
    pub id: String,
    /// Its box (empty until placed).
    #[serde(rename = "box", default, skip_serializing_if = "String::is_empty")]
    pub in_box: String,
    /// What it runs.
    pub runs: Runs,
    /// `uses` name → identifier.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub bindings: BTreeMap<String, String>,
}

impl AgentSpec {
    /// The agent type whose code it runs, if it is not a proxy.
    pub fn agent_type(&self) -> Option<&str> {
        match &self.runs {
            Runs::Agent { agent } => Some(agent),
            Runs::Proxy { .. } => None,
        }
    }
}

/// What a physical agent runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Runs {
    /// The code of a declared agent type.
    Agent {
        /// The agent type, which is also its kind in the box's factories.
        agent: String,
    },
    /// A proxy of a transformation.
    Proxy {
        /// The proxy's kind.
        proxy: String,
        /// Its configuration, handed to its factory as JSON.
        #[serde(default)]
        config: Args,
    },
}

/// Where one physical agent runs and how to make it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentPlan {
    /// The box's name.
    #[serde(rename = "box")]
    pub in_box: String,
    /// The kind the box's factory knows it by.
    pub kind: String,
    /// Given to the factory.
    #[serde(default)]
    pub config: Vec<u8>,
}

/// The placement of a system: physical agents, their initial ARTs, and the LATT.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    /// Physical identifier → where and what.
    #[serde(default)]
    pub agents: BTreeMap<String, AgentPlan>,
    /// Physical agent → (identifier it uses → physical identifier).
    #[serde(default)]
    pub routes: BTreeMap<String, BTreeMap<String, String>>,
    /// The LATT, if the system was transformed.
    #[serde(default)]
    pub latt: Option<LattNode>,
}

impl Placement {
    /// An empty placement.
    pub fn new() -> Self {
        Placement::default()
    }

    /// Places the physical agent `id`, of `kind`, in the box `in_box`.
    pub fn agent(
        mut self,
        id: impl Into<String>,
        in_box: impl Into<String>,
        kind: impl Into<String>,
    ) -> Self {
        self.agents.insert(
            id.into(),
            AgentPlan {
                in_box: in_box.into(),
                kind: kind.into(),
                config: Vec::new(),
            },
        );
        self
    }

    /// Adds the ART entry `agent: ident → physical`.
    pub fn route(
        mut self,
        agent: impl Into<String>,
        ident: impl Into<String>,
        physical: impl Into<String>,
    ) -> Self {
        self.routes
            .entry(agent.into())
            .or_default()
            .insert(ident.into(), physical.into());
        self
    }

    /// Sets the LATT.
    pub fn latt(mut self, root: LattNode) -> Self {
        self.latt = Some(root);
        self
    }
}

impl Deployment {
    /// Parses `deployment.json`.
    pub fn from_json(json: &str) -> Result<Self, Error> {
        serde_json::from_str(json)
            .map_err(|e| Error::Invalid(format!("bad deployment description: {e}")))
    }

    /// The box named `name`.
    pub fn find_box(&self, name: &str) -> Option<&BoxSpec> {
        self.boxes.iter().find(|b| b.name == name)
    }

    /// The controller's placement: every agent with its kind and configuration (agents get
    /// their `uses` bindings as JSON, proxies their configuration), the routes and the LATT.
    pub fn placement(&self) -> Placement {
        let agents = self
            .agents
            .iter()
            .map(|a| {
                let (kind, config) = match &a.runs {
                    Runs::Agent { agent } => (agent.clone(), serde_json::to_vec(&a.bindings)),
                    Runs::Proxy { proxy, config } => (proxy.clone(), serde_json::to_vec(config)),
                };
                (
                    a.id.clone(),
                    AgentPlan {
                        in_box: a.in_box.clone(),
                        kind,
                        config: config.unwrap_or_default(),
                    },
                )
            })
            .collect();
        Placement {
            agents,
            routes: self.routes.clone(),
            latt: Some(self.latt.clone()),
        }
    }
}

/// The `uses` bindings an agent is started with: the name it uses → the identifier it is
/// wired to (`kvs` → `KVS`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bindings(pub BTreeMap<String, String>);

impl Bindings {
    /// Decodes the configuration bytes a box hands an agent's factory (empty: no bindings).
    pub fn from_config(config: &[u8]) -> Result<Self, Error> {
        if config.is_empty() {
            return Ok(Bindings::default());
        }
        serde_json::from_slice(config)
            .map(Bindings)
            .map_err(|e| Error::Invalid(format!("bad agent configuration: {e}")))
    }

    /// The identifier `name` is wired to (the name itself if unbound, as in a hand-made test).
    pub fn get(&self, name: &str) -> String {
        self.0
            .get(name)
            .cloned()
            .unwrap_or_else(|| name.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_compiler_deployment_becomes_a_placement() {
        let json = r#"{
          "system": "Store",
          "boxes": [{"name": "front", "address": null, "agents": ["client"]}],
          "agents": [
            {"id": "client", "box": "front", "runs": {"kind": "agent", "agent": "Client"}, "bindings": {"kvs": "KVS"}},
            {"id": "KVS/IngressProxy0", "box": "front", "runs": {"kind": "proxy", "proxy": "IngressProxy", "config": {"by": "key"}}}
          ],
          "routes": {"client": {"KVS": "KVS/IngressProxy0"}},
          "latt": {"id": "Store", "kind": "system", "children": [{"id": "client", "kind": "agent", "agent": "Client"}, {"id": "KVS", "kind": "transformed", "agent": "Store", "transform": {"name": "partition", "args": {"n": 1, "by": "key"}}, "children": [{"id": "KVS/IngressProxy0", "kind": "proxy", "proxy": "IngressProxy"}]}]}
        }"#;
        let d = Deployment::from_json(json).unwrap();
        let p = d.placement();
        assert_eq!(p.agents["client"].kind, "Client");
        assert_eq!(
            Bindings::from_config(&p.agents["client"].config)
                .unwrap()
                .get("kvs"),
            "KVS"
        );
        assert_eq!(p.agents["KVS/IngressProxy0"].config, br#"{"by":"key"}"#);
        assert_eq!(p.routes["client"]["KVS"], "KVS/IngressProxy0");
        let latt = p.latt.unwrap();
        assert_eq!(latt.leaves(), vec!["client", "KVS/IngressProxy0"]);
        let shard = latt.find("KVS").unwrap().transform().unwrap();
        assert_eq!(shard.args["by"], crate::latt::Value::Str("key".into()));
        // What is written is what is read.
        assert_eq!(
            Deployment::from_json(&serde_json::to_string(&d).unwrap()).unwrap(),
            d
        );
    }
}

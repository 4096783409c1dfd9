//! The Logical Agent Transformation Tree, as one set of types: the compiler builds and
//! serializes it, the controller, the simulator and (later) reconfiguration load it.
//!
//! A transformation node carries its transformation as structured data ([`Transform`]: a name
//! and its arguments) and, when the transformation has one, its [`FaultModel`], so nothing
//! downstream ever re-parses a description or guesses from an identifier.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A transformation argument or a proxy configuration value.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Value {
    /// A whole number (durations are in milliseconds).
    Int(i64),
    /// A string (also field names and named options).
    Str(String),
    /// A list of identifiers.
    List(Vec<String>),
}

/// Arguments by parameter name (a transformation's), or a proxy's configuration.
pub type Args = BTreeMap<String, Value>;

/// One application of a transformation: its name in the standard library and its arguments.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transform {
    /// The transformation's name (`shard`).
    pub name: String,
    /// Its arguments, by parameter name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub args: Args,
}

/// How the physical agents of one transformation node may fail and still implement it: what the
/// simulator may crash, and what the controller watches.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultModel {
    /// Child identifier → the failure group it belongs to (a replica, a copy, a chain member):
    /// a child and everything under it fail together.
    pub groups: BTreeMap<String, usize>,
    /// How many groups may be down at once.
    pub tolerates: usize,
    /// Whether groups may crash and restart one after another without bound (`churn`); when
    /// false, a restarted group must catch up first, so at most `tolerates` crash in a run.
    #[serde(default)]
    pub churn: bool,
    /// Whether the controller's failure detector and view service drive failover.
    #[serde(default)]
    pub view_service: bool,
}

/// A node of the LATT: an agent and what it was transformed into.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LattNode {
    /// Its identifier (`KVS`, `KVS/Shard1`); the system's name at the root.
    pub id: String,
    /// What the node is.
    #[serde(flatten)]
    pub kind: NodeKind,
    /// Its children: the agents that together implement it (none for a physical agent).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<LattNode>,
}

/// The kinds of LATT node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum NodeKind {
    /// The root.
    System,
    /// A copy of a declared agent, run as it is (a leaf).
    Agent {
        /// Its agent type.
        agent: String,
    },
    /// A virtual agent replaced by its children through a transformation.
    Transformed {
        /// Its agent type.
        agent: String,
        /// The transformation.
        transform: Transform,
        /// How its children may fail, if the transformation tolerates failures.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        faults: Option<FaultModel>,
    },
    /// A transformed channel: its proxies sit between a sender and a receiver.
    Channel {
        /// The transformation.
        transform: Transform,
    },
    /// A proxy agent of a transformation (a leaf).
    Proxy {
        /// Its kind.
        proxy: String,
    },
}

impl LattNode {
    /// The root of a system's tree.
    pub fn system(id: impl Into<String>, children: Vec<LattNode>) -> Self {
        LattNode {
            id: id.into(),
            kind: NodeKind::System,
            children,
        }
    }

    /// A leaf running the code of agent type `agent`.
    pub fn agent(id: impl Into<String>, agent: impl Into<String>) -> Self {
        LattNode {
            id: id.into(),
            kind: NodeKind::Agent {
                agent: agent.into(),
            },
            children: Vec::new(),
        }
    }

    /// A leaf running a proxy of kind `proxy`.
    pub fn proxy(id: impl Into<String>, proxy: impl Into<String>) -> Self {
        LattNode {
            id: id.into(),
            kind: NodeKind::Proxy {
                proxy: proxy.into(),
            },
            children: Vec::new(),
        }
    }

    /// A virtual agent of type `agent`, transformed by `transform` into `children`.
    pub fn transformed(
        id: impl Into<String>,
        agent: impl Into<String>,
        transform: Transform,
        children: Vec<LattNode>,
    ) -> Self {
        LattNode {
            id: id.into(),
            kind: NodeKind::Transformed {
                agent: agent.into(),
                transform,
                faults: None,
            },
            children,
        }
    }

    /// The node with identifier `id`, in this subtree.
    pub fn find(&self, id: &str) -> Option<&LattNode> {
        if self.id == id {
            return Some(self);
        }
        self.children.iter().find_map(|c| c.find(id))
    }

    /// The leaves (physical agents) of this subtree, left to right.
    pub fn leaves(&self) -> Vec<&str> {
        let mut out = Vec::new();
        self.collect_leaves(&mut out);
        out
    }

    fn collect_leaves<'a>(&'a self, out: &mut Vec<&'a str>) {
        if self.children.is_empty() {
            out.push(&self.id);
        }
        for c in &self.children {
            c.collect_leaves(out);
        }
    }

    /// Every node of this subtree, itself first, depth first.
    pub fn walk(&self) -> Vec<&LattNode> {
        let mut out = vec![self];
        for c in &self.children {
            out.extend(c.walk());
        }
        out
    }

    /// The transformation of this node, if it is a transformed agent or channel.
    pub fn transform(&self) -> Option<&Transform> {
        match &self.kind {
            NodeKind::Transformed { transform, .. } | NodeKind::Channel { transform } => {
                Some(transform)
            }
            _ => None,
        }
    }

    /// The fault model of this node, if its transformation has one.
    pub fn faults(&self) -> Option<&FaultModel> {
        match &self.kind {
            NodeKind::Transformed { faults, .. } => faults.as_ref(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transformed_node_round_trips_with_its_arguments_as_data() {
        let mut node = LattNode::transformed(
            "KVS",
            "Store",
            Transform {
                name: "copy".into(),
                args: Args::from([("n".to_string(), Value::Int(3))]),
            },
            vec![LattNode::agent("KVS/Replica0", "Store")],
        );
        if let NodeKind::Transformed { faults, .. } = &mut node.kind {
            *faults = Some(FaultModel {
                groups: BTreeMap::from([("KVS/Replica0".to_string(), 0)]),
                tolerates: 1,
                churn: true,
                view_service: false,
            });
        }
        let json = serde_json::to_string(&node).unwrap();
        let back: LattNode = serde_json::from_str(&json).unwrap();
        assert_eq!(back, node);
        assert_eq!(back.transform().unwrap().args["n"], Value::Int(3));
        assert_eq!(back.faults().unwrap().tolerates, 1);
        assert_eq!(back.leaves(), vec!["KVS/Replica0"]);
    }
}

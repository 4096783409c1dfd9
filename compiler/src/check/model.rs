//! The checked model: what the checker hands to expansion and code generation. Plain data,
//! ordered (`BTreeMap`) so that snapshots are stable.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::types::Type;
use crate::syntax::ast;

/// A whole checked program.
#[derive(Debug, Clone, Serialize)]
pub struct Model {
    /// Messages by name, each with its fields in order.
    pub messages: BTreeMap<String, Vec<(String, Type)>>,
    /// Agents by name.
    pub agents: BTreeMap<String, AgentInfo>,
    /// The system, if the program declares one.
    pub system: Option<SystemInfo>,
}

/// How an agent is implemented.
#[derive(Debug, Clone, Serialize)]
pub enum Behaviour {
    /// Inline handlers in the handler language.
    Handlers {
        /// Messages with a handler, in source order.
        messages: Vec<String>,
        /// Whether it has an `on start` handler.
        on_start: bool,
    },
    /// A Rust type annotated with `#[ovid::agent]`.
    Rust {
        /// Its path.
        path: String,
    },
    /// An external process speaking the JSON line protocol.
    Process {
        /// Its command line.
        command: String,
    },
}

/// One field of an agent's state.
#[derive(Debug, Clone, Serialize)]
pub struct StateInfo {
    /// Field name.
    pub name: String,
    /// Its type.
    pub ty: Type,
    /// The message field it is partitioned by, if declared.
    pub keyed_by: Option<String>,
}

/// A checked agent.
#[derive(Debug, Clone, Serialize)]
pub struct AgentInfo {
    /// Accepted message → its reply, if any.
    pub accepts: BTreeMap<String, Option<String>>,
    /// `uses` identifier → the messages sent through it.
    pub uses: BTreeMap<String, BTreeSet<String>>,
    /// State fields in order.
    pub state: Vec<StateInfo>,
    /// How it is implemented.
    pub behaviour: Behaviour,
    /// Whether every copy fed the same messages reaches the same state.
    pub deterministic: bool,
    /// The syntax it came from, for code generation.
    #[serde(skip)]
    pub ast: ast::Agent,
    /// The type of every handler expression, by span.
    #[serde(skip)]
    pub expr_types: std::collections::HashMap<ast::Span, Type>,
    /// The type of every local binding, by the span of its name.
    #[serde(skip)]
    pub binding_types: std::collections::HashMap<ast::Span, Type>,
}

/// A checked system.
#[derive(Debug, Clone, Serialize)]
pub struct SystemInfo {
    /// System name.
    pub name: String,
    /// Instances in source order.
    pub instances: Vec<InstanceInfo>,
    /// Every channel: who sends what to whom.
    pub channels: Vec<ChannelInfo>,
    /// Transformation pipelines in source order.
    pub pipelines: Vec<PipelineInfo>,
    /// Declared boxes in source order.
    pub boxes: Vec<BoxInfo>,
    /// `controller |> replicate(n)`: the controller runs as `n` replicas.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub controller_replicas: Option<u32>,
}

/// An agent instance (or array of them).
#[derive(Debug, Clone, Serialize)]
pub struct InstanceInfo {
    /// Its identifier.
    pub name: String,
    /// The agent it runs.
    pub agent: String,
    /// `Some(n)` for an array `name[n]`.
    pub count: Option<u32>,
    /// `uses` identifier → bound instance identifier (`KVS`, `worker[2]`).
    pub bindings: BTreeMap<String, String>,
}

impl InstanceInfo {
    /// The identifiers of the agents it stands for: `client`, or `client[0]` .. `client[n-1]`.
    pub fn identifiers(&self) -> Vec<String> {
        match self.count {
            None => vec![self.name.clone()],
            Some(n) => (0..n).map(|i| format!("{}[{i}]", self.name)).collect(),
        }
    }
}

/// The instance an element identifier belongs to: `client` for `client[2]` and for `client`.
pub fn instance_name(id: &str) -> &str {
    id.split_once('[').map_or(id, |(name, _)| name)
}

/// Messages flowing from one instance to another through one `uses` binding.
#[derive(Debug, Clone, Serialize)]
pub struct ChannelInfo {
    /// The sending instance.
    pub from: String,
    /// The `uses` identifier it sends through.
    pub via: String,
    /// The receiving instance (element).
    pub to: String,
    /// What is sent.
    pub messages: BTreeSet<String>,
}

/// What a pipeline transforms.
#[derive(Debug, Clone, Serialize)]
pub enum PipelineTargetInfo {
    /// An instance.
    Agent(String),
    /// A channel between two instances.
    Channel(String, String),
}

/// A checked transformation application.
#[derive(Debug, Clone, Serialize)]
pub struct TransformInfo {
    /// Its name in the standard library.
    pub name: String,
    /// Every parameter given, by name.
    pub args: BTreeMap<String, ast::ArgValue>,
}

impl TransformInfo {
    /// The application as the LATT and the standard library take it: durations in
    /// milliseconds, names and strings as strings.
    pub fn transform(&self) -> ovid::latt::Transform {
        ovid::latt::Transform {
            name: self.name.clone(),
            args: args(&self.args),
        }
    }
}

/// Checked arguments as the standard library takes them.
pub fn args(checked: &BTreeMap<String, ast::ArgValue>) -> ovid::latt::Args {
    use ovid::latt::Value;
    checked
        .iter()
        .map(|(k, v)| {
            let v = match v {
                ast::ArgValue::Int(n) => Value::Int(i64::try_from(*n).unwrap_or(i64::MAX)),
                ast::ArgValue::DurationMs(ms) => Value::Int(i64::try_from(*ms).unwrap_or(i64::MAX)),
                ast::ArgValue::String(s) | ast::ArgValue::Name(s) => Value::Str(s.clone()),
                ast::ArgValue::Bool(b) => Value::Str(b.to_string()),
            };
            (k.clone(), v)
        })
        .collect()
}

/// A checked pipeline.
#[derive(Debug, Clone, Serialize)]
pub struct PipelineInfo {
    /// What it transforms.
    pub target: PipelineTargetInfo,
    /// Transformations, innermost first.
    pub transforms: Vec<TransformInfo>,
}

/// A declared box.
#[derive(Debug, Clone, Serialize)]
pub struct BoxInfo {
    /// Box name.
    pub name: String,
    /// Fixed address, if declared.
    pub address: Option<String>,
    /// Identifier patterns of the agents it runs.
    pub patterns: Vec<String>,
}

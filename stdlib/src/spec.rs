//! What the compiler's checker needs to know of a transformation, as plain data.

/// What a transformation can be applied to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// An agent (`KVS |> shard(..)`).
    Agent,
    /// A channel (`client -> KVS |> batch(..)`); on an agent, every channel into it.
    Channel,
    /// Either.
    Both,
}

/// The kind of value a parameter takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamKind {
    /// A whole number in `min..=max`.
    Int {
        /// Smallest value accepted.
        min: i64,
        /// Largest value accepted.
        max: i64,
    },
    /// An odd whole number in `min..=max` (a replica count 2f+1).
    OddInt {
        /// Smallest value accepted.
        min: i64,
        /// Largest value accepted.
        max: i64,
    },
    /// A duration such as `5ms` or `1s`.
    Duration,
    /// The name of a message field (`by: key`).
    Field,
    /// One of a fixed set of names (`zstd`, `lz4`).
    Choice(&'static [&'static str]),
    /// A string literal.
    Str,
}

/// One parameter of a transformation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Param {
    /// Its name, used for named arguments (`by: key`).
    pub name: &'static str,
    /// What values it takes.
    pub kind: ParamKind,
    /// Whether it can be given by position (in declaration order).
    pub positional: bool,
    /// Whether it must be given.
    pub required: bool,
    /// What it means, for help lines.
    pub doc: &'static str,
}

/// A condition the transformed agent must meet for the transformation to be correct.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    /// Every accepted message has the field named by this parameter, and the state is
    /// partitioned by it (sharding).
    KeyedBy(&'static str),
    /// The agent has no state (load balancing: any copy may serve any message).
    Stateless,
    /// The agent is deterministic (replication: every copy must reach the same state).
    Deterministic,
}

/// A transformation's signature.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    /// Its name in pipelines.
    pub name: &'static str,
    /// What it applies to.
    pub target: Target,
    /// Its parameters, positional ones first.
    pub params: &'static [Param],
    /// What the agent must satisfy.
    pub preconditions: &'static [Precondition],
    /// One line on what it does.
    pub summary: &'static str,
}

impl Spec {
    /// An application as a user would write it, with named arguments: `shard(by: key, n: 2)`,
    /// `batch(max: 64, within: 5ms)`.
    pub fn show(&self, args: &crate::expansion::Args) -> String {
        use crate::expansion::Value;
        let shown: Vec<String> = args
            .iter()
            .map(|(k, v)| {
                let kind = self.params.iter().find(|p| p.name == k).map(|p| p.kind);
                let v = match (kind, v) {
                    (Some(ParamKind::Duration), Value::Int(ms)) => format!("{ms}ms"),
                    (Some(ParamKind::Str), Value::Str(s)) => format!("{s:?}"),
                    (_, Value::Int(n)) => n.to_string(),
                    (_, Value::Str(s)) => s.clone(),
                    (_, Value::List(l)) => format!("[{}]", l.join(", ")),
                };
                format!("{k}: {v}")
            })
            .collect();
        if shown.is_empty() {
            self.name.to_string()
        } else {
            format!("{}({})", self.name, shown.join(", "))
        }
    }

    /// The signature as a user writes it, e.g. `shard(n, by: field)`.
    pub fn signature(&self) -> String {
        let params: Vec<String> = self
            .params
            .iter()
            .map(|p| {
                let shown = if p.positional {
                    p.name.to_string()
                } else {
                    format!("{}: ..", p.name)
                };
                if p.required {
                    shown
                } else {
                    format!("[{shown}]")
                }
            })
            .collect();
        if params.is_empty() {
            self.name.to_string()
        } else {
            format!("{}({})", self.name, params.join(", "))
        }
    }
}

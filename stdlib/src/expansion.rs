//! What a transformation does to the system's structure: which physical agents replace a
//! virtual one, how they are named, and where each sender enters. Plain data, so the compiler
//! can build the LATT and routes from it and tests can check it alone.

use std::collections::BTreeMap;

pub use ovid::latt::{Args, Value};

/// What to expand.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// The virtual agent's identifier (`KVS`, `KVS/Shard1`).
    pub id: &'a str,
    /// The physical agents that send to it, in a stable order.
    pub senders: &'a [String],
    /// The arguments given.
    pub args: &'a Args,
}

/// What a child of the expansion runs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Role {
    /// A copy of the wrapped agent's code (a shard, a replica, a worker). Later
    /// transformations of the pipeline apply to each copy.
    Copy,
    /// A proxy agent of the transformation, configured by `config`.
    Proxy {
        /// The proxy's kind (`ShardIngressProxy`), which the runtime instantiates.
        proxy: &'static str,
        /// Its configuration: the identifiers it talks to and its parameters.
        config: Args,
    },
}

/// One physical child.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Child {
    /// Its identifier, always under the virtual agent's (`KVS/Shard0`).
    pub id: String,
    /// What it runs.
    pub role: Role,
}

/// The result of expanding one virtual agent.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Expansion {
    /// Its physical children.
    pub children: Vec<Child>,
    /// Sender → the child that stands in for the virtual agent towards it.
    pub entry: BTreeMap<String, String>,
    /// Child → the identifiers (of other children) it sends to.
    pub sends: BTreeMap<String, Vec<String>>,
}

impl Expansion {
    /// Adds a proxy child sending to `targets`.
    pub fn proxy(
        &mut self,
        id: String,
        proxy: &'static str,
        mut config: Args,
        targets: Vec<String>,
    ) {
        config.insert("targets".to_string(), Value::List(targets.clone()));
        self.sends.insert(id.clone(), targets);
        self.children.push(Child {
            id,
            role: Role::Proxy { proxy, config },
        });
    }

    /// Adds a copy of the wrapped agent.
    pub fn copy(&mut self, id: String) {
        self.children.push(Child {
            id,
            role: Role::Copy,
        });
    }
}

/// An integer argument, or `default`.
pub fn int(args: &Args, name: &str, default: i64) -> i64 {
    match args.get(name) {
        Some(Value::Int(n)) => *n,
        _ => default,
    }
}

/// A string argument, or `default`.
pub fn string(args: &Args, name: &str, default: &str) -> String {
    match args.get(name) {
        Some(Value::Str(s)) => s.clone(),
        _ => default.to_string(),
    }
}

/// The copy of the wrapped agent in a transformation that keeps one copy.
pub const AGENT: &str = "Agent";

/// The shape shared by transformations that put a pair of proxies (encoder near each sender,
/// decoder near the agent) on every incoming channel: batch, compress, encrypt.
pub fn channel_pair(
    req: &Request,
    encoder: &'static str,
    decoder: &'static str,
    config: Args,
) -> Expansion {
    let mut e = Expansion::default();
    let inner = format!("{}/{AGENT}", req.id);
    for (i, s) in req.senders.iter().enumerate() {
        let enc = format!("{}/{encoder}{i}", req.id);
        let dec = format!("{}/{decoder}{i}", req.id);
        let mut c = config.clone();
        c.insert("sender".to_string(), Value::Str(s.clone()));
        e.proxy(enc.clone(), encoder, c.clone(), vec![dec.clone()]);
        e.proxy(dec, decoder, c, vec![inner.clone()]);
        e.entry.insert(s.clone(), enc);
    }
    e.copy(inner);
    e
}

/// The shape of monitor and audit: one forwarding proxy per sender, then the agent.
pub fn pass_through(req: &Request, proxy: &'static str, config: Args) -> Expansion {
    let mut e = Expansion::default();
    let inner = format!("{}/{AGENT}", req.id);
    for (i, s) in req.senders.iter().enumerate() {
        let id = format!("{}/{proxy}{i}", req.id);
        let mut c = config.clone();
        c.insert("sender".to_string(), Value::Str(s.clone()));
        e.proxy(id.clone(), proxy, c, vec![inner.clone()]);
        e.entry.insert(s.clone(), id);
    }
    e.copy(inner);
    e
}

//! `shard(n, by: field)`: splits an agent into `n` shards, each holding the part of the state
//! whose key field hashes to it, behind ingress proxies (one per sender) and egress proxies
//! (one per shard).

use crate::expansion::{Args, Expansion, Request, Value, int, string};
use crate::spec::{Param, ParamKind, Precondition, Spec, Target};

/// The signature of `shard`.
pub const SPEC: Spec = Spec {
    name: "shard",
    target: Target::Agent,
    params: &[
        Param { name: "n", kind: ParamKind::Int { min: 1, max: 1024 }, positional: true, required: true, doc: "the number of shards" },
        Param { name: "by", kind: ParamKind::Field, positional: true, required: true, doc: "the message field that picks the shard" },
    ],
    preconditions: &[Precondition::KeyedBy("by")],
    summary: "partitions an agent's state by a key field over n shards",
    expand,
};

/// Shards `KVS` into `KVS/Shard0..n-1`; each sender `i` gets an ingress proxy
/// `KVS/ShardIngressProxy{i}` that picks the shard by hashing the key field, and each shard an
/// egress proxy `KVS/ShardEgressProxy{j}` that stands in for all senders towards it and routes
/// replies back.
pub fn expand(req: &Request) -> Expansion {
    let n = int(req.args, "n", 1);
    let by = string(req.args, "by", "key");
    let mut e = Expansion::default();
    let egress: Vec<String> = (0..n).map(|j| format!("{}/ShardEgressProxy{j}", req.id)).collect();
    for (i, s) in req.senders.iter().enumerate() {
        let id = format!("{}/ShardIngressProxy{i}", req.id);
        let config = Args::from([("by".to_string(), Value::Str(by.clone())), ("sender".to_string(), Value::Str(s.clone()))]);
        e.proxy(id.clone(), "ShardIngressProxy", config, egress.clone());
        e.entry.insert(s.clone(), id);
    }
    for (j, eg) in egress.iter().enumerate() {
        let shard = format!("{}/Shard{j}", req.id);
        e.proxy(eg.clone(), "ShardEgressProxy", Args::new(), vec![shard.clone()]);
        e.copy(shard);
    }
    e
}

/// The proxy agents of this transformation, by kind (filled in as they land).
pub fn proxies(_hooks: &std::sync::Arc<dyn crate::proxy::Hooks>) -> Vec<(&'static str, ovid::Factory)> {
    Vec::new()
}

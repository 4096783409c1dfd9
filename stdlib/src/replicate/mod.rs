//! `replicate(n)`: state machine replication of a deterministic agent over n = 2f+1 replicas,
//! tolerating f crashed replicas.

use crate::expansion::{Args, Expansion, Request, Value, int};
use crate::spec::{Param, ParamKind, Precondition, Spec, Target};

/// The signature of `replicate`.
pub const SPEC: Spec = Spec {
    name: "replicate",
    target: Target::Agent,
    params: &[Param {
        name: "n",
        kind: ParamKind::OddInt { min: 1, max: 15 },
        positional: true,
        required: true,
        doc: "the number of replicas, 2f+1 to tolerate f crashes",
    }],
    preconditions: &[Precondition::Deterministic],
    summary: "replicates a deterministic agent over 2f+1 replicas with consensus",
    expand,
};

/// Replicates `X` into `X/Replica0..n-1`, each driven by its consensus proxy
/// `X/ReplicaProxy{i}` (the replicas see only committed commands, in log order); each sender `s`
/// gets an ingress proxy `X/ReplicateIngressProxy{s}` that submits to the replica proxies and
/// passes back exactly one reply per request.
pub fn expand(req: &Request) -> Expansion {
    let n = int(req.args, "n", 1);
    let mut e = Expansion::default();
    let proxies: Vec<String> = (0..n).map(|i| format!("{}/ReplicaProxy{i}", req.id)).collect();
    for (i, s) in req.senders.iter().enumerate() {
        let id = format!("{}/ReplicateIngressProxy{i}", req.id);
        e.proxy(id.clone(), "ReplicateIngressProxy", Args::from([("sender".to_string(), Value::Str(s.clone()))]), proxies.clone());
        e.entry.insert(s.clone(), id);
    }
    for (i, p) in proxies.iter().enumerate() {
        let replica = format!("{}/Replica{i}", req.id);
        let mut targets = vec![replica.clone()];
        targets.extend(proxies.iter().filter(|q| *q != p).cloned());
        let config = Args::from([("index".to_string(), Value::Int(i as i64)), ("peers".to_string(), Value::List(proxies.clone()))]);
        e.proxy(p.clone(), "ReplicaProxy", config, targets);
        e.copy(replica);
    }
    e
}

/// The proxy agents of this transformation, by kind (filled in as they land).
pub fn proxies(_hooks: &std::sync::Arc<dyn crate::proxy::Hooks>) -> Vec<(&'static str, ovid::Factory)> {
    Vec::new()
}

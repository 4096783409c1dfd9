//! `replicate(n)`: state machine replication of a deterministic agent over n = 2f+1 replicas,
//! tolerating f crashed replicas.
//!
//! Three parts, like every transformation: the expansion ([`expand`]), the proxy agents
//! ([`proxies`]: [`ReplicateIngressProxy`] per sender, [`ReplicaProxy`] per replica, which runs
//! omnipaxos) and the refinement mapping ([`virtual_state`]). docs/replication.md tells how it
//! works and what it guarantees.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::expansion::{Args, Expansion, Request, Value, int};
use crate::spec::{Param, ParamKind, Precondition, Spec, Target};

mod apply;
mod ingress;
pub mod messages;
mod replica_proxy;
mod storage;

pub use apply::{Applier, Outcome, Session, Step};
pub use ingress::ReplicateIngressProxy;
pub use replica_proxy::{ReplicaProxy, Timing};
pub use storage::PaxosState;

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
    let proxies: Vec<String> = (0..n)
        .map(|i| format!("{}/ReplicaProxy{i}", req.id))
        .collect();
    for (i, s) in req.senders.iter().enumerate() {
        let id = format!("{}/ReplicateIngressProxy{i}", req.id);
        e.proxy(
            id.clone(),
            "ReplicateIngressProxy",
            Args::from([("sender".to_string(), Value::Str(s.clone()))]),
            proxies.clone(),
        );
        e.entry.insert(s.clone(), id);
    }
    for (i, p) in proxies.iter().enumerate() {
        let replica = format!("{}/Replica{i}", req.id);
        let mut targets = vec![replica.clone()];
        targets.extend(proxies.iter().filter(|q| *q != p).cloned());
        let config = Args::from([
            ("index".to_string(), Value::Int(i as i64)),
            ("peers".to_string(), Value::List(proxies.clone())),
        ]);
        e.proxy(p.clone(), "ReplicaProxy", config, targets);
        e.copy(replica);
    }
    e
}

/// The proxy agents of this transformation, by kind: `ReplicateIngressProxy` and
/// `ReplicaProxy`, each made from its configuration (JSON, see [`crate::proxy::config`]).
pub fn proxies(_hooks: &Arc<dyn crate::proxy::Hooks>) -> Vec<(&'static str, ovid::Factory)> {
    let ingress: ovid::Factory = Arc::new(|bytes: &[u8]| {
        let args = crate::proxy::config(bytes)?;
        Ok(Box::new(ReplicateIngressProxy::from_config(&args)?) as Box<dyn ovid::Agent>)
    });
    let replica: ovid::Factory = Arc::new(|bytes: &[u8]| {
        let args = crate::proxy::config(bytes)?;
        Ok(Box::new(ReplicaProxy::from_config(&args)?) as Box<dyn ovid::Agent>)
    });
    vec![(ingress::KIND, ingress), (replica_proxy::KIND, replica)]
}

/// The refinement mapping: the state of the virtual agent is that of a replica that has applied
/// the committed prefix of the log. Given each replica's (applied log index, snapshot), it is
/// the snapshot of the replica that applied the most (the first of those, on a tie); `None` if
/// there are no replicas. A replica's applied index is its proxy's `ReplicaStatus::applied`,
/// read while both are quiet (`completed == executed`) or wedged.
pub fn virtual_state<S>(replicas: &[(u64, S)]) -> Option<&S> {
    replicas
        .iter()
        .rev()
        .max_by_key(|(applied, _)| *applied)
        .map(|(_, s)| s)
}

/// The refinement mapping over the snapshots of the physical agents under `id` (physical
/// identifier → snapshot, as a simulator or an operator takes them with every agent quiet): the
/// snapshot of `{id}/Replica{i}` whose proxy `{id}/ReplicaProxy{i}` applied the most of the log.
pub fn refine(id: &str, snapshots: &BTreeMap<String, Vec<u8>>) -> Result<Vec<u8>, ovid::Error> {
    let mut replicas = Vec::new();
    for (name, snapshot) in snapshots {
        let Some(i) = name
            .strip_prefix(&format!("{id}/ReplicaProxy"))
            .and_then(|i| i.parse::<usize>().ok())
        else {
            continue;
        };
        if let Some(replica) = snapshots.get(&format!("{id}/Replica{i}")) {
            replicas.push((applied(snapshot)?, replica));
        }
    }
    virtual_state(&replicas)
        .map(|s| (*s).clone())
        .ok_or_else(|| ovid::Error::Snapshot(format!("no replica of `{id}` with its proxy")))
}

/// How much of the log the replica proxy whose snapshot this is has applied.
pub fn applied(proxy_snapshot: &[u8]) -> Result<u64, ovid::Error> {
    replica_proxy::applied(proxy_snapshot)
}

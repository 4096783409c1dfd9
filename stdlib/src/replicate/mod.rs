//! `replicate(n)`: state machine replication of a deterministic agent over n = 2f+1 replicas,
//! tolerating f crashed replicas.
//!
//! Three parts, like every transformation: the expansion ([`expand`]), the proxy agents
//! ([`proxies`]: [`ReplicateIngressProxy`] per sender, [`ReplicaProxy`] per replica, which runs
//! omnipaxos) and the refinement mapping ([`ReplicateTransformation`]'s `merge`: the replica that applied the
//! most of the log). docs/replication.md tells how it
//! works and what it guarantees.

use std::collections::BTreeMap;
use std::sync::Arc;

use ovid::latt::FaultModel;

use crate::expansion::{Args, Expansion, Request, Value, int};
use crate::spec::{Param, ParamKind, Precondition, Spec, Target};
use crate::state::{Merge, Parts};

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
};

/// `replicate` in the registry ([`crate::ALL`]).
pub struct ReplicateTransformation;

impl crate::transformation::Transformation for ReplicateTransformation {
    fn spec(&self) -> &'static Spec {
        &SPEC
    }

    fn expand(&self, req: &Request) -> Expansion {
        expand(req)
    }

    fn proxies(
        &self,
        hooks: &std::sync::Arc<dyn crate::proxy::Hooks>,
    ) -> Vec<(&'static str, ovid::Factory)> {
        proxies(hooks)
    }

    /// Replica `i` is `Replica{i}` and its proxy; f = (n-1)/2 of them may be down at once, and
    /// replicas may crash and restart without bound (a restarted one recovers from its peers).
    fn faults(&self, req: &Request, _expansion: &Expansion) -> Option<FaultModel> {
        let n = int(req.args, "n", 1).max(1) as usize;
        Some(FaultModel {
            groups: members(req.id, n, &["Replica", "ReplicaProxy"]),
            tolerates: (n - 1) / 2,
            churn: true,
            view_service: false,
        })
    }

    /// The state of the replica that applied the most of the log (see [`most_applied`]).
    fn merge(&self, merge: Merge) -> Result<Parts, ovid::Error> {
        most_applied(merge, replica_proxy::KIND, replica_proxy::applied)
    }

    fn controller_replicas(&self, args: &Args) -> Option<usize> {
        usize::try_from(int(args, "n", 1)).ok()
    }
}

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

/// `{id}/{segment}{i}` → `i`, for every segment and `i` in `0..n`: the failure groups of a
/// transformation whose copy `i` and proxy `i` fail together.
pub(crate) fn members(id: &str, n: usize, segments: &[&str]) -> BTreeMap<String, usize> {
    (0..n)
        .flat_map(|i| segments.iter().map(move |s| (format!("{id}/{s}{i}"), i)))
        .collect()
}

/// The refinement mapping of a replicated log: of the copies that are up with their proxy
/// `{id}/{proxy}{i}`, the state of one that applied the most of the log (`applied` reads it
/// from the proxy's snapshot). Copies that applied as much have applied the same commands, so
/// their states must be equal; if they are not, the replicas diverged and that is an error.
pub(crate) fn most_applied(
    merge: Merge,
    proxy: &str,
    applied: fn(&[u8]) -> Result<u64, ovid::Error>,
) -> Result<Parts, ovid::Error> {
    let mut live: Vec<(u64, String, Parts)> = Vec::new();
    for (i, copy) in merge.copies.into_iter().enumerate() {
        let state = match copy.state {
            Ok(state) => state,
            Err(ovid::Error::DeadAgent(_)) => continue,
            Err(e) => return Err(e),
        };
        let Some(snapshot) = merge.snapshots.get(&format!("{}/{proxy}{i}", merge.id)) else {
            continue;
        };
        live.push((applied(snapshot)?, copy.id, state));
    }
    let most = live.iter().map(|(a, ..)| *a).max();
    let mut best = live.into_iter().filter(|(a, ..)| Some(*a) == most);
    let Some((_, first_id, first)) = best.next() else {
        return Err(ovid::Error::DeadAgent(merge.id.to_string()));
    };
    for (applied, id, state) in best {
        if state != first {
            return Err(ovid::Error::Invalid(format!(
                "the replicas of `{}` diverged: `{first_id}` and `{id}` applied {applied} commands each but hold different states",
                merge.id
            )));
        }
    }
    Ok(first)
}

/// How much of the log the replica proxy whose snapshot this is has applied.
pub fn applied(proxy_snapshot: &[u8]) -> Result<u64, ovid::Error> {
    replica_proxy::applied(proxy_snapshot)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Copy;
    use crate::transformation::Transformation;

    /// A proxy "snapshot" here is one byte: how much it applied.
    fn merge(copies: &[(&str, Option<&[u8]>, u8)]) -> Result<Parts, ovid::Error> {
        let snapshots: BTreeMap<String, Vec<u8>> = copies
            .iter()
            .enumerate()
            .map(|(i, (_, _, applied))| (format!("X/P{i}"), vec![*applied]))
            .collect();
        let copies = copies
            .iter()
            .map(|(id, state, _)| Copy {
                id: id.to_string(),
                state: state
                    .map(|s| Parts::new(s.to_vec()))
                    .ok_or_else(|| ovid::Error::DeadAgent(id.to_string())),
            })
            .collect();
        let m = Merge {
            id: "X",
            args: &Args::new(),
            copies,
            snapshots: &snapshots,
        };
        most_applied(m, "P", |s| Ok(u64::from(s[0])))
    }

    #[test]
    fn the_replica_that_applied_most_is_the_state_and_equals_must_agree() {
        let lagging = merge(&[
            ("a", Some(b"old"), 3),
            ("b", Some(b"new"), 5),
            ("c", None, 9),
        ]);
        assert_eq!(lagging.unwrap(), Parts::new(b"new".to_vec()));
        let agree = merge(&[("a", Some(b"s"), 5), ("b", Some(b"s"), 5)]);
        assert_eq!(agree.unwrap(), Parts::new(b"s".to_vec()));
        let diverged = merge(&[("a", Some(b"s"), 5), ("b", Some(b"t"), 5)]);
        assert!(matches!(diverged, Err(ovid::Error::Invalid(m)) if m.contains("diverged")));
        assert!(matches!(
            merge(&[("a", None, 1)]),
            Err(ovid::Error::DeadAgent(_))
        ));
    }

    #[test]
    fn every_replica_and_its_proxy_form_one_failure_group() {
        let req = Request {
            id: "X",
            senders: &[],
            args: &Args::from([("n".to_string(), Value::Int(5))]),
        };
        let model = ReplicateTransformation
            .faults(&req, &expand(&req))
            .expect("replicate tolerates failures");
        assert_eq!(model.tolerates, 2);
        assert_eq!(model.groups["X/Replica3"], 3);
        assert_eq!(model.groups["X/ReplicaProxy3"], 3);
        assert_eq!(model.groups.len(), 10);
    }
}

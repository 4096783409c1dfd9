//! `chain(n)`: chain replication (van Renesse & Schneider, OSDI 2004) of a deterministic agent
//! over n copies, ordered by the controller's view service (`ovid::views`, docs/transformations.md).
//!
//! The chain is the group's view: head = the view's primary, then the backups in the order the
//! view lists them, tail = the last. Writes enter at the head, travel down the chain, and are
//! answered by the tail; the proxy agents are in [`proxy`] ([`ChainProxy`]) and the ingress proxy
//! is primary_backup's ([`PrimaryBackupIngressProxy`], registered here as `ChainIngressProxy`),
//! which follows the views and sends every request to the head.
//!
//! **Reads and writes.** A transformation does not know the agent's message types, and a
//! handler may change state on any message, so no request can be told to be a read. Every
//! request is therefore treated as a write: it goes through the head, down the whole chain, and
//! the tail replies. Reads are thus served by the tail, after every write ordered before them,
//! which is what makes the result linearizable; the price is that a read costs as much as a
//! write (n hops instead of one).
//!
//! **Failover** is the controller's: a member whose box is declared dead leaves the view, and
//! the view service keeps the order of the rest, so the head's successor (which holds everything
//! downstream holds) becomes head and the tail's predecessor (which holds everything the tail
//! answered) becomes tail. **A member that restarts** joins the head, catches up with the
//! entries the tail holds, and is added once the head has let the chain drain (see [`proxy`]).
//!
//! **Refinement mapping** ([`ChainTransformation`]'s `merge`): the virtual state is the state of
//! the tail of the newest view any proxy has installed, or, if the tail is down, of the member
//! nearest to it upstream that is up. The tail holds a prefix of every other member's log and
//! has answered nothing it does not hold, so its state has every acknowledged write and no
//! write that a failover could lose. Client sessions (each request once, in each sender's
//! order) are replicate's.

use std::sync::Arc;

use ovid::latt::FaultModel;

use crate::expansion::{Args, Expansion, Request, Value, int};
use crate::primary_backup::PrimaryBackupIngressProxy;
use crate::spec::{Param, ParamKind, Precondition, Spec, Target};
use crate::state::{Merge, Parts};

pub mod messages;
pub mod proxy;

pub use proxy::{ChainProxy, Timing};

/// The kind of the ingress proxy (primary_backup's, under this transformation's name).
pub const INGRESS_KIND: &str = "ChainIngressProxy";

/// The signature of `chain`.
pub const SPEC: Spec = Spec {
    name: "chain",
    target: Target::Agent,
    params: &[Param {
        name: "n",
        kind: ParamKind::Int { min: 2, max: 15 },
        positional: true,
        required: true,
        doc: "the length of the chain, head and tail included",
    }],
    preconditions: &[Precondition::Deterministic],
    summary: "chain replication of a deterministic agent: writes enter at the head, the tail answers; fails over through the controller",
};

/// `chain` in the registry ([`crate::ALL`]).
pub struct ChainTransformation;

impl crate::transformation::Transformation for ChainTransformation {
    fn spec(&self) -> &'static Spec {
        &SPEC
    }

    fn expand(&self, req: &Request) -> Expansion {
        expand(req)
    }

    fn proxies(&self, hooks: &Arc<dyn crate::proxy::Hooks>) -> Vec<(&'static str, ovid::Factory)> {
        proxies(hooks)
    }

    /// Member `i` is `Copy{i}` and its proxy. Every acknowledged write is in every member of
    /// the view, so n-1 may be down at once (the last one left is head and tail). No churn: a
    /// restarted member holds nothing until the head has added it back, so at most n-1 crash
    /// in a run.
    fn faults(&self, req: &Request, _expansion: &Expansion) -> Option<FaultModel> {
        let n = int(req.args, "n", 2).max(1) as usize;
        Some(FaultModel {
            groups: crate::replicate::members(req.id, n, &["Copy", proxy::KIND]),
            tolerates: n - 1,
            churn: false,
            view_service: true,
        })
    }

    /// The state of the tail (see the module docs).
    fn merge(&self, merge: Merge) -> Result<Parts, ovid::Error> {
        tail_state(merge)
    }
}

/// Chains `X/Copy0..n-1` through their proxies `X/ChainProxy{i}` (the controller's first view
/// makes `X/Copy0` the head and `X/Copy{n-1}` the tail); each sender gets an ingress proxy
/// `X/ChainIngressProxy{i}` that follows the head the controller names.
pub fn expand(req: &Request) -> Expansion {
    let n = int(req.args, "n", 2);
    let mut e = Expansion::default();
    let proxies: Vec<String> = (0..n)
        .map(|i| format!("{}/{}{i}", req.id, proxy::KIND))
        .collect();
    for (i, s) in req.senders.iter().enumerate() {
        let id = format!("{}/{INGRESS_KIND}{i}", req.id);
        e.proxy(
            id.clone(),
            INGRESS_KIND,
            Args::from([("sender".to_string(), Value::Str(s.clone()))]),
            proxies.clone(),
        );
        e.entry.insert(s.clone(), id);
    }
    for (i, p) in proxies.iter().enumerate() {
        let copy = format!("{}/Copy{i}", req.id);
        let mut targets = vec![copy.clone()];
        targets.extend(proxies.iter().filter(|q| *q != p).cloned());
        let config = Args::from([
            ("index".to_string(), Value::Int(i as i64)),
            ("peers".to_string(), Value::List(proxies.clone())),
        ]);
        e.proxy(p.clone(), proxy::KIND, config, targets);
        e.copy(copy);
    }
    e
}

/// The proxy agents of this transformation, by kind: `ChainIngressProxy` (it submits to the
/// head the controller names, and retries) and `ChainProxy`.
pub fn proxies(_hooks: &Arc<dyn crate::proxy::Hooks>) -> Vec<(&'static str, ovid::Factory)> {
    let ingress: ovid::Factory = Arc::new(|bytes: &[u8]| {
        let args = crate::proxy::config(bytes)?;
        Ok(Box::new(PrimaryBackupIngressProxy::from_config(&args)?) as Box<dyn ovid::Agent>)
    });
    let member: ovid::Factory = Arc::new(|bytes: &[u8]| {
        let args = crate::proxy::config(bytes)?;
        Ok(Box::new(ChainProxy::from_config(&args)?) as Box<dyn ovid::Agent>)
    });
    vec![(INGRESS_KIND, ingress), (proxy::KIND, member)]
}

/// The refinement mapping (see the module docs): the tail's state. Before any view (no proxy
/// has installed one), the copy that applied the most, as for replicate. Members of the chain
/// that applied as much as the chosen one must hold the same state, or they diverged.
fn tail_state(merge: Merge) -> Result<Parts, ovid::Error> {
    let mut saved = Vec::with_capacity(merge.copies.len());
    for i in 0..merge.copies.len() {
        let key = format!("{}/{}{i}", merge.id, proxy::KIND);
        saved.push(match merge.snapshots.get(&key) {
            Some(bytes) => Some(proxy::saved(bytes)?),
            None => None,
        });
    }
    let newest = saved
        .iter()
        .flatten()
        .filter_map(|s| s.view.as_ref())
        .max_by_key(|v| v.number)
        .cloned();
    let Some(view) = newest else {
        return crate::replicate::most_applied(merge, proxy::KIND, |s| {
            Ok(proxy::saved(s)?.applier.applied)
        });
    };
    let members = std::iter::once(view.primary).chain(view.backups.iter().copied());
    // Chain members that are up, in this incarnation, head first: (applied, id, state).
    let mut live = Vec::new();
    let mut copies: Vec<Option<crate::state::Copy>> = merge.copies.into_iter().map(Some).collect();
    for m in members {
        let i = m.index as usize;
        let Some(s) = saved.get(i).and_then(Option::as_ref) else {
            continue;
        };
        if s.nonce != m.nonce {
            continue;
        }
        let Some(copy) = copies.get_mut(i).and_then(Option::take) else {
            continue;
        };
        match copy.state {
            Ok(state) => live.push((s.applier.applied, copy.id, state)),
            Err(ovid::Error::DeadAgent(_)) => {}
            Err(e) => return Err(e),
        }
    }
    let Some((applied, tail_id, tail)) = live.pop() else {
        return Err(ovid::Error::DeadAgent(merge.id.to_string()));
    };
    for (other, id, state) in &live {
        if *other == applied && *state != tail {
            return Err(ovid::Error::Invalid(format!(
                "the chain members of `{}` diverged: `{id}` and `{tail_id}` applied {applied} commands each but hold different states",
                merge.id
            )));
        }
    }
    Ok(tail)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use ovid::views::{Member, View};

    use super::*;
    use crate::expansion::Role;
    use crate::state::Copy;
    use crate::transformation::Transformation;

    fn req<'a>(args: &'a Args, senders: &'a [String]) -> Request<'a> {
        Request {
            id: "KVS",
            senders,
            args,
        }
    }

    #[test]
    fn expansion_names_members_and_an_ingress_proxy_per_sender() {
        let args = Args::from([("n".to_string(), Value::Int(3))]);
        let senders = vec!["a".to_string(), "b".to_string()];
        let e = expand(&req(&args, &senders));
        let ids: Vec<&str> = e.children.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "KVS/ChainIngressProxy0",
                "KVS/ChainIngressProxy1",
                "KVS/ChainProxy0",
                "KVS/Copy0",
                "KVS/ChainProxy1",
                "KVS/Copy1",
                "KVS/ChainProxy2",
                "KVS/Copy2",
            ]
        );
        assert_eq!(e.entry["b"], "KVS/ChainIngressProxy1");
        let Role::Proxy { config, .. } = &e.children[4].role else {
            panic!("a chain proxy");
        };
        assert_eq!(config["index"], Value::Int(1));
        // Every kind the expansion names is one the transformation makes.
        let hooks: Arc<dyn crate::proxy::Hooks> = Arc::new(crate::proxy::NoHooks);
        let kinds: Vec<&str> = proxies(&hooks).iter().map(|(k, _)| *k).collect();
        for child in &e.children {
            if let Role::Proxy { proxy, .. } = &child.role {
                assert!(kinds.contains(proxy), "{proxy}");
            }
        }
    }

    #[test]
    fn every_member_and_its_proxy_fail_together_and_all_but_one_may_be_down() {
        let args = Args::from([("n".to_string(), Value::Int(4))]);
        let r = req(&args, &[]);
        let model = ChainTransformation
            .faults(&r, &expand(&r))
            .expect("chain tolerates failures");
        assert_eq!(model.tolerates, 3);
        assert!(model.view_service && !model.churn);
        assert_eq!(model.groups["KVS/Copy2"], 2);
        assert_eq!(model.groups["KVS/ChainProxy2"], 2);
        assert_eq!(model.groups.len(), 8);
    }

    #[test]
    fn arguments_out_of_range_are_refused_by_the_signature() {
        assert_eq!(SPEC.params[0].kind, ParamKind::Int { min: 2, max: 15 });
        assert!(crate::lookup("chain").is_some(), "registered in ALL");
    }

    fn view(number: u64, chain: &[(u64, u64)]) -> View {
        let members: Vec<Member> = chain
            .iter()
            .map(|(index, nonce)| Member {
                index: *index,
                nonce: *nonce,
            })
            .collect();
        View {
            group: "KVS".into(),
            number,
            primary: members[0],
            backups: members[1..].to_vec(),
        }
    }

    /// Copies with (state, proxy snapshot); `None` for a copy that is down.
    fn merge_of(copies: &[Option<(&[u8], Vec<u8>)>]) -> Result<Parts, ovid::Error> {
        let mut snapshots = BTreeMap::new();
        let mut list = Vec::new();
        for (i, c) in copies.iter().enumerate() {
            let id = format!("KVS/Copy{i}");
            match c {
                Some((state, snapshot)) => {
                    snapshots.insert(format!("KVS/ChainProxy{i}"), snapshot.clone());
                    list.push(Copy {
                        id,
                        state: Ok(Parts::new(state.to_vec())),
                    });
                }
                None => list.push(Copy {
                    state: Err(ovid::Error::DeadAgent(id.clone())),
                    id,
                }),
            }
        }
        let args = Args::new();
        ChainTransformation.merge(Merge {
            id: "KVS",
            args: &args,
            copies: list,
            snapshots: &snapshots,
        })
    }

    #[test]
    fn the_virtual_state_is_the_tails_or_its_nearest_live_predecessors() {
        // Chain 2 → 0 → 1 (view 4): the head applied more than the tail; the tail's state is
        // the virtual one.
        let v = view(4, &[(2, 12), (0, 10), (1, 11)]);
        let snap = |applied, nonce| proxy::test_snapshot(Some(v.clone()), nonce, applied);
        let state = merge_of(&[
            Some((b"mid", snap(5, 10))),
            Some((b"tail", snap(4, 11))),
            Some((b"head", snap(6, 12))),
        ]);
        assert_eq!(state.unwrap(), Parts::new(b"tail".to_vec()));
        // The tail is down: its predecessor (which will be the tail) holds every answered write.
        let state = merge_of(&[
            Some((b"mid", snap(5, 10))),
            None,
            Some((b"head", snap(6, 12))),
        ]);
        assert_eq!(state.unwrap(), Parts::new(b"mid".to_vec()));
        // A restarted tail (another incarnation, outside the view) is not the tail.
        let state = merge_of(&[
            Some((b"mid", snap(5, 10))),
            Some((b"empty", snap(0, 99))),
            Some((b"head", snap(6, 12))),
        ]);
        assert_eq!(state.unwrap(), Parts::new(b"mid".to_vec()));
        // Members that applied as much must agree.
        let diverged = merge_of(&[
            Some((b"mid", snap(4, 10))),
            Some((b"tail", snap(4, 11))),
            Some((b"head", snap(6, 12))),
        ]);
        assert!(matches!(diverged, Err(ovid::Error::Invalid(m)) if m.contains("diverged")));
        assert!(matches!(
            merge_of(&[None, None, None]),
            Err(ovid::Error::DeadAgent(_))
        ));
    }

    #[test]
    fn before_any_view_the_copy_that_applied_most_is_the_state() {
        let snap = |applied| proxy::test_snapshot(None, 1, applied);
        let state = merge_of(&[Some((b"a", snap(0))), Some((b"b", snap(2)))]);
        assert_eq!(state.unwrap(), Parts::new(b"b".to_vec()));
    }
}

//! Every transformation's refinement mapping, through the registry: splitting a virtual state
//! over a LATT built from the transformations' own expansions and merging the physical states
//! back gives the state again (`merge(split(s)) == s`), alone and nested.

use std::collections::BTreeMap;
use std::sync::Arc;

use ovid::Error;
use ovid::latt::{Args, LattNode, NodeKind, Value};
use ovid_stdlib::expansion::{Request, Role};
use ovid_stdlib::proxy::{Hooks, NoHooks};
use ovid_stdlib::refinement::{self, Parts, State};
use ovid_stdlib::spec::ParamKind;
use ovid_stdlib::transformation::Transformation;
use serde::{Deserialize, Serialize};

/// An agent state with a keyed map and an unkeyed part.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Store {
    entries: BTreeMap<String, u32>,
    version: u8,
}

impl State for Store {
    fn into_parts(mut self) -> Result<Parts, Error> {
        let entries = std::mem::take(&mut self.entries);
        let mut parts = Parts::new(ovid::agent::serde_snapshot(&self)?);
        parts.put_map("entries", entries)?;
        Ok(parts)
    }

    fn from_parts(mut parts: Parts) -> Result<Self, Error> {
        let mut state: Store = ovid::agent::serde_restore(&parts.rest)?;
        state.entries = parts.take_map("entries")?;
        Ok(state)
    }
}

/// Arguments that fit every parameter of `t`: three of a count, `key` for a field.
fn args_for(t: &dyn Transformation) -> Args {
    t.spec()
        .params
        .iter()
        .filter(|p| p.required)
        .map(|p| {
            let v = match p.kind {
                ParamKind::Int { min, max } | ParamKind::OddInt { min, max } => {
                    Value::Int(3.clamp(min, max))
                }
                ParamKind::Duration => Value::Int(5),
                ParamKind::Field => Value::Str("key".into()),
                ParamKind::Choice(options) => Value::Str(options[0].into()),
                ParamKind::Str => Value::Str("x".into()),
            };
            (p.name.to_string(), v)
        })
        .collect()
}

/// The LATT node of `id` transformed by `pipeline` (outermost first), and the snapshots of the
/// proxies it starts with (those its factory can make here).
fn node(
    id: &str,
    pipeline: &[&'static dyn Transformation],
    snapshots: &mut BTreeMap<String, Vec<u8>>,
) -> LattNode {
    let Some((t, rest)) = pipeline.split_first() else {
        return LattNode::agent(id, "Store");
    };
    let args = args_for(*t);
    let senders = vec!["c0".to_string(), "c1".to_string()];
    let req = Request {
        id,
        senders: &senders,
        args: &args,
    };
    let e = t.expand(&req);
    let hooks: Arc<dyn Hooks> = Arc::new(NoHooks);
    let factories: BTreeMap<_, _> = t.proxies(&hooks).into_iter().collect();
    let mut children = Vec::new();
    for child in &e.children {
        match &child.role {
            Role::Copy => children.push(node(&child.id, rest, snapshots)),
            Role::Proxy { proxy, config } => {
                let bytes = serde_json::to_vec(config).unwrap();
                if let Some(Ok(agent)) = factories.get(proxy).map(|f| f(&bytes)) {
                    snapshots.insert(child.id.clone(), agent.snapshot().unwrap());
                }
                children.push(LattNode::proxy(&child.id, *proxy));
            }
        }
    }
    let model = t.faults(&req, &e);
    let transform = ovid::latt::Transform {
        name: t.spec().name.to_string(),
        args: args.clone(),
    };
    let mut n = LattNode::transformed(id, "Store", transform, children);
    if let NodeKind::Transformed { faults, .. } = &mut n.kind {
        *faults = model;
    }
    n
}

fn store() -> Store {
    Store {
        entries: (0..200).map(|i| (format!("key-{i}"), i)).collect(),
        version: 7,
    }
}

fn round_trip(pipeline: &[&'static dyn Transformation]) {
    let mut snapshots = BTreeMap::new();
    let root = node("X", pipeline, &mut snapshots);
    let physical = refinement::split(&root, store()).unwrap();
    assert!(!physical.is_empty());
    snapshots.extend(physical);
    let back: Store = refinement::refine(&root, &snapshots).unwrap();
    let names: Vec<&str> = pipeline.iter().map(|t| t.spec().name).collect();
    assert_eq!(back, store(), "merge(split(s)) != s under {names:?}");
}

#[test]
fn every_transformation_maps_a_state_there_and_back() {
    for t in ovid_stdlib::ALL {
        round_trip(&[*t]);
    }
}

#[test]
fn nested_pipelines_map_a_state_there_and_back() {
    let by = |name| ovid_stdlib::lookup(name).unwrap();
    for pipeline in [
        vec![by("shard"), by("replicate")],
        vec![by("shard"), by("primary_backup")],
        vec![by("replicate"), by("shard")],
        vec![by("shard"), by("shard")],
        vec![by("monitor"), by("shard"), by("replicate")],
    ] {
        round_trip(&pipeline);
    }
}

#[test]
fn sharding_puts_every_key_where_the_ingress_proxies_send_it() {
    let shard = ovid_stdlib::lookup("shard").unwrap();
    let root = node("X", &[shard], &mut BTreeMap::new());
    let physical = refinement::split(&root, store()).unwrap();
    let shards: Vec<BTreeMap<String, u32>> = (0..3)
        .map(|j| {
            let s: Store = ovid::agent::serde_restore(&physical[&format!("X/Shard{j}")]).unwrap();
            assert_eq!(s.version, 7, "every shard keeps the unkeyed state");
            s.entries
        })
        .collect();
    assert!(ovid_stdlib::shard::misplaced(&shards).is_empty());
    assert!(shards.iter().all(|s| !s.is_empty()));
}

#[test]
fn a_key_held_by_two_shards_is_an_error_not_a_silent_merge() {
    let shard = ovid_stdlib::lookup("shard").unwrap();
    let root = node("X", &[shard], &mut BTreeMap::new());
    let mut physical = refinement::split(&root, store()).unwrap();
    let everything = ovid::agent::serde_snapshot(&store()).unwrap();
    physical.insert("X/Shard1".into(), everything);
    let err = refinement::refine::<Store>(&root, &physical).unwrap_err();
    assert!(err.to_string().contains("two shards"), "{err}");
}

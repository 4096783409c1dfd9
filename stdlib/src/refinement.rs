//! Refinement mappings over a LATT: the functions `ovidc test` checks and state transfer calls.
//!
//! A transformation's mapping ([`Transformation::merge`] / [`Transformation::split`]) works on
//! [`Parts`], an agent state taken apart into its keyed maps (each entry as the postcard
//! encoding of its key and of its value) and the rest, so that the standard library can merge
//! and split the state of agent types it has never seen. A generated system implements
//! [`State`] for each agent type; [`refine`] and [`split`] then walk the LATT, calling each
//! node's transformation.
//!
//! A key's encoding is what [`crate::proxy::stable_hash`] hashes, so splitting by the hash of
//! the encoded key puts every entry where the ingress proxies send its messages.

use std::collections::BTreeMap;

use ovid::Error;
use ovid::agent::{serde_restore, serde_snapshot};
use ovid::latt::{LattNode, NodeKind};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use crate::state::{Copy, Merge, Parts, State, agree};
use crate::transformation::Transformation;

/// The transformation a LATT node names.
fn transformation_of(node: &LattNode) -> Result<&'static dyn Transformation, Error> {
    let transform = node
        .transform()
        .ok_or_else(|| Error::Invalid(format!("`{}` is not a transformed agent", node.id)))?;
    crate::lookup(&transform.name).ok_or_else(|| {
        Error::Invalid(format!(
            "`{}` is transformed by `{}`, which the standard library does not have",
            node.id, transform.name
        ))
    })
}

/// The children of a transformed node that run or combine its agent's code (not its proxies).
fn copies(node: &LattNode) -> impl Iterator<Item = &LattNode> {
    node.children.iter().filter(|c| {
        matches!(
            c.kind,
            NodeKind::Agent { .. } | NodeKind::Transformed { .. }
        )
    })
}

/// The state of the agent `node` stands for, taken apart.
pub fn parts<S: State + DeserializeOwned>(
    node: &LattNode,
    snapshots: &BTreeMap<String, Vec<u8>>,
) -> Result<Parts, Error> {
    match &node.kind {
        NodeKind::Agent { .. } => {
            let bytes = snapshots
                .get(&node.id)
                .ok_or_else(|| Error::DeadAgent(node.id.clone()))?;
            serde_restore::<S>(bytes)?.into_parts()
        }
        NodeKind::Transformed { transform, .. } => {
            let t = transformation_of(node)?;
            let copies = copies(node)
                .map(|c| Copy {
                    id: c.id.clone(),
                    state: parts::<S>(c, snapshots),
                })
                .collect();
            t.merge(Merge {
                id: &node.id,
                args: &transform.args,
                copies,
                snapshots,
            })
        }
        _ => Err(Error::Invalid(format!(
            "`{}` runs no agent's code, so it has no agent state",
            node.id
        ))),
    }
}

/// Refinement mapping, physical → virtual, over the whole subtree of `node`: the state of the
/// agent it stands for, from the snapshots of its physical agents.
pub fn refine<S: State + DeserializeOwned>(
    node: &LattNode,
    snapshots: &BTreeMap<String, Vec<u8>>,
) -> Result<S, Error> {
    S::from_parts(parts::<S>(node, snapshots)?)
}

/// [`refine`], encoded as a snapshot: what the simulator's targets call.
pub fn refine_snapshot<S: State + DeserializeOwned + Serialize>(
    node: &LattNode,
    snapshots: &BTreeMap<String, Vec<u8>>,
) -> Result<Vec<u8>, Error> {
    serde_snapshot(&refine::<S>(node, snapshots)?)
}

/// Refinement mapping, virtual → physical, over the whole subtree of `node`: the state of each
/// physical agent that runs the agent's code, by identifier (proxies start afresh).
pub fn split<S: State + Serialize>(
    node: &LattNode,
    state: S,
) -> Result<BTreeMap<String, Vec<u8>>, Error> {
    let mut out = BTreeMap::new();
    split_parts::<S>(node, state.into_parts()?, &mut out)?;
    Ok(out)
}

fn split_parts<S: State + Serialize>(
    node: &LattNode,
    state: Parts,
    out: &mut BTreeMap<String, Vec<u8>>,
) -> Result<(), Error> {
    match &node.kind {
        NodeKind::Agent { .. } => {
            out.insert(node.id.clone(), serde_snapshot(&S::from_parts(state)?)?);
            Ok(())
        }
        NodeKind::Transformed { transform, .. } => {
            let t = transformation_of(node)?;
            let children: Vec<&LattNode> = copies(node).collect();
            let ids: Vec<String> = children.iter().map(|c| c.id.clone()).collect();
            let parts = t.split(&transform.args, state, &ids);
            if parts.len() != children.len() {
                return Err(Error::Invalid(format!(
                    "`{}` split its state into {} parts for {} copies",
                    node.id,
                    parts.len(),
                    children.len()
                )));
            }
            for (child, part) in children.into_iter().zip(parts) {
                split_parts::<S>(child, part, out)?;
            }
            Ok(())
        }
        _ => Err(Error::Invalid(format!(
            "`{}` runs no agent's code, so it has no agent state",
            node.id
        ))),
    }
}

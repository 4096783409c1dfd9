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

use crate::transformation::Transformation;

/// An agent state taken apart for the refinement mappings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Parts {
    /// State partitioned by a key: field → (key's encoding → value's encoding).
    pub keyed: BTreeMap<String, BTreeMap<Vec<u8>, Vec<u8>>>,
    /// Everything else, as one encoding (the state with its keyed maps emptied).
    pub rest: Vec<u8>,
}

impl Parts {
    /// Parts whose unkeyed state is `rest`.
    pub fn new(rest: Vec<u8>) -> Self {
        Parts {
            keyed: BTreeMap::new(),
            rest,
        }
    }

    /// Adds the keyed map `field`, encoding each entry.
    pub fn put_map<K: Serialize, V: Serialize>(
        &mut self,
        field: &str,
        map: BTreeMap<K, V>,
    ) -> Result<(), Error> {
        let mut entries = BTreeMap::new();
        for (k, v) in map {
            entries.insert(serde_snapshot(&k)?, serde_snapshot(&v)?);
        }
        self.keyed.insert(field.to_string(), entries);
        Ok(())
    }

    /// Takes the keyed map `field` out, decoding each entry (empty if absent).
    pub fn take_map<K: DeserializeOwned + Ord, V: DeserializeOwned>(
        &mut self,
        field: &str,
    ) -> Result<BTreeMap<K, V>, Error> {
        let mut map = BTreeMap::new();
        for (k, v) in self.keyed.remove(field).unwrap_or_default() {
            map.insert(serde_restore(&k)?, serde_restore(&v)?);
        }
        Ok(map)
    }
}

/// An agent state type the refinement mappings can take apart and put back together.
pub trait State: Sized {
    /// Takes the state apart.
    fn into_parts(self) -> Result<Parts, Error>;
    /// Puts a state back together.
    fn from_parts(parts: Parts) -> Result<Self, Error>;
}

/// One child of a transformed node that runs (or combines) the agent's code.
#[derive(Debug)]
pub struct Copy {
    /// Its identifier.
    pub id: String,
    /// Its state; `Err(Error::DeadAgent)` if it (or all of it) is down.
    pub state: Result<Parts, Error>,
}

/// What a transformation's physical → virtual mapping is given.
#[derive(Debug)]
pub struct Merge<'a> {
    /// The transformed node's identifier.
    pub id: &'a str,
    /// Its transformation's arguments.
    pub args: &'a ovid::latt::Args,
    /// Its copies, in expansion order.
    pub copies: Vec<Copy>,
    /// The snapshot of every physical agent (proxies included) that is up, by identifier.
    pub snapshots: &'a BTreeMap<String, Vec<u8>>,
}

/// The common state of copies that must agree (replicas at quiescence, stateless workers, the
/// single copy behind a channel transformation); copies that are down are left out.
pub fn agree(id: &str, copies: Vec<Copy>) -> Result<Parts, Error> {
    let mut live = Vec::new();
    for copy in copies {
        match copy.state {
            Ok(state) => live.push((copy.id, state)),
            Err(Error::DeadAgent(_)) => {}
            Err(e) => return Err(e),
        }
    }
    let mut live = live.into_iter();
    let (first_id, first) = live
        .next()
        .ok_or_else(|| Error::DeadAgent(id.to_string()))?;
    for (other_id, other) in live {
        if other != first {
            return Err(Error::Invalid(format!(
                "the copies of `{id}` disagree: `{first_id}` and `{other_id}`"
            )));
        }
    }
    Ok(first)
}

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

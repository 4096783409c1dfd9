//! `shard(n, by: field)`: splits an agent into `n` shards, each holding the part of the state
//! whose key field hashes to it, behind ingress proxies (one per sender) and egress proxies
//! (one per shard).

use std::collections::BTreeMap;
use std::sync::Arc;

use ovid::{Context, Error, Payload};
use serde::Serialize;

use crate::expansion::{Args, Expansion, Request, Value, int, string};
use crate::proxy::{self, Hooks, stable_hash};
use crate::spec::{Param, ParamKind, Precondition, Spec, Target};
use crate::state::{Merge, Parts};

/// The signature of `shard`.
pub const SPEC: Spec = Spec {
    name: "shard",
    target: Target::Agent,
    params: &[
        Param {
            name: "n",
            kind: ParamKind::Int { min: 1, max: 1024 },
            positional: true,
            required: true,
            doc: "the number of shards",
        },
        Param {
            name: "by",
            kind: ParamKind::Field,
            positional: true,
            required: true,
            doc: "the message field that picks the shard",
        },
    ],
    preconditions: &[Precondition::KeyedBy("by")],
    summary: "partitions an agent's state by a key field over n shards",
};

/// `shard` in the registry ([`crate::ALL`]).
pub struct ShardTransformation;

impl crate::transformation::Transformation for ShardTransformation {
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

    fn key_fields(&self, args: &Args) -> Vec<String> {
        vec![string(args, "by", "key")]
    }

    /// The union of the shards' keyed state (disjoint: a key in two shards is an error); the
    /// unkeyed rest is the first shard's.
    fn merge(&self, merge: Merge) -> Result<Parts, Error> {
        let mut whole: Option<Parts> = None;
        for copy in merge.copies {
            let part = copy.state?;
            let Some(whole) = whole.as_mut() else {
                whole = Some(part);
                continue;
            };
            for (field, entries) in part.keyed {
                let into = whole.keyed.entry(field.clone()).or_default();
                for (k, v) in entries {
                    if into.insert(k, v).is_some() {
                        return Err(Error::Invalid(format!(
                            "a key of `{field}` is held by two shards of `{}` (one is `{}`)",
                            merge.id, copy.id
                        )));
                    }
                }
            }
        }
        whole.ok_or_else(|| Error::DeadAgent(merge.id.to_string()))
    }

    /// Each keyed entry goes to the shard its key hashes to; every shard gets the unkeyed rest.
    fn split(&self, _args: &Args, state: Parts, copies: &[String]) -> Vec<Parts> {
        let n = copies.len().max(1);
        let mut shards = vec![Parts::new(state.rest.clone()); n];
        for (field, entries) in state.keyed {
            for shard in shards.iter_mut() {
                shard.keyed.entry(field.clone()).or_default();
            }
            for (k, v) in entries {
                let j = pick(proxy::fnv1a(&k), n);
                shards[j]
                    .keyed
                    .entry(field.clone())
                    .or_default()
                    .insert(k, v);
            }
        }
        shards.truncate(copies.len());
        shards
    }
}

/// Shards `KVS` into `KVS/Shard0..n-1`; each sender `i` gets an ingress proxy
/// `KVS/ShardIngressProxy{i}` that picks the shard by hashing the key field, and each shard an
/// egress proxy `KVS/ShardEgressProxy{j}` that stands in for all senders towards it and routes
/// replies back.
pub fn expand(req: &Request) -> Expansion {
    let n = int(req.args, "n", 1);
    let by = string(req.args, "by", "key");
    let mut e = Expansion::default();
    let egress: Vec<String> = (0..n)
        .map(|j| format!("{}/ShardEgressProxy{j}", req.id))
        .collect();
    for (i, s) in req.senders.iter().enumerate() {
        let id = format!("{}/ShardIngressProxy{i}", req.id);
        let config = Args::from([
            ("by".to_string(), Value::Str(by.clone())),
            ("sender".to_string(), Value::Str(s.clone())),
        ]);
        e.proxy(id.clone(), "ShardIngressProxy", config, egress.clone());
        e.entry.insert(s.clone(), id);
    }
    for (j, eg) in egress.iter().enumerate() {
        let shard = format!("{}/Shard{j}", req.id);
        e.proxy(
            eg.clone(),
            "ShardEgressProxy",
            Args::new(),
            vec![shard.clone()],
        );
        e.copy(shard);
    }
    e
}

/// The proxy agents of this transformation, by kind: `ShardIngressProxy` (reads the key
/// through `hooks`) and `ShardEgressProxy`.
pub fn proxies(hooks: &Arc<dyn Hooks>) -> Vec<(&'static str, ovid::Factory)> {
    let hooks = hooks.clone();
    vec![
        (
            "ShardIngressProxy",
            proxy::factory(move |args| {
                let targets = proxy::ids(args, "targets");
                if targets.is_empty() {
                    return Err(proxy::bad_config(
                        "ShardIngressProxy",
                        "no shards to send to",
                    ));
                }
                let misroute = std::env::var(INJECT_FAULT).is_ok_and(|f| f == MISROUTE);
                if misroute {
                    tracing::warn!(
                        "{INJECT_FAULT}={MISROUTE}: this ingress proxy deliberately sends every other message to the wrong shard"
                    );
                }
                Ok(ShardIngressProxy {
                    by: string(args, "by", "key"),
                    targets,
                    hooks: hooks.clone(),
                    misroute,
                    sent: 0,
                })
            }),
        ),
        (
            "ShardEgressProxy",
            proxy::factory(|args| {
                Ok(ShardEgressProxy {
                    target: proxy::one_target(args, "ShardEgressProxy")?,
                })
            }),
        ),
    ]
}

/// Stands in for the sharded agent towards one sender: sends each message to the shard its key
/// hashes to (through that shard's egress proxy), as if the sender had sent it there, so the
/// shard replies straight to the sender.
pub struct ShardIngressProxy {
    by: String,
    targets: Vec<String>,
    hooks: Arc<dyn Hooks>,
    /// The deliberately broken variant (see [`INJECT_FAULT`]).
    misroute: bool,
    sent: u64,
}

/// The environment variable that turns on a deliberately broken variant of a proxy, so that
/// tests can show `ovidc test` catches a transformation that does not implement its agent.
/// Never set it in production.
pub const INJECT_FAULT: &str = "OVID_INJECT_FAULT";

/// `OVID_INJECT_FAULT=shard-misroute`: the ingress proxies send every other message to the
/// next shard instead of the key's.
pub const MISROUTE: &str = "shard-misroute";

impl ovid::Agent for ShardIngressProxy {
    fn on_message(&mut self, ctx: &mut Context, message: Payload) -> Result<(), Error> {
        let Some(hash) = self.hooks.key_hash(&self.by, &message) else {
            let why = format!(
                "message `{}` has no key field `{}`",
                message.name(),
                self.by
            );
            return Err(proxy::rejected("ShardIngressProxy", why));
        };
        let mut shard = pick(hash, self.targets.len());
        if self.misroute {
            self.sent += 1;
            if self.sent.is_multiple_of(2) {
                shard = (shard + 1) % self.targets.len();
            }
        }
        let from = ctx.sender_id().unwrap_or_else(|| ctx.me().into());
        let tag = ctx.tag();
        ctx.forward(&self.targets[shard], from, tag, message);
        Ok(())
    }
}

/// Stands in for every sender towards one shard: passes each message on unchanged, keeping its
/// original sender and tag.
pub struct ShardEgressProxy {
    target: String,
}

impl ovid::Agent for ShardEgressProxy {
    fn on_message(&mut self, ctx: &mut Context, message: Payload) -> Result<(), Error> {
        let from = ctx.sender_id().unwrap_or_else(|| ctx.me().into());
        let tag = ctx.tag();
        ctx.forward(&self.target, from, tag, message);
        Ok(())
    }
}

/// The shard (`0..n`) that a key hash goes to: what the ingress proxies and [`split`] agree on.
pub fn pick(hash: u64, n: usize) -> usize {
    if n == 0 {
        0
    } else {
        (hash % n as u64) as usize
    }
}

/// The shard (`0..n`) that holds `key`: [`pick`] of its [`stable_hash`]. A generated system's
/// [`Hooks::key_hash`] must hash the key field with the same type as the state's map keys.
pub fn shard_of<K: Serialize + ?Sized>(key: &K, n: usize) -> usize {
    pick(stable_hash(key), n)
}

/// Refinement mapping, physical → virtual: the virtual agent's keyed map is the union of the
/// shards' maps (they are disjoint, each key living in the shard it hashes to).
pub fn merge<K: Ord, V>(shards: impl IntoIterator<Item = BTreeMap<K, V>>) -> BTreeMap<K, V> {
    let mut all = BTreeMap::new();
    for shard in shards {
        all.extend(shard);
    }
    all
}

/// Refinement mapping, virtual → physical: splits the virtual agent's keyed map over `n`
/// shards, each key going to [`shard_of`] it (what state transfer does when sharding a live
/// agent).
pub fn split<K: Serialize + Ord, V>(map: BTreeMap<K, V>, n: usize) -> Vec<BTreeMap<K, V>> {
    let mut shards: Vec<BTreeMap<K, V>> = (0..n.max(1)).map(|_| BTreeMap::new()).collect();
    for (k, v) in map {
        let j = shard_of(&k, shards.len());
        shards[j].insert(k, v);
    }
    shards
}

/// The keys held by a shard they do not hash to, as `(shard, key)`: empty when the physical
/// state is a faithful partition (the invariant behind [`merge`]).
pub fn misplaced<K: Serialize + Ord, V>(shards: &[BTreeMap<K, V>]) -> Vec<(usize, &K)> {
    let n = shards.len();
    shards
        .iter()
        .enumerate()
        .flat_map(|(j, m)| {
            m.keys()
                .filter(move |k| shard_of(*k, n) != j)
                .map(move |k| (j, k))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_then_merge_is_the_identity_and_keys_land_where_they_hash() {
        let map: BTreeMap<String, u32> = (0..500).map(|i| (format!("key-{i}"), i)).collect();
        for n in [1, 2, 3, 7] {
            let shards = split(map.clone(), n);
            assert_eq!(shards.len(), n);
            assert!(misplaced(&shards).is_empty());
            assert!(
                shards.iter().all(|s| !s.is_empty()),
                "500 keys reach every one of {n} shards"
            );
            assert_eq!(merge(shards), map);
        }
        // A key and the same text as a `&str` hash alike: the hooks may hash either.
        assert_eq!(shard_of("key-3", 7), shard_of(&"key-3".to_string(), 7));
    }

    #[test]
    fn a_misplaced_key_is_found() {
        let mut shards = split(BTreeMap::from([(1u64, "a"), (2, "b"), (3, "c")]), 2);
        let k = *shards[0]
            .keys()
            .next()
            .or_else(|| shards[1].keys().next())
            .unwrap();
        let from = shard_of(&k, 2);
        let v = shards[from].remove(&k).unwrap();
        shards[1 - from].insert(k, v);
        assert_eq!(misplaced(&shards), vec![(1 - from, &k)]);
    }
}

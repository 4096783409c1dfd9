//! Expansion: the checked model → the LATT (Logical Agent Transformation Tree), the physical
//! agents at its leaves and the agent routing tables between them.
//!
//! The root is the system; its children are the agents as written (one per instance element)
//! and the transformed channels. Each transformation of a pipeline replaces a node by the
//! physical children its standard-library rule names; later transformations apply to each
//! copy of the agent. An agent without transformations is its own physical agent.
//!
//! Order matters only in one place: which physical agents send to a node decides its ingress
//! proxies, so the copies that run each agent's code are found first (they do not depend on
//! who sends to them), then transformed channels, then agents.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use ovid::deployment::{AgentSpec, Runs};
use ovid::latt::{LattNode, NodeKind, Transform};
use ovid_stdlib::expansion::{Request, Role, Value};
use serde::Serialize;

use crate::check::model::{InstanceInfo, Model, PipelineTargetInfo, TransformInfo, instance_name};

/// The result of expansion.
#[derive(Debug, Clone, Serialize)]
pub struct Expanded {
    /// The system's name.
    pub system: String,
    /// The tree, rooted at the system.
    pub latt: LattNode,
    /// The leaves, not yet placed in boxes.
    pub agents: Vec<AgentSpec>,
    /// The agent routing tables: physical agent → (identifier it uses → physical identifier).
    /// Every key is a prefix of its value.
    pub routes: BTreeMap<String, BTreeMap<String, String>>,
}

/// Why a model cannot be expanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExpandError {
    /// The program declares no system.
    NoSystem,
}

impl std::fmt::Display for ExpandError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExpandError::NoSystem => write!(
                f,
                "the program declares no system; add `system Name {{ instance .. }}`"
            ),
        }
    }
}

impl std::error::Error for ExpandError {}

/// The expansion of one node: its subtree and how to reach it.
struct Node {
    latt: LattNode,
    leaves: Vec<AgentSpec>,
    /// Physical sender → the physical agent that receives for this node from it.
    entry: BTreeMap<String, String>,
    /// Leaves that run the agent's code.
    copies: Vec<String>,
    /// Proxy leaf → (identifier → physical), for its targets.
    routes: BTreeMap<String, BTreeMap<String, String>>,
    /// Proxies whose routes a nested channel chain set (the stage's own routes leave them be).
    nested_ends: Vec<String>,
}

/// What the bottom of a chain of transformations is.
#[derive(Clone, Copy)]
enum Bottom<'a> {
    /// The agent's code, of this type.
    Agent(&'a str),
    /// A channel: what reaches the bottom goes on to the receiving agent.
    Forward,
}

/// Expands node `id` by `transforms` for `senders`.
fn expand_node(id: &str, transforms: &[TransformInfo], senders: &[String], bottom: Bottom) -> Node {
    let Some((first, rest)) = transforms.split_first() else {
        return match bottom {
            Bottom::Agent(agent) => Node {
                latt: LattNode {
                    id: id.to_string(),
                    kind: NodeKind::Agent {
                        agent: agent.to_string(),
                    },
                    children: Vec::new(),
                },
                leaves: vec![AgentSpec {
                    id: id.to_string(),
                    in_box: String::new(),
                    runs: Runs::Agent {
                        agent: agent.to_string(),
                    },
                    bindings: BTreeMap::new(),
                }],
                entry: senders
                    .iter()
                    .map(|s| (s.clone(), id.to_string()))
                    .collect(),
                copies: vec![id.to_string()],
                routes: BTreeMap::new(),
                nested_ends: Vec::new(),
            },
            // The senders of a forwarded bottom are the last proxies of the channel; the
            // caller routes them to the receiving agent.
            Bottom::Forward => Node {
                latt: LattNode {
                    id: id.to_string(),
                    kind: NodeKind::Channel {
                        transform: Transform::default(),
                    },
                    children: Vec::new(),
                },
                leaves: Vec::new(),
                entry: BTreeMap::new(),
                copies: senders.to_vec(),
                routes: BTreeMap::new(),
                nested_ends: Vec::new(),
            },
        };
    };
    let transformation =
        ovid_stdlib::lookup(&first.name).expect("the checker admits only known transformations");
    let transform = first.transform();
    let request = Request {
        id,
        senders,
        args: &transform.args,
    };
    let exp = transformation.expand(&request);
    let faults = transformation.faults(&request, &exp);

    let copy_ids: Vec<&str> = exp
        .children
        .iter()
        .filter(|c| c.role == Role::Copy)
        .map(|c| c.id.as_str())
        .collect();
    let mut node = Node {
        latt: LattNode {
            id: id.to_string(),
            kind: match bottom {
                Bottom::Agent(agent) => NodeKind::Transformed {
                    agent: agent.to_string(),
                    transform,
                    faults,
                },
                Bottom::Forward => NodeKind::Channel { transform },
            },
            children: Vec::new(),
        },
        leaves: Vec::new(),
        entry: BTreeMap::new(),
        copies: Vec::new(),
        routes: BTreeMap::new(),
        nested_ends: Vec::new(),
    };
    let mut sub_entries: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for child in &exp.children {
        match &child.role {
            Role::Proxy { proxy, config } => {
                node.latt.children.push(LattNode {
                    id: child.id.clone(),
                    kind: NodeKind::Proxy {
                        proxy: proxy.to_string(),
                    },
                    children: Vec::new(),
                });
                node.leaves.push(AgentSpec {
                    id: child.id.clone(),
                    in_box: String::new(),
                    runs: Runs::Proxy {
                        proxy: proxy.to_string(),
                        config: config.clone(),
                    },
                    bindings: BTreeMap::new(),
                });
            }
            Role::Copy => {
                let child_senders: Vec<String> = exp
                    .sends
                    .iter()
                    .filter(|(_, targets)| targets.contains(&child.id))
                    .map(|(p, _)| p.clone())
                    .collect();
                if matches!(bottom, Bottom::Forward)
                    && !rest.is_empty()
                    && let Some(pairs) = encoder_pairs(&exp.sends, &child_senders)
                {
                    nest_in_channel(&mut node, &child.id, rest, &pairs);
                    continue;
                }
                let sub = expand_node(&child.id, rest, &child_senders, bottom);
                // A forwarded bottom is no node of its own: the chain ends there.
                if matches!(bottom, Bottom::Agent(_)) || !rest.is_empty() {
                    node.latt.children.push(sub.latt);
                }
                node.leaves.extend(sub.leaves);
                node.copies.extend(sub.copies);
                node.routes.extend(sub.routes);
                sub_entries.insert(child.id.clone(), sub.entry);
            }
        }
    }
    for (proxy, targets) in &exp.sends {
        if node.nested_ends.contains(proxy) {
            continue;
        }
        let table = node.routes.entry(proxy.clone()).or_default();
        for t in targets {
            let physical = if copy_ids.contains(&t.as_str()) {
                match sub_entries.get(t).and_then(|e| e.get(proxy)) {
                    Some(p) => p.clone(),
                    // The end of a channel: the caller routes it to the receiver.
                    None if matches!(bottom, Bottom::Forward) => continue,
                    None => t.clone(),
                }
            } else {
                t.clone()
            };
            table.insert(t.clone(), physical);
        }
    }
    for (sender, child) in &exp.entry {
        let physical = match sub_entries.get(child) {
            Some(e) => e.get(sender).cloned().unwrap_or_else(|| child.clone()),
            None => child.clone(),
        };
        node.entry.insert(sender.clone(), physical);
    }
    node
}

/// For a channel stage made of encoder → decoder pairs: each decoder (a proxy sending to the
/// copy) with the encoder that sends to it alone; `None` if the stage is not made of pairs.
fn encoder_pairs(
    sends: &BTreeMap<String, Vec<String>>,
    decoders: &[String],
) -> Option<Vec<(String, String)>> {
    decoders
        .iter()
        .map(|dec| {
            sends
                .iter()
                .find(|(_, t)| t.len() == 1 && t[0] == *dec)
                .map(|(enc, _)| (enc.clone(), dec.clone()))
        })
        .collect()
}

/// On a channel, the rest of a pipeline wraps the channel *between* each encoder and its
/// decoder (so `batch(64) |> compress` compresses whole batches): expands the copy for the
/// encoders as senders, points each encoder at the nested chain's entry and each end of the
/// nested chain at the decoder. The decoders stay the last proxies of this level.
fn nest_in_channel(
    node: &mut Node,
    copy: &str,
    rest: &[TransformInfo],
    pairs: &[(String, String)],
) {
    let encoders: Vec<String> = pairs.iter().map(|(e, _)| e.clone()).collect();
    let sub = expand_node(copy, rest, &encoders, Bottom::Forward);
    node.latt.children.push(sub.latt);
    node.leaves.extend(sub.leaves);
    node.routes.extend(sub.routes);
    let mut retarget: BTreeMap<String, String> = BTreeMap::new();
    for (k, (enc, dec)) in pairs.iter().enumerate() {
        let first = sub.entry.get(enc).cloned().unwrap_or_else(|| dec.clone());
        retarget.insert(enc.clone(), first);
        if let Some(last) = sub.copies.get(k) {
            retarget.insert(last.clone(), dec.clone());
        }
        node.copies.push(dec.clone());
    }
    for leaf in node.leaves.iter_mut() {
        let Some(to) = retarget.get(&leaf.id) else {
            continue;
        };
        if let Runs::Proxy { config, .. } = &mut leaf.runs {
            config.insert("targets".to_string(), Value::List(vec![to.clone()]));
        }
        node.routes
            .insert(leaf.id.clone(), BTreeMap::from([(to.clone(), to.clone())]));
    }
    node.nested_ends.extend(retarget.into_keys());
}

/// A transformed channel from one sender element to one receiver element.
struct ChannelPlan {
    to: String,
    node: Node,
    /// The proxies at the receiving end of the chain (they send to the receiver).
    last: Vec<String>,
}

/// The element identifiers of `inst` that a pipeline on `target` (`client` or `client[2]`)
/// transforms; only the named element of an array, so `x[i] |> ..` for every `i` of a large
/// array does not list the whole array each time.
fn targeted(inst: &InstanceInfo, target: &str) -> Vec<String> {
    if inst.name == target {
        return inst.identifiers();
    }
    let index = target
        .strip_prefix(inst.name.as_str())
        .and_then(|r| r.strip_prefix('['))
        .and_then(|r| r.strip_suffix(']'))
        .and_then(|r| r.parse::<u32>().ok());
    match (index, inst.count) {
        (Some(i), Some(n)) if i < n && format!("{}[{i}]", inst.name) == target => {
            vec![target.to_string()]
        }
        _ => Vec::new(),
    }
}

/// Expands a checked model.
///
/// Every lookup by identifier goes through a map built once, so expansion grows linearly with
/// the number of instances, bindings and pipelines.
pub fn expand(model: &Model) -> Result<Expanded, ExpandError> {
    let system = model.system.as_ref().ok_or(ExpandError::NoSystem)?;
    let mut by_name: HashMap<&str, Vec<&InstanceInfo>> = HashMap::new();
    for inst in &system.instances {
        by_name.entry(inst.name.as_str()).or_default().push(inst);
    }
    // Agent pipelines by element id (a pipeline on an array applies to every element).
    let mut agent_pipes: BTreeMap<String, &[TransformInfo]> = BTreeMap::new();
    // Channel pipelines by (sender, receiver) as written, with their place in the source: of
    // two that apply to one channel, the first written wins.
    let mut channel_pipes: HashMap<(&str, &str), (usize, &[TransformInfo])> = HashMap::new();
    for (k, p) in system.pipelines.iter().enumerate() {
        match &p.target {
            PipelineTargetInfo::Agent(a) => {
                for inst in by_name.get(instance_name(a)).into_iter().flatten() {
                    for id in targeted(inst, a) {
                        agent_pipes.insert(id, &p.transforms);
                    }
                }
            }
            PipelineTargetInfo::Channel(f, t) => {
                channel_pipes
                    .entry((f.as_str(), t.as_str()))
                    .or_insert((k, &p.transforms));
            }
        }
    }
    let elements: Vec<(String, &str, &BTreeMap<String, String>)> = system
        .instances
        .iter()
        .flat_map(|i| {
            i.identifiers()
                .into_iter()
                .map(move |id| (id, i.agent.as_str(), &i.bindings))
        })
        .collect();
    let transforms_of = |id: &str| agent_pipes.get(id).copied().unwrap_or(&[]);

    // 1. The copies that run each element's code.
    let copies: BTreeMap<String, Vec<String>> = elements
        .iter()
        .map(|(id, agent, _)| {
            (
                id.clone(),
                expand_node(id, transforms_of(id), &[], Bottom::Agent(agent)).copies,
            )
        })
        .collect();

    // 2. Transformed channels, for every sender element bound to a receiver element. A
    // channel pipeline names each end as the element or its whole array.
    let channel_pipe = |from: &str, to: &str| {
        let (froms, tos) = ([from, instance_name(from)], [to, instance_name(to)]);
        froms
            .iter()
            .flat_map(|f| tos.iter().map(move |t| (*f, *t)))
            .filter_map(|key| channel_pipes.get(&key))
            .min_by_key(|(k, _)| *k)
            .map(|(_, transforms)| *transforms)
    };
    let mut channels: Vec<ChannelPlan> = Vec::new();
    // (sender, receiver) → its plan in `channels`.
    let mut channel_at: HashMap<(&str, &str), usize> = HashMap::new();
    for (from_id, _, bindings) in &elements {
        for to_id in bindings.values() {
            let Some(transforms) = channel_pipe(from_id, to_id) else {
                continue;
            };
            let Entry::Vacant(slot) = channel_at.entry((from_id.as_str(), to_id.as_str())) else {
                continue;
            };
            slot.insert(channels.len());
            let node = expand_node(
                &format!("{to_id}/{from_id}"),
                transforms,
                &copies[from_id],
                Bottom::Forward,
            );
            let last = node.copies.clone();
            channels.push(ChannelPlan {
                to: to_id.clone(),
                node,
                last,
            });
        }
    }
    let channel = |from: &str, to: &str| channel_at.get(&(from, to)).map(|&k| &channels[k]);

    // 3. Agents, with the physical agents that send to each. Senders by receiver, each
    // sender once however many of its bindings name the receiver.
    let mut senders_of: HashMap<&str, Vec<&str>> = HashMap::new();
    for (from_id, _, bindings) in &elements {
        let targets: BTreeSet<&str> = bindings.values().map(String::as_str).collect();
        for t in targets {
            senders_of.entry(t).or_default().push(from_id);
        }
    }
    let mut nodes: BTreeMap<String, Node> = BTreeMap::new();
    for (id, agent, _) in &elements {
        let mut senders: Vec<String> = Vec::new();
        for from_id in senders_of.get(id.as_str()).into_iter().flatten() {
            match channel(from_id, id) {
                Some(c) => senders.extend(c.last.iter().cloned()),
                None => senders.extend(copies[*from_id].iter().cloned()),
            }
        }
        senders.sort();
        senders.dedup();
        nodes.insert(
            id.clone(),
            expand_node(id, transforms_of(id), &senders, Bottom::Agent(agent)),
        );
    }

    // 4. Routing tables: a sender reaches an element through the physical agent that the
    // element's expansion put there for it (its ingress proxy, or the element itself).
    let entry_of: BTreeMap<String, BTreeMap<String, String>> = nodes
        .iter()
        .map(|(id, n)| (id.clone(), n.entry.clone()))
        .collect();
    let reach = |target: &str, sender: &str| {
        entry_of
            .get(target)
            .and_then(|e| e.get(sender))
            .cloned()
            .unwrap_or_else(|| target.to_string())
    };
    let mut routes: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut agents: Vec<AgentSpec> = Vec::new();
    let mut children: Vec<LattNode> = Vec::new();
    for (id, _, bindings) in &elements {
        let node = nodes.remove(id).expect("every element was expanded");
        for mut leaf in node.leaves {
            if matches!(leaf.runs, Runs::Agent { .. }) {
                leaf.bindings = (*bindings).clone();
                let table = routes.entry(leaf.id.clone()).or_default();
                for target in bindings.values() {
                    let physical = match channel(id, target) {
                        Some(c) => c
                            .node
                            .entry
                            .get(&leaf.id)
                            .cloned()
                            .unwrap_or_else(|| target.clone()),
                        None => reach(target, &leaf.id),
                    };
                    table.insert(target.clone(), physical);
                }
            }
            agents.push(leaf);
        }
        for (proxy, table) in node.routes {
            routes.entry(proxy).or_default().extend(table);
        }
        children.push(node.latt);
    }
    for c in channels {
        for (proxy, table) in c.node.routes {
            routes.entry(proxy).or_default().extend(table);
        }
        for l in &c.last {
            routes
                .entry(l.clone())
                .or_default()
                .insert(c.to.clone(), reach(&c.to, l));
        }
        // The last proxies of the chain send to the receiver: where the expansion named the
        // end of the channel (a copy that is no agent), they name the receiver instead.
        let real: Vec<String> = c.node.leaves.iter().map(|l| l.id.clone()).collect();
        let mut leaves = c.node.leaves;
        for leaf in leaves.iter_mut().filter(|l| c.last.contains(&l.id)) {
            if let Runs::Proxy { config, .. } = &mut leaf.runs
                && let Some(Value::List(targets)) = config.get_mut("targets")
            {
                for t in targets.iter_mut().filter(|t| !real.contains(t)) {
                    *t = c.to.clone();
                }
            }
        }
        agents.extend(leaves);
        children.push(c.node.latt);
    }
    routes.retain(|_, t| !t.is_empty());
    Ok(Expanded {
        system: system.name.clone(),
        latt: LattNode::system(system.name.clone(), children),
        agents,
        routes,
    })
}

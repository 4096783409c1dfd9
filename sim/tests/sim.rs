//! The simulator behind `<bin> test` on hand-built systems: a key-value store untransformed,
//! sharded behind hand-written proxies, and replicated behind a hand-written sequencer (so that
//! boxes may crash); then deliberately broken transformations that the checker must catch, name,
//! and reproduce from the printed seed and schedule.

use bytes::Bytes;
use ovid::{Agent, BoxBuilder, Context, Error, LattNode, Message, Payload};
use ovid_sim::System;
use ovid_sim::{
    FaultKind, Faults, Options, Property, Refine, Report, Rng, Scenario, Target, run_scenario,
    test_system,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

// ----- the agent under test -------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Message)]
struct Put {
    key: String,
    value: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Message)]
struct PutOk {
    key: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Message)]
struct Get {
    key: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Message)]
struct GetOk {
    key: String,
    value: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct KeyValueStore {
    store: BTreeMap<String, String>,
}

#[ovid::agent]
impl KeyValueStore {
    fn on_put(&mut self, _ctx: &mut Context, put: Put) -> PutOk {
        self.store.insert(put.key.clone(), put.value);
        PutOk { key: put.key }
    }

    fn on_get(&mut self, _ctx: &mut Context, get: Get) -> GetOk {
        GetOk {
            value: self.store.get(&get.key).cloned(),
            key: get.key,
        }
    }
}

/// Requests over three keys, so that operations collide.
fn request(rng: &mut Rng) -> Payload {
    let key = format!("k{}", rng.below(3));
    if rng.chance(50) {
        Payload::new(Put {
            key,
            value: format!("v{}", rng.below(10)),
        })
    } else {
        Payload::new(Get { key })
    }
}

fn key_of(payload: &Payload) -> Option<String> {
    payload
        .peek::<Put>()
        .map(|p| p.key.clone())
        .or_else(|| payload.peek::<Get>().map(|g| g.key.clone()))
}

fn hash(key: &str) -> usize {
    key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    }) as usize
}

fn config(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes).unwrap_or(serde_json::Value::Null)
}

fn strings(v: &serde_json::Value, name: &str) -> Vec<String> {
    v[name]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn mode(v: &serde_json::Value) -> String {
    v["mode"].as_str().unwrap_or("ok").to_string()
}

// ----- a hand-written shard proxy ---------------------------------------------------------

/// Stands in for the sharded store towards one sender: forwards each request to the shard its
/// key hashes to, as if the sender had sent it there. Broken on purpose in some modes.
struct ShardIngress {
    targets: Vec<String>,
    mode: String,
}

impl Agent for ShardIngress {
    fn on_message(&mut self, ctx: &mut Context, message: Payload) -> Result<(), Error> {
        let key = key_of(&message).ok_or_else(|| Error::Invalid("no key".into()))?;
        let sender = ctx.sender_id().expect("a sender");
        let tag = ctx.tag();
        let is_put = message.is::<Put>();
        let n = self.targets.len();
        let shard = match self.mode.as_str() {
            // Gets look in the shard of another key.
            "wrong_key" if !is_put => hash(&format!("{key}!")) % n,
            _ => hash(&key) % n,
        };
        match self.mode.as_str() {
            // Acknowledges a Put before the store has it; the store's own reply comes back here.
            "early_ack" if is_put => {
                ctx.reply(PutOk { key });
                let me = ctx.me().into();
                ctx.forward(&self.targets[shard], me, tag, message);
            }
            // Acknowledges a Put itself, and lets the store acknowledge it too.
            "twice" if is_put => {
                ctx.reply(PutOk { key });
                ctx.forward(&self.targets[shard], sender, tag, message);
            }
            "panic" if key == "k2" && !is_put => panic!("no Get for k2"),
            // Loses every Put of one key: nobody ever answers it.
            "drop" if key == "k1" && is_put => {}
            _ => ctx.forward(&self.targets[shard], sender, tag, message),
        }
        Ok(())
    }
}

// ----- a hand-written replication ---------------------------------------------------------

/// Ingress → replica proxies: apply this command at this index of the log.
#[derive(Debug, Clone, Serialize, Deserialize, Message)]
struct Cmd {
    index: u64,
    name: String,
    bytes: Vec<u8>,
}

/// Replica proxy → ingress: the answer to the command at `index`.
#[derive(Debug, Clone, Serialize, Deserialize, Message)]
struct Done {
    index: u64,
    name: String,
    bytes: Vec<u8>,
}

/// Replica proxy → ingress: I (re)started; send me the log.
#[derive(Debug, Clone, Serialize, Deserialize, Message)]
struct Hello {}

/// The sequencer in front of the replicas: it numbers requests, sends each to every replica
/// proxy, and passes the first answer back. It never crashes (it is not replicated), so it keeps
/// the whole log, and sends it to a replica proxy that restarts. In mode `stale_reads` a Get
/// skips the log and is answered by replica 0 from whatever it holds.
struct Sequencer {
    proxies: Vec<String>,
    log: Vec<(String, u64, String, Vec<u8>)>,
    answered: BTreeSet<u64>,
    mode: String,
}

impl Agent for Sequencer {
    fn on_message(&mut self, ctx: &mut Context, message: Payload) -> Result<(), Error> {
        if message.is::<Done>() {
            let done = message.decode::<Done>()?;
            if self.answered.insert(done.index) {
                let (client, tag, _, _) = &self.log[done.index as usize];
                let me = ctx.me().into();
                let reply = Payload::Encoded {
                    name: done.name.as_str().into(),
                    bytes: Bytes::from(done.bytes),
                };
                ctx.forward_physical(client, me, *tag, reply);
            }
            return Ok(());
        }
        if message.is::<Hello>() {
            let to = ctx.sender().to_string();
            for (index, (_, _, name, bytes)) in self.log.iter().enumerate() {
                ctx.send(
                    &to,
                    Cmd {
                        index: index as u64,
                        name: name.clone(),
                        bytes: bytes.clone(),
                    },
                );
            }
            return Ok(());
        }
        let sender = ctx.sender().to_string();
        if self.mode == "stale_reads" && message.is::<Get>() {
            let from = ctx.sender_id().expect("a sender");
            let tag = ctx.tag();
            ctx.forward(&self.proxies[0], from, tag, message);
            return Ok(());
        }
        let index = self.log.len() as u64;
        let (name, bytes) = (message.name().to_string(), message.to_bytes()?.to_vec());
        self.log
            .push((sender, ctx.tag(), name.clone(), bytes.clone()));
        for p in &self.proxies {
            ctx.send(
                p,
                Cmd {
                    index,
                    name: name.clone(),
                    bytes: bytes.clone(),
                },
            );
        }
        Ok(())
    }
}

/// One replica's proxy: applies the log in order to its replica (the store, unchanged) and
/// reports each answer to the sequencer; on start it asks for the log.
#[derive(Default, Serialize, Deserialize)]
struct ReplicaProxy {
    replica: String,
    ingress: String,
    next: u64,
    waiting: BTreeMap<u64, (String, Vec<u8>)>,
}

impl ReplicaProxy {
    fn apply_ready(&mut self, ctx: &mut Context) {
        while let Some((name, bytes)) = self.waiting.remove(&self.next) {
            let me = ctx.me().into();
            let payload = Payload::Encoded {
                name: name.as_str().into(),
                bytes: Bytes::from(bytes),
            };
            ctx.forward_physical(&self.replica, me, self.next + 1, payload);
            self.next += 1;
        }
    }
}

impl Agent for ReplicaProxy {
    fn on_start(&mut self, ctx: &mut Context) {
        let ingress = self.ingress.clone();
        ctx.send(&ingress, Hello {});
    }

    fn on_message(&mut self, ctx: &mut Context, message: Payload) -> Result<(), Error> {
        if message.is::<Cmd>() {
            let cmd = message.decode::<Cmd>()?;
            if cmd.index >= self.next {
                self.waiting.insert(cmd.index, (cmd.name, cmd.bytes));
            }
            self.apply_ready(ctx);
        } else if ctx.sender() == self.replica {
            // The replica's answer to the command tagged index + 1.
            let index = ctx.tag() - 1;
            let done = Done {
                index,
                name: message.name().to_string(),
                bytes: message.to_bytes()?.to_vec(),
            };
            let ingress = self.ingress.clone();
            ctx.send(&ingress, done);
        } else {
            // A read sent straight here (stale_reads): the replica answers the client.
            let from = ctx.sender_id().expect("a sender");
            let tag = ctx.tag();
            let replica = self.replica.clone();
            ctx.forward_physical(&replica, from, tag, message);
        }
        Ok(())
    }

    fn snapshot(&self) -> Result<Vec<u8>, Error> {
        postcard::to_stdvec(&self.next).map_err(|e| Error::Snapshot(e.to_string()))
    }
}

// ----- the systems ------------------------------------------------------------------------

fn kinds(b: BoxBuilder) -> BoxBuilder {
    b.kind("KeyValueStore", |_| KeyValueStore::default())
        .kind("ShardIngress", |c| {
            let c = config(c);
            ShardIngress {
                targets: strings(&c, "targets"),
                mode: mode(&c),
            }
        })
        .kind("Sequencer", |c| {
            let c = config(c);
            Sequencer {
                proxies: strings(&c, "proxies"),
                log: Vec::new(),
                answered: BTreeSet::new(),
                mode: mode(&c),
            }
        })
        .kind("ReplicaProxy", |c| {
            let c = config(c);
            ReplicaProxy {
                replica: c["replica"].as_str().unwrap_or("").into(),
                ingress: c["ingress"].as_str().unwrap_or("").into(),
                ..Default::default()
            }
        })
}

fn decode_store(bytes: &[u8]) -> Result<KeyValueStore, Error> {
    postcard::from_bytes(bytes).map_err(|e| Error::Snapshot(e.to_string()))
}

fn encode_store(store: &KeyValueStore) -> Result<Vec<u8>, Error> {
    postcard::to_stdvec(store).map_err(|e| Error::Snapshot(e.to_string()))
}

/// Untransformed: the store is its own physical agent.
fn refine_plain(_node: &LattNode, snapshots: &BTreeMap<String, Vec<u8>>) -> Result<Vec<u8>, Error> {
    snapshots
        .get("KVS")
        .cloned()
        .ok_or_else(|| Error::Snapshot("no KVS".into()))
}

/// Sharded: the union of the shards' maps.
fn refine_shards(
    _node: &LattNode,
    snapshots: &BTreeMap<String, Vec<u8>>,
) -> Result<Vec<u8>, Error> {
    let mut all = KeyValueStore::default();
    for (id, bytes) in snapshots
        .iter()
        .filter(|(id, _)| id.starts_with("KVS/Shard") && !id.contains("Ingress"))
    {
        let shard = decode_store(bytes).map_err(|e| Error::Snapshot(format!("{id}: {e}")))?;
        all.store.extend(shard.store);
    }
    encode_store(&all)
}

/// A wrong mapping: forgets shard 1.
fn refine_forgetful(
    _node: &LattNode,
    snapshots: &BTreeMap<String, Vec<u8>>,
) -> Result<Vec<u8>, Error> {
    let mut s = snapshots.clone();
    s.remove("KVS/Shard1");
    refine_shards(_node, &s)
}

/// Replicated: the replica whose proxy applied the most of the log.
fn refine_replicas(
    _node: &LattNode,
    snapshots: &BTreeMap<String, Vec<u8>>,
) -> Result<Vec<u8>, Error> {
    let mut best: Option<(u64, usize)> = None;
    for i in 0..3 {
        let Some(p) = snapshots.get(&format!("KVS/ReplicaProxy{i}")) else {
            continue;
        };
        let applied: u64 = postcard::from_bytes(p).map_err(|e| Error::Snapshot(e.to_string()))?;
        if best.is_none_or(|(a, _)| applied > a) {
            best = Some((applied, i));
        }
    }
    let (_, i) = best.ok_or_else(|| Error::Snapshot("no replica".into()))?;
    snapshots
        .get(&format!("KVS/Replica{i}"))
        .cloned()
        .ok_or_else(|| Error::Snapshot(format!("no KVS/Replica{i}")))
}

fn target(refine: Refine) -> Target {
    Target {
        id: "KVS".into(),
        spec_kind: "KeyValueStore".into(),
        requests: vec!["Put".into(), "Get".into()],
        request,
        refine,
    }
}

fn plain_targets() -> Vec<Target> {
    vec![target(refine_plain)]
}

fn shard_targets() -> Vec<Target> {
    vec![target(refine_shards)]
}

fn forgetful_targets() -> Vec<Target> {
    vec![target(refine_forgetful)]
}

fn replica_targets() -> Vec<Target> {
    vec![target(refine_replicas)]
}

fn agent(id: &str, in_box: &str, kind: &str) -> serde_json::Value {
    serde_json::json!({"id": id, "box": in_box, "runs": {"kind": "agent", "agent": kind}})
}

fn proxy(id: &str, in_box: &str, kind: &str, config: serde_json::Value) -> serde_json::Value {
    serde_json::json!({"id": id, "box": in_box, "runs": {"kind": "proxy", "proxy": kind, "config": config}})
}

fn client(id: &str, in_box: &str) -> serde_json::Value {
    serde_json::json!({"id": id, "box": in_box, "runs": {"kind": "agent", "agent": "Client"}, "bindings": {"kvs": "KVS"}})
}

fn leaf(id: &str) -> serde_json::Value {
    serde_json::json!({"id": id, "kind": "agent", "agent": "KeyValueStore"})
}

/// A deployment description from its agents (boxes inferred), routes and the KVS node.
fn deployment(
    agents: Vec<serde_json::Value>,
    routes: serde_json::Value,
    kvs: serde_json::Value,
) -> &'static str {
    let mut boxes: Vec<(String, Vec<String>)> = Vec::new();
    for a in &agents {
        let (id, b) = (
            a["id"].as_str().unwrap().to_string(),
            a["box"].as_str().unwrap().to_string(),
        );
        match boxes.iter_mut().find(|(n, _)| *n == b) {
            Some((_, list)) => list.push(id),
            None => boxes.push((b, vec![id])),
        }
    }
    let clients: Vec<String> = agents
        .iter()
        .filter(|a| a["runs"]["agent"] == "Client")
        .map(|a| a["id"].as_str().unwrap().to_string())
        .collect();
    let mut children = vec![kvs];
    children.extend(clients.iter().map(|c| leaf(c)));
    let d = serde_json::json!({
        "system": "Store",
        "boxes": boxes.iter().map(|(n, a)| serde_json::json!({"name": n, "address": null, "agents": a})).collect::<Vec<_>>(),
        "agents": agents,
        "routes": routes,
        "latt": {"id": "Store", "kind": "system", "children": children},
        "clients": clients,
    });
    Box::leak(d.to_string().into_boxed_str())
}

fn plain_system() -> System {
    let d = deployment(
        vec![
            client("client", "front"),
            agent("KVS", "back", "KeyValueStore"),
        ],
        serde_json::json!({"client": {"KVS": "KVS"}}),
        leaf("KVS"),
    );
    System {
        deployment: d,
        kinds,
        targets: plain_targets,
    }
}

/// Two senders, each with its own ingress proxy; two shards on boxes of their own.
fn shard_system(mode: &str, targets: fn() -> Vec<Target>) -> System {
    let shards = serde_json::json!(["KVS/Shard0", "KVS/Shard1"]);
    let d = deployment(
        vec![
            client("c0", "front"),
            client("c1", "side"),
            proxy(
                "KVS/ShardIngressProxy0",
                "front",
                "ShardIngress",
                serde_json::json!({"targets": shards, "mode": mode}),
            ),
            proxy(
                "KVS/ShardIngressProxy1",
                "side",
                "ShardIngress",
                serde_json::json!({"targets": shards, "mode": mode}),
            ),
            agent("KVS/Shard0", "back0", "KeyValueStore"),
            agent("KVS/Shard1", "back1", "KeyValueStore"),
        ],
        serde_json::json!({"c0": {"KVS": "KVS/ShardIngressProxy0"}, "c1": {"KVS": "KVS/ShardIngressProxy1"}}),
        serde_json::json!({"id": "KVS", "kind": "transformed", "agent": "KeyValueStore", "transform": {"name": "shard", "args": {"by": "key", "n": 2}}, "children": [
            leaf("KVS/ShardIngressProxy0"), leaf("KVS/ShardIngressProxy1"), leaf("KVS/Shard0"), leaf("KVS/Shard1")
        ]}),
    );
    System {
        deployment: d,
        kinds,
        targets,
    }
}

/// One sender; a sequencer in its box; three replicas, each with its proxy in a box of its own.
fn replica_system(mode: &str) -> System {
    let proxies = serde_json::json!([
        "KVS/ReplicaProxy0",
        "KVS/ReplicaProxy1",
        "KVS/ReplicaProxy2"
    ]);
    let mut agents = vec![
        client("client", "front"),
        proxy(
            "KVS/ReplicateIngressProxy0",
            "front",
            "Sequencer",
            serde_json::json!({"proxies": proxies, "mode": mode}),
        ),
    ];
    let mut children = vec![leaf("KVS/ReplicateIngressProxy0")];
    let mut groups = serde_json::Map::new();
    for i in 0..3 {
        groups.insert(format!("KVS/ReplicaProxy{i}"), i.into());
        groups.insert(format!("KVS/Replica{i}"), i.into());
        let config = serde_json::json!({"replica": format!("KVS/Replica{i}"), "ingress": "KVS/ReplicateIngressProxy0"});
        agents.push(proxy(
            &format!("KVS/ReplicaProxy{i}"),
            &format!("r{i}"),
            "ReplicaProxy",
            config,
        ));
        agents.push(agent(
            &format!("KVS/Replica{i}"),
            &format!("r{i}"),
            "KeyValueStore",
        ));
        children.push(leaf(&format!("KVS/ReplicaProxy{i}")));
        children.push(leaf(&format!("KVS/Replica{i}")));
    }
    let d = deployment(
        agents,
        serde_json::json!({"client": {"KVS": "KVS/ReplicateIngressProxy0"}}),
        serde_json::json!({"id": "KVS", "kind": "transformed", "agent": "KeyValueStore", "transform": {"name": "replicate", "args": {"n": 3}},
            "faults": {"groups": groups, "tolerates": 1, "churn": true}, "children": children}),
    );
    System {
        deployment: d,
        kinds,
        targets: replica_targets,
    }
}

fn options(seeds: u64, faults: &str) -> Options {
    Options {
        seeds,
        faults: Faults::parse(faults).unwrap(),
        ..Options::default()
    }
}

fn report(system: &System, options: &Options) -> Report {
    test_system(system, options).expect("the simulator runs")
}

/// Checks a failure: its property, that the report names it and the seed, and that both the
/// printed flags and the printed replay string reproduce it exactly.
fn assert_fails_and_replays(system: &System, options: &Options, property: Property) -> Scenario {
    let r = report(system, options);
    assert!(!r.passed(), "expected a failure:\n{}", r.render("store"));
    let t = &r.targets[0];
    let f = t.failure.as_ref().unwrap();
    assert_eq!(f.property, property, "{}", r.render("store"));
    let text = r.render("store");
    assert!(text.contains(&format!("FAIL at seed {}", f.seed)), "{text}");
    assert!(text.contains(&format!("{property} violated")), "{text}");
    assert!(
        text.contains(&format!("--replay '{}'", f.scenario.replay())),
        "{text}"
    );
    assert!(text.contains(&f.scenario.flags()), "{text}");
    assert!(f.scenario.ops <= f.found.ops && f.scenario.events.len() <= f.found.events.len());

    // The replay string.
    let replayed = Scenario::parse_replay(&f.scenario.replay()).unwrap();
    let again = report(
        system,
        &Options {
            replay: Some(replayed),
            ..Options::default()
        },
    );
    let g = again.targets[0]
        .failure
        .as_ref()
        .expect("the replay fails too");
    assert_eq!(
        (g.property, &g.detail, g.seed),
        (f.property, &f.detail, f.seed)
    );

    // The flags: --target --seed --ops --clients --faults --events.
    let s = &f.scenario;
    let flags = Options {
        target: Some(s.target.clone()),
        seed: Some(s.seed),
        ops: s.ops,
        clients: s.clients,
        faults: s.faults,
        events: Some(s.events.clone()),
        ..Options::default()
    };
    let again = report(system, &flags);
    let g = again.targets[0]
        .failure
        .as_ref()
        .expect("the flags fail too");
    assert_eq!(
        (g.property, &g.detail, g.seed),
        (f.property, &f.detail, f.seed)
    );
    f.scenario.clone()
}

// ----- passing ----------------------------------------------------------------------------

#[test]
fn an_untransformed_store_implements_itself() {
    let r = report(&plain_system(), &options(100, "all"));
    let text = r.render("store");
    assert!(r.passed(), "{text}");
    let t = &r.targets[0];
    assert_eq!((t.target.as_str(), t.seeds), ("KVS", 100));
    assert!(t.ops > 100 * 40, "{text}");
    assert!(text.starts_with("KVS: 100 seeds, "), "{text}");
    assert!(text.trim_end().ends_with(": PASS"), "{text}");
    assert!(text.contains("PASS"), "{text}");
    assert!(
        text.contains("no crashes"),
        "the store is not replicated, so no box may crash: {text}"
    );
}

#[test]
fn a_sharded_store_behind_proxies_passes_under_reordering_partitions_and_pauses() {
    let r = report(
        &shard_system("ok", shard_targets),
        &options(100, "delay,reorder,partition,pause"),
    );
    assert!(r.passed(), "{}", r.render("store"));
    assert!(r.targets[0].ops > 100 * 40);
}

#[test]
fn a_replicated_store_passes_with_crashes() {
    let r = report(
        &replica_system("ok"),
        &Options {
            seeds: 60,
            clients: 4,
            faults: Faults::all(),
            ..Options::default()
        },
    );
    let text = r.render("store");
    assert!(r.passed(), "{text}");
    assert!(
        r.targets[0].notes.is_empty(),
        "boxes r0..r2 may crash: {text}"
    );
}

#[test]
fn a_seed_reproduces_its_run_exactly() {
    let system = replica_system("ok");
    let events = ovid_sim::FaultEvent::parse_list(
        "crash(r1)@3+40ms,partition(front|r0)@5+2.5ms,pause(r2)@8+1s",
    )
    .unwrap();
    let scenario = Scenario {
        target: "KVS".into(),
        seed: 7,
        ops: 30,
        clients: 3,
        faults: Faults::all(),
        events,
    };
    let a = run_scenario(&system, &scenario, true).unwrap();
    let b = run_scenario(&system, &scenario, true).unwrap();
    assert!(a.violation.is_none(), "{:?}", a.violation);
    assert!(a.trace.len() > 100);
    assert!(
        a.trace.iter().any(|l| l.contains("box r1 crashes")),
        "{:#?}",
        a.trace
    );
    assert!(
        a.trace
            .iter()
            .any(|l| l.contains("partition 1: front, r0 cut off")),
        "{:#?}",
        a.trace
    );
    assert_eq!(a.trace, b.trace);
    let c = run_scenario(
        &system,
        &Scenario {
            seed: 8,
            ..scenario
        },
        true,
    )
    .unwrap();
    assert_ne!(a.trace, c.trace, "another seed, another run");
}

#[test]
fn crashes_stay_within_what_replication_survives_unless_churn() {
    let system = replica_system("ok");
    let events = ovid_sim::FaultEvent::parse_list(
        "crash(r0)@2+1ms,crash(r1)@2+10ms,crash(r1)@10+1ms,crash(r0)@20+1ms",
    )
    .unwrap();
    let crashes = |faults: &str| {
        let scenario = Scenario {
            target: "KVS".into(),
            seed: 3,
            ops: 30,
            clients: 2,
            faults: Faults::parse(faults).unwrap(),
            events: events.clone(),
        };
        let run = run_scenario(&system, &scenario, true).unwrap();
        assert!(run.violation.is_none(), "{:?}", run.violation);
        run.trace
            .iter()
            .filter(|l| l.contains(" crashes ("))
            .map(|l| l.split_whitespace().nth(2).unwrap().to_string())
            .collect::<Vec<_>>()
    };
    // f = 1: r1 may not crash while r0 is down, nor at all once r0 has crashed in this run...
    assert_eq!(crashes("crash"), ["r0", "r0"]);
    // ...unless churn: then one at a time, any of them.
    assert_eq!(crashes("churn"), ["r0", "r1", "r0"]);
}

#[test]
fn a_replicated_store_whose_sequencer_keeps_the_log_survives_churn() {
    let r = report(
        &replica_system("ok"),
        &options(40, "churn,delay,reorder,partition"),
    );
    assert!(r.passed(), "{}", r.render("store"));
}

// ----- failing ----------------------------------------------------------------------------

#[test]
fn acknowledging_a_put_before_the_store_has_it_is_not_linearizable() {
    let s = assert_fails_and_replays(
        &shard_system("early_ack", shard_targets),
        &options(100, "delay,reorder"),
        Property::Linearizability,
    );
    assert!(s.ops <= 10, "shrunk to a few operations: {s:?}");
}

#[test]
fn routing_gets_by_the_wrong_key_is_caught_without_any_fault() {
    let s = assert_fails_and_replays(
        &shard_system("wrong_key", shard_targets),
        &options(20, "none"),
        Property::Linearizability,
    );
    assert_eq!(s.faults, Faults::none());
    assert!(
        s.ops <= 10,
        "shrunk to the first Get that goes astray: {s:?}"
    );
}

#[test]
fn a_wrong_refinement_mapping_is_caught_at_quiescence() {
    assert_fails_and_replays(
        &shard_system("ok", forgetful_targets),
        &options(20, "reorder"),
        Property::Refinement,
    );
}

#[test]
fn two_replies_to_one_request_are_caught() {
    assert_fails_and_replays(
        &shard_system("twice", shard_targets),
        &options(20, "reorder"),
        Property::OneReply,
    );
}

#[test]
fn a_request_dropped_without_any_crash_is_caught() {
    let system = shard_system("drop", shard_targets);
    let s = assert_fails_and_replays(
        &system,
        &options(20, "reorder,partition"),
        Property::Linearizability,
    );
    let run = run_scenario(&system, &s, false).unwrap();
    let (_, detail) = run.violation.unwrap();
    assert!(
        detail.contains("the system never answered it")
            && detail.contains("no crash could have lost them"),
        "{detail}"
    );
}

#[test]
fn a_panicking_proxy_is_caught() {
    ovid_sim::quiet_agent_panics();
    let s = assert_fails_and_replays(
        &shard_system("panic", shard_targets),
        &options(20, "none"),
        Property::NoPanic,
    );
    assert!(s.ops <= 10 && s.clients == 1, "{s:?}");
}

#[test]
fn reads_from_a_replica_that_restarted_empty_are_stale_and_caught_with_crashes() {
    let system = replica_system("stale_reads");
    // Without crashes replica 0 is never behind (the log and the reads share one FIFO channel).
    let calm = report(&system, &options(30, "delay,reorder"));
    assert!(calm.passed(), "{}", calm.render("store"));
    let s = assert_fails_and_replays(
        &system,
        &Options {
            seeds: 200,
            faults: Faults::parse("crash,delay").unwrap(),
            ..Options::default()
        },
        Property::Linearizability,
    );
    assert!(
        s.events
            .iter()
            .any(|e| matches!(&e.kind, FaultKind::Crash(b) if b == "r0")),
        "the shrunk schedule keeps the crash of r0: {s:?}"
    );
}

#[test]
fn bad_arguments_are_refused() {
    let system = plain_system();
    let e = test_system(
        &system,
        &Options {
            target: Some("Nope".into()),
            ..Options::default()
        },
    )
    .unwrap_err();
    assert!(e.to_string().contains("no target `Nope`"), "{e}");
    let events = ovid_sim::FaultEvent::parse_list("crash(nowhere)@1+5ms").unwrap();
    let e = test_system(
        &system,
        &Options {
            seed: Some(1),
            events: Some(events),
            ..Options::default()
        },
    )
    .unwrap_err();
    assert!(e.to_string().contains("no box `nowhere`"), "{e}");
}

#[test]
fn seeds_run_on_several_threads_give_the_same_report() {
    for (system, faults, passes) in [
        // A pass: every seed's figures add up the same.
        (replica_system("ok"), "delay,reorder,crash", true),
        // A failure: the same first failing seed, shrunk the same.
        (
            shard_system("early_ack", shard_targets),
            "delay,reorder",
            false,
        ),
    ] {
        let one = report(&system, &options(30, faults));
        let four = report(
            &system,
            &Options {
                jobs: 4,
                ..options(30, faults)
            },
        );
        assert_eq!(one.passed(), passes, "{}", one.render("store"));
        assert_eq!(one.render("store"), four.render("store"));
    }
}

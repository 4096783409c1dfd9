//! What a transformation costs: the latency its proxies add to a request, and the throughput
//! batching gains on a stream, each next to the untransformed baseline measured in the same run.
//!
//! ```text
//! cargo bench -p ovid-stdlib --bench transformations
//! ```
//!
//! Latency: an endpoint sends `Put` to `KVS` and waits for `PutOk`, one at a time (2,000 warm-up
//! round trips, then 10,000 timed); p50 of the plain store, then of the store behind each
//! transformation with all agents in one box, and of plain and sharded across two boxes. The
//! added latency per hop is (p50 − baseline p50) / number of proxies on the request's path.
//!
//! Replicated stores: the p50 of a `Put` and of a `Get` round trip (same counts), all agents in
//! one box, for the plain store, `replicate(3)` (consensus: the leader answers once a majority
//! accepted), `primary_backup(3)` and `chain(3)` (a request goes through the head and every
//! member, and the tail answers; a `Get` travels the chain like a `Put`, see stdlib/src/chain).
//!
//! Throughput: 200,000 one-way `Item`s from an endpoint in box `a` to a sink in box `b`, then a
//! `Flush` the sink answers; plain, behind `batch(64, 1ms)`, and behind `batch(64, 1ms)` with
//! `compress(lz4)`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ovid::controller::AgentPlan;
use ovid::{
    BoxBuilder, BoxHandle, Context, Controller, Endpoint, LattNode, Message, Payload, Placement,
};
use ovid_stdlib::expansion::{Args, Expansion, Request, Role, Value};
use ovid_stdlib::proxy::{self, Hooks, stable_hash};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, Message)]
struct Put {
    key: String,
    value: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, Message)]
struct PutOk {
    key: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, Message)]
struct Get {
    key: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, Message)]
struct GetOk {
    value: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Message)]
struct Item {
    n: u64,
    text: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, Message)]
struct Flush {}

#[derive(Debug, Clone, Serialize, Deserialize, Message)]
struct Flushed {
    count: u64,
}

#[derive(Default, Serialize, Deserialize)]
struct Kvs {
    store: BTreeMap<String, String>,
}

#[ovid::agent]
impl Kvs {
    fn on_put(&mut self, _ctx: &mut Context, put: Put) -> PutOk {
        self.store.insert(put.key.clone(), put.value);
        PutOk { key: put.key }
    }

    fn on_get(&mut self, _ctx: &mut Context, get: Get) -> GetOk {
        GetOk {
            value: self.store.get(&get.key).cloned(),
        }
    }
}

#[derive(Default, Serialize, Deserialize)]
struct Sink {
    count: u64,
}

#[ovid::agent]
impl Sink {
    fn on_item(&mut self, _ctx: &mut Context, _item: Item) {
        self.count += 1;
    }

    fn on_flush(&mut self, _ctx: &mut Context, _flush: Flush) -> Flushed {
        Flushed { count: self.count }
    }
}

struct KeyHooks;

impl Hooks for KeyHooks {
    fn key_hash(&self, _by: &str, payload: &Payload) -> Option<u64> {
        payload.peek::<Put>().map(|p| stable_hash(&p.key))
    }
}

/// One transformation of a pipeline: its expansion rule and arguments.
type Stage = (fn(&Request) -> Expansion, Args);

/// The proxies that run near the sender when the system spans two boxes.
const FRONT: &[&str] = &[
    "ShardIngressProxy",
    "LoadBalancer",
    "BatchEncoder",
    "Compressor",
    "Encryptor",
    "Monitor",
    "Auditor",
];

/// A placement of `X` (agent kind `kind`) expanded by `stages` (outermost first; each later
/// stage applies to the copies of the one before), for the sender `client`.
fn placement(kind: &str, stages: &[Stage], two_boxes: bool) -> (Placement, usize) {
    let in_box = |proxy: Option<&str>| {
        if two_boxes && !proxy.is_some_and(|p| FRONT.contains(&p)) {
            "b"
        } else {
            "a"
        }
    };
    let mut p = Placement::new();
    let mut hops = 0;
    // (node id, its senders): what the next stage expands.
    let mut level: Vec<(String, Vec<String>)> = vec![("X".into(), vec!["client".into()])];
    let mut entry_of_client = "X".to_string();
    let mut leaves = Vec::new();
    for (i, (expand, args)) in stages.iter().enumerate() {
        let mut next = Vec::new();
        for (id, senders) in &level {
            let e = expand(&Request { id, senders, args });
            for c in &e.children {
                match &c.role {
                    Role::Copy => {
                        let copy_senders: Vec<String> = e
                            .sends
                            .iter()
                            .filter(|(_, t)| t.contains(&c.id))
                            .map(|(s, _)| s.clone())
                            .collect();
                        next.push((c.id.clone(), copy_senders));
                    }
                    Role::Proxy { proxy, config } => {
                        let plan = AgentPlan {
                            in_box: in_box(Some(proxy)).into(),
                            kind: proxy.to_string(),
                            config: serde_json::to_vec(config).unwrap(),
                        };
                        p.agents.insert(c.id.clone(), plan);
                        leaves.push(LattNode::agent(c.id.clone(), "X"));
                        if let Some(Value::List(targets)) = config.get("targets") {
                            for t in targets {
                                p.routes
                                    .entry(c.id.clone())
                                    .or_default()
                                    .insert(t.clone(), t.clone());
                            }
                        }
                    }
                }
            }
            if i == 0 {
                entry_of_client = e.entry.get("client").cloned().unwrap_or_else(|| id.clone());
            } else {
                // The previous stage's proxies reach this copy through its entry for them.
                for (sender, entry) in &e.entry {
                    p.routes
                        .entry(sender.clone())
                        .or_default()
                        .insert(id.clone(), entry.clone());
                }
            }
            // Proxies on one request's path: the entry, and one egress/decoder per stage.
            hops += e
                .children
                .iter()
                .filter(|c| matches!(c.role, Role::Proxy { .. }))
                .count()
                .clamp(1, 2);
        }
        level = next;
        let _ = i;
    }
    for (id, _) in &level {
        p.agents.insert(
            id.clone(),
            AgentPlan {
                in_box: in_box(None).into(),
                kind: kind.into(),
                config: Vec::new(),
            },
        );
        leaves.push(LattNode::agent(id.clone(), "X"));
    }
    if stages.is_empty() {
        hops = 0;
    }
    p = p.route("client", "X", entry_of_client);
    (
        p.latt(LattNode::system(
            "system",
            vec![LattNode::system("X", leaves)],
        )),
        hops,
    )
}

async fn start(placement: Placement, two_boxes: bool) -> (Vec<BoxHandle>, Endpoint) {
    let kinds = |mut b: BoxBuilder| {
        for (k, f) in proxy::kinds(Arc::new(KeyHooks)) {
            b = b.kind_boxed(k, f);
        }
        b.kind("Kvs", |_| Kvs::default())
            .kind("Sink", |_| Sink::default())
    };
    let a = kinds(BoxBuilder::new("a").with_controller(Controller::new(placement)))
        .start()
        .await
        .unwrap();
    let mut boxes = vec![];
    if two_boxes {
        let b = kinds(BoxBuilder::new("b").controller_at(a.addr()))
            .start()
            .await
            .unwrap();
        b.ready().await.unwrap();
        boxes.push(b);
    }
    a.ready().await.unwrap();
    let ep = a.endpoint("client").unwrap();
    boxes.insert(0, a);
    (boxes, ep)
}

/// p50 of a PUT round trip, in microseconds, measured in a task of its own (the main task of
/// `#[tokio::main]` runs outside the runtime's workers: every wake-up would cross threads).
async fn put_p50(placement: Placement, two_boxes: bool) -> f64 {
    tokio::spawn(p50_in_task(placement, two_boxes, Op::Put))
        .await
        .expect("the measurement runs")
}

/// p50s of a PUT and of a GET round trip, in microseconds, each on a system of its own (in a
/// task of its own, as [`put_p50`]).
async fn put_get_p50(placement: Placement) -> (f64, f64) {
    let put = tokio::spawn(p50_in_task(placement.clone(), false, Op::Put));
    let put = put.await.expect("the measurement runs");
    let get = tokio::spawn(p50_in_task(placement, false, Op::Get));
    (put, get.await.expect("the measurement runs"))
}

/// The request a latency measurement repeats.
#[derive(Clone, Copy)]
enum Op {
    Put,
    Get,
}

async fn p50_in_task(placement: Placement, two_boxes: bool, op: Op) -> f64 {
    let (boxes, mut ep) = start(placement, two_boxes).await;
    let mut times = Vec::with_capacity(10_000);
    for i in 0..12_000u64 {
        let key = format!("k{}", i % 64);
        let t = Instant::now();
        match op {
            Op::Put => {
                let put = Put {
                    key,
                    value: "v".into(),
                };
                let _: PutOk = ep.request("X", put).await.unwrap();
            }
            Op::Get => {
                let _: GetOk = ep.request("X", Get { key }).await.unwrap();
            }
        }
        if i >= 2_000 {
            times.push(t.elapsed());
        }
    }
    drop(ep);
    for b in boxes.into_iter().rev() {
        b.shutdown().await;
    }
    times.sort();
    times[times.len() / 2].as_secs_f64() * 1e6
}

/// Messages per second of a one-way stream of `n` items (in a task of its own).
async fn stream_rate(placement: Placement, n: u64) -> f64 {
    tokio::spawn(stream_rate_in_task(placement, n))
        .await
        .expect("the measurement runs")
}

async fn stream_rate_in_task(placement: Placement, n: u64) -> f64 {
    let (boxes, mut ep) = start(placement, true).await;
    let target = ep.resolve("X").await.unwrap();
    let t = Instant::now();
    for i in 0..n {
        ep.send_physical(
            &target,
            Item {
                n: i,
                text: "a small message".into(),
            },
        );
    }
    ep.send_physical(&target, Flush {});
    let (_, done): (_, Flushed) = tokio::time::timeout(Duration::from_secs(120), ep.recv_message())
        .await
        .expect("the stream ends")
        .unwrap();
    let elapsed = t.elapsed();
    assert_eq!(done.count, n, "every item arrived");
    drop(ep);
    for b in boxes.into_iter().rev() {
        b.shutdown().await;
    }
    n as f64 / elapsed.as_secs_f64()
}

fn args(pairs: &[(&str, Value)]) -> Args {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let shard = (
        ovid_stdlib::shard::expand as fn(&Request) -> Expansion,
        args(&[("n", Value::Int(2)), ("by", Value::Str("key".into()))]),
    );
    let lb = (
        ovid_stdlib::load_balance::expand as fn(&Request) -> Expansion,
        args(&[("n", Value::Int(2))]),
    );
    let batch1 = (
        ovid_stdlib::batch::expand as fn(&Request) -> Expansion,
        args(&[("size", Value::Int(1)), ("linger", Value::Int(1))]),
    );
    let compress = (
        ovid_stdlib::compress::expand as fn(&Request) -> Expansion,
        args(&[("algo", Value::Str("lz4".into()))]),
    );
    let monitor = (
        ovid_stdlib::monitor::expand as fn(&Request) -> Expansion,
        Args::new(),
    );

    println!(
        "PUT round trip, p50 (10,000 after 2,000 warm-up), tokio multi_thread with 2 workers\n"
    );
    let (plain, _) = placement("Kvs", &[], false);
    let base = put_p50(plain, false).await;
    println!("{:<44} {:>8.2} µs", "plain, one box (baseline)", base);
    let cases: Vec<(&str, Vec<Stage>)> = vec![
        ("shard(2): ingress + egress proxy", vec![shard.clone()]),
        ("load_balance(2): balancer", vec![lb]),
        ("monitor: monitor proxy", vec![monitor]),
        ("batch(1): encoder + decoder", vec![batch1]),
        (
            "compress(lz4): compressor + decompressor",
            vec![compress.clone()],
        ),
    ];
    for (name, stages) in cases {
        let (p, hops) = placement("Kvs", &stages, false);
        let p50 = put_p50(p, false).await;
        println!(
            "{:<44} {:>8.2} µs  (+{:.2} µs, {hops} hops: {:.2} µs per hop)",
            name,
            p50,
            p50 - base,
            (p50 - base) / hops as f64
        );
    }
    let (plain2, _) = placement("Kvs", &[], true);
    let base2 = put_p50(plain2, true).await;
    println!("{:<44} {:>8.2} µs", "plain, two boxes (baseline)", base2);
    let (p, hops) = placement("Kvs", &[shard], true);
    let p50 = put_p50(p, true).await;
    println!(
        "{:<44} {:>8.2} µs  (+{:.2} µs, {hops} hops: {:.2} µs per hop)",
        "shard(2) across two boxes",
        p50,
        p50 - base2,
        (p50 - base2) / hops as f64
    );

    println!("\nReplicated stores, one box: PUT and GET round trips, p50 (as above)\n");
    let (plain, _) = placement("Kvs", &[], false);
    let (put, get) = put_get_p50(plain).await;
    println!(
        "{:<44} PUT {put:>8.2} µs   GET {get:>8.2} µs",
        "plain (baseline)"
    );
    let n3 = args(&[("n", Value::Int(3))]);
    let replicated: Vec<(&str, Stage)> = vec![
        ("replicate(3)", (ovid_stdlib::replicate::expand, n3.clone())),
        (
            "primary_backup(3)",
            (ovid_stdlib::primary_backup::expand, n3.clone()),
        ),
        ("chain(3)", (ovid_stdlib::chain::expand, n3)),
    ];
    for (name, stage) in replicated {
        let (p, _) = placement("Kvs", &[stage], false);
        let (put, get) = put_get_p50(p).await;
        println!("{name:<44} PUT {put:>8.2} µs   GET {get:>8.2} µs");
    }

    const N: u64 = 200_000;
    println!("\nOne-way stream of {N} small messages between two boxes\n");
    let batch64 = (
        ovid_stdlib::batch::expand as fn(&Request) -> Expansion,
        args(&[("size", Value::Int(64)), ("linger", Value::Int(1))]),
    );
    let (plain, _) = placement("Sink", &[], true);
    let base = stream_rate(plain, N).await;
    println!("{:<44} {:>12.0} msg/s", "plain (baseline)", base);
    let (p, _) = placement("Sink", std::slice::from_ref(&batch64), true);
    let r = stream_rate(p, N).await;
    println!(
        "{:<44} {:>12.0} msg/s  ({:.2}x)",
        "batch(64, 1ms)",
        r,
        r / base
    );
    let (p, _) = placement("Sink", &[batch64, compress], true);
    let r = stream_rate(p, N).await;
    println!(
        "{:<44} {:>12.0} msg/s  ({:.2}x)",
        "batch(64, 1ms) |> compress(lz4)",
        r,
        r / base
    );
}

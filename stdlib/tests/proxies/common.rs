//! What the proxy tests share: a key-value store and a stateless agent (the systems under
//! test), hooks that read their `key` field, a generated workload, and a harness that runs the
//! workload against the agent untransformed and behind a transformation's proxies, placed as
//! the expansion says, over two boxes talking TCP.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use ovid::controller::AgentPlan;
use ovid::{
    BoxBuilder, BoxHandle, Context, Controller, Endpoint, Envelope, LattNode, Message, Payload,
    Placement,
};
use ovid_stdlib::expansion::{Args, Expansion, Request, Role};
use ovid_stdlib::proxy::{self, Hooks, stable_hash};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Message)]
pub struct Put {
    pub key: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Message)]
pub struct PutOk {
    pub key: String,
    pub previous: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Message)]
pub struct Get {
    pub key: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Message)]
pub struct GetOk {
    pub key: String,
    pub value: Option<String>,
}

/// A message without a `key` field (a shard ingress proxy cannot place it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Message)]
pub struct Stats;

/// The key-value store: the agent under test.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Kvs {
    pub store: BTreeMap<String, String>,
}

#[ovid::agent]
impl Kvs {
    fn on_put(&mut self, _ctx: &mut Context, put: Put) -> PutOk {
        let previous = self.store.insert(put.key.clone(), put.value);
        PutOk {
            key: put.key,
            previous,
        }
    }

    fn on_get(&mut self, _ctx: &mut Context, get: Get) -> GetOk {
        GetOk {
            value: self.store.get(&get.key).cloned(),
            key: get.key,
        }
    }
}

/// A stateless agent (what `load_balance` requires): answers from the request alone.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Upper;

#[ovid::agent]
impl Upper {
    fn on_put(&mut self, _ctx: &mut Context, put: Put) -> PutOk {
        PutOk {
            previous: Some(put.value.to_uppercase()),
            key: put.key,
        }
    }

    fn on_get(&mut self, _ctx: &mut Context, get: Get) -> GetOk {
        GetOk {
            value: Some(get.key.to_uppercase()),
            key: get.key,
        }
    }
}

/// What the generated code of this system would supply: the hash of the `key` field.
pub struct KvsHooks;

impl Hooks for KvsHooks {
    fn key_hash(&self, by: &str, payload: &Payload) -> Option<u64> {
        if by != "key" {
            return None;
        }
        if let Some(p) = payload.peek::<Put>() {
            return Some(stable_hash(&p.key));
        }
        payload.peek::<Get>().map(|g| stable_hash(&g.key))
    }
}

/// One request of the workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Put(Put),
    Get(Get),
}

/// One reply, as the client sees it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reply {
    PutOk {
        key: String,
        previous: Option<String>,
    },
    GetOk {
        key: String,
        value: Option<String>,
    },
}

/// A repeatable pseudo-random stream (xorshift64*).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed | 1)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

/// `n` random requests from `clients` endpoints over a few keys, as (endpoint, request). With
/// `disjoint`, each endpoint has keys of its own (so replies do not depend on how the endpoints
/// interleave). Values are short or long and repetitive (compressible), a mix.
pub fn workload(seed: u64, n: usize, clients: usize, disjoint: bool) -> Vec<(usize, Op)> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|i| {
            let c = rng.below(clients as u64) as usize;
            let k = rng.below(12);
            let key = if disjoint {
                format!("c{c}-k{k}")
            } else {
                format!("k{k}")
            };
            let op = if rng.below(2) == 0 {
                let value = if rng.below(3) == 0 {
                    format!("v{i}-").repeat(40)
                } else {
                    format!("v{i}")
                };
                Op::Put(Put { key, value })
            } else {
                Op::Get(Get { key })
            };
            (c, op)
        })
        .collect()
}

/// The senders of the workload, as endpoints in the front box.
pub fn clients(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("client{i}")).collect()
}

/// A running system: the boxes, the endpoints, and which identifiers run the agent's code.
pub struct System {
    pub boxes: Vec<BoxHandle>,
    pub endpoints: Vec<Endpoint>,
    pub copies: BTreeSet<String>,
}

impl System {
    pub async fn shutdown(self) {
        drop(self.endpoints);
        for b in self.boxes.into_iter().rev() {
            b.shutdown().await;
        }
    }

    pub fn rejections(&self) -> u64 {
        self.boxes.iter().map(|b| b.metrics().rejections).sum()
    }

    /// The box that runs the agent's copies (and the proxies near it).
    pub fn back(&self) -> &BoxHandle {
        self.boxes.last().unwrap()
    }
}

/// The agent alone, as `KVS`, in one box with the endpoints.
pub async fn start_plain(kind: &'static str, n_clients: usize) -> System {
    let placement = Placement::new().agent("KVS", "solo", kind);
    let b = BoxBuilder::new("solo")
        .with_controller(Controller::new(placement))
        .kind("Kvs", |_| Kvs::default())
        .kind("Upper", |_| Upper)
        .start()
        .await
        .unwrap();
    b.ready().await.unwrap();
    let endpoints = clients(n_clients)
        .into_iter()
        .map(|c| b.endpoint(c).unwrap())
        .collect();
    System {
        boxes: vec![b],
        endpoints,
        copies: BTreeSet::from(["KVS".to_string()]),
    }
}

/// Which proxies run near the senders (the front box); the rest run near the agent.
const FRONT: &[&str] = &[
    "ShardIngressProxy",
    "LoadBalancer",
    "BatchEncoder",
    "Compressor",
    "Encryptor",
    "Monitor",
    "Auditor",
];

/// Expands `KVS` with `expand` and `args` for `n_clients` senders.
pub fn expand(expand: fn(&Request) -> Expansion, args: &Args, n_clients: usize) -> Expansion {
    let senders = clients(n_clients);
    expand(&Request {
        id: "KVS",
        senders: &senders,
        args,
    })
}

/// The placement of an expansion: sender-side proxies in `front` (with the controller and the
/// endpoints), the copies (of `kind`) and agent-side proxies in `back`; each sender reaches
/// `KVS` at its entry proxy.
pub fn placement(e: &Expansion, kind: &str) -> Placement {
    placement_with(e, kind, |_, proxy| {
        if proxy.is_some_and(|p| FRONT.contains(&p)) {
            "front"
        } else {
            "back"
        }
    })
}

/// Like [`placement`], with `in_box(id, proxy kind or None for a copy)` choosing the boxes.
pub fn placement_with(
    e: &Expansion,
    kind: &str,
    in_box: impl Fn(&str, Option<&str>) -> &'static str,
) -> Placement {
    let mut p = Placement::new();
    for c in &e.children {
        let plan = match &c.role {
            Role::Copy => AgentPlan {
                in_box: in_box(&c.id, None).into(),
                kind: kind.into(),
                config: Vec::new(),
            },
            Role::Proxy { proxy, config } => AgentPlan {
                in_box: in_box(&c.id, Some(proxy)).into(),
                kind: proxy.to_string(),
                config: serde_json::to_vec(config).unwrap(),
            },
        };
        p.agents.insert(c.id.clone(), plan);
    }
    for (sender, entry) in &e.entry {
        p = p.route(sender.clone(), "KVS", entry.clone());
    }
    let leaves = e
        .children
        .iter()
        .map(|c| LattNode::agent(c.id.clone(), "X"))
        .collect();
    p.latt(LattNode::system(
        "system",
        vec![LattNode::system("KVS", leaves)],
    ))
}

/// Starts the transformed system: two boxes, every proxy kind of the standard library known to
/// both.
pub async fn start_transformed(e: &Expansion, kind: &'static str, n_clients: usize) -> System {
    start_placed(e, placement(e, kind), &["back"], n_clients).await
}

/// Starts `placement` of `e` over `front` (the controller and the endpoints) and the boxes
/// `others`, every proxy kind of the standard library known to all.
pub async fn start_placed(
    e: &Expansion,
    placement: Placement,
    others: &[&str],
    n_clients: usize,
) -> System {
    let with_kinds = |mut b: BoxBuilder| {
        for (k, f) in proxy::kinds(Arc::new(KvsHooks)) {
            b = b.kind_boxed(k, f);
        }
        b.kind("Kvs", |_| Kvs::default()).kind("Upper", |_| Upper)
    };
    let front = with_kinds(BoxBuilder::new("front").with_controller(Controller::new(placement)))
        .start()
        .await
        .unwrap();
    let mut boxes = Vec::new();
    for name in others {
        boxes.push(
            with_kinds(BoxBuilder::new(*name).controller_at(front.addr()))
                .start()
                .await
                .unwrap(),
        );
    }
    front.ready().await.unwrap();
    for b in &boxes {
        b.ready().await.unwrap();
    }
    let endpoints = clients(n_clients)
        .into_iter()
        .map(|c| front.endpoint(c).unwrap())
        .collect();
    let copies = e
        .children
        .iter()
        .filter(|c| c.role == Role::Copy)
        .map(|c| c.id.clone())
        .collect();
    boxes.insert(0, front);
    System {
        boxes,
        endpoints,
        copies,
    }
}

/// Sends one request from `ep` to `KVS`.
pub async fn send(ep: &mut Endpoint, op: &Op) {
    match op.clone() {
        Op::Put(p) => ep.send("KVS", p).await.unwrap(),
        Op::Get(g) => ep.send("KVS", g).await.unwrap(),
    }
}

/// The next envelope at `ep`, failing the test after 5 s.
pub async fn recv(ep: &mut Endpoint) -> Envelope {
    tokio::time::timeout(Duration::from_secs(5), ep.recv())
        .await
        .expect("a reply within 5 s")
        .expect("box still up")
}

/// The next envelope at `ep` within `ms`, if any.
pub async fn recv_within(ep: &mut Endpoint, ms: u64) -> Option<Envelope> {
    tokio::time::timeout(Duration::from_millis(ms), ep.recv())
        .await
        .ok()
        .flatten()
}

/// A reply as the client sees it.
pub fn reply(env: Envelope) -> Reply {
    match env.payload.name() {
        "PutOk" => {
            let p: PutOk = env.payload.decode().unwrap();
            Reply::PutOk {
                key: p.key,
                previous: p.previous,
            }
        }
        "GetOk" => {
            let g: GetOk = env.payload.decode().unwrap();
            Reply::GetOk {
                key: g.key,
                value: g.value,
            }
        }
        other => panic!("unexpected reply `{other}`"),
    }
}

/// One request at a time, each waiting for its reply: a total order, so the replies must be
/// the same whatever the proxies. Checks that every reply comes straight from the agent's code
/// (a copy), not from a proxy.
pub async fn run_sequential(sys: &mut System, ops: &[(usize, Op)]) -> Vec<Reply> {
    let mut out = Vec::with_capacity(ops.len());
    for (c, op) in ops {
        send(&mut sys.endpoints[*c], op).await;
        let env = recv(&mut sys.endpoints[*c]).await;
        assert!(
            sys.copies.contains(&*env.from),
            "reply from `{}`, not from the agent",
            env.from
        );
        out.push(reply(env));
    }
    out
}

/// Every request sent at once, then every reply collected, per endpoint. With `ordered`, in
/// arrival order (one path from each sender to the agent keeps it); else sorted (several copies
/// answer independently).
pub async fn run_pipelined(
    sys: &mut System,
    ops: &[(usize, Op)],
    ordered: bool,
) -> Vec<Vec<Reply>> {
    let mut expected = vec![0; sys.endpoints.len()];
    for (c, op) in ops {
        send(&mut sys.endpoints[*c], op).await;
        expected[*c] += 1;
    }
    let mut out = Vec::new();
    for (ep, n) in sys.endpoints.iter_mut().zip(expected) {
        let mut replies = Vec::with_capacity(n);
        for _ in 0..n {
            let env = recv(ep).await;
            assert!(
                sys.copies.contains(&*env.from),
                "reply from `{}`, not from the agent",
                env.from
            );
            replies.push(reply(env));
        }
        if !ordered {
            replies.sort();
        }
        out.push(replies);
    }
    out
}

/// The differential test: the same generated workloads (one sequential over shared keys, one
/// pipelined over keys per sender) against the agent `kind` untransformed and transformed by
/// `e`; the replies must be identical and nothing rejected. Returns the transformed system
/// (still running) and the plain one, for further checks.
pub async fn differential(
    e: &Expansion,
    kind: &'static str,
    n_clients: usize,
    ordered: bool,
    seed: u64,
) -> (System, System) {
    let seq = workload(seed, 240, n_clients, false);
    let pipe = workload(seed ^ 0x5eed, 300, n_clients, true);
    let mut plain = start_plain(kind, n_clients).await;
    let want_seq = run_sequential(&mut plain, &seq).await;
    let want_pipe = run_pipelined(&mut plain, &pipe, ordered).await;

    let mut sys = start_transformed(e, kind, n_clients).await;
    let got_seq = run_sequential(&mut sys, &seq).await;
    let got_pipe = run_pipelined(&mut sys, &pipe, ordered).await;
    assert_eq!(got_seq, want_seq, "sequential workload: replies differ");
    assert_eq!(got_pipe, want_pipe, "pipelined workload: replies differ");
    assert!(
        want_seq
            .iter()
            .any(|r| matches!(r, Reply::GetOk { value: Some(_), .. })),
        "the workload reads what it wrote"
    );
    assert_eq!(sys.rejections(), 0, "nothing rejected");
    let (front, back) = (sys.boxes[0].metrics(), sys.back().metrics());
    assert!(
        front.frames_out as usize >= seq.len() && back.frames_out as usize >= seq.len(),
        "the proxies talk across boxes"
    );
    (sys, plain)
}

/// The store of a `Kvs` agent, from a snapshot of it.
pub async fn store_of(b: &BoxHandle, id: &str) -> BTreeMap<String, String> {
    let bytes = b.snapshot(id).await.unwrap();
    postcard::from_bytes::<Kvs>(&bytes).unwrap().store
}

/// A path in the temporary directory, unique to this process and `name`.
pub fn temp_path(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("ovid-stdlib-{}-{name}", std::process::id()))
}

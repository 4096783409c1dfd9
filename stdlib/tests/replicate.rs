//! `replicate(3)` end to end: a key-value store replicated over three boxes (one replica and its
//! replica proxy in each), with a client box holding the controller, the ingress proxy and the
//! client endpoint. Checked against the same store unreplicated: replies, crash of the leader's
//! box, catch-up of a restarted replica, equal replica states at quiescence, and, with data
//! directories, a power cut of every replica box.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ovid::controller::Invalidate;
use ovid::{
    AgentPlan, BoxBuilder, BoxHandle, Context, Controller, Endpoint, LattNode, Message, Placement,
};
use ovid_stdlib::expansion::{Args, Request, Role, Value};
use ovid_stdlib::proxy::{Hooks, NoHooks};
use ovid_stdlib::replicate::{self, messages::ReplicaStatus, messages::Status};
use serde::{Deserialize, Serialize};
use tokio::time::timeout;

include!("support/replicated_store.rs");

// ---- the two systems ------------------------------------------------------------------------

fn replica_box(id: &str) -> Option<usize> {
    let last = id.rsplit('/').next()?;
    let digits = last.trim_start_matches(|c: char| !c.is_ascii_digit());
    if last.starts_with("ReplicateIngressProxy") {
        None
    } else {
        digits.parse().ok()
    }
}

/// The placement of `KVS |> replicate(n)` with sender `client`: replica i and its proxy in box
/// `r{i}`, the ingress proxy in box `front`.
fn placement(n: i64) -> Placement {
    let args: Args = Args::from([("n".to_string(), Value::Int(n))]);
    let senders = vec!["client".to_string()];
    let e = replicate::expand(&Request {
        id: "KVS",
        senders: &senders,
        args: &args,
    });
    let mut p = Placement::new();
    let mut leaves = Vec::new();
    for child in &e.children {
        let in_box = replica_box(&child.id)
            .map(|i| format!("r{i}"))
            .unwrap_or_else(|| "front".into());
        let (kind, config) = match &child.role {
            Role::Proxy { proxy, config } => {
                (proxy.to_string(), serde_json::to_vec(config).unwrap())
            }
            Role::Copy => ("Store".to_string(), Vec::new()),
        };
        p.agents.insert(
            child.id.clone(),
            AgentPlan {
                in_box,
                kind,
                config,
            },
        );
        leaves.push(LattNode::agent(child.id.clone(), "X"));
    }
    for (sender, entry) in &e.entry {
        p = p.route(sender.clone(), "KVS", entry.clone());
    }
    p.latt(LattNode::system("KVS", leaves))
}

fn builder(name: &str) -> BoxBuilder {
    let hooks: Arc<dyn Hooks> = Arc::new(NoHooks);
    let mut b = BoxBuilder::new(name).kind("Store", |_| Store::default());
    for (kind, factory) in replicate::proxies(&hooks) {
        b = b.kind_boxed(kind, factory);
    }
    b
}

struct Replicated {
    n: usize,
    placement: Placement,
    front: BoxHandle,
    boxes: Vec<Option<BoxHandle>>,
    probe: Endpoint,
    /// The data directory of each replica box, if they have one.
    data: Option<Vec<PathBuf>>,
    /// Boxes restarted so far.
    restarts: usize,
}

/// A replica box: `r{i}`, with its data directory if given.
fn replica_builder(name: &str, data: Option<&PathBuf>) -> BoxBuilder {
    match data {
        Some(dir) => builder(name).data_dir(dir),
        None => builder(name),
    }
}

impl Replicated {
    async fn start(n: usize) -> Replicated {
        Replicated::start_with(n, None).await
    }

    /// Starts the system with a data directory per replica box (`data[i]` for `r{i}`).
    async fn start_with(n: usize, data: Option<Vec<PathBuf>>) -> Replicated {
        let placement = placement(n as i64);
        let front = builder("front")
            .with_controller(Controller::new(placement.clone()))
            .start()
            .await
            .unwrap();
        let mut boxes = Vec::new();
        for i in 0..n {
            boxes.push(Some(
                replica_builder(&format!("r{i}"), data.as_ref().map(|d| &d[i]))
                    .controller_at(front.addr())
                    .start()
                    .await
                    .unwrap(),
            ));
        }
        front.ready().await.unwrap();
        for b in boxes.iter().flatten() {
            b.ready().await.unwrap();
        }
        let probe = front.endpoint("probe").unwrap();
        let mut sys = Replicated {
            n,
            placement,
            front,
            boxes,
            probe,
            data,
            restarts: 0,
        };
        sys.wait_for_leader().await;
        sys
    }

    fn proxy(i: usize) -> String {
        format!("KVS/ReplicaProxy{i}")
    }

    async fn status(&mut self, i: usize) -> Option<ReplicaStatus> {
        self.boxes[i].as_ref()?;
        self.probe.send(&Self::proxy(i), Status).await.ok()?;
        // A proxy answers at once; a box that is starting may take a moment.
        let env = timeout(Duration::from_secs(2), self.probe.recv())
            .await
            .ok()??;
        env.payload
            .decode::<ReplicaStatus>()
            .ok()
            .filter(|s| s.index == i as u64)
    }

    async fn statuses(&mut self) -> Vec<ReplicaStatus> {
        let mut all = Vec::new();
        for i in 0..self.n {
            if let Some(s) = self.status(i).await {
                all.push(s);
            }
        }
        all
    }

    /// Waits until every live proxy is active and they agree on a leader; returns it.
    async fn wait_for_leader(&mut self) -> usize {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let all = self.statuses().await;
            let live = self.boxes.iter().filter(|b| b.is_some()).count();
            if all.len() == live
                && all.iter().all(|s| s.active)
                && let Some(l) = all[0].leader
                && all.iter().all(|s| s.leader == Some(l))
                && self.boxes[l as usize].is_some()
            {
                return l as usize;
            }
            assert!(Instant::now() < deadline, "no leader: {all:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until every live replica has applied the same decided prefix and answered it all.
    async fn wait_quiet(&mut self) -> Vec<ReplicaStatus> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let all = self.statuses().await;
            let live = self.boxes.iter().filter(|b| b.is_some()).count();
            let quiet = all.len() == live
                && all.iter().all(|s| {
                    s.active
                        && s.completed == s.executed
                        && s.applied == s.decided
                        && s.decided == s.log_len
                })
                && all.iter().all(|s| s.applied == all[0].applied);
            if quiet {
                return all;
            }
            assert!(Instant::now() < deadline, "not quiet: {all:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// (applied index, snapshot) of every live replica, at quiescence.
    async fn replica_states(&mut self) -> Vec<(u64, Vec<u8>)> {
        let all = self.wait_quiet().await;
        let mut states = Vec::new();
        for s in all {
            let b = self.boxes[s.index as usize].as_ref().unwrap();
            states.push((
                s.applied,
                b.snapshot(&format!("KVS/Replica{}", s.index))
                    .await
                    .unwrap(),
            ));
        }
        states
    }

    /// Shuts box `r{i}` down, as a crash: its agents' memory is gone.
    async fn crash(&mut self, i: usize) {
        self.boxes[i].take().expect("box running").shutdown().await;
    }

    /// Starts box `r{i}` again (a new process: new address, empty agents, the same data
    /// directory if it has one) and the two agents placed in it, then has every box forget the
    /// old address. (Under a new box name: boxes keep the address of a box manager they learnt,
    /// so a box cannot yet come back under its old name at a new address.)
    async fn restart(&mut self, i: usize) {
        // A fresh name each time: a box's name is bound to its first address.
        self.restarts += 1;
        let name = format!("r{i}-again{}", self.restarts);
        let b = replica_builder(&name, self.data.as_ref().map(|d| &d[i]))
            .controller_at(self.front.addr())
            .start()
            .await
            .unwrap();
        b.ready().await.unwrap();
        let hooks: Arc<dyn Hooks> = Arc::new(NoHooks);
        let factories: BTreeMap<&str, ovid::Factory> =
            replicate::proxies(&hooks).into_iter().collect();
        let proxy_id = Self::proxy(i);
        let plan = &self.placement.agents[&proxy_id];
        let agent = factories[plan.kind.as_str()](&plan.config).unwrap();
        let replica_id = format!("KVS/Replica{i}");
        b.spawn(replica_id.clone(), Store::default()).unwrap();
        b.spawn(proxy_id.clone(), agent).unwrap();
        b.sync_controller().await.unwrap();
        let mut operator = self.front.endpoint(format!("operator{i}")).unwrap();
        for id in [proxy_id, replica_id] {
            operator
                .send(ovid::CONTROLLER, Invalidate { id })
                .await
                .unwrap();
        }
        self.front.sync_controller().await.unwrap();
        self.boxes[i] = Some(b);
    }

    async fn shutdown(mut self) {
        for b in self.boxes.iter_mut() {
            if let Some(b) = b.take() {
                b.shutdown().await;
            }
        }
        self.front.shutdown().await;
    }
}

fn decode_store(bytes: &[u8]) -> Store {
    postcard::from_bytes(bytes).unwrap()
}

// ---- the tests ------------------------------------------------------------------------------

/// (1) The replicated store answers a generated workload exactly as the store alone does, and
/// (3) at quiescence every replica's state equals the store's.
#[tokio::test]
async fn replies_match_the_unreplicated_store() {
    let ops = workload(7, 300);
    let solo = unreplicated().await;
    let mut reference = solo.endpoint("client").unwrap();
    let mut sys = Replicated::start(3).await;
    let mut client = sys.front.endpoint("client").unwrap();

    let started = Instant::now();
    for chunk in ops.chunks(10) {
        let want = window(&mut reference, chunk).await;
        let got = window(&mut client, chunk).await;
        assert_eq!(got, want, "replies differ for {chunk:?}");
    }
    let elapsed = started.elapsed();
    println!(
        "replicate(3): {} operations in windows of 10, {elapsed:?} (with the reference store)",
        ops.len()
    );

    let states = sys.replica_states().await;
    assert_eq!(states.len(), 3);
    let expected = solo.snapshot("KVS").await.unwrap();
    for (applied, state) in &states {
        assert_eq!(
            decode_store(state),
            decode_store(&expected),
            "replica at {applied} differs"
        );
    }
    assert_eq!(replicate::virtual_state(&states), Some(&expected));

    sys.shutdown().await;
    solo.shutdown().await;
}

/// (2) The leader's box crashes with requests in flight: every acknowledged put is still there,
/// service resumes; then the box comes back empty, catches up from its peers, and (3) all three
/// replicas end equal.
#[tokio::test]
async fn leader_crash_loses_no_acknowledged_put_and_a_restarted_replica_catches_up() {
    let mut sys = Replicated::start(3).await;
    let mut client = sys.front.endpoint("client").unwrap();
    let mut acked: BTreeMap<String, String> = BTreeMap::new();

    for i in 0..40 {
        let (k, v) = (format!("k{}", i % 16), format!("before-{i}"));
        let ok = put(&mut client, &k, &v).await;
        assert_eq!(ok.version, i + 1);
        acked.insert(k, v);
    }

    // Crash the leader with a window of puts in flight.
    let leader = sys.wait_for_leader().await;
    let in_flight: Vec<(String, String)> = (0..10)
        .map(|i| (format!("k{}", 20 + i), format!("in-flight-{i}")))
        .collect();
    for (k, v) in &in_flight {
        client
            .send(
                "KVS",
                Put {
                    key: k.clone(),
                    value: v.clone(),
                },
            )
            .await
            .unwrap();
    }
    let crashed = Instant::now();
    sys.crash(leader).await;
    let mut versions = Vec::new();
    for _ in &in_flight {
        let env = timeout(REPLY_TIMEOUT, client.recv())
            .await
            .expect("in-flight put answered after the crash")
            .unwrap();
        versions.push(env.payload.decode::<PutOk>().unwrap().version);
    }
    let recovered = crashed.elapsed();
    versions.sort();
    assert_eq!(
        versions,
        (41..=50).collect::<Vec<_>>(),
        "each in-flight put ran exactly once"
    );
    acked.extend(in_flight);
    let new_leader = sys.wait_for_leader().await;
    assert_ne!(new_leader, leader);
    println!(
        "leader r{leader} crashed: in-flight puts answered {recovered:?} after the crash; new leader r{new_leader}"
    );

    let before = Instant::now();
    for i in 0..40u64 {
        let (k, v) = (format!("k{}", i % 24), format!("after-{i}"));
        let ok = put(&mut client, &k, &v).await;
        assert_eq!(ok.version, 51 + i);
        acked.insert(k, v);
    }
    println!(
        "40 puts after the crash, on two replicas: {:?}",
        before.elapsed()
    );
    for (k, v) in &acked {
        assert_eq!(
            get(&mut client, k).await.value.as_ref(),
            Some(v),
            "acknowledged put of {k} lost"
        );
    }
    let states = sys.replica_states().await;
    assert_eq!(states.len(), 2);
    assert_eq!(states[0].1, states[1].1, "the two live replicas differ");

    // The crashed box comes back with nothing; its proxy recovers from its peers and replays.
    let restarted = Instant::now();
    sys.restart(leader).await;
    let states = sys.replica_states().await;
    println!(
        "restarted r{leader} caught up ({} log entries) in {:?}",
        states[0].0,
        restarted.elapsed()
    );
    assert_eq!(states.len(), 3);
    assert!(
        states.iter().all(|s| s.1 == states[0].1),
        "replicas differ after catch-up"
    );
    let store = decode_store(replicate::virtual_state(&states).unwrap());
    assert_eq!(store.map, acked);
    assert_eq!(store.version, 90);

    // And it takes part again: with another box down, the restarted one is in every quorum.
    let other = (leader + 1) % 3;
    sys.crash(other).await;
    let ok = put(&mut client, "last", "word").await;
    assert_eq!(ok.version, 91);
    assert_eq!(
        get(&mut client, "last").await.value.as_deref(),
        Some("word")
    );
    sys.shutdown().await;
}

/// A fresh, empty data directory for replica box `i` of test `name`.
fn data_dir(name: &str, i: usize) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ovid-{name}-{}/r{i}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// (4) A power cut: with data directories, all three replica boxes stop at once, with puts in
/// flight, and start again from their directories. No replica has a peer that remembers more
/// than its own disk; each takes up its acceptor state from there and rejoins through
/// omnipaxos's fail-recovery. Every acknowledged put is still there, every in-flight put is
/// answered once the boxes are back, and the replicas end equal.
#[tokio::test]
async fn every_replica_box_restarts_from_its_data_directory_and_nothing_acknowledged_is_lost() {
    let dirs: Vec<PathBuf> = (0..3).map(|i| data_dir("power-cut", i)).collect();
    let mut sys = Replicated::start_with(3, Some(dirs.clone())).await;
    let mut client = sys.front.endpoint("client").unwrap();
    let mut acked: BTreeMap<String, String> = BTreeMap::new();

    let started = Instant::now();
    for i in 0..100u64 {
        let (k, v) = (format!("k{}", i % 32), format!("before-{i}"));
        let ok = put(&mut client, &k, &v).await;
        assert_eq!(ok.version, i + 1);
        acked.insert(k, v);
    }
    println!(
        "100 puts one at a time, each synced to disk on every replica: {:?}",
        started.elapsed()
    );
    for dir in &dirs {
        let log = dir.join("KVS%2FReplicaProxy0.log");
        let any = std::fs::read_dir(dir).unwrap().count();
        assert!(any > 0, "{} holds the proxy's log ({log:?})", dir.display());
    }

    // Puts in flight when the power goes: they may or may not have been decided.
    let in_flight: Vec<(String, String)> = (0..5)
        .map(|i| (format!("k{}", 40 + i), format!("in-flight-{i}")))
        .collect();
    for (k, v) in &in_flight {
        client
            .send(
                "KVS",
                Put {
                    key: k.clone(),
                    value: v.clone(),
                },
            )
            .await
            .unwrap();
    }
    for i in 0..3 {
        sys.crash(i).await;
    }
    assert!(sys.statuses().await.is_empty(), "every replica box is down");

    let restarted = Instant::now();
    for i in 0..3 {
        sys.restart(i).await;
    }
    let leader = sys.wait_for_leader().await;
    let all = sys.statuses().await;
    assert!(
        all.iter().all(|s| s.decided >= 100),
        "every replica restored the decided log from its disk: {all:?}"
    );
    println!(
        "all three replica boxes restarted from disk: leader r{leader} elected {:?} after the restart",
        restarted.elapsed()
    );
    // The ingress proxy retries the in-flight puts; each runs exactly once.
    let mut versions = Vec::new();
    for _ in &in_flight {
        let env = timeout(REPLY_TIMEOUT, client.recv())
            .await
            .expect("in-flight put answered after the restart")
            .unwrap();
        versions.push(env.payload.decode::<PutOk>().unwrap().version);
    }
    versions.sort();
    assert_eq!(versions, (101..=105).collect::<Vec<_>>());
    println!(
        "in-flight puts answered {:?} after the restart",
        restarted.elapsed()
    );
    acked.extend(in_flight);

    for (k, v) in &acked {
        assert_eq!(
            get(&mut client, k).await.value.as_ref(),
            Some(v),
            "acknowledged put of {k} lost"
        );
    }
    let ok = put(&mut client, "after", "restart").await;
    assert_eq!(ok.version, 106);
    acked.insert("after".into(), "restart".into());
    let states = sys.replica_states().await;
    assert_eq!(states.len(), 3);
    assert!(
        states.iter().all(|s| s.1 == states[0].1),
        "replicas differ after the restart"
    );
    let store = decode_store(replicate::virtual_state(&states).unwrap());
    assert_eq!(store.map, acked);
    assert_eq!(store.version, 106);

    sys.shutdown().await;
    for dir in &dirs {
        let _ = std::fs::remove_dir_all(dir);
    }
}

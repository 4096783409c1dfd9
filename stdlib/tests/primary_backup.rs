//! `primary_backup(3)` end to end: a key-value store with one primary and two backups, each copy
//! and its proxy in a box of its own, and a client box holding the controller, the ingress proxy
//! and the client endpoint. Checked against the same store alone: replies, a backup's crash and
//! catch-up, the primary's crash and the controller's failover to a backup (no acknowledged put
//! lost), the old primary coming back as a backup, and equal copies at quiescence.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ovid::controller::Invalidate;
use ovid::{
    AgentPlan, BoxBuilder, BoxHandle, Context, Controller, Endpoint, LattNode, Message, Placement,
};
use ovid_stdlib::expansion::{Args, Request, Role as ChildRole, Value};
use ovid_stdlib::primary_backup::{self, messages::PbStatus, messages::Role, messages::Status};
use ovid_stdlib::proxy::{Hooks, NoHooks};
use serde::{Deserialize, Serialize};
use tokio::time::timeout;

include!("support/replicated_store.rs");

/// The placement of `KVS |> primary_backup(n)` with sender `client`: copy i and its proxy in box
/// `p{i}`, the ingress proxy in box `front`.
fn placement(n: i64) -> Placement {
    let args: Args = Args::from([("n".to_string(), Value::Int(n))]);
    let senders = vec!["client".to_string()];
    let e = primary_backup::expand(&Request {
        id: "KVS",
        senders: &senders,
        args: &args,
    });
    let mut p = Placement::new();
    let mut leaves = Vec::new();
    for child in &e.children {
        let last = child.id.rsplit('/').next().unwrap();
        let in_box = match last
            .strip_prefix("PrimaryBackupProxy")
            .or_else(|| last.strip_prefix("Copy"))
        {
            Some(i) => format!("p{i}"),
            None => "front".to_string(),
        };
        let (kind, config) = match &child.role {
            ChildRole::Proxy { proxy, config } => {
                (proxy.to_string(), serde_json::to_vec(config).unwrap())
            }
            ChildRole::Copy => ("Store".to_string(), Vec::new()),
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
    for (kind, factory) in primary_backup::proxies(&hooks) {
        b = b.kind_boxed(kind, factory);
    }
    b
}

struct System {
    n: usize,
    placement: Placement,
    front: BoxHandle,
    boxes: Vec<Option<BoxHandle>>,
    probe: Endpoint,
    restarts: usize,
}

impl System {
    async fn start(n: usize) -> System {
        let placement = placement(n as i64);
        let front = builder("front")
            .with_controller(Controller::new(placement.clone()))
            .start()
            .await
            .unwrap();
        let mut boxes = Vec::new();
        for i in 0..n {
            boxes.push(Some(
                builder(&format!("p{i}"))
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
        let mut sys = System {
            n,
            placement,
            front,
            boxes,
            probe,
            restarts: 0,
        };
        let backups: Vec<u64> = (1..n as u64).collect();
        sys.wait(|all| {
            all.len() == n
                && all[0].role == Role::Primary
                && all[0].live == backups
                && all[1..].iter().all(|s| s.role == Role::Backup)
        })
        .await;
        sys
    }

    async fn status(&mut self, i: usize) -> Option<PbStatus> {
        self.boxes[i].as_ref()?;
        self.probe
            .send(&format!("KVS/PrimaryBackupProxy{i}"), Status)
            .await
            .ok()?;
        let env = timeout(Duration::from_secs(2), self.probe.recv())
            .await
            .ok()??;
        env.payload
            .decode::<PbStatus>()
            .ok()
            .filter(|s| s.index == i as u64)
    }

    async fn statuses(&mut self) -> Vec<PbStatus> {
        let mut all = Vec::new();
        for i in 0..self.n {
            if let Some(s) = self.status(i).await {
                all.push(s);
            }
        }
        all
    }

    async fn wait(&mut self, done: impl Fn(&[PbStatus]) -> bool) -> Vec<PbStatus> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let all = self.statuses().await;
            if done(&all) {
                return all;
            }
            assert!(Instant::now() < deadline, "not reached: {all:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Every live copy has applied the same log and answered it all: their (log length,
    /// snapshot).
    async fn copy_states(&mut self) -> Vec<(u64, Vec<u8>)> {
        let live = self.boxes.iter().filter(|b| b.is_some()).count();
        let all = self
            .wait(|all| {
                all.len() == live
                    && all.iter().all(|s| {
                        s.role != Role::Starting
                            && s.completed == s.executed
                            && s.log_len == all[0].log_len
                    })
            })
            .await;
        let mut states = Vec::new();
        for s in all {
            let b = self.boxes[s.index as usize].as_ref().unwrap();
            states.push((
                s.log_len,
                b.snapshot(&format!("KVS/Copy{}", s.index)).await.unwrap(),
            ));
        }
        states
    }

    async fn crash(&mut self, i: usize) {
        self.boxes[i].take().expect("box running").shutdown().await;
    }

    /// Starts box `p{i}` again, empty, under a new name (see replicate.rs), with its two agents.
    async fn restart(&mut self, i: usize) {
        self.restarts += 1;
        let b = builder(&format!("p{i}-again{}", self.restarts))
            .controller_at(self.front.addr())
            .start()
            .await
            .unwrap();
        b.ready().await.unwrap();
        let hooks: Arc<dyn Hooks> = Arc::new(NoHooks);
        let factories: BTreeMap<&str, ovid::Factory> =
            primary_backup::proxies(&hooks).into_iter().collect();
        let proxy_id = format!("KVS/PrimaryBackupProxy{i}");
        let plan = &self.placement.agents[&proxy_id];
        let agent = factories[plan.kind.as_str()](&plan.config).unwrap();
        let copy_id = format!("KVS/Copy{i}");
        b.spawn(copy_id.clone(), Store::default()).unwrap();
        b.spawn(proxy_id.clone(), agent).unwrap();
        b.sync_controller().await.unwrap();
        let mut operator = self
            .front
            .endpoint(format!("operator{}", self.restarts))
            .unwrap();
        for id in [proxy_id, copy_id] {
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

/// The primary-backup store answers a generated workload exactly as the store alone does, and at
/// quiescence every copy equals the store.
#[tokio::test]
async fn replies_match_the_unreplicated_store() {
    let ops = workload(11, 300);
    let solo = unreplicated().await;
    let mut reference = solo.endpoint("client").unwrap();
    let mut sys = System::start(3).await;
    let mut client = sys.front.endpoint("client").unwrap();

    let started = Instant::now();
    for chunk in ops.chunks(10) {
        let want = window(&mut reference, chunk).await;
        let got = window(&mut client, chunk).await;
        assert_eq!(got, want, "replies differ for {chunk:?}");
    }
    println!(
        "primary_backup(3): {} operations in windows of 10, {:?} (with the reference store)",
        ops.len(),
        started.elapsed()
    );

    let states = sys.copy_states().await;
    let expected = solo.snapshot("KVS").await.unwrap();
    assert_eq!(states.len(), 3);
    for (len, state) in &states {
        assert_eq!(
            decode_store(state),
            decode_store(&expected),
            "copy at {len} differs"
        );
    }
    sys.shutdown().await;
    solo.shutdown().await;
}

/// The primary among the statuses, if exactly one proxy serves.
fn primary_of(all: &[PbStatus]) -> Option<&PbStatus> {
    let mut serving = all.iter().filter(|s| s.role == Role::Primary);
    let p = serving.next()?;
    serving.next().is_none().then_some(p)
}

/// A backup crashes: the controller declares its box dead and drops it from the view, and the
/// primary goes on; it comes back empty, catches up and is added again. Then the primary's box
/// is shut down with a put outstanding: the controller fails over to a backup, the put is
/// answered once, every acknowledged put is still there, and the old primary, started again,
/// comes back as a backup (it never serves again in a view it is not the primary of).
#[tokio::test]
async fn a_backup_crashes_then_the_primary_fails_over() {
    let mut sys = System::start(3).await;
    let mut client = sys.front.endpoint("client").unwrap();
    let mut acked: BTreeMap<String, String> = BTreeMap::new();
    let mut version = 0;

    for i in 0..30 {
        let (k, v) = (format!("k{}", i % 12), format!("first-{i}"));
        version += 1;
        assert_eq!(put(&mut client, &k, &v).await.version, version);
        acked.insert(k, v);
    }

    sys.crash(2).await;
    let crashed = Instant::now();
    version += 1;
    assert_eq!(
        put(&mut client, "k-during", "backup-down").await.version,
        version
    );
    println!(
        "backup p2 crashed: the next put took {:?} (the controller declares its box dead, then a view without it)",
        crashed.elapsed()
    );
    acked.insert("k-during".into(), "backup-down".into());
    let all = sys
        .wait(|all| all.first().is_some_and(|p| p.live == [1]))
        .await;
    assert_eq!(all[0].role, Role::Primary);
    for i in 0..20 {
        let (k, v) = (format!("k{}", i % 12), format!("second-{i}"));
        version += 1;
        assert_eq!(put(&mut client, &k, &v).await.version, version);
        acked.insert(k, v);
    }

    let restarted = Instant::now();
    sys.restart(2).await;
    let all = sys
        .wait(|all| all.first().is_some_and(|p| p.live == [1, 2]))
        .await;
    let view_before = all[0].view;
    let states = sys.copy_states().await;
    println!(
        "backup p2 restarted, caught up ({} entries) and was added to view {view_before} in {:?}",
        states[0].0,
        restarted.elapsed()
    );
    assert_eq!(states.len(), 3);
    assert!(states.iter().all(|s| s.1 == states[0].1));
    assert_eq!(decode_store(&states[0].1).map, acked);

    sys.crash(0).await;
    let crashed = Instant::now();
    client
        .send(
            "KVS",
            Put {
                key: "k-while-down".into(),
                value: "failover".into(),
            },
        )
        .await
        .unwrap();
    let env = timeout(REPLY_TIMEOUT, client.recv())
        .await
        .expect("the put is answered by the new primary")
        .unwrap();
    let recovered = crashed.elapsed();
    version += 1;
    assert_eq!(
        env.payload.decode::<PutOk>().unwrap().version,
        version,
        "applied once, after every acknowledged put"
    );
    acked.insert("k-while-down".into(), "failover".into());
    let all = sys.wait(|all| primary_of(all).is_some()).await;
    let new_primary = primary_of(&all).unwrap().clone();
    assert_ne!(new_primary.index, 0);
    assert!(new_primary.view > view_before);
    println!(
        "primary p0 crashed: p{} is primary of view {} and answered the outstanding put {recovered:?} after the crash",
        new_primary.index, new_primary.view
    );
    for (k, v) in &acked {
        assert_eq!(
            get(&mut client, k).await.value.as_ref(),
            Some(v),
            "acknowledged put of {k} lost"
        );
    }

    // The old primary comes back empty: it joins the new primary as a backup.
    sys.restart(0).await;
    let all = sys
        .wait(|all| {
            primary_of(all).is_some_and(|p| p.index == new_primary.index && p.live.len() == 2)
                && all.iter().any(|s| s.index == 0 && s.role == Role::Backup)
        })
        .await;
    assert_eq!(all.iter().filter(|s| s.role == Role::Primary).count(), 1);
    version += 1;
    assert_eq!(
        put(&mut client, "k-after", "three-again").await.version,
        version
    );
    acked.insert("k-after".into(), "three-again".into());
    let states = sys.copy_states().await;
    assert_eq!(states.len(), 3);
    assert!(states.iter().all(|s| s.1 == states[0].1));
    assert_eq!(decode_store(&states[0].1).map, acked);
    sys.shutdown().await;
}

/// Three free loopback addresses for the controller replicas (each must know the others').
fn free_addrs(n: usize) -> Vec<String> {
    let listeners: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().to_string())
        .collect()
}

/// The replica the live controller replicas agree leads, asked from an endpoint of `from`.
async fn controller_leader(from: &BoxHandle, live: &[usize]) -> usize {
    use ovid::controller_group::{ControllerStatus, GetControllerStatus, replica_id};
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut round = 0;
    loop {
        round += 1;
        let mut probe = from.endpoint(format!("leader-probe{round}")).unwrap();
        let mut leaders = Vec::new();
        for (req, i) in live.iter().enumerate() {
            probe.send_physical(&replica_id(*i), GetControllerStatus { req: req as u64 });
            if let Ok(Ok((_, s))) = timeout(
                Duration::from_secs(2),
                probe.recv_message::<ControllerStatus>(),
            )
            .await
            {
                leaders.push(s.leader.filter(|_| s.active));
            }
        }
        if leaders.len() == live.len()
            && let Some(Some(l)) = leaders.first()
            && live.contains(&(*l as usize))
            && leaders.iter().all(|x| *x == Some(*l))
        {
            return *l as usize;
        }
        assert!(
            Instant::now() < deadline,
            "no controller leader: {leaders:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// With the controller itself replicated (`controller |> replicate(3)`), the failure detector
/// and the views are the replicated controller's: its leader's box is shut down, then the
/// primary's box; the new leader, which never pinged anything before it led, declares the
/// primary's box dead and fails over to a backup, and no acknowledged put is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_primary_fails_over_under_a_replicated_controller() {
    use ovid::ControllerReplica;
    let placement = placement(3);
    let addrs = free_addrs(3);
    let mut controllers = Vec::new();
    for i in 0..3 {
        let replica = ControllerReplica::new(i, 3, Controller::new(placement.clone())).unwrap();
        controllers.push(Some(
            BoxBuilder::new(format!("controller{i}"))
                .with_controller_replica(i, replica, addrs.clone())
                .start()
                .await
                .unwrap(),
        ));
    }
    let front = builder("front")
        .controllers_at(addrs.clone())
        .start()
        .await
        .unwrap();
    let mut boxes = Vec::new();
    for i in 0..3 {
        boxes.push(Some(
            builder(&format!("p{i}"))
                .controllers_at(addrs.clone())
                .start()
                .await
                .unwrap(),
        ));
    }
    front.ready().await.unwrap();
    for b in boxes.iter().flatten() {
        b.ready().await.unwrap();
    }
    let mut client = front.endpoint("client").unwrap();
    let mut acked: BTreeMap<String, String> = BTreeMap::new();
    let mut version = 0;
    for i in 0..20 {
        let (k, v) = (format!("k{}", i % 8), format!("first-{i}"));
        version += 1;
        assert_eq!(put(&mut client, &k, &v).await.version, version);
        acked.insert(k, v);
    }

    let leader = controller_leader(&front, &[0, 1, 2]).await;
    controllers[leader].take().unwrap().shutdown().await;
    let live: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    let new_leader = controller_leader(&front, &live).await;
    println!("controller replica {leader} shut down; replica {new_leader} leads");
    for i in 0..10 {
        let (k, v) = (format!("k{}", i % 8), format!("second-{i}"));
        version += 1;
        assert_eq!(put(&mut client, &k, &v).await.version, version);
        acked.insert(k, v);
    }

    boxes[0].take().unwrap().shutdown().await;
    let crashed = Instant::now();
    version += 1;
    assert_eq!(
        put(&mut client, "k-failover", "new-primary").await.version,
        version,
        "answered by the new primary, after every acknowledged put"
    );
    println!(
        "primary p0 shut down: the replicated controller failed over, the next put took {:?}",
        crashed.elapsed()
    );
    acked.insert("k-failover".into(), "new-primary".into());
    for (k, v) in &acked {
        assert_eq!(
            get(&mut client, k).await.value.as_ref(),
            Some(v),
            "acknowledged put of {k} lost"
        );
    }
    drop(client);
    for b in boxes.into_iter().flatten() {
        b.shutdown().await;
    }
    front.shutdown().await;
    for c in controllers.into_iter().flatten() {
        c.shutdown().await;
    }
}

//! The replicated controller: three controller boxes and two agent boxes on loopback TCP. The
//! leading replica's box is killed; routing misses are still answered, reconfiguration still
//! works, and a restarted replica catches up and takes part in the quorum again. With data
//! directories, every replica's box may stop at once: they come back from their disks.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use ovid::controller::{AgentPlan, Place, SetRoute};
use ovid::controller_group::{ControllerStatus, GetControllerStatus, replica_id};
use ovid::{BoxBuilder, BoxHandle, Controller, ControllerReplica, Placement};

/// An agent forwarding puts to `KVS` (its route says which shard) and the answers to `client`.
#[derive(Default)]
struct Front;

#[ovid::agent(no_snapshot)]
impl Front {
    fn on_put(&mut self, ctx: &mut ovid::Context, put: Put) {
        ctx.send("KVS", put);
    }
    fn on_put_ok(&mut self, ctx: &mut ovid::Context, ok: PutOk) {
        ctx.send_physical("client", ok);
    }
}

fn placement() -> Placement {
    Placement::new()
        .agent("KVS/Shard0", "a", "Kvs")
        .agent("KVS/Shard1", "b", "Kvs")
        .agent("front", "a", "Front")
        .route("front", "KVS", "KVS/Shard0")
}

/// Three free loopback addresses (the replicas must know each other's before they start).
fn free_addrs(n: usize) -> Vec<String> {
    let listeners: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().to_string())
        .collect()
}

async fn controller_box(index: usize, addrs: &[String]) -> BoxHandle {
    controller_box_in(index, addrs, None).await
}

/// Controller replica `index`'s box, keeping its Paxos state in `data` if given.
async fn controller_box_in(index: usize, addrs: &[String], data: Option<&Path>) -> BoxHandle {
    let replica = ControllerReplica::new(index, addrs.len(), Controller::new(placement())).unwrap();
    let mut b = BoxBuilder::new(format!("controller{index}"));
    if let Some(dir) = data {
        b = b.data_dir(dir);
    }
    b.with_controller_replica(index, replica, addrs.to_vec())
        .start()
        .await
        .unwrap()
}

async fn agent_box(name: &str, addrs: &[String]) -> BoxHandle {
    BoxBuilder::new(name)
        .controllers_at(addrs.to_vec())
        .kind("Kvs", |_| Kvs::default())
        .kind("Front", |_| Front)
        .start()
        .await
        .unwrap()
}

/// Every live replica's status, asked from an endpoint of `from`.
async fn statuses(from: &BoxHandle, live: &[usize]) -> Vec<ControllerStatus> {
    let mut probe = from.endpoint("probe").unwrap();
    let mut out = Vec::new();
    for (req, i) in live.iter().enumerate() {
        probe.send_physical(&replica_id(*i), GetControllerStatus { req: req as u64 });
        let (_, status): (_, ControllerStatus) =
            tokio::time::timeout(Duration::from_secs(5), probe.recv_message())
                .await
                .expect("a live replica answers")
                .unwrap();
        out.push(status);
    }
    drop(probe);
    // Let the endpoint's slot go before the next probe reuses the name.
    tokio::task::yield_now().await;
    out
}

/// Waits until the live replicas agree on a leader among them; returns it.
async fn leader(from: &BoxHandle, live: &[usize]) -> usize {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = statuses(from, live).await;
        if let Some(l) = s[0].leader
            && live.contains(&(l as usize))
            && s.iter().all(|x| x.active && x.leader == Some(l))
        {
            return l as usize;
        }
        assert!(Instant::now() < deadline, "no leader elected: {s:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn put_through_front(client: &mut ovid::Endpoint, key: &str) {
    client.send_physical(
        "front",
        Put {
            key: key.into(),
            value: "v".into(),
        },
    );
    let (_, ok): (_, PutOk) = tokio::time::timeout(Duration::from_secs(10), client.recv_message())
        .await
        .expect("the put is answered")
        .unwrap();
    assert_eq!(ok.key, key);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_survives_its_leaders_crash_and_a_restarted_replica_catches_up() {
    init_tracing();
    let addrs = free_addrs(3);
    let mut controllers: Vec<Option<BoxHandle>> = Vec::new();
    for i in 0..3 {
        controllers.push(Some(controller_box(i, &addrs).await));
    }
    let a = agent_box("a", &addrs).await;
    let b = agent_box("b", &addrs).await;
    tokio::time::timeout(Duration::from_secs(10), async {
        a.ready().await.unwrap();
        b.ready().await.unwrap();
    })
    .await
    .expect("the replicated controller registers the boxes");
    assert!(a.is_running("KVS/Shard0") && a.is_running("front") && b.is_running("KVS/Shard1"));

    let mut client = a.endpoint("client").unwrap();
    put_through_front(&mut client, "before").await;

    // Kill the leading replica's box.
    let first = leader(&a, &[0, 1, 2]).await;
    let crashed_at = Instant::now();
    controllers[first].take().unwrap().shutdown().await;
    eprintln!("leader's box shut down in {:?}", crashed_at.elapsed());
    let live: Vec<usize> = (0..3).filter(|i| *i != first).collect();

    // A routing miss in `b` (it has never sent to `KVS/Shard0`) is still answered.
    let mut other = b.endpoint("other").unwrap();
    let got: GetOk = tokio::time::timeout(
        Duration::from_secs(10),
        other.request(
            "KVS/Shard0",
            Get {
                key: "before".into(),
            },
        ),
    )
    .await
    .expect("the BRT miss is answered after the leader's crash")
    .unwrap();
    assert_eq!(got.value.as_deref(), Some("v"));
    let answered_after = crashed_at.elapsed();
    let new_leader = leader(&a, &live).await;
    assert_ne!(new_leader, first);

    // Reconfiguration still works: point `front` at Shard1, and place a new agent in `b`.
    a.sync_controller().await.unwrap(); // `a` now talks to a live replica
    let mut op = a.endpoint("op").unwrap();
    op.send(
        "controller",
        SetRoute {
            agent: "front".into(),
            ident: "KVS".into(),
            physical: Some("KVS/Shard1".into()),
        },
    )
    .await
    .unwrap();
    op.send(
        "controller",
        Place {
            id: "KVS/Shard2".into(),
            plan: AgentPlan {
                in_box: "b".into(),
                kind: "Kvs".into(),
                config: vec![],
            },
            state: None,
        },
    )
    .await
    .unwrap();
    a.sync_controller().await.unwrap();
    // The route update may still be on its way (the leader's box asks where `front` runs
    // first): put until a put lands in Shard1.
    let deadline = Instant::now() + Duration::from_secs(5);
    for n in 0.. {
        let key = format!("after{n}");
        put_through_front(&mut client, &key).await;
        let on1: GetOk = client.request("KVS/Shard1", Get { key }).await.unwrap();
        if on1.value.is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "the route change never took");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while !b.is_running("KVS/Shard2") {
        assert!(Instant::now() < deadline, "the placed agent never started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eprintln!("BRT miss answered {answered_after:?} after the leader's box was shut down");

    // The crashed replica comes back empty, at its address: it recovers from its peers.
    controllers[first] = Some(controller_box(first, &addrs).await);
    let restarted_at = Instant::now();
    let all = [0, 1, 2];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = statuses(&a, &all).await;
        let target = s.iter().map(|x| x.applied).max().unwrap();
        if s.iter().all(|x| x.active && x.applied == target) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the restarted replica never caught up: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "restarted replica caught up in {:?}",
        restarted_at.elapsed()
    );

    // With another replica down, the restarted one is needed for every quorum: service goes on.
    let victim = live.into_iter().find(|i| *i != new_leader).unwrap();
    controllers[victim].take().unwrap().shutdown().await;
    let mut late = b.endpoint("late").unwrap();
    let got: GetOk = tokio::time::timeout(
        Duration::from_secs(10),
        late.request("KVS/Shard2", Get { key: "none".into() }),
    )
    .await
    .expect("answered with the restarted replica in the quorum")
    .unwrap();
    assert_eq!(got.value, None);

    drop((client, other, op, late));
    a.shutdown().await;
    b.shutdown().await;
    for c in controllers.into_iter().flatten() {
        c.shutdown().await;
    }
}

/// With data directories, all three controller replicas' boxes stop at once and start again
/// (same addresses, same directories). Each takes up its Paxos state from its disk rather than
/// starting the group afresh, so the controller still knows the boxes that registered before and
/// where every agent runs: a routing miss of a box that never asked before is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_controller_replica_restarts_from_its_data_directory() {
    init_tracing();
    let addrs = free_addrs(3);
    let dirs: Vec<PathBuf> = (0..3)
        .map(|i| {
            let dir = std::env::temp_dir().join(format!(
                "ovid-controller-group-{}/controller{i}",
                std::process::id()
            ));
            let _ = std::fs::remove_dir_all(&dir);
            dir
        })
        .collect();
    let mut controllers = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        controllers.push(controller_box_in(i, &addrs, Some(dir)).await);
    }
    let a = agent_box("a", &addrs).await;
    let b = agent_box("b", &addrs).await;
    tokio::time::timeout(Duration::from_secs(10), async {
        a.ready().await.unwrap();
        b.ready().await.unwrap();
    })
    .await
    .expect("the replicated controller registers the boxes");
    let mut client = a.endpoint("client").unwrap();
    put_through_front(&mut client, "before").await;
    leader(&a, &[0, 1, 2]).await;
    let applied = statuses(&a, &[0, 1, 2])
        .await
        .iter()
        .map(|s| s.applied)
        .max()
        .unwrap();
    assert!(applied > 0, "the controller's log has entries");

    for c in controllers.drain(..) {
        c.shutdown().await;
    }
    let restarted_at = Instant::now();
    for (i, dir) in dirs.iter().enumerate() {
        controllers.push(controller_box_in(i, &addrs, Some(dir)).await);
    }
    let l = leader(&a, &[0, 1, 2]).await;
    let s = statuses(&a, &[0, 1, 2]).await;
    assert!(
        s.iter().all(|x| x.decided >= applied),
        "every replica restored the decided log from its disk (at least {applied}): {s:?}"
    );
    eprintln!(
        "all three controller replicas restarted from disk; replica {l} leads {:?} later",
        restarted_at.elapsed()
    );

    // `b` never sent to `KVS/Shard0`: its BRT miss needs the controller to know box `a`, which
    // registered before the restart.
    let mut other = b.endpoint("other").unwrap();
    let got: GetOk = tokio::time::timeout(
        Duration::from_secs(10),
        other.request(
            "KVS/Shard0",
            Get {
                key: "before".into(),
            },
        ),
    )
    .await
    .expect("the BRT miss is answered by the restored controller")
    .unwrap();
    assert_eq!(got.value.as_deref(), Some("v"));

    drop((client, other));
    a.shutdown().await;
    b.shutdown().await;
    for c in controllers {
        c.shutdown().await;
    }
    for dir in &dirs {
        let _ = std::fs::remove_dir_all(dir);
    }
}

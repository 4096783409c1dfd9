//! Several boxes and the controller: ART and BRT misses, placement, moving an agent.

mod common;

use common::*;
use ovid::controller::{AgentPlan, Place, SetRoute};
use ovid::{BoxBuilder, Controller, LattNode, Placement};

/// A placement: the store `KVS` sharded in two, both shards in box `back`.
fn sharded() -> Placement {
    Placement::new()
        .agent("KVS/Shard0", "back", "Kvs")
        .agent("KVS/Shard1", "back", "Kvs")
        .route("client", "KVS", "KVS/Shard1")
        .latt(LattNode::system(
            "system",
            vec![LattNode::system(
                "KVS",
                vec![
                    LattNode::agent("KVS/Shard0", "X"),
                    LattNode::agent("KVS/Shard1", "X"),
                ],
            )],
        ))
}

#[tokio::test]
async fn art_and_brt_misses_are_resolved_by_the_controller() {
    init_tracing();
    let front = BoxBuilder::new("front")
        .with_controller(Controller::new(sharded()))
        .start()
        .await
        .unwrap();
    let back = BoxBuilder::new("back")
        .controller_at(front.addr())
        .kind("Kvs", |_| Kvs::default())
        .start()
        .await
        .unwrap();
    front.ready().await.unwrap();
    back.ready().await.unwrap();
    assert!(
        back.is_running("KVS/Shard0") && back.is_running("KVS/Shard1"),
        "the controller started the placed agents"
    );

    let mut client = front.endpoint("client").unwrap();
    // ART miss: `client` reaches `KVS` as `KVS/Shard1` (its route); BRT miss: that runs in `back`.
    let ok: PutOk = client
        .request(
            "KVS",
            Put {
                key: "k".into(),
                value: "v".into(),
            },
        )
        .await
        .unwrap();
    assert_eq!(ok.key, "k");
    let m = front.metrics();
    assert_eq!((m.art_misses, m.brt_misses), (1, 1));
    assert_eq!(front.brt_entry("KVS/Shard1").as_deref(), Some(back.addr()));

    // Cached now: no more questions.
    for _ in 0..10 {
        let _: GetOk = client
            .request("KVS", Get { key: "k".into() })
            .await
            .unwrap();
    }
    let m = front.metrics();
    assert_eq!((m.art_misses, m.brt_misses), (1, 1));
    // The shard replied to `client` without asking: `back` learnt where it runs from the request.
    assert_eq!(back.metrics().brt_misses, 0);

    // Another endpoint without a route: the LATT gives `KVS`'s first placed physical agent.
    let mut other = front.endpoint("other").unwrap();
    assert_eq!(&*other.resolve("KVS").await.unwrap(), "KVS/Shard0");
    let got: GetOk = other.request("KVS", Get { key: "k".into() }).await.unwrap();
    assert_eq!(got.value, None, "Shard0 does not hold `k`");

    // Unknown identifiers are refused by the controller.
    assert!(other.send("nobody", Get { key: "k".into() }).await.is_err());

    back.shutdown().await;
    front.shutdown().await;
}

#[tokio::test]
async fn an_agent_moves_between_boxes_with_its_state() {
    init_tracing();
    let placement = Placement::new().agent("KVS", "b1", "Kvs");
    let c = BoxBuilder::new("c")
        .with_controller(Controller::new(placement))
        .start()
        .await
        .unwrap();
    let b1 = BoxBuilder::new("b1")
        .controller_at(c.addr())
        .kind("Kvs", |_| Kvs::default())
        .start()
        .await
        .unwrap();
    let b2 = BoxBuilder::new("b2")
        .controller_at(c.addr())
        .kind("Kvs", |_| Kvs::default())
        .start()
        .await
        .unwrap();
    b1.ready().await.unwrap();
    b2.ready().await.unwrap();

    let mut client = c.endpoint("client").unwrap();
    let _: PutOk = client
        .request(
            "KVS",
            Put {
                key: "k".into(),
                value: "v".into(),
            },
        )
        .await
        .unwrap();

    // Wedge-and-move: stop it (getting its state), place it in b2 from that state.
    let state = b1.stop_agent("KVS").await.unwrap();
    b1.sync_controller().await.unwrap(); // the controller has seen `AgentStopped`
    let mut operator = c.endpoint("operator").unwrap();
    let place = Place {
        id: "KVS".into(),
        plan: AgentPlan {
            in_box: "b2".into(),
            kind: "Kvs".into(),
            config: vec![],
        },
        state: Some(state),
    };
    operator.send("controller", place).await.unwrap();
    b2.sync_controller().await.unwrap();
    while !b2.is_running("KVS") {
        tokio::task::yield_now().await;
    }
    // The controller invalidated the stale BRT entries; `c` asks again and finds b2. (The
    // Pong reaches c's manager after the invalidation, so it has been applied.)
    c.sync_controller().await.unwrap();
    let got: GetOk = client
        .request("KVS", Get { key: "k".into() })
        .await
        .unwrap();
    assert_eq!(got.value.as_deref(), Some("v"));
    assert_eq!(c.brt_entry("KVS").as_deref(), Some(b2.addr()));
    assert_eq!(c.metrics().brt_misses, 2);

    for b in [b1, b2, c] {
        b.shutdown().await;
    }
}

#[tokio::test]
async fn the_controller_can_change_an_agents_route() {
    // An agent forwarding to `KVS`: the controller re-points its ART while it runs.
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
    let placement = Placement::new()
        .agent("KVS/A", "solo", "Kvs")
        .agent("KVS/B", "solo", "Kvs")
        .agent("front", "solo", "Front")
        .route("front", "KVS", "KVS/A");
    let b = BoxBuilder::new("solo")
        .with_controller(Controller::new(placement))
        .kind("Kvs", |_| Kvs::default())
        .kind("Front", |_| Front)
        .start()
        .await
        .unwrap();
    b.ready().await.unwrap();
    let mut client = b.endpoint("client").unwrap();
    client.send_physical(
        "front",
        Put {
            key: "x".into(),
            value: "1".into(),
        },
    );
    let _: PutOk = client.recv_message().await.unwrap().1;
    let mut op = b.endpoint("op").unwrap();
    op.send(
        "controller",
        SetRoute {
            agent: "front".into(),
            ident: "KVS".into(),
            physical: Some("KVS/B".into()),
        },
    )
    .await
    .unwrap();
    b.sync_controller().await.unwrap();
    client.send_physical(
        "front",
        Put {
            key: "y".into(),
            value: "2".into(),
        },
    );
    let _: PutOk = client.recv_message().await.unwrap().1;
    let a: GetOk = client
        .request("KVS/A", Get { key: "y".into() })
        .await
        .unwrap();
    let bb: GetOk = client
        .request("KVS/B", Get { key: "y".into() })
        .await
        .unwrap();
    assert_eq!((a.value, bb.value.as_deref()), (None, Some("2")));
    b.shutdown().await;
}

//! One box: co-located agents, timers (in paused time), snapshots, start/stop, rejections.

mod common;

use std::time::Duration;

use common::*;
use ovid::{BoxBuilder, Context, Error};

#[tokio::test]
async fn co_located_put_and_get_without_serialization() {
    init_tracing();
    let b = BoxBuilder::new("solo").start().await.unwrap();
    b.spawn("KVS", Kvs::default()).unwrap();
    let mut client = b.endpoint("client").unwrap();
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
    assert_eq!(ok, PutOk { key: "k".into() });
    let got: GetOk = client
        .request("KVS", Get { key: "k".into() })
        .await
        .unwrap();
    assert_eq!(got.value.as_deref(), Some("v"));
    let m = b.metrics();
    assert_eq!(m.local_deliveries, 4);
    assert_eq!(m.frames_out, 0, "nothing crossed a socket");
    assert_eq!(m.rejections, 0);
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn timers_run_on_the_box_clock() {
    let b = BoxBuilder::new("clock").start().await.unwrap();
    b.spawn("ticker", Ticker::default()).unwrap();
    let mut client = b.endpoint("client").unwrap();
    tokio::time::sleep(Duration::from_millis(350)).await;
    let Count(n) = client.request("ticker", HowMany).await.unwrap();
    assert_eq!(n, 3);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let Count(n) = client.request("ticker", HowMany).await.unwrap();
    assert_eq!(n, 5, "the agent stopped re-arming after five ticks");
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn cancelled_and_reset_timers() {
    #[derive(Default)]
    struct T {
        fired: Vec<String>,
    }
    #[ovid::agent(no_snapshot)]
    impl T {
        fn on_start(&mut self, ctx: &mut Context) {
            ctx.set_timer("a", Duration::from_millis(100));
            ctx.set_timer("b", Duration::from_millis(100));
            ctx.set_timer("c", Duration::from_millis(100));
            ctx.cancel_timer("b");
            ctx.set_timer("c", Duration::from_millis(300)); // re-armed: fires once, later
        }
        fn on_timer(&mut self, _ctx: &mut Context, name: &str) {
            self.fired.push(name.to_string());
        }
        fn on_how_many(&mut self, _ctx: &mut Context, _q: HowMany) -> Count {
            Count(
                self.fired.len() as u64 * 10
                    + if self.fired.last().map(String::as_str) == Some("c") {
                        1
                    } else {
                        0
                    },
            )
        }
    }
    let b = BoxBuilder::new("timers").start().await.unwrap();
    b.spawn("t", T::default()).unwrap();
    let mut client = b.endpoint("client").unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        client.request::<_, Count>("t", HowMany).await.unwrap(),
        Count(10)
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        client.request::<_, Count>("t", HowMany).await.unwrap(),
        Count(21)
    );
    b.shutdown().await;
}

#[tokio::test]
async fn stop_snapshot_and_restore_elsewhere() {
    let b = BoxBuilder::new("snap").start().await.unwrap();
    b.spawn("KVS", Kvs::default()).unwrap();
    assert!(matches!(
        b.spawn("KVS", Kvs::default()),
        Err(Error::AgentExists(_))
    ));
    let mut client = b.endpoint("client").unwrap();
    let _: PutOk = client
        .request(
            "KVS",
            Put {
                key: "a".into(),
                value: "1".into(),
            },
        )
        .await
        .unwrap();

    // Wedged, the agent takes no transitions; the snapshot is consistent.
    b.wedge("KVS").unwrap();
    client
        .send(
            "KVS",
            Put {
                key: "b".into(),
                value: "2".into(),
            },
        )
        .await
        .unwrap();
    let state = b.snapshot("KVS").await.unwrap();
    b.unwedge("KVS").unwrap();
    let _: PutOk = client.recv_message().await.unwrap().1;

    let last = b.stop_agent("KVS").await.unwrap();
    assert!(!b.is_running("KVS"));
    b.spawn_restored("KVS2", Kvs::default(), state).unwrap();
    let got: GetOk = client
        .request("KVS2", Get { key: "a".into() })
        .await
        .unwrap();
    assert_eq!(got.value.as_deref(), Some("1"));
    let got: GetOk = client
        .request("KVS2", Get { key: "b".into() })
        .await
        .unwrap();
    assert_eq!(
        got.value, None,
        "the snapshot was taken while wedged, before `b`"
    );

    b.spawn_restored("KVS3", Kvs::default(), last).unwrap();
    let got: GetOk = client
        .request("KVS3", Get { key: "b".into() })
        .await
        .unwrap();
    assert_eq!(got.value.as_deref(), Some("2"));
    b.shutdown().await;
}

#[tokio::test]
async fn unknown_messages_and_identifiers_are_rejected_and_counted() {
    let b = BoxBuilder::new("reject").start().await.unwrap();
    b.spawn("KVS", Kvs::default()).unwrap();
    let mut client = b.endpoint("client").unwrap();
    client.send("KVS", HowMany).await.unwrap(); // Kvs has no handler for it
    client
        .send("nobody", Get { key: "k".into() })
        .await
        .unwrap();
    // The store still works, and the rejection came first (one agent, one queue).
    let got: GetOk = client
        .request("KVS", Get { key: "k".into() })
        .await
        .unwrap();
    assert_eq!(got.value, None);
    assert_eq!(b.metrics().rejections, 2);
    b.shutdown().await;
}

#[tokio::test]
async fn a_panicking_agent_stops_without_taking_the_box_down() {
    let b = BoxBuilder::new("panic").start().await.unwrap();
    b.spawn("ticker", Ticker::default()).unwrap();
    b.spawn("KVS", Kvs::default()).unwrap();
    let mut client = b.endpoint("client").unwrap();
    client.send("ticker", Boom).await.unwrap();
    b.wait_stopped("ticker").await;
    client.send("ticker", HowMany).await.unwrap(); // dead: rejected
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
    assert_eq!(b.metrics().rejections, 2);
    b.shutdown().await;
}

#[test]
fn an_agent_runs_without_a_box() {
    // An agent is a pure state machine: drive it with a bare context.
    use ovid::{Agent, Effect, Payload};
    let mut kvs = Kvs::default();
    let mut ctx = Context::new("KVS");
    ctx.begin(Some("client".into()), 0);
    kvs.on_message(
        &mut ctx,
        Payload::new(Put {
            key: "k".into(),
            value: "v".into(),
        }),
    )
    .unwrap();
    let effects = ctx.take_effects();
    assert_eq!(effects.len(), 1);
    let Effect::SendPhysical { to, payload } = effects.into_iter().next().unwrap() else {
        panic!("a reply")
    };
    assert_eq!(&*to, "client");
    assert_eq!(
        payload.decode::<PutOk>().unwrap(),
        PutOk { key: "k".into() }
    );
    assert_eq!(kvs.accepts(), &["Put", "Get"]);
    let snap = kvs.snapshot().unwrap();
    let mut other = Kvs::default();
    other.restore(&snap).unwrap();
    assert_eq!(other.store.get("k").map(String::as_str), Some("v"));
}

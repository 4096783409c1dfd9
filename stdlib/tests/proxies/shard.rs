//! `shard(3, by: key)`: replies identical to the unsharded store; the shards' state maps back
//! to the store's; a message without the key is rejected and counted.

use ovid_stdlib::expansion::{Args, Value};
use ovid_stdlib::shard;

use crate::common::*;

fn args(n: i64) -> Args {
    Args::from([
        ("n".to_string(), Value::Int(n)),
        ("by".to_string(), Value::Str("key".into())),
    ])
}

#[tokio::test]
async fn sharded_store_answers_like_the_store_and_its_state_maps_back() {
    let e = expand(shard::expand, &args(3), 3);
    let (mut sys, mut plain) = differential(&e, "Kvs", 3, false, 11).await;

    // Refinement mapping: the union of the shards is the store; every key is where it hashes.
    let mut shards = Vec::new();
    for j in 0..3 {
        shards.push(store_of(sys.back(), &format!("KVS/Shard{j}")).await);
    }
    assert!(
        shards.iter().all(|s| !s.is_empty()),
        "the workload reaches every shard"
    );
    assert!(shard::misplaced(&shards).is_empty());
    let want = store_of(&plain.boxes[0], "KVS").await;
    assert_eq!(shard::merge(shards.clone()), want);
    assert_eq!(
        shard::split(want, 3),
        shards,
        "the inverse mapping gives the shards back"
    );

    // A message without the key field: rejected by the ingress proxy, counted, not delivered.
    let before = sys.boxes[0].metrics().rejections;
    sys.endpoints[0].send("KVS", Stats).await.unwrap();
    assert!(recv_within(&mut sys.endpoints[0], 100).await.is_none());
    assert_eq!(sys.boxes[0].metrics().rejections, before + 1);
    // ...and the proxy goes on.
    send(&mut sys.endpoints[0], &Op::Get(Get { key: "k1".into() })).await;
    let got = reply(recv(&mut sys.endpoints[0]).await);
    send(&mut plain.endpoints[0], &Op::Get(Get { key: "k1".into() })).await;
    assert_eq!(got, reply(recv(&mut plain.endpoints[0]).await));

    sys.shutdown().await;
    plain.shutdown().await;
}

#[tokio::test]
async fn a_single_shard_is_the_store() {
    let e = expand(shard::expand, &args(1), 2);
    let (sys, plain) = differential(&e, "Kvs", 2, true, 12).await;
    sys.shutdown().await;
    plain.shutdown().await;
}

/// Proxies need not sit next to the senders: ingress proxies in a box of their own, egress
/// proxies and shards in another. Forwarded messages carry the client as their sender, so the
/// shards' box first learns the client at the ingress box; replies then take one more hop.
#[tokio::test]
async fn proxies_in_a_box_of_their_own_still_answer() {
    let e = expand(shard::expand, &args(2), 2);
    let placement = placement_with(&e, "Kvs", |_, proxy| {
        if proxy == Some("ShardIngressProxy") {
            "mid"
        } else {
            "back"
        }
    });
    let mut sys = start_placed(&e, placement, &["mid", "back"], 2).await;
    let ops = workload(13, 100, 2, false);
    let mut plain = start_plain("Kvs", 2).await;
    assert_eq!(
        run_sequential(&mut sys, &ops).await,
        run_sequential(&mut plain, &ops).await
    );
    assert_eq!(sys.rejections(), 0);
    sys.shutdown().await;
    plain.shutdown().await;
}

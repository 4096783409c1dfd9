//! `batch(size, linger)`: replies identical; full batches leave at once, partial ones when the
//! linger timer fires.

use std::time::{Duration, Instant};

use ovid::{Agent, Context, Effect, Payload};
use ovid_stdlib::batch::{self, Batch};
use ovid_stdlib::expansion::{Args, Value};
use ovid_stdlib::proxy;

use crate::common::*;

fn args(size: i64, linger_ms: i64) -> Args {
    Args::from([
        ("size".to_string(), Value::Int(size)),
        ("linger".to_string(), Value::Int(linger_ms)),
    ])
}

#[tokio::test]
async fn batched_channel_answers_like_the_store() {
    let e = expand(batch::expand, &args(8, 1), 3);
    let (sys, plain) = differential(&e, "Kvs", 3, true, 31).await;
    sys.shutdown().await;
    plain.shutdown().await;
}

#[tokio::test]
async fn a_partial_batch_is_flushed_by_linger() {
    // Batches of 100 that linger 40 ms: three requests wait for the timer, then all arrive.
    let e = expand(batch::expand, &args(100, 40), 1);
    let mut sys = start_transformed(&e, "Kvs", 1).await;
    let ep = &mut sys.endpoints[0];
    ep.resolve("KVS").await.unwrap();
    let start = Instant::now();
    for i in 0..3 {
        send(
            ep,
            &Op::Put(Put {
                key: format!("k{i}"),
                value: "v".into(),
            }),
        )
        .await;
    }
    for i in 0..3 {
        assert_eq!(
            reply(recv(ep).await),
            Reply::PutOk {
                key: format!("k{i}"),
                previous: None
            }
        );
    }
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(35),
        "the batch left before its linger: {waited:?}"
    );
    assert!(waited < Duration::from_millis(1000), "{waited:?}");
    sys.shutdown().await;
}

/// The encoder driven by hand: what it asks of its context, step by step.
#[test]
fn the_encoder_holds_messages_until_full_or_lingered() {
    let config = serde_json::to_vec(&Args::from([
        ("size".to_string(), Value::Int(3)),
        ("linger_ms".to_string(), Value::Int(5)),
        (
            "targets".to_string(),
            Value::List(vec!["KVS/BatchDecoder0".into()]),
        ),
    ]))
    .unwrap();
    let make = batch::proxies(&(std::sync::Arc::new(proxy::NoHooks) as _))
        .into_iter()
        .find(|(k, _)| *k == "BatchEncoder")
        .unwrap()
        .1;
    let mut enc = make(&config).unwrap();
    let mut ctx = Context::new("KVS/BatchEncoder0");
    let put = |enc: &mut Box<dyn Agent>, ctx: &mut Context, tag: u64| {
        ctx.begin(Some("client0".into()), 0);
        ctx.set_tag(tag);
        enc.on_message(
            ctx,
            Payload::new(Put {
                key: format!("k{tag}"),
                value: "v".into(),
            }),
        )
        .unwrap();
        ctx.take_effects()
    };
    // The first message arms the timer; the second waits; the third fills the batch.
    assert!(
        matches!(put(&mut enc, &mut ctx, 1).as_slice(), [Effect::SetTimer { after, .. }] if *after == Duration::from_millis(5))
    );
    assert!(put(&mut enc, &mut ctx, 2).is_empty());
    let effects = put(&mut enc, &mut ctx, 3);
    let batch = sent_batch(effects);
    assert_eq!(
        batch.items.iter().map(|i| i.tag).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert!(
        batch
            .items
            .iter()
            .all(|i| i.from == "client0" && i.name == "Put")
    );
    let first: Put = postcard::from_bytes(&batch.items[0].bytes).unwrap();
    assert_eq!(first.key, "k1");

    // One message, then the timer: a batch of one.
    assert_eq!(put(&mut enc, &mut ctx, 4).len(), 1);
    ctx.begin(None, 0);
    enc.on_timer(&mut ctx, "linger");
    assert_eq!(sent_batch(ctx.take_effects()).items.len(), 1);
    // Nothing pending: the timer sends nothing.
    enc.on_timer(&mut ctx, "linger");
    assert!(ctx.take_effects().is_empty());
}

/// However large `size`, a batch leaves once it holds `max_bytes` (at most 1 MiB).
#[test]
fn a_batch_leaves_when_it_is_big_enough() {
    let config = serde_json::to_vec(&Args::from([
        ("size".to_string(), Value::Int(1000)),
        ("linger_ms".to_string(), Value::Int(5)),
        ("max_bytes".to_string(), Value::Int(100)),
        (
            "targets".to_string(),
            Value::List(vec!["KVS/BatchDecoder0".into()]),
        ),
    ]))
    .unwrap();
    let make = batch::proxies(&(std::sync::Arc::new(proxy::NoHooks) as _))
        .into_iter()
        .find(|(k, _)| *k == "BatchEncoder")
        .unwrap()
        .1;
    let mut enc = make(&config).unwrap();
    let mut ctx = Context::new("KVS/BatchEncoder0");
    let mut sent = Vec::new();
    for i in 0..10 {
        ctx.begin(Some("client0".into()), 0);
        enc.on_message(
            &mut ctx,
            Payload::new(Put {
                key: format!("k{i}"),
                value: "x".repeat(30),
            }),
        )
        .unwrap();
        sent.extend(
            ctx.take_effects()
                .into_iter()
                .filter(|e| matches!(e, Effect::Forward { .. })),
        );
    }
    // Each message is 36 bytes: every third one fills a batch of 108 bytes.
    assert_eq!(sent.len(), 3);
    assert!(
        sent.into_iter()
            .all(|e| sent_batch(vec![e]).items.len() == 3)
    );
}

/// The one batch among `effects` (other effects: cancelling the timer).
fn sent_batch(effects: Vec<Effect>) -> Batch {
    let mut batches = effects.into_iter().filter_map(|e| match e {
        Effect::Forward {
            to, from, payload, ..
        } => {
            assert_eq!((&*to, &*from), ("KVS/BatchDecoder0", "client0"));
            Some(payload.decode::<Batch>().unwrap())
        }
        _ => None,
    });
    let b = batches.next().expect("a batch was sent");
    assert!(batches.next().is_none());
    b
}

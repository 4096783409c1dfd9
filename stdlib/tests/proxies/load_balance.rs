//! `load_balance(3)` over a stateless agent: replies identical, spread over every worker.

use ovid_stdlib::expansion::{Args, Value};
use ovid_stdlib::load_balance;

use crate::common::*;

#[tokio::test]
async fn balanced_workers_answer_like_one_agent() {
    let e = expand(
        load_balance::expand,
        &Args::from([("n".to_string(), Value::Int(3))]),
        2,
    );
    let (mut sys, plain) = differential(&e, "Upper", 2, false, 21).await;

    // Round robin: six requests from one sender reach each of the three workers twice.
    let mut from = std::collections::BTreeMap::<String, usize>::new();
    for i in 0..6 {
        send(
            &mut sys.endpoints[0],
            &Op::Get(Get {
                key: format!("x{i}"),
            }),
        )
        .await;
        *from
            .entry(recv(&mut sys.endpoints[0]).await.from.to_string())
            .or_default() += 1;
    }
    assert_eq!(from.len(), 3, "{from:?}");
    assert!(from.values().all(|n| *n == 2), "{from:?}");

    sys.shutdown().await;
    plain.shutdown().await;
}

//! `monitor`: replies identical; the counts answer a query.

use ovid_stdlib::expansion::Args;
use ovid_stdlib::monitor::{self, MonitorQuery, MonitorReport};

use crate::common::*;

#[tokio::test]
async fn monitored_store_answers_like_the_store_and_counts_what_passed() {
    let e = expand(monitor::expand, &Args::new(), 2);
    let (mut sys, plain) = differential(&e, "Kvs", 2, true, 51).await;

    // What client0 sent, by type, in both workloads.
    let sent: Vec<Op> = workload(51, 240, 2, false)
        .into_iter()
        .chain(workload(51 ^ 0x5eed, 300, 2, true))
        .filter(|(c, _)| *c == 0)
        .map(|(_, op)| op)
        .collect();
    let puts = sent.iter().filter(|op| matches!(op, Op::Put(_))).count() as u64;
    let put_bytes: u64 = sent
        .iter()
        .filter_map(|op| {
            if let Op::Put(p) = op {
                Some(postcard::to_stdvec(p).unwrap().len() as u64)
            } else {
                None
            }
        })
        .sum();

    let ep = &mut sys.endpoints[0];
    ep.send_physical("KVS/Monitor0", MonitorQuery);
    let env = recv(ep).await;
    assert_eq!(&*env.from, "KVS/Monitor0");
    let report: MonitorReport = env.payload.decode().unwrap();
    assert_eq!(report.sender, "client0");
    let put = report.get("Put").unwrap();
    assert_eq!((put.messages, put.bytes), (puts, put_bytes));
    assert_eq!(
        report.get("Get").unwrap().messages,
        sent.len() as u64 - puts
    );
    assert!(put.rate > 0.0 && put.byte_rate > put.rate, "{put:?}");
    assert!(
        report.get("MonitorQuery").is_none() && report.get("ovid.monitor.MonitorQuery").is_none(),
        "queries are not counted"
    );

    sys.shutdown().await;
    plain.shutdown().await;
}

#[tokio::test]
async fn the_counts_are_published_among_the_box_counters() {
    let args = Args::from([("every".to_string(), ovid_stdlib::expansion::Value::Int(20))]);
    let e = expand(monitor::expand, &args, 1);
    let mut sys = start_transformed(&e, "Kvs", 1).await;
    let ops: Vec<(usize, Op)> = (0..5)
        .map(|i| {
            (
                0,
                Op::Put(Put {
                    key: format!("k{i}"),
                    value: "v".into(),
                }),
            )
        })
        .collect();
    run_sequential(&mut sys, &ops).await;
    // The monitor publishes on its report timer.
    let gauge = "monitor.KVS/Monitor0.Put.messages";
    let mut seen = None;
    for _ in 0..100 {
        seen = sys
            .boxes
            .iter()
            .find_map(|b| b.gauges().get(gauge).copied());
        if seen == Some(5) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(
        seen,
        Some(5),
        "gauges: {:?}",
        sys.boxes.iter().map(|b| b.gauges()).collect::<Vec<_>>()
    );
    sys.shutdown().await;
}

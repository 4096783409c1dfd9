//! `audit(path)`: replies identical; one JSON line per message, in order, with its bytes.

use ovid_stdlib::audit::{self, Record};
use ovid_stdlib::expansion::{Args, Value};
use ovid_stdlib::proxy;

use crate::common::*;

#[tokio::test]
async fn audited_store_answers_like_the_store_and_logs_every_message() {
    let dir = temp_path("audit");
    let path = dir.join("logs/audit.jsonl");
    let _ = std::fs::remove_dir_all(&dir);
    let e = expand(
        audit::expand,
        &Args::from([("path".to_string(), Value::Str(path.display().to_string()))]),
        2,
    );
    let (sys, plain) = differential(&e, "Kvs", 2, true, 61).await;

    let text = std::fs::read_to_string(&path).unwrap();
    let records: Vec<Record> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let ops: Vec<(usize, Op)> = workload(61, 240, 2, false)
        .into_iter()
        .chain(workload(61 ^ 0x5eed, 300, 2, true))
        .collect();
    assert_eq!(records.len(), ops.len(), "one line per message");
    for c in 0..2 {
        let mine: Vec<&Record> = records
            .iter()
            .filter(|r| r.from == format!("client{c}"))
            .collect();
        let sent: Vec<&Op> = ops
            .iter()
            .filter(|(s, _)| *s == c)
            .map(|(_, op)| op)
            .collect();
        assert_eq!(mine.len(), sent.len());
        for (r, op) in mine.iter().zip(sent) {
            let (name, bytes) = match op {
                Op::Put(p) => ("Put", postcard::to_stdvec(p).unwrap()),
                Op::Get(g) => ("Get", postcard::to_stdvec(g).unwrap()),
            };
            assert_eq!(
                (r.name.as_str(), r.to.as_str(), r.size),
                (name, "KVS/Agent", bytes.len())
            );
            assert_eq!(proxy::unhex(&r.payload).unwrap(), bytes);
            assert!(r.time > 1_600_000_000_000, "milliseconds since the epoch");
        }
    }
    assert!(records.windows(2).all(|w| w[0].time <= w[1].time));
    sys.shutdown().await;
    plain.shutdown().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_auditor_that_cannot_open_its_log_fails_at_start() {
    let blocker = temp_path("audit-blocker");
    std::fs::write(&blocker, b"a file, not a directory").unwrap();
    let err = audit::Auditor::open(&blocker.join("audit.log"), "KVS/Agent".into())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("cannot open the audit log"), "{err}");
    std::fs::remove_file(&blocker).unwrap();
}

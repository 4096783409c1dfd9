//! The example runs co-located, across two boxes in one process, and as two processes.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

#[tokio::test]
async fn co_located() {
    let b = rust_kvs::run_co_located().await.unwrap();
    let m = b.metrics();
    assert_eq!(m.frames_out, 0, "co-located: nothing crosses a socket");
    assert!(m.local_deliveries >= 4 * rust_kvs::KEYS as u64);
    b.shutdown().await;
}

#[tokio::test]
async fn two_boxes_in_one_process() {
    let store = rust_kvs::start_store("127.0.0.1:0").await.unwrap();
    let front = rust_kvs::run_client(store.addr()).await.unwrap();
    let m = front.metrics();
    assert!(m.frames_out as usize >= 2 * rust_kvs::KEYS, "{m:?}");
    assert_eq!(m.rejections, 0);
    assert_eq!(store.metrics().rejections, 0);
    front.shutdown().await;
    store.shutdown().await;
}

#[test]
fn two_processes_on_loopback() {
    let exe = env!("CARGO_BIN_EXE_rust-kvs");
    let mut store = Command::new(exe)
        .args(["store", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(store.stdout.as_mut().unwrap())
        .read_line(&mut first)
        .unwrap();
    let addr = first
        .trim()
        .strip_prefix("store listening on ")
        .expect("the store prints its address")
        .to_string();
    let client = Command::new(exe)
        .args(["client", "--controller", &addr])
        .output()
        .unwrap();
    store.kill().unwrap();
    let _ = store.wait();
    assert!(client.status.success());
    let out = String::from_utf8(client.stdout).unwrap();
    let mut lines: Vec<&str> = out.lines().collect();
    lines.sort();
    assert_eq!(
        lines,
        [
            "fruit-0 = fruit-0 pie",
            "fruit-1 = fruit-1 pie",
            "fruit-2 = fruit-2 pie"
        ]
    );
}

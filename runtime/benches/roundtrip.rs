//! The runtime benchmark: PUT round trips co-located and across two boxes on loopback, next to
//! raw baselines measured in the same run, and a pipelined stream of small messages.
//!
//! ```text
//! cargo bench -p ovid --bench roundtrip            # all cases, multi-threaded runtime
//! cargo bench -p ovid --bench roundtrip -- --current-thread
//! cargo bench -p ovid --bench roundtrip -- --cross-box   # only raw TCP and cross-box (profiling)
//! ```
//!
//! Prints p50/p99 per case and the ratio of each Ovid case to its baseline.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ovid::{BoxBuilder, Context, Message};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

const ROUND_TRIPS: usize = 20_000;
const WARMUP: usize = 2_000;
const STREAM: u64 = 1_000_000;

#[derive(Debug, Clone, Serialize, Deserialize, Message)]
struct Put {
    key: String,
    value: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, Message)]
struct PutOk {
    key: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, Message)]
struct Seq(u64);

#[derive(Default, Serialize, Deserialize)]
struct Kvs {
    store: BTreeMap<String, String>,
}

#[ovid::agent]
impl Kvs {
    fn on_put(&mut self, _ctx: &mut Context, put: Put) -> PutOk {
        self.store.insert(put.key.clone(), put.value);
        PutOk { key: put.key }
    }
}

fn put() -> Put {
    Put {
        key: "key-0001".into(),
        value: "value-0001".into(),
    }
}

/// Latency percentiles of a run.
struct Stats {
    p50: Duration,
    p99: Duration,
}

fn stats(mut samples: Vec<Duration>) -> Stats {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    Stats {
        p50: at(0.50),
        p99: at(0.99),
    }
}

/// Runs `$body` (an expression that awaits one round trip) WARMUP times, then ROUND_TRIPS
/// times measuring each.
macro_rules! measure {
    ($body:expr) => {{
        for _ in 0..WARMUP {
            $body;
        }
        let mut samples = Vec::with_capacity(ROUND_TRIPS);
        for _ in 0..ROUND_TRIPS {
            let t = Instant::now();
            $body;
            samples.push(t.elapsed());
        }
        stats(samples)
    }};
}

/// Baseline: a task answering over a oneshot, requests over an mpsc.
async fn raw_in_process() -> Stats {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Put, oneshot::Sender<PutOk>)>();
    tokio::spawn(async move {
        let mut store = BTreeMap::new();
        while let Some((p, reply)) = rx.recv().await {
            store.insert(p.key.clone(), p.value);
            let _ = reply.send(PutOk { key: p.key });
        }
    });
    measure!({
        let (rtx, rrx) = oneshot::channel();
        tx.send((put(), rtx)).unwrap();
        rrx.await.unwrap();
    })
}

/// Baseline: a length-prefixed request and reply over one loopback TCP connection.
async fn raw_tcp() -> Stats {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        s.set_nodelay(true).unwrap();
        let mut store = BTreeMap::new();
        let mut buf = vec![0u8; 1024];
        loop {
            let Ok(len) = s.read_u32().await else { return };
            s.read_exact(&mut buf[..len as usize]).await.unwrap();
            let p: Put = postcard::from_bytes(&buf[..len as usize]).unwrap();
            store.insert(p.key.clone(), p.value);
            let reply = postcard::to_stdvec(&PutOk { key: p.key }).unwrap();
            let mut out = (reply.len() as u32).to_be_bytes().to_vec();
            out.extend_from_slice(&reply);
            s.write_all(&out).await.unwrap();
        }
    });
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    let mut buf = vec![0u8; 1024];
    measure!({
        {
            let req = postcard::to_stdvec(&put()).unwrap();
            let mut out = (req.len() as u32).to_be_bytes().to_vec();
            out.extend_from_slice(&req);
            s.write_all(&out).await.unwrap();
            let len = s.read_u32().await.unwrap() as usize;
            s.read_exact(&mut buf[..len]).await.unwrap();
            let _: PutOk = postcard::from_bytes(&buf[..len]).unwrap();
        }
    })
}

/// Ovid: an endpoint and the store in one box.
async fn ovid_co_located() -> Stats {
    let b = BoxBuilder::new("solo").start().await.unwrap();
    b.spawn("KVS", Kvs::default()).unwrap();
    let mut c = b.endpoint("client").unwrap();
    let kvs: ovid::Id = "KVS".into();
    let s = measure!({
        c.send_to_id(&kvs, put());
        let _: PutOk = c.recv_message().await.unwrap().1;
    });
    drop(c);
    b.shutdown().await;
    s
}

/// Ovid: an endpoint in box `a`, the store in box `b`, over loopback TCP.
async fn ovid_cross_box() -> Stats {
    let a = BoxBuilder::new("a").start().await.unwrap();
    let b = BoxBuilder::new("b").start().await.unwrap();
    b.spawn("KVS", Kvs::default()).unwrap();
    a.add_route("KVS", b.addr());
    let mut c = a.endpoint("client").unwrap();
    let kvs: ovid::Id = "KVS".into();
    let s = measure!({
        c.send_to_id(&kvs, put());
        let _: PutOk = c.recv_message().await.unwrap().1;
    });
    drop(c);
    a.shutdown().await;
    b.shutdown().await;
    s
}

/// Ovid: `STREAM` small messages from box `a` to box `b`, pipelined; messages per second.
async fn ovid_stream() -> f64 {
    let a = BoxBuilder::new("a").start().await.unwrap();
    let b = BoxBuilder::new("b").start().await.unwrap();
    a.add_route("sink", b.addr());
    let source = a.endpoint("source").unwrap();
    let mut sink = b.endpoint("sink").unwrap();
    let sink_id: ovid::Id = "sink".into();
    let start = Instant::now();
    let receiver = tokio::spawn(async move {
        for i in 0..STREAM {
            let env = sink.recv().await.unwrap();
            debug_assert_eq!(env.payload.decode::<Seq>().unwrap().0, i);
        }
    });
    for i in 0..STREAM {
        source.send_to_id(&sink_id, Seq(i));
        if i % 4096 == 0 {
            tokio::task::yield_now().await;
        }
    }
    receiver.await.unwrap();
    let rate = STREAM as f64 / start.elapsed().as_secs_f64();
    let m = a.metrics();
    println!(
        "  (stream: {} frames out, {} retransmissions)",
        m.frames_out, m.retransmissions
    );
    drop(source);
    a.shutdown().await;
    b.shutdown().await;
    rate
}

fn us(d: Duration) -> String {
    format!("{:.2} µs", d.as_secs_f64() * 1e6)
}

fn row(name: &str, s: &Stats) {
    println!("{name:<34} p50 {:>10}  p99 {:>10}", us(s.p50), us(s.p99));
}

async fn run(cross_box_only: bool) {
    println!("{ROUND_TRIPS} round trips per case after {WARMUP} warm-up; ratios compare p50\n");
    if cross_box_only {
        let raw_net = tokio::spawn(raw_tcp()).await.unwrap();
        row("raw length-prefixed TCP", &raw_net);
        let cross = tokio::spawn(ovid_cross_box()).await.unwrap();
        row("ovid PUT across two boxes", &cross);
        let r2 = cross.p50.as_secs_f64() / raw_net.p50.as_secs_f64();
        println!(
            "\ncross-box / raw TCP      p50 ratio {r2:.2}x  (target <= 1.25x: {})",
            verdict(r2 <= 1.25)
        );
        return;
    }
    // Each case runs in a task of its own, like an agent would.
    let raw_local = tokio::spawn(raw_in_process()).await.unwrap();
    row("raw tokio mpsc + oneshot", &raw_local);
    let co = tokio::spawn(ovid_co_located()).await.unwrap();
    row("ovid PUT co-located", &co);
    let raw_net = tokio::spawn(raw_tcp()).await.unwrap();
    row("raw length-prefixed TCP", &raw_net);
    let cross = tokio::spawn(ovid_cross_box()).await.unwrap();
    row("ovid PUT across two boxes", &cross);
    let rate = tokio::spawn(ovid_stream()).await.unwrap();
    println!(
        "ovid stream of {STREAM} messages      {:>10.0} messages/s",
        rate
    );
    let r1 = co.p50.as_secs_f64() / raw_local.p50.as_secs_f64();
    let r2 = cross.p50.as_secs_f64() / raw_net.p50.as_secs_f64();
    println!();
    println!(
        "co-located / in-process  p50 ratio {r1:.2}x  (target <= 2.00x: {})",
        verdict(r1 <= 2.0)
    );
    println!(
        "cross-box / raw TCP      p50 ratio {r2:.2}x  (target <= 1.25x: {})",
        verdict(r2 <= 1.25)
    );
    println!(
        "stream                   {rate:.0} msg/s (target >= 500000: {})",
        verdict(rate >= 500_000.0)
    );
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "NOT met" }
}

fn main() {
    let current = std::env::args().any(|a| a == "--current-thread");
    let cross_box_only = std::env::args().any(|a| a == "--cross-box");
    let rt = if current {
        println!("runtime: tokio current_thread");
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        println!("runtime: tokio multi_thread, 2 workers");
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
    }
    .unwrap();
    rt.block_on(run(cross_box_only));
}

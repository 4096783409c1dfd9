//! Two boxes over TCP: exactly-once delivery across dropped connections, de-duplication,
//! and bad frames.

mod common;

use std::time::Duration;

use bytes::BytesMut;
use common::*;
use futures::{SinkExt, StreamExt};
use ovid::frame::{self, Header};
use ovid::{BoxBuilder, Envelope};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

const N: u64 = 20_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_in_order_across_dropped_connections() {
    init_tracing();
    let a = BoxBuilder::new("a").start().await.unwrap();
    let b = BoxBuilder::new("b").start().await.unwrap();
    a.add_route("sink", b.addr());
    let source = a.endpoint("source").unwrap();
    let mut sink = b.endpoint("sink").unwrap();

    let receiver = tokio::spawn(async move {
        let mut next = 0;
        while next < N {
            let (_, Seq(i)) =
                tokio::time::timeout(Duration::from_secs(10), sink.recv_message::<Seq>())
                    .await
                    .expect("stalled")
                    .unwrap();
            assert_eq!(i, next, "out of order, lost or duplicated");
            next += 1;
        }
        // Nothing more arrives: no duplicate slipped through after the last one.
        assert!(
            tokio::time::timeout(Duration::from_millis(100), sink.recv())
                .await
                .is_err()
        );
    });
    for i in 0..N {
        source.send_physical("sink", Seq(i));
        if i % 1000 == 999 {
            // Drop the connection while frames are in flight.
            a.drop_connections();
            tokio::task::yield_now().await;
        }
    }
    receiver.await.unwrap();
    let (ma, mb) = (a.metrics(), b.metrics());
    println!("sender {ma:?}\nreceiver {mb:?}");
    assert!(
        ma.connections > 3,
        "the connection was dropped and re-established"
    );
    assert_eq!(ma.frames_out, N);
    assert_eq!(mb.frames_in, N);
    assert_eq!(mb.messages_in, N);
    assert_eq!(ma.rejections + mb.rejections, 0);
    a.shutdown().await;
    b.shutdown().await;
}

/// Speaks the box protocol by hand: a `Hello`, then raw frames.
struct RawBox {
    framed: Framed<TcpStream, tokio_util::codec::LengthDelimitedCodec>,
}

impl RawBox {
    async fn connect(addr: &str, session: u64) -> (RawBox, u64) {
        let stream = TcpStream::connect(addr).await.unwrap();
        let mut raw = RawBox {
            framed: Framed::new(stream, frame::codec()),
        };
        raw.frame(
            &Header::Hello {
                name: "raw",
                listen: "127.0.0.1:9",
                session,
                peer_session: 0,
                peer_delivered: 0,
            },
            None,
        )
        .await;
        let welcome = raw.framed.next().await.unwrap().unwrap().freeze();
        let Ok((Header::Welcome { delivered, .. }, _)) = frame::decode(&welcome) else {
            panic!("no Welcome")
        };
        (raw, delivered)
    }

    async fn frame(&mut self, header: &Header<'_>, env: Option<&Envelope>) {
        let mut buf = BytesMut::new();
        frame::encode(&mut buf, header, env).unwrap();
        self.framed.send(buf.split_off(4).freeze()).await.unwrap();
    }

    async fn data(&mut self, seq: u64, to: &str, msg: Seq) {
        let env = Envelope::new("raw-sender", to, msg);
        self.frame(
            &Header::Data {
                seq,
                from: "raw-sender",
                to,
                name: "Seq",
                tag: 0,
            },
            Some(&env),
        )
        .await;
    }

    async fn bytes(&mut self, raw: &[u8]) {
        self.framed.get_mut().write_all(raw).await.unwrap();
    }
}

#[tokio::test]
async fn duplicates_after_a_reconnect_are_dropped() {
    let b = BoxBuilder::new("b").start().await.unwrap();
    let mut sink = b.endpoint("sink").unwrap();
    let (mut raw, delivered) = RawBox::connect(b.addr(), 42).await;
    assert_eq!(delivered, 0);
    for seq in 1..=3 {
        raw.data(seq, "sink", Seq(seq)).await;
    }
    for seq in 1..=3 {
        assert_eq!(sink.recv_message::<Seq>().await.unwrap().1, Seq(seq));
    }
    drop(raw);
    // The same session reconnects: the box says how far it got; a sender that did not hear
    // the acknowledgement sends 2 and 3 again, then 4.
    let (mut raw, delivered) = RawBox::connect(b.addr(), 42).await;
    assert_eq!(delivered, 3);
    for seq in 2..=4 {
        raw.data(seq, "sink", Seq(seq)).await;
    }
    assert_eq!(sink.recv_message::<Seq>().await.unwrap().1, Seq(4));
    assert_eq!(b.metrics().duplicates, 2);
    // A new session (the sender restarted) starts again from 1.
    let (_raw, delivered) = RawBox::connect(b.addr(), 43).await;
    assert_eq!(delivered, 0);
    b.shutdown().await;
}

#[tokio::test]
async fn bad_frames_are_rejected_and_the_box_keeps_going() {
    init_tracing();
    let b = BoxBuilder::new("b").start().await.unwrap();
    b.spawn("KVS", Kvs::default()).unwrap();
    let mut sink = b.endpoint("sink").unwrap();

    // 1. A connection whose first frame is not Hello.
    let mut s = TcpStream::connect(b.addr()).await.unwrap();
    s.write_all(&[0, 0, 0, 3, 0xff, 0xff, 0xff]).await.unwrap();
    // 2. Garbage after a good Hello, a frame for nobody, a message the agent cannot decode,
    //    then a frame too long to be real.
    let (mut raw, _) = RawBox::connect(b.addr(), 7).await;
    raw.bytes(&[0, 0, 0, 2, 0xde, 0xad]).await;
    raw.data(1, "nobody", Seq(1)).await;
    let env = Envelope::new("raw-sender", "KVS", Seq(5));
    raw.frame(
        &Header::Data {
            seq: 2,
            from: "raw-sender",
            to: "KVS",
            name: "Put",
            tag: 0,
        },
        Some(&env),
    )
    .await;
    raw.data(3, "sink", Seq(3)).await;
    assert_eq!(
        sink.recv_message::<Seq>().await.unwrap().1,
        Seq(3),
        "good frames after bad ones still arrive"
    );
    raw.bytes(&[0x7f, 0xff, 0xff, 0xff]).await;

    // The box still serves: a new connection works, and so does the store.
    let (mut raw2, _) = RawBox::connect(b.addr(), 8).await;
    raw2.data(1, "sink", Seq(9)).await;
    assert_eq!(sink.recv_message::<Seq>().await.unwrap().1, Seq(9));
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
    assert_eq!(ok.key, "k");
    // Give the store a moment to reject the undecodable Put, then count: no Hello, garbage,
    // unknown identifier, undecodable message, oversized frame.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while b.metrics().rejections < 5 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(b.metrics().rejections, 5, "{:?}", b.metrics());
    b.shutdown().await;
}

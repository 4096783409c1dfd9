//! The box-to-box transport: reliable, exactly-once delivery over TCP that survives a dropped
//! connection.
//!
//! For every other box it sends to, a box keeps one [`Peer`] with one writer task. The writer
//! numbers each envelope (`seq`, from 1, per session of the sending box), encodes it into a
//! frame, and keeps the frame in a retransmit buffer until the other box acknowledges it.
//! Frames are written in batches: the writer takes every envelope waiting in its queue, encodes
//! them into one buffer and writes it with one system call, so a busy stream costs a fraction of
//! a syscall per message, and an idle one still sends each message at once (TCP_NODELAY).
//!
//! The receiving box remembers, per sending session, the highest `seq` it delivered. A frame at
//! or below it is a duplicate and is dropped. It acknowledges cumulatively (`Ack { upto }`),
//! every [`ACK_EVERY`] frames or [`ACK_DELAY`] after the first unacknowledged one.
//!
//! When the connection drops, the writer reconnects (with backoff), learns from the `Welcome`
//! how far the receiver got, drops those frames from its buffer and sends the rest again. So a
//! message accepted by the sending box reaches its destination box exactly once, as long as both
//! boxes live.

use std::collections::VecDeque;

use rustc_hash::{FxHashMap, FxHashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::FramedRead;

use crate::error::Error;
use crate::frame::{self, Header};
use crate::message::{Envelope, Id, Payload};
use crate::metrics::Metrics;
use crate::routing::Router;
use crate::shutdown::{Lifecycle, Shutdown};

/// Acknowledge after this many delivered frames...
pub const ACK_EVERY: u64 = 128;
/// ...or this long after the first frame not yet acknowledged.
pub const ACK_DELAY: Duration = Duration::from_millis(2);
/// The most envelopes a writer encodes into one write.
const BATCH: usize = 512;
/// How long a dialer waits for `Welcome`.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// What the transport needs from its box to spawn tasks.
#[derive(Debug, Clone)]
pub(crate) struct TransportEnv {
    /// This box's name, sent in `Hello`.
    pub box_name: String,
    /// This box's listen address, sent in `Hello`.
    pub listen: Id,
    /// This box's session: random per start.
    pub session: u64,
    /// The box's counters.
    pub metrics: Arc<Metrics>,
    /// Gives each spawned task its shutdown listener.
    pub lifecycle: Arc<Lifecycle>,
}

/// What a box knows about the stream another box sends it.
#[derive(Debug, Default)]
struct Inbound {
    /// The sending box's session; a new one means it restarted.
    session: u64,
    /// The highest `seq` delivered from that session.
    delivered: u64,
}

/// Another box: the queue of envelopes for it, and the state of its stream to us.
#[derive(Debug)]
pub(crate) struct Peer {
    /// Its listen address.
    addr: Id,
    /// The writer task's queue.
    tx: mpsc::UnboundedSender<Envelope>,
    /// Its stream to us (shared by the connections it dialed: an old one may linger).
    inbound: Mutex<Inbound>,
    /// Fault injection: tells the writer to drop its connection (checked after each batch, so
    /// the hot loop waits on its queue alone).
    kill: AtomicBool,
}

/// The other boxes this box talks to, by listen address.
#[derive(Debug)]
pub(crate) struct Peers {
    map: Mutex<FxHashMap<Id, Arc<Peer>>>,
    env: TransportEnv,
}

impl Peers {
    /// No peers yet.
    pub(crate) fn new(env: TransportEnv) -> Self {
        Peers {
            map: Mutex::new(FxHashMap::default()),
            env,
        }
    }

    /// The peer at `addr`, creating it (and its writer task) on first use.
    fn get(&self, addr: &Id) -> Arc<Peer> {
        let mut map = self.map.lock().expect("peers poisoned");
        if let Some(p) = map.get(addr) {
            return p.clone();
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let peer = Arc::new(Peer {
            addr: addr.clone(),
            tx,
            inbound: Mutex::default(),
            kill: AtomicBool::new(false),
        });
        map.insert(addr.clone(), peer.clone());
        // During shutdown no writer starts; the queue is dropped and sends to it fail.
        if let Some(shutdown) = self.env.lifecycle.listener() {
            let writer = Writer::new(peer.clone(), self.env.clone());
            tokio::spawn(writer.run(rx, shutdown));
        }
        peer
    }

    /// Queues an envelope for the box at `addr`.
    pub(crate) fn send(&self, addr: &Id, env: Envelope) {
        let peer = self.get(addr);
        if let Err(e) = peer.tx.send(env) {
            // Only after shutdown: the writer is gone.
            Metrics::inc(&self.env.metrics.rejections);
            tracing::warn!(to = %e.0.to, "box is shutting down; message dropped");
        }
    }

    /// Fault injection for tests: every writer drops its connection and reconnects.
    pub(crate) fn drop_connections(&self) {
        for peer in self.map.lock().expect("peers poisoned").values() {
            peer.kill.store(true, Ordering::Release);
        }
    }
}

/// A run of consecutive frames written together, kept until acknowledged.
#[derive(Debug)]
struct Batch {
    first: u64,
    last: u64,
    bytes: Bytes,
}

impl Batch {
    /// The frames of this batch after `acked` (a suffix of the bytes).
    fn unacked_part(&self, acked: u64) -> Bytes {
        let mut skip = acked.saturating_sub(self.first - 1);
        let mut rest = self.bytes.clone();
        while skip > 0 && rest.len() >= 4 {
            let len = u32::from_be_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
            rest.advance(4 + len);
            skip -= 1;
        }
        rest
    }
}

/// The writing side of a stream to one peer.
struct Writer {
    peer: Arc<Peer>,
    env: TransportEnv,
    /// The next sequence number to give out.
    next_seq: u64,
    /// Frames written but not yet acknowledged, oldest first.
    unacked: VecDeque<Batch>,
    /// The highest `seq` the peer acknowledged (written by the ack reader task).
    acked: Arc<AtomicU64>,
    /// Envelopes taken from the queue and not yet encoded.
    batch: Vec<Envelope>,
    /// Encoding buffer, reused.
    buf: BytesMut,
}

/// Why the inner loop of the writer stopped.
enum Stop {
    Shutdown,
    Reconnect,
}

impl Writer {
    fn new(peer: Arc<Peer>, env: TransportEnv) -> Self {
        Writer {
            peer,
            env,
            next_seq: 1,
            unacked: VecDeque::new(),
            acked: Arc::new(AtomicU64::new(0)),
            batch: Vec::with_capacity(BATCH),
            buf: BytesMut::with_capacity(64 * 1024),
        }
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Envelope>, mut shutdown: Shutdown) {
        let mut backoff = Duration::from_millis(5);
        loop {
            // Dial only when there is something to send.
            if self.unacked.is_empty() && self.batch.is_empty() {
                tokio::select! {
                    _ = shutdown.recv() => return,
                    n = rx.recv_many(&mut self.batch, BATCH) => if n == 0 { return },
                }
            }
            let connected = tokio::select! {
                _ = shutdown.recv() => return,
                r = self.connect() => r,
            };
            let (wr, ack_task, lost) = match connected {
                Ok(c) => {
                    backoff = Duration::from_millis(5);
                    c
                }
                Err(e) => {
                    tracing::debug!(peer = %self.peer.addr, error = %e, ?backoff, "cannot reach box; retrying");
                    tokio::select! {
                        _ = shutdown.recv() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            };
            let stop = self.stream(wr, lost, &mut rx, &mut shutdown).await;
            ack_task.abort();
            if let Stop::Shutdown = stop {
                return;
            }
        }
    }

    /// Dials, shakes hands, and re-sends what the peer has not acknowledged.
    async fn connect(
        &mut self,
    ) -> Result<
        (
            tokio::net::tcp::OwnedWriteHalf,
            tokio::task::JoinHandle<()>,
            oneshot::Receiver<()>,
        ),
        Error,
    > {
        let stream = TcpStream::connect(&*self.peer.addr).await?;
        stream.set_nodelay(true)?;
        let (rd, mut wr) = stream.into_split();
        let mut frames = FramedRead::new(rd, frame::codec());
        self.buf.clear();
        let hello = Header::Hello {
            name: &self.env.box_name,
            listen: &self.env.listen,
            session: self.env.session,
        };
        frame::encode(&mut self.buf, &hello, None)?;
        wr.write_all(&self.buf).await?;
        let welcome = tokio::time::timeout(HANDSHAKE_TIMEOUT, frames.next())
            .await
            .map_err(|_| Error::Timeout("Welcome"))?
            .ok_or(Error::Closed)??
            .freeze();
        let delivered = match frame::decode(&welcome)? {
            (Header::Welcome { delivered, .. }, _) => delivered,
            (other, _) => return Err(Error::BadFrame(format!("expected Welcome, got {other:?}"))),
        };
        Metrics::inc(&self.env.metrics.connections);
        self.acked.fetch_max(delivered, Ordering::AcqRel);
        self.prune();
        // Everything still unacknowledged may or may not have arrived: send it again; the
        // receiver drops what it already has.
        let acked = self.acked.load(Ordering::Acquire);
        let mut resent = 0;
        for b in &self.unacked {
            let part = b.unacked_part(acked);
            resent += b.last - b.first.max(acked + 1) + 1;
            wr.write_all(&part).await?;
        }
        if resent > 0 {
            self.env
                .metrics
                .retransmissions
                .fetch_add(resent, Ordering::Relaxed);
            tracing::info!(peer = %self.peer.addr, frames = resent, "retransmitted after reconnect");
        }
        let (lost_tx, lost_rx) = oneshot::channel();
        let ack_task = tokio::spawn(read_acks(frames, self.acked.clone(), lost_tx));
        Ok((wr, ack_task, lost_rx))
    }

    /// Writes batches until the connection is lost, the box shuts down, or the queue closes.
    async fn stream(
        &mut self,
        mut wr: tokio::net::tcp::OwnedWriteHalf,
        mut lost: oneshot::Receiver<()>,
        rx: &mut mpsc::UnboundedReceiver<Envelope>,
        shutdown: &mut Shutdown,
    ) -> Stop {
        loop {
            if self.batch.is_empty() {
                tokio::select! {
                    biased;
                    _ = shutdown.recv() => return Stop::Shutdown,
                    _ = &mut lost => return Stop::Reconnect,
                    n = rx.recv_many(&mut self.batch, BATCH) => if n == 0 { return Stop::Shutdown },
                }
            }
            let Some(bytes) = self.encode_batch() else {
                continue;
            };
            self.prune();
            let written = tokio::select! {
                _ = shutdown.recv() => return Stop::Shutdown,
                r = wr.write_all(&bytes) => r,
            };
            if let Err(e) = written {
                tracing::info!(peer = %self.peer.addr, error = %e, "connection lost; reconnecting");
                return Stop::Reconnect;
            }
            if self.peer.kill.swap(false, Ordering::AcqRel) {
                tracing::info!(peer = %self.peer.addr, "connection dropped on request");
                return Stop::Reconnect;
            }
        }
    }

    /// Encodes the waiting envelopes into one run of frames, kept for retransmission.
    fn encode_batch(&mut self) -> Option<Bytes> {
        self.buf.clear();
        let first = self.next_seq;
        for env in self.batch.drain(..) {
            let header = Header::Data {
                seq: self.next_seq,
                from: &env.from,
                to: &env.to,
                name: env.payload.name(),
                tag: env.tag,
            };
            match frame::encode(&mut self.buf, &header, Some(&env)) {
                Ok(()) => self.next_seq += 1,
                Err(e) => {
                    Metrics::inc(&self.env.metrics.rejections);
                    tracing::warn!(to = %env.to, message = env.payload.name(), error = %e, "cannot encode; message rejected");
                }
            }
        }
        if self.next_seq == first {
            return None;
        }
        self.env
            .metrics
            .frames_out
            .fetch_add(self.next_seq - first, Ordering::Relaxed);
        let bytes = self.buf.split().freeze();
        self.unacked.push_back(Batch {
            first,
            last: self.next_seq - 1,
            bytes: bytes.clone(),
        });
        Some(bytes)
    }

    /// Forgets batches the peer has acknowledged entirely.
    fn prune(&mut self) {
        let acked = self.acked.load(Ordering::Acquire);
        while self.unacked.front().is_some_and(|b| b.last <= acked) {
            self.unacked.pop_front();
        }
    }
}

/// Reads `Ack` frames from a dialed connection; signals `lost` when it closes.
async fn read_acks(
    mut frames: FramedRead<OwnedReadHalf, tokio_util::codec::LengthDelimitedCodec>,
    acked: Arc<AtomicU64>,
    lost: oneshot::Sender<()>,
) {
    while let Some(Ok(f)) = frames.next().await {
        let f = f.freeze();
        match frame::decode(&f) {
            Ok((Header::Ack { upto }, _)) => {
                acked.fetch_max(upto, Ordering::AcqRel);
            }
            other => tracing::warn!(?other, "unexpected frame on a dialed connection"),
        }
    }
    let _ = lost.send(());
}

/// Accepts connections from other boxes until shutdown.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    router: Arc<Router>,
    lifecycle: Arc<Lifecycle>,
    mut shutdown: Shutdown,
) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.recv() => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, remote)) => {
                let Some(conn_shutdown) = lifecycle.listener() else {
                    return;
                };
                let task = Receiver::new(router.clone(), remote);
                tokio::spawn(task.run(stream, conn_shutdown));
            }
            Err(e) => {
                // E.g. too many open files: wait a little rather than spin.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// The reading side of a connection another box dialed to us.
struct Receiver {
    router: Arc<Router>,
    remote: SocketAddr,
    /// Identifiers seen on this connection: decoding one again allocates nothing.
    interned: FxHashSet<Id>,
}

impl Receiver {
    fn new(router: Arc<Router>, remote: SocketAddr) -> Self {
        Receiver {
            router,
            remote,
            interned: FxHashSet::default(),
        }
    }

    fn intern(&mut self, s: &str, learn_at: Option<&Id>) -> Id {
        if let Some(id) = self.interned.get(s) {
            return id.clone();
        }
        let id: Id = s.into();
        if self.interned.len() > 65_536 {
            self.interned.clear();
        }
        self.interned.insert(id.clone());
        // A sender seen for the first time runs at the box that dialed: replies to it need no
        // question to the controller.
        if let Some(addr) = learn_at {
            self.router.learn(&id, addr);
        }
        id
    }

    fn bad_frame(&self, why: &str) {
        Metrics::inc(&self.router.metrics.rejections);
        tracing::warn!(remote = %self.remote, error = why, "bad frame rejected");
    }

    async fn run(mut self, stream: TcpStream, mut shutdown: Shutdown) {
        let _ = stream.set_nodelay(true);
        let (rd, mut wr) = stream.into_split();
        let mut frames = FramedRead::new(rd, frame::codec());

        // The handshake: who is it, and how far did we get with its stream?
        let first = tokio::select! {
            _ = shutdown.recv() => return,
            f = tokio::time::timeout(HANDSHAKE_TIMEOUT, frames.next()) => f,
        };
        let Ok(Some(Ok(first))) = first else {
            self.bad_frame("no Hello");
            return;
        };
        let first = first.freeze();
        let (session, listen) = match frame::decode(&first) {
            Ok((
                Header::Hello {
                    listen, session, ..
                },
                _,
            )) => (session, Id::from(listen)),
            _ => {
                self.bad_frame("the first frame is not Hello");
                return;
            }
        };
        let peer = self.router.peers.get(&listen);
        let delivered = {
            let mut inbound = peer.inbound.lock().expect("inbound poisoned");
            if inbound.session != session {
                *inbound = Inbound {
                    session,
                    delivered: 0,
                };
            }
            inbound.delivered
        };
        let mut out = BytesMut::new();
        let welcome = Header::Welcome {
            name: &self.router.box_name,
            delivered,
        };
        if frame::encode(&mut out, &welcome, None).is_err() || wr.write_all(&out).await.is_err() {
            return;
        }

        let mut last_delivered = delivered;
        let mut acked = delivered;
        let ack_timer = tokio::time::sleep(Duration::from_secs(3600));
        tokio::pin!(ack_timer);
        let mut armed = false;
        loop {
            let next = tokio::select! {
                _ = shutdown.recv() => return,
                () = &mut ack_timer, if armed => None,
                f = frames.next() => Some(f),
            };
            match next {
                // The ack timer fired.
                None => {}
                Some(None) => return,
                Some(Some(Err(e))) => {
                    // A length prefix beyond MAX_FRAME or a socket error: the stream cannot be
                    // resynchronised, so close it; the sender reconnects and resends.
                    if e.kind() == std::io::ErrorKind::InvalidData {
                        self.bad_frame(&e.to_string());
                    } else {
                        tracing::info!(remote = %self.remote, error = %e, "connection from a box lost");
                    }
                    return;
                }
                Some(Some(Ok(f))) => {
                    let f = f.freeze();
                    match frame::decode(&f) {
                        Ok((
                            Header::Data {
                                seq,
                                from,
                                to,
                                name,
                                tag,
                            },
                            payload,
                        )) => {
                            let from = self.intern(from, Some(&listen));
                            let to = self.intern(to, None);
                            let name = self.intern(name, None);
                            let env = Envelope {
                                from,
                                to,
                                payload: Payload::Encoded {
                                    name,
                                    bytes: payload,
                                },
                                tag,
                            };
                            let mut inbound = peer.inbound.lock().expect("inbound poisoned");
                            if inbound.session != session {
                                // The sender restarted and a newer connection took over.
                                return;
                            }
                            if seq <= inbound.delivered {
                                Metrics::inc(&self.router.metrics.duplicates);
                                continue;
                            }
                            if seq != inbound.delivered + 1 {
                                // This box restarted: what the sender had sent to the old
                                // process died with it, and its stream goes on from here.
                                tracing::info!(seq, delivered = inbound.delivered, from = %listen, "stream resumes after this box restarted");
                            }
                            inbound.delivered = seq;
                            Metrics::inc(&self.router.metrics.frames_in);
                            // Routed under the lock so two connections of one peer keep order.
                            self.router.route(env);
                            drop(inbound);
                            last_delivered = seq;
                            if !armed {
                                armed = true;
                                ack_timer
                                    .as_mut()
                                    .reset(tokio::time::Instant::now() + ACK_DELAY);
                            }
                        }
                        Ok((other, _)) => {
                            self.bad_frame(&format!("unexpected {other:?}"));
                            continue;
                        }
                        Err(e) => {
                            self.bad_frame(&e.to_string());
                            continue;
                        }
                    }
                    if last_delivered - acked < ACK_EVERY {
                        continue;
                    }
                }
            }
            // Acknowledge everything delivered so far.
            if last_delivered > acked {
                out.clear();
                let _ = frame::encode(
                    &mut out,
                    &Header::Ack {
                        upto: last_delivered,
                    },
                    None,
                );
                if wr.write_all(&out).await.is_err() {
                    return;
                }
                acked = last_delivered;
            }
            armed = false;
        }
    }
}

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
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, oneshot};
use std::time::Instant;
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

/// Another box: the stream of envelopes for it, and the state of its stream to us.
#[derive(Debug)]
pub(crate) struct Peer {
    /// Its listen address.
    addr: Id,
    /// The outgoing stream, shared by senders (who write to an idle connection themselves) and
    /// the writer task (which dials, batches and retransmits).
    out: Mutex<Outbound>,
    /// Wakes the writer task: something was queued, left half-written, or must be dropped.
    wake: Notify,
    /// The highest `seq` the peer acknowledged (written by the ack reader task).
    acked: Arc<AtomicU64>,
    /// Its stream to us (shared by the connections it dialed: an old one may linger).
    inbound: Mutex<Inbound>,
    /// Fault injection: tells the writer to drop its connection.
    kill: AtomicBool,
}

/// The sending side of a stream to one peer, under the peer's lock.
///
/// Frames reach the socket in `seq` order because only one party writes at a time: a sender,
/// under this lock, while `idle` holds the connection; or the writer task, while it has taken
/// `idle` away.
#[derive(Debug)]
struct Outbound {
    /// The next sequence number to give out.
    next_seq: u64,
    /// Frames written (or about to be) but not yet acknowledged, oldest first.
    unacked: VecDeque<Batch>,
    /// Envelopes waiting for the writer task.
    queue: Vec<Envelope>,
    /// The connection, while the writer task is idle: a sender may write a frame to it at once,
    /// saving the hop to the writer task (most of a round trip's cost on loopback).
    idle: Option<Arc<OwnedWriteHalf>>,
    /// The tail of a frame a sender could not write whole: the writer task writes it first.
    leftover: Option<Bytes>,
    /// A sender's write failed: the writer task must reconnect.
    broken: bool,
    /// When a sender last wrote directly: a sender that follows within [`DIRECT_GAP`] queues
    /// instead, so a burst or a stream is batched by the writer task into few writes.
    last_direct: Instant,
    /// The box is shutting down and has no writer task: sends are rejected.
    closed: bool,
    /// Encoding buffer, reused.
    buf: BytesMut,
}

/// A sender writes to an idle connection itself unless it did less than this ago.
const DIRECT_GAP: Duration = Duration::from_micros(2);

impl Outbound {
    fn new(closed: bool) -> Self {
        Outbound {
            next_seq: 1,
            unacked: VecDeque::new(),
            queue: Vec::new(),
            idle: None,
            leftover: None,
            broken: false,
            last_direct: Instant::now(),
            closed,
            buf: BytesMut::with_capacity(64 * 1024),
        }
    }

    /// Encodes `envs` into one run of frames, kept for retransmission until acknowledged.
    fn encode<'e>(
        &mut self,
        envs: impl IntoIterator<Item = &'e Envelope>,
        metrics: &Metrics,
    ) -> Option<Bytes> {
        self.buf.clear();
        let first = self.next_seq;
        for env in envs {
            let header = Header::Data {
                seq: self.next_seq,
                from: &env.from,
                to: &env.to,
                name: env.payload.name(),
                tag: env.tag,
            };
            match frame::encode(&mut self.buf, &header, Some(env)) {
                Ok(()) => self.next_seq += 1,
                Err(e) => {
                    Metrics::inc(&metrics.rejections);
                    tracing::warn!(to = %env.to, message = env.payload.name(), error = %e, "cannot encode; message rejected");
                }
            }
        }
        if self.next_seq == first {
            return None;
        }
        metrics
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
    fn prune(&mut self, acked: u64) {
        while self.unacked.front().is_some_and(|b| b.last <= acked) {
            self.unacked.pop_front();
        }
    }

    /// Whether the writer task has anything to send.
    fn has_work(&self) -> bool {
        !self.queue.is_empty() || !self.unacked.is_empty()
    }
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
        // During shutdown no writer starts, and sends to the peer are rejected.
        let shutdown = self.env.lifecycle.listener();
        let peer = Arc::new(Peer {
            addr: addr.clone(),
            out: Mutex::new(Outbound::new(shutdown.is_none())),
            wake: Notify::new(),
            acked: Arc::new(AtomicU64::new(0)),
            inbound: Mutex::default(),
            kill: AtomicBool::new(false),
        });
        map.insert(addr.clone(), peer.clone());
        if let Some(shutdown) = shutdown {
            let writer = Writer {
                peer: peer.clone(),
                env: self.env.clone(),
            };
            tokio::spawn(writer.run(shutdown));
        }
        peer
    }

    /// Sends an envelope to the box at `addr`: written at once if the connection is idle,
    /// else queued for the writer task.
    pub(crate) fn send(&self, addr: &Id, env: Envelope) {
        let peer = self.get(addr);
        let mut out = peer.out.lock().expect("outbound poisoned");
        if out.closed {
            drop(out);
            // Only after shutdown: the writer is gone.
            Metrics::inc(&self.env.metrics.rejections);
            tracing::warn!(to = %env.to, "box is shutting down; message dropped");
            return;
        }
        if out.queue.is_empty()
            && let Some(conn) = out.idle.clone()
        {
            let now = Instant::now();
            if now.duration_since(out.last_direct) >= DIRECT_GAP {
                out.last_direct = now;
                out.prune(peer.acked.load(Ordering::Acquire));
                let Some(bytes) = out.encode([&env], &self.env.metrics) else {
                    return;
                };
                match conn.try_write(&bytes) {
                    Ok(n) if n == bytes.len() => return,
                    Ok(n) => out.leftover = Some(bytes.slice(n..)),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        out.leftover = Some(bytes)
                    }
                    // The frame is in `unacked`: it is sent again after the reconnection.
                    Err(_) => out.broken = true,
                }
                // The writer task takes it from here; senders queue behind it.
                out.idle = None;
                drop(out);
                peer.wake.notify_one();
                return;
            }
        }
        out.queue.push(env);
        let first = out.queue.len() == 1;
        drop(out);
        if first {
            peer.wake.notify_one();
        }
    }

    /// Fault injection for tests: every writer drops its connection and reconnects.
    pub(crate) fn drop_connections(&self) {
        for peer in self.map.lock().expect("peers poisoned").values() {
            peer.kill.store(true, Ordering::Release);
            peer.wake.notify_one();
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

/// The task that dials a peer, writes what senders queued, and retransmits after a
/// reconnection.
struct Writer {
    peer: Arc<Peer>,
    env: TransportEnv,
}

/// Why the writer stopped streaming on a connection.
enum Stop {
    Shutdown,
    Reconnect,
}

/// Writes all of `bytes` to a connection that senders may also hold (but not write to: see
/// [`Outbound`]).
async fn write_all(conn: &OwnedWriteHalf, mut bytes: &[u8]) -> std::io::Result<()> {
    while !bytes.is_empty() {
        conn.writable().await?;
        match conn.try_write(bytes) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

impl Writer {
    fn out(&self) -> std::sync::MutexGuard<'_, Outbound> {
        self.peer.out.lock().expect("outbound poisoned")
    }

    async fn run(self, mut shutdown: Shutdown) {
        let mut backoff = Duration::from_millis(5);
        loop {
            // Dial only when there is something to send.
            while !self.out().has_work() {
                tokio::select! {
                    _ = shutdown.recv() => return self.close(),
                    _ = self.peer.wake.notified() => {}
                }
            }
            let connected = tokio::select! {
                _ = shutdown.recv() => return self.close(),
                r = self.connect() => r,
            };
            let (conn, ack_task, lost) = match connected {
                Ok(c) => {
                    backoff = Duration::from_millis(5);
                    c
                }
                Err(e) => {
                    tracing::debug!(peer = %self.peer.addr, error = %e, ?backoff, "cannot reach box; retrying");
                    tokio::select! {
                        _ = shutdown.recv() => return self.close(),
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            };
            let stop = self.stream(conn, lost, &mut shutdown).await;
            ack_task.abort();
            {
                let mut out = self.out();
                out.idle = None;
                out.leftover = None;
                out.broken = false;
            }
            if let Stop::Shutdown = stop {
                return self.close();
            }
        }
    }

    /// The box shuts down: later sends are rejected.
    fn close(&self) {
        let mut out = self.out();
        out.closed = true;
        out.idle = None;
    }

    /// Dials, shakes hands, and re-sends what the peer has not acknowledged.
    async fn connect(
        &self,
    ) -> Result<
        (
            Arc<OwnedWriteHalf>,
            tokio::task::JoinHandle<()>,
            oneshot::Receiver<()>,
        ),
        Error,
    > {
        let stream = TcpStream::connect(&*self.peer.addr).await?;
        stream.set_nodelay(true)?;
        let (rd, wr) = stream.into_split();
        let mut frames = FramedRead::new(rd, frame::codec());
        let mut hello_buf = BytesMut::new();
        let hello = Header::Hello {
            name: &self.env.box_name,
            listen: &self.env.listen,
            session: self.env.session,
        };
        frame::encode(&mut hello_buf, &hello, None)?;
        write_all(&wr, &hello_buf).await?;
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
        let acked = self.peer.acked.fetch_max(delivered, Ordering::AcqRel).max(delivered);
        // Everything still unacknowledged may or may not have arrived: send it again; the
        // receiver drops what it already has. A half-written frame is among them.
        let (parts, resent) = {
            let mut out = self.out();
            out.prune(acked);
            out.leftover = None;
            let mut resent = 0;
            let parts: Vec<Bytes> = out
                .unacked
                .iter()
                .map(|b| {
                    resent += b.last - b.first.max(acked + 1) + 1;
                    b.unacked_part(acked)
                })
                .collect();
            (parts, resent)
        };
        for part in parts {
            write_all(&wr, &part).await?;
        }
        if resent > 0 {
            self.env
                .metrics
                .retransmissions
                .fetch_add(resent, Ordering::Relaxed);
            tracing::info!(peer = %self.peer.addr, frames = resent, "retransmitted after reconnect");
        }
        let (lost_tx, lost_rx) = oneshot::channel();
        let ack_task = tokio::spawn(read_acks(frames, self.peer.acked.clone(), lost_tx));
        Ok((Arc::new(wr), ack_task, lost_rx))
    }

    /// Writes what senders queue or leave half-written until the connection is lost or the box
    /// shuts down; lends the connection to senders while there is nothing to write.
    async fn stream(
        &self,
        conn: Arc<OwnedWriteHalf>,
        mut lost: oneshot::Receiver<()>,
        shutdown: &mut Shutdown,
    ) -> Stop {
        let mut batch: Vec<Envelope> = Vec::with_capacity(BATCH);
        loop {
            if self.peer.kill.swap(false, Ordering::AcqRel) {
                tracing::info!(peer = %self.peer.addr, "connection dropped on request");
                return Stop::Reconnect;
            }
            let (leftover, bytes) = {
                let mut out = self.out();
                if out.broken {
                    tracing::info!(peer = %self.peer.addr, "connection lost; reconnecting");
                    return Stop::Reconnect;
                }
                out.prune(self.peer.acked.load(Ordering::Acquire));
                let leftover = out.leftover.take();
                let take = out.queue.len().min(BATCH);
                batch.extend(out.queue.drain(..take));
                let bytes = out.encode(batch.iter(), &self.env.metrics);
                batch.clear();
                if leftover.is_none() && bytes.is_none() {
                    // Nothing to write: lend the connection to senders until woken.
                    out.idle = Some(conn.clone());
                } else {
                    out.idle = None;
                }
                (leftover, bytes)
            };
            if leftover.is_none() && bytes.is_none() {
                tokio::select! {
                    biased;
                    _ = shutdown.recv() => return Stop::Shutdown,
                    _ = &mut lost => return Stop::Reconnect,
                    _ = self.peer.wake.notified() => {}
                }
                self.out().idle = None;
                continue;
            }
            for part in [leftover, bytes].into_iter().flatten() {
                let written = tokio::select! {
                    _ = shutdown.recv() => return Stop::Shutdown,
                    r = write_all(&conn, &part) => r,
                };
                if let Err(e) = written {
                    tracing::info!(peer = %self.peer.addr, error = %e, "connection lost; reconnecting");
                    return Stop::Reconnect;
                }
            }
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
                            {
                                let mut inbound =
                                    peer.inbound.lock().expect("inbound poisoned");
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
                                // Routed under the lock so two connections of one peer keep
                                // order.
                                self.router.route(env);
                            }
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

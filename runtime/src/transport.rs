//! The box-to-box transport: reliable, exactly-once delivery over TCP that survives a dropped
//! connection.
//!
//! For every other box it sends to, a box keeps one [`Peer`]: its outgoing stream (each
//! envelope numbered `seq`, from 1, per session of the sending box, and kept in a retransmit
//! buffer until acknowledged) and one writer task. A sender whose peer's connection is idle
//! encodes and writes its frame itself, under the peer's lock, which saves the hop to the writer
//! task; a sender that finds the writer busy, or follows another within [`DIRECT_GAP`], queues
//! its envelope, and the writer encodes everything waiting into one buffer and writes it with one
//! system call, so a busy stream costs a fraction of a syscall per message.
//!
//! One TCP connection carries both boxes' streams. A box with something to send dials, unless
//! the other box already dialed it: then it writes its own stream, and its acknowledgements, on
//! that connection. A reply thus travels on its request's connection, and the kernel folds its
//! TCP acknowledgement into the reply instead of sending a segment of its own (which is what
//! brought a cross-box round trip within 1.25x of a raw TCP one).
//!
//! The receiving box remembers, per sending session, the highest `seq` it delivered. A frame at
//! or below it is a duplicate and is dropped. It acknowledges cumulatively (`Ack { upto }`),
//! every [`ACK_EVERY`] frames or [`ACK_DELAY`] after the first unacknowledged one.
//!
//! When the connection drops, the writer reconnects (with backoff), learns from the handshake
//! how far the receiver got, drops those frames from its buffer and sends the rest again. So a
//! message accepted by the sending box reaches its destination box exactly once, as long as both
//! boxes live.

use std::collections::VecDeque;

use rustc_hash::{FxHashMap, FxHashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use futures::StreamExt;
use std::time::Instant;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio_util::codec::FramedRead;

use crate::error::Error;
use crate::frame::{self, Header};
use crate::message::{Envelope, Id, Payload};
use crate::metrics::Metrics;
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
    /// Where received envelopes go (the box's router), set once it exists: readers of dialed
    /// connections deliver through it.
    pub deliver: Arc<OnceLock<Weak<dyn Deliver>>>,
}

/// What the transport hands what it receives to: the box's router, seen through the only calls
/// the transport makes, so that the transport knows nothing of routing tables.
pub(crate) trait Deliver: Send + Sync + 'static {
    /// An envelope read from another box, for an agent of this box (or to route on).
    fn deliver(&self, env: Envelope);
    /// `id` runs in the box that listens at `addr` (it just sent from there).
    fn learn(&self, id: &Id, addr: &Id);
    /// The other boxes this box talks to.
    fn peers(&self) -> &Peers;
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
    /// The highest `seq` the peer acknowledged (written by the connections' readers).
    acked: AtomicU64,
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
    /// Numbering and encoding (taken out by the writer task while it encodes a batch).
    enc: Encoder,
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
    /// When a sender's direct write last ended: a sender that follows within [`DIRECT_GAP`]
    /// queues instead, so a burst or a stream is batched by the writer task into few writes.
    last_direct: Instant,
    /// The box is shutting down and has no writer task: sends are rejected.
    closed: bool,
    /// The newest connection the peer dialed to us, for the writer to stream on.
    offered: Option<Conn>,
    /// An acknowledgement of the peer's stream for the writer to write.
    ack_due: Option<u64>,
}

/// A sender writes to an idle connection itself unless the last such write ended less than
/// this ago (then it is a burst or a stream, and the writer task batches it).
const DIRECT_GAP: Duration = Duration::from_micros(5);

/// Numbers envelopes and encodes them into frames.
#[derive(Debug, Default)]
struct Encoder {
    /// The next sequence number to give out.
    next_seq: u64,
    /// Encoding buffer, reused.
    buf: BytesMut,
}

impl Encoder {
    /// Encodes `envs` into one run of frames; `None` if none could be encoded.
    fn encode<'e>(
        &mut self,
        envs: impl IntoIterator<Item = &'e Envelope>,
        metrics: &Metrics,
    ) -> Option<Batch> {
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
        Some(Batch {
            first,
            last: self.next_seq - 1,
            bytes: self.buf.split().freeze(),
        })
    }
}

impl Outbound {
    fn new(closed: bool) -> Self {
        Outbound {
            enc: Encoder {
                next_seq: 1,
                buf: BytesMut::with_capacity(64 * 1024),
            },
            unacked: VecDeque::new(),
            queue: Vec::new(),
            idle: None,
            leftover: None,
            broken: false,
            last_direct: Instant::now(),
            closed,
            offered: None,
            ack_due: None,
        }
    }

    /// Encodes `envs` into one run of frames, kept for retransmission until acknowledged.
    fn encode<'e>(
        &mut self,
        envs: impl IntoIterator<Item = &'e Envelope>,
        metrics: &Metrics,
    ) -> Option<Bytes> {
        let batch = self.enc.encode(envs, metrics)?;
        let bytes = batch.bytes.clone();
        self.unacked.push_back(batch);
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
        !self.queue.is_empty() || !self.unacked.is_empty() || self.ack_due.is_some()
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
            acked: AtomicU64::new(0),
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
            && out.last_direct.elapsed() >= DIRECT_GAP
        {
            out.prune(peer.acked.load(Ordering::Acquire));
            let Some(bytes) = out.encode([&env], &self.env.metrics) else {
                return;
            };
            let written = conn.try_write(&bytes);
            // Measured from the end of the write: a sender that sends again at once is a
            // stream, which the writer task batches.
            out.last_direct = Instant::now();
            match written {
                Ok(n) if n == bytes.len() => return,
                Ok(n) => out.leftover = Some(bytes.slice(n..)),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => out.leftover = Some(bytes),
                // The frame is in `unacked`: it is sent again after the reconnection.
                Err(_) => out.broken = true,
            }
            // The writer task takes it from here; senders queue behind it.
            out.idle = None;
            drop(out);
            peer.wake.notify_one();
            return;
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

/// A connection the writer streams on: one it dialed, or one the peer dialed to us.
#[derive(Debug, Clone)]
struct Conn {
    wr: Arc<OwnedWriteHalf>,
    /// Set by the connection's reader when it stops reading.
    lost: Arc<AtomicBool>,
    /// Tells the connection's reader to stop (fault injection).
    close: Arc<Notify>,
    /// How far the other box had delivered our stream when the connection opened.
    delivered: u64,
}

/// The task that dials a peer (unless the peer dialed us), writes what senders queued, and
/// retransmits after a reconnection.
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

/// An `Ack` frame.
fn ack_frame(upto: u64) -> Bytes {
    let mut buf = BytesMut::with_capacity(16);
    frame::encode(&mut buf, &Header::Ack { upto }, None).expect("an Ack always encodes");
    buf.freeze()
}

impl Peer {
    /// Acknowledges the peer's stream up to `upto`, on whichever connection our stream uses:
    /// written at once if it is idle, else by the writer task.
    fn ack(&self, upto: u64) {
        let mut out = self.out.lock().expect("outbound poisoned");
        if let Some(conn) = out.idle.clone() {
            let bytes = ack_frame(upto);
            match conn.try_write(&bytes) {
                Ok(n) if n == bytes.len() => return,
                Ok(n) => out.leftover = Some(bytes.slice(n..)),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => out.leftover = Some(bytes),
                Err(_) => {
                    out.broken = true;
                    out.ack_due = Some(upto);
                }
            }
            out.idle = None;
        } else {
            out.ack_due = Some(out.ack_due.unwrap_or(0).max(upto));
        }
        drop(out);
        self.wake.notify_one();
    }

    /// What this box has delivered of the peer's stream: its session and highest `seq`.
    fn inbound(&self) -> (u64, u64) {
        let inbound = self.inbound.lock().expect("inbound poisoned");
        (inbound.session, inbound.delivered)
    }

    /// A stream from the peer's session `session` is about to be read: a new session means
    /// the peer restarted, and its stream starts over. Returns how much of it was delivered.
    fn begin_inbound(&self, session: u64) -> u64 {
        let mut inbound = self.inbound.lock().expect("inbound poisoned");
        if inbound.session != session {
            *inbound = Inbound {
                session,
                delivered: 0,
            };
        }
        inbound.delivered
    }
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
            // A connection the peer dialed to us goes first: requests and replies then share
            // one TCP connection, and the kernel need not send ACK segments of its own.
            let offered = self
                .out()
                .offered
                .take()
                .filter(|c| !c.lost.load(Ordering::Acquire));
            let connected = match offered {
                Some(conn) => self.resume(conn).await,
                None => tokio::select! {
                    _ = shutdown.recv() => return self.close(),
                    r = self.connect() => r,
                },
            };
            let conn = match connected {
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
            let stop = self.stream(&conn, &mut shutdown).await;
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

    /// Dials, shakes hands, starts reading what the peer sends back, and resumes the stream.
    async fn connect(&self) -> Result<Conn, Error> {
        let stream = TcpStream::connect(&*self.peer.addr).await?;
        stream.set_nodelay(true)?;
        let (rd, wr) = stream.into_split();
        let mut frames = FramedRead::new(rd, frame::codec());
        let mut hello_buf = BytesMut::new();
        let (peer_session, peer_delivered) = self.peer.inbound();
        let hello = Header::Hello {
            name: &self.env.box_name,
            listen: &self.env.listen,
            session: self.env.session,
            peer_session,
            peer_delivered,
        };
        frame::encode(&mut hello_buf, &hello, None)?;
        write_all(&wr, &hello_buf).await?;
        let welcome = tokio::time::timeout(HANDSHAKE_TIMEOUT, frames.next())
            .await
            .map_err(|_| Error::Timeout("Welcome"))?
            .ok_or(Error::Closed)??
            .freeze();
        let (session, delivered) = match frame::decode(&welcome)? {
            (
                Header::Welcome {
                    session, delivered, ..
                },
                _,
            ) => (session, delivered),
            (other, _) => return Err(Error::BadFrame(format!("expected Welcome, got {other:?}"))),
        };
        let router = self
            .env
            .deliver
            .get()
            .and_then(std::sync::Weak::upgrade)
            .ok_or(Error::Closed)?;
        let shutdown = self.env.lifecycle.listener().ok_or(Error::Closed)?;
        Metrics::inc(&self.env.metrics.connections);
        let conn = Conn {
            wr: Arc::new(wr),
            lost: Arc::new(AtomicBool::new(false)),
            close: Arc::new(Notify::new()),
            delivered,
        };
        // The peer may send on this connection too (its replies, its acknowledgements).
        let delivered_in = self.peer.begin_inbound(session);
        let remote = self.peer.addr.to_string();
        let reader = Receiver::new(router, remote, self.peer.clone(), session);
        tokio::spawn(reader.read(frames, conn.clone(), delivered_in, shutdown));
        self.resume(conn).await
    }

    /// Re-sends, on a new connection, what the peer has not acknowledged: it may or may not
    /// have arrived, and the receiver drops what it already has. A half-written frame is among
    /// them.
    async fn resume(&self, conn: Conn) -> Result<Conn, Error> {
        let acked = self
            .peer
            .acked
            .fetch_max(conn.delivered, Ordering::AcqRel)
            .max(conn.delivered);
        let (parts, resent) = {
            let mut out = self.out();
            out.prune(acked);
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
            write_all(&conn.wr, &part).await?;
        }
        if resent > 0 {
            self.env
                .metrics
                .retransmissions
                .fetch_add(resent, Ordering::Relaxed);
            tracing::info!(peer = %self.peer.addr, frames = resent, "retransmitted after reconnect");
        }
        Ok(conn)
    }

    /// Writes what senders queue or leave half-written until the connection is lost or the box
    /// shuts down; lends the connection to senders while there is nothing to write.
    async fn stream(&self, conn: &Conn, shutdown: &mut Shutdown) -> Stop {
        let mut batch: Vec<Envelope> = Vec::with_capacity(BATCH);
        loop {
            if self.peer.kill.swap(false, Ordering::AcqRel) {
                tracing::info!(peer = %self.peer.addr, "connection dropped on request");
                conn.close.notify_one();
                return Stop::Reconnect;
            }
            if conn.lost.load(Ordering::Acquire) {
                tracing::info!(peer = %self.peer.addr, "connection lost; reconnecting");
                return Stop::Reconnect;
            }
            let (leftover, ack, mut enc) = {
                let mut out = self.out();
                if out.broken {
                    tracing::info!(peer = %self.peer.addr, "connection lost; reconnecting");
                    return Stop::Reconnect;
                }
                out.prune(self.peer.acked.load(Ordering::Acquire));
                let leftover = out.leftover.take();
                let ack = out.ack_due.take().map(ack_frame);
                let take = out.queue.len().min(BATCH);
                batch.extend(out.queue.drain(..take));
                if leftover.is_none() && ack.is_none() && batch.is_empty() {
                    // Nothing to write: lend the connection to senders until woken.
                    out.idle = Some(conn.wr.clone());
                    (None, None, None)
                } else {
                    // Senders queue while this task writes; none encodes, so the encoder can
                    // leave the lock and senders need not wait for the batch to be encoded.
                    out.idle = None;
                    (leftover, ack, Some(std::mem::take(&mut out.enc)))
                }
            };
            let bytes = match enc.as_mut() {
                Some(e) => {
                    let kept = e.encode(batch.iter(), &self.env.metrics);
                    batch.clear();
                    let mut out = self.out();
                    out.enc = enc.take().expect("taken above");
                    kept.map(|b| {
                        let bytes = b.bytes.clone();
                        out.unacked.push_back(b);
                        bytes
                    })
                }
                None => None,
            };
            if leftover.is_none() && ack.is_none() && bytes.is_none() {
                tokio::select! {
                    biased;
                    _ = shutdown.recv() => return Stop::Shutdown,
                    _ = self.peer.wake.notified() => {}
                }
                continue;
            }
            for part in [leftover, ack, bytes].into_iter().flatten() {
                let written = tokio::select! {
                    _ = shutdown.recv() => return Stop::Shutdown,
                    r = write_all(&conn.wr, &part) => r,
                };
                if let Err(e) = written {
                    tracing::info!(peer = %self.peer.addr, error = %e, "connection lost; reconnecting");
                    return Stop::Reconnect;
                }
            }
        }
    }
}

/// Accepts connections from other boxes until shutdown.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    router: Arc<dyn Deliver>,
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
                tokio::spawn(accept(router.clone(), stream, remote, conn_shutdown));
            }
            Err(e) => {
                // E.g. too many open files: wait a little rather than spin.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Counts and logs a rejected frame.
fn bad_frame(router: &dyn Deliver, remote: &str, why: &str) {
    Metrics::inc(&router.peers().env.metrics.rejections);
    tracing::warn!(remote, error = why, "bad frame rejected");
}

/// Shakes hands on a connection another box dialed to us, offers it to our stream to that box,
/// and reads from it.
async fn accept(
    router: Arc<dyn Deliver>,
    stream: TcpStream,
    remote: SocketAddr,
    mut shutdown: Shutdown,
) {
    let _ = stream.set_nodelay(true);
    let remote = remote.to_string();
    let (rd, wr) = stream.into_split();
    let mut frames = FramedRead::new(rd, frame::codec());

    // The handshake: who is it, and how far did we get with its stream?
    let first = tokio::select! {
        _ = shutdown.recv() => return,
        f = tokio::time::timeout(HANDSHAKE_TIMEOUT, frames.next()) => f,
    };
    let Ok(Some(Ok(first))) = first else {
        bad_frame(&*router, &remote, "no Hello");
        return;
    };
    let first = first.freeze();
    let (session, listen, peer_session, peer_delivered) = match frame::decode(&first) {
        Ok((
            Header::Hello {
                listen,
                session,
                peer_session,
                peer_delivered,
                ..
            },
            _,
        )) => (session, Id::from(listen), peer_session, peer_delivered),
        _ => {
            bad_frame(&*router, &remote, "the first frame is not Hello");
            return;
        }
    };
    let peers = router.peers();
    let peer = peers.get(&listen);
    let delivered = peer.begin_inbound(session);
    let mut out = BytesMut::new();
    let welcome = Header::Welcome {
        name: &peers.env.box_name,
        session: peers.env.session,
        delivered,
    };
    if frame::encode(&mut out, &welcome, None).is_err() || write_all(&wr, &out).await.is_err() {
        return;
    }
    let conn = Conn {
        wr: Arc::new(wr),
        lost: Arc::new(AtomicBool::new(false)),
        close: Arc::new(Notify::new()),
        // What the dialer delivered of our stream, if it knew this session of ours.
        delivered: if peer_session == peers.env.session {
            peer_delivered
        } else {
            0
        },
    };
    peer.out.lock().expect("outbound poisoned").offered = Some(conn.clone());
    peer.wake.notify_one();
    Receiver::new(router, remote, peer, session)
        .read(frames, conn, delivered, shutdown)
        .await;
}

/// The reading side of a connection with another box (dialed by either): the other box's
/// messages, and its acknowledgements of ours.
struct Receiver {
    router: Arc<dyn Deliver>,
    remote: String,
    peer: Arc<Peer>,
    /// The other box's session, as its handshake said.
    session: u64,
    /// Identifiers seen on this connection: decoding one again allocates nothing.
    interned: FxHashSet<Id>,
}

impl Receiver {
    fn new(router: Arc<dyn Deliver>, remote: String, peer: Arc<Peer>, session: u64) -> Self {
        Receiver {
            router,
            remote,
            peer,
            session,
            interned: FxHashSet::default(),
        }
    }

    fn intern(&mut self, s: &str, learn: bool) -> Id {
        if let Some(id) = self.interned.get(s) {
            return id.clone();
        }
        let id: Id = s.into();
        if self.interned.len() > 65_536 {
            self.interned.clear();
        }
        self.interned.insert(id.clone());
        // A sender seen for the first time runs at the other box: replies to it need no
        // question to the controller.
        if learn {
            self.router.learn(&id, &self.peer.addr);
        }
        id
    }

    fn bad_frame(&self, why: &str) {
        bad_frame(&*self.router, &self.remote, why);
    }

    /// Reads until the connection closes, the box shuts down, or `conn.close` is notified;
    /// then marks the connection lost.
    async fn read(
        mut self,
        mut frames: FramedRead<OwnedReadHalf, tokio_util::codec::LengthDelimitedCodec>,
        conn: Conn,
        delivered: u64,
        mut shutdown: Shutdown,
    ) {
        self.read_frames(&mut frames, &conn, delivered, &mut shutdown)
            .await;
        conn.lost.store(true, Ordering::Release);
        self.peer.wake.notify_one();
    }

    async fn read_frames(
        &mut self,
        frames: &mut FramedRead<OwnedReadHalf, tokio_util::codec::LengthDelimitedCodec>,
        conn: &Conn,
        delivered: u64,
        shutdown: &mut Shutdown,
    ) {
        // What the handshake said was delivered needs no acknowledgement of its own.
        let mut last_delivered = delivered;
        let mut acked = delivered;
        let ack_timer = tokio::time::sleep(Duration::from_secs(3600));
        tokio::pin!(ack_timer);
        let mut armed = false;
        loop {
            // Frames first: while one is ready the other futures are not polled, so a busy
            // connection registers no wakers per frame.
            let next = tokio::select! {
                biased;
                f = frames.next() => Some(f),
                () = &mut ack_timer, if armed => None,
                _ = shutdown.recv() => return,
                _ = conn.close.notified() => return,
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
                            let from = self.intern(from, true);
                            let to = self.intern(to, false);
                            let name = self.intern(name, false);
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
                                    self.peer.inbound.lock().expect("inbound poisoned");
                                if inbound.session != self.session {
                                    // The sender restarted and a newer connection took over.
                                    return;
                                }
                                if seq <= inbound.delivered {
                                    Metrics::inc(&self.router.peers().env.metrics.duplicates);
                                    continue;
                                }
                                if seq != inbound.delivered + 1 {
                                    // This box restarted: what the sender had sent to the old
                                    // process died with it, and its stream goes on from here.
                                    tracing::info!(seq, delivered = inbound.delivered, from = %self.peer.addr, "stream resumes after this box restarted");
                                }
                                inbound.delivered = seq;
                                Metrics::inc(&self.router.peers().env.metrics.frames_in);
                                // Routed under the lock so two connections of one peer keep
                                // order.
                                self.router.deliver(env);
                            }
                            last_delivered = seq;
                            if !armed {
                                armed = true;
                                ack_timer
                                    .as_mut()
                                    .reset(tokio::time::Instant::now() + ACK_DELAY);
                            }
                        }
                        Ok((Header::Ack { upto }, _)) => {
                            self.peer.acked.fetch_max(upto, Ordering::AcqRel);
                            continue;
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
                self.peer.ack(last_delivered);
                acked = last_delivered;
            }
            armed = false;
        }
    }
}

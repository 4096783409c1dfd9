//! Routing: from the identifier an agent uses to the agent's inbox, here or in another box.
//!
//! Two tables, both caches that the controller fills:
//!
//! * the **ART** (agent routing table, one per agent, owned by the agent's task so it needs no
//!   lock) maps an identifier the agent uses to a physical identifier: `KVS` →
//!   `KVS/ShardIngressProxy0`. A key is always a prefix of its value.
//! * the **BRT** (box routing table, one per box, shared by its agents) maps a physical
//!   identifier to the address of the box that runs it.
//!
//! The [`Router`] of a box holds the BRT and the inboxes of the box's agents. To route an
//! envelope it looks for a local inbox first (a co-located agent: the envelope is moved into
//! its queue, no serialization), then in the BRT (another box: the envelope is handed to the
//! transport). On a BRT miss it parks the envelope, asks the controller, and sends everything
//! parked for that identifier, in order, when the answer comes.

use std::collections::HashMap;

use rustc_hash::FxHashMap;
use std::collections::hash_map::Entry;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::error::Error;
use crate::message::{Envelope, Id, Message, Payload};
use crate::metrics::Metrics;
pub(crate) use crate::protocol::system_messages;
pub use crate::protocol::{
    ArtAnswer, BrtAnswer, CONTROLLER, ResolveArt, ResolveBrt, RouteUpdate, manager_id,
};
use crate::shutdown::Shutdown;
pub(crate) use crate::slot::Slot;
use crate::transport::Peers;

/// Whether `physical` may be the value of ART key `ident`: equal, or under `ident/`.
pub fn is_refinement(ident: &str, physical: &str) -> bool {
    physical == ident
        || (physical.starts_with(ident) && physical.as_bytes().get(ident.len()) == Some(&b'/'))
}

/// An agent routing table: identifier the agent uses → physical identifier.
#[derive(Debug, Default, Clone)]
pub struct Art {
    map: FxHashMap<Id, Id>,
}

impl Art {
    /// An empty table.
    pub fn new() -> Self {
        Art::default()
    }

    /// The physical identifier for `ident`, if cached.
    pub fn get(&self, ident: &str) -> Option<&Id> {
        self.map.get(ident)
    }

    /// Caches `ident → physical`; refused unless `ident` is a path prefix of `physical`.
    pub fn insert(&mut self, ident: Id, physical: Id) -> Result<(), Error> {
        if !is_refinement(&ident, &physical) {
            return Err(Error::UnknownIdentifier(format!(
                "ART entry `{ident}` → `{physical}`: the key is not a prefix"
            )));
        }
        self.map.insert(ident, physical);
        Ok(())
    }

    /// Forgets `ident` (the next send to it asks the controller).
    pub fn invalidate(&mut self, ident: &str) {
        self.map.remove(ident);
    }

    /// How many entries are cached.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no entry is cached.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// A question to a replicated controller, kept until answered so it can be asked again.
#[derive(Debug)]
struct Question {
    /// When it was last sent.
    sent: Instant,
    /// The question's message name.
    name: Id,
    /// Its encoding (so it can be sent again without knowing its type).
    bytes: bytes::Bytes,
}

/// How long a question to a replicated controller may go unanswered before it is asked again,
/// of the next replica: longer than a leader election (a few 100 ms heartbeat rounds).
pub(crate) const QUESTION_TIMEOUT: Duration = Duration::from_millis(400);

/// The routing core of a box, shared by its agents' tasks and its connections.
#[derive(Debug)]
pub(crate) struct Router {
    /// The box's name.
    pub box_name: String,
    /// The box manager's identifier (`$box/<name>`); questions to the controller come from it.
    pub manager: Id,
    /// The address this box listens on: its own entry in every BRT.
    pub addr: Id,
    /// Whether a controller is configured (without one, misses fail at once).
    pub has_controller: bool,
    /// The inboxes of the agents running here.
    pub local: RwLock<FxHashMap<Id, Slot>>,
    /// The box routing table.
    pub brt: RwLock<FxHashMap<Id, Id>>,
    /// Envelopes waiting for a BRT answer, by identifier, in arrival order.
    pending_brt: Mutex<FxHashMap<Id, Vec<Envelope>>>,
    /// Questions to the controller waiting for their answer, by request number.
    calls: Mutex<HashMap<u64, oneshot::Sender<Payload>>>,
    next_req: AtomicU64,
    /// The addresses of the replicated controller's boxes, by replica index (empty unless the
    /// controller is replicated).
    controllers: Vec<Id>,
    /// The index in `controllers` of the replica believed to lead: where `controller` goes.
    current: AtomicUsize,
    /// Questions to a replicated controller not yet answered, by request number.
    questions: Mutex<HashMap<u64, Question>>,
    /// Connections to other boxes.
    pub peers: Peers,
    /// The box's counters.
    pub metrics: Arc<Metrics>,
    /// Set when the box shuts down: from then on messages are dropped quietly.
    pub closing: std::sync::atomic::AtomicBool,
}

impl Router {
    /// A router for a box; `peers` carries envelopes to other boxes. With a replicated
    /// controller, `controllers` lists its replicas' box addresses, by replica index.
    /// `session` differs between two starts of the box: request numbers start from it, so a
    /// question the box asks again can be told from the same question asked by its next
    /// incarnation.
    pub(crate) fn new(
        box_name: &str,
        addr: Id,
        has_controller: bool,
        controllers: Vec<Id>,
        session: u64,
        peers: Peers,
        metrics: Arc<Metrics>,
    ) -> Self {
        let router = Router {
            box_name: box_name.to_string(),
            manager: manager_id(box_name).into(),
            addr,
            has_controller,
            local: RwLock::new(FxHashMap::default()),
            brt: RwLock::new(FxHashMap::default()),
            pending_brt: Mutex::new(FxHashMap::default()),
            calls: Mutex::new(HashMap::new()),
            next_req: AtomicU64::new((session << 24).max(1)),
            controllers,
            current: AtomicUsize::new(0),
            questions: Mutex::new(HashMap::new()),
            peers,
            metrics,
            closing: std::sync::atomic::AtomicBool::new(false),
        };
        for (i, at) in router.controllers.iter().enumerate() {
            router.set_brt(&crate::protocol::replica_id(i), Some(at));
        }
        if let Some(first) = router.controllers.first() {
            router.set_brt(CONTROLLER, Some(first));
        }
        router
    }

    /// Whether the controller is replicated (questions to it are then asked again on timeout).
    pub(crate) fn replicated_controller(&self) -> bool {
        self.controllers.len() > 1
    }

    /// Sends a question to the controller, keeping it to ask again if the controller is
    /// replicated.
    fn ask_controller<M: Message>(&self, req: u64, question: M) {
        if self.replicated_controller() {
            let payload = Payload::new(question);
            match payload.to_bytes() {
                Ok(bytes) => {
                    self.questions.lock().expect("questions poisoned").insert(
                        req,
                        Question {
                            sent: Instant::now(),
                            name: M::NAME.into(),
                            bytes,
                        },
                    );
                }
                Err(e) => tracing::warn!(error = %e, "question to the controller not kept"),
            }
            self.route(Envelope {
                from: self.manager.clone(),
                to: CONTROLLER.into(),
                payload,
                tag: 0,
            });
        } else {
            self.route(Envelope::new(self.manager.clone(), CONTROLLER, question));
        }
    }

    /// The question `req` was answered: stop asking it.
    pub(crate) fn settle(&self, req: u64) {
        if self.replicated_controller() {
            self.questions
                .lock()
                .expect("questions poisoned")
                .remove(&req);
        }
    }

    /// Asks again, of the next controller replica, every question unanswered for longer than
    /// [`QUESTION_TIMEOUT`]: the replica asked may have died, or lost it in a leader change.
    pub(crate) fn retry_questions(&self) {
        let now = Instant::now();
        let late: Vec<(Id, bytes::Bytes)> = {
            let mut questions = self.questions.lock().expect("questions poisoned");
            questions
                .values_mut()
                .filter(|q| now.duration_since(q.sent) >= QUESTION_TIMEOUT)
                .map(|q| {
                    q.sent = now;
                    (q.name.clone(), q.bytes.clone())
                })
                .collect()
        };
        if late.is_empty() {
            return;
        }
        let next = (self.current.load(Ordering::Relaxed) + 1) % self.controllers.len();
        self.current.store(next, Ordering::Relaxed);
        tracing::info!(box_name = %self.box_name, replica = next, questions = late.len(), "controller silent; asking another replica");
        self.set_brt(CONTROLLER, Some(&self.controllers[next]));
        for (name, bytes) in late {
            self.route(Envelope {
                from: self.manager.clone(),
                to: CONTROLLER.into(),
                payload: Payload::Encoded { name, bytes },
                tag: 0,
            });
        }
    }

    /// Asks unanswered questions again until the box shuts down (replicated controller only).
    pub(crate) async fn retry_loop(self: Arc<Self>, mut shutdown: Shutdown) {
        let mut every = tokio::time::interval(QUESTION_TIMEOUT / 4);
        loop {
            tokio::select! {
                _ = every.tick() => self.retry_questions(),
                _ = shutdown.recv() => return,
            }
        }
    }

    /// Logs and counts a message that cannot be delivered.
    pub(crate) fn reject(&self, env: &Envelope, why: &Error) {
        Metrics::inc(&self.metrics.rejections);
        tracing::warn!(box_name = %self.box_name, from = %env.from, to = %env.to, message = env.payload.name(), error = %why, "message rejected");
    }

    /// Sends an envelope on its way to the physical agent `env.to`.
    pub(crate) fn route(&self, env: Envelope) {
        if self.closing.load(Ordering::Relaxed) {
            tracing::trace!(to = %env.to, "box shutting down; message dropped");
            return;
        }
        // 1. A co-located agent: move the envelope into its queue.
        {
            let local = self.local.read().expect("routing table poisoned");
            if let Some(slot) = local.get(&env.to) {
                match slot.inbox.send(env) {
                    Ok(()) => Metrics::inc(&self.metrics.messages_in),
                    Err(e) => {
                        // The agent's task has ended but its slot is not yet removed.
                        let env = e.0;
                        self.reject(&env, &Error::DeadAgent(env.to.to_string()));
                    }
                }
                return;
            }
        }
        // 2. Another box, if the BRT knows which.
        let addr = self
            .brt
            .read()
            .expect("routing table poisoned")
            .get(&env.to)
            .cloned();
        match addr {
            Some(addr) => self.send_to_box(&addr, env),
            None => self.brt_miss(env),
        }
    }

    fn send_to_box(&self, addr: &Id, env: Envelope) {
        if *addr == self.addr {
            // The BRT says "here", but no such agent runs here: it stopped or crashed.
            let err = Error::DeadAgent(env.to.to_string());
            self.reject(&env, &err);
        } else {
            self.peers.send(addr, env);
        }
    }

    fn brt_miss(&self, env: Envelope) {
        if !self.has_controller || &*env.to == CONTROLLER {
            let err = Error::UnknownIdentifier(env.to.to_string());
            self.reject(&env, &err);
            return;
        }
        let mut pending = self.pending_brt.lock().expect("pending table poisoned");
        // The answer may have arrived between our BRT look-up and taking this lock.
        if let Some(addr) = self
            .brt
            .read()
            .expect("routing table poisoned")
            .get(&env.to)
            .cloned()
        {
            drop(pending);
            self.send_to_box(&addr, env);
            return;
        }
        match pending.entry(env.to.clone()) {
            Entry::Occupied(mut waiting) => waiting.get_mut().push(env),
            Entry::Vacant(slot) => {
                let id = env.to.to_string();
                slot.insert(vec![env]);
                drop(pending);
                Metrics::inc(&self.metrics.brt_misses);
                tracing::debug!(box_name = %self.box_name, %id, "BRT miss: asking the controller");
                let req = self.next_req.fetch_add(1, Ordering::Relaxed);
                self.ask_controller(req, ResolveBrt { req, id });
            }
        }
    }

    /// The controller answered a BRT question: cache it and send what was parked.
    pub(crate) fn brt_resolved(&self, id: &str, addr: Option<&str>) {
        let mut pending = self.pending_brt.lock().expect("pending table poisoned");
        let parked = pending.remove(id).unwrap_or_default();
        match addr {
            Some(addr) => {
                let addr: Id = addr.into();
                // Parked envelopes go first, then the entry becomes visible: order is kept.
                for env in parked {
                    self.send_to_box(&addr, env);
                }
                self.brt
                    .write()
                    .expect("routing table poisoned")
                    .insert(id.into(), addr);
            }
            None => {
                for env in parked {
                    self.reject(&env, &Error::UnknownIdentifier(id.to_string()));
                }
            }
        }
    }

    /// Caches `id → addr` if the BRT has no entry for `id` (learnt from incoming traffic).
    pub(crate) fn learn(&self, id: &Id, addr: &Id) {
        if self
            .local
            .read()
            .expect("routing table poisoned")
            .contains_key(id)
        {
            return;
        }
        if &**id == CONTROLLER
            && let Some(i) = self.controllers.iter().position(|a| a == addr)
        {
            // Only the leading replica of a replicated controller sends its outputs: answers
            // come from the replica to ask next time.
            self.current.store(i, Ordering::Relaxed);
        }
        let mut brt = self.brt.write().expect("routing table poisoned");
        if id.starts_with("$box/")
            || (&**id == CONTROLLER && self.controllers.iter().any(|a| a == addr))
        {
            // A box manager only ever sends from its own box, and never forwards: the box it
            // came from is where it runs now (a box that restarted at a new address).
            brt.insert(id.clone(), addr.clone());
        } else {
            // Others may be forwarded by a proxy in another box: the first guess stands until
            // the controller says otherwise.
            brt.entry(id.clone()).or_insert_with(|| addr.clone());
        }
    }

    /// Sets (`Some`) or invalidates (`None`) the BRT entry for `id`.
    pub(crate) fn set_brt(&self, id: &str, addr: Option<&str>) {
        let mut brt = self.brt.write().expect("routing table poisoned");
        match addr {
            Some(a) => {
                brt.insert(id.into(), a.into());
            }
            None => {
                brt.remove(id);
            }
        }
    }

    /// Sends a question to the controller from the box manager; the answer comes back on
    /// the returned channel (the box manager matches it by `req`).
    pub(crate) fn call_controller<M: Message>(
        &self,
        question: impl FnOnce(u64) -> M,
    ) -> oneshot::Receiver<Payload> {
        let req = self.next_req.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.calls.lock().expect("calls poisoned").insert(req, tx);
        self.ask_controller(req, question(req));
        rx
    }

    /// Completes the question `req` with its answer; `false` if nobody waits for it.
    pub(crate) fn answer(&self, req: u64, payload: Payload) -> bool {
        self.settle(req);
        match self.calls.lock().expect("calls poisoned").remove(&req) {
            Some(tx) => tx.send(payload).is_ok(),
            None => false,
        }
    }

    /// Asks the controller which physical agent `agent` reaches by `ident` (an ART miss).
    pub(crate) fn resolve_art(
        &self,
        agent: &Id,
        ident: &Id,
    ) -> impl Future<Output = Option<Id>> + Send + 'static {
        Metrics::inc(&self.metrics.art_misses);
        let no_controller = !self.has_controller;
        let rx = (!no_controller).then(|| {
            self.call_controller(|req| ResolveArt {
                req,
                agent: agent.to_string(),
                ident: ident.to_string(),
            })
        });
        let ident = ident.clone();
        async move {
            let Some(rx) = rx else {
                // A box without a controller: identifiers are physical as written.
                return Some(ident);
            };
            let answer = rx.await.ok()?.decode::<ArtAnswer>().ok()?;
            answer.physical.map(Id::from)
        }
    }
}

impl crate::transport::Deliver for Router {
    fn deliver(&self, env: Envelope) {
        self.route(env);
    }

    fn learn(&self, id: &Id, addr: &Id) {
        Router::learn(self, id, addr);
    }

    fn peers(&self) -> &Peers {
        &self.peers
    }
}

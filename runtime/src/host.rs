//! A box: the process (or container) that runs agents and carries their messages.
//!
//! [`BoxBuilder`] configures one (its name, its listen address, where the controller is, the
//! kinds of agent it can start) and [`BoxBuilder::start`] brings it up:
//!
//! 1. bind the listener, so the box's address is known (`127.0.0.1:0` picks a free port);
//! 2. start the box manager agent `$box/<name>` and, if configured, the controller;
//! 3. register with the controller, which starts the agents placed in this box.
//!
//! The [`BoxHandle`] it returns starts and stops agents, opens [`Endpoint`]s, reads counters,
//! and shuts the box down.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};

use crate::agent::Agent;
use crate::context::Clock;
use crate::controller::Controller;
use crate::controller_group::ControllerReplica;
use crate::endpoint::Endpoint;
use crate::error::Error;
use crate::manager::{BoxManager, ManagedBox};
use crate::message::{Envelope, Id, Payload};
use crate::metrics::{Metrics, MetricsSnapshot};
use crate::protocol::{
    AgentStarted, AgentStopped, CONTROLLER, Ping, RegisterBox, manager_id, replica_id,
};
use crate::routing::{Art, Router, Slot};
use crate::runner::{Control, Runner};
use crate::shutdown::Lifecycle;
use crate::transport::{self, Peers, TransportEnv};

/// Makes an agent of one kind from its configuration bytes.
pub type Factory = Arc<dyn Fn(&[u8]) -> Result<Box<dyn Agent>, Error> + Send + Sync>;

/// Where a box finds the controller.
enum ControllerAt {
    /// Nowhere: a standalone box; identifiers are physical and must run here or be added
    /// with [`BoxHandle::add_route`].
    Nowhere,
    /// In this box.
    Here(Box<Controller>),
    /// In the box at this address.
    Remote(String),
    /// Replicated over the boxes at these addresses (by replica index); `here`: this box runs
    /// one of the replicas.
    Replicated {
        /// Every replica's box address.
        addrs: Vec<String>,
        /// The replica this box runs, if any.
        here: Option<Box<ControllerReplica>>,
    },
}

/// Configures and starts a box.
pub struct BoxBuilder {
    name: String,
    listen: String,
    controller: ControllerAt,
    kinds: HashMap<String, Factory>,
    data_dir: Option<std::path::PathBuf>,
}

impl BoxBuilder {
    /// A box named `name`, listening on `127.0.0.1:0`, without a controller.
    pub fn new(name: impl Into<String>) -> Self {
        BoxBuilder {
            name: name.into(),
            listen: "127.0.0.1:0".into(),
            controller: ControllerAt::Nowhere,
            kinds: HashMap::new(),
            data_dir: None,
        }
    }

    /// Keeps the agents' durable stores ([`Context::durable`](crate::Context::durable)) as
    /// files in `dir`, one per agent, so that an agent restarted in a box with the same data
    /// directory finds what it wrote. Without one, agents have no durable store.
    pub fn data_dir(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }

    /// The address to listen on for other boxes (`host:port`; port 0 picks a free one).
    pub fn listen(mut self, addr: impl Into<String>) -> Self {
        self.listen = addr.into();
        self
    }

    /// Runs the controller in this box.
    pub fn with_controller(mut self, controller: Controller) -> Self {
        self.controller = ControllerAt::Here(Box::new(controller));
        self
    }

    /// Uses the controller of the box at `addr`.
    pub fn controller_at(mut self, addr: impl Into<String>) -> Self {
        self.controller = ControllerAt::Remote(addr.into());
        self
    }

    /// Uses a replicated controller whose replicas run in the boxes at `addrs` (by replica
    /// index). Questions go to the replica believed to lead and, unanswered, to the next one.
    pub fn controllers_at(mut self, addrs: Vec<String>) -> Self {
        self.controller = match addrs.len() {
            1 => ControllerAt::Remote(addrs[0].clone()),
            _ => ControllerAt::Replicated { addrs, here: None },
        };
        self
    }

    /// Runs `replica`, replica `index` of the controller replicated over the boxes at `addrs`
    /// (by replica index); the box listens at `addrs[index]`, where its peers expect it.
    pub fn with_controller_replica(
        mut self,
        index: usize,
        replica: ControllerReplica,
        addrs: Vec<String>,
    ) -> Self {
        if let Some(at) = addrs.get(index) {
            self.listen = at.clone();
        }
        self.controller = ControllerAt::Replicated {
            addrs,
            here: Some(Box::new(replica)),
        };
        self
    }

    /// Teaches the box to make agents of kind `kind` (for the controller's `StartAgent`).
    pub fn kind<A: Agent>(
        mut self,
        kind: impl Into<String>,
        make: impl Fn(&[u8]) -> A + Send + Sync + 'static,
    ) -> Self {
        self.kinds.insert(
            kind.into(),
            Arc::new(move |config| Ok(Box::new(make(config)) as Box<dyn Agent>)),
        );
        self
    }

    /// Like [`BoxBuilder::kind`], for a factory that can fail or returns a boxed agent.
    pub fn kind_boxed(mut self, kind: impl Into<String>, make: Factory) -> Self {
        self.kinds.insert(kind.into(), make);
        self
    }

    /// The kinds of agent this box can make, with their factories (the simulator reads them).
    pub fn factories(&self) -> &HashMap<String, Factory> {
        &self.kinds
    }

    /// Binds the listener and starts the box (see the module docs).
    pub async fn start(self) -> Result<BoxHandle, Error> {
        let listener = TcpListener::bind(&self.listen).await?;
        let addr: Id = listener.local_addr()?.to_string().into();
        let (lifecycle, done_rx) = Lifecycle::new();
        let lifecycle = Arc::new(lifecycle);
        let metrics = Arc::new(Metrics::default());
        let session = random_session();
        let env = TransportEnv {
            box_name: self.name.clone(),
            listen: addr.clone(),
            session,
            metrics: metrics.clone(),
            lifecycle: lifecycle.clone(),
            deliver: Arc::default(),
        };
        let router_slot = env.deliver.clone();
        let has_controller = !matches!(self.controller, ControllerAt::Nowhere);
        let controllers: Vec<Id> = match &self.controller {
            ControllerAt::Replicated { addrs, .. } => {
                addrs.iter().map(|a| Id::from(&**a)).collect()
            }
            _ => Vec::new(),
        };
        let router = Arc::new(Router::new(
            &self.name,
            addr.clone(),
            has_controller,
            controllers,
            session,
            Peers::new(env),
            metrics,
        ));
        let deliver: Arc<dyn transport::Deliver> = router.clone();
        let _ = router_slot.set(Arc::downgrade(&deliver));
        if let ControllerAt::Remote(at) = &self.controller {
            router.set_brt(CONTROLLER, Some(at));
        }
        let (changed, _) = watch::channel(0);
        let mut kinds: Vec<String> = self.kinds.keys().cloned().collect();
        kinds.sort();
        let core = Arc::new(BoxCore {
            router: router.clone(),
            kinds: self.kinds,
            data_dir: self.data_dir,
            clock: Clock::new(),
            lifecycle: lifecycle.clone(),
            next_generation: AtomicU64::new(1),
            changed,
        });
        let shutdown = lifecycle.listener().ok_or(Error::Closed)?;
        tokio::spawn(transport::accept_loop(
            listener,
            deliver,
            lifecycle.clone(),
            shutdown,
        ));

        core.spawn_agent(
            router.manager.clone(),
            Box::new(BoxManager::new({
                let managed: Arc<dyn ManagedBox> = core.clone();
                Arc::downgrade(&managed)
            })),
            Art::new(),
            None,
            false,
        )?;
        let hosts_controller = matches!(
            self.controller,
            ControllerAt::Here(_) | ControllerAt::Replicated { here: Some(_), .. }
        );
        match self.controller {
            ControllerAt::Here(controller) => {
                core.spawn_agent(CONTROLLER.into(), controller, Art::new(), None, false)?;
            }
            ControllerAt::Replicated { here, .. } => {
                if let Some(replica) = here {
                    let index = replica.index();
                    core.spawn_agent(CONTROLLER.into(), replica, Art::new(), None, false)?;
                    // Its peers reach it by its replica identifier, everyone else as
                    // `controller`: one agent, two names.
                    core.alias(replica_id(index).into(), CONTROLLER)?;
                }
                let shutdown = lifecycle.listener().ok_or(Error::Closed)?;
                tokio::spawn(router.clone().retry_loop(shutdown));
            }
            ControllerAt::Remote(_) | ControllerAt::Nowhere => {}
        }
        let registered = has_controller.then(|| {
            router.call_controller(|req| RegisterBox {
                req,
                name: self.name.clone(),
                addr: addr.to_string(),
                kinds,
                hosts_controller,
            })
        });
        tracing::info!(box_name = %self.name, %addr, "box started");
        Ok(BoxHandle {
            core,
            done_rx: Some(done_rx),
            registered: Mutex::new(registered),
        })
    }
}

/// A session number that differs between two starts of a box.
fn random_session() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish() | 1
}

/// What the box's tasks share: routing, the kinds of agent it can make, its lifecycle.
pub(crate) struct BoxCore {
    pub router: Arc<Router>,
    kinds: HashMap<String, Factory>,
    /// Where the agents' durable stores live, if anywhere.
    data_dir: Option<std::path::PathBuf>,
    clock: Clock,
    lifecycle: Arc<Lifecycle>,
    next_generation: AtomicU64,
    /// Bumped whenever an agent stops, so [`BoxHandle::wait_stopped`] can wait for it.
    changed: watch::Sender<u64>,
}

impl BoxCore {
    /// Makes an agent of `kind`.
    pub(crate) fn make(&self, kind: &str, config: &[u8]) -> Result<Box<dyn Agent>, Error> {
        let factory = self
            .kinds
            .get(kind)
            .ok_or_else(|| Error::UnknownKind(kind.to_string()))?;
        factory(config)
    }

    /// Starts `agent` as `id` in this box, restoring `state` if given; `announce` tells the
    /// controller.
    pub(crate) fn spawn_agent(
        self: &Arc<Self>,
        id: Id,
        mut agent: Box<dyn Agent>,
        mut art: Art,
        state: Option<Vec<u8>>,
        announce: bool,
    ) -> Result<(), Error> {
        if let Some(bytes) = state {
            agent.restore(&bytes)?;
        }
        let shutdown = self.lifecycle.listener().ok_or(Error::Closed)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let (ctl_tx, ctl_rx) = mpsc::unbounded_channel();
        let generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
        {
            let mut local = self.router.local.write().expect("routing table poisoned");
            if local.contains_key(&id) {
                return Err(Error::AgentExists(id.to_string()));
            }
            local.insert(
                id.clone(),
                Slot {
                    inbox: tx,
                    control: Some(ctl_tx),
                    generation,
                },
            );
        }
        if art.get(CONTROLLER).is_none() {
            art.insert(CONTROLLER.into(), CONTROLLER.into())?;
        }
        let weak = Arc::downgrade(self);
        let inbox_tx = {
            let local = self.router.local.read().expect("routing table poisoned");
            local
                .get(&id)
                .map(|s| s.inbox.downgrade())
                .ok_or(Error::Closed)?
        };
        let runner = Runner {
            inbox_tx,
            id: id.clone(),
            agent,
            router: self.router.clone(),
            art,
            clock: self.clock,
            durable: self
                .data_dir
                .as_deref()
                .map(|dir| crate::durable::DurableLog::in_dir(dir, &id)),
            on_exit: Box::new(move |id: &Id, report: bool| {
                if let Some(core) = weak.upgrade() {
                    core.unregister(id, generation, report);
                }
            }),
        };
        tokio::spawn(runner.run(rx, ctl_rx, shutdown));
        tracing::debug!(box_name = %self.router.box_name, %id, "agent started");
        if announce && self.router.has_controller {
            let started = AgentStarted {
                id: id.to_string(),
                in_box: self.router.box_name.clone(),
            };
            self.router.route(Envelope::new(
                self.router.manager.clone(),
                CONTROLLER,
                started,
            ));
        }
        Ok(())
    }

    /// Makes the running agent `of` reachable as `alias` too (same inbox, same incarnation).
    fn alias(&self, alias: Id, of: &str) -> Result<(), Error> {
        let mut local = self.router.local.write().expect("routing table poisoned");
        let slot = local
            .get(of)
            .cloned()
            .ok_or_else(|| Error::DeadAgent(of.to_string()))?;
        if local.contains_key(&alias) {
            return Err(Error::AgentExists(alias.to_string()));
        }
        local.insert(alias, slot);
        Ok(())
    }

    /// Removes a stopped agent's slots, its aliases too (if they are still this incarnation's).
    fn unregister(&self, id: &Id, generation: u64, report: bool) {
        {
            let mut local = self.router.local.write().expect("routing table poisoned");
            if local.get(id).is_some_and(|s| s.generation == generation) {
                local.retain(|_, s| s.generation != generation);
            }
        }
        self.changed.send_modify(|n| *n += 1);
        if report && self.router.has_controller {
            let stopped = AgentStopped {
                id: id.to_string(),
                in_box: self.router.box_name.clone(),
                state: None,
            };
            self.router.route(Envelope::new(
                self.router.manager.clone(),
                CONTROLLER,
                stopped,
            ));
        }
    }

    /// Sends a command to a running agent.
    pub(crate) fn control(&self, id: &str, cmd: Control) -> Result<(), Error> {
        let local = self.router.local.read().expect("routing table poisoned");
        let ctl = local
            .get(id)
            .and_then(|s| s.control.as_ref())
            .ok_or_else(|| Error::DeadAgent(id.to_string()))?;
        ctl.send(cmd).map_err(|_| Error::DeadAgent(id.to_string()))
    }
}

impl ManagedBox for BoxCore {
    fn router(&self) -> &Arc<Router> {
        &self.router
    }

    fn start(
        self: Arc<Self>,
        id: Id,
        kind: &str,
        config: &[u8],
        art: Art,
        state: Option<Vec<u8>>,
    ) -> Result<(), Error> {
        let agent = self.make(kind, config)?;
        self.spawn_agent(id, agent, art, state, true)
    }

    fn control(&self, id: &str, cmd: Control) -> Result<(), Error> {
        BoxCore::control(self, id, cmd)
    }
}

/// A running box; see the module docs.
pub struct BoxHandle {
    core: Arc<BoxCore>,
    /// Closes when every task of the box has ended.
    done_rx: Option<mpsc::Receiver<()>>,
    /// Completes when the controller has registered the box.
    registered: Mutex<Option<oneshot::Receiver<Payload>>>,
}

impl BoxHandle {
    /// The box's name.
    pub fn name(&self) -> &str {
        &self.core.router.box_name
    }

    /// The address the box listens on (its entry in BRTs).
    pub fn addr(&self) -> &str {
        &self.core.router.addr
    }

    /// The box manager's identifier.
    pub fn manager(&self) -> &str {
        &self.core.router.manager
    }

    /// The box's counters now.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.core.router.metrics.snapshot()
    }

    /// The gauges the box's agents published (`Context::set_metric`), by name.
    pub fn gauges(&self) -> std::collections::BTreeMap<String, u64> {
        self.core.router.metrics.gauges()
    }

    /// Waits until the controller has registered this box and started the agents placed in it
    /// (at once for a box without a controller).
    pub async fn ready(&self) -> Result<(), Error> {
        let rx = self.registered.lock().expect("poisoned").take();
        if let Some(rx) = rx {
            rx.await.map_err(|_| Error::Closed)?;
        }
        Ok(())
    }

    /// Waits until the controller has handled everything this box sent it so far.
    pub async fn sync_controller(&self) -> Result<(), Error> {
        if !self.core.router.has_controller {
            return Ok(());
        }
        self.core
            .router
            .call_controller(|req| Ping { req })
            .await
            .map_err(|_| Error::Closed)?;
        Ok(())
    }

    /// Starts `agent` as `id` in this box (and tells the controller, if any).
    pub fn spawn(&self, id: impl Into<Id>, agent: impl Agent) -> Result<(), Error> {
        self.core
            .spawn_agent(id.into(), Box::new(agent), Art::new(), None, true)
    }

    /// Starts `agent` as `id` with its state restored from a snapshot.
    pub fn spawn_restored(
        &self,
        id: impl Into<Id>,
        agent: impl Agent,
        state: Vec<u8>,
    ) -> Result<(), Error> {
        self.core
            .spawn_agent(id.into(), Box::new(agent), Art::new(), Some(state), true)
    }

    /// Starts `agent` as `id` with initial ART entries (identifier → physical identifier).
    pub fn spawn_with_routes(
        &self,
        id: impl Into<Id>,
        agent: impl Agent,
        routes: &[(&str, &str)],
    ) -> Result<(), Error> {
        let mut art = Art::new();
        for (k, v) in routes {
            art.insert((*k).into(), (*v).into())?;
        }
        self.core
            .spawn_agent(id.into(), Box::new(agent), art, None, true)
    }

    /// Opens an endpoint with identifier `id` in this box.
    pub fn endpoint(&self, id: impl Into<Id>) -> Result<Endpoint, Error> {
        let id = id.into();
        let router = &self.core.router;
        let (tx, rx) = mpsc::unbounded_channel();
        let generation = self.core.next_generation.fetch_add(1, Ordering::Relaxed);
        {
            let mut local = router.local.write().expect("routing table poisoned");
            if local.contains_key(&id) {
                return Err(Error::AgentExists(id.to_string()));
            }
            local.insert(
                id.clone(),
                Slot {
                    inbox: tx,
                    control: None,
                    generation,
                },
            );
        }
        let mut art = Art::new();
        art.insert(CONTROLLER.into(), CONTROLLER.into())?;
        Ok(Endpoint {
            id,
            router: router.clone(),
            inbox: rx,
            art,
            generation,
        })
    }

    /// Whether an agent (or endpoint) `id` runs in this box.
    pub fn is_running(&self, id: &str) -> bool {
        self.core
            .router
            .local
            .read()
            .expect("routing table poisoned")
            .contains_key(id)
    }

    /// The identifiers of the agents and endpoints in this box, sorted.
    pub fn agents(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .core
            .router
            .local
            .read()
            .expect("routing table poisoned")
            .keys()
            .map(|k| k.to_string())
            .collect();
        ids.sort();
        ids
    }

    /// Waits until no agent `id` runs in this box (it finished, crashed or was stopped).
    pub async fn wait_stopped(&self, id: &str) {
        let mut changed = self.core.changed.subscribe();
        while self.is_running(id) {
            if changed.changed().await.is_err() {
                return;
            }
        }
    }

    /// A snapshot of agent `id`'s state, taken between two of its handler calls.
    pub async fn snapshot(&self, id: &str) -> Result<Vec<u8>, Error> {
        let (tx, rx) = oneshot::channel();
        self.core.control(id, Control::Snapshot(tx))?;
        rx.await.map_err(|_| Error::DeadAgent(id.to_string()))?
    }

    /// Stops agent `id` and returns its last snapshot.
    pub async fn stop_agent(&self, id: &str) -> Result<Vec<u8>, Error> {
        let (tx, rx) = oneshot::channel();
        self.core.control(id, Control::Stop(tx))?;
        let state = rx.await.map_err(|_| Error::DeadAgent(id.to_string()))?;
        self.wait_stopped(id).await;
        state
    }

    /// Wedges agent `id`: it takes no transitions (messages and timers wait) until unwedged.
    pub fn wedge(&self, id: &str) -> Result<(), Error> {
        self.core.control(id, Control::Wedge)
    }

    /// Lets a wedged agent resume.
    pub fn unwedge(&self, id: &str) -> Result<(), Error> {
        self.core.control(id, Control::Unwedge)
    }

    /// Adds a BRT entry by hand: the agent `id` runs in the box at `addr`.
    pub fn add_route(&self, id: &str, addr: &str) {
        self.core.router.set_brt(id, Some(addr));
    }

    /// The BRT entry for `id`, if cached.
    pub fn brt_entry(&self, id: &str) -> Option<String> {
        self.core
            .router
            .brt
            .read()
            .expect("routing table poisoned")
            .get(id)
            .map(|a| a.to_string())
    }

    /// Fault injection: drops every connection this box dialed; they are re-established and
    /// unacknowledged frames are sent again.
    pub fn drop_connections(&self) {
        self.core.router.peers.drop_connections();
    }

    /// The identifier of the box manager of the box named `name`.
    pub fn manager_of(name: &str) -> String {
        manager_id(name)
    }

    /// Stops every agent and connection of the box and waits for their tasks to end.
    pub async fn shutdown(mut self) {
        self.core.router.closing.store(true, Ordering::Relaxed);
        self.core.lifecycle.begin();
        // Agents stop when their senders are dropped (connections and the listener stop on
        // the broadcast).
        self.core
            .router
            .local
            .write()
            .expect("routing table poisoned")
            .clear();
        if let Some(mut rx) = self.done_rx.take() {
            let _ = rx.recv().await;
        }
        tracing::info!(box_name = %self.core.router.box_name, "box stopped");
    }
}

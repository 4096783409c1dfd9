//! The protocol of the runtime, in one ground-floor module: the messages boxes, box managers,
//! the controller and its view service exchange, and the identifiers they are addressed by.
//! Every other module of the runtime may use it; it uses none of them but plain data, so a
//! message type never drags its handler along.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::deployment::{AgentPlan, Placement};
use crate::metrics::MetricsSnapshot;

// Identifiers.

/// The identifier of the controller agent, in every system.
pub const CONTROLLER: &str = "controller";

/// The identifier of the box manager agent of the box named `box_name`.
pub fn manager_id(box_name: &str) -> String {
    format!("$box/{box_name}")
}

/// The identifier under which controller replica `index` is reachable by its peers.
pub fn replica_id(index: usize) -> String {
    format!("{CONTROLLER}/Replica{index}")
}

/// The name of the box that runs controller replica `index` in a generated deployment.
pub fn replica_box(index: usize) -> String {
    format!("{CONTROLLER}{index}")
}

// Message names: every protocol message is `ovid.<Type>`.

/// Implements [`Message`] for the runtime's own protocol messages, named `ovid.<Type>`.
macro_rules! system_messages {
    ($($t:ident),* $(,)?) => {
        $(impl $crate::message::Message for $t {
            const NAME: &'static str = concat!("ovid.", stringify!($t));
        })*
    };
}

pub(crate) use system_messages;

// Routing: ART and BRT misses, and route changes.

/// Box manager → controller: which physical identifier does `agent` reach by `ident`?
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolveArt {
    /// Correlates the answer.
    pub req: u64,
    /// The asking agent's physical identifier.
    pub agent: String,
    /// The identifier it used.
    pub ident: String,
}

/// Controller → box manager: the answer to [`ResolveArt`] (`None`: unknown identifier).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtAnswer {
    /// From the question.
    pub req: u64,
    /// From the question.
    pub ident: String,
    /// The physical identifier.
    pub physical: Option<String>,
}

/// Box manager → controller: which box runs the physical agent `id`?
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolveBrt {
    /// Correlates the answer.
    pub req: u64,
    /// The physical identifier.
    pub id: String,
}

/// Controller → box manager: the answer to [`ResolveBrt`] (`None`: unknown identifier).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrtAnswer {
    /// From the question.
    pub req: u64,
    /// From the question.
    pub id: String,
    /// The box's address (`host:port`).
    pub addr: Option<String>,
}

/// Controller → agent: change (or, with `None`, forget) one entry of the agent's ART. The
/// agent's task applies it; the agent's code never sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteUpdate {
    /// The identifier the agent uses.
    pub ident: String,
    /// The new physical identifier, or `None` to invalidate.
    pub physical: Option<String>,
}

system_messages!(ResolveArt, ArtAnswer, ResolveBrt, BrtAnswer, RouteUpdate);

// Box manager ↔ controller: boxes, agents, metrics.

/// Controller → box manager: start an agent here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartAgent {
    /// Its physical identifier.
    pub id: String,
    /// The kind registered with [`BoxBuilder::kind`](crate::BoxBuilder::kind).
    pub kind: String,
    /// Given to the kind's factory.
    pub config: Vec<u8>,
    /// Initial ART entries (identifier → physical identifier).
    pub art: Vec<(String, String)>,
    /// A snapshot to restore, when the agent moves or is re-instantiated.
    pub state: Option<Vec<u8>>,
}

/// Controller (or anyone) → box manager: stop an agent; answered with [`AgentStopped`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StopAgent {
    /// Its physical identifier.
    pub id: String,
}

/// Box manager → controller: an agent started here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentStarted {
    /// Its physical identifier.
    pub id: String,
    /// This box's name.
    pub in_box: String,
}

/// Box manager → controller: an agent could not be started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartFailed {
    /// Its physical identifier.
    pub id: String,
    /// Why.
    pub error: String,
}

/// Box manager → controller (and the asker of [`StopAgent`]): an agent stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentStopped {
    /// Its physical identifier.
    pub id: String,
    /// This box's name.
    pub in_box: String,
    /// Its last snapshot, if it was stopped on request.
    pub state: Option<Vec<u8>>,
}

/// Controller → box manager: set (`Some`) or invalidate (`None`) BRT entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateBrt {
    /// Physical identifier → box address.
    pub entries: Vec<(String, Option<String>)>,
}

/// Anyone → box manager: what are your counters? Answered with [`MetricsReport`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetMetrics {
    /// Copied into the answer.
    pub req: u64,
}

/// Box manager → asker: the box's counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetricsReport {
    /// From the question.
    pub req: u64,
    /// The box's name.
    pub box_name: String,
    /// The counters.
    pub metrics: MetricsSnapshot,
}

system_messages!(
    StartAgent,
    StopAgent,
    AgentStarted,
    StartFailed,
    AgentStopped,
    UpdateBrt,
    GetMetrics,
    MetricsReport
);

// Anyone ↔ controller: registration, placement, routes, the live picture.

/// Box manager → controller: this box is up, at `addr`, and can make these kinds of agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterBox {
    /// Correlates the answer.
    pub req: u64,
    /// The box's name.
    pub name: String,
    /// The address it listens on.
    pub addr: String,
    /// The kinds of agent it can start.
    pub kinds: Vec<String>,
    /// Whether the controller runs in this box.
    pub hosts_controller: bool,
}

/// Controller → box manager: registered; the agents placed on the box have been started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registered {
    /// From the question.
    pub req: u64,
}

/// Anyone → controller: are you there? Everything sent to the controller before this has
/// been handled when the [`Pong`] arrives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ping {
    /// Copied into the answer.
    pub req: u64,
}

/// Controller → asker: the answer to [`Ping`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pong {
    /// From the question.
    pub req: u64,
}

/// Operator → controller: place (and start, if its box is up) a physical agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Place {
    /// Its physical identifier.
    pub id: String,
    /// Where and what.
    pub plan: AgentPlan,
    /// A snapshot to start from.
    pub state: Option<Vec<u8>>,
}

/// Operator → controller: set (or, with `None`, remove) an ART entry of a running agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetRoute {
    /// The physical agent whose ART changes.
    pub agent: String,
    /// The identifier it uses.
    pub ident: String,
    /// The physical identifier it should reach.
    pub physical: Option<String>,
}

/// Operator → controller: every box forgets where `id` runs (it moved or stopped).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invalidate {
    /// The physical identifier.
    pub id: String,
}

/// Anyone → controller: describe the live system; answered with [`Picture`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Describe {
    /// Copied into the answer.
    pub req: u64,
}

/// Controller → asker: the live picture of the system.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Picture {
    /// From the question.
    pub req: u64,
    /// Box name → address, for every registered box.
    pub boxes: BTreeMap<String, String>,
    /// Physical agent → box name, for every running agent.
    pub running: BTreeMap<String, String>,
    /// The placement.
    pub placement: Placement,
}

system_messages!(
    RegisterBox,
    Registered,
    Ping,
    Pong,
    Place,
    SetRoute,
    Invalidate,
    Describe,
    Picture
);

// The view service of primary-backup groups, and the failure detector's heartbeats.

/// A member of a view: its index in the group and the incarnation it had when it entered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Its index in the group's member list.
    pub index: u64,
    /// Its incarnation (a number that differs between two starts of the member).
    pub nonce: u64,
}

/// Who serves a group and who backs it up, as of view `number`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct View {
    /// The group's name (the virtual agent it implements).
    pub group: String,
    /// Increases by one with every change.
    pub number: u64,
    /// The member that serves.
    pub primary: Member,
    /// The members that must hold every entry before the primary answers, by index.
    pub backups: Vec<Member>,
}

impl View {
    /// Whether `index`, in incarnation `nonce`, is a backup of this view.
    pub fn is_backup(&self, index: u64, nonce: u64) -> bool {
        self.backups
            .iter()
            .any(|m| m.index == index && m.nonce == nonce)
    }
}

/// Member → controller: I am member `index` of `group` (whose members are `members`, by index),
/// in incarnation `nonce`. Answered, like every view change, with [`NewView`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinGroup {
    /// The group.
    pub group: String,
    /// Every member's identifier, by index.
    pub members: Vec<String>,
    /// The sender's index.
    pub index: u64,
    /// The sender's incarnation.
    pub nonce: u64,
}

/// Anyone (an ingress proxy) → controller: send me the views of `group`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchGroup {
    /// The group.
    pub group: String,
}

/// Primary → controller: backup `index` does not keep up; make a view without it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoveBackup {
    /// The group.
    pub group: String,
    /// The view the primary serves (a request about an older one is ignored).
    pub view: u64,
    /// The backup.
    pub index: u64,
}

/// Primary → controller: member `index` (incarnation `nonce`) holds my whole log; make a view
/// with it as a backup. Answered with the current view whatever the decision, so that the
/// primary stops counting on it if it is refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddBackup {
    /// The group.
    pub group: String,
    /// The view the primary serves.
    pub view: u64,
    /// The member to add.
    pub index: u64,
    /// Its incarnation.
    pub nonce: u64,
}

/// Controller → members and watchers: the current view of a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewView {
    /// The view.
    pub view: View,
}

/// Controller → box manager: are you alive? Answered with [`HeartbeatAck`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Copied into the answer.
    pub seq: u64,
}

/// Box manager → controller: the answer to [`Heartbeat`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatAck {
    /// From the question.
    pub seq: u64,
}

system_messages!(
    JoinGroup,
    WatchGroup,
    RemoveBackup,
    AddBackup,
    NewView,
    Heartbeat,
    HeartbeatAck
);

//! An agent's place in its box: the inbox the box delivers its messages to, and the commands
//! (snapshot, stop, wedge) the box sends its task. Below both the router, which holds a slot
//! per agent, and the runner, which serves one.

use tokio::sync::{mpsc, oneshot};

use crate::error::Error;
use crate::message::Envelope;

/// A command from the box to one agent's task.
#[derive(Debug)]
pub(crate) enum Control {
    /// Answer with a snapshot of the agent's state.
    Snapshot(oneshot::Sender<Result<Vec<u8>, Error>>),
    /// Stop the agent, answering with its last snapshot.
    Stop(oneshot::Sender<Result<Vec<u8>, Error>>),
    /// Stop taking transitions: messages and timers wait until `Unwedge`.
    Wedge,
    /// Resume after `Wedge`.
    Unwedge,
}

/// Where the box delivers messages for one of its agents.
#[derive(Debug, Clone)]
pub(crate) struct Slot {
    /// The agent's inbox.
    pub inbox: mpsc::UnboundedSender<Envelope>,
    /// Commands from the box (stop, snapshot, wedge); `None` for endpoints.
    pub control: Option<mpsc::UnboundedSender<Control>>,
    /// Distinguishes this incarnation from an earlier agent of the same identifier.
    pub generation: u64,
}

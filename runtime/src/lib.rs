//! The Ovid box runtime: what generated code and `#[ovid::agent]` types link against.
//!
//! * [`Agent`] and [`Context`]: a state machine and its only window on the world.
//! * [`Message`], [`Payload`], [`Envelope`]: messages travel unserialized inside a box and as
//!   postcard bytes between boxes.
//! * [`BoxBuilder`] / [`BoxHandle`]: a box runs agents, a box manager and maybe the controller;
//!   it routes through ARTs and its BRT and talks to other boxes over TCP, exactly once.
//! * [`Controller`]: the agent `controller`, which places agents and answers routing misses.
//!
//! docs/runtime.md tells the whole story.
#![deny(missing_docs)]

// Lets `#[derive(Message)]` and `#[ovid::agent]` name `::ovid` inside this crate too.
extern crate self as ovid;

pub mod agent;
pub mod context;
pub mod controller;
pub mod controller_group;
pub mod deployment;
pub mod durable;
pub mod endpoint;
pub mod error;
pub mod frame;
pub mod host;
pub mod latt;
pub mod launch;
pub mod manager;
pub mod message;
pub mod metrics;
pub mod paxos;
pub mod process;
pub mod protocol;
pub mod routing;
mod runner;
mod shutdown;
mod slot;
pub mod smr;
pub mod transport;
pub mod views;

pub use agent::Agent;
pub use context::{Context, Effect, Outside};
pub use controller::{AgentPlan, Controller, Placement};
pub use controller_group::ControllerReplica;
pub use deployment::{Bindings, Deployment};
pub use durable::DurableLog;
pub use endpoint::Endpoint;
pub use error::{Error, Result};
pub use host::{BoxBuilder, BoxHandle, Factory};
pub use latt::LattNode;
pub use message::{AnyMessage, Envelope, Id, Message, Payload};
pub use metrics::{Metrics, MetricsSnapshot};
pub use ovid_macros::{Message, agent};
pub use routing::{Art, CONTROLLER};

/// What generated code and agents usually need, in one `use ovid::prelude::*`.
pub mod prelude {
    pub use crate::{Agent, Context, Message, Payload, agent};
    pub use serde::{Deserialize, Serialize};
}

#[doc(hidden)]
pub mod __private {
    //! Used by the code `#[ovid::agent]` generates; not a public API.
    pub use crate::agent::{serde_restore, serde_snapshot};
    use crate::{Error, Message, Payload};

    /// What [`take`] found.
    pub enum Take<M> {
        /// The payload holds an `M` (decoded, or the decode error).
        Hit(Result<M, Error>),
        /// It does not; here it is back.
        Miss(Payload),
    }

    /// Takes an `M` out of `payload` if that is what it holds (one generic call per handler,
    /// so a type that is not a message gives one compile error).
    pub fn take<M: Message>(payload: Payload) -> Take<M> {
        if payload.is::<M>() {
            Take::Hit(payload.decode::<M>())
        } else {
            Take::Miss(payload)
        }
    }
}

//! The `Agent` trait: a state machine that handles one message at a time.
//!
//! Write one by hand, or let `#[ovid::agent]` write it from an `impl` block of handlers. The
//! box calls exactly one method at a time, never concurrently, and carries out what the method
//! asked of its [`Context`] afterwards.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::context::Context;
use crate::error::Error;
use crate::message::Payload;

/// A self-contained state machine run by a box.
pub trait Agent: Send + 'static {
    /// Called once, before the first message.
    fn on_start(&mut self, _ctx: &mut Context) {}

    /// Handles one message; `Err` when it has no handler for the type or cannot decode it (the
    /// box logs and counts that as a rejection, and the agent keeps running).
    fn on_message(&mut self, ctx: &mut Context, message: Payload) -> Result<(), Error>;

    /// Called when the timer `name`, armed with [`Context::set_timer`], fires.
    fn on_timer(&mut self, _ctx: &mut Context, _name: &str) {}

    /// The names of the message types this agent handles.
    fn accepts(&self) -> &'static [&'static str] {
        &[]
    }

    /// Captures the agent's state (the agent is wedged: no handler runs meanwhile).
    fn snapshot(&self) -> Result<Vec<u8>, Error> {
        Ok(Vec::new())
    }

    /// Replaces the agent's state with one captured by [`Agent::snapshot`].
    fn restore(&mut self, _bytes: &[u8]) -> Result<(), Error> {
        Ok(())
    }
}

impl Agent for Box<dyn Agent> {
    fn on_start(&mut self, ctx: &mut Context) {
        (**self).on_start(ctx)
    }
    fn on_message(&mut self, ctx: &mut Context, message: Payload) -> Result<(), Error> {
        (**self).on_message(ctx, message)
    }
    fn on_timer(&mut self, ctx: &mut Context, name: &str) {
        (**self).on_timer(ctx, name)
    }
    fn accepts(&self) -> &'static [&'static str] {
        (**self).accepts()
    }
    fn snapshot(&self) -> Result<Vec<u8>, Error> {
        (**self).snapshot()
    }
    fn restore(&mut self, bytes: &[u8]) -> Result<(), Error> {
        (**self).restore(bytes)
    }
}

/// The serde-based snapshot `#[ovid::agent]` generates: the whole value, postcard-encoded.
pub fn serde_snapshot<T: Serialize>(state: &T) -> Result<Vec<u8>, Error> {
    postcard::to_stdvec(state).map_err(|e| Error::Snapshot(e.to_string()))
}

/// The serde-based restore `#[ovid::agent]` generates: decodes a value of the agent's type.
pub fn serde_restore<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    postcard::from_bytes(bytes).map_err(|e| Error::Snapshot(e.to_string()))
}

//! The runtime's one error type. Every rejection a box counts is one of these, logged.

use thiserror::Error;

/// What can go wrong in the runtime. None of these stops a box.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// An agent got a message type it has no handler for.
    #[error("agent `{agent}` has no handler for message `{name}`")]
    UnknownMessage {
        /// The receiving agent.
        agent: String,
        /// The message's type name.
        name: String,
    },
    /// A payload holds a different type than the one asked for.
    #[error("expected message `{expected}`, found `{found}`")]
    WrongType {
        /// The type asked for.
        expected: &'static str,
        /// The type inside.
        found: String,
    },
    /// A message could not be decoded from its postcard bytes.
    #[error("cannot decode message `{name}`: {source}")]
    Decode {
        /// The message's type name.
        name: String,
        /// What postcard reported.
        source: postcard::Error,
    },
    /// A message could not be encoded.
    #[error("cannot encode message `{name}`: {source}")]
    Encode {
        /// The message's type name.
        name: String,
        /// What postcard reported.
        source: postcard::Error,
    },
    /// No agent has this identifier, as far as the controller knows.
    #[error("unknown identifier `{0}`")]
    UnknownIdentifier(String),
    /// The identifier names an agent that is not running (stopped, finished or crashed).
    #[error("agent `{0}` is not running")]
    DeadAgent(String),
    /// An agent with this identifier already runs in the box.
    #[error("agent `{0}` already runs in this box")]
    AgentExists(String),
    /// A box was asked to start an agent of a kind it does not know.
    #[error("this box cannot start agents of kind `{0}`")]
    UnknownKind(String),
    /// A frame from another box could not be decoded.
    #[error("bad frame: {0}")]
    BadFrame(String),
    /// An agent's snapshot could not be taken or restored.
    #[error("snapshot: {0}")]
    Snapshot(String),
    /// The box is shutting down or the peer is gone.
    #[error("the box is shut down")]
    Closed,
    /// A timeout expired waiting for an answer.
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    /// Bad input from outside the box: an external agent's line, a configuration, a deployment.
    #[error("{0}")]
    Invalid(String),
    /// A socket error.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// `Result` with the runtime's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

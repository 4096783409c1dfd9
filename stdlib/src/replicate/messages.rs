//! What the proxies of `replicate` say to each other. Every name starts with `replicate::` so
//! that it cannot clash with a message of the system being replicated.

use omnipaxos::storage::{Entry, NoSnapshot};
use serde::{Deserialize, Serialize};

use super::storage::PaxosState;

/// One entry of the replicated log: a request of one client session, as bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// The client session: the ingress proxy's identifier and incarnation.
    pub client: String,
    /// The request's number in its session (0, 1, 2, ...).
    pub seq: u64,
    /// Every request of the session numbered below this has been answered: its cached reply
    /// can be forgotten.
    pub ack: u64,
    /// The message's type name.
    pub name: String,
    /// The message's postcard encoding.
    pub bytes: Vec<u8>,
}

impl Entry for Command {
    type Snapshot = NoSnapshot;
}

/// A reply of the replicated agent, as bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    /// The reply's type name.
    pub name: String,
    /// Its postcard encoding.
    pub bytes: Vec<u8>,
}

/// Ingress proxy → replica proxy: order this request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ovid::Message)]
#[message(name = "replicate::Submit")]
pub struct Submit {
    /// The request.
    pub command: Command,
}

/// Replica proxy → ingress proxy: the request `seq` of session `client` was applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ovid::Message)]
#[message(name = "replicate::Outcome")]
pub struct Outcome {
    /// The client session.
    pub client: String,
    /// The request's number.
    pub seq: u64,
    /// The replicated agent's reply (`None`: it sent none).
    pub reply: Option<Reply>,
    /// The index of the replica proxy this one believes leads, if any.
    pub leader: Option<u64>,
}

/// Replica proxy → replica proxy: omnipaxos messages, in the order omnipaxos produced them.
#[derive(Debug, Clone, Serialize, Deserialize, ovid::Message)]
#[message(name = "replicate::Paxos")]
pub struct Paxos {
    /// The messages for the receiver.
    pub messages: Vec<omnipaxos::messages::Message<Command>>,
}

/// Recovering replica proxy → its peers: what is your Paxos state?
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ovid::Message)]
#[message(name = "replicate::RecoverQuery")]
pub struct RecoverQuery {
    /// The asker's incarnation, so that an answer to an earlier life is not taken.
    pub nonce: u64,
}

/// Replica proxy → recovering peer: my Paxos state (`None`: I am recovering too).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ovid::Message)]
#[message(name = "replicate::RecoverState")]
pub struct RecoverState {
    /// From the question.
    pub nonce: u64,
    /// The answering proxy's index.
    pub index: u64,
    /// Its state, if it takes part in consensus.
    pub state: Option<PaxosState>,
    /// Whether it knows that the replicated log has had entries: its state has some, or (while
    /// it recovers) a peer showed it some. A first start needs every peer to say no.
    pub history: bool,
}

/// Anyone → replica proxy: how are you? Answered with [`ReplicaStatus`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ovid::Message)]
#[message(name = "replicate::Status")]
pub struct Status;

/// Replica proxy → asker: its view of the replicated log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ovid::Message)]
#[message(name = "replicate::ReplicaStatus")]
pub struct ReplicaStatus {
    /// The proxy's index.
    pub index: u64,
    /// Whether it takes part in consensus (false while it recovers its state from peers).
    pub active: bool,
    /// The index of the proxy it believes leads.
    pub leader: Option<u64>,
    /// Log entries decided.
    pub decided: u64,
    /// Log entries applied (decided entries handed to the replica, or found to be duplicates).
    pub applied: u64,
    /// Commands the replica was given.
    pub executed: u64,
    /// Commands whose reply (or lack of one) is known: when equal to `executed`, the replica's
    /// state is that of the applied prefix.
    pub completed: u64,
    /// Entries in the log (decided or not).
    pub log_len: u64,
}

//! What the proxies of `chain` say to each other. Requests and outcomes travel as replicate's
//! `Submit` and `Outcome` (the ingress proxy is primary_backup's, which follows the controller's
//! views); views come from the controller (`ovid::views`); the rest is here, every name starting
//! with `chain::`. Every message between proxies carries the view number it was sent in: a proxy
//! drops the messages of any other view, so a member that was cut out of the chain is not heard.

use serde::{Deserialize, Serialize};

use crate::replicate::messages::Command;

/// One log entry as it travels down the chain: the request, and the ingress proxy the tail
/// answers (every member keeps it, so that whichever member is the tail can answer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The request, numbered by its client session.
    pub command: Command,
    /// The physical identifier of the ingress proxy that submitted it.
    pub ingress: String,
}

/// Member → its successor in the chain: the log entries from index `from`, to apply in order
/// and pass on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ovid::Message)]
#[message(name = "chain::Entries")]
pub struct Entries {
    /// The view both are in.
    pub view: u64,
    /// The index of the first entry.
    pub from: u64,
    /// The entries.
    pub entries: Vec<Entry>,
}

/// Member → its predecessor: my log has `len` entries, all given to my copy, and the tail's has
/// `committed` (every entry below it is acknowledged, or will be by the tail). Sent after every
/// batch of entries, on installing a view (so the predecessor learns where to stream from), and
/// every few ticks (in case one was lost with a view change).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ovid::Message)]
#[message(name = "chain::Ack")]
pub struct Ack {
    /// The view both are in.
    pub view: u64,
    /// The length of the sender's log.
    pub len: u64,
    /// The length of the tail's log, as the sender last heard it.
    pub committed: u64,
}

/// A member outside the view (it restarted, or was dropped) → the head: I hold a log of `len`
/// entries with this digest; send me the rest, and have me added once I hold it all. Sent again
/// after every [`CatchUp`] as its acknowledgement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ovid::Message)]
#[message(name = "chain::Join")]
pub struct Join {
    /// The view both are in.
    pub view: u64,
    /// The length of the joiner's log.
    pub len: u64,
    /// [`digest`](crate::primary_backup::messages::digest) of the joiner's log.
    pub digest: u64,
    /// The joiner's incarnation (the view service adds members by incarnation).
    pub nonce: u64,
}

/// Head → joiner: committed log entries from index `from` (the tail holds them all, so a
/// joiner never applies an entry a later head might not have).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ovid::Message)]
#[message(name = "chain::CatchUp")]
pub struct CatchUp {
    /// The view the head serves.
    pub view: u64,
    /// The index of the first entry.
    pub from: u64,
    /// The entries.
    pub entries: Vec<Entry>,
}

/// Head → joiner: your log is not a prefix of mine (you were a head that was replaced and
/// applied writes nobody acknowledged); you may not join until you restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ovid::Message)]
#[message(name = "chain::Refused")]
pub struct Refused {
    /// The view.
    pub view: u64,
}

/// Anyone → proxy: how are you? Answered with [`ChainStatus`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ovid::Message)]
#[message(name = "chain::Status")]
pub struct Status;

/// Where a proxy stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Position {
    /// Waiting for a view it can act in (just started, or a view names an older incarnation of
    /// it as head).
    Starting,
    /// First in the chain: it orders the requests.
    Head,
    /// Between head and tail: it applies and passes on.
    Middle,
    /// Last in the chain (the head too, if alone): it answers.
    Tail,
    /// Outside the view, catching up from the head to be added.
    Joining,
    /// Its log holds entries the head's does not: it may not join until it restarts.
    Fenced,
}

/// Proxy → asker: where it stands and how much it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ovid::Message)]
#[message(name = "chain::ChainStatus")]
pub struct ChainStatus {
    /// The proxy's index.
    pub index: u64,
    /// Where it stands.
    pub position: Position,
    /// The number of the view it is in (0: none yet).
    pub view: u64,
    /// Entries in its log (all given to its copy).
    pub log_len: u64,
    /// The tail's log length as this proxy last heard it.
    pub committed: u64,
    /// Commands its copy was given (duplicates are not).
    pub executed: u64,
    /// Commands whose reply (or lack of one) is known.
    pub completed: u64,
    /// On the head: a joiner it holds new writes for while the chain drains, to add it.
    pub adding: Option<u64>,
}

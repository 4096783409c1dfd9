//! What the proxies of `primary_backup` say to each other. Requests and outcomes travel as
//! replicate's `Submit` and `Outcome` (the ingress proxy is replicate's); the rest is here, every
//! name starting with `primary_backup::`.

use serde::{Deserialize, Serialize};

use crate::replicate::messages::Command;

/// A starting proxy → its peers: who are you, and what do you hold?
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ovid::Message)]
#[message(name = "primary_backup::Hello")]
pub struct Hello {
    /// The asker's incarnation, so that an answer to an earlier life is not taken.
    pub nonce: u64,
}

/// What a proxy is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// Finding out whether this is a first start or a restart.
    Starting,
    /// Ordering requests and streaming them to the backups.
    Primary,
    /// Applying the primary's stream.
    Backup,
}

/// Proxy → starting peer: the answer to [`Hello`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ovid::Message)]
#[message(name = "primary_backup::HelloState")]
pub struct HelloState {
    /// From the question.
    pub nonce: u64,
    /// The answering proxy's index.
    pub index: u64,
    /// Its role.
    pub role: Role,
    /// Its log, if it is a backup (a restarted primary recovers from the longest).
    pub log: Option<Vec<Command>>,
    /// Whether it knows that the log has had entries (its own, or a peer's it was shown).
    pub history: bool,
}

/// Backup → primary: I (re)started with the log I hold; stream me the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ovid::Message)]
#[message(name = "primary_backup::Join")]
pub struct Join {
    /// The length of the backup's log.
    pub len: u64,
}

/// Primary → backup: the log entries from index `from`, to apply in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ovid::Message)]
#[message(name = "primary_backup::Entries")]
pub struct Entries {
    /// The index of the first entry.
    pub from: u64,
    /// The entries.
    pub commands: Vec<Command>,
}

/// Backup → primary: my log has this many entries, all given to my copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ovid::Message)]
#[message(name = "primary_backup::Ack")]
pub struct Ack {
    /// The length of the backup's log.
    pub len: u64,
}

/// Anyone → proxy: how are you? Answered with [`PbStatus`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ovid::Message)]
#[message(name = "primary_backup::Status")]
pub struct Status;

/// Proxy → asker: its view of the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ovid::Message)]
#[message(name = "primary_backup::PbStatus")]
pub struct PbStatus {
    /// The proxy's index.
    pub index: u64,
    /// Its role.
    pub role: Role,
    /// Entries in its log (all given to its copy).
    pub log_len: u64,
    /// Commands its copy was given (duplicates are not).
    pub executed: u64,
    /// Commands whose reply (or lack of one) is known.
    pub completed: u64,
    /// On the primary: the backups it waits for.
    pub live: Vec<u64>,
}

//! What the proxies of `primary_backup` say to each other. Requests and outcomes travel as
//! replicate's `Submit` and `Outcome` (the ingress proxy is replicate's); views come from the
//! controller (`ovid::views`); the rest is here, every name starting with `primary_backup::`.
//! Every message between proxies carries the view number it was sent in: a proxy drops the
//! messages of any other view.

use serde::{Deserialize, Serialize};

use crate::replicate::messages::Command;

/// A new primary → every backup of its view: what do you hold? Answered with [`HelloState`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ovid::Message)]
#[message(name = "primary_backup::Hello")]
pub struct Hello {
    /// The view the asker is primary of.
    pub view: u64,
}

/// What a proxy is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// Waiting for a view it can act in (just started, or a view names an older incarnation
    /// of it as primary).
    Starting,
    /// Primary of its view, collecting the backups' logs before it serves.
    Syncing,
    /// Ordering requests and streaming them to the backups.
    Primary,
    /// Applying the primary's stream (in the view, or catching up to be added to it).
    Backup,
    /// Its log holds entries the current primary's does not (it was a primary that was
    /// replaced): it may neither serve nor back up until it restarts.
    Fenced,
}

/// Backup → new primary: the answer to [`Hello`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ovid::Message)]
#[message(name = "primary_backup::HelloState")]
pub struct HelloState {
    /// From the question.
    pub view: u64,
    /// The answering proxy's index.
    pub index: u64,
    /// Its log.
    pub log: Vec<Command>,
}

/// A proxy outside the view → the primary: I hold a log of `len` entries with this digest;
/// stream me the rest, and have me added to the view once I hold it all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ovid::Message)]
#[message(name = "primary_backup::Join")]
pub struct Join {
    /// The view both are in.
    pub view: u64,
    /// The length of the joiner's log.
    pub len: u64,
    /// [`digest`] of the joiner's log.
    pub digest: u64,
    /// The joiner's incarnation (the view service adds members by incarnation).
    pub nonce: u64,
}

/// Primary → joiner: your log is not a prefix of mine; you may not back me up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ovid::Message)]
#[message(name = "primary_backup::Refused")]
pub struct Refused {
    /// The view.
    pub view: u64,
}

/// Primary → backup: the log entries from index `from`, to apply in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ovid::Message)]
#[message(name = "primary_backup::Entries")]
pub struct Entries {
    /// The view the primary serves.
    pub view: u64,
    /// The index of the first entry.
    pub from: u64,
    /// The entries.
    pub commands: Vec<Command>,
}

/// Backup → primary: my log has this many entries, all given to my copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ovid::Message)]
#[message(name = "primary_backup::Ack")]
pub struct Ack {
    /// The view.
    pub view: u64,
    /// The length of the backup's log.
    pub len: u64,
    /// Sent on installing a view rather than on entries: what the primary sent beyond `len`
    /// may have been dropped (stamped with a view the backup had not heard of), send it again.
    pub resync: bool,
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
    /// The number of the view it is in (0: none yet).
    pub view: u64,
    /// Entries in its log (all given to its copy).
    pub log_len: u64,
    /// Commands its copy was given (duplicates are not).
    pub executed: u64,
    /// Commands whose reply (or lack of one) is known.
    pub completed: u64,
    /// On the primary: the backups it waits for (those of its view, and those being added).
    pub live: Vec<u64>,
}

/// A digest of a log (FNV-1a over every command), to tell whether one log is a prefix of
/// another without sending it.
pub fn digest(log: &[Command]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h = (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
        }
    };
    for c in log {
        eat(c.client.as_bytes());
        eat(&c.seq.to_le_bytes());
        eat(&c.ack.to_le_bytes());
        eat(c.name.as_bytes());
        eat(&(c.bytes.len() as u64).to_le_bytes());
        eat(&c.bytes);
    }
    h
}

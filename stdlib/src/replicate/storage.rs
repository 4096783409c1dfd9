//! The replicated log as omnipaxos sees it: the runtime's in-memory acceptor state
//! ([`ovid::paxos`], shared with the replicated controller), over replicate's commands.

use super::messages::Command;

/// Everything a Paxos acceptor of `replicate` must remember (see [`ovid::paxos::PaxosState`]).
pub type PaxosState = ovid::paxos::PaxosState<Command>;

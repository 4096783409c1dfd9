//! Applying the decided log: exactly once per request, in each client's order.
//!
//! Every replica proxy runs the same [`Applier`] over the same decided log, so they all make the
//! same decisions: which entries are duplicates (a retried request decided twice), which must
//! wait for an earlier request of the same client (a retry can overtake it in the log), and
//! which go to the replica, tagged with their log index. The replica's replies come back with
//! that tag and are cached per client session until the client's ingress proxy acknowledges
//! them, so a retried request gets the reply of its first execution.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use super::messages::{Command, Reply};

/// What became of one request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Given to the replica; its reply has not come back yet.
    Pending,
    /// The replica replied this (its first reply; later ones are dropped).
    Replied(Reply),
    /// The replica sent no reply (it went on to a later command without one).
    NoReply,
}

/// One client session (one incarnation of one ingress proxy).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// The next request number to execute.
    pub next: u64,
    /// Requests below this number were answered at the ingress proxy.
    pub acked: u64,
    /// Outcomes of executed requests not yet acknowledged.
    pub outcomes: BTreeMap<u64, Outcome>,
    /// Decided requests waiting for an earlier one of the session: seq → (log index, command).
    pub held: BTreeMap<u64, (u64, Command)>,
}

/// What the proxy must do after a step of the applier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Forward this command to the replica with this tag (its log index + 1).
    Execute {
        /// The correlation tag.
        tag: u64,
        /// The message's type name.
        name: String,
        /// Its postcard bytes.
        bytes: Vec<u8>,
    },
    /// The outcome of request `seq` of `client` is known (tell its ingress proxy if waiting).
    Done {
        /// The client session.
        client: String,
        /// The request's number.
        seq: u64,
        /// The reply, if the replica sent one.
        reply: Option<Reply>,
    },
}

/// The deterministic state built from the decided log (the replica's state aside).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applier {
    /// Client sessions by name.
    pub sessions: BTreeMap<String, Session>,
    /// Log entries applied (the index of the next one).
    pub applied: u64,
    /// Commands given to the replica.
    pub executed: u64,
    /// Commands given to the replica whose reply has not come, in the order it got them:
    /// (tag, client, seq). A request held for an earlier one runs after entries decided later,
    /// so this order is not the order of the tags.
    pub inflight: VecDeque<(u64, String, u64)>,
}

impl Applier {
    /// Applies the decided entry at `index` (which must be `self.applied`).
    pub fn apply(&mut self, index: u64, cmd: Command, out: &mut Vec<Step>) {
        debug_assert_eq!(index, self.applied);
        self.applied = index + 1;
        let session = self.sessions.entry(cmd.client.clone()).or_default();
        if cmd.ack > session.acked {
            session.acked = cmd.ack;
            session.outcomes = session.outcomes.split_off(&cmd.ack);
        }
        if cmd.seq < session.next {
            // A duplicate: answer with the first execution's outcome, if known.
            match session.outcomes.get(&cmd.seq) {
                Some(Outcome::Replied(r)) => out.push(Step::Done {
                    client: cmd.client,
                    seq: cmd.seq,
                    reply: Some(r.clone()),
                }),
                Some(Outcome::NoReply) => out.push(Step::Done {
                    client: cmd.client,
                    seq: cmd.seq,
                    reply: None,
                }),
                Some(Outcome::Pending) | None => {}
            }
        } else if cmd.seq > session.next {
            session.held.entry(cmd.seq).or_insert((index, cmd));
        } else {
            let client = cmd.client.clone();
            let mut next = Some((index, cmd));
            while let Some((i, c)) = next {
                let session = self.sessions.get_mut(&client).expect("session exists");
                session.outcomes.insert(c.seq, Outcome::Pending);
                session.next = c.seq + 1;
                let tag = i + 1;
                self.inflight.push_back((tag, client.clone(), c.seq));
                self.executed += 1;
                out.push(Step::Execute {
                    tag,
                    name: c.name,
                    bytes: c.bytes,
                });
                next = session.held.remove(&session.next);
            }
        }
    }

    /// The replica replied `reply` to the command tagged `tag`. Every command given to it
    /// before that one is complete too (the replica handles them in order): those still without
    /// a reply sent none. Returns false if no command waits for this tag (an extra reply,
    /// dropped).
    pub fn reply(&mut self, tag: u64, reply: Reply, out: &mut Vec<Step>) -> bool {
        if !self.inflight.iter().any(|(t, _, _)| *t == tag) {
            return false;
        }
        while let Some((t, client, seq)) = self.inflight.pop_front() {
            if t == tag {
                self.complete(client, seq, Some(reply), out);
                return true;
            }
            self.complete(client, seq, None, out);
        }
        unreachable!("the tag is in flight")
    }

    fn complete(&mut self, client: String, seq: u64, reply: Option<Reply>, out: &mut Vec<Step>) {
        if let Some(session) = self.sessions.get_mut(&client)
            && seq >= session.acked
        {
            let outcome = match &reply {
                Some(r) => Outcome::Replied(r.clone()),
                None => Outcome::NoReply,
            };
            session.outcomes.insert(seq, outcome);
        }
        out.push(Step::Done { client, seq, reply });
    }

    /// The outcome of a request, if it is complete (`Some(reply or none)`).
    pub fn known(&self, client: &str, seq: u64) -> Option<Option<Reply>> {
        match self.sessions.get(client)?.outcomes.get(&seq)? {
            Outcome::Replied(r) => Some(Some(r.clone())),
            Outcome::NoReply => Some(None),
            Outcome::Pending => None,
        }
    }

    /// Whether the request is already in the decided log (executed, or held for an earlier one).
    pub fn seen(&self, client: &str, seq: u64) -> bool {
        self.sessions
            .get(client)
            .is_some_and(|s| seq < s.next || s.held.contains_key(&seq))
    }

    /// Commands given to the replica whose outcome is known.
    pub fn completed(&self) -> u64 {
        self.executed - self.inflight.len() as u64
    }
}

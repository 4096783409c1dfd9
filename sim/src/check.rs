//! The checker: is what the clients saw explainable by the original agent, run alone?
//!
//! **Linearizability** (Wing & Gong, with Lowe's memoization). The specification is a fresh
//! agent of the target's own kind, made by its factory with an empty configuration. The search
//! looks for an order of the operations that (1) respects real time: an operation that returned
//! before another started comes first, and (2) explains every answer: fed the requests in that
//! order, the specification replies exactly what the system replied (same message name, same
//! postcard bytes). The specification's state is captured with `snapshot()` and put back with
//! `restore()` to backtrack. Since each client has one operation outstanding at a time, a point
//! of the search is "how many operations of each client are placed" plus the specification's
//! state; points already found to be dead ends are remembered.
//!
//! An operation never answered may have taken effect or not: it is placed anywhere after its
//! start, with any answer, or left out. Unless no box crashed in the run: then nothing was lost,
//! the network has quiesced, and an unanswered request must be one the specification does not
//! answer either.
//!
//! **Refinement.** At quiescence the target's refinement mapping turns the snapshots of the
//! physical agents into a state of the virtual agent; some order found above must leave the
//! specification in exactly that state (same snapshot bytes).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::panic::AssertUnwindSafe;

use bytes::Bytes;

use crate::Property;
use crate::setup::Setup;
use crate::world::{EPOCH_MS, Op, RunOutput};
use ovid::agent::Agent;
use ovid::context::{Context, Effect};
use ovid::error::Error;
use ovid::message::Payload;

/// At most this many specification steps per check; past it the check is inconclusive.
const MAX_STEPS: u64 = 1_000_000;
/// At most this many points of the search per check; past it the check is inconclusive.
const MAX_NODES: u64 = 1_000_000;
/// At most this many operations are listed in a report.
const MAX_LISTED: usize = 60;

/// What checking one run found.
pub(crate) struct Checked {
    pub violation: Option<(Property, String)>,
    /// Answered operations checked.
    pub ops: u64,
    /// The search gave up (too many orders to try).
    pub inconclusive: bool,
    /// Operations never answered.
    pub unanswered: u64,
}

/// A message as a report shows it: its name and its postcard bytes, printable ASCII as is.
pub(crate) fn show(name: &str, bytes: &[u8]) -> String {
    let mut out = format!("{name} \"");
    for &b in bytes {
        match b {
            b'"' | b'\\' => {
                out.push('\\');
                out.push(b as char);
            }
            0x20..=0x7e => out.push(b as char),
            _ => {
                let _ = write!(out, "\\x{b:02x}");
            }
        }
    }
    out.push('"');
    out
}

fn show_reply(reply: &Option<(String, Vec<u8>)>) -> String {
    match reply {
        Some((n, b)) => show(n, b),
        None => "no reply".to_string(),
    }
}

type Reply = Option<(String, Vec<u8>)>;

/// The original agent, run alone: one instance, moved between states by snapshot/restore.
struct Spec {
    agent: Box<dyn Agent>,
    ctx: Context,
    /// (operation, state) → (reply, next state): an agent is deterministic.
    memo: HashMap<(usize, Vec<u8>), (Reply, Vec<u8>)>,
    steps: u64,
}

impl Spec {
    fn new(setup: &Setup) -> Result<(Spec, Vec<u8>), Error> {
        let kind = &setup.target.spec_kind;
        let mut agent = (setup.spec)(&[]).map_err(|e| {
            Error::Invalid(format!(
                "cannot make the specification `{kind}` with an empty configuration: {e}"
            ))
        })?;
        let mut ctx = Context::new(setup.target.id.as_str());
        ctx.begin(None, EPOCH_MS);
        agent.on_start(&mut ctx);
        ctx.take_effects();
        let initial = agent.snapshot().map_err(|e| {
            Error::Invalid(format!(
                "the specification `{kind}` cannot snapshot its state: {e}"
            ))
        })?;
        Ok((
            Spec {
                agent,
                ctx,
                memo: HashMap::new(),
                steps: 0,
            },
            initial,
        ))
    }

    /// Feeds operation `i` to the specification in state `state`.
    fn step(&mut self, ops: &[Op], i: usize, state: &[u8]) -> Result<(Reply, Vec<u8>), Error> {
        let key = (i, state.to_vec());
        if let Some(hit) = self.memo.get(&key) {
            return Ok(hit.clone());
        }
        self.steps += 1;
        let op = &ops[i];
        let kind = "the specification";
        self.agent
            .restore(state)
            .map_err(|e| Error::Invalid(format!("{kind} cannot restore its own snapshot: {e}")))?;
        self.ctx.begin(Some(op.sender.clone()), EPOCH_MS);
        self.ctx.set_tag(op.tag);
        let payload = Payload::Encoded {
            name: op.name.as_str().into(),
            bytes: Bytes::from(op.bytes.clone()),
        };
        let (agent, ctx) = (&mut self.agent, &mut self.ctx);
        let outcome = super::in_agent(|| {
            std::panic::catch_unwind(AssertUnwindSafe(|| agent.on_message(ctx, payload)))
        });
        let effects = self.ctx.take_effects();
        if outcome.is_err() {
            return Err(Error::Invalid(format!(
                "{kind} panicked handling {}",
                show(&op.name, &op.bytes)
            )));
        }
        let mut reply = None;
        for e in effects {
            if let Effect::SendPhysical { to, payload } = e
                && *to == *op.sender
                && reply.is_none()
            {
                reply = Some((payload.name().to_string(), payload.to_bytes()?.to_vec()));
            }
        }
        let next = self
            .agent
            .snapshot()
            .map_err(|e| Error::Invalid(format!("{kind} cannot snapshot its state: {e}")))?;
        self.memo.insert(key, (reply.clone(), next.clone()));
        Ok((reply, next))
    }
}

/// A point of the search, hashed twice over (two fixed-key SipHashes: deterministic, and a
/// collision, which could only make a good history look bad, is out of reach).
fn point(counts: &[u32], state: &[u8]) -> (u64, u64) {
    use std::hash::{Hash, Hasher};
    let mut a = std::collections::hash_map::DefaultHasher::new();
    let mut b = std::collections::hash_map::DefaultHasher::new();
    0x0f1du16.hash(&mut b);
    for h in [&mut a, &mut b] {
        counts.hash(h);
        state.hash(h);
    }
    (a.finish(), b.finish())
}

/// Whether sorted `a` is a subset of sorted `b`.
fn is_subset(a: &[u32], b: &[u32]) -> bool {
    let mut rest = b.iter();
    a.iter().all(|x| rest.by_ref().any(|y| y == x))
}

/// Where the search got furthest, for the report.
#[derive(Default)]
struct Deepest {
    placed: Vec<usize>,
    /// At that point: (operation, what the specification answers).
    refused: Vec<(usize, Reply)>,
}

enum Found {
    /// An order, and the specification's state after it.
    Order(Vec<usize>, Vec<u8>),
    None,
    GaveUp,
}

struct Search<'a> {
    ops: &'a [Op],
    /// Operations of each client, in order.
    per: Vec<Vec<usize>>,
    /// How many of them were answered (the unanswered one, if any, is the last).
    answered: Vec<usize>,
    /// No crash: an unanswered operation must be placed, with no reply from the spec.
    strict: bool,
    goal: Option<&'a [u8]>,
    /// Points known to lead nowhere: by a 128-bit hash of (answered operations placed per
    /// client, state), the sets of clients whose unanswered operation was placed. Placing an
    /// unanswered operation only removes options (it could have been left out), so a point is
    /// also dead if it placed a superset of a dead set (unless `strict`: then they all must be).
    dead: HashMap<(u64, u64), Vec<Vec<u32>>>,
    deepest: Deepest,
    nodes: u64,
}

struct Frame {
    counts: Vec<u32>,
    state: Vec<u8>,
    candidates: Vec<usize>,
    next: usize,
    /// The operation placed to reach this frame.
    placed: Option<usize>,
}

impl<'a> Search<'a> {
    fn new(out: &'a RunOutput, goal: Option<&'a [u8]>) -> Self {
        let mut per = vec![Vec::new(); out.processes];
        for (i, op) in out.ops.iter().enumerate() {
            per[op.process].push(i);
        }
        let answered = per
            .iter()
            .map(|list| list.iter().filter(|&&i| out.ops[i].ret.is_some()).count())
            .collect();
        Search {
            ops: &out.ops,
            per,
            answered,
            strict: !out.crashed,
            goal,
            dead: HashMap::new(),
            deepest: Deepest::default(),
            nodes: 0,
        }
    }

    fn done(&self, counts: &[u32], state: &[u8]) -> bool {
        let placed_enough =
            counts
                .iter()
                .zip(&self.per)
                .zip(&self.answered)
                .all(|((&c, list), &answered)| {
                    let c = c as usize;
                    if self.strict {
                        c == list.len()
                    } else {
                        c >= answered
                    }
                });
        placed_enough && self.goal.is_none_or(|g| g == state)
    }

    /// The clients whose next operation may come next: it started before any operation not yet
    /// placed returned. Answered operations first: unanswered ones are rarely needed.
    fn candidates(&self, counts: &[u32]) -> Vec<usize> {
        let next = |p: usize| self.per[p].get(counts[p] as usize).copied();
        let first_return = (0..self.per.len())
            .filter_map(next)
            .filter_map(|i| self.ops[i].ret)
            .min()
            .unwrap_or(u64::MAX);
        let mut ready: Vec<usize> = (0..self.per.len())
            .filter(|&p| next(p).is_some_and(|i| self.ops[i].invoke < first_return))
            .collect();
        ready.sort_by_key(|&p| next(p).is_some_and(|i| self.ops[i].ret.is_none()));
        ready
    }

    /// (Hash of the answered part of `counts` and the state, clients whose unanswered operation is placed.)
    fn key(&self, counts: &[u32], state: &[u8]) -> ((u64, u64), Vec<u32>) {
        let answered: Vec<u32> = counts
            .iter()
            .zip(&self.answered)
            .map(|(&c, &a)| c.min(a as u32))
            .collect();
        let pending: Vec<u32> = counts
            .iter()
            .zip(&self.answered)
            .enumerate()
            .filter(|(_, (c, a))| **c as usize > **a)
            .map(|(p, _)| p as u32)
            .collect();
        (point(&answered, state), pending)
    }

    fn is_dead(&self, counts: &[u32], state: &[u8]) -> bool {
        let (k, pending) = self.key(counts, state);
        let Some(sets) = self.dead.get(&k) else {
            return false;
        };
        if self.strict {
            sets.contains(&pending)
        } else {
            sets.iter().any(|d| is_subset(d, &pending))
        }
    }

    fn bury(&mut self, counts: &[u32], state: &[u8]) {
        let (k, pending) = self.key(counts, state);
        let strict = self.strict;
        let sets = self.dead.entry(k).or_default();
        if !strict {
            sets.retain(|d| !is_subset(&pending, d));
        }
        sets.push(pending);
    }

    fn run(&mut self, spec: &mut Spec, initial: Vec<u8>) -> Result<Found, Error> {
        let counts = vec![0u32; self.per.len()];
        if self.done(&counts, &initial) {
            return Ok(Found::Order(Vec::new(), initial));
        }
        let candidates = self.candidates(&counts);
        let mut stack = vec![Frame {
            counts,
            state: initial,
            candidates,
            next: 0,
            placed: None,
        }];
        while let Some(top) = stack.last_mut() {
            if top.next >= top.candidates.len() {
                let frame = stack.pop().expect("non-empty");
                self.bury(&frame.counts, &frame.state);
                continue;
            }
            let p = top.candidates[top.next];
            top.next += 1;
            let i = self.per[p][top.counts[p] as usize];
            let (reply, next_state) = spec.step(self.ops, i, &top.state)?;
            if spec.steps > MAX_STEPS {
                return Ok(Found::GaveUp);
            }
            let op = &self.ops[i];
            // An unanswered operation that leaves the state as it was (a read) changes nothing
            // placed: leaving it out is the same, and cheaper to search.
            if op.reply.is_none()
                && !self.strict
                && next_state == stack.last().expect("non-empty").state
            {
                continue;
            }
            let fits = match &op.reply {
                Some(seen) => reply.as_ref() == Some(seen),
                None => !self.strict || reply.is_none(),
            };
            if !fits {
                let placed: Vec<usize> = stack.iter().filter_map(|f| f.placed).collect();
                if placed.len() > self.deepest.placed.len() {
                    self.deepest = Deepest {
                        placed,
                        refused: vec![(i, reply)],
                    };
                } else if placed == self.deepest.placed {
                    self.deepest.refused.push((i, reply));
                }
                continue;
            }
            let mut counts = stack.last().expect("non-empty").counts.clone();
            counts[p] += 1;
            if self.is_dead(&counts, &next_state) {
                continue;
            }
            if self.done(&counts, &next_state) {
                let mut order: Vec<usize> = stack.iter().filter_map(|f| f.placed).collect();
                order.push(i);
                return Ok(Found::Order(order, next_state));
            }
            self.nodes += 1;
            if self.nodes > MAX_NODES {
                return Ok(Found::GaveUp);
            }
            let candidates = self.candidates(&counts);
            stack.push(Frame {
                counts,
                state: next_state,
                candidates,
                next: 0,
                placed: Some(i),
            });
        }
        Ok(Found::None)
    }
}

fn list_ops(out: &RunOutput, text: &mut String) {
    let _ = writeln!(
        text,
        "history ({} operations; client, sender, request → reply, virtual start..end):",
        out.ops.len()
    );
    for (i, op) in out.ops.iter().enumerate().take(MAX_LISTED) {
        let end = op
            .returned_at
            .map(super::scenario::millis)
            .unwrap_or_else(|| "…".to_string());
        let _ = writeln!(
            text,
            "  #{i} client {} ({}): {} → {}   [{}..{}]",
            op.process,
            op.sender,
            show(&op.name, &op.bytes),
            show_reply(&op.reply),
            super::scenario::millis(op.invoked_at),
            end
        );
    }
    if out.ops.len() > MAX_LISTED {
        let _ = writeln!(text, "  … and {} more", out.ops.len() - MAX_LISTED);
    }
}

/// Checks the history of a run against the specification, then the refinement mapping.
pub(crate) fn check(setup: &Setup, out: &RunOutput) -> Result<Checked, Error> {
    let answered = out.ops.iter().filter(|o| o.ret.is_some()).count() as u64;
    let unanswered = out.ops.len() as u64 - answered;
    if let Some(v) = &out.violation {
        return Ok(Checked {
            violation: Some(v.clone()),
            ops: answered,
            inconclusive: false,
            unanswered,
        });
    }
    let (mut spec, initial) = Spec::new(setup)?;

    let mut search = Search::new(out, None);
    let found = search.run(&mut spec, initial.clone())?;
    let (order, spec_state) = match found {
        Found::GaveUp => {
            return Ok(Checked {
                violation: None,
                ops: answered,
                inconclusive: true,
                unanswered,
            });
        }
        Found::None => {
            let mut text = String::new();
            let _ = writeln!(
                text,
                "no order of the operations explains what the clients saw ({answered} answered, {unanswered} unanswered{})",
                if out.crashed {
                    ""
                } else {
                    ", and no crash could have lost them"
                }
            );
            let d = &search.deepest;
            let _ = writeln!(
                text,
                "the longest explainable prefix places {} operation(s): {}",
                d.placed.len(),
                if d.placed.is_empty() {
                    "none".to_string()
                } else {
                    d.placed
                        .iter()
                        .map(|i| format!("#{i}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            );
            for (i, spec_reply) in &d.refused {
                let op = &out.ops[*i];
                let seen = match &op.reply {
                    Some(_) => format!("the system answered {}", show_reply(&op.reply)),
                    None => "the system never answered it".to_string(),
                };
                let _ = writeln!(
                    text,
                    "  next, #{i} {}: the specification answers {}, {seen}",
                    show(&op.name, &op.bytes),
                    show_reply(spec_reply)
                );
            }
            list_ops(out, &mut text);
            return Ok(Checked {
                violation: Some((Property::Linearizability, text.trim_end().to_string())),
                ops: answered,
                inconclusive: false,
                unanswered,
            });
        }
        Found::Order(order, state) => (order, state),
    };

    // Refinement at quiescence.
    let mut snapshots = BTreeMap::new();
    for (id, snap) in &out.snapshots {
        match snap {
            Ok(bytes) => {
                snapshots.insert(id.clone(), bytes.clone());
            }
            Err(e) => {
                let detail = format!("at quiescence, agent `{id}` cannot snapshot its state: {e}");
                return Ok(Checked {
                    violation: Some((Property::Refinement, detail)),
                    ops: answered,
                    inconclusive: false,
                    unanswered,
                });
            }
        }
    }
    let refined = match (setup.target.refine)(&setup.node, &snapshots) {
        Ok(r) => r,
        Err(e) => {
            let detail = format!(
                "at quiescence, the refinement mapping fails on the snapshots of {}: {e}",
                snapshots.keys().cloned().collect::<Vec<_>>().join(", ")
            );
            return Ok(Checked {
                violation: Some((Property::Refinement, detail)),
                ops: answered,
                inconclusive: false,
                unanswered,
            });
        }
    };
    if refined == spec_state {
        return Ok(Checked {
            violation: None,
            ops: answered,
            inconclusive: false,
            unanswered,
        });
    }
    let mut search = Search::new(out, Some(&refined));
    match search.run(&mut spec, initial)? {
        Found::Order(..) => Ok(Checked {
            violation: None,
            ops: answered,
            inconclusive: false,
            unanswered,
        }),
        Found::GaveUp => Ok(Checked {
            violation: None,
            ops: answered,
            inconclusive: true,
            unanswered,
        }),
        Found::None => {
            let mut text = String::new();
            let _ = writeln!(
                text,
                "at quiescence, the refinement mapping of the physical agents' states is not a state the specification reaches"
            );
            let _ = writeln!(
                text,
                "  refined state:        {}",
                show("", &refined).trim_start()
            );
            let _ = writeln!(
                text,
                "  specification state:  {}   (after {})",
                show("", &spec_state).trim_start(),
                if order.is_empty() {
                    "no operation".to_string()
                } else {
                    order
                        .iter()
                        .map(|i| format!("#{i}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            );
            let _ = writeln!(
                text,
                "  (no other order of the operations, with or without the unanswered ones, gives the refined state)"
            );
            list_ops(out, &mut text);
            Ok(Checked {
                violation: Some((Property::Refinement, text.trim_end().to_string())),
                ops: answered,
                inconclusive: false,
                unanswered,
            })
        }
    }
}

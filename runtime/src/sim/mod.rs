//! Deterministic simulation of a whole system in one process: the engine behind `ovidc test`.
//!
//! Every physical agent of a deployment runs in one thread under a seeded scheduler (virtual
//! time, message delays and reordering, crashes and restarts, partitions); generated client
//! workloads drive each transformed agent, and every client history is checked for
//! linearizability against the original agent's own code as the sequential specification, then
//! the refinement mapping is checked at quiescence. A seed reproduces a run exactly.

use std::collections::BTreeMap;

use crate::error::Error;
use crate::message::Payload;

/// A small, seeded, repeatable random number generator for workloads and schedules.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    /// The next 64 random bits (xorshift64*).
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n` (`0` if `n == 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }

    /// `true` with probability `percent`%.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// A transformed agent that `ovidc test` checks, as the generated code describes it.
#[derive(Clone)]
pub struct Target {
    /// The virtual agent's identifier (`KVS`).
    pub id: String,
    /// The kind (agent type) whose code is the sequential specification.
    pub spec_kind: String,
    /// The names of the request messages the agent answers (those with a declared reply).
    pub requests: Vec<String>,
    /// Generates one request the agent accepts (keys from a small space, so they collide).
    pub request: fn(&mut Rng) -> Payload,
    /// The refinement mapping: the snapshots of the physical agents under `id` (physical
    /// identifier → snapshot) → the snapshot of the virtual agent's state.
    pub refine: fn(&BTreeMap<String, Vec<u8>>) -> Result<Vec<u8>, Error>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target").field("id", &self.id).field("spec_kind", &self.spec_kind).field("requests", &self.requests).finish()
    }
}

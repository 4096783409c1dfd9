//! Deterministic simulation of a whole system in one process: the engine behind `ovidc test`.
//!
//! Every physical agent of a transformed agent (a *target*) runs in one thread under a seeded
//! scheduler (virtual time, message delays and reordering, crashes and restarts of boxes,
//! partitions, pauses); workload clients stand in for the agents that send to it, and every
//! client history is checked for linearizability against the original agent's own code as the
//! sequential specification, then the refinement mapping is checked at quiescence. A seed
//! reproduces a run exactly; a failing run is shrunk to the fewest operations and fault events
//! that still fail, and printed so that it can be replayed.
//!
//! * [`scenario`]: what a run is made of ([`Scenario`], [`Faults`], [`FaultEvent`]) and its
//!   printed forms.
//! * `setup`: what to run for a target, learnt once from the deployment and the kinds.
//! * `world`: one run, event by event.
//! * `check`: the linearizability search and the refinement check.
//!
//! [`test_system`] runs it all for a system; `<bin> test` (see [`ovid::launch`]) is its
//! command line, and docs/verification.md tells what it guarantees.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt;
use std::fmt::Write as _;

use ovid::deployment::Deployment;
use ovid::error::Error;
use ovid::latt::LattNode;
use ovid::launch::Kinds;
use ovid::message::Payload;

mod check;
pub mod cli;
pub mod scenario;
mod setup;
mod world;

pub use scenario::{FaultEvent, FaultKind, Faults, Scenario};

/// A transformation as written, `shard(by: key, n: 2)` (without the standard library, which
/// the simulator does not link: arguments shown as they are stored).
fn describe(t: &ovid::latt::Transform) -> String {
    let args: Vec<String> = t
        .args
        .iter()
        .map(|(k, v)| match v {
            ovid::latt::Value::Int(n) => format!("{k}: {n}"),
            ovid::latt::Value::Str(s) => format!("{k}: {s}"),
            ovid::latt::Value::List(l) => format!("{k}: [{}]", l.join(", ")),
        })
        .collect();
    if args.is_empty() {
        t.name.clone()
    } else {
        format!("{}({})", t.name, args.join(", "))
    }
}

/// What the simulator is given of a system: what its binary knows, and its transformed agents.
#[derive(Clone, Copy)]
pub struct System {
    /// `deployment.json`.
    pub deployment: &'static str,
    /// Teaches a box every kind of agent of the system.
    pub kinds: Kinds,
    /// The transformed agents `test` checks.
    pub targets: fn() -> Vec<Target>,
}

impl System {
    /// The system a generated binary describes, with the targets of its `check` module.
    pub fn of(system: &ovid::launch::System, targets: fn() -> Vec<Target>) -> Self {
        System {
            deployment: system.deployment,
            kinds: system.kinds,
            targets,
        }
    }
}

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

/// A refinement mapping: the target's LATT node and its physical agents' snapshots (physical
/// identifier → snapshot) → the virtual agent's snapshot. The generated code passes the
/// standard library's `refinement::refine_snapshot` for the agent's state type.
pub type Refine = fn(&LattNode, &BTreeMap<String, Vec<u8>>) -> Result<Vec<u8>, Error>;

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
    /// The refinement mapping: the LATT node `id` and the snapshots of the physical agents
    /// under it (physical identifier → snapshot) → the snapshot of the virtual agent's state.
    pub refine: Refine,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("id", &self.id)
            .field("spec_kind", &self.spec_kind)
            .field("requests", &self.requests)
            .finish()
    }
}

impl Rng {
    /// An independent generator for stream `n` of `seed` (different streams do not correlate).
    pub fn stream(seed: u64, n: u64) -> Self {
        world::stream(seed, n)
    }
}

/// A property the simulator checks; a failure names one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Property {
    /// Every client history is explained by some order of the operations on the original agent.
    Linearizability,
    /// At quiescence, the refinement mapping of the physical states is a state the original
    /// agent reaches by such an order.
    Refinement,
    /// Each request gets at most one reply, and it goes to the sender of the request.
    OneReply,
    /// No agent panics.
    NoPanic,
    /// Once the faults end, the system becomes quiet (no messages in flight with timers stopped).
    Quiescence,
}

impl Property {
    /// Its name as reports print it.
    pub fn name(&self) -> &'static str {
        match self {
            Property::Linearizability => "linearizability",
            Property::Refinement => "refinement",
            Property::OneReply => "one reply per request",
            Property::NoPanic => "no panic",
            Property::Quiescence => "quiescence",
        }
    }
}

impl fmt::Display for Property {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What `<bin> test` was asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    /// How many seeds per target (`0..seeds`).
    pub seeds: u64,
    /// Run only this seed.
    pub seed: Option<u64>,
    /// Operations per seed (in all, over the clients).
    pub ops: usize,
    /// Concurrent clients (at least one per sender of the target).
    pub clients: usize,
    /// The kinds of fault.
    pub faults: Faults,
    /// Exactly these fault events instead of ones generated from the seed (then no shrinking).
    pub events: Option<Vec<FaultEvent>>,
    /// Only this target.
    pub target: Option<String>,
    /// Replay exactly this scenario (overrides everything above).
    pub replay: Option<Scenario>,
    /// Shrink a failing run before reporting it.
    pub shrink: bool,
    /// Keep a line per event of the reported run.
    pub trace: bool,
    /// Seeds run at once, on as many threads (1: one after the other). The report is the same
    /// whatever the number: the first failing seed is the lowest.
    pub jobs: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            seeds: 100,
            seed: None,
            ops: 50,
            clients: 3,
            faults: Faults {
                delay: true,
                reorder: true,
                ..Faults::none()
            },
            events: None,
            target: None,
            replay: None,
            shrink: true,
            trace: false,
            jobs: 1,
        }
    }
}

/// A failing run, as reported.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The seed it failed with.
    pub seed: u64,
    /// The property it violates.
    pub property: Property,
    /// What went wrong, with the history of the operations.
    pub detail: String,
    /// The (shrunk) scenario that fails: replay it with `--replay` or its flags.
    pub scenario: Scenario,
    /// The scenario as first found failing, before shrinking.
    pub found: Scenario,
    /// How many runs shrinking took.
    pub shrink_runs: usize,
    /// One line per event of the reported run, if asked for.
    pub trace: Vec<String>,
}

/// The result for one target.
#[derive(Debug, Clone)]
pub struct TargetReport {
    /// The virtual agent.
    pub target: String,
    /// Seeds run.
    pub seeds: u64,
    /// Answered operations checked, over all seeds.
    pub ops: u64,
    /// The faults asked for.
    pub faults: Faults,
    /// Seeds whose check gave up (too many orders to try); they count as passing.
    pub inconclusive: u64,
    /// Operations never answered, over all seeds (liveness is not checked, only reported).
    pub unanswered: u64,
    /// What could not be injected and why (no box may crash, one box only).
    pub notes: Vec<String>,
    /// Crashes, partitions and pauses injected over all seeds.
    pub injected: [u64; 3],
    /// The first failure, shrunk.
    pub failure: Option<Failure>,
    /// With `trace`, when one passing scenario ran: that scenario and its events.
    pub trace: Option<(Scenario, Vec<String>)>,
}

/// The result of [`test_system`].
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// One per target.
    pub targets: Vec<TargetReport>,
    /// The transformed agents and channels of the system that are not targets (the simulator
    /// cannot check them yet), each with its transformation as written.
    pub unchecked: Vec<(String, String)>,
}

impl Report {
    /// Whether every target passed, and something was checked: a transformed system none of
    /// whose transformations could be checked does not pass.
    pub fn passed(&self) -> bool {
        let checked_something = !self.targets.is_empty() || self.unchecked.is_empty();
        checked_something && self.targets.iter().all(|t| t.failure.is_none())
    }

    /// The report as `<program> test` prints it.
    pub fn render(&self, program: &str) -> String {
        let mut out = String::new();
        for t in &self.targets {
            let _ = writeln!(out, "{}", t.render(program));
        }
        for (id, transform) in &self.unchecked {
            let _ = writeln!(
                out,
                "{id}: NOT CHECKED ({transform}): agents that use other agents or are not written in handlers are not simulated yet, nor channels into them (docs/verification.md)"
            );
        }
        if self.targets.is_empty() && !self.unchecked.is_empty() {
            let _ = writeln!(out, "FAIL: nothing this system transforms could be checked");
        }
        out
    }
}

impl TargetReport {
    /// One line if it passed; the failure and how to replay it if not.
    pub fn render(&self, program: &str) -> String {
        let mut out = String::new();
        match &self.failure {
            None => {
                let _ = write!(
                    out,
                    "{}: {}, {} checked, faults {}",
                    self.target,
                    plural(self.seeds, "seed"),
                    plural(self.ops, "op"),
                    self.faults
                );
                let mut said = Vec::new();
                for (i, (kind, what)) in [
                    ("crash", "crashes"),
                    ("partition", "partitions"),
                    ("pause", "pauses"),
                ]
                .into_iter()
                .enumerate()
                {
                    if self.faults.has(kind) || self.injected[i] > 0 {
                        said.push(if self.injected[i] == 1 {
                            format!("1 {kind}")
                        } else {
                            format!("{} {what}", self.injected[i])
                        });
                    }
                }
                said.extend(
                    self.notes
                        .iter()
                        .filter(|n| {
                            (n.starts_with("no crashes") && self.faults.crash)
                                || (n.starts_with("no partitions") && self.faults.partition)
                        })
                        .cloned(),
                );
                if self.unanswered > 0 {
                    said.push(format!("{} never answered", plural(self.unanswered, "op")));
                }
                if self.inconclusive > 0 {
                    said.push(format!(
                        "{} seeds inconclusive: too many orders to try",
                        self.inconclusive
                    ));
                }
                if !said.is_empty() {
                    let _ = write!(out, " ({})", said.join(", "));
                }
                let _ = write!(out, ": PASS");
                if let Some((scenario, trace)) = &self.trace {
                    let _ = write!(out, "\n  schedule: {}\n  trace:", scenario.summary());
                    for line in trace {
                        let _ = write!(out, "\n    {line}");
                    }
                }
            }
            Some(f) => {
                let _ = writeln!(
                    out,
                    "{}: FAIL at seed {} ({}, {} checked): {} violated",
                    self.target,
                    f.seed,
                    plural(self.seeds, "seed"),
                    plural(self.ops, "op"),
                    f.property
                );
                for line in f.detail.lines() {
                    let _ = writeln!(out, "  {line}");
                }
                let _ = write!(out, "  schedule: {}", f.scenario.summary());
                if f.scenario != f.found {
                    let _ = write!(
                        out,
                        " (shrunk in {} runs from {} ops, {} clients, {} fault events)",
                        f.shrink_runs,
                        f.found.ops,
                        f.found.clients,
                        f.found.events.len()
                    );
                }
                let _ = writeln!(out);
                let _ = writeln!(out, "  reproduce: {program} test {}", f.scenario.flags());
                let _ = writeln!(
                    out,
                    "  replay:    {program} test --replay '{}'",
                    f.scenario.replay()
                );
                if !f.trace.is_empty() {
                    let _ = writeln!(out, "  trace:");
                    for line in &f.trace {
                        let _ = writeln!(out, "    {line}");
                    }
                }
                out.truncate(out.trim_end().len());
            }
        }
        out
    }
}

/// `1 seed`, `2 seeds`.
fn plural(n: u64, one: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {one}s")
    }
}

thread_local! {
    /// Set while an agent's handler runs, so that the panic hook of `<bin> test` stays quiet.
    static IN_AGENT: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` (an agent's handler) with [`IN_AGENT`] set.
fn in_agent<T>(f: impl FnOnce() -> T) -> T {
    let before = IN_AGENT.with(|c| c.replace(true));
    let out = f();
    IN_AGENT.with(|c| c.set(before));
    out
}

/// Installs a panic hook that stays silent for panics inside agents run by the simulator (they
/// are reported as violations of [`Property::NoPanic`]) and prints the others as before.
pub fn quiet_agent_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !IN_AGENT.with(Cell::get) {
                previous(info);
            }
        }));
    });
}

/// Generates the fault events of `seed`: for each kind of `faults` among crash, partition and
/// pause, one to `ops/10` events at random operations, on boxes that may suffer them.
fn generate_events(setup: &setup::Setup, seed: u64, ops: usize, faults: Faults) -> Vec<FaultEvent> {
    let mut rng = Rng::stream(seed, 3);
    let mut events = Vec::new();
    if ops == 0 {
        return events;
    }
    let duration = |rng: &mut Rng, long_ms: u64| {
        let ms = match rng.below(3) {
            0 => 1 + rng.below(50),
            1 => 50 + rng.below(450),
            _ => 500 + rng.below(long_ms - 500),
        };
        ms * 1000
    };
    let count = |rng: &mut Rng| 1 + rng.below((ops as u64 / 10).max(1)) as usize;
    if (faults.crash || faults.churn) && !setup.crashable.is_empty() {
        for _ in 0..count(&mut rng) {
            let b = setup.crashable[rng.below(setup.crashable.len() as u64) as usize].clone();
            let at_op = rng.below(ops as u64) as usize;
            events.push(FaultEvent {
                kind: FaultKind::Crash(b),
                at_op,
                duration_us: duration(&mut rng, 3_000),
            });
        }
    }
    if faults.partition && setup.boxes.len() >= 2 {
        for _ in 0..count(&mut rng) {
            let mut order: Vec<usize> = (0..setup.boxes.len()).collect();
            for i in (1..order.len()).rev() {
                let j = rng.below(i as u64 + 1) as usize;
                order.swap(i, j);
            }
            let k = 1 + rng.below(setup.boxes.len() as u64 - 1) as usize;
            let mut side: Vec<usize> = order[..k].to_vec();
            side.sort_unstable();
            let side = side.into_iter().map(|i| setup.boxes[i].clone()).collect();
            let at_op = rng.below(ops as u64) as usize;
            events.push(FaultEvent {
                kind: FaultKind::Partition(side),
                at_op,
                duration_us: duration(&mut rng, 2_000),
            });
        }
    }
    if faults.pause && !setup.pausable.is_empty() {
        for _ in 0..count(&mut rng) {
            let b = setup.pausable[rng.below(setup.pausable.len() as u64) as usize].clone();
            let at_op = rng.below(ops as u64) as usize;
            events.push(FaultEvent {
                kind: FaultKind::Pause(b),
                at_op,
                duration_us: duration(&mut rng, 1_500),
            });
        }
    }
    events.sort_by_key(|e| e.at_op);
    events
}

/// Checks that every box an explicit event names exists.
fn validate_events(setup: &setup::Setup, events: &[FaultEvent]) -> Result<(), Error> {
    for e in events {
        let named: Vec<&String> = match &e.kind {
            FaultKind::Crash(b) | FaultKind::Pause(b) => vec![b],
            FaultKind::Partition(side) => side.iter().collect(),
        };
        for b in named {
            if !setup.boxes.contains(b) {
                return Err(Error::Invalid(format!(
                    "fault event `{e}`: target `{}` has no box `{b}` (its boxes: {})",
                    setup.target.id,
                    setup.boxes.join(", ")
                )));
            }
        }
    }
    Ok(())
}

/// The outcome of one scenario: the violation, if any, with the run's counts.
struct Outcome {
    violation: Option<(Property, String)>,
    ops: u64,
    inconclusive: bool,
    unanswered: u64,
    trace: Vec<String>,
    injected: [u64; 3],
}

/// Runs `scenarios` on `jobs` threads, each taking the next seed; once one fails, the seeds
/// after it are not started. The outcome of every seed up to the first failing one, in order
/// (`None` after it), so that the report does not depend on `jobs`.
fn run_all(
    setup: &setup::Setup,
    scenarios: &[Scenario],
    trace: bool,
    jobs: usize,
) -> Vec<Option<Result<Outcome, Error>>> {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let next = AtomicUsize::new(0);
    // The index of the first failing (or erring) seed so far.
    let first_failure = AtomicUsize::new(usize::MAX);
    let results: Mutex<Vec<Option<Result<Outcome, Error>>>> =
        Mutex::new((0..scenarios.len()).map(|_| None).collect());
    let work = || {
        loop {
            let i = next.fetch_add(1, Ordering::SeqCst);
            if i >= scenarios.len() || i > first_failure.load(Ordering::SeqCst) {
                return;
            }
            let outcome = run_one(setup, &scenarios[i], trace);
            if outcome.as_ref().map_or(true, |o| o.violation.is_some()) {
                first_failure.fetch_min(i, Ordering::SeqCst);
            }
            results.lock().expect("results poisoned")[i] = Some(outcome);
        }
    };
    if jobs <= 1 {
        work();
    } else {
        std::thread::scope(|scope| {
            for _ in 0..jobs {
                scope.spawn(work);
            }
        });
    }
    let mut results = results.into_inner().expect("results poisoned");
    let cut = first_failure.into_inner();
    if cut < results.len() {
        results.truncate(cut + 1);
    }
    results
}

fn run_one(setup: &setup::Setup, scenario: &Scenario, trace: bool) -> Result<Outcome, Error> {
    let out = world::run(setup, scenario, trace)?;
    let checked = check::check(setup, &out)?;
    Ok(Outcome {
        violation: checked.violation,
        ops: checked.ops,
        inconclusive: checked.inconclusive,
        unanswered: checked.unanswered,
        trace: out.trace,
        injected: out.injected,
    })
}

/// At most this many runs while shrinking one failure.
const SHRINK_BUDGET: usize = 200;

/// Drops the events that can never fire (at an operation past the last).
fn normalize(mut s: Scenario) -> Scenario {
    let ops = s.ops;
    s.events.retain(|e| e.at_op < ops);
    s
}

/// Shrinks a failing scenario: fewer fault events, fewer operations, fewer clients, fewer kinds
/// of network trouble, as long as it still fails the same property. Returns the smallest found,
/// its outcome and the number of runs.
fn shrink(
    setup: &setup::Setup,
    found: &Scenario,
    property: Property,
    first: Outcome,
) -> Result<(Scenario, Outcome, usize), Error> {
    let mut best = found.clone();
    let mut best_outcome = first;
    let mut runs = 0usize;
    let try_it =
        |candidate: Scenario, runs: &mut usize| -> Result<Option<(Scenario, Outcome)>, Error> {
            if *runs >= SHRINK_BUDGET {
                return Ok(None);
            }
            *runs += 1;
            let candidate = normalize(candidate);
            let outcome = run_one(setup, &candidate, false)?;
            Ok(match &outcome.violation {
                Some((p, _)) if *p == property => Some((candidate, outcome)),
                _ => None,
            })
        };
    for _round in 0..3 {
        let before = best.clone();
        // Operations first (fewer operations, cheaper runs): the smallest count that still
        // fails, by bisection.
        let (mut lo, mut hi) = (0usize, best.ops);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let c = Scenario {
                ops: mid,
                ..best.clone()
            };
            match try_it(c, &mut runs)? {
                Some((s, o)) => {
                    hi = mid;
                    best = s;
                    best_outcome = o;
                }
                None => lo = mid + 1,
            }
        }
        // Fault events, last first.
        let mut i = best.events.len();
        while i > 0 {
            i -= 1;
            let mut c = best.clone();
            c.events.remove(i);
            if let Some((s, o)) = try_it(c, &mut runs)? {
                best = s;
                best_outcome = o;
            }
        }
        // Clients.
        for n in 1..best.clients {
            if let Some((s, o)) = try_it(
                Scenario {
                    clients: n,
                    ..best.clone()
                },
                &mut runs,
            )? {
                best = s;
                best_outcome = o;
                break;
            }
        }
        // Kinds of trouble that act on every message or crash.
        for kind in ["delay", "reorder", "churn", "amnesia"] {
            if best.faults.has(kind)
                && let Some((s, o)) = try_it(
                    Scenario {
                        faults: best.faults.without(kind),
                        ..best.clone()
                    },
                    &mut runs,
                )?
            {
                best = s;
                best_outcome = o;
            }
        }
        if best == before {
            break;
        }
    }
    // The kinds of event left are the only event kinds the schedule needs.
    for kind in ["crash", "partition", "pause"] {
        if !best.events.iter().any(|e| e.kind_name() == kind) {
            best.faults = best.faults.without(kind);
        }
    }
    Ok((best, best_outcome, runs))
}

/// What one scenario gave, from [`run_scenario`].
#[derive(Debug, Clone)]
pub struct RunResult {
    /// The property violated and how, if one is.
    pub violation: Option<(Property, String)>,
    /// Answered operations checked.
    pub ops: u64,
    /// One line per event, if asked for.
    pub trace: Vec<String>,
}

/// Runs exactly one scenario of `system` (no shrinking) and checks it.
pub fn run_scenario(system: &System, scenario: &Scenario, trace: bool) -> Result<RunResult, Error> {
    let deployment = Deployment::from_json(system.deployment)?;
    let factories = setup::factories(system);
    let target = (system.targets)()
        .into_iter()
        .find(|t| t.id == scenario.target)
        .ok_or_else(|| Error::Invalid(format!("no target `{}` in this system", scenario.target)))?;
    let setup = setup::Setup::new(&deployment, &factories, target)?;
    validate_events(&setup, &scenario.events)?;
    let o = run_one(&setup, scenario, trace)?;
    Ok(RunResult {
        violation: o.violation,
        ops: o.ops,
        trace: o.trace,
    })
}

/// Runs the simulation for every target of `system` (or the one `options` names): seeds one by
/// one until one fails, then shrinks that failure.
pub fn test_system(system: &System, options: &Options) -> Result<Report, Error> {
    let deployment = Deployment::from_json(system.deployment)?;
    let factories = setup::factories(system);
    let targets = (system.targets)();
    let wanted = options
        .replay
        .as_ref()
        .map(|s| s.target.clone())
        .or_else(|| options.target.clone());
    if let Some(w) = &wanted
        && !targets.iter().any(|t| &t.id == w)
    {
        let known: Vec<&str> = targets.iter().map(|t| t.id.as_str()).collect();
        return Err(Error::Invalid(format!(
            "no target `{w}` in this system (its targets: {})",
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        )));
    }
    let mut report = Report::default();
    if wanted.is_none() {
        report.unchecked = deployment
            .latt
            .children
            .iter()
            // A channel into a target is checked with it.
            .filter(|n| {
                !targets.iter().any(|t| {
                    t.id == n.id || n.id.strip_prefix(&t.id).is_some_and(|r| r.starts_with('/'))
                })
            })
            .filter_map(|n| Some((n.id.clone(), describe(n.transform()?))))
            .collect();
    }
    for target in targets {
        if wanted.as_ref().is_some_and(|w| *w != target.id) {
            continue;
        }
        let setup = setup::Setup::new(&deployment, &factories, target)?;
        report.targets.push(test_target(&setup, options)?);
    }
    Ok(report)
}

fn test_target(setup: &setup::Setup, options: &Options) -> Result<TargetReport, Error> {
    let id = setup.target.id.clone();
    let faults = options
        .replay
        .as_ref()
        .map(|s| s.faults)
        .unwrap_or(options.faults);
    let mut report = TargetReport {
        target: id.clone(),
        seeds: 0,
        ops: 0,
        faults,
        inconclusive: 0,
        unanswered: 0,
        notes: setup.notes.clone(),
        injected: [0; 3],
        failure: None,
        trace: None,
    };
    // Explicit scenarios run as given; generated ones are shrunk.
    let (scenarios, exact): (Vec<Scenario>, bool) = if let Some(s) = &options.replay {
        (vec![s.clone()], true)
    } else {
        let seeds: Vec<u64> = match options.seed {
            Some(s) => vec![s],
            None => (0..options.seeds).collect(),
        };
        let make = |seed: u64| Scenario {
            target: id.clone(),
            seed,
            ops: options.ops,
            clients: options.clients,
            faults: options.faults,
            events: options
                .events
                .clone()
                .unwrap_or_else(|| generate_events(setup, seed, options.ops, options.faults)),
        };
        (
            seeds.into_iter().map(make).collect(),
            options.events.is_some(),
        )
    };
    let single = scenarios.len() == 1;
    for scenario in &scenarios {
        validate_events(setup, &scenario.events)?;
    }
    let mut outcomes = run_all(setup, &scenarios, options.trace && single, options.jobs);
    for (scenario, outcome) in scenarios.into_iter().zip(outcomes.iter_mut()) {
        report.seeds += 1;
        let outcome = outcome
            .take()
            .expect("every seed up to the first failure ran")?;
        report.ops += outcome.ops;
        report.inconclusive += u64::from(outcome.inconclusive);
        report.unanswered += outcome.unanswered;
        for (total, n) in report.injected.iter_mut().zip(outcome.injected) {
            *total += n;
        }
        let Some((property, _)) = outcome.violation.clone() else {
            if options.trace && single {
                report.trace = Some((scenario, outcome.trace));
            }
            continue;
        };
        let (shrunk, outcome, shrink_runs) = if options.shrink && !exact {
            shrink(setup, &scenario, property, outcome)?
        } else {
            (scenario.clone(), outcome, 0)
        };
        let trace = match options.trace {
            false => Vec::new(),
            true if single && shrunk == scenario => outcome.trace,
            true => run_one(setup, &shrunk, true)?.trace,
        };
        let (property, detail) = outcome.violation.expect("a failing outcome");
        report.failure = Some(Failure {
            seed: shrunk.seed,
            property,
            detail,
            scenario: shrunk,
            found: scenario,
            shrink_runs,
            trace,
        });
        break;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transformed_system_with_nothing_checked_does_not_pass() {
        let unchecked = vec![("KVS/client".to_string(), "batch(size: 8)".to_string())];
        let nothing = Report {
            targets: Vec::new(),
            unchecked: unchecked.clone(),
        };
        assert!(!nothing.passed());
        let text = nothing.render("store");
        assert!(
            text.contains("KVS/client: NOT CHECKED (batch(size: 8))"),
            "{text}"
        );
        assert!(text.contains("FAIL"), "{text}");
        // An untransformed system has nothing to check, and that is no failure.
        assert!(Report::default().passed());
    }
}

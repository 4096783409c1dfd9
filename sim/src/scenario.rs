//! What one simulated run is made of, written down so that it can be printed and replayed.
//!
//! A [`Scenario`] names the target, the seed, how many operations the clients issue, how many
//! clients issue them, which kinds of network trouble the scheduler adds to every message
//! ([`Faults`]), and an explicit list of [`FaultEvent`]s (crashes, partitions, pauses), each
//! tied to the operation whose start triggers it. Everything else (delays, orders, requests) is
//! drawn from seeded generators, so a scenario reproduces its run exactly.
//!
//! Two printed forms, both parsed back:
//!
//! ```text
//! --target KVS --seed 36 --ops 4 --clients 2 --faults delay --events 'crash(back)@2+350ms'
//! target=KVS;seed=36;ops=4;clients=2;faults=delay;events=crash(back)@2+350ms
//! ```

use std::fmt;

use ovid::error::Error;

/// The kinds of trouble a run may contain
/// (`--faults delay,reorder,crash,partition,pause,churn,amnesia`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Faults {
    /// Messages may be slow: long-tailed latencies (up to 1.5 s), so timers overtake them.
    pub delay: bool,
    /// Messages between different pairs of agents overtake each other (random short latencies).
    pub reorder: bool,
    /// Whole boxes crash (losing their agents' state and messages) and restart fresh; what an
    /// agent synced to its durable store ([`ovid::Context::durable`]) survives, as on a disk.
    pub crash: bool,
    /// Boxes are cut off from each other; messages across the cut wait until it heals.
    pub partition: bool,
    /// A box stalls (a slow machine, a long pause): its agents handle nothing for a while.
    pub pause: bool,
    /// Crashes (implies `crash`) may hit any replica in turn, as long as no more than f are down
    /// at once; without it, at most f distinct replicas of a node ever crash in a run. With
    /// durable stores a replica restarts with its state, so churn is survived; with `amnesia`, a
    /// crash while another replica is still recovering can be more than a `replicate(n)` node
    /// survives: `churn,amnesia` tests recovery, beyond the transformation's promise.
    pub churn: bool,
    /// Crashes (implies `crash`) lose the box's disk too: agents restart with empty durable
    /// stores, as in boxes without a data directory (or whose disk was lost).
    pub amnesia: bool,
}

/// The names `--faults` accepts, in the order they are printed.
pub const FAULT_NAMES: [&str; 7] = [
    "delay",
    "reorder",
    "crash",
    "partition",
    "pause",
    "churn",
    "amnesia",
];

impl Faults {
    /// No faults at all.
    pub fn none() -> Self {
        Faults::default()
    }

    /// Every kind of fault a transformation promises to survive (all but `churn` and `amnesia`).
    pub fn all() -> Self {
        Faults {
            delay: true,
            reorder: true,
            crash: true,
            partition: true,
            pause: true,
            churn: false,
            amnesia: false,
        }
    }

    /// Parses a comma-separated list (`delay,reorder`; also `all`, `none` and the empty list).
    pub fn parse(list: &str) -> Result<Self, Error> {
        let mut f = Faults::none();
        for word in list
            .split([',', '+'])
            .map(str::trim)
            .filter(|w| !w.is_empty())
        {
            match word {
                "delay" => f.delay = true,
                "reorder" => f.reorder = true,
                "crash" => f.crash = true,
                "partition" => f.partition = true,
                "pause" => f.pause = true,
                "churn" => {
                    f.crash = true;
                    f.churn = true;
                }
                "amnesia" => {
                    f.crash = true;
                    f.amnesia = true;
                }
                "all" => {
                    f = Faults {
                        churn: f.churn,
                        amnesia: f.amnesia,
                        ..Faults::all()
                    }
                }
                "none" => {}
                other => {
                    return Err(Error::Invalid(format!(
                        "unknown fault `{other}` (expected a comma-separated list of {}; or all, none)",
                        FAULT_NAMES.join(", ")
                    )));
                }
            }
        }
        Ok(f)
    }

    /// Whether this kind (one of [`FAULT_NAMES`]) is on.
    pub fn has(&self, name: &str) -> bool {
        match name {
            "delay" => self.delay,
            "reorder" => self.reorder,
            "crash" => self.crash,
            "partition" => self.partition,
            "pause" => self.pause,
            "churn" => self.churn,
            "amnesia" => self.amnesia,
            _ => false,
        }
    }

    /// The same set with the kind `name` switched off.
    pub fn without(mut self, name: &str) -> Self {
        match name {
            "delay" => self.delay = false,
            "reorder" => self.reorder = false,
            "crash" => {
                self.crash = false;
                self.churn = false;
                self.amnesia = false;
            }
            "partition" => self.partition = false,
            "pause" => self.pause = false,
            "churn" => self.churn = false,
            "amnesia" => self.amnesia = false,
            _ => {}
        }
        self
    }
}

impl fmt::Display for Faults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let on: Vec<&str> = FAULT_NAMES
            .iter()
            .copied()
            .filter(|n| self.has(n))
            .collect();
        if on.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&on.join(","))
        }
    }
}

/// What a fault event does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultKind {
    /// The box crashes, then restarts with fresh agents.
    Crash(String),
    /// These boxes are cut off from all the others, then the cut heals.
    Partition(Vec<String>),
    /// The box handles nothing, then resumes.
    Pause(String),
}

/// One fault, started when the clients start operation number `at_op` (from 0), lasting
/// `duration_us` microseconds of virtual time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultEvent {
    /// What happens.
    pub kind: FaultKind,
    /// The operation whose start triggers it.
    pub at_op: usize,
    /// How long until the box restarts, the cut heals or the box resumes, in microseconds.
    pub duration_us: u64,
}

impl fmt::Display for FaultEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            FaultKind::Crash(b) => write!(f, "crash({b})")?,
            FaultKind::Partition(side) => write!(f, "partition({})", side.join("|"))?,
            FaultKind::Pause(b) => write!(f, "pause({b})")?,
        }
        write!(f, "@{}+{}", self.at_op, millis(self.duration_us))
    }
}

/// `350ms`, `1.25ms`: microseconds written as milliseconds, exactly.
pub(crate) fn millis(us: u64) -> String {
    let (ms, rest) = (us / 1000, us % 1000);
    if rest == 0 {
        format!("{ms}ms")
    } else {
        let frac = format!("{rest:03}");
        format!("{ms}.{}ms", frac.trim_end_matches('0'))
    }
}

fn parse_duration(text: &str) -> Result<u64, Error> {
    let bad = || {
        Error::Invalid(format!(
            "bad duration `{text}` (expected e.g. 350ms, 1.5ms, 2s or 700us)"
        ))
    };
    let (number, scale) = if let Some(n) = text.strip_suffix("us") {
        (n, 1)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1_000)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1_000_000)
    } else {
        (text, 1_000)
    };
    let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
    let whole: u64 = whole.parse().map_err(|_| bad())?;
    let mut value = whole.checked_mul(scale).ok_or_else(bad)?;
    if !frac.is_empty() {
        if !frac.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let mut unit = scale;
        for d in frac.bytes() {
            unit /= 10;
            if unit == 0 {
                return Err(bad());
            }
            value += u64::from(d - b'0') * unit;
        }
    }
    Ok(value)
}

impl FaultEvent {
    /// Parses one event: `crash(box)@3+350ms`, `partition(a|b)@0+20ms`, `pause(box)@7+1.5ms`.
    pub fn parse(text: &str) -> Result<Self, Error> {
        let bad = |why: &str| {
            Error::Invalid(format!(
                "bad fault event `{text}`: {why} (expected e.g. crash(back)@3+350ms)"
            ))
        };
        let (head, when) = text.trim().split_once('@').ok_or_else(|| bad("no `@`"))?;
        let (name, arg) = head.split_once('(').ok_or_else(|| bad("no `(`"))?;
        let arg = arg.strip_suffix(')').ok_or_else(|| bad("no `)`"))?;
        if arg.is_empty() {
            return Err(bad("no box named"));
        }
        let kind = match name.trim() {
            "crash" => FaultKind::Crash(arg.to_string()),
            "pause" => FaultKind::Pause(arg.to_string()),
            "partition" => FaultKind::Partition(arg.split('|').map(str::to_string).collect()),
            _ => return Err(bad("unknown kind (crash, partition or pause)")),
        };
        let (at, duration) = when.split_once('+').ok_or_else(|| bad("no `+duration`"))?;
        let at_op = at
            .trim()
            .parse()
            .map_err(|_| bad("the operation number is not a number"))?;
        Ok(FaultEvent {
            kind,
            at_op,
            duration_us: parse_duration(duration.trim())?,
        })
    }

    /// Parses a comma-separated list of events (`none` or empty: no events).
    pub fn parse_list(text: &str) -> Result<Vec<Self>, Error> {
        let text = text.trim();
        if text.is_empty() || text == "none" {
            return Ok(Vec::new());
        }
        text.split(',').map(FaultEvent::parse).collect()
    }

    /// The short name of its kind (`crash`, `partition`, `pause`).
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            FaultKind::Crash(_) => "crash",
            FaultKind::Partition(_) => "partition",
            FaultKind::Pause(_) => "pause",
        }
    }
}

/// Writes a list of events as `--events` takes it (`none` if empty).
pub fn format_events(events: &[FaultEvent]) -> String {
    if events.is_empty() {
        return "none".to_string();
    }
    events
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// Everything one simulated run depends on: run it twice, get the same run twice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scenario {
    /// The virtual agent under test (`KVS`).
    pub target: String,
    /// The seed of every random choice (requests, think times, latencies, crash losses).
    pub seed: u64,
    /// How many operations the clients issue in all.
    pub ops: usize,
    /// How many clients issue them at once.
    pub clients: usize,
    /// Which kinds of trouble are on (delay and reorder act on every message; the others are
    /// only used to generate `events`).
    pub faults: Faults,
    /// The crashes, partitions and pauses of this run.
    pub events: Vec<FaultEvent>,
}

impl Scenario {
    /// The flags of `<bin> test` that replay this scenario exactly.
    pub fn flags(&self) -> String {
        format!(
            "--target {} --seed {} --ops {} --clients {} --faults {} --events '{}'",
            self.target,
            self.seed,
            self.ops,
            self.clients,
            self.faults,
            format_events(&self.events)
        )
    }

    /// The one-string form (`target=KVS;seed=36;...`), for `<bin> test --replay`.
    pub fn replay(&self) -> String {
        format!(
            "target={};seed={};ops={};clients={};faults={};events={}",
            self.target,
            self.seed,
            self.ops,
            self.clients,
            self.faults,
            format_events(&self.events)
        )
    }

    /// Parses the form [`Scenario::replay`] writes.
    pub fn parse_replay(text: &str) -> Result<Self, Error> {
        let bad = |why: String| {
            Error::Invalid(format!(
                "bad replay string: {why} (expected target=..;seed=..;ops=..;clients=..;faults=..;events=..)"
            ))
        };
        let mut s = Scenario {
            target: String::new(),
            seed: 0,
            ops: 0,
            clients: 1,
            faults: Faults::none(),
            events: Vec::new(),
        };
        let (mut target, mut seed, mut ops) = (false, false, false);
        for part in text.trim().split(';').filter(|p| !p.trim().is_empty()) {
            let (key, value) = part
                .split_once('=')
                .ok_or_else(|| bad(format!("`{part}` is not key=value")))?;
            let value = value.trim();
            let number = |v: &str| {
                v.parse::<u64>()
                    .map_err(|_| bad(format!("`{key}` is not a number")))
            };
            match key.trim() {
                "target" => {
                    s.target = value.to_string();
                    target = true;
                }
                "seed" => {
                    s.seed = number(value)?;
                    seed = true;
                }
                "ops" => {
                    s.ops = number(value)? as usize;
                    ops = true;
                }
                "clients" => s.clients = number(value)? as usize,
                "faults" => s.faults = Faults::parse(value)?,
                "events" => s.events = FaultEvent::parse_list(value)?,
                other => return Err(bad(format!("unknown key `{other}`"))),
            }
        }
        if !(target && seed && ops) {
            return Err(bad("target, seed and ops are required".into()));
        }
        Ok(s)
    }

    /// How the scenario reads in a report: `4 ops, 2 clients, faults delay, 1 fault event: ...`.
    pub fn summary(&self) -> String {
        let events = match self.events.len() {
            0 => "no fault events".to_string(),
            1 => format!("1 fault event: {}", format_events(&self.events)),
            n => format!("{n} fault events: {}", format_events(&self.events)),
        };
        let plural =
            |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
        format!(
            "{}, {}, faults {}, {}",
            plural(self.ops, "op", "ops"),
            plural(self.clients, "client", "clients"),
            self.faults,
            events
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenarios_print_and_parse_back() {
        let s = Scenario {
            target: "KVS".into(),
            seed: 36,
            ops: 4,
            clients: 2,
            faults: Faults::parse("reorder,delay").unwrap(),
            events: vec![
                FaultEvent {
                    kind: FaultKind::Crash("back".into()),
                    at_op: 2,
                    duration_us: 350_000,
                },
                FaultEvent {
                    kind: FaultKind::Partition(vec!["a".into(), "b".into()]),
                    at_op: 0,
                    duration_us: 1_250,
                },
                FaultEvent {
                    kind: FaultKind::Pause("c".into()),
                    at_op: 9,
                    duration_us: 7,
                },
            ],
        };
        assert_eq!(
            s.replay(),
            "target=KVS;seed=36;ops=4;clients=2;faults=delay,reorder;events=crash(back)@2+350ms,partition(a|b)@0+1.25ms,pause(c)@9+0.007ms"
        );
        assert_eq!(Scenario::parse_replay(&s.replay()).unwrap(), s);
        assert_eq!(
            FaultEvent::parse("crash(x)@1+2s").unwrap().duration_us,
            2_000_000
        );
        assert_eq!(
            FaultEvent::parse("crash(x)@1+700us").unwrap().duration_us,
            700
        );
        assert!(Faults::parse("delay,flood").is_err());
        assert_eq!(Faults::parse("all").unwrap(), Faults::all());
        assert_eq!(Faults::none().to_string(), "none");
        assert_eq!(Faults::parse("churn").unwrap().to_string(), "crash,churn");
        assert_eq!(
            Faults::parse("churn").unwrap().without("crash"),
            Faults::none()
        );
    }
}

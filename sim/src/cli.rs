//! `<bin> test`: the simulator's command line, as a generated system binary runs it. The
//! binary's `check` module passes its targets; the runtime's launcher hands over the
//! arguments after `test`.

use std::process::ExitCode;

use clap::Parser;
use ovid::Error;

use crate::System;

/// Parses the arguments after `test` and runs the simulator on `system`: prints its report and
/// exits 0 if every target passed, 1 otherwise.
pub fn run(system: &System, args: Vec<String>) -> ExitCode {
    let args = match TestArgs::try_parse_from(std::iter::once("test".to_string()).chain(args)) {
        Ok(a) => a,
        Err(e) => {
            // `--help` too: clap prints it and says how to exit.
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    run_test(system, args)
}

/// The flags of `test`.
#[derive(Parser, Debug)]
#[command(
    name = "test",
    about = "Checks every transformed agent in a deterministic simulation against the original agent"
)]
struct TestArgs {
    /// Seeds to run per target (0, 1, 2, …).
    #[arg(long, default_value_t = 100)]
    seeds: u64,
    /// Run only this seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Operations per seed, over all clients.
    #[arg(long, default_value_t = 50)]
    ops: usize,
    /// Concurrent clients (at least one per agent that sends to the target).
    #[arg(long, default_value_t = 3)]
    clients: usize,
    /// Comma-separated faults: delay, reorder, crash, partition, pause, churn, amnesia; or all
    /// (all but churn and amnesia), none.
    #[arg(long, default_value = "delay,reorder")]
    faults: String,
    /// Exactly these fault events (as a failure prints them), instead of generated ones.
    #[arg(long)]
    events: Option<String>,
    /// Only this target (a virtual agent, e.g. KVS).
    #[arg(long)]
    target: Option<String>,
    /// Replay a failure exactly, from the string it printed (the other flags are then ignored).
    #[arg(long)]
    replay: Option<String>,
    /// Report a failure as found, without shrinking it.
    #[arg(long)]
    no_shrink: bool,
    /// Print every event of the run, with --seed or --replay (or of the shrunk failure).
    #[arg(long)]
    trace: bool,
    /// Seeds run at once, on as many threads (0: one per core). The report is the same
    /// whatever the number.
    #[arg(long, default_value_t = 1)]
    jobs: usize,
}

/// `test`: runs the simulator (no tokio, no sockets, one thread), prints its report, and exits
/// 0 if every target passed, 1 otherwise.
fn run_test(system: &System, args: TestArgs) -> ExitCode {
    let options = match test_options(args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    crate::quiet_agent_panics();
    // As invoked, so that the printed command lines can be pasted back.
    let program = std::env::args()
        .next()
        .unwrap_or_else(|| "system".to_string());
    match crate::test_system(system, &options) {
        Ok(report) => {
            print!("{}", report.render(&program));
            if report.targets.is_empty() && report.unchecked.is_empty() {
                println!("nothing to test: the system transforms nothing");
            }
            if report.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The simulator's options from the flags of `test`.
fn test_options(args: TestArgs) -> Result<crate::Options, Error> {
    use crate::{FaultEvent, Faults, Options, Scenario};
    let replay = args
        .replay
        .as_deref()
        .map(Scenario::parse_replay)
        .transpose()?;
    Ok(Options {
        seeds: args.seeds,
        seed: args.seed,
        ops: args.ops,
        clients: args.clients.max(1),
        faults: Faults::parse(&args.faults)?,
        events: args
            .events
            .as_deref()
            .map(FaultEvent::parse_list)
            .transpose()?,
        target: args.target,
        replay,
        shrink: !args.no_shrink,
        trace: args.trace,
        jobs: match args.jobs {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        },
    })
}

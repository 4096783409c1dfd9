//! `ovidc`: the Ovid compiler's command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// The Ovid compiler: check, build and run systems of agents written in `.ovid`.
#[derive(Parser)]
#[command(name = "ovidc", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check a .ovid file (and its imports): names, types, wiring, transformation preconditions.
    Check {
        /// The .ovid file to check.
        file: PathBuf,
        /// How to print diagnostics.
        #[arg(long, value_enum, default_value_t = Format::Human)]
        format: Format,
    },
    /// Generate the system's Rust crate and deployment into a directory, and compile it.
    Build {
        /// The .ovid file.
        file: PathBuf,
        /// The directory to write the crate into.
        #[arg(short, long, default_value = "build")]
        output: PathBuf,
        /// Only write the files; do not run cargo.
        #[arg(long)]
        no_compile: bool,
    },
    /// Build the system and run its controller and every box on this machine until its clients
    /// finish or Ctrl-C.
    Run {
        /// The .ovid file.
        file: PathBuf,
    },
    /// Check by deterministic simulation that each transformed agent still behaves like the
    /// original: linearizable against its own code, and its refinement mapping holds.
    Test {
        /// The .ovid file.
        file: PathBuf,
        /// How many seeds to run.
        #[arg(long, default_value_t = 100)]
        seeds: u64,
        /// Run only this seed (to reproduce a failure).
        #[arg(long)]
        seed: Option<u64>,
        /// Operations per seed.
        #[arg(long)]
        ops: Option<u64>,
        /// Concurrent clients per target.
        #[arg(long)]
        clients: Option<u64>,
        /// Faults to inject, comma-separated: delay, reorder, crash, partition, pause, churn,
        /// or `all` / `none` (default: delay,reorder).
        #[arg(long)]
        faults: Option<String>,
        /// Fault events to inject instead of generated ones (as a failure report prints them).
        #[arg(long)]
        events: Option<String>,
        /// Check only this transformed agent.
        #[arg(long)]
        target: Option<String>,
        /// Replay a failure exactly, from the `replay:` line of its report.
        #[arg(long)]
        replay: Option<String>,
        /// Print every step of the simulation.
        #[arg(long)]
        trace: bool,
        /// Report a failure as found, without shrinking it.
        #[arg(long)]
        no_shrink: bool,
    },
    /// Draw the system: its LATT and its boxes with their agents and message edges.
    Graph {
        /// The .ovid file.
        file: PathBuf,
        /// The picture's format.
        #[arg(long, value_enum, default_value_t = GraphFormat::Text)]
        format: GraphFormat,
        /// Write to this file instead of standard output.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
}

/// Formats of `ovidc graph`.
#[derive(Clone, Copy, ValueEnum)]
enum GraphFormat {
    /// Indented text.
    Text,
    /// Graphviz DOT (two digraphs: the LATT and the boxes).
    Dot,
    /// SVG, laid out without an external graphviz (the LATT and the boxes, one after the other).
    Svg,
    /// A self-contained HTML page with both pictures.
    Html,
}

/// How diagnostics are printed.
#[derive(Clone, Copy, ValueEnum)]
enum Format {
    /// Rendered for people, with the source underlined.
    Human,
    /// One JSON document (an array of diagnostics), for editors and tools.
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The parser and checker recurse over the syntax tree; nesting is bounded, but a roomy
    // stack keeps long `else if` chains far from the limit.
    let worker = std::thread::Builder::new()
        .stack_size(256 << 20)
        .spawn(move || run(cli));
    match worker.map(|w| w.join()) {
        Ok(Ok(code)) => code,
        _ => {
            eprintln!("ovidc: internal error; please report it with the input that caused it");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Check { file, format } => ovidc::cli::check(&file, matches!(format, Format::Json)),
        Command::Build {
            file,
            output,
            no_compile,
        } => ovidc::cli::build(&file, &output, !no_compile),
        Command::Run { file } => ovidc::run::run(&file),
        Command::Test {
            file,
            seeds,
            seed,
            ops,
            clients,
            faults,
            events,
            target,
            replay,
            trace,
            no_shrink,
        } => {
            let mut args = vec!["--seeds".to_string(), seeds.to_string()];
            if trace {
                args.push("--trace".into());
            }
            if no_shrink {
                args.push("--no-shrink".into());
            }
            let optional = [
                ("--seed", seed.map(|s| s.to_string())),
                ("--ops", ops.map(|s| s.to_string())),
                ("--clients", clients.map(|s| s.to_string())),
                ("--faults", faults),
                ("--events", events),
                ("--target", target),
                ("--replay", replay),
            ];
            for (flag, value) in optional {
                if let Some(v) = value {
                    args.extend([flag.to_string(), v]);
                }
            }
            ovidc::run::test(&file, &args)
        }
        Command::Graph {
            file,
            format,
            output,
        } => {
            let format = match format {
                GraphFormat::Text => ovidc::cli::GraphFormat::Text,
                GraphFormat::Dot => ovidc::cli::GraphFormat::Dot,
                GraphFormat::Svg => ovidc::cli::GraphFormat::Svg,
                GraphFormat::Html => ovidc::cli::GraphFormat::Html,
            };
            ovidc::cli::graph(&file, format, output.as_deref())
        }
    }
}

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
        /// Keep each box's durable state (replicated agents' Paxos logs) in DIR/<box>, so that a
        /// box started again with it loses nothing acknowledged; without DIR,
        /// <target>/ovid-data/<system>. Without the flag, nothing is kept.
        #[arg(long, value_name = "DIR")]
        #[allow(clippy::option_option)]
        data_dir: Option<Option<PathBuf>>,
    },
    /// Check by deterministic simulation that each transformed agent still behaves like the
    /// original: linearizable against its own code, and its refinement mapping holds.
    Test {
        /// The .ovid file.
        file: PathBuf,
        /// The simulator's flags, passed to the system binary's `test` as they are:
        /// --seeds N (default 100), --seed S, --ops N, --clients N,
        /// --faults delay,reorder,crash,partition,pause,churn,amnesia|all|none, --events LIST,
        /// --target ID, --replay STRING, --trace, --no-shrink (docs/verification.md).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Print the steps that change a running system from OLD to NEW (start, wedge, capture,
    /// map, restore, switch routes, unwedge, stop), or why it cannot be done live.
    Plan {
        /// The version that runs.
        old: PathBuf,
        /// The version to change it into.
        new: PathBuf,
        /// How to print the plan (and diagnostics).
        #[arg(long, value_enum, default_value_t = Format::Human)]
        format: Format,
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
        Command::Run { file, data_dir } => ovidc::run::run(&file, data_dir),
        Command::Test { file, args } => ovidc::run::test(&file, &args),
        Command::Plan { old, new, format } => {
            ovidc::cli::plan(&old, &new, matches!(format, Format::Json))
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

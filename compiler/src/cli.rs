//! The commands of `ovidc`, as functions the binary (and tests) call.

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;

use crate::check::{self, Model};
use crate::diagnostic::{self, Diagnostic, Style};
use crate::expand::{self, Expanded};
use crate::graph;
use crate::place;
use crate::source::Sources;
use crate::syntax::{self, Program};
use ovid::deployment::BoxSpec;

/// Loads and checks a file: the model, or the program's sources and every diagnostic.
pub fn load_and_check(path: &Path) -> Result<(Program, Model), Failure> {
    let (program, mut diagnostics) = syntax::load(path)
        .map_err(|e| Failure::Io(format!("cannot read `{}`: {e}", path.display())))?;
    if diagnostics.is_empty() {
        match check::check(&program) {
            Ok(model) => return Ok((program, model)),
            Err(d) => diagnostics = d,
        }
    }
    Err(Failure::Diagnostics(program.sources, diagnostics))
}

/// Why a command failed.
#[derive(Debug)]
pub enum Failure {
    /// The file could not be read at all.
    Io(String),
    /// The program has errors.
    Diagnostics(Sources, Vec<Diagnostic>),
}

/// Prints a failure as `ovidc` does: rendered diagnostics (or JSON) on stderr/stdout.
pub fn report(failure: &Failure, json: bool) {
    match failure {
        Failure::Io(message) if json => {
            let doc = serde_json::json!([{ "code": "ovid::io", "severity": "error", "message": message }]);
            println!("{doc:#}");
        }
        Failure::Io(message) => eprintln!("error: {message}"),
        Failure::Diagnostics(sources, diagnostics) if json => {
            let doc: Vec<_> = diagnostics
                .iter()
                .map(|d| diagnostic::to_json(sources, d))
                .collect();
            println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
        }
        Failure::Diagnostics(sources, diagnostics) => {
            let style = if std::io::stderr().is_terminal() {
                Style::Color
            } else {
                Style::Plain
            };
            for d in diagnostics {
                eprintln!("{}", diagnostic::render(sources, d, style));
            }
            let n = diagnostics.len();
            eprintln!("error: {n} problem{} found", if n == 1 { "" } else { "s" });
        }
    }
}

/// `ovidc check FILE`: exit 0 when the program is correct, 1 with diagnostics otherwise.
pub fn check(path: &Path, json: bool) -> ExitCode {
    match load_and_check(path) {
        Ok((_, model)) => {
            if json {
                println!("[]");
            } else {
                let instances = model.system.as_ref().map_or(0, |s| s.instances.len());
                eprintln!(
                    "ok: {} ({}, {}, {})",
                    path.display(),
                    diagnostic::count(model.messages.len(), "message"),
                    diagnostic::count(model.agents.len(), "agent"),
                    diagnostic::count(instances, "instance")
                );
            }
            ExitCode::SUCCESS
        }
        Err(failure) => {
            report(&failure, json);
            ExitCode::FAILURE
        }
    }
}

/// The formats `ovidc graph` draws in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GraphFormat {
    /// Indented text.
    Text,
    /// Graphviz DOT.
    Dot,
    /// SVG.
    Svg,
    /// HTML embedding the SVG pictures.
    Html,
}

/// Checks, expands and places a file: everything `graph` and `build` start from.
pub fn load_expanded(path: &Path) -> Result<(Program, Model, Expanded, Vec<BoxSpec>), Failure> {
    let (program, model) = load_and_check(path)?;
    let expanded =
        expand::expand(&model).map_err(|e| Failure::Io(format!("{}: {e}", path.display())))?;
    let declared = model
        .system
        .as_ref()
        .map(|s| s.boxes.clone())
        .unwrap_or_default();
    let boxes = place::place(&expanded, &declared);
    Ok((program, model, expanded, boxes))
}

/// `ovidc graph FILE --format F [-o OUT]`.
pub fn graph(path: &Path, format: GraphFormat, output: Option<&Path>) -> ExitCode {
    let (_, model, expanded, boxes) = match load_expanded(path) {
        Ok(x) => x,
        Err(f) => {
            report(&f, false);
            return ExitCode::FAILURE;
        }
    };
    let drawn = match format {
        GraphFormat::Text => Ok(graph::text(&model, &expanded, &boxes)),
        GraphFormat::Dot => Ok(graph::dot(&model, &expanded, &boxes)),
        GraphFormat::Svg => graph::svg(&model, &expanded, &boxes).map(|(a, b)| format!("{a}\n{b}")),
        GraphFormat::Html => graph::html(&model, &expanded, &boxes),
    };
    let drawn = match drawn {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match output {
        Some(out) => match std::fs::write(out, drawn) {
            Ok(()) => {
                eprintln!("wrote {}", out.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: cannot write `{}`: {e}", out.display());
                ExitCode::FAILURE
            }
        },
        None => {
            print!("{drawn}");
            ExitCode::SUCCESS
        }
    }
}

/// `ovidc build FILE -o DIR`: writes the crate and deployment, then compiles it unless told not to.
pub fn build(path: &Path, out: &Path, compile: bool) -> ExitCode {
    let built = match crate::build::generate(path, out) {
        Ok(b) => b,
        Err(f) => {
            report(&f, false);
            return ExitCode::FAILURE;
        }
    };
    eprintln!(
        "wrote {} (crate `{}`, {} boxes)",
        out.display(),
        built.package,
        built.deployment.boxes.len()
    );
    if compile {
        match crate::build::cargo_build(&built) {
            Ok(binary) => eprintln!(
                "built {}\n  run it: {} local",
                binary.display(),
                binary.display()
            ),
            Err(f) => {
                report(&f, false);
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}

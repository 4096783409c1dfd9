//! The front of every command: a file → its checked model → its expansion and placement, or
//! the failure to report. `cli`, `build` and `run` all start here, so none calls another to
//! load a file.

use std::io::IsTerminal;
use std::path::Path;

use ovid::deployment::BoxSpec;

use crate::check::{self, Model};
use crate::diagnostic::{self, Diagnostic, Style};
use crate::expand::{self, Expanded};
use crate::place;
use crate::source::Sources;
use crate::syntax::{self, Program};

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

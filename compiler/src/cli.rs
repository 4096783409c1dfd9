//! The commands of `ovidc`, as functions the binary (and tests) call.

use std::path::Path;
use std::process::ExitCode;

use crate::diagnostic;
use crate::graph;
pub use crate::pipeline::{Failure, load_and_check, load_expanded, report};

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

/// `ovidc plan OLD NEW [--format json]`: the steps that change the running OLD into NEW, or
/// why it cannot be done live.
pub fn plan(old: &Path, new: &Path, json: bool) -> ExitCode {
    let load = |path: &Path| -> Result<_, Failure> {
        let (program, model, expanded, boxes) = load_expanded(path)?;
        let deployment = crate::emit::deployment::deployment(&model, &expanded, &boxes);
        Ok((program, model, deployment))
    };
    let (o, n) = match (load(old), load(new)) {
        (Ok(o), Ok(n)) => (o, n),
        (Err(f), _) | (_, Err(f)) => {
            report(&f, json);
            return ExitCode::FAILURE;
        }
    };
    let (ov, nv) = (
        crate::plan::Version {
            program: &o.0,
            model: &o.1,
            deployment: &o.2,
        },
        crate::plan::Version {
            program: &n.0,
            model: &n.1,
            deployment: &n.2,
        },
    );
    match crate::plan::plan(&ov, &nv) {
        Ok(plan) if json => {
            println!(
                "{}",
                serde_json::to_string_pretty(&plan).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Ok(plan) => {
            print!("{}", crate::plan::text(&plan));
            ExitCode::SUCCESS
        }
        Err(diagnostics) => {
            report(&Failure::Diagnostics(n.0.sources, diagnostics), json);
            ExitCode::FAILURE
        }
    }
}

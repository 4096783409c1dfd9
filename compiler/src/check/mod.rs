//! The checker: a parsed [`Program`] → a checked [`Model`], or every error found.
//!
//! Phases run in order and each collects all of its errors: declarations (names, types),
//! agents (handlers), wiring (instances and bindings), transformations (parameters and
//! preconditions). Later phases skip what earlier ones already reported broken, so one
//! mistake gives one diagnostic.

mod agents;
pub mod handlers;
pub mod model;
pub mod replies;
mod transforms;
pub mod types;
mod wiring;

use std::collections::BTreeMap;

use crate::diagnostic::{Code, Diagnostic};
use crate::syntax::Program;
use crate::syntax::ast::{Ident, Span};
pub use model::Model;

/// Checks a whole program. On success the model; otherwise every diagnostic, in source order.
pub fn check(program: &Program) -> Result<Model, Vec<Diagnostic>> {
    let mut out = Vec::new();
    let messages = declarations(program, &mut out);
    let agents = agents::check_agents(program, &messages, &mut out);
    let mut system = wiring::check_system(program, &messages, &agents, &mut out);
    if let Some(system) = &mut system {
        transforms::check_pipelines(program, &messages, &agents, system, &mut out);
    }
    if out.is_empty() {
        let agents = agents.into_iter().map(|(name, a)| (name, a.info)).collect();
        Ok(Model {
            messages,
            agents,
            system: system.map(|s| s.info),
        })
    } else {
        out.sort_by_key(|d| (d.span.file, d.span.start, d.code));
        Err(out)
    }
}

/// Checks names across files and resolves message field types.
fn declarations(
    program: &Program,
    out: &mut Vec<Diagnostic>,
) -> BTreeMap<String, Vec<(String, types::Type)>> {
    let mut seen: BTreeMap<String, (Span, &'static str)> = BTreeMap::new();
    let mut declare = |name: &Ident, what: &'static str, out: &mut Vec<Diagnostic>| {
        if let Some((first, first_what)) = seen.get(&name.name) {
            out.push(
                Diagnostic::new(
                    Code::Duplicate,
                    format!("`{}` is declared twice", name.name),
                    name.span,
                    format!("this {what} reuses the name"),
                )
                .related(*first, format!("first declared here as a {first_what}"))
                .help("messages, agents and systems share one namespace; rename one of them"),
            );
            false
        } else {
            seen.insert(name.name.clone(), (name.span, what));
            true
        }
    };
    let mut message_decls = Vec::new();
    for file in &program.files {
        for m in &file.messages {
            if declare(&m.name, "message", out) {
                message_decls.push(m);
            }
        }
        for a in &file.agents {
            declare(&a.name, "agent", out);
        }
        for s in &file.systems {
            declare(&s.name, "system", out);
        }
    }
    // Field types may name any message, so collect the names first, then resolve.
    let mut messages: BTreeMap<String, Vec<(String, types::Type)>> = message_decls
        .iter()
        .map(|m| (m.name.name.clone(), Vec::new()))
        .collect();
    for m in &message_decls {
        let mut fields = Vec::new();
        for f in &m.fields {
            if fields.iter().any(|(n, _)| *n == f.name.name) {
                out.push(
                    Diagnostic::new(
                        Code::Duplicate,
                        format!("field `{}` is declared twice", f.name.name),
                        f.name.span,
                        "declared again here",
                    )
                    .help("rename or remove one of the fields"),
                );
                continue;
            }
            fields.push((f.name.name.clone(), types::resolve(&f.ty, &messages, out)));
        }
        messages.insert(m.name.name.clone(), fields);
    }
    messages
}

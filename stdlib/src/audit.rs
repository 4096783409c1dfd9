//! `audit(path: "..")`: appends every message to a log.

use crate::expansion::{Args, Expansion, Request, Value, pass_through, string};
use crate::spec::{Param, ParamKind, Spec, Target};

/// The signature of `audit`.
pub const SPEC: Spec = Spec {
    name: "audit",
    target: Target::Both,
    params: &[Param { name: "path", kind: ParamKind::Str, positional: true, required: false, doc: "the log file (default audit.log in the box's directory)" }],
    preconditions: &[],
    summary: "keeps an append-only log of the messages",
    expand,
};

/// One `Auditor{i}` per sender, appending what passes to the log before forwarding it.
pub fn expand(req: &Request) -> Expansion {
    let config = Args::from([("path".to_string(), Value::Str(string(req.args, "path", "audit.log")))]);
    pass_through(req, "Auditor", config)
}

/// The proxy agents of this transformation, by kind (filled in as they land).
pub fn proxies(_hooks: &std::sync::Arc<dyn crate::proxy::Hooks>) -> Vec<(&'static str, ovid::Factory)> {
    Vec::new()
}

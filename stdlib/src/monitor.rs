//! `monitor`: counts messages and their rates on each channel, exposed as metrics.

use crate::expansion::{Args, Expansion, Request, pass_through};
use crate::spec::{Spec, Target};

/// The signature of `monitor`.
pub const SPEC: Spec = Spec {
    name: "monitor",
    target: Target::Both,
    params: &[],
    preconditions: &[],
    summary: "counts messages and rates per channel",
    expand,
};

/// One `Monitor{i}` per sender, counting what passes on that channel before forwarding it.
pub fn expand(req: &Request) -> Expansion {
    pass_through(req, "Monitor", Args::new())
}

/// The proxy agents of this transformation, by kind (filled in as they land).
pub fn proxies(_hooks: &std::sync::Arc<dyn crate::proxy::Hooks>) -> Vec<(&'static str, ovid::Factory)> {
    Vec::new()
}

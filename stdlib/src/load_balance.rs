//! `load_balance(n)`: n copies of a stateless agent behind a proxy that spreads messages.

use crate::expansion::{Args, Expansion, Request, Value, int};
use crate::spec::{Param, ParamKind, Precondition, Spec, Target};

/// The signature of `load_balance`.
pub const SPEC: Spec = Spec {
    name: "load_balance",
    target: Target::Agent,
    params: &[Param {
        name: "n",
        kind: ParamKind::Int { min: 1, max: 1024 },
        positional: true,
        required: true,
        doc: "the number of workers",
    }],
    preconditions: &[Precondition::Stateless],
    summary: "spreads messages over n copies of a stateless agent",
    expand,
};

/// Runs `X/Worker0..n-1`; each sender gets a balancer `X/LoadBalancer{i}` that sends each
/// request to the worker with the fewest outstanding requests.
pub fn expand(req: &Request) -> Expansion {
    let n = int(req.args, "n", 1);
    let mut e = Expansion::default();
    let workers: Vec<String> = (0..n).map(|j| format!("{}/Worker{j}", req.id)).collect();
    for (i, s) in req.senders.iter().enumerate() {
        let id = format!("{}/LoadBalancer{i}", req.id);
        e.proxy(id.clone(), "LoadBalancer", Args::from([("sender".to_string(), Value::Str(s.clone()))]), workers.clone());
        e.entry.insert(s.clone(), id);
    }
    for w in workers {
        e.copy(w);
    }
    e
}

/// The proxy agents of this transformation, by kind (filled in as they land).
pub fn proxies(_hooks: &std::sync::Arc<dyn crate::proxy::Hooks>) -> Vec<(&'static str, ovid::Factory)> {
    Vec::new()
}

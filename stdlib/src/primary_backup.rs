//! `primary_backup(n)`: one primary and n-1 backups kept in step; the controller fails over.

use crate::expansion::{Args, Expansion, Request, Value, int};
use crate::spec::{Param, ParamKind, Precondition, Spec, Target};

/// The signature of `primary_backup`.
pub const SPEC: Spec = Spec {
    name: "primary_backup",
    target: Target::Agent,
    params: &[Param {
        name: "n",
        kind: ParamKind::Int { min: 2, max: 15 },
        positional: true,
        required: true,
        doc: "the number of copies, the primary included",
    }],
    preconditions: &[Precondition::Deterministic],
    summary: "keeps backups of a deterministic agent in step with a primary; fails over through the controller",
    expand,
};

/// Keeps `X/Copy0` (the primary) and `X/Copy1..n-1` (backups) in step through their proxies
/// `X/PrimaryBackupProxy{i}`; each sender gets an ingress proxy that follows the primary the
/// controller names.
pub fn expand(req: &Request) -> Expansion {
    let n = int(req.args, "n", 2);
    let mut e = Expansion::default();
    let proxies: Vec<String> = (0..n).map(|i| format!("{}/PrimaryBackupProxy{i}", req.id)).collect();
    for (i, s) in req.senders.iter().enumerate() {
        let id = format!("{}/PrimaryBackupIngressProxy{i}", req.id);
        e.proxy(id.clone(), "PrimaryBackupIngressProxy", Args::from([("sender".to_string(), Value::Str(s.clone()))]), proxies.clone());
        e.entry.insert(s.clone(), id);
    }
    for (i, p) in proxies.iter().enumerate() {
        let copy = format!("{}/Copy{i}", req.id);
        let mut targets = vec![copy.clone()];
        targets.extend(proxies.iter().filter(|q| *q != p).cloned());
        let config = Args::from([("index".to_string(), Value::Int(i as i64)), ("peers".to_string(), Value::List(proxies.clone()))]);
        e.proxy(p.clone(), "PrimaryBackupProxy", config, targets);
        e.copy(copy);
    }
    e
}

/// The proxy agents of this transformation, by kind (filled in as they land).
pub fn proxies(_hooks: &std::sync::Arc<dyn crate::proxy::Hooks>) -> Vec<(&'static str, ovid::Factory)> {
    Vec::new()
}

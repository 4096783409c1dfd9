//! `primary_backup(n)`: one primary and n-1 backups kept in step; the controller's view
//! service (`ovid::views`) names the primary and fails over (docs/replication.md).
//!
//! The expansion ([`expand`]), the proxy agents ([`proxies`]: [`PrimaryBackupIngressProxy`],
//! replicate's ingress proxy following the controller's views, and [`PrimaryBackupProxy`] per
//! copy) and the refinement mapping ([`refine`]). Client sessions (each request once, in each
//! sender's order) are replicate's.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::expansion::{Args, Expansion, Request, Value, int};
use crate::spec::{Param, ParamKind, Precondition, Spec, Target};

mod ingress;
pub mod messages;
mod proxy;

pub use ingress::PrimaryBackupIngressProxy;
pub use proxy::{PRIMARY, PrimaryBackupProxy, Timing};

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
    let proxies: Vec<String> = (0..n)
        .map(|i| format!("{}/PrimaryBackupProxy{i}", req.id))
        .collect();
    for (i, s) in req.senders.iter().enumerate() {
        let id = format!("{}/PrimaryBackupIngressProxy{i}", req.id);
        e.proxy(
            id.clone(),
            "PrimaryBackupIngressProxy",
            Args::from([("sender".to_string(), Value::Str(s.clone()))]),
            proxies.clone(),
        );
        e.entry.insert(s.clone(), id);
    }
    for (i, p) in proxies.iter().enumerate() {
        let copy = format!("{}/Copy{i}", req.id);
        let mut targets = vec![copy.clone()];
        targets.extend(proxies.iter().filter(|q| *q != p).cloned());
        let config = Args::from([
            ("index".to_string(), Value::Int(i as i64)),
            ("peers".to_string(), Value::List(proxies.clone())),
        ]);
        e.proxy(p.clone(), "PrimaryBackupProxy", config, targets);
        e.copy(copy);
    }
    e
}

/// The proxy agents of this transformation, by kind: `PrimaryBackupIngressProxy` (it submits
/// to the primary the controller names, and retries) and `PrimaryBackupProxy`.
pub fn proxies(_hooks: &Arc<dyn crate::proxy::Hooks>) -> Vec<(&'static str, ovid::Factory)> {
    let ingress: ovid::Factory = Arc::new(|bytes: &[u8]| {
        let args = crate::proxy::config(bytes)?;
        Ok(Box::new(PrimaryBackupIngressProxy::from_config(&args)?) as Box<dyn ovid::Agent>)
    });
    let copy: ovid::Factory = Arc::new(|bytes: &[u8]| {
        let args = crate::proxy::config(bytes)?;
        Ok(Box::new(PrimaryBackupProxy::from_config(&args)?) as Box<dyn ovid::Agent>)
    });
    vec![(ingress::KIND, ingress), (proxy::KIND, copy)]
}

/// The refinement mapping over the snapshots of the physical agents under `id`: the snapshot of
/// the copy `{id}/Copy{i}` whose proxy `{id}/PrimaryBackupProxy{i}` applied the most of the log
/// (the primary's, or a backup's that has caught up).
pub fn refine(id: &str, snapshots: &BTreeMap<String, Vec<u8>>) -> Result<Vec<u8>, ovid::Error> {
    let mut copies = Vec::new();
    for (name, snapshot) in snapshots {
        let Some(i) = name
            .strip_prefix(&format!("{id}/PrimaryBackupProxy"))
            .and_then(|i| i.parse::<usize>().ok())
        else {
            continue;
        };
        if let Some(copy) = snapshots.get(&format!("{id}/Copy{i}")) {
            copies.push((proxy::applied(snapshot)?, copy));
        }
    }
    crate::replicate::virtual_state(&copies)
        .map(|s| (*s).clone())
        .ok_or_else(|| ovid::Error::Snapshot(format!("no copy of `{id}` with its proxy")))
}

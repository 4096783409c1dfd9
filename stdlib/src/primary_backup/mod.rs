//! `primary_backup(n)`: one primary and n-1 backups kept in step; the controller's view
//! service (`ovid::views`) names the primary and fails over (docs/replication.md).
//!
//! The expansion ([`expand`]), the proxy agents ([`proxies`]: [`PrimaryBackupIngressProxy`],
//! replicate's ingress proxy following the controller's views, and [`PrimaryBackupProxy`] per
//! copy) and the refinement mapping ([`PrimaryBackupTransformation`]'s `merge`). Client sessions (each request once, in each
//! sender's order) are replicate's.

use std::sync::Arc;

use ovid::latt::FaultModel;

use crate::expansion::{Args, Expansion, Request, Value, int};
use crate::spec::{Param, ParamKind, Precondition, Spec, Target};
use crate::state::{Merge, Parts};

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
};

/// `primary_backup` in the registry ([`crate::ALL`]).
pub struct PrimaryBackupTransformation;

impl crate::transformation::Transformation for PrimaryBackupTransformation {
    fn spec(&self) -> &'static Spec {
        &SPEC
    }

    fn expand(&self, req: &Request) -> Expansion {
        expand(req)
    }

    fn proxies(
        &self,
        hooks: &std::sync::Arc<dyn crate::proxy::Hooks>,
    ) -> Vec<(&'static str, ovid::Factory)> {
        proxies(hooks)
    }

    /// Copy `i` is `Copy{i}` and its proxy; one may be down (the controller's view service
    /// fails over to a backup), and only one per run: a restarted copy holds nothing until it
    /// has caught up with the primary.
    fn faults(&self, req: &Request, _expansion: &Expansion) -> Option<FaultModel> {
        let n = int(req.args, "n", 2).max(1) as usize;
        Some(FaultModel {
            groups: crate::replicate::members(req.id, n, &["Copy", "PrimaryBackupProxy"]),
            tolerates: usize::from(n >= 2),
            churn: false,
            view_service: true,
        })
    }

    /// The state of the copy that applied the most of the primary's log.
    fn merge(&self, merge: Merge) -> Result<Parts, ovid::Error> {
        crate::replicate::most_applied(merge, proxy::KIND, proxy::applied)
    }
}

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

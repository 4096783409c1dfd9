//! Ovid's standard library of transformations. Each transformation is one module holding all
//! it is: a value implementing [`transformation::Transformation`] (signature, preconditions,
//! expansion, proxy agents, refinement mapping, fault model). Adding a transformation means
//! adding a module and listing it in [`ALL`]; nothing outside this crate names one.
#![deny(missing_docs)]

pub mod expansion;
pub mod proxy;
pub mod refinement;
pub mod spec;
pub mod state;
pub mod transformation;
mod view_member;

pub mod audit;
pub mod batch;
pub mod chain;
pub mod compress;
pub mod encrypt;
pub mod load_balance;
pub mod monitor;
pub mod primary_backup;
pub mod replicate;
pub mod shard;

use transformation::Transformation;

/// Every transformation the standard library offers: the registry.
pub static ALL: &[&dyn Transformation] = &[
    &shard::ShardTransformation,
    &replicate::ReplicateTransformation,
    &primary_backup::PrimaryBackupTransformation,
    &chain::ChainTransformation,
    &load_balance::LoadBalanceTransformation,
    &batch::BatchTransformation,
    &compress::CompressTransformation,
    &encrypt::EncryptTransformation,
    &monitor::MonitorTransformation,
    &audit::AuditTransformation,
];

/// The transformation with this name, if the standard library has it.
pub fn lookup(name: &str) -> Option<&'static dyn Transformation> {
    ALL.iter().copied().find(|t| t.spec().name == name)
}

/// A LATT node's transformation as a user would write it (`shard(by: key, n: 2)`); the bare
/// name if the standard library does not have it.
pub fn describe(transform: &ovid::latt::Transform) -> String {
    match lookup(&transform.name) {
        Some(t) => t.spec().show(&transform.args),
        None => transform.name.clone(),
    }
}

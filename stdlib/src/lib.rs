//! Ovid's standard library of transformations. Each transformation is one module holding what
//! the compiler needs to know of it (its [`spec::Spec`]: target, parameters, preconditions) and,
//! as they land, its expansion rule, proxy agents and refinement mapping. Adding a
//! transformation means adding a module and listing it in [`ALL`].
#![deny(missing_docs)]

pub mod expansion;
pub mod proxy;
pub mod spec;

pub mod audit;
pub mod batch;
pub mod compress;
pub mod encrypt;
pub mod load_balance;
pub mod monitor;
pub mod primary_backup;
pub mod replicate;
pub mod shard;

/// Every transformation the standard library offers.
pub const ALL: &[&spec::Spec] = &[
    &shard::SPEC,
    &replicate::SPEC,
    &primary_backup::SPEC,
    &load_balance::SPEC,
    &batch::SPEC,
    &compress::SPEC,
    &encrypt::SPEC,
    &monitor::SPEC,
    &audit::SPEC,
];

/// The transformation with this name, if the standard library has it.
pub fn lookup(name: &str) -> Option<&'static spec::Spec> {
    ALL.iter().copied().find(|s| s.name == name)
}

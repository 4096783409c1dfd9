//! The Ovid compiler as a library: `.ovid` syntax → checked model → expansion (the LATT) →
//! placement → emission (a Rust crate and a deployment), plus the commands that drive them.
#![deny(missing_docs)]

pub mod build;
pub mod check;
pub mod cli;
pub mod diagnostic;
pub mod emit;
pub mod expand;
pub mod graph;
pub mod pipeline;
pub mod place;
pub mod plan;
pub mod run;
pub mod source;
pub mod syntax;

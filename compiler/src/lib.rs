//! The Ovid compiler as a library: `.ovid` syntax → checked model → (later) expansion and
//! code generation. `ovidc` and `#[ovid::agent]` share this one front end.
#![deny(missing_docs)]

pub mod check;
pub mod cli;
pub mod diagnostic;
pub mod emit;
pub mod expand;
pub mod graph;
pub mod place;
pub mod source;
pub mod syntax;

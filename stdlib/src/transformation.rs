//! The one trait every transformation implements: all the compiler, the runtime and the
//! simulator know of a transformation goes through it, so adding one means adding a module and
//! a line in [`crate::ALL`].

use std::sync::Arc;

use ovid::Factory;
use ovid::latt::FaultModel;

use crate::expansion::{Args, Expansion, Request};
use crate::proxy::Hooks;
use crate::spec::Spec;
use crate::state::{self, Merge, Parts};

/// Arguments that each fit their parameter but do not make sense together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// What is wrong, for the diagnostic's message.
    pub message: String,
    /// A few words for the label under the pipeline.
    pub label: &'static str,
}

/// A transformation of the standard library: its signature, preconditions, expansion, proxies,
/// refinement mapping and fault model.
pub trait Transformation: Send + Sync + 'static {
    /// Its signature and preconditions, as plain data.
    fn spec(&self) -> &'static Spec;

    /// Checks the arguments as a whole, once each fits its parameter's kind.
    fn validate(&self, _args: &Args) -> Result<(), Invalid> {
        Ok(())
    }

    /// The agents it adds, how they are named, and where each sender enters.
    fn expand(&self, req: &Request) -> Expansion;

    /// Its proxy agents, by kind, ready for `BoxBuilder::kind_boxed`.
    fn proxies(&self, hooks: &Arc<dyn Hooks>) -> Vec<(&'static str, Factory)>;

    /// Which children of an expansion fail together and how many may be down, if it tolerates
    /// failures at all.
    fn faults(&self, _req: &Request, _expansion: &Expansion) -> Option<FaultModel> {
        None
    }

    /// Refinement mapping, physical → virtual: the state of the transformed agent from the
    /// states of the copies that run its code. By default the copies must agree (a single
    /// copy, or copies that all see every message).
    fn merge(&self, merge: Merge) -> Result<Parts, ovid::Error> {
        state::agree(merge.id, merge.copies)
    }

    /// Refinement mapping, virtual → physical: one state per copy (`copies`, in expansion
    /// order) from the transformed agent's state. By default every copy gets all of it.
    fn split(&self, _args: &Args, state: Parts, copies: &[String]) -> Vec<Parts> {
        vec![state; copies.len()]
    }

    /// The message fields its proxies read (a shard key), which a generated system's
    /// [`Hooks`] must hash.
    fn key_fields(&self, _args: &Args) -> Vec<String> {
        Vec::new()
    }

    /// When it may transform the controller itself: how many controller replicas these
    /// arguments make.
    fn controller_replicas(&self, _args: &Args) -> Option<usize> {
        None
    }
}

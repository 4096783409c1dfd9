//! What the proxy agents of every transformation share: how a box makes them, the
//! configuration the compiler gives each one, and the hooks a generated system supplies.
//!
//! The compiler's expansion names each proxy's kind (`ShardIngressProxy`) and its
//! configuration (an [`Args`] map: the identifiers it talks to, its parameters). The generated
//! crate registers [`kinds`] with every box; the controller starts a proxy by kind and hands it
//! the configuration as JSON bytes. Proxies never know the message types of the system they
//! serve: they forward [`ovid::Payload`]s untouched, and ask the system's [`Hooks`] for what
//! they must read inside a message (a shard key).

use std::sync::Arc;

use ovid::{Error, Factory, Payload};
use serde::Serialize;

use crate::expansion::{Args, Value};

/// What a generated system tells its proxies about its own message types.
pub trait Hooks: Send + Sync + 'static {
    /// The [`stable_hash`] of the field `by` of the message in `payload`, or `None` if that
    /// message has no such field.
    fn key_hash(&self, by: &str, payload: &Payload) -> Option<u64>;
}

/// Hooks for a system whose messages have no fields proxies need (tests, untransformed).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoHooks;

impl Hooks for NoHooks {
    fn key_hash(&self, _by: &str, _payload: &Payload) -> Option<u64> {
        None
    }
}

/// A hash of a value that is the same in every box, build and run (FNV-1a of its postcard
/// encoding), so that every ingress proxy picks the same shard for a key.
pub fn stable_hash<T: Serialize + ?Sized>(value: &T) -> u64 {
    let bytes = postcard_bytes(value);
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3))
}

fn postcard_bytes<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    // A serializer for plain data cannot fail; an empty encoding still hashes consistently.
    postcard::to_stdvec(value).unwrap_or_default()
}

/// Decodes a proxy's configuration (the JSON the compiler wrote into the deployment).
pub fn config(bytes: &[u8]) -> Result<Args, Error> {
    if bytes.is_empty() {
        return Ok(Args::new());
    }
    serde_json::from_slice(bytes).map_err(|e| Error::Snapshot(format!("bad proxy configuration: {e}")))
}

/// The identifiers listed under `name` in a configuration (`targets`, `peers`).
pub fn ids(args: &Args, name: &str) -> Vec<String> {
    match args.get(name) {
        Some(Value::List(l)) => l.clone(),
        Some(Value::Str(s)) => vec![s.clone()],
        _ => Vec::new(),
    }
}

/// Every proxy kind of the standard library, ready for `BoxBuilder::kind_boxed`.
pub fn kinds(hooks: Arc<dyn Hooks>) -> Vec<(&'static str, Factory)> {
    let mut all = Vec::new();
    all.extend(crate::shard::proxies(&hooks));
    all.extend(crate::replicate::proxies(&hooks));
    all.extend(crate::primary_backup::proxies(&hooks));
    all.extend(crate::load_balance::proxies(&hooks));
    all.extend(crate::batch::proxies(&hooks));
    all.extend(crate::compress::proxies(&hooks));
    all.extend(crate::encrypt::proxies(&hooks));
    all.extend(crate::monitor::proxies(&hooks));
    all.extend(crate::audit::proxies(&hooks));
    all
}

//! `batch(size, linger: d)`: an encoder that packs up to `size` messages (or what arrived
//! within `linger`) into one, and a decoder that unpacks them.

use crate::expansion::{Args, Expansion, Request, Value, channel_pair, int};
use crate::spec::{Param, ParamKind, Spec, Target};

/// The signature of `batch`.
pub const SPEC: Spec = Spec {
    name: "batch",
    target: Target::Channel,
    params: &[
        Param { name: "size", kind: ParamKind::Int { min: 1, max: 65536 }, positional: true, required: true, doc: "the most messages in one batch" },
        Param { name: "linger", kind: ParamKind::Duration, positional: true, required: false, doc: "how long a partial batch waits (default 1ms)" },
    ],
    preconditions: &[],
    summary: "packs messages on a channel into batches",
    expand,
};

/// A `BatchEncoder{i}` near each sender and a `BatchDecoder{i}` near the agent.
pub fn expand(req: &Request) -> Expansion {
    let config = Args::from([
        ("size".to_string(), Value::Int(int(req.args, "size", 64))),
        ("linger_ms".to_string(), Value::Int(int(req.args, "linger", 1))),
    ]);
    channel_pair(req, "BatchEncoder", "BatchDecoder", config)
}

/// The proxy agents of this transformation, by kind (filled in as they land).
pub fn proxies(_hooks: &std::sync::Arc<dyn crate::proxy::Hooks>) -> Vec<(&'static str, ovid::Factory)> {
    Vec::new()
}

//! `compress(algo)`: compresses messages on a channel (zstd or lz4).

use crate::expansion::{Args, Expansion, Request, Value, channel_pair, string};
use crate::spec::{Param, ParamKind, Spec, Target};

/// The signature of `compress`.
pub const SPEC: Spec = Spec {
    name: "compress",
    target: Target::Channel,
    params: &[Param {
        name: "algo",
        kind: ParamKind::Choice(&["lz4", "zstd"]),
        positional: true,
        required: false,
        doc: "the compression algorithm, `lz4` (default) or `zstd`",
    }],
    preconditions: &[],
    summary: "compresses messages on a channel",
    expand,
};

/// A `Compressor{i}` near each sender and a `Decompressor{i}` near the agent.
pub fn expand(req: &Request) -> Expansion {
    let config = Args::from([("algo".to_string(), Value::Str(string(req.args, "algo", "lz4")))]);
    channel_pair(req, "Compressor", "Decompressor", config)
}

/// The proxy agents of this transformation, by kind (filled in as they land).
pub fn proxies(_hooks: &std::sync::Arc<dyn crate::proxy::Hooks>) -> Vec<(&'static str, ovid::Factory)> {
    Vec::new()
}

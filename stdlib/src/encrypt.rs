//! `encrypt(key_env: "VAR")` / `encrypt(key_file: "path")`: authenticated encryption
//! (ChaCha20-Poly1305) of messages on a channel; the key never appears in source.

use crate::expansion::{Args, Expansion, Request, Value, channel_pair, string};
use crate::spec::{Param, ParamKind, Spec, Target};

/// The signature of `encrypt`.
pub const SPEC: Spec = Spec {
    name: "encrypt",
    target: Target::Channel,
    params: &[
        Param { name: "key_env", kind: ParamKind::Str, positional: false, required: false, doc: "the environment variable holding the key (default OVID_KEY)" },
        Param { name: "key_file", kind: ParamKind::Str, positional: false, required: false, doc: "a file holding the key" },
    ],
    preconditions: &[],
    summary: "encrypts and authenticates messages on a channel",
    expand,
};

/// An `Encryptor{i}` near each sender and a `Decryptor{i}` near the agent, sharing a key read
/// at start from `key_file` or the environment variable `key_env` (default `OVID_KEY`).
pub fn expand(req: &Request) -> Expansion {
    let mut config = Args::new();
    match req.args.get("key_file") {
        Some(Value::Str(f)) => config.insert("key_file".to_string(), Value::Str(f.clone())),
        _ => config.insert("key_env".to_string(), Value::Str(string(req.args, "key_env", "OVID_KEY"))),
    };
    channel_pair(req, "Encryptor", "Decryptor", config)
}

/// The proxy agents of this transformation, by kind (filled in as they land).
pub fn proxies(_hooks: &std::sync::Arc<dyn crate::proxy::Hooks>) -> Vec<(&'static str, ovid::Factory)> {
    Vec::new()
}

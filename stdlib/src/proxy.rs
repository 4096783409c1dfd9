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

use ovid::{Agent, Error, Factory, Payload};
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
    fnv1a(&postcard_bytes(value))
}

/// The FNV-1a hash of `bytes`: [`stable_hash`] of a value whose postcard encoding they are.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    })
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
    serde_json::from_slice(bytes)
        .map_err(|e| Error::Snapshot(format!("bad proxy configuration: {e}")))
}

/// The identifiers listed under `name` in a configuration (`targets`, `peers`).
pub fn ids(args: &Args, name: &str) -> Vec<String> {
    match args.get(name) {
        Some(Value::List(l)) => l.clone(),
        Some(Value::Str(s)) => vec![s.clone()],
        _ => Vec::new(),
    }
}

/// The only identifier listed under `targets`, or a configuration error naming `kind`.
pub fn one_target(args: &Args, kind: &str) -> Result<String, Error> {
    match ids(args, "targets").as_slice() {
        [one] => Ok(one.clone()),
        other => Err(bad_config(
            kind,
            format!("expected one target, found {}", other.len()),
        )),
    }
}

/// A factory for a proxy kind: decodes the configuration, then `make`s the agent; either
/// failing is an error at start (the box reports it to the controller).
pub fn factory<A: Agent>(
    make: impl Fn(&Args) -> Result<A, Error> + Send + Sync + 'static,
) -> Factory {
    Arc::new(move |bytes: &[u8]| Ok(Box::new(make(&config(bytes)?)?) as Box<dyn Agent>))
}

/// A proxy's configuration is unusable (`kind`: which proxy; `why`: what is wrong).
pub fn bad_config(kind: &str, why: impl std::fmt::Display) -> Error {
    Error::Io(std::io::Error::new(
        std::io::ErrorKind::InvalidInput,
        format!("{kind}: {why}"),
    ))
}

/// A proxy refuses a message (`kind`: which proxy; `why`: why). Returned from `on_message`,
/// the box logs it and counts it in its `rejections`; the message goes no further.
pub fn rejected(kind: &str, why: impl std::fmt::Display) -> Error {
    Error::Io(std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("{kind} rejected a message: {why}"),
    ))
}

/// Lower-case hexadecimal of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    out
}

/// The bytes written in hexadecimal by `text` (either case), or `None` if it is not hex.
pub fn unhex(text: &str) -> Option<Vec<u8>> {
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let text = text.as_bytes();
    if !text.len().is_multiple_of(2) {
        return None;
    }
    text.chunks(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

/// `#[serde(with = "crate::proxy::byte_buf")]` on a `Vec<u8>` field: written as one byte
/// string (postcard: a length and the bytes, copied in one go) rather than element by element.
pub mod byte_buf {
    use serde::{Deserializer, Serializer, de};

    /// Writes the bytes as a byte string.
    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(bytes)
    }

    /// Reads a byte string (or, from self-describing formats, a sequence of bytes).
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct Visit;
        impl<'de> de::Visitor<'de> for Visit {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 16));
                while let Some(b) = seq.next_element()? {
                    out.push(b);
                }
                Ok(out)
            }
        }
        d.deserialize_byte_buf(Visit)
    }
}

/// Every proxy kind of the standard library, ready for `BoxBuilder::kind_boxed`.
pub fn kinds(hooks: Arc<dyn Hooks>) -> Vec<(&'static str, Factory)> {
    crate::ALL.iter().flat_map(|t| t.proxies(&hooks)).collect()
}

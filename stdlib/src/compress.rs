//! `compress(algo)`: compresses messages on a channel (zstd or lz4).

use ovid::{Context, Error, Payload};
use serde::{Deserialize, Serialize};

use crate::expansion::{Args, Expansion, Request, Value, channel_pair, string};
use crate::proxy;
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
};

/// `compress` in the registry ([`crate::ALL`]).
pub struct CompressTransformation;

impl crate::transformation::Transformation for CompressTransformation {
    fn spec(&self) -> &'static Spec {
        &SPEC
    }

    fn expand(&self, req: &Request) -> Expansion {
        expand(req)
    }

    fn proxies(
        &self,
        hooks: &std::sync::Arc<dyn crate::proxy::Hooks>,
    ) -> Vec<(&'static str, ovid::Factory)> {
        proxies(hooks)
    }
}

/// A `Compressor{i}` near each sender and a `Decompressor{i}` near the agent.
pub fn expand(req: &Request) -> Expansion {
    let config = Args::from([(
        "algo".to_string(),
        Value::Str(string(req.args, "algo", "lz4")),
    )]);
    channel_pair(req, "Compressor", "Decompressor", config)
}

/// The proxy agents of this transformation, by kind: `Compressor` and `Decompressor`.
pub fn proxies(
    _hooks: &std::sync::Arc<dyn crate::proxy::Hooks>,
) -> Vec<(&'static str, ovid::Factory)> {
    vec![
        (
            "Compressor",
            proxy::factory(|args| {
                let algo = match string(args, "algo", "lz4").as_str() {
                    "lz4" => Codec::Lz4,
                    "zstd" => Codec::Zstd,
                    other => {
                        return Err(proxy::bad_config(
                            "Compressor",
                            format!("unknown algorithm `{other}` (lz4 or zstd)"),
                        ));
                    }
                };
                Ok(Compressor {
                    target: proxy::one_target(args, "Compressor")?,
                    algo,
                })
            }),
        ),
        (
            "Decompressor",
            proxy::factory(|args| {
                Ok(Decompressor {
                    target: proxy::one_target(args, "Decompressor")?,
                })
            }),
        ),
    ]
}

/// How the body of a [`Compressed`] message is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Codec {
    /// Not compressed: compressing did not make it smaller.
    Stored,
    /// An LZ4 block.
    Lz4,
    /// A zstd frame.
    Zstd,
}

/// What a compressor sends its decompressor in place of a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ovid::Message)]
#[message(name = "ovid.compress.Compressed")]
pub struct Compressed {
    /// The original message's type name.
    pub name: String,
    /// How `data` is encoded.
    pub codec: Codec,
    /// The length of the original postcard encoding.
    pub len: u32,
    /// The encoded bytes.
    #[serde(with = "crate::proxy::byte_buf")]
    pub data: Vec<u8>,
}

/// The largest message a decompressor will rebuild (a box refuses larger frames anyway), so a
/// forged length cannot make it allocate without bound.
pub const MAX_LEN: usize = 16 << 20;

/// The zstd level: its default, a good balance of speed and ratio.
const ZSTD_LEVEL: i32 = 3;

/// Compresses the postcard encoding of a message.
pub fn compress(algo: Codec, name: &str, bytes: &[u8]) -> Result<Compressed, Error> {
    let len = u32::try_from(bytes.len())
        .ok()
        .filter(|l| *l as usize <= MAX_LEN);
    let Some(len) = len else {
        return Err(proxy::rejected(
            "Compressor",
            format!("message of {} bytes is too large", bytes.len()),
        ));
    };
    let packed = match algo {
        Codec::Stored => None,
        Codec::Lz4 => Some(lz4_flex::block::compress(bytes)),
        Codec::Zstd => Some(
            zstd::bulk::compress(bytes, ZSTD_LEVEL)
                .map_err(|e| proxy::rejected("Compressor", e))?,
        ),
    };
    let (codec, data) = match packed {
        Some(data) if data.len() < bytes.len() => (algo, data),
        _ => (Codec::Stored, bytes.to_vec()),
    };
    Ok(Compressed {
        name: name.to_string(),
        codec,
        len,
        data,
    })
}

/// The postcard encoding a [`Compressed`] message holds; an error if it is corrupt.
pub fn decompress(c: &Compressed) -> Result<Vec<u8>, Error> {
    let len = c.len as usize;
    if len > MAX_LEN {
        return Err(proxy::rejected(
            "Decompressor",
            format!("announced length {len} is too large"),
        ));
    }
    let bytes = match c.codec {
        Codec::Stored => c.data.clone(),
        Codec::Lz4 => {
            // Into a buffer of the announced size: a body that decodes to more is an error.
            let mut out = vec![0; len];
            let n = lz4_flex::block::decompress_into(&c.data, &mut out)
                .map_err(|e| proxy::rejected("Decompressor", e))?;
            out.truncate(n);
            out
        }
        Codec::Zstd => {
            zstd::bulk::decompress(&c.data, len).map_err(|e| proxy::rejected("Decompressor", e))?
        }
    };
    if bytes.len() != len {
        return Err(proxy::rejected(
            "Decompressor",
            format!("expected {len} bytes, got {}", bytes.len()),
        ));
    }
    Ok(bytes)
}

/// Near a sender: passes each message on compressed, as if the original sender had sent it
/// (same sender, same tag).
pub struct Compressor {
    target: String,
    algo: Codec,
}

impl ovid::Agent for Compressor {
    fn on_message(&mut self, ctx: &mut Context, message: Payload) -> Result<(), Error> {
        let compressed = compress(self.algo, message.name(), &message.to_bytes()?)?;
        let from = ctx.sender_id().unwrap_or_else(|| ctx.me().into());
        let tag = ctx.tag();
        ctx.forward(&self.target, from, tag, Payload::new(compressed));
        Ok(())
    }
}

/// Near the agent: restores each message and passes it on with its name, sender and tag.
pub struct Decompressor {
    target: String,
}

impl ovid::Agent for Decompressor {
    fn on_message(&mut self, ctx: &mut Context, message: Payload) -> Result<(), Error> {
        if !message.is::<Compressed>() {
            return Err(proxy::rejected(
                "Decompressor",
                format!("expected a compressed message, got `{}`", message.name()),
            ));
        }
        let c = message.decode::<Compressed>()?;
        let bytes = decompress(&c)?;
        let from = ctx.sender_id().unwrap_or_else(|| ctx.me().into());
        let tag = ctx.tag();
        ctx.forward(
            &self.target,
            from,
            tag,
            Payload::Encoded {
                name: c.name.into(),
                bytes: bytes.into(),
            },
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_codecs_round_trip_and_small_messages_are_stored() {
        let big: Vec<u8> = (0..4000u32).flat_map(|i| (i % 17).to_le_bytes()).collect();
        for algo in [Codec::Lz4, Codec::Zstd] {
            let c = compress(algo, "Put", &big).unwrap();
            assert_eq!(c.codec, algo);
            assert!(c.data.len() < big.len() / 4);
            assert_eq!(decompress(&c).unwrap(), big);
            let tiny = compress(algo, "Get", b"k").unwrap();
            assert_eq!(
                (tiny.codec, decompress(&tiny).unwrap()),
                (Codec::Stored, b"k".to_vec())
            );
        }
    }

    #[test]
    fn corrupt_or_oversized_bodies_are_errors() {
        let big = vec![7u8; 10_000];
        for algo in [Codec::Lz4, Codec::Zstd] {
            let mut c = compress(algo, "Put", &big).unwrap();
            c.len += 1;
            assert!(decompress(&c).is_err());
            c.len = (MAX_LEN + 1) as u32;
            assert!(decompress(&c).is_err());
            let mut c = compress(algo, "Put", &big).unwrap();
            c.data.truncate(c.data.len() / 2);
            assert!(decompress(&c).is_err());
        }
    }
}

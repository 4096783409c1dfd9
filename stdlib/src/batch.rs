//! `batch(size, linger: d)`: an encoder that packs up to `size` messages (or what arrived
//! within `linger`) into one, and a decoder that unpacks them.

use std::time::Duration;

use ovid::{Context, Error, Id, Payload};
use serde::{Deserialize, Serialize};

use crate::expansion::{Args, Expansion, Request, Value, channel_pair, int};
use crate::proxy;
use crate::spec::{Param, ParamKind, Spec, Target};

/// The signature of `batch`.
pub const SPEC: Spec = Spec {
    name: "batch",
    target: Target::Channel,
    params: &[
        Param {
            name: "size",
            kind: ParamKind::Int { min: 1, max: 65536 },
            positional: true,
            required: true,
            doc: "the most messages in one batch",
        },
        Param {
            name: "linger",
            kind: ParamKind::Duration,
            positional: true,
            required: false,
            doc: "how long a partial batch waits (default 1ms)",
        },
    ],
    preconditions: &[],
    summary: "packs messages on a channel into batches",
};

/// `batch` in the registry ([`crate::ALL`]).
pub struct BatchTransformation;

impl crate::transformation::Transformation for BatchTransformation {
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

/// A `BatchEncoder{i}` near each sender and a `BatchDecoder{i}` near the agent.
pub fn expand(req: &Request) -> Expansion {
    let config = Args::from([
        ("size".to_string(), Value::Int(int(req.args, "size", 64))),
        (
            "linger_ms".to_string(),
            Value::Int(int(req.args, "linger", 1)),
        ),
    ]);
    channel_pair(req, "BatchEncoder", "BatchDecoder", config)
}

/// The proxy agents of this transformation, by kind: `BatchEncoder` and `BatchDecoder`.
pub fn proxies(
    _hooks: &std::sync::Arc<dyn crate::proxy::Hooks>,
) -> Vec<(&'static str, ovid::Factory)> {
    vec![
        (
            "BatchEncoder",
            proxy::factory(|args| {
                let size = int(args, "size", 64);
                let linger_ms = int(args, "linger_ms", 1);
                if size < 1 || linger_ms < 0 {
                    return Err(proxy::bad_config(
                        "BatchEncoder",
                        format!("size {size} and linger_ms {linger_ms} must be at least 1 and 0"),
                    ));
                }
                let max_bytes =
                    int(args, "max_bytes", MAX_BYTES as i64).clamp(1, MAX_BYTES as i64) as usize;
                Ok(BatchEncoder {
                    target: proxy::one_target(args, "BatchEncoder")?,
                    size: size as usize,
                    max_bytes,
                    linger: Duration::from_millis(linger_ms as u64),
                    pending: Vec::new(),
                    pending_bytes: 0,
                })
            }),
        ),
        (
            "BatchDecoder",
            proxy::factory(|args| {
                Ok(BatchDecoder {
                    target: proxy::one_target(args, "BatchDecoder")?,
                })
            }),
        ),
    ]
}

/// One message inside a [`Batch`]: what its envelope said, and its encoding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batched {
    /// The message's type name.
    pub name: String,
    /// Its original sender (where replies go).
    pub from: String,
    /// Its correlation tag.
    pub tag: u64,
    /// Its postcard encoding.
    #[serde(with = "crate::proxy::byte_buf")]
    pub bytes: Vec<u8>,
}

/// What a batch encoder sends its decoder: several messages in one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ovid::Message)]
#[message(name = "ovid.batch.Batch")]
pub struct Batch {
    /// The messages, in the order they arrived.
    pub items: Vec<Batched>,
}

/// The timer that flushes a partial batch.
const LINGER: &str = "linger";

/// A batch leaves once its messages add up to this many bytes (1 MiB, or `max_bytes` in the
/// configuration if smaller), whatever `size` says: boxes refuse frames over 16 MiB.
pub const MAX_BYTES: usize = 1 << 20;

/// Near a sender: packs up to `size` messages into one [`Batch`], sent to its decoder when full
/// (or [`MAX_BYTES`] big) or when `linger` has passed since the first message of the batch.
pub struct BatchEncoder {
    target: String,
    size: usize,
    max_bytes: usize,
    linger: Duration,
    pending: Vec<Batched>,
    pending_bytes: usize,
}

impl BatchEncoder {
    fn flush(&mut self, ctx: &mut Context) {
        if self.pending.is_empty() {
            return;
        }
        let items = std::mem::take(&mut self.pending);
        self.pending_bytes = 0;
        // Sent as if from the (usually only) original sender, so the decoder's box learns
        // where that sender runs and the agent's replies need no question to the controller.
        let from: Id = items[0].from.as_str().into();
        ctx.forward(&self.target, from, 0, Payload::new(Batch { items }));
    }
}

impl ovid::Agent for BatchEncoder {
    fn on_message(&mut self, ctx: &mut Context, message: Payload) -> Result<(), Error> {
        let bytes = message.to_bytes()?;
        self.pending_bytes += bytes.len();
        self.pending.push(Batched {
            name: message.name().to_string(),
            from: ctx.sender().to_string(),
            tag: ctx.tag(),
            bytes: bytes.to_vec(),
        });
        if self.pending.len() >= self.size || self.pending_bytes >= self.max_bytes {
            if self.pending.len() > 1 {
                ctx.cancel_timer(LINGER);
            }
            self.flush(ctx);
        } else if self.pending.len() == 1 {
            ctx.set_timer(LINGER, self.linger);
        }
        Ok(())
    }

    fn on_timer(&mut self, ctx: &mut Context, name: &str) {
        if name == LINGER {
            self.flush(ctx);
        }
    }
}

/// Near the agent: unpacks each [`Batch`] and passes every message on in order, as if its
/// original sender had sent it, with its tag.
pub struct BatchDecoder {
    target: String,
}

impl ovid::Agent for BatchDecoder {
    fn on_message(&mut self, ctx: &mut Context, message: Payload) -> Result<(), Error> {
        if !message.is::<Batch>() {
            return Err(proxy::rejected(
                "BatchDecoder",
                format!("expected a batch, got `{}`", message.name()),
            ));
        }
        let batch = message.decode::<Batch>()?;
        for item in batch.items {
            let payload = Payload::Encoded {
                name: item.name.into(),
                bytes: item.bytes.into(),
            };
            ctx.forward(&self.target, item.from.into(), item.tag, payload);
        }
        Ok(())
    }
}

//! Messages and the envelope that carries them.
//!
//! A message is any serde type with a stable name (`#[derive(ovid::Message)]` gives one).
//! Inside one box a message travels as a boxed Rust value: nobody serializes it. Only when it
//! leaves the box does the transport encode it with postcard, and on the other side it arrives
//! as bytes tagged with the type name. Both shapes are a [`Payload`]; an agent asks the payload
//! for the type it expects with [`Payload::decode`], which is a downcast in the first case and a
//! postcard decode in the second. So an agent never needs to know where a message came from,
//! and a box needs no registry of message types.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::Error;

/// An agent identifier, path style (`KVS`, `KVS/Shard1`); cheap to clone.
pub type Id = Arc<str>;

/// A message an agent can send or receive.
///
/// `NAME` is how the message is recognised when it arrives as bytes from another box, so it
/// must be the same in every box of a system; the derive uses the type's own name.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an Ovid message",
    label = "not a message",
    note = "derive it: `#[derive(serde::Serialize, serde::Deserialize, ovid::Message)]`"
)]
pub trait Message: Serialize + DeserializeOwned + Send + 'static {
    /// The stable name of the message type, e.g. `"Put"`.
    const NAME: &'static str;
}

/// A message with its type erased, as it travels inside a box.
///
/// Implemented for every [`Message`]; it keeps what is needed to encode the value later, should
/// it have to cross to another box.
pub trait AnyMessage: Send {
    /// The message's [`Message::NAME`].
    fn name(&self) -> &'static str;
    /// Appends the postcard encoding of the message to `out`.
    fn encode_into(&self, out: &mut BytesMut) -> Result<(), Error>;
    /// Turns the box into `Box<dyn Any>` so that it can be downcast to the concrete type.
    fn into_any(self: Box<Self>) -> Box<dyn Any + Send>;
    /// The message as `&dyn Any`, to look at it without taking it.
    fn as_any(&self) -> &dyn Any;
}

impl<M: Message> AnyMessage for M {
    fn name(&self) -> &'static str {
        M::NAME
    }

    fn encode_into(&self, out: &mut BytesMut) -> Result<(), Error> {
        // postcard writes into anything that is `Extend<u8>`; `BytesMut` is. We move the buffer
        // in and back out so no bytes are copied.
        let buf = std::mem::take(out);
        *out = postcard::to_extend(self, buf).map_err(|e| Error::Encode {
            name: M::NAME.into(),
            source: e,
        })?;
        Ok(())
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any + Send> {
        self
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// The body of an envelope: a Rust value (same box) or its encoding (from another box).
pub enum Payload {
    /// A value sent by an agent of this box; never serialized.
    Local(Box<dyn AnyMessage>),
    /// A value that arrived from another box: its type name and postcard bytes.
    Encoded {
        /// The [`Message::NAME`] of the encoded value.
        name: Id,
        /// The postcard encoding.
        bytes: Bytes,
    },
}

impl Payload {
    /// Wraps a message value.
    pub fn new<M: Message>(message: M) -> Self {
        Payload::Local(Box::new(message))
    }

    /// The type name of the message inside.
    pub fn name(&self) -> &str {
        match self {
            Payload::Local(m) => m.name(),
            Payload::Encoded { name, .. } => name,
        }
    }

    /// Whether the message inside is an `M`.
    pub fn is<M: Message>(&self) -> bool {
        self.name() == M::NAME
    }

    /// Takes the message out as an `M`: a downcast, or a postcard decode if it came from afar.
    pub fn decode<M: Message>(self) -> Result<M, Error> {
        match self {
            Payload::Local(m) => {
                let found = m.name();
                if found != M::NAME {
                    return Err(Error::WrongType {
                        expected: M::NAME,
                        found: found.to_string(),
                    });
                }
                if (*m).as_any().is::<M>() {
                    return Ok(*m.into_any().downcast::<M>().expect("checked above"));
                }
                // Same name, another Rust type (an `impl rust` crate declares its own copy of a
                // message): the messages are the same if their encodings are.
                let mut bytes = BytesMut::new();
                m.encode_into(&mut bytes)?;
                postcard::from_bytes(&bytes).map_err(|e| Error::Decode {
                    name: M::NAME.into(),
                    source: e,
                })
            }
            Payload::Encoded { name, bytes } => {
                if &*name != M::NAME {
                    return Err(Error::WrongType {
                        expected: M::NAME,
                        found: name.to_string(),
                    });
                }
                postcard::from_bytes(&bytes).map_err(|e| Error::Decode {
                    name: M::NAME.into(),
                    source: e,
                })
            }
        }
    }

    /// Looks at the message as an `M` without taking it: borrowed if it is a value of this box,
    /// decoded if it came from another box; `None` if it is not an `M` (or does not decode).
    pub fn peek<M: Message + Clone>(&self) -> Option<std::borrow::Cow<'_, M>> {
        match self {
            Payload::Local(m) if m.name() == M::NAME => match m.as_any().downcast_ref::<M>() {
                Some(v) => Some(std::borrow::Cow::Borrowed(v)),
                None => {
                    let mut bytes = BytesMut::new();
                    m.encode_into(&mut bytes).ok()?;
                    postcard::from_bytes(&bytes)
                        .ok()
                        .map(std::borrow::Cow::Owned)
                }
            },
            Payload::Local(_) => None,
            Payload::Encoded { name, bytes } if &**name == M::NAME => postcard::from_bytes(bytes)
                .ok()
                .map(std::borrow::Cow::Owned),
            Payload::Encoded { .. } => None,
        }
    }

    /// The postcard encoding of the message, as a new buffer (shared if already encoded).
    pub fn to_bytes(&self) -> Result<Bytes, Error> {
        match self {
            Payload::Local(m) => {
                let mut out = BytesMut::new();
                m.encode_into(&mut out)?;
                Ok(out.freeze())
            }
            Payload::Encoded { bytes, .. } => Ok(bytes.clone()),
        }
    }

    /// Appends the postcard encoding of the message to `out` (copies bytes if already encoded).
    pub fn encode_into(&self, out: &mut BytesMut) -> Result<(), Error> {
        match self {
            Payload::Local(m) => m.encode_into(out),
            Payload::Encoded { bytes, .. } => {
                out.extend_from_slice(bytes);
                Ok(())
            }
        }
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Payload::Local(m) => write!(f, "Payload::Local({})", m.name()),
            Payload::Encoded { name, bytes } => {
                write!(f, "Payload::Encoded({name}, {} bytes)", bytes.len())
            }
        }
    }
}

/// A message on its way: who sent it (a physical identifier, where replies go), to which
/// physical agent, and the payload.
#[derive(Debug)]
pub struct Envelope {
    /// The physical identifier of the sender.
    pub from: Id,
    /// The physical identifier of the receiver.
    pub to: Id,
    /// The message.
    pub payload: Payload,
    /// A correlation tag (0: none). Whatever an agent sends while handling a message carries
    /// that message's tag, so a proxy that tags what it forwards recognises the replies
    /// (replication matches replies to log entries this way).
    pub tag: u64,
}

impl Envelope {
    /// An envelope for a message value.
    pub fn new<M: Message>(from: impl Into<Id>, to: impl Into<Id>, message: M) -> Self {
        Envelope {
            from: from.into(),
            to: to.into(),
            payload: Payload::new(message),
            tag: 0,
        }
    }
}

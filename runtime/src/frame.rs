//! Frames: what boxes write to each other on a TCP connection.
//!
//! Each frame is a 4-byte big-endian length followed by that many bytes (exactly what
//! `tokio_util::codec::LengthDelimitedCodec` reads), and the bytes are a postcard-encoded
//! [`Header`]. A `Data` header is followed, in the same frame, by the postcard encoding of the
//! message: the receiver slices it off without copying and hands it to the agent as
//! [`Payload::Encoded`](crate::Payload::Encoded).
//!
//! A connection is opened by the box that has data to send (the dialer). It starts with
//! `Hello`; the acceptor answers `Welcome`, saying how much of the dialer's stream it already
//! delivered. Then `Data` and `Ack` flow both ways: each box sends its own stream, and
//! acknowledges the other's, on the connection, so a request and its reply share one TCP
//! connection.

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::message::Envelope;

/// The largest frame a box accepts (a length prefix above this is a bad frame).
pub const MAX_FRAME: usize = 16 * 1024 * 1024;

/// The header of a frame; borrowed from the frame's bytes when decoded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Header<'a> {
    /// First frame from the dialer: who it is.
    Hello {
        /// The dialer's box name.
        name: &'a str,
        /// The address the dialer listens on (its key in BRTs).
        listen: &'a str,
        /// The dialer's session: random per box start, so a restarted box is a new stream.
        session: u64,
        /// The acceptor's session the dialer last heard from (0: none)...
        peer_session: u64,
        /// ...and the highest `seq` of it the dialer delivered: where the acceptor's stream
        /// resumes if it sends on this connection.
        peer_delivered: u64,
    },
    /// The acceptor's answer to `Hello`.
    Welcome {
        /// The acceptor's box name.
        name: &'a str,
        /// The acceptor's session.
        session: u64,
        /// The highest sequence number of the dialer's session already delivered here.
        delivered: u64,
    },
    /// One message; its payload follows the header in the same frame.
    Data {
        /// Sequence number in the dialer's session, from 1, without gaps.
        seq: u64,
        /// Physical identifier of the sender.
        from: &'a str,
        /// Physical identifier of the receiver.
        to: &'a str,
        /// Message type name.
        name: &'a str,
        /// The envelope's correlation tag.
        tag: u64,
    },
    /// Cumulative acknowledgement: every `seq <= upto` has been delivered.
    Ack {
        /// The highest delivered sequence number.
        upto: u64,
    },
}

/// Appends one frame (length prefix, header, and the payload if `envelope` is given) to `buf`.
pub fn encode(
    buf: &mut BytesMut,
    header: &Header<'_>,
    envelope: Option<&Envelope>,
) -> Result<(), Error> {
    let start = buf.len();
    buf.put_u32(0); // the length, patched below
    let tmp = std::mem::take(buf);
    *buf = postcard::to_extend(header, tmp).map_err(|e| Error::Encode {
        name: "frame header".into(),
        source: e,
    })?;
    if let Some(env) = envelope
        && let Err(e) = env.payload.encode_into(buf)
    {
        buf.truncate(start);
        return Err(e);
    }
    let len = buf.len() - start - 4;
    if len > MAX_FRAME {
        buf.truncate(start);
        return Err(Error::BadFrame(format!(
            "frame of {len} bytes is larger than {MAX_FRAME}"
        )));
    }
    buf[start..start + 4].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(())
}

/// Splits a frame body (without its length prefix) into its header and the payload bytes.
pub fn decode(frame: &Bytes) -> Result<(Header<'_>, Bytes), Error> {
    let (header, rest) = postcard::take_from_bytes::<Header<'_>>(frame)
        .map_err(|e| Error::BadFrame(e.to_string()))?;
    let offset = frame.len() - rest.len();
    Ok((header, frame.slice(offset..)))
}

/// The length-delimited codec matching [`encode`], with [`MAX_FRAME`] as its limit.
pub fn codec() -> tokio_util::codec::LengthDelimitedCodec {
    tokio_util::codec::LengthDelimitedCodec::builder()
        .max_frame_length(MAX_FRAME)
        .new_codec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Ping(u32);
    impl crate::Message for Ping {
        const NAME: &'static str = "Ping";
    }

    #[test]
    fn data_frame_round_trips_and_payload_decodes() {
        let mut buf = BytesMut::new();
        let env = Envelope::new("a", "b", Ping(7));
        encode(
            &mut buf,
            &Header::Data {
                seq: 3,
                from: "a",
                to: "b",
                name: "Ping",
                tag: 9,
            },
            Some(&env),
        )
        .unwrap();
        let len = u32::from_be_bytes(buf[..4].try_into().unwrap()) as usize;
        assert_eq!(len, buf.len() - 4);
        let body = buf.split_off(4).freeze();
        let (h, payload) = decode(&body).unwrap();
        assert_eq!(
            h,
            Header::Data {
                seq: 3,
                from: "a",
                to: "b",
                name: "Ping",
                tag: 9
            }
        );
        let p = crate::Payload::Encoded {
            name: "Ping".into(),
            bytes: payload,
        };
        assert_eq!(p.decode::<Ping>().unwrap(), Ping(7));
    }

    #[test]
    fn garbage_is_a_bad_frame() {
        assert!(matches!(
            decode(&Bytes::from_static(&[0xff, 0xff, 0xff])),
            Err(Error::BadFrame(_))
        ));
    }
}

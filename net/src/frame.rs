//! The TCP wire format: `[u32 LE length][postcard Frame]`.
//!
//! Every TCP connection starts with a [`Frame::Hello`] from the dialer, answered by the
//! acceptor's own `Hello`; after that the dialer sends [`Frame::Data`] frames and finally,
//! when it closes gracefully, a [`Frame::Bye`]. The body is a postcard-encoded enum; the
//! length prefix counts the body only. A body longer than the configured maximum, or one that
//! does not decode to exactly one frame, is a protocol error for that connection.
//!
//! Decoding is zero-copy: a `Data` payload is a slice of the connection's read buffer.

use agentos_abi::NodeId;
use bytes::{Buf, Bytes, BytesMut};
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use std::fmt;

/// The wire protocol version carried in [`Frame::Hello`]; a peer speaking another version is
/// refused at the handshake.
pub const WIRE_VERSION: u16 = 1;

/// Bytes in the length prefix that precedes every frame body.
pub const LEN_PREFIX: usize = 4;

/// The default maximum frame body (16 MiB).
pub const DEFAULT_MAX_FRAME: usize = 16 << 20;

/// Postcard's index of the `Data` variant (the second variant of [`Frame`]).
const DATA_TAG: u8 = 1;

/// Bytes the read buffer grows by when it needs room for more input.
const READ_CHUNK: usize = 64 * 1024;

/// One frame on a TCP connection between two nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// The first frame in each direction: who is speaking, and which wire version.
    Hello {
        /// The sending node.
        node: NodeId,
        /// The sender's [`WIRE_VERSION`].
        version: u16,
    },
    /// An opaque payload (a sealed envelope) for the receiving node's ingress.
    Data(Bytes),
    /// The sender is closing gracefully; nothing follows.
    Bye,
}

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The length prefix announces a body larger than the connection's maximum.
    #[error("frame of {len} bytes exceeds the maximum of {max}")]
    Oversize {
        /// The announced body length.
        len: usize,
        /// The configured maximum.
        max: usize,
    },
    /// The body is not a postcard-encoded frame.
    #[error("malformed frame: {0}")]
    Malformed(#[source] postcard::Error),
    /// The body decoded to a frame but bytes were left over.
    #[error("malformed frame: {0} trailing bytes")]
    Trailing(usize),
}

/// The serde shape of [`Frame`], borrowing from the buffer it is decoded from.
#[derive(Serialize, Deserialize)]
enum WireFrame<'a> {
    Hello { node: &'a str, version: u16 },
    Data(#[serde(borrow)] RawBytes<'a>),
    Bye,
}

/// A byte string serialized with `serialize_bytes` (postcard: varint length + bytes) and
/// deserialized by borrowing.
struct RawBytes<'a>(&'a [u8]);

impl Serialize for RawBytes<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for RawBytes<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct BorrowedBytes;
        impl<'de> Visitor<'de> for BorrowedBytes {
            type Value = &'de [u8];
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a borrowed byte string")
            }
            fn visit_borrowed_bytes<E: de::Error>(self, v: &'de [u8]) -> Result<Self::Value, E> {
                Ok(v)
            }
        }
        d.deserialize_bytes(BorrowedBytes).map(RawBytes)
    }
}

/// Length of `v` as a postcard varint.
fn varint_len(v: usize) -> usize {
    let bits = usize::BITS - (v | 1).leading_zeros();
    bits.div_ceil(7) as usize
}

fn put_varint(out: &mut Vec<u8>, mut v: usize) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// The body length of a `Data` frame carrying `payload_len` bytes.
pub fn data_frame_len(payload_len: usize) -> usize {
    1 + varint_len(payload_len) + payload_len
}

/// Append the length-prefixed encoding of `frame` to `out`.
///
/// Fails only if the body would not fit the `u32` length prefix.
pub fn encode_frame(frame: &Frame, out: &mut Vec<u8>) -> Result<(), FrameError> {
    let wire = match frame {
        Frame::Data(payload) => {
            if data_frame_len(payload.len()) > u32::MAX as usize {
                return Err(FrameError::Oversize {
                    len: data_frame_len(payload.len()),
                    max: u32::MAX as usize,
                });
            }
            encode_data(payload, out);
            return Ok(());
        }
        Frame::Hello { node, version } => WireFrame::Hello {
            node: &node.0,
            version: *version,
        },
        Frame::Bye => WireFrame::Bye,
    };
    let body = postcard::to_allocvec(&wire).map_err(FrameError::Malformed)?;
    let len = u32::try_from(body.len()).map_err(|_| FrameError::Oversize {
        len: body.len(),
        max: u32::MAX as usize,
    })?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&body);
    Ok(())
}

/// Append a length-prefixed `Data` frame (the hot path: no serde, one reserve, one copy).
/// The caller guarantees the body fits in a `u32`.
pub(crate) fn encode_data(payload: &[u8], out: &mut Vec<u8>) {
    let body_len = data_frame_len(payload.len());
    out.reserve(LEN_PREFIX + body_len);
    out.extend_from_slice(&(body_len as u32).to_le_bytes());
    out.push(DATA_TAG);
    put_varint(out, payload.len());
    out.extend_from_slice(payload);
}

/// Decode one frame body (without its length prefix). A `Data` payload shares `body`'s memory.
pub fn decode_frame(body: Bytes) -> Result<Frame, FrameError> {
    let (wire, rest) =
        postcard::take_from_bytes::<WireFrame<'_>>(&body).map_err(FrameError::Malformed)?;
    if !rest.is_empty() {
        return Err(FrameError::Trailing(rest.len()));
    }
    Ok(match wire {
        WireFrame::Hello { node, version } => Frame::Hello {
            node: NodeId::from(node),
            version,
        },
        WireFrame::Data(RawBytes(data)) => Frame::Data(body.slice_ref(data)),
        WireFrame::Bye => Frame::Bye,
    })
}

/// Incremental frame reader over a connection's read buffer.
pub(crate) struct FrameReader {
    buf: BytesMut,
    max_frame: usize,
}

impl FrameReader {
    pub(crate) fn new(max_frame: usize) -> Self {
        FrameReader {
            buf: BytesMut::with_capacity(READ_CHUNK),
            max_frame,
        }
    }

    /// The next complete frame in the buffer, or `None` when more input is needed (in which
    /// case the buffer has room reserved for it).
    pub(crate) fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        if self.buf.len() < LEN_PREFIX {
            self.reserve(LEN_PREFIX);
            return Ok(None);
        }
        let mut prefix = [0u8; LEN_PREFIX];
        prefix.copy_from_slice(&self.buf[..LEN_PREFIX]);
        let len = u32::from_le_bytes(prefix) as usize;
        if len > self.max_frame {
            return Err(FrameError::Oversize {
                len,
                max: self.max_frame,
            });
        }
        if self.buf.len() < LEN_PREFIX + len {
            self.reserve(LEN_PREFIX + len);
            return Ok(None);
        }
        self.buf.advance(LEN_PREFIX);
        let body = self.buf.split_to(len).freeze();
        decode_frame(body).map(Some)
    }

    /// Make room so the buffer can hold `want` bytes in total, reading at least a chunk.
    fn reserve(&mut self, want: usize) {
        let need = want.saturating_sub(self.buf.len()).max(READ_CHUNK);
        if self.buf.capacity() - self.buf.len() < need {
            self.buf.reserve(need);
        }
    }

    /// The buffer to read more input into.
    pub(crate) fn buffer(&mut self) -> &mut BytesMut {
        &mut self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body_of(encoded: &[u8]) -> Bytes {
        Bytes::copy_from_slice(&encoded[LEN_PREFIX..])
    }

    #[test]
    fn data_fast_path_matches_postcard() {
        for len in [0usize, 1, 127, 128, 300, 16_384, 70_000] {
            let payload = vec![7u8; len];
            let mut fast = Vec::new();
            encode_data(&payload, &mut fast);
            let body = postcard::to_allocvec(&WireFrame::Data(RawBytes(&payload))).unwrap();
            assert_eq!(&fast[LEN_PREFIX..], &body[..], "len {len}");
            assert_eq!(
                u32::from_le_bytes(fast[..4].try_into().unwrap()) as usize,
                body.len()
            );
            assert_eq!(data_frame_len(len), body.len());
        }
    }

    #[test]
    fn frames_round_trip() {
        let frames = [
            Frame::Hello {
                node: NodeId::from("node-a"),
                version: WIRE_VERSION,
            },
            Frame::Data(Bytes::from_static(b"sealed envelope")),
            Frame::Data(Bytes::new()),
            Frame::Bye,
        ];
        for f in frames {
            let mut out = Vec::new();
            encode_frame(&f, &mut out).unwrap();
            assert_eq!(decode_frame(body_of(&out)).unwrap(), f);
        }
    }

    #[test]
    fn reader_splits_a_stream_and_rejects_oversize_and_garbage() {
        let mut stream = Vec::new();
        for i in 0..100u32 {
            encode_frame(
                &Frame::Data(Bytes::from(i.to_le_bytes().to_vec())),
                &mut stream,
            )
            .unwrap();
        }
        let mut r = FrameReader::new(64);
        let mut got = 0u32;
        // Feed the stream in 7-byte pieces.
        for piece in stream.chunks(7) {
            r.buffer().extend_from_slice(piece);
            while let Some(f) = r.next_frame().unwrap() {
                assert_eq!(f, Frame::Data(Bytes::from(got.to_le_bytes().to_vec())));
                got += 1;
            }
        }
        assert_eq!(got, 100);

        let mut r = FrameReader::new(64);
        r.buffer().extend_from_slice(&65u32.to_le_bytes());
        assert!(matches!(
            r.next_frame(),
            Err(FrameError::Oversize { len: 65, max: 64 })
        ));

        let mut r = FrameReader::new(64);
        r.buffer().extend_from_slice(&3u32.to_le_bytes());
        r.buffer().extend_from_slice(&[0xff, 0xff, 0xff]);
        assert!(matches!(r.next_frame(), Err(FrameError::Malformed(_))));

        let mut r = FrameReader::new(64);
        r.buffer().extend_from_slice(&2u32.to_le_bytes());
        r.buffer().extend_from_slice(&[2, 0]); // Bye + a stray byte
        assert!(matches!(r.next_frame(), Err(FrameError::Trailing(1))));

        let mut r = FrameReader::new(64);
        r.buffer().extend_from_slice(&0u32.to_le_bytes());
        assert!(matches!(r.next_frame(), Err(FrameError::Malformed(_))));
    }

    #[test]
    fn decoded_data_shares_the_read_buffer() {
        let mut out = Vec::new();
        encode_frame(&Frame::Data(Bytes::from_static(b"abcdef")), &mut out).unwrap();
        let body = body_of(&out);
        let base = body.as_ptr() as usize;
        match decode_frame(body.clone()).unwrap() {
            Frame::Data(d) => {
                let p = d.as_ptr() as usize;
                assert!(p > base && p < base + body.len());
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

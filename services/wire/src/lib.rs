//! tern-wire: the client protocol's bytes, without I/O.
//!
//! - [`LengthPrefixed`]: TCP framing, a 4-byte big-endian length before each
//!   frame; a length over the limit is rejected before anything is buffered.
//!   (WebSocket needs no framing: one binary message is one frame.)
//! - [`decode_client`] / [`decode_server`]: a frame's bytes to a protobuf
//!   frame, rejecting frames with no recognised kind.
//! - [`negotiate`], [`pack_batch`], [`unpack_batch`]: batches of messages
//!   compressed with the codec agreed at login, only when it pays.
//!
//! The gateway and the client library both use this crate, so both ends of
//! a connection agree byte for byte.

use std::io::Read;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use prost::Message as _;
use tern_proto::client::{
    ClientFrame, Codec, Message, MessageBatch, ServerFrame, client_frame, server_frame,
};

/// Default largest frame, in bytes, either way.
pub const DEFAULT_MAX_FRAME: usize = 1 << 20;
/// Payloads smaller than this are sent plain: compressing them costs more than it saves.
pub const DEFAULT_COMPRESS_MIN: usize = 512;
/// Length prefix size on TCP.
pub const PREFIX_LEN: usize = 4;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("frame of {len} bytes is over the limit of {max} bytes")]
    FrameTooLarge { len: usize, max: usize },
    #[error("frame is not valid protobuf: {0}")]
    Malformed(String),
    #[error("frame has no recognised kind")]
    EmptyFrame,
    #[error("payload decompresses to more than {max} bytes")]
    PayloadTooLarge { max: usize },
    #[error("payload is not valid {codec}: {reason}")]
    BadPayload { codec: &'static str, reason: String },
    #[error("unknown codec {0}")]
    UnknownCodec(i32),
}

/// Splits a TCP byte stream into frames.
#[derive(Debug, Clone)]
pub struct LengthPrefixed {
    pub max_frame: usize,
}

impl Default for LengthPrefixed {
    fn default() -> Self {
        LengthPrefixed {
            max_frame: DEFAULT_MAX_FRAME,
        }
    }
}

impl LengthPrefixed {
    pub fn new(max_frame: usize) -> Self {
        LengthPrefixed { max_frame }
    }

    /// Takes the next whole frame off the front of `src`, if it is all there.
    /// Errors as soon as the prefix announces a frame over the limit, so a
    /// hostile length never makes the reader buffer it.
    pub fn decode(&self, src: &mut BytesMut) -> Result<Option<Bytes>, WireError> {
        let Some(prefix) = src.first_chunk::<PREFIX_LEN>() else {
            return Ok(None);
        };
        let len = u32::from_be_bytes(*prefix) as usize;
        if len > self.max_frame {
            return Err(WireError::FrameTooLarge {
                len,
                max: self.max_frame,
            });
        }
        if src.len() < PREFIX_LEN + len {
            src.reserve(PREFIX_LEN + len - src.len());
            return Ok(None);
        }
        src.advance(PREFIX_LEN);
        Ok(Some(src.split_to(len).freeze()))
    }

    /// Appends `frame` with its prefix to `dst`.
    pub fn encode(&self, frame: &[u8], dst: &mut BytesMut) -> Result<(), WireError> {
        if frame.len() > self.max_frame {
            return Err(WireError::FrameTooLarge {
                len: frame.len(),
                max: self.max_frame,
            });
        }
        dst.reserve(PREFIX_LEN + frame.len());
        dst.put_u32(frame.len() as u32);
        dst.put_slice(frame);
        Ok(())
    }
}

/// Decodes a frame sent by a client.
pub fn decode_client(bytes: &[u8]) -> Result<client_frame::Kind, WireError> {
    let frame = ClientFrame::decode(bytes).map_err(|e| WireError::Malformed(e.to_string()))?;
    frame.kind.ok_or(WireError::EmptyFrame)
}

/// Decodes a frame sent by a gateway.
pub fn decode_server(bytes: &[u8]) -> Result<server_frame::Kind, WireError> {
    let frame = ServerFrame::decode(bytes).map_err(|e| WireError::Malformed(e.to_string()))?;
    frame.kind.ok_or(WireError::EmptyFrame)
}

pub fn encode_client(kind: client_frame::Kind) -> Bytes {
    ClientFrame { kind: Some(kind) }.encode_to_vec().into()
}

pub fn encode_server(kind: server_frame::Kind) -> Bytes {
    ServerFrame { kind: Some(kind) }.encode_to_vec().into()
}

/// The codec to use with a client: the first of its accepted codecs (in its
/// order of preference) that the server supports; none if nothing matches.
pub fn negotiate(accepted: &[i32]) -> Codec {
    accepted
        .iter()
        .filter_map(|c| Codec::try_from(*c).ok())
        .find(|c| matches!(c, Codec::Zstd | Codec::Deflate))
        .unwrap_or(Codec::None)
}

/// Compresses `data` with `codec` if it is at least `min_size` bytes and
/// compression makes it smaller; returns the codec actually used.
pub fn compress(codec: Codec, data: &[u8], min_size: usize) -> (Codec, Bytes) {
    if data.len() < min_size || codec == Codec::None {
        return (Codec::None, Bytes::copy_from_slice(data));
    }
    let packed = match codec {
        Codec::Zstd => zstd::bulk::compress(data, 3).ok(),
        Codec::Deflate => {
            let mut enc = flate2::write::DeflateEncoder::new(
                Vec::with_capacity(data.len() / 2),
                flate2::Compression::fast(),
            );
            std::io::Write::write_all(&mut enc, data)
                .ok()
                .and_then(|_| enc.finish().ok())
        }
        Codec::None => None,
    };
    match packed {
        Some(p) if p.len() < data.len() => (codec, p.into()),
        _ => (Codec::None, Bytes::copy_from_slice(data)),
    }
}

/// Undoes [`compress`], refusing output over `max` bytes (a small frame must
/// not inflate into gigabytes).
pub fn decompress(codec: i32, data: &[u8], max: usize) -> Result<Bytes, WireError> {
    match Codec::try_from(codec).map_err(|_| WireError::UnknownCodec(codec))? {
        // Plain payloads obey the same limit, so `max` bounds the output whatever the codec.
        Codec::None if data.len() > max => Err(WireError::PayloadTooLarge { max }),
        Codec::None => Ok(Bytes::copy_from_slice(data)),
        Codec::Zstd => {
            let mut out = Vec::new();
            let dec =
                zstd::stream::read::Decoder::new(data).map_err(|e| WireError::BadPayload {
                    codec: "zstd",
                    reason: e.to_string(),
                })?;
            read_bounded(dec, &mut out, max, "zstd")?;
            Ok(out.into())
        }
        Codec::Deflate => {
            let mut out = Vec::new();
            read_bounded(
                flate2::read::DeflateDecoder::new(data),
                &mut out,
                max,
                "deflate",
            )?;
            Ok(out.into())
        }
    }
}

fn read_bounded(
    r: impl Read,
    out: &mut Vec<u8>,
    max: usize,
    codec: &'static str,
) -> Result<(), WireError> {
    // Read one byte past `max` to tell "exactly max" from "over max"; saturate
    // so that `max == usize::MAX` (no limit) does not overflow into `take(0)`.
    r.take((max as u64).saturating_add(1))
        .read_to_end(out)
        .map_err(|e| WireError::BadPayload {
            codec,
            reason: e.to_string(),
        })?;
    if out.len() > max {
        return Err(WireError::PayloadTooLarge { max });
    }
    Ok(())
}

/// Encodes messages as one batch payload, compressed when it pays.
pub fn pack_batch(messages: Vec<Message>, codec: Codec, min_size: usize) -> (Codec, Bytes) {
    let raw = MessageBatch { messages }.encode_to_vec();
    compress(codec, &raw, min_size)
}

/// Decodes a batch payload (at most `max` bytes once decompressed).
pub fn unpack_batch(codec: i32, payload: &[u8], max: usize) -> Result<Vec<Message>, WireError> {
    let raw = decompress(codec, payload, max)?;
    MessageBatch::decode(raw)
        .map(|b| b.messages)
        .map_err(|e| WireError::Malformed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_follows_client_preference() {
        assert_eq!(
            negotiate(&[Codec::Deflate as i32, Codec::Zstd as i32]),
            Codec::Deflate
        );
        assert_eq!(negotiate(&[99, Codec::Zstd as i32]), Codec::Zstd);
        assert_eq!(negotiate(&[]), Codec::None);
    }

    #[test]
    fn tiny_payloads_stay_plain() {
        let (c, b) = compress(Codec::Zstd, b"hi", DEFAULT_COMPRESS_MIN);
        assert_eq!(c, Codec::None);
        assert_eq!(&b[..], b"hi");
    }
}

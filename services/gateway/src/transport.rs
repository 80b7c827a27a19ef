//! TCP and WebSocket, reduced to the same thing: a stream of frames in and a
//! sink of frames out.

use std::pin::Pin;

use bytes::{Bytes, BytesMut};
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_util::codec::{Decoder, Encoder, FramedRead, FramedWrite};

/// Initial read and write buffer of a TCP connection, bytes.
const IDLE_BUFFER: usize = 512;
/// Frames written in one go before the writer flushes, bytes.
const WRITE_BATCH: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Tcp,
    WebSocket,
}

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("frame of {len} bytes is over the limit of {max} bytes")]
    FrameTooLarge { len: usize, max: usize },
    #[error("{0}")]
    Protocol(String),
    #[error("connection error: {0}")]
    Io(String),
}

pub type FrameReader = Pin<Box<dyn Stream<Item = Result<Bytes, TransportError>> + Send>>;
pub type FrameWriter = Pin<Box<dyn Sink<Bytes, Error = TransportError> + Send>>;

/// tokio-util codec around the sans-I/O length prefix of `tern-wire`.
pub struct LengthCodec(pub tern_wire::LengthPrefixed);

impl Decoder for LengthCodec {
    type Item = Bytes;
    type Error = TransportError;
    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, TransportError> {
        self.0.decode(src).map_err(|e| match e {
            tern_wire::WireError::FrameTooLarge { len, max } => {
                TransportError::FrameTooLarge { len, max }
            }
            other => TransportError::Protocol(other.to_string()),
        })
    }
}

impl Encoder<Bytes> for LengthCodec {
    type Error = TransportError;
    fn encode(&mut self, item: Bytes, dst: &mut BytesMut) -> Result<(), TransportError> {
        self.0
            .encode(&item, dst)
            .map_err(|e| TransportError::Protocol(e.to_string()))
    }
}

impl From<std::io::Error> for TransportError {
    fn from(e: std::io::Error) -> Self {
        TransportError::Io(e.to_string())
    }
}

/// Completes the handshake (for WebSocket) and splits the connection.
pub async fn open(
    kind: Kind,
    stream: TcpStream,
    max_frame: usize,
) -> Result<(FrameReader, FrameWriter), TransportError> {
    match kind {
        Kind::Tcp => {
            let (r, w) = stream.into_split();
            let codec = || LengthCodec(tern_wire::LengthPrefixed::new(max_frame));
            // Small initial buffers: most connections are idle most of the
            // time, and buffers grow to fit what actually arrives.
            let reader = FramedRead::with_capacity(r, codec(), IDLE_BUFFER);
            let mut writer = FramedWrite::with_capacity(w, codec(), IDLE_BUFFER);
            writer.set_backpressure_boundary(WRITE_BATCH);
            Ok((Box::pin(reader), Box::pin(writer)))
        }
        Kind::WebSocket => {
            let config = WebSocketConfig::default()
                .max_message_size(Some(max_frame))
                .max_frame_size(Some(max_frame));
            let ws = tokio_tungstenite::accept_async_with_config(stream, Some(config))
                .await
                .map_err(|e| {
                    TransportError::Protocol(format!("WebSocket handshake failed: {e}"))
                })?;
            let (sink, stream) = ws.split();
            let reader = stream.filter_map(move |m| async move {
                match m {
                    Ok(Message::Binary(b)) => Some(Ok(b)),
                    Ok(Message::Text(_)) => Some(Err(TransportError::Protocol(
                        "text WebSocket messages are not accepted: send protobuf frames as binary messages".into(),
                    ))),
                    Ok(Message::Close(_)) => None,
                    Ok(_) => None, // ping/pong: answered by tungstenite
                    Err(tungstenite::Error::Capacity(e)) => Some(Err(capacity(e, max_frame))),
                    Err(e) => Some(Err(TransportError::Io(e.to_string()))),
                }
            });
            let writer = sink
                .sink_map_err(|e| TransportError::Io(e.to_string()))
                .with(|b: Bytes| async move { Ok::<_, TransportError>(Message::Binary(b)) });
            Ok((Box::pin(reader), Box::pin(writer)))
        }
    }
}

fn capacity(e: tungstenite::error::CapacityError, max: usize) -> TransportError {
    match e {
        tungstenite::error::CapacityError::MessageTooLong { size, max_size } => {
            TransportError::FrameTooLarge {
                len: size,
                max: max_size,
            }
        }
        other => TransportError::Protocol(format!("frame over the limit of {max} bytes: {other}")),
    }
}

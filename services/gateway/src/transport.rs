//! TCP and WebSocket, reduced to the same thing: a stream of frames in and a
//! sink of frames out.
//!
//! Until its login succeeds, a connection may send only a few KiB in all
//! (the WebSocket handshake included): [`PreLogin`] counts the bytes read
//! and fails the read past [`PRE_LOGIN_BYTES`], so a stranger cannot make
//! the gateway buffer a 1 MiB frame. The session lifts the budget at login.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_util::codec::{Decoder, Encoder, FramedRead, FramedWrite};

/// Initial read and write buffer of a TCP connection, bytes.
const IDLE_BUFFER: usize = 512;
/// Frames written in one go before the writer flushes, bytes.
const WRITE_BATCH: usize = 64 * 1024;

/// Bytes a connection may send before its login succeeds: enough for a
/// WebSocket handshake with its cookies and a login frame.
pub const PRE_LOGIN_BYTES: usize = 32 * 1024;

/// What is left of a connection's pre-login byte budget; lifted at login.
#[derive(Debug, Clone)]
pub struct Budget(Arc<AtomicUsize>);

impl Budget {
    fn new(bytes: usize) -> Self {
        Budget(Arc::new(AtomicUsize::new(bytes)))
    }

    /// No bound from now on (the connection logged in).
    pub fn lift(&self) {
        self.0.store(usize::MAX, Ordering::Relaxed);
    }
}

/// The error a read gets past the pre-login budget.
#[derive(Debug, thiserror::Error)]
#[error("more than {PRE_LOGIN_BYTES} bytes before login")]
struct OverBudget;

/// A stream whose reads count against a [`Budget`].
pub struct PreLogin<S> {
    inner: S,
    budget: Budget,
}

impl<S: AsyncRead + Unpin> AsyncRead for PreLogin<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        if read > 0 {
            let left = self.budget.0.load(Ordering::Relaxed);
            if left != usize::MAX {
                if read > left {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        OverBudget,
                    )));
                }
                self.budget.0.store(left - read, Ordering::Relaxed);
            }
        }
        poll
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for PreLogin<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Whether an I/O error is the pre-login budget running out.
fn over_budget(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<OverBudget>())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Tcp,
    WebSocket,
}

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("frame of {len} bytes is over the limit of {max} bytes")]
    FrameTooLarge { len: usize, max: usize },
    #[error("more than {PRE_LOGIN_BYTES} bytes before login")]
    PreLoginTooLarge,
    #[error("{0}")]
    Protocol(String),
    #[error("connection error: {0}")]
    Io(String),
}

pub type FrameReader = Pin<Box<dyn Stream<Item = Result<Bytes, TransportError>> + Send>>;
pub type FrameWriter = Pin<Box<dyn Sink<Bytes, Error = TransportError> + Send>>;

/// tokio-util codec around the sans-I/O length prefix of `tern-wire`.
/// Before login (its budget not lifted) a length prefix over the
/// pre-login budget is refused at once: the reader never reserves room for
/// the frame it announces.
pub struct LengthCodec(pub tern_wire::LengthPrefixed, pub Option<Budget>);

impl Decoder for LengthCodec {
    type Item = Bytes;
    type Error = TransportError;
    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, TransportError> {
        if let (Some(budget), Some(prefix)) = (&self.1, src.first_chunk::<4>())
            && budget.0.load(Ordering::Relaxed) != usize::MAX
            && u32::from_be_bytes(*prefix) as usize > PRE_LOGIN_BYTES
        {
            return Err(TransportError::PreLoginTooLarge);
        }
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
        if over_budget(&e) {
            TransportError::PreLoginTooLarge
        } else {
            TransportError::Io(e.to_string())
        }
    }
}

/// Completes the handshake (for WebSocket) and splits the connection; its
/// reads count against the returned pre-login budget until it is lifted.
pub async fn open(
    kind: Kind,
    stream: TcpStream,
    max_frame: usize,
) -> Result<(FrameReader, FrameWriter, Budget), TransportError> {
    let budget = Budget::new(PRE_LOGIN_BYTES);
    let (reader, writer) = open_counted(kind, stream, max_frame, budget.clone()).await?;
    Ok((reader, writer, budget))
}

async fn open_counted(
    kind: Kind,
    stream: TcpStream,
    max_frame: usize,
    budget: Budget,
) -> Result<(FrameReader, FrameWriter), TransportError> {
    match kind {
        Kind::Tcp => {
            let (r, w) = stream.into_split();
            let r = PreLogin {
                inner: r,
                budget: budget.clone(),
            };
            let codec = |budget| LengthCodec(tern_wire::LengthPrefixed::new(max_frame), budget);
            // Small initial buffers: most connections are idle most of the
            // time, and buffers grow to fit what actually arrives.
            let reader = FramedRead::with_capacity(r, codec(Some(budget)), IDLE_BUFFER);
            let mut writer = FramedWrite::with_capacity(w, codec(None), IDLE_BUFFER);
            writer.set_backpressure_boundary(WRITE_BATCH);
            Ok((Box::pin(reader), Box::pin(writer)))
        }
        Kind::WebSocket => {
            let config = WebSocketConfig::default()
                .max_message_size(Some(max_frame))
                .max_frame_size(Some(max_frame));
            let stream = PreLogin {
                inner: stream,
                budget,
            };
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
                    Err(tungstenite::Error::Io(e)) => Some(Err(e.into())),
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

//! Opening a connection to a gateway and turning it into a sink and a stream
//! of whole frames, the same for TCP and WebSocket.

use std::pin::Pin;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::{Sink, SinkExt, Stream, StreamExt, future};
use tern_wire::LengthPrefixed;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_util::codec::{Decoder, Encoder, Framed};

use crate::{ClientError, ServerAddr};

/// Where frames to the gateway go.
pub(crate) type FrameSink = Pin<Box<dyn Sink<Bytes, Error = ClientError> + Send>>;
/// Frames from the gateway, in order; ends when the gateway closes.
pub(crate) type FrameStream = Pin<Box<dyn Stream<Item = Result<Bytes, ClientError>> + Send>>;

/// Connects within `timeout` and splits the connection into its two directions.
pub(crate) async fn open(
    addr: &ServerAddr,
    max_frame: usize,
    timeout: Duration,
) -> Result<(FrameSink, FrameStream), ClientError> {
    let opening = async {
        match addr {
            ServerAddr::Tcp(authority) => {
                let tcp = TcpStream::connect(authority.as_str()).await?;
                // Frames are small and interactive: do not wait to fill a segment.
                tcp.set_nodelay(true)?;
                let (sink, stream) =
                    Framed::new(tcp, FrameCodec(LengthPrefixed::new(max_frame))).split();
                Ok::<_, ClientError>((Box::pin(sink) as FrameSink, Box::pin(stream) as FrameStream))
            }
            ServerAddr::WebSocket(url) => {
                let (ws, _response) = tokio_tungstenite::connect_async(url.as_str()).await?;
                let (sink, stream) = ws.split();
                let sink = sink
                    .with(|frame: Bytes| {
                        future::ready(Ok::<_, tokio_tungstenite::tungstenite::Error>(
                            WsMessage::Binary(frame),
                        ))
                    })
                    .sink_map_err(ClientError::from);
                let stream = stream.filter_map(|item| {
                    future::ready(match item {
                        Ok(WsMessage::Binary(frame)) => Some(Ok(frame)),
                        // Pings are answered by tungstenite; a close message is followed by the end of the stream.
                        Ok(
                            WsMessage::Ping(_)
                            | WsMessage::Pong(_)
                            | WsMessage::Close(_)
                            | WsMessage::Frame(_),
                        ) => None,
                        Ok(WsMessage::Text(_)) => Some(Err(ClientError::Protocol(
                            "the gateway sent a text WebSocket message; frames are binary".into(),
                        ))),
                        Err(e) => Some(Err(e.into())),
                    })
                });
                Ok((Box::pin(sink) as FrameSink, Box::pin(stream) as FrameStream))
            }
        }
    };
    tokio::time::timeout(timeout, opening)
        .await
        .map_err(|_| ClientError::Timeout)?
}

/// tokio-util adapter around the wire crate's TCP framing.
pub(crate) struct FrameCodec(pub(crate) LengthPrefixed);

impl Decoder for FrameCodec {
    type Item = Bytes;
    type Error = ClientError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, ClientError> {
        Ok(self.0.decode(src)?)
    }
}

impl Encoder<Bytes> for FrameCodec {
    type Error = ClientError;

    fn encode(&mut self, frame: Bytes, dst: &mut BytesMut) -> Result<(), ClientError> {
        Ok(self.0.encode(&frame, dst)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_codec_round_trips_frames_split_anywhere() {
        let mut codec = FrameCodec(LengthPrefixed::default());
        let mut wire = BytesMut::new();
        codec
            .encode(Bytes::from_static(b"hello"), &mut wire)
            .unwrap();
        codec.encode(Bytes::new(), &mut wire).unwrap();
        assert_eq!(&wire[..4], &[0, 0, 0, 5]);

        let mut incoming = BytesMut::new();
        let mut frames = Vec::new();
        for byte in wire {
            incoming.extend_from_slice(&[byte]);
            while let Some(frame) = codec.decode(&mut incoming).unwrap() {
                frames.push(frame);
            }
        }
        assert_eq!(frames, [Bytes::from_static(b"hello"), Bytes::new()]);
    }

    #[test]
    fn tcp_codec_rejects_an_oversized_length_before_buffering() {
        let mut codec = FrameCodec(LengthPrefixed::new(8));
        let mut incoming = BytesMut::from(&[0u8, 0, 0, 9][..]);
        assert!(matches!(
            codec.decode(&mut incoming),
            Err(ClientError::Wire(_))
        ));
    }
}

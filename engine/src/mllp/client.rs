//! A one-connection MLLP client: send a message, wait for its answer.

use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

use super::codec::{MllpCodec, MllpFrame};

/// Why an exchange with an MLLP peer failed.
#[derive(Debug, thiserror::Error)]
pub enum MllpClientError {
    #[error("could not connect to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("timed out connecting to {addr} after {after:?}")]
    ConnectTimeout { addr: String, after: Duration },
    #[error("sending failed: {0}")]
    Send(std::io::Error),
    #[error("no answer within {0:?}")]
    AnswerTimeout(Duration),
    #[error("the peer closed the connection without answering")]
    Closed,
    #[error("reading the answer failed: {0}")]
    Read(std::io::Error),
    #[error("the answer was larger than the frame limit ({len} bytes)")]
    AnswerTooLarge { len: usize },
}

impl MllpClientError {
    /// True when the connection can no longer be used.
    pub fn breaks_connection(&self) -> bool {
        !matches!(
            self,
            MllpClientError::Connect { .. } | MllpClientError::ConnectTimeout { .. }
        )
    }
}

/// A byte stream MLLP can run over: plain TCP or TLS.
pub trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// An open MLLP connection.
pub struct MllpClient {
    framed: Framed<Box<dyn Io>, MllpCodec>,
}

impl MllpClient {
    /// Connects to `addr` within `timeout`.
    pub async fn connect(
        addr: &str,
        timeout: Duration,
        max_frame: usize,
    ) -> Result<Self, MllpClientError> {
        let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(source)) => {
                return Err(MllpClientError::Connect {
                    addr: addr.into(),
                    source,
                });
            }
            Err(_) => {
                return Err(MllpClientError::ConnectTimeout {
                    addr: addr.into(),
                    after: timeout,
                });
            }
        };
        let _ = stream.set_nodelay(true);
        Ok(MllpClient {
            framed: Framed::new(Box::new(stream), MllpCodec::new(max_frame, true)),
        })
    }

    /// Connects over TLS, verifying the peer with `tls`.
    pub async fn connect_tls(
        addr: &str,
        timeout: Duration,
        max_frame: usize,
        tls: &crate::tls::DestinationTls,
    ) -> Result<Self, MllpClientError> {
        let attempt = async {
            let stream =
                TcpStream::connect(addr)
                    .await
                    .map_err(|source| MllpClientError::Connect {
                        addr: addr.into(),
                        source,
                    })?;
            let _ = stream.set_nodelay(true);
            let connector = tokio_rustls::TlsConnector::from(tls.config.clone());
            connector
                .connect(tls.server_name.clone(), stream)
                .await
                .map_err(|source| MllpClientError::Connect {
                    addr: addr.into(),
                    source,
                })
        };
        match tokio::time::timeout(timeout, attempt).await {
            Ok(Ok(stream)) => Ok(MllpClient {
                framed: Framed::new(Box::new(stream), MllpCodec::new(max_frame, true)),
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(MllpClientError::ConnectTimeout {
                addr: addr.into(),
                after: timeout,
            }),
        }
    }

    /// Sends one message and waits up to `timeout` for the next frame.
    pub async fn exchange(
        &mut self,
        message: &[u8],
        timeout: Duration,
    ) -> Result<Bytes, MllpClientError> {
        self.framed
            .send(message)
            .await
            .map_err(MllpClientError::Send)?;
        self.receive(timeout).await
    }

    /// Sends one message without waiting.
    pub async fn send(&mut self, message: &[u8]) -> Result<(), MllpClientError> {
        self.framed
            .send(message)
            .await
            .map_err(MllpClientError::Send)
    }

    /// Waits up to `timeout` for the next frame.
    pub async fn receive(&mut self, timeout: Duration) -> Result<Bytes, MllpClientError> {
        match tokio::time::timeout(timeout, self.framed.next()).await {
            Err(_) => Err(MllpClientError::AnswerTimeout(timeout)),
            Ok(None) => Err(MllpClientError::Closed),
            Ok(Some(Err(e))) => Err(MllpClientError::Read(e)),
            Ok(Some(Ok(MllpFrame::Message(bytes)))) => Ok(bytes),
            Ok(Some(Ok(MllpFrame::Oversized { len, .. }))) => {
                Err(MllpClientError::AnswerTooLarge { len })
            }
        }
    }
}

//! HTTPS on the admin address: TLS handshakes run in their own tasks (a
//! slow client holds up nobody), bounded in number and time, and the
//! connections that complete one are handed to the HTTP server. The
//! certificate can be replaced while running (a reload after rotation).

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

use super::auth::ClientAddr;
use crate::admission::TLS_HANDSHAKE;
use crate::tls::ListenerTls;

/// Handshakes in progress at once; further connections wait to be accepted.
const MAX_HANDSHAKES: usize = 64;

/// The admin address's certificate, replaceable while serving.
pub struct AdminTls {
    current: RwLock<ListenerTls>,
}

impl AdminTls {
    pub fn new(tls: ListenerTls) -> Self {
        AdminTls {
            current: RwLock::new(tls),
        }
    }

    /// Serves new connections with `tls` when it differs from the one in
    /// force; returns whether it did.
    pub fn replace(&self, tls: ListenerTls) -> bool {
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        if *current == tls {
            return false;
        }
        *current = tls;
        true
    }

    fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        let current = self.current.read().unwrap_or_else(|p| p.into_inner());
        tokio_rustls::TlsAcceptor::from(current.config.clone())
    }
}

/// Connections that completed a TLS handshake, for `axum::serve`.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Accepts on `socket` until `shutdown` (or until this listener is
    /// dropped), handshaking with the certificate in force at each accept.
    pub fn new(socket: TcpListener, tls: Arc<AdminTls>, shutdown: CancellationToken) -> Self {
        let local = socket
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let (tx, ready) = mpsc::channel(MAX_HANDSHAKES);
        let slots = Arc::new(Semaphore::new(MAX_HANDSHAKES));
        tokio::spawn(async move {
            loop {
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return;
                };
                let accepted = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tx.closed() => return,
                    accepted = socket.accept() => accepted,
                };
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::debug!(error = %e, "admin endpoint: accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let (acceptor, tx) = (tls.acceptor(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(TLS_HANDSHAKE, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            let _ = tx.send((stream, peer)).await;
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "admin endpoint: TLS handshake refused")
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "admin endpoint: TLS handshake timed out")
                        }
                    }
                    drop(slot);
                });
            }
        });
        TlsListener { ready, local }
    }
}

impl Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(accepted) => accepted,
            // The accept loop ended (shutdown): nothing more will come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

impl Connected<IncomingStream<'_, TlsListener>> for ClientAddr {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Self {
        ClientAddr(*stream.remote_addr())
    }
}

impl Connected<IncomingStream<'_, TcpListener>> for ClientAddr {
    fn connect_info(stream: IncomingStream<'_, TcpListener>) -> Self {
        ClientAddr(*stream.remote_addr())
    }
}

//! Which connections a listener takes, for MLLP and SOAP alike: at most
//! `max_connections` open at once (while full, nothing is accepted and new
//! connections wait in the kernel's backlog) and at most
//! `max_connections_per_peer` from one IP address (one more is closed at once
//! and counted as refused).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

/// How long a client has to complete the TLS handshake.
pub const TLS_HANDSHAKE: Duration = Duration::from_secs(10);

type Counts = Arc<Mutex<HashMap<IpAddr, usize>>>;

/// Admits a listener's connections within its limits.
pub struct Gate {
    name: String,
    permits: Arc<Semaphore>,
    peers: Counts,
    per_peer: usize,
    refused: Option<Counter>,
}

/// An admitted connection's place in both counts; freed when dropped.
pub struct Admitted {
    _permit: OwnedSemaphorePermit,
    _slot: PeerSlot,
}

impl Gate {
    /// A gate for the listener `name`; `refused` counts connections closed
    /// because their address had too many open.
    pub fn new(
        name: &str,
        max_connections: usize,
        max_per_peer: usize,
        refused: Option<Counter>,
    ) -> Self {
        Gate {
            name: name.to_string(),
            permits: Arc::new(Semaphore::new(max_connections.max(1))),
            peers: Arc::default(),
            per_peer: max_per_peer.max(1),
            refused,
        }
    }

    /// Waits for room, then accepts connections until one is admitted.
    /// `None` once `shutdown` is cancelled.
    pub async fn accept(
        &self,
        listener: &TcpListener,
        shutdown: &CancellationToken,
    ) -> Option<(TcpStream, SocketAddr, Admitted)> {
        let mut backoff = Duration::from_millis(5);
        loop {
            // A place first: while the listener is full, nothing is accepted.
            let permit = tokio::select! {
                _ = shutdown.cancelled() => return None,
                p = self.permits.clone().acquire_owned() => p.ok()?,
            };
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => return None,
                a = listener.accept() => a,
            };
            let (stream, peer) = match accepted {
                Ok(ok) => {
                    backoff = Duration::from_millis(5);
                    ok
                }
                Err(e) => {
                    // Usually out of file descriptors: wait and try again.
                    tracing::error!(listener = %self.name, error = %e, "accept failed");
                    drop(permit);
                    tokio::select! {
                        _ = shutdown.cancelled() => return None,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let Some(slot) = PeerSlot::take(&self.peers, peer.ip(), self.per_peer) else {
                tracing::warn!(listener = %self.name, peer = %peer.ip(), limit = self.per_peer, "too many connections from one address; closing the new one");
                if let Some(refused) = &self.refused {
                    refused.inc();
                }
                continue;
            };
            return Some((
                stream,
                peer,
                Admitted {
                    _permit: permit,
                    _slot: slot,
                },
            ));
        }
    }
}

/// One connection's place in the per-address count; freed on drop.
struct PeerSlot {
    counts: Counts,
    ip: IpAddr,
}

impl PeerSlot {
    fn take(counts: &Counts, ip: IpAddr, limit: usize) -> Option<PeerSlot> {
        let mut map = counts.lock().ok()?;
        let n = map.entry(ip).or_insert(0);
        if *n >= limit {
            return None;
        }
        *n += 1;
        Some(PeerSlot {
            counts: counts.clone(),
            ip,
        })
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        if let Ok(mut map) = self.counts.lock()
            && let Some(n) = map.get_mut(&self.ip)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_slots_are_counted_per_address_and_freed_on_drop() {
        let counts: Counts = Arc::default();
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        let first = PeerSlot::take(&counts, a, 2).unwrap();
        let _second = PeerSlot::take(&counts, a, 2).unwrap();
        assert!(PeerSlot::take(&counts, a, 2).is_none());
        let _other = PeerSlot::take(&counts, b, 2).unwrap();
        drop(first);
        assert!(PeerSlot::take(&counts, a, 2).is_some());
    }
}

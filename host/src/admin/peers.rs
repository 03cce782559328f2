//! The other nodes of a cluster, as this node's console asks them. Each
//! node logs the messages it answered in its own message log, numbering
//! them from its node number (so an id names the node that holds it); a
//! search asks every live node and merges their pages, and a message
//! another node holds is read, unmasked and acted on there, for the same
//! user, with the secret the nodes share.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{Method, Request, StatusCode};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::auth::{ON_BEHALF_HEADER, PEER_HEADER};
use crate::store::{Journal, Peer};

/// How long another node has to answer.
const TIMEOUT: Duration = Duration::from_secs(5);
/// The largest answer taken from another node.
const MAX_ANSWER: usize = 16 << 20;

/// This node's way to the others.
pub struct Peers {
    token: String,
    journal: Journal,
    number: i32,
}

impl std::fmt::Debug for Peers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peers")
            .field("number", &self.number)
            .finish_non_exhaustive()
    }
}

impl Peers {
    /// `None` unless the journal is shared and a secret is configured.
    pub fn new(token: Option<String>, journal: Option<&Journal>) -> Option<Arc<Peers>> {
        let journal = journal?;
        let number = journal.node_number()?;
        Some(Arc::new(Peers {
            token: token?,
            journal: journal.clone(),
            number,
        }))
    }

    /// This node's number.
    pub fn number(&self) -> i32 {
        self.number
    }

    /// The other live nodes (none when the database cannot say).
    pub async fn list(&self) -> Vec<Peer> {
        match self.journal.peers().await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list the cluster's nodes; the console shows this node's messages only");
                Vec::new()
            }
        }
    }

    /// The node holding logged message `id`, when it is another one.
    pub async fn owner(&self, id: i64) -> Option<Peer> {
        let number = crate::flow::log::node_of(id);
        if number == self.number {
            return None;
        }
        self.list().await.into_iter().find(|p| p.number == number)
    }

    /// Asks `peer` for `path_and_query` on behalf of `user`; its status and
    /// body.
    pub async fn call(
        &self,
        peer: &Peer,
        method: Method,
        path_and_query: &str,
        user: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<(StatusCode, Bytes), String> {
        let authority = peer
            .console_url
            .strip_prefix("http://")
            .ok_or_else(|| format!("node {}: only http:// is supported", peer.name))?
            .to_string();
        let exchange = async {
            let stream = TcpStream::connect(&authority)
                .await
                .map_err(|e| format!("node {} ({authority}): {e}", peer.name))?;
            let _ = stream.set_nodelay(true);
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            let mut request = Request::builder()
                .method(method)
                .uri(path_and_query)
                .header("host", authority.as_str())
                .header(PEER_HEADER, self.token.as_str())
                .header(ON_BEHALF_HEADER, user);
            let payload = match body {
                Some(v) => {
                    request = request.header("content-type", "application/json");
                    Bytes::from(serde_json::to_vec(v).map_err(|e| e.to_string())?)
                }
                None => Bytes::new(),
            };
            let request = request
                .body(Full::new(payload))
                .map_err(|e| e.to_string())?;
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| format!("node {}: {e}", peer.name))?;
            let status = response.status();
            let bytes = Limited::new(response.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map_err(|e| format!("node {}: {e}", peer.name))?
                .to_bytes();
            Ok((status, bytes))
        };
        tokio::time::timeout(TIMEOUT, exchange)
            .await
            .map_err(|_| format!("node {} did not answer within {TIMEOUT:?}", peer.name))?
    }
}

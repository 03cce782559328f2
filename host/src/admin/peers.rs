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

use super::auth::{ON_BEHALF_GROUPS_HEADER, ON_BEHALF_HEADER, OnBehalf, PEER_HEADER};
use crate::mllp::Io;
use crate::store::{Journal, Peer};

/// How long another node has to answer.
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// The largest answer taken from another node.
const MAX_ANSWER: usize = 16 << 20;

/// The largest live event taken from another node.
const MAX_EVENT: usize = 64 * 1024;

/// This node's way to the others.
pub struct Peers {
    token: String,
    journal: Journal,
    number: i32,
    /// For other nodes whose admin API is HTTPS: the CA their certificates
    /// chain to (`[store] console_ca`).
    tls: Option<Arc<rustls::ClientConfig>>,
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
    pub fn new(
        token: Option<String>,
        journal: Option<&Journal>,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Option<Arc<Peers>> {
        let journal = journal?;
        let number = journal.node_number()?;
        Some(Arc::new(Peers {
            token: token?,
            journal: journal.clone(),
            number,
            tls,
        }))
    }

    /// Opens a connection to `url` (`http://host:port` or
    /// `https://host:port`, as the node published it); the authority to name
    /// in `Host` and the stream.
    async fn connect(&self, name: &str, url: &str) -> Result<(String, Box<dyn Io>), String> {
        let (https, authority) = match url.split_once("://") {
            Some(("http", a)) => (false, a),
            Some(("https", a)) => (true, a),
            _ => {
                return Err(format!(
                    "node {name}: '{url}' is neither http:// nor https://"
                ));
            }
        };
        let stream = TcpStream::connect(authority)
            .await
            .map_err(|e| format!("node {name} ({authority}): {e}"))?;
        let _ = stream.set_nodelay(true);
        if !https {
            return Ok((authority.to_string(), Box::new(stream)));
        }
        let Some(config) = &self.tls else {
            return Err(format!(
                "node {name} ({authority}) is https:// but [store] console_ca is not set on this node"
            ));
        };
        let host = authority
            .rsplit_once(':')
            .map_or(authority, |(h, _)| h)
            .trim_start_matches('[')
            .trim_end_matches(']');
        let server_name = crate::tls::server_name(host).map_err(|e| format!("node {name}: {e}"))?;
        let tls = tokio_rustls::TlsConnector::from(config.clone())
            .connect(server_name, stream)
            .await
            .map_err(|e| format!("node {name} ({authority}): TLS: {e}"))?;
        Ok((authority.to_string(), Box::new(tls)))
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

    /// Connects to `peer` and sends one request for `user`, with the
    /// nodes' secret; its response, body unread.
    async fn send(
        &self,
        peer: &Peer,
        method: Method,
        path_and_query: &str,
        user: &OnBehalf,
        body: Option<&serde_json::Value>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, String> {
        let (authority, stream) = self.connect(&peer.name, &peer.console_url).await?;
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
            .header(ON_BEHALF_HEADER, user.name.as_str());
        if let Some(groups) = &user.groups {
            let list = serde_json::to_string(groups).map_err(|e| e.to_string())?;
            request = request.header(ON_BEHALF_GROUPS_HEADER, list);
        }
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
        sender
            .send_request(request)
            .await
            .map_err(|e| format!("node {}: {e}", peer.name))
    }

    /// Follows `peer`'s live view (`/api/events`) for `user` until `stop`
    /// or until the peer ends it, handing each `message` event's data to
    /// `tx` (dropped when `tx` is full: a live view may skip, never block).
    pub async fn follow(
        &self,
        peer: &Peer,
        user: &OnBehalf,
        tx: tokio::sync::mpsc::Sender<String>,
        stop: tokio_util::sync::CancellationToken,
    ) -> Result<(), String> {
        let response = tokio::time::timeout(
            TIMEOUT,
            self.send(peer, Method::GET, "/api/events", user, None),
        )
        .await
        .map_err(|_| format!("node {} did not answer within {TIMEOUT:?}", peer.name))??;
        if !response.status().is_success() {
            return Err(format!("node {}: {}", peer.name, response.status()));
        }
        let mut body = response.into_body();
        let mut pending: Vec<u8> = Vec::new();
        loop {
            let frame = tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                f = body.frame() => f,
            };
            let Some(frame) = frame else { return Ok(()) };
            let frame = frame.map_err(|e| format!("node {}: {e}", peer.name))?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            pending.extend_from_slice(&data);
            while let Some(end) = find_blank_line(&pending) {
                let event: Vec<u8> = pending.drain(..end).collect();
                if let Some(data) = message_data(&event) {
                    let _ = tx.try_send(data);
                }
            }
            if pending.len() > MAX_EVENT {
                return Err(format!(
                    "node {}: a live event over {MAX_EVENT} bytes",
                    peer.name
                ));
            }
        }
    }

    /// Asks `peer` for `path_and_query` on behalf of `user`; its status and
    /// body.
    pub async fn call(
        &self,
        peer: &Peer,
        method: Method,
        path_and_query: &str,
        user: &OnBehalf,
        body: Option<&serde_json::Value>,
    ) -> Result<(StatusCode, Bytes), String> {
        self.call_within(TIMEOUT, peer, method, path_and_query, user, body)
            .await
    }

    /// [`Peers::call`], with `timeout` for the whole exchange.
    async fn call_within(
        &self,
        timeout: Duration,
        peer: &Peer,
        method: Method,
        path_and_query: &str,
        user: &OnBehalf,
        body: Option<&serde_json::Value>,
    ) -> Result<(StatusCode, Bytes), String> {
        let exchange = async {
            let response = self.send(peer, method, path_and_query, user, body).await?;
            let status = response.status();
            let bytes = Limited::new(response.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map_err(|e| format!("node {}: {e}", peer.name))?
                .to_bytes();
            Ok((status, bytes))
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| format!("node {} did not answer within {timeout:?}", peer.name))?
    }

    /// Asks every other live node for `path_and_query` on behalf of `user`,
    /// all at once, each within `timeout`; each node with its answer.
    pub async fn call_all(
        &self,
        timeout: Duration,
        method: Method,
        path_and_query: &str,
        user: &OnBehalf,
        body: Option<&serde_json::Value>,
    ) -> Vec<(Peer, Result<(StatusCode, Bytes), String>)> {
        let nodes = self.list().await;
        let calls = nodes.iter().map(|node| {
            self.call_within(timeout, node, method.clone(), path_and_query, user, body)
        });
        let answers = futures::future::join_all(calls).await;
        nodes.into_iter().zip(answers).collect()
    }
}

/// Where the first event of a server-sent event stream ends (after its
/// blank line).
fn find_blank_line(buf: &[u8]) -> Option<usize> {
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The data of a `message` event, `None` for any other event.
fn message_data(event: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(event).ok()?;
    let mut kind = "message";
    let mut data: Vec<&str> = Vec::new();
    for line in text.lines() {
        if let Some(k) = line.strip_prefix("event:") {
            kind = k.trim();
        } else if let Some(d) = line.strip_prefix("data:") {
            data.push(d.strip_prefix(' ').unwrap_or(d));
        }
    }
    if kind != "message" || data.is_empty() {
        return None;
    }
    // Passed on to browsers only as what it must be: one JSON object,
    // written out again here.
    match serde_json::from_str::<serde_json::Value>(&data.join("\n")).ok()? {
        v @ serde_json::Value::Object(_) => Some(v.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_sent_events_are_split_and_only_messages_kept() {
        let stream = b"event: dashboard\ndata: {\"routes\":[]}\n\nevent: message\ndata: {\"id\":1}\n\n: keep-alive\n\nevent: mess";
        let mut buf = stream.to_vec();
        let mut got = Vec::new();
        while let Some(end) = find_blank_line(&buf) {
            let event: Vec<u8> = buf.drain(..end).collect();
            got.extend(message_data(&event));
        }
        assert_eq!(got, vec!["{\"id\":1}".to_string()]);
        assert_eq!(buf, b"event: mess");
    }
}

//! The SOAP listener side: an HTTP endpoint taking `submitSingleMessage`
//! and `connectivityTest`, for EHRs that speak the CDC WSDL, and for the
//! simulated IIS.
//!
//! Connections are admitted like MLLP ones ([`crate::admission`]) and each is
//! watched: one with no request for `idle_timeout` is closed, and a request
//! not read and answered within `request_timeout` of its first byte is cut
//! (with an `UnknownFault` when its headers were read).

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderValue, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Call, Fault, connectivity_response, parse_request, submit_response};
use crate::admission::{Gate, TLS_HANDSHAKE};
use crate::identity::Peer;

/// One accepted submission, for the [`Handler`].
#[derive(Debug, Clone)]
pub struct Submission {
    /// The WSDL's `facilityID` parameter.
    pub facility_id: String,
    /// The HL7 message.
    pub hl7: String,
    /// The authenticated user, when it is bound to facilities.
    pub peer: Option<Peer>,
}

/// What handles one submitted message: returns the HL7 answer, or a fault.
pub type Handler = Arc<
    dyn Fn(Submission) -> Pin<Box<dyn Future<Output = Result<String, Fault>> + Send>> + Send + Sync,
>;

/// A user allowed to submit.
#[derive(Clone, PartialEq, Eq)]
pub struct SoapUser {
    pub password: String,
    /// Sending facilities (MSH-4.1) the user may send for; `None`: any.
    pub facilities: Option<BTreeSet<String>>,
}

impl SoapUser {
    /// A user who may send for any facility.
    pub fn any_facility(password: impl Into<String>) -> Self {
        SoapUser {
            password: password.into(),
            facilities: None,
        }
    }
}

impl std::fmt::Debug for SoapUser {
    /// Never shows the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SoapUser")
            .field("password", &"***")
            .field("facilities", &self.facilities)
            .finish()
    }
}

/// A SOAP endpoint's settings.
pub struct Endpoint {
    /// Users allowed to submit, by name; empty allows anyone.
    pub users: BTreeMap<String, SoapUser>,
    /// Largest request body accepted.
    pub max_body: usize,
    /// Called for each accepted submission.
    pub handler: Handler,
}

/// How many connections an endpoint takes and how long they may wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most connections open at once; more wait to be accepted.
    pub max_connections: usize,
    /// Most connections open at once from one IP address; more are closed.
    pub max_per_peer: usize,
    /// A connection with no request for this long is closed.
    pub idle_timeout: Duration,
    /// A request must be read and answered within this of its first byte.
    pub request_timeout: Duration,
}

impl Default for Limits {
    /// The listener defaults.
    fn default() -> Self {
        Limits {
            max_connections: 1024,
            max_per_peer: 64,
            idle_timeout: Duration::from_secs(600),
            request_timeout: Duration::from_secs(60),
        }
    }
}

/// How an endpoint serves its connections.
pub struct Serving {
    /// The listener's name, for logs.
    pub name: String,
    /// Serve HTTPS with this configuration.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub limits: Limits,
    /// Connection tasks run here, so shutdown can wait for them.
    pub tracker: TaskTracker,
    /// Stops accepting; idle connections close, requests in progress finish.
    pub shutdown: CancellationToken,
    /// Open connections.
    pub connections: Option<Gauge>,
    /// Connections closed because their address had too many open.
    pub refused: Option<Counter>,
}

fn xml(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/soap+xml; charset=utf-8")],
        body,
    )
        .into_response()
}

fn fault(f: Fault) -> Response {
    let status = if f.is_transient() {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::BAD_REQUEST
    };
    xml(status, f.to_xml())
}

/// Whether two secrets are equal, in time that does not depend on where
/// they differ.
fn same_secret(a: &str, b: &str) -> bool {
    let (x, y) = (Sha256::digest(a.as_bytes()), Sha256::digest(b.as_bytes()));
    x.iter()
        .zip(y.iter())
        .fold(0u8, |acc, (p, q)| acc | (p ^ q))
        == 0
}

/// Checks the credentials; returns the user as a [`Peer`] when it is bound
/// to facilities.
fn authenticate(
    users: &BTreeMap<String, SoapUser>,
    username: &str,
    password: &str,
) -> Result<Option<Peer>, Fault> {
    if users.is_empty() {
        return Ok(None);
    }
    let user = users.get(username);
    // An unknown user costs the same comparison as a wrong password.
    let expected = user.map(|u| u.password.as_str()).unwrap_or("");
    let matches = same_secret(expected, password);
    match user {
        Some(u) if matches => Ok(u.facilities.as_ref().map(|f| Peer {
            name: format!("SOAP user '{username}'"),
            facilities: f.clone(),
        })),
        _ => {
            tracing::warn!(user = ?username, "SOAP submission refused: unknown user or wrong password");
            Err(Fault::Security(
                "the username or password is not valid".into(),
            ))
        }
    }
}

/// A user bound to facilities may send only for them (MSH-4.1).
fn check_facility(peer: &Peer, hl7: &str) -> Result<(), Fault> {
    let text = crate::hl7::normalize_segments(hl7);
    let msh = crate::hl7::Msh::read(&text).map_err(|e| {
        tracing::warn!(peer = %peer.name, error = %e, "SOAP submission refused: its sending facility cannot be read");
        Fault::Security(format!(
            "the sending facility (MSH-4.1) cannot be read, so the {} cannot be checked against it: {e}",
            peer.name
        ))
    })?;
    let sender = msh.component(4, 1);
    if peer.may_send_for(sender) {
        return Ok(());
    }
    tracing::warn!(peer = %peer.name, sender = ?sender, "SOAP submission refused: the user may not send for this facility");
    Err(Fault::Security(format!(
        "the {} may not send for sending facility '{sender}' (MSH-4.1)",
        peer.name
    )))
}

async fn handle(State(ep): State<Arc<Endpoint>>, body: Bytes) -> Response {
    if body.len() > ep.max_body {
        return fault(Fault::MessageTooLarge {
            size: body.len(),
            max: ep.max_body,
        });
    }
    match parse_request(&body) {
        Err(f) => fault(f),
        Ok(Call::ConnectivityTest { echo_back }) => {
            xml(StatusCode::OK, connectivity_response(&echo_back))
        }
        Ok(Call::Submit {
            username,
            password,
            facility_id,
            hl7,
        }) => {
            let peer = match authenticate(&ep.users, &username, &password) {
                Ok(peer) => peer,
                Err(f) => return fault(f),
            };
            if let Some(peer) = &peer
                && let Err(f) = check_facility(peer, &hl7)
            {
                return fault(f);
            }
            let submission = Submission {
                facility_id,
                hl7,
                peer,
            };
            match (ep.handler)(submission).await {
                Ok(answer) => xml(StatusCode::OK, submit_response(&answer)),
                Err(f) => fault(f),
            }
        }
    }
}

/// Serves the endpoint on `path` until `serving.shutdown`; over HTTPS when
/// `serving.tls` is given.
pub async fn run(listener: TcpListener, path: String, endpoint: Endpoint, serving: Serving) {
    // Let oversized bodies reach the handler (up to a hard cap) so they get a
    // MessageTooLargeFault instead of a bare HTTP error.
    let cap = endpoint.max_body.saturating_mul(2).max(64 << 10);
    let app = Router::new()
        .route(&path, post(handle))
        .layer(DefaultBodyLimit::max(cap))
        .with_state(Arc::new(endpoint));
    let acceptor = serving.tls.clone().map(tokio_rustls::TlsAcceptor::from);
    let gate = Gate::new(
        &serving.name,
        serving.limits.max_connections,
        serving.limits.max_per_peer,
        serving.refused.clone(),
    );
    let name: Arc<str> = Arc::from(serving.name.as_str());
    while let Some((stream, peer, admitted)) = gate.accept(&listener, &serving.shutdown).await {
        let conn = Conn {
            app: app.clone(),
            limits: serving.limits,
            shutdown: serving.shutdown.clone(),
            name: name.clone(),
            peer,
        };
        let (acceptor, gauge) = (acceptor.clone(), serving.connections.clone());
        serving.tracker.spawn(async move {
            let name = conn.name.clone();
            tracing::debug!(listener = %name, %peer, "connection opened");
            if let Some(g) = &gauge {
                g.inc();
            }
            match acceptor {
                None => conn.serve(stream).await,
                Some(acceptor) => {
                    match tokio::time::timeout(TLS_HANDSHAKE, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => conn.serve(stream).await,
                        Ok(Err(e)) => {
                            tracing::warn!(listener = %name, %peer, error = %e, "TLS handshake refused");
                        }
                        Err(_) => {
                            tracing::warn!(listener = %name, %peer, "TLS handshake timed out")
                        }
                    }
                }
            }
            if let Some(g) = &gauge {
                g.dec();
            }
            tracing::debug!(listener = %name, %peer, "connection closed");
            drop(admitted);
        });
    }
}

/// Where a connection is between and within requests.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Waiting for a request since then.
    Idle(Instant),
    /// A request's first byte arrived then; its headers are being read.
    Reading(Instant),
    /// The request was handed over; it answers within its own deadline.
    Answering,
}

/// One connection's settings.
struct Conn {
    app: Router,
    limits: Limits,
    shutdown: CancellationToken,
    name: Arc<str>,
    peer: SocketAddr,
}

impl Conn {
    async fn serve<S>(self, stream: S)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (phase, watch) = watch::channel(Phase::Idle(Instant::now()));
        let phase = Arc::new(phase);
        let io = TokioIo::new(Watched {
            inner: stream,
            phase: phase.clone(),
        });
        let service = Timed {
            inner: TowerToHyperService::new(self.app),
            phase,
            request_timeout: self.limits.request_timeout,
        };
        let conn = hyper::server::conn::http1::Builder::new().serve_connection(io, service);
        let watchdog = watchdog(watch, self.limits);
        tokio::pin!(conn, watchdog);
        let mut draining = false;
        loop {
            tokio::select! {
                ended = conn.as_mut() => {
                    if let Err(e) = ended {
                        tracing::debug!(listener = %self.name, peer = %self.peer, error = %e, "SOAP connection ended");
                    }
                    return;
                }
                why = &mut watchdog => {
                    // Dropping the connection closes the socket.
                    tracing::debug!(listener = %self.name, peer = %self.peer, reason = why, "closing SOAP connection");
                    return;
                }
                _ = self.shutdown.cancelled(), if !draining => {
                    draining = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// Resolves when the connection has been idle for `idle_timeout`, or a
/// request's headers have not arrived within `request_timeout`.
async fn watchdog(mut phase: watch::Receiver<Phase>, limits: Limits) -> &'static str {
    loop {
        let now = *phase.borrow_and_update();
        let deadline = match now {
            Phase::Idle(since) => Some((since + limits.idle_timeout, "idle timeout")),
            Phase::Reading(since) => Some((since + limits.request_timeout, "request timeout")),
            Phase::Answering => None,
        };
        match deadline {
            Some((at, why)) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(at) => {
                        if !phase.has_changed().unwrap_or(false) {
                            return why;
                        }
                    }
                    changed = phase.changed() => {
                        if changed.is_err() {
                            // The connection is gone.
                            std::future::pending::<()>().await;
                        }
                    }
                }
            }
            None => {
                if phase.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        }
    }
}

/// The connection's stream: the first bytes after an idle spell start a
/// request's clock.
struct Watched<S> {
    inner: S,
    phase: Arc<watch::Sender<Phase>>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let read = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(read, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.phase.send_if_modified(|p| match p {
                Phase::Idle(_) => {
                    *p = Phase::Reading(Instant::now());
                    true
                }
                Phase::Reading(_) | Phase::Answering => false,
            });
        }
        read
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// The endpoint with a deadline on each request: its body must arrive and
/// its answer be ready within `request_timeout` of its first byte, or it is
/// answered with an `UnknownFault` and the connection closed.
struct Timed {
    inner: TowerToHyperService<Router>,
    phase: Arc<watch::Sender<Phase>>,
    request_timeout: Duration,
}

impl hyper::service::Service<Request<Incoming>> for Timed {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let mut started = Instant::now();
        self.phase.send_modify(|p| {
            if let Phase::Reading(since) = *p {
                started = since;
            }
            *p = Phase::Answering;
        });
        let answer = self.inner.call(req);
        let (phase, limit) = (self.phase.clone(), self.request_timeout);
        Box::pin(async move {
            let answered = tokio::time::timeout_at(started + limit, answer).await;
            phase.send_replace(Phase::Idle(Instant::now()));
            match answered {
                Ok(response) => response,
                Err(_) => {
                    let mut response = fault(Fault::Unknown(format!(
                        "the request was not received and answered within {} s",
                        limit.as_secs()
                    )));
                    response
                        .headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                    Ok(response)
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users() -> BTreeMap<String, SoapUser> {
        BTreeMap::from([
            ("open".to_string(), SoapUser::any_facility("open-pw")),
            (
                "ehr1".to_string(),
                SoapUser {
                    password: "ehr1-pw".into(),
                    facilities: Some(BTreeSet::from(["CLINIC-A".to_string()])),
                },
            ),
        ])
    }

    #[test]
    fn credentials_and_the_peer_they_prove() {
        let users = users();
        assert_eq!(authenticate(&users, "open", "open-pw"), Ok(None));
        let peer = authenticate(&users, "ehr1", "ehr1-pw").unwrap().unwrap();
        assert_eq!(peer.name, "SOAP user 'ehr1'");
        assert!(peer.may_send_for("CLINIC-A") && !peer.may_send_for("CLINIC-B"));
        for (u, p) in [("ehr1", "open-pw"), ("ehr1", ""), ("nobody", ""), ("", "")] {
            assert!(matches!(
                authenticate(&users, u, p),
                Err(Fault::Security(_))
            ));
        }
        assert_eq!(authenticate(&BTreeMap::new(), "x", "y"), Ok(None));
    }

    #[test]
    fn bound_users_send_only_for_their_facilities() {
        let peer = Peer::single("SOAP user 'ehr1'", "CLINIC-A");
        let msg = |f: &str| {
            format!("MSH|^~\\&|EHR|{f}^1.2^ISO|IIS|IIS|20240101||VXU^V04|1|P|2.5.1\nPID|1\n")
        };
        assert_eq!(check_facility(&peer, &msg("CLINIC-A")), Ok(()));
        match check_facility(&peer, &msg("CLINIC-B")) {
            Err(Fault::Security(why)) => assert!(why.contains("'CLINIC-B'"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            check_facility(&peer, "not HL7"),
            Err(Fault::Security(_))
        ));
    }

    #[test]
    fn passwords_never_show_in_debug() {
        let text = format!("{:?}", users());
        assert!(!text.contains("pw"), "{text}");
    }
}

//! The SOAP listener side: an HTTP endpoint taking `submitSingleMessage`
//! and `connectivityTest`, for EHRs that speak the CDC WSDL, and for the
//! simulated IIS.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::{Call, Fault, connectivity_response, parse_request, submit_response};

/// What handles one submitted message: returns the HL7 answer, or a fault.
pub type Handler = Arc<
    dyn Fn(String, String) -> Pin<Box<dyn Future<Output = Result<String, Fault>> + Send>>
        + Send
        + Sync,
>;

/// A SOAP endpoint's settings.
pub struct Endpoint {
    /// Users allowed to submit and their passwords; empty allows anyone.
    pub users: BTreeMap<String, String>,
    /// Largest request body accepted.
    pub max_body: usize,
    /// Called with (facility id, HL7 text) for each accepted submission.
    pub handler: Handler,
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
            if !ep.users.is_empty() && ep.users.get(&username) != Some(&password) {
                tracing::warn!(user = %username, "SOAP submission refused: unknown user or wrong password");
                return fault(Fault::Security(
                    "the username or password is not valid".into(),
                ));
            }
            match (ep.handler)(facility_id, hl7).await {
                Ok(answer) => xml(StatusCode::OK, submit_response(&answer)),
                Err(f) => fault(f),
            }
        }
    }
}

/// Serves the endpoint on `path` until `shutdown`; over HTTPS when `tls` is given.
pub async fn run(
    listener: TcpListener,
    path: String,
    endpoint: Endpoint,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: CancellationToken,
) {
    // Let oversized bodies reach the handler (up to a hard cap) so they get a
    // MessageTooLargeFault instead of a bare HTTP error.
    let cap = endpoint.max_body.saturating_mul(2).max(64 << 10);
    let app = Router::new()
        .route(&path, post(handle))
        .layer(DefaultBodyLimit::max(cap))
        .with_state(Arc::new(endpoint));
    let Some(tls) = tls else {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "SOAP endpoint failed");
        }
        return;
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "SOAP endpoint: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        let (acceptor, app) = (acceptor.clone(), app.clone());
        tokio::spawn(async move {
            let handshake =
                tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(stream))
                    .await;
            let Ok(Ok(stream)) = handshake else {
                tracing::warn!(%peer, "SOAP endpoint: TLS handshake failed");
                return;
            };
            let service = hyper_util::service::TowerToHyperService::new(app);
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "SOAP connection ended");
            }
        });
    }
}

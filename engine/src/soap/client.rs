//! The SOAP destination side: posting `submitSingleMessage` to an IIS.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::{Fault, connectivity_request, parse_response, submit_request};

/// Why a SOAP exchange failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SoapError {
    #[error("{0}")]
    Fault(Fault),
    #[error("could not connect to {addr}: {detail}")]
    Connect { addr: String, detail: String },
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("HTTP exchange failed: {0}")]
    Http(String),
    #[error("the IIS answered HTTP {status} without a SOAP fault")]
    Status { status: u16 },
}

impl SoapError {
    /// Whether sending again could succeed (the message is not at fault).
    pub fn is_transient(&self) -> bool {
        match self {
            SoapError::Fault(f) => f.is_transient(),
            SoapError::Status { status } => *status >= 500 || *status == 429,
            _ => true,
        }
    }
}

/// Where and as whom to submit.
#[derive(Clone, PartialEq, Eq)]
pub struct SoapTarget {
    /// `http://host:port/path`.
    pub url: String,
    pub username: String,
    pub password: String,
    /// Whether the password was written in the configuration file.
    pub password_inline: bool,
    pub facility_id: String,
    /// For an `https://` URL: the CA and name the IIS's certificate must match.
    pub tls: Option<crate::tls::DestinationTls>,
}

impl std::fmt::Debug for SoapTarget {
    /// Never shows the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SoapTarget")
            .field("url", &self.url)
            .field("username", &self.username)
            .field("password", &"***")
            .field("facility_id", &self.facility_id)
            .finish()
    }
}

impl SoapTarget {
    fn host_port_path(&self) -> Result<(String, String), SoapError> {
        let rest = self
            .url
            .strip_prefix("http://")
            .or_else(|| self.url.strip_prefix("https://"))
            .ok_or_else(|| {
                SoapError::Http(format!("'{}' is not an http:// or https:// URL", self.url))
            })?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (rest.get(..i).unwrap_or(""), rest.get(i..).unwrap_or("/")),
            None => (rest, "/"),
        };
        Ok((authority.to_string(), path.to_string()))
    }
}

/// Largest SOAP answer read.
const MAX_ANSWER: usize = 4 << 20;

async fn post(target: &SoapTarget, body: String, timeout: Duration) -> Result<String, SoapError> {
    let (authority, path) = target.host_port_path()?;
    let exchange = async {
        let stream = TcpStream::connect(&authority)
            .await
            .map_err(|e| SoapError::Connect {
                addr: authority.clone(),
                detail: e.to_string(),
            })?;
        let _ = stream.set_nodelay(true);
        let stream: Box<dyn crate::mllp::Io> =
            match (&target.tls, target.url.starts_with("https://")) {
                (Some(tls), true) => {
                    let connector = tokio_rustls::TlsConnector::from(tls.config.clone());
                    let tls_stream = connector
                        .connect(tls.server_name.clone(), stream)
                        .await
                        .map_err(|e| SoapError::Connect {
                            addr: authority.clone(),
                            detail: format!("TLS: {e}"),
                        })?;
                    Box::new(tls_stream)
                }
                (None, true) => {
                    return Err(SoapError::Http(format!(
                        "'{}' is https:// but no [tls] ca is configured",
                        target.url
                    )));
                }
                (_, false) => Box::new(stream),
            };
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| SoapError::Http(e.to_string()))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let request = Request::post(path)
            .header("host", authority.as_str())
            .header("content-type", "application/soap+xml; charset=utf-8")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| SoapError::Http(e.to_string()))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| SoapError::Http(e.to_string()))?;
        let status = response.status().as_u16();
        let bytes = Limited::new(response.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| SoapError::Http(e.to_string()))?
            .to_bytes();
        match parse_response(&bytes) {
            Ok(answer) => Ok(answer),
            Err(Fault::Unknown(why))
                if status >= 400 && !why.contains("Unknown") && bytes.is_empty() =>
            {
                Err(SoapError::Status { status })
            }
            Err(f) => Err(SoapError::Fault(f)),
        }
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| SoapError::Timeout(timeout))?
}

/// Submits one HL7 message; returns the IIS's HL7 answer.
pub async fn submit(
    target: &SoapTarget,
    hl7: &str,
    timeout: Duration,
) -> Result<String, SoapError> {
    let body = submit_request(&target.username, &target.password, &target.facility_id, hl7);
    post(target, body, timeout).await
}

/// The WSDL's health probe: the IIS echoes the text back.
pub async fn connectivity_test(
    target: &SoapTarget,
    echo: &str,
    timeout: Duration,
) -> Result<String, SoapError> {
    post(target, connectivity_request(echo), timeout).await
}

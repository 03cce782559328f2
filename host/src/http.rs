//! A small HTTP/1.1 client (hyper) for the requests this crate makes itself:
//! an OpenID provider's discovery, keys and token endpoints, and `izhub
//! health`. One request per connection, with a time limit and a bounded
//! answer.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// What to send: a GET, or a POST of an `application/x-www-form-urlencoded`
/// body; either with an optional `Authorization` header.
pub struct Call<'a> {
    pub url: &'a str,
    pub authorization: Option<&'a str>,
    pub form: Option<String>,
}

/// The host and port of an `http://` or `https://` URL's authority, and
/// whether it is HTTPS, and the path (with its query).
fn split(url: &str) -> Option<(bool, &str, &str)> {
    let (https, rest) = match (url.strip_prefix("https://"), url.strip_prefix("http://")) {
        (Some(rest), _) => (true, rest),
        (None, Some(rest)) => (false, rest),
        _ => return None,
    };
    Some(match rest.find('/') {
        Some(i) => (https, rest.get(..i)?, rest.get(i..)?),
        None => (https, rest, "/"),
    })
}

/// Sends `call` and reads the answer: its status and at most `max` bytes of
/// body, all within `timeout`. `tls` is needed for an `https://` URL. Every
/// failure is a sentence naming the URL.
pub async fn call(
    tls: Option<&Arc<rustls::ClientConfig>>,
    call: Call<'_>,
    max: usize,
    timeout: Duration,
) -> Result<(u16, Bytes), String> {
    let url = call.url;
    let fail = |why: String| format!("{url}: {why}");
    let (https, authority, path) =
        split(url).ok_or_else(|| fail("not an http(s):// URL".into()))?;
    let exchange = async {
        let host = match authority.rsplit_once(':') {
            Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => authority,
        };
        let address = if authority.contains(':') && !authority.ends_with(']') {
            authority.to_string()
        } else {
            format!("{authority}:{}", if https { 443 } else { 80 })
        };
        let tcp = TcpStream::connect(&address)
            .await
            .map_err(|e| fail(e.to_string()))?;
        let stream: Box<dyn izhub_engine::mllp::Io> = match (https, tls) {
            (true, Some(tls)) => {
                let name =
                    izhub_engine::tls::server_name(host.trim_matches(['[', ']'])).map_err(fail)?;
                let tls = tokio_rustls::TlsConnector::from(tls.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(|e| fail(format!("TLS: {e}")))?;
                Box::new(tls)
            }
            (true, None) => return Err(fail("https:// is not taken here".into())),
            (false, _) => Box::new(tcp),
        };
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| fail(e.to_string()))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut builder = Request::builder()
            .uri(path)
            .header("host", authority)
            .header("accept", "application/json");
        if let Some(a) = call.authorization {
            builder = builder.header("authorization", a);
        }
        let request = match call.form {
            Some(body) => builder
                .method("POST")
                .header("content-type", "application/x-www-form-urlencoded")
                .body(Full::new(Bytes::from(body))),
            None => builder.method("GET").body(Full::new(Bytes::new())),
        }
        .map_err(|e| fail(e.to_string()))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| fail(e.to_string()))?;
        let status = response.status().as_u16();
        let body = Limited::new(response.into_body(), max)
            .collect()
            .await
            .map_err(|e| fail(e.to_string()))?
            .to_bytes();
        Ok((status, body))
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| fail(format!("no answer within {} ms", timeout.as_millis())))?
}

#[cfg(test)]
mod tests {
    use super::split;

    #[test]
    fn urls_split_into_scheme_authority_and_path() {
        assert_eq!(split("https://idp/a?b=1"), Some((true, "idp", "/a?b=1")));
        assert_eq!(
            split("http://127.0.0.1:9400"),
            Some((false, "127.0.0.1:9400", "/"))
        );
        assert_eq!(split("ftp://x/"), None);
    }
}

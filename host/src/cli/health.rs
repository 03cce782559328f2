//! `izhub health`: asks a running engine's `/healthz`, for container
//! health checks and scripts (the image has no shell or curl).

use std::process::ExitCode;
use std::time::Duration;

/// The most of an answer read: `/healthz` answers a few hundred bytes.
const MAX_ANSWER: usize = 64 << 10;

#[derive(Debug, clap::Args)]
pub struct HealthArgs {
    /// The engine's `/healthz`, on its admin address (plain HTTP).
    #[arg(long, default_value = "http://127.0.0.1:9400/healthz")]
    url: String,
    /// Give up after this many milliseconds (`/healthz` itself waits up to
    /// 2 s for the journal).
    #[arg(long, default_value_t = 5000)]
    timeout_ms: u64,
}

/// Exit 0 when the engine answers 200 (`ok` or `degraded`), 1 when it
/// answers otherwise or not at all, 2 for a URL it cannot ask. Sends
/// `Authorization: Bearer $IZHUB_METRICS_TOKEN` when that is set, since a
/// metrics token guards `/healthz` too.
pub async fn run(args: HealthArgs) -> anyhow::Result<ExitCode> {
    let Some((addr, path)) = parse_url(&args.url) else {
        eprintln!(
            "izhub health: '{}' is not an http://HOST:PORT/PATH URL (the admin address's plain HTTP)",
            args.url
        );
        return Ok(ExitCode::from(2));
    };
    let token = std::env::var("IZHUB_METRICS_TOKEN").ok();
    let limit = Duration::from_millis(args.timeout_ms.max(1));
    match ask(addr, path, token.as_deref(), limit).await {
        Ok((200, status)) => {
            println!("{addr}{path}: 200 {status}");
            Ok(ExitCode::SUCCESS)
        }
        Ok((code, status)) => {
            println!("{addr}{path}: {code} {status}");
            Ok(ExitCode::FAILURE)
        }
        // The error names the URL.
        Err(e) => {
            println!("{e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// `http://host:port/path` → (`host:port`, `/path`).
fn parse_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("http://")?;
    let (addr, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, "/healthz"),
    };
    let (host, port) = addr.rsplit_once(':')?;
    let clean = |s: &str| s.bytes().all(|b| b.is_ascii_graphic() && b != b'@');
    (!host.is_empty() && port.parse::<u16>().is_ok() && clean(addr) && clean(path))
        .then_some((addr, path))
}

/// The answer's status code and its JSON `status` (or the status code's reason).
async fn ask(
    addr: &str,
    path: &str,
    token: Option<&str>,
    limit: Duration,
) -> Result<(u16, String), String> {
    let url = format!("http://{addr}{path}");
    let authorization = token
        .filter(|t| t.bytes().all(|b| b.is_ascii_graphic()))
        .map(|t| format!("Bearer {t}"));
    let call = crate::http::Call {
        url: &url,
        authorization: authorization.as_deref(),
        form: None,
    };
    let (code, body) = crate::http::call(None, call, MAX_ANSWER, limit).await?;
    let status = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("status")?.as_str().map(str::to_string))
        .unwrap_or_else(|| {
            hyper::StatusCode::from_u16(code)
                .ok()
                .and_then(|c| c.canonical_reason())
                .unwrap_or("")
                .to_string()
        });
    Ok((code, status))
}

#[cfg(test)]
mod tests {
    use super::parse_url;

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("http://127.0.0.1:9400/healthz"),
            Some(("127.0.0.1:9400", "/healthz"))
        );
        assert_eq!(
            parse_url("http://[::1]:9400"),
            Some(("[::1]:9400", "/healthz"))
        );
        assert_eq!(parse_url("https://127.0.0.1:9400/healthz"), None);
        assert_eq!(parse_url("http://127.0.0.1/healthz"), None);
        assert_eq!(parse_url("http://127.0.0.1:9400/a b"), None);
        assert_eq!(parse_url("http://user@127.0.0.1:9400/"), None);
    }
}

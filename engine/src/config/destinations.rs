//! `[destinations.NAME]`: how each IIS is reached (MLLP or SOAP, TLS,
//! credentials), the delivery settings, how answers are matched to messages,
//! and what the IIS allows of bulk queries.

use std::path::Path;
use std::time::Duration;

use super::compile::Errors;
use super::file::{DestinationFile, FileConfig};
use super::spec::*;
use crate::hl7::AnswerMatch;
use crate::mllp::DEFAULT_MAX_FRAME;

/// Checks every destination of `file`; paths are relative to `base`.
pub(super) fn compile(
    errs: &mut Errors<'_>,
    base: &Path,
    file: &FileConfig,
) -> Vec<DestinationSpec> {
    let mut destinations = Vec::new();
    for (name, d) in &file.destinations {
        let span = d.span();
        let d = d.get_ref();
        let transport = transport(errs, name, d, span);
        let tls = tls(errs, base, name, d, &transport);
        destinations.push(DestinationSpec {
            name: name.clone(),
            transport,
            tls,
            delivery: DeliverySettings {
                connect_timeout: Duration::from_millis(d.connect_timeout_ms.unwrap_or(3000).max(1)),
                answer_timeout: Duration::from_millis(d.answer_timeout_ms.unwrap_or(30_000).max(1)),
                connections: d.connections.unwrap_or(4).clamp(1, 256),
                max_frame: d.max_frame_bytes.unwrap_or(DEFAULT_MAX_FRAME).max(64),
                max_attempts: d.max_attempts.unwrap_or(10).max(1),
                retry_initial: Duration::from_millis(d.retry_initial_ms.unwrap_or(500).max(1)),
                retry_max: Duration::from_millis(d.retry_max_ms.unwrap_or(60_000).max(1)),
                breaker_failures: d.breaker_failures.unwrap_or(5).max(1),
                breaker_open: Duration::from_millis(d.breaker_open_ms.unwrap_or(5000).max(1)),
                answer_match: match &d.answer_match {
                    None => AnswerMatch::Strict,
                    Some(m) => AnswerMatch::parse(m.get_ref()).unwrap_or_else(|| {
                        errs.push(
                            Some(m.span()),
                            format!("destinations.{name}.answer_match"),
                            format!(
                                "'{}' is not one of \"strict\", \"control-id\", \"off\"",
                                m.get_ref()
                            ),
                        );
                        AnswerMatch::Strict
                    }),
                },
            },
            bulk: BulkLimits {
                max_in_flight: d.bulk_max_in_flight.unwrap_or(1).clamp(1, 256),
                per_second: d.bulk_queries_per_second.filter(|n| *n > 0),
                window: d.bulk_window.as_ref().and_then(|w| {
                    let parsed = parse_window(w.get_ref());
                    if parsed.is_none() {
                        errs.push(
                            Some(w.span()),
                            format!("destinations.{name}.bulk_window"),
                            format!(
                                "'{}' is not HH:MM-HH:MM (UTC, e.g. \"22:00-06:00\")",
                                w.get_ref()
                            ),
                        );
                    }
                    parsed
                }),
                daily_cap: d.bulk_daily_cap,
            },
        });
    }
    destinations
}

/// Where destination `name` is: MLLP `host:port` or a SOAP URL with its
/// credentials (exactly one).
fn transport(
    errs: &mut Errors<'_>,
    name: &str,
    d: &DestinationFile,
    span: std::ops::Range<usize>,
) -> Transport {
    let host_port_ok = |addr: &str| {
        addr.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
        })
    };
    match (&d.mllp, &d.soap) {
        (Some(m), None) => {
            let addr = m.get_ref().trim().to_string();
            if !host_port_ok(&addr) {
                errs.push(
                    Some(m.span()),
                    format!("destinations.{name}.mllp"),
                    format!("'{addr}' is not a host:port address"),
                );
            }
            Transport::Mllp { addr }
        }
        (None, Some(url)) => {
            let u = url.get_ref().trim();
            let authority = u
                .strip_prefix("http://")
                .or_else(|| u.strip_prefix("https://"))
                .map(|r| r.split('/').next().unwrap_or(""));
            if !authority.is_some_and(host_port_ok) {
                errs.push(
                    Some(url.span()),
                    format!("destinations.{name}.soap"),
                    format!("'{u}' is not an http://host:port/path URL"),
                );
            }
            let password = match (&d.password, &d.password_env) {
                (_, Some(var)) => Secret::Env {
                    var: var.get_ref().clone(),
                    at: errs.origin(var.span(), format!("destinations.{name}.password_env")),
                },
                (Some(p), None) => Secret::Inline(p.clone()),
                (None, None) => Secret::None,
            };
            Transport::Soap {
                url: u.to_string(),
                username: d.username.clone().unwrap_or_default(),
                password,
                facility_id: d.facility_id.clone().unwrap_or_default(),
            }
        }
        _ => {
            errs.push(
                Some(span),
                format!("destinations.{name}"),
                "give exactly one of mllp = \"host:port\" or soap = \"http://host:port/path\"",
            );
            Transport::Mllp {
                addr: String::new(),
            }
        }
    }
}

/// Destination `name`'s TLS: the CA, the server name (the address's host
/// unless given) and an optional client certificate.
fn tls(
    errs: &mut Errors<'_>,
    base: &Path,
    name: &str,
    d: &DestinationFile,
    transport: &Transport,
) -> Option<DestinationTlsSpec> {
    d.tls.as_ref().map(|t| {
        let span = t.span();
        let t = t.get_ref();
        let authority = match transport {
            Transport::Mllp { addr } => addr.as_str(),
            Transport::Soap { url, .. } => url
                .split("://")
                .nth(1)
                .and_then(|r| r.split('/').next())
                .unwrap_or(""),
        };
        let host = authority.rsplit_once(':').map(|(h, _)| h).unwrap_or("");
        let client = match (&t.cert, &t.key) {
            (Some(c), Some(k)) => Some((base.join(c), base.join(k))),
            (None, None) => None,
            _ => {
                errs.push(
                    Some(span.clone()),
                    format!("destinations.{name}.tls"),
                    "give both cert and key, or neither",
                );
                None
            }
        };
        DestinationTlsSpec {
            ca: base.join(&t.ca),
            server_name: t.server_name.clone().unwrap_or_else(|| host.to_string()),
            client,
            at: errs.origin(span, format!("destinations.{name}.tls")),
        }
    })
}

/// `HH:MM-HH:MM` → minutes of the day `[start, end)`; start and end differ.
fn parse_window(text: &str) -> Option<(u16, u16)> {
    let minute = |t: &str| -> Option<u16> {
        let (h, m) = t.trim().split_once(':')?;
        let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
        (h < 24 && m < 60).then_some(h * 60 + m)
    };
    let (a, b) = text.split_once('-')?;
    let (a, b) = (minute(a)?, minute(b)?);
    (a != b).then_some((a, b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_str;

    #[test]
    fn windows() {
        assert_eq!(parse_window("22:00-06:00"), Some((1320, 360)));
        assert_eq!(parse_window("01:30-02:00"), Some((90, 120)));
        assert_eq!(parse_window("24:00-01:00"), None);
        assert_eq!(parse_window("01:00-01:00"), None);
        assert_eq!(parse_window("night"), None);
    }

    #[test]
    fn answer_match_is_strict_unless_relaxed_and_relaxing_it_is_warned_about() {
        let src = |extra: &str| {
            format!(
                "[destinations.a]\nmllp = \"127.0.0.1:1\"\n\n[destinations.b]\nmllp = \"127.0.0.1:2\"\n{extra}\n"
            )
        };
        let cfg = load_str(&src(""), Path::new("x.toml")).unwrap();
        assert!(
            cfg.destinations
                .iter()
                .all(|d| d.delivery.answer_match == AnswerMatch::Strict)
        );
        assert!(cfg.warnings().is_empty());
        for (value, words) in [
            ("control-id", "an answer without MSA-2"),
            ("off", "any frame the IIS sends"),
        ] {
            let cfg = load_str(
                &src(&format!("answer_match = \"{value}\"")),
                Path::new("x.toml"),
            )
            .unwrap();
            let warnings = cfg.warnings();
            assert_eq!(warnings.len(), 1, "{warnings:?}");
            assert!(
                warnings[0].starts_with(&format!(
                    "destinations.b.answer_match: answers are matched '{value}': {words}"
                )),
                "{warnings:?}"
            );
        }
        let text = load_str(&src("answer_match = \"loose\""), Path::new("x.toml"))
            .unwrap_err()
            .to_string();
        assert!(text.contains("destinations.b.answer_match"), "{text}");
        assert!(text.contains("'loose' is not one of"), "{text}");
    }
}

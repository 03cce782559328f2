//! Bulk queries: a cohort of patients in, one QBP^Q11 per patient through
//! the routes (throttled per IIS by [`crate::delivery::gate`]), FHIR R4 NDJSON out ([`job`]).

pub mod cohort;
pub mod fhir;
pub mod job;
pub mod qbp;
pub mod reconcile;
pub mod rsp;

use std::collections::BTreeSet;
use std::time::Duration;

use crate::config::{Config, ListenerSpec};

/// The listener bulk queries are taken as arriving on: the configured one
/// of that name, else one that exists only for them.
pub fn listener_for(cfg: &Config) -> ListenerSpec {
    cfg.listeners
        .iter()
        .find(|l| l.name == cfg.bulk.listener)
        .cloned()
        .unwrap_or_else(|| ListenerSpec {
            name: cfg.bulk.listener.clone(),
            addr: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            allowed_senders: BTreeSet::new(),
            max_frame: crate::mllp::DEFAULT_MAX_FRAME,
            lenient_framing: false,
            max_connections: 1,
            max_per_peer: 1,
            idle_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(60),
            soap: None,
            tls: None,
        })
}

/// `YYYY-MM-DD`, `YYYYMMDD` or a FHIR instant (`2024-01-01T00:00:00Z`) →
/// `YYYYMMDD`, checked to be a real date.
pub fn since_date(text: &str) -> Result<String, String> {
    let t = text.trim();
    let day = t.get(..10).filter(|d| d.as_bytes().get(4) == Some(&b'-'));
    let digits: String = match day {
        Some(d) => d.replace('-', ""),
        None => t.to_string(),
    };
    let ok = digits.len() == 8
        && digits.bytes().all(|b| b.is_ascii_digit())
        && digits
            .get(4..6)
            .and_then(|m| m.parse::<u32>().ok())
            .is_some_and(|m| (1..=12).contains(&m))
        && digits
            .get(6..8)
            .and_then(|d| d.parse::<u32>().ok())
            .is_some_and(|d| (1..=31).contains(&d));
    if ok {
        Ok(digits)
    } else {
        Err(format!("'{}' is not a date (YYYY-MM-DD)", t.escape_debug()))
    }
}

//! Shared helpers for the validate-iz tests: code sets, a host, message
//! files and mutations.

use std::sync::OnceLock;

use izhub_codesets::CodeSets;
use izhub_plugin::testing::TestHost;
use izhub_plugin::{Input, Message, Severity, Verdict};
use validate_iz::ValidateIz;

pub const NIST: &str = "../../samples/messages/vxu/vxu-nist-iz-1.1-admin-child-max.hl7";
pub const CVRS_GOOD: &str = "../../samples/messages/vxu/vxu-valid-testgood-13.hl7";
pub const NOW_NIST: &str = "2026-11-25T10:00:00.000Z";
pub const NOW_CVRS: &str = "2021-01-01T00:00:00.000Z";

fn codesets() -> &'static CodeSets {
    static SETS: OnceLock<CodeSets> = OnceLock::new();
    SETS.get_or_init(|| izhub_codesets::load_dir(&izhub_codesets::default_dir()).unwrap())
}

/// A host with every code set and the given config.
pub fn host(config: &[(&str, &str)]) -> TestHost {
    let mut h = TestHost::new();
    for (name, table) in &codesets().tables {
        let entries: Vec<(&str, &str)> = table
            .entries
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        h = h.table(name, &entries);
    }
    for (k, v) in config {
        h = h.config(k, v);
    }
    h
}

/// A message file with LF/CRLF turned into CR.
pub fn read(path: &str) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    text.replace("\r\n", "\r").replace('\n', "\r")
}

/// One issue, flattened: severity, detection id, location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub severity: Severity,
    pub id: String,
    pub location: String,
}

/// Runs the plugin and returns every issue (rejected or reported).
pub fn run(host: &TestHost, hl7: &str, received_at: &str) -> (bool, Vec<Seen>) {
    run_with(host, hl7, received_at, &[])
}

/// [`run`] with attributes set by earlier plugins; also returns the texts.
pub fn run_with(
    host: &TestHost,
    hl7: &str,
    received_at: &str,
    attributes: &[(&str, &str)],
) -> (bool, Vec<Seen>) {
    let (rejected, seen, _) = run_texts(host, hl7, received_at, attributes);
    (rejected, seen)
}

/// [`run_with`], also returning each issue's text.
pub fn run_texts(
    host: &TestHost,
    hl7: &str,
    received_at: &str,
    attributes: &[(&str, &str)],
) -> (bool, Vec<Seen>, Vec<String>) {
    let out = izhub_plugin::run::<ValidateIz>(
        Input {
            hl7: hl7.to_string(),
            received_at: received_at.to_string(),
            attributes: attributes
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Input::default()
        },
        host,
    )
    .unwrap();
    let mut issues = out.issues.clone();
    let rejected = match out.verdict {
        Verdict::Reject(list) => {
            issues.extend(list);
            true
        }
        _ => false,
    };
    let texts = issues.iter().map(|i| i.text.clone()).collect();
    let seen = issues
        .into_iter()
        .map(|i| {
            let id = i
                .text
                .rsplit_once('[')
                .map(|(_, rest)| rest.trim_end_matches(']').to_string())
                .unwrap_or_default();
            Seen {
                severity: i.severity,
                id,
                location: i.location,
            }
        })
        .collect();
    (rejected, seen, texts)
}

/// A change to a message.
#[derive(Debug, Clone, Copy)]
pub enum Mutation {
    /// Sets a field (path as for `Message::set`).
    Set(&'static str, &'static str),
    /// Removes every segment with this name.
    Drop(&'static str),
    /// Repeats the first segment with this name right after it.
    Dup(&'static str),
    /// Adds a segment at the end of the message.
    Append(&'static str),
}

/// Applies mutations to a message text (CR-separated).
pub fn mutate(base: &str, mutations: &[Mutation]) -> String {
    let mut text = base.to_string();
    for m in mutations {
        text = match *m {
            Mutation::Set(path, value) => {
                let mut msg = Message::parse(&text).unwrap();
                msg.set(path, value).unwrap();
                msg.to_string()
            }
            Mutation::Drop(name) => text
                .split('\r')
                .filter(|s| !s.starts_with(&format!("{name}|")))
                .collect::<Vec<_>>()
                .join("\r"),
            Mutation::Dup(name) => {
                let mut out = Vec::new();
                let mut done = false;
                for seg in text.split('\r') {
                    out.push(seg.to_string());
                    if !done && seg.starts_with(&format!("{name}|")) {
                        out.push(seg.to_string());
                        done = true;
                    }
                }
                out.join("\r")
            }
            Mutation::Append(segment) => {
                format!("{}\r{segment}\r", text.trim_end_matches('\r'))
            }
        };
    }
    text
}

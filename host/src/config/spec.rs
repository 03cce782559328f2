//! What a checked configuration says: plain specs, with no I/O and no
//! runtime objects (files are named, not read; secrets say where they come
//! from). The topology's plan step turns them into running parts.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// A checked configuration, ready to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from.
    pub path: PathBuf,
    pub admin: Option<SocketAddr>,
    /// Most sending facilities kept as metric labels.
    pub max_sender_labels: usize,
    pub listeners: Vec<ListenerSpec>,
    pub destinations: Vec<DestinationSpec>,
    /// Lookup tables under `[tables]` (the code sets join them when the
    /// configuration is planned).
    pub tables: BTreeMap<String, HashMap<String, String>>,
    /// Where the code sets are read from, if configured.
    pub codesets: Option<CodeSetsSpec>,
    /// The journal file, when any route uses `commit` mode.
    pub journal: Option<PathBuf>,
    /// How long finished messages stay in the journal.
    pub retention: Duration,
    /// How many finished messages the journal keeps at most.
    pub max_finished: Option<u64>,
    pub routes: Vec<RouteSpec>,
    /// The console's message log, when messages are recorded.
    pub console: Option<ConsoleSpec>,
    /// CVX and NDC code sets older than this are flagged on the console.
    pub codeset_max_age_days: u64,
}

/// Where and how long the console's message log keeps messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleSpec {
    pub log: PathBuf,
    pub keep: Duration,
    pub keep_messages: u64,
}

impl Config {
    /// What works but deserves the operator's attention, each line naming
    /// its key: SOAP users not bound to facilities.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        for l in &self.listeners {
            let Some(soap) = &l.soap else { continue };
            for (user, u) in &soap.users {
                if u.facilities.is_none() {
                    out.push(format!(
                        "listeners.{}.soap_users.{user}: SOAP user '{user}' is not bound to facilities and may send for any sending facility (MSH-4.1); give it {{ password = \"...\", facilities = [...] }}",
                        l.name
                    ));
                }
            }
        }
        out
    }
}

/// One MLLP listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerSpec {
    pub name: String,
    pub addr: SocketAddr,
    pub allowed_senders: BTreeSet<String>,
    pub max_frame: usize,
    pub lenient_framing: bool,
    pub max_connections: usize,
    pub max_per_peer: usize,
    pub idle_timeout: Duration,
    /// SOAP: how long a request may take from its first byte to its answer.
    pub request_timeout: Duration,
    /// Set for a SOAP listener: its URL path and allowed users.
    pub soap: Option<SoapListener>,
    /// MLLP (or SOAP) over TLS: the files, read when planned.
    pub tls: Option<ListenerTlsSpec>,
}

/// Where a setting was written, so that a problem found when the
/// configuration is planned (a certificate that does not load, an
/// environment variable that is not set) names its key and line.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Origin {
    /// Dotted key, e.g. `listeners.ehr.tls`.
    pub key: String,
    /// 1-based line and column.
    pub line: Option<(usize, usize)>,
}

/// A listener's TLS files and certificate identities.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerTlsSpec {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// CA that client certificates must chain to (mutual TLS).
    pub client_ca: Option<PathBuf>,
    /// Certificates that may send for other facilities than their CN.
    pub identities: crate::identity::certificate::CertIdentities,
    pub at: Origin,
}

/// The code-set directory (`cdc/`, `aira/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeSetsSpec {
    pub dir: PathBuf,
    pub at: Origin,
}

/// A listener speaking the CDC WSDL SOAP transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SoapListener {
    pub path: String,
    /// Users by name, with their passwords and facilities; empty allows any.
    pub users: BTreeMap<String, crate::soap::server::SoapUser>,
}

/// How a destination is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// MLLP to `host:port`.
    Mllp { addr: String },
    /// The CDC WSDL SOAP endpoint `http(s)://host:port/path`.
    Soap {
        url: String,
        username: String,
        password: Secret,
        facility_id: String,
    },
}

/// Where a password comes from. Its text is never shown.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    None,
    /// Written in the configuration file (which must then be private).
    Inline(String),
    /// Read from this environment variable when planned.
    Env {
        var: String,
        at: Origin,
    },
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Secret::None => f.write_str("None"),
            Secret::Inline(_) => f.write_str("Inline(***)"),
            Secret::Env { var, .. } => write!(f, "Env({var})"),
        }
    }
}

/// A destination's TLS files and the name its certificate must carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestinationTlsSpec {
    pub ca: PathBuf,
    pub server_name: String,
    /// Client certificate and key for mutual TLS.
    pub client: Option<(PathBuf, PathBuf)>,
    pub at: Origin,
}

/// One IIS destination, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestinationSpec {
    pub name: String,
    pub transport: Transport,
    /// Over TLS: the files, read when planned.
    pub tls: Option<DestinationTlsSpec>,
    /// Timeouts, connections, retries and the breaker.
    pub delivery: DeliverySettings,
}

/// How a destination is delivered to, the same before and after planning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliverySettings {
    pub connect_timeout: Duration,
    pub answer_timeout: Duration,
    pub connections: usize,
    pub max_frame: usize,
    pub max_attempts: u32,
    pub retry_initial: Duration,
    pub retry_max: Duration,
    pub breaker_failures: u32,
    pub breaker_open: Duration,
}

/// How a route answers the sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckMode {
    /// The sender gets the IIS's own answer, with plugin warnings merged in.
    Relay,
    /// The sender gets AA once the message is durably journaled; delivery
    /// follows from the queue, with retries.
    Commit,
}

/// One route: which messages it takes, the plugins they go through, where they go.
#[derive(Debug, Clone)]
pub struct RouteSpec {
    pub name: String,
    /// Listener names; empty matches all.
    pub listeners: BTreeSet<String>,
    /// (code, trigger) pairs; a `None` trigger matches any.
    pub message_types: Vec<(String, Option<String>)>,
    pub senders: BTreeSet<String>,
    pub receivers: BTreeSet<String>,
    pub destinations: Vec<String>,
    /// Destinations the route's plugins may choose with `route-to`.
    pub route_to: BTreeSet<String>,
    pub ack_mode: AckMode,
    pub plugins: Vec<PluginSpec>,
}

impl Config {
    /// The sending facilities (MSH-4.1) that may appear as metric labels:
    /// those the configuration names (allowed senders, route senders), in
    /// name order, at most `max_sender_labels` of them. (Certificate and SOAP
    /// user facilities count too.)
    pub fn sender_labels(&self) -> std::collections::HashSet<String> {
        let soap_facilities = self
            .listeners
            .iter()
            .filter_map(|l| l.soap.as_ref())
            .flat_map(|s| s.users.values())
            .filter_map(|u| u.facilities.as_ref())
            .flatten();
        let certificate_facilities = self
            .listeners
            .iter()
            .filter_map(|l| l.tls.as_ref())
            .flat_map(|t| t.identities.values())
            .flatten();
        let named: BTreeSet<&String> = self
            .listeners
            .iter()
            .flat_map(|l| l.allowed_senders.iter())
            .chain(self.routes.iter().flat_map(|r| r.senders.iter()))
            .chain(soap_facilities)
            .chain(certificate_facilities)
            .filter(|s| s.as_str() != "other")
            .collect();
        named
            .into_iter()
            .take(self.max_sender_labels)
            .cloned()
            .collect()
    }
}

/// A capability a plugin is granted.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Grant {
    Log,
    Config,
    Lookup(String),
    /// Every code set loaded from `[codesets] dir` (`codesets`).
    CodeSets,
    /// Lets a component that imports this WASI interface family load
    /// (`filesystem`, `sockets`, `clocks`): language runtimes such as Python
    /// and JavaScript import them. They still give no access: nothing is
    /// preopened and every network address is refused.
    Link(String),
}

/// One plugin in a route.
#[derive(Debug, Clone)]
pub struct PluginSpec {
    pub name: String,
    pub wasm: PathBuf,
    /// Where `wasm` was written (the file is read when planned).
    pub at: Origin,
    pub time_limit: Duration,
    pub memory_limit: usize,
    pub max_output: usize,
    pub max_input: usize,
    pub grants: BTreeSet<Grant>,
    pub config: BTreeMap<String, String>,
}

/// One problem in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based line and column, when known.
    pub line: Option<(usize, usize)>,
    /// Dotted key, e.g. `routes[0].plugins[1].wasm`.
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some((line, col)) = self.line {
            write!(f, ":{line}:{col}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every problem found in a configuration file.
#[derive(Debug, Clone)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        writeln!(
            f,
            "{n} error{} in the configuration:",
            if n == 1 { "" } else { "s" }
        )?;
        for e in &self.0 {
            writeln!(f, "  {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}
